//! The OpenAI wire format: what requests may hold, how they are checked, and the error body.
//!
//! Unknown fields are ignored, as OpenAI's API does; a wrong type or a value out of range is
//! a 400 whose body is OpenAI's `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tern::sampler::SamplerConfig;

/// An error answered in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// `stop`: one string or a list of them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's content: text, or a list of parts of which the text ones are read.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON text, as OpenAI sends it (an object is accepted too).
    pub arguments: Value,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ToolCallIn {
    pub function: FunctionCall,
}

#[derive(Deserialize, Debug, Clone)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The settings shared by both endpoints.
#[derive(Deserialize, Debug, Clone)]
pub struct Sampling {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<MessageIn>,
    pub tools: Option<Vec<Value>>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: Stop,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// What a request asks of one reply, checked.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub sampler: SamplerConfig,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses a JSON body into `T`, with serde's message (it names the field and the type) in a 400.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "invalid request"
        };
        ApiError::invalid(format!("{what}: {e}"), None)
    })
}

impl Sampling {
    /// Checks ranges as OpenAI does and turns the request into sampler settings.
    /// `default_max` applies when no length is asked; `limit` caps it.
    pub fn settings(&self, default_max: usize, limit: usize) -> Result<ReplySettings, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                format!("temperature must be between 0 and 2, got {temperature}"),
                Some("temperature"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                format!("top_p must be in (0, 1], got {top_p}"),
                Some("top_p"),
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if v.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
                return Err(ApiError::invalid(
                    format!("{name} must be between -2 and 2"),
                    None,
                ));
            }
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
        let max = self.max_completion_tokens.or(self.max_tokens);
        let max_tokens = match max {
            None => default_max,
            Some(m) if m >= 1 && (m as u64) <= limit as u64 => m as usize,
            Some(m) => {
                return Err(ApiError::invalid(
                    format!("max_tokens must be between 1 and {limit}, got {m}"),
                    Some("max_tokens"),
                ))
            }
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid(
                "stop takes up to 4 non-empty strings",
                Some("stop"),
            ));
        }
        let seed = match self.seed {
            Some(s) => s as u64,
            None => random_seed(),
        };
        let sampler = SamplerConfig {
            temperature: temperature as f32,
            top_p: top_p as f32,
            seed,
            ..SamplerConfig::default()
        };
        sampler
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), None))?;
        Ok(ReplySettings {
            sampler,
            max_tokens,
            stop,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }
}

/// A seed for requests that give none: different for each request.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Content {
    /// The text of the content; parts that are not text are an error (no images here).
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::Text(s) => Ok(s.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("content parts of type {:?} are not supported", p.kind),
                                Some("messages"),
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}
