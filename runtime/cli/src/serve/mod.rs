//! `tern serve`: an OpenAI-compatible HTTP server (axum on tokio) over one loaded model.
//!
//! - `POST /v1/chat/completions` (streamed as server-sent events, or not; `tools`),
//!   `POST /v1/completions`, `GET /v1/models`, `GET /health`.
//! - Conversations keep their cache: a request whose messages extend a conversation the
//!   server holds continues its session and prefills only the new messages
//!   (`usage.prompt_tokens_details.cached_tokens` says how many tokens were served from the
//!   cache); the sink cache lets them run for ever ([`conversation`]).
//! - At most `max_sessions` sessions in memory; the least recently used others wait in
//!   session files ([`store`]).
//! - Generation runs on blocking threads, `parallel` at a time; up to `queue` more requests
//!   wait, the rest get 503 with `Retry-After`. A client that goes away stops its reply at
//!   the next token ([`generate`]).
//! - With a draft model every session decodes speculatively ([`tern::speculative`]), restored
//!   ones included; `/health` reports the draft's acceptance over all replies.
//! - Binds to 127.0.0.1 unless told otherwise; an API key, when set, is required as
//!   `Authorization: Bearer`; bodies over `body_limit` get 413. One log line per request
//!   on stderr.

pub mod api;
pub mod conversation;
pub mod generate;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tern::model::Model;
use tern::session::{Session, SessionError, SessionOptions};
use tern::speculative::{DraftSpec, DraftStats};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use api::{ApiError, ChatRequest, CompletionRequest, ReplySettings};
use conversation::Turn;
use generate::{ChatJob, Done, Event, Reply};
use store::Store;

/// How the server is set up.
pub struct Config {
    pub model: Arc<Model>,
    /// The name clients give as `model`.
    pub model_id: String,
    /// Speculative decoding: the draft model every session uses.
    pub draft: Option<DraftSpec>,
    pub board: tern_boards::Board,
    pub pool: rayon::ThreadPool,
    /// Cache and defaults of every session.
    pub session_options: SessionOptions,
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    pub max_sessions: usize,
    pub sessions_dir: PathBuf,
    /// Requests generating at once.
    pub parallel: usize,
    /// Requests waiting for a turn before 503s.
    pub queue: usize,
    pub body_limit: usize,
    /// Longest reply a request may ask for, and the length when it asks none.
    pub max_tokens_limit: usize,
    pub default_max_tokens: usize,
}

/// What every request reaches.
pub struct Shared {
    pub model: Arc<Model>,
    pub model_id: String,
    pub draft: Option<DraftSpec>,
    /// The draft's counters summed over every reply.
    draft_totals: Mutex<DraftStats>,
    pub board: tern_boards::Board,
    pub pool: rayon::ThreadPool,
    pub session_options: SessionOptions,
    pub store: Store,
    api_key: Option<String>,
    slots: Arc<Semaphore>,
    /// Generation slots in all (`slots` holds the free ones).
    parallel: usize,
    waiting: AtomicUsize,
    queue: usize,
    max_tokens_limit: usize,
    default_max_tokens: usize,
    next_id: AtomicU64,
    /// Replies stopped because their client went away.
    pub cancelled: AtomicU64,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.sessions_dir)
        .with_context(|| format!("creating {}", cfg.sessions_dir.display()))?;
    let parallel = cfg.parallel.clamp(1, cfg.max_sessions.max(1));
    let shared = Arc::new(Shared {
        store: Store::new(
            cfg.model.clone(),
            cfg.draft.clone(),
            cfg.board.clone(),
            cfg.max_sessions,
            cfg.sessions_dir.clone(),
        ),
        model: cfg.model,
        model_id: cfg.model_id,
        draft: cfg.draft,
        draft_totals: Mutex::new(DraftStats::default()),
        board: cfg.board,
        pool: cfg.pool,
        session_options: cfg.session_options,
        api_key: cfg.api_key,
        slots: Arc::new(Semaphore::new(parallel)),
        parallel,
        waiting: AtomicUsize::new(0),
        queue: cfg.queue,
        max_tokens_limit: cfg.max_tokens_limit,
        default_max_tokens: cfg.default_max_tokens,
        next_id: AtomicU64::new(1),
        cancelled: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallel + 2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("binding {}", cfg.addr))?;
        let local = listener.local_addr()?;
        let draft = shared.draft.as_ref().map_or(String::new(), |d| {
            format!(", draft {}", d.model.path().display())
        });
        eprintln!(
            "tern serve: listening on http://{local} (model {}{draft}, {} sessions in memory, \
             {} generating at once, session files in {})",
            shared.model_id,
            cfg.max_sessions,
            parallel,
            cfg.sessions_dir.display()
        );
        axum::serve(listener, router(shared, cfg.body_limit))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

/// The routes, with the API key check on `/v1`, the body limit and the request log.
pub fn router(shared: Arc<Shared>, body_limit: usize) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(chat_completions))
        .route("/completions", post(completions))
        .route("/models", get(models))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_key));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(log))
        .with_state(shared)
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// One line per request: method, path, status, milliseconds to the response head.
async fn log(req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    eprintln!(
        "{method} {path} {} {:.1}ms",
        resp.status().as_u16(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    resp
}

async fn require_key(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(key) = &sh.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "a valid API key is required (Authorization: Bearer KEY)",
            )
            .with_code("invalid_api_key")
            .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(sh): State<Arc<Shared>>) -> Json<Value> {
    let draft = sh.draft.as_ref().map(|d| {
        let t = *sh
            .draft_totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        json!({
            "model": d.model.path().file_stem().map(|s| s.to_string_lossy()),
            "steps": t.steps,
            "proposed": t.proposed,
            "accepted": t.accepted,
            "acceptance_rate": t.acceptance_rate(),
            "tokens_per_pass": t.tokens_per_step(),
        })
    });
    Json(json!({
        "status": "ok",
        "model": sh.model_id,
        "draft": draft,
        "sessions": sh.store.stats(),
        "waiting": sh.waiting.load(Ordering::Relaxed),
        // Taken until the blocking work has ended, a little after its session is back.
        "slots_busy": sh.parallel - sh.slots.available_permits(),
        "cancelled": sh.cancelled.load(Ordering::Relaxed),
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(sh): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": sh.model_id, "object": "model", "created": now(), "owned_by": "tern"}],
    }))
}

/// The body, or 413 past the limit.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large"
        } else {
            "cannot read the request body"
        };
        ApiError::new(status, "invalid_request_error", format!("{kind}: {r}"))
    })
}

