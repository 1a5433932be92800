//! The process's kernel set: the first choice holds, `TERN_KERNELS` wins, an unknown set is
//! an error. One test: the choice is process-wide state.

use tern_kernels::{choose_kernels, kernels, KernelSet};

#[test]
fn the_first_choice_holds_for_the_process() {
    let available: Vec<&str> = KernelSet::available().iter().map(|s| s.name()).collect();
    let Err(err) = choose_kernels("no-such-set") else {
        panic!("an unknown kernel set was accepted");
    };
    assert!(err.to_string().contains("scalar"), "{err}");

    let best = *available.last().unwrap();
    let env = std::env::var("TERN_KERNELS").ok();
    if let Some(env) = env.filter(|e| available.contains(&e.trim())) {
        // The environment's set wins over any choice.
        assert_eq!(choose_kernels("scalar").unwrap().name(), env.trim());
        assert_eq!(choose_kernels(best).unwrap().name(), env.trim());
        return;
    }
    assert_eq!(choose_kernels("scalar").unwrap().name(), "scalar");
    assert_eq!(kernels().name(), "scalar");
    // A later, different choice (a second model with another board) keeps the first.
    assert_eq!(choose_kernels(best).unwrap().name(), "scalar");
    assert_eq!(kernels().name(), "scalar");
}

/// The x86-64 levels come from CPUID; Linux's `/proc/cpuinfo` flags, read by the kernel from
/// the same CPU, are an independent account of them (AVX-VNNI is read by hand from CPUID, so
/// this is where a wrong bit would show).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn x86_levels_agree_with_proc_cpuinfo() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
    let Some(flags) = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')))
        .map(|(_, f)| f.split_whitespace().collect::<Vec<&str>>())
    else {
        println!("/proc/cpuinfo lists no x86 flags (an emulator's host?): nothing to compare");
        return;
    };
    let names: Vec<&str> = KernelSet::available().iter().map(|s| s.name()).collect();
    let avx2 = ["avx2", "fma", "f16c"].iter().all(|f| flags.contains(f));
    let vnni = avx2 && flags.contains(&"avx_vnni");
    println!("kernel sets: {names:?}; /proc/cpuinfo: avx2+fma+f16c {avx2}, avx_vnni {vnni}");
    assert_eq!(names.contains(&"avx2"), avx2, "{names:?}");
    assert_eq!(names.contains(&"avxvnni"), vnni, "{names:?}");
}
