//! A 200-turn scripted conversation with Gemma 3 270M past 30 000 tokens, through `tern chat`
//! (stdin, one message per line) and through the C ABI (`ffi/examples/long_chat.c`), each
//! with the board's default cache on the global layers (4 + 2044 on the x86-64 profile, 4 +
//! 1020 on the Pi 4's) and a ring of 512 on the local ones.
//! Each message is a passage of Genesis and a question; replies are capped at 40 tokens.
//! Every turn must succeed; the resident memory of each is sampled as it runs.
//!
//! `cargo build --release -p tern-cli -p tern-ffi && cargo run --release -p tern-benches --bin
//! gemma-chat [-- --turns 200 --reply 40]` (needs a C compiler; prints what it saw).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

const GEMMA: &str = "gemma3-270m";
const MIN_TOKENS: u64 = 30_000;

fn main() -> Result<()> {
    let turns = tern_benches::arg("--turns", 200);
    let reply = tern_benches::arg("--reply", 40);
    let model = tern_testkit::model(GEMMA);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release");
    let text = tern_benches::genesis()?;
    let dir = std::env::temp_dir().join(format!("tern-gemma-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let text_file = dir.join("genesis.txt");
    std::fs::write(&text_file, &text)?;

    // The CLI: every message on one line, `/stats` after each.
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut input = String::new();
    let mut at = 0;
    for _ in 0..turns {
        let mut passage = String::new();
        while passage.len() < 600 {
            passage.push_str(words[at % words.len()]);
            passage.push(' ');
            at += 1;
        }
        input.push_str(&format!(
            "Here is a passage: {passage}What happens in it?\n/stats\n"
        ));
    }
    input.push_str("/quit\n");
    let t0 = Instant::now();
    let mut child = Command::new(release.join("tern"))
        .args(["chat", "-m"])
        .arg(&model)
        .args(["-n", &reply.to_string(), "--seed", "7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting target/release/tern (cargo build --release -p tern-cli)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let pid = child.id().to_string();
    let rss = std::thread::spawn(move || sample_rss(&pid));
    let out = child.wait_with_output()?;
    writer.join().expect("writer").ok();
    let rss = rss.join().expect("sampler");
    let err = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = err.lines().find(|l| l.starts_with("error")) {
        bail!("tern chat: {line}");
    }
    ensure!(out.status.success(), "tern chat exited with {}", out.status);
    let stats: Vec<u64> = err
        .lines()
        .filter_map(|l| l.strip_prefix("tokens so far:"))
        .filter_map(|l| l.split('|').next()?.trim().parse().ok())
        .collect();
    ensure!(
        stats.len() == turns,
        "{} stats lines for {turns} turns",
        stats.len()
    );
    let tokens = *stats.last().unwrap_or(&0);
    let cache = err
        .lines()
        .rev()
        .find(|l| l.starts_with("tokens so far:"))
        .and_then(|l| l.split('|').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    println!(
        "tern chat -m {GEMMA}: {turns} turns, {tokens} tokens, {cache}, {:.0} s; RSS {}",
        t0.elapsed().as_secs_f64(),
        describe(&rss)
    );
    ensure!(tokens > MIN_TOKENS, "only {tokens} tokens");

    // The C ABI.
    let exe = dir.join("long_chat");
    let cc = Command::new("cc")
        .arg(root.join("ffi/examples/long_chat.c"))
        .arg("-I")
        .arg(root.join("ffi/include"))
        .arg("-L")
        .arg(&release)
        .arg("-ltern")
        .arg(format!("-Wl,-rpath,{}", release.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .context("cc (build libtern first: cargo build --release -p tern-ffi)")?;
    ensure!(cc.success(), "compiling long_chat.c failed");
    let t0 = Instant::now();
    let status = Command::new(&exe)
        .arg(&model)
        .arg(&text_file)
        .args([turns.to_string(), reply.to_string(), MIN_TOKENS.to_string()])
        .status()?;
    ensure!(status.success(), "long_chat (C ABI) failed: {status}");
    println!("C ABI run: {:.0} s", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `VmRSS` of process `pid` every half second until it exits.
fn sample_rss(pid: &str) -> Vec<u64> {
    let mut v = Vec::new();
    while let Some(kib) = tern_benches::rss_kib_of(pid) {
        v.push(kib);
        std::thread::sleep(Duration::from_millis(500));
    }
    v
}

/// Resident memory after the first tenth of the run, and its largest value after.
fn describe(rss: &[u64]) -> String {
    let skip = rss.len() / 10;
    match (rss.get(skip), rss[skip..].iter().max()) {
        (Some(a), Some(b)) => format!("{a} KiB after the first tenth of the run, at most {b} KiB"),
        _ => "not sampled".into(),
    }
}
