//! The `tern` binary end to end: commands that work, and errors that are one clear line.

mod common;

use std::process::Output;

fn tern(args: &[&str]) -> Output {
    common::tern_command()
        .args(args)
        .output()
        .expect("tern runs")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(
        lines[0].contains(needle),
        "{err:?} should mention {needle:?}"
    );
}

#[test]
fn missing_model_is_a_clear_error() {
    let out = tern(&["run", "-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_one_line_error(&out, "model");
}

#[test]
fn truncated_model_is_a_clear_error() {
    let path = common::smollm2();
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = tern(&["run", "-m", cut.to_str().unwrap(), "-p", "hi"]);
    assert_one_line_error(&out, "cut.gguf");
}

#[test]
fn invalid_utf8_text_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.txt");
    std::fs::write(&f, b"hello \xff\xfe world").unwrap();
    let model = common::smollm2();
    let out = tern(&[
        "tokenize",
        "-m",
        model.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "UTF-8");
}

#[test]
fn tokenize_prints_ids_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "Hello world").unwrap();
    let model = common::smollm2();
    let out = tern(&[
        "tokenize",
        "-m",
        model.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<u32> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    // Hand-checked against the vocabulary: "Hello" and " world" are single tokens.
    assert_eq!(ids.len(), 2, "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn greedy_run_streams_text_and_stats() {
    let model = common::smollm2();
    let out = tern(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "-n",
        "12",
        "--temp",
        "0",
        "-t",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text}");
    let stats = String::from_utf8(out.stderr).unwrap();
    assert!(
        stats.contains("prompt:") && stats.contains("generated:"),
        "{stats}"
    );
}

/// The board's kernel family is a ceiling on what the process runs: a Pi 4 profile runs NEON
/// without dotprod on any aarch64 CPU (qemu's `max` has dotprod and i8mm) and the scalar
/// reference on x86-64, whose AVX2 it does not know.
#[test]
fn a_board_caps_the_kernels_the_process_runs() {
    if let Ok(k) = std::env::var("TERN_KERNELS") {
        println!("TERN_KERNELS={k} overrides every board: nothing to check");
        return;
    }
    let expected = if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "scalar"
    };
    let out = tern(&["boards", "--board", "rpi4"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 × Cortex-A72"), "{text}");
    let runs = text
        .lines()
        .find_map(|l| l.strip_prefix("runs"))
        .and_then(|l| l.split_whitespace().next());
    assert_eq!(runs, Some(expected), "{text}");

    let model = common::smollm2();
    let out = tern(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "Hi",
        "-n",
        "1",
        "--board",
        "rpi4",
    ]);
    let stats = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stats}");
    assert!(stats.contains(&format!("kernels: {expected}")), "{stats}");
}

#[test]
fn same_seed_same_text() {
    let model = common::smollm2();
    let run = |seed: &str| {
        let out = tern(&[
            "run",
            "-m",
            model.to_str().unwrap(),
            "-p",
            "Once upon a time",
            "-n",
            "16",
            "--temp",
            "0.9",
            "--seed",
            seed,
        ]);
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(run("7"), run("7"));
}

/// `tern bench --json` reports its first token's time and its peak resident memory while
/// decoding: the time within the process's life as seen from outside, the memory at least
/// the weights it read (mapped pages count as resident) and within the file, the KV cache and
/// a margin for the rest of the process.
#[test]
fn bench_json_reports_first_token_time_and_peak_memory() {
    let model = common::smollm2();
    let t0 = std::time::Instant::now();
    let out = tern(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "8",
        "-r",
        "1",
        "-t",
        "1",
        "--json",
    ]);
    let lifetime_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ttft = v["ttft_ms"].as_f64().unwrap();
    assert!(
        ttft > 0.0 && ttft < lifetime_ms,
        "{ttft} ms of {lifetime_ms} ms"
    );
    let rss = v["rss_kib"].as_u64().unwrap() * 1024;
    let file = v["file_bytes"].as_u64().unwrap();
    let kv = v["kv_bytes"].as_u64().unwrap();
    assert_eq!(file, std::fs::metadata(&model).unwrap().len());
    let weights = tern::model::Model::load(&model)
        .unwrap()
        .llama()
        .file()
        .tensor_data()
        .len() as u64;
    assert!(rss >= weights, "{rss} bytes resident, {weights} of weights");
    // Under qemu-user (the aarch64 runs) the figure includes the emulator's own memory.
    if cfg!(target_arch = "x86_64") {
        assert!(rss <= file + kv + (64 << 20), "{rss} bytes resident");
    }
}
