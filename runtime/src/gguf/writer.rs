//! Writing GGUF version 3 files: test fixtures now, conversion tools later.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use tern_kernels::GgmlType;

use super::error::GgufError;
use super::reader::{align_up, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use super::value::Value;

/// Builds a GGUF v3 file from metadata and raw tensor bytes.
///
/// Tensors are laid out in the order they are added, each at the next aligned offset. The
/// alignment is `general.alignment` if that key is set (it must be a `u32`), else 32.
/// Everything is checked when the file is written, with the reader's error variants: the
/// writer never produces a file that [`GgufFile`](super::GgufFile) would refuse.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata entry, or replaces the value of an existing key in place.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Sets `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.add_metadata(ALIGNMENT_KEY, Value::U32(alignment))
    }

    /// Adds a tensor with its raw bytes (`ty.bytes_for(product of dims)` of them), `dims` in
    /// ggml order (`dims[0]` is the row length).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            ty,
            dims: dims.to_vec(),
            data: data.into(),
        });
        self
    }

    /// The alignment the file will use.
    fn alignment(&self) -> Result<u64, GgufError> {
        let a = match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) => u64::from(*a),
            Some((_, v)) => {
                return Err(GgufError::WrongType {
                    key: ALIGNMENT_KEY.to_string(),
                    expected: "u32",
                    found: v.describe_type(),
                })
            }
        };
        if !a.is_power_of_two() {
            return Err(GgufError::BadAlignment { value: a });
        }
        Ok(a)
    }

    /// Checks everything the reader checks, so a written file always opens.
    fn validate(&self) -> Result<(), GgufError> {
        self.alignment()?;
        for (key, value) in &self.metadata {
            check_value(key, value, 0)?;
        }
        let mut names = HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor {
                    tensor: t.name.clone(),
                });
            }
            if t.dims.len() > MAX_DIMS as usize {
                return Err(GgufError::TooManyDims {
                    tensor: t.name.clone(),
                    n_dims: u32::try_from(t.dims.len()).unwrap_or(u32::MAX),
                });
            }
            let row_len = t.dims.first().copied().unwrap_or(1);
            let block_len = t.ty.block_len() as u64;
            if row_len.checked_rem(block_len) != Some(0) {
                return Err(GgufError::PartialBlock {
                    tensor: t.name.clone(),
                    ty: t.ty,
                    row_len,
                    block_len,
                });
            }
            let expected = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .and_then(|n| t.ty.bytes_for(n))
                .ok_or_else(|| GgufError::ShapeOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
            if expected != t.data.len() as u64 {
                return Err(GgufError::TensorSizeMismatch {
                    tensor: t.name.clone(),
                    ty: t.ty,
                    dims: t.dims.clone(),
                    expected,
                    got: t.data.len() as u64,
                });
            }
        }
        Ok(())
    }

    /// Writes the whole file to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), GgufError> {
        self.validate()?;
        let alignment = self.alignment()?;
        let mut w = Counting { out, written: 0 };

        w.bytes(&MAGIC)?;
        w.bytes(&3u32.to_le_bytes())?;
        w.bytes(&(self.tensors.len() as u64).to_le_bytes())?;
        w.bytes(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            w.str(key)?;
            w.bytes(&(value.value_type() as u32).to_le_bytes())?;
            w.value(value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            w.str(&t.name)?;
            w.bytes(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.bytes(&d.to_le_bytes())?;
            }
            w.bytes(&(t.ty as u32).to_le_bytes())?;
            w.bytes(&offset.to_le_bytes())?;
            offset = align_up(offset + t.data.len() as u64, alignment);
        }
        if !self.tensors.is_empty() {
            w.pad(alignment)?;
        }
        for t in &self.tensors {
            w.bytes(&t.data)?;
            w.pad(alignment)?;
        }
        w.out.flush().map_err(GgufError::Write)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the whole file to `path`.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io_err)?;
        let mut out = std::io::BufWriter::new(file);
        self.write_to(&mut out).map_err(|e| match e {
            GgufError::Write(source) => io_err(source),
            e => e,
        })
    }
}

/// Arrays must be homogeneous and no deeper than the reader accepts.
fn check_value(key: &str, value: &Value, depth: usize) -> Result<(), GgufError> {
    let Value::Array(items) = value else {
        return Ok(());
    };
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            context: format!("metadata key {key:?}"),
            max: MAX_ARRAY_DEPTH,
        });
    }
    if let Some(first) = items.iter().next() {
        let ty = first.value_type();
        for item in items.iter() {
            if item.value_type() != ty {
                return Err(GgufError::MixedArray {
                    key: key.to_string(),
                    first: ty.name(),
                    other: item.type_name(),
                });
            }
            check_value(key, &item, depth + 1)?;
        }
    }
    Ok(())
}

/// A writer that knows how many bytes it has written, for padding.
struct Counting<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Counting<'_, W> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), GgufError> {
        self.out.write_all(b).map_err(GgufError::Write)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), GgufError> {
        self.bytes(&(s.len() as u64).to_le_bytes())?;
        self.bytes(s.as_bytes())
    }

    fn pad(&mut self, alignment: u64) -> Result<(), GgufError> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut n = align_up(self.written, alignment) - self.written;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.bytes(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    /// The value without its type tag (the caller writes the tag).
    fn value(&mut self, v: &Value) -> Result<(), GgufError> {
        match v {
            Value::U8(x) => self.bytes(&x.to_le_bytes()),
            Value::I8(x) => self.bytes(&x.to_le_bytes()),
            Value::U16(x) => self.bytes(&x.to_le_bytes()),
            Value::I16(x) => self.bytes(&x.to_le_bytes()),
            Value::U32(x) => self.bytes(&x.to_le_bytes()),
            Value::I32(x) => self.bytes(&x.to_le_bytes()),
            Value::U64(x) => self.bytes(&x.to_le_bytes()),
            Value::I64(x) => self.bytes(&x.to_le_bytes()),
            Value::F32(x) => self.bytes(&x.to_le_bytes()),
            Value::F64(x) => self.bytes(&x.to_le_bytes()),
            Value::Bool(x) => self.bytes(&[u8::from(*x)]),
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                // An empty array built in memory has no element to take the type from (it
                // says u8); any type reads back as the same empty array.
                self.bytes(&(items.elem_type() as u32).to_le_bytes())?;
                self.bytes(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|item| self.value(&item))
            }
        }
    }
}
