//! The decoder-only transformer every supported architecture is a case of: RMSNorm, RoPE,
//! grouped-query attention and a gated feed-forward. What differs between architectures is
//! data read from the GGUF file ([`Arch`] and [`LlamaConfig`]), not code:
//!
//! - `llama` (Llama 2/3, SmolLM, TinyLlama): the plain form, SwiGLU, adjacent-pair RoPE, and
//!   Llama 3.1's long-context RoPE scaling as per-frequency factors (`rope_freqs`);
//! - `qwen2`: biases on q, k and v, NeoX RoPE;
//! - `qwen3`: RMSNorm of each query and key head (QK-norm), NeoX RoPE;
//! - `gemma3`: QK-norm, norms after attention and after the feed-forward as well as before,
//!   GELU-gated feed-forward, embeddings scaled by √n_embd, and local layers (five of every
//!   six) that see only the last `sliding_window` tokens with their own RoPE base;
//! - `phi3`: q, k and v fused in one matrix (`attn_qkv`), gate and up fused in `ffn_up`
//!   (gate first), NeoX RoPE; the fused matrices are used as their parts in place.

use rayon::iter::{IntoParallelRefMutIterator, ParallelIterator};
use tern_kernels::matmul::{matmul_many, matmul_many_per_token, QMatrix};
use tern_kernels::ops;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{
    block_count, hparam_usize, load_vector, repack_enabled, ModelError, Weight, WeightRef,
};
use crate::cache::{CacheConfig, CacheError, CacheShape, KvCache, RopeStyle, SlidingWindow};
use crate::gguf::GgufFile;

/// The architectures Tern runs (the file's `general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Phi3,
}

/// The names accepted in `general.architecture`, for error messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, qwen3, gemma3, phi3";

impl Arch {
    fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            _ => return None,
        })
    }

    /// The prefix of the file's hyper-parameter keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// Fewest tensors a block has (phi3 fuses five matrices into two).
    fn tensors_per_block(self) -> usize {
        match self {
            Arch::Phi3 => 6,
            _ => 9,
        }
    }

    /// Gate and up projections fused in one `ffn_up` of `2 × n_ff` rows, gate first.
    fn fused_gate_up(self) -> bool {
        self == Arch::Phi3
    }

    fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Norm,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 | Arch::Phi3 => RopeStyle::Neox,
        }
    }

    /// Biases on the q, k and v projections.
    fn qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// RMSNorm of each query and key head before RoPE.
    fn qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3)
    }

    /// RMSNorm of the attention and feed-forward outputs before their residual adds.
    fn post_norms(self) -> bool {
        self == Arch::Gemma3
    }

    fn activation(self) -> Activation {
        match self {
            Arch::Gemma3 => Activation::Gelu,
            _ => Activation::Silu,
        }
    }
}

/// The gate's activation in the feed-forward (`act(gate) · up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    Gelu,
}

/// Hyper-parameters, read from the GGUF file's `{arch}.*` keys.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// Divisors of the RoPE angles per frequency (Llama 3.1's `rope_freqs`), if any.
    pub rope_factors: Option<Vec<f32>>,
    pub rms_eps: f32,
    /// The context length the model was trained with.
    pub n_ctx_train: usize,
    /// Scale of the attention scores.
    pub attn_scale: f32,
    /// Factor applied to the token embeddings (√n_embd for Gemma).
    pub embd_scale: Option<f32>,
    pub activation: Activation,
    /// Local attention layers, if any.
    pub sliding: Option<SlidingWindow>,
    /// `c · tanh(logits / c)` on the output, if set.
    pub final_softcap: Option<f32>,
}

