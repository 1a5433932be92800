//! Detection on the recorded `/proc` and `/sys` trees under `boards/fixtures/`.

use std::path::{Path, PathBuf};

use tern_boards::{
    detect_in, guard, select_in, Board, KernelFamily, KvType, MemoryFit, MemoryNeed, UnknownBoard,
    PROFILES,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn board(name: &str) -> Board {
    let b = detect_in(&fixture(name));
    // Every run prints what `tern boards` would, to read with --nocapture.
    println!("== {name}\n{b}");
    b
}

const GIB: u64 = 1 << 30;
const KIB: u64 = 1024;

#[test]
fn rpi4_is_neon_without_dotprod_on_4_threads() {
    let b = board("rpi4");
    assert_eq!(b.name(), "rpi4");
    assert!(
        b.why.contains("Raspberry Pi 4 Model B Rev 1.5"),
        "{}",
        b.why
    );
    let s = &b.settings;
    assert_eq!(s.kernel.value, KernelFamily::Neon);
    assert!(s.kernel.why.contains("lacks asimddp"), "{}", s.kernel.why);
    assert_eq!(s.threads.value, 4);
    assert_eq!(
        s.threads.why, "4 × Cortex-A72 at 1800 MHz, no little cores",
        "{}",
        s.threads.why
    );
    // 80% of MemAvailable (3452316 kB).
    assert_eq!(s.memory_budget.value, 3452316 * KIB * 4 / 5);
    assert_eq!(s.kv.value.window, 1020);
    assert_eq!(s.kv.value.kv_type, KvType::F16);
    assert!(s.repack.value);
    assert!(b.facts.notes.is_empty(), "{:?}", b.facts.notes);
}

#[test]
fn rpi4_with_a_32_bit_os_runs_the_scalar_kernels() {
    let b = board("rpi4-32bit");
    assert_eq!(b.name(), "rpi4");
    assert_eq!(b.settings.kernel.value, KernelFamily::Scalar);
    assert!(b.settings.kernel.why.contains("32-bit"));
    assert_eq!(b.settings.threads.value, 4);
}

#[test]
fn rpi5_has_dotprod() {
    let b = board("rpi5");
    assert_eq!(b.name(), "rpi5");
    assert_eq!(b.settings.kernel.value, KernelFamily::NeonDotprod);
    assert_eq!(b.settings.threads.value, 4);
    assert!(b.settings.threads.why.contains("Cortex-A76 at 2400 MHz"));
    assert_eq!(b.settings.kv.value.window, 2044);
}

#[test]
fn zero2w_keeps_weights_in_place_and_a_small_cache() {
    let b = board("rpi-zero2w");
    assert_eq!(b.name(), "rpi-zero2w");
    let s = &b.settings;
    assert_eq!(s.kernel.value, KernelFamily::Neon);
    assert_eq!(s.threads.value, 4);
    assert!(s.threads.why.contains("4 × Cortex-A53 at 1000 MHz"));
    // 70% of MemAvailable (318736 kB).
    assert_eq!(s.memory_budget.value, 318736 * KIB * 7 / 10);
    assert_eq!(s.kv.value.kv_type, KvType::Q8_0);
    assert_eq!(s.kv.value.sinks + s.kv.value.window, 512);
    assert!(!s.repack.value);
}

#[test]
fn android_with_three_clusters_uses_the_big_and_mid_cores_only() {
    let b = board("android-pixel6");
    assert_eq!(b.name(), "android-arm64");
    assert!(b.why.contains("Android 14"), "{}", b.why);
    let s = &b.settings;
    // Tensor G1 is Armv8.2: dotprod, no i8mm, below the profile's ceiling.
    assert_eq!(s.kernel.value, KernelFamily::NeonDotprod);
    assert!(s.kernel.why.contains("lacks i8mm"));
    // 2 × X1 + 2 × A76; the 4 × A55 stay idle.
    assert_eq!(s.threads.value, 4);
    assert_eq!(
        s.threads.why,
        "2 × Cortex-X1 at 2802 MHz, 2 × Cortex-A76 at 2253 MHz; 4 × Cortex-A55 at 1803 MHz are \
         little in-order cores, left idle (work on little cores collapses speed)"
    );
    // Half of MemAvailable.
    assert_eq!(s.memory_budget.value, 3261880 * KIB / 2);
}

#[test]
fn android_armv9_gets_i8mm_and_skips_its_little_cores() {
    let b = board("android-pixel8");
    assert_eq!(b.name(), "android-arm64");
    assert_eq!(b.settings.kernel.value, KernelFamily::NeonI8mm);
    // 1 × X3 + 4 × A715; not only the single core at the highest frequency.
    assert_eq!(b.settings.threads.value, 5);
    assert!(b.settings.threads.why.contains("4 × Cortex-A510"));
}

#[test]
fn x86_laptop_counts_physical_cores() {
    let b = board("x86-64-laptop");
    assert_eq!(b.name(), "x86-64-avx2");
    assert_eq!(b.settings.kernel.value, KernelFamily::Avx2);
    assert_eq!(b.settings.threads.value, 8);
    assert!(b.settings.threads.why.contains("16 CPUs at 4507 MHz"));
    assert!(b.settings.threads.why.contains("8 physical cores"));
    assert_eq!(b.facts.cgroup_limit, None, "memory.max is `max`");
}

#[test]
fn x86_hybrid_uses_the_p_cores_only() {
    let b = board("x86-64-hybrid");
    assert_eq!(b.name(), "x86-64-avx2");
    // Alder Lake's flags list avx_vnni; the Ryzen 5800U's and the EPYC's (above, below) do not.
    assert_eq!(b.settings.kernel.value, KernelFamily::AvxVnni);
    assert_eq!(b.settings.threads.value, 2);
    assert!(b.settings.threads.why.contains("E-cores"));
    // In a container limited to 4 GiB with 1 GiB in use: 80% of the 3 GiB left, not of the
    // host's 12.4 GiB available.
    assert_eq!(b.facts.cgroup_limit, Some(4 * GIB));
    assert_eq!(b.settings.memory_budget.value, 3 * GIB * 4 / 5);
    assert!(b.settings.memory_budget.why.contains("cgroup"));
}

#[test]
fn this_machine() {
    let b = board("this-machine");
    // The development VM: an AMD EPYC with 2 vCPUs, AVX2, no cpufreq, no device tree.
    assert_eq!(b.name(), "x86-64-avx2");
    assert_eq!(b.settings.kernel.value, KernelFamily::Avx2);
    assert_eq!(b.settings.threads.value, 2);
    assert!(b.settings.threads.why.contains("no cpufreq"));
    assert!(b.settings.memory_budget.value > GIB);
}

#[test]
fn odd_files_fall_back_with_notes() {
    let b = board("odd");
    assert_eq!(b.name(), "generic");
    let s = &b.settings;
    assert_eq!(s.kernel.value, KernelFamily::Scalar);
    // `online` is garbage and cpuinfo numbers no processor: the cpu* directories count.
    assert_eq!(b.facts.cpus_from, "cpu* directories");
    assert_eq!(s.threads.value, 2);
    // meminfo unreadable: half of the generic profile's 1 GiB, 80% of that.
    assert_eq!(s.memory_budget.value, GIB / 2 * 4 / 5);
    let notes = b.facts.notes.join("\n");
    for needle in [
        "online",
        "MemTotal",
        "MemAvailable",
        "fast",
        "0 kHz",
        "memory.max",
    ] {
        assert!(notes.contains(needle), "no note about {needle}:\n{notes}");
    }
}

#[test]
fn missing_tree_falls_back_to_generic() {
    let b = board("does-not-exist");
    assert_eq!(b.name(), "generic");
    assert_eq!(b.settings.kernel.value, KernelFamily::Scalar);
    assert_eq!(b.settings.threads.value, 1);
    assert!(b.settings.memory_budget.value > 0);
    assert!(b.why.contains("nothing recognisable"), "{}", b.why);
}

#[test]
fn board_override_everywhere() {
    // --board rpi4 on an x86 laptop: the Pi 4's settings, explained.
    let b = select_in(&fixture("x86-64-laptop"), Some("rpi4")).unwrap();
    println!("{b}");
    assert_eq!(b.name(), "rpi4");
    assert!(b.forced);
    assert_eq!(b.settings.kernel.value, KernelFamily::Neon);
    assert!(b.settings.kernel.why.contains("x86-64"));
    assert_eq!(b.settings.threads.value, 4);
    assert!(b.settings.threads.why.contains("--board"));
    // The laptop's 11.6 GiB available are capped at the largest Pi 4's 8 GiB.
    assert_eq!(b.settings.memory_budget.value, 8 * GIB * 4 / 5);
    assert_eq!(
        KernelFamily::Neon.pick(&["scalar", "avx2"]),
        "scalar",
        "the runtime meets the ceiling with what the CPU runs"
    );

    // --board on the board it names is the detection, with both reasons.
    let b = select_in(&fixture("rpi4"), Some("rpi4")).unwrap();
    assert_eq!(b.settings, detect_in(&fixture("rpi4")).settings);
    assert!(b.why.contains("also detected"));

    // A Pi 4 profile forced on a Pi 5 stays below dotprod.
    let b = select_in(&fixture("rpi5"), Some("rpi4")).unwrap();
    assert_eq!(b.settings.kernel.value, KernelFamily::Neon);

    // Generic on a phone: the scalar kernels, the phone's own big cores.
    let b = select_in(&fixture("android-pixel6"), Some("generic")).unwrap();
    assert_eq!(b.settings.kernel.value, KernelFamily::Scalar);
    assert_eq!(b.settings.threads.value, 4);

    // auto and None detect.
    for name in [None, Some("auto")] {
        let b = select_in(&fixture("rpi5"), name).unwrap();
        assert_eq!(b.name(), "rpi5");
        assert!(!b.forced);
    }

    // Every profile can be forced anywhere.
    for p in PROFILES {
        let b = select_in(&fixture("odd"), Some(p.name)).unwrap();
        assert_eq!(b.name(), p.name);
        assert!(b.settings.threads.value >= 1);
    }
}

#[test]
fn unknown_board_lists_the_names() {
    let err = select_in(&fixture("rpi4"), Some("rpi3")).unwrap_err();
    assert_eq!(
        err,
        UnknownBoard {
            name: "rpi3".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown board `rpi3`; known boards: auto, rpi4, rpi5, rpi-zero2w, android-arm64, \
         x86-64-avx2, generic-aarch64, generic"
    );
}

#[test]
fn zero2w_guard_shrinks_the_window_for_a_larger_model() {
    let b = board("rpi-zero2w");
    let kv = b.settings.kv.value;
    // A 1B-class model (16 layers, 8 KV heads of 64 values) of 180 MiB at the board's q8_0.
    let per_token = kv.kv_type.bytes_per_token(16, 512).unwrap();
    assert_eq!(per_token, 2 * 16 * 16 * 34);
    let need = MemoryNeed {
        model_bytes: 180 << 20,
        other_bytes: 8 << 20,
        kv_bytes_per_token: per_token,
        sinks: kv.sinks,
        window: 4092,
        batch: 64,
    };
    let budget = b.settings.memory_budget.value;
    match b.guard(&need).unwrap() {
        MemoryFit::Shrunk { window, bytes, .. } => {
            assert!(window < 4092 && bytes <= budget);
            assert!(need.bytes_with(window + 1) > budget);
        }
        fit => panic!("expected a shrunk window: {fit:?}"),
    }
    // The board's own window fits as is.
    let need = MemoryNeed {
        window: kv.window,
        ..need
    };
    assert!(matches!(guard(&need, budget), Ok(MemoryFit::Fits { .. })));
    // A 1.2 GB model does not fit at all.
    let need = MemoryNeed {
        model_bytes: 1200 << 20,
        ..need
    };
    let err = b.guard(&need).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn live_detection_matches_this_program() {
    let b = tern_boards::detect();
    println!("== live\n{b}");
    assert!(b.settings.threads.value >= 1);
    assert!(b.settings.memory_budget.value > 0);
    // Under qemu-user /proc/cpuinfo is the host's: the program's own architecture wins.
    let isa = b.settings.kernel.value.isa();
    if cfg!(target_arch = "x86_64") {
        assert_ne!(isa, Some(tern_boards::CpuArch::Aarch64));
    }
    if cfg!(target_arch = "aarch64") {
        assert_ne!(isa, Some(tern_boards::CpuArch::X86_64), "{b}");
    }
}
