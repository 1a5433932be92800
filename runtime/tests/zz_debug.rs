#![cfg(target_arch = "x86_64")]
mod common;
use tern::cache::{CacheConfig, KvType};
use tern::gguf::GgufFile;
use tern::model::Llama;
use tern::session::{Session, DEFAULT_BATCH};
use tern::tokenizer::Tokenizer;
use tern_oracle::llama::OracleModel;

#[test]
fn debug() {
    let path = common::smollm2();
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Llama::load(file).unwrap();
    let mut tokens = tok.encode(&common::natural_text(), true, false).unwrap();
    tokens.truncate(64);
    let nv = model.config().n_vocab;
    let mut oracle = OracleModel::load(&path, 64, 2).unwrap();
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let theirs = oracle.logits_for(&ids).unwrap();
    for kv in [KvType::F32, KvType::F16] {
        let mut s = Session::new(&model, CacheConfig { kv_type: kv, ..CacheConfig::dense(64) }).unwrap();
        let ours = s.feed_all_logits(&tokens[..DEFAULT_BATCH]).unwrap().to_vec();
        for p in [0usize, 1, 2, 5, 10, 30, 63] {
            let a = &ours[p * nv..(p + 1) * nv];
            let b = &theirs[p];
            let m = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            println!("{kv:?} pos {p}: max |d| {m:.4}  ours[0..3] {:?} theirs {:?}", &a[..3], &b[..3]);
        }
    }
}
