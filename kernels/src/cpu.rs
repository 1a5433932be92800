//! Which kernel levels this CPU runs, from its features seen at run time.
//!
//! A [`Level`] names a family of kernels and the features it needs. Detection lives here,
//! apart from the kernels and from the table that maps types to them ([`crate::table`]).

/// A family of kernels and the CPU features it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The plain reference of [`crate::quant`]: every CPU.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// AVX2 plus AVX-VNNI's `vpdpbusd` (Alder Lake, Sapphire Rapids, Zen 5 and later).
    AvxVnni,
    /// aarch64 NEON (every aarch64 CPU).
    Neon,
    /// aarch64 with the dot-product instructions (`sdot`).
    Dotprod,
    /// aarch64 with the 8-bit matrix multiply (`smmla`), and dotprod.
    I8mm,
}

impl Level {
    /// The name of the level's kernel set, as `TERN_KERNELS` and board profiles spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avxvnni",
            Level::Neon => "neon",
            Level::Dotprod => "dotprod",
            Level::I8mm => "i8mm",
        }
    }

    /// The level whose kernels this one runs where it has none of its own: i8mm → dotprod →
    /// neon → scalar; avxvnni → avx2 → scalar.
    pub const fn fallback(self) -> Option<Level> {
        match self {
            Level::Scalar => None,
            Level::Avx2 | Level::Neon => Some(Level::Scalar),
            Level::Dotprod => Some(Level::Neon),
            Level::I8mm => Some(Level::Dotprod),
            Level::AvxVnni => Some(Level::Avx2),
        }
    }
}

/// The levels this CPU runs, the scalar reference first and the best last.
pub fn levels() -> Vec<Level> {
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut levels = vec![Level::Scalar];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        levels.push(Level::Avx2);
        if avx_vnni() {
            levels.push(Level::AvxVnni);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        levels.push(Level::Neon);
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            levels.push(Level::Dotprod);
            if std::arch::is_aarch64_feature_detected!("i8mm") {
                levels.push(Level::I8mm);
            }
        }
    }
    levels
}

/// Whether the CPU has AVX-VNNI (CPUID leaf 7, sub-leaf 1, EAX bit 4), read directly because
/// `is_x86_feature_detected!("avxvnni")` is newer than this crate's minimum Rust. The OS's
/// saving of the 256-bit registers it uses was checked with AVX2.
#[cfg(target_arch = "x86_64")]
fn avx_vnni() -> bool {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: `cpuid` exists on every x86-64 CPU (older Rust marks these functions unsafe).
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(0).eax >= 7
            && __cpuid_count(7, 0).eax >= 1
            && __cpuid_count(7, 1).eax & (1 << 4) != 0
    }
}
