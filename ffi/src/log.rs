//! The optional log callback: one per process, with a minimum level. Lines are produced on the
//! thread that made the call they describe, and only when a callback is set, so logging costs
//! nothing when off.

use std::ffi::{c_char, c_void, CString};
use std::sync::RwLock;

use crate::error::{guard, Error, TernStatus};

/// The level of a log line (an `int32_t`; one of the `TERN_LOG_*` values).
pub type TernLogLevel = i32;
/// Details: the settings a model or session was made with.
pub const TERN_LOG_DEBUG: TernLogLevel = 0;
/// Milestones: a model loaded, a session started, a reply finished (with its speed), a call
/// cancelled.
pub const TERN_LOG_INFO: TernLogLevel = 1;
/// A call failed; the line is the message `tern_last_error` gives.
pub const TERN_LOG_WARN: TernLogLevel = 2;
/// A bug in Tern was caught at the boundary (`TERN_ERR_INTERNAL`).
pub const TERN_LOG_ERROR: TernLogLevel = 3;

/// Receives one log line: its level, the message (UTF-8, NUL-terminated, valid only during
/// the call) and the `user_data` given to `tern_set_log_callback`. Called on the thread of the
/// Tern call being logged; it must not call `tern_set_log_callback`.
pub type TernLogCallback = Option<
    unsafe extern "C" fn(level: TernLogLevel, message: *const c_char, user_data: *mut c_void),
>;

#[derive(Clone, Copy)]
struct Logger {
    callback: unsafe extern "C" fn(TernLogLevel, *const c_char, *mut c_void),
    /// The app's pointer, kept as an integer: the app promises it may be used from any thread.
    user_data: usize,
    min_level: TernLogLevel,
}

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

fn current() -> Option<Logger> {
    *LOGGER.read().unwrap_or_else(|e| e.into_inner())
}

/// Sends a line made by `message` to the callback, if one is set and wants `level`.
pub(crate) fn log_with(level: TernLogLevel, message: impl FnOnce() -> String) {
    let Some(l) = current() else { return };
    if level < l.min_level {
        return;
    }
    let line = CString::new(message().replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the app registered this function with this signature and user data; the line
    // lives until the call returns. The lock is not held, so the callback may call Tern.
    unsafe { (l.callback)(level, line.as_ptr(), l.user_data as *mut c_void) };
}

pub(crate) fn log(level: TernLogLevel, message: &str) {
    log_with(level, || message.to_string());
}

/// Sets the log callback, or removes it when `callback` is NULL. Lines below `min_level`
/// (`TERN_LOG_DEBUG` … `TERN_LOG_ERROR`) are not produced. `user_data` is passed back to
/// every call of the callback, from whichever thread calls Tern. No callback is set at first:
/// Tern then writes no logs anywhere.
#[no_mangle]
pub extern "C" fn tern_set_log_callback(
    callback: TernLogCallback,
    user_data: *mut c_void,
    min_level: TernLogLevel,
) -> TernStatus {
    guard("tern_set_log_callback", || {
        if !(TERN_LOG_DEBUG..=TERN_LOG_ERROR).contains(&min_level) {
            return Err(Error::invalid(format!(
                "min_level {min_level} is not a TERN_LOG_* level (0 to 3)"
            )));
        }
        let logger = callback.map(|callback| Logger {
            callback,
            user_data: user_data as usize,
            min_level,
        });
        *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = logger;
        Ok(())
    })
}
