//! Session parameters: an opaque handle with one setter per setting, so that settings added
//! later break no compiled app. Each setter checks its value at once, so a bad one is reported
//! by the call that set it.

use std::ffi::c_char;
use std::sync::Mutex;

use tern::cache::KvType;
use tern::session::SessionOptions;

use crate::error::{guard, opt_str_arg, out_arg, str_arg, Error, TernStatus};
use crate::handle::{self, Kind};

/// Settings for `tern_session_new` (opaque; made by `tern_session_params_new`).
pub struct TernSessionParams {
    _private: [u8; 0],
}

/// The element type of the KV cache (an `int32_t`; one of the `TERN_KV_*` values).
pub type TernKvType = i32;
/// 32-bit floats: exact, 4 bytes per value.
pub const TERN_KV_F32: TernKvType = 0;
/// 16-bit floats (the default): 2 bytes per value.
pub const TERN_KV_F16: TernKvType = 1;
/// 8-bit blocks (ggml's Q8_0): about 1.06 bytes per value.
pub const TERN_KV_Q8_0: TernKvType = 2;

/// The options of a session to be. The cache settings an app leaves unset come from the
/// model's board when the session is made.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionSettings {
    pub opts: SessionOptions,
    pub sinks: Option<usize>,
    pub window: Option<usize>,
    pub kv_type: Option<KvType>,
    pub draft: Option<Draft>,
}

/// A draft model for speculative decoding, and its tokens per step (`None`: adaptive).
#[derive(Clone)]
pub(crate) struct Draft {
    pub model: std::sync::Arc<tern::model::Model>,
    pub k: Option<usize>,
}

impl Draft {
    /// The runtime's description of this draft.
    pub fn spec(&self) -> tern::speculative::DraftSpec {
        tern::speculative::DraftSpec {
            model: self.model.clone(),
            k: self.k.map_or(tern::speculative::DraftK::default(), |k| {
                tern::speculative::DraftK::Fixed(k)
            }),
            // The promise of the C ABI: the text is the model's own, near-ties too.
            exact: true,
        }
    }
}

impl std::fmt::Debug for Draft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Draft({}, k {:?})", self.model.path().display(), self.k)
    }
}

pub(crate) struct SessionParams(Mutex<SessionSettings>);

impl Kind for SessionParams {
    type C = TernSessionParams;
    const NAME: &'static str = "session parameters";
}

