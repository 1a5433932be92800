//! Chat templates rendered by Tern (minijinja) against Python's `jinja2` rendering the same
//! template from the same GGUF file, configured as Hugging Face's `apply_chat_template` is
//! (`trim_blocks`, `lstrip_blocks`, `loopcontrols`, its `tojson` and `raise_exception`):
//! the texts must be byte-identical. Needs `python3` with `jinja2` (scripts/setup.sh test).
#![cfg(target_arch = "x86_64")]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tern::chat::{ChatTemplate, Message};
use tern::gguf::GgufFile;
use tern::tokenizer::Tokenizer;

/// Renders `template` for each case with jinja2; a case is `{messages, tools?}`.
const RENDER_PY: &str = r#"
import json, sys
import jinja2
from jinja2.ext import loopcontrols
req = json.load(sys.stdin)
def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
t = env.from_string(req["template"])
out = []
for case in req["cases"]:
    out.append(t.render(messages=case["messages"], tools=case.get("tools"),
                        add_generation_prompt=case["add_generation_prompt"],
                        bos_token=req["bos_token"], eos_token=req["eos_token"]))
json.dump(out, sys.stdout)
"#;

/// The first Python on this machine that has jinja2: the one on `PATH`, else Debian's (with
/// `python3-jinja2`, installed by scripts/setup.sh test).
fn python_with_jinja2() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args(["-c", "import jinja2"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("a python3 with jinja2 (scripts/setup.sh test installs python3-jinja2)")
}

fn jinja2_render(source: &str, bos: &str, eos: &str, cases: &[Value]) -> Vec<String> {
    let mut child = Command::new(python_with_jinja2())
        .arg("-c")
        .arg(RENDER_PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup.sh test installs it)");
    let req = json!({"template": source, "bos_token": bos, "eos_token": eos, "cases": cases});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jinja2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "The weather in a city, in \"metric\" units — ünïcode & <tags>",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer", "enum": [1, 2, 3]}},
                "required": ["city"]}}},
        {"type": "function", "function": {"name": "now", "description": "Time now",
            "parameters": {"type": "object", "properties": {}}}}
    ])
}

fn cases() -> Vec<Value> {
    let m = |role: &str, content: &str| json!({"role": role, "content": content});
    let talk = vec![
        m("user", "Write fizzbuzz in Rust."),
        m("assistant", "fn main() {\n    println!(\"…\");\n}"),
        m(
            "user",
            "Now in Python, with a docstring: \"\"\"x\"\"\"\n\tand tabs.",
        ),
    ];
    let mut with_system = vec![m("system", "You are a terse assistant.")];
    with_system.extend(talk.clone());
    let mut cases = Vec::new();
    for messages in [talk.clone(), with_system.clone(), vec![m("user", "hi")]] {
        for gen in [true, false] {
            cases.push(json!({"messages": messages, "add_generation_prompt": gen}));
            cases.push(
                json!({"messages": messages, "tools": tools(), "add_generation_prompt": gen}),
            );
        }
    }
    cases
}

#[test]
fn qwen2_5_coder_template_renders_as_jinja2_does() {
    let path = tern_testkit::model("qwen2.5-coder-0.5b");
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let template = ChatTemplate::from_gguf(&file, &tok);
    let ChatTemplate::Jinja {
        source,
        bos_token,
        eos_token,
    } = &template
    else {
        panic!("Qwen2.5-Coder has a chat template");
    };
    assert!(source.contains("tools") && source.contains("tojson"));
    let cases = cases();
    let theirs = jinja2_render(source, bos_token, eos_token, &cases);
    for (case, want) in cases.iter().zip(&theirs) {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let ours = template
            .render_with_tools(&messages, case.get("tools"), gen)
            .unwrap();
        assert_eq!(&ours, want, "case {case}");
    }
    // The texts differ between cases: tools and the system message reach the output.
    assert!(theirs[1].contains("\"name\": \"get_weather\"") && !theirs[0].contains("get_weather"));
    assert!(theirs[4].contains("You are a terse assistant."));
    println!(
        "{} conversations rendered byte-identical to jinja2",
        cases.len()
    );
}

#[test]
fn gemma3_base_model_has_no_template() {
    let path = tern_testkit::model("gemma3-270m");
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(ChatTemplate::from_gguf(&file, &tok).is_plain());
}
