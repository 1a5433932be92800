//! The work of one request, on a blocking thread: continue (or start) a conversation and
//! write the reply, or complete a raw prompt. Pieces go to the HTTP side through a channel;
//! when the client has gone the channel is closed, and the reply stops at the next token.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tern::session::{Session, SessionError, SessionOptions, StopReason};
use tern::stream::Utf8Stream;
use tokio::sync::mpsc::Sender;
use tokio::sync::OwnedSemaphorePermit;

use super::api::{ApiError, ReplySettings};
use super::conversation::{self, Key, Turn};
use super::Shared;

/// What the worker sends back.
pub enum Event {
    Piece(String),
    Done(Done),
    Failed(ApiError),
}

/// The end of a reply.
pub struct Done {
    /// The whole reply (what was streamed, tool calls included).
    pub text: String,
    pub finish_reason: &'static str,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Tools were offered: the reply is read for tool calls.
    pub tools: bool,
}

/// A chat request, checked.
pub struct ChatJob {
    pub turns: Vec<Turn>,
    pub keys: Vec<Key>,
    pub tools: Option<serde_json::Value>,
    pub settings: ReplySettings,
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::Chat(_) | SessionError::BadRole(_) => {
            ApiError::invalid(e.to_string(), Some("messages"))
        }
        other => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            other.to_string(),
        ),
    }
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "length",
        _ => "stop",
    }
}

/// The way back to the HTTP side, holding the request's generation slot.
pub struct Reply {
    tx: Sender<Event>,
    slot: OwnedSemaphorePermit,
}

impl Reply {
    pub fn new(tx: Sender<Event>, slot: OwnedSemaphorePermit) -> Self {
        Reply { tx, slot }
    }

