//! A load test of `tern serve` on loopback (issue 15), bounded in time and count.
//!
//! 1. 32 concurrent clients send 200 streamed chat requests in all: errors, first-token
//!    latency p50/p99, total generated tokens/s.
//! 2. 200 conversations of two turns against `--max-sessions 8`: the server's resident
//!    memory sampled as they arrive (it must stay flat), and every conversation's second
//!    turn compared with the same conversation on a server that never evicts (it must be
//!    identical: evicted conversations resume exactly).
//!
//! `cargo build --release -p tern-cli && cargo run --release -p tern-benches --bin serve-load`
//! (SmolLM2-135M; `-- --clients N --requests N --conversations N` to change the counts).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    /// Gracefully: a killed server leaves its temporary session files behind.
    fn drop(&mut self) {
        tern_testkit::stop_gracefully(&mut self.child);
    }
}

fn start(args: &[&str]) -> Result<Server> {
    let exe = std::env::current_exe()?;
    let tern = exe.parent().unwrap().join("tern");
    let model = tern_testkit::smollm2();
    let mut child = Command::new(&tern)
        .arg("serve")
        .arg("-m")
        .arg(&model)
        .args(["--port", "0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p tern-cli)",
                tern.display()
            )
        })?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut base = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep draining the request log so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        base: base.context("the server printed no address")?,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// One streamed chat: (seconds to the first content, completion tokens).
fn streamed(agent: &ureq::Agent, base: &str, i: usize) -> Result<(f64, u64)> {
    let body = json!({
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": format!("Write one sentence about the number {i}.")}],
        "max_tokens": 32, "temperature": 0.7, "seed": i,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let mut resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .content_type("application/json")
        .send(body.to_string())?;
    if resp.status() != 200 {
        bail!("HTTP {}", resp.status());
    }
    let mut first = None;
    let mut tokens = 0;
    let mut done = false;
    let reader = BufReader::new(resp.body_mut().as_reader());
    for line in reader.lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)?;
        if v.get("error").is_some() {
            bail!("error event: {v}");
        }
        if first.is_none() && v["choices"][0]["delta"]["content"].is_string() {
            first = Some(t0.elapsed().as_secs_f64());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
    }
    if !done {
        bail!("the stream ended without [DONE]");
    }
    Ok((first.unwrap_or(t0.elapsed().as_secs_f64()), tokens))
}

fn chat(agent: &ureq::Agent, base: &str, messages: &[Value]) -> Result<Value> {
    let body = json!({"model": "smollm2-135m", "messages": messages, "max_tokens": 16,
                      "temperature": 0});
    let mut resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .content_type("application/json")
        .send(body.to_string())?;
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text)?;
    if resp.status() != 200 {
        bail!("HTTP {}: {text}", resp.status());
    }
    Ok(serde_json::from_str(&text)?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Two turns of `n` conversations; returns each conversation's second reply.
fn conversations(server: &Server, n: usize, rss: &mut Vec<u64>) -> Result<Vec<String>> {
    let a = agent();
    let history = |c: usize| {
        vec![
            json!({"role": "system", "content": format!("You are assistant number {c}.")}),
            json!({"role": "user", "content": format!("Say hello to visitor {c}.")}),
        ]
    };
    let mut firsts = Vec::with_capacity(n);
    for c in 0..n {
        let v = chat(&a, &server.base, &history(c))?;
        firsts.push(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if c % 25 == 24 {
            rss.push(rss_kib(server.child.id()));
        }
    }
    let mut seconds = Vec::with_capacity(n);
    for (c, first) in firsts.iter().enumerate() {
        let mut h = history(c);
        h.push(json!({"role": "assistant", "content": first}));
        h.push(json!({"role": "user", "content": "And what is your number?"}));
        let v = chat(&a, &server.base, &h)?;
        if v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() == Some(0) {
            bail!(
                "conversation {c} was not continued from its session: {}",
                v["usage"]
            );
        }
        seconds.push(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if c % 25 == 24 {
            rss.push(rss_kib(server.child.id()));
        }
    }
    Ok(seconds)
}

fn main() -> Result<()> {
    let clients = arg("--clients", 32);
    let requests = arg("--requests", 200);
    let n_conv = arg("--conversations", 200);

    // 1. Concurrent streamed requests.
    let server = start(&["--queue", "256"])?;
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, results, errors, base) = (
                next.clone(),
                results.clone(),
                errors.clone(),
                server.base.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    match streamed(&a, &base, i) {
                        Ok(r) => results.lock().unwrap().push(r),
                        Err(e) => errors.lock().unwrap().push(format!("request {i}: {e}")),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    let results = results.lock().unwrap();
    let errors = errors.lock().unwrap();
    let mut ttft: Vec<f64> = results.iter().map(|r| r.0).collect();
    ttft.sort_by(f64::total_cmp);
    let tokens: u64 = results.iter().map(|r| r.1).sum();
    println!(
        "{clients} clients, {requests} streamed requests: {} ok, {} errors, {wall:.1} s; \
         first token p50 {:.2} s, p99 {:.2} s; {tokens} tokens generated, {:.1} tokens/s in all",
        results.len(),
        errors.len(),
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.99),
        tokens as f64 / wall
    );
    for e in errors.iter().take(5) {
        println!("  {e}");
    }
    drop(server);

    // 2. Many conversations, few sessions in memory.
    let evicting = start(&["--max-sessions", "8", "--parallel", "1"])?;
    let mut rss = vec![rss_kib(evicting.child.id())];
    let t1 = Instant::now();
    let resumed = conversations(&evicting, n_conv, &mut rss)?;
    let health: Value = {
        let mut r = agent().get(&format!("{}/health", evicting.base)).call()?;
        serde_json::from_str(&r.body_mut().read_to_string()?)?
    };
    println!(
        "{n_conv} conversations x 2 turns, --max-sessions 8: {:.1} s; sessions {}; resident \
         memory (MiB) every 25 requests: {:?}",
        t1.elapsed().as_secs_f64(),
        health["sessions"],
        rss.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    drop(evicting);
    let keeping = start(&[
        "--max-sessions",
        &(n_conv + 1).to_string(),
        "--parallel",
        "1",
    ])?;
    let mut rss2 = vec![rss_kib(keeping.child.id())];
    let truth = conversations(&keeping, n_conv, &mut rss2)?;
    println!(
        "the same on a server that keeps every session in memory: resident memory (MiB) {:?}",
        rss2.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    let differ = (0..n_conv).filter(|&c| resumed[c] != truth[c]).count();
    println!("second replies differing between the two servers: {differ} of {n_conv}");
    if !errors.is_empty() || differ > 0 {
        bail!("the load test failed");
    }
    Ok(())
}
