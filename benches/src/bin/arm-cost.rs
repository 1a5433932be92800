//! `arm-cost`: static cycle estimates of the aarch64 decode kernels, Tern's against llama.cpp's,
//! without an ARM machine.
//!
//! It compiles Tern's kernels (`tern-kernels` for aarch64, to assembly) and llama.cpp's (the
//! oracle crate's vendored `quants.c` and `repack.cpp`, with clang, once per CPU), cuts the
//! steady-state block loop out of each kernel (the innermost loop that multiplies quants), and
//! runs `llvm-mca` on it for a Cortex-A72 (Pi 4) and a Neoverse-N1 with 4-wide dispatch (the
//! Cortex-A76 design: Pi 5, phones). A loop's cost is normalised by the quant products it
//! does (16 per `sdot`, 8 per `smull`/`smlal` of bytes, 32 per `smmla`), so every kernel is
//! reported in cycles per 32 weights of one row, whatever its unrolling or row count. On the
//! A76, Tern's paths include the loops over rows repacked at load (`interleaved`), as
//! llama.cpp's include its repacked `gemv`s.
//!
//! No memory effects: every load hits L1.
//!
//! ```text
//! scripts/setup.sh bench            # llvm (llvm-mca), clang, aarch64 C++ headers
//! cargo run --release -p tern-benches --bin arm-cost [-- --json]
//! ```
//! `--tern-root DIR` measures the Tern kernels of another checkout (before/after).
//! `--json` prints one line per format, CPU model and implementation,
//! `{"format","cpu","impl","cycles_per_32","path","inner_loop_only"}`, the best path of each
//! (`inner_loop_only`: the loop measured sits in a super-block loop whose own work is left
//! out, which flatters that kernel).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A CPU model: the name printed, clang's `-mcpu`, and llvm-mca's arguments.
struct Cpu {
    name: &'static str,
    clang: &'static str,
    mca: &'static [&'static str],
    /// Tern's kernel set there: `neon` (`n_`) or `dotprod` (`d_`).
    tern: (&'static str, &'static str),
}

const CPUS: [Cpu; 2] = [
    Cpu {
        name: "cortex-a72",
        clang: "cortex-a72",
        mca: &["-mcpu=cortex-a72"],
        tern: ("4neon", "n"),
    },
    Cpu {
        name: "cortex-a76",
        clang: "neoverse-n1",
        mca: &["-mcpu=neoverse-n1", "-dispatch=4"],
        tern: ("7dotprod", "d"),
    },
];

const FORMATS: [&str; 7] = ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"];

/// One measured kernel loop.
struct Cost {
    format: &'static str,
    cpu: &'static str,
    imp: &'static str,
    path: String,
    function: String,
    cycles_per_iter: f64,
    products_per_iter: u32,
    /// The loop sits inside another loop that also multiplies (a super-block's sub-block
    /// loop that the compiler kept): the outer loop's own work is left out of the estimate.
    inner_only: bool,
}

