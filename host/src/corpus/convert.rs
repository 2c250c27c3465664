//! LEMUR model code rewritten in the search's contract.
//!
//! The search asks its generator for `class Net(nn.Module)` built as
//! `Net(in_shape, num_classes)` with `in_shape = (C, H, W)`; LEMUR's models
//! are built as `Net(in_shape, out_shape, prm, device)` with
//! `in_shape = (batch, C, H, W)`, `out_shape = (num_classes,)`, a
//! hyperparameter dict `prm`, and carry their own training code
//! (`train_setup`, `learn`) and a module-level `supported_hyperparameters()`.
//! A training example must answer the prompt the generator sees, so the
//! model is rewritten, leaving its architecture as written:
//!
//! 1. `Net.__init__` takes `(self, in_shape, num_classes)`;
//! 2. inside it, the parameters are replaced where every use is simple:
//!    `in_shape[1]`, `[2]`, `[3]` become `in_shape[0]`, `[1]`, `[2]`
//!    (negative indices are the same in both layouts); `out_shape[0]`
//!    becomes `num_classes`; `prm['dropout']` becomes the run's value;
//!    `device` becomes `torch.device('cpu')` (what the evaluator passes a
//!    LEMUR model); a parameter used otherwise (`self.in_shape = in_shape`,
//!    `in_shape[1:]`, `prm.get(...)`) is instead bound at the top of
//!    `__init__` to what the model expects (`in_shape = (1, *in_shape)`,
//!    `out_shape = (num_classes,)`, `prm = {...}`, `device = ...`);
//! 3. `self.x = device` / `self.x = <hyperparameter>` lines whose attribute
//!    nothing else reads are dropped (the training code read them);
//! 4. `train_setup`, `learn` and `supported_hyperparameters` are removed
//!    unless other code calls them (the search trains with its own recipe);
//! 5. blank lines are collapsed and line ends trimmed, as the prompt
//!    templates show code.
//!
//! A model whose `Net.__init__` cannot be read this way is not converted
//! ([`NotConvertible`]), never guessed at.

use std::fmt::Write as _;

/// Why a model could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConvertible {
    /// No top-level `class Net`.
    #[error("no top-level `class Net`")]
    NoNet,
    /// `Net` has no `__init__` at its body's indentation.
    #[error("`Net` has no `__init__`")]
    NoInit,
    /// `Net.__init__` is not `(self, in_shape, out_shape, prm, device)`.
    #[error("`Net.__init__` takes ({0}), not four positional parameters after self")]
    Signature(String),
    /// `__init__`'s header could not be read (unbalanced brackets, a body
    /// on the header's line).
    #[error("the header of `Net.__init__` could not be read")]
    Header,
}

/// A hyperparameter value for `prm`: a JSON number or boolean, written as a
/// Python literal.
pub fn python_literal(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(true) => Some("True".into()),
        serde_json::Value::Bool(false) => Some("False".into()),
        _ => None,
    }
}

/// The value the evaluator gives a LEMUR hyperparameter it has no run for
/// (as its checker does: the search's lr and momentum, dropout 0.2, batch
/// 128, anything else 0.5).
pub fn default_hyperparameter(key: &str) -> &'static str {
    match key {
        "lr" => "0.01",
        "momentum" => "0.9",
        "dropout" => "0.2",
        "batch" => "128",
        _ => "0.5",
    }
}

/// One occurrence of a parameter's name inside `__init__`.
#[derive(Debug, Clone, PartialEq)]
enum Use {
    /// `name[<int>]`.
    Index(i64),
    /// `name['key']`.
    Key(String),
    /// The bare name read as a value.
    Value,
    /// Anything else (an assignment to it, a slice, ...).
    Other,
}

/// An occurrence: byte range of the whole use (the subscript included) and
/// its kind.
#[derive(Debug, Clone)]
struct Occurrence {
    start: usize,
    end: usize,
    kind: Use,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The end (exclusive, as a char index) of the string literal that starts
/// with the quote at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let q = chars[i];
    let triple = i + 2 < chars.len() && chars[i + 1] == q && chars[i + 2] == q;
    i += if triple { 3 } else { 1 };
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if !triple && c == '\n' {
            return i;
        }
        if c == q && (!triple || (i + 2 < chars.len() && chars[i + 1] == q && chars[i + 2] == q)) {
            return i + if triple { 3 } else { 1 };
        }
        i += 1;
    }
    i
}

