//! Safe wrappers of ggml's per-type functions, for testing Tern's block formats against them.
//!
//! Two tables are wrapped: `ggml_get_type_traits` (the format itself: block size, bytes per
//! block, `to_float`, the reference quantizer `from_float_ref`) and `ggml_get_type_traits_cpu`
//! (what the CPU backend runs: its own, possibly SIMD, `from_float`, the `vec_dot` kernel and
//! the activation type it pairs with). Types are ggml's numbers (`enum ggml_type`, the same
//! numbers GGUF stores), so this crate needs nothing from Tern.
//!
//! Every function checks the buffer sizes against the type before handing pointers to C, and
//! copies byte buffers into 8-byte-aligned storage first (ggml's C reads its block structs
//! through typed pointers).

use std::ffi::{c_void, CStr};
use std::fmt;
use std::sync::Once;

use crate::sys;

/// Why a ggml function could not be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgmlError {
    /// ggml has no type with this number (or only a removed one).
    UnknownType(u32),
    /// ggml has no such function for this type (for example no `to_float` for F32 or Q8_K).
    Missing { ty: u32, what: &'static str },
    /// The element count is not a whole number of blocks, or does not fit ggml's `int`.
    BadCount { ty: u32, n: usize },
    /// A buffer's length does not match the element count.
    BadLength {
        ty: u32,
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for GgmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlError::UnknownType(ty) => write!(f, "ggml has no type {ty}"),
            GgmlError::Missing { ty, what } => write!(f, "ggml type {ty} has no {what}"),
            GgmlError::BadCount { ty, n } => {
                write!(
                    f,
                    "{n} values are not a whole number of blocks of ggml type {ty}"
                )
            }
            GgmlError::BadLength {
                ty,
                what,
                expected,
                got,
            } => write!(
                f,
                "ggml type {ty}: {what} has {got} bytes/values, expected {expected}"
            ),
        }
    }
}

impl std::error::Error for GgmlError {}

// Exported by ggml-base (GGML_API in ggml-quants.h) but not part of the generated bindings,
// which cover only the public headers. Q8_K has neither `to_float` nor `from_float_ref` in
// ggml's type traits; these are the functions ggml itself has for it.
unsafe extern "C" {
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut c_void, k: i64);
    fn dequantize_row_q8_K(x: *const c_void, y: *mut f32, k: i64);
}

/// ggml's number for Q8_K.
pub const TYPE_Q8_K: u32 = sys::GGML_TYPE_Q8_K;

fn traits(ty: u32) -> Result<&'static sys::ggml_type_traits, GgmlError> {
    if ty >= sys::GGML_TYPE_COUNT {
        return Err(GgmlError::UnknownType(ty));
    }
    // SAFETY: `ty` is below GGML_TYPE_COUNT, the length of ggml's static traits table, so the
    // returned pointer is to a live static entry.
    let t = unsafe { &*sys::ggml_get_type_traits(ty) };
    if t.blck_size <= 0 {
        return Err(GgmlError::UnknownType(ty)); // removed types keep an empty entry
    }
    Ok(t)
}

fn cpu_traits(ty: u32) -> Result<&'static sys::ggml_type_traits_cpu, GgmlError> {
    traits(ty)?;
    static INIT: Once = Once::new();
    // SAFETY: ggml_cpu_init only fills ggml's own tables and detects CPU features; Once keeps
    // it from racing with itself.
    INIT.call_once(|| unsafe { sys::ggml_cpu_init() });
    // SAFETY: as in `traits`, `ty` indexes ggml's static CPU traits table.
    Ok(unsafe { &*sys::ggml_get_type_traits_cpu(ty) })
}

/// Values in one block of `ty`.
pub fn blck_size(ty: u32) -> Result<usize, GgmlError> {
    Ok(traits(ty)?.blck_size as usize)
}

/// Bytes in one block of `ty`.
pub fn type_size(ty: u32) -> Result<usize, GgmlError> {
    Ok(traits(ty)?.type_size)
}

