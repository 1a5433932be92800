//! Model architectures and their forward passes.
//!
//! A model owns its GGUF file (the memory map) and refers to its weights by their place in
//! the file's data section, so weights are read in place and never copied.

pub mod llama;

use tern_kernels::matmul::{PackedMatrix, QMatrix};
use tern_kernels::{quant, GgmlType};

use crate::cache::CacheError;
use crate::gguf::{GgufError, GgufFile};

pub use llama::{Activation, Arch, Llama, LlamaConfig, State, SUPPORTED_ARCHITECTURES};

/// Why a model cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture `{0}` is not supported (supported: llama, qwen2, qwen3, gemma3)")]
    UnsupportedArchitecture(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor `{name}` has type {ty}, which cannot be used here")]
    TensorType { name: String, ty: GgmlType },
    #[error("hyper-parameter `{key}` is invalid: {why}")]
    HyperParameter { key: String, why: String },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("a batch of {n} tokens exceeds the session's batch size of {max}")]
    BatchTooLarge { n: usize, max: usize },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cancelled")]
    Cancelled,
}

/// Where a weight matrix sits in the file's data section; checked at load.
#[derive(Clone, Copy, Debug)]
struct WeightRef {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    bytes: usize,
}

impl WeightRef {
    /// Finds tensor `name` and checks it is a `rows × cols` matrix (ggml dims `[cols, rows]`).
    fn find(
        file: &GgufFile,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<WeightRef, ModelError> {
        let info = file
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                tensor: name.to_string(),
            })?;
        let dims: Vec<u64> = info.dims.iter().copied().filter(|&d| d != 1).collect();
        let expected: Vec<u64> = [cols as u64, rows as u64]
            .into_iter()
            .filter(|&d| d != 1)
            .collect();
        if dims != expected {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![cols as u64, rows as u64],
                found: info.dims.clone(),
            });
        }
        if !cols.is_multiple_of(info.ty.block_len()) {
            return Err(ModelError::TensorType {
                name: name.to_string(),
                ty: info.ty,
            });
        }
        Ok(WeightRef {
            ty: info.ty,
            rows,
            cols,
            offset: info.offset as usize,
            bytes: info.bytes as usize,
        })
    }

    /// Rows `start..start + n` of this matrix. Fused tensors (phi3's `attn_qkv` and
    /// `ffn_up`) are used as their parts, in place.
    fn rows(&self, start: usize, n: usize) -> WeightRef {
        debug_assert!(start + n <= self.rows);
        let row_bytes = self.bytes / self.rows.max(1);
        WeightRef {
            rows: n,
            offset: self.offset + start * row_bytes,
            bytes: n * row_bytes,
            ..*self
        }
    }

    /// The matrix, borrowed from the file's data section.
    fn view<'a>(&self, data: &'a [u8]) -> QMatrix<'a> {
        QMatrix::new(
            self.ty,
            self.rows,
            self.cols,
            &data[self.offset..self.offset + self.bytes],
        )
        .expect("the shape was checked against the tensor at load")
    }
}

/// A matrix weight as the forward pass reads it: in the map, or repacked at load into the
/// kernel set's interleaved layout (whose pages of the map were then released).
enum Weight {
    Mapped(WeightRef),
    Packed(PackedMatrix),
}

impl Weight {
    /// The matrix, from the file's data section or from its repacked copy.
    fn view<'a>(&'a self, data: &'a [u8]) -> QMatrix<'a> {
        match self {
            Weight::Mapped(w) => w.view(data),
            Weight::Packed(p) => p.view(),
        }
    }

    /// Repacks a mapped matrix where the process's kernel set has an interleaved layout for
    /// it, and releases the file's pages of it: memory does not double (llama.cpp #16761).
    /// Returns the bytes repacked.
    fn repack(&mut self, file: &GgufFile) -> usize {
        let Weight::Mapped(w) = self else { return 0 };
        let w = *w;
        // The file's pages are released as the repacking goes, a chunk at a time, so that a
        // large matrix (an output layer) is not resident twice even for a moment.
        let release = |done: usize| {
            file.release(w.offset..w.offset + done);
        };
        let view = w.view(file.tensor_data());
        let Some(packed) = view.repack_with_progress(tern_kernels::kernels(), release) else {
            return 0;
        };
        *self = Weight::Packed(packed);
        w.bytes
    }
}

