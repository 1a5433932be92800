//! Speculative decoding measured: Qwen2.5-Coder-1.5B alone against the same model with
//! Qwen2.5-Coder-0.5B as its draft, on three kinds of prompt (code completion, chat, prose),
//! at temperature 0 and 0.7, alternating the runs in one process so that a loaded machine
//! slows them alike; llama.cpp's plain decode of the same file as the peer (the oracle's
//! llama.cpp has no speculative decoding: it lives in llama.cpp's `common/`, which
//! `llama-cpp-sys-2` does not bind); and the 1.5B model's decode ceiling (its weight bytes
//! per token against the streaming-read bandwidth measured in the same run).
//!
//! `cargo run --release -p tern-benches --bin speculative [-- --gen 96 --reps 2 --threads 2]`
//! prints the table and writes docs/speculative.md. With `--soak N` it instead generates
//! N tokens speculatively in one session (window 1020) and samples the process's RSS;
//! `--target NAME --draft NAME` pick other catalog models (e.g. `smollm2-135m` for both).
//! With `--step-cost` it times the parts of a speculative step instead: the target's
//! forward pass over 1 to 13 tokens (all logits, batched and token by token) against its
//! one-token decode step, and the draft's decode step, wall and CPU time, best of `--reps`.
//! `--profile` runs one greedy speculative generation on the code prompt (for `perf`).
//! `--prompts code,chat,prose` picks the prompts of the table (fewer than three: printed,
//! docs/speculative.md is left as it is); `--no-llama` leaves llama.cpp out.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tern::cache::CacheConfig;
use tern::chat::Message;
use tern::model::Model;
use tern::model::State;
use tern::sampler::SamplerConfig;
use tern::session::DEFAULT_BATCH;
use tern::session::{Session, SessionOptions};
use tern::speculative::{DraftK, DraftSpec, DraftStats};

const CODE: &str = "import json\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass \
Item:\n    name: str\n    price: float\n    quantity: int\n\n\ndef load_items(path: str) -> \
list[Item]:\n    \"\"\"Reads a JSON list of items from `path`.\"\"\"\n";
const CHAT: &str = "How do I reverse a linked list in Python? Explain briefly.";
const PROSE: &str = "The history of the lighthouse begins in the ancient world, when";

/// One timed generation: tokens, decode tokens/s, and the draft's counters.
struct Run {
    tokens: Vec<u32>,
    tps: f64,
    /// Tokens per CPU second (both threads' time): less sensitive to a busy machine.
    cpu_tps: f64,
    draft: Option<DraftStats>,
}

