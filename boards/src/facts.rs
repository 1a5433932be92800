//! What the machine says about itself: `/proc` and `/sys`, read under a root directory so that
//! tests can point at recorded fixtures. Nothing here fails: a file that is missing or odd
//! leaves its fact unknown and, where that matters, a note saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cores;
use crate::profile::CpuArch;

/// Files larger than this are not read (a real `/proc/cpuinfo` of 256 CPUs is ~300 KB).
const MAX_FILE: u64 = 4 << 20;
/// CPU numbers above this are ignored (a corrupt `online` list must not make us loop).
const MAX_CPUS: usize = 4096;

/// One logical CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Its number (`cpuN`).
    pub id: usize,
    /// `CPU implementer` and `CPU part` from `/proc/cpuinfo` (Arm's MIDR fields).
    pub implementer: Option<u32>,
    pub part: Option<u32>,
    /// `cpufreq/cpuinfo_max_freq`, kHz.
    pub max_khz: Option<u64>,
    /// The lowest CPU of `topology/thread_siblings_list`: the hardware threads of one
    /// physical core share it. (`core_id` alone is not unique across Arm clusters.)
    pub core: Option<usize>,
    /// Listed in `/sys/devices/cpu_atom/cpus`: an Intel hybrid E-core.
    pub e_core: bool,
}

impl Cpu {
    /// The core's name (`Cortex-A72`) when the part is known.
    pub fn core_name(&self) -> Option<&'static str> {
        cores::name(self.implementer?, self.part?)
    }
}

/// Everything detection read.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The board's model: `/proc/device-tree/model` without its trailing NUL, else the
    /// `Model` line of `/proc/cpuinfo` (Raspberry Pi kernels write one).
    pub board_model: Option<String>,
    /// Which of the two it came from.
    pub board_model_from: &'static str,
    /// Set when the tree looks like Android: what said so.
    pub android: Option<String>,
    /// From `/proc/cpuinfo`.
    pub arch: Option<CpuArch>,
    /// The `model name` of `/proc/cpuinfo` (x86, some ARM kernels).
    pub cpu_model: Option<String>,
    /// Features (aarch64 `Features`, x86 `flags`) present on every processor listed.
    pub features: BTreeSet<String>,
    /// Where `arch` and `features` come from: `cpuinfo`, or the CPU's own identification on
    /// the live system when `/proc/cpuinfo` is unreadable or describes another architecture.
    pub features_from: &'static str,
    /// Online logical CPUs, by number.
    pub cpus: Vec<Cpu>,
    /// Where the CPU list came from.
    pub cpus_from: &'static str,
    /// `/proc/meminfo`, bytes.
    pub mem_total: Option<u64>,
    pub mem_available: Option<u64>,
    /// The memory cgroup's limit and current usage, bytes, when it has a limit.
    pub cgroup_limit: Option<u64>,
    pub cgroup_usage: Option<u64>,
    /// Hardware threads the OS reports to this process; set only for the live system.
    pub parallelism: Option<usize>,
    /// Files that were unreadable or odd, and what was assumed instead.
    pub notes: Vec<String>,
}

impl Facts {
    /// Reads the facts under `root` (`/` on a live system).
    pub fn read(root: &Path) -> Facts {
        let mut r = Reader {
            root: root.to_path_buf(),
            notes: Vec::new(),
        };
        let mut f = Facts {
            board_model: r.dt_model(),
            board_model_from: "/proc/device-tree/model",
            android: r.android(),
            ..Facts::default()
        };
        let cpuinfo = r.text("proc/cpuinfo");
        let parsed = cpuinfo.as_deref().map(parse_cpuinfo).unwrap_or_default();
        f.arch = cpuinfo.as_ref().map(|_| parsed.arch);
        f.features_from = "cpuinfo";
        f.cpu_model = parsed.model.clone();
        if f.board_model.is_none() && parsed.board.is_some() {
            f.board_model = parsed.board.clone();
            f.board_model_from = "the Model line of /proc/cpuinfo";
        }
        f.features = parsed.common_features();
        r.cpus(&mut f, &parsed);
        r.meminfo(&mut f);
        r.cgroup(&mut f);
        f.notes = r.notes;
        f
    }

    /// Whether every listed CPU has `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }
}

