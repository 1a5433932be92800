//! `tern perplexity`: how well a model predicts a text.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let text = super::read_text(&a.file)?;
    let l = a.model.load()?;
    // As llama-perplexity: the text is tokenized with the model's special tokens added.
    let tokens = l.tokenizer.encode(&text, true, false)?;
    let bos = if l.tokenizer.add_bos() { l.tokenizer.bos() } else { None };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chunks, {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let start = std::time::Instant::now();
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
        println!("{v}");
    } else {
        println!(
            "{} chunks of {} tokens, {} tokens scored in {:.1} s",
            p.chunks,
            a.ctx,
            p.tokens,
            start.elapsed().as_secs_f64()
        );
        println!("PPL = {:.4} +/- {:.5}", p.ppl, p.error);
    }
    Ok(())
}