impl Cost {
    fn per_32(&self) -> f64 {
        self.cycles_per_iter * 32.0 / self.products_per_iter as f64
    }
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let out = root.join("target/arm-cost");
    std::fs::create_dir_all(&out)?;
    // `--tern-root DIR`: Tern's kernels from another checkout (a before/after comparison).
    let args: Vec<String> = std::env::args().collect();
    let tern_root = match args.iter().position(|a| a == "--tern-root") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--tern-root DIR")?),
        None => root.clone(),
    };
    let tern = parse(&std::fs::read_to_string(tern_asm(&tern_root)?)?);
    let llama = llama_dir(&root)?;
    let mut costs = Vec::new();
    for cpu in &CPUS {
        let quants = parse(&clang(&llama, "quants.c", cpu, &out)?);
        let repack = parse(&clang(&llama, "repack.cpp", cpu, &out)?);
        for format in FORMATS {
            let f = format.to_lowercase();
            let (m, w) = cpu.tern;
            let mut paths: Vec<(String, Vec<String>, &[Func])> = vec![(
                "dot".into(),
                vec![
                    format!("{m}{}dot_{f}", 4 + f.len()),
                    format!("1w{}{w}_dot_{f}", 6 + f.len()),
                ],
                &tern,
            )];
            paths.push((
                "dot_rows (4 rows)".into(),
                vec![
                    format!("{m}{}rows_{f}", 5 + f.len()),
                    format!("1w{}{w}_rows_{f}", 7 + f.len()),
                ],
                &tern,
            ));
            // Rows repacked at load into groups of four (the dotprod set's interleaved layouts).
            if w == "d" {
                paths.push((
                    "interleaved (4 rows)".into(),
                    vec![format!("11interleaved{}rows_{f}", 5 + f.len())],
                    &tern,
                ));
            }
            // A path a checkout does not have (`--tern-root` of an older one) is left out.
            for (path, pats, funcs) in paths {
                costs.extend(measure(format, cpu, "tern", &path, funcs, &pats, &out)?);
            }
            let act = if format == "Q4_1" {
                "q8_1"
            } else if format.ends_with("_K") {
                "q8_K"
            } else {
                "q8_0"
            };
            let name = format!("ggml_vec_dot_{}_{act}", f.replace("_k", "_K"));
            let vec_dot = measure(format, cpu, "llama.cpp", "vec_dot", &quants, &[name], &out)?;
            costs.push(vec_dot.context("llama.cpp's vec_dot not found")?);
            // The repacked layouts llama.cpp picks on a dotprod CPU without i8mm.
            let gemv = match (cpu.tern.1, format) {
                ("d", "Q4_0") => Some("ggml_gemv_q4_0_4x4_q8_0"),
                ("d", "Q8_0") => Some("ggml_gemv_q8_0_4x4_q8_0"),
                ("d", "Q4_K") => Some("ggml_gemv_q4_K_8x4_q8_K"),
                ("d", "Q5_K") => Some("ggml_gemv_q5_K_8x4_q8_K"),
                ("d", "Q6_K") => Some("ggml_gemv_q6_K_8x4_q8_K"),
                _ => None,
            };
            if let Some(g) = gemv {
                let path = format!("repacked ({})", &g[g.len() - 9..g.len() - 5]);
                let gemv = measure(format, cpu, "llama.cpp", &path, &repack, &[g.into()], &out)?;
                costs.push(gemv.context("llama.cpp's gemv not found")?);
            }
        }
    }
    report(&costs, json);
    Ok(())
}

fn report(costs: &[Cost], json: bool) {
    let best = |format: &str, cpu: &str, imp: &str| {
        costs
            .iter()
            .filter(|c| c.format == format && c.cpu == cpu && c.imp == imp)
            .min_by(|a, b| a.per_32().total_cmp(&b.per_32()))
    };
    if json {
        for format in FORMATS {
            for cpu in &CPUS {
                for imp in ["tern", "llama.cpp"] {
                    if let Some(c) = best(format, cpu.name, imp) {
                        let line = serde_json::json!({
                            "format": format, "cpu": cpu.name, "impl": imp,
                            "cycles_per_32": (c.per_32() * 100.0).round() / 100.0,
                            "path": c.path,
                            "inner_loop_only": c.inner_only,
                        });
                        println!("{line}");
                    }
                }
            }
        }
        return;
    }
    println!(
        "llvm-mca cycles per 32 weights of one row, steady-state decode loops (no memory effects)"
    );
    println!(
        "{:<6} {:<11} {:<10} {:<18} {:>10} {:>9} {:>8}  function",
        "format", "cpu", "impl", "path", "cyc/iter", "prod/iter", "cyc/32"
    );
    for c in costs {
        println!(
            "{:<6} {:<11} {:<10} {:<18} {:>10.2} {:>9} {:>7.2}{}  {}",
            c.format,
            c.cpu,
            c.imp,
            c.path,
            c.cycles_per_iter,
            c.products_per_iter,
            c.per_32(),
            if c.inner_only { "*" } else { " " },
            c.function
        );
    }
    println!(
        "* a sub-block loop inside a super-block loop: the super-block's own work is not counted"
    );
    println!("\nbest path of each:");
    println!(
        "{:<6} {:>11} {:>11} {:>11} {:>11}",
        "format", "A72 Tern", "A72 llama", "A76 Tern", "A76 llama"
    );
    for format in FORMATS {
        let v: Vec<String> = ["cortex-a72", "cortex-a76"]
            .iter()
            .flat_map(|cpu| ["tern", "llama.cpp"].map(|imp| (cpu, imp)))
            .map(|(cpu, imp)| {
                best(format, cpu, imp).map_or("-".into(), |c| {
                    format!("{:.2}{}", c.per_32(), if c.inner_only { "*" } else { "" })
                })
            })
            .collect();
        println!(
            "{:<6} {:>11} {:>11} {:>11} {:>11}",
            format, v[0], v[1], v[2], v[3]
        );
    }
}

