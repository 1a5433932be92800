//! `tern run`: generate text from a prompt, streamed as it is produced.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use tern::sampler::SamplerConfig;
use tern::session::SessionOptions;
use tern::stream::Utf8Stream;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    /// Seed of the sampler's random numbers.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P.
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than MIN_P times the most likely one.
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for repeating recent tokens (1: none).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[command(flatten)]
    cache: super::CacheArgs,
    #[command(flatten)]
    draft: super::DraftArgs,
}

pub fn run(a: Args) -> Result<()> {
    let l = a.model.load()?;
    let prompt = l.model.tokenizer().encode(&a.prompt, true, true)?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let sampler = SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        ..SamplerConfig::default()
    };
    sampler.validate()?;
    let opts = SessionOptions {
        cache: a.cache.config(&l)?,
        sampler,
        ..SessionOptions::default()
    };
    let mut session = super::new_session(&l, opts, a.draft.load()?)?;
    let mut text = Utf8Stream::new();

    let (prefill_secs, generated, gen_secs, first) = l.pool.install(|| -> Result<_> {
        let mut out = std::io::stdout().lock();
        let t0 = Instant::now();
        session.feed(&prompt)?;
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let tokenizer = l.model.tokenizer();
        let mut written = Ok(());
        let mut first = None;
        let (generated, _) = session.produce(a.n, |id| {
            first = first.or_else(|| crate::START.get().map(Instant::elapsed));
            if tokenizer.is_end_of_generation(id) {
                return false;
            }
            written = write!(out, "{}", text.push(&tokenizer.token_to_bytes(id)))
                .and_then(|_| out.flush());
            written.is_ok()
        })?;
        written?;
        write!(out, "{}", text.finish())?;
        writeln!(out)?;
        Ok((prefill_secs, generated, t1.elapsed().as_secs_f64(), first))
    })?;
    if let Some((d, _)) = session.draft_stats() {
        eprintln!(
            "draft: {} of {} proposed tokens accepted ({:.1} %), {:.2} tokens per pass of the model",
            d.accepted,
            d.proposed,
            100.0 * d.acceptance_rate(),
            d.tokens_per_step()
        );
    }
    // The first token's time from `main`, as `tern bench`'s `ttft_ms`.
    let first = first.map_or("-".into(), |t| format!("{:.0} ms", t.as_secs_f64() * 1e3));
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s | generated: {} tokens, {:.1} tokens/s | first token: {first} | kernels: {}",
        prompt.len(),
        prompt.len() as f64 / prefill_secs.max(1e-9),
        generated,
        generated as f64 / gen_secs.max(1e-9),
        tern_kernels::kernels().name(),
    );
    Ok(())
}
