//! The GGUF reader against good and hostile files.
//!
//! Files are built two ways: with `GgufWriter`, and byte by byte with the small `Raw` encoder
//! below, written from the format description in ggml's `gguf.h` independently of the
//! crate's reader and writer. Each validation error is provoked by a crafted file; every
//! prefix of a valid file and thousands of randomly corrupted copies must give `Err`, never a
//! panic.

use std::time::Instant;

use tern::gguf::{inspect, GgufError, GgufFile, GgufWriter, Value};
use tern_kernels::GgmlType;
use tern_testkit::heap;

/// Counts the heap each thread holds (see `tern_testkit::heap`).
#[global_allocator]
static HEAP: heap::PerThread = heap::PerThread;

// ---------------------------------------------------------------------------------------------
// An independent little-endian GGUF encoder.

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;

#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(T_U32).u32(v)
    }
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key).u32(T_STR).str(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for d in dims {
            self.u64(*d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, alignment: usize) -> &mut Self {
        while self.0.len() & (alignment - 1) != 0 {
            self.0.push(0);
        }
        self
    }
    fn open(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(&self.0)
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small deterministic generator (xorshift64*) for test data and corruption.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Metadata of every value type, including arrays of strings and arrays of arrays.
fn every_value() -> Vec<(String, Value)> {
    let v = |k: &str, v: Value| (k.to_string(), v);
    vec![
        v("general.architecture", Value::String("llama".into())),
        v("t.u8", Value::U8(250)),
        v("t.i8", Value::I8(-7)),
        v("t.u16", Value::U16(65000)),
        v("t.i16", Value::I16(-30000)),
        v("t.u32", Value::U32(4_000_000_000)),
        v("t.i32", Value::I32(-2_000_000_000)),
        v("t.u64", Value::U64(u64::MAX)),
        v("t.i64", Value::I64(i64::MIN)),
        v("t.f32", Value::F32(1e-5)),
        v("t.f64", Value::F64(-2.5e300)),
        v("t.bool", Value::Bool(true)),
        v("t.empty_string", Value::String(String::new())),
        v("t.unicode", Value::String("héllo ▁wörld 🦀".into())),
        v(
            "t.strings",
            Value::array(vec![
                Value::String("<s>".into()),
                Value::String(String::new()),
                Value::String("▁the".into()),
            ]),
        ),
        v(
            "t.floats",
            Value::array(vec![Value::F32(0.5), Value::F32(-1.0)]),
        ),
        v(
            "t.bools",
            Value::array(vec![Value::Bool(false), Value::Bool(true)]),
        ),
        v("t.empty_array", Value::array(vec![])),
        v(
            "t.nested",
            Value::array(vec![
                Value::array(vec![Value::I64(1), Value::I64(-2)]),
                Value::array(vec![Value::String("x".into())]),
                Value::array(vec![]),
            ]),
        ),
    ]
}

/// Tensors of several types whose rows are whole blocks, with random bytes.
fn some_tensors(rng: &mut Rng) -> Vec<(String, GgmlType, Vec<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, ty, dims) in [
        ("token_embd.weight", GgmlType::Q4_1, vec![64, 3]),
        ("blk.0.attn_norm.weight", GgmlType::F32, vec![5]),
        ("blk.0.ffn_up.weight", GgmlType::Q4_K, vec![256, 2]),
        ("blk.0.ffn_down.weight", GgmlType::Q8_0, vec![32, 1, 2, 1]),
        ("half", GgmlType::F16, vec![3, 3]),
        ("brain", GgmlType::BF16, vec![7]),
        ("scalar", GgmlType::F32, vec![]),
        ("empty", GgmlType::Q6_K, vec![256, 0]),
    ] {
        let n: u64 = dims.iter().product();
        let bytes = ty.bytes_for(n).unwrap() as usize;
        out.push((name.to_string(), ty, dims, rng.bytes(bytes)));
    }
    out
}

fn writer_with(
    meta: &[(String, Value)],
    tensors: &[(String, GgmlType, Vec<u64>, Vec<u8>)],
) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k.clone(), v.clone());
    }
    for (name, ty, dims, data) in tensors {
        w.add_tensor(name.clone(), *ty, dims, data.clone());
    }
    w
}

