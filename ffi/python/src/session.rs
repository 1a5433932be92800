//! `tern.Session`: one conversation, and `tern.Stream`, a reply as it is generated.
//!
//! Every call that runs the model is a job in the model's thread pool. The job sends the
//! reply's pieces over a channel; the calling thread waits for them with the GIL released
//! and, between pieces (at least every [`POLL`]), checks for Ctrl-C. An interrupt raises the
//! session's cancel flag, waits for the job to stop (within a token) and raises
//! `KeyboardInterrupt`; the session stays usable. The job never waits for Python, so a
//! reply runs at the runtime's own speed whatever the consumer does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;

use tern::fit::{fit_cache, CacheRequest};
use tern::sampler::SamplerConfig;
use tern::session::{Reply, SessionOptions, StopReason};

use crate::errors::{guarded, Failure};
use crate::model::{Model, Shared};

/// How often a waiting call checks for Ctrl-C.
const POLL: Duration = Duration::from_millis(50);

/// The arguments of `Model.session`, checked by [`options`].
pub struct SessionArgs {
    pub system: Option<String>,
    pub sinks: Option<i64>,
    pub window: Option<i64>,
    pub kv_type: Option<String>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: i64,
    pub min_p: f64,
    pub repeat_penalty: f64,
    pub seed: Option<u64>,
    pub max_tokens: i64,
    pub stop: Vec<String>,
    pub pin_system: bool,
    /// A draft model for speculative decoding, and its tokens per step (0: adaptive).
    pub draft: Option<(Arc<tern::model::Model>, i64)>,
}

/// A conversation with a model: made by ``Model.session(...)`` or ``Session.restore``.
///
/// ``chat(text)`` returns the reply to a user message; ``stream(text)`` yields it piece by
/// piece. ``add_message(role, text)`` and ``generate()`` do the two halves separately.
/// ``save(path)`` and ``Session.restore(model, path)`` continue a conversation exactly.
/// ``cancel()`` (from any thread) stops the running call; Ctrl-C stops it and raises
/// ``KeyboardInterrupt``. Either way the conversation keeps what was said so far.
/// A session runs one call at a time (``BusyError`` otherwise); several sessions of one model
/// run in parallel from several threads.
#[pyclass(frozen, module = "tern")]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    session: Mutex<tern::session::Session>,
    /// The session's cancel flag, reachable while a job holds the session.
    cancel: Arc<AtomicBool>,
    /// Whether a job is running (or a stream is unfinished).
    busy: AtomicBool,
    /// Counters as of the end of the last call, readable while a call runs.
    stats: Mutex<tern::session::Stats>,
    /// Why the last reply ended.
    last_stop: Mutex<Option<&'static str>>,
}

/// What a job reports.
enum Event {
    Piece(String),
    Done(Result<Option<Reply>, Failure>),
}

/// A job's work on the session; `emit` hands out a piece and says whether to go on.
type Work = Box<
    dyn FnOnce(
            &mut tern::session::Session,
            &mut dyn FnMut(&str) -> bool,
        ) -> Result<Option<Reply>, tern::session::SessionError>
        + Send,
>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and flags are plain values, whole even if a panic interrupted a writer.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndOfTurn => "end_of_turn",
        StopReason::StopString => "stop_string",
        StopReason::MaxTokens => "max_tokens",
        StopReason::Cancelled => "cancelled",
    }
}

impl Inner {
    fn new(shared: Arc<Shared>, session: tern::session::Session) -> Inner {
        Inner {
            cancel: session.cancel_flag(),
            stats: Mutex::new(session.stats()),
            session: Mutex::new(session),
            busy: AtomicBool::new(false),
            last_stop: Mutex::new(None),
            shared,
        }
    }

