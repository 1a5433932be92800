//! `tern chat`: a conversation in the terminal, or scripted through stdin.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tern::sampler::SamplerConfig;
use tern::session::{Session, SessionOptions, StopReason};

/// Raised by Ctrl-C while a reply streams: stops the reply, keeps the chat.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// A system prompt, kept in the cache for the whole conversation (see --no-pin).
    #[arg(long)]
    system: Option<String>,
    /// Let the system prompt slide out of the window like any other text.
    #[arg(long = "no-pin")]
    no_pin: bool,
    #[command(flatten)]
    cache: super::CacheArgs,
    /// Longest reply, in tokens.
    #[arg(short = 'n', long = "max-reply", default_value_t = 256)]
    max_reply: usize,
    /// Temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.6)]
    temp: f32,
    /// Seed of the sampler's random numbers.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Penalty for repeating recent tokens (1: none).
    #[arg(long = "repeat-penalty", default_value_t = 1.1)]
    repeat_penalty: f32,
    #[command(flatten)]
    draft: super::DraftArgs,
}

pub fn run(a: Args) -> Result<()> {
    let l = a.model.load()?;
    if l.model.template().is_plain() {
        eprintln!(
            "note: this model has no chat template; using the plain format \
             (\"User: …\" / \"Assistant: …\" lines)"
        );
    }
    let sampler = SamplerConfig {
        temperature: a.temp,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        ..SamplerConfig::default()
    };
    sampler.validate()?;
    let opts = SessionOptions {
        cache: a.cache.config(&l)?,
        sampler,
        system: a.system.clone(),
        pin_system: !a.no_pin,
        max_reply: a.max_reply,
        stop: Vec::new(),
    };
    let _ = ctrlc::set_handler(|| INTERRUPT.store(true, Ordering::Relaxed));
    let pool = &l.pool;
    let board = &l.board;
    let mut session = super::new_session(&l, opts, a.draft.load()?)?;
    if std::io::stdin().is_terminal() {
        interactive(&mut session, pool, &l.model, board)
    } else {
        scripted(&mut session, pool, &l.model, board)
    }
}

/// Streams one reply to stdout; Ctrl-C ends it early.
fn reply(session: &mut Session, pool: &rayon::ThreadPool, text: &str) -> Result<StopReason> {
    INTERRUPT.store(false, Ordering::Relaxed);
    let mut out = std::io::stdout();
    let mut closed = None;
    let r = pool.install(|| {
        session.chat(text, |piece| {
            if let Err(e) = write!(out, "{piece}").and_then(|_| out.flush()) {
                closed = Some(e); // stdout closed: stop the reply, end the chat
                return false;
            }
            !INTERRUPT.load(Ordering::Relaxed)
        })
    })?;
    if let Some(e) = closed {
        return Err(e.into());
    }
    writeln!(out)?;
    Ok(r.stop)
}

/// Handles a `/command`; returns false to quit.
fn command(
    line: &str,
    session: &mut Session,
    pool: &rayon::ThreadPool,
    model: &Arc<tern::model::Model>,
    board: &tern_boards::Board,
) -> Result<bool> {
    let mut parts = line.splitn(2, ' ');
    let cmd = parts.next().unwrap_or_default();
    let arg = parts.next().map(str::trim).unwrap_or_default();
    match cmd {
        "/quit" | "/exit" => return Ok(false),
        "/save" if !arg.is_empty() => {
            session.save(arg)?;
            eprintln!("saved to {arg}");
        }
        "/load" if !arg.is_empty() => {
            // The error names the file already.
            // A speculative chat goes on with its draft (fed the saved history).
            let path = Path::new(arg);
            *session = pool.install(|| {
                Session::restore_with(model.clone(), path, session.draft_spec(), Some(board))
            })?;
            eprintln!("loaded {arg}");
        }
        "/reset" => {
            // The same session, its draft model (if any) included, forgets the conversation.
            pool.install(|| session.reset())?;
            eprintln!("the conversation starts afresh");
        }
        "/stats" => {
            let s = session.stats();
            eprintln!(
                "tokens so far: {} | cache: {}/{} | prompt: {} tokens, {:.1} tokens/s | generated: {} tokens, {:.1} tokens/s",
                s.tokens,
                s.cache_used,
                s.cache_capacity,
                s.prompt_tokens,
                s.prompt_tps(),
                s.generated_tokens,
                s.generation_tps()
            );
            if let Some((d, k)) = session.draft_stats() {
                eprintln!(
                    "draft: {:.1} % of {} proposed tokens accepted, {:.2} tokens per pass, k = {k}",
                    100.0 * d.acceptance_rate(),
                    d.proposed,
                    d.tokens_per_step()
                );
            }
        }
        _ => eprintln!("commands: /save FILE, /load FILE, /reset, /stats, /quit"),
    }
    Ok(true)
}

fn interactive(
    session: &mut Session,
    pool: &rayon::ThreadPool,
    model: &Arc<tern::model::Model>,
    board: &tern_boards::Board,
) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    eprintln!("Tern chat. /save FILE, /load FILE, /reset, /stats, /quit; Ctrl-C stops a reply.");
    loop {
        let line = match editor.readline("> ") {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if line.starts_with('/') {
            match command(line, session, pool, model, board) {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            }
        }
        if let Err(e) = reply(session, pool, line) {
            eprintln!("error: {e:#}");
        }
    }
}

/// One user message per line on stdin; each reply on stdout followed by an empty line.
fn scripted(
    session: &mut Session,
    pool: &rayon::ThreadPool,
    model: &Arc<tern::model::Model>,
    board: &tern_boards::Board,
) -> Result<()> {
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') {
            if !command(line, session, pool, model, board)? {
                return Ok(());
            }
            continue;
        }
        reply(session, pool, line)?;
        outln!()?;
    }
    Ok(())
}
