//! SmolLM2's tokenizer on any text: encoding never fails or panics, and decoding gives the
//! text back byte for byte (with and without special-token parsing).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tern::gguf::GgufFile;
use tern::tokenizer::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let g = GgufFile::open(tern_testkit::smollm2()).expect("the model opens");
        Tokenizer::from_gguf(&g).expect("its tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tok = tokenizer();
    for parse_special in [false, true] {
        let ids = tok
            .encode(text, false, parse_special)
            .expect("any text encodes");
        assert_eq!(
            tok.decode(&ids),
            text,
            "round trip, parse_special {parse_special}"
        );
    }
});
