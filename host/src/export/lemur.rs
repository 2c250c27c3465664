//! Candidate code in LEMUR's contract (ABrain-One/nn-dataset).
//!
//! LEMUR's model files define `Net(in_shape, out_shape, prm, device)` with
//! `in_shape = (batch, C, H, W)` and `out_shape = (num_classes,)`, a
//! module-level `supported_hyperparameters()`, and the methods
//! `train_setup(prm)` (optimiser, loss, device) and `learn(train_data)` (one
//! pass over `(inputs, labels)` batches). Code already written that way is
//! kept as is. Code in the paper's contract (`Net()` or
//! `Net(in_shape, num_classes)`) is wrapped: its class is renamed (every
//! `Net` reference in code, `super(Net, self)` included; never inside
//! strings, comments or attribute names) and a LEMUR `Net` that builds it
//! is appended. The paper's contract lets generated code use `torch`, `nn`,
//! `F` and `Tensor` without importing them: a wrapped file defines them in
//! its header, and LEMUR code that imports no torch gets that one line first.
//!
//! ```
//! use nas_host::export::lemur::{to_lemur, Contract};
//! let paper = "import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super(Net, self).__init__()\n";
//! let (text, contract) = to_lemur(paper, None);
//! assert_eq!(contract, Contract::Paper);
//! assert!(text.contains("super(NasCandidate, self)") && text.contains("def learn(self, train_data):"));
//! ```

/// Which contract a candidate was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// The paper's: `Net()` or `Net(in_shape, num_classes)`.
    Paper,
    /// LEMUR's: `Net(in_shape, out_shape, prm, device)` + `supported_hyperparameters()`.
    Lemur,
}

impl Contract {
    /// `paper` or `lemur`.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::Paper => "paper",
            Contract::Lemur => "lemur",
        }
    }
}

/// The contract of `code`: what the evaluator recorded (`"lemur"` or a
/// `paper...` contract in the report's `extra.contract`) when given, else
/// read from the code: LEMUR when it defines a module-level
/// `supported_hyperparameters()` and `Net.__init__` takes four or more
/// positional arguments after `self` (or `*args`), as the evaluator decides.
pub fn detect(code: &str, recorded: Option<&str>) -> Contract {
    match recorded {
        Some("lemur") => return Contract::Lemur,
        Some(c) if c.starts_with("paper") => return Contract::Paper,
        _ => {}
    }
    let has_hp = code.lines().any(|l| l.starts_with("def supported_hyperparameters"));
    if has_hp && init_positional_params(code, "Net").is_some_and(|n| n >= 4) {
        Contract::Lemur
    } else {
        Contract::Paper
    }
}

/// The number of positional parameters after `self` of `class_name.__init__`
/// (`usize::MAX` with `*args`), when the class and its `__init__` are found.
fn init_positional_params(code: &str, class_name: &str) -> Option<usize> {
    let lines: Vec<&str> = code.lines().collect();
    let start = lines.iter().position(|l| {
        l.strip_prefix("class ")
            .and_then(|rest| rest.trim_start().strip_prefix(class_name))
            .is_some_and(|rest| rest.trim_start().starts_with(['(', ':']))
    })?;
    // The class body: the following lines that are indented or blank.
    let body_end = lines[start + 1..]
        .iter()
        .position(|l| !l.trim().is_empty() && !l.starts_with([' ', '\t']) && !l.trim_start().starts_with('#'))
        .map_or(lines.len(), |p| start + 1 + p);
    let body = lines[start + 1..body_end].join("\n");
    let at = body.find("def __init__")?;
    let open = at + body[at..].find('(')?;
    let mut depth = 0usize;
    let mut params = String::new();
    for c in body[open..].chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                params.push('\u{1}');
                continue;
            }
            _ => {}
        }
        params.push(c);
    }
    let mut positional = 0usize;
    for p in params.split('\u{1}').map(str::trim).filter(|p| !p.is_empty()) {
        let name = p.split([':', '=']).next().unwrap_or("").trim();
        if name == "self" || name == "/" {
            continue;
        }
        if name == "*" || name.starts_with("**") {
            break;
        }
        if name.starts_with('*') {
            return Some(usize::MAX);
        }
        positional += 1;
    }
    Some(positional)
}

/// String prefixes that may precede a quote (case-insensitive).
const STRING_PREFIXES: [&str; 11] = ["r", "u", "b", "f", "br", "rb", "fr", "rf", "t", "tr", "rt"];

fn is_string_prefix(word: &str) -> bool {
    STRING_PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(word))
}

