//! `tern.Model`: a model loaded once (memory-mapped) with the board it runs on and the
//! thread pool its sessions share.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::errors::{guarded, Failure};
use crate::session::{Session, SessionArgs};

/// Most threads a model's pool may have (as in the C ABI).
const MAX_THREADS: i64 = 256;

/// What every session of a model shares.
pub struct Shared {
    pub model: Arc<tern::model::Model>,
    /// Every call that runs the model runs in this pool.
    pub pool: rayon::ThreadPool,
    /// Gives the sessions their default KV cache and their memory budget.
    pub board: tern_boards::Board,
}

/// A language model, loaded from a GGUF file or fetched by name.
///
/// ``model`` is a path to a GGUF file or a known model name (see ``tern.known_models()``),
/// downloaded into the cache on first use with a progress bar. ``threads`` runs the matrix
/// products (default: the board's choice, one per fast core; more than the CPUs this process
/// may use are lowered to them, with a ``RuntimeWarning``); ``board`` is a board profile
/// name (see ``tern.boards()``) or "auto" to detect this machine. The weights are
/// memory-mapped, never copied; any number of sessions, on any threads, share one model.
///
/// Raises ``ModelNotFoundError`` (no such file, unknown name), ``ModelError`` (corrupt or
/// unsupported file), ``DownloadError``, ``InvalidArgumentError``.
#[pyclass(frozen, module = "tern")]
pub struct Model {
    pub shared: Arc<Shared>,
    info: Py<ModelInfo>,
}

/// What a model is: ``architecture``, ``size`` (bytes of the file), ``context_length``
/// (tokens it was trained with), ``has_chat_template``, and more.
#[pyclass(frozen, get_all, module = "tern")]
pub struct ModelInfo {
    /// The model file.
    path: std::path::PathBuf,
    /// The GGUF architecture, e.g. "llama".
    architecture: String,
    /// Size of the model file in bytes.
    size: u64,
    /// The context length the model was trained with, in tokens.
    context_length: usize,
    /// Whether the file carries a chat template (else a plain "User:"/"Assistant:" format).
    has_chat_template: bool,
    n_layer: usize,
    n_embd: usize,
    n_vocab: usize,
    /// Threads of the model's pool.
    threads: usize,
    /// The board profile in use.
    board: String,
    /// The kernel set in use (e.g. "avx2", "neon-dotprod", "scalar").
    kernels: String,
}

