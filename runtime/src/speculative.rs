//! Speculative decoding (Leviathan et al. 2023, arXiv 2211.17192; Chen et al. 2023, arXiv
//! 2302.01318): a small draft model proposes `k` tokens, the session's model (the target)
//! scores all of them in one batched forward pass, and the tokens it agrees with are kept.
//! Decoding is bound by reading the weights, so one pass over `k + 1` tokens costs little
//! more than a pass over one, and every accepted draft token is a target pass saved.
//!
//! The output is the target's, not an approximation of it:
//! - greedy (temperature ≤ 0): a draft token is kept when it is the target's argmax, and the
//!   first that is not is replaced by the argmax; the text is token for token the target's
//!   alone (up to the rare near-ties where a batched and a one-token product round apart);
//! - sampling: draft token `d`, drawn from the draft's distribution `q`, is kept with
//!   probability `min(1, p(d) / q(d))`, where `p` is the target's; on rejection a token is
//!   drawn from `norm(max(0, p − q))`; when all `k` are kept, one more comes from the
//!   target's next distribution. Each token is then distributed exactly as `p`.
//!
//! `p` and `q` are the distributions the session's sampler would draw from: the repetition
//! penalty, top-k, top-p, min-p and the temperature are applied to both models' logits alike
//! (see [`crate::sampler::Sampler::distribution`]), so the output follows the target's
//! *sampled* distribution with the session's settings. The random numbers come from the
//! session's sampler, so a saved session resumes them, but a seed does not give the same
//! text with and without a draft (the same distribution, not the same draws).
//!
//! Both models keep their own attention-sink cache, of the same configuration, and are fed
//! the same tokens, so they evict alike and stay in step however long the dialogue runs.
//! Draft tokens that the target rejects are taken back from both caches: each cache returns
//! to its [`KvCache::checkpoint`] from before the step and re-appends only the kept tokens
//! (appending assigns positions and evictions from counters alone, and the kept tokens' keys
//! and values are already stored in their rows). The text never depends on the draft's
//! cache, only the acceptance rate does.
//!
//! `k` adapts to the acceptance rate by the rule of Hugging Face transformers' assisted
//! generation: `k + 2` after a step whose drafts were all kept, `k − 1` after one with a
//! rejection, within `1..=max` (7 by default: see [`DraftK::default`]). [`DraftK::Fixed`]
//! keeps it constant.

use std::sync::Arc;

use crate::cache::{CacheCheckpoint, KvCache};
use crate::model::{Model, ModelError, State};
use crate::sampler::Sampler;
use crate::session::{Session, SessionError, DEFAULT_BATCH};

/// Largest number of draft tokens per step.
pub const MAX_K: usize = 16;
/// The adaptive rule's first `k`.
const START_K: usize = 4;
/// Tokens the draft has not seen that are fed with its first proposal, rather than before.
const FEED_WITH_PROPOSAL: usize = 4;
/// Passes of fewer tokens than this run token by token ([`State::set_per_token`]) in fast
/// mode too: the panel kernels pad a batch to a whole panel (8 tokens on AVX2), so 2 or 3
/// tokens cost as much as 8, while the one-token kernels read each weight row once for the
/// batch and compute only the tokens there are. Measured with `speculative --step-cost
/// --threads 1` (Qwen2.5-Coder-1.5B, CPU time against one token's pass): 2 tokens 1.58×
/// token by token against 3.44× in a panel, 3 tokens 2.16× against 2.80×, 4 tokens 2.74×
/// against 2.84×, 5 tokens 3.68× against 2.96×.
const PER_TOKEN_BELOW: usize = 5;

/// How many tokens the draft proposes per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftK {
    /// Always `k` (1 to [`MAX_K`]).
    Fixed(usize),
    /// Starts at 4 and follows the acceptance rate, up to `max` (see the module doc).
    Adaptive { max: usize },
}

impl Default for DraftK {
    /// Adaptive, up to 7: the proposals and the pending token then fill one panel of the
    /// AVX2 kernels (8 tokens), and a pass over 9 costs nearly two (measured with
    /// `speculative --step-cost --threads 1`: 8 tokens 3.1× one token's CPU time, 9 tokens
    /// 5.6×).
    fn default() -> DraftK {
        DraftK::Adaptive { max: 7 }
    }
}

