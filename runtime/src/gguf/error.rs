//! The one error type of the GGUF reader and writer.
//!
//! Every variant that comes from the file names what it was reading (a key, a tensor, or a
//! part of the header) so that a bad model file can be diagnosed from the message alone.

use std::io;
use std::path::PathBuf;

use tern_kernels::GgmlType;

/// Why a GGUF file could not be read or written, or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing to a stream failed.
    #[error("writing GGUF: {0}")]
    Write(#[source] io::Error),

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: starts with {found:02x?}, expected the magic \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    /// A version other than 2 or 3 (version 1 used 32-bit counts and is obsolete).
    #[error("GGUF version {version} is not supported: Tern reads versions 2 and 3")]
    UnsupportedVersion { version: u32 },

    /// The version field only makes sense byte-swapped: a big-endian file.
    #[error(
        "the GGUF file is big-endian (version field reads {raw:#010x}); \
         Tern reads little-endian files only"
    )]
    BigEndian { raw: u32 },

    /// A read ran past the end of the file; also raised, before anything is allocated,
    /// when a string or array length is larger than the bytes that are left.
    #[error(
        "file truncated in {context}: {needed} bytes needed at offset {offset}, \
         only {available} left"
    )]
    Truncated {
        context: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// A metadata value (or array element) type number outside the GGUF list.
    #[error("{context}: unknown value type {ty}")]
    UnknownValueType { context: String, ty: u32 },

    /// A string (key, value or tensor name) that is not UTF-8.
    #[error("{context}: string is not valid UTF-8")]
    InvalidUtf8 { context: String },

    /// A bool stored as something other than 0 or 1.
    #[error("{context}: bool stored as {byte}, expected 0 or 1")]
    InvalidBool { context: String, byte: u8 },

    /// Arrays of arrays nested deeper than the reader accepts (guards the stack).
    #[error("{context}: arrays nested more than {max} deep")]
    ArrayTooDeep { context: String, max: usize },

    /// The same metadata key twice.
    #[error("duplicate metadata key {key:?}")]
    DuplicateKey { key: String },

    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment = {value}: must be a non-zero power of two")]
    BadAlignment { value: u64 },

    /// A tensor type number that Tern does not know.
    #[error("tensor {tensor:?}: unknown ggml type {ty}")]
    UnknownTensorType { tensor: String, ty: u32 },

    /// More than four dimensions.
    #[error("tensor {tensor:?}: {n_dims} dimensions, at most 4 allowed")]
    TooManyDims { tensor: String, n_dims: u32 },

    /// The element count or byte size does not fit in 63 bits.
    #[error("tensor {tensor:?}: shape {dims:?} overflows")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },

    /// A row is not a whole number of quantization blocks.
    #[error(
        "tensor {tensor:?}: rows of {row_len} values are not a whole number of \
         {ty} blocks ({block_len} values each)"
    )]
    PartialBlock {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block_len: u64,
    },

    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    /// A tensor whose bytes lie (partly) past the end of the file.
    #[error(
        "tensor {tensor:?}: {bytes} bytes at data offset {offset} (data section at file \
         offset {data_offset}) run past the end of the file ({file_len} bytes)"
    )]
    TensorOutOfRange {
        tensor: String,
        offset: u64,
        bytes: u64,
        data_offset: u64,
        file_len: u64,
    },

    /// Two tensors with the same name.
    #[error("duplicate tensor name {tensor:?}")]
    DuplicateTensor { tensor: String },

    /// A metadata lookup for a key that is not there.
    #[error("metadata key {key:?} not found")]
    MissingKey { key: String },

    /// A metadata lookup found a value of another type.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A metadata lookup found a number that does not fit the requested type.
    #[error("metadata key {key:?}: value {value} does not fit in {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },

    /// A tensor lookup for a name that is not there.
    #[error("tensor {tensor:?} not found")]
    MissingTensor { tensor: String },

    /// Writer: the raw bytes given for a tensor do not match its type and shape.
    #[error(
        "tensor {tensor:?}: {got} data bytes given, but {ty} with shape {dims:?} takes {expected}"
    )]
    TensorSizeMismatch {
        tensor: String,
        ty: GgmlType,
        dims: Vec<u64>,
        expected: u64,
        got: u64,
    },

    /// Writer: GGUF arrays hold one element type; this one mixes two.
    #[error("metadata key {key:?}: array mixes {first} and {other} elements")]
    MixedArray {
        key: String,
        first: &'static str,
        other: &'static str,
    },
}
