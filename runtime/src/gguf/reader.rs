//! Parsing and validating the GGUF header, metadata and tensor infos from bytes.
//!
//! Every read goes through [`Cursor`], which checks it against the bytes that are left. A
//! length read from the file (of a string, an array, or the key and tensor lists) is checked
//! against the rest of the file *before* anything is allocated for it, so a hostile length
//! costs an error, not memory. Arrays are validated element by element but kept packed in
//! the map ([`Array`]): what a file makes the reader allocate is bounded by a small multiple
//! of its keys, strings and tensor infos, whatever its arrays hold.

use std::collections::HashMap;
use std::sync::Arc;

use memmap2::Mmap;

use tern_kernels::GgmlType;

use super::error::GgufError;
use super::value::{Array, Value, ValueType};
use super::TensorInfo;

/// "GGUF" as the first four bytes.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
/// The key that overrides [`DEFAULT_ALIGNMENT`].
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml tensors have at most four dimensions.
pub(crate) const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused, so recursion cannot exhaust the stack.
pub(crate) const MAX_ARRAY_DEPTH: usize = 16;

/// The fewest bytes a metadata entry takes: key length, value type, a one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// The fewest bytes a tensor info takes: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 4 + 8;

/// Everything parsed from a file except the bytes themselves.
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    /// The file, which packed arrays keep a handle to.
    map: &'a Arc<Mmap>,
    bytes: &'a [u8],
    pos: usize,
    /// What is being read, for error messages ("metadata key \"x\"", "tensor \"y\"").
    context: String,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self, needed: u64) -> GgufError {
        GgufError::Truncated {
            context: self.context.clone(),
            offset: self.pos as u64,
            needed,
            available: self.remaining() as u64,
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => {
                let out = &self.bytes[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(self.truncated(n)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks that `count` items of at least `min_len` bytes each can still be in the file,
    /// and returns the count as a `usize` that is safe to allocate for.
    fn count(&self, count: u64, min_len: u64) -> Result<usize, GgufError> {
        let needed = count.saturating_mul(min_len);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(needed));
        }
        usize::try_from(count).map_err(|_| self.truncated(needed))
    }

    fn str(&mut self) -> Result<&'a str, GgufError> {
        let len = self.u64()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            context: self.context.clone(),
        })
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let ty = self.u32()?;
        ValueType::from_u32(ty).ok_or_else(|| GgufError::UnknownValueType {
            context: self.context.clone(),
            ty,
        })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8()?),
            ValueType::I8 => Value::I8(self.u8()? as i8),
            ValueType::U16 => Value::U16(self.u16()?),
            ValueType::I16 => Value::I16(self.u16()? as i16),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(self.u32()? as i32),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(self.u64()? as i64),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32()?)),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64()?)),
            ValueType::Bool => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        context: self.context.clone(),
                        byte,
                    })
                }
            },
            ValueType::String => Value::String(self.str()?.to_owned()),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::ArrayTooDeep {
                        context: self.context.clone(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
                let elem = self.value_type()?;
                let len = self.u64()?;
                let n = self.count(len, elem.min_encoded_len())?;
                let start = self.pos;
                match elem.fixed_len() {
                    // Numbers need no check; bools must be 0 or 1.
                    Some(size) if elem != ValueType::Bool => {
                        self.take((n * size) as u64)?;
                    }
                    // Strings (UTF-8) are checked in place, not copied: a vocabulary has
                    // 150 000 of them, and their merges as many.
                    _ if elem == ValueType::String => {
                        for _ in 0..n {
                            self.str()?;
                        }
                    }
                    // Bools and nested arrays are checked one by one and dropped: only their
                    // bytes' place is kept.
                    _ => {
                        for _ in 0..n {
                            self.value(elem, depth + 1)?;
                        }
                    }
                }
                Value::Array(Array::packed(self.map.clone(), elem, n, start, self.pos))
            }
        })
    }
}

