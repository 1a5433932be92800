//! Benchmarks of Tern: kernel throughput, the head-to-head against llama.cpp, and the long
//! experiments (the StreamingLLM perplexity tables, the unbounded-generation soak) that are
//! too long for the test command. Shared helpers for those programs live here.

use std::path::PathBuf;
use std::process::Command;

/// Long public-domain prose for the streaming experiments: the Book of Genesis (King James
/// Version) from Debian's `bible-kjv` package, verse references removed. `scripts/setup.sh
/// bench` installs the package.
pub fn genesis() -> anyhow::Result<String> {
    let out = Command::new("bible")
        .args(["-f", "Gen1:1-Gen50:26"])
        .env("COLUMNS", "100000")
        .output()
        .map_err(|e| anyhow::anyhow!("running `bible` (apt-get install bible-kjv): {e}"))?;
    anyhow::ensure!(out.status.success(), "`bible` failed");
    let text = String::from_utf8(out.stdout)?;
    let mut prose = String::with_capacity(text.len());
    for line in text.lines() {
        // "Ge1:1 In the beginning…": drop the reference.
        let verse = match line.split_once(' ') {
            Some((r, rest)) if r.starts_with("Ge") && r.contains(':') => rest,
            _ => line,
        };
        let verse = verse.trim();
        if !verse.is_empty() {
            prose.push_str(verse);
            prose.push(' ');
        }
    }
    Ok(prose)
}

/// Resident memory of this process, in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> Option<u64> {
    rss_kib_of("self")
}

/// Resident memory of process `pid` (a number, or `self`), in KiB.
pub fn rss_kib_of(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Where the experiments write their results: `docs/` at the workspace root.
pub fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// CPU seconds (user + system) used by this process so far, from `/proc/self/stat`.
pub fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The number after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
