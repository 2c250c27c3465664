//! Delta mode: applying the generator's unified diff to its parent.
//!
//! LLM-written diffs are rarely exact: line numbers drift, hunk counts are
//! wrong, indentation changes. Application is tolerant, in this order:
//!
//! 1. `diffy` parses the diff and applies it (exact context, hunks may sit at
//!    an offset from their stated line);
//! 2. else each hunk is located by its old lines anywhere in the file,
//!    nearest the stated line first, exactly, then ignoring whitespace, then
//!    with up to two context lines dropped from each end (fuzz);
//! 3. a hunk that cannot be located is a typed failure naming it, fed back
//!    to the LLM like any other failure.

/// A diff that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// How a diff was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// `diffy` applied it as it is.
    Exact,
    /// Located by content, ignoring whitespace or with fuzz.
    Fuzzy,
}

#[derive(Debug, Clone, Default)]
struct Hunk {
    stated_line: Option<usize>,
    old: Vec<String>,
    new: Vec<String>,
    /// Per line of `old`: whether it is context (kept) or deleted.
    lines: Vec<(char, String)>,
}

fn parse_lenient(diff: &str) -> Vec<Hunk> {
    let mut hunks = Vec::new();
    let mut cur: Option<Hunk> = None;
    for line in diff.lines() {
        if line.starts_with("@@") {
            if let Some(h) = cur.take() {
                hunks.push(h);
            }
            let stated = line
                .split_whitespace()
                .find(|t| t.starts_with('-'))
                .and_then(|t| t[1..].split(',').next())
                .and_then(|n| n.parse::<usize>().ok());
            cur = Some(Hunk { stated_line: stated, ..Default::default() });
            continue;
        }
        if line.starts_with("---") || line.starts_with("+++") || line.starts_with("diff ") || line.starts_with("index ")
        {
            continue;
        }
        let Some(h) = cur.as_mut() else { continue };
        let (tag, text) = match line.chars().next() {
            Some('+') => ('+', &line[1..]),
            Some('-') => ('-', &line[1..]),
            Some(' ') => (' ', &line[1..]),
            None => (' ', ""),
            Some('\\') => continue, // "\ No newline at end of file"
            Some(_) => (' ', line), // a context line that lost its leading space
        };
        h.lines.push((tag, text.to_string()));
        if tag != '+' {
            h.old.push(text.to_string());
        }
        if tag != '-' {
            h.new.push(text.to_string());
        }
    }
    if let Some(h) = cur.take() {
        hunks.push(h);
    }
    hunks.into_iter().filter(|h| !h.lines.is_empty()).collect()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

/// Finds `needle` in `hay` nearest `near`; `loose` compares without whitespace.
fn locate(hay: &[String], needle: &[String], near: usize, loose: bool) -> Option<usize> {
    if needle.is_empty() {
        return Some(near.min(hay.len()));
    }
    if needle.len() > hay.len() {
        return None;
    }
    let eq = |a: &String, b: &String| if loose { squash(a) == squash(b) } else { a == b };
    let fits = |at: usize| needle.iter().enumerate().all(|(i, n)| eq(&hay[at + i], n));
    let last = hay.len() - needle.len();
    let near = near.min(last);
    (0..=last)
        .flat_map(|d| [near.checked_sub(d), near.checked_add(d).filter(|p| *p <= last && d > 0)])
        .flatten()
        .find(|p| fits(*p))
}

fn apply_fuzzy(parent: &str, hunks: &[Hunk]) -> Result<String, PatchError> {
    let mut lines: Vec<String> = parent.lines().map(str::to_string).collect();
    // Apply from the last hunk up, so earlier positions stay valid.
    let mut placed: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for (idx, h) in hunks.iter().enumerate() {
        let near = h.stated_line.unwrap_or(1).saturating_sub(1);
        let mut found = None;
        'search: for fuzz in 0..=2usize {
            let lead = h.lines.iter().take_while(|(t, _)| *t == ' ').count().min(fuzz);
            let trail = h.lines.iter().rev().take_while(|(t, _)| *t == ' ').count().min(fuzz);
            if (fuzz > 0 && lead == 0 && trail == 0) || lead + trail > h.old.len() {
                continue;
            }
            let old = &h.old[lead..h.old.len() - trail];
            let new = &h.new[lead..h.new.len() - trail];
            for loose in [false, true] {
                if let Some(at) = locate(&lines, old, near + lead, loose) {
                    found = Some((at, old.len(), new.to_vec(), loose));
                    break 'search;
                }
            }
        }
        let Some((at, len, mut new, loose)) = found else {
            let first = h.old.iter().find(|l| !l.trim().is_empty()).map(|l| l.trim()).unwrap_or("(empty)");
            return Err(PatchError(format!(
                "hunk {} of the diff does not match the parent: its old lines (starting `{first}`) are not in the parent file",
                idx + 1
            )));
        };
        if loose {
            // Keep the parent's indentation for lines the hunk only re-indented.
            for line in new.iter_mut() {
                if let Some(orig) = lines[at..at + len].iter().find(|o| squash(o) == squash(line)) {
                    *line = orig.clone();
                }
            }
        }
        if placed.iter().any(|(a, l, _)| at < a + l && *a < at + len.max(1)) {
            return Err(PatchError(format!("hunk {} of the diff overlaps an earlier hunk", idx + 1)));
        }
        placed.push((at, len, new));
    }
    placed.sort_by_key(|p| std::cmp::Reverse(p.0));
    for (at, len, new) in placed {
        lines.splice(at..at + len, new);
    }
    let mut out = lines.join("\n");
    if parent.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Applies a unified diff to `parent`.
pub fn apply(parent: &str, diff: &str) -> Result<(String, Applied), PatchError> {
    let blanks = blank_context_restored(diff);
    for text in [Some(diff), blanks.as_deref()].into_iter().flatten() {
        if let Ok(patch) = diffy::Patch::from_str(text) {
            if !patch.hunks().is_empty() {
                if let Ok(out) = diffy::apply(parent, &patch) {
                    return Ok((out, Applied::Exact));
                }
            }
        }
    }
    let hunks = parse_lenient(diff);
    if hunks.is_empty() {
        return Err(PatchError("the answer has no diff hunks (`@@ ... @@` followed by ` `, `-` and `+` lines)".into()));
    }
    if hunks.iter().all(|h| h.lines.iter().all(|(t, _)| *t == ' ')) {
        return Err(PatchError("the diff changes nothing (no `+` or `-` lines)".into()));
    }
    apply_fuzzy(parent, &hunks).map(|s| (s, Applied::Fuzzy))
}

/// The diff with each empty line inside a hunk (by its header's counts) read
/// as the blank context line it stands for (`" "`): editors, chat front ends
/// and models strip the lone space. `None` when there is none to restore.
fn blank_context_restored(diff: &str) -> Option<String> {
    let counts = |h: &str| -> Option<(usize, usize)> {
        let mut parts = h.strip_prefix("@@ ")?.split_whitespace();
        let count = |r: &str| r.split_once(',').map_or(Some(1), |(_, n)| n.parse().ok());
        Some((count(parts.next()?.strip_prefix('-')?)?, count(parts.next()?.strip_prefix('+')?)?))
    };
    let (mut old, mut new, mut changed) = (0usize, 0usize, false);
    let mut out = Vec::new();
    for line in diff.split('\n') {
        if old == 0 && new == 0 {
            if let Some((o, n)) = line.starts_with("@@").then(|| counts(line)).flatten() {
                (old, new) = (o, n);
            }
            out.push(line.to_string());
            continue;
        }
        match line.chars().next() {
            None => {
                out.push(" ".to_string());
                changed = true;
                (old, new) = (old.saturating_sub(1), new.saturating_sub(1));
            }
            Some(' ') => (old, new) = (old.saturating_sub(1), new.saturating_sub(1)),
            Some('-') => old = old.saturating_sub(1),
            Some('+') => new = new.saturating_sub(1),
            _ => {}
        }
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    // The last hunk's trailing blank context lines, trimmed off with the
    // answer's trailing whitespace (only when nothing but context is left).
    if old > 0 && old == new {
        if out.last().is_some_and(String::is_empty) {
            out.pop();
        }
        out.extend(std::iter::repeat_n(" ".to_string(), old));
        out.push(String::new());
        changed = true;
    }
    changed.then(|| {
        let mut text = out.join("\n");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lines_in_a_hunk_are_blank_context_and_apply_exactly() {
        let parent = "a\nb\n\nc\nd\n";
        let diff = "--- a/net.py\n+++ b/net.py\n@@ -1,5 +1,5 @@\n a\n-b\n+B\n\n c\n d\n";
        assert_eq!(apply(parent, diff).expect("applies"), ("a\nB\n\nc\nd\n".to_string(), Applied::Exact));
        // The hunk's last context line (blank) trimmed off the answer.
        let parent = "a\nb\nc\n\nd\n";
        let diff = "--- a/net.py\n+++ b/net.py\n@@ -1,4 +1,4 @@\n a\n-b\n+B\n c";
        assert_eq!(apply(parent, diff).expect("applies"), ("a\nB\nc\n\nd\n".to_string(), Applied::Exact));
    }

    const PARENT: &str = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.conv = nn.Conv2d(1, 16, 3)\n        self.fc = nn.Linear(16 * 26 * 26, 10)\n\n    def forward(self, x):\n        x = self.conv(x).relu()\n        return self.fc(x.flatten(1))\n";

    #[test]
    fn an_exact_diff_applies() {
        let diff = "--- a/net.py\n+++ b/net.py\n@@ -6,2 +6,2 @@\n-        self.conv = nn.Conv2d(1, 16, 3)\n-        self.fc = nn.Linear(16 * 26 * 26, 10)\n+        self.conv = nn.Conv2d(1, 32, 3)\n+        self.fc = nn.Linear(32 * 26 * 26, 10)\n";
        let (out, how) = apply(PARENT, diff).expect("applies");
        assert_eq!(how, Applied::Exact);
        assert!(out.contains("nn.Conv2d(1, 32, 3)") && out.contains("32 * 26 * 26") && !out.contains("16 * 26"));
    }

    #[test]
    fn wrong_line_numbers_and_counts_still_apply() {
        let diff = "@@ -40,9 +40,9 @@\n     def forward(self, x):\n-        x = self.conv(x).relu()\n+        x = self.conv(x).gelu()\n         return self.fc(x.flatten(1))\n";
        let (out, _) = apply(PARENT, diff).expect("applies");
        assert!(out.contains("self.conv(x).gelu()"));
        assert_eq!(out.lines().count(), PARENT.lines().count());
    }

    #[test]
    fn reindented_context_applies_keeping_the_parents_indentation() {
        let diff = "@@ -9,2 +9,3 @@\n def forward(self, x):\n-    x = self.conv(x).relu()\n+    x = self.conv(x).relu()\n+    x = nn.functional.dropout(x, 0.1, self.training)\n";
        let (out, how) = apply(PARENT, diff).expect("applies");
        assert_eq!(how, Applied::Fuzzy);
        assert!(out.contains("    def forward(self, x):\n        x = self.conv(x).relu()\n"), "{out}");
        assert!(out.contains("dropout(x, 0.1"));
    }

    #[test]
    fn a_hunk_that_matches_nothing_is_a_clear_failure() {
        let diff = "@@ -1,1 +1,1 @@\n-class Model(nn.Module):\n+class Net(nn.Module):\n";
        let err = apply(PARENT, diff).expect_err("no match");
        assert!(err.0.contains("hunk 1") && err.0.contains("class Model"), "{err}");
        assert!(apply(PARENT, "just prose").is_err());
    }
}
