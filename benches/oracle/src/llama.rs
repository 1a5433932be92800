//! A llama.cpp model and context as a test oracle: tokenization, teacher-forced logits and
//! perplexity exactly as llama.cpp computes them, for Tern's tests to compare against.
//!
//! CPU only (no layers offloaded), memory-mapped weights, logging silenced. Each
//! [`OracleModel`] owns one `llama_model` and (unless loaded vocab-only) one `llama_context`
//! holding a single sequence.

use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::path::Path;
use std::sync::Once;

use crate::sys;

/// What can go wrong while driving llama.cpp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OracleError {
    /// The model file could not be loaded (missing, unreadable, or rejected by llama.cpp).
    Load(String),
    /// llama.cpp refused to create a context with the requested parameters.
    Context,
    /// The model was loaded vocab-only, so it has no context to evaluate with.
    VocabOnly,
    /// `llama_decode` returned a non-zero status.
    Decode(i32),
    /// The request does not fit the context or the input (the message says how).
    Input(String),
}

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OracleError::Load(p) => write!(f, "llama.cpp could not load model {p}"),
            OracleError::Context => write!(f, "llama.cpp could not create a context"),
            OracleError::VocabOnly => write!(f, "model was loaded vocab-only: no context"),
            OracleError::Decode(rc) => write!(f, "llama_decode failed with status {rc}"),
            OracleError::Input(msg) => write!(f, "bad oracle input: {msg}"),
        }
    }
}

impl std::error::Error for OracleError {}

/// Result of [`OracleModel::perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp` of the mean negative log-likelihood of the scored tokens.
    pub ppl: f64,
    /// The uncertainty llama-perplexity prints after `+/-`.
    pub err: f64,
    /// Number of tokens scored (`chunks * (n_ctx - 1 - n_ctx / 2)`).
    pub tokens: usize,
    /// Number of chunks evaluated.
    pub chunks: usize,
}

