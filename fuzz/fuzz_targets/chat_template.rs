//! Chat templates from model files render fuzzed templates over fuzzed messages within their
//! fuel and output limits: a string or an error, never a hang, a panic or an abort. The
//! input is split at NUL bytes: the template, then alternating roles and contents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::chat::{ChatTemplate, Message};

/// SmolLM2's chat template (ChatML), less its default system message.
const SMOLLM2: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// With `TERN_FUZZ_SEED_TO` set (scripts/fuzz.sh sets it until the corpus has it), writes
/// there, as `seed-template`, a real template over a system, a user and an assistant
/// message: loops, conditions, indexing and concatenation to mutate from.
fn seed() {
    let Some(dir) = std::env::var_os("TERN_FUZZ_SEED_TO").filter(|d| !d.is_empty()) else {
        return;
    };
    let input = [
        SMOLLM2,
        "system",
        "You are brief.",
        "user",
        "Hi!",
        "assistant",
        "Hello.",
    ];
    let to = std::path::Path::new(&dir).join("seed-template");
    std::fs::write(to, input.join("\0")).expect("the seed is written");
}

fuzz_target!(init: seed(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<Message> = rest
        .chunks(2)
        .map(|c| Message::new(c[0], c.get(1).copied().unwrap_or_default()))
        .collect();
    let t = ChatTemplate::Jinja {
        source,
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    };
    let _ = t.render(&messages, true);
    // The real template over fuzzed messages always renders.
    let real = ChatTemplate::Jinja {
        source: SMOLLM2.into(),
        bos_token: String::new(),
        eos_token: String::new(),
    };
    real.render(&messages, true)
        .expect("the real template renders any messages");
});