/// Every occurrence of the names in `names` as identifiers of `code` (not
/// attributes, not inside strings or comments, not keyword-argument names),
/// in order. Positions are byte offsets.
fn occurrences(code: &str, names: &[&str]) -> Vec<(usize, Occurrence)> {
    let chars: Vec<char> = code.chars().collect();
    let mut byte = Vec::with_capacity(chars.len() + 1);
    let mut b = 0;
    for c in &chars {
        byte.push(b);
        b += c.len_utf8();
    }
    byte.push(b);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut last: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
            last = Some(c);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') && word.len() <= 2 {
                // A string prefix (r'', f"", b'', ...).
                i = skip_string(&chars, i);
                last = Some('"');
                continue;
            }
            if let Some(which) = names.iter().position(|n| *n == word) {
                if last != Some('.') {
                    let (end, kind) = classify(&chars, i, depth);
                    if let Some(kind) = kind {
                        out.push((which, Occurrence { start: byte[start], end: byte[end], kind }));
                    }
                }
            }
            last = word.chars().last();
        } else if c.is_ascii_digit() {
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            last = Some('0');
        } else {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if !c.is_whitespace() && c != '\\' {
                last = Some(c);
            }
            i += 1;
        }
    }
    out
}

/// What follows a name ending at char `i`: the end of the use (char index)
/// and its kind; `None` for a keyword-argument name (`f(device=...)`).
fn classify(chars: &[char], i: usize, depth: usize) -> (usize, Option<Use>) {
    let mut j = i;
    while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
        j += 1;
    }
    match chars.get(j) {
        Some('=') if chars.get(j + 1) != Some(&'=') => {
            if depth > 0 {
                (i, None)
            } else {
                (i, Some(Use::Other))
            }
        }
        Some('[') => {
            let mut k = j + 1;
            while k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            let inner_start = k;
            let kind = if chars.get(k) == Some(&'\'') || chars.get(k) == Some(&'"') {
                let end = skip_string(chars, k);
                let key: String = chars[k + 1..end.saturating_sub(1).max(k + 1)].iter().collect();
                k = end;
                (key.chars().all(is_ident_char) && !key.is_empty()).then_some(Use::Key(key))
            } else {
                if chars.get(k) == Some(&'-') {
                    k += 1;
                }
                while k < chars.len() && chars[k].is_ascii_digit() {
                    k += 1;
                }
                let text: String = chars[inner_start..k].iter().collect();
                text.parse::<i64>().ok().map(Use::Index)
            };
            while k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            match (kind, chars.get(k)) {
                (Some(kind), Some(']')) => {
                    // `x[1] = ...` assigns into it: not a read.
                    let mut m = k + 1;
                    while m < chars.len() && chars[m] == ' ' {
                        m += 1;
                    }
                    let assigns = chars.get(m) == Some(&'=') && chars.get(m + 1) != Some(&'=');
                    if assigns {
                        (i, Some(Use::Other))
                    } else {
                        (k + 1, Some(kind))
                    }
                }
                _ => (i, Some(Use::Other)),
            }
        }
        _ => (i, Some(Use::Value)),
    }
}