/// A draft model for a session, and how many tokens it proposes.
#[derive(Clone)]
pub struct DraftSpec {
    pub model: Arc<Model>,
    pub k: DraftK,
    /// Verify with the one-token kernels ([`State::set_per_token`]), so that greedy text is
    /// bitwise the model's alone; otherwise the batched (panel) kernels, faster, whose
    /// logits differ from the one-token ones by rounding, which can flip a near-tie.
    pub exact: bool,
}

/// Why a draft model cannot serve a session.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(
        "the draft model {draft} does not share the vocabulary of {target}: {why} \
         (speculative decoding needs the same tokenizer, e.g. two sizes of one model family)"
    )]
    VocabularyMismatch {
        target: String,
        draft: String,
        why: String,
    },
    #[error("draft tokens per step must be between 1 and {MAX_K}, not {0}")]
    BadK(usize),
}

/// Checks that `draft` and `target` give every token id the same text and the same logit
/// row: without that, the draft's proposals mean nothing to the target.
pub fn check_vocabulary(target: &Model, draft: &Model) -> Result<(), DraftError> {
    let mismatch = |why: String| DraftError::VocabularyMismatch {
        target: target.path().display().to_string(),
        draft: draft.path().display().to_string(),
        why,
    };
    let (tt, dt) = (target.tokenizer(), draft.tokenizer());
    if tt.vocab_size() != dt.vocab_size() {
        return Err(mismatch(format!(
            "{} tokens against {}",
            dt.vocab_size(),
            tt.vocab_size()
        )));
    }
    let (tv, dv) = (
        target.llama().config().n_vocab,
        draft.llama().config().n_vocab,
    );
    if tv != dv {
        return Err(mismatch(format!("{dv} logits per token against {tv}")));
    }
    if let Some(id) =
        (0..tt.vocab_size() as u32).find(|&id| tt.token_to_bytes(id) != dt.token_to_bytes(id))
    {
        return Err(mismatch(format!("token {id} differs")));
    }
    Ok(())
}

/// Counters of speculative decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DraftStats {
    /// Verification passes of the target.
    pub steps: u64,
    /// Draft tokens proposed, and kept.
    pub proposed: u64,
    pub accepted: u64,
}

impl DraftStats {
    /// Share of the draft's tokens the target kept.
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.proposed.max(1) as f64
    }

    /// Tokens produced per target pass: the kept drafts plus the target's own token.
    pub fn tokens_per_step(&self) -> f64 {
        (self.accepted + self.steps) as f64 / self.steps.max(1) as f64
    }
}

/// What a draft token's check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Rejected; this token takes its place (and ends the step).
    Replace(u32),
}

/// The speculative sampling step for one draft token `d`, drawn from `q`, against the
/// target's `p` (both `(token, probability)` lists, as [`Sampler::distribution`] gives them).
/// `u` and `v` are uniform in `[0, 1)`: `u` decides the acceptance, `v` draws the
/// replacement from `norm(max(0, p − q))`.
pub fn verify(p: &[(u32, f32)], q: &[(u32, f32)], d: u32, u: f64, v: f64) -> Verdict {
    let prob = |dist: &[(u32, f32)], id: u32| {
        dist.iter()
            .find(|&&(t, _)| t == id)
            .map_or(0.0, |&(_, x)| f64::from(x))
    };
    let (pd, qd) = (prob(p, d), prob(q, d));
    // u < p/q, written without dividing; with q(d) = 0 (never drawn) it is p(d) > 0.
    if u * qd < pd {
        return Verdict::Accept;
    }
    let mut by_id = q.to_vec();
    by_id.sort_unstable_by_key(|&(t, _)| t);
    let q_of = |id: u32| {
        by_id
            .binary_search_by_key(&id, |&(t, _)| t)
            .map_or(0.0, |i| f64::from(by_id[i].1))
    };
    let residual = |&(t, x): &(u32, f32)| (t, (f64::from(x) - q_of(t)).max(0.0));
    let total: f64 = p.iter().map(|e| residual(e).1).sum();
    if total <= 0.0 {
        // p ≤ q everywhere yet d was rejected: only rounding gets here; draw from p.
        return Verdict::Replace(pick(p, v));
    }
    let target = v * total;
    let mut cum = 0.0;
    let mut last = p[0].0;
    for e in p {
        let (t, r) = residual(e);
        if r > 0.0 {
            cum += r;
            last = t;
            if target < cum {
                return Verdict::Replace(t);
            }
        }
    }
    Verdict::Replace(last)
}