/// Copies the string literal starting at `chars[i]` (a quote) into `out`;
/// returns the index after it.
fn copy_string(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let q = chars[i];
    let triple = i + 2 < chars.len() && chars[i + 1] == q && chars[i + 2] == q;
    let n = if triple { 3 } else { 1 };
    for _ in 0..n {
        out.push(chars[i]);
        i += 1;
    }
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&next) = chars.get(i + 1) {
                out.push(next);
            }
            i += 2;
            continue;
        }
        if !triple && c == '\n' {
            // An unterminated literal ends at the line's end.
            return i;
        }
        if c == q && (!triple || (i + 2 < chars.len() && chars[i + 1] == q && chars[i + 2] == q)) {
            for _ in 0..n {
                out.push(chars[i]);
                i += 1;
            }
            return i;
        }
        out.push(c);
        i += 1;
    }
    i
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `code` with every reference to the name `from` replaced by `to`: whole
/// identifiers only, not after a `.` (an attribute), not inside string
/// literals or comments.
pub fn rename(code: &str, from: &str, to: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len() + 64);
    let mut i = 0;
    // The last significant (non-whitespace, non-comment) character.
    let mut last: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                out.push(chars[i]);
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            i = copy_string(&chars, i, &mut out);
            last = Some(c);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') && is_string_prefix(&word) {
                out.push_str(&word);
                let q = chars[i];
                i = copy_string(&chars, i, &mut out);
                last = Some(q);
            } else {
                if word == from && last != Some('.') {
                    out.push_str(to);
                } else {
                    out.push_str(&word);
                }
                last = word.chars().last();
            }
        } else if c.is_ascii_digit() {
            // A number (`1e5`, `0x1F`, `3j`): never a name.
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                out.push(chars[i]);
                i += 1;
            }
            last = Some('0');
        } else {
            out.push(c);
            if !c.is_whitespace() && c != '\\' {
                last = Some(c);
            }
            i += 1;
        }
    }
    out
}

