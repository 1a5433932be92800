//! The paper's headline at our scale: SmolLM2-135M streams a million tokens of public-domain
//! text (the King James Bible, 990 600 tokens, then Genesis again) through one session with
//! the attention-sink cache (4 + 1020), every token scored. The perplexity of each
//! 10 000-token stretch should stay flat: the program fits a line to the stretches' mean NLL
//! and reports its slope.
//!
//! The stretches are successive books, whose perplexity differs with their kind of text, so
//! a trend in them alone does not tell text from cache. The control does: the last
//! [`CONTROL`] tokens of every stretch are scored again by a fresh session (same cache, reset,
//! given the [`WARM`] tokens before them unscored, so its window is full too), and the
//! difference stream − fresh on the same tokens is what the long-running cache adds.
//!
//! `cargo run --release -p tern-benches --bin streaming-million [-- --tokens 1000000
//! --threads 2]` writes docs/streaming-million.json after every stretch, with the session saved
//! beside it in target/ (`-- --resume` goes on from there after a run was stopped), and
//! docs/streaming-million.md and .png at the end; `-- --report` writes those two from the
//! JSON alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use plotters::prelude::*;
use tern::cache::CacheConfig;
use tern::model::Model;
use tern::session::{Session, DEFAULT_BATCH};

const STRETCH: usize = 10_000;
/// Tokens at the end of each stretch scored again from a fresh cache.
const CONTROL: usize = 1_000;
/// Tokens the fresh cache is given, unscored, before its [`CONTROL`] tokens: its whole cache.
const WARM: usize = 1_024;

/// What a run has measured so far (the JSON's content).
#[derive(Default)]
struct Progress {
    /// Mean NLL of each finished stretch.
    stretches: Vec<f64>,
    /// Mean NLL of each stretch's last [`CONTROL`] tokens: in the stream, and from a fresh cache.
    tail_stream: Vec<f64>,
    tail_fresh: Vec<f64>,
    secs: f64,
    threads: usize,
}

fn main() -> Result<()> {
    let n_tokens = tern_benches::arg("--tokens", 1_000_000);
    let threads = tern_benches::arg("--threads", tern_boards::physical_cores());
    let flag = |f: &str| std::env::args().any(|a| a == f);
    if flag("--report") {
        // The table and plot of the stretches a run (finished or stopped) left in the JSON.
        return report(&read_json()?);
    }
    let model = Arc::new(Model::load(tern_testkit::smollm2())?);
    let text = tern_benches::whole_bible()?;
    let mut tokens = model.tokenizer().encode(&text, true, false)?;
    // The Bible is 990 600 tokens: the stream goes on from Genesis again (the cache holds
    // 1 024 tokens, so nothing of the first pass is in view when it comes back).
    let once = tokens[1..].to_vec();
    while tokens.len() <= n_tokens {
        tokens.extend_from_slice(&once);
    }
    tokens.truncate(n_tokens + 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let cfg = CacheConfig {
        sinks: 4,
        window: 1020,
        ..CacheConfig::default()
    };
    let n_vocab = model.llama().config().n_vocab;
    let mut p = Progress {
        threads,
        ..Progress::default()
    };
    let resume = flag("--resume");
    if resume {
        p = read_json()?;
        p.threads = threads;
    }
    let t0 = Instant::now();
    let secs_before = p.secs;
    pool.install(|| -> Result<()> {
        let mut s = if resume {
            let path = checkpoint(p.stretches.len());
            Session::restore(model.clone(), &path)
                .with_context(|| format!("resuming from {}", path.display()))?
        } else {
            Session::for_scoring(model.clone(), cfg.clone())?
        };
        let mut fresh = Session::for_scoring(model.clone(), cfg)?;
        // Stretch by stretch, so that a checkpoint falls between batches.
        while (p.stretches.len() + 1) * STRETCH <= n_tokens {
            let a = p.stretches.len() * STRETCH;
            let (mut sum, mut tail) = (0.0f64, 0.0f64);
            score(&mut s, &tokens, a..a + STRETCH, n_vocab, |at, v| {
                sum += v;
                if at >= a + STRETCH - CONTROL {
                    tail += v;
                }
            })?;
            p.stretches.push(sum / STRETCH as f64);
            p.tail_stream.push(tail / CONTROL as f64);
            p.tail_fresh
                .push(fresh_tail(&mut fresh, &tokens, a + STRETCH, n_vocab)?);
            p.secs = secs_before + t0.elapsed().as_secs_f64();
            let k = p.stretches.len();
            eprintln!(
                "{:>8} tokens  stretch PPL {:.3}  last {CONTROL}: stream {:.3}, fresh {:.3}  {:.0} s",
                k * STRETCH,
                p.stretches[k - 1].exp(),
                p.tail_stream[k - 1].exp(),
                p.tail_fresh[k - 1].exp(),
                p.secs,
            );
            // The session first, then the JSON that names it, then the older session: a
            // stop at any point leaves a JSON whose checkpoint exists.
            s.save(checkpoint(k))?;
            write_json(&p)?;
            let _ = std::fs::remove_file(checkpoint(k - 1));
        }
        Ok(())
    })?;
    report(&p)
}

/// Mean NLL of tokens `end - CONTROL + 1 ..= end` scored by `fresh` after a reset and the
/// [`WARM`] tokens before them.
fn fresh_tail(fresh: &mut Session, tokens: &[u32], end: usize, n_vocab: usize) -> Result<f64> {
    let from = end - CONTROL;
    fresh.reset()?;
    fresh.feed(&tokens[from.saturating_sub(WARM)..from])?;
    let mut sum = 0.0;
    score(fresh, tokens, from..end, n_vocab, |_, v| sum += v)?;
    Ok(sum / CONTROL as f64)
}

/// Feeds `tokens[range]` to `s` and gives `f(i, nll)` for each token `i` of the range: the NLL
/// of the token after it. The cache must never hold more than 4 + 1020 tokens.
fn score(
    s: &mut Session,
    tokens: &[u32],
    range: std::ops::Range<usize>,
    n_vocab: usize,
    mut f: impl FnMut(usize, f64),
) -> Result<()> {
    for (k, batch) in tokens[range.clone()].chunks(DEFAULT_BATCH).enumerate() {
        let at = range.start + k * DEFAULT_BATCH;
        let logits = s.feed_all_logits(batch)?;
        for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
            f(at + i, nll(row, tokens[at + i + 1]));
        }
        anyhow::ensure!(
            s.cache().len() <= 1024,
            "the cache holds 4 + 1020 tokens at most"
        );
    }
    Ok(())
}

