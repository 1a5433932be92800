//! The `llama` architecture (Llama 2/3, SmolLM, TinyLlama, …): RMSNorm, RoPE, grouped-query
//! attention and a SwiGLU feed-forward, with tied or separate output weights.

use tern_kernels::matmul::{matmul, matmul_many};
use tern_kernels::ops;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{block_count, hparam_usize, load_vector, ModelError, WeightRef};
use crate::cache::{CacheConfig, CacheError, CacheShape, KvCache};
use crate::gguf::GgufFile;

/// Hyper-parameters, read from the GGUF file's `llama.*` keys.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rope_base: f32,
    pub rope_dims: usize,
    pub rms_eps: f32,
    /// The context length the model was trained with.
    pub n_ctx_train: usize,
}

impl LlamaConfig {
    fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let a = "llama";
        let n_embd = hparam_usize(file, a, "embedding_length")?;
        let n_head = hparam_usize(file, a, "attention.head_count")?;
        let n_head_kv = match file.get_u32("llama.attention.head_count_kv") {
            Ok(v) => v as usize,
            Err(_) => n_head,
        };
        let bad = |key: &str, why: &str| ModelError::HyperParameter {
            key: format!("llama.{key}"),
            why: why.into(),
        };
        if !n_embd.is_multiple_of(n_head) {
            return Err(bad(
                "attention.head_count",
                "does not divide embedding_length",
            ));
        }
        if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
            return Err(bad("attention.head_count_kv", "must divide head_count"));
        }
        let head_dim = n_embd / n_head;
        let rope_dims = file
            .get_u32("llama.rope.dimension_count")
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
        Ok(LlamaConfig {
            n_vocab,
            n_embd,
            n_layer: block_count(file, a, 9)?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: hparam_usize(file, a, "feed_forward_length")?,
            rope_base: file.get_f32("llama.rope.freq_base").unwrap_or(10_000.0),
            rope_dims,
            rms_eps: file
                .get_f32("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            n_ctx_train: file
                .get_u32("llama.context_length")
                .map(|v| v as usize)
                .unwrap_or(2048),
        })
    }

    /// Values per token in the key (and the value) cache of one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: WeightRef,
    wk: WeightRef,
    wv: WeightRef,
    wo: WeightRef,
    ffn_norm: Vec<f32>,
    w_gate: WeightRef,
    w_up: WeightRef,
    w_down: WeightRef,
}

/// A loaded llama model: its file, its configuration, and where each weight lives.
pub struct Llama {
    file: GgufFile,
    cfg: LlamaConfig,
    token_embd: WeightRef,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: WeightRef,
}

impl Llama {
    /// Checks the file's hyper-parameters and tensors and keeps the file. Weights stay in the
    /// map; nothing but the norm vectors is read.
    pub fn load(file: GgufFile) -> Result<Llama, ModelError> {
        let arch = file.architecture()?;
        if arch != "llama" {
            return Err(ModelError::UnsupportedArchitecture(arch.to_string()));
        }
        let c = LlamaConfig::from_gguf(&file)?;
        let (d, q_dim, kv, ff) = (c.n_embd, c.n_head * c.head_dim, c.kv_dim(), c.n_ff);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let t = |n: &str| format!("blk.{i}.{n}.weight");
            let f = &file;
            layers.push(Layer {
                attn_norm: load_vector(f, &t("attn_norm"), d)?,
                wq: WeightRef::find(f, &t("attn_q"), d, q_dim)?,
                wk: WeightRef::find(f, &t("attn_k"), d, kv)?,
                wv: WeightRef::find(f, &t("attn_v"), d, kv)?,
                wo: WeightRef::find(f, &t("attn_output"), q_dim, d)?,
                ffn_norm: load_vector(f, &t("ffn_norm"), d)?,
                w_gate: WeightRef::find(f, &t("ffn_gate"), d, ff)?,
                w_up: WeightRef::find(f, &t("ffn_up"), d, ff)?,
                w_down: WeightRef::find(f, &t("ffn_down"), ff, d)?,
            });
        }
        let token_embd = WeightRef::find(&file, "token_embd.weight", d, c.n_vocab)?;
        // Small models tie the output matrix to the embeddings.
        let output = if file.tensor_info("output.weight").is_some() {
            WeightRef::find(&file, "output.weight", d, c.n_vocab)?
        } else {
            token_embd
        };
        Ok(Llama {
            output_norm: load_vector(&file, "output_norm.weight", d)?,
            file,
            cfg: c,
            token_embd,
            layers,
            output,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// A cache for this model, taking batches of up to `batch` tokens.
    pub fn new_cache(&self, cfg: CacheConfig, batch: usize) -> Result<KvCache, CacheError> {
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
                batch,
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
        // A checkpoint to undo this batch if it is cancelled (after any rebase of epochs).
        cache.make_room(n);
        let checkpoint = cache.checkpoint();
        cache.append(n)?;
        let data = self.file.tensor_data();
        let (d, q_dim, kv_dim, ff) = (c.n_embd, c.n_head * c.head_dim, c.kv_dim(), c.n_ff);

        let embd = self.token_embd.view(data);
        for (t, &id) in tokens.iter().enumerate() {
            embd.dequantize_row(id as usize, &mut st.x[t * d..(t + 1) * d]);
        }

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
            for (xt, bt) in x.chunks_exact(d).zip(xb.chunks_exact_mut(d)) {
                ops::rms_norm(xt, &layer.attn_norm, c.rms_eps, bt);
            }
            // q, k and v share their input: quantized once, one parallel dispatch.
            let qkv = [
                layer.wq.view(data),
                layer.wk.view(data),
                layer.wv.view(data),
            ];
            matmul_many(&qkv, xb, &mut [&mut *q, &mut *k, &mut *v], act);
            cache.store(l, k, v);
            cache.attend(l, q, att, &mut st.qrot);
            matmul(&layer.wo.view(data), att, proj, act);
            ops::add_assign(x, proj);

            // Feed-forward block.
            for (xt, bt) in x.chunks_exact(d).zip(xb.chunks_exact_mut(d)) {
                ops::rms_norm(xt, &layer.ffn_norm, c.rms_eps, bt);
            }
            let gate_up = [layer.w_gate.view(data), layer.w_up.view(data)];
            matmul_many(&gate_up, xb, &mut [&mut *gate, &mut *up], act);
            ops::swiglu(gate, up);
            matmul(&layer.w_down.view(data), gate, proj, act);
            ops::add_assign(x, proj);
        }

        // Final norm and classifier, for the last token or for all of them.
        let first = if all_logits { 0 } else { n - 1 };
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
        st.n_logits = rows;
        Ok(())
    }
}

/// The activation buffers of one session, allocated once for a batch size and a cache
/// capacity; no forward pass allocates.
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
}

impl State {
    /// Buffers for batches of up to `batch` tokens (the cache holds its own).
    pub fn new(c: &LlamaConfig, batch: usize) -> State {
        let q_dim = c.n_head * c.head_dim;
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
            act: Vec::with_capacity(batch * (c.n_ff.max(c.n_embd) + 64) * 2),
        }
    }

    /// A flag that, when raised, makes the forward pass under way stop at the next layer
    /// and undo its batch ([`ModelError::Cancelled`]).
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
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