/// Draws from a `(token, probability)` list with the uniform `u`.
pub fn pick(dist: &[(u32, f32)], u: f64) -> u32 {
    let total: f64 = dist.iter().map(|&(_, x)| f64::from(x)).sum();
    let target = u * total;
    let mut cum = 0.0;
    for &(t, x) in dist {
        cum += f64::from(x);
        if target < cum {
            return t;
        }
    }
    dist.iter()
        .rev()
        .find(|&&(_, x)| x > 0.0)
        .map_or(dist[0].0, |&(t, _)| t)
}

/// The draft side of a speculative session: the draft model, its own cache and buffers, and
/// the tokens the target has that it has not seen yet.
pub(crate) struct Draft {
    model: Arc<Model>,
    cache: KvCache,
    state: State,
    /// Tokens in (or committed to) the target's text that the draft has not been fed.
    pub(crate) unfed: Vec<u32>,
    rule: DraftK,
    k: usize,
    exact: bool,
    pub(crate) stats: DraftStats,
    /// Computes the draft's distributions (same settings as the session's sampler; its own
    /// random generator is never used).
    sampler: Sampler,
    /// Scratch, reused every step: each proposal's distribution, the target's, one row of
    /// logits, the history with the proposals, the proposals.
    q: Vec<Vec<(u32, f32)>>,
    p: Vec<(u32, f32)>,
    row: Vec<f32>,
    hist: Vec<u32>,
    proposal: Vec<u32>,
    feed_now: Vec<u32>,
}

impl Draft {
    /// A draft for a session whose cache is `cache` (the draft's is configured alike).
    pub(crate) fn new(
        spec: DraftSpec,
        target: &Model,
        cache: crate::cache::CacheConfig,
        sampler: crate::sampler::SamplerConfig,
        cancel: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Draft, SessionError> {
        check_vocabulary(target, &spec.model)?;
        let (rule, k) = match spec.k {
            DraftK::Fixed(k) if (1..=MAX_K).contains(&k) => (spec.k, k),
            DraftK::Adaptive { max } if (1..=MAX_K).contains(&max) => (spec.k, START_K.min(max)),
            DraftK::Fixed(k) | DraftK::Adaptive { max: k } => {
                return Err(DraftError::BadK(k).into())
            }
        };
        let llama = spec.model.llama();
        let kv = llama.new_cache(cache, DEFAULT_BATCH, DEFAULT_BATCH)?;
        let mut state = State::new(llama.config(), DEFAULT_BATCH);
        state.set_cancel(cancel);
        Ok(Draft {
            cache: kv,
            state,
            unfed: Vec::new(),
            rule,
            k,
            exact: spec.exact,
            stats: DraftStats::default(),
            sampler: Sampler::new(sampler),
            q: vec![Vec::new(); MAX_K],
            p: Vec::new(),
            row: vec![0.0; target.llama().config().n_vocab],
            hist: Vec::new(),
            proposal: Vec::with_capacity(MAX_K),
            feed_now: Vec::with_capacity(FEED_WITH_PROPOSAL),
            model: spec.model,
        })
    }

    pub(crate) fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens fed to the draft, or waiting in `unfed`.
    pub(crate) fn tokens_given(&self) -> u64 {
        self.cache.tokens_seen() + self.unfed.len() as u64
    }

    /// Tokens the draft proposes next step.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// What the draft was made from, to give a restored session the same draft.
    pub(crate) fn spec(&self) -> DraftSpec {
        DraftSpec {
            model: self.model.clone(),
            k: self.rule,
            exact: self.exact,
        }
    }

    /// Bytes of the draft's cache.
    pub(crate) fn cache_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }

    /// Computes the next distributions with `cfg`, the session's new sampler settings.
    pub(crate) fn set_sampler(&mut self, cfg: crate::sampler::SamplerConfig) {
        self.sampler = Sampler::new(cfg);
    }

