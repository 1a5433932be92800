//! What a cache is made of: its configuration, the shape of the model it serves, its element
//! type and its errors.

use tern_kernels::{ops, GgmlType};

/// The element type of cached keys and values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
    Q8_0,
}

impl KvType {
    pub(super) fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes of one cached row of `kv_dim` values (a whole number of blocks for q8_0).
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        let t = self.ggml();
        kv_dim.div_ceil(t.block_len()) * t.block_bytes()
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(format!("unknown KV type `{s}` (expected f32, f16 or q8_0)")),
        }
    }
}

/// How the cache of the global layers is sized and behaves. (Local layers, where a model has
/// them, always keep their trained window: see [`SlidingWindow`].)
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Tokens at the start of the text kept for ever (the attention sinks).
    pub sinks: usize,
    /// Most recent tokens kept after the sinks.
    pub window: usize,
    /// Element type of keys and values.
    pub kv_type: KvType,
    /// Tokens evicted at once when the window overflows (1: per token, as in the paper).
    pub evict_chunk: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            sinks: 4,
            window: 1020,
            kv_type: KvType::F16,
            evict_chunk: 1,
        }
    }
}

impl CacheConfig {
    /// A cache that never evicts: `capacity` tokens, all kept (an ordinary, dense cache).
    pub fn dense(capacity: usize) -> CacheConfig {
        CacheConfig {
            sinks: 0,
            window: capacity,
            ..CacheConfig::default()
        }
    }

    /// Tokens held at most.
    pub fn capacity(&self) -> usize {
        self.sinks.saturating_add(self.window)
    }
}

/// The shape of the model a cache serves, and its RoPE.
#[derive(Clone, Debug)]
pub struct CacheShape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// Per-frequency divisors of the RoPE angles (`rope_dims / 2` of them: Llama 3.1's
    /// `rope_freqs`, how its long-context scaling is stored), if the model has them.
    pub rope_factors: Option<Vec<f32>>,
    /// How RoPE pairs the values of a head.
    pub rope_style: RopeStyle,
    /// Scale of the attention scores (`1/√head_dim` for most models).
    pub attn_scale: f32,
    /// Layers restricted to a sliding window of recent tokens, if the model has any.
    pub sliding: Option<SlidingWindow>,
    /// Tokens that can always be appended at once: every ring keeps this many rows beyond
    /// its window, so that each token of a batch sees its whole window.
    pub batch: usize,
    /// Largest batch taken while the rings have free rows for it without a rebase (a young
    /// cache filling with a long prompt, where larger batches reuse each weight more): the
    /// scratch is sized for it, the rows are not. Raised to `batch` if below it.
    pub max_batch: usize,
}

/// Which values of a head RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: ggml's "normal" RoPE (llama).
    Norm,
    /// Halves `(x[i], x[i + d/2])`: ggml's "NeoX" RoPE (Qwen, Gemma, Phi).
    Neox,
}

/// Local attention (Gemma 3): on the marked layers a token sees only the keys less than
/// `window` positions behind it (llama.cpp's `LLAMA_SWA_TYPE_STANDARD` masks `p1 - p0 >=
/// n_swa`), and RoPE uses its own base. Those layers get a ring of `window` tokens of their
/// own (plus a batch), whatever the sinks and window of the global layers.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    pub window: usize,
    pub rope_base: f32,
    /// One flag per layer: true where the window applies.
    pub layers: Vec<bool>,
}

impl CacheShape {
    /// Rotates each head of `x` by `angles` in this model's RoPE style.
    pub(super) fn rotate(&self, x: &mut [f32], angles: &[(f32, f32)]) {
        match self.rope_style {
            RopeStyle::Norm => ops::rope_norm(x, self.head_dim, angles),
            RopeStyle::Neox => ops::rope_neox(x, self.head_dim, angles),
        }
    }

    /// True when `layer` is a local (sliding-window) layer.
    pub fn is_local(&self, layer: usize) -> bool {
        self.sliding
            .as_ref()
            .is_some_and(|s| s.layers.get(layer).copied().unwrap_or(false))
    }
}

/// Why a cache cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache window must hold at least one token")]
    EmptyWindow,
    #[error("evict_chunk must be between 1 and the window ({window}), got {chunk}")]
    BadEvictChunk { chunk: usize, window: usize },
    #[error("KV type q8_0 needs heads of a multiple of 32 values (head size {0})")]
    Q8HeadSize(usize),
    #[error("heads of {0} values are larger than the cache supports (256)")]
    HeadTooLarge(usize),
    #[error("a cache of {sinks} sinks and a window of {window} tokens is too large to allocate")]
    TooLarge { sinks: usize, window: usize },
    #[error("{n} tokens at once exceed the {batch} the cache can take now")]
    BatchTooLarge { n: usize, batch: usize },
}

/// Largest head the attention handles.
pub(super) const MAX_HEAD_DIM: usize = 256;

/// `n` zero bytes, or `None` when the allocator cannot give them (an error for the caller,
/// rather than the abort of `vec![0; n]`).
pub(super) fn zeroed(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v)
}
