//! A session: one conversation with a model. It owns the KV cache, the activation buffers,
//! the sampler and the little of the conversation that rendering the next turn needs.
//!
//! Each new message prefills only its own tokens: the cache carries everything before it.
//! The session keeps no transcript, so memory stays constant however long the dialogue runs:
//! only the system message and the last exchange are kept, to render the next turn's text
//! with the model's template and find what is new.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{CacheConfig, CacheError, KvCache};
use crate::chat::{ChatError, Message};
use crate::model::{Model, ModelError, State};
use crate::sampler::{Sampler, SamplerConfig};
use crate::snapshot::SnapshotError;
use crate::speculative::{Draft, DraftError, DraftSpec, DraftStats};
use crate::stream::Utf8Stream;
use crate::tokenizer::TokenizerError;

/// Tokens every cache keeps rows for beyond its window: a batch of up to this many can be
/// fed at any time (and is, once the cache is full).
pub const DEFAULT_BATCH: usize = 64;

/// Tokens per forward pass while a prompt fills a cache that has free rows for them: each
/// weight read serves four times the tokens of [`DEFAULT_BATCH`] (SmolLM2 Q4_0's prefill
/// 15 % faster at two threads), for activations of 256 tokens instead of 64.
pub const PREFILL_BATCH: usize = 256;

/// Tokens of history kept for the repetition penalty (at least `repeat_last_n`).
const HISTORY_KEEP: usize = 1024;

/// How a session is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionOptions {
    pub cache: CacheConfig,
    pub sampler: SamplerConfig,
    /// A system prompt, fed when the session starts.
    pub system: Option<String>,
    /// Keep the whole system prompt in the cache with the sinks, so it is never evicted.
    pub pin_system: bool,
    /// Longest reply, in tokens.
    pub max_reply: usize,
    /// Strings that end a reply (besides end-of-turn tokens and the template's own).
    pub stop: Vec<String>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            cache: CacheConfig::default(),
            sampler: SamplerConfig::default(),
            system: None,
            pin_system: true,
            max_reply: 512,
            stop: Vec::new(),
        }
    }
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Memory(#[from] crate::fit::CacheTooLarge),
    #[error(transparent)]
    Draft(#[from] DraftError),
    #[error("the role `{0}` is not one of system, user, assistant")]
    BadRole(String),
    #[error("cancelled")]
    Cancelled,
}

/// Why a reply ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-turn token.
    EndOfTurn,
    /// A stop string appeared.
    StopString,
    /// The reply reached its maximum length.
    MaxTokens,
    /// [`Session::cancel_flag`] was raised, or the piece callback asked to stop.
    Cancelled,
}

/// A finished reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub text: String,
    pub tokens: usize,
    pub stop: StopReason,
}

/// Counters of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Tokens fed since the session started (evicted ones included).
    pub tokens: u64,
    /// Tokens in the cache now, and at most.
    pub cache_used: usize,
    pub cache_capacity: usize,
    /// Prompt tokens fed, and the seconds it took.
    pub prompt_tokens: u64,
    pub prompt_secs: f64,
    /// Tokens generated, and the seconds it took.
    pub generated_tokens: u64,
    pub generated_secs: f64,
    /// Speculative decoding (0 without a draft): tokens the draft proposed since it joined
    /// the session, and those the model kept ([`Session::draft_stats`] has more).
    pub draft_proposed: u64,
    pub draft_accepted: u64,
}

impl Stats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_secs.max(1e-9)
    }
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generated_secs.max(1e-9)
    }
}

/// One conversation with a model.
pub struct Session {
    pub(crate) model: Arc<Model>,
    pub(crate) opts: SessionOptions,
    pub(crate) cache: KvCache,
    pub(crate) state: State,
    pub(crate) history: Vec<u32>,
    pub(crate) sampler: Sampler,
    /// The system message (if any) and the last exchange, to render the next turn.
    pub(crate) window: Vec<Message>,
    /// The end of the window's rendered text that is not in the cache yet.
    pub(crate) unfed_tail: String,
    /// Logits after the last token fed, when valid.
    pub(crate) logits_valid: bool,
    pub(crate) stats: Stats,
    cancel: Arc<AtomicBool>,
    /// The draft model of speculative decoding, if any.
    pub(crate) draft: Option<Draft>,
}

impl Session {
    /// Starts a session: allocates the cache and buffers once, and feeds the system prompt.
    /// The cache is not checked against a memory budget; see [`Session::new_within`].
    pub fn new(model: Arc<Model>, opts: SessionOptions) -> Result<Session, SessionError> {
        Session::start_with(model, opts, None, None)
    }