#[pymethods]
impl ModelInfo {
    fn __repr__(&self) -> String {
        format!(
            "ModelInfo(path={:?}, architecture={:?}, size={}, context_length={}, \
             has_chat_template={}, n_layer={}, n_embd={}, n_vocab={}, threads={}, board={:?}, \
             kernels={:?})",
            self.path.display().to_string(),
            self.architecture,
            self.size,
            self.context_length,
            if self.has_chat_template {
                "True"
            } else {
                "False"
            },
            self.n_layer,
            self.n_embd,
            self.n_vocab,
            self.threads,
            self.board,
            self.kernels
        )
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(text_signature = "(model=\"smollm2-135m\", *, threads=None, board=\"auto\")")]
    #[pyo3(signature = (model = tern::catalog::DEFAULT_MODEL.to_string(), *, threads = None, board = "auto".to_string()))]
    fn new(py: Python<'_>, model: String, threads: Option<i64>, board: String) -> PyResult<Model> {
        if let Some(t) = threads {
            if !(1..=MAX_THREADS).contains(&t) {
                return Err(Failure::invalid(format!(
                    "threads = {t}: between 1 and {MAX_THREADS} (None for the board's choice)"
                ))
                .into());
            }
        }
        let (shared, notes) = py.detach(|| guarded(|| load(&model, threads, &board)))?;
        for note in notes {
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                &std::ffi::CString::new(note).unwrap_or_default(),
                1,
            )?;
        }
        let m = &shared.model;
        let c = m.llama().config();
        let file = m.llama().file();
        let info = ModelInfo {
            path: m.path().to_path_buf(),
            architecture: file.architecture().unwrap_or("unknown").to_string(),
            size: file.file_size(),
            context_length: c.n_ctx_train,
            has_chat_template: !m.template().is_plain(),
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            n_vocab: c.n_vocab,
            threads: shared.pool.current_num_threads(),
            board: shared.board.profile.name.to_string(),
            kernels: tern_kernels::kernels().name().to_string(),
        };
        Ok(Model {
            shared: Arc::new(shared),
            info: Py::new(py, info)?,
        })
    }

    /// What the model is (architecture, size, context length, chat template presence, …).
    #[getter]
    fn info(&self, py: Python<'_>) -> Py<ModelInfo> {
        self.info.clone_ref(py)
    }

    /// Starts a conversation with this model.
    ///
    /// ``system`` is a system prompt, fed now and (with ``pin_system``) kept in the cache for
    /// ever. The KV cache keeps ``sinks`` first tokens and a rolling ``window`` of the latest
    /// as ``kv_type`` ("f32", "f16" or "q8_0"); None takes the board's choice (for the
    /// window, within the model's context). So a conversation can go on for ever in constant
    /// memory. Sampling: ``temperature`` (0: always the most likely token), ``top_k`` (0:
    /// all), ``top_p``, ``min_p``, ``repeat_penalty`` (1: none), ``seed`` (None: a random
    /// one). A reply ends at the model's end of turn, after ``max_tokens`` tokens, or at a
    /// ``stop`` string (a string or a list of them). ``draft``, a smaller model of the same
    /// vocabulary, makes decoding speculative: it proposes ``draft_k`` tokens a step (0:
    /// adapted to how often it is right, up to 7) and this model checks them in one pass;
    /// the text is this model's own.
    #[pyo3(signature = (system = None, *, sinks = Some(4), window = None, kv_type = Some("f16".to_string()), temperature = 0.6, top_p = 0.95, top_k = 40, min_p = 0.05, repeat_penalty = 1.1, seed = None, max_tokens = 256, stop = None, pin_system = true, draft = None, draft_k = 0))]
    #[pyo3(
        text_signature = "($self, system=None, *, sinks=4, window=None, kv_type=\"f16\", temperature=0.6, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.1, seed=None, max_tokens=256, stop=None, pin_system=True, draft=None, draft_k=0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn session(
        &self,
        py: Python<'_>,
        system: Option<String>,
        sinks: Option<i64>,
        window: Option<i64>,
        kv_type: Option<String>,
        temperature: f64,
        top_p: f64,
        top_k: i64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<u64>,
        max_tokens: i64,
        stop: Option<Bound<'_, PyAny>>,
        pin_system: bool,
        draft: Option<PyRef<'_, Model>>,
        draft_k: i64,
    ) -> PyResult<Session> {
        let stop = match stop {
            None => Vec::new(),
            Some(s) => match s.extract::<String>() {
                Ok(one) => vec![one],
                Err(_) => s.extract::<Vec<String>>()?,
            },
        };
        let args = SessionArgs {
            system,
            sinks,
            window,
            kv_type,
            temperature,
            top_p,
            top_k,
            min_p,
            repeat_penalty,
            seed,
            max_tokens,
            stop,
            pin_system,
            draft: draft.map(|d| (d.shared.model.clone(), draft_k)),
        };
        Session::start(py, self.shared.clone(), args)
    }

    fn __repr__(&self) -> String {
        let m = &self.shared.model;
        format!(
            "tern.Model({:?}, threads={}, board={:?})",
            m.path().display().to_string(),
            self.shared.pool.current_num_threads(),
            self.shared.board.profile.name
        )
    }
}

/// Resolves (pulling if need be) and loads the model; returns it with the notes to show (the
/// kernel set, threads lowered to the CPUs), if any.
fn load(model: &str, threads: Option<i64>, board: &str) -> Result<(Shared, Vec<String>), Failure> {
    if board != "auto" && tern_boards::profile(board).is_err() {
        return Err(Failure::invalid(format!(
            "unknown board `{board}` (known: auto, {})",
            tern_boards::names().join(", ")
        )));
    }
    let board = tern_boards::select(Some(board)).map_err(|e| Failure::invalid(e.to_string()))?;
    let path = tern_cli::fetch::resolve_model(model)?;
    let (_, kernel_note) = tern::fit::use_board_kernels(&board);
    let loaded = tern::model::Model::load(&path)?;
    let (threads, threads_note) = tern::fit::fit_threads(threads.map(|t| t as usize), &board);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tern-{i}"))
        .build()
        .map_err(|e| Failure::new("TernError", format!("starting {threads} threads: {e}")))?;
    Ok((
        Shared {
            model: Arc::new(loaded),
            pool,
            board,
        },
        kernel_note.into_iter().chain(threads_note).collect(),
    ))
}