impl LlamaConfig {
    fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let name = file.architecture()?;
        let arch = Arch::from_name(name)
            .ok_or_else(|| ModelError::UnsupportedArchitecture(name.to_string()))?;
        let a = arch.name();
        let key = |k: &str| format!("{a}.{k}");
        let n_embd = hparam_usize(file, a, "embedding_length")?;
        let n_head = hparam_usize(file, a, "attention.head_count")?;
        // Checked against the tensors present before it sizes anything (a hostile count).
        let n_layer = block_count(file, a, arch.tensors_per_block())?;
        let n_head_kv = match file.get_u32(&key("attention.head_count_kv")) {
            Ok(v) => v as usize,
            Err(_) => n_head,
        };
        let bad = |k: &str, why: &str| ModelError::HyperParameter {
            key: key(k),
            why: why.into(),
        };
        if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
            return Err(bad("attention.head_count_kv", "must divide head_count"));
        }
        let head_dim = match file.get_u32(&key("attention.key_length")) {
            Ok(v) => v as usize,
            Err(_) if n_embd.is_multiple_of(n_head) => n_embd / n_head,
            Err(_) => {
                return Err(bad(
                    "attention.head_count",
                    "does not divide embedding_length",
                ))
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad("attention.key_length", "must be even and positive"));
        }
        if let Ok(v) = file.get_u32(&key("attention.value_length")) {
            if v as usize != head_dim {
                return Err(bad("attention.value_length", "must equal key_length"));
            }
        }
        let rope_dims = file
            .get_u32(&key("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(bad(
                "rope.dimension_count",
                "must be even and at most the head size",
            ));
        }
        let token_embd = file.tensor_info("token_embd.weight").ok_or_else(|| {
            crate::gguf::GgufError::MissingTensor {
                tensor: "token_embd.weight".into(),
            }
        })?;
        let n_vocab = *token_embd.dims.get(1).unwrap_or(&0) as usize;
        if n_vocab == 0 {
            return Err(bad("vocab_size", "token_embd.weight has no rows"));
        }
        // Per-frequency RoPE factors change every angle. Llama 3.1 stores its long-context
        // scaling as `rope_freqs`; Phi-3's LongRoPE factors (and their attention scaling)
        // are refused by name rather than run with the wrong positions.
        let rope_factors = match file.tensor_info("rope_freqs.weight") {
            Some(_) if arch == Arch::Llama => {
                let f = load_vector(file, "rope_freqs.weight", rope_dims / 2)?;
                if f.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(bad("rope_freqs", "factors must be positive numbers"));
                }
                Some(f)
            }
            _ => None,
        };
        if let Some(t) = [
            "rope_freqs.weight",
            "rope_factors_long.weight",
            "rope_factors_short.weight",
        ]
        .into_iter()
        .find(|t| rope_factors.is_none() && file.tensor_info(t).is_some())
        {
            return Err(bad(
                "rope",
                &format!("RoPE frequency factors (`{t}`) are not supported for {a}"),
            ));
        }
        let rope_base = file.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0);
        let sliding = match (arch, file.get_u32(&key("attention.sliding_window"))) {
            (Arch::Gemma3, Ok(window)) if window > 0 => {
                // llama.cpp's rule for Gemma 3: every `pattern`-th layer is global.
                let pattern = file
                    .get_u32(&key("attention.sliding_window_pattern"))
                    .unwrap_or(6) as usize;
                Some(SlidingWindow {
                    window: window as usize,
                    rope_base: file.get_f32(&key("rope.freq_base_swa")).unwrap_or(10_000.0),
                    layers: (0..n_layer)
                        .map(|l| pattern == 0 || l % pattern < pattern - 1)
                        .collect(),
                })
            }
            _ => None,
        };
        let positive = |k: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad(k, "must be a positive number"))
            }
        };
        positive("rope.freq_base", rope_base)?;
        let final_softcap = match file.get_f32(&key("final_logit_softcapping")) {
            Ok(c) => Some(positive("final_logit_softcapping", c)?),
            Err(_) => None,
        };
        Ok(LlamaConfig {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: hparam_usize(file, a, "feed_forward_length")?,
            rope_base,
            rope_dims,
            rope_factors,
            rms_eps: file
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            n_ctx_train: file
                .get_u32(&key("context_length"))
                .map(|v| v as usize)
                .unwrap_or(2048),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embd_scale: (arch == Arch::Gemma3).then(|| (n_embd as f32).sqrt()),
            activation: arch.activation(),
            sliding,
            final_softcap,
        })
    }

    /// Values per token in the key (and the value) cache of one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Values per token of all the query heads.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    /// Biases of q, k and v (qwen2).
    qkv_bias: Option<[Vec<f32>; 3]>,
    /// RMSNorm weights of each query and key head (qwen3, gemma3).
    qk_norm: Option<[Vec<f32>; 2]>,
    wo: Weight,
    /// RMSNorm of the attention output before the residual add (gemma3).
    attn_post_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
    /// RMSNorm of the feed-forward output before the residual add (gemma3).
    ffn_post_norm: Option<Vec<f32>>,
}

