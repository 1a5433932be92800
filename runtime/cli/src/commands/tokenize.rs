//! `tern tokenize`: the token ids of a text file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tern::gguf::GgufFile;
use tern::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a known model name.
    #[arg(short = 'm', long = "model", default_value = tern::catalog::DEFAULT_MODEL)]
    model: String,
    /// The text file to tokenize.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Do not add the BOS/EOS tokens that the model's metadata asks for.
    #[arg(long)]
    no_special: bool,
    /// Treat special-token text (like `<|im_start|>`) as plain text.
    #[arg(long)]
    no_parse_special: bool,
}

pub fn run(a: Args) -> Result<()> {
    let path = crate::fetch::resolve_model(&a.model)?;
    let g = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let tok = Tokenizer::from_gguf(&g)?;
    let text = super::read_text(&a.file)?;
    let ids = tok.encode(&text, !a.no_special, !a.no_parse_special)?;
    // Streamed: a string per id would take ~40 bytes per token of a long text.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, id) in ids.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        write!(out, "{sep}{id}")?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
