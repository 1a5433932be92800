//! Benchmarks of Tern: kernel throughput, the head-to-head against llama.cpp, and the long
//! experiments (the StreamingLLM perplexity tables, the unbounded-generation soak) that are
//! too long for the test command. Shared helpers for those programs live here.

pub mod bandwidth;

use std::path::PathBuf;
use std::process::Command;

use tern_kernels::GgmlType::{self, *};

/// Long public-domain prose for the streaming experiments: the Book of Genesis (King James
/// Version) from Debian's `bible-kjv` package, verse references removed. `scripts/setup.sh
/// bench` installs the package.
pub fn genesis() -> anyhow::Result<String> {
    kjv("Gen1:1-Gen50:26")
}

/// The whole King James Bible (about 4.4 MB of text, a million tokens and more), as
/// [`genesis`].
pub fn whole_bible() -> anyhow::Result<String> {
    kjv("Gen1:1-Rev22:21")
}

/// The verses `range` of the King James Version (`bible -f` syntax), references removed.
fn kjv(range: &str) -> anyhow::Result<String> {
    let out = Command::new("bible")
        .args(["-f", range])
        .env("COLUMNS", "100000")
        .output()
        .map_err(|e| anyhow::anyhow!("running `bible` (apt-get install bible-kjv): {e}"))?;
    anyhow::ensure!(out.status.success(), "`bible` failed");
    let text = String::from_utf8(out.stdout)?;
    let mut prose = String::with_capacity(text.len());
    for line in text.lines() {
        // "Ge1:1 In the beginning…": drop the reference (letters, digits and a colon).
        let verse = match line.split_once(' ') {
            Some((r, rest))
                if r.contains(':') && r.chars().all(|c| c.is_ascii_alphanumeric() || c == ':') =>
            {
                rest
            }
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

/// Mean of `nll` over consecutive bins of `bin` tokens, as (bin centre, mean).
pub fn binned(nll: &[f64], bin: usize) -> Vec<(f64, f64)> {
    nll.chunks(bin)
        .enumerate()
        .map(|(i, c)| {
            (
                ((i * bin) + c.len() / 2) as f64,
                c.iter().sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

/// Registers DejaVu Sans as the plots' "sans-serif" font (`fonts-dejavu-core`).
pub fn plot_font() -> anyhow::Result<()> {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| anyhow::anyhow!("DejaVuSans.ttf (apt-get install fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("the font cannot be read"))
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

/// The text after `--name` on the command line, or `default`.
pub fn arg_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Deterministic weights of `ty` for a `rows × cols` matrix, with finite `f16` scales: for
/// timing kernels (the values do not change the timing).
pub fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut w: Vec<u8> = (0..ty.bytes_for(n as u64).unwrap())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    // Where each block keeps its `f16` scales (and mins).
    let offsets: &[usize] = match ty {
        Q4_0 | Q5_0 | Q8_0 | F16 => &[0],
        Q4_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => &[],
    };
    if ty == F32 {
        for v in w.chunks_exact_mut(4) {
            v.copy_from_slice(&0.01f32.to_le_bytes());
        }
    }
    for blk in w.chunks_exact_mut(ty.block_bytes()) {
        for &o in offsets {
            blk[o..o + 2].copy_from_slice(&scale);
        }
    }
    w
}
