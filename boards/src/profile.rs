//! The board profiles: one row of data per device class, no per-board code paths.

use std::fmt;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A family of matrix kernels, named as `tern_kernels::KernelSet::name` names its sets.
///
/// A board's family is a ceiling: the runtime uses the best set the CPU really runs that is
/// not above it ([`KernelFamily::pick`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// The portable reference (armv7, x86 without AVX2, unknown CPUs).
    Scalar,
    /// aarch64 Advanced SIMD (Cortex-A53/A72 class).
    Neon,
    /// NEON plus the `sdot`/`udot` instructions (Armv8.2 dotprod; Cortex-A55/A76 and later).
    NeonDotprod,
    /// Dotprod plus `smmla` (Armv8.6 i8mm; Cortex-A510/A710/X2 and later).
    NeonI8mm,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// AVX2 plus AVX-VNNI's `vpdpbusd` (Intel Alder Lake, Sapphire Rapids and later; AMD
    /// Zen 5).
    AvxVnni,
}

impl KernelFamily {
    /// The kernel set's name in `tern-kernels` (also accepted by `TERN_KERNELS`).
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Scalar => "scalar",
            KernelFamily::Neon => "neon",
            KernelFamily::NeonDotprod => "dotprod",
            KernelFamily::NeonI8mm => "i8mm",
            KernelFamily::Avx2 => "avx2",
            KernelFamily::AvxVnni => "avxvnni",
        }
    }

    /// A short description for people.
    pub fn describe(self) -> &'static str {
        match self {
            KernelFamily::Scalar => "scalar reference",
            KernelFamily::Neon => "NEON without dotprod",
            KernelFamily::NeonDotprod => "NEON with dotprod (sdot)",
            KernelFamily::NeonI8mm => "NEON with dotprod and i8mm (smmla)",
            KernelFamily::Avx2 => "AVX2 + FMA + F16C",
            KernelFamily::AvxVnni => "AVX2 + FMA + F16C with AVX-VNNI (vpdpbusd)",
        }
    }

    /// This family and every family below it, best first; the scalar reference is always last.
    pub fn fallbacks(self) -> &'static [KernelFamily] {
        use KernelFamily::*;
        match self {
            Scalar => &[Scalar],
            Neon => &[Neon, Scalar],
            NeonDotprod => &[NeonDotprod, Neon, Scalar],
            NeonI8mm => &[NeonI8mm, NeonDotprod, Neon, Scalar],
            Avx2 => &[Avx2, Scalar],
            AvxVnni => &[AvxVnni, Avx2, Scalar],
        }
    }

    /// The best of `available` (kernel set names, as `tern_kernels::KernelSet::available`
    /// lists them) that is not above this ceiling; `"scalar"` when none is, so a Pi profile
    /// forced on an x86 machine runs the reference kernels.
    pub fn pick<'a>(self, available: &[&'a str]) -> &'a str {
        self.fallbacks()
            .iter()
            .find_map(|f| available.iter().find(|&&a| a == f.name()).copied())
            .unwrap_or("scalar")
    }

    /// The lower of two families of one instruction set; the scalar reference when they
    /// belong to different instruction sets.
    pub fn min(self, other: KernelFamily) -> KernelFamily {
        if self.fallbacks().contains(&other) {
            other
        } else if other.fallbacks().contains(&self) {
            self
        } else {
            KernelFamily::Scalar
        }
    }

    /// The instruction set the family runs on, `None` for the scalar reference.
    pub fn isa(self) -> Option<CpuArch> {
        match self {
            KernelFamily::Scalar => None,
            KernelFamily::Neon | KernelFamily::NeonDotprod | KernelFamily::NeonI8mm => {
                Some(CpuArch::Aarch64)
            }
            KernelFamily::Avx2 | KernelFamily::AvxVnni => Some(CpuArch::X86_64),
        }
    }
}

impl fmt::Display for KernelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU architecture seen in `/proc/cpuinfo`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CpuArch {
    Aarch64,
    /// 32-bit ARM (armv7): a Pi running a 32-bit OS. Tern's NEON kernels are aarch64 only.
    Arm32,
    X86_64,
    /// Another architecture (riscv64, 32-bit x86 …).
    Other,
    /// `/proc/cpuinfo` could not be read or said nothing recognisable.
    Unknown,
}

impl CpuArch {
    pub fn name(self) -> &'static str {
        match self {
            CpuArch::Aarch64 => "aarch64",
            CpuArch::Arm32 => "32-bit ARM",
            CpuArch::X86_64 => "x86-64",
            CpuArch::Other => "another architecture",
            CpuArch::Unknown => "an unknown architecture",
        }
    }
}

