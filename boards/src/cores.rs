//! Which cores to run on: the performance cores, never the little ones.
//!
//! On big.LITTLE a matrix product split evenly over all cores waits for the slowest, and a
//! little in-order core (Cortex-A53/A55/A510/A520) is several times slower than a big one, so
//! work on little cores collapses speed. Mid cores (a Cortex-A76 beside a Cortex-X1) are kept:
//! they are out-of-order cores within reach of the big ones, and leaving them idle would give a
//! phone with one prime core a single thread.
//!
//! Little cores are recognised, in order of trust, by: Intel's `cpu_atom` list (hybrid E-cores);
//! the Arm core type from `CPU part`, when the machine mixes efficiency and performance types;
//! a maximum frequency below [`LITTLE_FREQ_PERCENT`] of the fastest core's.

use std::collections::{BTreeMap, BTreeSet};

use crate::facts::{Cpu, Facts};

/// Cores whose maximum frequency is below this share of the fastest core's are little (when
/// their type is unknown). Mid cores run at 80–90 % of the prime core's clock (Cortex-A76 at
/// 2253 of 2802 MHz on Tensor G1, A710 at 2.5 of 3.0 GHz on Snapdragon 8 Gen 1), little ones at
/// 55–65 %.
pub const LITTLE_FREQ_PERCENT: u64 = 78;

const ARM: u32 = 0x41;
const QUALCOMM: u32 = 0x51;

/// `(implementer, part, name, little)`, from the MIDR values Linux lists in
/// `arch/arm64/include/asm/cputype.h`.
const PARTS: &[(u32, u32, &str, bool)] = &[
    (ARM, 0xd03, "Cortex-A53", true),
    (ARM, 0xd04, "Cortex-A35", true),
    (ARM, 0xd05, "Cortex-A55", true),
    (ARM, 0xd07, "Cortex-A57", false),
    (ARM, 0xd08, "Cortex-A72", false),
    (ARM, 0xd09, "Cortex-A73", false),
    (ARM, 0xd0a, "Cortex-A75", false),
    (ARM, 0xd0b, "Cortex-A76", false),
    (ARM, 0xd0c, "Neoverse-N1", false),
    (ARM, 0xd0d, "Cortex-A77", false),
    (ARM, 0xd40, "Neoverse-V1", false),
    (ARM, 0xd41, "Cortex-A78", false),
    (ARM, 0xd44, "Cortex-X1", false),
    (ARM, 0xd46, "Cortex-A510", true),
    (ARM, 0xd47, "Cortex-A710", false),
    (ARM, 0xd48, "Cortex-X2", false),
    (ARM, 0xd49, "Neoverse-N2", false),
    (ARM, 0xd4b, "Cortex-A78C", false),
    (ARM, 0xd4c, "Cortex-X1C", false),
    (ARM, 0xd4d, "Cortex-A715", false),
    (ARM, 0xd4e, "Cortex-X3", false),
    (ARM, 0xd4f, "Neoverse-V2", false),
    (ARM, 0xd80, "Cortex-A520", true),
    (ARM, 0xd81, "Cortex-A720", false),
    (ARM, 0xd82, "Cortex-X4", false),
    (ARM, 0xd85, "Cortex-X925", false),
    (ARM, 0xd87, "Cortex-A725", false),
    (QUALCOMM, 0x800, "Kryo 2xx Gold", false),
    (QUALCOMM, 0x801, "Kryo 2xx Silver", true),
    (QUALCOMM, 0x802, "Kryo 3xx Gold", false),
    (QUALCOMM, 0x803, "Kryo 3xx Silver", true),
    (QUALCOMM, 0x804, "Kryo 4xx Gold", false),
    (QUALCOMM, 0x805, "Kryo 4xx Silver", true),
];

fn part(implementer: u32, part: u32) -> Option<&'static (u32, u32, &'static str, bool)> {
    PARTS
        .iter()
        .find(|&&(i, p, _, _)| i == implementer && p == part)
}

/// The name of an Arm core type, when known.
pub fn name(implementer: u32, part_id: u32) -> Option<&'static str> {
    part(implementer, part_id).map(|p| p.2)
}

/// Whether a known core type is a little (in-order efficiency) core.
fn little_type(cpu: &Cpu) -> Option<bool> {
    part(cpu.implementer?, cpu.part?).map(|p| p.3)
}

