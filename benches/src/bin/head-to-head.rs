//! Tern against llama.cpp on the same GGUF files, the same machine and the same thread
//! counts, measured in one run, alternating the two: decode (128 tokens after a 16-token
//! prompt) and prefill (a 512-token prompt), for SmolLM2-135M in Q4_1 and in Q4_0 and Q8_0
//! made from it with llama.cpp's quantizer. Also the machine's streaming-read bandwidth and
//! the decode ceiling it implies.
//!
//! `cargo run --release -p tern-benches --bin head-to-head [-- --reps 3]`
//! writes docs/head-to-head.md and prints the table.

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
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Instant;

    use anyhow::Result;
    use tern::model::Model;
    use tern::speed::{bench_tokens, time_generation};
    use tern_oracle::llama::{quantize_model, OracleModel};
    use tern_oracle::sys;

    struct Cell {
        model: String,
        threads: usize,
        tern_decode: f64,
        llama_decode: f64,
        tern_prefill: f64,
        llama_prefill: f64,
    }

    /// GB/s of a plain streaming read of a buffer much larger than the caches (best of 5).
    fn read_bandwidth() -> f64 {
        let words = 64 << 20; // 512 MiB of u64
        let buf: Vec<u64> = (0..words as u64).collect();
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t = Instant::now();
            let s: u64 = buf.iter().fold(0u64, |a, &b| a.wrapping_add(b));
            std::hint::black_box(s);
            best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    }

    fn derived(src: &Path, name: &str, ftype: u32) -> Result<PathBuf> {
        let dst =
            tern::catalog::cache_dir().join(format!("SmolLM2-135M-Instruct.{name}.from-Q4_1.gguf"));
        if !dst.exists() {
            eprintln!("making {} with llama.cpp's quantizer…", dst.display());
            let tmp = dst.with_extension("part");
            quantize_model(src, &tmp, ftype, 2)?;
            std::fs::rename(&tmp, &dst)?;
        }
        Ok(dst)
    }

    pub fn main() -> Result<()> {
        let reps = tern_benches::arg("--reps", 3);
        let (n_prompt, n_gen) = (
            tern_benches::arg("--prompt", 512),
            tern_benches::arg("--gen", 128),
        );
        let q4_1 = tern_testkit::smollm2();
        let files = [
            ("Q4_1", q4_1.clone()),
            (
                "Q4_0",
                derived(&q4_1, "Q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0)?,
            ),
            (
                "Q8_0",
                derived(&q4_1, "Q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0)?,
            ),
        ];
        let bw = read_bandwidth();
        let mut cells = Vec::new();
        let mut ceilings = Vec::new();
        for (name, path) in &files {
            let model = Arc::new(Model::load(path)?);
            let n_vocab = model.llama().config().n_vocab;
            let weights = model.llama().file().tensor_data().len() as f64;
            ceilings.push((name.to_string(), weights, bw * 1e9 / weights));
            let long = bench_tokens(n_vocab, n_prompt);
            let short = bench_tokens(n_vocab, 16);
            let ids = |t: &[u32]| t.iter().map(|&x| x as i32).collect::<Vec<i32>>();
            let (long_i, short_i) = (ids(&long), ids(&short));
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?;
                let mut llama = OracleModel::load(path, n_prompt + n_gen + 16, threads)?;
                let mut c = Cell {
                    model: name.to_string(),
                    threads,
                    tern_decode: 0.0,
                    llama_decode: 0.0,
                    tern_prefill: 0.0,
                    llama_prefill: 0.0,
                };
                // Warm both (page in the weights), then alternate; keep the best of each.
                pool.install(|| time_generation(&model, &short, 8))?;
                llama.time_generation(&short_i, 8)?;
                for _ in 0..reps {
                    let (_, d) = pool.install(|| time_generation(&model, &short, n_gen))?;
                    c.tern_decode = c.tern_decode.max(n_gen as f64 / d);
                    let (_, d) = llama.time_generation(&short_i, n_gen)?;
                    c.llama_decode = c.llama_decode.max(n_gen as f64 / d);
                    let (p, _) = pool.install(|| time_generation(&model, &long, 0))?;
                    c.tern_prefill = c.tern_prefill.max(n_prompt as f64 / p);
                    let (p, _) = llama.time_generation(&long_i, 0)?;
                    c.llama_prefill = c.llama_prefill.max(n_prompt as f64 / p);
                }
                eprintln!(
                    "{name} t={threads}: decode {:.1} vs {:.1}, prefill {:.1} vs {:.1}",
                    c.tern_decode, c.llama_decode, c.tern_prefill, c.llama_prefill
                );
                cells.push(c);
            }
        }
        let mut md = format!(
            "Tokens/s, best of {reps}, alternating Tern and llama.cpp (llama-cpp-sys-2 0.1.161, \
             built with -march=native) in one run. Decode: {n_gen} tokens after a 16-token prompt; \
             prefill: a {n_prompt}-token prompt. Generated by \
             `cargo run --release -p tern-benches --bin head-to-head`.\n\n\
             | model | threads | decode Tern | decode llama.cpp | ratio | prefill Tern | prefill llama.cpp | ratio |\n\
             |---|---|---|---|---|---|---|---|\n"
        );
        for c in &cells {
            md.push_str(&format!(
                "| SmolLM2-135M {} | {} | {:.1} | {:.1} | **{:.2}** | {:.1} | {:.1} | **{:.2}** |\n",
                c.model,
                c.threads,
                c.tern_decode,
                c.llama_decode,
                c.tern_decode / c.llama_decode,
                c.tern_prefill,
                c.llama_prefill,
                c.tern_prefill / c.llama_prefill
            ));
        }
        md.push_str(&format!(
            "\nMemory read bandwidth (one thread streaming 512 MiB): {bw:.1} GB/s. Decode ceiling \
             = bandwidth / weight bytes read per token (the whole data section: every matrix, \
             and the tied output matrix, is read once per token):\n\n\
             | model | weight bytes | ceiling tokens/s | Tern decode, 2 threads | fraction |\n|---|---|---|---|---|\n"
        ));
        for (name, bytes, ceiling) in &ceilings {
            let tern = cells
                .iter()
                .find(|c| &c.model == name && c.threads == 2)
                .map_or(0.0, |c| c.tern_decode);
            md.push_str(&format!(
                "| {name} | {:.1} MB | {ceiling:.0} | {tern:.1} | {:.0} % |\n",
                bytes / 1e6,
                100.0 * tern / ceiling
            ));
        }
        let dir = tern_benches::docs_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("head-to-head.md"), &md)?;
        print!("{md}");
        Ok(())
    }
}