impl Layer {
    /// The layer's matrix weights.
    fn matrices(&self) -> [&Weight; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    fn matrices_mut(&mut self) -> [&mut Weight; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

/// A loaded model: its file, its configuration, and where each weight lives.
pub struct Llama {
    file: GgufFile,
    cfg: LlamaConfig,
    token_embd: WeightRef,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Weight,
    /// Bytes repacked at load (see [`Llama::repacked_bytes`]).
    repacked: usize,
}

impl Llama {
    /// Checks the file's hyper-parameters and tensors and keeps the file. Weights stay in the
    /// map, but for the matrices the kernel set repacks into interleaved rows (unless
    /// `TERN_REPACK=0`; see [`Llama::load_with`]); nothing else but the norm vectors and
    /// biases is read. A missing tensor is an error that names it.
    pub fn load(file: GgufFile) -> Result<Llama, ModelError> {
        Llama::load_with(file, repack_enabled())
    }

    /// [`Llama::load`], repacking (`repack`) the matrices the process's kernel set has an
    /// interleaved layout for (the dotprod set: Q4_0, Q8_0, Q4_K) and releasing their pages
    /// of the map, or keeping every weight in the map. Embeddings, and an output matrix tied
    /// to them, are read by row and stay in the map.
    pub fn load_with(file: GgufFile, repack: bool) -> Result<Llama, ModelError> {
        let c = LlamaConfig::from_gguf(&file)?;
        let (d, q_dim, kv, ff, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff, c.head_dim);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let t = |n: &str| format!("blk.{i}.{n}.weight");
            let b = |n: &str| format!("blk.{i}.{n}.bias");
            let f = &file;
            let post = |n: &str| -> Result<Option<Vec<f32>>, ModelError> {
                match c.arch.post_norms() {
                    true => Ok(Some(load_vector(f, &t(n), d)?)),
                    false => Ok(None),
                }
            };
            // q, k and v: three matrices, or one of their rows stacked (`attn_qkv`).
            let (wq, wk, wv) = match f.tensor_info(&t("attn_qkv")) {
                Some(_) => {
                    let w = WeightRef::find(f, &t("attn_qkv"), d, q_dim + 2 * kv)?;
                    (w.rows(0, q_dim), w.rows(q_dim, kv), w.rows(q_dim + kv, kv))
                }
                None => (
                    WeightRef::find(f, &t("attn_q"), d, q_dim)?,
                    WeightRef::find(f, &t("attn_k"), d, kv)?,
                    WeightRef::find(f, &t("attn_v"), d, kv)?,
                ),
            };
            let (w_gate, w_up) = match c.arch.fused_gate_up() {
                true => {
                    let w = WeightRef::find(f, &t("ffn_up"), d, 2 * ff)?;
                    (w.rows(0, ff), w.rows(ff, ff))
                }
                false => (
                    WeightRef::find(f, &t("ffn_gate"), d, ff)?,
                    WeightRef::find(f, &t("ffn_up"), d, ff)?,
                ),
            };
            layers.push(Layer {
                attn_norm: load_vector(f, &t("attn_norm"), d)?,
                wq: Weight::Mapped(wq),
                wk: Weight::Mapped(wk),
                wv: Weight::Mapped(wv),
                qkv_bias: match c.arch.qkv_bias() {
                    true => Some([
                        load_vector(f, &b("attn_q"), q_dim)?,
                        load_vector(f, &b("attn_k"), kv)?,
                        load_vector(f, &b("attn_v"), kv)?,
                    ]),
                    false => None,
                },
                qk_norm: match c.arch.qk_norm() {
                    true => Some([
                        load_vector(f, &t("attn_q_norm"), hd)?,
                        load_vector(f, &t("attn_k_norm"), hd)?,
                    ]),
                    false => None,
                },
                wo: Weight::Mapped(WeightRef::find(f, &t("attn_output"), q_dim, d)?),
                attn_post_norm: post("post_attention_norm")?,
                ffn_norm: load_vector(f, &t("ffn_norm"), d)?,
                w_gate: Weight::Mapped(w_gate),
                w_up: Weight::Mapped(w_up),
                w_down: Weight::Mapped(WeightRef::find(f, &t("ffn_down"), ff, d)?),
                ffn_post_norm: post("post_ffw_norm")?,
            });
        }
        let token_embd = WeightRef::find(&file, "token_embd.weight", d, c.n_vocab)?;
        // Small models tie the output matrix to the embeddings, which are read by row and
        // so stay in the map.
        let tied = file.tensor_info("output.weight").is_none();
        let mut output = Weight::Mapped(match tied {
            false => WeightRef::find(&file, "output.weight", d, c.n_vocab)?,
            true => token_embd,
        });
        // Matrices the kernel set has an interleaved layout for are repacked now, once, and
        // their pages of the map released, the layers shared out over rayon's pool. Where the
        // set repacks none of them, as on x86-64, nothing is done and no pool is touched: a
        // host that used Tern and then forked (a pool's threads do not survive a fork) can
        // load models in the child. (On a repacking CPU such a child would wait for the
        // parent's pool: not yet handled.)
        let mut repacked = 0;
        let ks = tern_kernels::kernels();
        let repacks = |w: &Weight| matches!(w, Weight::Mapped(r) if ks.get(r.ty).repack.is_some());
        let any = layers.iter().any(|l| l.matrices().into_iter().any(repacks));
        if repack && (any || (!tied && repacks(&output))) {
            let file = &file;
            repacked = layers
                .par_iter_mut()
                .map(|l| {
                    l.matrices_mut()
                        .into_iter()
                        .map(|w| w.repack(file))
                        .sum::<usize>()
                })
                .sum();
            if !tied {
                repacked += output.repack(file);
            }
        }
        Ok(Llama {
            output_norm: load_vector(&file, "output_norm.weight", d)?,
            file,
            cfg: c,
            token_embd,
            layers,
            output,
            repacked,
        })
    }

    /// Bytes of weights repacked at load into the kernel set's interleaved layouts (their
    /// pages of the map released); 0 where the set has none for the model's types.
    pub fn repacked_bytes(&self) -> usize {
        self.repacked
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A cache for this model with rows for batches of `batch` tokens at any time and
    /// scratch for batches of up to `max_batch` while it has room ([`CacheShape::max_batch`]).
    pub fn new_cache(
        &self,
        cfg: CacheConfig,
        batch: usize,
        max_batch: usize,
    ) -> Result<KvCache, CacheError> {
        let c = &self.cfg;
        KvCache::new(
            cfg,
            CacheShape {
                n_layer: c.n_layer,
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                rope_base: c.rope_base,
                rope_dims: c.rope_dims,
                rope_factors: c.rope_factors.clone(),
                rope_style: c.arch.rope_style(),
                attn_scale: c.attn_scale,
                sliding: c.sliding.clone(),
                batch,
                max_batch,
            },
        )
    }

    /// Runs `tokens` (at most `state`'s batch size) through the model after the tokens already
    /// in `cache`, appending theirs. Afterwards `state.logits()` holds the next-token logits
    /// of the last token, or of every token when `all_logits` is set.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        st: &mut State,
        all_logits: bool,
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        let n = tokens.len();
        if n > st.batch {
            return Err(ModelError::BatchTooLarge { n, max: st.batch });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                id,
                n_vocab: c.n_vocab,
            });
        }
        if n == 0 {
            st.n_logits = 0;
            return Ok(());
        }
        // Room for the batch, and a checkpoint to undo it if it is cancelled.
        let checkpoint = cache.open(n)?;
        let data = self.file.tensor_data();
        let (d, q_dim, kv_dim, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);

        let embd = self.token_embd.view(data);
        for (t, &id) in tokens.iter().enumerate() {
            let row = &mut st.x[t * d..(t + 1) * d];
            embd.dequantize_row(id as usize, row);
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }

        // Products of the batch, by panels or token by token (see `State::set_per_token`).
        let per_token = st.per_token;
        let matmul_many =
            |ws: &[QMatrix<'_>], x: &[f32], ys: &mut [&mut [f32]], act: &mut Vec<u8>| {
                if per_token {
                    matmul_many_per_token(ws, x, ys, act)
                } else {
                    matmul_many(ws, x, ys, act)
                }
            };
        let matmul = |w: &QMatrix<'_>, x: &[f32], y: &mut [f32], act: &mut Vec<u8>| {
            matmul_many(std::slice::from_ref(w), x, &mut [y], act)
        };
        let x = &mut st.x[..n * d];
        let xb = &mut st.xb[..n * d];
        let q = &mut st.q[..n * q_dim];
        let k = &mut st.k[..n * kv_dim];
        let v = &mut st.v[..n * kv_dim];
        let att = &mut st.att[..n * q_dim];
        let proj = &mut st.proj[..n * d];
        let gate = &mut st.gate[..n * ff];
        let up = &mut st.up[..n * ff];
        let act = &mut st.act;
        // Tokens whose logits are wanted. The last layer computes its keys and values for
        // every token (the cache keeps them) but the rest of it for these tokens only:
        // nothing reads the others' outputs (llama.cpp skips them too).
        let first = if all_logits { 0 } else { n - 1 };
        let last_layer = self.layers.len() - 1;