/// Tern's kernels for aarch64 as one assembly file (v0 symbol names keep the const generics).
fn tern_asm(root: &Path) -> Result<PathBuf> {
    // The aarch64 standard library, as scripts/test-cross.sh adds it (a no-op when present).
    let rustup = Command::new("rustup")
        .args(["target", "add", "aarch64-unknown-linux-gnu"])
        .status();
    if !rustup.is_ok_and(|s| s.success()) {
        eprintln!("arm-cost: `rustup target add aarch64-unknown-linux-gnu` failed; trying anyway");
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "rustc",
            "--release",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-p",
            "tern-kernels",
            "--lib",
        ])
        .args([
            "--target-dir",
            "target/arm-cost",
            "--",
            "--emit",
            "asm",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "debuginfo=0", "-C", "symbol-mangling-version=v0"])
        .status()
        .context("cargo rustc for aarch64 (rustup target add aarch64-unknown-linux-gnu)")?;
    if !status.success() {
        bail!("cargo rustc failed");
    }
    let deps = root.join("target/arm-cost/aarch64-unknown-linux-gnu/release/deps");
    let mut found: Vec<_> = std::fs::read_dir(&deps)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with("tern_kernels") && n.ends_with(".s")
        })
        .collect();
    found.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    Ok(found.pop().context("no tern_kernels assembly")?.path())
}

/// The llama.cpp source vendored by the oracle crate, at the version in `Cargo.lock`.
fn llama_dir(root: &Path) -> Result<PathBuf> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"llama-cpp-sys-2\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .context("llama-cpp-sys-2 in Cargo.lock")?;
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    for reg in std::fs::read_dir(home.join("registry/src"))? {
        let dir = reg?
            .path()
            .join(format!("llama-cpp-sys-2-{version}/llama.cpp"));
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!("llama-cpp-sys-2 {version} source not found (cargo fetch)")
}

/// One of llama.cpp's aarch64 kernel files compiled for `cpu` with clang, as assembly.
fn clang(llama: &Path, file: &str, cpu: &Cpu, out: &Path) -> Result<String> {
    let g = llama.join("ggml");
    let dst = out.join(format!("llama-{}-{file}.s", cpu.name));
    let cxx = file.ends_with(".cpp");
    let mut cmd = Command::new(if cxx { "clang++" } else { "clang" });
    cmd.args([
        "--target=aarch64-linux-gnu",
        &format!("-mcpu={}", cpu.clang),
        "-O3",
        "-S",
    ])
    .args(["-D_GNU_SOURCE", "-DNDEBUG"])
    .arg(format!("-I{}", g.join("include").display()))
    .arg(format!("-I{}", g.join("src").display()))
    .arg(format!("-I{}", g.join("src/ggml-cpu").display()))
    .arg("-o")
    .arg(&dst)
    .arg(g.join("src/ggml-cpu/arch/arm").join(file));
    if cxx {
        cmd.arg("-std=c++17");
    }
    let st = cmd.status().context("clang (scripts/setup.sh bench)")?;
    if !st.success() {
        bail!("clang {file} for {} failed", cpu.name);
    }
    Ok(std::fs::read_to_string(dst)?)
}

/// A function of an assembly file: its symbol and its lines (instructions and local labels).
struct Func {
    name: String,
    lines: Vec<String>,
}

fn parse(asm: &str) -> Vec<Func> {
    let mut funcs: Vec<Func> = Vec::new();
    for raw in asm.lines() {
        let line = raw.split("//").next().unwrap_or("").trim_end();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some(label) = line.strip_suffix(':') {
                if label.starts_with(".L") {
                    if let Some(f) = funcs.last_mut() {
                        f.lines.push(line.to_string());
                    }
                } else {
                    funcs.push(Func {
                        name: label.to_string(),
                        lines: Vec::new(),
                    });
                }
            }
            continue;
        }
        let t = line.trim();
        if !t.starts_with('.') {
            if let Some(f) = funcs.last_mut() {
                f.lines.push(format!("\t{t}"));
            }
        }
    }
    funcs
}

