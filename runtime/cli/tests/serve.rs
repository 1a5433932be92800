//! `tern serve` over loopback: conversations continued from their cache and replies equal
//! to `tern chat`'s, eviction to session files and exact resumption, bad input, a client
//! leaving mid-stream, and (x86-64) Qwen's tool calls.
//!
//! On the x86-64 host only: each test starts servers and runs conversations of several turns,
//! minutes under qemu; the server has no CPU-specific code (the runtime's kernels are
//! checked under qemu by the library's tests).
#![cfg(target_arch = "x86_64")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `tern serve` child on a free port, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(model: &str, args: &[&str]) -> Server {
        let path = common::model(model);
        let mut child = common::tern_command()
            .arg("serve")
            .arg("-m")
            .arg(&path)
            .args(["--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address from the first line, then keeps draining the request log.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                    break;
                }
            }
            for _ in lines {}
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server prints its address");
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn model_id(&self) -> String {
        let (_, v) = self.get("/v1/models", None);
        v["data"][0]["id"].as_str().unwrap().to_string()
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut resp = match body {
            Some(b) => {
                let mut r = agent.post(&url).content_type("application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(b).expect("the server answers")
            }
            None => {
                let _ = method;
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call().expect("the server answers")
            }
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.request("GET", path, None, key)
    }

    fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()), key)
    }

    fn health(&self) -> Value {
        self.get("/health", None).1
    }
}

impl Drop for Server {
    /// Gracefully: a killed server leaves its temporary session files behind.
    fn drop(&mut self) {
        tern_testkit::stop_gracefully(&mut self.child);
    }
}

const SYSTEM: &str = "You are a helpful assistant. Answer in one short sentence.";

/// User messages of a conversation, one line each (`tern chat` reads one per line).
fn user_messages(conversation: usize, turns: usize) -> Vec<String> {
    let topics = [
        "the sea", "bread", "trains", "winter", "music", "bees", "clocks",
    ];
    (0..turns)
        .map(|t| {
            format!(
                "Tell me one fact about {} (question {}).",
                topics[(conversation + t) % topics.len()],
                t + 1
            )
        })
        .collect()
}