/// Whether [`Llama::load`] repacks matrices: unless `TERN_REPACK=0` (to compare, or to keep
/// every weight in the map).
fn repack_enabled() -> bool {
    std::env::var("TERN_REPACK").map_or(true, |v| v.trim() != "0")
}

/// Reads a small vector (a norm's weights) as f32. These are the only weights copied: a few
/// kilobytes per layer, so the hot loop needs no conversion.
fn load_vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let w = WeightRef::find(file, name, len, 1)?;
    let mut out = vec![0.0; len];
    quant::dequantize(
        w.ty,
        &file.tensor_data()[w.offset..w.offset + w.bytes],
        &mut out,
    );
    Ok(out)
}

/// The number of blocks, `{arch}.block_count`, checked against the tensors present before
/// it sizes anything: a file with `per_block` tensors per block holds at most
/// `tensors / per_block` blocks, and its last block must be there. (2³¹ blocks in a small
/// file once aborted the load on `Vec::with_capacity`.)
fn block_count(file: &GgufFile, arch: &str, per_block: usize) -> Result<usize, ModelError> {
    let n = hparam_usize(file, arch, "block_count")?;
    let held = file.tensors().len() / per_block.max(1);
    let last = format!("blk.{}.", n - 1);
    if n > held || !file.tensors().iter().any(|t| t.name.starts_with(&last)) {
        return Err(ModelError::HyperParameter {
            key: format!("{arch}.block_count"),
            why: format!(
                "{n} blocks, but the file's {} tensors hold at most {}",
                file.tensors().len(),
                held.min(n - 1)
            ),
        });
    }
    Ok(n)
}

/// Reads a required unsigned hyper-parameter `{arch}.{key}`.
fn hparam_usize(file: &GgufFile, arch: &str, key: &str) -> Result<usize, ModelError> {
    let v = file.get_u32(&format!("{arch}.{key}"))? as usize;
    if v == 0 {
        return Err(ModelError::HyperParameter {
            key: format!("{arch}.{key}"),
            why: "must be positive".into(),
        });
    }
    Ok(v)
}

/// A model ready to talk: its weights (in the map), its tokenizer and its chat template.
/// Immutable once loaded, so sessions on several threads can share one (`Arc<Model>`).
pub struct Model {
    llama: Llama,
    tokenizer: crate::tokenizer::Tokenizer,
    template: crate::chat::ChatTemplate,
    path: std::path::PathBuf,
    /// [`Model::fingerprint`], computed at its first use: it hashes the whole header (its
    /// metadata alone is 1.7 MB for SmolLM2, 5.9 MB for Qwen2.5, most of it the vocabulary),
    /// which every session save and restore hashed again.
    fingerprint: std::sync::OnceLock<[u8; 32]>,
    /// The weights being mapped ahead of the first pass; stopped when the model is dropped.
    _prefault: crate::gguf::Prefault,
}

/// Why a model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: GgufError,
    },
    #[error("{path}: {source}")]
    Model {
        path: std::path::PathBuf,
        source: ModelError,
    },
    #[error("{path}: {source}")]
    Tokenizer {
        path: std::path::PathBuf,
        source: crate::tokenizer::TokenizerError,
    },
}