/// Quant products of one instruction.
fn products(ins: &str) -> u32 {
    let mnemonic = ins.split_whitespace().next().unwrap_or("");
    let bytes = ins.contains(".8b") || ins.contains(".16b") || ins.contains(".4b");
    match mnemonic {
        "sdot" | "udot" | "usdot" | "sudot" => 16,
        "smmla" | "ummla" | "usmmla" => 32,
        "smull" | "smull2" | "umull" | "umull2" | "smlal" | "smlal2" | "umlal" | "umlal2"
            if bytes =>
        {
            8
        }
        _ => 0,
    }
}

/// The loops of a function: `(first line, last line)` of each loop header's range (the
/// furthest backward branch to it).
fn loops(f: &Func) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, l) in f.lines.iter().enumerate() {
        let t = l.trim();
        let m = t.split_whitespace().next().unwrap_or("");
        if !(m.starts_with("b") || m.starts_with("cb") || m.starts_with("tb")) || m == "bl" {
            continue;
        }
        let Some(target) = t.rsplit([',', ' ', '\t']).next() else {
            continue;
        };
        let label = format!("{target}:");
        if let Some(j) = f.lines[..i].iter().position(|x| *x == label) {
            match out.iter_mut().find(|(h, _)| *h == j) {
                Some(l) => l.1 = l.1.max(i),
                None => out.push((j, i)),
            }
        }
    }
    out
}

/// The steady-state block loop among the functions whose symbol contains one of `pats`: the
/// innermost loop that multiplies quants, the one with the most products where several do.
/// `None` where no such function or loop exists.
fn measure(
    format: &'static str,
    cpu: &'static Cpu,
    imp: &'static str,
    path: &str,
    funcs: &[Func],
    pats: &[String],
    out: &Path,
) -> Result<Option<Cost>> {
    let mut best: Option<(&Func, (usize, usize), u32)> = None;
    for f in funcs
        .iter()
        .filter(|f| pats.iter().any(|p| f.name.contains(p.as_str())))
    {
        let ls: Vec<_> = loops(f)
            .into_iter()
            .map(|(a, b)| {
                (
                    a,
                    b,
                    f.lines[a..=b].iter().map(|l| products(l)).sum::<u32>(),
                )
            })
            .filter(|&(_, _, p)| p > 0)
            .collect();
        for &(a, b, p) in &ls {
            let inner = !ls
                .iter()
                .any(|&(c, d, _)| (c, d) != (a, b) && a <= c && d <= b);
            if inner && best.is_none_or(|(_, _, bp)| p > bp) {
                best = Some((f, (a, b), p));
            }
        }
    }
    let Some((f, (a, b), p)) = best else {
        return Ok(None);
    };
    // A multi-row kernel's block loop sits in its loop over rows; a loop nested deeper (or,
    // in a one-row kernel, nested at all) is a sub-block loop of a super-block.
    let multi_row = ["dot_rows", "repacked", "interleaved"]
        .iter()
        .any(|p| path.starts_with(p));
    let enclosing = loops(f)
        .into_iter()
        .filter(|&(c, d)| (c, d) != (a, b) && c <= a && b <= d)
        .filter(|&(c, d)| f.lines[c..=d].iter().any(|l| products(l) > 0))
        .count();
    let inner_only = enclosing > usize::from(multi_row);
    let body = f.lines[a..=b].join("\n") + "\n";
    let file = out.join(format!(
        "{}-{imp}-{format}-{}.s",
        cpu.name,
        path.replace([' ', '(', ')'], "")
    ));
    std::fs::write(&file, &body)?;
    let mca = Command::new("llvm-mca")
        .args(["-mtriple=aarch64-linux-gnu", "-iterations=200"])
        .args(cpu.mca)
        .arg(&file)
        .output()
        .context("llvm-mca (scripts/setup.sh bench installs llvm)")?;
    let text = String::from_utf8_lossy(&mca.stdout);
    if !mca.status.success() {
        bail!(
            "llvm-mca on {}: {}",
            file.display(),
            String::from_utf8_lossy(&mca.stderr)
        );
    }
    let field = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("llvm-mca output without {name}"))
    };
    let cycles = field("Total Cycles:")?;
    let iters = field("Iterations:")?;
    Ok(Some(Cost {
        format,
        cpu: cpu.name,
        imp,
        path: path.to_string(),
        function: f.name.chars().take(60).collect(),
        cycles_per_iter: cycles / iters,
        products_per_iter: p,
        inner_only,
    }))
}
