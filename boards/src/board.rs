//! Identifying the board and settling its settings, each with the reason for it.

use std::fmt;
use std::path::Path;

use crate::cores::performance_cores;
use crate::facts::Facts;
use crate::memory::{fmt_bytes, MemoryError, MemoryFit, MemoryNeed};
use crate::profile::{builtin, profile, CpuArch, KernelFamily, KvType, Profile, UnknownBoard};

/// A budget below this leaves no room for a second copy of the weights.
pub const REPACK_MIN_BUDGET: u64 = 1 << 30;

/// A chosen value and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<T> {
    pub value: T,
    pub why: String,
}

fn decide<T>(value: T, why: impl Into<String>) -> Decision<T> {
    Decision {
        value,
        why: why.into(),
    }
}

/// The KV cache a session starts with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KvDefaults {
    /// Tokens at the start kept for ever (attention sinks).
    pub sinks: usize,
    /// Most recent tokens kept after the sinks.
    pub window: usize,
    pub kv_type: KvType,
}

/// What Tern uses on a board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The best kernel family to use: a ceiling the runtime meets with what the CPU runs
    /// ([`KernelFamily::pick`]).
    pub kernel: Decision<KernelFamily>,
    /// Threads for the matrix products.
    pub threads: Decision<usize>,
    /// Bytes the model and its KV cache may occupy together ([`Board::guard`]).
    pub memory_budget: Decision<u64>,
    /// The default KV cache; [`Board::guard`] may shrink the window at load.
    pub kv: Decision<KvDefaults>,
    /// Whether weights may be repacked into interleaved copies at load.
    pub repack: Decision<bool>,
}

/// The board Tern runs on (or was told it runs on), and its settings.
#[derive(Clone, Debug)]
pub struct Board {
    pub profile: &'static Profile,
    /// Why this profile: what detection saw, or `--board`.
    pub why: String,
    /// Chosen with `--board` rather than detected.
    pub forced: bool,
    pub settings: Settings,
    /// What was read from the machine.
    pub facts: Facts,
}

/// Detects the board of this machine (`/proc`, `/sys` under `/`).
pub fn detect() -> Board {
    Board::settle(live_facts(), None)
}

/// Detects the board from the `/proc` and `/sys` files under `root` (a recorded fixture).
pub fn detect_in(root: &Path) -> Board {
    Board::settle(Facts::read(root), None)
}

/// The board named `name` (a profile name, or `auto` / `None` to detect), with its settings
/// for this machine.
pub fn select(name: Option<&str>) -> Result<Board, UnknownBoard> {
    let forced = forced_profile(name)?;
    Ok(Board::settle(live_facts(), forced))
}

/// [`select`] on the files under `root`.
pub fn select_in(root: &Path, name: Option<&str>) -> Result<Board, UnknownBoard> {
    let forced = forced_profile(name)?;
    Ok(Board::settle(Facts::read(root), forced))
}

fn forced_profile(name: Option<&str>) -> Result<Option<&'static Profile>, UnknownBoard> {
    match name.map(str::trim) {
        None | Some("auto") | Some("") => Ok(None),
        Some(n) => profile(n).map(Some),
    }
}

/// The facts of the live system. Where `/proc/cpuinfo` is unreadable, or describes another
/// architecture than this program's (qemu-user shows the host's file), the CPU's own feature
/// detection stands in for it.
fn live_facts() -> Facts {
    let mut f = Facts::read(Path::new("/"));
    f.parallelism = std::thread::available_parallelism().ok().map(|n| n.get());
    if cfg!(target_os = "android") && f.android.is_none() {
        f.android = Some("a build for Android".to_string());
    }
    let own = if cfg!(target_arch = "x86_64") {
        Some(CpuArch::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(CpuArch::Aarch64)
    } else {
        None
    };
    match (f.arch, own) {
        (None, _) => {
            f.notes
                .push("/proc/cpuinfo unreadable; CPU features taken from the CPU itself".into());
            runtime_features(&mut f);
        }
        (Some(seen), Some(own)) if seen != own => {
            f.notes.push(format!(
                "/proc/cpuinfo describes {} but this program runs as {} (emulated?); CPU \
                 features taken from the CPU itself",
                seen.name(),
                own.name()
            ));
            runtime_features(&mut f);
        }
        _ => {}
    }
    f
}

/// AVX-VNNI, from CPUID leaf 7 sub-leaf 1 (EAX bit 4), as `tern_kernels` reads it: the
/// standard library's detection of it is newer than this workspace's minimum Rust.
#[cfg(target_arch = "x86_64")]
fn has_avx_vnni() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: `cpuid` exists on every x86-64 CPU (older Rust marks these functions unsafe).
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(0).eax >= 7
            && __cpuid_count(7, 0).eax >= 1
            && __cpuid_count(7, 1).eax & (1 << 4) != 0
    }
}