/// llama.cpp keeps global backend state; initialise it once per process and silence its log
/// (tests print their own summaries; llama.cpp's load chatter would drown them).
fn init_backend() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: plain global initialisation calls, made once; the callback is a valid
        // `extern "C"` function that ignores its arguments.
        unsafe {
            sys::llama_log_set(Some(silent_log), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

unsafe extern "C" fn silent_log(
    _level: sys::ggml_log_level,
    _text: *const c_char,
    _user: *mut c_void,
) {
}

/// One llama.cpp model with one single-sequence context (or none, when loaded vocab-only).
pub struct OracleModel {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    vocab: *const sys::llama_vocab,
}

// SAFETY: the model and context are owned exclusively by this struct and llama.cpp keeps no
// thread-affine state in them; all mutation goes through `&mut self`, so moving the owner to
// another thread is sound. (Not `Sync`: llama.cpp contexts are not safe for concurrent use.)
unsafe impl Send for OracleModel {}

impl OracleModel {
    /// Loads `path` on the CPU (mmap on, no GPU layers) with a context of `n_ctx` tokens whose
    /// logical batch is the whole context, evaluated with `n_threads` threads.
    pub fn load(
        path: impl AsRef<Path>,
        n_ctx: usize,
        n_threads: usize,
    ) -> Result<Self, OracleError> {
        Self::load_with(path, n_ctx, n_threads, None)
    }

    /// As [`OracleModel::load`], with flash attention forced on or off (`None`: llama.cpp's
    /// default, "auto"). Comparing the two measures llama.cpp's own numerical noise.
    pub fn load_with(
        path: impl AsRef<Path>,
        n_ctx: usize,
        n_threads: usize,
        flash_attn: Option<bool>,
    ) -> Result<Self, OracleError> {
        Self::load_ctx(path.as_ref(), n_ctx, n_threads, flash_attn, false)
    }

    /// As [`OracleModel::load`], computed as exactly as llama.cpp can: keys and values cached
    /// in f32 (its default is f16) and flash attention off (its CPU path accumulates in f16).
    /// The reference for a runtime that caches in f32.
    pub fn load_exact(
        path: impl AsRef<Path>,
        n_ctx: usize,
        n_threads: usize,
    ) -> Result<Self, OracleError> {
        Self::load_ctx(path.as_ref(), n_ctx, n_threads, Some(false), true)
    }

    fn load_ctx(
        path: &Path,
        n_ctx: usize,
        n_threads: usize,
        flash_attn: Option<bool>,
        f32_cache: bool,
    ) -> Result<Self, OracleError> {
        let model = load_model(path, false)?;
        let n_ctx = u32::try_from(n_ctx)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| OracleError::Input(format!("n_ctx {n_ctx} out of range")))?;
        let threads = i32::try_from(n_threads.max(1)).unwrap_or(i32::MAX);
        // SAFETY: default params are plain data; `model` is a live model from llama.cpp.
        let ctx = unsafe {
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            cp.n_batch = n_ctx;
            cp.n_seq_max = 1;
            cp.n_threads = threads;
            cp.flash_attn_type = match flash_attn {
                None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
                Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            };
            cp.n_threads_batch = threads;
            if f32_cache {
                cp.type_k = sys::GGML_TYPE_F32;
                cp.type_v = sys::GGML_TYPE_F32;
            }
            cp.no_perf = true;
            sys::llama_init_from_model(model.model, cp)
        };
        if ctx.is_null() {
            return Err(OracleError::Context);
        }
        let mut m = model;
        m.ctx = ctx;
        Ok(m)
    }

    /// Loads only the vocabulary of `path` (no weights, no context): enough for tokenizer
    /// parity tests, including GGUF files that carry tokenizer metadata and no tensors.
    pub fn load_vocab_only(path: impl AsRef<Path>) -> Result<Self, OracleError> {
        load_model(path.as_ref(), true)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: `vocab` belongs to the live model.
        unsafe { sys::llama_vocab_n_tokens(self.vocab) as usize }
    }

    /// `llama_tokenize`: `add_special` adds BOS/EOS as the vocabulary says, `parse_special`
    /// turns control/user-defined token texts into their ids.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        let len = i32::try_from(text.len()).expect("text longer than i32::MAX bytes");
        // Upper bound: one token per byte plus BOS/EOS; retried with the exact size if not.
        let mut out = vec![0i32; text.len() + 2];
        loop {
            let cap = i32::try_from(out.len()).expect("token buffer larger than i32::MAX");
            // SAFETY: `text` is valid for `len` bytes; `out` has room for `cap` tokens.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return out;
            }
            out.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// The raw bytes of token `id`'s piece, control and user-defined tokens rendered as their
    /// text (`llama_token_to_piece` with `special = true`, no space stripping). May be a
    /// partial UTF-8 sequence.
    pub fn token_to_piece(&self, id: i32) -> Vec<u8> {
        self.token_to_piece_opt(id, true)
    }

    /// Like [`Self::token_to_piece`], choosing whether control tokens render (`special`).
    pub fn token_to_piece_opt(&self, id: i32, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            let cap = i32::try_from(buf.len()).expect("piece buffer larger than i32::MAX");
            // SAFETY: `buf` has room for `cap` bytes; llama.cpp checks the id range.
            let n = unsafe {
                sys::llama_token_to_piece(self.vocab, id, buf.as_mut_ptr().cast(), cap, 0, special)
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// `llama_detokenize` with `remove_special = false`, `unparse_special = true`: the text as
    /// llama.cpp renders it (including its clean-up of spaces for vocabularies that ask for
    /// it), as raw bytes.
    pub fn detokenize(&self, tokens: &[i32]) -> Vec<u8> {
        let n = i32::try_from(tokens.len()).expect("more than i32::MAX tokens");
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        loop {
            let cap = i32::try_from(buf.len()).expect("text buffer larger than i32::MAX");
            // SAFETY: `tokens` holds `n` ids, `buf` has room for `cap` bytes.
            let got = unsafe {
                sys::llama_detokenize(
                    self.vocab,
                    tokens.as_ptr(),
                    n,
                    buf.as_mut_ptr().cast(),
                    cap,
                    false,
                    true,
                )
            };
            if got >= 0 {
                buf.truncate(got as usize);
                return buf;
            }
            buf.resize(got.unsigned_abs() as usize, 0);
        }
    }

    /// BOS id, if the vocabulary has one.
    pub fn bos(&self) -> Option<i32> {
        // SAFETY: `vocab` belongs to the live model.
        non_null_token(unsafe { sys::llama_vocab_bos(self.vocab) })
    }

    /// EOS id, if the vocabulary has one.
    pub fn eos(&self) -> Option<i32> {
        // SAFETY: as above.
        non_null_token(unsafe { sys::llama_vocab_eos(self.vocab) })
    }

    /// End-of-turn id, if the vocabulary has one.
    pub fn eot(&self) -> Option<i32> {
        // SAFETY: as above.
        non_null_token(unsafe { sys::llama_vocab_eot(self.vocab) })
    }

    /// Whether `id` ends generation (`llama_vocab_is_eog`).
    pub fn is_eog(&self, id: i32) -> bool {
        // SAFETY: as above; llama.cpp looks the id up in a set.
        unsafe { sys::llama_vocab_is_eog(self.vocab, id) }
    }

    /// Whether tokenizing with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        // SAFETY: as above.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab) }
    }

    /// Whether tokenizing with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        // SAFETY: as above.
        unsafe { sys::llama_vocab_get_add_eos(self.vocab) }
    }

    /// The token's attribute bits (`LLAMA_TOKEN_ATTR_*`, after llama.cpp's own fix-ups).
    pub fn token_attr(&self, id: i32) -> u32 {
        // SAFETY: as above; llama.cpp bounds-checks with `at`.
        unsafe { sys::llama_vocab_get_attr(self.vocab, id) }
    }

    /// The model's default chat template (`tokenizer.chat_template`), if present.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: a null name asks for the default template; the returned pointer, when not
        // null, is a NUL-terminated string owned by the model.
        unsafe {
            let p = sys::llama_model_chat_template(self.model, std::ptr::null());
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }

    /// Context size in tokens (0 when vocab-only).
    pub fn n_ctx(&self) -> usize {
        if self.ctx.is_null() {
            return 0;
        }
        // SAFETY: live context.
        unsafe { sys::llama_n_ctx(self.ctx) as usize }
    }

    /// Teacher-forced logits for a fresh sequence: clears the KV memory, decodes `tokens` at
    /// positions 0.. in batches of at most `n_batch`, asking for logits at every position, and
    /// returns one row of `n_vocab` logits per input token (row `i` predicts token `i + 1`).
    pub fn logits_for(&mut self, tokens: &[i32]) -> Result<Vec<Vec<f32>>, OracleError> {
        self.check_fits(tokens.len())?;
        let n_vocab = self.n_vocab();
        let mut rows = Vec::with_capacity(tokens.len());
        self.clear_memory();
        self.decode_all(tokens, 0, |_, logits| rows.push(logits.to_vec()), n_vocab)?;
        Ok(rows)
    }

    /// As [`OracleModel::logits_for`], but hands each row to `sink(position, logits)` as it
    /// is computed instead of keeping them all (long contexts of large vocabularies).
    pub fn logits_each(
        &mut self,
        tokens: &[i32],
        sink: impl FnMut(usize, &[f32]),
    ) -> Result<(), OracleError> {
        self.check_fits(tokens.len())?;
        let n_vocab = self.n_vocab();
        self.clear_memory();
        self.decode_all(tokens, 0, sink, n_vocab)
    }

    /// Perplexity of `tokens` the way llama.cpp's `llama-perplexity` computes it (its
    /// `perplexity()` function in tools/perplexity/perplexity.cpp, without `--ppl-stride`);
    /// the Tern CLI implements the same steps so the two numbers are comparable:
    ///
    /// 1. `tokens` is the whole text tokenized with `add_special = true` (so it starts with BOS
    ///    when the vocabulary adds BOS). It is cut into `n_chunks = len / n_ctx` consecutive
    ///    chunks of `n_ctx` tokens; the tail that does not fill a chunk is ignored. At least
    ///    `2 * n_ctx` tokens are required.
    /// 2. Each chunk is evaluated from an empty KV cache at positions `0..n_ctx`, with its
    ///    first token replaced by BOS when the vocabulary adds BOS.
    /// 3. Only the second half is scored: with `first = n_ctx / 2`, the logits at positions
    ///    `j = first ..= n_ctx - 2` predict the chunk's token `j + 1`, so each chunk
    ///    contributes `n_ctx - 1 - first` tokens.
    /// 4. For each scored position: `max` = the largest logit (f32);
    ///    `sum = Σ expf(logit - max)` accumulated in f64 (each term an f32 `expf`);
    ///    `nll = -((logit[target] - max) as f64 - ln(sum))`. Accumulate `Σ nll` and
    ///    `Σ nll²` in f64 over all chunks, and `count` = number of scored tokens.
    /// 5. `mean = Σnll / count`, `ppl = exp(mean)`; `var = Σnll² / count - mean²`; if
    ///    `var > 0`, `err = sqrt(var / (count - 1)) * ppl` (the standard error of the mean
    ///    log-likelihood, carried through `exp`), else `err = 0` (llama.cpp prints an error
    ///    instead of a value in that case).
    ///
    /// `n_ctx` must not exceed this context's size. (llama.cpp sums per-thread partial sums,
    /// so its last digits can differ by rounding; this sums sequentially.)
    pub fn perplexity(&mut self, tokens: &[i32], n_ctx: usize) -> Result<Perplexity, OracleError> {
        if n_ctx < 2 {
            return Err(OracleError::Input(format!(
                "perplexity needs n_ctx >= 2, got {n_ctx}"
            )));
        }
        self.check_fits(n_ctx)?;
        if tokens.len() < 2 * n_ctx {
            return Err(OracleError::Input(format!(
                "perplexity with n_ctx {n_ctx} needs at least {} tokens, got {}",
                2 * n_ctx,
                tokens.len()
            )));
        }
        // SAFETY: `vocab` belongs to the live model.
        let bos = if unsafe { sys::llama_vocab_get_add_bos(self.vocab) } {
            self.bos()
        } else {
            None
        };
        let n_vocab = self.n_vocab();
        let n_chunks = tokens.len() / n_ctx;
        let first = n_ctx / 2;
        let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
        let mut chunk = vec![0i32; n_ctx];
        for c in 0..n_chunks {
            chunk.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
            if let Some(b) = bos {
                chunk[0] = b;
            }
            let targets = &tokens[c * n_ctx..(c + 1) * n_ctx];
            self.clear_memory();
            self.decode_all(
                &chunk,
                first,
                |pos, logits| {
                    if pos + 1 < n_ctx {
                        let v = -log_softmax(logits, targets[pos + 1] as usize);
                        nll += v;
                        nll2 += v * v;
                        count += 1;
                    }
                },
                n_vocab,
            )?;
        }
        let mean = nll / count as f64;
        let ppl = mean.exp();
        let var = nll2 / count as f64 - mean * mean;
        let err = if var > 0.0 {
            (var / (count as f64 - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        Ok(Perplexity {
            ppl,
            err,
            tokens: count,
            chunks: n_chunks,
        })
    }

    fn check_fits(&self, n: usize) -> Result<(), OracleError> {
        if self.ctx.is_null() {
            return Err(OracleError::VocabOnly);
        }
        if n > self.n_ctx() {
            return Err(OracleError::Input(format!(
                "{n} tokens do not fit the context of {}",
                self.n_ctx()
            )));
        }
        Ok(())
    }

    fn clear_memory(&mut self) {
        // SAFETY: live context; clearing with `data = true` also zeroes the buffers.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true) }
    }

    /// Decodes `tokens` at positions `0..len` (continuing the cleared sequence) in batches of
    /// at most `n_batch`, requesting logits from position `first_out` on, and hands each
    /// output row to `sink(position, logits)` in order.
    fn decode_all(
        &mut self,
        tokens: &[i32],
        first_out: usize,
        mut sink: impl FnMut(usize, &[f32]),
        n_vocab: usize,
    ) -> Result<(), OracleError> {
        // SAFETY: live context.
        let n_batch = unsafe { sys::llama_n_batch(self.ctx) } as usize;
        let batch = Batch::new(n_batch);
        for (b, part) in tokens.chunks(n_batch).enumerate() {
            let start = b * n_batch;
            let n_out = batch.fill(part, start, first_out);
            // SAFETY: the batch holds `part.len()` valid entries for sequence 0.
            let rc = unsafe { sys::llama_decode(self.ctx, batch.raw_with_len(part.len())) };
            if rc != 0 {
                return Err(OracleError::Decode(rc));
            }
            if n_out == 0 {
                continue;
            }
            // SAFETY: after a successful decode, llama.cpp holds `n_out` output rows of
            // `n_vocab` floats in the order the outputs appear in the batch.
            let all = unsafe {
                let p = sys::llama_get_logits(self.ctx);
                std::slice::from_raw_parts(p, n_out * n_vocab)
            };
            let first_pos = start + first_out.saturating_sub(start).min(part.len());
            for (k, row) in all.chunks_exact(n_vocab).enumerate() {
                sink(first_pos + k, row);
            }
        }
        Ok(())
    }
}

/// `log p(target)` from raw logits the way llama-perplexity computes it: f32 max, f32
/// `expf` terms summed in f64, the difference taken in f64.
fn log_softmax(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    f64::from(logits[target] - max) - sum.ln()
}

fn non_null_token(id: i32) -> Option<i32> {
    (id >= 0).then_some(id)
}

fn load_model(path: &Path, vocab_only: bool) -> Result<OracleModel, OracleError> {
    init_backend();
    let shown = path.display().to_string();
    let cpath = path
        .to_str()
        .and_then(|s| CString::new(s).ok())
        .ok_or_else(|| OracleError::Load(shown.clone()))?;
    // SAFETY: default params are plain data; `cpath` is NUL-terminated and outlives the call.
    let model = unsafe {
        let mut mp = sys::llama_model_default_params();
        mp.n_gpu_layers = 0;
        mp.vocab_only = vocab_only;
        sys::llama_model_load_from_file(cpath.as_ptr(), mp)
    };
    if model.is_null() {
        return Err(OracleError::Load(shown));
    }
    // SAFETY: `model` is live; the vocab pointer lives as long as the model.
    let vocab = unsafe { sys::llama_model_get_vocab(model) };
    Ok(OracleModel {
        model,
        ctx: std::ptr::null_mut(),
        vocab,
    })
}

impl Drop for OracleModel {
    fn drop(&mut self) {
        // SAFETY: both pointers came from llama.cpp, are freed once, context before model.
        unsafe {
            if !self.ctx.is_null() {
                sys::llama_free(self.ctx);
            }
            sys::llama_model_free(self.model);
        }
    }
}

/// A `llama_batch` for one sequence, freed on drop.
struct Batch {
    raw: sys::llama_batch,
    cap: usize,
}

impl Batch {
    fn new(cap: usize) -> Self {
        // SAFETY: allocates token/pos/seq arrays for `cap` entries with one seq id each.
        let raw = unsafe { sys::llama_batch_init(cap as i32, 0, 1) };
        Batch { raw, cap }
    }

    /// Writes `tokens` at positions `start..`, outputs requested where the position is at
    /// least `first_out`. Returns the number of outputs requested.
    fn fill(&self, tokens: &[i32], start: usize, first_out: usize) -> usize {
        assert!(tokens.len() <= self.cap, "batch overflow");
        let mut n_out = 0;
        for (i, &t) in tokens.iter().enumerate() {
            let pos = start + i;
            let out = pos >= first_out;
            n_out += usize::from(out);
            // SAFETY: `i < cap`, and llama_batch_init allocated every array (and each seq_id
            // row) for `cap` entries.
            unsafe {
                *self.raw.token.add(i) = t;
                *self.raw.pos.add(i) = pos as i32;
                *self.raw.n_seq_id.add(i) = 1;
                *(*self.raw.seq_id.add(i)) = 0;
                *self.raw.logits.add(i) = i8::from(out);
            }
        }
        n_out
    }

    fn raw_with_len(&self, n: usize) -> sys::llama_batch {
        let mut b = self.raw;
        b.n_tokens = n as i32;
        b
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from llama_batch_init and is freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

/// Writes `src` re-quantized to the ggml file type `ftype` (e.g. `sys::LLAMA_FTYPE_MOSTLY_Q4_0`)
/// at `dst`, with llama.cpp's quantizer; requantizing an already quantized file is allowed.
pub fn quantize_model(
    src: &Path,
    dst: &Path,
    ftype: u32,
    n_threads: usize,
) -> Result<(), OracleError> {
    let c = |p: &Path| {
        CString::new(p.to_string_lossy().as_bytes())
            .map_err(|_| OracleError::Input(format!("path {} has a NUL byte", p.display())))
    };
    let (s, d) = (c(src)?, c(dst)?);
    // SAFETY: default params are plain data; the paths are NUL-terminated and outlive the call.
    let rc = unsafe {
        let mut p = sys::llama_model_quantize_default_params();
        p.ftype = ftype as _;
        p.allow_requantize = true;
        p.nthread = n_threads as i32;
        sys::llama_model_quantize(s.as_ptr(), d.as_ptr(), &p)
    };
    if rc != 0 {
        return Err(OracleError::Input(format!(
            "llama_model_quantize failed ({rc})"
        )));
    }
    Ok(())
}

impl OracleModel {
    /// Times what llama.cpp's own tools time: the prompt decoded as one batch (logits of the
    /// last token only), then `n` tokens generated one at a time, each the argmax of the last
    /// logits. Returns (prompt seconds, generation seconds). Starts from an empty cache.
    pub fn time_generation(&mut self, prompt: &[i32], n: usize) -> Result<(f64, f64), OracleError> {
        self.check_fits(prompt.len() + n)?;
        let n_vocab = self.n_vocab();
        self.clear_memory();
        let t0 = std::time::Instant::now();
        let mut last = 0i32;
        self.decode_all(
            prompt,
            prompt.len() - 1,
            |_, row| last = argmax(row),
            n_vocab,
        )?;
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let batch = Batch::new(1);
        for i in 0..n {
            batch.fill(&[last], prompt.len() + i, 0);
            // SAFETY: the batch holds one valid entry for sequence 0.
            let rc = unsafe { sys::llama_decode(self.ctx, batch.raw_with_len(1)) };
            if rc != 0 {
                return Err(OracleError::Decode(rc));
            }
            // SAFETY: one output row of `n_vocab` floats after a successful decode.
            let row =
                unsafe { std::slice::from_raw_parts(sys::llama_get_logits(self.ctx), n_vocab) };
            last = argmax(row);
        }
        Ok((prefill, t1.elapsed().as_secs_f64()))
    }
}

fn argmax(row: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SmolLM2 test model, pulled into the model cache on first use.
    fn smollm2_path() -> std::path::PathBuf {
        tern_testkit::smollm2()
    }

    fn argmax(row: &[f32]) -> usize {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    }

    #[test]
    fn logits_predict_a_plain_fact() {
        let mut m = OracleModel::load(smollm2_path(), 256, 2).expect("load SmolLM2");
        let ids = m.tokenize("The capital of France is", true, false);
        let rows = m.logits_for(&ids).expect("decode");
        assert_eq!(rows.len(), ids.len());
        assert!(rows
            .iter()
            .all(|r| r.len() == m.n_vocab() && r.iter().all(|v| v.is_finite())));
        let next = argmax(rows.last().expect("one row per token"));
        let piece = String::from_utf8_lossy(&m.token_to_piece(next as i32)).into_owned();
        assert_eq!(piece, " Paris");
        // A fresh sequence each call: the same input gives the same logits.
        assert_eq!(m.logits_for(&ids).expect("decode again"), rows);
    }

    #[test]
    fn perplexity_scores_the_second_half_of_each_chunk() {
        let n_ctx = 128;
        let mut m = OracleModel::load(smollm2_path(), n_ctx, 2).expect("load SmolLM2");
        let text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").expect("GPL-3");
        let tokens = m.tokenize(&text, true, false);
        let Perplexity {
            ppl,
            err,
            tokens: scored,
            chunks,
        } = m.perplexity(&tokens[..8 * n_ctx + 5], n_ctx).expect("ppl");
        assert_eq!(chunks, 8);
        assert_eq!(scored, 8 * (n_ctx - 1 - n_ctx / 2));
        // Recompute from teacher-forced logits: chunk by chunk, second half only.
        let (mut nll, mut nll2) = (0.0f64, 0.0f64);
        for c in 0..chunks {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if m.add_bos() {
                chunk[0] = m.bos().expect("BOS");
            }
            let rows = m.logits_for(&chunk).expect("decode chunk");
            for j in n_ctx / 2..n_ctx - 1 {
                let v = -log_softmax(&rows[j], tokens[c * n_ctx + j + 1] as usize);
                nll += v;
                nll2 += v * v;
            }
        }
        let mean = nll / scored as f64;
        let var = nll2 / scored as f64 - mean * mean;
        assert!(
            (ppl - mean.exp()).abs() < 1e-9 * ppl,
            "{ppl} vs {}",
            mean.exp()
        );
        assert!((err - (var / (scored as f64 - 1.0)).sqrt() * ppl).abs() < 1e-6 * err);
        assert!(ppl > 1.0 && ppl < 100.0, "implausible perplexity {ppl}");
        assert!(m.perplexity(&tokens[..2 * n_ctx - 1], n_ctx).is_err());
    }

    #[test]
    fn vocab_only_has_no_context() {
        let mut m = OracleModel::load_vocab_only(smollm2_path()).expect("vocab");
        assert_eq!(m.n_vocab(), 49152);
        assert_eq!(m.logits_for(&[1, 2]), Err(OracleError::VocabOnly));
        assert!(m
            .chat_template()
            .is_some_and(|t| t.contains("<|im_start|>")));
    }
}