impl Shared {
    /// A new session with the server's cache and defaults, speculative with a draft model.
    pub fn new_session(&self, opts: SessionOptions) -> Result<Session, SessionError> {
        Session::start_with(
            self.model.clone(),
            opts,
            self.draft.clone(),
            Some(&self.board),
        )
    }

    /// Adds what a reply's steps did to the draft's totals (`before`: the session's counters
    /// when the request took it).
    pub fn count_draft(&self, before: Option<DraftStats>, session: &Session) {
        let (Some((after, _)), before) = (session.draft_stats(), before.unwrap_or_default()) else {
            return;
        };
        let mut t = self
            .draft_totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        t.steps += after.steps.saturating_sub(before.steps);
        t.proposed += after.proposed.saturating_sub(before.proposed);
        t.accepted += after.accepted.saturating_sub(before.accepted);
    }

    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.model_id => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model `{m}` does not exist here; this server runs `{}`",
                    self.model_id
                ),
            )
            .with_code("model_not_found")),
            _ => Ok(()),
        }
    }

    /// A turn to generate: at once, or after waiting in the queue; 503 when it is full.
    async fn slot(self: &Arc<Self>) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        /// Leaves the queue however the wait ends (the client may go away).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is busy; retry later",
            ));
        }
        let _waiting = Waiting(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "closed"))
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

async fn chat_completions(
    State(sh): State<Arc<Shared>>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    chat_response(sh, b)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn chat_response(
    sh: Arc<Shared>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = api::parse(&body(b)?)?;
    sh.check_model(req.sampling.model.as_deref())?;
    let settings = req
        .sampling
        .settings(sh.default_max_tokens, sh.max_tokens_limit)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must hold at least one message",
            Some("messages"),
        ));
    }
    let turns = req
        .messages
        .iter()
        .map(Turn::from_request)
        .collect::<Result<Vec<_>, _>>()?;
    let tools = req.tools.filter(|t| !t.is_empty()).map(Value::Array);
    let keys = conversation::keys(conversation::root_key(&sh.model_id, tools.as_ref()), &turns);
    let job = ChatJob {
        turns,
        keys,
        tools,
        settings: settings.clone(),
    };
    let permit = sh.slot().await?;
    let (tx, rx) = mpsc::channel(64);
    let worker = sh.clone();
    tokio::task::spawn_blocking(move || generate::chat(&worker, job, Reply::new(tx, permit)));
    let id = sh.id("chatcmpl");
    if settings.stream {
        Ok(sse(rx, ChatChunks::new(&sh, id, settings)))
    } else {
        let done = collect(rx).await?;
        Ok(Json(chat_body(&sh, &id, &done)).into_response())
    }
}

fn usage(d: &Done) -> Value {
    json!({
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": d.cached_tokens},
    })
}

/// OpenAI's `tool_calls` array.
fn tool_calls_json(calls: &[(String, String)], id: &str) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| {
                json!({
                    "index": i,
                    "id": format!("call_{id}_{i}"),
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                })
            })
            .collect(),
    )
}

/// The reply as content or tool calls.
fn reply_message(id: &str, done: &Done) -> (Value, &'static str) {
    let (content, calls) = if done.tools {
        conversation::parse_tool_calls(&done.text)
    } else {
        (done.text.clone(), Vec::new())
    };
    if calls.is_empty() {
        return (
            json!({"role": "assistant", "content": content}),
            done.finish_reason,
        );
    }
    let content = (!content.is_empty()).then_some(content);
    (
        json!({"role": "assistant", "content": content, "tool_calls": tool_calls_json(&calls, id)}),
        "tool_calls",
    )
}