/// The cores chosen for compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreChoice {
    /// Physical cores among the chosen CPUs (hardware threads of one core count once).
    pub threads: usize,
    /// The chosen cores and those left idle, for people.
    pub why: String,
}

/// Chooses the performance cores among `facts.cpus`; `None` when no CPU is known.
pub fn performance_cores(facts: &Facts) -> Option<CoreChoice> {
    let cpus = &facts.cpus;
    if cpus.is_empty() {
        return None;
    }
    let (keep, dropped_why): (Vec<&Cpu>, Option<String>) = if cpus.iter().any(|c| c.e_core) {
        let keep = cpus.iter().filter(|c| !c.e_core).collect::<Vec<_>>();
        let dropped = cpus.iter().filter(|c| c.e_core).collect::<Vec<_>>();
        if keep.is_empty() {
            (cpus.iter().collect(), None)
        } else {
            let why = format!(
                "{} are hybrid E-cores (/sys/devices/cpu_atom), left idle",
                describe(&dropped)
            );
            (keep, Some(why))
        }
    } else if cpus.iter().all(|c| little_type(c).is_some())
        && cpus.iter().any(|c| little_type(c) == Some(true))
        && cpus.iter().any(|c| little_type(c) == Some(false))
    {
        let (little, keep): (Vec<&Cpu>, Vec<&Cpu>) =
            cpus.iter().partition(|c| little_type(c) == Some(true));
        let why = format!(
            "{} are little in-order cores, left idle (work on little cores collapses speed)",
            describe(&little)
        );
        (keep, Some(why))
    } else if let Some(top) = all_freqs(cpus).and_then(|f| f.into_iter().max()) {
        let (keep, little): (Vec<&Cpu>, Vec<&Cpu>) = cpus.iter().partition(|c| {
            c.max_khz
                .is_some_and(|k| k.saturating_mul(100) >= top.saturating_mul(LITTLE_FREQ_PERCENT))
        });
        if little.is_empty() {
            (keep, None)
        } else {
            let why = format!(
                "{} run below {LITTLE_FREQ_PERCENT}% of the fastest core's clock: little cores, \
                 left idle",
                describe(&little)
            );
            (keep, Some(why))
        }
    } else {
        (cpus.iter().collect(), None)
    };

    let threads = physical(&keep);
    let mut why = describe(&keep);
    if threads < keep.len() {
        why += &format!(
            " (hardware threads of {threads} physical cores: SMT siblings share one core's SIMD \
             units)"
        );
    }
    match dropped_why {
        Some(d) => why += &format!("; {d}"),
        None if all_freqs(cpus).is_some() => why += ", no little cores",
        None => why += " (no cpufreq: cores taken as equal)",
    }
    Some(CoreChoice { threads, why })
}

/// Every CPU's maximum frequency, if all are known.
fn all_freqs(cpus: &[Cpu]) -> Option<Vec<u64>> {
    cpus.iter().map(|c| c.max_khz).collect()
}

/// Distinct physical cores; CPUs without topology count as one core each.
fn physical(cpus: &[&Cpu]) -> usize {
    let mut seen = BTreeSet::new();
    cpus.iter()
        .filter(|c| c.core.is_none_or(|k| seen.insert(k)))
        .count()
        .max(1)
}

/// "2 × Cortex-X1 at 2802 MHz, 2 × Cortex-A76 at 2253 MHz": groups of equal CPUs, fastest first.
fn describe(cpus: &[&Cpu]) -> String {
    let mut groups: BTreeMap<(std::cmp::Reverse<u64>, Option<&str>), usize> = BTreeMap::new();
    for c in cpus {
        let key = (std::cmp::Reverse(c.max_khz.unwrap_or(0)), c.core_name());
        *groups.entry(key).or_default() += 1;
    }
    groups
        .iter()
        .map(|((std::cmp::Reverse(khz), name), &n)| {
            let what = match name {
                Some(name) => format!("{n} × {name}"),
                None if n == 1 => "1 CPU".to_string(),
                None => format!("{n} CPUs"),
            };
            if *khz > 0 {
                format!("{what} at {} MHz", khz / 1000)
            } else {
                what
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
