//! Unbounded generation: SmolLM2-135M (or `--model NAME`) generates a long stream (200 000
//! tokens by default) through a 4 + 508 attention-sink cache (`--sinks`, `--window`; a
//! sliding-window model's local layers keep their own ring). Every 1 000 tokens it records the resident memory
//! (`VmRSS` of /proc/self/status) and the decode speed over the last 1 000 tokens.
//!
//! Speed on a shared machine swings with its load, so the end speed is also measured against
//! a peer in the same minutes: the session saved at token 2 000 is restored at the end, and
//! the two decode alternately (rounds of 500 tokens each); their ratio is the figure that
//! says whether decoding slowed down over the stream.
//!
//! `cargo run --release -p tern-benches --bin soak [-- --tokens 200000 --threads 2]`
//! writes docs/soak.json (docs/soak-NAME.json for another model) and prints the figures the
//! README quotes. Gemma 3 at its default cache:
//! `cargo run --release -p tern-benches --bin soak -- --model gemma3-270m --window 1020
//! --tokens 100000`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tern::cache::CacheConfig;
use tern::model::Model;
use tern::sampler::SamplerConfig;
use tern::session::{Session, SessionOptions};

fn main() -> Result<()> {
    let total = tern_benches::arg("--tokens", 200_000);
    let threads = tern_benches::arg("--threads", tern_boards::physical_cores());
    let name = tern_benches::arg_str("--model", tern_testkit::SMOLLM2);
    let (sinks, window) = (
        tern_benches::arg("--sinks", 4),
        tern_benches::arg("--window", 508),
    );
    const EVERY: usize = 1_000;
    let path = tern_testkit::model(&name);
    let model = Arc::new(Model::load(&path)?);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let opts = SessionOptions {
        cache: CacheConfig {
            sinks,
            window,
            ..CacheConfig::default()
        },
        // Sampling keeps the stream from settling into a short loop.
        sampler: SamplerConfig {
            temperature: 1.0,
            seed: 1,
            ..SamplerConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut rows = Vec::new();
    const PEER_AT: usize = 2_000;
    const ROUNDS: usize = 5;
    const ROUND: usize = 500;
    let peer_file = std::env::temp_dir().join(format!("tern-soak-{}.sess", std::process::id()));
    let mut paired = None;
    let mut memory = String::new();
    pool.install(|| -> Result<()> {
        let mut s = Session::new(model.clone(), opts.clone())?;
        let m = s.cache().memory();
        memory = format!(
            "KV cache {} KiB: {} global layers of {} KiB, {} local layers of {} KiB",
            s.cache().memory_bytes() / 1024,
            m.global_layers,
            m.global_bytes_per_layer / 1024,
            m.local_layers,
            m.local_bytes_per_layer / 1024
        );
        eprintln!("{name}, cache {sinks} + {window}: {memory}");
        s.feed_text("Once upon a time, in a harbour town by the cold northern sea,")?;
        let mut t = Instant::now();
        let mut cpu = tern_benches::cpu_secs().unwrap_or(0.0);
        for i in 1..=total {
            let id = s.sample();
            s.feed(&[id])?;
            if i % EVERY == 0 {
                let tps = EVERY as f64 / t.elapsed().as_secs_f64();
                let now_cpu = tern_benches::cpu_secs().unwrap_or(0.0);
                let cpu_ms = (now_cpu - cpu) * 1000.0 / EVERY as f64;
                let rss = tern_benches::rss_kib().unwrap_or(0);
                eprintln!(
                    "{i:>8} tokens  {tps:7.1} tokens/s  {cpu_ms:6.2} CPU ms/token  RSS {rss} KiB  cache {}",
                    s.cache().len()
                );
                rows.push((i, tps, rss, cpu_ms));
                t = Instant::now();
                cpu = now_cpu;
            }
            if i == PEER_AT.min(total) {
                s.save(&peer_file)?;
            }
        }
        // The peer: the same session as it was at token 2 000, decoding in turns with it.
        let mut peer = Session::restore(model.clone(), &peer_file)?;
        let (mut long_secs, mut peer_secs) = (0.0, 0.0);
        for _ in 0..ROUNDS {
            for (sess, secs) in [(&mut s, &mut long_secs), (&mut peer, &mut peer_secs)] {
                let t = Instant::now();
                for _ in 0..ROUND {
                    let id = sess.sample();
                    sess.feed(&[id])?;
                }
                *secs += t.elapsed().as_secs_f64();
            }
        }
        let n = (ROUNDS * ROUND) as f64;
        paired = Some((n / long_secs, n / peer_secs));
        Ok(())
    })?;
    let _ = std::fs::remove_file(&peer_file);
    let (paired_end, paired_peer) = paired.unwrap_or((0.0, 0.0));

    let at = |n: usize| rows.iter().find(|r| r.0 == n).copied();
    let (base_rss, max_rss) = match at(EVERY) {
        Some(first) => (first.2, rows.iter().map(|r| r.2).max().unwrap_or(first.2)),
        None => (0, 0),
    };
    let early = at(2_000.min(total)).map_or(0.0, |r| r.1);
    let late = rows.last().map_or(0.0, |r| r.1);
    let summary = serde_json::json!({
        "model": name,
        "tokens": total,
        "threads": threads,
        "cache": format!("{sinks} + {window}, f16"),
        "kv_memory": memory,
        "rss_kib_at_1000": base_rss,
        "rss_kib_max_after_1000": max_rss,
        "rss_growth_kib": max_rss.saturating_sub(base_rss),
        "tps_at_2000": early,
        "tps_at_end": late,
        "tps_ratio_end_over_2000": late / early.max(1e-9),
        "paired_tps_at_end": paired_end,
        "paired_tps_of_peer_at_2000": paired_peer,
        "paired_ratio_end_over_2000": paired_end / paired_peer.max(1e-9),
        "cpu_ms_per_token_at_2000": at(2_000.min(total)).map_or(0.0, |r| r.3),
        "cpu_ms_per_token_at_end": rows.last().map_or(0.0, |r| r.3),
        "rows (tokens, tokens/s, RSS KiB, CPU ms/token)": rows.iter().map(|r| serde_json::json!([r.0, r.1, r.2, r.3])).collect::<Vec<_>>(),
    });
    let dir = tern_benches::docs_dir();
    std::fs::create_dir_all(&dir)?;
    let file = match name.as_str() {
        tern_testkit::SMOLLM2 => "soak.json".to_string(),
        other => format!("soak-{other}.json"),
    };
    std::fs::write(dir.join(file), serde_json::to_string_pretty(&summary)?)?;
    println!(
        "{name}: {total} tokens, {sinks}+{window} cache ({memory}), {threads} threads: RSS {base_rss} KiB at 1000 tokens, \
         at most {max_rss} KiB after (growth {} KiB); decode {early:.1} tokens/s at 2000, \
         {late:.1} at {total} (ratio {:.3}); paired at the end: {paired_end:.1} tokens/s \
         vs {paired_peer:.1} for the session restored at 2000 (ratio {:.3})",
        max_rss.saturating_sub(base_rss),
        late / early.max(1e-9),
        paired_end / paired_peer.max(1e-9)
    );
    Ok(())
}
