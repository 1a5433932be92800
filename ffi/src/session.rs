//! Sessions: one conversation each, made from a shared model.
//!
//! A session runs one call at a time; a second call while one runs gets `TERN_ERR_BUSY`
//! rather than waiting. Model work runs in the model's thread pool, but the piece callback is
//! always called on the thread that called `tern_session_generate`: the generation runs as a
//! job in the pool and hands each piece to the calling thread, waiting for its answer. Apps
//! can therefore touch thread-bound state from the callback (a JNIEnv, a UI run loop).

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, TryLockError};

use tern::fit::{fit_cache, CacheRequest};
use tern::session::{Reply, Session, SessionError, SessionOptions, Stats, StopReason};

use crate::error::{guard, out_arg, str_arg, Error, TernStatus};
use crate::handle::{self, Kind};
use crate::log::{log_with, TERN_LOG_DEBUG, TERN_LOG_INFO, TERN_LOG_WARN};
use crate::model::{ModelHandle, TernModel};
use crate::params::{SessionParams, SessionSettings, TernSessionParams};

/// A conversation with a model (opaque).
pub struct TernSession {
    _private: [u8; 0],
}

/// Why a reply ended.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TernStopReason {
    /// The model ended its turn.
    TERN_STOP_END_OF_TURN = 0,
    /// A stop string appeared (the template's or one added to the parameters).
    TERN_STOP_STRING = 1,
    /// The reply reached the session's maximum number of tokens.
    TERN_STOP_MAX_TOKENS = 2,
    /// The piece callback returned false.
    TERN_STOP_CALLBACK = 3,
    /// `tern_session_cancel` stopped it.
    TERN_STOP_CANCELLED = 4,
}

/// Receives one piece of a reply as it is generated: `len` bytes of UTF-8 at `piece`,
/// followed by a NUL (valid only during the call). A piece is never half of a character.
/// Return true to go on, false to stop the reply here (it still joins the conversation).
pub type TernPieceCallback =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

/// A session's counters. Set `size` to `sizeof(TernStats)` before calling
/// `tern_session_stats`: a library older than your header fills only the fields it knows and
/// sets `size` to the bytes it filled; fields are only ever added at the end.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct TernStats {
    pub size: usize,
    /// Tokens fed into the conversation so far (prompt and reply, evicted ones included).
    pub tokens: u64,
    /// Tokens in the KV cache now, and at most.
    pub cache_used: u64,
    pub cache_capacity: u64,
    /// Prompt tokens fed, and the seconds it took.
    pub prompt_tokens: u64,
    pub prompt_seconds: f64,
    /// Tokens generated, and the seconds it took.
    pub generated_tokens: u64,
    pub generated_seconds: f64,
    /// `prompt_tokens / prompt_seconds` and `generated_tokens / generated_seconds` (0 before
    /// any).
    pub prompt_tokens_per_second: f64,
    pub generation_tokens_per_second: f64,
    /// Speculative decoding (0 without a draft): tokens the draft model proposed, and those
    /// the model kept.
    pub draft_proposed: u64,
    pub draft_accepted: u64,
}

impl TernStats {
    fn from_stats(s: &Stats) -> TernStats {
        let rate = |n: u64, secs: f64| {
            if n == 0 {
                0.0
            } else {
                n as f64 / secs.max(1e-9)
            }
        };
        TernStats {
            size: std::mem::size_of::<TernStats>(),
            tokens: s.tokens,
            cache_used: s.cache_used as u64,
            cache_capacity: s.cache_capacity as u64,
            prompt_tokens: s.prompt_tokens,
            prompt_seconds: s.prompt_secs,
            generated_tokens: s.generated_tokens,
            generated_seconds: s.generated_secs,
            prompt_tokens_per_second: rate(s.prompt_tokens, s.prompt_secs),
            generation_tokens_per_second: rate(s.generated_tokens, s.generated_secs),
            draft_proposed: s.draft_proposed,
            draft_accepted: s.draft_accepted,
        }
    }
}

/// What a `TernSession` handle holds.
pub(crate) struct SessionHandle {
    model: Arc<ModelHandle>,
    session: Mutex<Session>,
    /// The session's own cancel flag, reachable without the session's lock.
    cancel: Arc<AtomicBool>,
    /// The counters as of the end of the last call, readable while a call runs.
    stats: Mutex<Stats>,
}