/// The data ranges the first forward pass reads whole and from the map: every layer's
/// tensors and the output matrix, but neither embeddings that are only looked up by row (an
/// output matrix of their own exists) nor matrices the kernel set repacks at load (their
/// pages of the map are released, and must stay so); in the order the pass reads them, the
/// layers, then the output matrix.
fn read_in_full(file: &GgufFile) -> Vec<std::ops::Range<usize>> {
    let tied = file.tensor_info("output.weight").is_none();
    let ks = tern_kernels::kernels();
    let repack = repack_enabled();
    let stays_mapped = |t: &crate::gguf::TensorInfo| {
        // Tied embeddings are read by row and never repacked.
        let tied_output = tied && t.name == "token_embd.weight";
        tied_output || !(repack && t.dims.len() == 2 && ks.get(t.ty).repack.is_some())
    };
    let range = |t: &crate::gguf::TensorInfo| {
        let start = usize::try_from(t.offset).ok()?;
        Some(start..start.checked_add(usize::try_from(t.bytes).ok()?)?)
    };
    let output = if tied {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    let layers = file.tensors().iter().filter(|t| t.name.starts_with("blk."));
    layers
        .chain(file.tensor_info(output))
        .filter(|t| stays_mapped(t))
        .filter_map(range)
        .collect()
}

impl Model {
    /// Maps the GGUF file at `path` and checks it. No weight is copied; those the first pass
    /// reads whole are mapped ahead on a low-priority thread ([`GgufFile::prefault`]), and
    /// the rest are paged in as they are used.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Model, LoadError> {
        let path = path.as_ref().to_path_buf();
        let file = GgufFile::open(&path).map_err(|source| LoadError::File {
            path: path.clone(),
            source,
        })?;
        // Started first, so that it uses the CPUs the tokenizer build leaves idle.
        let prefault = file.prefault(read_in_full(&file));
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&file).map_err(|source| {
            LoadError::Tokenizer {
                path: path.clone(),
                source,
            }
        })?;
        let template = crate::chat::ChatTemplate::from_gguf(&file, &tokenizer);
        let llama = Llama::load(file).map_err(|source| LoadError::Model {
            path: path.clone(),
            source,
        })?;
        Ok(Model {
            llama,
            tokenizer,
            template,
            path,
            fingerprint: std::sync::OnceLock::new(),
            _prefault: prefault,
        })
    }

    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    pub fn tokenizer(&self) -> &crate::tokenizer::Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &crate::chat::ChatTemplate {
        &self.template
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A digest of the file's header (metadata and tensor table) and of the first and last
    /// pages of its weights: what a saved session checks to refuse another model.
    pub fn fingerprint(&self) -> [u8; 32] {
        *self.fingerprint.get_or_init(|| {
            use sha2::{Digest, Sha256};
            let f = self.llama.file();
            let data = f.tensor_data();
            let edge = data.len().min(4096);
            let mut h = Sha256::new();
            h.update(f.file_size().to_le_bytes());
            h.update(f.header_bytes());
            h.update(&data[..edge]);
            h.update(&data[data.len() - edge..]);
            h.finalize().into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufWriter, Value};

    /// Defect 3: `llama.block_count = 2³¹` aborted the load on an allocation sized by it.
    #[test]
    fn block_count_beyond_the_tensors_present_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()));
        w.add_metadata("llama.embedding_length", Value::U32(64));
        w.add_metadata("llama.attention.head_count", Value::U32(4));
        w.add_metadata("llama.feed_forward_length", Value::U32(128));
        w.add_metadata("llama.block_count", Value::U32(1 << 31));
        w.add_tensor(
            "token_embd.weight",
            GgmlType::F32,
            &[64, 10],
            vec![0; 64 * 10 * 4],
        );
        w.add_tensor(
            "blk.0.attn_norm.weight",
            GgmlType::F32,
            &[64],
            vec![0; 64 * 4],
        );
        w.write_file(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let e = match Llama::load(file) {
            Err(e) => e,
            Ok(_) => panic!("loaded 2^31 blocks"),
        };
        assert!(
            e.to_string().contains("llama.block_count") && e.to_string().contains("2147483648"),
            "{e}"
        );
    }

    /// The ranges mapped ahead of the first pass: the layers in file order, then the output
    /// matrix; embeddings only when they are the output (F32 weights: no kernel set
    /// repacks them, so every matrix here stays in the map).
    #[test]
    fn the_weights_read_in_full_are_the_layers_then_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = |with_output: bool| {
            let path = dir.path().join(format!("m{with_output}.gguf"));
            let mut w = GgufWriter::new();
            w.add_metadata("general.architecture", Value::String("llama".into()));
            let mut add = |name: &str, dims: &[u64]| {
                let n = dims.iter().product::<u64>() as usize;
                w.add_tensor(name, GgmlType::F32, dims, vec![0; n * 4]);
            };
            add("token_embd.weight", &[64, 10]);
            add("blk.0.attn_norm.weight", &[64]);
            add("blk.0.attn_q.weight", &[64, 64]);
            add("output_norm.weight", &[64]);
            if with_output {
                add("output.weight", &[64, 10]);
            }
            add("blk.1.attn_q.weight", &[64, 64]);
            w.write_file(&path).unwrap();
            GgufFile::open(&path).unwrap()
        };
        let range = |f: &GgufFile, name: &str| {
            let t = f.tensor_info(name).unwrap();
            t.offset as usize..(t.offset + t.bytes) as usize
        };
        for with_output in [false, true] {
            let f = file(with_output);
            let output = if with_output {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            let want: Vec<_> = [
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight",
                "blk.1.attn_q.weight",
                output,
            ]
            .iter()
            .map(|n| range(&f, n))
            .collect();
            assert_eq!(
                read_in_full(&f),
                want,
                "output.weight present: {with_output}"
            );
        }
    }
}