/// Element type of cached keys and values, named as `tern::cache::KvType` names them
/// (`name()` parses into it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
    /// 8-bit blocks of 32 values (34 bytes each); needs heads of a multiple of 32 values.
    Q8_0,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Bytes of `values` keys (or values) of this type; `None` when q8_0 cannot hold them
    /// (not a multiple of 32).
    pub fn bytes_for(self, values: u64) -> Option<u64> {
        match self {
            KvType::F32 => values.checked_mul(4),
            KvType::F16 => values.checked_mul(2),
            KvType::Q8_0 if values.is_multiple_of(32) => (values / 32).checked_mul(34),
            KvType::Q8_0 => None,
        }
    }

    /// Bytes one token occupies in the cache: keys and values of `kv_dim` values
    /// (`n_head_kv * head_dim`) in each of `n_layer` layers.
    pub fn bytes_per_token(self, n_layer: u64, kv_dim: u64) -> Option<u64> {
        self.bytes_for(kv_dim)?.checked_mul(2)?.checked_mul(n_layer)
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<KvType, String> {
        match s {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(format!("unknown KV type `{s}` (expected f32, f16 or q8_0)")),
        }
    }
}

/// One device class and the settings Tern uses on it.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// The name `--board` takes.
    pub name: &'static str,
    /// What the board is, for people.
    pub title: &'static str,
    /// Its CPU, for people.
    pub cpu: &'static str,
    /// Prefixes of `/proc/device-tree/model` that identify the board.
    pub dt_models: &'static [&'static str],
    /// The best kernel family the board's CPU runs; detection may lower it.
    pub kernel: KernelFamily,
    /// Performance cores of the board when they cannot be read from the machine (a profile
    /// forced on another machine); `None`: use the machine's own.
    pub cores: Option<usize>,
    /// Largest RAM the board ships with; a forced profile caps the machine's memory there.
    pub max_ram: Option<u64>,
    /// Memory assumed when `/proc/meminfo` cannot be read (the smallest variant).
    pub fallback_ram: u64,
    /// Share of the available memory Tern may use, in percent.
    pub budget_percent: u8,
    /// Why that share.
    pub budget_why: &'static str,
    /// Default attention sinks and window of the KV cache.
    pub sinks: usize,
    pub window: usize,
    pub kv_type: KvType,
    /// Why that cache.
    pub kv_why: &'static str,
    /// Whether weights may be repacked into interleaved copies at load (costs resident memory).
    pub repack: bool,
    /// Why (not).
    pub repack_why: &'static str,
}

/// Linux desktops and boards: MemAvailable already excludes what the kernel needs, but it is
/// an estimate and the page cache and other programs grow.
const LINUX_BUDGET: u8 = 80;
const LINUX_BUDGET_WHY: &str = "the rest is left for the OS, other programs and the page cache";

/// Every profile. Names are unique; `generic` is last and matches anything.
pub static PROFILES: &[Profile] = &[
    Profile {
        name: "rpi4",
        title: "Raspberry Pi 4",
        cpu: "4 × Cortex-A72, BCM2711",
        dt_models: &[
            "Raspberry Pi 4",
            "Raspberry Pi Compute Module 4",
            "Raspberry Pi 400",
        ],
        kernel: KernelFamily::Neon,
        cores: Some(4),
        max_ram: Some(8 * GIB),
        fallback_ram: GIB,
        budget_percent: LINUX_BUDGET,
        budget_why: LINUX_BUDGET_WHY,
        sinks: 4,
        window: 1020,
        kv_type: KvType::F16,
        kv_why:
            "1024 tokens of f16: attention over a longer window costs the A72 more time per token",
        repack: true,
        repack_why: "the 2, 4 and 8 GB boards have room for interleaved weight copies",
    },
    Profile {
        name: "rpi5",
        title: "Raspberry Pi 5",
        cpu: "4 × Cortex-A76, BCM2712",
        dt_models: &[
            "Raspberry Pi 5",
            "Raspberry Pi Compute Module 5",
            "Raspberry Pi 500",
        ],
        kernel: KernelFamily::NeonDotprod,
        cores: Some(4),
        max_ram: Some(16 * GIB),
        fallback_ram: 2 * GIB,
        budget_percent: LINUX_BUDGET,
        budget_why: LINUX_BUDGET_WHY,
        sinks: 4,
        window: 2044,
        kv_type: KvType::F16,
        kv_why: "2048 tokens of f16: the A76 and LPDDR4X-4267 keep a longer window fast",
        repack: true,
        repack_why: "2 to 16 GB leave room for interleaved weight copies",
    },
    Profile {
        name: "rpi-zero2w",
        title: "Raspberry Pi Zero 2 W",
        cpu: "4 × Cortex-A53, RP3A0",
        dt_models: &["Raspberry Pi Zero 2"],
        kernel: KernelFamily::Neon,
        cores: Some(4),
        max_ram: Some(512 * MIB),
        fallback_ram: 512 * MIB,
        budget_percent: 70,
        budget_why:
            "512 MB total: the OS and its page cache need a larger share than on bigger boards",
        sinks: 4,
        window: 508,
        kv_type: KvType::Q8_0,
        kv_why: "512 tokens of q8_0: half the bytes of f16, for 512 MB of RAM",
        repack: false,
        repack_why:
            "512 MB cannot hold a second copy of the weights: they are used in place from the map",
    },
    Profile {
        name: "android-arm64",
        title: "Android phone",
        cpu: "arm64, big.LITTLE Cortex-A/X clusters",
        dt_models: &[],
        kernel: KernelFamily::NeonI8mm,
        cores: None,
        max_ram: None,
        fallback_ram: 3 * GIB,
        budget_percent: 50,
        budget_why: "Android's low-memory killer stops apps well before memory runs out",
        sinks: 4,
        window: 2044,
        kv_type: KvType::F16,
        kv_why: "2048 tokens of f16: phones have 4 GB or more",
        repack: true,
        repack_why: "phones have room for interleaved weight copies",
    },
    Profile {
        name: "x86-64-avx2",
        title: "x86-64 laptop or desktop",
        cpu: "AVX2, FMA and F16C (AVX-VNNI where present)",
        dt_models: &[],
        kernel: KernelFamily::AvxVnni,
        cores: None,
        max_ram: None,
        fallback_ram: 4 * GIB,
        budget_percent: LINUX_BUDGET,
        budget_why: LINUX_BUDGET_WHY,
        sinks: 4,
        window: 2044,
        kv_type: KvType::F16,
        kv_why: "2048 tokens of f16: laptops and desktops have the memory and the bandwidth",
        repack: true,
        repack_why: "laptops and desktops have room for interleaved weight copies",
    },
    Profile {
        name: "generic-aarch64",
        title: "aarch64 board or server",
        cpu: "no board profile",
        dt_models: &[],
        kernel: KernelFamily::NeonI8mm,
        cores: None,
        max_ram: None,
        fallback_ram: GIB,
        budget_percent: LINUX_BUDGET,
        budget_why: LINUX_BUDGET_WHY,
        sinks: 4,
        window: 1020,
        kv_type: KvType::F16,
        kv_why: "1024 tokens of f16, the runtime's default",
        repack: true,
        repack_why: "allowed where memory permits",
    },
    Profile {
        name: "generic",
        title: "any other machine",
        cpu: "portable scalar kernels",
        dt_models: &[],
        kernel: KernelFamily::Scalar,
        cores: None,
        max_ram: None,
        fallback_ram: GIB,
        budget_percent: LINUX_BUDGET,
        budget_why: LINUX_BUDGET_WHY,
        sinks: 4,
        window: 1020,
        kv_type: KvType::F16,
        kv_why: "1024 tokens of f16, the runtime's default",
        repack: false,
        repack_why: "unknown machine: weights stay in place in the map",
    },
];