/// Where the session is saved after `stretches` stretches (the build directory, not docs/).
fn checkpoint(stretches: usize) -> PathBuf {
    tern_benches::docs_dir()
        .join("../target")
        .join(format!("streaming-million.{stretches}.session"))
}

fn read_json() -> Result<Progress> {
    let path = tern_benches::docs_dir().join("streaming-million.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    // A run from before the control has no tails.
    let list =
        |key: &str| -> Vec<f64> { serde_json::from_value(json[key].clone()).unwrap_or_default() };
    Ok(Progress {
        stretches: list("stretch_mean_nll"),
        tail_stream: list("tail_stream_mean_nll"),
        tail_fresh: list("tail_fresh_mean_nll"),
        secs: json["seconds"].as_f64().unwrap_or(0.0),
        threads: json["threads"].as_u64().unwrap_or(0) as usize,
    })
}

/// Writes docs/streaming-million.md and .png for what `p` holds.
fn report(p: &Progress) -> Result<()> {
    let stretches = &p.stretches;
    let (slope, intercept) = fit(stretches);
    let dir = tern_benches::docs_dir();
    let first = stretches.first().copied().unwrap_or(0.0);
    let last = stretches.last().copied().unwrap_or(0.0);
    // The control: stream − fresh on the same tokens, stretch by stretch.
    let diff: Vec<f64> = p
        .tail_stream
        .iter()
        .zip(&p.tail_fresh)
        .map(|(s, f)| s - f)
        .collect();
    let control = if diff.is_empty() {
        "This run has no control (it was measured before the control was added).\n\n".into()
    } else {
        let mean = diff.iter().sum::<f64>() / diff.len() as f64;
        let (d_slope, _) = fit(&diff);
        let (f_slope, _) = fit(&p.tail_fresh);
        format!(
            "**Control.** The last {CONTROL} tokens of each of the {} stretches were scored \
             again by a fresh session (the same cache, reset, given the {WARM} tokens before \
             them unscored). Stream − fresh on the same tokens: mean {mean:+.5} nats (a factor \
             of {:.4} in perplexity), least-squares slope {:+.5} nats per 100 000 tokens; \
             the fresh session's own slope over the stretches is {:+.5} nats per 100 000 \
             tokens (the text's share of the trend).\n\n",
            diff.len(),
            mean.exp(),
            d_slope * 10.0,
            f_slope * 10.0,
        )
    };
    let cell = |v: Option<&f64>| v.map_or("—".into(), |v| format!("{:.3}", v.exp()));
    let md = format!(
        "SmolLM2-135M-Instruct Q4_1, attention-sink cache 4 + 1020 (KV f16), the King James \
         Bible from Genesis 1:1 (990 600 tokens, then from Genesis 1:1 again), {} tokens \
         streamed through one session, every token scored; {} threads, {:.0} s. Generated by \
         `cargo run --release -p tern-benches --bin streaming-million`.\n\n\
         Perplexity per {STRETCH}-token stretch: first {:.3}, last {:.3}, lowest {:.3}, \
         highest {:.3}. Least-squares line through the stretches' mean NLL: slope \
         {:+.5} nats per 100 000 tokens (intercept {intercept:.4}), i.e. a factor of {:.4} in \
         perplexity per 100 000 tokens.\n\n{control}\
         | stretch | tokens | PPL | last {CONTROL}: stream | last {CONTROL}: fresh |\n\
         |---|---|---|---|---|\n{}",
        stretches.len() * STRETCH,
        p.threads,
        p.secs,
        first.exp(),
        last.exp(),
        stretches
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .exp(),
        stretches
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .exp(),
        slope * 10.0,
        (slope * 10.0).exp(),
        stretches
            .iter()
            .enumerate()
            .map(|(i, m)| format!(
                "| {} | {}–{} | {:.3} | {} | {} |\n",
                i + 1,
                i * STRETCH + 1,
                (i + 1) * STRETCH,
                m.exp(),
                cell(p.tail_stream.get(i)),
                cell(p.tail_fresh.get(i)),
            ))
            .collect::<String>()
    );
    std::fs::write(dir.join("streaming-million.md"), &md)?;
    plot(p, slope, intercept, &dir.join("streaming-million.png"))?;
    print!("{md}");
    Ok(())
}

/// −log softmax(row)[target], in f64.
fn nll(row: &[f32], target: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    lse - row[target as usize] as f64
}

/// Least-squares line `y = slope · i + intercept` through the points `(i, y[i])`.
fn fit(y: &[f64]) -> (f64, f64) {
    let n = y.len() as f64;
    if y.len() < 2 {
        return (0.0, y.first().copied().unwrap_or(0.0));
    }
    let mx = (n - 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 - mx) * (v - my))
        .sum();
    let sxx: f64 = (0..y.len()).map(|i| (i as f64 - mx).powi(2)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

fn write_json(p: &Progress) -> Result<()> {
    let (slope, intercept) = fit(&p.stretches);
    let json = serde_json::json!({
        "model": "smollm2-135m", "cache": "4 + 1020, f16", "threads": p.threads,
        "stretch_tokens": STRETCH, "tokens_scored": p.stretches.len() * STRETCH,
        "seconds": p.secs, "slope_nll_per_stretch": slope, "intercept_nll": intercept,
        "stretch_mean_nll": p.stretches,
        "stretch_ppl": p.stretches.iter().map(|m| m.exp()).collect::<Vec<_>>(),
        "control_tokens": CONTROL, "control_warm_tokens": WARM,
        "tail_stream_mean_nll": p.tail_stream, "tail_fresh_mean_nll": p.tail_fresh,
    });
    let dir = tern_benches::docs_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("streaming-million.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// Perplexity of each stretch against position, with the fitted line.
fn plot(p: &Progress, slope: f64, intercept: f64, path: &std::path::Path) -> Result<()> {
    tern_benches::plot_font()?;
    let stretches = &p.stretches;
    let pts: Vec<(f64, f64)> = stretches
        .iter()
        .enumerate()
        .map(|(i, m)| (((i + 1) * STRETCH) as f64, m.exp()))
        .collect();
    let max_x = (stretches.len().max(1) * STRETCH) as f64;
    let max_y = pts
        .iter()
        .map(|pt| pt.1)
        .chain(p.tail_fresh.iter().map(|m| m.exp()))
        .fold(0.0, f64::max)
        * 1.2;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "SmolLM2-135M, sink cache 4+1020: perplexity per 10 000 tokens",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc("tokens streamed")
        .y_desc("perplexity of the stretch")
        .draw()?;
    chart
        .draw_series(LineSeries::new(pts, GREEN.stroke_width(2)))?
        .label("stretch perplexity")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    // The control: the fresh session on each stretch's last tokens.
    if !p.tail_fresh.is_empty() {
        let fresh = p
            .tail_fresh
            .iter()
            .enumerate()
            .map(|(i, m)| (((i + 1) * STRETCH) as f64, m.exp()));
        chart
            .draw_series(LineSeries::new(fresh, RED.stroke_width(1)))?
            .label(format!("control: last {CONTROL} tokens, fresh cache"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
    }
    let line: Vec<(f64, f64)> = (0..stretches.len())
        .map(|i| {
            (
                ((i + 1) * STRETCH) as f64,
                (slope * i as f64 + intercept).exp(),
            )
        })
        .collect();
    chart
        .draw_series(LineSeries::new(line, BLACK.stroke_width(1)))?
        .label("least-squares fit (of the mean NLL)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
