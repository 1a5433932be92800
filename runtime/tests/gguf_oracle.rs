//! The GGUF reader and writer against llama.cpp's own GGUF reader (`gguf_init_from_file`).
//!
//! For the real SmolLM2 file (written by the Python `gguf` package) and for a file written by
//! `GgufWriter`, both readers must agree on the version, alignment, data offset, every key
//! (name, type, value; arrays element by element) and every tensor (name, type, shape, offset,
//! size).
#![cfg(target_arch = "x86_64")]

use std::ffi::{CStr, CString};
use std::path::Path;

use tern::gguf::{GgufError, GgufFile, GgufWriter, Value};
use tern_kernels::GgmlType;
use tern_oracle::sys;

/// A `gguf_context` read by llama.cpp, freed on drop.
struct Oracle(*mut sys::gguf_context);

impl Oracle {
    fn params() -> sys::gguf_init_params {
        // With `ctx` null llama.cpp allocates nothing but its own context.
        sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        }
    }

    fn open(path: &Path) -> Oracle {
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; `Drop` frees the context.
        let ctx = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), Self::params()) };
        assert!(!ctx.is_null(), "llama.cpp refused {}", path.display());
        Oracle(ctx)
    }

    /// llama.cpp's verdict on a file held in memory: `None` if it refuses it.
    fn from_bytes(bytes: &[u8]) -> Option<Oracle> {
        silence_ggml_log();
        // SAFETY: the pointer and length describe a live slice that llama.cpp only reads
        // during the call (it copies what it keeps).
        let ctx = unsafe {
            sys::gguf_init_from_buffer(bytes.as_ptr().cast(), bytes.len(), Self::params())
        };
        (!ctx.is_null()).then_some(Oracle(ctx))
    }
}

/// llama.cpp logs every refusal to stderr; the fuzz test provokes thousands.
fn silence_ggml_log() {
    unsafe extern "C" fn silent(
        _level: sys::ggml_log_level,
        _text: *const std::os::raw::c_char,
        _user: *mut std::os::raw::c_void,
    ) {
    }
    // SAFETY: installs a callback that does nothing; safe to call from any thread at any time.
    unsafe { sys::ggml_log_set(Some(silent), std::ptr::null_mut()) }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        // SAFETY: the context came from gguf_init_from_file and is freed once.
        unsafe { sys::gguf_free(self.0) }
    }
}

