//! Chat templates: a conversation rendered to the text a model was trained on.
//!
//! The template stored in the GGUF file (`tokenizer.chat_template`, Jinja) is rendered with
//! `minijinja`, configured as Hugging Face renders chat templates (`trim_blocks`,
//! `lstrip_blocks`, Python string methods, `raise_exception`). A file without a template chats
//! through [`ChatTemplate::Plain`], a documented fallback.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

mod bounded;
mod constants;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// Why a conversation cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the chat template failed: {0}")]
    Template(String),
    #[error("the chat template ran out of fuel (more than {0} steps): it loops too long")]
    OutOfFuel(u64),
    #[error("the chat template's output exceeds its limit of {0} bytes")]
    OutputTooLarge(usize),
    #[error("the chat template builds more than its limit of {0} bytes of text and lists")]
    TooLarge(usize),
}

/// Steps (minijinja's fuel) a template may take for one rendering. A real chat template
/// over a session's few messages takes a few thousand; two nested `range(100000)` loops
/// would take 10¹⁰.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Bytes of strings and lists a template may build over one rendering of `input` bytes of
/// messages: a real template copies each message a few times (`'<|im_start|>' + role +
/// '\n' + content` is four copies, the emission a fifth), so 32 copies plus 16 MiB.
fn value_budget(input: usize) -> usize {
    input.saturating_mul(32).saturating_add(16 << 20)
}

/// Largest rendering of `input` bytes of messages: the messages four times over plus
/// 1 MiB for the template's own text.
fn output_cap(input: usize) -> usize {
    input.saturating_mul(4).saturating_add(1 << 20)
}

/// How a model's conversations are written out.
#[derive(Clone, Debug)]
pub enum ChatTemplate {
    /// The Jinja template from the model file, with the special tokens it may refer to.
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
    /// For files without a template (base models): a system text, then one line per turn,
    /// `User: …` and `Assistant: …`, separated by blank lines; the generation prompt is
    /// `Assistant:`. Replies stop at the next `\nUser:`.
    Plain,
}

impl ChatTemplate {
    /// The file's template, or [`ChatTemplate::Plain`] when it has none.
    pub fn from_gguf(g: &GgufFile, tok: &Tokenizer) -> ChatTemplate {
        match g.get_str("tokenizer.chat_template") {
            Ok(source) if !source.trim().is_empty() => {
                let piece = |id: Option<u32>| {
                    id.map(|i| String::from_utf8_lossy(&tok.token_to_bytes(i)).into_owned())
                        .unwrap_or_default()
                };
                ChatTemplate::Jinja {
                    source: source.to_string(),
                    bos_token: piece(tok.bos()),
                    eos_token: piece(tok.eos()),
                }
            }
            _ => ChatTemplate::Plain,
        }
    }

    /// True for the plain fallback.
    pub fn is_plain(&self) -> bool {
        matches!(self, ChatTemplate::Plain)
    }

    /// Strings that end a reply besides the end-of-generation tokens.
    pub fn stop_strings(&self) -> Vec<String> {
        match self {
            ChatTemplate::Plain => vec!["\nUser:".to_string()],
            ChatTemplate::Jinja { .. } => Vec::new(),
        }
    }

    /// The conversation as text; with `add_generation_prompt`, followed by what opens the
    /// assistant's next reply.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// As [`ChatTemplate::render`], offering the model `tools` (a JSON array of function
    /// descriptions, as OpenAI-style APIs take them) where the template uses them. The
    /// plain fallback ignores them.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        match self {
            ChatTemplate::Plain => Ok(render_plain(messages, add_generation_prompt)),
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => render_jinja(
                source,
                bos_token,
                eos_token,
                messages,
                tools,
                add_generation_prompt,
            ),
        }
    }
}

/// Renders a template from a model file within bounds: its steps (fuel), the bytes it may
/// build (see [`bounded`]) and its output, so that a hostile one is an error rather than a
/// hang or an allocation abort.
fn render_jinja(
    source: &str,
    bos_token: &str,
    eos_token: &str,
    messages: &[Message],
    tools: Option<&serde_json::Value>,
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    let template_error = |e: JinjaError| ChatError::Template(format!("{e:#}"));
    if source.contains(bounded::RESERVED_PREFIX) {
        return Err(ChatError::Template(format!(
            "names starting with {} are reserved",
            bounded::RESERVED_PREFIX
        )));
    }
    let compiled = bounded::compile(source).map_err(template_error)?;
    let input: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum::<usize>()
        .saturating_add(tools.map_or(0, |t| t.to_string().len()));
    let budget = bounded::Budget::new(value_budget(input));
    // Each emission of literal text is one step: fewer steps for a template whose literals
    // are long keeps the text it can emit within RAW_BUDGET.
    let fuel = TEMPLATE_FUEL
        .min((bounded::RAW_BUDGET / bounded::longest_literal(&compiled).max(1)) as u64);

    let mut env = Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_filter("tojson", tojson);
    bounded::install(&mut env, &budget);
    env.set_fuel(Some(fuel));

    let root = context! {
        messages => messages,
        tools => tools,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let mut text = String::new();
    let rendered = {
        let mut out = minijinja::machinery::make_string_output(&mut text);
        minijinja::machinery::Vm::new(&env)
            .eval(
                &compiled.instructions,
                root,
                &compiled.blocks,
                &mut out,
                compiled.initial_auto_escape,
            )
            .map(|_| ())
    };
    let cap = output_cap(input);
    match rendered {
        Ok(()) if text.len() > cap => Err(ChatError::OutputTooLarge(cap)),
        Ok(()) => Ok(text),
        Err(_) if budget.exceeded() => Err(ChatError::TooLarge(budget.limit())),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(ChatError::OutOfFuel(fuel)),
        Err(e) => Err(template_error(e)),
    }
}

/// The `tojson` filter as Hugging Face's chat templates (and llama.cpp's engine) define it:
/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, keys in their given
/// order, `", "` and `": "` as separators (`","` between items when indented). Jinja2's own
/// `tojson` (sorted keys, HTML escapes) is not what chat templates were written against.
fn tojson(value: minijinja::Value, kwargs: minijinja::value::Kwargs) -> Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, 0, &mut out)?;
    Ok(out)
}