impl Kind for SessionHandle {
    type C = TernSession;
    const NAME: &'static str = "session";
}

impl SessionHandle {
    fn new(model: Arc<ModelHandle>, session: Session) -> SessionHandle {
        SessionHandle {
            cancel: session.cancel_flag(),
            stats: Mutex::new(session.stats()),
            session: Mutex::new(session),
            model,
        }
    }
}

/// Runs `f` on the session behind `session`, holding its lock; refreshes the stats after.
fn with_session<R>(
    session: *const TernSession,
    f: impl FnOnce(&SessionHandle, &mut Session) -> Result<R, Error>,
) -> Result<R, Error> {
    let h = handle::get::<SessionHandle>(session, "session")?;
    let mut s = match h.session.try_lock() {
        Ok(s) => s,
        Err(TryLockError::WouldBlock) => {
            return Err(Error::new(
                TernStatus::TERN_ERR_BUSY,
                "the session is running another call",
            ))
        }
        Err(TryLockError::Poisoned(_)) => {
            return Err(Error::new(
                TernStatus::TERN_ERR_INTERNAL,
                "an earlier internal error left the session inconsistent; free it",
            ))
        }
    };
    // A cancel aimed at an earlier call must not stop this one.
    h.cancel.store(false, Ordering::Relaxed);
    let r = f(&h, &mut s);
    *h.stats.lock().unwrap_or_else(|e| e.into_inner()) = s.stats();
    r
}

/// Writes a new handle for `session` to `out`.
fn publish(
    model: Arc<ModelHandle>,
    session: Session,
    out: *mut *mut TernSession,
) -> Result<(), Error> {
    let stats = session.stats();
    log_with(TERN_LOG_INFO, || {
        format!(
            "session started: cache of {} tokens, {} already in it",
            stats.cache_capacity, stats.cache_used
        )
    });
    let h = handle::insert(SessionHandle::new(model, session))?;
    // SAFETY: `out` was checked non-null; writable by the caller's contract.
    unsafe { *out = h };
    Ok(())
}

/// Starts a session on `model` with `params` (NULL for the defaults). A system prompt in the
/// parameters is fed now. On failure `*out` is set to NULL; parameters the model cannot honour
/// (a cache larger than its context, a chunk larger than the window) give
/// `TERN_ERR_INVALID_ARGUMENT`; a model and cache beyond the board's memory budget, even with
/// the window shrunk (which is logged as a warning), `TERN_ERR_OUT_OF_MEMORY`. The parameters
/// may be freed right after.
#[no_mangle]
pub extern "C" fn tern_session_new(
    model: *const TernModel,
    params: *const TernSessionParams,
    out: *mut *mut TernSession,
) -> TernStatus {
    guard("tern_session_new", || {
        out_arg(out, "out")?;
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        let m = handle::get::<ModelHandle>(model, "model")?;
        let settings = if params.is_null() {
            SessionSettings::default()
        } else {
            handle::get::<SessionParams>(params, "params")?.settings()
        };
        let draft = settings.draft.clone();
        let opts = session_options(&m, settings)?;
        log_with(TERN_LOG_DEBUG, || {
            format!("session options: {opts:?}, draft: {draft:?}")
        });
        let draft = draft.map(|d| d.spec());
        let session = m
            .pool
            .install(|| Session::start_with(m.model.clone(), opts, draft, Some(&m.board)))?;
        publish(m, session, out)
    })
}

/// The options of a new session: the cache settings left unset come from the board (its
/// window kept within the model's context), and the window shrinks, if need be, to fit the
/// board's memory budget, as the CLI does.
fn session_options(m: &ModelHandle, s: SessionSettings) -> Result<SessionOptions, Error> {
    let kv = &m.board.settings.kv.value;
    let ctx = m.model.llama().config().n_ctx_train;
    let sinks = s.sinks.unwrap_or(kv.sinks);
    let window = s
        .window
        .unwrap_or_else(|| kv.window.min(ctx.saturating_sub(sinks)).max(1));
    if sinks + window > ctx {
        return Err(Error::invalid(format!(
            "sinks + window = {} tokens exceeds the {ctx} tokens of context the model was \
             trained with",
            sinks + window
        )));
    }
    let mut opts = s.opts;
    let req = CacheRequest {
        sinks: Some(sinks),
        window: Some(window),
        kv_type: s.kv_type,
        evict_chunk: opts.cache.evict_chunk,
    };
    let (cache, shrunk) = fit_cache(&m.model, &m.board, &req)
        .map_err(|e| Error::new(TernStatus::TERN_ERR_OUT_OF_MEMORY, e.to_string()))?;
    if let Some(message) = shrunk {
        log_with(TERN_LOG_WARN, || message);
    }
    opts.cache = cache;
    Ok(opts)
}

