//! Board profiles (Raspberry Pi, Android phones, laptops) and run-time detection of the
//! machine Tern runs on. For now: the CPU facts the runtime needs to choose a thread count.

use std::collections::HashSet;
use std::fs;

/// Physical cores of this machine (not hardware threads), read from Linux's topology files;
/// falls back to the number of hardware threads where those are unreadable.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = HashSet::new();
    for cpu in 0..logical {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| fs::read_to_string(format!("{base}/{f}")).ok();
        match (read("physical_package_id"), read("core_id")) {
            (Some(p), Some(c)) => {
                cores.insert((p.trim().to_string(), c.trim().to_string()));
            }
            _ => return logical,
        }
    }
    cores.len().clamp(1, logical)
}