fn check_round_trip(
    g: &GgufFile,
    meta: &[(String, Value)],
    tensors: &[(String, GgmlType, Vec<u64>, Vec<u8>)],
) {
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata(), meta, "metadata in file order");
    assert_eq!(g.tensors().len(), tensors.len());
    for (name, ty, dims, data) in tensors {
        let view = g.tensor(name).unwrap();
        assert_eq!(view.name, name);
        assert_eq!(view.ty, *ty);
        assert_eq!(view.dims, &dims[..]);
        assert_eq!(view.data, &data[..], "tensor {name} bytes");
        assert_eq!(
            view.data.as_ptr() as u64 % g.alignment(),
            0,
            "tensor {name} data is aligned in memory"
        );
    }
    let views: Vec<_> = g.tensor_views().map(|v| v.name.to_string()).collect();
    let names: Vec<_> = tensors.iter().map(|t| t.0.clone()).collect();
    assert_eq!(views, names);
}

// ---------------------------------------------------------------------------------------------
// Good files.

#[test]
fn round_trip_through_a_file() {
    let mut rng = Rng(1);
    let meta = every_value();
    let tensors = some_tensors(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.gguf");
    writer_with(&meta, &tensors).write_file(&path).unwrap();

    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset() % 32, 0);
    check_round_trip(&g, &meta, &tensors);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("t.u16").unwrap(), 65000);
    assert_eq!(g.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_f32("t.f32").unwrap(), 1e-5);
    assert!(g.get_bool("t.bool").unwrap());
    assert_eq!(
        g.get_array("t.strings").unwrap().get(2).unwrap().as_str(),
        Some("▁the")
    );
    assert_eq!(g.get("t.nested").unwrap().describe_type(), "[[i64; 2]; 3]");
}

#[test]
fn round_trip_with_custom_alignment() {
    let mut rng = Rng(2);
    for alignment in [1u32, 8, 64, 4096] {
        let mut meta = every_value();
        meta.push(("general.alignment".into(), Value::U32(alignment)));
        let tensors = some_tensors(&mut rng);
        let bytes = writer_with(&meta, &tensors).to_bytes().unwrap();
        let g = GgufFile::from_bytes(&bytes).unwrap();
        assert_eq!(g.alignment(), u64::from(alignment));
        assert_eq!(g.data_offset() % u64::from(alignment), 0);
        for t in g.tensors() {
            assert_eq!(t.offset % u64::from(alignment), 0, "{}", t.name);
        }
        check_round_trip(&g, &meta, &tensors);
    }
}

#[test]
fn writer_output_matches_hand_encoding() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U8(7))
        .add_metadata("s", Value::array(vec![Value::String("hi".into())]))
        .add_tensor("x", GgmlType::F32, &[2], f32_bytes(&[1.0, -2.0]))
        .add_tensor("y", GgmlType::F32, &[1], f32_bytes(&[3.0]));
    let mut expect = Raw::header(3, 2, 2);
    expect.str("a").u32(T_U8).bytes(&[7]);
    expect.str("s").u32(T_ARR).u32(T_STR).u64(1).str("hi");
    expect
        .tensor("x", &[2], 0, 0)
        .tensor("y", &[1], 0, 32)
        .pad(32);
    expect.bytes(&f32_bytes(&[1.0, -2.0])).pad(32);
    expect.bytes(&f32_bytes(&[3.0])).pad(32);
    assert_eq!(w.to_bytes().unwrap(), expect.0);
}

#[test]
fn reads_a_hand_encoded_v2_file() {
    let mut r = Raw::header(2, 1, 3);
    r.kv_str("general.architecture", "llama");
    r.str("ids").u32(T_ARR).u32(T_I32).u64(3);
    for v in [-1i32, 0, 5] {
        r.bytes(&v.to_le_bytes());
    }
    r.str("flag").u32(T_BOOL).bytes(&[0]);
    r.tensor("w", &[4, 2], 1 /* f16 */, 0).pad(32);
    r.bytes(&[0xab; 16]);
    let g = r.open().unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(
        g.get_array("ids").unwrap().iter().collect::<Vec<_>>(),
        [Value::I32(-1), Value::I32(0), Value::I32(5)]
    );
    assert!(!g.get_bool("flag").unwrap());
    let w = g.tensor("w").unwrap();
    assert_eq!(
        (w.ty, w.dims, w.data),
        (GgmlType::F16, &[4u64, 2][..], &[0xab; 16][..])
    );
    assert_eq!(g.data_offset() as usize, r.0.len() - 16);
}

