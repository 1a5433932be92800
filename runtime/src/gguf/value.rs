//! Metadata values and their GGUF type numbers.

use std::sync::Arc;

use memmap2::Mmap;

/// One metadata value. Arrays hold values of a single type (arrays of arrays may differ
/// from one inner array to the next, as in the file format).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

impl Value {
    /// An array built in memory (to write a file); the element type is the first element's.
    pub fn array(items: Vec<Value>) -> Value {
        Value::Array(items.into())
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of any integer type, if it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value of any integer type, if it fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// An `f32`, an `f64` within the `f32` range (rounded), or an integer that an `f32`
    /// holds exactly.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => {
                let f = v as f32;
                (f.is_finite() || !v.is_finite()).then_some(f)
            }
            _ => {
                let i = match *self {
                    Value::U64(u) => i128::from(u),
                    _ => i128::from(self.as_i64()?),
                };
                let f = i as f32;
                (f as i128 == i).then_some(f)
            }
        }
    }

    /// The bool, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The short name of the type, as error messages and `tern inspect` print it.
    pub fn type_name(&self) -> &'static str {
        self.value_type().name()
    }

    /// A description of the type that spells out arrays: `[str; 49152]`, `[[u8; 3]; 2]`.
    pub fn describe_type(&self) -> String {
        match self {
            Value::Array(items) => match items.iter().next() {
                Some(first) => format!("[{}; {}]", first.describe_type(), items.len()),
                None => "[; 0]".to_string(),
            },
            v => v.type_name().to_string(),
        }
    }

    pub(crate) fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }
}

/// An array's elements, all of one type: either built in memory (to write a file), or read
/// from a file, where they stay packed in the map as the file holds them and are decoded
/// one at a time when read. A file's arrays cost no memory until used: decoded into values
/// up front, a 100 MB file of one `u8` array once took 3.2 GB.
#[derive(Clone)]
pub struct Array {
    elem: ValueType,
    len: usize,
    items: Items,
}

#[derive(Clone)]
enum Items {
    Built(Vec<Value>),
    /// `map[start..end]` holds the `len` elements, validated by the reader.
    Packed {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
}

impl Array {
    /// Elements read from a file: `map[start..end]` holds `len` encoded elements of type
    /// `elem` that the reader has validated (UTF-8 strings, 0/1 bools, known nested types).
    pub(crate) fn packed(
        map: Arc<Mmap>,
        elem: ValueType,
        len: usize,
        start: usize,
        end: usize,
    ) -> Array {
        Array {
            elem,
            len,
            items: Items::Packed { map, start, end },
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in order, each decoded when reached.
    pub fn iter(&self) -> ArrayIter<'_> {
        ArrayIter {
            inner: match &self.items {
                Items::Built(v) => IterInner::Built(v.iter()),
                Items::Packed { map, start, end } => IterInner::Packed {
                    map,
                    pos: *start,
                    end: *end,
                    elem: self.elem,
                    left: self.len,
                },
            },
        }
    }

    /// The elements of an array of strings, borrowed where they lie (no copy, no
    /// allocation: reading a 150 000-token vocabulary this way saves as many allocations);
    /// `None` for an array of another type.
    pub fn strs(&self) -> Option<StrIter<'_>> {
        self.byte_strs().map(|bytes| StrIter { bytes })
    }

    /// [`Array::strs`] as bytes, not checked as UTF-8 again (the reader checked them, but the
    /// file under the map could have changed since): for readers that only copy or compare
    /// them, which then check what they keep, if anything, at once. A check per element was
    /// 3 % of Qwen2.5-Coder-0.5B's time to its first token (300 000 tokens and merges).
    pub fn byte_strs(&self) -> Option<ByteStrIter<'_>> {
        (self.elem == ValueType::String).then(|| ByteStrIter {
            inner: match &self.items {
                Items::Built(v) => StrInner::Built(v.iter()),
                Items::Packed { map, start, end } => StrInner::Packed {
                    bytes: &map[*start..*end],
                    left: self.len,
                },
            },
        })
    }

