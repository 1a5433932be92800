//! The StreamingLLM experiment on a sliding-window model: Gemma 3 270M (base), one long
//! public-domain text streamed through one session, every token scored. Local layers always
//! keep their trained window (a ring of 512); what varies is the cache of the global layers
//! (one layer in six):
//!
//! - `dense`: every token kept (the text stays inside the 32 768-token training context);
//! - `window 0+N`: the last N tokens, no sinks;
//! - `sinks 4+W`: the attention-sink cache;
//! - `pure SWA`: the global layers also get only a ring of the local window (0 + 512);
//! - `recompute`: the last 4 + W tokens re-computed from an empty cache, strided: only every
//!   `--stride`-th token is scored this way (each costs a prefill of 1 024 tokens), and the
//!   streaming caches are compared with it on the same tokens.
//!
//! `cargo run --release -p tern-benches --bin gemma-streaming-ppl [-- --tokens 20000
//! --stride 250 --threads 2]` writes docs/gemma-streaming-ppl.md, .json and .png.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use plotters::prelude::*;
use tern::cache::{CacheConfig, KvType};
use tern::model::Model;
use tern::perplexity::{stream_perplexity, StreamCache};
use tern::session::Session;

const GEMMA: &str = "gemma3-270m";
/// The two windows of the global layers (4 sinks + W, or 0 + W+4).
const WINDOWS: [usize; 2] = [1020, 4092];

struct Run {
    label: String,
    tokens: usize,
    ppl: f64,
    secs: f64,
    nll: Vec<f64>,
}

fn main() -> Result<()> {
    let n_tokens = tern_benches::arg("--tokens", 20_000);
    let stride = tern_benches::arg("--stride", 250).max(1);
    let threads = tern_benches::arg("--threads", tern_boards::physical_cores());
    let model = Arc::new(Model::load(tern_testkit::model(GEMMA))?);
    let w_swa = model
        .llama()
        .config()
        .sliding
        .as_ref()
        .map(|s| s.window)
        .context("Gemma 3 has a sliding window")?;
    let n_ctx_train = model.llama().config().n_ctx_train;
    let text = tern_benches::whole_bible()?;
    let mut tokens = model.tokenizer().encode(&text, true, false)?;
    anyhow::ensure!(
        tokens.len() > n_tokens,
        "the text has only {} tokens",
        tokens.len()
    );
    tokens.truncate(n_tokens + 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    let mut runs: Vec<Run> = Vec::new();
    let out = Outputs {
        n_tokens,
        stride,
        threads,
        w_swa,
    };
    // The runs in order of interest; the outputs are written after each, so a run stopped
    // early leaves what it finished.
    let w0 = WINDOWS[0];
    let mut plan: Vec<(String, StreamCache, usize, usize)> = vec![
        (format!("sinks 4+{w0}"), StreamCache::Sinks, 4, w0),
        (format!("window 0+{}", w0 + 4), StreamCache::Window, 4, w0),
        (format!("pure SWA 0+{w_swa}"), StreamCache::Window, 0, w_swa),
        ("dense".into(), StreamCache::Dense, 0, 0),
    ];
    for w in &WINDOWS[1..] {
        plan.push((format!("sinks 4+{w}"), StreamCache::Sinks, 4, *w));
        plan.push((format!("window 0+{}", w + 4), StreamCache::Window, 4, *w));
    }
    anyhow::ensure!(
        n_tokens < n_ctx_train,
        "dense runs to the training context only"
    );
    let recompute_first = tern_benches::arg("--recompute-first", 0) != 0;
    let mut recompute: Option<Recompute> = None;
    let do_recompute = |runs: &[Run]| -> Result<Recompute> {
        let r = recompute_strided(&model, &tokens, stride, &pool)?;
        out.write(runs, Some(&r))?;
        Ok(r)
    };
    if recompute_first {
        recompute = Some(do_recompute(&runs)?);
    }
    for (label, cache, sinks, window) in plan {
        let t0 = Instant::now();
        eprint!("{label}… ");
        let s = pool
            .install(|| {
                stream_perplexity(
                    &model,
                    &tokens,
                    cache,
                    sinks,
                    window,
                    KvType::F16,
                    |_, _| {},
                )
            })
            .with_context(|| label.clone())?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("PPL {:.3} in {secs:.0} s", s.ppl());
        runs.push(Run {
            label,
            tokens: s.nll.len(),
            ppl: s.ppl(),
            secs,
            nll: s.nll,
        });
        out.write(&runs, recompute.as_ref())?;
    }
    if recompute.is_none() {
        do_recompute(&runs)?;
    }
    Ok(())
}

/// The strided recompute: token `i` (every `stride`th) scored after a prefill of the
/// 4 + W tokens before it, from an empty cache.
struct Recompute {
    positions: Vec<usize>,
    nll: Vec<f64>,
    secs: f64,
}

fn recompute_strided(
    model: &Arc<Model>,
    tokens: &[u32],
    stride: usize,
    pool: &rayon::ThreadPool,
) -> Result<Recompute> {
    let span = 4 + WINDOWS[0];
    let t0 = Instant::now();
    let positions: Vec<usize> = (span..tokens.len()).step_by(stride).collect();
    eprint!(
        "recompute 4+{} at {} positions… ",
        WINDOWS[0],
        positions.len()
    );
    let nll = pool.install(|| -> Result<Vec<f64>> {
        let mut s = Session::for_scoring(model.clone(), CacheConfig::dense(span))?;
        let mut out = Vec::new();
        for &i in &positions {
            s.reset()?;
            s.feed(&tokens[i - span..i])?;
            let (logits, _) = s.logits_and_history();
            out.push(-tern_testkit::log_softmax(logits)[tokens[i] as usize]);
        }
        Ok(out)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("in {secs:.0} s");
    Ok(Recompute {
        positions,
        nll,
        secs,
    })
}

fn find<'a>(runs: &'a [Run], label: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.label == label)
}

/// exp of the mean NLL of `nll` at `positions` (token `i` is `nll[i - 1]`).
fn ppl_at(nll: &[f64], positions: &[usize]) -> f64 {
    let sum: f64 = positions.iter().map(|&i| nll[i - 1]).sum();
    (sum / positions.len().max(1) as f64).exp()
}

/// A cell of the tables: the perplexity, or a dash for a run not done.
fn cell(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.3}"))
}

