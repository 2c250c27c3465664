//! Small text helpers that plugins and the host share: truncation, token
//! estimates, and taking code (or a diff) out of an LLM answer.

/// The first `max_chars` characters of `s` (never splitting a character).
pub fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

/// A rough token count for text (about four characters a token for code and
/// English), used where a server reports no usage.
pub fn estimate_tokens(s: &str) -> u64 {
    let chars = s.chars().count() as u64;
    chars.div_ceil(4)
}

/// `n` with thousands separated by commas (`15,904,138`).
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fenced block of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The info string after the opening fence (`python`, `diff`, ...), lower-cased.
    pub lang: String,
    /// The block's content.
    pub body: &'a str,
}

/// Every fenced block (```` ``` ```` or `~~~`) of `text`, in order. An
/// unclosed last fence runs to the end of the text (answers cut by a token
/// limit).
pub fn fences(text: &str) -> Vec<Fence<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = find_fence(rest) {
        let marker = &rest[start..start + 3];
        let after = &rest[start + 3..];
        let line_end = after.find('\n').map_or(after.len(), |i| i + 1);
        let lang = after[..line_end].trim().to_ascii_lowercase();
        let body_start = offset + start + 3 + line_end;
        let body_region = &text[body_start..];
        let (body, consumed) = match find_closing(body_region, marker) {
            Some(end) => (&body_region[..end], end + 3),
            None => (body_region, body_region.len()),
        };
        out.push(Fence { lang, body });
        let next = body_start + consumed;
        offset = next;
        rest = &text[next..];
    }
    out
}

fn find_fence(s: &str) -> Option<usize> {
    let mut pos = 0;
    for line in s.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            return Some(pos + (line.len() - trimmed.len()));
        }
        pos += line.len();
    }
    None
}

fn find_closing(s: &str, marker: &str) -> Option<usize> {
    let mut pos = 0;
    for line in s.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with(marker) {
            return Some(pos + (line.len() - trimmed.len()));
        }
        pos += line.len();
    }
    None
}

/// The code of an answer: the first `python` fence, else the first fence of
/// any language that is not a diff or JSON, else the whole text. `None` when
/// nothing but whitespace is left.
pub fn extract_code(answer: &str) -> Option<String> {
    let fences = fences(answer);
    let pick = fences
        .iter()
        .find(|f| matches!(f.lang.as_str(), "python" | "py" | "python3"))
        .or_else(|| fences.iter().find(|f| !matches!(f.lang.as_str(), "diff" | "patch" | "json")));
    let code = match pick {
        Some(f) => f.body.to_string(),
        None if fences.is_empty() => answer.to_string(),
        None => return None,
    };
    let code = code.trim_matches('\n').to_string();
    (!code.trim().is_empty()).then_some(code)
}

/// The diff of an answer: the first `diff`/`patch` fence, else the first
/// fence that contains a hunk header, else the whole text when it does.
pub fn extract_diff(answer: &str) -> Option<String> {
    let fences = fences(answer);
    let pick = fences
        .iter()
        .find(|f| matches!(f.lang.as_str(), "diff" | "patch" | "udiff"))
        .or_else(|| fences.iter().find(|f| f.body.lines().any(|l| l.starts_with("@@"))));
    match pick {
        Some(f) => Some(f.body.to_string()),
        None if answer.lines().any(|l| l.starts_with("@@")) => Some(answer.to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(truncate_chars("", 3), "");
    }

    #[test]
    fn token_estimate_grows_with_length() {
        assert_eq!(estimate_tokens(""), 0);
        assert!(estimate_tokens("def forward(self, x): return x") >= 7);
    }

    #[test]
    fn the_first_python_fence_wins() {
        let a = "Here:\n```text\nnot this\n```\n```python\nclass Net: pass\n```\n```python\nsecond\n```";
        assert_eq!(extract_code(a).as_deref(), Some("class Net: pass"));
    }

    #[test]
    fn any_fence_then_whole_text() {
        assert_eq!(extract_code("```\nimport torch\n```").as_deref(), Some("import torch"));
        assert_eq!(extract_code("import torch\nclass Net: pass").as_deref(), Some("import torch\nclass Net: pass"));
        assert_eq!(extract_code("```python\n\n```"), None);
    }

    #[test]
    fn an_unclosed_fence_runs_to_the_end() {
        assert_eq!(extract_code("```python\nclass Net:\n    pass").as_deref(), Some("class Net:\n    pass"));
    }

    #[test]
    fn diffs_come_from_diff_fences_or_hunks() {
        let a = "```diff\n--- a/net.py\n+++ b/net.py\n@@ -1 +1 @@\n-a\n+b\n```";
        assert!(extract_diff(a).expect("diff").contains("@@ -1 +1 @@"));
        assert!(extract_diff("```\n@@ -1 +1 @@\n-a\n+b\n```").is_some());
        assert_eq!(extract_diff("```python\nclass Net: pass\n```"), None);
    }
}