    /// Starts `work` as a job in the model's pool; its events arrive on the receiver.
    fn start(self: &Arc<Inner>, work: Work) -> Result<Receiver<Event>, Failure> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Failure::new(
                "BusyError",
                "the session is running another call (or a stream of it is unfinished)",
            ));
        }
        // A cancel aimed at an earlier call must not stop this one.
        self.cancel.store(false, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let job = self.clone();
        self.shared.pool.spawn(move || job.run(work, tx));
        Ok(rx)
    }

    /// The job's body, on a pool thread: never unwinds (rayon would abort the process).
    fn run(&self, work: Work, tx: Sender<Event>) {
        let result = guarded(|| {
            let mut s = self.session.lock().map_err(|_| {
                Failure::new(
                    "InternalError",
                    "an earlier internal error left this session inconsistent; start another",
                )
            })?;
            let mut emit = |piece: &str| tx.send(Event::Piece(piece.to_string())).is_ok();
            let r = work(&mut s, &mut emit);
            *lock(&self.stats) = s.stats();
            match r {
                Ok(reply) => Ok(reply),
                // Cancelled while feeding: what was fed stays, the reply is empty.
                Err(tern::session::SessionError::Cancelled) => Ok(Some(Reply {
                    text: String::new(),
                    tokens: 0,
                    stop: StopReason::Cancelled,
                })),
                Err(e) => Err(e.into()),
            }
        });
        if let Ok(Some(reply)) = &result {
            *lock(&self.last_stop) = Some(stop_name(reply.stop));
        }
        self.busy.store(false, Ordering::Release);
        let _ = tx.send(Event::Done(result));
    }
}

/// Waits for the next event of a job with the GIL released, checking for Ctrl-C every
/// [`POLL`]. On an interrupt the job is cancelled and waited for, and the interrupt returned.
fn next_event(py: Python<'_>, inner: &Inner, rx: &mut Option<Receiver<Event>>) -> PyResult<Event> {
    loop {
        let Some(r) = rx.take() else {
            return Ok(Event::Done(Ok(None)));
        };
        let (r, got) = py.detach(move || {
            let got = r.recv_timeout(POLL);
            (r, got)
        });
        let piece = match got {
            Ok(e @ Event::Done(_)) => return Ok(e),
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::new("InternalError", "the generation job vanished").into())
            }
            Err(RecvTimeoutError::Timeout) => None,
        };
        *rx = Some(r);
        // Checked after every piece too: a fast model sends pieces more often than POLL, so
        // waiting for a timeout would leave Ctrl-C unseen until the reply ends.
        if let Err(interrupt) = py.check_signals() {
            inner.cancel.store(true, Ordering::Relaxed);
            if let Some(r) = rx.take() {
                py.detach(move || while let Ok(Event::Piece(_)) = r.recv() {});
            }
            return Err(interrupt);
        }
        if let Some(e) = piece {
            return Ok(e);
        }
    }
}

/// Runs `work` to the end, handing pieces to `on_piece`; returns the reply, if any.
fn run_to_end(
    py: Python<'_>,
    inner: &Arc<Inner>,
    work: Work,
    mut on_piece: impl FnMut(String),
) -> PyResult<Option<Reply>> {
    let mut rx = Some(inner.start(work)?);
    loop {
        match next_event(py, inner, &mut rx)? {
            Event::Piece(p) => on_piece(p),
            Event::Done(r) => return Ok(r?),
        }
    }
}

fn chat_work(user: Option<String>) -> Work {
    Box::new(move |s, emit| {
        if let Some(text) = &user {
            s.add_message("user", text)?;
        }
        s.generate(emit).map(Some)
    })
}

#[pymethods]
impl Session {
    /// Adds a user message and returns the model's reply (which joins the conversation).
    /// ``cancel()`` ends it early (the text so far is returned); Ctrl-C ends it and raises
    /// ``KeyboardInterrupt``.
    fn chat(&self, py: Python<'_>, text: String) -> PyResult<String> {
        let r = run_to_end(py, &self.inner, chat_work(Some(text)), drop)?;
        Ok(r.map(|r| r.text).unwrap_or_default())
    }

    /// Adds a user message and yields the reply in pieces as they are generated (a
    /// ``tern.Stream``; iterate over it). Breaking out of the loop stops the generation.
    fn stream(&self, text: String) -> PyResult<Stream> {
        Stream::start(&self.inner, chat_work(Some(text)))
    }

    /// Adds a message (``role`` is "system", "user" or "assistant") and feeds it to the
    /// model; ``generate()`` then writes the reply to the conversation so far.
    fn add_message(&self, py: Python<'_>, role: String, text: String) -> PyResult<()> {
        let work: Work = Box::new(move |s, _| s.add_message(&role, &text).map(|()| None));
        run_to_end(py, &self.inner, work, drop).map(drop)
    }

