//! The kernel table: for each weight type, how it is multiplied at each kernel level.
//!
//! As ggml's `type_traits_cpu` does, the table has one row per type ([`row`]); here a row has
//! a column per level (scalar, avx2, avxvnni, neon, dotprod, i8mm), and each cell names the level's
//! activation quantizer (`from_float`), dot product (decode), multi-row dot and panel kernels
//! (prefill), and an interleaved weight layout with its own kernels where the level has one
//! (repacked at load: [`RepackKernels`]). A cell left empty runs the level below's kernel
//! ([`Level::fallback`]), down to the scalar reference of [`crate::quant`], which every row
//! has; the interleaved layouts alone are never inherited (a level without one for a type
//! keeps that type in the file's layout). The activation quantizer of a weight type is the
//! `from_float` of its activation type's row, as in ggml.
//!
//! The avxvnni level adds only panel kernels: the AVX2 tiles of the quantized types with
//! `vpdpbusd` in place of `maddubs` and its widening adds (F32 and F16 keep AVX2's float
//! tiles). One token's dot product
//! is bound by reading the weights, not by the multiply-adds, so decode keeps AVX2's kernels.
//!
//! The i8mm level adds only panel kernels (`smmla` multiplies two rows by two tokens: it has
//! nothing to offer one token). Its file-layout panels serve every type it does not repack
//! (Q4_1, Q5_0, Q5_K, and any matrix whose rows do not fill groups of four); the K-quant rows
//! name dotprod's file-layout decode kernels in their i8mm cells, so that such a matrix is
//! decoded and prefilled from the same bytes. Q4_0, Q8_0, Q4_K and Q6_K have an interleaved
//! layout at both dotprod and i8mm, the same bytes with the same decode (dotprod's indexed
//! `sdot`, which every i8mm CPU has); the i8mm one's panels are `smmla` kernels that read
//! the interleaved rows. F32 and F16 have no i8mm cell: their products are float
//! multiply-adds, with no integer matrix to hand to `smmla`, so NEON's float panels serve
//! every aarch64 level.
//!
//! A [`KernelSet`] is one level's column, built once per process from the levels the CPU runs
//! ([`crate::cpu`]). `TERN_KERNELS=scalar` forces the reference everywhere (tests,
//! benchmarks); a set's name (`avx2`, `avxvnni`, `neon`, `dotprod`, `i8mm`) asks for that
//! set when the CPU has it.
//!
//! Module graph: `table` → `cpu`, `kernel`, `quant`, `ops::scalar`, `x86`/`arm`; the per-ISA
//! modules → `kernel`, `quant`, `ops::scalar`, `ops::portable` (which import nothing of the
//! crate but each other); `ops` and `matmul` → `table`. Nothing imports back.

use std::sync::OnceLock;

use crate::cpu::{self, Level};
pub use crate::kernel::{
    DotFn, DotRowsFn, GemmKernels, OpKernels, QuantizeFn, RepackKernels, TypeKernels,
};
use crate::ops::scalar as scalar_ops;
use crate::quant;
use crate::GgmlType;

/// One level's cell of a row: the kernels the level has for the type, `None` where it runs
/// the level below's.
#[derive(Clone, Copy)]
struct Cell {
    /// The quantizer of this row's type, as an activation type.
    from_float: Option<QuantizeFn>,
    dot: Option<DotFn>,
    dot_rows: Option<DotRowsFn>,
    gemm: Option<GemmKernels>,
    /// An interleaved layout and its kernels. Unlike the others, never taken from the level
    /// below: a repacked matrix is multiplied only by the kernels of the level that repacked
    /// it, so inheriting dotprod's would give i8mm `sdot` panels in place of `smmla` ones.
    repack: Option<RepackKernels>,
}

impl Cell {
    const NONE: Cell = Cell {
        from_float: None,
        dot: None,
        dot_rows: None,
        gemm: None,
        repack: None,
    };

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn quantize(self, f: QuantizeFn) -> Cell {
        Cell {
            from_float: Some(f),
            ..self
        }
    }

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn dot(self, f: DotFn) -> Cell {
        Cell {
            dot: Some(f),
            ..self
        }
    }

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn rows(self, f: DotRowsFn) -> Cell {
        Cell {
            dot_rows: Some(f),
            ..self
        }
    }

    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    const fn gemm(self, g: GemmKernels) -> Cell {
        Cell {
            gemm: Some(g),
            ..self
        }
    }

    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    const fn repack(self, r: RepackKernels) -> Cell {
        Cell {
            repack: Some(r),
            ..self
        }
    }
}