/// The settings the outputs describe.
struct Outputs {
    n_tokens: usize,
    stride: usize,
    threads: usize,
    w_swa: usize,
}

impl Outputs {
    fn write(&self, runs: &[Run], recompute: Option<&Recompute>) -> Result<()> {
        let Outputs {
            n_tokens,
            stride,
            threads,
            w_swa,
        } = *self;
        let dir = tern_benches::docs_dir();
        std::fs::create_dir_all(&dir)?;
        let mut md = format!(
            "Gemma 3 270M (base) Q4_K_M, KV f16, the King James Bible from Genesis 1:1, \
             {n_tokens} tokens streamed through one session, every token scored; local layers \
             (5 of 6) always a ring of their {w_swa}-token window, the global layers' cache as \
             named; {threads} threads. Generated by \
             `cargo run --release -p tern-benches --bin gemma-streaming-ppl`.\n\n"
        );
        md.push_str(&format!(
            "| global layers' cache | W = {} | W = {} |\n|---|---|---|\n",
            WINDOWS[0], WINDOWS[1]
        ));
        let ppl = |label: &str| find(runs, label).map(|r| r.ppl);
        let dense = cell(ppl("dense"));
        md.push_str(&format!(
            "| dense (every token kept) | {dense} | {dense} |\n"
        ));
        let row = |name: &str, f: &dyn Fn(usize) -> String| {
            let cells: Vec<String> = WINDOWS.iter().map(|&w| cell(ppl(&f(w)))).collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        };
        md.push_str(&row("window (0 + W+4)", &|w| format!("window 0+{}", w + 4)));
        md.push_str(&row("attention sinks (4 + W)", &|w| format!("sinks 4+{w}")));
        let swa = format!("pure SWA 0+{w_swa}");
        md.push_str(&format!(
            "| pure SWA (global layers too: 0 + {w_swa}) | {} | |\n",
            cell(ppl(&swa))
        ));
        if let Some(r) = recompute {
            let rc = (r.nll.iter().sum::<f64>() / r.nll.len().max(1) as f64).exp();
            let at = |label: &str| find(runs, label).map(|x| ppl_at(&x.nll, &r.positions));
            md.push_str(&format!(
                "\n**Recompute**, strided: every {stride}th token from position {} on ({} \
                 tokens) scored after a prefill of the {} tokens before it, from an empty \
                 cache. On the same tokens:\n\n| recompute 4+{} | dense | window 0+{} | \
                 sinks 4+{} | pure SWA |\n|---|---|---|---|---|\n| {rc:.3} | {} | {} | {} | {} |\n",
                r.positions.first().copied().unwrap_or(0),
                r.positions.len(),
                4 + WINDOWS[0],
                WINDOWS[0],
                WINDOWS[0] + 4,
                WINDOWS[0],
                cell(at("dense")),
                cell(at(&format!("window 0+{}", WINDOWS[0] + 4))),
                cell(at(&format!("sinks 4+{}", WINDOWS[0]))),
                cell(at(&swa)),
            ));
        }
        md.push_str("\nRun times: ");
        let mut times: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {:.0} s", r.label, r.secs))
            .collect();
        if let Some(r) = recompute {
            times.push(format!("recompute {:.0} s", r.secs));
        }
        md.push_str(&times.join(", "));
        md.push('\n');
        std::fs::write(dir.join("gemma-streaming-ppl.md"), &md)?;
        let mut json: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "label": r.label, "tokens": r.tokens, "ppl": r.ppl, "seconds": r.secs,
                    "mean_nll_per_1000": tern_benches::binned(&r.nll, 1000).iter().map(|p| p.1).collect::<Vec<_>>(),
                })
            })
            .collect();
        if let Some(r) = recompute {
            json.push(serde_json::json!({
                "label": "recompute (strided)", "positions": r.positions, "nll": r.nll,
                "seconds": r.secs,
            }));
        }
        std::fs::write(
            dir.join("gemma-streaming-ppl.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        plot(runs, recompute, w_swa, &dir.join("gemma-streaming-ppl.png"))?;
        print!("{md}");
        Ok(())
    }
}