    /// Generates the assistant's reply to the conversation so far and returns it.
    fn generate(&self, py: Python<'_>) -> PyResult<String> {
        let r = run_to_end(py, &self.inner, chat_work(None), drop)?;
        Ok(r.map(|r| r.text).unwrap_or_default())
    }

    /// Like ``generate()``, piece by piece (a ``tern.Stream``).
    fn generate_stream(&self) -> PyResult<Stream> {
        Stream::start(&self.inner, chat_work(None))
    }

    /// Forgets the conversation (the system prompt, if any, is fed again).
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let work: Work = Box::new(|s, _| s.reset().map(|()| None));
        run_to_end(py, &self.inner, work, drop).map(drop)
    }

    /// Saves the conversation (its cache, sampler state and settings) to ``path``, written
    /// atomically; ``Session.restore(model, path)`` continues exactly where it was.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let work: Work = Box::new(move |s, _| s.save(&path).map(|()| None));
        run_to_end(py, &self.inner, work, drop).map(drop)
    }

    /// Restores a session saved by ``save`` with the same model file. Raises
    /// ``SessionFileNotFoundError`` or ``SessionFileError`` (corrupt, other model, other
    /// version). ``draft`` and ``draft_k`` are those of ``Model.session``: the restored
    /// session decodes speculatively, whether or not it was saved with a draft (the draft
    /// starts from the saved history; the text is the model's own either way).
    #[staticmethod]
    #[pyo3(signature = (model, path, *, draft = None, draft_k = 0))]
    fn restore(
        py: Python<'_>,
        model: PyRef<'_, Model>,
        path: PathBuf,
        draft: Option<PyRef<'_, Model>>,
        draft_k: i64,
    ) -> PyResult<Session> {
        let shared = model.shared.clone();
        let draft = draft_spec(draft.map(|d| (d.shared.model.clone(), draft_k)))?;
        let session = py.detach(|| {
            guarded(|| {
                let m = shared.model.clone();
                Ok(shared.pool.install(|| {
                    tern::session::Session::restore_with(m, &path, draft, Some(&shared.board))
                })?)
            })
        })?;
        Ok(Session {
            inner: Arc::new(Inner::new(shared, session)),
        })
    }

    /// Stops the running call (a reply or a prefill) within one token; safe from any thread.
    /// Does nothing when no call runs.
    fn cancel(&self) {
        self.inner.cancel.store(true, Ordering::Relaxed);
    }

    /// The session's counters (a ``tern.Stats``) as of the end of the last call.
    #[getter]
    fn stats(&self) -> Stats {
        Stats::from(&*lock(&self.inner.stats))
    }

    /// Why the last reply ended: "end_of_turn", "stop_string", "max_tokens", "cancelled", or
    /// None before any.
    #[getter]
    fn last_stop_reason(&self) -> Option<&'static str> {
        *lock(&self.inner.last_stop)
    }

    fn __repr__(&self) -> String {
        let s = lock(&self.inner.stats);
        format!(
            "tern.Session(tokens={}, cache={}/{})",
            s.tokens, s.cache_used, s.cache_capacity
        )
    }
}

impl Session {
    /// Makes a session on `shared` from `Model.session`'s arguments.
    pub fn start(py: Python<'_>, shared: Arc<Shared>, args: SessionArgs) -> PyResult<Session> {
        let draft = draft_spec(args.draft.clone())?;
        let opts = options(&shared, args)?;
        let session = py.detach(|| {
            guarded(|| {
                let m = shared.model.clone();
                Ok(shared.pool.install(|| {
                    tern::session::Session::start_with(m, opts, draft, Some(&shared.board))
                })?)
            })
        })?;
        Ok(Session {
            inner: Arc::new(Inner::new(shared, session)),
        })
    }
}