        for (l, layer) in self.layers.iter().enumerate() {
            // Cancellation is honoured between layers: the batch is undone, nothing is half fed.
            if st
                .cancel
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                cache.rollback(checkpoint);
                return Err(ModelError::Cancelled);
            }
            // Attention block. RoPE is applied by the cache, which assigns the positions.
            ops::zip_rows(x, d, xb, d, |_, xt, bt| {
                ops::rms_norm(xt, &layer.attn_norm, c.rms_eps, bt)
            });
            // q, k and v share their input: quantized once, one parallel dispatch.
            let qkv = [
                layer.wq.view(data),
                layer.wk.view(data),
                layer.wv.view(data),
            ];
            matmul_many(&qkv, xb, &mut [&mut *q, &mut *k, &mut *v], act);
            if let Some([bq, bk, bv]) = &layer.qkv_bias {
                add_rows(q, bq);
                add_rows(k, bk);
                add_rows(v, bv);
            }
            if let Some([nq, nk]) = &layer.qk_norm {
                rms_norm_rows(q, nq, c.rms_eps);
                rms_norm_rows(k, nk, c.rms_eps);
            }
            cache.store(l, k, v);
            let from = if l == last_layer { first } else { 0 };
            cache.attend_from(l, from, q, att, &mut st.qrot);
            // The rows of the tokens still needed in this layer.
            let x = &mut x[from * d..];
            let xb = &mut xb[from * d..];
            let att = &att[from * q_dim..];
            let proj = &mut proj[from * d..];
            let gate = &mut gate[from * ff..];
            let up = &mut up[from * ff..];
            matmul(&layer.wo.view(data), att, proj, act);
            if let Some(w) = &layer.attn_post_norm {
                rms_norm_rows(proj, w, c.rms_eps);
            }
            ops::zip_rows(proj, d, x, d, |_, p, xt| ops::add_assign(xt, p));