    /// The elements of an array of integers read from a file, each as an `i64` (`None` for a
    /// `u64` past `i64::MAX`), straight from the file's bytes; `None` for an array of another
    /// type, or one built in memory. Decoding each of Qwen2.5's 151 936 token types into a
    /// [`Value`] first took about 3 ms of every load.
    pub fn ints(&self) -> Option<IntIter<'_>> {
        let size = self.elem.fixed_len()?;
        let int = matches!(
            self.elem,
            ValueType::U8
                | ValueType::I8
                | ValueType::U16
                | ValueType::I16
                | ValueType::U32
                | ValueType::I32
                | ValueType::U64
                | ValueType::I64
        );
        match &self.items {
            Items::Packed { map, start, end } if int => Some(IntIter {
                bytes: map.get(*start..*end)?.chunks_exact(size),
                elem: self.elem,
            }),
            _ => None,
        }
    }

    /// Element `i`: direct for numbers and bools, a walk from the start for strings and
    /// arrays (whose sizes vary).
    pub fn get(&self, i: usize) -> Option<Value> {
        if i >= self.len {
            return None;
        }
        match (&self.items, self.elem.fixed_len()) {
            (Items::Packed { map, start, .. }, Some(size)) => {
                let at = start + i * size;
                decode(map, at, self.elem).map(|(v, _)| v)
            }
            _ => self.iter().nth(i),
        }
    }

    /// The element type (for an empty array built in memory, `u8`).
    pub(crate) fn elem_type(&self) -> ValueType {
        self.elem
    }
}

impl From<Vec<Value>> for Array {
    /// An array built in memory; the element type is the first element's.
    fn from(items: Vec<Value>) -> Array {
        Array {
            elem: items.first().map_or(ValueType::U8, Value::value_type),
            len: items.len(),
            items: Items::Built(items),
        }
    }
}

impl PartialEq for Array {
    fn eq(&self, other: &Array) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The elements of an [`Array`], decoded one by one.
pub struct ArrayIter<'a> {
    inner: IterInner<'a>,
}

enum IterInner<'a> {
    Built(std::slice::Iter<'a, Value>),
    Packed {
        map: &'a Arc<Mmap>,
        pos: usize,
        end: usize,
        elem: ValueType,
        left: usize,
    },
}

impl Iterator for ArrayIter<'_> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        match &mut self.inner {
            IterInner::Built(it) => it.next().cloned(),
            IterInner::Packed {
                map,
                pos,
                end,
                elem,
                left,
            } => {
                if *left == 0 || *pos > *end {
                    return None;
                }
                let (v, next) = decode(map, *pos, *elem)?;
                *pos = next;
                *left -= 1;
                Some(v)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            IterInner::Built(it) => it.len(),
            IterInner::Packed { left, .. } => *left,
        };
        (n, Some(n))
    }
}

/// The elements of an array of integers: see [`Array::ints`].
pub struct IntIter<'a> {
    bytes: std::slice::ChunksExact<'a, u8>,
    elem: ValueType,
}

impl Iterator for IntIter<'_> {
    type Item = Option<i64>;

    fn next(&mut self) -> Option<Option<i64>> {
        let b = self.bytes.next()?;
        let le = |n: usize| {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&b[..n]);
            u64::from_le_bytes(w)
        };
        Some(match self.elem {
            ValueType::U8 | ValueType::U16 | ValueType::U32 | ValueType::U64 => {
                i64::try_from(le(b.len())).ok()
            }
            // Sign-extended from the element's width.
            _ => {
                let shift = 64 - 8 * b.len() as u32;
                Some((le(b.len()) << shift) as i64 >> shift)
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bytes.size_hint()
    }
}

/// The elements of an array of strings: see [`Array::strs`].
pub struct StrIter<'a> {
    bytes: ByteStrIter<'a>,
}