/// Frees a session. A call running in it on another thread is cancelled, and the memory is
/// released when that call returns. NULL is accepted and ignored; a handle freed twice gives
/// `TERN_ERR_INVALID_HANDLE`, as does any later use of it.
#[no_mangle]
pub extern "C" fn tern_session_free(session: *mut TernSession) -> TernStatus {
    guard("tern_session_free", || {
        if let Some(h) = handle::remove::<SessionHandle>(session, "session")? {
            h.cancel.store(true, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Stops the call running in `session` (a prefill or a generation) at the next forward pass:
/// within one token when generating, within one batch of prompt tokens when feeding. That
/// call returns `TERN_CANCELLED`. Safe to call from any thread, including from a callback;
/// when no call is running it does nothing (a cancel never carries over to a later call).
#[no_mangle]
pub extern "C" fn tern_session_cancel(session: *const TernSession) -> TernStatus {
    guard("tern_session_cancel", || {
        let h = handle::get::<SessionHandle>(session, "session")?;
        h.cancel.store(true, Ordering::Relaxed);
        Ok(())
    })
}

/// Forgets the conversation (the system prompt, if any, is fed again); memory stays
/// allocated.
#[no_mangle]
pub extern "C" fn tern_session_reset(session: *mut TernSession) -> TernStatus {
    guard("tern_session_reset", || {
        with_session(session, |h, s| Ok(h.model.pool.install(|| s.reset())?))
    })
}

/// Adds a message to the conversation and feeds it through the model's chat template.
/// `role` is "system", "user" or "assistant"; `text` is UTF-8. The reply to it comes from
/// `tern_session_generate`.
///
/// # Safety
/// `role` and `text` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn tern_session_add_message(
    session: *mut TernSession,
    role: *const c_char,
    text: *const c_char,
) -> TernStatus {
    guard("tern_session_add_message", || {
        // SAFETY: forwarded contract.
        let role = unsafe { str_arg(role, "role") }?;
        // SAFETY: forwarded contract.
        let text = unsafe { str_arg(text, "text") }?;
        with_session(session, |h, s| {
            Ok(h.model.pool.install(|| s.add_message(role, text))?)
        })
    })
}

/// Feeds raw text (UTF-8) into the conversation, outside the chat template; special-token
/// text such as `<|im_start|>` is recognised. `out_tokens` (may be NULL) receives the number
/// of tokens fed.
///
/// # Safety
/// `text` is NULL or a NUL-terminated string; `out_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tern_session_feed_text(
    session: *mut TernSession,
    text: *const c_char,
    out_tokens: *mut u64,
) -> TernStatus {
    guard("tern_session_feed_text", || {
        // SAFETY: forwarded contract.
        let text = unsafe { str_arg(text, "text") }?;
        let n = with_session(session, |h, s| {
            Ok(h.model.pool.install(|| s.feed_text(text))?)
        })?;
        if !out_tokens.is_null() {
            // SAFETY: non-null and writable by the caller's contract.
            unsafe { *out_tokens = n as u64 };
        }
        Ok(())
    })
}

/// Generates the assistant's reply to the conversation so far, handing it to `callback` (may
/// be NULL) piece by piece on the calling thread. The reply joins the conversation. Returns
/// `TERN_OK` when the reply ended (`*out_stop`, if not NULL, says why) and `TERN_CANCELLED`
/// when `tern_session_cancel` stopped it. Do not call into another session of the same model
/// from the callback if the model has a single thread: that call would wait for this one.
///
/// # Safety
/// `callback` is NULL or a function of the documented type; `out_stop` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tern_session_generate(
    session: *mut TernSession,
    callback: TernPieceCallback,
    user_data: *mut c_void,
    out_stop: *mut TernStopReason,
) -> TernStatus {
    guard("tern_session_generate", || {
        with_session(session, |h, s| {
            // SAFETY: forwarded contract.
            unsafe { reply(h, s, None, callback, user_data, out_stop) }
        })
    })
}

/// Adds a user message (`text`, UTF-8) and generates the reply: `tern_session_add_message`
/// with role "user", then `tern_session_generate`, as one call.
///
/// # Safety
/// As `tern_session_generate`; `text` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tern_session_chat(
    session: *mut TernSession,
    text: *const c_char,
    callback: TernPieceCallback,
    user_data: *mut c_void,
    out_stop: *mut TernStopReason,
) -> TernStatus {
    guard("tern_session_chat", || {
        // SAFETY: forwarded contract.
        let text = unsafe { str_arg(text, "text") }?;
        with_session(session, |h, s| {
            // SAFETY: forwarded contract.
            unsafe { reply(h, s, Some(text), callback, user_data, out_stop) }
        })
    })
}

/// Runs one reply (after the user message `user`, if any) in the pool while the calling
/// thread hands its pieces to `callback`.
///
/// # Safety
/// As `tern_session_generate`.
unsafe fn reply(
    h: &SessionHandle,
    s: &mut Session,
    user: Option<&str>,
    callback: TernPieceCallback,
    user_data: *mut c_void,
    out_stop: *mut TernStopReason,
) -> Result<(), Error> {
    let (piece_tx, piece_rx) = mpsc::sync_channel::<String>(0);
    let (go_tx, go_rx) = mpsc::sync_channel::<bool>(0);
    let mut result: Option<Result<Reply, SessionError>> = None;
    let mut stopped_by_callback = false;
    let (result_slot, stopped) = (&mut result, &mut stopped_by_callback);
    let job_session = &mut *s;
    h.model.pool.in_place_scope(move |scope| {
        scope.spawn(move |_| {
            let mut run = || {
                if let Some(text) = user {
                    job_session.add_message("user", text)?;
                }
                // Each piece waits for the app's answer, so a stop is exact.
                job_session.generate(|piece| {
                    piece_tx.send(piece.to_string()).is_ok() && go_rx.recv().unwrap_or(false)
                })
            };
            *result_slot = Some(run());
            // Dropping `piece_tx` here (also on a panic) ends the loop below.
        });
        let mut line = Vec::new();
        for piece in piece_rx.iter() {
            let go = match callback {
                None => true,
                Some(f) => {
                    line.clear();
                    line.extend_from_slice(piece.as_bytes());
                    line.push(0);
                    // SAFETY: the app's callback, with a NUL-terminated copy of the piece.
                    unsafe { f(line.as_ptr().cast(), piece.len(), user_data) }
                }
            };
            *stopped |= !go;
            if go_tx.send(go).is_err() {
                break;
            }
        }
    });
    let write_stop = |r: TernStopReason| {
        if !out_stop.is_null() {
            // SAFETY: non-null and writable by the caller's contract.
            unsafe { *out_stop = r };
        }
    };
    let reply = match result {
        Some(Ok(reply)) => reply,
        Some(Err(SessionError::Cancelled)) => {
            write_stop(TernStopReason::TERN_STOP_CANCELLED);
            return Err(SessionError::Cancelled.into());
        }
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(Error::new(
                TernStatus::TERN_ERR_INTERNAL,
                "the generation job did not run",
            ))
        }
    };
    let stop = match reply.stop {
        StopReason::EndOfTurn => TernStopReason::TERN_STOP_END_OF_TURN,
        StopReason::StopString => TernStopReason::TERN_STOP_STRING,
        StopReason::MaxTokens => TernStopReason::TERN_STOP_MAX_TOKENS,
        StopReason::Cancelled if stopped_by_callback => TernStopReason::TERN_STOP_CALLBACK,
        StopReason::Cancelled => TernStopReason::TERN_STOP_CANCELLED,
    };
    write_stop(stop);
    let stats = s.stats();
    log_with(TERN_LOG_INFO, || {
        format!(
            "reply of {} tokens ({stop:?}); generation so far {:.1} tokens/s, prompt {:.1} \
             tokens/s",
            reply.tokens,
            stats.generation_tps(),
            stats.prompt_tps()
        )
    });
    if stop == TernStopReason::TERN_STOP_CANCELLED {
        return Err(SessionError::Cancelled.into());
    }
    Ok(())
}