/// log-PPL (mean NLL over bins of 512 tokens) against position for every streaming cache,
/// and the strided recompute (mean over bins of its samples) as points.
fn plot(
    runs: &[Run],
    recompute: Option<&Recompute>,
    w_swa: usize,
    path: &std::path::Path,
) -> Result<()> {
    const BIN: usize = 512;
    tern_benches::plot_font()?;
    let w0 = WINDOWS[0];
    let w1 = WINDOWS[1];
    let series = [
        ("dense".to_string(), RED),
        (format!("window 0+{}", w0 + 4), BLUE),
        (format!("sinks 4+{w0}"), GREEN),
        (format!("window 0+{}", w1 + 4), CYAN),
        (format!("sinks 4+{w1}"), MAGENTA),
        (format!("pure SWA 0+{w_swa}"), RGBColor(255, 140, 0)),
    ];
    let series: Vec<(String, RGBColor, &Run)> = series
        .into_iter()
        .filter_map(|(l, c)| find(runs, &l).map(|r| (l, c, r)))
        .collect();
    let max_x = runs.iter().map(|r| r.nll.len()).max().unwrap_or(1) as f64;
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, _, r)| tern_benches::binned(&r.nll, BIN))
        .map(|p| p.1)
        .collect();
    let max_y = all.iter().copied().fold(0.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gemma 3 270M on the KJV: log-PPL by position (local layers: ring of 512)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc("token position")
        .y_desc(format!("mean NLL over {BIN} tokens"))
        .draw()?;
    for (label, color, run) in series {
        let pts = tern_benches::binned(&run.nll, BIN);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    // Recompute samples, eight to a point.
    if let Some(r) = recompute {
        let pts: Vec<(f64, f64)> = r
            .positions
            .chunks(8)
            .zip(r.nll.chunks(8))
            .map(|(p, n)| {
                (
                    p.iter().sum::<usize>() as f64 / p.len() as f64,
                    n.iter().sum::<f64>() / n.len() as f64,
                )
            })
            .collect();
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, BLACK.filled())))?
            .label(format!("recompute 4+{w0} (strided, 8 samples a point)"))
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