/// A `--board` name that is not a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown board `{name}`; known boards: auto, {}", names().join(", "))]
pub struct UnknownBoard {
    pub name: String,
}

/// Every profile name, in table order.
pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|p| p.name).collect()
}

/// The profile called `name` (exact, as `--board` takes it).
pub fn profile(name: &str) -> Result<&'static Profile, UnknownBoard> {
    PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| UnknownBoard {
            name: name.to_string(),
        })
}

/// The profile `name` refers to, panicking on a name missing from [`PROFILES`]; for the
/// names this crate itself uses.
pub(crate) fn builtin(name: &str) -> &'static Profile {
    profile(name).expect("built-in profile name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut n = names();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), PROFILES.len());
    }

    #[test]
    fn pick_respects_the_ceiling() {
        let arm = ["scalar", "neon", "dotprod", "i8mm"];
        assert_eq!(KernelFamily::Neon.pick(&arm), "neon");
        assert_eq!(KernelFamily::NeonDotprod.pick(&arm), "dotprod");
        assert_eq!(KernelFamily::NeonI8mm.pick(&["scalar", "neon"]), "neon");
        assert_eq!(KernelFamily::Neon.pick(&["scalar", "avx2"]), "scalar");
        assert_eq!(KernelFamily::Avx2.pick(&["scalar", "avx2"]), "avx2");
        assert_eq!(KernelFamily::Avx2.pick(&[]), "scalar");
        let x86 = ["scalar", "avx2", "avxvnni"];
        assert_eq!(KernelFamily::AvxVnni.pick(&x86), "avxvnni");
        assert_eq!(KernelFamily::AvxVnni.pick(&x86[..2]), "avx2");
        assert_eq!(KernelFamily::Avx2.pick(&x86), "avx2");
    }

    #[test]
    fn min_of_families() {
        use KernelFamily::*;
        assert_eq!(NeonI8mm.min(Neon), Neon);
        assert_eq!(Neon.min(NeonDotprod), Neon);
        assert_eq!(Avx2.min(Neon), Scalar);
        assert_eq!(Scalar.min(Avx2), Scalar);
    }

    #[test]
    fn kv_bytes_match_the_block_formats() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64 values.
        assert_eq!(KvType::F16.bytes_per_token(30, 192), Some(2 * 30 * 192 * 2));
        assert_eq!(KvType::F32.bytes_per_token(30, 192), Some(2 * 30 * 192 * 4));
        assert_eq!(KvType::Q8_0.bytes_per_token(30, 192), Some(2 * 30 * 6 * 34));
        assert_eq!(KvType::Q8_0.bytes_for(48), None);
        for t in [KvType::F32, KvType::F16, KvType::Q8_0] {
            assert_eq!(t.name().parse::<KvType>(), Ok(t));
        }
    }
}
