//! Command-line parsing and the commands, each in its own file.

/// `println!` that returns the write's error instead of panicking: a closed stdout (`tern
/// tokenize | head`) ends the command through `?`, and `main` treats it as a normal end.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// `print!` that returns the write's error; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)
    }};
}

mod bench;
mod boards;
mod chat;
mod inspect;
mod perplexity;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod tokenize;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use tern::model::Model;

/// Tern runs small quantized language models offline.
#[derive(Parser)]
#[command(name = "tern", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model in the terminal (or one message per line on stdin).
    Chat(chat::Args),
    /// Generate text from a prompt, streamed to stdout; stats on stderr.
    Run(run::Args),
    /// Prefill and decode speed of a model on this machine.
    Bench(bench::Args),
    /// Print the token ids of a file's text, space-separated, on one line.
    Tokenize(tokenize::Args),
    /// Perplexity of a text, computed as llama-perplexity does.
    Perplexity(perplexity::Args),
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        /// The GGUF file (or a known model name).
        file: String,
    },
    /// Serve the model over HTTP with OpenAI's API; conversations keep their cache.
    #[cfg(feature = "serve")]
    Serve(serve::Args),
    /// Download a known model into the cache (default: the default model).
    Pull {
        /// A known model name.
        name: Option<String>,
        /// Re-hash a cached file against its pinned sha256 (a mismatch is pulled again).
        #[arg(long)]
        verify: bool,
    },
    /// List the known models and where they are cached.
    Models,
    /// Show the detected board (or --board NAME), the settings Tern picks and why.
    Boards {
        /// A board profile name, or auto.
        #[arg(long, default_value = "auto")]
        board: String,
    },
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Run(a) => run::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Inspect { file } => inspect::run(&file),
        Command::Pull { name, verify } => {
            let name = name.as_deref().unwrap_or(tern::catalog::DEFAULT_MODEL);
            let path = if verify {
                crate::fetch::pull_verified(name)?
            } else {
                crate::fetch::pull(name)?
            };
            outln!("{}", path.display())?;
            Ok(())
        }
        Command::Boards { board } => boards::run(Some(&board)),
        Command::Models => {
            for m in tern::catalog::known_models() {
                let path = tern::catalog::cache_dir().join(m.file_name);
                let state = if path.exists() {
                    "cached"
                } else {
                    "not cached"
                };
                outln!("{:<14} {} ({state})", m.name, path.display())?;
            }
            Ok(())
        }
    }
}

/// The model options shared by every command that runs a model.
#[derive(clap::Args)]
struct ModelArgs {
    /// A GGUF file, or a known model name (pulled on first use).
    #[arg(short = 'm', long = "model", default_value = tern::catalog::DEFAULT_MODEL)]
    model: String,
    /// Threads for the matrix products (default: the board's, e.g. the big cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// The board profile that picks threads, cache and memory budget (auto: detect).
    #[arg(long, default_value = "auto")]
    board: String,
}

/// Speculative decoding: a small draft model of the same vocabulary proposes tokens.
#[derive(clap::Args)]
struct DraftArgs {
    /// A draft model (GGUF file or known name) sharing the model's vocabulary: the text is
    /// the model's own, produced in fewer passes over its weights.
    #[arg(long)]
    draft: Option<String>,
    /// Draft tokens per step, fixed (default: adapted to the acceptance rate, up to 7).
    #[arg(long = "draft-k", requires = "draft")]
    draft_k: Option<usize>,
    /// Verify drafts with the one-token kernels: the text is bitwise the model's alone,
    /// near-ties included (slower than the default batched verification).
    #[arg(long = "draft-exact", requires = "draft")]
    draft_exact: bool,
}

impl DraftArgs {
    /// The draft model, loaded, if one was asked for.
    fn load(&self) -> Result<Option<tern::speculative::DraftSpec>> {
        let Some(name) = &self.draft else {
            return Ok(None);
        };
        let path = crate::fetch::resolve_model(name)?;
        let model = Arc::new(Model::load(&path)?);
        let k = match self.draft_k {
            Some(k) => tern::speculative::DraftK::Fixed(k),
            None => tern::speculative::DraftK::default(),
        };
        Ok(Some(tern::speculative::DraftSpec {
            model,
            k,
            exact: self.draft_exact,
        }))
    }
}

/// A session on `l`'s model, speculative when a draft is given.
fn new_session(
    l: &Loaded,
    opts: tern::session::SessionOptions,
    draft: Option<tern::speculative::DraftSpec>,
) -> Result<tern::session::Session> {
    let model = l.model.clone();
    Ok(l.pool
        .install(|| tern::session::Session::start_with(model, opts, draft, Some(&l.board)))?)
}

/// The KV cache options: the StreamingLLM attention-sink cache.
#[derive(clap::Args)]
struct CacheArgs {
    /// Tokens at the start kept for ever (attention sinks; default: the board's).
    #[arg(long)]
    sinks: Option<usize>,
    /// Most recent tokens kept after the sinks (default: the board's, e.g. 1020 on a Pi 4).
    #[arg(long)]
    window: Option<usize>,
    /// Element type of the cached keys and values: f32, f16 or q8_0 (default: the board's).
    #[arg(long = "kv-type")]
    kv_type: Option<tern::cache::KvType>,
    /// Tokens evicted at once when the window is full (1: per token).
    #[arg(long = "evict-chunk", default_value_t = 1)]
    evict_chunk: usize,
}

impl CacheArgs {
    /// The cache asked for, with the board's defaults where nothing was asked, shrunk by the
    /// memory guard if the model and the cache would not fit the board's budget.
    fn config(&self, l: &Loaded) -> Result<tern::cache::CacheConfig> {
        let req = tern::fit::CacheRequest {
            sinks: self.sinks,
            window: self.window,
            kv_type: self.kv_type,
            evict_chunk: self.evict_chunk,
        };
        let (cfg, shrunk) = tern::fit::fit_cache(&l.model, &l.board, &req)?;
        if let Some(message) = shrunk {
            eprintln!("note: {message}");
        }
        Ok(cfg)
    }
}

/// A loaded model, the board it runs on, and the thread pool to run it on.
struct Loaded {
    model: Arc<Model>,
    board: tern_boards::Board,
    pool: rayon::ThreadPool,
}

impl ModelArgs {
    fn path(&self) -> Result<PathBuf> {
        Ok(crate::fetch::resolve_model(&self.model)?)
    }

    fn load(&self) -> Result<Loaded> {
        let path = self.path()?;
        let board = tern_boards::select(Some(&self.board))?;
        if let (_, Some(note)) = tern::fit::use_board_kernels(&board) {
            eprintln!("note: {note}");
        }
        let model = Arc::new(Model::load(&path)?);
        let (threads, lowered) = tern::fit::fit_threads(self.threads, &board);
        if let Some(message) = lowered {
            eprintln!("note: {message}");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("starting the thread pool")?;
        Ok(Loaded { model, board, pool })
    }
}

/// True when `e` comes from writing to a closed stdout (the reader of a pipe went away).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Reads a text file as UTF-8, with a clear error otherwise.
fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not valid UTF-8", path.display()))
}