impl<'a> Iterator for StrIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.bytes.next()?;
        // The reader validated these bytes; a failure ends iteration all the same.
        let s = std::str::from_utf8(s).ok();
        if s.is_none() {
            self.bytes.inner = StrInner::Packed {
                bytes: &[],
                left: 0,
            };
        }
        s
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bytes.size_hint()
    }
}

/// The elements of an array of strings as bytes: see [`Array::byte_strs`].
pub struct ByteStrIter<'a> {
    inner: StrInner<'a>,
}

enum StrInner<'a> {
    Built(std::slice::Iter<'a, Value>),
    /// The packed elements not read yet: a `u64` length and the UTF-8 bytes, each.
    Packed {
        bytes: &'a [u8],
        left: usize,
    },
}

impl<'a> Iterator for ByteStrIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.inner {
            StrInner::Built(it) => Some(it.next()?.as_str()?.as_bytes()),
            StrInner::Packed { bytes, left } => {
                if *left == 0 {
                    return None;
                }
                let (len, rest) = bytes.split_first_chunk::<8>()?;
                let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
                let (s, rest) = rest.split_at_checked(len)?;
                *bytes = rest;
                *left -= 1;
                Some(s)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.inner {
            StrInner::Built(it) => it.len(),
            StrInner::Packed { left, .. } => *left,
        };
        (0, Some(n))
    }
}

/// Decodes the value of type `ty` at `at` in `map`, returning it and the offset after it.
/// The reader validated these bytes, so `None` (out of range, bad UTF-8) cannot happen for
/// an array it made; it ends iteration rather than panicking all the same.
fn decode(map: &Arc<Mmap>, at: usize, ty: ValueType) -> Option<(Value, usize)> {
    let bytes: &[u8] = map;
    let take = |n: usize| bytes.get(at..at.checked_add(n)?);
    let le8 = |b: &[u8]| -> [u8; 8] { b.try_into().unwrap_or([0; 8]) };
    let le4 = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap_or([0; 4]) };
    let le2 = |b: &[u8]| -> [u8; 2] { b.try_into().unwrap_or([0; 2]) };
    if let Some(size) = ty.fixed_len() {
        let b = take(size)?;
        let v = match ty {
            ValueType::U8 => Value::U8(b[0]),
            ValueType::I8 => Value::I8(b[0] as i8),
            ValueType::Bool => Value::Bool(b[0] != 0),
            ValueType::U16 => Value::U16(u16::from_le_bytes(le2(b))),
            ValueType::I16 => Value::I16(i16::from_le_bytes(le2(b))),
            ValueType::U32 => Value::U32(u32::from_le_bytes(le4(b))),
            ValueType::I32 => Value::I32(i32::from_le_bytes(le4(b))),
            ValueType::F32 => Value::F32(f32::from_le_bytes(le4(b))),
            ValueType::U64 => Value::U64(u64::from_le_bytes(le8(b))),
            ValueType::I64 => Value::I64(i64::from_le_bytes(le8(b))),
            ValueType::F64 => Value::F64(f64::from_le_bytes(le8(b))),
            ValueType::String | ValueType::Array => return None,
        };
        return Some((v, at + size));
    }
    match ty {
        ValueType::String => {
            let len = usize::try_from(u64::from_le_bytes(le8(take(8)?))).ok()?;
            let start = at + 8;
            let s = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
            Some((Value::String(s.to_owned()), start + len))
        }
        _ => {
            // A nested array: element type, length, elements (walked to find their end).
            let elem = ValueType::from_u32(u32::from_le_bytes(le4(take(4)?)))?;
            let len = usize::try_from(u64::from_le_bytes(le8(bytes.get(at + 4..at + 12)?))).ok()?;
            let start = at + 12;
            let end = match elem.fixed_len() {
                Some(size) => start.checked_add(len.checked_mul(size)?)?,
                None => {
                    let mut pos = start;
                    for _ in 0..len {
                        pos = decode(map, pos, elem)?.1;
                    }
                    pos
                }
            };
            (end <= bytes.len()).then(|| {
                (
                    Value::Array(Array::packed(map.clone(), elem, len, start, end)),
                    end,
                )
            })
        }
    }
}