    /// [`Session::new`], with the final cache (its sinks grown to hold a pinned system
    /// prompt) checked against `board`'s memory budget before anything is allocated: a
    /// system prompt too long for the budget is an error. The CLI and the C ABI start here.
    pub fn new_within(
        model: Arc<Model>,
        opts: SessionOptions,
        board: &tern_boards::Board,
    ) -> Result<Session, SessionError> {
        Session::start_with(model, opts, None, Some(board))
    }

    /// A session, decoding speculatively when given a `draft` (see [`crate::speculative`]):
    /// the same text as without it, sooner. With a `board`, the final cache (its sinks grown
    /// to hold a pinned system prompt) is checked against the board's memory budget before
    /// anything is allocated, counting both models and both caches. The draft must share the
    /// model's vocabulary; its cache is configured as the session's. [`Session::new`] and
    /// [`Session::new_within`] are this with fewer choices.
    pub fn start_with(
        model: Arc<Model>,
        opts: SessionOptions,
        draft: Option<DraftSpec>,
        board: Option<&tern_boards::Board>,
    ) -> Result<Session, SessionError> {
        let mut cache_cfg = opts.cache.clone();
        let mut system_tokens = Vec::new();
        if let Some(system) = &opts.system {
            let text = model
                .template()
                .render(&[Message::new("system", system)], false)?;
            system_tokens = model.tokenizer().encode(&text, true, true)?;
            if opts.pin_system {
                cache_cfg.sinks = cache_cfg.sinks.max(system_tokens.len());
            }
        }
        if let Some(board) = board {
            let draft_model = draft.as_ref().map(|d| &*d.model);
            crate::fit::check_cache_with(&model, draft_model, board, &cache_cfg)?;
        }
        let mut s = Session::with_cache(model, opts, cache_cfg)?;
        if let Some(spec) = draft {
            s.draft = Some(Draft::new(
                spec,
                &s.model,
                s.cache.config().clone(),
                s.opts.sampler,
                s.cancel.clone(),
            )?);
        }
        if let Some(system) = s.opts.system.clone() {
            s.window.push(Message::new("system", &system));
            s.feed(&system_tokens)?;
        }
        Ok(s)
    }

    /// A session whose cache is exactly `cache` (no system prompt); for tools and tests.
    pub(crate) fn with_cache(
        model: Arc<Model>,
        opts: SessionOptions,
        cache: CacheConfig,
    ) -> Result<Session, SessionError> {
        let kv = model
            .llama()
            .new_cache(cache, DEFAULT_BATCH, PREFILL_BATCH)?;
        let mut state = State::new(model.llama().config(), PREFILL_BATCH);
        let cancel = Arc::new(AtomicBool::new(false));
        state.set_cancel(cancel.clone());
        Ok(Session {
            sampler: Sampler::sized(
                opts.sampler,
                model.llama().config().n_vocab,
                2 * HISTORY_KEEP,
            ),
            model,
            opts,
            cache: kv,
            state,
            history: Vec::with_capacity(2 * HISTORY_KEEP),
            window: Vec::new(),
            unfed_tail: String::new(),
            logits_valid: false,
            stats: Stats::default(),
            cancel,
            draft: None,
        })
    }

    /// A bare session over `cache`, for scoring text (perplexity, parity tests).
    pub fn for_scoring(model: Arc<Model>, cache: CacheConfig) -> Result<Session, SessionError> {
        Session::with_cache(model, SessionOptions::default(), cache)
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// The most recent tokens fed (at least the sampler's penalty window).
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// A flag that stops a running feed or generation when raised, from any thread: the
    /// forward pass under way stops at its next layer and is undone. It is lowered when the
    /// stopped call returns.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// The draft model of a speculative session.
    pub fn draft_model(&self) -> Option<&Arc<Model>> {
        self.draft.as_ref().map(|d| d.model())
    }

    /// Counters of speculative decoding (acceptance rate, tokens per target pass), and the
    /// number of tokens the draft will propose next; `None` without a draft.
    pub fn draft_stats(&self) -> Option<(DraftStats, usize)> {
        self.draft.as_ref().map(|d| (d.stats, d.k()))
    }

    /// The draft model and its settings, as the session was made with them.
    pub fn draft_spec(&self) -> Option<DraftSpec> {
        self.draft.as_ref().map(|d| d.spec())
    }

    /// Bytes of the session's caches: the model's, and the draft's if any.
    pub fn cache_bytes(&self) -> usize {
        self.cache.memory_bytes() + self.draft.as_ref().map_or(0, |d| d.cache_bytes())
    }

    /// Tokens the draft model has been given (fed, or waiting to be fed with its next
    /// proposal): [`Stats::tokens`] whenever the two caches are in step.
    pub fn draft_tokens(&self) -> Option<u64> {
        self.draft.as_ref().map(|d| d.tokens_given())
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tokens: self.cache.tokens_seen(),
            cache_used: self.cache.len(),
            cache_capacity: self.cache.capacity(),
            draft_proposed: self.draft.as_ref().map_or(0, |d| d.stats.proposed),
            draft_accepted: self.draft.as_ref().map_or(0, |d| d.stats.accepted),
            ..self.stats
        }
    }

