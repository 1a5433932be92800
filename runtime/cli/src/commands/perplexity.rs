//! `tern perplexity`: how well a model predicts a text.
//!
//! Without `--cache`, chunked as llama-perplexity does. With `--cache`, the whole text is
//! streamed through one session with the chosen cache and every token is scored, the
//! experiment of the StreamingLLM paper.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use tern::perplexity::StreamCache;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Tokens per chunk (chunked mode).
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Stream the text through one session with this cache: dense, window, sinks or
    /// recompute. `window` keeps sinks + window recent tokens and no sinks.
    #[arg(long)]
    cache: Option<StreamCache>,
    /// Attention sinks (streamed mode).
    #[arg(long, default_value_t = 4)]
    sinks: usize,
    /// Window of recent tokens after the sinks (streamed mode).
    #[arg(long, default_value_t = 1020)]
    window: usize,
    /// Element type of the cached keys and values: f32, f16 or q8_0.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: tern::cache::KvType,
    /// Score at most this many tokens of the text (streamed mode; 0: all).
    #[arg(long = "max-tokens", default_value_t = 0)]
    max_tokens: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn progress_bar(unit: &str) -> ProgressBar {
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{msg}} [{{elapsed}} < {{eta}}]");
    ProgressBar::new(0).with_style(ProgressStyle::with_template(&template).expect("valid template"))
}

pub fn run(a: Args) -> Result<()> {
    let text = super::read_text(&a.file)?;
    let l = a.model.load()?;
    // As llama-perplexity: the text is tokenized with the model's special tokens added.
    let mut tokens = l.model.tokenizer().encode(&text, true, false)?;
    let start = std::time::Instant::now();

    if let Some(mode) = a.cache {
        if a.max_tokens > 0 {
            tokens.truncate(a.max_tokens + 1);
        }
        let bar = progress_bar("tokens");
        let score = l.pool.install(|| {
            tern::perplexity::stream_perplexity(
                &l.model,
                &tokens,
                mode,
                a.sinks,
                a.window,
                a.kv_type,
                |done, all| {
                    bar.set_length(all as u64);
                    bar.set_position(done as u64);
                },
            )
        })?;
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        if a.json {
            let v = serde_json::json!({
                "cache": format!("{mode:?}").to_lowercase(),
                "sinks": a.sinks,
                "window": a.window,
                "kv_type": a.kv_type.name(),
                "ppl": score.ppl(),
                "tokens": score.nll.len(),
                "seconds": secs,
                "nll": score.nll,
            });
            outln!("{v}")?;
        } else {
            outln!(
                "{} tokens streamed through a {mode:?} cache (sinks {}, window {}) in {secs:.1} s",
                score.nll.len(),
                a.sinks,
                a.window
            )?;
            outln!("PPL = {:.4}", score.ppl())?;
        }
        return Ok(());
    }

    let bos = if l.model.tokenizer().add_bos() {
        l.model.tokenizer().bos()
    } else {
        None
    };
    let bar = progress_bar("chunks");
    let p = l.pool.install(|| {
        tern::perplexity::perplexity(&l.model, &tokens, a.ctx, bos, |done, all, ppl| {
            bar.set_length(all as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("PPL {ppl:.4}"));
        })
    })?;
    bar.finish_and_clear();
    if a.json {
        let v = serde_json::json!({
            "ppl": p.ppl,
            "error": p.error,
            "tokens": p.tokens,
            "chunks": p.chunks,
            "ctx": a.ctx,
            "seconds": start.elapsed().as_secs_f64(),
        });
        outln!("{v}")?;
    } else {
        outln!(
            "{} chunks of {} tokens, {} tokens scored in {:.1} s",
            p.chunks,
            a.ctx,
            p.tokens,
            start.elapsed().as_secs_f64()
        )?;
        outln!("PPL = {:.4} +/- {:.5}", p.ppl, p.error)?;
    }
    Ok(())
}