/// One weight type's row: the scalar reference and a cell per SIMD level.
struct Row {
    /// The reference quantizer (for the activation types; the weight types' is never used)
    /// and dot product.
    scalar: (QuantizeFn, DotFn),
    avx2: Cell,
    avxvnni: Cell,
    neon: Cell,
    dotprod: Cell,
    i8mm: Cell,
}

impl Row {
    fn cell(&self, level: Level) -> &Cell {
        match level {
            Level::Scalar => &Cell::NONE,
            Level::Avx2 => &self.avx2,
            Level::AvxVnni => &self.avxvnni,
            Level::Neon => &self.neon,
            Level::Dotprod => &self.dotprod,
            Level::I8mm => &self.i8mm,
        }
    }

    /// The kernel `pick` takes from the cell of `level`, or of the first level below that
    /// has one.
    fn find<T>(&self, level: Level, pick: impl Fn(&Cell) -> Option<T>) -> Option<T> {
        let mut at = Some(level);
        while let Some(l) = at {
            if let Some(k) = pick(self.cell(l)) {
                return Some(k);
            }
            at = l.fallback();
        }
        None
    }
}

/// A cell of the x86 kernels: empty on other targets, whose compiler never sees its names.
macro_rules! x86 {
    ($cell:expr) => {{
        #[cfg(target_arch = "x86_64")]
        let c = {
            #[allow(unused_imports)]
            use crate::x86::*;
            $cell
        };
        #[cfg(not(target_arch = "x86_64"))]
        let c = Cell::NONE;
        c
    }};
}

/// A cell of the aarch64 kernels: empty on other targets.
macro_rules! arm {
    ($cell:expr) => {{
        #[cfg(target_arch = "aarch64")]
        let c = {
            #[allow(unused_imports)]
            use crate::arm::*;
            $cell
        };
        #[cfg(not(target_arch = "aarch64"))]
        let c = Cell::NONE;
        c
    }};
}

/// The reference quantizer and dot of a type.
macro_rules! scalar {
    ($ty:ident) => {
        (
            |src, dst| quant::quantize(GgmlType::$ty, src, dst),
            |n, w, a| quant::vec_dot(GgmlType::$ty, n, w, a),
        )
    };
}