fn write_json(
    v: &minijinja::Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), JinjaError> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => match v.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                // Python writes floats with a fractional part or an exponent (1.0, 0.5), and
                // the non-finite ones as NaN, Infinity and -Infinity.
                let text = match f {
                    f if f.is_nan() => "NaN".to_string(),
                    f if f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
                    f => format!("{f:?}"),
                };
                out.push_str(&text);
            }
        },
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<minijinja::Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<minijinja::Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                json_string(&key.to_string(), out);
                out.push_str(": ");
                write_json(&v.get_item(key)?, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot write a {} as JSON", v.kind()),
            ))
        }
    }
    Ok(())
}

/// A JSON string as Python writes it with `ensure_ascii=False`.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render_plain(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        match m.role.as_str() {
            "system" => out.push_str(&m.content),
            "user" => {
                out.push_str("User: ");
                out.push_str(&m.content);
            }
            _ => {
                out.push_str("Assistant: ");
                out.push_str(&m.content);
            }
        }
        out.push_str("\n\n");
    }
    if add_generation_prompt {
        out.push_str("Assistant:");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF file.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn smollm2() -> ChatTemplate {
        ChatTemplate::Jinja {
            source: SMOLLM2.to_string(),
            bos_token: "<|im_start|>".into(),
            eos_token: "<|im_end|>".into(),
        }
    }

    // Expected texts written by hand from the template above.
    #[test]
    fn chatml_with_system_and_generation_prompt() {
        let msgs = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "Name a colour."),
        ];
        let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n\
                    <|im_start|>assistant\n";
        assert_eq!(smollm2().render(&msgs, true).unwrap(), want);
        let without = &want[..want.len() - "<|im_start|>assistant\n".len()];
        assert_eq!(smollm2().render(&msgs, false).unwrap(), without);
    }

    #[test]
    fn chatml_default_system_prompt() {
        let msgs = [Message::new("user", "Hi")];
        assert_eq!(
            smollm2().render(&msgs, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn template_errors_are_errors() {
        let t = ChatTemplate::Jinja {
            source: "{{ raise_exception('no system role') }}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
        let bad = ChatTemplate::Jinja {
            source: "{% for %}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        assert!(bad.render(&[], false).is_err());
    }

    fn jinja(source: &str) -> ChatTemplate {
        ChatTemplate::Jinja {
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// Defect 5: two nested `range(100000)` loops never returned.
    #[test]
    fn hostile_template_loop_runs_out_of_fuel() {
        let t = jinja(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        );
        let t0 = std::time::Instant::now();
        let e = t.render(&[Message::new("user", "hi")], true).unwrap_err();
        assert!(matches!(e, ChatError::OutOfFuel(_)), "{e}");
        assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
    }

    /// Defect 5: a template whose output doubles 40 times (10¹² bytes) stops at its cap.
    #[test]
    fn hostile_template_output_is_capped() {
        let t = jinja("{% macro d(n) %}{% if n %}{{ d(n - 1) }}{{ d(n - 1) }}{% else %}ab{% endif %}{% endmacro %}{{ d(40) }}");
        let e = t.render(&[Message::new("user", "hi")], true).unwrap_err();
        assert!(
            matches!(
                e,
                ChatError::TooLarge(_) | ChatError::OutputTooLarge(_) | ChatError::OutOfFuel(_)
            ),
            "{e}"
        );
        // A real template over a long message still renders.
        let long = "word ".repeat(200_000);
        let text = smollm2()
            .render(&[Message::new("user", &long)], true)
            .unwrap();
        assert!(text.contains(&long));
    }

    #[test]
    fn plain_fallback() {
        let msgs = [
            Message::new("system", "You are Tern."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "Bye"),
        ];
        assert_eq!(
            ChatTemplate::Plain.render(&msgs, true).unwrap(),
            "You are Tern.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
        );
    }
}