#[test]
fn accessors_name_the_key() {
    let mut w = GgufWriter::new();
    w.add_metadata("neg", Value::I32(-1))
        .add_metadata("big", Value::U64(1 << 40))
        .add_metadata("small", Value::I16(12))
        .add_metadata("wide", Value::F64(1e100))
        .add_metadata("name", Value::String("n".into()));
    let g = GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
    assert_eq!(g.get_u32("small").unwrap(), 12);
    assert!(matches!(g.get_u32("neg"), Err(GgufError::OutOfRange { key, .. }) if key == "neg"));
    assert!(matches!(g.get_u32("big"), Err(GgufError::OutOfRange { key, .. }) if key == "big"));
    assert!(matches!(g.get_u32("name"), Err(GgufError::WrongType { key, .. }) if key == "name"));
    assert!(matches!(g.get_f32("wide"), Err(GgufError::OutOfRange { key, .. }) if key == "wide"));
    assert!(matches!(g.get_str("small"), Err(GgufError::WrongType { key, .. }) if key == "small"));
    assert!(
        matches!(g.get_bool("missing"), Err(GgufError::MissingKey { key }) if key == "missing")
    );
    assert!(
        matches!(g.architecture(), Err(GgufError::MissingKey { key }) if key == "general.architecture")
    );
    assert!(matches!(g.tensor("w"), Err(GgufError::MissingTensor { tensor }) if tensor == "w"));
    let msg = g.get_str("small").unwrap_err().to_string();
    assert!(msg.contains("\"small\"") && msg.contains("i16"), "{msg}");
}

#[test]
fn writer_refuses_what_the_reader_would() {
    let w = |f: &dyn Fn(&mut GgufWriter)| {
        let mut w = GgufWriter::new();
        f(&mut w);
        w.to_bytes().unwrap_err()
    };
    let e = w(&|w| {
        w.add_tensor("t", GgmlType::F32, &[2], vec![0; 7]);
    });
    assert!(
        matches!(
            e,
            GgufError::TensorSizeMismatch {
                expected: 8,
                got: 7,
                ..
            }
        ),
        "{e}"
    );
    let e = w(&|w| {
        w.add_tensor("t", GgmlType::F32, &[1], vec![0; 4]);
        w.add_tensor("t", GgmlType::F32, &[1], vec![0; 4]);
    });
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e}");
    let e = w(&|w| {
        w.add_tensor("t", GgmlType::Q8_0, &[16], vec![0; 17]);
    });
    assert!(matches!(e, GgufError::PartialBlock { .. }), "{e}");
    let e = w(&|w| {
        w.add_tensor("t", GgmlType::F32, &[1; 5], vec![0; 4]);
    });
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");
    let e = w(&|w| {
        w.set_alignment(24);
    });
    assert!(matches!(e, GgufError::BadAlignment { value: 24 }), "{e}");
    let e = w(&|w| {
        w.add_metadata("m", Value::array(vec![Value::U8(1), Value::I8(1)]));
    });
    assert!(matches!(e, GgufError::MixedArray { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Hostile files: one per error variant.

fn err(r: &Raw) -> GgufError {
    match r.open() {
        Ok(_) => panic!("hostile file opened"),
        Err(e) => e,
    }
}

#[test]
fn bad_magic_version_and_endianness() {
    let mut r = Raw::default();
    r.bytes(b"GGML").u32(3).u64(0).u64(0);
    assert!(matches!(err(&r), GgufError::BadMagic { found } if &found == b"GGML"));

    for v in [0, 1, 4, 0x1234_5678] {
        let e = err(&Raw::header(v, 0, 0));
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version } if version == v),
            "{e}"
        );
    }
    let e = err(&Raw::header(1, 0, 0));
    assert!(e.to_string().contains("version 1"), "{e}");

    // A big-endian v3 file: the same magic, then every number byte-swapped.
    let mut be = Raw::default();
    be.bytes(b"GGUF")
        .bytes(&3u32.to_be_bytes())
        .bytes(&0u64.to_be_bytes());
    be.bytes(&0u64.to_be_bytes());
    let e = err(&be);
    assert!(
        matches!(e, GgufError::BigEndian { raw: 0x0300_0000 }),
        "{e}"
    );
    assert!(e.to_string().contains("big-endian"), "{e}");
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    // A key whose length is the whole address space.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).bytes(b"k").bytes(&[0; 32]);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::Truncated { needed: u64::MAX, context, .. } if context.contains("key")),
        "{e}"
    );

    // A string value of 2^62 bytes.
    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(T_STR).u64(1 << 62).bytes(b"abc");
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::Truncated { context, .. } if context.contains("general.name")),
        "{e}"
    );

    // Arrays of 2^61 u64s, 2^40 strings, 2^40 arrays.
    for (elem, len) in [(T_U64, 1u64 << 61), (T_STR, 1 << 40), (T_ARR, 1 << 40)] {
        let mut r = Raw::header(3, 0, 1);
        r.str("tokenizer.ggml.tokens")
            .u32(T_ARR)
            .u32(elem)
            .u64(len)
            .u64(0);
        let e = err(&r);
        assert!(
            matches!(&e, GgufError::Truncated { context, .. } if context.contains("tokenizer.ggml.tokens")),
            "{e}"
        );
    }

    // An array of arrays, the inner one huge.
    let mut r = Raw::header(3, 0, 1);
    r.str("nest")
        .u32(T_ARR)
        .u32(T_ARR)
        .u64(1)
        .u32(T_U8)
        .u64(u64::MAX - 1);
    assert!(matches!(err(&r), GgufError::Truncated { .. }));

    // Key and tensor counts far larger than the file.
    assert!(matches!(
        err(&Raw::header(3, 0, u64::MAX)),
        GgufError::Truncated { .. }
    ));
    assert!(matches!(
        err(&Raw::header(3, u64::MAX, 0)),
        GgufError::Truncated { .. }
    ));
    assert!(matches!(
        err(&Raw::header(3, 1 << 40, 1 << 40)),
        GgufError::Truncated { .. }
    ));

    // A tensor name of 2^63 bytes.
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 63).u32(0).u32(0).u64(0).u64(0);
    assert!(matches!(err(&r), GgufError::Truncated { .. }));
}