/// Copies the session's counters to `*out` (see `TernStats` for `size`). Safe to call from
/// any thread at any time: while a call runs, the counters are those of the end of the
/// previous call.
///
/// # Safety
/// `out` is NULL or points to a `TernStats` whose `size` is set.
#[no_mangle]
pub unsafe extern "C" fn tern_session_stats(
    session: *const TernSession,
    out: *mut TernStats,
) -> TernStatus {
    guard("tern_session_stats", || {
        out_arg(out, "out")?;
        let h = handle::get::<SessionHandle>(session, "session")?;
        let full = TernStats::from_stats(&h.stats.lock().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: `out` is non-null; its first field, `size`, is readable by contract.
        let size = unsafe { std::ptr::addr_of!((*out).size).read() };
        if size < std::mem::size_of::<usize>() {
            return Err(Error::invalid(format!(
                "out->size is {size}: set it to sizeof(TernStats)"
            )));
        }
        let n = size.min(std::mem::size_of::<TernStats>());
        // SAFETY: the caller's struct has `size` writable bytes, we write `n <= size`; the
        // source is a whole TernStats.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&full as *const TernStats).cast::<u8>(),
                out.cast::<u8>(),
                n,
            );
            std::ptr::addr_of_mut!((*out).size).write(n);
        }
        Ok(())
    })
}