#[cfg(target_arch = "x86_64")]
fn runtime_features(f: &mut Facts) {
    f.arch = Some(CpuArch::X86_64);
    f.features.clear();
    f.cpu_model = None;
    for (name, on) in [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ("avx_vnni", has_avx_vnni()),
    ] {
        if on {
            f.features.insert(name.to_string());
        }
    }
    f.features_from = "cpuid";
}

#[cfg(target_arch = "aarch64")]
fn runtime_features(f: &mut Facts) {
    f.arch = Some(CpuArch::Aarch64);
    f.features.clear();
    f.cpu_model = None;
    for (name, on) in [
        ("asimd", std::arch::is_aarch64_feature_detected!("neon")),
        (
            "asimddp",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
    ] {
        if on {
            f.features.insert(name.to_string());
        }
    }
    f.features_from = "HWCAP";
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn runtime_features(f: &mut Facts) {
    f.notes.push("no SIMD kernels for this architecture".into());
}

/// The profile the facts point to, and why.
fn identify(f: &Facts) -> (&'static Profile, String) {
    if let Some(model) = &f.board_model {
        let from = f.board_model_from;
        if let Some(p) = crate::profile::PROFILES
            .iter()
            .find(|p| p.dt_models.iter().any(|m| model.starts_with(m)))
        {
            return (p, format!("{from} is \"{model}\""));
        }
        if f.arch == Some(CpuArch::Aarch64) && f.android.is_none() {
            return (
                builtin("generic-aarch64"),
                format!("{from} is \"{model}\", which has no profile; the CPU is aarch64"),
            );
        }
    }
    let arch = f.arch.unwrap_or(CpuArch::Unknown);
    if let Some(why) = &f.android {
        if matches!(arch, CpuArch::Aarch64 | CpuArch::Unknown) {
            return (builtin("android-arm64"), format!("Android: {why}"));
        }
    }
    match arch {
        CpuArch::X86_64 if AVX2_FLAGS.iter().all(|x| f.has(x)) => (
            builtin("x86-64-avx2"),
            match &f.cpu_model {
                Some(m) => format!("{}: {m}, with avx2, fma and f16c", f.features_from),
                None => format!("{}: x86-64 with avx2, fma and f16c", f.features_from),
            },
        ),
        CpuArch::X86_64 => (
            builtin("generic"),
            format!(
                "{}: x86-64 without all of avx2, fma and f16c",
                f.features_from
            ),
        ),
        CpuArch::Aarch64 => (
            builtin("generic-aarch64"),
            format!("{}: aarch64, no known board", f.features_from),
        ),
        CpuArch::Arm32 => (
            builtin("generic"),
            "cpuinfo: a 32-bit ARM system, no known board".to_string(),
        ),
        CpuArch::Other => (
            builtin("generic"),
            "cpuinfo: an architecture without SIMD kernels".to_string(),
        ),
        CpuArch::Unknown => (
            builtin("generic"),
            "nothing recognisable: /proc/cpuinfo unreadable or empty".to_string(),
        ),
    }
}

const AVX2_FLAGS: [&str; 3] = ["avx2", "fma", "f16c"];

/// The best family the CPU runs according to its features, and why; `None` when unknown.
fn cpu_family(f: &Facts) -> Option<(KernelFamily, String)> {
    let src = f.features_from;
    Some(match f.arch? {
        CpuArch::Aarch64 => {
            let dp = f.has("asimddp");
            let mm = f.has("i8mm");
            if f.features.is_empty() {
                (
                    KernelFamily::Neon,
                    format!("{src} lists no features; NEON is part of every aarch64 CPU"),
                )
            } else if dp && mm {
                (
                    KernelFamily::NeonI8mm,
                    format!("{src} lists asimddp and i8mm"),
                )
            } else if dp {
                (
                    KernelFamily::NeonDotprod,
                    format!("{src} lists asimddp but lacks i8mm"),
                )
            } else {
                (KernelFamily::Neon, format!("{src} lacks asimddp"))
            }
        }
        CpuArch::X86_64 => {
            let missing: Vec<_> = AVX2_FLAGS.iter().filter(|x| !f.has(x)).copied().collect();
            if missing.is_empty() && f.has("avx_vnni") {
                (
                    KernelFamily::AvxVnni,
                    format!("{src} lists avx2, fma, f16c and avx_vnni"),
                )
            } else if missing.is_empty() {
                (
                    KernelFamily::Avx2,
                    format!("{src} lists avx2, fma and f16c but lacks avx_vnni"),
                )
            } else {
                (
                    KernelFamily::Scalar,
                    format!("{src} lacks {}", missing.join(", ")),
                )
            }
        }
        CpuArch::Arm32 => (
            KernelFamily::Scalar,
            "a 32-bit ARM system (Tern's NEON kernels are aarch64 only)".into(),
        ),
        CpuArch::Other => (
            KernelFamily::Scalar,
            "no SIMD kernels for this architecture".into(),
        ),
        CpuArch::Unknown => return None,
    })
}

fn kernel(p: &Profile, f: &Facts) -> Decision<KernelFamily> {
    let ceiling = p.kernel;
    let Some((cpu, cpu_why)) = cpu_family(f) else {
        return decide(
            ceiling,
            format!(
                "{} (the {} profile's; /proc/cpuinfo unreadable, the runtime checks the CPU \
                 itself)",
                ceiling.describe(),
                p.name
            ),
        );
    };
    let arch = f.arch.unwrap_or(CpuArch::Unknown);
    if let Some(isa) = ceiling.isa() {
        let same = arch == isa || (isa == CpuArch::Aarch64 && arch == CpuArch::Arm32);
        if !same {
            return decide(
                ceiling,
                format!(
                    "{} as on a {}; this machine is {}, so the runtime falls back to the \
                     scalar reference",
                    ceiling.describe(),
                    p.title,
                    arch.name()
                ),
            );
        }
    }
    let chosen = ceiling.min(cpu);
    let why = if chosen == cpu {
        format!("{}: {cpu_why}", chosen.describe())
    } else {
        format!(
            "{}: the {} profile's ceiling (the CPU would run {})",
            chosen.describe(),
            p.name,
            cpu.name()
        )
    };
    decide(chosen, why)
}

fn threads(p: &Profile, f: &Facts, own: bool) -> Decision<usize> {
    if let (false, Some(n)) = (own, p.cores) {
        return decide(
            n,
            format!("the {}'s {} (profile chosen by --board)", p.title, p.cpu),
        );
    }
    if let Some(c) = performance_cores(f) {
        return decide(c.threads, c.why);
    }
    if let Some(n) = p.cores {
        return decide(
            n,
            format!("the {}'s {}; no CPU list could be read", p.title, p.cpu),
        );
    }
    match f.parallelism {
        Some(n) => decide(
            n,
            format!("no CPU list could be read; the OS reports {n} hardware threads"),
        ),
        None => decide(1, "no CPU list could be read"),
    }
}

fn memory_budget(p: &Profile, f: &Facts) -> Decision<u64> {
    let (mut available, mut source) = match (f.mem_available, f.mem_total) {
        (Some(a), _) => (a, "MemAvailable".to_string()),
        (None, Some(t)) => (
            t / 2,
            format!("half of MemTotal {}; no MemAvailable", fmt_bytes(t)),
        ),
        (None, None) => (
            p.fallback_ram / 2,
            format!(
                "half the {} the {} profile assumes; no /proc/meminfo",
                fmt_bytes(p.fallback_ram),
                p.name
            ),
        ),
    };
    if let Some(limit) = f.cgroup_limit {
        let used = f.cgroup_usage.unwrap_or(0);
        let room = limit.saturating_sub(used);
        if room < available {
            available = room;
            source = format!(
                "room left in the memory cgroup: limit {}, {} in use",
                fmt_bytes(limit),
                fmt_bytes(used)
            );
        }
    }
    if let Some(max) = p.max_ram {
        if max < available {
            available = max;
            source = if max == p.fallback_ram {
                format!("the memory of a {}", p.title)
            } else {
                format!("the memory of the largest {}", p.title)
            };
        }
    }
    let budget = (available as u128 * p.budget_percent as u128 / 100) as u64;
    decide(
        budget,
        format!(
            "{}% of {} ({source}); {}",
            p.budget_percent,
            fmt_bytes(available),
            p.budget_why
        ),
    )
}

fn repack(p: &Profile, budget: u64) -> Decision<bool> {
    if p.repack && budget < REPACK_MIN_BUDGET {
        return decide(
            false,
            format!(
                "a budget under {} has no room for copies: weights are used in place from the map",
                fmt_bytes(REPACK_MIN_BUDGET)
            ),
        );
    }
    decide(p.repack, p.repack_why)
}

impl Board {
    /// The board for `facts`: `forced` if given, else the detected one.
    fn settle(facts: Facts, forced: Option<&'static Profile>) -> Board {
        let (detected, detected_why) = identify(&facts);
        let (profile, why, own) = match forced {
            None => (detected, format!("detected: {detected_why}"), true),
            Some(p) if p == detected => (
                p,
                format!("--board {} (also detected: {detected_why})", p.name),
                true,
            ),
            Some(p) => (
                p,
                format!("--board {} (detected: {})", p.name, detected.name),
                false,
            ),
        };
        let memory_budget = memory_budget(profile, &facts);
        let settings = Settings {
            kernel: kernel(profile, &facts),
            threads: threads(profile, &facts, own),
            repack: repack(profile, memory_budget.value),
            memory_budget,
            kv: decide(
                KvDefaults {
                    sinks: profile.sinks,
                    window: profile.window,
                    kv_type: profile.kv_type,
                },
                profile.kv_why,
            ),
        };
        Board {
            profile,
            why,
            forced: forced.is_some(),
            settings,
            facts,
        }
    }

    /// The board's name (its profile's).
    pub fn name(&self) -> &'static str {
        self.profile.name
    }

    /// [`crate::memory::guard`] against this board's memory budget.
    pub fn guard(&self, need: &MemoryNeed) -> Result<MemoryFit, MemoryError> {
        crate::memory::guard(need, self.settings.memory_budget.value)
    }
}

impl fmt::Display for Board {
    /// What `tern boards` prints: the board, each setting and why, then any notes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.profile;
        let s = &self.settings;
        writeln!(f, "board      {}: {} ({})", p.name, p.title, p.cpu)?;
        writeln!(f, "           {}", self.why)?;
        let kv = &s.kv.value;
        let rows = [
            ("kernels", s.kernel.value.name().to_string(), &s.kernel.why),
            ("threads", s.threads.value.to_string(), &s.threads.why),
            (
                "memory",
                fmt_bytes(s.memory_budget.value),
                &s.memory_budget.why,
            ),
            (
                "KV cache",
                format!("{} + {} {}", kv.sinks, kv.window, kv.kv_type),
                &s.kv.why,
            ),
            (
                "repacking",
                if s.repack.value { "allowed" } else { "off" }.to_string(),
                &s.repack.why,
            ),
        ];
        for (label, value, why) in rows {
            writeln!(f, "{label:<10} {value:<12} {why}")?;
        }
        if !self.facts.notes.is_empty() {
            writeln!(f, "notes")?;
            for n in &self.facts.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_exist() {
        for name in ["generic", "generic-aarch64", "android-arm64", "x86-64-avx2"] {
            assert_eq!(builtin(name).name, name);
        }
    }

    #[test]
    fn foreign_kernel_ceiling_is_kept_and_explained() {
        let f = Facts {
            arch: Some(CpuArch::X86_64),
            features: ["avx2", "fma", "f16c"].map(String::from).into(),
            ..Facts::default()
        };
        let k = kernel(builtin("rpi4"), &f);
        assert_eq!(k.value, KernelFamily::Neon);
        assert!(k.why.contains("x86-64"), "{}", k.why);
    }

    #[test]
    fn budget_caps() {
        let f = Facts {
            mem_available: Some(20 << 30),
            cgroup_limit: Some(3 << 30),
            cgroup_usage: Some(1 << 30),
            ..Facts::default()
        };
        // The cgroup leaves 2 GiB; 80% of it.
        let b = memory_budget(builtin("generic"), &f);
        assert_eq!(b.value, (2u64 << 30) * 4 / 5);
        assert!(b.why.contains("cgroup"), "{}", b.why);
        // A Zero 2 W profile caps at its 512 MiB; 70% of it.
        let f = Facts {
            mem_available: Some(20 << 30),
            ..Facts::default()
        };
        let b = memory_budget(builtin("rpi-zero2w"), &f);
        assert_eq!(b.value, (512u64 << 20) * 7 / 10);
    }
}