/// One `processor` block of `/proc/cpuinfo`.
#[derive(Clone, Debug, Default)]
struct ProcBlock {
    id: Option<usize>,
    implementer: Option<u32>,
    part: Option<u32>,
    features: Option<BTreeSet<String>>,
}

#[derive(Debug)]
struct CpuInfo {
    arch: CpuArch,
    model: Option<String>,
    board: Option<String>,
    blocks: Vec<ProcBlock>,
}

impl Default for CpuInfo {
    fn default() -> CpuInfo {
        CpuInfo {
            arch: CpuArch::Unknown,
            model: None,
            board: None,
            blocks: Vec::new(),
        }
    }
}

impl CpuInfo {
    fn common_features(&self) -> BTreeSet<String> {
        let mut sets = self.blocks.iter().filter_map(|b| b.features.as_ref());
        let Some(first) = sets.next() else {
            return BTreeSet::new();
        };
        sets.fold(first.clone(), |acc, s| {
            acc.intersection(s).cloned().collect()
        })
    }
}

fn parse_hex(v: &str) -> Option<u32> {
    let v = v.trim();
    let digits = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// Parses `/proc/cpuinfo` of x86 (`flags`) and ARM (`Features`, `CPU part`) kernels. Lines
/// without a colon and values that do not parse are skipped.
fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut block: Option<ProcBlock> = None;
    let (mut x86, mut asimd, mut arm32) = (false, false, false);
    let mut arch_line = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            if let Some(b) = block.take() {
                info.blocks.push(b);
            }
            // 32-bit ARM kernels of old wrote `Processor : ARMv7 …` (capital P) too; only the
            // numbered form starts a block.
            block = Some(ProcBlock {
                id: value.parse().ok(),
                ..ProcBlock::default()
            });
            continue;
        }
        let b = block.get_or_insert_with(ProcBlock::default);
        match key {
            "flags" => {
                x86 = true;
                b.features = Some(value.split_whitespace().map(str::to_string).collect());
            }
            "Features" => {
                let set: BTreeSet<String> = value.split_whitespace().map(str::to_string).collect();
                asimd |= set.contains("asimd");
                arm32 |= set.contains("neon") || set.contains("vfp");
                b.features = Some(set);
            }
            "CPU implementer" => b.implementer = parse_hex(value),
            "CPU part" => b.part = parse_hex(value),
            "CPU architecture" => arch_line = Some(value.to_string()),
            "model name" if info.model.is_none() && !value.is_empty() => {
                info.model = Some(value.to_string())
            }
            "Model" if !value.is_empty() => info.board = Some(value.to_string()),
            _ => {}
        }
    }
    if let Some(b) = block {
        info.blocks.push(b);
    }
    info.arch = if x86 {
        // 32-bit x86 has no `lm` (long mode) flag.
        if info.common_features().contains("lm") {
            CpuArch::X86_64
        } else {
            CpuArch::Other
        }
    } else if asimd || arch_line.as_deref() == Some("8") {
        CpuArch::Aarch64
    } else if arm32 || arch_line.as_deref().is_some_and(|a| a.starts_with('7')) {
        CpuArch::Arm32
    } else if info.blocks.iter().any(|b| b.id.is_some()) {
        CpuArch::Other
    } else {
        CpuArch::Unknown
    };
    info
}

/// Parses a CPU list such as `0-3,6,8-9` (sysfs `online`, `cpu_atom/cpus`).
fn parse_cpu_list(text: &str) -> Option<BTreeSet<usize>> {
    let mut set = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n: usize = part.trim().parse().ok()?;
                (n, n)
            }
        };
        if a > b || b >= MAX_CPUS {
            return None;
        }
        set.extend(a..=b);
    }
    (!set.is_empty()).then_some(set)
}

/// A `/proc/meminfo` value (`MemTotal:  3882684 kB`), in bytes.
fn meminfo_value(text: &str, key: &str) -> Option<Result<u64, String>> {
    let line = text
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(key))?;
    let value = line.split_once(':').map_or("", |(_, v)| v.trim());
    let mut words = value.split_whitespace();
    let parsed = match (words.next().map(str::parse::<u64>), words.next()) {
        (Some(Ok(n)), Some("kB")) => n.checked_mul(1024),
        (Some(Ok(n)), None) => Some(n),
        _ => None,
    };
    Some(parsed.ok_or_else(|| format!("`{}`", line.trim())))
}