#[test]
fn unknown_value_types_name_the_key() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.weird").u32(13).u32(0);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::UnknownValueType { context, ty: 13 } if context.contains("general.weird")),
        "{e}"
    );

    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(T_ARR).u32(99).u64(1).u32(0);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::UnknownValueType { context, ty: 99 } if context.contains("arr")),
        "{e}"
    );
}

#[test]
fn malformed_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(T_BOOL).bytes(&[2]);
    assert!(matches!(err(&r), GgufError::InvalidBool { byte: 2, .. }));

    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(T_STR).u64(2).bytes(&[0xc3, 0x28]);
    assert!(matches!(err(&r), GgufError::InvalidUtf8 { context } if context.contains("\"s\"")));

    let mut r = Raw::header(3, 0, 1);
    r.u64(1).bytes(&[0xff]).u32(T_U8).bytes(&[0]);
    assert!(matches!(err(&r), GgufError::InvalidUtf8 { .. }));

    // Arrays of arrays, 17 deep.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(T_ARR);
    for _ in 0..17 {
        r.u32(T_ARR).u64(1);
    }
    r.u32(T_U8).u64(0);
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::ArrayTooDeep { context, .. } if context.contains("deep")),
        "{e}"
    );
    // 16 deep is fine.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(T_ARR);
    for _ in 0..15 {
        r.u32(T_ARR).u64(1);
    }
    r.u32(T_U8).u64(0);
    r.open().unwrap();
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("general.x", 1).kv_str("general.x", "again");
    assert!(matches!(err(&r), GgufError::DuplicateKey { key } if key == "general.x"));

    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[1], 0, 0).tensor("w", &[1], 0, 32).pad(32);
    r.bytes(&[0; 64]);
    assert!(matches!(err(&r), GgufError::DuplicateTensor { tensor } if tensor == "w"));
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        assert!(matches!(err(&r), GgufError::BadAlignment { value } if value == u64::from(a)));
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "32");
    let e = err(&r);
    assert!(
        matches!(&e, GgufError::WrongType { key, .. } if key == "general.alignment"),
        "{e}"
    );
}

/// One tensor named `t` of the given raw shape, type and offset, with `data` bytes after the
/// aligned end of the infos.
fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Raw {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", dims, ty, offset)
        .pad(32)
        .bytes(&vec![0; data]);
    r
}