/// The parameter names of a `def` header's text between its parentheses.
fn split_params(params: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in params.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.split([':', '=']).next().unwrap_or("").trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_code(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The end (exclusive line index) of the block whose header is at `start`
/// with indentation `indent`: the first later code line indented no deeper.
fn block_end(lines: &[&str], start: usize, indent: usize) -> usize {
    lines[start + 1..].iter().position(|l| is_code(l) && indent_of(l) <= indent).map_or(lines.len(), |p| start + 1 + p)
}

/// Whether `word` occurs in `text` as a whole identifier.
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// The string keys of `prm['k']`, `prm.get('k'` and `'k' in prm` anywhere
/// in `code`, and those `supported_hyperparameters()` returns.
fn hyperparameter_keys(code: &str, prm: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |k: &str| {
        if !k.is_empty() && k.chars().all(is_ident_char) && !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    };
    let quoted = |s: &str| -> Option<String> {
        let s = s.trim_start();
        let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let rest = &s[1..];
        rest.find(q).map(|e| rest[..e].to_string())
    };
    for (at, _) in code.match_indices(prm) {
        if code[..at].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let after = &code[at + prm.len()..];
        if let Some(rest) = after.strip_prefix('[').or_else(|| after.strip_prefix(".get(")) {
            if let Some(k) = quoted(rest) {
                add(&k);
            }
        }
    }
    if let Some(at) = code.find("def supported_hyperparameters") {
        let body: String = code[at..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with([' ', '\t']) || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = body.as_str();
        while let Some(p) = rest.find(['\'', '"']) {
            let q = rest[p..].chars().next().unwrap_or('\'');
            let tail = &rest[p + 1..];
            match tail.find(q) {
                Some(e) => {
                    add(&tail[..e]);
                    rest = &tail[e + 1..];
                }
                None => break,
            }
        }
    }
    keys
}

/// The names of the four LEMUR parameters, in order.
struct Params {
    in_shape: String,
    out_shape: String,
    prm: String,
    device: String,
}

/// Rewrites a LEMUR model in the search's contract (see the module docs).
/// `hyperparameters` holds the values of the model's run (`dropout`, ...);
/// keys it lacks take [`default_hyperparameter`].
pub fn to_search_contract(
    code: &str,
    hyperparameters: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, NotConvertible> {
    let code = code.replace("\r\n", "\n");
    let lines: Vec<&str> = code.lines().collect();
    // 1. The (last) top-level `class Net` and its `__init__`.
    let class_at = lines
        .iter()
        .rposition(|l| {
            l.strip_prefix("class ")
                .and_then(|r| r.trim_start().strip_prefix("Net"))
                .is_some_and(|r| r.trim_start().starts_with(['(', ':']))
        })
        .ok_or(NotConvertible::NoNet)?;
    let class_end = block_end(&lines, class_at, 0);
    let body_indent = lines[class_at + 1..class_end]
        .iter()
        .find(|l| is_code(l))
        .map(|l| indent_of(l))
        .ok_or(NotConvertible::NoInit)?;
    let at_body = |l: &str, what: &str| indent_of(l) == body_indent && l.trim_start().starts_with(what);
    let init_at =
        (class_at + 1..class_end).find(|&i| at_body(lines[i], "def __init__")).ok_or(NotConvertible::NoInit)?;
    // The header: up to the `:` after the parameters' closing parenthesis.
    let mut depth = 0usize;
    let mut params = String::new();
    let mut header_end = None;
    let mut opened = false;
    'scan: for (n, line) in lines.iter().enumerate().skip(init_at) {
        for (ci, c) in line.char_indices() {
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth == 1 && c == '(' && !opened {
                        opened = true;
                        continue;
                    }
                }
                ')' | ']' | '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && opened {
                        // The rest of the line: `-> None:` then nothing.
                        let rest = &line[ci + 1..];
                        let colon = rest.find(':').ok_or(NotConvertible::Header)?;
                        let after = rest[colon + 1..].trim();
                        if !(after.is_empty() || after.starts_with('#')) {
                            return Err(NotConvertible::Header);
                        }
                        header_end = Some(n);
                        break 'scan;
                    }
                }
                '#' if depth > 0 => break,
                _ => {}
            }
            if opened && depth >= 1 {
                params.push(c);
            }
        }
        if opened {
            params.push('\n');
        }
    }
    let header_end = header_end.ok_or(NotConvertible::Header)?;
    let names = split_params(&params);
    let positional: Vec<&String> = names.iter().skip(1).collect();
    if names.first().map(String::as_str) != Some("self")
        || positional.len() != 4
        || positional.iter().any(|p| p.starts_with('*') || *p == "/")
    {
        return Err(NotConvertible::Signature(names.join(", ")));
    }
    let p = Params {
        in_shape: positional[0].clone(),
        out_shape: positional[1].clone(),
        prm: positional[2].clone(),
        device: positional[3].clone(),
    };
    let def_indent = indent_of(lines[init_at]);
    let init_end = block_end(&lines, header_end, def_indent);
    let init_body = lines[header_end + 1..init_end].join("\n");

    // 2. Replace simple uses; bind the others at the top of `__init__`.
    let names = [p.in_shape.as_str(), p.out_shape.as_str(), p.prm.as_str(), p.device.as_str()];
    let occ = occurrences(&init_body, &names);
    let uses = |which: usize| occ.iter().filter(move |(w, _)| *w == which).map(|(_, o)| o);
    let value_of = |key: &str| {
        hyperparameters.get(key).and_then(python_literal).unwrap_or_else(|| default_hyperparameter(key).to_string())
    };
    let in_simple =
        p.in_shape == "in_shape" && uses(0).all(|o| matches!(o.kind, Use::Index(1..=3) | Use::Index(-3..=-1)));
    let out_simple = uses(1).all(|o| matches!(o.kind, Use::Index(0) | Use::Index(-1)));
    let prm_simple = uses(2).all(|o| matches!(o.kind, Use::Key(_)));
    let dev_simple = uses(3).all(|o| o.kind == Use::Value);
    let simple = [in_simple, out_simple, prm_simple, dev_simple];
    let mut body = String::with_capacity(init_body.len());
    let mut at = 0;
    for (which, o) in &occ {
        if !simple[*which] {
            continue;
        }
        let replacement = match (which, &o.kind) {
            (0, Use::Index(i)) if *i > 0 => format!("in_shape[{}]", i - 1),
            (0, Use::Index(i)) => format!("in_shape[{i}]"),
            (1, _) => "num_classes".to_string(),
            (2, Use::Key(k)) => value_of(k),
            (3, _) => "torch.device('cpu')".to_string(),
            _ => continue,
        };
        body.push_str(&init_body[at..o.start]);
        body.push_str(&replacement);
        at = o.end;
    }
    body.push_str(&init_body[at..]);

    let inner_indent = lines[header_end + 1..init_end]
        .iter()
        .find(|l| is_code(l))
        .map_or_else(|| " ".repeat(def_indent + 4), |l| l[..indent_of(l)].to_string());
    let mut preamble: Vec<String> = Vec::new();
    if !in_simple && uses(0).next().is_some() {
        preamble.push(format!("{} = (1, *in_shape)  # (batch, C, H, W), as the code below reads it", p.in_shape));
    }
    if !out_simple {
        preamble.push(format!("{} = (num_classes,)", p.out_shape));
    }
    if !prm_simple {
        let mut keys = hyperparameter_keys(&code, &p.prm);
        keys.sort();
        let items: Vec<String> = keys.iter().map(|k| format!("'{k}': {}", value_of(k))).collect();
        preamble.push(format!("{} = {{{}}}", p.prm, items.join(", ")));
    }
    if !dev_simple {
        preamble.push(format!("{} = torch.device('cpu')", p.device));
    }

    // 4. What to remove: the training methods and the hyperparameter list,
    // unless something else calls them.
    let mut removed: Vec<(usize, usize)> = Vec::new();
    for method in ["def train_setup", "def learn"] {
        if let Some(start) = (class_at + 1..class_end)
            .find(|&i| at_body(lines[i], method) && lines[i].trim_start()[method.len()..].trim_start().starts_with('('))
        {
            let end = block_end(&lines, start, body_indent).min(class_end);
            let name = &method[4..];
            let elsewhere: String = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= end)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n");
            if !mentions(&elsewhere, name) {
                let mut s = start;
                while s > 0 && lines[s - 1].trim_start().starts_with('@') && indent_of(lines[s - 1]) == body_indent {
                    s -= 1;
                }
                removed.push((s, end));
            }
        }
    }
    if let Some(start) = lines.iter().position(|l| l.starts_with("def supported_hyperparameters")) {
        let end = block_end(&lines, start, 0);
        let elsewhere: String = lines[..start].iter().chain(&lines[end..]).copied().collect::<Vec<_>>().join("\n");
        if !mentions(&elsewhere, "supported_hyperparameters") {
            removed.push((start, end));
        }
    }

    // Assemble.
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 8);
    let mut i = 0;
    while i < lines.len() {
        if let Some(&(_, end)) = removed.iter().find(|(s, _)| *s == i) {
            // Keep the blank lines that separated the block from what follows.
            i = end;
            continue;
        }
        if i == init_at {
            out.push(format!("{}def __init__(self, in_shape, num_classes):", " ".repeat(def_indent)));
            let body_lines: Vec<&str> = body.split('\n').collect();
            // The preamble goes after a docstring, when there is one.
            let mut k = 0;
            if let Some(first) = body_lines.iter().position(|l| is_code(l)) {
                let t = body_lines[first].trim_start();
                let quote = ["\"\"\"", "'''"].into_iter().find(|q| t.starts_with(q));
                if let Some(q) = quote {
                    let closes_here = t[3..].contains(q);
                    k = if closes_here {
                        first + 1
                    } else {
                        body_lines[first + 1..].iter().position(|l| l.contains(q)).map_or(first + 1, |p| first + 2 + p)
                    };
                }
            }
            for l in &body_lines[..k] {
                out.push((*l).to_string());
            }
            for l in &preamble {
                out.push(format!("{inner_indent}{l}"));
            }
            for l in &body_lines[k..] {
                out.push((*l).to_string());
            }
            i = init_end;
            continue;
        }
        out.push(lines[i].to_string());
        i += 1;
    }
    let mut text = out.join("\n");

    // 3. Drop `self.x = <value>` lines whose attribute nothing reads, and
    // `x = x` left by the replacement.
    let replaced_values: Vec<String> = {
        let mut v = vec!["torch.device('cpu')".to_string(), "num_classes".to_string()];
        for o in uses(2) {
            if let Use::Key(k) = &o.kind {
                v.push(value_of(k));
            }
        }
        v
    };
    let lines2: Vec<&str> = text.lines().collect();
    let mut keep = vec![true; lines2.len()];
    for (n, l) in lines2.iter().enumerate() {
        let t = l.trim();
        let Some((lhs, rhs)) = t.split_once(" = ") else { continue };
        let rhs = rhs.trim();
        if lhs == rhs {
            keep[n] = false;
            continue;
        }
        if let Some(attr) = lhs.strip_prefix("self.").filter(|a| a.chars().all(is_ident_char)) {
            let dropped_value = replaced_values.iter().any(|v| v == rhs) && rhs != "num_classes";
            if dropped_value {
                let rest: String =
                    lines2.iter().enumerate().filter(|(m, _)| *m != n).map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
                if !mentions(&rest, &format!("self.{attr}")) {
                    keep[n] = false;
                }
            }
        }
    }
    text = lines2.iter().zip(&keep).filter(|(_, k)| **k).map(|(l, _)| *l).collect::<Vec<_>>().join("\n");

    // `torch` must be importable by that name for what was written.
    if text.contains("torch.device(") && !text.lines().any(is_import_torch) {
        text.insert_str(0, "import torch\n");
    }
    Ok(tidy(&text))
}

