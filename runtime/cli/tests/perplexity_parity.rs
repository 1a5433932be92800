//! `tern perplexity` against llama.cpp's perplexity on the same text, model and context.
#![cfg(target_arch = "x86_64")]

mod common;

use std::process::Command;

use tern::gguf::GgufFile;
use tern::tokenizer::Tokenizer;
use tern_oracle::llama::OracleModel;

const CTX: usize = 512;

#[test]
fn perplexity_matches_llama_cpp() {
    let path = common::smollm2();
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();

    // The whole GPL-3 text, about 15 chunks of 512 tokens.
    let cut = common::natural_text();
    let text_path = std::path::PathBuf::from("/usr/share/common-licenses/GPL-3");

    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["perplexity", "--json", "-c", &CTX.to_string(), "-m"])
        .arg(&path)
        .arg("-f")
        .arg(&text_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours_ppl = ours["ppl"].as_f64().unwrap();

    let tokens: Vec<i32> = tok
        .encode(&cut, true, false)
        .unwrap()
        .iter()
        .map(|&t| t as i32)
        .collect();
    let mut oracle = OracleModel::load(&path, CTX, 2).unwrap();
    let theirs = oracle.perplexity(&tokens, CTX).unwrap();

    println!(
        "perplexity, SmolLM2-135M Q4_1, GPL-3, ctx {CTX}: tern {ours_ppl:.4} +/- {:.4} ({} chunks, {} tokens) | llama.cpp {:.4} +/- {:.4} ({} chunks, {} tokens) | ratio {:.5}",
        ours["error"].as_f64().unwrap(), ours["chunks"], ours["tokens"], theirs.ppl, theirs.err, theirs.chunks, theirs.tokens, ours_ppl / theirs.ppl
    );
    assert_eq!(ours["chunks"].as_u64().unwrap() as usize, theirs.chunks);
    assert_eq!(ours["tokens"].as_u64().unwrap() as usize, theirs.tokens);
    assert!((ours_ppl / theirs.ppl - 1.0).abs() < 0.01);
}