/// Parses and validates a whole GGUF file held in `bytes`.
pub(crate) fn parse(map: &Arc<Mmap>) -> Result<Parsed, GgufError> {
    let bytes: &[u8] = map;
    let mut c = Cursor {
        map,
        bytes,
        pos: 0,
        context: "header".to_string(),
    };

    let magic: [u8; 4] = c.array()?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32()?;
    match version {
        2 | 3 => {}
        // A byte-swapped small version has its low half zero (v3 reads 0x03000000).
        v if v != 0 && v & 0xffff == 0 => return Err(GgufError::BigEndian { raw: v }),
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    // Both lists must fit in what is left: refuse huge counts before allocating.
    c.context = "header counts".to_string();
    let needed = n_kv
        .saturating_mul(MIN_KV_LEN)
        .saturating_add(n_tensors.saturating_mul(MIN_TENSOR_INFO_LEN));
    if needed > c.remaining() as u64 {
        return Err(c.truncated(needed));
    }
    let n_kv = c.count(n_kv, MIN_KV_LEN)?;
    let n_tensors = c.count(n_tensors, MIN_TENSOR_INFO_LEN)?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut key_index = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        c.context = format!("key of metadata entry {i}");
        let key = c.str()?.to_owned();
        c.context = format!("metadata key {key:?}");
        let ty = c.value_type()?;
        let value = c.value(ty, 0)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
            return Err(GgufError::WrongType {
                key: ALIGNMENT_KEY.to_string(),
                expected: "u32",
                found: v.describe_type(),
            })
        }
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { value: alignment });
    }

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        c.context = format!("name of tensor info {i}");
        let name = c.str()?.to_owned();
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name });
        }
        c.context = format!("tensor {name:?}");
        let info = tensor_info(&mut c, name, alignment)?;
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // The data section starts at the first aligned offset after the infos.
    let data_offset = align_up(c.pos as u64, alignment);
    let file_len = bytes.len() as u64;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.bytes));
        if end.is_none_or(|end| end > file_len) {
            return Err(GgufError::TensorOutOfRange {
                tensor: t.name.clone(),
                offset: t.offset,
                bytes: t.bytes,
                data_offset,
                file_len,
            });
        }
    }

    Ok(Parsed {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}

/// Reads one tensor info after its name and checks its shape, type and offset.
fn tensor_info(c: &mut Cursor<'_>, name: String, alignment: u64) -> Result<TensorInfo, GgufError> {
    let n_dims = c.u32()?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64()?);
    }
    let ty_num = c.u32()?;
    let offset = c.u64()?;

    let Some(ty) = GgmlType::from_u32(ty_num) else {
        return Err(GgufError::UnknownTensorType {
            tensor: name,
            ty: ty_num,
        });
    };
    // ggml counts elements in an i64; stay within it.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(n_elements) = n_elements else {
        return Err(GgufError::ShapeOverflow { tensor: name, dims });
    };
    let row_len = dims.first().copied().unwrap_or(1);
    let block_len = ty.block_len() as u64;
    if row_len.checked_rem(block_len) != Some(0) {
        return Err(GgufError::PartialBlock {
            tensor: name,
            ty,
            row_len,
            block_len,
        });
    }
    let bytes = ty.bytes_for(n_elements).filter(|&b| b <= i64::MAX as u64);
    let Some(bytes) = bytes else {
        return Err(GgufError::ShapeOverflow { tensor: name, dims });
    };
    // `alignment` is a power of two.
    if offset & (alignment - 1) != 0 {
        return Err(GgufError::MisalignedTensor {
            tensor: name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        ty,
        dims,
        offset,
        bytes,
    })
}

/// `n` rounded up to a multiple of `alignment` (a power of two), saturating at the top.
pub(crate) fn align_up(n: u64, alignment: u64) -> u64 {
    n.checked_add(alignment - 1)
        .map_or(u64::MAX, |m| m & !(alignment - 1))
}