/// ggml's name for `ty` ("q4_0", "q4_K", …).
pub fn type_name(ty: u32) -> Result<String, GgmlError> {
    let t = traits(ty)?;
    // SAFETY: type names are static NUL-terminated strings in ggml's table.
    Ok(unsafe { CStr::from_ptr(t.type_name) }
        .to_string_lossy()
        .into_owned())
}

/// Bytes taken by `n` values of `ty`.
pub fn row_bytes(ty: u32, n: usize) -> Result<usize, GgmlError> {
    let t = traits(ty)?;
    let bs = t.blck_size as usize;
    if n.checked_rem(bs) != Some(0) || i64::try_from(n).is_err() {
        return Err(GgmlError::BadCount { ty, n });
    }
    Ok(n / bs * t.type_size)
}

/// ggml's CPU activation type for weights of type `ty` (`vec_dot_type`).
pub fn vec_dot_type(ty: u32) -> Result<u32, GgmlError> {
    Ok(cpu_traits(ty)?.vec_dot_type)
}

fn check_len(ty: u32, what: &'static str, expected: usize, got: usize) -> Result<(), GgmlError> {
    if expected == got {
        Ok(())
    } else {
        Err(GgmlError::BadLength {
            ty,
            what,
            expected,
            got,
        })
    }
}

