//! `tern bench`: prefill and decode speed of a model on this machine.

use anyhow::Result;
use tern::speed::{bench_tokens, first_token, generation_kv_bytes, peak_rss_kib, time_generation};

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

/// Measures in this order, so that each figure means what it says: the first token (the
/// process has done nothing else yet), decode (the peak resident memory is read after it,
/// before any long prompt), then prefill.
pub fn run(a: Args) -> Result<()> {
    let l = a.model.load()?;
    let n_vocab = l.model.llama().config().n_vocab;
    let long = bench_tokens(n_vocab, a.prompt.max(1));
    let short = bench_tokens(n_vocab, 16);
    // From `main` to the first token of a 16-token prompt: load, prompt, the token drawn.
    l.pool.install(|| first_token(&l.model, &short))?;
    let ttft_ms = crate::START.get().map(|t| t.elapsed().as_secs_f64() * 1e3);
    let mut decode = 0.0f64;
    for _ in 0..a.reps.max(1) {
        let (_, d) = l.pool.install(|| time_generation(&l.model, &short, a.n))?;
        decode = decode.max(a.n as f64 / d.max(1e-9));
    }
    let rss_kib = peak_rss_kib();
    let mut prefill = 0.0f64;
    for _ in 0..a.reps.max(1) {
        let (p, _) = l.pool.install(|| time_generation(&l.model, &long, 0))?;
        prefill = prefill.max(long.len() as f64 / p);
    }
    let threads = l.pool.current_num_threads();
    let file_bytes = l.model.llama().file().file_size();
    let kv_bytes = generation_kv_bytes(&l.model, short.len() + a.n)?;
    if a.json {
        let v = serde_json::json!({
            "model": l.model.path().display().to_string(),
            "threads": threads,
            "prompt_tokens": long.len(),
            "gen_tokens": a.n,
            "prefill_tps": prefill,
            "decode_tps": decode,
            "ttft_ms": ttft_ms,
            "rss_kib": rss_kib,
            "file_bytes": file_bytes,
            "kv_bytes": kv_bytes,
        });
        outln!("{v}")?;
    } else {
        let ms = ttft_ms.map_or("?".into(), |t| format!("{t:.0}"));
        let mib = |kib: u64| kib as f64 / 1024.0;
        let rss = rss_kib.map_or("?".into(), |r| format!("{:.1}", mib(r)));
        outln!(
            "{}: {threads} threads, prefill {prefill:.1} tokens/s ({} tokens), decode {decode:.1} \
             tokens/s ({} tokens); first token {ms} ms from start; peak resident while decoding \
             {rss} MiB (file {:.1} MiB, KV cache {:.1} MiB)",
            l.model.path().display(),
            long.len(),
            a.n,
            mib(file_bytes / 1024),
            mib(kv_bytes / 1024),
        )?;
    }
    Ok(())
}
