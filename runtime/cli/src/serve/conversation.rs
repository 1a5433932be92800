//! Messages as the session takes them, the keys that recognise a conversation when a client
//! sends it again, and the model's tool calls.
//!
//! Chat clients resend the whole history with every request. Each conversation the server
//! holds is filed under a hash of the messages it has seen (its own replies included, in the
//! form it returned them); a request whose first `k` messages hash to a filed key continues
//! that conversation and feeds only the messages after `k`. The keys are chained hashes, so
//! a conversation costs 32 bytes of bookkeeping however long it runs.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tern::chat::{ChatTemplate, Message};

use super::api::{ApiError, MessageIn};

/// A conversation's identity after some messages.
pub type Key = [u8; 32];

/// One message, reduced to what the model sees and what identifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub content: String,
    /// Tool calls of an assistant message: (name, arguments as compact JSON).
    pub calls: Vec<(String, String)>,
}

impl Turn {
    pub fn from_request(m: &MessageIn) -> Result<Turn, ApiError> {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                format!("unknown role {:?} (system, user, assistant, tool)", m.role),
                Some("messages"),
            ));
        }
        let content = match &m.content {
            Some(c) => c.text()?,
            None if m.role == "assistant" => String::new(),
            None => {
                return Err(ApiError::invalid(
                    format!("a {} message needs content", m.role),
                    Some("messages"),
                ))
            }
        };
        let mut calls = Vec::new();
        for c in m.tool_calls.iter().flatten() {
            // OpenAI sends arguments as a JSON text; keep them as compact JSON either way.
            let args = match &c.function.arguments {
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| s.clone()),
                other => other.to_string(),
            };
            calls.push((c.function.name.clone(), args));
        }
        Ok(Turn {
            role: m.role.clone(),
            content,
            calls,
        })
    }

    /// The key after this turn, given the key before it.
    pub fn chain(&self, before: &Key) -> Key {
        let mut h = Sha256::new();
        h.update(before);
        for part in [self.role.as_str(), self.content.as_str()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (name, args) in &self.calls {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((args.len() as u64).to_le_bytes());
            h.update(args.as_bytes());
        }
        h.finalize().into()
    }
}

/// The key before any message: the model and the tools offered (a conversation with other
/// tools is another conversation).
pub fn root_key(model: &str, tools: Option<&Value>) -> Key {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    if let Some(t) = tools {
        h.update(t.to_string().as_bytes());
    }
    h.finalize().into()
}

/// The keys after 0, 1, … `turns.len()` turns.
pub fn keys(root: Key, turns: &[Turn]) -> Vec<Key> {
    let mut out = Vec::with_capacity(turns.len() + 1);
    out.push(root);
    for t in turns {
        let k = t.chain(out.last().unwrap());
        out.push(k);
    }
    out
}

/// The messages to add to a session for `turns`, in the roles a session takes (system,
/// user, assistant). Tool results become the user turn the template would write for them
/// (Qwen's `<tool_response>` blocks), and an assistant's tool calls the text the model
/// writes for them, so the session renders exactly what the template renders.
pub fn session_messages(turns: &[Turn]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut i = 0;
    while i < turns.len() {
        let t = &turns[i];
        match t.role.as_str() {
            "tool" => {
                let mut blocks = Vec::new();
                while i < turns.len() && turns[i].role == "tool" {
                    blocks.push(format!(
                        "<tool_response>\n{}\n</tool_response>",
                        turns[i].content
                    ));
                    i += 1;
                }
                out.push(Message::new("user", &blocks.join("\n")));
                continue;
            }
            "assistant" if !t.calls.is_empty() => {
                let mut parts = Vec::new();
                if !t.content.is_empty() {
                    parts.push(t.content.clone());
                }
                for (name, args) in &t.calls {
                    let args: Value = serde_json::from_str(args).unwrap_or(Value::Null);
                    parts.push(format!(
                        "<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {}}}\n</tool_call>",
                        python_json(&args)
                    ));
                }
                out.push(Message::new("assistant", &parts.join("\n")));
            }
            role => out.push(Message::new(role, &t.content)),
        }
        i += 1;
    }
    out
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "`), as chat templates'
/// `tojson` does.
fn python_json(v: &Value) -> String {
    match v {
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(python_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The system prompt that, rendered without tools, gives the text the template renders for
/// `system` with `tools` (Qwen writes the tools into its system turn). A session pins it
/// like any system prompt. `None` when the template does not use the tools.
pub fn system_with_tools(
    template: &ChatTemplate,
    system: Option<&str>,
    tools: &Value,
) -> Result<Option<String>, ApiError> {
    const MARK: &str = "\u{E000}tern-system\u{E000}";
    const USER: &str = "\u{E001}";
    let err = |e: tern::chat::ChatError| {
        ApiError::invalid(format!("the chat template failed: {e}"), Some("tools"))
    };
    let mut with = Vec::new();
    if let Some(s) = system {
        with.push(Message::new("system", s));
    }
    with.push(Message::new("user", USER));
    let rendered = template
        .render_with_tools(&with, Some(tools), false)
        .map_err(err)?;
    let plain = template
        .render(
            &[Message::new("system", MARK), Message::new("user", USER)],
            false,
        )
        .map_err(err)?;
    let Some((prefix, suffix)) = plain.split_once(MARK) else {
        return Ok(None);
    };
    let middle = rendered
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix));
    match middle {
        Some(m) if Some(m) != system => Ok(Some(m.to_string())),
        _ => Ok(None),
    }
}

/// Tool calls found in a reply (Qwen's `<tool_call>{"name": …, "arguments": …}</tool_call>`
/// blocks): the text outside them, and each call as (name, arguments as compact JSON).
pub fn parse_tool_calls(reply: &str) -> (String, Vec<(String, String)>) {
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut rest = reply;
    while let Some(start) = rest.find("<tool_call>") {
        let after = &rest[start + "<tool_call>".len()..];
        let (body, next) = match after.find("</tool_call>") {
            Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
            None => (after, ""),
        };
        let parsed = serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let args = v.get("arguments").cloned().unwrap_or(json!({}));
                Some((name, args.to_string()))
            });
        match parsed {
            Some(call) => {
                text.push_str(&rest[..start]);
                calls.push(call);
            }
            None => text.push_str(&rest[..start + "<tool_call>".len() + body.len()]),
        }
        rest = next;
        if next.is_empty() {
            break;
        }
    }
    text.push_str(rest);
    if calls.is_empty() {
        return match bare_call(reply) {
            Some(call) => (String::new(), vec![call]),
            None => (reply.to_string(), calls),
        };
    }
    (text.trim().to_string(), calls)
}