/// Byte storage aligned for any of ggml's block structs.
struct Aligned(Vec<u64>);

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        Aligned(vec![0u64; len.div_ceil(8)])
    }

    fn copy_of(bytes: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(bytes.len());
        a.bytes_mut(bytes.len()).copy_from_slice(bytes);
        a
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the Vec owns at least `len` initialised bytes (8 per u64), and u8 has no
        // alignment or validity requirements.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }

    fn ptr(&self) -> *const c_void {
        self.0.as_ptr().cast()
    }

    fn mut_ptr(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// Calls a ggml row converter `f32 -> ty` on `src`, writing `dst` (exactly the row's bytes).
fn run_from_float(
    ty: u32,
    f: unsafe extern "C" fn(*const f32, *mut c_void, i64),
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), GgmlError> {
    let bytes = row_bytes(ty, src.len())?;
    check_len(ty, "destination", bytes, dst.len())?;
    // Start from the caller's bytes, so that any byte ggml leaves unwritten (Q8_K's `bsums` of
    // an all-zero block) keeps the caller's value rather than a value of ours.
    let mut out = Aligned::copy_of(dst);
    // SAFETY: `src` holds `src.len()` f32s and `out` at least `bytes` writable bytes, which is
    // exactly what ggml writes for `src.len()` values of `ty`.
    unsafe { f(src.as_ptr(), out.mut_ptr(), src.len() as i64) };
    dst.copy_from_slice(out.bytes_mut(bytes));
    Ok(())
}

/// Calls a ggml row converter `ty -> f32` on `src` (exactly the row's bytes), writing `dst`.
fn run_to_float(
    ty: u32,
    f: unsafe extern "C" fn(*const c_void, *mut f32, i64),
    src: &[u8],
    dst: &mut [f32],
) -> Result<(), GgmlError> {
    check_len(ty, "source", row_bytes(ty, dst.len())?, src.len())?;
    let input = Aligned::copy_of(src);
    // SAFETY: `input` holds the bytes of `dst.len()` values of `ty`, and `dst` has room for
    // them as f32.
    unsafe { f(input.ptr(), dst.as_mut_ptr(), dst.len() as i64) };
    Ok(())
}

/// ggml's `to_float` for `ty`: `dst.len()` values from `src`.
pub fn to_float(ty: u32, src: &[u8], dst: &mut [f32]) -> Result<(), GgmlError> {
    let f = traits(ty)?.to_float.ok_or(GgmlError::Missing {
        ty,
        what: "to_float",
    })?;
    run_to_float(ty, f, src, dst)
}

/// ggml's reference quantizer `from_float_ref` for `ty` (the one model files are made with).
pub fn from_float_ref(ty: u32, src: &[f32], dst: &mut [u8]) -> Result<(), GgmlError> {
    let f = traits(ty)?.from_float_ref.ok_or(GgmlError::Missing {
        ty,
        what: "from_float_ref",
    })?;
    run_from_float(ty, f, src, dst)
}

/// ggml's CPU backend quantizer for `ty` (what it applies to activations; may be SIMD code
/// that rounds differently from `from_float_ref`).
pub fn from_float(ty: u32, src: &[f32], dst: &mut [u8]) -> Result<(), GgmlError> {
    let f = cpu_traits(ty)?.from_float.ok_or(GgmlError::Missing {
        ty,
        what: "CPU from_float",
    })?;
    run_from_float(ty, f, src, dst)
}

/// ggml's `quantize_row_q8_K_ref` (Q8_K has no `from_float_ref` in the traits table).
pub fn quantize_row_q8_k_ref(src: &[f32], dst: &mut [u8]) -> Result<(), GgmlError> {
    run_from_float(TYPE_Q8_K, quantize_row_q8_K_ref, src, dst)
}

/// ggml's `dequantize_row_q8_K` (Q8_K has no `to_float` in the traits table).
pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) -> Result<(), GgmlError> {
    run_to_float(TYPE_Q8_K, dequantize_row_q8_K, src, dst)
}

/// ggml's CPU `vec_dot` for weights of type `ty`: the dot product of `n` values `w` with `n`
/// values `act` of `vec_dot_type(ty)`.
pub fn vec_dot(ty: u32, n: usize, w: &[u8], act: &[u8]) -> Result<f32, GgmlError> {
    let t = cpu_traits(ty)?;
    let f = t.vec_dot.ok_or(GgmlError::Missing {
        ty,
        what: "CPU vec_dot",
    })?;
    let n_c = i32::try_from(n).map_err(|_| GgmlError::BadCount { ty, n })?;
    check_len(ty, "weights", row_bytes(ty, n)?, w.len())?;
    check_len(
        t.vec_dot_type,
        "activations",
        row_bytes(t.vec_dot_type, n)?,
        act.len(),
    )?;
    let (w, act) = (Aligned::copy_of(w), Aligned::copy_of(act));
    let mut s = 0.0f32;
    // SAFETY: `w` and `act` hold exactly `n` values of `ty` and of its vec_dot_type; with one
    // row (nrc = 1) the strides are unused and ggml writes the single result to `s`.
    unsafe { f(n_c, &mut s, 0, w.ptr(), 0, act.ptr(), 0, 1) };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_formats() {
        assert_eq!(blck_size(sys::GGML_TYPE_Q4_0), Ok(32));
        assert_eq!(type_size(sys::GGML_TYPE_Q4_0), Ok(18));
        assert_eq!(type_name(sys::GGML_TYPE_Q4_K).as_deref(), Ok("q4_K"));
        assert_eq!(row_bytes(sys::GGML_TYPE_Q6_K, 512), Ok(420));
        assert_eq!(vec_dot_type(sys::GGML_TYPE_Q4_1), Ok(sys::GGML_TYPE_Q8_1));
        assert_eq!(blck_size(4), Err(GgmlError::UnknownType(4))); // removed Q4_2
        assert_eq!(blck_size(10_000), Err(GgmlError::UnknownType(10_000)));
    }

    #[test]
    fn round_trips_and_checks_sizes() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut q = vec![0u8; 34];
        from_float_ref(sys::GGML_TYPE_Q8_0, &x, &mut q).unwrap();
        let mut back = vec![0.0f32; 32];
        to_float(sys::GGML_TYPE_Q8_0, &q, &mut back).unwrap();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 0.07, "{a} vs {b}");
        }
        let dot = vec_dot(sys::GGML_TYPE_Q8_0, 32, &q, &q).unwrap();
        let want: f32 = back.iter().map(|v| v * v).sum();
        assert!((dot - want).abs() < 1e-3 * want, "{dot} vs {want}");

        assert!(matches!(
            from_float_ref(sys::GGML_TYPE_Q8_0, &x[..31], &mut q),
            Err(GgmlError::BadCount { .. })
        ));
        assert!(matches!(
            to_float(sys::GGML_TYPE_Q8_0, &q[..33], &mut back),
            Err(GgmlError::BadLength { .. })
        ));
        assert!(matches!(
            to_float(sys::GGML_TYPE_F32, &q, &mut back),
            Err(GgmlError::Missing { .. })
        ));
    }
}
