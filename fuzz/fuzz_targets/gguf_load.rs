//! The GGUF reader and the model's checks at load, on any bytes: an error or a model, never a
//! panic, an abort or an allocation the file cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    let mut out = Vec::new();
    let _ = tern::gguf::inspect(&file, &mut out);
    let _ = tern::tokenizer::Tokenizer::from_gguf(&file);
    let _ = tern::model::Llama::load(file);
});
