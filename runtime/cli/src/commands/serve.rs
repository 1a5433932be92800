//! `tern serve`: the OpenAI-compatible server (crate::serve) over one model.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tern::sampler::SamplerConfig;
use tern::session::SessionOptions;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    cache: super::CacheArgs,
    #[command(flatten)]
    draft: super::DraftArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 (default: $TERN_API_KEY, else none).
    #[arg(long = "api-key", env = "TERN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Sessions kept in memory; the least recently used others wait in session files
    /// (default: as many as the board's memory budget holds beside the model and the
    /// draft model, each with its cache, at most 64).
    #[arg(long = "max-sessions")]
    max_sessions: Option<usize>,
    /// Where conversations evicted from memory are saved (default: a directory under the
    /// system's temporary directory, removed at exit).
    #[arg(long = "sessions-dir")]
    sessions_dir: Option<PathBuf>,
    /// Requests generating at once (default: the board's threads).
    #[arg(long)]
    parallel: Option<usize>,
    /// Requests waiting for their turn before the server answers 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Largest request body, in bytes (larger: 413).
    #[arg(long = "body-limit", default_value_t = 4 << 20)]
    body_limit: usize,
    /// Reply length when a request asks none, in tokens.
    #[arg(short = 'n', long = "max-reply", default_value_t = 256)]
    max_reply: usize,
    /// Longest reply a request may ask for, in tokens.
    #[arg(long = "max-tokens-limit", default_value_t = 4096)]
    max_tokens_limit: usize,
}

pub fn run(a: Args) -> Result<()> {
    return_freed_memory();
    let l = a.model.load()?;
    let cache = a.cache.config(&l)?;
    let session_options = SessionOptions {
        cache,
        sampler: SamplerConfig::default(),
        system: None,
        pin_system: true,
        max_reply: a.max_reply,
        stop: Vec::new(),
    };
    let draft = a.draft.load()?;
    // One session, to learn what a session weighs (both caches with a draft) and check it
    // fits the budget at all; the vocabulary check of the draft happens here too.
    let probe = super::new_session(&l, session_options.clone(), draft.clone())?;
    let per_session = probe.cache_bytes().max(1) as u64;
    drop(probe);
    let file_bytes = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let model_bytes =
        file_bytes(l.model.path()) + draft.as_ref().map_or(0, |d| file_bytes(d.model.path()));
    let max_sessions = match a.max_sessions {
        Some(0) => bail!("--max-sessions must be at least 1"),
        Some(n) => n,
        None => {
            let budget = l.board.settings.memory_budget.value;
            (budget.saturating_sub(model_bytes) / per_session).clamp(1, 64) as usize
        }
    };
    let (sessions_dir, temporary) = match a.sessions_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("tern-serve-{}", std::process::id())),
            true,
        ),
    };
    let threads = l.pool.current_num_threads();
    let model_id = model_id(&a.model.model);
    let cfg = crate::serve::Config {
        model: l.model,
        model_id,
        draft,
        board: l.board,
        pool: l.pool,
        session_options,
        addr: SocketAddr::new(a.host, a.port),
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_sessions,
        sessions_dir: sessions_dir.clone(),
        parallel: a.parallel.unwrap_or(threads).max(1),
        queue: a.queue,
        body_limit: a.body_limit,
        max_tokens_limit: a.max_tokens_limit.max(1),
        default_max_tokens: a.max_reply.clamp(1, a.max_tokens_limit.max(1)),
    };
    let r = crate::serve::run(cfg);
    if temporary {
        let _ = std::fs::remove_dir_all(&sessions_dir);
    }
    r.context("tern serve")
}

/// The name clients use for the model: the catalog name (also for a path to a catalog
/// model's file), else the file's stem.
fn model_id(arg: &str) -> String {
    let path = std::path::Path::new(arg);
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or(arg);
    let known = tern::catalog::known_model(arg).or_else(|| {
        tern::catalog::known_models()
            .iter()
            .find(|m| m.file_name == file_name)
    });
    match known {
        Some(m) => m.name.to_string(),
        None => path
            .file_stem()
            .map_or_else(|| arg.to_string(), |s| s.to_string_lossy().into_owned()),
    }
}

/// glibc raises its mmap threshold each time a large block is freed, after which the KV
/// caches of evicted sessions are carved from the heap and stay resident when freed:
/// measured with `serve-load`, 40 conversations under `--max-sessions 8` grew to 1 071 MiB,
/// and to 533 MiB (flat) with the threshold fixed at 1 MiB, as here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    // SAFETY: mallopt sets a tunable of glibc's allocator; it takes the allocator's own
    // locks and has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}