#[test]
fn bad_tensor_infos_name_the_tensor() {
    // Sanity: the helper makes a good file.
    one_tensor(&[8], 0, 0, 32).open().unwrap();

    for ty in [4u32, 5, 16, 29, 39, 1000, u32::MAX] {
        let e = err(&one_tensor(&[8], ty, 0, 32));
        assert!(
            matches!(&e, GgufError::UnknownTensorType { tensor, ty: t } if tensor == "t" && *t == ty),
            "{e}"
        );
        assert!(e.to_string().contains(&ty.to_string()));
    }

    let e = err(&one_tensor(&[1, 1, 1, 1, 1], 0, 0, 32));
    assert!(
        matches!(&e, GgufError::TooManyDims { tensor, n_dims: 5 } if tensor == "t"),
        "{e}"
    );

    for dims in [
        &[u64::MAX, 2][..],
        &[1 << 32, 1 << 32],
        &[1 << 63],
        &[1 << 62, 4],
        &[1 << 61, 1],
    ] {
        let e = err(&one_tensor(dims, 0, 0, 32));
        assert!(
            matches!(&e, GgufError::ShapeOverflow { tensor, .. } if tensor == "t"),
            "{dims:?}: {e}"
        );
    }
    // Elements fit, bytes (×4 for f32) do not.
    let e = err(&one_tensor(&[1 << 62], 0, 0, 32));
    assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");

    // Q4_0 rows of 16 values: half a block.
    let e = err(&one_tensor(&[16, 2], 2, 0, 64));
    assert!(
        matches!(&e, GgufError::PartialBlock { tensor, row_len: 16, block_len: 32, .. } if tensor == "t"),
        "{e}"
    );

    for offset in [1u64, 16, 33] {
        let e = err(&one_tensor(&[1], 0, offset, 128));
        assert!(
            matches!(&e, GgufError::MisalignedTensor { tensor, alignment: 32, .. } if tensor == "t"),
            "{e}"
        );
    }

    // Out of range: one byte short, far past the end, and offset + bytes overflowing.
    let e = err(&one_tensor(&[8], 0, 0, 31));
    assert!(
        matches!(&e, GgufError::TensorOutOfRange { tensor, .. } if tensor == "t"),
        "{e}"
    );
    let e = err(&one_tensor(&[8], 0, 1 << 20, 32));
    assert!(matches!(e, GgufError::TensorOutOfRange { .. }), "{e}");
    let e = err(&one_tensor(&[1 << 60], 0, u64::MAX - 31, 32));
    assert!(matches!(e, GgufError::TensorOutOfRange { .. }), "{e}");
}

#[test]
fn misaligned_with_custom_alignment() {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64);
    r.tensor("t", &[8], 0, 32).pad(64).bytes(&[0; 128]);
    let e = err(&r);
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                offset: 32,
                alignment: 64,
                ..
            }
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Truncation and random corruption.

/// A small file whose last tensor ends exactly at the end of the file, so that every strict
/// prefix is missing something the reader needs.
fn small_valid_file() -> Vec<u8> {
    let mut rng = Rng(3);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .add_metadata("llama.block_count", Value::U32(2))
        .add_metadata("llama.rope.freq_base", Value::F32(10000.0))
        .add_metadata(
            "tokenizer.ggml.tokens",
            Value::array(
                ["<s>", "</s>", "a", "▁b"]
                    .map(|s| Value::String(s.into()))
                    .to_vec(),
            ),
        )
        .add_metadata(
            "tokenizer.ggml.scores",
            Value::array(vec![Value::F32(0.0); 4]),
        )
        .add_metadata(
            "nested",
            Value::array(vec![Value::array(vec![Value::U16(1)])]),
        )
        .add_metadata("flag", Value::Bool(true))
        .add_tensor("q", GgmlType::Q4_0, &[32, 2], rng.bytes(36))
        .add_tensor("w", GgmlType::F32, &[8], rng.bytes(32));
    let bytes = w.to_bytes().unwrap();
    assert_eq!(bytes.len() % 32, 0);
    bytes
}

