//! Text from files shown to people: metadata keys, tensor names, paths and messages that may
//! hold any bytes. Control characters (a terminal escape, a newline that forges a second
//! log line) are shown escaped, and an error is one line that states each fact once.

/// `s` with every control character escaped as Rust writes it (`\n`, `\u{1b}`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One line from an error and its causes, outermost first: a cause whose text the line
/// already holds (an error that prints its source, as `path: source` does) is not repeated,
/// and control characters are escaped.
pub fn error_line<I, S>(chain: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = String::new();
    for cause in chain {
        let text = escape(cause.as_ref().trim());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 12: `/dev/null: /dev/null: No such device…: No such device…`.
    #[test]
    fn error_line_states_each_fact_once_and_escapes_controls() {
        let line = error_line([
            "/dev/null: No such device (os error 19)",
            "No such device (os error 19)",
        ]);
        assert_eq!(line, "/dev/null: No such device (os error 19)");
        assert_eq!(
            error_line(["loading x", "x: bad\n\u{1b}[31mkey", ""]),
            "loading x: x: bad\\n\\u{1b}[31mkey"
        );
        assert_eq!(escape("tab\there"), "tab\\there");
        assert_eq!(escape("héllo ✓"), "héllo ✓");
    }
}