            // Feed-forward block.
            ops::zip_rows(x, d, xb, d, |_, xt, bt| {
                ops::rms_norm(xt, &layer.ffn_norm, c.rms_eps, bt)
            });
            let gate_up = [layer.w_gate.view(data), layer.w_up.view(data)];
            matmul_many(&gate_up, xb, &mut [&mut *gate, &mut *up], act);
            let glu = match c.activation {
                Activation::Silu => ops::swiglu,
                Activation::Gelu => ops::geglu,
            };
            ops::zip_rows(up, ff, gate, ff, |_, u, g| glu(g, u));
            matmul(&layer.w_down.view(data), gate, proj, act);
            if let Some(w) = &layer.ffn_post_norm {
                rms_norm_rows(proj, w, c.rms_eps);
            }
            ops::zip_rows(proj, d, x, d, |_, p, xt| ops::add_assign(xt, p));
        }

        // Final norm and classifier, for the last token or for all of them.
        for t in first..n {
            ops::rms_norm(
                &x[t * d..(t + 1) * d],
                &self.output_norm,
                c.rms_eps,
                &mut xb[t * d..(t + 1) * d],
            );
        }
        let rows = n - first;
        let logits = &mut st.logits[..rows * c.n_vocab];
        matmul(&self.output.view(data), &xb[first * d..n * d], logits, act);
        if let Some(cap) = c.final_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        st.n_logits = rows;
        Ok(())
    }
}

