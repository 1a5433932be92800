//! Board profiles (Raspberry Pi 4/5/Zero 2 W, Android phones, x86-64 laptops) and run-time
//! detection of the machine Tern runs on.
//!
//! A [`Profile`] is a row of data: kernel family (a ceiling), threads, memory budget, default
//! KV cache, weight repacking. [`detect`] reads `/proc` and `/sys` (CPU features and parts,
//! per-core maximum frequency to leave little cores idle, the device-tree model, `MemAvailable`)
//! and settles a [`Board`]: the profile plus [`Settings`], each a [`Decision`] carrying the
//! reason for it. [`select`] does the same for a `--board` name. [`guard`] checks at load that
//! the model and its KV cache fit the budget, shrinking the window if they do not.
//!
//! Not here: the kernels themselves (`tern-kernels`; the runtime meets the board's ceiling
//! with what the CPU runs through [`KernelFamily::pick`]) and anything that needs a model.
//! Detection never fails: an unreadable or odd file leaves its fact unknown, a sensible
//! default is used, and [`Facts::notes`] says what happened.

mod board;
mod cores;
mod facts;
mod memory;
mod profile;

pub use board::{
    detect, detect_in, select, select_in, Board, Decision, KvDefaults, Settings, REPACK_MIN_BUDGET,
};
pub use cores::LITTLE_FREQ_PERCENT;
pub use facts::{Cpu, Facts};
pub use memory::{fmt_bytes, guard, MemoryError, MemoryFit, MemoryNeed, MIN_WINDOW};
pub use profile::{names, profile, CpuArch, KernelFamily, KvType, Profile, UnknownBoard, PROFILES};

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
