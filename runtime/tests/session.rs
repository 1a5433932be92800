//! Sessions: multi-turn chat that prefills only what is new, pinned system prompts, and save
//! and restore that continue exactly.

mod common;

use std::sync::Arc;

use tern::cache::CacheConfig;
use tern::model::Model;
use tern::sampler::SamplerConfig;
use tern::session::{Session, SessionError, SessionOptions};

fn model() -> Arc<Model> {
    Arc::new(Model::load(common::smollm2()).unwrap())
}

fn opts(temp: f32, system: Option<&str>) -> SessionOptions {
    SessionOptions {
        cache: CacheConfig {
            sinks: 4,
            window: 124,
            ..CacheConfig::default()
        },
        sampler: SamplerConfig {
            temperature: temp,
            seed: 11,
            ..SamplerConfig::default()
        },
        system: system.map(str::to_string),
        max_reply: 24,
        ..SessionOptions::default()
    }
}

#[test]
fn each_turn_prefills_only_its_own_tokens() {
    let m = model();
    let mut s = Session::new(m.clone(), opts(0.0, None)).unwrap();
    s.chat("What is the capital of France?", |_| true).unwrap();
    let before = s.stats();
    let second = "And of Italy?";
    s.chat(second, |_| true).unwrap();
    let after = s.stats();
    let fed = after.prompt_tokens - before.prompt_tokens;
    // The new user turn plus the template's markers: far fewer than the whole conversation.
    let whole = m
        .tokenizer()
        .encode(
            &m.template()
                .render(
                    &[
                        tern::chat::Message::new("user", "What is the capital of France?"),
                        tern::chat::Message::new("assistant", "The capital of France is Paris."),
                        tern::chat::Message::new("user", second),
                    ],
                    true,
                )
                .unwrap(),
            true,
            true,
        )
        .unwrap()
        .len() as u64;
    println!("second turn fed {fed} prompt tokens (whole conversation: {whole})");
    assert!(fed <= 16, "fed {fed}");
    assert!(fed < whole / 2);
}

#[test]
fn pinned_system_prompt_becomes_the_sinks() {
    let m = model();
    let system = "You are Tern, a terse assistant. Answer in one sentence.";
    let s = Session::new(m.clone(), opts(0.0, Some(system))).unwrap();
    let rendered = m
        .template()
        .render(&[tern::chat::Message::new("system", system)], false)
        .unwrap();
    let n = m.tokenizer().encode(&rendered, true, true).unwrap().len();
    assert_eq!(s.cache().config().sinks, n);
    assert_eq!(s.cache().len(), n);
    let unpinned = Session::new(
        m,
        SessionOptions {
            pin_system: false,
            ..opts(0.0, Some(system))
        },
    )
    .unwrap();
    assert_eq!(unpinned.cache().config().sinks, 4);
}

#[test]
fn restore_continues_exactly() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chat.tern");
    // Sampling (not greedy), so the random state must be restored too; a small window, so
    // eviction has happened before the save.
    let small = SessionOptions {
        cache: CacheConfig {
            sinks: 4,
            window: 48,
            ..CacheConfig::default()
        },
        ..opts(0.9, Some("You are a poet."))
    };
    let mut a = Session::new(m.clone(), small).unwrap();
    a.chat("Write about the sea.", |_| true).unwrap();
    a.chat("Now about the wind.", |_| true).unwrap();
    a.chat("And the stars?", |_| true).unwrap();
    assert!(
        a.stats().tokens > a.cache().capacity() as u64,
        "eviction happened"
    );
    a.save(&file).unwrap();
    let x1 = a.chat("One more, about rain.", |_| true).unwrap();
    let x2 = a.chat("Thank you.", |_| true).unwrap();

    let mut b = Session::restore(m.clone(), &file).unwrap();
    let y1 = b.chat("One more, about rain.", |_| true).unwrap();
    let y2 = b.chat("Thank you.", |_| true).unwrap();
    assert_eq!((x1, x2), (y1, y2));
}