fn chat_body(sh: &Shared, id: &str, done: &Done) -> Value {
    let (message, finish) = reply_message(id, done);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": sh.model_id,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(done),
    })
}

/// Waits for a whole reply.
async fn collect(mut rx: mpsc::Receiver<Event>) -> Result<Done, ApiError> {
    while let Some(e) = rx.recv().await {
        match e {
            Event::Piece(_) => {}
            Event::Done(d) => return Ok(d),
            Event::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the reply ended without a result",
    ))
}

/// Turns the worker's events into server-sent events.
trait Chunks: Send + 'static {
    fn piece(&mut self, text: &str) -> Value;
    fn done(&mut self, done: &Done) -> Vec<Value>;
    fn include_usage(&self) -> bool;
    fn usage_chunk(&self, done: &Done) -> Value;
}

fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// A streamed response: one `data:` event per piece, the end, the usage when asked, and
/// `data: [DONE]`. When the client goes away the body is dropped, and with it the channel
/// the worker writes to.
fn sse<C: Chunks>(rx: mpsc::Receiver<Event>, mut chunks: C) -> Response {
    let stream = ReceiverStream::new(rx).map(move |e| -> Result<String, Infallible> {
        Ok(match e {
            Event::Piece(p) => frame(&chunks.piece(&p)),
            Event::Done(d) => {
                let mut out: String = chunks.done(&d).iter().map(frame).collect();
                if chunks.include_usage() {
                    out.push_str(&frame(&chunks.usage_chunk(&d)));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            Event::Failed(e) => format!("{}data: [DONE]\n\n", frame(&e.body())),
        })
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    settings: ReplySettings,
    started: bool,
}

impl ChatChunks {
    fn new(sh: &Shared, id: String, settings: ReplySettings) -> ChatChunks {
        ChatChunks {
            id,
            model: sh.model_id.clone(),
            created: now(),
            settings,
            started: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }
}

impl Chunks for ChatChunks {
    fn piece(&mut self, text: &str) -> Value {
        let delta = if self.started {
            json!({"content": text})
        } else {
            self.started = true;
            json!({"role": "assistant", "content": text})
        };
        self.chunk(delta, None)
    }

    fn done(&mut self, done: &Done) -> Vec<Value> {
        let mut out = Vec::new();
        let (message, finish) = reply_message(&self.id, done);
        if let Some(calls) = message.get("tool_calls") {
            out.push(self.chunk(
                json!({"role": "assistant", "content": message["content"], "tool_calls": calls}),
                None,
            ));
        } else if !self.started {
            // Nothing was streamed (an empty reply, or one held back because tools were
            // offered): the whole content now.
            out.push(self.chunk(
                json!({"role": "assistant", "content": message["content"]}),
                None,
            ));
        }
        out.push(self.chunk(json!({}), Some(finish)));
        out
    }

    fn include_usage(&self) -> bool {
        self.settings.include_usage
    }

    fn usage_chunk(&self, done: &Done) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage(done),
        })
    }
}

async fn completions(State(sh): State<Arc<Shared>>, b: Result<Bytes, BytesRejection>) -> Response {
    completion_response(sh, b)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn completion_response(
    sh: Arc<Shared>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = api::parse(&body(b)?)?;
    sh.check_model(req.sampling.model.as_deref())?;
    let settings = req
        .sampling
        .settings(sh.default_max_tokens, sh.max_tokens_limit)?;
    let prompt = match req.prompt {
        api::Stop::One(p) => p,
        api::Stop::Many(mut v) if v.len() == 1 => v.remove(0),
        api::Stop::Many(_) => {
            return Err(ApiError::invalid(
                "prompt must be one string",
                Some("prompt"),
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt is empty", Some("prompt")));
    }
    let permit = sh.slot().await?;
    let (tx, rx) = mpsc::channel(64);
    let worker = sh.clone();
    let s = settings.clone();
    tokio::task::spawn_blocking(move || {
        generate::complete(&worker, prompt, s, Reply::new(tx, permit))
    });
    let id = sh.id("cmpl");
    if settings.stream {
        return Ok(sse(
            rx,
            TextChunks {
                id,
                model: sh.model_id.clone(),
                created: now(),
                include_usage: settings.include_usage,
            },
        ));
    }
    let done = collect(rx).await?;
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": now(), "model": sh.model_id,
        "choices": [{"index": 0, "text": done.text, "logprobs": null,
                     "finish_reason": done.finish_reason}],
        "usage": usage(&done),
    }))
    .into_response())
}

struct TextChunks {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
}

impl TextChunks {
    fn chunk(&self, text: &str, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
        })
    }
}

impl Chunks for TextChunks {
    fn piece(&mut self, text: &str) -> Value {
        self.chunk(text, None)
    }
    fn done(&mut self, done: &Done) -> Vec<Value> {
        vec![self.chunk("", Some(done.finish_reason))]
    }
    fn include_usage(&self) -> bool {
        self.include_usage
    }
    fn usage_chunk(&self, done: &Done) -> Value {
        json!({
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model, "choices": [], "usage": usage(done),
        })
    }
}