/// A reply that is nothing but one call object, `{"name": …, "arguments": {…}}`, bare or in
/// a Markdown code fence: what small models (Qwen2.5-Coder-0.5B) often write instead of the
/// `<tool_call>` tags their template asks for. llama.cpp's Hermes/Qwen parser takes the
/// fenced form too.
fn bare_call(reply: &str) -> Option<(String, String)> {
    let body = reply.trim();
    let body = body
        .strip_prefix("```json")
        .or_else(|| body.strip_prefix("```"))
        .and_then(|b| b.trim_end().strip_suffix("```"))
        .unwrap_or(body);
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").filter(|a| a.is_object())?;
    Some((name, args.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_qwen_tool_calls() {
        let reply = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (text, calls) = parse_tool_calls(reply);
        assert_eq!(text, "");
        assert_eq!(
            calls,
            vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())]
        );
        let (text, calls) = parse_tool_calls("no call here");
        assert_eq!((text.as_str(), calls.len()), ("no call here", 0));
        let fenced = "```json\n{\n  \"name\": \"f\",\n  \"arguments\": {\"x\": 1}\n}\n```";
        assert_eq!(
            parse_tool_calls(fenced),
            (
                String::new(),
                vec![("f".to_string(), r#"{"x":1}"#.to_string())]
            )
        );
        let (_, calls) = parse_tool_calls("{\"name\": \"not a call\"}");
        assert!(calls.is_empty());
        let (text, calls) = parse_tool_calls("<tool_call>not json</tool_call>");
        assert_eq!(
            (text.as_str(), calls.len()),
            ("<tool_call>not json</tool_call>", 0)
        );
    }

    #[test]
    fn keys_chain_over_the_messages() {
        let t = |r: &str, c: &str| Turn {
            role: r.into(),
            content: c.into(),
            calls: vec![],
        };
        let root = root_key("m", None);
        let a = keys(root, &[t("user", "hi"), t("assistant", "hello")]);
        let b = keys(
            root,
            &[t("user", "hi"), t("assistant", "hello"), t("user", "x")],
        );
        assert_eq!(a[..], b[..3]);
        // The boundary between role and content is part of the key.
        assert_ne!(
            keys(root, &[t("user", "ab")])[1],
            keys(root, &[t("usera", "b")])[1]
        );
        assert_ne!(root, root_key("m", Some(&json!([]))));
    }

    #[test]
    fn tool_turns_render_as_the_template_does() {
        let turns = vec![
            Turn {
                role: "assistant".into(),
                content: String::new(),
                calls: vec![("f".into(), r#"{"a":1,"b":[1,2]}"#.into())],
            },
            Turn {
                role: "tool".into(),
                content: "1".into(),
                calls: vec![],
            },
            Turn {
                role: "tool".into(),
                content: "2".into(),
                calls: vec![],
            },
        ];
        let m = session_messages(&turns);
        assert_eq!(
            m[0].content,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1, 2]}}\n</tool_call>"
        );
        assert_eq!(m[1].role, "user");
        assert_eq!(
            m[1].content,
            "<tool_response>\n1\n</tool_response>\n<tool_response>\n2\n</tool_response>"
        );
        assert_eq!(m.len(), 2);
    }
}
