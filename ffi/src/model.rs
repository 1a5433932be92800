//! Models: loaded once (memory-mapped), immutable, shared by every session made from them,
//! each with the thread pool its sessions run on.

use std::ffi::c_char;
use std::sync::{Arc, Mutex};

use tern::model::Model;

use crate::error::{guard, out_arg, str_arg, Error, TernStatus};
use crate::handle::{self, Kind};
use crate::log::{log_with, TERN_LOG_DEBUG, TERN_LOG_INFO, TERN_LOG_WARN};

/// Settings for `tern_model_load` (opaque; made by `tern_model_params_new`).
pub struct TernModelParams {
    _private: [u8; 0],
}

/// A loaded model (opaque). Several sessions, on several threads, may use one model.
pub struct TernModel {
    _private: [u8; 0],
}

/// Most threads a model's pool may have: far more than any phone or board has cores, and
/// few enough that a wrong number fails here rather than in the OS.
const MAX_THREADS: u32 = 256;

#[derive(Clone, Debug)]
pub(crate) struct ModelSettings {
    /// Threads of the pool; 0 means the board's choice.
    threads: u32,
    board: String,
}

impl Default for ModelSettings {
    fn default() -> ModelSettings {
        ModelSettings {
            threads: 0,
            board: "auto".to_string(),
        }
    }
}

pub(crate) struct ModelParams(Mutex<ModelSettings>);

impl Kind for ModelParams {
    type C = TernModelParams;
    const NAME: &'static str = "model parameters";
}

impl ModelParams {
    fn settings(&self) -> std::sync::MutexGuard<'_, ModelSettings> {
        // Settings are plain values, whole even if a panic interrupted a setter.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a `TernModel` handle holds.
pub(crate) struct ModelHandle {
    pub model: Arc<Model>,
    /// Every call that runs the model runs inside this pool.
    pub pool: rayon::ThreadPool,
    /// The board: default KV cache and memory budget of the sessions.
    pub board: tern_boards::Board,
}

impl Kind for ModelHandle {
    type C = TernModel;
    const NAME: &'static str = "model";
}

/// Makes model parameters with the defaults: threads 0 (the board's choice) and board
/// "auto". Free them with `tern_model_params_free` (they may be freed right after loading).
#[no_mangle]
pub extern "C" fn tern_model_params_new(out: *mut *mut TernModelParams) -> TernStatus {
    guard("tern_model_params_new", || {
        out_arg(out, "out")?;
        let h = handle::insert(ModelParams(Mutex::new(ModelSettings::default())))?;
        // SAFETY: `out` is non-null and, by the caller's contract, points to writable memory.
        unsafe { *out = h };
        Ok(())
    })
}

/// Frees model parameters. NULL is accepted and ignored.
#[no_mangle]
pub extern "C" fn tern_model_params_free(params: *mut TernModelParams) -> TernStatus {
    guard("tern_model_params_free", || {
        handle::remove::<ModelParams>(params, "params").map(drop)
    })
}

/// Sets the number of threads that run the model's matrix products (shared by all its
/// sessions); 0, the default, lets the board decide (its fast cores, one thread each). At
/// load, more threads than the CPUs this process may use are lowered to that count, with a
/// warning in the log.
#[no_mangle]
pub extern "C" fn tern_model_params_set_threads(
    params: *mut TernModelParams,
    threads: u32,
) -> TernStatus {
    guard("tern_model_params_set_threads", || {
        let p = handle::get::<ModelParams>(params, "params")?;
        if threads > MAX_THREADS {
            return Err(Error::invalid(format!(
                "threads = {threads}: at most {MAX_THREADS} (0 for one per physical core)"
            )));
        }
        p.settings().threads = threads;
        Ok(())
    })
}

/// Sets the board profile, which picks the default thread count, the default KV cache of
/// sessions and the memory budget they must fit: "auto" (the default) detects the machine;
/// otherwise a profile name as `tern boards` lists them ("rpi4", "android-arm64", …). An
/// unknown name gives `TERN_ERR_INVALID_ARGUMENT`, with the known names in the message.
///
/// # Safety
/// `board` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tern_model_params_set_board(
    params: *mut TernModelParams,
    board: *const c_char,
) -> TernStatus {
    guard("tern_model_params_set_board", || {
        let p = handle::get::<ModelParams>(params, "params")?;
        // SAFETY: forwarded contract.
        let board = unsafe { str_arg(board, "board") }?;
        if board != "auto" && tern_boards::profile(board).is_err() {
            return Err(Error::invalid(format!(
                "unknown board `{board}` (known: auto, {})",
                tern_boards::names().join(", ")
            )));
        }
        p.settings().board = board.to_string();
        Ok(())
    })
}