/// The table: one row per weight type, a cell per level.
fn row(ty: GgmlType) -> Row {
    use GgmlType::*;
    let none = Cell::NONE;
    let row = |scalar| Row {
        scalar,
        avx2: none,
        avxvnni: none,
        neon: none,
        dotprod: none,
        i8mm: none,
    };
    match ty {
        F32 => Row {
            avx2: x86!(none.dot(dot_f32).gemm(gemm_f32(tile_f32))),
            neon: arm!(none.dot(dot_f32).gemm(gemm_f32(tile_f32))),
            ..row(scalar!(F32))
        },
        F16 => Row {
            avx2: x86!(none
                .quantize(quantize_f16)
                .dot(dot_f16)
                .gemm(gemm_f16(tile_f16))),
            neon: arm!(none.dot(dot_f16).gemm(gemm_f16(tile_f16))),
            ..row(scalar!(F16))
        },
        BF16 => row(scalar!(BF16)),
        Q4_0 => Row {
            avxvnni: x86!(none.gemm(gemm_q8_0(vnni_tile_q4_0))),
            avx2: x86!(none
                .dot(dot_q4_0)
                .rows(rows_q4_0)
                .gemm(gemm_q8_0(tile_q4_0))),
            neon: arm!(none
                .dot(n_dot_q4_0)
                .rows(n_rows_q4_0)
                .gemm(gemm_q8_0(n_tile_q4_0))),
            dotprod: arm!(none
                .dot(d_dot_q4_0)
                .rows(d_rows_q4_0)
                .gemm(gemm_q8_0(d_tile_q4_0))
                .repack(x4_q4_0())),
            i8mm: arm!(none.gemm(i8mm_q8_0(mm_q4_0)).repack(mm4_q4_0())),
            ..row(scalar!(Q4_0))
        },
        Q4_1 => Row {
            avxvnni: x86!(none.gemm(gemm_q8_1(vnni_tile_q4_1))),
            avx2: x86!(none
                .dot(dot_q4_1)
                .rows(rows_q4_1)
                .gemm(gemm_q8_1(tile_q4_1))),
            neon: arm!(none
                .dot(n_dot_q4_1)
                .rows(n_rows_q4_1)
                .gemm(gemm_q8_1(n_tile_q4_1))),
            dotprod: arm!(none
                .dot(d_dot_q4_1)
                .rows(d_rows_q4_1)
                .gemm(gemm_q8_1(d_tile_q4_1))),
            i8mm: arm!(none.gemm(i8mm_q8_1(mm_q4_1))),
            ..row(scalar!(Q4_1))
        },
        Q5_0 => Row {
            avxvnni: x86!(none.gemm(gemm_q8_0(vnni_tile_q5_0))),
            avx2: x86!(none
                .dot(dot_q5_0)
                .rows(rows_q5_0)
                .gemm(gemm_q8_0(tile_q5_0))),
            neon: arm!(none
                .dot(n_dot_q5_0)
                .rows(n_rows_q5_0)
                .gemm(gemm_q8_0(n_tile_q5_0))),
            dotprod: arm!(none
                .dot(d_dot_q5_0)
                .rows(d_rows_q5_0)
                .gemm(gemm_q8_0(d_tile_q5_0))),
            i8mm: arm!(none.gemm(i8mm_q8_0(mm_q5_0))),
            ..row(scalar!(Q5_0))
        },
        Q5_1 => row(scalar!(Q5_1)),
        Q8_0 => Row {
            avxvnni: x86!(none.gemm(gemm_q8_0(vnni_tile_q8_0))),
            avx2: x86!(none
                .quantize(quantize_q8_0)
                .dot(dot_q8_0)
                .rows(rows_q8_0)
                .gemm(gemm_q8_0(tile_q8_0))),
            neon: arm!(none
                .quantize(quantize_q8_0)
                .dot(n_dot_q8_0)
                .rows(n_rows_q8_0)
                .gemm(gemm_q8_0(n_tile_q8_0))),
            dotprod: arm!(none
                .dot(d_dot_q8_0)
                .rows(d_rows_q8_0)
                .gemm(gemm_q8_0(d_tile_q8_0))
                .repack(x4_q8_0())),
            i8mm: arm!(none.gemm(i8mm_q8_0(mm_q8_0)).repack(mm4_q8_0())),
            ..row(scalar!(Q8_0))
        },
        Q8_1 => Row {
            avx2: x86!(none.quantize(quantize_q8_1)),
            neon: arm!(none.quantize(quantize_q8_1)),
            ..row(scalar!(Q8_1))
        },
        Q2_K => row(scalar!(Q2_K)),
        Q3_K => row(scalar!(Q3_K)),
        Q4_K => Row {
            avxvnni: x86!(none.gemm(gemm_q8_k(vnni_tile_q4_k))),
            avx2: x86!(none
                .dot(dot_q4_k)
                .rows(rows_q4_k)
                .gemm(gemm_q8_k(tile_q4_k))),
            neon: arm!(none.dot(n_dot_q4_k).gemm(gemm_q8_k(n_tile_q4_k))),
            dotprod: arm!(none
                .dot(d_dot_q4_k)
                .rows(d_rows_q4_k)
                .gemm(gemm_q8_k(d_tile_q4_k))
                .repack(x4_q4_k())),
            i8mm: arm!(none
                .dot(d_dot_q4_k)
                .rows(d_rows_q4_k)
                .gemm(i8mm_q8_k(mm_q4_k))
                .repack(mm4_q4_k())),
            ..row(scalar!(Q4_K))
        },
        Q5_K => Row {
            avxvnni: x86!(none.gemm(gemm_q8_k(vnni_tile_q5_k))),
            avx2: x86!(none
                .dot(dot_q5_k)
                .rows(rows_q5_k)
                .gemm(gemm_q8_k(tile_q5_k))),
            neon: arm!(none.dot(n_dot_q5_k)),
            dotprod: arm!(none.dot(d_dot_q5_k)),
            i8mm: arm!(none.dot(d_dot_q5_k).gemm(i8mm_q8_k(mm_q5_k))),
            ..row(scalar!(Q5_K))
        },
        Q6_K => Row {
            avxvnni: x86!(none.gemm(gemm_q8_k(vnni_tile_q6_k))),
            avx2: x86!(none
                .dot(dot_q6_k)
                .rows(rows_q6_k)
                .gemm(gemm_q8_k(tile_q6_k))),
            neon: arm!(none.dot(n_dot_q6_k).gemm(gemm_q8_k(n_tile_q6_k))),
            dotprod: arm!(none
                .dot(d_dot_q6_k)
                .gemm(gemm_q8_k(d_tile_q6_k))
                .repack(x4_q6_k())),
            i8mm: arm!(none
                .dot(d_dot_q6_k)
                .gemm(i8mm_q8_k(mm_q6_k))
                .repack(mm4_q6_k())),
            ..row(scalar!(Q6_K))
        },
        Q8_K => Row {
            avx2: x86!(none.quantize(quantize_q8_k)),
            neon: arm!(none.quantize(quantize_q8_k)),
            ..row(scalar!(Q8_K))
        },
    }
}

