//! GGUF model files, read in place from a memory map.
//!
//! [`GgufFile::open`] maps the file, parses the header, the metadata and the tensor infos,
//! and validates all of it at once: afterwards every [`TensorView`] is a borrowed slice of
//! the map (weights are never copied) that is known to lie inside the file and to hold a
//! whole number of blocks of its type. Bad input of any kind gives a [`GgufError`] that names
//! the key or tensor at fault; no input makes the reader panic or allocate more than the file
//! can back.
//!
//! Versions 2 and 3 are read (they share one layout); version 1 and big-endian files are
//! refused with a clear error. [`GgufWriter`] writes version 3 files, for tests and tools.
//!
//! Layout, as in ggml's `gguf.h`: magic `GGUF`, version `u32`, tensor count `u64`, metadata
//! count `u64`; the metadata entries (key string, value type `u32`, value); the tensor infos
//! (name string, `n_dims` `u32`, dims `u64` × n_dims, ggml type `u32`, offset `u64`); padding
//! to `general.alignment` (default 32); the data section. Strings are a `u64` length and the
//! bytes; arrays are an element type `u32`, a `u64` length and the elements.

mod error;
mod inspect;
mod reader;
mod value;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

/// Re-exported: the type of every tensor.
pub use tern_kernels::GgmlType;

pub use error::GgufError;
pub use inspect::inspect;
pub use value::{Array, ArrayIter, ByteStrIter, StrIter, Value};
pub use writer::GgufWriter;

/// Where a tensor's data lies and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// In ggml order: `dims[0]` is the contiguous (row) length; a matrix is `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub bytes: u64,
}

impl TensorInfo {
    /// Number of values (the product of the dims; 1 for a scalar). Never overflows for an
    /// info read from a file; saturates for one built by hand.
    pub fn n_elements(&self) -> u64 {
        n_elements(&self.dims)
    }
}

fn n_elements(dims: &[u64]) -> u64 {
    dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
}

/// A tensor's data, borrowed from the mapped file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    /// In ggml order, as in [`TensorInfo::dims`].
    pub dims: &'a [u64],
    /// Exactly `ty.bytes_for(n_elements)` bytes.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of values (the product of the dims; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        n_elements(self.dims)
    }
}