    /// Forgets everything, as the session's [`Session::reset`] does.
    pub(crate) fn clear(&mut self) {
        self.cache.clear();
        self.unfed.clear();
        self.k = match self.rule {
            DraftK::Fixed(k) => k,
            DraftK::Adaptive { max } => START_K.min(max),
        };
        self.stats = DraftStats::default();
    }

    /// Feeds the draft all but the last `keep` of its unseen tokens, in batches. A cancelled
    /// pass leaves the rest for later.
    pub(crate) fn catch_up(&mut self, keep: usize) -> Result<(), SessionError> {
        while self.unfed.len() > keep {
            let n = (self.unfed.len() - keep).min(self.state.batch());
            match self.model.llama().forward(
                &self.unfed[..n],
                &mut self.cache,
                &mut self.state,
                false,
            ) {
                Err(ModelError::Cancelled) => return Err(SessionError::Cancelled),
                r => r?,
            }
            self.unfed.drain(..n);
        }
        Ok(())
    }

    /// The adaptive rule (see the module doc), after a step that kept `accepted` of `k`.
    fn adapt(&mut self, accepted: usize) {
        if let DraftK::Adaptive { max } = self.rule {
            self.k = if accepted == self.k {
                (self.k + 2).min(max)
            } else {
                (self.k - 1).max(1)
            };
        }
    }
}

/// Where a speculative step started, to take back what the reply did not use.
pub(crate) struct StepStart {
    target: CacheCheckpoint,
    draft: CacheCheckpoint,
    /// The committed token the step started from (not in the target's cache before it).
    pending: u32,
    /// The draft's unseen tokens at the start (fed during the step).
    draft_unfed: Vec<u32>,
    /// Tokens the step added to the target's cache and history.
    kept: usize,
}