/// Adds `bias` to each row of `x` (rows of `bias.len()` values).
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        ops::add_assign(row, bias);
    }
}

/// RMSNorm of each row of `x` in place, rows of `w.len()` values (a token, or one head).
fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    let mut tmp = [0.0f32; 1024];
    for chunk in x.chunks_exact_mut(w.len()) {
        // Rows longer than the stack buffer (whole tokens of wide models) take a copy.
        if chunk.len() <= tmp.len() {
            let t = &mut tmp[..chunk.len()];
            t.copy_from_slice(chunk);
            ops::rms_norm(t, w, eps, chunk);
        } else {
            let t = chunk.to_vec();
            ops::rms_norm(&t, w, eps, chunk);
        }
    }
}

/// The activation buffers of one session, allocated once for a batch size and a cache
/// capacity; no forward pass allocates (the attention's scratch is the cache's;
/// `runtime/tests/decode_allocations.rs` counts).
pub struct State {
    batch: usize,
    x: Vec<f32>,
    xb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Queries rotated for the sinks and for the window, as the cache needs them.
    qrot: Vec<f32>,
    logits: Vec<f32>,
    n_logits: usize,
    n_vocab: usize,
    /// Activations quantized for the matrix products.
    act: Vec<u8>,
    /// Raised from another thread to abandon the forward pass under way.
    cancel: Option<Arc<AtomicBool>>,
    /// Batches computed token by token (see [`State::set_per_token`]).
    per_token: bool,
}

impl State {
    /// Buffers for batches of up to `batch` tokens (the cache holds its own).
    pub fn new(c: &LlamaConfig, batch: usize) -> State {
        let q_dim = c.q_dim();
        State {
            batch,
            x: vec![0.0; batch * c.n_embd],
            xb: vec![0.0; batch * c.n_embd],
            q: vec![0.0; batch * q_dim],
            k: vec![0.0; batch * c.kv_dim()],
            v: vec![0.0; batch * c.kv_dim()],
            att: vec![0.0; batch * q_dim],
            proj: vec![0.0; batch * c.n_embd],
            gate: vec![0.0; batch * c.n_ff],
            up: vec![0.0; batch * c.n_ff],
            qrot: vec![0.0; batch * 2 * q_dim],
            logits: vec![0.0; batch * c.n_vocab],
            n_logits: 0,
            n_vocab: c.n_vocab,
            cancel: None,
            per_token: false,
            act: Vec::with_capacity(batch * (c.n_ff.max(c.n_embd).max(q_dim) + 64) * 2),
        }
    }

    /// A flag that, when raised, makes the forward pass under way stop at the next layer
    /// and undo its batch ([`ModelError::Cancelled`]).
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// When set, a batch's matrix products use the one-token kernels, so every token's
    /// logits are bitwise those of feeding it alone (slower for long prompts; speculative
    /// decoding's exact verification).
    pub fn set_per_token(&mut self, on: bool) {
        self.per_token = on;
    }

    /// Largest number of tokens one forward pass takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Logits of the last forward pass: one row of `n_vocab` per token that asked for them.
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.n_logits * self.n_vocab]
    }

    /// Logits of the last token of the last forward pass.
    pub fn last_logits(&self) -> &[f32] {
        let start = (self.n_logits.max(1) - 1) * self.n_vocab;
        &self.logits[start..start + self.n_vocab]
    }

    /// Mutable logits of the last token, for samplers that modify them in place.
    pub fn last_logits_mut(&mut self) -> &mut [f32] {
        let start = (self.n_logits.max(1) - 1) * self.n_vocab;
        &mut self.logits[start..start + self.n_vocab]
    }
}
