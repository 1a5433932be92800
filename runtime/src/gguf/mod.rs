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
