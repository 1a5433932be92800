//! Status codes, the thread-local last error, and the guard that every entry point runs in:
//! it turns a Rust error into a status code and a message, and a panic into
//! [`TernStatus::TERN_ERR_INTERNAL`], so that no unwinding ever reaches C.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use tern::cache::CacheError;
use tern::model::{LoadError, ModelError};
use tern::session::SessionError;
use tern::snapshot::SnapshotError;

use crate::log::{log, TERN_LOG_ERROR, TERN_LOG_INFO, TERN_LOG_WARN};

/// What a call did. `TERN_OK` is zero; `TERN_CANCELLED` is not a failure of the library but
/// is reported like one so that a plain `if (status != TERN_OK)` notices it. Every other value
/// is an error whose message `tern_last_error` gives.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TernStatus {
    /// Success.
    TERN_OK = 0,
    /// `tern_session_cancel` stopped the call. The session stays usable: what was fed or
    /// generated before the stop is part of the conversation.
    TERN_CANCELLED = 1,
    /// A pointer argument that must not be NULL was NULL.
    TERN_ERR_NULL_POINTER = 2,
    /// An argument is out of range or not one of the accepted values.
    TERN_ERR_INVALID_ARGUMENT = 3,
    /// A string argument is not valid UTF-8.
    TERN_ERR_INVALID_UTF8 = 4,
    /// A handle was already freed, or is not a Tern handle of the expected kind.
    TERN_ERR_INVALID_HANDLE = 5,
    /// The session is running another call (on another thread, or the call whose callback
    /// is running now).
    TERN_ERR_BUSY = 6,
    /// A file could not be read or written (missing, no permission, disk full …).
    TERN_ERR_IO = 7,
    /// The model file is corrupt, truncated, or of an architecture Tern does not support.
    TERN_ERR_MODEL = 8,
    /// The session file is corrupt, of another format version, or saved with another model.
    TERN_ERR_SESSION_FILE = 9,
    /// The runtime failed while running the model (tokenizer, chat template, …).
    TERN_ERR_RUNTIME = 10,
    /// A bug in Tern was caught at the boundary (a Rust panic). The handle involved may be
    /// unusable afterwards; free it.
    TERN_ERR_INTERNAL = 11,
    /// The model and the smallest useful KV cache do not fit the board's memory budget.
    TERN_ERR_OUT_OF_MEMORY = 12,
}

impl TernStatus {
    /// The constant's name, as a static C string.
    pub(crate) fn name(self) -> &'static CStr {
        use TernStatus::*;
        match self {
            TERN_OK => c"TERN_OK",
            TERN_CANCELLED => c"TERN_CANCELLED",
            TERN_ERR_NULL_POINTER => c"TERN_ERR_NULL_POINTER",
            TERN_ERR_INVALID_ARGUMENT => c"TERN_ERR_INVALID_ARGUMENT",
            TERN_ERR_INVALID_UTF8 => c"TERN_ERR_INVALID_UTF8",
            TERN_ERR_INVALID_HANDLE => c"TERN_ERR_INVALID_HANDLE",
            TERN_ERR_BUSY => c"TERN_ERR_BUSY",
            TERN_ERR_IO => c"TERN_ERR_IO",
            TERN_ERR_MODEL => c"TERN_ERR_MODEL",
            TERN_ERR_SESSION_FILE => c"TERN_ERR_SESSION_FILE",
            TERN_ERR_RUNTIME => c"TERN_ERR_RUNTIME",
            TERN_ERR_INTERNAL => c"TERN_ERR_INTERNAL",
            TERN_ERR_OUT_OF_MEMORY => c"TERN_ERR_OUT_OF_MEMORY",
        }
    }

    /// The status whose value is `v`, if any.
    pub(crate) fn from_i32(v: i32) -> Option<TernStatus> {
        use TernStatus::*;
        [
            TERN_OK,
            TERN_CANCELLED,
            TERN_ERR_NULL_POINTER,
            TERN_ERR_INVALID_ARGUMENT,
            TERN_ERR_INVALID_UTF8,
            TERN_ERR_INVALID_HANDLE,
            TERN_ERR_BUSY,
            TERN_ERR_IO,
            TERN_ERR_MODEL,
            TERN_ERR_SESSION_FILE,
            TERN_ERR_RUNTIME,
            TERN_ERR_INTERNAL,
            TERN_ERR_OUT_OF_MEMORY,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }
}

/// A failed call: the status to return and the message for `tern_last_error`.
#[derive(Debug)]
pub(crate) struct Error {
    pub status: TernStatus,
    pub message: String,
}