impl SessionParams {
    pub fn settings(&self) -> SessionSettings {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs setter `name` on the options behind `params`.
fn set(
    name: &str,
    params: *mut TernSessionParams,
    f: impl FnOnce(&mut SessionSettings) -> Result<(), Error>,
) -> TernStatus {
    guard(name, || {
        let p = handle::get::<SessionParams>(params, "params")?;
        let mut settings = p.0.lock().unwrap_or_else(|e| e.into_inner());
        // Work on a copy, so that a rejected value leaves the settings as they were.
        let mut new = settings.clone();
        f(&mut new)?;
        new.opts
            .sampler
            .validate()
            .map_err(|e| Error::invalid(e.to_string()))?;
        *settings = new;
        Ok(())
    })
}

fn positive(name: &str, v: u32) -> Result<usize, Error> {
    if v == 0 {
        Err(Error::invalid(format!("{name} must be at least 1")))
    } else {
        Ok(v as usize)
    }
}

/// Makes session parameters with the defaults: the KV cache of the model's board (sinks,
/// window and element type, as `tern boards` shows them; the window shrunk if the board's
/// memory budget requires), evicting one token at a time; greedy sampling (temperature 0)
/// with top-k 40, top-p 0.95, min-p 0.05, no repetition penalty (1.0 over the last 64
/// tokens), seed 0; no system prompt (pinned in the cache when set); replies of at most 512
/// tokens; no extra stop strings. Free them with `tern_session_params_free`.
#[no_mangle]
pub extern "C" fn tern_session_params_new(out: *mut *mut TernSessionParams) -> TernStatus {
    guard("tern_session_params_new", || {
        out_arg(out, "out")?;
        let h = handle::insert(SessionParams(Mutex::new(SessionSettings::default())))?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { *out = h };
        Ok(())
    })
}

/// Frees session parameters. NULL is accepted and ignored.
#[no_mangle]
pub extern "C" fn tern_session_params_free(params: *mut TernSessionParams) -> TernStatus {
    guard("tern_session_params_free", || {
        handle::remove::<SessionParams>(params, "params").map(drop)
    })
}

/// Tokens at the start of the conversation kept in the cache for ever (attention sinks;
/// default: the board's).
#[no_mangle]
pub extern "C" fn tern_session_params_set_sinks(
    params: *mut TernSessionParams,
    sinks: u32,
) -> TernStatus {
    set("tern_session_params_set_sinks", params, |o| {
        o.sinks = Some(sinks as usize);
        Ok(())
    })
}

/// Most recent tokens kept in the cache after the sinks (at least 1; default: the board's).
/// `sinks + window` may not exceed the context length the model was trained with, and the
/// model and cache must fit the board's memory budget (both checked by `tern_session_new`).
#[no_mangle]
pub extern "C" fn tern_session_params_set_window(
    params: *mut TernSessionParams,
    window: u32,
) -> TernStatus {
    set("tern_session_params_set_window", params, |o| {
        o.window = Some(positive("window", window)?);
        Ok(())
    })
}

/// The element type of cached keys and values: `TERN_KV_F32`, `TERN_KV_F16` or `TERN_KV_Q8_0`
/// (default: the board's).
#[no_mangle]
pub extern "C" fn tern_session_params_set_kv_type(
    params: *mut TernSessionParams,
    kv_type: TernKvType,
) -> TernStatus {
    set("tern_session_params_set_kv_type", params, |o| {
        o.kv_type = Some(match kv_type {
            TERN_KV_F32 => KvType::F32,
            TERN_KV_F16 => KvType::F16,
            TERN_KV_Q8_0 => KvType::Q8_0,
            other => {
                return Err(Error::invalid(format!(
                    "kv_type {other} is not a TERN_KV_* value (0 to 2)"
                )))
            }
        });
        Ok(())
    })
}

/// Tokens evicted at once when the window is full (1, the default: one at a time); at most
/// the window (checked by `tern_session_new`).
#[no_mangle]
pub extern "C" fn tern_session_params_set_evict_chunk(
    params: *mut TernSessionParams,
    evict_chunk: u32,
) -> TernStatus {
    set("tern_session_params_set_evict_chunk", params, |o| {
        o.opts.cache.evict_chunk = positive("evict_chunk", evict_chunk)?;
        Ok(())
    })
}

/// Sampling temperature: 0 or below is greedy decoding; must be finite.
#[no_mangle]
pub extern "C" fn tern_session_params_set_temperature(
    params: *mut TernSessionParams,
    temperature: f32,
) -> TernStatus {
    set("tern_session_params_set_temperature", params, |o| {
        o.opts.sampler.temperature = temperature;
        Ok(())
    })
}

/// Keep only the `top_k` most likely tokens when sampling; 0 keeps all.
#[no_mangle]
pub extern "C" fn tern_session_params_set_top_k(
    params: *mut TernSessionParams,
    top_k: u32,
) -> TernStatus {
    set("tern_session_params_set_top_k", params, |o| {
        o.opts.sampler.top_k = top_k as usize;
        Ok(())
    })
}

/// Nucleus sampling threshold, between 0 and 1 (1 disables).
#[no_mangle]
pub extern "C" fn tern_session_params_set_top_p(
    params: *mut TernSessionParams,
    top_p: f32,
) -> TernStatus {
    set("tern_session_params_set_top_p", params, |o| {
        o.opts.sampler.top_p = top_p;
        Ok(())
    })
}

/// Drop tokens less likely than `min_p` times the most likely one; between 0 and 1 (0
/// disables).
#[no_mangle]
pub extern "C" fn tern_session_params_set_min_p(
    params: *mut TernSessionParams,
    min_p: f32,
) -> TernStatus {
    set("tern_session_params_set_min_p", params, |o| {
        o.opts.sampler.min_p = min_p;
        Ok(())
    })
}

/// Repetition penalty, positive (1 disables).
#[no_mangle]
pub extern "C" fn tern_session_params_set_repeat_penalty(
    params: *mut TernSessionParams,
    repeat_penalty: f32,
) -> TernStatus {
    set("tern_session_params_set_repeat_penalty", params, |o| {
        o.opts.sampler.repeat_penalty = repeat_penalty;
        Ok(())
    })
}

/// How many recent tokens the repetition penalty looks at (0 disables it).
#[no_mangle]
pub extern "C" fn tern_session_params_set_repeat_last_n(
    params: *mut TernSessionParams,
    repeat_last_n: u32,
) -> TernStatus {
    set("tern_session_params_set_repeat_last_n", params, |o| {
        o.opts.sampler.repeat_last_n = repeat_last_n as usize;
        Ok(())
    })
}

/// Seed of the sampler's random generator: equal seeds, settings and conversations give
/// equal replies on every machine.
#[no_mangle]
pub extern "C" fn tern_session_params_set_seed(
    params: *mut TernSessionParams,
    seed: u64,
) -> TernStatus {
    set("tern_session_params_set_seed", params, |o| {
        o.opts.sampler.seed = seed;
        Ok(())
    })
}

/// The system prompt (UTF-8), fed through the model's chat template when the session starts
/// and after each reset; NULL removes it.
///
/// # Safety
/// `system_prompt` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tern_session_params_set_system_prompt(
    params: *mut TernSessionParams,
    system_prompt: *const c_char,
) -> TernStatus {
    set("tern_session_params_set_system_prompt", params, |o| {
        // SAFETY: forwarded contract.
        o.opts.system = unsafe { opt_str_arg(system_prompt, "system_prompt") }?.map(str::to_string);
        Ok(())
    })
}

/// Whether the system prompt is pinned in the cache with the sinks, so that it is never
/// evicted however long the conversation runs (the default: yes).
#[no_mangle]
pub extern "C" fn tern_session_params_set_pin_system(
    params: *mut TernSessionParams,
    pin: bool,
) -> TernStatus {
    set("tern_session_params_set_pin_system", params, |o| {
        o.opts.pin_system = pin;
        Ok(())
    })
}

/// Longest reply, in tokens (at least 1).
#[no_mangle]
pub extern "C" fn tern_session_params_set_max_tokens(
    params: *mut TernSessionParams,
    max_tokens: u32,
) -> TernStatus {
    set("tern_session_params_set_max_tokens", params, |o| {
        o.opts.max_reply = positive("max_tokens", max_tokens)?;
        Ok(())
    })
}

/// Adds a string (UTF-8, not empty) that ends a reply when the model writes it; the string
/// itself is not part of the reply. The chat template's end-of-turn tokens always end a reply.
///
/// # Safety
/// `stop` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tern_session_params_add_stop(
    params: *mut TernSessionParams,
    stop: *const c_char,
) -> TernStatus {
    set("tern_session_params_add_stop", params, |o| {
        // SAFETY: forwarded contract.
        let stop = unsafe { str_arg(stop, "stop") }?;
        if stop.is_empty() {
            return Err(Error::invalid("a stop string may not be empty"));
        }
        o.opts.stop.push(stop.to_string());
        Ok(())
    })
}