/// Whether `name` occurs in `code` as an identifier (anywhere, strings included).
fn mentions(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// The name the candidate's own class gets: `NasCandidate`, or with a
/// number when the code already uses that name.
fn fresh_name(code: &str) -> String {
    let mut name = "NasCandidate".to_string();
    let mut n = 2;
    while mentions(code, &name) {
        name = format!("NasCandidate{n}");
        n += 1;
    }
    name
}

/// The LEMUR half of a wrapped file; `{cls}` is the candidate's class.
const WRAPPER: &str = r#"

# ---- LEMUR contract (ABrain-One/nn-dataset), added by `nas export` ----
import inspect as _nas_inspect

import torch as _nas_torch
import torch.nn as _nas_nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


def _nas_build(chw, num_classes):
    """Builds the candidate as the search evaluated it: {cls}(in_shape, num_classes) when its
    constructor takes two positional arguments, else {cls}()."""
    try:
        params = list(_nas_inspect.signature({cls}.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        return {cls}(chw, num_classes)
    return {cls}()


class Net(_nas_nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        shape = tuple(int(d) for d in in_shape)
        chw = shape[1:] if len(shape) == 4 else shape
        self.model = _nas_build(chw, int(out_shape[0]))
        self.to(device)

    def forward(self, x):
        return self.model(x)

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (_nas_nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = _nas_torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            self.optimizer.step()
"#;

/// The names the paper's contract defines for generated code (which may use
/// them without importing them), as one line of Python.
const CONTRACT_NAMES: &str = "import torch, torch.nn as nn, torch.nn.functional as F; from torch import Tensor  # the paper's contract: these names are predefined\n";

/// Whether `code` imports torch itself (a line `import torch...` or `from torch...`).
fn imports_torch(code: &str) -> bool {
    code.lines().map(str::trim_start).any(|l| l.starts_with("import torch") || l.starts_with("from torch"))
}

/// The text of `code` in LEMUR's contract, and the contract it was written
/// in (`recorded`: the evaluator's `extra.contract`, see [`detect`]). LEMUR
/// code is returned unchanged.
pub fn to_lemur(code: &str, recorded: Option<&str>) -> (String, Contract) {
    let contract = detect(code, recorded);
    if contract == Contract::Lemur {
        if imports_torch(code) {
            return (code.to_string(), contract);
        }
        return (format!("{CONTRACT_NAMES}{code}"), contract);
    }
    let cls = fresh_name(code);
    let mut text = format!(
        "# Exported by `nas export` in LEMUR's contract (ABrain-One/nn-dataset). The candidate was written\n\
         # in the paper's contract; its class `Net` is kept below as `{cls}`, built by the LEMUR `Net` at the end.\n\
         {CONTRACT_NAMES}\n"
    );
    text.push_str(rename(code, "Net", &cls).trim_end());
    text.push('\n');
    text.push_str(&WRAPPER.replace("{cls}", &cls));
    (text, contract)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_touches_code_references_only() {
        let code = r#"import torch.nn as nn
# Net is the class; "Net" in a string stays
class Net(nn.Module):
    """Net docstring mentioning Net()."""
    def __init__(self, in_shape, num_classes):
        super(Net, self).__init__()
        self.Net = 3
        self.name = 'Net'
        self.f = f"{self.Net} Net"
        self.resnet = ResNet(); self.net_block = NetBlock(); self.NetX = 1
    def clone(self):
        return Net(self.in_shape, self.n)  # Net again
x = Net((1, 2, 3), 10) if isinstance(None, Net) else r'Net\'s' + b"Net"
"#;
        let out = rename(code, "Net", "Cand");
        let expected = r#"import torch.nn as nn
# Net is the class; "Net" in a string stays
class Cand(nn.Module):
    """Net docstring mentioning Net()."""
    def __init__(self, in_shape, num_classes):
        super(Cand, self).__init__()
        self.Net = 3
        self.name = 'Net'
        self.f = f"{self.Net} Net"
        self.resnet = ResNet(); self.net_block = NetBlock(); self.NetX = 1
    def clone(self):
        return Cand(self.in_shape, self.n)  # Net again
x = Cand((1, 2, 3), 10) if isinstance(None, Cand) else r'Net\'s' + b"Net"
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn multi_line_strings_and_attribute_chains_are_left_alone() {
        let code = "s = '''\nclass Net:\n'''\ny = models . Net\nclass Net: pass\nz = 1e5+Net\n";
        assert_eq!(rename(code, "Net", "C"), "s = '''\nclass Net:\n'''\ny = models . Net\nclass C: pass\nz = 1e5+C\n");
    }

    #[test]
    fn contracts_are_detected_as_the_evaluator_decides() {
        let lemur = "import torch\ndef supported_hyperparameters():\n    return {'lr'}\n\nclass Net(nn.Module):\n    def __init__(self, in_shape: tuple, out_shape: tuple,\n                 prm: dict, device: torch.device) -> None:\n        super().__init__()\n";
        assert_eq!(detect(lemur, None), Contract::Lemur);
        let varargs = "def supported_hyperparameters():\n    return set()\nclass Net(nn.Module):\n    def __init__(self, *args):\n        pass\n";
        assert_eq!(detect(varargs, None), Contract::Lemur);
        let paper =
            "class Net(nn.Module):\n    def __init__(self, in_shape=(1, 28, 28), num_classes=10):\n        pass\n";
        assert_eq!(detect(paper, None), Contract::Paper);
        // A hyperparameter function alone does not make LEMUR code.
        let both = format!("def supported_hyperparameters():\n    return set()\n{paper}");
        assert_eq!(detect(&both, None), Contract::Paper);
        // Another class's four-argument __init__ does not count.
        let other = "def supported_hyperparameters():\n    return set()\nclass Block(nn.Module):\n    def __init__(self, a, b, c, d):\n        pass\nclass Net(nn.Module):\n    def __init__(self):\n        pass\n";
        assert_eq!(detect(other, None), Contract::Paper);
        // What the evaluator recorded wins.
        assert_eq!(detect(paper, Some("lemur")), Contract::Lemur);
        assert_eq!(detect(lemur, Some("paper(in_shape, num_classes)")), Contract::Paper);
    }

    #[test]
    fn code_relying_on_the_contract_names_gets_them_defined() {
        // The paper's outputs import nothing: `torch`, `nn`, `F` and `Tensor` are predefined.
        let paper = "class Net(nn.Module):\n    def forward(self, x: Tensor) -> Tensor:\n        return F.relu(torch.flatten(x, 1))\n";
        let (text, c) = to_lemur(paper, None);
        assert_eq!(c, Contract::Paper);
        let names = text.find("import torch, torch.nn as nn, torch.nn.functional as F; from torch import Tensor");
        let class = text.find("class NasCandidate(nn.Module):");
        assert!(names.is_some() && names < class, "the names come before the candidate's code: {text}");
        let lemur = "def supported_hyperparameters():\n    return {'lr'}\nclass Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        pass\n";
        let (text, c) = to_lemur(lemur, None);
        assert_eq!(c, Contract::Lemur);
        assert_eq!(text, format!("{CONTRACT_NAMES}{lemur}"), "one line added, the code kept");
    }

    #[test]
    fn paper_code_is_wrapped_and_lemur_code_kept() {
        let paper = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n        super(Net, self).__init__()\n        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";
        let (text, c) = to_lemur(paper, None);
        assert_eq!(c, Contract::Paper);
        assert!(text.contains("class NasCandidate(nn.Module):") && text.contains("super(NasCandidate, self)"));
        assert!(text.contains("class Net(_nas_nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):"));
        assert!(
            text.contains("return NasCandidate(chw, num_classes)") && text.contains("def supported_hyperparameters")
        );
        assert_eq!(detect(&text, None), Contract::Lemur, "the wrapped file is LEMUR code by the same rule");
        let lemur = "import torch.nn as nn\ndef supported_hyperparameters():\n    return {'lr'}\nclass Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        pass\n";
        assert_eq!(to_lemur(lemur, None), (lemur.to_string(), Contract::Lemur));
        // The new name never collides with one the code already uses.
        let (text, _) = to_lemur(&paper.replace("self.fc", "self.NasCandidate"), None);
        assert!(text.contains("class NasCandidate2(nn.Module):"), "{text}");
    }
}
