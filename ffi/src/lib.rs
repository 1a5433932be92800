//! libtern: the C ABI through which apps (Android through JNI, iOS through Swift) and C
//! programs embed Tern. The header `ffi/include/tern.h` is generated from this crate by
//! cbindgen; `ffi/README.md` shows how to use it.
//!
//! The API is made for apps, not a mirror of the runtime: opaque handles (models, sessions,
//! and parameters with one setter per setting, so that settings added later break no compiled
//! app), a status code from every call with a thread-local message, and callbacks for reply
//! pieces and log lines. Nothing that C passes in can crash the library: NULL pointers,
//! invalid UTF-8, freed handles, bad files and bad values are errors, and every entry point
//! catches panics (module `error`). Handles are table entries, not addresses (module `handle`).
//!
//! What it is not: a way to reach the runtime's internals (tensors, logits, the cache).

mod error;
mod handle;
mod log;
mod model;
mod params;
mod session;

use std::ffi::c_char;

pub use error::TernStatus;
pub use log::{
    tern_set_log_callback, TernLogCallback, TernLogLevel, TERN_LOG_DEBUG, TERN_LOG_ERROR,
    TERN_LOG_INFO, TERN_LOG_WARN,
};
pub use model::{TernModel, TernModelParams};
pub use params::{TernKvType, TernSessionParams, TERN_KV_F16, TERN_KV_F32, TERN_KV_Q8_0};
pub use session::{TernPieceCallback, TernSession, TernStats, TernStopReason};

/// The version of the C ABI this header describes. It grows when a change would break a
/// compiled app (never for added functions); compare it with `tern_abi_version()` at start-up.
pub const TERN_ABI_VERSION: u32 = 1;

/// The library's version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn tern_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the library actually loaded; equal to `TERN_ABI_VERSION` when the app
/// and the library agree.
#[no_mangle]
pub extern "C" fn tern_abi_version() -> u32 {
    TERN_ABI_VERSION
}

/// The message of the last failed call on this thread (UTF-8, never NULL, empty when no call
/// has failed). It names the function and the argument or file at fault. Valid until the next
/// Tern call on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn tern_last_error() -> *const c_char {
    error::last_error()
}

/// The name of status code `status` ("TERN_OK", "TERN_ERR_IO", …), or "TERN_UNKNOWN_STATUS"
/// (a static string).
#[no_mangle]
pub extern "C" fn tern_status_name(status: i32) -> *const c_char {
    TernStatus::from_i32(status)
        .map_or(c"TERN_UNKNOWN_STATUS", TernStatus::name)
        .as_ptr()
}
