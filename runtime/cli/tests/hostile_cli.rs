//! The `tern` binary under hostile use (issue 12): arguments out of range, a closed stdout,
//! and errors that are one clean line.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tern::gguf::{GgufWriter, Value};

/// Runs `tern` with `stdin` and kills it after `limit`: a hang is a failure, not a stuck test.
fn tern_with(args: &[&str], stdin: &str, limit: Duration) -> Output {
    let mut child = common::tern_command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tern runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            panic!("tern {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Defect 9: `--threads 100000` started thousands of threads and never answered.
#[test]
fn threads_beyond_the_cpus_are_clamped_with_a_note() {
    let model = common::smollm2();
    let args = [
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "Hello",
        "-n",
        "2",
        "--threads",
        "100000",
    ];
    let out = tern_with(&args, "", Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: 100000 threads asked for: lowered to the"),
        "{err}"
    );
}

/// Defect 10: `tern tokenize | head` panicked on the broken pipe (exit 101).
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    // About 400 KB of ids: far more than a pipe buffers.
    std::fs::write(&f, "one two three four five six seven ".repeat(20_000)).unwrap();
    let model = common::smollm2();
    let mut child = common::tern_command()
        .args(["tokenize", "-m", model.to_str().unwrap()])
        .arg("-f")
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before tern writes
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// Defect 12: errors repeated their cause (`x: x: No such…: No such…`) and printed raw
/// control bytes from file metadata.
#[test]
fn errors_state_each_fact_once_and_escape_file_text() {
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    let out = tern_with(
        &["chat", "-m", m, "--temp", "0"],
        "/load /nonexistent/s.tern\n",
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: "), "{err}");
    assert_eq!(line.matches("/nonexistent/s.tern").count(), 1, "{line}");
    assert_eq!(line.matches("No such file").count(), 1, "{line}");

    // A device is refused by name, once.
    let out = tern_with(
        &["chat", "-m", m, "--temp", "0"],
        "/load /dev/null\n",
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert_eq!(line, "error: /dev/null: not a regular file", "{err}");

    // Metadata keys with a terminal escape and a newline are shown escaped.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("evil.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("evil\u{1b}[2J\nkey", Value::String("v\u{7}".into()));
    w.write_file(&f).unwrap();
    let out = tern_with(
        &["inspect", f.to_str().unwrap()],
        "",
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("evil\\u{1b}[2J\\nkey"), "{text}");
}

/// Runs `tern tokenize` on `text` under an address-space limit of `limit_mib` MiB (the model's
/// map included) and returns how many ids it printed; `None` if it failed.
#[cfg(target_arch = "x86_64")]
fn tokenize_within(text: &str, limit_mib: u64) -> Option<usize> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, text).unwrap();
    let model = common::smollm2();
    let script = format!(
        "ulimit -v {} && exec \"$0\" tokenize -m \"$1\" -f \"$2\"",
        limit_mib * 1024
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_tern")])
        .arg(&model)
        .arg(&f)
        .output()
        .unwrap();
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
    })
}

/// Defect 7: 5 MB of digits took 1.5 GB resident (the whole text was pre-tokenized into
/// ~300-byte pieces before any merging). Piece by piece it fits in 400 MiB of address space,
/// model map included, and gives one id per digit (the "smollm" pre-tokenizer isolates each
/// digit). x86-64 only: `ulimit -v` would bound qemu-user itself under the cross runner.
#[cfg(target_arch = "x86_64")]
#[test]
fn long_runs_tokenize_in_bounded_memory() {
    let digits = "1234567890".repeat(500_000);
    assert_eq!(tokenize_within(&digits, 400), Some(digits.len()));
}
