//! Picking the next token from the logits.
//!
//! The chain follows llama.cpp's default (`common_params_sampling::samplers`, without the
//! samplers that are off by default there): repetition penalty → top-k → top-p → min-p →
//! temperature → draw. Note that top-p and min-p therefore look at the temperature-1
//! distribution; temperature only reshapes what survives them. A temperature of zero or
//! below means greedy decoding: the highest logit after the penalty, the lowest id on ties.
//!
//! Randomness comes from [`Pcg32`], a small generator of our own whose whole state is two
//! integers, so a session can save it and resume the exact same sequence. Equal seed,
//! settings and logits give equal tokens on every machine.

/// Sampling settings. See [`SamplerConfig::default`] for the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits before the draw; `<= 0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`;
    /// `>= 1` disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; `<= 0` disables.
    pub min_p: f32,
    /// Penalise tokens seen in the last `repeat_last_n` tokens of the history: a positive
    /// logit is divided by it, a negative one multiplied (llama.cpp's rule); `1` disables.
    pub repeat_penalty: f32,
    /// How much of the history the penalty looks at; `0` disables the penalty.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy decoding (temperature 0), with llama.cpp's defaults for every other knob
    /// (top-k 40, top-p 0.95, min-p 0.05, no repetition penalty over a window of 64), so
    /// that raising the temperature alone gives llama.cpp's usual sampling. Seed 0.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A sampler setting outside its meaningful range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sampler setting {name} = {value} is invalid: it must be {expected}")]
pub struct InvalidSamplerConfig {
    pub name: &'static str,
    pub value: f32,
    pub expected: &'static str,
}

impl SamplerConfig {
    /// Checks the ranges, so a front end can reject bad user input with a clear message.
    /// (The sampler itself never fails: out-of-range values act as described per field.)
    pub fn validate(&self) -> Result<(), InvalidSamplerConfig> {
        let check = |name, value: f32, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(InvalidSamplerConfig {
                    name,
                    value,
                    expected,
                })
            }
        };
        let t = self.temperature;
        check(
            "temperature",
            t,
            t.is_finite(),
            "a finite number (<= 0 for greedy)",
        )?;
        let p = self.top_p;
        check("top_p", p, (0.0..=1.0).contains(&p), "between 0 and 1")?;
        let m = self.min_p;
        check("min_p", m, (0.0..=1.0).contains(&m), "between 0 and 1")?;
        let r = self.repeat_penalty;
        check(
            "repeat_penalty",
            r,
            r.is_finite() && r > 0.0,
            "a positive number (1 = off)",
        )
    }
}

/// PCG32 (PCG-XSH-RR 64/32, M. E. O'Neill, pcg-random.org): a 64-bit LCG whose output is a
/// permuted 32-bit value. Small, fast, statistically sound, and its state is two integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    /// LCG increment; always odd. Selects one of 2^63 independent streams.
    inc: u64,
}

impl Pcg32 {
    const MULTIPLIER: u64 = 6_364_136_223_846_793_005;

    /// Seeds the generator like the reference `pcg32_srandom_r(seed, stream)`.
    pub fn new(seed: u64, stream: u64) -> Pcg32 {
        let mut rng = Pcg32 {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// A uniform number in `[0, 1)` with 53 random bits (two outputs).
    pub fn next_f64(&mut self) -> f64 {
        let bits = (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32());
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The whole state, `[state, increment]`.
    pub fn state(&self) -> [u64; 2] {
        [self.state, self.inc]
    }

    /// Rebuilds a generator from [`Pcg32::state`] (the increment is forced odd, as the
    /// generator requires).
    pub fn from_state(s: [u64; 2]) -> Pcg32 {
        Pcg32 {
            state: s[0],
            inc: s[1] | 1,
        }
    }
}

/// The stream our sampler draws from (any fixed value would do; this spells "TERN").
const SAMPLER_STREAM: u64 = 0x5445_524e;

/// One token still in the running.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    /// Unnormalised weight of the final draw (filled last).
    weight: f64,
}

/// Picks tokens according to a [`SamplerConfig`]. Holds scratch buffers reused across calls,
/// so sampling does not allocate once warmed up.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Pcg32,
    candidates: Vec<Candidate>,
    /// Distinct tokens of the penalty window (scratch).
    recent: Vec<u32>,
    /// Sum of the candidates' weights after the last draw.
    total_weight: f64,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler {
            cfg,
            rng: Pcg32::new(cfg.seed, SAMPLER_STREAM),
            candidates: Vec::new(),
            recent: Vec::new(),
            total_weight: 0.0,
        }
    }