/// Checks `Model.session`'s arguments and fits the cache to the board, as the CLI does.
fn options(shared: &Shared, a: SessionArgs) -> Result<SessionOptions, Failure> {
    let nonneg = |name: &str, v: i64| {
        usize::try_from(v).map_err(|_| Failure::invalid(format!("{name} = {v}: must be >= 0")))
    };
    let ctx = shared.model.llama().config().n_ctx_train;
    let kv = &shared.board.settings.kv.value;
    let sinks = match a.sinks {
        Some(s) => nonneg("sinks", s)?,
        None => kv.sinks,
    };
    let window = match a.window {
        Some(w) if w < 1 => return Err(Failure::invalid(format!("window = {w}: must be >= 1"))),
        Some(w) => w as usize,
        None => kv.window.min(ctx.saturating_sub(sinks)).max(1),
    };
    if sinks.saturating_add(window) > ctx {
        return Err(Failure::invalid(format!(
            "sinks + window = {} tokens exceeds the {ctx} tokens of context the model was \
             trained with",
            sinks.saturating_add(window)
        )));
    }
    let kv_type = match &a.kv_type {
        Some(t) => Some(t.parse::<tern::cache::KvType>().map_err(Failure::invalid)?),
        None => None,
    };
    let max_reply = nonneg("max_tokens", a.max_tokens)?;
    if max_reply == 0 {
        return Err(Failure::invalid("max_tokens = 0: must be >= 1"));
    }
    if a.stop.iter().any(String::is_empty) {
        return Err(Failure::invalid("stop strings must not be empty"));
    }
    let seed = a.seed.unwrap_or_else(random_seed);
    let sampler = SamplerConfig {
        temperature: a.temperature as f32,
        top_k: nonneg("top_k", a.top_k)?,
        top_p: a.top_p as f32,
        min_p: a.min_p as f32,
        repeat_penalty: a.repeat_penalty as f32,
        seed,
        ..SamplerConfig::default()
    };
    let finite = [
        ("temperature", a.temperature),
        ("top_p", a.top_p),
        ("min_p", a.min_p),
        ("repeat_penalty", a.repeat_penalty),
    ];
    for (name, v) in finite {
        if !v.is_finite() {
            return Err(Failure::invalid(format!(
                "{name} = {v}: must be a finite number"
            )));
        }
    }
    sampler
        .validate()
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let req = CacheRequest {
        sinks: Some(sinks),
        window: Some(window),
        kv_type,
        evict_chunk: 1,
    };
    let (cache, shrunk) = fit_cache(&shared.model, &shared.board, &req)
        .map_err(|e| Failure::new("MemoryBudgetError", e.to_string()))?;
    if let Some(message) = shrunk {
        eprintln!("note: {message}");
    }
    Ok(SessionOptions {
        cache,
        sampler,
        system: a.system,
        pin_system: a.pin_system,
        max_reply,
        stop: a.stop,
    })
}

/// A seed for `seed=None`: different in every session.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A reply being generated: iterate over it for its pieces (``str``). When it ends,
/// ``text`` is the whole reply and ``stop_reason`` says why it ended. Dropping it,
/// ``close()``, or leaving a ``with`` block stops the generation; Ctrl-C while it waits for
/// a piece stops it and raises ``KeyboardInterrupt``. (An interrupt that lands in the loop's
/// own body stops it when the stream is dropped or closed: keep it unnamed, or use ``with``.)
#[pyclass(module = "tern")]
pub struct Stream {
    inner: Arc<Inner>,
    /// The job's events, until it ends (a Mutex only so that the class is `Sync`).
    rx: Mutex<Option<Receiver<Event>>>,
    /// The reply so far.
    #[pyo3(get)]
    text: String,
    /// Why the reply ended; None while it runs.
    #[pyo3(get)]
    stop_reason: Option<&'static str>,
}

impl Stream {
    fn start(inner: &Arc<Inner>, work: Work) -> PyResult<Stream> {
        Ok(Stream {
            rx: Mutex::new(Some(inner.start(work)?)),
            inner: inner.clone(),
            text: String::new(),
            stop_reason: None,
        })
    }

