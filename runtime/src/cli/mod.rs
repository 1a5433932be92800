//! Command-line parsing and the commands, each in its own file.

mod chat;
mod inspect;
mod perplexity;
mod run;
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
    /// Print the token ids of a file's text, space-separated, on one line.
    Tokenize(tokenize::Args),
    /// Perplexity of a text, computed as llama-perplexity does.
    Perplexity(perplexity::Args),
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        /// The GGUF file (or a known model name).
        file: String,
    },
    /// Download a known model into the cache (default: the default model).
    Pull {
        /// A known model name.
        name: Option<String>,
    },
    /// List the known models and where they are cached.
    Models,
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Inspect { file } => inspect::run(&file),
        Command::Pull { name } => {
            let name = name.as_deref().unwrap_or(tern::catalog::DEFAULT_MODEL);
            let path = tern::catalog::pull(name)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Models => {
            for m in tern::catalog::known_models() {
                let path = tern::catalog::cache_dir().join(m.file_name);
                let state = if path.exists() {
                    "cached"
                } else {
                    "not cached"
                };
                println!("{:<14} {} ({state})", m.name, path.display());
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
    /// Threads for the matrix products (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

/// The KV cache options: the StreamingLLM attention-sink cache.
#[derive(clap::Args)]
struct CacheArgs {
    /// Tokens at the start kept for ever (attention sinks).
    #[arg(long, default_value_t = 4)]
    sinks: usize,
    /// Most recent tokens kept after the sinks.
    #[arg(long, default_value_t = 1020)]
    window: usize,
    /// Element type of the cached keys and values: f32, f16 or q8_0.
    #[arg(long = "kv-type", default_value = "f16")]
    kv_type: tern::cache::KvType,
    /// Tokens evicted at once when the window is full (1: per token).
    #[arg(long = "evict-chunk", default_value_t = 1)]
    evict_chunk: usize,
}

impl CacheArgs {
    fn config(&self) -> tern::cache::CacheConfig {
        tern::cache::CacheConfig {
            sinks: self.sinks,
            window: self.window,
            kv_type: self.kv_type,
            evict_chunk: self.evict_chunk,
        }
    }
}

/// A loaded model, and the thread pool to run it on.
struct Loaded {
    model: Arc<Model>,
    pool: rayon::ThreadPool,
}

impl ModelArgs {
    fn path(&self) -> Result<PathBuf> {
        Ok(tern::catalog::resolve_model(&self.model)?)
    }

    fn load(&self) -> Result<Loaded> {
        let path = self.path()?;
        let model = Arc::new(Model::load(&path)?);
        let threads = self
            .threads
            .unwrap_or_else(tern_boards::physical_cores)
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("starting the thread pool")?;
        Ok(Loaded { model, pool })
    }
}

/// Reads a text file as UTF-8, with a clear error otherwise.
fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not valid UTF-8", path.display()))
}