impl Session {
    /// One speculative step. `pending` is the last committed token, which the target has
    /// not been fed (the draft holds it among its unseen tokens). The draft proposes `k`
    /// tokens, the target scores `pending` and them in one pass, and the committed tokens
    /// (the kept proposals and one token of the target's) go to `out`; its last one is the
    /// next step's `pending`. Both caches then hold `pending` and the kept proposals.
    pub(crate) fn speculate(
        &mut self,
        pending: u32,
        out: &mut Vec<u32>,
    ) -> Result<StepStart, SessionError> {
        out.clear();
        let d = self
            .draft
            .as_mut()
            .expect("a speculative session has a draft");
        // The target's batch must not rebase its cache's epochs later than one-token decoding
        // would (keys rotated twice round differently): near a rebase, fewer proposals.
        let room = self.cache.appends_before_rebase();
        let k = match room {
            0 => d.k,
            r => d.k.min(r - 1), // 0: a step of the target alone
        };
        // The draft's unseen tokens, but the last few, are fed first and stay fed.
        d.catch_up(FEED_WITH_PROPOSAL)?;
        let n_unfed = d.unfed.len();
        d.cache.make_room(n_unfed + k);
        let draft_cp = d.cache.checkpoint();
        let draft_unfed = std::mem::take(&mut d.unfed);
        d.feed_now.clear();
        d.feed_now.extend_from_slice(&draft_unfed);

        // The history the penalty sees: the target's, then `pending`, then the proposals.
        let tail = self.sampler.config().repeat_last_n + MAX_K + 2;
        d.hist.clear();
        d.hist
            .extend_from_slice(&self.history[self.history.len().saturating_sub(tail)..]);
        d.hist.push(pending);

        // Draft: k proposals, one token per pass after the first (computed as the target's
        // verification is, so that a draft equal to the target is always right).
        d.proposal.clear();
        for i in 0..k {
            d.state
                .set_per_token(d.exact || d.feed_now.len() < PER_TOKEN_BELOW);
            let r = d
                .model
                .llama()
                .forward(&d.feed_now, &mut d.cache, &mut d.state, false);
            if let Err(e) = r {
                d.state.set_per_token(false);
                d.cache.rollback(draft_cp);
                d.unfed = draft_unfed;
                return Err(match e {
                    ModelError::Cancelled => SessionError::Cancelled,
                    e => e.into(),
                });
            }
            let mut q = std::mem::take(&mut d.q[i]);
            d.sampler
                .distribution(d.state.last_logits_mut(), &d.hist, &mut q);
            let token = pick(&q, self.sampler.uniform());
            d.q[i] = q;
            d.proposal.push(token);
            d.hist.push(token);
            d.feed_now.clear();
            d.feed_now.push(token);
        }
        d.state.set_per_token(false);

        // Target: `pending` and the proposals in one pass, every row's logits.
        self.cache.make_room(k + 1);
        let target_cp = self.cache.checkpoint();
        d.feed_now.clear();
        d.feed_now.push(pending);
        d.feed_now.extend_from_slice(&d.proposal);
        self.state
            .set_per_token(d.exact || d.feed_now.len() < PER_TOKEN_BELOW);
        let r = self
            .model
            .llama()
            .forward(&d.feed_now, &mut self.cache, &mut self.state, true);
        self.state.set_per_token(false);
        if let Err(e) = r {
            d.cache.rollback(draft_cp);
            d.unfed = draft_unfed;
            return Err(match e {
                ModelError::Cancelled => SessionError::Cancelled,
                e => e.into(),
            });
        }
        self.logits_valid = false;

        // Check the proposals in order; the first rejected one is replaced and ends the step.
        let n_vocab = d.row.len();
        d.hist.truncate(d.hist.len() - k);
        let mut accepted = 0;
        let mut replacement = None;
        for i in 0..=k {
            d.row
                .copy_from_slice(&self.state.logits()[i * n_vocab..(i + 1) * n_vocab]);
            self.sampler.distribution(&mut d.row, &d.hist, &mut d.p);
            if i == k {
                replacement = Some(pick(&d.p, self.sampler.uniform()));
                break;
            }
            let (u, v) = (self.sampler.uniform(), self.sampler.uniform());
            match verify(&d.p, &d.q[i], d.proposal[i], u, v) {
                Verdict::Accept => {
                    accepted += 1;
                    d.hist.push(d.proposal[i]);
                }
                Verdict::Replace(t) => {
                    replacement = Some(t);
                    break;
                }
            }
        }
        out.extend_from_slice(&d.proposal[..accepted]);
        out.push(replacement.expect("the loop ends with a token"));

        // Keep `pending` and the accepted proposals in both caches. The draft was fed its
        // unseen tokens and the first k − 1 proposals.
        self.cache.rollback(target_cp);
        self.cache.append(1 + accepted)?;
        let in_draft = accepted.min(k.saturating_sub(1));
        d.cache.rollback(draft_cp);
        d.unfed.clear();
        if k == 0 {
            d.unfed.extend_from_slice(&draft_unfed); // never fed
        } else {
            d.cache.append(n_unfed + in_draft)?;
        }
        d.unfed.extend_from_slice(&d.proposal[in_draft..accepted]);
        d.unfed.push(*out.last().expect("one token at least"));

        d.stats.steps += 1;
        d.stats.proposed += k as u64;
        d.stats.accepted += accepted as u64;
        if k > 0 {
            d.adapt(accepted);
        }
        self.remember(&[pending]);
        self.remember(&out[..accepted]);
        Ok(StepStart {
            target: target_cp,
            draft: draft_cp,
            pending,
            draft_unfed,
            kept: 1 + accepted,
        })
    }

    /// Ends a reply in the middle of a step's committed tokens: both caches return to the
    /// step's start, and the target is fed `pending` and the tokens the reply used, so its
    /// cache and logits are those of the text given out (the draft gets them as unseen).
    pub(crate) fn finish_step(
        &mut self,
        step: StepStart,
        used: &[u32],
    ) -> Result<(), SessionError> {
        let d = self
            .draft
            .as_mut()
            .expect("a speculative session has a draft");
        self.cache.rollback(step.target);
        self.history.truncate(self.history.len() - step.kept);
        d.cache.rollback(step.draft);
        d.unfed = step.draft_unfed;
        d.unfed.extend_from_slice(used);
        let mut tokens = Vec::with_capacity(used.len() + 1);
        tokens.push(step.pending);
        tokens.extend_from_slice(used);
        self.state
            .set_per_token(d.exact || tokens.len() < PER_TOKEN_BELOW);
        let r = self
            .model
            .llama()
            .forward(&tokens, &mut self.cache, &mut self.state, false);
        self.state.set_per_token(false);
        r?;
        self.logits_valid = true;
        self.remember(&tokens);
        Ok(())
    }
}