/// Saves the session to `path` (UTF-8): the conversation, the cache, the sampler's state, so
/// that `tern_session_restore` continues exactly where it was. The file is written under a
/// temporary name and renamed into place: a crash while saving keeps the previous file.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tern_session_save(
    session: *mut TernSession,
    path: *const c_char,
) -> TernStatus {
    guard("tern_session_save", || {
        // SAFETY: forwarded contract.
        let path = unsafe { str_arg(path, "path") }?;
        with_session(session, |_, s| Ok(s.save(path)?))
    })
}

/// Restores a session saved by `tern_session_save` with the same model file, as a new
/// session in `*out` (NULL on failure). A missing file gives `TERN_ERR_IO`; a corrupt one, one
/// of another format version or saved with another model `TERN_ERR_SESSION_FILE`. The
/// restored session decodes alone; `tern_session_restore_with` gives it a draft model.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tern_session_restore(
    model: *const TernModel,
    path: *const c_char,
    out: *mut *mut TernSession,
) -> TernStatus {
    // SAFETY: forwarded contract.
    unsafe { restore("tern_session_restore", model, std::ptr::null(), path, out) }
}

/// `tern_session_restore`, with the draft model set on `params` (`tern_session_params_set_draft`)
/// if any: the restored session goes on decoding speculatively, whether or not it was saved
/// with a draft. Only the draft is taken from `params`; everything else (sampling, cache,
/// system prompt) is the saved session's. The draft starts with an empty cache and is given
/// the saved history at the next reply; the text is the model's own either way. The memory
/// guard counts both models and both caches. `params` NULL: `tern_session_restore`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tern_session_restore_with(
    model: *const TernModel,
    params: *const TernSessionParams,
    path: *const c_char,
    out: *mut *mut TernSession,
) -> TernStatus {
    // SAFETY: forwarded contract.
    unsafe { restore("tern_session_restore_with", model, params, path, out) }
}

/// The two restores: `params` NULL or without a draft restores a session that decodes alone.
///
/// # Safety
/// As `tern_session_restore_with`.
unsafe fn restore(
    name: &'static str,
    model: *const TernModel,
    params: *const TernSessionParams,
    path: *const c_char,
    out: *mut *mut TernSession,
) -> TernStatus {
    guard(name, || {
        out_arg(out, "out")?;
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: forwarded contract.
        let path = unsafe { str_arg(path, "path") }?;
        let m = handle::get::<ModelHandle>(model, "model")?;
        let draft = if params.is_null() {
            None
        } else {
            let p = handle::get::<SessionParams>(params, "params")?;
            p.settings().draft.map(|d| d.spec())
        };
        let session = m
            .pool
            .install(|| Session::restore_with(m.model.clone(), path, draft, Some(&m.board)))?;
        publish(m, session, out)
    })
}