#[test]
fn bad_session_files_are_clear_errors() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.tern");
    let mut s = Session::new(m.clone(), opts(0.0, None)).unwrap();
    s.chat("Hi", |_| true).unwrap();
    s.save(&file).unwrap();
    let good = std::fs::read(&file).unwrap();

    let expect = |bytes: &[u8], needle: &str| {
        let f = dir.path().join("bad.tern");
        std::fs::write(&f, bytes).unwrap();
        let err = match Session::restore(m.clone(), &f) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("restored a bad file ({needle})"),
        };
        assert!(err.contains(needle), "{err:?} should say {needle:?}");
    };
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    expect(&flipped, "corrupt");
    expect(&good[..good.len() - 100], "corrupt");
    expect(b"not a session at all", "not a Tern session");
    let mut v2 = good.clone();
    v2[8] = 99;
    expect(&v2, "version 99");
    assert!(matches!(
        Session::restore(m.clone(), dir.path().join("missing.tern")),
        Err(SessionError::Snapshot(_))
    ));

    // Another model: the same file with one metadata byte changed.
    let model_bytes = std::fs::read(common::smollm2()).unwrap();
    let name_at = model_bytes
        .windows(7)
        .position(|w| w == b"Smollm2")
        .expect("general.name in the header");
    let mut other = model_bytes;
    other[name_at] = b'T';
    let other_path = dir.path().join("other.gguf");
    std::fs::write(&other_path, other).unwrap();
    let other_model = Arc::new(Model::load(&other_path).unwrap());
    let err = Session::restore(other_model, &file)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn a_failed_save_keeps_the_previous_file() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keep.tern");
    let mut s = Session::new(m.clone(), opts(0.0, None)).unwrap();
    s.chat("Hi", |_| true).unwrap();
    s.save(&file).unwrap();
    let before = std::fs::read(&file).unwrap();
    // Block the temporary file's name so the next save fails before the rename.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::create_dir(&tmp).unwrap();
    s.chat("Tell me more.", |_| true).unwrap();
    assert!(s.save(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(Session::restore(m, &file).is_ok());
}

#[test]
fn cancel_stops_generation_and_keeps_the_session() {
    let m = model();
    let mut s = Session::new(m, opts(0.0, None)).unwrap();
    let mut pieces = 0;
    let r = s
        .chat("Count from one to fifty.", |_| {
            pieces += 1;
            pieces < 3
        })
        .unwrap();
    assert_eq!(r.stop, tern::session::StopReason::Cancelled);
    assert!(r.tokens <= 6, "{} tokens", r.tokens);
    // The flag works from another thread, and the session goes on afterwards.
    let flag = s.cancel_flag();
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let r2 = s.chat("Hello?", |_| true);
    assert!(matches!(r2, Err(SessionError::Cancelled)) || r2.unwrap().tokens <= 1);
    let r3 = s.chat("What is two plus two?", |_| true).unwrap();
    assert!(r3.tokens > 0);
}

#[test]
fn cancel_from_another_thread_stops_a_long_prefill() {
    let m = model();
    let mut s = Session::new(m, opts(0.0, None)).unwrap();
    let flag = s.cancel_flag();
    let text = common::natural_text(); // ~7 700 tokens: a minute of prefill here
    let raiser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(400));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let t0 = std::time::Instant::now();
    let r = s.feed_text(&text);
    let took = t0.elapsed();
    raiser.join().unwrap();
    assert!(matches!(r, Err(SessionError::Cancelled)), "{r:?}");
    println!(
        "prefill cancelled after {took:?}, {} tokens fed",
        s.cache().tokens_seen()
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // Only whole batches entered the cache: the interrupted one was undone.
    assert_eq!(s.cache().tokens_seen() % 64, 0);
    assert!(s.chat("Hello!", |_| true).unwrap().tokens > 0);
}

/// Tokens are given out before the pass that enters them in the cache (the first token waits
/// for the prompt only); a cancel raised meanwhile still leaves every token given out in the
/// cache, with the logits after it: the next token is that of a session fed the same tokens.
#[test]
fn a_token_given_out_enters_the_cache_even_when_cancelled_during_its_pass() {
    let m = model();
    let prompt = m
        .tokenizer()
        .encode("The capital of France is", true, false)
        .unwrap();
    let mut s = Session::new(m.clone(), opts(0.0, None)).unwrap();
    s.feed(&prompt).unwrap();
    let before = s.stats().tokens;
    let flag = s.cancel_flag();
    let mut given = Vec::new();
    let (n, cancelled) = s
        .produce(10, |id| {
            given.push(id);
            if given.len() == 2 {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            true
        })
        .unwrap();
    assert_eq!((n, cancelled), (2, true));
    assert_eq!(s.stats().tokens, before + 2);
    assert!(s.history().ends_with(&given));

    let mut fresh = Session::new(m, opts(0.0, None)).unwrap();
    fresh.feed(&prompt).unwrap();
    fresh.feed(&given).unwrap();
    assert_eq!(s.sample(), fresh.sample());
}
