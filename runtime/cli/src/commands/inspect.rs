//! `tern inspect`: a GGUF file's metadata and tensors.

use anyhow::{Context, Result};
use tern::gguf::GgufFile;

pub fn run(file: &str) -> Result<()> {
    let path = crate::fetch::resolve_model(file)?;
    let g = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let stdout = std::io::stdout();
    tern::gguf::inspect(&g, &mut stdout.lock())?;
    Ok(())
}
