//! `tern bench`: prefill and decode speed of a model on this machine.

use anyhow::Result;
use tern::speed::{bench_tokens, time_generation};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Prompt tokens for the prefill measurement.
    #[arg(short = 'p', long = "prompt-tokens", default_value_t = 512)]
    prompt: usize,
    /// Tokens generated for the decode measurement (after a 16-token prompt).
    #[arg(short = 'n', long = "gen-tokens", default_value_t = 128)]
    n: usize,
    /// Repetitions; the best of them is reported.
    #[arg(short = 'r', long = "reps", default_value_t = 3)]
    reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let l = a.model.load()?;
    let n_vocab = l.model.llama().config().n_vocab;
    let long = bench_tokens(n_vocab, a.prompt.max(1));
    let short = bench_tokens(n_vocab, 16);
    let (mut prefill, mut decode) = (0.0f64, 0.0f64);
    for _ in 0..a.reps.max(1) {
        let (p, _) = l.pool.install(|| time_generation(&l.model, &long, 0))?;
        let (_, d) = l.pool.install(|| time_generation(&l.model, &short, a.n))?;
        prefill = prefill.max(long.len() as f64 / p);
        decode = decode.max(a.n as f64 / d.max(1e-9));
    }
    let threads = l.pool.current_num_threads();
    if a.json {
        let v = serde_json::json!({
            "model": l.model.path().display().to_string(),
            "threads": threads,
            "prompt_tokens": long.len(),
            "gen_tokens": a.n,
            "prefill_tps": prefill,
            "decode_tps": decode,
        });
        outln!("{v}")?;
    } else {
        outln!(
            "{}: {threads} threads, prefill {prefill:.1} tokens/s ({} tokens), decode {decode:.1} tokens/s ({} tokens)",
            l.model.path().display(),
            long.len(),
            a.n
        )?;
    }
    Ok(())
}