    pub(crate) fn remember(&mut self, tokens: &[u32]) {
        self.history.extend_from_slice(tokens);
        if self.history.len() > 2 * HISTORY_KEEP {
            self.history.drain(..self.history.len() - HISTORY_KEEP);
        }
    }

    fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::Relaxed)
    }

    /// Feeds tokens in batches; afterwards the logits after the last one are ready for
    /// sampling. Returns how many were fed: fewer than given only when cancelled.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<usize, SessionError> {
        let t0 = Instant::now();
        let mut fed = 0;
        while fed < tokens.len() {
            let n = (tokens.len() - fed)
                .min(self.cache.max_append())
                .min(self.state.batch());
            let chunk = &tokens[fed..fed + n];
            if self.take_cancel() {
                break;
            }
            match self
                .model
                .llama()
                .forward(chunk, &mut self.cache, &mut self.state, false)
            {
                Err(ModelError::Cancelled) => {
                    self.take_cancel();
                    break;
                }
                r => r?,
            }
            self.logits_valid = true;
            self.remember(chunk);
            if let Some(d) = &mut self.draft {
                d.unfed.extend_from_slice(chunk);
            }
            fed += chunk.len();
        }
        // The draft reads the same tokens (a cancelled pass leaves them for later).
        if let Some(d) = &mut self.draft {
            match d.catch_up(0) {
                Err(SessionError::Cancelled) => {
                    self.take_cancel();
                }
                r => r?,
            }
        }
        self.stats.prompt_tokens += fed as u64;
        self.stats.prompt_secs += t0.elapsed().as_secs_f64();
        Ok(fed)
    }

    /// Feeds one batch (at most [`DEFAULT_BATCH`] tokens) and returns the logits of every one
    /// of them: row `i` predicts the token after `tokens[i]`.
    pub fn feed_all_logits(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.model
            .llama()
            .forward(tokens, &mut self.cache, &mut self.state, true)?;
        self.logits_valid = true;
        self.remember(tokens);
        if let Some(d) = &mut self.draft {
            d.unfed.extend_from_slice(tokens);
        }
        Ok(self.state.logits())
    }

    /// Feeds raw text (special-token text like `<|im_start|>` is recognised), outside any
    /// chat template. Returns the tokens fed.
    pub fn feed_text(&mut self, text: &str) -> Result<usize, SessionError> {
        let add_bos = self.cache.tokens_seen() == 0;
        let tokens = self.model.tokenizer().encode(text, add_bos, true)?;
        let n = self.feed(&tokens)?;
        if n < tokens.len() {
            return Err(SessionError::Cancelled);
        }
        Ok(n)
    }

    /// The next-token logits after the last token fed, for the sampler to modify in place,
    /// and the history that repetition penalties look at.
    pub fn logits_and_history(&mut self) -> (&mut [f32], &[u32]) {
        (self.state.last_logits_mut(), &self.history)
    }

    /// Samples the next token from the current logits.
    pub fn sample(&mut self) -> u32 {
        let logits = self.state.last_logits_mut();
        self.sampler.sample(logits, &self.history)
    }

    /// Forgets the conversation (the system prompt is fed again); memory stays allocated.
    pub fn reset(&mut self) -> Result<(), SessionError> {
        self.cache.clear();
        self.history.clear();
        self.window.clear();
        self.unfed_tail.clear();
        self.logits_valid = false;
        self.stats = Stats::default();
        self.sampler = Sampler::sized(
            self.opts.sampler,
            self.model.llama().config().n_vocab,
            2 * HISTORY_KEEP,
        );
        if let Some(d) = &mut self.draft {
            d.clear();
        }
        if let Some(system) = self.opts.system.clone() {
            let text = self
                .model
                .template()
                .render(&[Message::new("system", &system)], false)?;
            let tokens = self.model.tokenizer().encode(&text, true, true)?;
            self.window.push(Message::new("system", &system));
            self.feed(&tokens)?;
        }
        Ok(())
    }

    /// The window's rendered text that is already in the cache.
    fn text_in_cache(&self) -> Result<String, SessionError> {
        // Nothing is fed before the first message; some templates (Qwen's) cannot render an
        // empty conversation at all.
        if self.window.is_empty() {
            return Ok(String::new());
        }
        let rendered = self.model.template().render(&self.window, false)?;
        Ok(rendered
            .strip_suffix(self.unfed_tail.as_str())
            .map(str::to_string)
            .unwrap_or(rendered))
    }

    /// Keeps the system message and the last exchange: what rendering the next turn needs.
    fn trim_window(&mut self) {
        let keep_system = self.window.first().is_some_and(|m| m.role == "system") as usize;
        let rest = self.window.len() - keep_system;
        if rest > 2 {
            self.window.drain(keep_system..keep_system + rest - 2);
        }
    }

    /// Feeds the part of `target` (the rendered text after a change) that is not in the
    /// cache, given the text `in_cache`; records what could not be fed.
    fn feed_delta(&mut self, in_cache: &str, target: &str) -> Result<(), SessionError> {
        let delta = target.strip_prefix(in_cache).unwrap_or_else(|| {
            // The template does not extend the previous text (it rewrote earlier turns):
            // feed what follows the longest common prefix.
            &target[common_prefix(in_cache, target)..]
        });
        let add_bos = self.cache.tokens_seen() == 0;
        let tokens = self.model.tokenizer().encode(delta, add_bos, true)?;
        let fed = self.feed(&tokens)?;
        if fed < tokens.len() {
            let text_fed = self.model.tokenizer().decode(&tokens[..fed]);
            self.unfed_tail = delta[common_prefix(&text_fed, delta)..].to_string();
            return Err(SessionError::Cancelled);
        }
        Ok(())
    }

    /// Adds a message of `role` to the conversation and feeds its tokens.
    pub fn add_message(&mut self, role: &str, content: &str) -> Result<(), SessionError> {
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(SessionError::BadRole(role.to_string()));
        }
        self.trim_window();
        let in_cache = self.text_in_cache()?;
        self.window.push(Message::new(role, content));
        let target = self.model.template().render(&self.window, false)?;
        self.unfed_tail.clear();
        self.feed_delta(&in_cache, &target)
    }

    /// Generates the assistant's reply to the conversation so far, streaming whole-UTF-8
    /// pieces to `on_piece`; the callback returns `false` to stop. The reply becomes part of
    /// the conversation.
    pub fn generate(
        &mut self,
        mut on_piece: impl FnMut(&str) -> bool,
    ) -> Result<Reply, SessionError> {
        let in_cache = self.text_in_cache()?;
        let prompt = self.model.template().render(&self.window, true)?;
        self.unfed_tail.clear();
        self.feed_delta(&in_cache, &prompt)?;
        if !self.logits_valid {
            // Nothing was ever fed: there is nothing to continue from.
            return Ok(Reply {
                text: String::new(),
                tokens: 0,
                stop: StopReason::EndOfTurn,
            });
        }

        let mut stops = self.model.template().stop_strings();
        stops.extend(self.opts.stop.iter().cloned());
        let hold = stops.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
        let model = self.model.clone();
        let tokenizer = model.tokenizer();
        let mut utf8 = Utf8Stream::new();
        let mut reply = String::new(); // what the model wrote, stop string included
        let mut emitted = 0; // bytes of `reply` handed to the callback
        let mut generated_text = String::new(); // every token's text, end token included
        let mut stop = StopReason::MaxTokens;
        let t0 = Instant::now();
        let max = self.opts.max_reply;
        let (n, cancelled) = self.produce(max, |id| {
            let bytes = tokenizer.token_to_bytes(id);
            generated_text.push_str(&String::from_utf8_lossy(&bytes));
            if tokenizer.is_end_of_generation(id) {
                stop = StopReason::EndOfTurn;
                return false;
            }
            reply.push_str(&utf8.push(&bytes));
            if let Some(at) = stops.iter().filter_map(|s| reply.find(s.as_str())).min() {
                reply.truncate(at);
                stop = StopReason::StopString;
                return false;
            }
            // Hand out what can no longer be the start of a stop string.
            let safe = floor_char_boundary(&reply, reply.len().saturating_sub(hold));
            if safe > emitted {
                let go_on = on_piece(&reply[emitted..safe]);
                emitted = safe;
                if !go_on {
                    stop = StopReason::Cancelled;
                    return false;
                }
            }
            true
        })?;
        if cancelled {
            stop = StopReason::Cancelled;
        }
        if stop != StopReason::StopString {
            reply.push_str(&utf8.finish());
        }
        if reply.len() > emitted {
            on_piece(&reply[emitted..]);
        }
        self.stats.generated_tokens += n as u64;
        self.stats.generated_secs += t0.elapsed().as_secs_f64();

        // The reply joins the conversation; note what of its rendering is not in the cache.
        let in_cache = format!("{prompt}{generated_text}");
        self.window.push(Message::new("assistant", &reply));
        let rendered = self.model.template().render(&self.window, false)?;
        self.unfed_tail = rendered[common_prefix(&in_cache, &rendered)..].to_string();
        Ok(Reply {
            text: reply,
            tokens: n,
            stop,
        })
    }

    /// Feeds `id`, a token already given out, so it must enter the cache: a cancel raised
    /// during its pass is taken, the pass run again, and reported (`true`) once it is in.
    fn enter_given(&mut self, id: u32) -> Result<bool, SessionError> {
        let mut cancelled = false;
        loop {
            match self
                .model
                .llama()
                .forward(&[id], &mut self.cache, &mut self.state, false)
            {
                // The pass was undone whole; the flag is down again, so the next one runs.
                Err(ModelError::Cancelled) => cancelled |= self.take_cancel(),
                r => break r?,
            }
        }
        self.remember(&[id]);
        Ok(cancelled)
    }

    /// Generates up to `max` tokens after the logits of the last token fed, passing each to
    /// `on_token`, which returns `false` to stop after it. Every token passed is in the cache
    /// on return, and the logits after the last one are ready. With a draft model the
    /// tokens come from speculative steps (see [`crate::speculative`]). Returns the number
    /// of tokens passed, and whether the cancel flag stopped the generation.
    pub fn produce(
        &mut self,
        max: usize,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<(usize, bool), SessionError> {
        if max == 0 {
            return Ok((0, false));
        }
        if self.take_cancel() {
            return Ok((0, true));
        }
        if self.draft.is_none() {
            let mut n = 0;
            while n < max {
                if self.take_cancel() {
                    return Ok((n, true));
                }
                // The token is given out as soon as it is drawn, before the pass that
                // enters it in the cache: the first token of a reply waits for the prompt
                // only, not for one more decode step.
                let id = self.sample();
                let go_on = on_token(id);
                n += 1;
                let cancelled = self.enter_given(id)?;
                if cancelled {
                    return Ok((n, true));
                }
                if !go_on {
                    break;
                }
            }
            return Ok((n, false));
        }

        // Speculative: `pending` is given out but not yet in the target's cache.
        let mut pending = self.sample();
        if let Some(d) = &mut self.draft {
            d.unfed.push(pending);
        }
        let mut n = 1;
        let mut go = on_token(pending);
        let mut cancelled = false;
        let mut out = Vec::with_capacity(crate::speculative::MAX_K + 1);
        while go && n < max {
            if self.take_cancel() {
                cancelled = true;
                break;
            }
            let step = match self.speculate(pending, &mut out) {
                Err(SessionError::Cancelled) => {
                    self.take_cancel();
                    cancelled = true;
                    break;
                }
                r => r?,
            };
            let mut used = out.len();
            for (i, &id) in out.iter().enumerate() {
                n += 1;
                if !on_token(id) || n >= max {
                    used = i + 1;
                    go = false;
                    break;
                }
            }
            if used < out.len() {
                // The reply ended inside the step: take back what it did not use.
                self.finish_step(step, &out[..used])?;
                return Ok((n, cancelled));
            }
            pending = out[used - 1];
        }
        // The last token given out enters the target's cache (the draft has it as unseen).
        for attempt in 0..2 {
            match self
                .model
                .llama()
                .forward(&[pending], &mut self.cache, &mut self.state, false)
            {
                Err(ModelError::Cancelled) if attempt == 0 => {
                    self.take_cancel();
                    cancelled = true;
                }
                r => {
                    r?;
                    break;
                }
            }
        }
        self.logits_valid = true;
        self.remember(&[pending]);
        Ok((n, cancelled))
    }

    /// Adds a user message and generates the reply.
    pub fn chat(
        &mut self,
        user: &str,
        on_piece: impl FnMut(&str) -> bool,
    ) -> Result<Reply, SessionError> {
        self.add_message("user", user)?;
        self.generate(on_piece)
    }

    /// Sets how the next replies are written: the sampler (its random numbers start again
    /// from `sampler.seed`), the longest reply and the extra stop strings. The conversation
    /// and the cache are kept: a server applies each request's settings to the conversation
    /// it continues.
    pub fn set_reply_options(
        &mut self,
        sampler: SamplerConfig,
        max_reply: usize,
        stop: Vec<String>,
    ) -> Result<(), crate::sampler::InvalidSamplerConfig> {
        sampler.validate()?;
        self.opts.sampler = sampler;
        self.opts.max_reply = max_reply;
        self.opts.stop = stop;
        self.sampler = Sampler::new(sampler);
        if let Some(d) = &mut self.draft {
            d.set_sampler(sampler);
        }
        Ok(())
    }

    /// Saves the session to `path` (atomically: a crash mid-save keeps the previous file).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SessionError> {
        crate::snapshot::save(self, self.state.last_logits(), path.as_ref())?;
        Ok(())
    }

    /// Restores a session saved by [`Session::save`] on the same model. Sizes read from the
    /// file are checked, but not against a memory budget; see [`Session::restore_within`].
    pub fn restore(model: Arc<Model>, path: impl AsRef<Path>) -> Result<Session, SessionError> {
        Session::restore_with(model, path, None, None)
    }

    /// [`Session::restore`], with the saved cache checked against `board`'s memory budget, as
    /// a new session's is, before the file is read or anything allocated: the file's
    /// checksum proves integrity, not that its sizes are sane. The CLI and the C ABI use it.
    pub fn restore_within(
        model: Arc<Model>,
        path: impl AsRef<Path>,
        board: &tern_boards::Board,
    ) -> Result<Session, SessionError> {
        Session::restore_with(model, path, None, Some(board))
    }

    /// A saved session, continuing speculatively when given a `draft`; with a `board`, the
    /// saved cache is checked against the board's memory budget, both models and both caches
    /// counted, before anything is allocated. [`Session::restore`] and
    /// [`Session::restore_within`] are this with fewer choices. A session file holds the
    /// model's cache only, so a draft starts with an empty cache and is given the saved
    /// history (the penalty history, its last 1 024 to 2 048 tokens), fed at the next reply.
    /// The text is the model's whatever the draft has seen; when the session had seen more
    /// tokens than that history holds, the draft's cache is not the model's token for token
    /// and only acceptance suffers. A session saved with a draft can be restored without one
    /// and the other way round.
    pub fn restore_with(
        model: Arc<Model>,
        path: impl AsRef<Path>,
        draft: Option<DraftSpec>,
        board: Option<&tern_boards::Board>,
    ) -> Result<Session, SessionError> {
        let mut s = Session::reopen(
            model,
            path.as_ref(),
            board,
            draft.as_ref().map(|d| &d.model),
        )?;
        if let Some(draft) = draft {
            let mut d = Draft::new(
                draft,
                &s.model,
                s.cache.config().clone(),
                s.opts.sampler,
                s.cancel.clone(),
            )?;
            d.unfed.extend_from_slice(&s.history);
            s.draft = Some(d);
        }
        Ok(s)
    }

    fn reopen(
        model: Arc<Model>,
        path: &Path,
        board: Option<&tern_boards::Board>,
        draft: Option<&Arc<Model>>,
    ) -> Result<Session, SessionError> {
        let max_bytes = board.map(|b| b.settings.memory_budget.value);
        let mut snap = crate::snapshot::load(&model, path, max_bytes)?;
        if let Some(board) = board {
            let draft = draft.map(|d| &**d);
            crate::fit::check_cache_with(&model, draft, board, &snap.cache_config)?;
        }
        let mut s = Session::with_cache(model, snap.opts.clone(), snap.cache_config.clone())?;
        if let Some(logits) = snap.logits.take() {
            s.state.last_logits_mut().copy_from_slice(&logits);
            s.logits_valid = true;
        }
        snap.apply(&mut s)?;
        Ok(s)
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// The largest character boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_on_char_boundaries() {
        assert_eq!(common_prefix("abc", "abd"), 2);
        assert_eq!(common_prefix("ab", "abc"), 2);
        assert_eq!(common_prefix("é", "è"), 0);
        assert_eq!(floor_char_boundary("aé", 2), 1);
    }
}