/// The elementwise kernels of a level: x86-64's AVX2 set, aarch64's NEON set (every aarch64
/// level: the ops need nothing beyond NEON), or the plain ones.
fn op_kernels(level: Level) -> OpKernels {
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx2 | Level::AvxVnni) {
        return crate::x86::OPS;
    }
    #[cfg(target_arch = "aarch64")]
    if level != Level::Scalar {
        return crate::arm::OPS;
    }
    let _ = level;
    OpKernels {
        rms_norm: scalar_ops::rms_norm,
        softmax: scalar_ops::softmax,
        swiglu: scalar_ops::swiglu,
        dot_rows: scalar_ops::dot_rows,
        axpy_rows: scalar_ops::axpy_rows,
        exp_sum: scalar_ops::exp_sum,
        geglu: scalar_ops::geglu,
        rope_norm: scalar_ops::rope_norm,
        rope_neox: scalar_ops::rope_neox,
    }
}

/// One kernel for each weight type, for one CPU feature level.
#[derive(Clone)]
pub struct KernelSet {
    level: Level,
    table: [TypeKernels; GgmlType::ALL.len()],
    ops: OpKernels,
}

fn index(ty: GgmlType) -> usize {
    GgmlType::ALL
        .iter()
        .position(|&t| t == ty)
        .expect("every type is in GgmlType::ALL")
}

impl KernelSet {
    /// The column of `level` (which the caller has seen this CPU run: see [`cpu::levels`]).
    fn at(level: Level) -> KernelSet {
        let table = GgmlType::ALL.map(|ty| {
            let act = ty.vec_dot_type();
            let (w, a) = (row(ty), row(act));
            TypeKernels {
                block_len: ty.block_len(),
                block_bytes: ty.block_bytes(),
                act,
                quantize: a.find(level, |c| c.from_float).unwrap_or(a.scalar.0),
                dot: w.find(level, |c| c.dot).unwrap_or(w.scalar.1),
                dot_rows: w.find(level, |c| c.dot_rows),
                gemm: w.find(level, |c| c.gemm),
                repack: w.cell(level).repack,
            }
        });
        KernelSet {
            level,
            table,
            ops: op_kernels(level),
        }
    }

    /// The scalar reference for every type.
    pub fn scalar() -> KernelSet {
        KernelSet::at(Level::Scalar)
    }

    /// The elementwise kernels (RMSNorm, softmax, SwiGLU, attention's dot/axpy/exp-sum).
    pub fn ops(&self) -> &OpKernels {
        &self.ops
    }

    /// The kernel set's name: `scalar`, `avx2`, `avxvnni`, `neon`, `dotprod` or `i8mm`.
    pub fn name(&self) -> &'static str {
        self.level.name()
    }

    /// The level whose column this set is.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The kernels of weight type `ty`.
    pub fn get(&self, ty: GgmlType) -> &TypeKernels {
        &self.table[index(ty)]
    }

    /// Every set this CPU can run, the scalar reference first and the best last.
    pub fn available() -> Vec<KernelSet> {
        cpu::levels().into_iter().map(KernelSet::at).collect()
    }

    /// The set to use: the best this CPU runs, unless `TERN_KERNELS` names another one it
    /// runs (`scalar` always).
    pub fn detect() -> KernelSet {
        let levels = cpu::levels();
        let want = std::env::var("TERN_KERNELS").ok();
        let named = want.and_then(|w| levels.iter().copied().find(|l| l.name() == w.trim()));
        let chosen = named.or(levels.last().copied()).unwrap_or(Level::Scalar);
        KernelSet::at(chosen)
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
    let levels = cpu::levels();
    let Some(&level) = levels.iter().find(|l| l.name() == name) else {
        return Err(UnavailableKernels {
            name: name.to_string(),
            available: levels
                .iter()
                .map(|l| l.name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let env = std::env::var("TERN_KERNELS").ok();
    if env.is_some_and(|e| levels.iter().any(|l| l.name() == e.trim())) {
        return Ok(kernels());
    }
    Ok(PROCESS_SET.get_or_init(|| KernelSet::at(level)))
}