/// Loads the GGUF model at `path` (UTF-8), memory-mapped: the weights are read in place,
/// never copied. `params` may be NULL for the defaults. On success `*out` is the model; on
/// failure it is set to NULL. A missing or unreadable file gives `TERN_ERR_IO`; a corrupt,
/// truncated or unsupported one `TERN_ERR_MODEL`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn tern_model_load(
    path: *const c_char,
    params: *const TernModelParams,
    out: *mut *mut TernModel,
) -> TernStatus {
    guard("tern_model_load", || {
        out_arg(out, "out")?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: forwarded contract.
        let path = unsafe { str_arg(path, "path") }?;
        let settings = if params.is_null() {
            ModelSettings::default()
        } else {
            handle::get::<ModelParams>(params, "params")?
                .settings()
                .clone()
        };
        let board = tern_boards::select(Some(&settings.board))
            .map_err(|e| Error::invalid(e.to_string()))?;
        let asked = (settings.threads > 0).then_some(settings.threads as usize);
        let (threads, lowered) = tern::fit::fit_threads(asked, &board);
        if let Some(note) = lowered {
            log_with(TERN_LOG_WARN, || note);
        }
        let (kernels, note) = tern::fit::use_board_kernels(&board);
        if let Some(note) = note {
            log_with(TERN_LOG_WARN, || note);
        }
        let model = Model::load(path)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tern-{i}"))
            .build()
            .map_err(|e| {
                Error::new(
                    TernStatus::TERN_ERR_RUNTIME,
                    format!("starting {threads} threads: {e}"),
                )
            })?;
        let c = model.llama().config();
        log_with(TERN_LOG_INFO, || {
            format!(
                "loaded {path}: {} layers, {} tokens of vocabulary, trained on {} tokens of \
                 context; {threads} threads; board {}; kernels {}",
                c.n_layer,
                c.n_vocab,
                c.n_ctx_train,
                board.profile.name,
                kernels.name()
            )
        });
        log_with(TERN_LOG_DEBUG, || format!("{board}"));
        let h = handle::insert(ModelHandle {
            model: Arc::new(model),
            pool,
            board,
        })?;
        // SAFETY: as above.
        unsafe { *out = h };
        Ok(())
    })
}

/// The memory budget of the model's board, in bytes: what the model and the KV cache of a
/// session must fit (`tern boards` shows how the board chose it). A host that runs sessions
/// in a process of its own can size that process's limits with it.
///
/// # Safety
/// `out` is NULL or points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn tern_model_memory_budget(
    model: *const TernModel,
    out: *mut u64,
) -> TernStatus {
    guard("tern_model_memory_budget", || {
        out_arg(out, "out")?;
        let h = handle::get::<ModelHandle>(model, "model")?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { *out = h.board.settings.memory_budget.value };
        Ok(())
    })
}

/// Frees a model handle. Sessions made from it keep it alive: its memory is released when
/// the model and all its sessions are freed. NULL is accepted and ignored; a handle freed
/// twice gives `TERN_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn tern_model_free(model: *mut TernModel) -> TernStatus {
    guard("tern_model_free", || {
        handle::remove::<ModelHandle>(model, "model").map(drop)
    })
}
