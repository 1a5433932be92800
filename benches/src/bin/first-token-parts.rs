//! Where the time to the first token goes (issue #13), in one fresh process: opening the
//! file, building the tokenizer, the chat template and the model's checks (the parts of
//! `Model::load`, timed one after the other), then a session, the pass over a 16-token prompt
//! and the draw: what `head-to-head` times as a whole. A second pass over the same prompt in a
//! new session shows what the first one paid for pages the process had not touched yet.
//!
//! `cargo run --release -p tern-benches --bin first-token-parts -- FILE [THREADS]`; run it
//! several times (the page cache warm) and compare medians.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tern::cache::CacheConfig;
use tern::gguf::GgufFile;
use tern::model::Model;
use tern::session::Session;
use tern::speed::bench_tokens;

/// The prompt of `head-to-head`'s first-token column.
const PROMPT: usize = 16;

fn main() -> Result<()> {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .context("usage: first-token-parts FILE [THREADS]")?;
    let threads: usize = args.get(1).map_or(Ok(2), |t| t.parse())?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| -> Result<()> {
        // The parts of `Model::load`, without its prefault thread.
        let t = Instant::now();
        let file = GgufFile::open(path)?;
        let open = ms(t);
        let t = Instant::now();
        let tokenizer = tern::tokenizer::Tokenizer::from_gguf(&file)?;
        let tok = ms(t);
        let t = Instant::now();
        let template = tern::chat::ChatTemplate::from_gguf(&file, &tokenizer);
        let tpl = ms(t);
        let t = Instant::now();
        let llama = tern::model::Llama::load(file)?;
        let checks = ms(t);
        drop((tokenizer, template, llama));

        // What `head-to-head --child tern` does, timed by part.
        let t = Instant::now();
        let model = Arc::new(Model::load(path)?);
        let load = ms(t);
        let prompt = bench_tokens(model.llama().config().n_vocab, PROMPT);
        let cache = || CacheConfig::dense(PROMPT + 1);
        let mut s = Session::for_scoring(model.clone(), cache())?;
        let t = Instant::now();
        s.feed(&prompt)?;
        let _ = s.sample();
        let first = ms(t);
        let mut again = Session::for_scoring(model, cache())?;
        let t = Instant::now();
        again.feed(&prompt)?;
        let _ = again.sample();
        let second = ms(t);
        println!(
            "open {open:.1} tokenizer {tok:.1} template {tpl:.1} model checks {checks:.1} | \
             Model::load again {load:.1}, {PROMPT}-token pass and draw {first:.1} \
             (again {second:.1}) | process {:.1} ms",
            ms(start)
        );
        Ok(())
    })
}
