//! The kernel table: for each weight type, how it is multiplied on this CPU.
//!
//! A [`KernelSet`] is chosen once per process from the CPU's features ([`kernels`]) and maps
//! every weight type to its activation quantizer, its dot product (decode) and, where there is
//! one, its panel kernels (prefill). Types without a SIMD kernel, and CPUs without a SIMD set
//! (armv7, x86 without AVX2), use the scalar reference of [`crate::quant`].
//!
//! `TERN_KERNELS=scalar` forces the reference everywhere (tests, benchmarks); a set's name
//! (`avx2`, `neon`, `dotprod`, `i8mm`) asks for that set when the CPU has it.

use std::sync::OnceLock;

use crate::ops::OpKernels;
use crate::quant;
use crate::GgmlType;

/// Quantizes activations (whole blocks) to the activation type, in ggml's block layout,
/// bit-exact with [`quant::quantize`].
pub type QuantizeFn = fn(&[f32], &mut [u8]);
/// `quant::vec_dot` for one weight type: `(n, weights, activations) -> dot`.
pub type DotFn = fn(usize, &[u8], &[u8]) -> f32;

/// Several rows times one activation row (decode): `out[r] = dot(row r of w, act)` for the
/// `out.len()` rows in `w`, `(cols, w, act, out)`. Rows are interleaved for parallelism in
/// the core and share the activation loads.
pub type DotRowsFn = fn(usize, &[u8], &[u8], &mut [f32]);

/// Prefill kernels: the activations of [`GemmKernels::panel`] tokens are packed together, and
/// each tile of weight rows is read once for all of them.
#[derive(Clone, Copy)]
pub struct GemmKernels {
    /// Tokens per panel.
    pub panel: usize,
    /// Bytes of one packed panel of `cols` columns.
    pub panel_bytes: fn(cols: usize) -> usize,
    /// Packs `panel` tokens of quantized activations (ggml blocks, `cols` values each, one
    /// token after the other) into one panel.
    pub pack: fn(cols: usize, acts: &[u8], panel: &mut [u8]),
    /// `out[(p * rows + r) * panel + t] = row r · token t of panel p`, for every row of `w`
    /// (`rows` whole rows of `cols` values) and every panel in `panels`.
    pub tile: fn(cols: usize, w: &[u8], panels: &[u8], out: &mut [f32]),
}

/// How one weight type is multiplied.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// The activation type (`ty.vec_dot_type()`).
    pub act: GgmlType,
    pub quantize: QuantizeFn,
    pub dot: DotFn,
    /// Faster than `dot` row by row, where there is one.
    pub dot_rows: Option<DotRowsFn>,
    pub gemm: Option<GemmKernels>,
}

/// One kernel for each weight type, for one CPU feature level.
#[derive(Clone)]
pub struct KernelSet {
    name: &'static str,
    table: [TypeKernels; GgmlType::ALL.len()],
    ops: OpKernels,
}

macro_rules! scalar_entry {
    ($ty:ident) => {
        TypeKernels {
            act: GgmlType::$ty.vec_dot_type(),
            quantize: |src, dst| quant::quantize(GgmlType::$ty.vec_dot_type(), src, dst),
            dot: |n, w, a| quant::vec_dot(GgmlType::$ty, n, w, a),
            dot_rows: None,
            gemm: None,
        }
    };
}

fn index(ty: GgmlType) -> usize {
    GgmlType::ALL
        .iter()
        .position(|&t| t == ty)
        .expect("every type is in GgmlType::ALL")
}

impl KernelSet {
    /// The scalar reference for every type.
    pub fn scalar() -> KernelSet {
        let table = GgmlType::ALL.map(|ty| {
            use GgmlType::*;
            match ty {
                F32 => scalar_entry!(F32),
                F16 => scalar_entry!(F16),
                BF16 => scalar_entry!(BF16),
                Q4_0 => scalar_entry!(Q4_0),
                Q4_1 => scalar_entry!(Q4_1),
                Q5_0 => scalar_entry!(Q5_0),
                Q5_1 => scalar_entry!(Q5_1),
                Q8_0 => scalar_entry!(Q8_0),
                Q8_1 => scalar_entry!(Q8_1),
                Q2_K => scalar_entry!(Q2_K),
                Q3_K => scalar_entry!(Q3_K),
                Q4_K => scalar_entry!(Q4_K),
                Q5_K => scalar_entry!(Q5_K),
                Q6_K => scalar_entry!(Q6_K),
                Q8_K => scalar_entry!(Q8_K),
            }
        });
        KernelSet {
            name: "scalar",
            table,
            ops: OpKernels::SCALAR,
        }
    }

