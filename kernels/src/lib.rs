//! Quantized block formats, bit-exact with ggml's, and the matrix kernels that multiply them.
//!
//! [`quant`] holds the block layouts with their plain scalar reference: dequantization,
//! quantization of activations, and the dot product of each weight type with its activation
//! type. Every faster kernel is tested against this reference. [`matmul`] is the one matrix
//! product the runtime calls; [`ops`] holds the elementwise primitives of a forward pass.
//!
//! [`table`] maps each weight type to its kernels at each level, one row per type as ggml's
//! type traits do; a [`KernelSet`] is one level's column, chosen once per process from the
//! levels this CPU runs ([`cpu`]): AVX2 (`x86/`), NEON with dotprod and i8mm where present
//! (`arm/`), or the scalar reference everywhere else (`TERN_KERNELS=scalar` forces it); a
//! board profile may cap the choice ([`choose_kernels`]). [`kernel`] names the kernels'
//! function types, so the table and the per-ISA modules never import each other.

pub mod cpu;
pub mod kernel;
pub mod matmul;
pub mod ops;
pub mod quant;
pub mod table;
pub mod types;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod spare;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use table::{choose_kernels, kernels, KernelSet};
pub use types::{GgmlType, QK_K};