struct Reader {
    root: PathBuf,
    notes: Vec<String>,
}

impl Reader {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// A file's text (invalid UTF-8 replaced); `None` when it is missing or unreadable, with a
    /// note unless it simply does not exist.
    fn text(&mut self, rel: &str) -> Option<String> {
        let path = self.path(rel);
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut buf = Vec::new();
            f.take(MAX_FILE).read_to_end(&mut buf).map(|_| buf)
        });
        match read {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.notes.push(format!("/{rel}: {e}"));
                None
            }
        }
    }

    /// A file holding one number.
    fn number(&mut self, rel: &str) -> Option<i64> {
        let text = self.text(rel)?;
        match text.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.notes
                    .push(format!("/{rel}: `{}` is not a number", text.trim()));
                None
            }
        }
    }

    fn dt_model(&mut self) -> Option<String> {
        let text = self.text("proc/device-tree/model")?;
        let model = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!model.is_empty()).then(|| model.to_string())
    }

    fn android(&mut self) -> Option<String> {
        if !self.exists("system/build.prop") {
            return None;
        }
        // Apps may not read the file on recent Android; its presence is enough.
        let release = self.text("system/build.prop").and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("ro.build.version.release=")
                    .or_else(|| l.strip_prefix("ro.system.build.version.release="))
                    .map(|v| v.trim().to_string())
            })
        });
        Some(match release {
            Some(r) => format!("/system/build.prop (Android {r})"),
            None => "/system/build.prop".to_string(),
        })
    }

    /// The online CPUs with their part, maximum frequency and core.
    fn cpus(&mut self, f: &mut Facts, info: &CpuInfo) {
        let listed: BTreeSet<usize> = info.blocks.iter().filter_map(|b| b.id).collect();
        let ids = if let Some(set) = self.list("sys/devices/system/cpu/online") {
            f.cpus_from = "/sys/devices/system/cpu/online";
            set
        } else if !listed.is_empty() {
            f.cpus_from = "/proc/cpuinfo";
            listed
        } else {
            f.cpus_from = "cpu* directories";
            self.cpu_dirs()
        };
        let parts: BTreeMap<usize, &ProcBlock> = info
            .blocks
            .iter()
            .filter_map(|b| Some((b.id?, b)))
            .collect();
        let atoms = self.list("sys/devices/cpu_atom/cpus").unwrap_or_default();
        let mut odd_freq = Vec::new();
        for id in ids.into_iter().filter(|&id| id < MAX_CPUS) {
            let base = format!("sys/devices/system/cpu/cpu{id}");
            let max_khz = match self.number(&format!("{base}/cpufreq/cpuinfo_max_freq")) {
                Some(k) if k > 0 => Some(k as u64),
                Some(k) => {
                    odd_freq.push(format!("cpu{id}: {k} kHz"));
                    None
                }
                None => None,
            };
            let core = self
                .list(&format!("{base}/topology/thread_siblings_list"))
                .and_then(|s| s.first().copied());
            let block = parts.get(&id);
            f.cpus.push(Cpu {
                id,
                implementer: block.and_then(|b| b.implementer),
                part: block.and_then(|b| b.part),
                max_khz,
                core,
                e_core: atoms.contains(&id),
            });
        }
        if !odd_freq.is_empty() {
            self.notes.push(format!(
                "ignored impossible maximum frequencies ({})",
                odd_freq.join(", ")
            ));
        }
    }

    fn list(&mut self, rel: &str) -> Option<BTreeSet<usize>> {
        let text = self.text(rel)?;
        let set = parse_cpu_list(&text);
        if set.is_none() {
            self.notes
                .push(format!("/{rel}: `{}` is not a CPU list", text.trim()));
        }
        set
    }

    fn cpu_dirs(&mut self) -> BTreeSet<usize> {
        let Ok(dir) = std::fs::read_dir(self.path("sys/devices/system/cpu")) else {
            return BTreeSet::new();
        };
        dir.filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_prefix("cpu")?.parse().ok()
        })
        .collect()
    }

    fn meminfo(&mut self, f: &mut Facts) {
        let Some(text) = self.text("proc/meminfo") else {
            return;
        };
        for (key, slot) in [
            ("MemTotal", &mut f.mem_total),
            ("MemAvailable", &mut f.mem_available),
        ] {
            match meminfo_value(&text, key) {
                Some(Ok(v)) => *slot = Some(v),
                Some(Err(line)) => self
                    .notes
                    .push(format!("/proc/meminfo: cannot read {line}")),
                None => {}
            }
        }
    }

    /// The memory cgroup of this process (v2 `memory.max`, else v1 `memory.limit_in_bytes`).
    fn cgroup(&mut self, f: &mut Facts) {
        let own = self.text("proc/self/cgroup").unwrap_or_default();
        let mut v2 = None;
        let mut v1 = None;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let Some(path) = path else { continue };
            let path = path.trim().trim_start_matches('/');
            match controllers {
                Some("") => v2 = Some(path.to_string()),
                Some(c) if c.split(',').any(|c| c == "memory") => v1 = Some(path.to_string()),
                _ => {}
            }
        }
        let join = |base: &str, path: &str, file: &str| {
            let mut p = base.to_string();
            for part in [path, file] {
                if !part.is_empty() {
                    p.push('/');
                    p.push_str(part);
                }
            }
            p
        };
        // The process's own group first, then the root (inside a container, the root of the
        // cgroup namespace is the container's group).
        let mut candidates = Vec::new();
        if let Some(p) = &v2 {
            candidates.push((join("sys/fs/cgroup", p, "memory.max"), "memory.current"));
        }
        candidates.push(("sys/fs/cgroup/memory.max".to_string(), "memory.current"));
        if let Some(p) = &v1 {
            candidates.push((
                join("sys/fs/cgroup/memory", p, "memory.limit_in_bytes"),
                "memory.usage_in_bytes",
            ));
        }
        candidates.push((
            "sys/fs/cgroup/memory/memory.limit_in_bytes".to_string(),
            "memory.usage_in_bytes",
        ));
        for (limit_file, usage_name) in candidates {
            let Some(text) = self.text(&limit_file) else {
                continue;
            };
            let text = text.trim();
            if text == "max" {
                return;
            }
            let Ok(limit) = text.parse::<u64>() else {
                self.notes
                    .push(format!("/{limit_file}: `{text}` is not a limit"));
                return;
            };
            // cgroup v1 writes "no limit" as the largest page-aligned i64.
            if limit >= (1 << 62) {
                return;
            }
            let usage_file = limit_file
                .rsplit_once('/')
                .map_or(usage_name.to_string(), |(dir, _)| {
                    format!("{dir}/{usage_name}")
                });
            f.cgroup_limit = Some(limit);
            f.cgroup_usage = self.number(&usage_file).and_then(|u| u64::try_from(u).ok());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,6,8-9\n"),
            Some([0, 1, 2, 3, 6, 8, 9].into_iter().collect())
        );
        assert_eq!(parse_cpu_list("0"), Some([0].into_iter().collect()));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(parse_cpu_list("zero"), None);
        assert_eq!(parse_cpu_list(""), None);
    }

    #[test]
    fn meminfo_values() {
        let t = "MemTotal:        3882684 kB\nMemAvailable:    lots kB\nHugePages_Total: 0\n";
        assert_eq!(meminfo_value(t, "MemTotal"), Some(Ok(3882684 * 1024)));
        assert!(matches!(meminfo_value(t, "MemAvailable"), Some(Err(_))));
        assert_eq!(meminfo_value(t, "HugePages_Total"), Some(Ok(0)));
        assert_eq!(meminfo_value(t, "MemFree"), None);
    }

    #[test]
    fn cpuinfo_of_a_32_bit_pi_os() {
        let t = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\n\
                 Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt\n\
                 CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xd08\n";
        let info = parse_cpuinfo(t);
        assert_eq!(info.arch, CpuArch::Arm32);
        assert_eq!(info.blocks[0].part, Some(0xd08));
    }

    #[test]
    fn features_are_those_of_every_processor() {
        let t = "processor : 0\nFeatures : fp asimd asimddp i8mm\n\n\
                 processor : 1\nFeatures : fp asimd asimddp\n";
        let info = parse_cpuinfo(t);
        assert_eq!(info.arch, CpuArch::Aarch64);
        let f = info.common_features();
        assert!(f.contains("asimddp") && !f.contains("i8mm"));
    }
}