fn is_import_torch(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("import ") else { return false };
    rest.split(',').any(|m| {
        let m = m.trim();
        m == "torch" || (m.starts_with("torch ") && !m.contains(" as "))
    })
}

/// No leading blank lines, no two blank lines in a row, no trailing blanks
/// on lines, one newline at the end: the code reads exactly as the prompt
/// templates show it (they collapse blank lines and trim line ends), so a
/// diff's lines and context are those the generator sees.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        let _ = writeln!(out, "{line}");
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AIRNET: &str = r#"import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout'}


class Block(nn.Module):
    def __init__(self, in_shape, c):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], c, 3)


class Net(nn.Module):
    def __init__(self, in_shape: tuple, out_shape: tuple,
                 prm: dict, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.in_channels = in_shape[1]
        self.image_size = in_shape[-1]
        self.num_classes = out_shape[0]
        self.learning_rate = prm['lr']
        self.features = nn.Sequential(nn.Conv2d(self.in_channels, 64, 3), nn.Dropout(prm['dropout']))
        self.classifier = nn.Linear(64, self.num_classes)
        self.to(device=device)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))

    def train_setup(self, prm):
        self.to(self.device)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=self.learning_rate)

    def learn(self, train_data):
        for inputs, labels in train_data:
            pass
"#;

    fn run(dropout: f64) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("dropout".into(), serde_json::json!(dropout));
        m.insert("lr".into(), serde_json::json!(0.0037));
        m.insert("transform".into(), serde_json::json!("norm_32"));
        m
    }

    #[test]
    fn a_lemur_model_is_rewritten_in_the_search_contract() {
        let out = to_search_contract(AIRNET, &run(0.07)).expect("converts");
        let expected = r#"import torch
import torch.nn as nn

class Block(nn.Module):
    def __init__(self, in_shape, c):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], c, 3)

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.in_channels = in_shape[0]
        self.image_size = in_shape[-1]
        self.num_classes = num_classes
        self.features = nn.Sequential(nn.Conv2d(self.in_channels, 64, 3), nn.Dropout(0.07))
        self.classifier = nn.Linear(64, self.num_classes)
        self.to(device=torch.device('cpu'))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn parameters_used_otherwise_are_bound_at_the_top_of_init() {
        let code = "import torch.nn as nn\n\ndef supported_hyperparameters():\n    return {'lr', 'momentum'}\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        \"\"\"A doc.\"\"\"\n        super().__init__()\n        self.in_shape = in_shape\n        c, h = in_shape[1:3]\n        self.n = out_shape\n        self.p = prm.get('dropout', 0.1)\n        device = device or 'cpu'\n        self.fc = nn.Linear(c * h, out_shape[0])\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n\n    def learn(self, d):\n        pass\n";
        let out = to_search_contract(code, &serde_json::Map::new()).expect("converts");
        let head = "import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        \"\"\"A doc.\"\"\"\n        in_shape = (1, *in_shape)  # (batch, C, H, W), as the code below reads it\n        out_shape = (num_classes,)\n        prm = {'dropout': 0.2, 'lr': 0.01, 'momentum': 0.9}\n        device = torch.device('cpu')\n        super().__init__()\n        self.in_shape = in_shape\n";
        assert!(out.starts_with(head), "{out}");
        assert!(!out.contains("def learn") && out.ends_with("return self.fc(x.flatten(1))\n"), "{out}");
    }

    #[test]
    fn models_that_are_not_in_lemurs_contract_are_refused() {
        let paper = "class Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        pass\n";
        assert!(matches!(to_search_contract(paper, &serde_json::Map::new()), Err(NotConvertible::Signature(_))));
        assert_eq!(to_search_contract("x = 1\n", &serde_json::Map::new()), Err(NotConvertible::NoNet));
        let no_init = "class Net(nn.Module):\n    def forward(self, x):\n        return x\n";
        assert_eq!(to_search_contract(no_init, &serde_json::Map::new()), Err(NotConvertible::NoInit));
        let varargs = "class Net(nn.Module):\n    def __init__(self, *args):\n        pass\n";
        assert!(matches!(to_search_contract(varargs, &serde_json::Map::new()), Err(NotConvertible::Signature(_))));
    }

    #[test]
    fn training_methods_that_other_code_calls_are_kept() {
        let code = "import torch\nclass Net(torch.nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n        self.fc = torch.nn.Linear(in_shape[1], out_shape[0])\n        self.train_setup(prm)\n\n    def train_setup(self, prm):\n        self.lr = prm['lr']\n";
        let out = to_search_contract(code, &serde_json::Map::new()).expect("converts");
        assert!(out.contains("def train_setup(self, prm):"), "{out}");
        assert!(out.contains("prm = {'lr': 0.01}\n") && out.contains("Linear(in_shape[0], num_classes)"), "{out}");
    }

    #[test]
    fn names_in_strings_comments_attributes_and_keyword_arguments_are_not_uses() {
        let code = "x = in_shape[1] # in_shape\ns = 'in_shape[2]'\nf(device=device)\ny = self.prm['a']\nprm['k'] = 1\n";
        let occ = occurrences(code, &["in_shape", "prm", "device"]);
        let kinds: Vec<(usize, Use)> = occ.into_iter().map(|(w, o)| (w, o.kind)).collect();
        assert_eq!(kinds, vec![(0, Use::Index(1)), (2, Use::Value), (1, Use::Other)]);
    }
}