/// The GGUF value type numbers (`gguf_type` in ggml).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub(crate) fn from_u32(v: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in the file: lets the reader reject
    /// an array length that the rest of the file cannot hold before allocating for it.
    pub(crate) fn min_encoded_len(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,    // the length; the bytes may be empty
            Array => 4 + 8, // element type and length; the elements may be none
        }
    }

    /// The encoded size of one value, for the types whose size is fixed.
    pub(crate) fn fixed_len(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_conversions_fit_or_refuse() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::I8(-3).as_i64(), Some(-3));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
    }

    /// [`Array::ints`] reads what decoding each element gives, for every integer type at its
    /// edges, from a file; arrays of other types and built ones have none.
    #[test]
    fn ints_read_integer_arrays_as_their_values_decode() {
        use crate::gguf::{GgufFile, GgufWriter};
        let arrays: Vec<Vec<Value>> = vec![
            vec![Value::U8(0), Value::U8(255)],
            vec![Value::I8(-128), Value::I8(-1), Value::I8(127)],
            vec![Value::U16(65535), Value::U16(1)],
            vec![Value::I16(-32768), Value::I16(-2), Value::I16(32767)],
            vec![Value::U32(u32::MAX), Value::U32(6)],
            vec![Value::I32(i32::MIN), Value::I32(-3), Value::I32(i32::MAX)],
            vec![Value::U64(u64::MAX), Value::U64(1 << 63), Value::U64(5)],
            vec![Value::I64(i64::MIN), Value::I64(-4), Value::I64(i64::MAX)],
        ];
        let mut w = GgufWriter::new();
        for (i, a) in arrays.iter().enumerate() {
            w.add_metadata(format!("a{i}"), Value::array(a.clone()));
        }
        w.add_metadata("f", Value::array(vec![Value::F32(1.0)]));
        let f = GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        for (i, a) in arrays.iter().enumerate() {
            let arr = f.get_array(&format!("a{i}")).unwrap();
            let read: Vec<Option<i64>> = arr.ints().expect("an integer array").collect();
            let want: Vec<Option<i64>> = a.iter().map(Value::as_i64).collect();
            assert_eq!(read, want, "array {i}");
        }
        assert!(f.get_array("f").unwrap().ints().is_none());
        assert!(Array::from(arrays[0].clone()).ints().is_none());
    }

    #[test]
    fn float_conversions_are_exact_or_refused() {
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(Value::F64(1e300).as_f32(), None);
        assert!(Value::F64(f64::INFINITY).as_f32().unwrap().is_infinite());
        assert_eq!(Value::U32(1 << 24).as_f32(), Some(16777216.0));
        assert_eq!(Value::U32((1 << 24) + 1).as_f32(), None);
        assert_eq!(Value::U64(1 << 63).as_f32(), Some(9.223372e18));
        assert_eq!(Value::U64(u64::MAX).as_f32(), None);
        assert_eq!(Value::I64(-5).as_f32(), Some(-5.0));
        assert_eq!(Value::String("1".into()).as_f32(), None);
    }

    #[test]
    fn type_numbers_round_trip() {
        for n in 0..13 {
            assert_eq!(ValueType::from_u32(n).map(|t| t as u32), Some(n));
        }
        assert_eq!(ValueType::from_u32(13), None);
    }

    #[test]
    fn describes_nested_arrays() {
        let v = Value::Array(Array::from(vec![
            Value::array(vec![Value::U8(1), Value::U8(2)]),
            Value::array(vec![]),
        ]));
        assert_eq!(v.describe_type(), "[[u8; 2]; 2]");
    }
}