    /// Cancels the job, if it still runs, and waits for it to end.
    fn stop(&mut self) {
        let rx = self.rx.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = rx.take() {
            self.inner.cancel.store(true, Ordering::Relaxed);
            while let Ok(Event::Piece(_)) = rx.recv() {}
        }
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<String>> {
        let inner = self.inner.clone();
        let rx = self.rx.get_mut().unwrap_or_else(|e| e.into_inner());
        let event = next_event(py, &inner, rx);
        match event {
            Ok(Event::Piece(p)) => {
                self.text.push_str(&p);
                Ok(Some(p))
            }
            Ok(Event::Done(r)) => {
                if let Some(reply) = r? {
                    self.stop_reason = Some(stop_name(reply.stop));
                    self.text = reply.text;
                }
                Ok(None)
            }
            Err(e) => {
                self.stop_reason = Some("cancelled");
                Err(e)
            }
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes the stream when a ``with`` block ends, however it ends.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// Stops the generation (what was generated stays in the conversation). A stream that
    /// is dropped (e.g. a ``for`` loop left by ``break`` or an exception) closes itself.
    fn close(&mut self, py: Python<'_>) {
        py.detach(|| self.stop());
        if self.stop_reason.is_none() {
            self.stop_reason = Some("cancelled");
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A session's counters.
#[pyclass(frozen, get_all, module = "tern")]
pub struct Stats {
    /// Tokens fed into the conversation so far (prompt and reply, evicted ones included).
    tokens: u64,
    /// Tokens in the KV cache now, and at most.
    cache_used: usize,
    cache_capacity: usize,
    /// Prompt tokens fed, and the seconds it took.
    prompt_tokens: u64,
    prompt_seconds: f64,
    /// Tokens generated, and the seconds it took.
    generated_tokens: u64,
    generated_seconds: f64,
    /// ``prompt_tokens / prompt_seconds`` and ``generated_tokens / generated_seconds`` (0
    /// before any).
    prompt_tokens_per_second: f64,
    generation_tokens_per_second: f64,
    /// Speculative decoding (0 without a draft): tokens the draft proposed, and those the
    /// model kept.
    draft_proposed: u64,
    draft_accepted: u64,
}

impl From<&tern::session::Stats> for Stats {
    fn from(s: &tern::session::Stats) -> Stats {
        Stats {
            tokens: s.tokens,
            cache_used: s.cache_used,
            cache_capacity: s.cache_capacity,
            prompt_tokens: s.prompt_tokens,
            prompt_seconds: s.prompt_secs,
            generated_tokens: s.generated_tokens,
            generated_seconds: s.generated_secs,
            prompt_tokens_per_second: s.prompt_tps(),
            generation_tokens_per_second: s.generation_tps(),
            draft_proposed: s.draft_proposed,
            draft_accepted: s.draft_accepted,
        }
    }
}

#[pymethods]
impl Stats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(tokens={}, cache_used={}, cache_capacity={}, prompt_tokens={}, \
             prompt_seconds={:.3}, generated_tokens={}, generated_seconds={:.3}, \
             prompt_tokens_per_second={:.1}, generation_tokens_per_second={:.1}, \
             draft_proposed={}, draft_accepted={})",
            self.tokens,
            self.cache_used,
            self.cache_capacity,
            self.prompt_tokens,
            self.prompt_seconds,
            self.generated_tokens,
            self.generated_seconds,
            self.prompt_tokens_per_second,
            self.generation_tokens_per_second,
            self.draft_proposed,
            self.draft_accepted
        )
    }
}

/// A draft model and its ``draft_k`` as the runtime takes them (0: adaptive).
fn draft_spec(
    draft: Option<(Arc<tern::model::Model>, i64)>,
) -> PyResult<Option<tern::speculative::DraftSpec>> {
    let Some((model, k)) = draft else {
        return Ok(None);
    };
    let k = match usize::try_from(k) {
        Ok(0) => tern::speculative::DraftK::default(),
        Ok(k) if k <= tern::speculative::MAX_K => tern::speculative::DraftK::Fixed(k),
        _ => {
            return Err(Failure::invalid(format!(
                "draft_k = {k}: must be 0 (adaptive) to {}",
                tern::speculative::MAX_K
            ))
            .into())
        }
    };
    // The text is the model's own, near-ties too (see tern::speculative).
    Ok(Some(tern::speculative::DraftSpec {
        model,
        k,
        exact: true,
    }))
}