/// The size of a memory page (4 KiB where the system does not say; 16 KiB and 64 KiB pages
/// then merely release less).
#[cfg(unix)]
fn page_size() -> usize {
    // SAFETY: `sysconf` reads a constant of the system; no memory is passed.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Maps `ranges` (of the data section at `base`) into the page tables, `chunk` bytes per
/// call, until `stop` is raised or a call fails. What [`GgufFile::prefault`]'s thread runs.
#[cfg(target_os = "linux")]
fn populate(
    map: &Mmap,
    base: usize,
    ranges: &[std::ops::Range<usize>],
    chunk: usize,
    stop: &std::sync::atomic::AtomicBool,
) {
    for r in ranges {
        let start = base.saturating_add(r.start);
        let end = base.saturating_add(r.end).min(map.len());
        for at in (start..end).step_by(chunk) {
            let len = chunk.min(end - at);
            if stop.load(std::sync::atomic::Ordering::Relaxed)
                || map
                    .advise_range(memmap2::Advice::PopulateRead, at, len)
                    .is_err()
            {
                return;
            }
        }
    }
}

/// Asks that pages of `map` read from disk come in 2 MiB folios (`MADV_HUGEPAGE`: a fault
/// in a huge-page region reads ahead a whole aligned 2 MiB). That is where the page cache
/// keeps them afterwards, and mapping a file cached in 2 MiB folios is nearly free: touching
/// every page of Qwen2.5-Coder-0.5B's 491 MB took 3 ms against 45 ms cached in 4 KiB pages
/// (a fault per 64 KiB, each setting 16 page-table entries), which every new process paid
/// on its first pass. Nothing changes for a file already cached (see [`uncache`]); a
/// refusal (a kernel without transparent huge pages) only loses the gain.
fn huge_folios(map: &Mmap) {
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Drops the pages of `file`, written and synced, from the page cache, so that its first
/// map reads it again in 2 MiB folios ([`GgufFile::open`] asks for them) rather than keeping
/// the 4 KiB pages it was written in for as long as the cache holds them. For a model file
/// just fetched: one read from disk, and every later start maps it nearly for free.
/// Dirty pages stay (sync first); where there is no `posix_fadvise`, nothing is done.
pub fn uncache(file: &File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `posix_fadvise` takes a file descriptor, which `file` keeps open for the
        // call, and a byte range (0, 0: the whole file); no memory is passed.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

/// Whether `ranges` (of the data section at `base`) look to be in the page cache already:
/// 64 pages spread evenly over them all are (`mincore`; asking about every page of a
/// 500 MB file took 20 ms). A file read lately needs no reading ahead, and mapping it ahead
/// only competes with the load and the first pass for the CPUs and the map's lock.
#[cfg(target_os = "linux")]
fn cached(map: &Mmap, base: usize, ranges: &[std::ops::Range<usize>]) -> bool {
    const SAMPLES: usize = 64;
    let page = page_size();
    let total = ranges.iter().fold(0usize, |n, r| n.saturating_add(r.len()));
    let step = (total / SAMPLES).max(1);
    let mut skipped = 0;
    for r in ranges {
        let mut at = r.start + (step - skipped % step) % step;
        while at < r.end {
            let Some(pos) = base.checked_add(at).filter(|&p| p < map.len()) else {
                return false;
            };
            let aligned = pos - pos % page;
            let mut resident = 0u8;
            // SAFETY: `aligned` is page-aligned (the map starts on a page) and inside the
            // map, so one page from it is mapped address space of this process; `mincore`
            // writes one byte, for that one page, to `resident`.
            let rc = unsafe {
                libc::mincore(
                    map.as_ptr().add(aligned) as *mut libc::c_void,
                    1,
                    &mut resident,
                )
            };
            if rc != 0 || resident & 1 == 0 {
                return false;
            }
            at += step;
        }
        skipped += r.len();
    }
    true
}

/// The thread of a [`GgufFile::prefault`]. Dropping this stops the thread at its next chunk
/// and waits for it: the thread shares the map, and a host that frees a model must get the
/// model's address space back at once (a forked child, say, under an address-space limit).
#[derive(Debug)]
pub struct Prefault {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The thread, and the process that started it.
    thread: Option<(std::thread::JoinHandle<()>, u32)>,
}

impl Prefault {
    /// A guard with no thread behind it.
    fn stopped() -> Prefault {
        Prefault {
            stop: Arc::new(true.into()),
            thread: None,
        }
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some((thread, pid)) = self.thread.take() {
            // In a child forked since, the thread does not exist and waiting would never end
            // (there its share of the map stays for the child's life).
            if pid == std::process::id() {
                let _ = thread.join();
            }
        }
    }
}

/// An open, validated GGUF file.
pub struct GgufFile {
    /// Shared with the metadata arrays, which stay packed in it.
    map: Arc<Mmap>,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
    /// Whether the map is of a file (pages released by [`GgufFile::release`] are read back
    /// from it) rather than an anonymous copy (whose released pages would read as zeros).
    file_backed: bool,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("file_size", &self.map.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path`. Only the header, metadata and tensor infos are
    /// parsed; tensor data is touched when it is used.
    ///
    /// The file must not be modified or truncated while the returned value lives: the map
    /// would change under the borrowed views (or the process would get `SIGBUS`).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes change if another process
        // writes or truncates the file while it is mapped, which Rust's `&[u8]` rules do not
        // allow for. Tern maps model files read-only and never writes them; model files are
        // written once (downloads go to a temporary name and are renamed into place), so
        // nothing modifies them while mapped. This is the documented contract of `open`.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        huge_folios(&map);
        Self::from_map(map, true)
    }

    /// Validates a GGUF file held in memory (copied into an anonymous, page-aligned map so
    /// tensor data is aligned as in a mapped file). For tests and tools.
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let io_err = |source| GgufError::Io {
            path: "<memory>".into(),
            source,
        };
        let mut map = MmapMut::map_anon(bytes.len()).map_err(io_err)?;
        map.copy_from_slice(bytes);
        Self::from_map(map.make_read_only().map_err(io_err)?, false)
    }

    fn from_map(map: Mmap, file_backed: bool) -> Result<GgufFile, GgufError> {
        let map = Arc::new(map);
        let p = reader::parse(&map)?;
        Ok(GgufFile {
            version: p.version,
            alignment: p.alignment,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            data_offset: p.data_offset,
            file_backed,
            map,
        })
    }

    /// Gives back to the kernel the resident pages wholly inside `range` of the data section
    /// (`madvise(MADV_DONTNEED)`): a model calls it on weights it has copied elsewhere
    /// (repacked), so that the file's copy does not stay resident beside the new one. Nothing
    /// changes for readers: the map is private, read-only and of a file, so a page read again
    /// is read back from the file. Maps that are not of a file are left alone; so is any
    /// error (the pages then merely stay resident). Returns the bytes released.
    #[cfg(unix)]
    pub fn release(&self, range: std::ops::Range<usize>) -> usize {
        let page = page_size();
        let Some(start) = usize::try_from(self.data_offset)
            .ok()
            .and_then(|d| d.checked_add(range.start))
        else {
            return 0;
        };
        let end = (start + range.len()).min(self.map.len());
        let (lo, hi) = (start.next_multiple_of(page), end / page * page);
        if !self.file_backed || lo >= hi {
            return 0;
        }
        // SAFETY: `unchecked_advise_range` is unsafe because `MADV_DONTNEED` on a private
        // mapping drops its pages: a modified copy-on-write page would lose its writes, and
        // an anonymous one would read back as zeros. This map is read-only (never written)
        // and of a file (checked above), so the dropped pages read back from the file,
        // unchanged; `lo..hi` is page-aligned and inside the map.
        let advised = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
        };
        advised.map_or(0, |()| hi - lo)
    }

    /// Releases nothing where there is no `madvise`.
    #[cfg(not(unix))]
    pub fn release(&self, _range: std::ops::Range<usize>) -> usize {
        0
    }

    /// Maps `ranges` of the data section into the page tables ahead of their first use, on a
    /// background thread at the lowest priority (nice 19), 1 MiB at a time
    /// (`MADV_POPULATE_READ`), until done or until the returned guard is dropped; nothing is
    /// done when they are in the page cache already.
    ///
    /// Why: a first pass meets its weights unmapped, and from a cold page cache reads them
    /// a fault at a time; the thread reads them ahead while the tokenizer is built. With
    /// the page cache warm it no longer pays: mapping costs about 0.1 ms of CPU per MB
    /// wherever it is done, start-up now leaves little CPU idle, and a nice-19 thread
    /// preempted while it holds the map's lock stalls the load's own allocations
    /// (Qwen2.5-Coder-0.5B's first token at 2 threads, alternating: 179 ms with it, 161
    /// without, 2026-12-01). At nice 19 the thread gets about 1.5 % of a busy CPU;
    /// `SCHED_IDLE` would take none, but a thread that never runs can hold the map for ever,
    /// and an unprivileged thread cannot leave `SCHED_IDLE` again. Nothing is done for
    /// ranges under 16 MiB or over half the machine's memory, and where
    /// `MADV_POPULATE_READ` is refused (Linux before 5.14) the thread stops at its first
    /// chunk: pages are then mapped as they are used, as without it.
    #[cfg(target_os = "linux")]
    pub fn prefault(&self, ranges: Vec<std::ops::Range<usize>>) -> Prefault {
        use std::sync::atomic::AtomicBool;
        // Small, because each call holds the process's `mmap_lock` for reading: a thread
        // that maps or unmaps memory meanwhile waits for this one to finish it, and a drop
        // of the guard waits for the chunk under way.
        const CHUNK: usize = 1 << 20;
        // Below this the faults cost less than starting a thread (about 1 ms for 16 MiB).
        const MIN_BYTES: usize = 16 << 20;
        let Some(base) = usize::try_from(self.data_offset).ok() else {
            return Prefault::stopped();
        };
        let total = ranges.iter().fold(0usize, |n, r| n.saturating_add(r.len()));
        // SAFETY: `sysconf` reads a constant of the system; no memory is passed.
        let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
        let memory = usize::try_from(pages)
            .unwrap_or(0)
            .saturating_mul(page_size());
        if !self.file_backed
            || total < MIN_BYTES
            || total > memory / 2
            || cached(&self.map, base, &ranges)
        {
            return Prefault::stopped();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (map, flag) = (Arc::clone(&self.map), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("tern-prefault".into())
            .spawn(move || {
                // SAFETY: `gettid` and `setpriority` take no memory; on Linux, the priority
                // of a thread id is that thread's alone, and lowering it needs no privilege.
                let lowered = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS as _, tid, 19) == 0
                };
                if lowered {
                    populate(&map, base, &ranges, CHUNK, &flag);
                } // else: not at low priority, better not at all.
            });
        // A thread that could not be started only loses the head start.
        Prefault {
            stop,
            thread: spawned.ok().map(|t| (t, std::process::id())),
        }
    }

    /// Nothing to map ahead where there is no `MADV_POPULATE_READ`.
    #[cfg(not(target_os = "linux"))]
    pub fn prefault(&self, _ranges: Vec<std::ops::Range<usize>>) -> Prefault {
        Prefault::stopped()
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute file offset at which the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.describe_type(),
        }
    }

    /// The string stored under `key`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong_type(key, "str", v))
    }

    /// The integer stored under `key`, of any integer type, if it fits in a `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        let Some(wide) = v.as_u64().or_else(|| v.as_i64().map(|_| u64::MAX)) else {
            return Err(Self::wrong_type(key, "an integer", v));
        };
        u32::try_from(wide).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: format!("{v:?}"),
            expected: "u32",
        })
    }

    /// The float stored under `key` (an `f32`, an `f64` in range, or an integer that an
    /// `f32` holds exactly).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| match v {
            Value::F64(_) => GgufError::OutOfRange {
                key: key.to_string(),
                value: format!("{v:?}"),
                expected: "f32",
            },
            _ => Self::wrong_type(key, "f32", v),
        })
    }

    /// The bool stored under `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong_type(key, "bool", v))
    }

    /// The array stored under `key`.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| Self::wrong_type(key, "array", v))
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`, if the file has it.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The data section, from [`data_offset`](Self::data_offset) to the end of the file: the
    /// bytes that [`TensorInfo::offset`] counts from. For every tensor of this file,
    /// `offset..offset + bytes` lies inside it (checked at open), so a model may keep offsets
    /// instead of borrowed views, and own the file.
    pub fn tensor_data(&self) -> &[u8] {
        usize::try_from(self.data_offset)
            .ok()
            .and_then(|start| self.map.get(start..))
            .unwrap_or(&[])
    }

    /// The header: magic, metadata and tensor infos, everything before the data section.
    pub fn header_bytes(&self) -> &[u8] {
        let end = usize::try_from(self.data_offset).unwrap_or(usize::MAX);
        self.map.get(..end).unwrap_or(&self.map[..])
    }

    /// The tensor called `name`, borrowing its data from the map.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        match self.tensor_index.get(name) {
            Some(&i) => self.view(&self.tensors[i]),
            None => Err(GgufError::MissingTensor {
                tensor: name.to_string(),
            }),
        }
    }

    /// Every tensor, in file order.
    pub fn tensor_views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors.iter().filter_map(|t| self.view(t).ok())
    }

    /// The view of one of this file's own infos. Their ranges were checked at open, so the
    /// error arm is never taken; it stands instead of a panic.
    fn view<'a>(&'a self, t: &'a TensorInfo) -> Result<TensorView<'a>, GgufError> {
        let range = || {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.bytes).ok()?)?;
            self.map.get(start..end)
        };
        let data = range().ok_or_else(|| GgufError::TensorOutOfRange {
            tensor: t.name.clone(),
            offset: t.offset,
            bytes: t.bytes,
            data_offset: self.data_offset,
            file_len: self.map.len() as u64,
        })?;
        Ok(TensorView {
            name: &t.name,
            ty: t.ty,
            dims: &t.dims,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of the mapping that holds `addr` that are in this process's page tables
    /// (`Rss` of its entry in `/proc/self/smaps`): the kernel's count, not ours.
    #[cfg(target_os = "linux")]
    fn mapped_bytes(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("Rss:") {
                    return kb
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .unwrap()
                        * 1024;
                }
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    /// Writes `dir/name`, a file of one F32 tensor of `mib` MiB, every byte `fill`.
    #[cfg(target_os = "linux")]
    fn write_big(dir: &Path, name: &str, mib: usize, fill: u8) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut w = GgufWriter::new();
        let dims = [1024, (mib as u64) << 8];
        w.add_tensor(
            "blk.0.w.weight",
            GgmlType::F32,
            &dims,
            vec![fill; mib << 20],
        );
        w.write_file(&path).unwrap();
        path
    }

    /// A file of one 8 MiB F32 tensor, opened: only its header has been read.
    #[cfg(target_os = "linux")]
    fn big_file(dir: &Path) -> GgufFile {
        GgufFile::open(write_big(dir, "big.gguf", 8, 7)).unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, here of one
    fn populate_maps_the_ranges_and_stops_when_told() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let f = big_file(dir.path());
        let addr = f.map.as_ptr() as usize;
        let base = f.data_offset as usize;
        // qemu-user (scripts/test-cross.sh sets QEMU_CPU) takes `madvise` and does nothing:
        // there the pages are mapped as they are read, and nothing is left to observe.
        if std::env::var_os("QEMU_CPU").is_some() {
            return;
        }
        let before = mapped_bytes(addr);
        assert!(
            before < 1 << 20,
            "{before} bytes mapped by opening the file"
        );
        // Raised before it starts: nothing is mapped.
        populate(&f.map, base, &[0..8 << 20], 1 << 20, &AtomicBool::new(true));
        assert_eq!(mapped_bytes(addr), before);
        // The first 3 MiB, a chunk at a time: those pages and no others.
        populate(
            &f.map,
            base,
            &[0..3 << 20],
            1 << 20,
            &AtomicBool::new(false),
        );
        let after = mapped_bytes(addr);
        assert!(
            after >= 3 << 20 && after < (3 << 20) + 2 * before + (1 << 20),
            "{after}"
        );
        // The rest; the data reads back as written.
        populate(
            &f.map,
            base,
            &[3 << 20..8 << 20],
            1 << 20,
            &AtomicBool::new(false),
        );
        assert!(mapped_bytes(addr) >= 8 << 20);
        assert!(f.tensor_data()[..8 << 20].iter().all(|&b| b == 7));
    }

    /// The defect `ffi/tests/test_hostile.c` found in a first version, whose thread could
    /// starve at idle priority holding the map: a model freed by the host stayed mapped, and
    /// children forked after it could not map their own under the board's address-space
    /// limit. Dropping the file and the guard unmaps the file, thread or not.
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, here of one
    fn a_dropped_file_is_unmapped_even_while_its_prefault_runs() {
        if std::env::var_os("QEMU_CPU").is_some() {
            return; // qemu-user's /proc/self/maps is its own rendering
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_big(dir.path(), "large.gguf", 32, 1);
        let mapped = || {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            maps.lines().any(|l| l.ends_with(path.to_str().unwrap()))
        };
        for _ in 0..20 {
            // Out of the page cache (where the last round's thread put it), or there would
            // be nothing to read ahead and no thread.
            if !uncached(&path) {
                return;
            }
            let f = GgufFile::open(&path).unwrap();
            let guard = f.prefault(vec![0..32 << 20]);
            assert!(guard.thread.is_some(), "32 MiB starts a thread");
            assert!(mapped());
            drop(f);
            drop(guard);
            assert!(
                !mapped(),
                "the file is still mapped after it and its prefault were dropped"
            );
        }
    }

    /// Syncs the file at `path` and drops it from the page cache ([`uncache`]); false, with a
    /// note, where its pages stay (a file system in memory, such as tmpfs).
    #[cfg(target_os = "linux")]
    fn uncached(path: &Path) -> bool {
        let file = File::open(path).unwrap();
        file.sync_all().unwrap();
        uncache(&file).unwrap();
        // SAFETY: as in `GgufFile::open`; the file is not written while mapped.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let pages = map.len().div_ceil(page_size());
        let mut resident = vec![0u8; pages];
        // SAFETY: the map's whole length is mapped; `resident` has a byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), resident.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let left = resident.iter().filter(|&&b| b & 1 != 0).count();
        if left > 0 {
            eprintln!(
                "{}: {left} of {pages} pages stay cached; not checked here",
                path.display()
            );
        }
        left == 0
    }

    /// [`cached`] tells a file read lately (no read-ahead thread) from one out of the page
    /// cache (a thread), by the kernel's `mincore` count of the whole file.
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, here of one
    fn prefault_reads_ahead_only_what_the_page_cache_lacks() {
        if std::env::var_os("QEMU_CPU").is_some() {
            return; // qemu-user's `mincore` is not the kernel's view
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_big(dir.path(), "cold.gguf", 32, 3);
        if !uncached(&path) {
            return;
        }
        let f = GgufFile::open(&path).unwrap();
        let base = f.data_offset as usize;
        let whole = [0..32 << 20];
        assert!(
            !cached(&f.map, base, &whole),
            "nothing of the file is cached"
        );
        // Read, then cached: no thread.
        assert!(f.tensor_data()[..32 << 20].iter().all(|&b| b == 3));
        assert!(cached(&f.map, base, &whole));
        assert!(f.prefault(whole.to_vec()).thread.is_none());
        // A quarter out again (the map's pages of it released first): one sample misses.
        f.release(0..8 << 20);
        let quarter = base + (8 << 20);
        let file = File::open(&path).unwrap();
        // SAFETY: as in `uncache`: a descriptor and a byte range.
        let rc = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                libc::off_t::try_from(quarter).unwrap(),
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0);
        assert!(!cached(&f.map, base, &whole));
        assert!(cached(&f.map, base, &[8 << 20..32 << 20]));
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, here of one
    fn prefault_skips_copies_and_small_ranges_and_its_guard_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = big_file(dir.path());
        // 8 MiB is below the size worth a thread: the guard comes back already stopped.
        let small = f.prefault(vec![0..8 << 20]);
        assert!(small.stop.load(std::sync::atomic::Ordering::Relaxed));
        // An anonymous copy (its released pages would read as zeros) is never touched.
        let bytes = std::fs::read(dir.path().join("big.gguf")).unwrap();
        let copy = GgufFile::from_bytes(&bytes).unwrap();
        assert!(copy
            .prefault(vec![0..8 << 20])
            .stop
            .load(std::sync::atomic::Ordering::Relaxed));
        // A guard, dropped, raises the flag its thread reads.
        let g = Prefault {
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            thread: None,
        };
        let flag = Arc::clone(&g.stop);
        drop(g);
        assert!(flag.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn files_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<GgufFile>();
        shared::<TensorView<'_>>();
    }

    #[test]
    fn element_counts_saturate() {
        let info = TensorInfo {
            name: "t".into(),
            ty: GgmlType::F32,
            dims: vec![u64::MAX, 2],
            offset: 0,
            bytes: 0,
        };
        assert_eq!(info.n_elements(), u64::MAX);
        assert_eq!(n_elements(&[]), 1);
        assert_eq!(n_elements(&[576, 49152]), 576 * 49152);
    }
}
