//! Tern against llama.cpp on the same GGUF files, the same machine and the same thread
//! counts, measured in one run, alternating the two, best of `--reps`: decode (tg: 128 tokens
//! after a 16-token prompt) and prefill (pp: a 512-token prompt), as llama-bench defines them;
//! then, in a fresh child process per engine, the time from process start to the first
//! generated token of a 16-token prompt and the peak resident memory while decoding. Also the
//! machine's streaming-read bandwidth, sampled between each row's decode runs (on 2 MiB
//! pages, as the weights' map is read), and each file's decode ceiling (bandwidth / weight
//! bytes read per token).
//!
//! Files: SmolLM2-135M in Q4_1 and in Q4_0 and Q8_0 made from it with llama.cpp's quantizer
//! (cached beside it), Gemma 3 270M, Qwen2.5-Coder-0.5B and 1.5B; on request only
//! (`--models qwen2.5-coder-1.5b-q5_k_m`), Qwen2.5-Coder-1.5B in Q5_K_M made from its Q4_K_M
//! file the same way (a file of Q5_K and Q6_K matrices: the other models' rows are not
//! multiples of 256 values, so the quantizer would give them Q5_1 instead).
//!
//! ```text
//! cargo run --release -p tern-benches --bin head-to-head -- \
//!     [--models smollm2-q4_1,smollm2-q4_0,smollm2-q8_0,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]
//!     [--threads 1,2] [--reps 3] [--prompt 512] [--gen 128] [--json]
//! ```
//! prints a markdown table (or one JSON object with `--json`) and writes docs/head-to-head.md.

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("the head-to-head needs the llama.cpp oracle, built for x86-64 hosts only");
}

#[cfg(target_arch = "x86_64")]
fn main() -> anyhow::Result<()> {
    h2h::main()
}

#[cfg(target_arch = "x86_64")]
mod h2h {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    use anyhow::{bail, Context, Result};
    use serde_json::json;
    use tern::cache::CacheConfig;
    use tern::model::Model;
    use tern::session::Session;
    use tern::speed::{bench_tokens, peak_rss_kib, time_generation};
    use tern_benches::bandwidth::StreamRead;
    use tern_oracle::llama::{quantize_model, OracleModel};
    use tern_oracle::sys;

    /// Every file the head-to-head knows, by the name `--models` takes.
    const FILES: [&str; 6] = [
        "smollm2-q4_1",
        "smollm2-q4_0",
        "smollm2-q8_0",
        "gemma3-270m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
    ];

    /// Files measured only when `--models` names them.
    const ON_REQUEST: [&str; 1] = ["qwen2.5-coder-1.5b-q5_k_m"];

    /// Tokens of the prompt whose first generated token is timed.
    const TTFT_PROMPT: usize = 16;

    /// One engine's figures on one file at one thread count.
    #[derive(Default, Clone, Copy)]
    struct Figures {
        decode: f64,
        prefill: f64,
        ttft_ms: f64,
        rss_kib: u64,
    }

    struct Row {
        model: String,
        file: PathBuf,
        threads: usize,
        tern: Figures,
        llama: Figures,
        /// Weight bytes read per generated token.
        weight_bytes: u64,
        /// Streaming-read GB/s at this row's thread count: the best of one sample after
        /// each of Tern's decode runs, so that it meets the same moments of a shared host.
        read_gbs: f64,
        kv_bytes: u64,
    }