fn generate(
    target: &Arc<Model>,
    draft: Option<(&Arc<Model>, bool)>,
    prompt: &[u32],
    temp: f32,
    n: usize,
) -> Result<Run> {
    let opts = SessionOptions {
        cache: CacheConfig::dense(prompt.len() + n + 32),
        sampler: SamplerConfig {
            temperature: temp,
            seed: 7,
            ..SamplerConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut s = match draft {
        Some((d, exact)) => {
            let spec = DraftSpec {
                model: d.clone(),
                k: DraftK::default(),
                exact,
            };
            Session::start_with(target.clone(), opts, Some(spec), None)?
        }
        None => Session::new(target.clone(), opts)?,
    };
    s.feed(prompt)?;
    let mut tokens = Vec::with_capacity(n);
    let (t, cpu) = (Instant::now(), tern_benches::cpu_secs().unwrap_or(0.0));
    s.produce(n, |id| {
        tokens.push(id);
        true // a fixed length: end-of-turn tokens do not stop the measurement
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = tern_benches::cpu_secs().unwrap_or(0.0) - cpu;
    Ok(Run {
        tps: tokens.len() as f64 / secs,
        cpu_tps: tokens.len() as f64 / cpu.max(0.01),
        tokens,
        draft: s.draft_stats().map(|(d, _)| d),
    })
}

/// `n` tokens speculatively in one session with a sink cache, RSS sampled every 1000.
fn soak(target: &Arc<Model>, draft: &Arc<Model>, n: usize) -> Result<()> {
    let opts = SessionOptions {
        sampler: SamplerConfig {
            temperature: 0.7,
            repeat_penalty: 1.1,
            seed: 1,
            ..SamplerConfig::default()
        },
        ..SessionOptions::default()
    };
    let spec = DraftSpec {
        model: draft.clone(),
        k: DraftK::default(),
        exact: false,
    };
    let mut s = Session::start_with(target.clone(), opts, Some(spec), None)?;
    s.feed_text(PROSE)?;
    let t = Instant::now();
    let mut made = 0;
    let mut rss = Vec::new();
    while made < n {
        let (m, _) = s.produce(1000.min(n - made), |_| true)?;
        made += m;
        let kib = tern_benches::rss_kib().unwrap_or(0);
        let (d, k) = s.draft_stats().expect("a draft");
        println!(
            "{made:>7} tokens  RSS {kib} KiB  cache {}/{}  draft tokens {} (target {})  \
             acceptance {:.1} %  k {k}  {:.2} tokens/s",
            s.stats().cache_used,
            s.stats().cache_capacity,
            s.draft_tokens().unwrap_or(0),
            s.stats().tokens,
            100.0 * d.acceptance_rate(),
            made as f64 / t.elapsed().as_secs_f64()
        );
        rss.push(kib);
    }
    let first = rss.first().copied().unwrap_or(0);
    let max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "{n} speculative tokens: RSS {first} KiB after 1000, at most {max} KiB (growth {} KiB)",
        max.saturating_sub(first)
    );
    Ok(())
}

/// One forward pass of `n` tokens after `prompt` (all logits, as a verification): best wall
/// seconds of `reps`, and mean CPU seconds (the process's clock ticks in 10 ms); the cache
/// is rolled back after each, so every pass starts at the same place.
fn pass_secs(
    model: &Model,
    prompt: &[u32],
    n: usize,
    per_token: bool,
    reps: usize,
) -> Result<(f64, f64)> {
    let llama = model.llama();
    let mut cache = llama.new_cache(
        CacheConfig::dense(prompt.len() + 64),
        DEFAULT_BATCH,
        DEFAULT_BATCH,
    )?;
    let mut state = State::new(llama.config(), DEFAULT_BATCH);
    for chunk in prompt.chunks(DEFAULT_BATCH) {
        llama.forward(chunk, &mut cache, &mut state, false)?;
    }
    state.set_per_token(per_token);
    let tokens: Vec<u32> = prompt.iter().rev().take(n).copied().collect();
    let mut wall = f64::MAX;
    let c0 = tern_benches::cpu_secs().unwrap_or(0.0);
    for _ in 0..reps {
        cache.make_room(n);
        let cp = cache.checkpoint();
        let t = Instant::now();
        llama.forward(&tokens, &mut cache, &mut state, true)?;
        wall = wall.min(t.elapsed().as_secs_f64());
        cache.rollback(cp);
    }
    let cpu = (tern_benches::cpu_secs().unwrap_or(0.0) - c0) / reps as f64;
    Ok((wall, cpu))
}

/// The cost of a speculative step's parts: the target's verification pass of `n` tokens
/// against its decode step, and the draft's decode step.
fn step_cost(target: &Model, draft: &Model, prompt: &[u32], reps: usize) -> Result<()> {
    let (t1, c1) = pass_secs(target, prompt, 1, false, reps)?;
    let (d1, dc1) = pass_secs(draft, prompt, 1, false, reps)?;
    println!(
        "target decode step {:.1} ms (CPU {:.0} ms); draft decode step {:.1} ms (CPU {:.0} ms), \
         {:.2} of the target's",
        t1 * 1e3,
        c1 * 1e3,
        d1 * 1e3,
        dc1 * 1e3,
        d1 / t1
    );
    println!(
        "| tokens | batched ms | × decode step | CPU × | per-token ms | × decode step | CPU × |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [2, 3, 4, 5, 7, 8, 9, 13] {
        let (b, bc) = pass_secs(target, prompt, n, false, reps)?;
        let (e, ec) = pass_secs(target, prompt, n, true, reps)?;
        println!(
            "| {n} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
            b * 1e3,
            b / t1,
            bc / c1,
            e * 1e3,
            e / t1,
            ec / c1
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let n = tern_benches::arg("--gen", 96);
    let reps = tern_benches::arg("--reps", 2);
    let threads = tern_benches::arg("--threads", 2);
    let soak_tokens = tern_benches::arg("--soak", 0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let target = Arc::new(Model::load(tern_testkit::model(&tern_benches::arg_str(
        "--target",
        "qwen2.5-coder-1.5b",
    )))?);
    let draft = Arc::new(Model::load(tern_testkit::model(&tern_benches::arg_str(
        "--draft",
        "qwen2.5-coder-0.5b",
    )))?);
    if soak_tokens > 0 {
        return pool.install(|| soak(&target, &draft, soak_tokens));
    }
    if std::env::args().any(|a| a == "--profile") {
        // One speculative generation to profile: the code prompt, greedy, batched verification.
        let prompt = target.tokenizer().encode(CODE, true, true)?;
        let r = pool.install(|| generate(&target, Some((&draft, false)), &prompt, 0.0, n))?;
        let d = r.draft.expect("a draft");
        println!(
            "{} tokens, {:.2} tokens/s, {} steps, {} proposed, {} accepted ({:.1} %)",
            r.tokens.len(),
            r.tps,
            d.steps,
            d.proposed,
            d.accepted,
            100.0 * d.acceptance_rate()
        );
        return Ok(());
    }
    if std::env::args().any(|a| a == "--step-cost") {
        let prompt = target.tokenizer().encode(CODE, true, true)?;
        return pool.install(|| step_cost(&target, &draft, &prompt, reps.max(5)));
    }
    let stream = tern_benches::bandwidth::StreamRead::new(512);
    let bw = (0..5).map(|_| stream.gbs(&pool)).fold(0f64, f64::max);
    let weights = target.llama().file().tensor_data().len() as f64;
    let ceiling = bw * 1e9 / weights;

    let tok = target.tokenizer();
    let chat = target
        .template()
        .render(&[Message::new("user", CHAT)], true)?;
    let only = tern_benches::arg_str("--prompts", "code,chat,prose");
    // llama.cpp's spinning threads crawl on a busy machine (0.2 tokens/s seen): skippable.
    let no_llama = std::env::args().any(|a| a == "--no-llama");
    let prompts: Vec<(&str, Vec<u32>)> = [
        ("code completion", tok.encode(CODE, true, true)?),
        ("chat", tok.encode(&chat, true, true)?),
        ("prose", tok.encode(PROSE, true, true)?),
    ]
    .into_iter()
    .filter(|(kind, _)| only.split(',').any(|o| kind.starts_with(o)))
    .collect();

    let mut md = format!(
        "Qwen2.5-Coder-1.5B-Instruct (Q4_K/Q6_K, {:.2} GB of weights) alone and with \
         Qwen2.5-Coder-0.5B-Instruct as its draft (adaptive k, see runtime/src/speculative.rs), \
         {n} tokens after each prompt, {threads} threads, best of {reps} alternating runs; \
         decode tokens/s (the prompt excluded). \"exact\" verifies with the one-token kernels \
         (text bitwise the model's alone); \"fast\" with the batched kernels. Streaming-read \
         bandwidth {bw:.1} GB/s ({threads} threads, best of 5), so the 1.5B model's decode ceiling is \
         {ceiling:.1} tokens/s. Generated by `cargo run --release -p tern-benches --bin \
         speculative`.\n\n\
         | prompt | temp | alone | fast draft | speed-up | exact draft | speed-up | CPU-time speed-up (fast / exact) | acceptance (fast / exact) | tokens per pass | greedy text = alone | llama.cpp plain decode |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        weights / 1e9
    );
    #[cfg(target_arch = "x86_64")]
    let mut llama = tern_oracle::llama::OracleModel::load(target.path(), 512, threads)?;
    for (kind, prompt) in &prompts {
        #[cfg(target_arch = "x86_64")]
        let llama_tps = if no_llama {
            "not run".to_string()
        } else {
            let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
            let mut best = 0.0f64;
            for _ in 0..reps {
                let (_, secs) = llama.time_generation(&ids, n)?;
                best = best.max(n as f64 / secs);
            }
            format!("{best:.2}")
        };
        #[cfg(not(target_arch = "x86_64"))]
        let llama_tps = if no_llama { "not run" } else { "n/a" }.to_string();
        for temp in [0.0f32, 0.7] {
            let (mut alone, mut fast, mut exact) = (None::<Run>, None::<Run>, None::<Run>);
            let best = |slot: &mut Option<Run>, r: Run| {
                if slot.as_ref().is_none_or(|s| r.tps > s.tps) {
                    *slot = Some(r);
                }
            };
            for _ in 0..reps {
                pool.install(|| -> Result<()> {
                    best(&mut alone, generate(&target, None, prompt, temp, n)?);
                    best(
                        &mut fast,
                        generate(&target, Some((&draft, false)), prompt, temp, n)?,
                    );
                    best(
                        &mut exact,
                        generate(&target, Some((&draft, true)), prompt, temp, n)?,
                    );
                    Ok(())
                })?;
            }
            let (a, f, e) = (alone.unwrap(), fast.unwrap(), exact.unwrap());
            let (fd, ed) = (f.draft.unwrap(), e.draft.unwrap());
            let same = if temp == 0.0 {
                format!(
                    "fast {}, exact {}",
                    if f.tokens == a.tokens { "yes" } else { "no" },
                    if e.tokens == a.tokens { "yes" } else { "no" }
                )
            } else {
                "(sampled)".to_string()
            };
            let row = format!(
                "| {kind} | {temp} | {:.2} | {:.2} | **{:.2}** | {:.2} | **{:.2}** | {:.2} / {:.2} | {:.0} % / {:.0} % | {:.2} / {:.2} | {same} | {} |\n",
                a.tps,
                f.tps,
                f.tps / a.tps,
                e.tps,
                e.tps / a.tps,
                f.cpu_tps / a.cpu_tps,
                e.cpu_tps / a.cpu_tps,
                100.0 * fd.acceptance_rate(),
                100.0 * ed.acceptance_rate(),
                fd.tokens_per_step(),
                ed.tokens_per_step(),
                if temp == 0.0 { llama_tps.as_str() } else { "" },
            );
            eprint!("{row}");
            md.push_str(&row);
        }
    }
    md.push_str(&format!(
        "\nLoad average during the run (1, 5, 15 min): {}.\n",
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|_| "unknown".into())
    ));
    println!("{md}");
    if prompts.len() < 3 {
        return Ok(()); // a part of the table: docs/speculative.md keeps the whole one
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/speculative.md");
    std::fs::write(&out, format!("# Speculative decoding\n\n{md}"))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