/// The same conversation through `tern chat` at temperature 0: its replies, each followed
/// by a blank line, are its whole stdout.
fn tern_chat_transcript(model: &str, users: &[String], max_reply: usize, extra: &[&str]) -> String {
    let mut child = common::tern_command()
        .args(["chat", "-m"])
        .arg(common::model(model))
        .args(extra)
        .args(["--system", SYSTEM, "--temp", "0", "--repeat-penalty", "1"])
        .args(["-n", &max_reply.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for u in users {
        writeln!(stdin, "{u}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `conversations` conversations of `turns` turns, interleaved (one turn of each in
/// turn), each request carrying the whole history as chat clients send it. Checks that
/// every turn after the first is served from the cache, and that each conversation's
/// replies are `tern chat`'s.
#[allow(clippy::needless_range_loop)] // turns and conversations index three tables
fn converse(
    server: &Server,
    model: &str,
    conversations: usize,
    turns: usize,
    max_reply: usize,
    chat_args: &[&str],
) {
    let id = server.model_id();
    let users: Vec<Vec<String>> = (0..conversations)
        .map(|c| user_messages(c, turns))
        .collect();
    let mut histories: Vec<Vec<Value>> =
        vec![vec![json!({"role": "system", "content": SYSTEM})]; conversations];
    let mut replies = vec![String::new(); conversations];
    for t in 0..turns {
        for c in 0..conversations {
            histories[c].push(json!({"role": "user", "content": users[c][t]}));
            let (status, v) = server.post(
                "/v1/chat/completions",
                &json!({"model": id, "messages": histories[c], "temperature": 0,
                        "max_tokens": max_reply}),
                None,
            );
            assert_eq!(status, 200, "{v}");
            let content = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            let usage = &v["usage"];
            let (prompt, cached) = (
                usage["prompt_tokens"].as_u64().unwrap(),
                usage["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap(),
            );
            if t == 0 {
                assert_eq!(cached, 0, "conversation {c}: {usage}");
            } else {
                // Only the new user message (and the end of the last reply) is prefilled.
                assert!(cached > 0, "conversation {c}, turn {t}: {usage}");
                assert!(prompt - cached < 64, "conversation {c}, turn {t}: {usage}");
            }
            replies[c].push_str(&content);
            replies[c].push_str("\n\n");
            histories[c].push(json!({"role": "assistant", "content": content}));
        }
    }
    for c in 0..conversations {
        let truth = tern_chat_transcript(model, &users[c], max_reply, chat_args);
        assert_eq!(replies[c], truth, "conversation {c} differs from tern chat");
    }
}

#[test]
fn conversations_continue_from_their_cache_and_survive_eviction() {
    // Three conversations, two sessions in memory: every turn restores one from its file.
    let server = Server::start(
        tern_testkit::SMOLLM2,
        &["--max-sessions", "2", "--parallel", "1"],
    );
    converse(&server, tern_testkit::SMOLLM2, 3, 4, 24, &[]);
    let h = server.health();
    let sessions = &h["sessions"];
    println!("after 3 conversations of 4 turns with --max-sessions 2: {sessions}");
    assert!(sessions["saved"].as_u64().unwrap() >= 6, "{h}");
    assert!(sessions["restored"].as_u64().unwrap() >= 6, "{h}");
    assert!(sessions["in_ram"].as_u64().unwrap() <= 2, "{h}");
}

/// `--draft`: SmolLM2 as its own draft, verified with the one-token kernels
/// (`--draft-exact`). Three conversations under `--max-sessions 2`, so that every turn
/// restores its session from a file and the draft is given back; every greedy reply is
/// `tern chat`'s without a draft, a completion is the draft-less server's, `/health`
/// reports the draft's acceptance (a model drafting for itself at temperature 0 is
/// accepted but for near-ties: a restored draft's cache is refilled from the history in
/// one batch, and rounds apart from the model's), and a sampled reply works.
#[test]
fn a_draft_model_gives_the_same_replies_restored_sessions_included() {
    let draft = common::model(tern_testkit::SMOLLM2);
    let draft = draft.to_str().unwrap();
    let args = ["--max-sessions", "2", "--parallel", "1"];
    let server = Server::start(
        tern_testkit::SMOLLM2,
        &[&args[..], &["--draft", draft, "--draft-exact"]].concat(),
    );
    converse(&server, tern_testkit::SMOLLM2, 3, 3, 24, &[]);
    let h = server.health();
    println!("with a draft, after 3 conversations of 3 turns: {h}");
    assert!(h["sessions"]["restored"].as_u64().unwrap() >= 6, "{h}");
    let d = &h["draft"];
    assert!(d["proposed"].as_u64().unwrap() > 100, "{h}");
    assert!(d["acceptance_rate"].as_f64().unwrap() > 0.75, "{h}");

    let plain = Server::start(tern_testkit::SMOLLM2, &args);
    assert!(plain.health()["draft"].is_null());
    let id = server.model_id();
    let completion = |s: &Server, temperature: f64| {
        let (status, v) = s.post(
            "/v1/completions",
            &json!({"model": id, "prompt": "The three primary colours are", "max_tokens": 32,
                    "temperature": temperature}),
            None,
        );
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let with_draft = completion(&server, 0.0);
    assert!(!with_draft.is_empty());
    assert_eq!(with_draft, completion(&plain, 0.0));
    assert!(!completion(&server, 0.7).is_empty());
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": "Name a bird."}],
                "max_tokens": 16, "temperature": 0.7, "seed": 3}),
        None,
    );
    assert_eq!(status, 200, "{v}");
}

/// The 50-turn conversation, sent as chat clients send it (the whole history every
/// request): the cache serves every turn after the first, and the replies are `tern chat`'s.
#[test]
fn fifty_turns_from_the_cache_equal_tern_chat() {
    let server = Server::start(tern_testkit::SMOLLM2, &[]);
    converse(&server, tern_testkit::SMOLLM2, 1, 50, 32, &[]);
}

/// A conversation far longer than the cache's window slides through the sink cache as in
/// `tern chat`: no context-length error, and the same replies.
#[test]
fn a_conversation_longer_than_the_window_goes_on() {
    let cache = ["--sinks", "4", "--window", "96"];
    let server = Server::start(tern_testkit::SMOLLM2, &cache);
    // About 6 x (20 + 24) tokens after the system prompt: three times the window.
    converse(&server, tern_testkit::SMOLLM2, 1, 6, 24, &cache);
}

/// Writes a raw HTTP request and returns the status line and what follows.
fn raw(server: &Server, request: &str) -> String {
    let addr = server.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn bad_input_gets_the_right_status_and_the_server_keeps_serving() {
    let key = "sk-test-key";
    let server = Server::start(
        tern_testkit::SMOLLM2,
        &[
            "--api-key",
            key,
            "--body-limit",
            "65536",
            "--parallel",
            "1",
            "--queue",
            "0",
        ],
    );
    let id = server.model_id_with(key);
    let chat = "/v1/chat/completions";
    let ok = json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let error_type = |v: &Value| v["error"]["type"].as_str().unwrap_or("").to_string();

    // No key, a wrong key: 401 in OpenAI's shape. /health needs none.
    let (s, v) = server.post(chat, &ok, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "{v}"
    );
    let (s, _) = server.post(chat, &ok, Some("sk-wrong"));
    assert_eq!(s, 401);
    assert_eq!(server.get("/health", None).0, 200);

    // Malformed JSON, wrong types, missing messages, values out of range: 400.
    let (s, v) = server.request("POST", chat, Some("{\"messages\": [}"), Some(key));
    assert_eq!(
        (s, error_type(&v).as_str()),
        (400, "invalid_request_error"),
        "{v}"
    );
    for bad in [
        json!({"model": id, "messages": "hello"}),
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}),
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": -1}),
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "temperature": 3}),
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "top_p": 0}),
        json!({"model": id, "messages": [{"role": "wizard", "content": "Hi"}]}),
        json!({"model": id, "messages": []}),
        json!({"model": id}),
        json!({"model": id, "prompt": 5}),
    ] {
        let path = if bad.get("prompt").is_some() {
            "/v1/completions"
        } else {
            chat
        };
        let (s, v) = server.post(path, &bad, Some(key));
        assert_eq!(
            (s, error_type(&v).as_str()),
            (400, "invalid_request_error"),
            "{bad}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // An unknown model: 404, code model_not_found.
    let (s, v) = server.post(
        chat,
        &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}),
        Some(key),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{v}"
    );
    // A body over the limit: 413.
    let huge = json!({"model": id, "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let (s, v) = server.post(chat, &huge, Some(key));
    assert_eq!(s, 413, "{v}");
    // Unknown fields are ignored.
    let mut extra = ok.clone();
    extra["logit_bias"] = json!({"50256": -100});
    extra["user"] = json!("someone");
    assert_eq!(server.post(chat, &extra, Some(key)).0, 200);

    // A client that leaves mid-stream: its reply stops, and is counted as cancelled.
    // A long reply: greedy counting goes on for thousands of tokens; should one still end
    // before three events (`data: [DONE]`), it is asked again, sampled with another seed.
    let addr = server.base.trim_start_matches("http://").to_string();
    let (s, reader) = (0..5)
        .find_map(|attempt| {
            let body = json!({"model": id, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 4000,
                              "temperature": if attempt == 0 { 0.0 } else { 1.0 },
                              "seed": attempt, "stream": true})
            .to_string();
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            write!(
                s,
                "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            // The slot of the request before is free once its answer has arrived.
            assert!(
                line.starts_with("HTTP/1.1 200"),
                "the stream was refused: {line}"
            );
            let mut events = 0;
            while events < 3 {
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert!(!line.is_empty(), "the stream ended early");
                if line.starts_with("data: [DONE]") {
                    println!("attempt {attempt}: the reply ended at once; again");
                    return None;
                }
                events += line.starts_with("data: ") as usize;
            }
            Some((s, reader))
        })
        .expect("a reply of more than two events in five attempts");
    // Meanwhile the one generation slot is taken and the queue holds none: 503, Retry-After.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let busy = agent
        .post(&format!("{}{chat}", server.base))
        .header("Authorization", &format!("Bearer {key}"))
        .content_type("application/json")
        .send(ok.to_string())
        .unwrap();
    assert_eq!(busy.status().as_u16(), 503);
    assert!(busy.headers().get("retry-after").is_some());
    drop(reader);
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let t0 = Instant::now();
    loop {
        let h = server.health();
        if h["cancelled"].as_u64() == Some(1) && h["slots_busy"] == 0 {
            println!(
                "a client left mid-stream: its reply stopped after {:?}",
                t0.elapsed()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the reply went on: {h}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Garbage on the socket gets an HTTP error, not a crash.
    let reply = raw(&server, "NOT HTTP AT ALL\r\n\r\n");
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply}"
    );

    // Still serving.
    let (s, v) = server.post(chat, &ok, Some(key));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
}

impl Server {
    fn model_id_with(&self, key: &str) -> String {
        let (s, v) = self.get("/v1/models", Some(key));
        assert_eq!(s, 200, "{v}");
        v["data"][0]["id"].as_str().unwrap().to_string()
    }
}

/// A streamed chat: `data:` events that add up to the reply, the usage when asked, `[DONE]`.
#[test]
fn streams_server_sent_events() {
    let server = Server::start(tern_testkit::SMOLLM2, &[]);
    let id = server.model_id();
    let messages = json!([{"role": "user", "content": "Name three colours."}]);
    let (_, whole) = server.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": messages, "temperature": 0, "max_tokens": 20}),
        None,
    );
    let body = json!({"model": id, "messages": messages, "temperature": 0, "max_tokens": 20,
                      "stream": true, "stream_options": {"include_usage": true}})
    .to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let reply = raw(
        &server,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("text/event-stream"), "{reply}");
    let data: Vec<&str> = reply
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // Temperature 0: the same text as the whole reply.
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
}

/// Qwen2.5-Coder calls a tool in its `<tool_call>` format; the server returns OpenAI
/// `tool_calls`, and the tool's answer goes back into the conversation, from the cache.
#[cfg(target_arch = "x86_64")]
#[test]
fn qwen_tool_calls_round_trip() {
    let model = "qwen2.5-coder-0.5b";
    let server = Server::start(model, &[]);
    let id = server.model_id();
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]);
    let mut messages =
        vec![json!({"role": "user", "content": "What is the weather in Paris right now?"})];
    let (s, v) = server.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": messages, "tools": tools, "temperature": 0,
                "max_tokens": 64}),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let choice = &v["choices"][0];
    println!("tool call: {choice}");
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].as_str().unwrap().contains("Paris"), "{args}");

    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature_c\": 18, \"sky\": \"clear\"}"}));
    let (s, v) = server.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": messages, "tools": tools, "temperature": 0,
                "max_tokens": 48}),
        None,
    );
    assert_eq!(s, 200, "{v}");
    println!("after the tool: {} {}", v["choices"][0], v["usage"]);
    // The conversation went on from its cache: only the tool's answer was prefilled (its
    // `<tool_response>` turn, about 25 tokens).
    let usage = &v["usage"];
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let fed = usage["prompt_tokens"].as_u64().unwrap() - cached;
    assert!(cached > 150 && (15..60).contains(&fed), "{usage}");
    // What the 0.5B model does with the answer is its own affair (at temperature 0 it
    // calls the tool again); the reply must still be one of the two shapes.
    let m = &v["choices"][0]["message"];
    assert!(
        m["content"].is_string() || m["tool_calls"].is_array(),
        "{m}"
    );
}