impl Error {
    pub fn new(status: TernStatus, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    pub fn null(arg: &str) -> Error {
        Error::new(
            TernStatus::TERN_ERR_NULL_POINTER,
            format!("`{arg}` is NULL"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(TernStatus::TERN_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Error {
        match &e {
            // The I/O error names the path already.
            LoadError::File {
                source: source @ tern::gguf::GgufError::Io { .. },
                ..
            } => Error::new(TernStatus::TERN_ERR_IO, source.to_string()),
            _ => Error::new(TernStatus::TERN_ERR_MODEL, e.to_string()),
        }
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Error {
        use TernStatus::*;
        let status = match &e {
            SessionError::Cancelled => TERN_CANCELLED,
            SessionError::BadRole(_) | SessionError::Draft(_) => TERN_ERR_INVALID_ARGUMENT,
            SessionError::Snapshot(SnapshotError::Io { .. }) => TERN_ERR_IO,
            SessionError::Snapshot(SnapshotError::TooLarge { .. }) | SessionError::Memory(_) => {
                TERN_ERR_OUT_OF_MEMORY
            }
            SessionError::Snapshot(_) => TERN_ERR_SESSION_FILE,
            SessionError::Cache(c) | SessionError::Model(ModelError::Cache(c)) => match c {
                // A cache that cannot be made: the session parameters are at fault.
                CacheError::EmptyWindow
                | CacheError::BadEvictChunk { .. }
                | CacheError::Q8HeadSize(_)
                | CacheError::HeadTooLarge(_) => TERN_ERR_INVALID_ARGUMENT,
                CacheError::TooLarge { .. } => TERN_ERR_OUT_OF_MEMORY,
                _ => TERN_ERR_RUNTIME,
            },
            _ => TERN_ERR_RUNTIME,
        };
        Error::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    // A message cannot hold a NUL byte in C; none of Tern's do, but a path might.
    // Control characters (from a file's metadata, say) are escaped: one clean line.
    let c = CString::new(tern::untrusted::escape(message)).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// This thread's last error message; valid until the next failing call on this thread.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs the body of entry point `name`: a returned error or a panic becomes a status code and
/// this thread's last error, and is logged (cancellations at info level, failures at warn,
/// panics at error).
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Error>) -> TernStatus {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return TernStatus::TERN_OK,
        Ok(Err(e)) => e,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Error::new(
                TernStatus::TERN_ERR_INTERNAL,
                format!("internal error (a bug in Tern): {what}"),
            )
        }
    };
    let message = format!("{name}: {}", err.message);
    set_last_error(&message);
    let level = match err.status {
        TernStatus::TERN_CANCELLED => TERN_LOG_INFO,
        TernStatus::TERN_ERR_INTERNAL => TERN_LOG_ERROR,
        _ => TERN_LOG_WARN,
    };
    // Logging must not turn an error into a panic either.
    let _ = catch_unwind(|| log(level, &message));
    err.status
}

/// Borrows the NUL-terminated UTF-8 string argument `arg`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, arg: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::null(arg));
    }
    // SAFETY: non-null, and NUL-terminated and alive for the call by the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Error::new(
            TernStatus::TERN_ERR_INVALID_UTF8,
            format!(
                "`{arg}` is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Like [`str_arg`], but NULL means "none".
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    p: *const c_char,
    arg: &str,
) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { str_arg(p, arg) }.map(Some)
    }
}

/// Checks that the out-pointer `arg` is not NULL.
pub(crate) fn out_arg<T>(p: *mut T, arg: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(Error::null(arg))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let status = guard("tern_test", || panic!("boom {}", 42));
        assert_eq!(status, TernStatus::TERN_ERR_INTERNAL);
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert!(msg.starts_with("tern_test: internal error"), "{msg}");
        assert!(msg.contains("boom 42"), "{msg}");
    }

    #[test]
    fn errors_set_the_message_and_success_keeps_it() {
        let status = guard("tern_x", || Err(Error::invalid("bad thing")));
        assert_eq!(status, TernStatus::TERN_ERR_INVALID_ARGUMENT);
        assert_eq!(guard("tern_y", || Ok(())), TernStatus::TERN_OK);
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert_eq!(msg, "tern_x: bad thing");
    }

    #[test]
    fn string_arguments_are_checked() {
        let e = unsafe { str_arg(std::ptr::null(), "text") }.unwrap_err();
        assert_eq!(e.status, TernStatus::TERN_ERR_NULL_POINTER);
        let bad = b"ab\xffc\0";
        let e = unsafe { str_arg(bad.as_ptr().cast(), "text") }.unwrap_err();
        assert_eq!(e.status, TernStatus::TERN_ERR_INVALID_UTF8);
        assert!(e.message.contains("offset 2"), "{}", e.message);
        let good = "é\0";
        assert_eq!(unsafe { str_arg(good.as_ptr().cast(), "t") }.unwrap(), "é");
    }

    #[test]
    fn status_names_round_trip() {
        for v in 0..13 {
            let s = TernStatus::from_i32(v).unwrap();
            assert_eq!(s as i32, v);
            assert!(s.name().to_str().unwrap().starts_with("TERN_"));
        }
        assert_eq!(TernStatus::from_i32(13), None);
    }
}