    /// Sends a piece; false when the client has gone.
    fn piece(&self, text: String) -> bool {
        self.tx.blocking_send(Event::Piece(text)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Frees the slot, then sends the last event: a client that has its whole answer finds
    /// the slot free for its next request.
    fn end(self, outcome: Result<Option<Done>, ApiError>, shared: &Shared) {
        let Reply { tx, slot } = self;
        drop(slot);
        let last = match outcome {
            Ok(Some(done)) => Event::Done(done),
            Ok(None) => {
                shared.cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => Event::Failed(e),
        };
        let _ = tx.blocking_send(last);
    }
}

/// Runs a chat request to its end, reporting through `reply`.
pub fn chat(shared: &Shared, job: ChatJob, reply: Reply) {
    let outcome = shared.pool.install(|| chat_inner(shared, job, &reply));
    reply.end(outcome, shared);
}

/// The reply, filed with its conversation; `None` when the client went away.
fn chat_inner(shared: &Shared, job: ChatJob, tx: &Reply) -> Result<Option<Done>, ApiError> {
    let turns = &job.turns;
    // A conversation opens with its system message (or none); the tools are written into
    // it where the template wants them.
    let system = turns
        .first()
        .filter(|t| t.role == "system")
        .map(|t| t.content.clone());
    let fresh = || -> Result<Session, SessionError> {
        let mut system = system.clone();
        if let Some(tools) = &job.tools {
            if let Some(s) =
                conversation::system_with_tools(shared.model.template(), system.as_deref(), tools)
                    .map_err(|e| SessionError::Chat(tern::chat::ChatError::Template(e.message)))?
            {
                system = Some(s);
            }
        }
        let opts = SessionOptions {
            system,
            ..shared.session_options.clone()
        };
        shared.new_session(opts)
    };
    let mut lease = shared.store.take(&job.keys, fresh).map_err(session_error)?;
    let reused = lease.turns_seen > 0;
    if lease.turns_seen == 0 && system.is_some() {
        lease.turns_seen = 1; // the system message was fed when the session started
    }
    let session = &mut lease.session;
    let before = session.stats();
    let draft_before = session.draft_stats().map(|(d, _)| d);
    let s = &job.settings;
    let result = (|| -> Result<Option<Done>, ApiError> {
        session
            .set_reply_options(s.sampler, s.max_tokens, s.stop.clone())
            .map_err(|e| ApiError::invalid(e.to_string(), None))?;
        for m in conversation::session_messages(&turns[lease.turns_seen..]) {
            session
                .add_message(&m.role, &m.content)
                .map_err(session_error)?;
        }
        // With tools, the reply is sent whole at the end: a tool call is not content.
        let hold = job.tools.is_some();
        let mut gone = false;
        let reply = session
            .generate(|piece| {
                if hold {
                    return !tx.is_closed();
                }
                gone = !tx.piece(piece.to_string());
                !gone
            })
            .map_err(session_error)?;
        shared.count_draft(draft_before, session);
        if reply.stop == StopReason::Cancelled || tx.is_closed() {
            return Ok(None);
        }
        let after = session.stats();
        // A new session's system prompt was fed for this request, not served from a cache.
        let cached = if reused { before.tokens } else { 0 };
        let fed = after.prompt_tokens - if reused { before.prompt_tokens } else { 0 };
        Ok(Some(Done {
            text: reply.text,
            finish_reason: finish_reason(reply.stop),
            prompt_tokens: cached + fed,
            cached_tokens: cached,
            completion_tokens: after.generated_tokens - before.generated_tokens,
            tools: job.tools.is_some(),
        }))
    })();
    match result {
        Ok(Some(done)) => {
            // File the conversation under what the client will send back: its messages,
            // then this reply as it is returned.
            let (content, calls) = if job.tools.is_some() {
                conversation::parse_tool_calls(&done.text)
            } else {
                (done.text.clone(), Vec::new())
            };
            let mine = Turn {
                role: "assistant".into(),
                content,
                calls,
            };
            let key = mine.chain(job.keys.last().expect("keys has the root"));
            shared
                .store
                .put_back(key, lease.session)
                .map_err(session_error)?;
            Ok(Some(done))
        }
        Ok(None) => {
            shared.store.discard(lease.session);
            Ok(None)
        }
        Err(e) => {
            shared.store.discard(lease.session);
            Err(e)
        }
    }
}

/// Completes a raw prompt in a fresh session (no template, no conversation).
pub fn complete(shared: &Shared, prompt: String, s: ReplySettings, reply: Reply) {
    let outcome = shared.pool.install(|| -> Result<Option<Done>, ApiError> {
        let opts = SessionOptions {
            system: None,
            ..shared.session_options.clone()
        };
        let mut session = shared.new_session(opts).map_err(session_error)?;
        session
            .set_reply_options(s.sampler, s.max_tokens, s.stop.clone())
            .map_err(|e| ApiError::invalid(e.to_string(), None))?;
        let prompt_tokens = session.feed_text(&prompt).map_err(session_error)? as u64;
        let done = raw_generate(&mut session, &s, prompt_tokens, &reply);
        shared.count_draft(None, &session);
        done
    });
    reply.end(outcome, shared);
}

/// Generates up to `max_tokens` tokens after what was fed (speculatively with a draft),
/// stopping at an end-of-generation token or a stop string. `None` when the client went
/// away.
fn raw_generate(
    session: &mut Session,
    s: &ReplySettings,
    prompt_tokens: u64,
    tx: &Reply,
) -> Result<Option<Done>, ApiError> {
    let model = Arc::clone(session.model());
    let tok = model.tokenizer();
    let hold = s.stop.iter().map(|x| x.len()).max().unwrap_or(1) - 1;
    let mut utf8 = Utf8Stream::new();
    let mut text = String::new();
    let mut emitted = 0;
    let mut finish = "length";
    let mut gone = false;
    let (n, cancelled) = session
        .produce(s.max_tokens, |id| {
            if tok.is_end_of_generation(id) {
                finish = "stop";
                return false;
            }
            text.push_str(&utf8.push(&tok.token_to_bytes(id)));
            if let Some(at) = s.stop.iter().filter_map(|x| text.find(x.as_str())).min() {
                text.truncate(at);
                finish = "stop";
                return false;
            }
            let mut safe = text.len().saturating_sub(hold);
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > emitted {
                if !tx.piece(text[emitted..safe].to_string()) {
                    gone = true;
                    return false;
                }
                emitted = safe;
            }
            true
        })
        .map_err(session_error)?;
    if gone || cancelled {
        return Ok(None);
    }
    if finish == "length" {
        text.push_str(&utf8.finish());
    }
    if text.len() > emitted && !tx.piece(text[emitted..].to_string()) {
        return Ok(None);
    }
    Ok(Some(Done {
        text,
        finish_reason: finish,
        prompt_tokens,
        cached_tokens: 0,
        completion_tokens: n as u64,
        tools: false,
    }))
}