/// A C string returned by llama.cpp as bytes (it lives as long as the context).
fn c_bytes<'a>(p: *const std::os::raw::c_char) -> &'a [u8] {
    assert!(!p.is_null());
    // SAFETY: llama.cpp returns NUL-terminated strings owned by the live context.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// Our string as llama.cpp's C API shows it: up to the first NUL.
fn until_nul(s: &str) -> &[u8] {
    let b = s.as_bytes();
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// Reads element `i` of a numeric array of GGUF type `ty` from llama.cpp's raw array data.
fn array_item(data: *const u8, ty: sys::gguf_type, i: usize) -> Value {
    // SAFETY: `data` holds gguf_get_arr_n elements of `ty`, and `i` is below that count;
    // read_unaligned makes no assumption on alignment.
    unsafe {
        match ty {
            sys::GGUF_TYPE_UINT8 => Value::U8(*data.add(i)),
            sys::GGUF_TYPE_INT8 => Value::I8(*data.add(i) as i8),
            sys::GGUF_TYPE_UINT16 => Value::U16((data as *const u16).add(i).read_unaligned()),
            sys::GGUF_TYPE_INT16 => Value::I16((data as *const i16).add(i).read_unaligned()),
            sys::GGUF_TYPE_UINT32 => Value::U32((data as *const u32).add(i).read_unaligned()),
            sys::GGUF_TYPE_INT32 => Value::I32((data as *const i32).add(i).read_unaligned()),
            sys::GGUF_TYPE_UINT64 => Value::U64((data as *const u64).add(i).read_unaligned()),
            sys::GGUF_TYPE_INT64 => Value::I64((data as *const i64).add(i).read_unaligned()),
            sys::GGUF_TYPE_FLOAT32 => Value::F32((data as *const f32).add(i).read_unaligned()),
            sys::GGUF_TYPE_FLOAT64 => Value::F64((data as *const f64).add(i).read_unaligned()),
            sys::GGUF_TYPE_BOOL => Value::Bool(*data.add(i) != 0),
            t => panic!("not a numeric gguf type: {t}"),
        }
    }
}

/// The GGUF type number of a value (the independent numbering from `gguf.h`).
fn type_number(v: &Value) -> sys::gguf_type {
    match v {
        Value::U8(_) => sys::GGUF_TYPE_UINT8,
        Value::I8(_) => sys::GGUF_TYPE_INT8,
        Value::U16(_) => sys::GGUF_TYPE_UINT16,
        Value::I16(_) => sys::GGUF_TYPE_INT16,
        Value::U32(_) => sys::GGUF_TYPE_UINT32,
        Value::I32(_) => sys::GGUF_TYPE_INT32,
        Value::U64(_) => sys::GGUF_TYPE_UINT64,
        Value::I64(_) => sys::GGUF_TYPE_INT64,
        Value::F32(_) => sys::GGUF_TYPE_FLOAT32,
        Value::F64(_) => sys::GGUF_TYPE_FLOAT64,
        Value::Bool(_) => sys::GGUF_TYPE_BOOL,
        Value::String(_) => sys::GGUF_TYPE_STRING,
        Value::Array(_) => sys::GGUF_TYPE_ARRAY,
    }
}

/// Compares numbers by bits, so NaNs and signed zeros must match too.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Asserts that Tern and llama.cpp read the file at `path` identically.
fn assert_agree(path: &Path) {
    assert_same(&GgufFile::open(path).unwrap(), &Oracle::open(path));
}

/// Asserts that Tern and llama.cpp read everything the same.
fn assert_same(ours: &GgufFile, o: &Oracle) {
    let ctx = o.0 as *const sys::gguf_context;
    // SAFETY (every call below): `ctx` is a live context, and ids are below its counts.
    unsafe {
        assert_eq!(ours.version(), sys::gguf_get_version(ctx));
        assert_eq!(ours.alignment(), sys::gguf_get_alignment(ctx) as u64);
        assert_eq!(ours.data_offset(), sys::gguf_get_data_offset(ctx) as u64);

        assert_eq!(ours.metadata().len() as i64, sys::gguf_get_n_kv(ctx));
        for (id, (key, value)) in ours.metadata().iter().enumerate() {
            let id = id as i64;
            assert_eq!(c_bytes(sys::gguf_get_key(ctx, id)), key.as_bytes());
            assert_eq!(sys::gguf_get_kv_type(ctx, id), type_number(value), "{key}");
            match value {
                Value::String(s) => {
                    assert_eq!(
                        c_bytes(sys::gguf_get_val_str(ctx, id)),
                        until_nul(s),
                        "{key}"
                    )
                }
                Value::Array(items) => {
                    assert_eq!(sys::gguf_get_arr_n(ctx, id), items.len(), "{key}");
                    let ty = sys::gguf_get_arr_type(ctx, id);
                    if let Some(first) = items.iter().next() {
                        assert_eq!(ty, type_number(&first), "{key}");
                    }
                    for (i, item) in items.iter().enumerate() {
                        if ty == sys::GGUF_TYPE_STRING {
                            let theirs = c_bytes(sys::gguf_get_arr_str(ctx, id, i));
                            assert_eq!(theirs, until_nul(item.as_str().unwrap()), "{key}[{i}]");
                        } else {
                            let data = sys::gguf_get_arr_data(ctx, id) as *const u8;
                            let theirs = array_item(data, ty, i);
                            assert!(same(&item, &theirs), "{key}[{i}]: {item:?} vs {theirs:?}");
                        }
                    }
                }
                scalar => {
                    let data = sys::gguf_get_val_data(ctx, id) as *const u8;
                    let theirs = array_item(data, type_number(scalar), 0);
                    assert!(same(scalar, &theirs), "{key}: {scalar:?} vs {theirs:?}");
                }
            }
        }

        assert_eq!(ours.tensors().len() as i64, sys::gguf_get_n_tensors(ctx));
        for (id, t) in ours.tensors().iter().enumerate() {
            let id = id as i64;
            assert_eq!(
                c_bytes(sys::gguf_get_tensor_name(ctx, id)),
                t.name.as_bytes()
            );
            assert_eq!(
                sys::gguf_get_tensor_type(ctx, id),
                t.ty as u32,
                "{}",
                t.name
            );
            assert_eq!(
                sys::gguf_get_tensor_offset(ctx, id) as u64,
                t.offset,
                "{}",
                t.name
            );
            assert_eq!(
                sys::gguf_get_tensor_size(ctx, id) as u64,
                t.bytes,
                "{}",
                t.name
            );
            let ne = std::slice::from_raw_parts(sys::gguf_get_tensor_ne(ctx, id), 4);
            let mut dims = t.dims.iter().map(|&d| d as i64).collect::<Vec<_>>();
            dims.resize(4, 1);
            assert_eq!(ne, &dims[..], "{}", t.name);
        }
    }
}

#[test]
fn agrees_with_llama_cpp_on_smollm2() {
    assert_agree(&tern_testkit::smollm2());
}

#[test]
fn llama_cpp_reads_what_the_writer_writes() {
    // llama.cpp reads no arrays of arrays, so this file has none.
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .add_metadata("a.u8", Value::U8(200))
        .add_metadata("a.i8", Value::I8(-100))
        .add_metadata("a.u16", Value::U16(60000))
        .add_metadata("a.i16", Value::I16(-20000))
        .add_metadata("a.u32", Value::U32(3_000_000_000))
        .add_metadata("a.i32", Value::I32(-3))
        .add_metadata("a.u64", Value::U64(1 << 50))
        .add_metadata("a.i64", Value::I64(-(1 << 50)))
        .add_metadata("a.f32", Value::F32(-0.0))
        .add_metadata("a.f64", Value::F64(std::f64::consts::PI))
        .add_metadata("a.bool", Value::Bool(true))
        .add_metadata("a.str", Value::String("{% for m in messages %}".into()))
        .add_metadata(
            "a.strs",
            Value::array(["<s>", "", "▁a"].map(|s| Value::String(s.into())).to_vec()),
        )
        .add_metadata("a.i32s", Value::array((-3..4).map(Value::I32).collect()))
        .add_metadata(
            "a.bools",
            Value::array(vec![Value::Bool(false), Value::Bool(true)]),
        )
        .set_alignment(64);
    let mut seed = 7u32;
    let mut bytes = |n: u64| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect()
    };
    for (name, ty, dims) in [
        ("a", GgmlType::Q4_1, &[64u64, 3][..]),
        ("b", GgmlType::F32, &[5]),
        ("c", GgmlType::Q6_K, &[256, 2, 1]),
        ("d", GgmlType::Q8_0, &[32, 1, 2, 2]),
        ("e", GgmlType::BF16, &[3, 3]),
    ] {
        let data = bytes(ty.bytes_for(dims.iter().product()).unwrap());
        w.add_tensor(name, ty, dims, data);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.gguf");
    w.write_file(&path).unwrap();
    assert_agree(&path);
}

/// A small file that llama.cpp also reads: no arrays of arrays, contiguous tensors.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .add_metadata("llama.block_count", Value::U32(2))
        .add_metadata("llama.rope.freq_base", Value::F32(10000.0))
        .add_metadata(
            "tokenizer.ggml.tokens",
            Value::array(
                ["<s>", "</s>", "a", "b"]
                    .map(|s| Value::String(s.into()))
                    .to_vec(),
            ),
        )
        .add_metadata(
            "tokenizer.ggml.scores",
            Value::array(vec![Value::F32(0.5); 4]),
        )
        .add_metadata("flag", Value::Bool(true))
        .add_metadata("i8", Value::I8(-1))
        .add_tensor("q", GgmlType::Q4_0, &[32, 2], vec![0x11; 36])
        .add_tensor("w", GgmlType::F32, &[8], vec![0x22; 32]);
    w.to_bytes().unwrap()
}

/// Differential fuzzing: random corruptions of a small file, read by both readers. Where
/// both accept a file they must agree on all of it; where only one does, the reason must be
/// a documented difference in strictness.
#[test]
fn corrupted_files_read_as_llama_cpp_reads_them() {
    let good = small_file();
    let mut seed = 0x0dd_ba11_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut both, mut neither, mut only_ours, mut only_theirs) = (0, 0, 0, 0);
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes[at] = next() as u8,
                _ => bytes[at] = bytes[at].wrapping_add(1),
            }
        }
        match (GgufFile::from_bytes(&bytes), Oracle::from_bytes(&bytes)) {
            (Ok(ours), Some(theirs)) => {
                both += 1;
                assert_same(&ours, &theirs);
            }
            (Err(_), None) => neither += 1,
            (Ok(ours), None) => {
                only_ours += 1;
                // llama.cpp also wants tensors packed back to back in file order and names
                // shorter than 64 bytes; Tern needs only aligned, in-file ranges.
                let mut packed = 0;
                let contiguous = ours.tensors().iter().all(|t| {
                    let ok = t.offset == packed;
                    packed += t.bytes.div_ceil(ours.alignment()) * ours.alignment();
                    ok
                });
                let short_names = ours.tensors().iter().all(|t| t.name.len() < 64);
                assert!(
                    !contiguous || !short_names,
                    "only Tern accepts a file with contiguous tensors: {:?}",
                    ours.tensors()
                );
            }
            (Err(e), Some(_)) => {
                only_theirs += 1;
                // Tern checks bools, UTF-8 and that tensor data lies inside the file
                // (llama.cpp leaves the last to its model loader), and knows fewer types.
                assert!(
                    matches!(
                        e,
                        GgufError::InvalidBool { .. }
                            | GgufError::InvalidUtf8 { .. }
                            | GgufError::TensorOutOfRange { .. }
                            | GgufError::UnknownTensorType { .. }
                    ),
                    "only llama.cpp accepts: {e}"
                );
            }
        }
    }
    eprintln!(
        "both read {both}, both refused {neither}, only Tern read {only_ours}, \
         only llama.cpp read {only_theirs}"
    );
    assert!(both > 0 && neither > 0);
}
