//! A session: one model, one KV cache, the activation buffers, and the tokens seen so far.

use crate::cache::{CacheConfig, KvCache};
use crate::model::{Llama, ModelError, State};

/// Tokens per forward pass when a long prompt is fed.
pub const DEFAULT_BATCH: usize = 64;

/// The running state of one conversation with a model. Buffers are allocated here, once.
pub struct Session<'m> {
    model: &'m Llama,
    cache: KvCache,
    state: State,
    history: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session with a cache configured by `cache` (memory allocated here, once).
    pub fn new(model: &'m Llama, cache: CacheConfig) -> Result<Session<'m>, ModelError> {
        let capacity = cache.capacity();
        Ok(Session {
            model,
            cache: model.new_cache(cache, DEFAULT_BATCH)?,
            state: State::new(model.config(), DEFAULT_BATCH, capacity),
            history: Vec::new(),
        })
    }

    pub fn model(&self) -> &'m Llama {
        self.model
    }

    /// Every token fed so far, in order.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Feeds tokens in batches; afterwards [`Session::logits_mut`] gives the next-token
    /// logits after the last of them.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<(), ModelError> {
        for chunk in tokens.chunks(self.state.batch()) {
            self.model
                .forward(chunk, &mut self.cache, &mut self.state, false)?;
            self.history.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Feeds one batch (at most [`DEFAULT_BATCH`] tokens) and keeps the logits of every one of
    /// them: row `i` predicts the token after `tokens[i]`.
    pub fn feed_all_logits(&mut self, tokens: &[u32]) -> Result<&[f32], ModelError> {
        self.model
            .forward(tokens, &mut self.cache, &mut self.state, true)?;
        self.history.extend_from_slice(tokens);
        Ok(self.state.logits())
    }

    /// The next-token logits after the last token fed, for the sampler to modify in place,
    /// and the history that repetition penalties look at.
    pub fn logits_and_history(&mut self) -> (&mut [f32], &[u32]) {
        (self.state.last_logits_mut(), &self.history)
    }

    /// Forgets everything fed so far; the memory stays allocated.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.history.clear();
    }
}