    /// A sampler whose scratch is sized up front for a vocabulary of `n_vocab` tokens and a
    /// history of at most `max_history`, so that not even its first draws allocate.
    pub fn sized(cfg: SamplerConfig, n_vocab: usize, max_history: usize) -> Sampler {
        let mut s = Sampler::new(cfg);
        if cfg.temperature > 0.0 {
            s.candidates.reserve_exact(n_vocab);
        }
        if cfg.repeat_penalty != 1.0 {
            s.recent.reserve_exact(cfg.repeat_last_n.min(max_history));
        }
        s
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The generator state, to save with a session.
    pub fn rng_state(&self) -> [u64; 2] {
        self.rng.state()
    }

    /// Restores a state saved with [`Sampler::rng_state`].
    pub fn set_rng_state(&mut self, state: [u64; 2]) {
        self.rng = Pcg32::from_state(state);
    }

    /// Picks the next token. `history` is every token so far (prompt and generated), of
    /// which the last `repeat_last_n` are penalised; the penalty is applied to `logits` in
    /// place. NaN logits count as impossible.
    ///
    /// # Panics
    /// If `logits` is empty (a caller bug: a model always has a vocabulary).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        match self.filter(logits, history) {
            Some(id) => id,
            None => self.draw(),
        }
    }

    /// The distribution [`Sampler::sample`] would draw from, without drawing: `out` gets
    /// `(token, probability)` for every token that survives the chain, most likely first;
    /// greedy decoding is the single `(argmax, 1)`. Speculative decoding compares the
    /// target's and the draft's distributions through it.
    pub fn distribution(&mut self, logits: &mut [f32], history: &[u32], out: &mut Vec<(u32, f32)>) {
        out.clear();
        if let Some(id) = self.filter(logits, history) {
            out.push((id, 1.0));
            return;
        }
        self.weigh();
        out.extend(self.last_candidates());
    }

    /// A uniform number in `[0, 1)` from the sampler's own generator (saved with sessions).
    pub fn uniform(&mut self) -> f64 {
        self.rng.next_f64()
    }

    /// The chain before the draw: penalty, then top-k, top-p and min-p over the candidates.
    /// Returns the token when the choice is already made (greedy, or nothing is possible).
    fn filter(&mut self, logits: &mut [f32], history: &[u32]) -> Option<u32> {
        assert!(!logits.is_empty(), "Sampler::sample: empty logits");
        self.candidates.clear();
        self.total_weight = 0.0;
        self.apply_repeat_penalty(logits, history);
        if self.cfg.temperature.is_nan() || self.cfg.temperature <= 0.0 {
            return Some(argmax(logits));
        }

        self.candidates
            .extend(logits.iter().enumerate().map(|(id, &l)| Candidate {
                id: id as u32,
                logit: sanitize(l),
                weight: 0.0,
            }));
        self.top_k();
        if self.candidates[0].logit == f32::NEG_INFINITY {
            // Nothing is possible; stay deterministic.
            let id = self.candidates[0].id;
            self.candidates.truncate(1);
            self.candidates[0].weight = 1.0;
            self.total_weight = 1.0;
            return Some(id);
        }
        self.top_p();
        self.min_p();
        None
    }

    /// The distribution of the last draw: `(token, probability)` for every token that
    /// survived the filters, most likely first. Empty after a greedy pick.
    pub fn last_candidates(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let total = self.total_weight;
        self.candidates
            .iter()
            .map(move |c| (c.id, (c.weight / total) as f32))
    }

    /// llama.cpp's repetition penalty: once per distinct token of the window.
    fn apply_repeat_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.cfg.repeat_penalty;
        if self.cfg.repeat_last_n == 0 || penalty == 1.0 {
            return;
        }
        let window = &history[history.len().saturating_sub(self.cfg.repeat_last_n)..];
        self.recent.clear();
        self.recent.extend_from_slice(window);
        self.recent.sort_unstable();
        self.recent.dedup();
        for &id in &self.recent {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }

    /// Keeps the `top_k` best and sorts the survivors, best first (ties: lower id first).
    fn top_k(&mut self) {
        let k = self.cfg.top_k;
        let c = &mut self.candidates;
        if k > 0 && k < c.len() {
            c.select_nth_unstable_by(k - 1, by_rank);
            c.truncate(k);
        }
        c.sort_unstable_by(by_rank);
    }

    /// Keeps the shortest prefix whose (temperature 1) probability mass reaches `top_p`.
    fn top_p(&mut self) {
        let p = self.cfg.top_p;
        if p.is_nan() || p >= 1.0 {
            return;
        }
        let c = &mut self.candidates;
        let max = c[0].logit;
        let mut sum = 0.0f64;
        for cand in c.iter_mut() {
            cand.weight = f64::from(cand.logit - max).exp();
            sum += cand.weight;
        }
        let target = f64::from(p) * sum;
        let mut cum = 0.0f64;
        let mut keep = c.len();
        for (i, cand) in c.iter().enumerate() {
            cum += cand.weight;
            if cum >= target {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep);
    }

    /// Keeps tokens whose probability is at least `min_p` times the best one's.
    fn min_p(&mut self) {
        let m = self.cfg.min_p;
        if m.is_nan() || m <= 0.0 {
            return;
        }
        let c = &mut self.candidates;
        let threshold = c[0].logit + m.ln();
        let keep = 1 + c[1..].iter().take_while(|x| x.logit >= threshold).count();
        c.truncate(keep);
    }

    /// Applies the temperature: the candidates' weights and their total.
    fn weigh(&mut self) {
        let t = f64::from(self.cfg.temperature);
        let c = &mut self.candidates;
        let max = c[0].logit;
        let mut total = 0.0f64;
        for cand in c.iter_mut() {
            // exp((l - max) / t) is softmax(l / t) up to the normalisation.
            cand.weight = (f64::from(cand.logit - max) / t).exp();
            total += cand.weight;
        }
        self.total_weight = total;
    }

    /// Applies the temperature and draws from the remaining candidates.
    fn draw(&mut self) -> u32 {
        self.weigh();
        let total = self.total_weight;
        let c = &self.candidates;
        let target = self.rng.next_f64() * total;
        let mut cum = 0.0f64;
        for cand in c.iter() {
            cum += cand.weight;
            if target < cum {
                return cand.id;
            }
        }
        // Rounding left `target` at the very top: the last token with any weight.
        c.iter()
            .rev()
            .find(|x| x.weight > 0.0)
            .map_or(c[0].id, |x| x.id)
    }
}

/// The index of the largest logit, the lowest one on ties; NaN counts as impossible.
/// (Returns 0 for an empty slice.)
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_val {
            best = i;
            best_val = l;
        }
    }
    best as u32
}

/// NaN becomes impossible; +inf becomes the largest finite value so differences stay finite.
fn sanitize(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else {
        l.min(f32::MAX)
    }
}

/// Descending logit, then ascending id: a total order, so unstable sorts are deterministic.
fn by_rank(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}