    /// A set named `name` whose entries start as `base`'s; used by the per-ISA modules.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn derived(base: KernelSet, name: &'static str) -> KernelSet {
        KernelSet { name, ..base }
    }

    /// Replaces the kernels of weight type `ty`.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn set(&mut self, ty: GgmlType, k: TypeKernels) {
        debug_assert_eq!(k.act, ty.vec_dot_type(), "{ty}");
        self.table[index(ty)] = k;
    }

    /// Replaces the elementwise kernels. (aarch64 keeps the plain ones, which the compiler
    /// vectorises with NEON but for the exponentials.)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_ops(&mut self, ops: OpKernels) {
        self.ops = ops;
    }

    /// The elementwise kernels (RMSNorm, softmax, SwiGLU).
    pub fn ops(&self) -> &OpKernels {
        &self.ops
    }

    /// The kernel set's name: `scalar`, `avx2`, `neon`, `dotprod` or `i8mm`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The kernels of weight type `ty`.
    pub fn get(&self, ty: GgmlType) -> &TypeKernels {
        &self.table[index(ty)]
    }

    /// Every set this CPU can run, the scalar reference first and the best last.
    pub fn available() -> Vec<KernelSet> {
        #[cfg_attr(
            not(any(target_arch = "x86_64", target_arch = "aarch64")),
            allow(unused_mut)
        )]
        let mut sets = vec![KernelSet::scalar()];
        #[cfg(target_arch = "x86_64")]
        sets.extend(crate::x86::sets());
        #[cfg(target_arch = "aarch64")]
        sets.extend(crate::arm::sets());
        sets
    }

    /// The set to use: the best this CPU runs, unless `TERN_KERNELS` names another one it
    /// runs (`scalar` always).
    pub fn detect() -> KernelSet {
        let mut sets = KernelSet::available();
        if let Ok(want) = std::env::var("TERN_KERNELS") {
            if let Some(i) = sets.iter().position(|s| s.name == want.trim()) {
                return sets.swap_remove(i);
            }
        }
        sets.pop().expect("the scalar set is always available")
    }
}

/// The kernel set of this process: the one [`choose_kernels`] chose, or on first use without
/// a choice the best this CPU runs (`TERN_KERNELS` applies either way).
pub fn kernels() -> &'static KernelSet {
    PROCESS_SET.get_or_init(KernelSet::detect)
}

static PROCESS_SET: OnceLock<KernelSet> = OnceLock::new();

/// A kernel set asked for by name that this CPU does not run.
#[derive(Debug, thiserror::Error)]
#[error("kernel set `{name}` does not run on this CPU (it runs: {available})")]
pub struct UnavailableKernels {
    pub name: String,
    pub available: String,
}

/// Makes `name` (one of [`KernelSet::available`]) the process's kernel set, if no set is in
/// use yet: a board caps the kernels (a Pi 4 profile asks for `neon` even where `dotprod`
/// runs). The process runs one set, so a later, different choice does not replace it, and
/// `TERN_KERNELS` wins over any choice. Returns the set in use; compare its name with `name`
/// to tell the user when it is not the one asked for.
pub fn choose_kernels(name: &str) -> Result<&'static KernelSet, UnavailableKernels> {
    let mut sets = KernelSet::available();
    let Some(i) = sets.iter().position(|s| s.name == name) else {
        return Err(UnavailableKernels {
            name: name.to_string(),
            available: sets.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
        });
    };
    let env = std::env::var("TERN_KERNELS").ok();
    if env.is_some_and(|e| sets.iter().any(|s| s.name == e.trim())) {
        return Ok(kernels());
    }
    let chosen = sets.swap_remove(i);
    Ok(PROCESS_SET.get_or_init(|| chosen))
}