    /// The file of a `--models` name: a catalog model, or a re-quantization made once with
    /// llama.cpp's quantizer and kept in the model cache.
    fn file_of(name: &str) -> Result<PathBuf> {
        let smollm2 = |ftype, tag: &str| {
            let made = format!("SmolLM2-135M-Instruct.{tag}.from-Q4_1.gguf");
            (tern_testkit::smollm2(), ftype, made)
        };
        let (src, ftype, made) = match name {
            "smollm2-q4_1" => return Ok(tern_testkit::smollm2()),
            "smollm2-q4_0" => smollm2(sys::LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_0"),
            "smollm2-q8_0" => smollm2(sys::LLAMA_FTYPE_MOSTLY_Q8_0, "Q8_0"),
            "qwen2.5-coder-1.5b-q5_k_m" => (
                tern_testkit::model("qwen2.5-coder-1.5b"),
                sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
                "qwen2.5-coder-1.5b-instruct.Q5_K_M.from-Q4_K_M.gguf".to_string(),
            ),
            other if FILES.contains(&other) => return Ok(tern_testkit::model(other)),
            other => bail!(
                "unknown model `{other}` (known: {}, {})",
                FILES.join(", "),
                ON_REQUEST.join(", ")
            ),
        };
        let dst = tern::catalog::cache_dir().join(made);
        if !dst.exists() {
            eprintln!("making {} with llama.cpp's quantizer…", dst.display());
            let tmp = dst.with_extension("part");
            quantize_model(&src, &tmp, ftype, 2)?;
            std::fs::rename(&tmp, &dst)?;
        }
        Ok(dst)
    }

    /// Bytes of weights one decode step reads: every matrix once; of a token embedding that
    /// is not also the output matrix, one row (counted as nothing).
    fn weight_bytes(model: &Model) -> u64 {
        let file = model.llama().file();
        let tied = file.tensor_info("output.weight").is_none();
        file.tensors()
            .iter()
            .filter(|t| tied || t.name != "token_embd.weight")
            .map(|t| t.bytes)
            .sum()
    }

    /// A comma-separated list option.
    fn list(name: &str, default: &str) -> Vec<String> {
        let args: Vec<String> = std::env::args().collect();
        let v = args
            .iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |s| s.as_str());
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(i) = args.iter().position(|a| a == "--child") {
            return child(&args[i + 1..]);
        }
        let reps = tern_benches::arg("--reps", 3).max(1);
        let (n_prompt, n_gen) = (
            tern_benches::arg("--prompt", 512),
            tern_benches::arg("--gen", 128),
        );
        let json_out = args.iter().any(|a| a == "--json");
        let models = list("--models", &FILES.join(","));
        let threads: Vec<usize> = list("--threads", "1,2")
            .iter()
            .map(|t| t.parse().context("--threads takes numbers"))
            .collect::<Result<_>>()?;
        let stream = StreamRead::new(512);

        let mut rows = Vec::new();
        for name in &models {
            let path = file_of(name)?;
            let model = Arc::new(Model::load(&path)?);
            let n_vocab = model.llama().config().n_vocab;
            let long = bench_tokens(n_vocab, n_prompt);
            let short = bench_tokens(n_vocab, TTFT_PROMPT);
            let ids = |t: &[u32]| t.iter().map(|&x| x as i32).collect::<Vec<i32>>();
            let (long_i, short_i) = (ids(&long), ids(&short));
            for &t in &threads {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
                let mut llama = OracleModel::load(&path, n_prompt + n_gen + 16, t)?;
                let (mut tern, mut peer) = (Figures::default(), Figures::default());
                let mut read_gbs = 0f64;
                // Warm both (page in the weights), then alternate; keep the best of each.
                pool.install(|| time_generation(&model, &short, 8))?;
                llama.time_generation(&short_i, 8)?;
                for _ in 0..reps {
                    let (_, d) = pool.install(|| time_generation(&model, &short, n_gen))?;
                    tern.decode = tern.decode.max(n_gen as f64 / d);
                    read_gbs = read_gbs.max(stream.gbs(&pool));
                    let (_, d) = llama.time_generation(&short_i, n_gen)?;
                    peer.decode = peer.decode.max(n_gen as f64 / d);
                    let (p, _) = pool.install(|| time_generation(&model, &long, 0))?;
                    tern.prefill = tern.prefill.max(n_prompt as f64 / p);
                    let (p, _) = llama.time_generation(&long_i, 0)?;
                    peer.prefill = peer.prefill.max(n_prompt as f64 / p);
                }
                drop(llama);
                // Start-up and memory: a fresh process per engine, alternating, best of reps.
                tern.ttft_ms = f64::INFINITY;
                peer.ttft_ms = f64::INFINITY;
                tern.rss_kib = u64::MAX;
                peer.rss_kib = u64::MAX;
                for _ in 0..reps {
                    for (engine, f) in [("tern", &mut tern), ("llama", &mut peer)] {
                        let (ms, kib) = run_child(engine, &path, t, n_gen)?;
                        f.ttft_ms = f.ttft_ms.min(ms);
                        f.rss_kib = f.rss_kib.min(kib);
                    }
                }
                let kv_bytes = Session::for_scoring(
                    model.clone(),
                    CacheConfig::dense(TTFT_PROMPT + n_gen + 1),
                )?
                .cache()
                .memory_bytes() as u64;
                let row = Row {
                    model: name.clone(),
                    file: path.clone(),
                    threads: t,
                    tern,
                    llama: peer,
                    weight_bytes: weight_bytes(&model),
                    read_gbs,
                    kv_bytes,
                };
                eprintln!(
                    "{name} t={t}: decode {:.1} vs {:.1}, prefill {:.1} vs {:.1}, first token \
                     {:.0} vs {:.0} ms, peak RSS {} vs {} MiB, read {read_gbs:.1} GB/s",
                    tern.decode,
                    peer.decode,
                    tern.prefill,
                    peer.prefill,
                    tern.ttft_ms,
                    peer.ttft_ms,
                    tern.rss_kib / 1024,
                    peer.rss_kib / 1024
                );
                rows.push(row);
            }
        }

        if json_out {
            let v = json!({
                "reps": reps, "prompt_tokens": n_prompt, "gen_tokens": n_gen,
                "rows": rows.iter().map(|r| json!({
                    "model": r.model, "file": r.file.display().to_string(), "threads": r.threads,
                    "weight_bytes": r.weight_bytes, "kv_bytes": r.kv_bytes,
                    "file_bytes": std::fs::metadata(&r.file).map(|m| m.len()).unwrap_or(0),
                    "read_gbs": r.read_gbs,
                    "ceiling_tps": r.read_gbs * 1e9 / r.weight_bytes as f64,
                    "tern": figures_json(&r.tern), "llama_cpp": figures_json(&r.llama),
                })).collect::<Vec<_>>(),
            });
            println!("{v}");
            return Ok(());
        }
        let md = markdown(&rows, reps, n_prompt, n_gen);
        let dir = tern_benches::docs_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("head-to-head.md"), &md)?;
        print!("{md}");
        Ok(())
    }

    fn figures_json(f: &Figures) -> serde_json::Value {
        json!({"decode_tps": f.decode, "prefill_tps": f.prefill, "ttft_ms": f.ttft_ms, "rss_kib": f.rss_kib})
    }

    fn markdown(rows: &[Row], reps: usize, n_prompt: usize, n_gen: usize) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut md = format!(
            "Tokens/s, best of {reps}, alternating Tern and llama.cpp (llama-cpp-sys-2 0.1.161, \
             built with -march=native) in one run. Decode (tg{n_gen}): {n_gen} tokens after a \
             {TTFT_PROMPT}-token prompt; prefill (pp{n_prompt}): a {n_prompt}-token prompt. First \
             token: from the start of a fresh process (`head-to-head --child`, one per engine) \
             to the first generated token of a {TTFT_PROMPT}-token prompt, page cache warm. Peak \
             RSS: that process's `VmHWM` after {n_gen} decoded tokens (mapped weight pages \
             count). Ceiling: streaming-read bandwidth at that thread count (read GB/s: 512 MiB on 2 \
             MiB pages, the best of samples taken between the row's decode runs) ÷ weight bytes \
             per token. Generated by `cargo run --release -p tern-benches --bin head-to-head`.\n\n\
             | model | threads | decode Tern | decode llama.cpp | ratio | % of ceiling (Tern / llama.cpp) | read GB/s | prefill Tern | prefill llama.cpp | ratio | first token ms (Tern / llama.cpp) | peak RSS MiB (Tern / llama.cpp) | file + KV MiB |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        );
        for r in rows {
            let ceiling = r.read_gbs * 1e9 / r.weight_bytes as f64;
            let file = std::fs::metadata(&r.file).map(|m| m.len()).unwrap_or(0);
            md.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | **{:.2}** | {:.0} % / {:.0} % | {:.1} | {:.1} | {:.1} | **{:.2}** | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} |\n",
                r.model,
                r.threads,
                r.tern.decode,
                r.llama.decode,
                r.tern.decode / r.llama.decode,
                100.0 * r.tern.decode / ceiling,
                100.0 * r.llama.decode / ceiling,
                r.read_gbs,
                r.tern.prefill,
                r.llama.prefill,
                r.tern.prefill / r.llama.prefill,
                r.tern.ttft_ms,
                r.llama.ttft_ms,
                r.tern.rss_kib as f64 / 1024.0,
                r.llama.rss_kib as f64 / 1024.0,
                mib(file + r.kv_bytes),
            ));
        }
        md
    }

    /// Runs `engine` (`tern` or `llama`) in a fresh process of this program: returns the
    /// milliseconds from its spawn to its first generated token, and its peak resident KiB.
    fn run_child(engine: &str, path: &Path, threads: usize, n_gen: usize) -> Result<(f64, u64)> {
        let t0 = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--child", engine])
            .arg(path)
            .args([threads.to_string(), n_gen.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let first = lines.next().context("child said nothing")??;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(first == "first", "child said {first:?}");
        let kib: u64 = lines
            .next()
            .context("child gave no peak RSS")??
            .trim()
            .parse()?;
        anyhow::ensure!(child.wait()?.success(), "{engine} child failed");
        Ok((ms, kib))
    }

    /// The child: `--child ENGINE FILE THREADS N_GEN`. Loads the file, feeds a 16-token
    /// prompt, says `first` when the first token is generated, decodes `N_GEN` tokens, and
    /// prints its peak resident KiB.
    fn child(args: &[String]) -> Result<()> {
        let [engine, path, threads, n_gen] = args else {
            bail!("--child ENGINE FILE THREADS N_GEN");
        };
        let (threads, n_gen): (usize, usize) = (threads.parse()?, n_gen.parse()?);
        let say = |s: &str| -> Result<()> {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{s}")?;
            out.flush()?;
            Ok(())
        };
        match engine.as_str() {
            "tern" => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?;
                pool.install(|| -> Result<()> {
                    let model = Arc::new(Model::load(path)?);
                    let short = bench_tokens(model.llama().config().n_vocab, TTFT_PROMPT);
                    let cache = CacheConfig::dense(TTFT_PROMPT + n_gen + 1);
                    let mut s = Session::for_scoring(model, cache)?;
                    s.feed(&short)?;
                    let mut id = s.sample();
                    say("first")?;
                    for _ in 0..n_gen {
                        s.feed(&[id])?;
                        id = s.sample();
                    }
                    Ok(())
                })?;
            }
            "llama" => {
                let mut m = OracleModel::load(path, TTFT_PROMPT + n_gen + 16, threads)?;
                let short: Vec<i32> = bench_tokens(m.n_vocab(), TTFT_PROMPT)
                    .iter()
                    .map(|&x| x as i32)
                    .collect();
                m.time_generation(&short, 0)?;
                say("first")?;
                m.time_generation(&short, n_gen)?;
            }
            other => bail!("unknown engine {other}"),
        }
        say(&peak_rss_kib().context("no VmHWM")?.to_string())
    }
}