#[test]
fn every_prefix_is_an_error() {
    let full = small_valid_file();
    GgufFile::from_bytes(&full).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefix.gguf");
    for len in 0..full.len() {
        std::fs::write(&path, &full[..len]).unwrap();
        match GgufFile::open(&path) {
            Ok(_) => panic!("prefix of {len} bytes opened"),
            Err(GgufError::Truncated { .. } | GgufError::TensorOutOfRange { .. }) => {}
            Err(e) => panic!("prefix of {len} bytes: unexpected {e}"),
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let good = small_valid_file();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..5000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes[at] = 0xff,
                // A random 64-bit number, to land on lengths, counts, dims and offsets.
                _ => {
                    let end = (at + 8).min(bytes.len());
                    let v = rng.next().to_le_bytes();
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
            }
        }
        if rng.below(8) == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        match GgufFile::from_bytes(&bytes) {
            Ok(g) => {
                ok += 1;
                // Whatever opened must be usable without panics.
                let mut out = Vec::new();
                inspect(&g, &mut out).unwrap();
                for t in g.tensors() {
                    let v = g.tensor(&t.name).unwrap();
                    assert_eq!(v.data.len() as u64, t.bytes);
                    assert_eq!(Some(t.bytes), t.ty.bytes_for(t.n_elements()));
                }
                for (k, _) in g.metadata() {
                    let _ = (g.get_u32(k), g.get_f32(k), g.get_str(k), g.get_array(k));
                }
            }
            Err(e) => {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    eprintln!("corrupted files: {ok} opened, {errors} refused");
    assert!(ok > 0 && errors > 0, "ok {ok}, errors {errors}");
}

// ---------------------------------------------------------------------------------------------
// The real model, pulled into the model cache on first use.

#[test]
fn opens_smollm2_quickly() {
    let path = tern_testkit::smollm2();
    let start = Instant::now();
    let g = GgufFile::open(&path).unwrap();
    let elapsed = start.elapsed();
    eprintln!("opened {} in {elapsed:?}", path.display());
    assert!(elapsed.as_millis() < 1000, "open took {elapsed:?}");

    assert_eq!(g.architecture().unwrap(), "llama");
    assert!(matches!(g.version(), 2 | 3));
    assert!(!g.tensors().is_empty());
    assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, &[576, 49152]);
    assert_eq!(
        embd.data.len() as u64,
        embd.ty.bytes_for(576 * 49152).unwrap()
    );

    let mut out = Vec::new();
    inspect(&g, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("token_embd.weight"));
    assert!(text.contains("tokenizer.ggml.tokens"));
    assert!(text.lines().count() < 400, "long arrays are abbreviated");
}

/// Issue 12, defect 6: metadata arrays decoded into values cost 32 bytes per element (a
/// 100 MB file of one `u8` array took 3.2 GB). They stay packed in the map: opening a file of
/// 100 Mi `u8`s, 10 Mi bools and 10 Mi empty strings allocates under 1 MiB, and every
/// element reads back.
#[test]
fn metadata_arrays_stay_packed_in_the_map() {
    let (n, m) = (100usize << 20, 10usize << 20);
    let mut r = Raw::header(3, 0, 3);
    r.str("bytes").u32(T_ARR).u32(T_U8).u64(n as u64);
    r.0.extend((0..n).map(|i| (i % 251) as u8));
    r.str("flags").u32(T_ARR).u32(T_BOOL).u64(m as u64);
    r.0.extend((0..m).map(|i| u8::from(i % 3 == 0)));
    r.str("names").u32(T_ARR).u32(T_STR).u64(m as u64);
    r.0.resize(r.0.len() + 8 * m, 0);

    let before = heap::start();
    let g = r.open().unwrap();
    let grew = heap::peak() - before;
    assert!(grew < 1 << 20, "opening allocated {grew} bytes");

    let bytes = g.get_array("bytes").unwrap();
    assert_eq!(bytes.len(), n);
    assert_eq!(bytes.get(n - 1), Some(Value::U8(((n - 1) % 251) as u8)));
    assert_eq!(bytes.get(n), None);
    assert!(bytes
        .iter()
        .enumerate()
        .all(|(i, v)| v == Value::U8((i % 251) as u8)));
    let flags = g.get_array("flags").unwrap();
    let set = flags.iter().filter(|v| *v == Value::Bool(true)).count();
    assert_eq!(set, m.div_ceil(3));
    let names = g.get_array("names").unwrap();
    assert_eq!(names.iter().count(), m);
    assert_eq!(names.get(m - 1), Some(Value::String(String::new())));
    // A bool that is neither 0 nor 1 is still refused at open, inside an array too.
    let mut r = Raw::header(3, 0, 1);
    r.str("flags").u32(T_ARR).u32(T_BOOL).u64(2);
    r.0.extend([1, 2]);
    assert!(matches!(
        r.open().unwrap_err(),
        GgufError::InvalidBool { .. }
    ));
}