/// Speculative decoding: `draft` (a loaded model sharing the session model's vocabulary,
/// e.g. a smaller size of the same family) proposes `k` tokens per step (1 to 16; 0 adapts
/// `k` to the acceptance rate) and the session's model checks them in one pass. The text is
/// the session model's own; decoding is faster when the draft is often right. A draft of
/// another vocabulary makes `tern_session_new` fail with `TERN_ERR_INVALID_ARGUMENT`. NULL
/// removes the draft. The parameters keep the draft model alive until they are freed.
#[no_mangle]
pub extern "C" fn tern_session_params_set_draft(
    params: *mut TernSessionParams,
    draft: *const crate::model::TernModel,
    k: u32,
) -> TernStatus {
    set("tern_session_params_set_draft", params, |o| {
        if draft.is_null() {
            o.draft = None;
            return Ok(());
        }
        let m = handle::get::<crate::model::ModelHandle>(draft, "draft")?;
        if k as usize > tern::speculative::MAX_K {
            return Err(Error::invalid(format!(
                "k = {k}: draft tokens per step are 1 to {} (0: adaptive)",
                tern::speculative::MAX_K
            )));
        }
        o.draft = Some(Draft {
            model: m.model.clone(),
            k: (k > 0).then_some(k as usize),
        });
        Ok(())
    })
}

/// Removes the stop strings added with `tern_session_params_add_stop`.
#[no_mangle]
pub extern "C" fn tern_session_params_clear_stops(params: *mut TernSessionParams) -> TernStatus {
    set("tern_session_params_clear_stops", params, |o| {
        o.opts.stop.clear();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_check_values_and_keep_the_old_on_failure() {
        let mut p = std::ptr::null_mut();
        assert_eq!(tern_session_params_new(&mut p), TernStatus::TERN_OK);
        let get = || handle::get::<SessionParams>(p, "p").unwrap().settings();

        assert_eq!(tern_session_params_set_top_p(p, 0.5), TernStatus::TERN_OK);
        assert_eq!(
            tern_session_params_set_top_p(p, 1.5),
            TernStatus::TERN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(get().opts.sampler.top_p, 0.5);
        assert_eq!(
            tern_session_params_set_temperature(p, f32::NAN),
            TernStatus::TERN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            tern_session_params_set_window(p, 0),
            TernStatus::TERN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            tern_session_params_set_kv_type(p, 3),
            TernStatus::TERN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            tern_session_params_set_kv_type(p, TERN_KV_Q8_0),
            TernStatus::TERN_OK
        );
        assert_eq!(get().kv_type, Some(KvType::Q8_0));
        assert_eq!(get().window, None);

        let sys = c"Be brief.";
        assert_eq!(
            unsafe { tern_session_params_set_system_prompt(p, sys.as_ptr()) },
            TernStatus::TERN_OK
        );
        assert_eq!(get().opts.system.as_deref(), Some("Be brief."));
        assert_eq!(
            unsafe { tern_session_params_set_system_prompt(p, std::ptr::null()) },
            TernStatus::TERN_OK
        );
        assert_eq!(get().opts.system, None);
        assert_eq!(
            unsafe { tern_session_params_add_stop(p, c"".as_ptr()) },
            TernStatus::TERN_ERR_INVALID_ARGUMENT
        );

        assert_eq!(tern_session_params_free(p), TernStatus::TERN_OK);
        assert_eq!(
            tern_session_params_set_seed(p, 1),
            TernStatus::TERN_ERR_INVALID_HANDLE
        );
    }
}
