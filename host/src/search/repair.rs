//! Reading and repairing the most common failure of small generators: a
//! classifier whose first `nn.Linear` after the flatten expects a different
//! number of features than the feature maps give.
//!
//! PyTorch says `mat1 and mat2 shapes cannot be multiplied (2x2304 and
//! 12544x512)`: the flattened features are 2304 per example, the layer
//! expects 12544. [`flatten_mismatch`] reads that from a failure, and
//! [`plain_words`] says it as the Improver and the Generator should read it.
//! With `[search] repair = "flatten"`, [`repair_flatten`] rewrites exactly
//! that layer's `in_features` to the measured size before training, and the
//! record says it did.
//!
//! The second: a classifier that ends in a softmax. Cross-entropy applies its
//! own log-softmax, so the design trains on probabilities squashed twice and
//! scores several points below the same design without it (every first design
//! of the embedded model did). With `repair = ["flatten", "softmax"]`,
//! [`repair_softmax`] takes the softmax off the returned value before the
//! first evaluation, changing one line and keeping the line count.
//!
//! The third: a network not named `Net` (`class ResNet(nn.Module)`), which
//! fails the contract. With `"class_name"` in the list,
//! [`repair_class_name`] renames the one top-level module class nothing
//! else uses, before the first evaluation.
//!
//! The fourth: a pooling layer, activation or dropout `forward` calls and
//! `__init__` never defines (`self.pool3` beside `self.pool1` and
//! `self.pool2`). With `"missing_layer"` in the list,
//! [`repair_missing_layer`] takes a pooling call out (the sizes `__init__`
//! gives the head counted only the pools it defines) and has an activation
//! call its namesake, before the first evaluation. An activation, dropout
//! or flatten with no namesake, called as its function is
//! (`self.dropout(x, p=0.3)`), calls that function instead
//! (`F.dropout(x, p=0.3, training=self.training)`).
//!
//! The fifth: a layer built for another number of input channels than it
//! receives (`"channels"`, [`repair_channels`], after a failed check). The
//! sixth: a network that pools more often than its input allows (`28 -> 14
//! -> 7 -> 3 -> 1`, and the fifth pooling has nothing to pool). With
//! `"pooling"` in the list, [`repair_pooling`] takes out the pooling call
//! the traceback names and the ones after it, after a failed check; the
//! flatten repair then gives the head its size.
//!
//! The seventh: an answer that stops after `__init__` (no `forward`). With
//! `"forward"` in the list, [`repair_forward`] adds the `forward` of the
//! design the answer changes when the answer's class binds every layer it
//! calls, as the code is taken from the answer (before the novelty filter).
//!
//! The eighth: a layer built inside `forward` and called there
//! (`x = nn.Dropout(0.3)(x)`): a new module on every call, so its weights are
//! never trained and `model.eval()` never reaches it (the dropout keeps
//! dropping at test time: 69.5 % where the design scores 88 %). With
//! `"layer_in_forward"` in the list, [`repair_layer_in_forward`] binds it in
//! `__init__` and calls it by name, before the first evaluation. A
//! functional dropout that gives no `training` (`F.dropout(x, p=0.3)`)
//! drops at test time the same way; it gets `training=self.training`.
//!
//! The ninth: a design over the search's compute budget, which the
//! evaluator refuses before its epoch (the first target run's iterations 30,
//! 35, 36 and 47: 233 to 929 MFLOPs against 200). With `"budget"` in the
//! list, [`super::change::narrower`] halves the channels of every
//! convolution and batch norm, and the candidate is evaluated again.
//!
//! The tenth: a `nn.Linear` that `__init__` builds and `forward` never
//! calls, the embedded generator having dropped its line while rewriting
//! `forward` (the third target run's iterations 10, 38 and 39: a batch norm
//! sized by `self.fc1.out_features` fed the flattened maps, a network that
//! returns its hidden features). With `"uncalled"` in the list,
//! [`repair_uncalled`] adds the call where the failure shows it belongs,
//! after a failed check.
//!
//! The eleventh: a backward pass that fails because `forward` changed in
//! place a tensor the gradient needs (the fourth target run's iteration 8: a
//! residual block's `out += self.shortcut(x)` on a ReLU's output). With
//! `"inplace"` in the list, [`repair_inplace`] writes every augmented
//! assignment of a `forward` out of place and turns `inplace=True` off,
//! after a failed check.
//!
//! The twelfth: an activation on the logits `forward` returns (the fourth
//! target run's best design ended `x = self.relu5(x)`). With `"logits"`,
//! [`repair_logits`] takes it off as the softmax repair takes a softmax off.
//!
//! The thirteenth: a batch norm of the other dimensionality than what it
//! receives (an `nn.BatchNorm2d` called on the flattened features, the fifth
//! target run's iteration 3). With `"norm_dim"`, [`repair_norm_dim`] makes
//! it the other kind, after a failed check.
//!
//! The fourteenth: a residual block that saves its input (`identity = x`)
//! and calls its shortcut on its own output (`x += self.shortcut(x)`, the
//! fifth target run's iteration 14). With `"shortcut"`, [`repair_shortcut`]
//! has the shortcut take the saved input, after a failed check.
//!
//! Not a repair of a failure but of an answer that changed nothing: with
//! `"change"`, [`super::change`] makes a common change on the best design
//! itself when the generator gives it back on every retry.

use nas_plugin_api::CandidateFailure;
use serde::{Deserialize, Serialize};

/// The sizes of a flatten mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlattenMismatch {
    /// Features per example that reach the layer.
    pub features: u64,
    /// The layer's `in_features`.
    pub expected: u64,
    /// The layer's `out_features`.
    pub out_features: u64,
}

/// What a repair changed: one line, or the lines it added after one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairNote {
    /// The repair's name in `[search] repair` (`flatten`, `softmax`,
    /// `logits`, `class_name`, `missing_layer`, `layer_in_forward`, `uncalled`,
    /// `channels`, `pooling`, `budget`, `forward`, `change`).
    pub kind: String,
    /// 1-based line of the changed layer.
    pub line: usize,
    /// The line before.
    pub before: String,
    /// The line after (with the lines added after it, for `forward`).
    pub after: String,
    /// The failure the unrepaired code had (a flatten repair's; a softmax
    /// repair is made before any evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<CandidateFailure>,
}

/// The code before `notes` (applied in order) changed it.
pub fn original(notes: &[RepairNote], repaired: &str) -> String {
    notes.iter().rev().fold(repaired.to_string(), |code, note| note.original(&code))
}

/// A record's repairs: stored as one note (before the list) or a list.
pub fn notes_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RepairNote>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(RepairNote),
        Many(Vec<RepairNote>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(n)) => vec![n],
        Some(OneOrMany::Many(v)) => v,
    })
}

impl RepairNote {
    /// A note of a repair made before any evaluation (no failure behind
    /// it): line `line` (1-based) went from `before` to `after`.
    pub(super) fn before_evaluation(kind: &str, line: usize, before: String, after: String) -> Self {
        RepairNote { kind: kind.into(), line, before, after, failure: None }
    }

    /// The code before the repair, from the repaired code. A repair that
    /// added lines (a grafted `forward`) has them in `after`, after the line
    /// `before` it followed.
    pub fn original(&self, repaired: &str) -> String {
        let mut lines: Vec<&str> = repaired.split('\n').collect();
        let after: Vec<&str> = self.after.split('\n').collect();
        let at = self.line.saturating_sub(1);
        if lines.get(at..at + after.len()) == Some(&after[..]) {
            lines.splice(at..at + after.len(), self.before.split('\n'));
        }
        lines.join("\n")
    }

    /// Whether the repair was made before the novelty filter saw the code:
    /// while taking it from the answer (a grafted `forward`), or a change
    /// the search made itself on the best design.
    pub fn made_on_answer(&self) -> bool {
        self.kind == FORWARD || self.kind == super::change::CHANGE
    }
}

/// The kind of a [`repair_forward`] note.
pub const FORWARD: &str = "forward";

/// The code the novelty filter screened: the repaired code with the repairs
/// made after the screen undone.
pub fn screened(notes: &[RepairNote], repaired: &str) -> String {
    notes.iter().rev().filter(|n| !n.made_on_answer()).fold(repaired.to_string(), |code, note| note.original(&code))
}

/// The flatten mismatch a failure reports, if it is one: not when the
/// layer's input has more rows than the batch (see [`unflattened_linear`]).
pub fn flatten_mismatch(failure: &CandidateFailure) -> Option<FlattenMismatch> {
    let (rows, m) = mismatch_rows(failure)?;
    match check_batch(&failure.message) {
        Some(batch) if batch != rows => None,
        _ => Some(m),
    }
}

/// The rows of the layer's input and the mismatch, from the failure's
/// message or traceback.
fn mismatch_rows(failure: &CandidateFailure) -> Option<(u64, FlattenMismatch)> {
    [failure.message.as_str(), failure.traceback.as_str()].into_iter().find_map(parse_mismatch)
}

/// The mismatch, its rows and the check's batch, when the rows are a
/// multiple of the batch other than it: the maps reached the layer
/// unflattened.
fn unflattened(failure: &CandidateFailure) -> Option<(FlattenMismatch, u64, u64)> {
    let batch = check_batch(&failure.message)?;
    let (rows, m) = mismatch_rows(failure)?;
    (batch > 0 && rows != batch && rows % batch == 0).then_some((m, rows, batch))
}

/// A `nn.Linear` that got the feature maps unflattened: torch multiplies
/// the last dimension, so `[2, 128, 14, 14]` reaches it as 3584 rows of 14
/// features, and `in_features = 14` would "fit" and return a 4-D output.
/// Read only where the check's dummy batch is known (its message says
/// `dummy batch of shape [2, ...]`); said in plain words, with the size the
/// layer needs once the maps are flattened.
pub fn unflattened_linear(failure: &CandidateFailure) -> Option<String> {
    let (m, rows, batch) = unflattened(failure)?;
    Some(format!(
        "nn.Linear({}, {}) receives the feature maps without a flatten ({} rows of {} values for a batch of {}): \
         flatten them first (x = torch.flatten(x, 1)); its in_features must then be {} for this input size, or \
         compute it from in_shape.",
        m.expected,
        m.out_features,
        rows,
        m.features,
        batch,
        rows / batch * m.features
    ))
}

/// With the `flatten` repair: a `nn.Linear` fed the feature maps
/// unflattened ([`unflattened_linear`]) gets `x = x.flatten(1)` on a line of
/// its own before the call the traceback ends at, when that line is
/// `y = self.name(x)` (or `return self.name(x)`) with `self.name` an
/// `nn.Linear` of `__init__` and `x` a plain name. The next check then
/// measures the flattened size, which the flatten repair gives the layer.
/// One note of kind `flatten`: its line is the one before the call, `after`
/// that line and the added one.
pub fn repair_unflattened(code: &str, failure: &CandidateFailure) -> Option<(String, Vec<RepairNote>)> {
    unflattened(failure)?;
    let lines: Vec<&str> = code.split('\n').collect();
    let at = failing_forward_line(failure, code)? - 1;
    let (forward, end) = forward_span(&lines)?;
    if at <= forward || at >= end {
        return None;
    }
    let call = called_expr(lines[at]);
    let (name, arg) = self_call(call)?;
    let arg = arg.trim();
    let linear = lines.iter().any(|l| match bound_by(l) {
        (names, Some(rhs)) => names == [name.clone()] && rhs.starts_with("nn.Linear("),
        _ => false,
    });
    if !linear || !is_ident(arg) || !call.ends_with(')') {
        return None;
    }
    let added = format!("{}{arg} = {arg}.flatten(1)", &lines[at][..indent(lines[at])]);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(at, added.clone());
    let note = RepairNote {
        kind: FLATTEN.into(),
        line: at,
        before: lines[at - 1].to_string(),
        after: format!("{}\n{added}", lines[at - 1]),
        failure: Some(failure.clone()),
    };
    Some((out.join("\n"), vec![note]))
}

/// The batch of the check's forward pass, from its message.
fn check_batch(message: &str) -> Option<u64> {
    let rest = &message[message.find("dummy batch of shape [")? + 22..];
    rest[..rest.find(',')?].trim().parse().ok()
}

/// The rows of the layer's input and the mismatch, from torch's message.
fn parse_mismatch(text: &str) -> Option<(u64, FlattenMismatch)> {
    let rest = &text[text.find("mat1 and mat2 shapes cannot be multiplied (")? + 43..];
    let inner = &rest[..rest.find(')')?];
    let (a, b) = inner.split_once(" and ")?;
    let dims = |s: &str| -> Option<(u64, u64)> {
        let (x, y) = s.trim().split_once('x')?;
        Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
    };
    let ((rows, features), (expected, out_features)) = (dims(a)?, dims(b)?);
    (features != expected).then_some((rows, FlattenMismatch { features, expected, out_features }))
}

/// The mismatch in plain words, for the Improver's feedback and the
/// Generator's prompt.
pub fn plain_words(m: &FlattenMismatch) -> String {
    format!(
        "The flattened features are {} per example, but the first Linear after the flatten expects {} \
         (nn.Linear({}, {})): its in_features must be {} for this input size, or compute it from in_shape.",
        m.features, m.expected, m.expected, m.out_features, m.features
    )
}

/// The kind of a [`repair_flatten`] note.
pub const FLATTEN: &str = "flatten";

/// Rewrites the `in_features` of the layer the mismatch names: the one
/// `nn.Linear(...)` whose first argument evaluates to `expected` (integer
/// arithmetic over literals and `in_shape[i]`), or the only `nn.Linear` of
/// the file; of several, the one the failing line of `forward` calls.
/// Returns the code and the note, or `None` when the layer cannot be found
/// without guessing.
pub fn repair_flatten(
    code: &str,
    m: &FlattenMismatch,
    in_shape: [u64; 3],
    failure: &CandidateFailure,
) -> Option<(String, RepairNote)> {
    let calls = linear_calls(code);
    let names = shape_names(code);
    let value = |c: &LinearCall| eval(&c.first_arg, in_shape, &names);
    let matching: Vec<&LinearCall> = calls.iter().filter(|c| value(c) == Some(m.expected)).collect();
    let matching = called_at_failure(code, failure, matching, |c| c.arg_start);
    let call = match (matching.as_slice(), calls.as_slice()) {
        ([one], _) => *one,
        ([], [only]) if value(only).is_none() => only,
        _ => return None,
    };
    Some(rewrite_number(code, (call.arg_start, call.arg_end), m.features, FLATTEN, failure))
}

/// `code` with the bytes `span` replaced by `value`, and the note of a
/// repair of kind `kind` after `failure`.
fn rewrite_number(
    code: &str,
    span: (usize, usize),
    value: u64,
    kind: &str,
    failure: &CandidateFailure,
) -> (String, RepairNote) {
    let out = format!("{}{value}{}", &code[..span.0], &code[span.1..]);
    let line = code[..span.0].matches('\n').count() + 1;
    let line_of = |text: &str| text.lines().nth(line - 1).unwrap_or_default().to_string();
    let note = RepairNote {
        kind: kind.into(),
        line,
        before: line_of(code),
        after: line_of(&out),
        failure: Some(failure.clone()),
    };
    (out, note)
}

/// Takes a softmax off the value `forward` returns: `return F.softmax(e,
/// dim=1)` (also `torch.softmax`, `e.softmax(...)`, `self.s(e)` with
/// `self.s = nn.Softmax(...)`, `nn.Softmax(dim=1)(e)`) becomes `return e`; a
/// statement `x = <softmax of e>` right before `return x` is removed (its
/// line left blank) when `e` is `x`, else it becomes `x = e`; an
/// `nn.Softmax(...)` closing the `nn.Sequential` whose output is returned
/// becomes `nn.Identity()`. A softmax module the forward no longer calls
/// loses its definition too (a second note), so neither role reads a softmax
/// the design does not apply. Every note changes one line and the line count
/// stays. A log-softmax is left alone (cross-entropy of log-probabilities is
/// the same loss). The `forward` read is the `Net` class's (a block's
/// `forward` before it is not the network's output). `None` when the
/// returned value is not a softmax's, or when that cannot be read without
/// guessing.
pub fn repair_softmax(code: &str) -> Option<(String, Vec<RepairNote>)> {
    take_off_output(code, &SOFTMAX)
}

/// Takes an activation off the logits `forward` returns, as
/// [`repair_softmax`] takes a softmax off: `x = self.relu5(x)` right before
/// `return x` (the fourth target run's best design and 13 of the 14 designs
/// trained after it), `return torch.sigmoid(self.fc(x))`, an
/// `nn.Sequential` head closing in `nn.ReLU()`. A ReLU on the logits leaves
/// every class the network scores below zero tied at zero, and cross-entropy
/// gets no gradient from them; a sigmoid or tanh squashes them into a band.
/// The design trains, and on most seeds as well, but a seed whose logits die
/// early does not recover (the best design: 80.30 % on seed 45, 89.65 %
/// without the ReLU), and no failure shows it. The activations are those of [`ACTIVATION`]; a log-softmax or a
/// softmax are not (the second is `softmax`'s). A residual block's closing
/// `F.relu(out)` is left alone: only `Net`'s `forward` is read.
pub fn repair_logits(code: &str) -> Option<(String, Vec<RepairNote>)> {
    take_off_output(code, &ACTIVATION)
}

/// A function the returned logits should not pass through, as a repair
/// reads it.
struct Squash {
    /// The repair's name, for its notes.
    kind: &'static str,
    /// The functions, as `F.`, `nn.functional.`, `torch.nn.functional.` and
    /// `torch.` give them and as tensor methods (`e.relu()`).
    functions: &'static [&'static str],
    /// The module classes, as `nn.` and `torch.nn.` give them.
    modules: &'static [&'static str],
}

/// What [`repair_softmax`] takes off.
const SOFTMAX: Squash = Squash { kind: "softmax", functions: &["softmax"], modules: &["Softmax"] };

/// What [`repair_logits`] takes off: the activations that clip the logits
/// from below or squash them into a band.
const ACTIVATION: Squash = Squash {
    kind: "logits",
    functions: &[
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "mish",
        "softplus",
        "sigmoid",
        "tanh",
        "hardtanh",
        "hardsigmoid",
        "hardswish",
    ],
    modules: &[
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "ELU",
        "SELU",
        "CELU",
        "GELU",
        "SiLU",
        "Mish",
        "Softplus",
        "Sigmoid",
        "Tanh",
        "Hardtanh",
        "Hardsigmoid",
        "Hardswish",
    ],
};

fn take_off_output(code: &str, squash: &Squash) -> Option<(String, Vec<RepairNote>)> {
    let lines: Vec<&str> = code.split('\n').collect();
    let (forward, end) = net_forward_span(&lines)?;
    let statements: Vec<usize> = (forward + 1..end)
        .filter(|&i| {
            let t = lines[i].trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect();
    let (&ret, before) = statements.split_last()?;
    let returned = uncommented(lines[ret]).trim().strip_prefix("return ")?.trim();
    let modules = squash_modules(code, squash);
    let sequentials = sequentials_ending_in(code, squash);
    let pad = &lines[ret][..indent(lines[ret])];
    let (line, after) = if let Some(inner) = squash_of(returned, &modules, squash) {
        (ret, format!("{pad}return {inner}"))
    } else if let Some(name) = self_call(returned).filter(|(n, _)| sequentials.iter().any(|(s, _)| s == n)) {
        return identity_for(code, &sequentials, &name.0, squash.kind);
    } else if is_ident(returned) {
        let &prev = before.last()?;
        let (lhs, rhs) = uncommented(lines[prev]).trim().split_once('=')?;
        if lhs.trim() != returned || rhs.starts_with('=') {
            return None;
        }
        let rhs = rhs.trim();
        if let Some(inner) = squash_of(rhs, &modules, squash) {
            let pad = &lines[prev][..indent(lines[prev])];
            let after = if inner == returned { String::new() } else { format!("{pad}{returned} = {inner}") };
            (prev, after)
        } else if let Some((name, _)) = self_call(rhs).filter(|(n, _)| sequentials.iter().any(|(s, _)| s == n)) {
            return identity_for(code, &sequentials, &name, squash.kind);
        } else {
            return None;
        }
    } else {
        return None;
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut notes = vec![RepairNote::before_evaluation(squash.kind, line + 1, lines[line].to_string(), after.clone())];
    out[line] = after;
    // The module the changed line called, when nothing calls it now.
    for name in modules.iter().filter(|n| lines[line].contains(&format!("self.{n}("))) {
        let defines = |l: &str| {
            uncommented(l)
                .trim()
                .split_once('=')
                .is_some_and(|(lhs, rhs)| lhs.trim() == format!("self.{name}") && !rhs.starts_with('='))
        };
        let needle = format!("self.{name}");
        let definitions: Vec<usize> = (0..out.len()).filter(|&i| defines(&out[i])).collect();
        let used = (0..out.len()).any(|i| !definitions.contains(&i) && uncommented(&out[i]).contains(&needle));
        if let ([at], false) = (definitions.as_slice(), used) {
            let closed = uncommented(&out[*at]).trim_end().ends_with(')');
            if closed {
                notes.push(RepairNote::before_evaluation(squash.kind, at + 1, out[*at].clone(), String::new()));
                out[*at] = String::new();
            }
        }
    }
    Some((out.join("\n"), notes))
}

/// A repair made before any evaluation: the repaired code and its notes,
/// or `None` when it does not apply.
pub type BeforeTraining = fn(&str) -> Option<(String, Vec<RepairNote>)>;

/// The kind of a [`repair_layer_in_forward`] note.
pub const LAYER_IN_FORWARD: &str = "layer_in_forward";

/// Layers with neither weights nor a training mode: one built in `forward`
/// computes what it would bound in `__init__`, so it is left there.
const STATELESS: [&str; 27] = [
    "ReLU",
    "ReLU6",
    "GELU",
    "SiLU",
    "Mish",
    "Sigmoid",
    "Tanh",
    "LeakyReLU",
    "ELU",
    "SELU",
    "Hardswish",
    "Hardsigmoid",
    "Hardtanh",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "Flatten",
    "Unflatten",
    "Identity",
    "Upsample",
    "ZeroPad2d",
];

/// Binds each layer that `forward` builds and calls in one expression
/// (`nn.Dropout(0.3)(x)`, `nn.BatchNorm1d(128)(x)`) in `__init__`: `self.dropout
/// = nn.Dropout(0.3)` is added at the end of `__init__` and the expression
/// becomes `self.dropout(x)`. Built in `forward`, such a layer is a new
/// module on every call: its weights are never trained and `model.eval()`
/// does not reach it, so a dropout keeps dropping at test time. Layers
/// without weights or a training mode (activations, poolings) are left, as
/// are layers whose arguments name anything but numbers, `True`/`False`/
/// `None`, `in_shape` and `num_classes` (what `__init__` cannot see). One
/// note per changed line of `forward`, then one for the lines added to
/// `__init__`. A line of `forward` that binds a layer to the network
/// (`self.conv_res = nn.Conv2d(32, 32, 3)`: new weights on every call, which
/// the optimizer, made before the first call, never updates) moves to the
/// end of `__init__` whole, its line in `forward` left empty. And in every
/// `forward`, a functional dropout that gives no `training` gets
/// `training=self.training` ([`dropout_in_eval`]): like a dropout built in
/// `forward`, it kept dropping at test time. `None` when there is nothing
/// to change.
pub fn repair_layer_in_forward(code: &str) -> Option<(String, Vec<RepairNote>)> {
    let mut lines: Vec<String> = code.split('\n').map(str::to_string).collect();
    let refs: Vec<&str> = code.split('\n').collect();
    let (forward, end) = forward_span(&refs)?;
    let (init, init_end) = method_span(&refs, "__init__")?;
    let last = (init + 1..init_end).rev().find(|&i| !uncommented(refs[i]).trim().is_empty())?;
    let pad = " ".repeat((init + 1..init_end).map(|i| refs[i]).find(|l| !l.trim().is_empty()).map(indent)?);
    let mut added: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for i in forward + 1..end {
        let body = uncommented(refs[i]);
        // A layer bound to the network here (`self.conv_res =
        // nn.Conv2d(32, 32, 3)`) moves to `__init__` whole.
        if bound_layer(refs[i]).is_some() {
            added.push(format!("{pad}{}", body.trim()));
            notes.push(RepairNote::before_evaluation(LAYER_IN_FORWARD, i + 1, refs[i].to_string(), String::new()));
            lines[i] = String::new();
            continue;
        }
        let mut out = String::new();
        let mut from = 0;
        let bound_before = added.len();
        while let Some((start, class_end)) = next_layer(body, from) {
            let class = &body[body[..class_end].rfind('.').map_or(start, |d| d + 1)..class_end];
            let Some((args, tail)) = call_args(&body[class_end..]) else { break };
            let ctor_end = body.len() - tail.len();
            if STATELESS.contains(&class) || !tail.starts_with('(') || !args.iter().all(|a| constant_arg(a)) {
                out.push_str(&body[from..ctor_end]);
                from = ctor_end;
                continue;
            }
            let taken = format!("{code}\n{}", added.join("\n"));
            let name = super::change::fresh_name(&taken, &class.to_lowercase());
            added.push(format!("{pad}self.{name} = {}", &body[start..ctor_end]));
            out.push_str(&body[from..start]);
            out.push_str(&format!("self.{name}"));
            from = ctor_end;
        }
        if added.len() > bound_before {
            out.push_str(&body[from..]);
            out.push_str(&refs[i][body.len()..]);
            lines[i] = out;
        }
    }
    // A functional dropout left in training mode, in any `forward`.
    for (start, end) in forward_spans(&refs) {
        for line in &mut lines[start + 1..end] {
            if let Some(fixed) = dropout_in_eval(line) {
                *line = fixed;
            }
        }
    }
    for (i, line) in lines.iter().enumerate() {
        if line != refs[i] && !line.is_empty() {
            notes.push(RepairNote::before_evaluation(LAYER_IN_FORWARD, i + 1, refs[i].to_string(), line.clone()));
        }
    }
    notes.sort_by_key(|n| n.line);
    if notes.is_empty() {
        return None;
    }
    if added.is_empty() {
        return Some((lines.join("\n"), notes));
    }
    let before = lines[last].clone();
    notes.push(RepairNote::before_evaluation(
        LAYER_IN_FORWARD,
        last + 1,
        before.clone(),
        format!("{before}\n{}", added.join("\n")),
    ));
    for (k, line) in added.into_iter().enumerate() {
        lines.insert(last + 1 + k, line);
    }
    Some((lines.join("\n"), notes))
}

/// The functional dropouts, which drop whenever their `training` argument
/// is left at its default (`True`): `model.eval()` does not reach them.
const FUNCTIONAL_DROPOUTS: [&str; 6] =
    ["dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"];

/// `line` with `training=self.training` given to each functional dropout
/// (`F.dropout(x, p=0.3)`, also through `torch.nn.functional.` and
/// `nn.functional.`) that gives no `training` (by keyword or third
/// argument), or `None` when there is none. Recorded: the third target
/// run's `x = F.dropout(x, p=0.3)` in seven designs (80.65 %
/// to 89.67 %, a fresh 30 % of the features dropped at test time), the
/// fourth run's after the classifier (71.18 %).
fn dropout_in_eval(line: &str) -> Option<String> {
    let body = uncommented(line);
    let mut out = String::new();
    let mut from = 0;
    let mut calls: Vec<(usize, usize)> = body
        .match_indices("functional.")
        .map(|(at, p)| (at, p.len()))
        .chain(body.match_indices("F.").map(|(at, p)| (at, p.len())))
        .collect();
    calls.sort_unstable();
    for (at, prefix) in calls {
        if at < from
            || (prefix == 2
                && body[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.'))
        {
            continue;
        }
        let name_at = at + prefix;
        let name_len =
            body[name_at..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len() - name_at);
        if !FUNCTIONAL_DROPOUTS.contains(&&body[name_at..name_at + name_len]) {
            continue;
        }
        let Some((args, tail)) = call_args(&body[name_at + name_len..]) else { continue };
        let keyword = |a: &&str| a.split_once('=').is_some_and(|(k, v)| is_ident(k.trim()) && !v.starts_with('='));
        let positional = args.iter().filter(|a| !keyword(a)).count();
        let trains = args.iter().any(|a| keyword(a) && a.split_once('=').is_some_and(|(k, _)| k.trim() == "training"));
        if args.is_empty() || positional > 2 || trains {
            continue;
        }
        let close = body.len() - tail.len() - 1;
        out.push_str(&body[from..close]);
        out.push_str(if body[..close].trim_end().ends_with(',') {
            " training=self.training"
        } else {
            ", training=self.training"
        });
        from = close;
    }
    if from == 0 {
        return None;
    }
    out.push_str(&body[from..]);
    out.push_str(&line[body.len()..]);
    Some(out)
}

/// Every `def forward(` of `lines` (a network's and its blocks') and the end
/// of its body (exclusive).
fn forward_spans(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some((start, end)) = method_span(&lines[from..], "forward") {
        spans.push((from + start, from + end));
        from += start + 1;
    }
    spans
}

/// The layer a line of `forward` binds to the network, when the line is
/// just that (`self.conv_res = nn.Conv2d(32, 32, 3)`, its arguments ones
/// `__init__` can see): its constructor.
fn bound_layer(line: &str) -> Option<String> {
    let (names, rhs) = bound_by(line);
    let rhs = rhs.filter(|_| names.len() == 1)?;
    let (_, class_end) = next_layer(&rhs, 0).filter(|(start, _)| *start == 0)?;
    let (args, tail) = call_args(&rhs[class_end..])?;
    (tail.trim().is_empty() && args.iter().all(|a| constant_arg(a))).then_some(rhs)
}

/// The next `nn.Name(` (or `torch.nn.Name(`) of `body` from byte `from`, not
/// part of a longer name: the start of the prefix and the end of the name.
fn next_layer(body: &str, from: usize) -> Option<(usize, usize)> {
    let mut at = from;
    while let Some(pos) = body[at..].find("nn.") {
        let start = at + pos;
        at = start + 3;
        let start = if body[..start].ends_with("torch.") { start - 6 } else { start };
        if body[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let name_len = body[at..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len() - at);
        let name = &body[at..at + name_len];
        if name.starts_with(|c: char| c.is_ascii_uppercase()) && body[at + name_len..].starts_with('(') {
            return Some((start, at + name_len));
        }
    }
    None
}

/// Whether a layer's argument can be evaluated in `__init__`: its names
/// are keywords, `True`/`False`/`None`, `in_shape` or `num_classes`.
fn constant_arg(arg: &str) -> bool {
    let value = match arg.split_once('=') {
        Some((k, v)) if is_ident(k.trim()) && !v.starts_with('=') => v,
        _ => arg,
    };
    value
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty() && !t.starts_with(|c: char| c.is_ascii_digit()))
        .all(|t| ["True", "False", "None", "in_shape", "num_classes"].contains(&t))
}

/// Renames the network `Net` when the design calls it something else.
///
/// Small generators told to "use ResNet layers" answer `class ResNet(nn.Module)`
/// and fail the contract (`class Net`). When the code defines and assigns no
/// `Net` and exactly one top-level `nn.Module` class is used by nothing else
/// in the file (a block that the network builds is used; the network is
/// not), that class is renamed `Net` on its `class` line and in its
/// `super(X, self)` calls: one note per changed line, the line count kept.
/// `None` otherwise, and when the name appears anywhere else (a comment
/// aside), since a rename could then change what the code means.
pub fn repair_class_name(code: &str) -> Option<(String, Vec<RepairNote>)> {
    let lines: Vec<&str> = code.split('\n').collect();
    if lines.iter().any(|l| idents(uncommented(l)).any(|w| w == "Net")) {
        return None;
    }
    let module_class = |l: &str| -> Option<String> {
        let rest = uncommented(l).strip_prefix("class ")?;
        let (name, bases) = rest.split_once('(')?;
        let bases = bases.split(')').next()?;
        let module = bases.split(',').any(|b| matches!(b.trim(), "nn.Module" | "torch.nn.Module" | "Module"));
        (is_ident(name.trim()) && module).then(|| name.trim().to_string())
    };
    let classes: Vec<(usize, String)> =
        lines.iter().enumerate().filter_map(|(i, l)| module_class(l).map(|n| (i, n))).collect();
    let super_call = |l: &str, name: &str| uncommented(l).replace(' ', "").contains(&format!("super({name},"));
    let unused: Vec<&(usize, String)> = classes
        .iter()
        .filter(|(at, name)| {
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| i == *at || super_call(l, name) || !idents(uncommented(l)).any(|w| w == name.as_str()))
        })
        .collect();
    let [(at, name)] = unused.as_slice() else { return None };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut notes = Vec::new();
    for i in 0..lines.len() {
        if i == *at || super_call(lines[i], name) {
            let after = rename_ident(lines[i], name, "Net");
            notes.push(RepairNote::before_evaluation("class_name", i + 1, lines[i].to_string(), after.clone()));
            out[i] = after;
        }
    }
    Some((out.join("\n"), notes))
}

/// Torch layers without parameters the embedded generator names in
/// numbered families (`self.pool1`, `self.relu2`), with whether one changes
/// the size of what passes through it (pooling) or keeps it (an activation,
/// a dropout).
const FREE_LAYERS: [(&str, bool); 17] = [
    ("MaxPool2d", true),
    ("AvgPool2d", true),
    ("AdaptiveAvgPool2d", true),
    ("AdaptiveMaxPool2d", true),
    ("ReLU", false),
    ("ReLU6", false),
    ("LeakyReLU", false),
    ("GELU", false),
    ("SiLU", false),
    ("ELU", false),
    ("Sigmoid", false),
    ("Tanh", false),
    ("Hardswish", false),
    ("Mish", false),
    ("Dropout", false),
    ("Dropout2d", false),
    ("Identity", false),
];

/// A name without its number: `pool3` and `pool_3` are of the `pool` family.
fn family(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_')
}

/// The attributes a line binds (`self.a = ...`, `self.a, self.b = ...`,
/// `self.a: nn.Module = ...`), and the right-hand side when it binds one.
pub(super) fn bound_by(line: &str) -> (Vec<String>, Option<String>) {
    let c = uncommented(line).trim();
    // The first `=` that is not part of `==`, `<=`, `>=`, `!=` or `op=`.
    let bytes = c.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'=' && bytes.get(i + 1) != Some(&b'=') && !(i > 0 && b"=<>!+-*/%&|^@:".contains(&bytes[i - 1]))
    });
    let Some(at) = at else { return (Vec::new(), None) };
    let (lhs, rhs) = (&c[..at], c[at + 1..].trim());
    let names: Vec<String> = lhs
        .split(',')
        .filter_map(|t| {
            let t = t.trim().trim_start_matches('(').trim_end_matches(')');
            let t = t.split(':').next().unwrap_or_default().trim();
            t.strip_prefix("self.").filter(|n| is_ident(n)).map(str::to_string)
        })
        .collect();
    let rhs = (names.len() == 1).then(|| rhs.to_string());
    (names, rhs)
}

/// Whether `code` binds attributes in ways a reading of its lines cannot
/// follow (`setattr`, `add_module`, `__dict__`).
pub(super) fn binds_unreadably(code: &str) -> bool {
    ["setattr(", "add_module(", "register_module(", "__getattr__", "__dict__"].iter().any(|s| code.contains(s))
}

/// The names `lines` bind: the functions they define (`def name(`) and the
/// attributes they assign ([`bound_by`]).
fn bound_names(lines: &[&str]) -> std::collections::BTreeSet<String> {
    let mut bound = std::collections::BTreeSet::new();
    for l in lines {
        if let Some(name) = uncommented(l).trim().strip_prefix("def ").and_then(|r| r.split('(').next()) {
            bound.insert(name.trim().to_string());
        }
        bound.extend(bound_by(l).0);
    }
    bound
}

/// The parameter-free layer class `rhs` builds (`nn.MaxPool2d(2)`), with
/// whether it changes the size.
fn free_layer(rhs: &str) -> Option<(&'static str, bool)> {
    let rest = rhs.strip_prefix("torch.nn.").or_else(|| rhs.strip_prefix("nn."))?;
    let open = rest.find('(')?;
    let (_, tail) = call_args(&rest[open..])?;
    if !tail.trim().is_empty() {
        return None;
    }
    FREE_LAYERS.iter().find(|(t, _)| *t == &rest[..open]).copied()
}

/// A layer `forward` calls that `__init__` never defines, of a numbered
/// family of parameter-free layers it does define (`self.pool3(x)` beside
/// `self.pool1 = nn.MaxPool2d(2)` and `self.pool2 = nn.AvgPool2d(2)`): the
/// embedded generator writes the calls of a block and forgets one
/// definition. A pooling layer's call is taken out, whatever poolings its
/// family holds (`x = self.pool3(x)` is
/// removed, `self.pool3(e)` becomes `e`): the sizes `__init__` gives the
/// layers after it were worked out without it. An activation or a dropout
/// calls its family's layer instead (`self.relu3(x)` becomes
/// `self.relu1(x)`, the same computation). An activation, dropout or
/// flatten with no layer of its family defined, called as its functional
/// form is (`self.dropout(x, p=0.3)`: the generator mixed up
/// `nn.Dropout` and `F.dropout`), calls the functional form
/// (`F.dropout(x, p=0.3, training=self.training)`, so that it stops
/// dropping at test time as the layer does). One note per changed line, the
/// line count kept. `None` when no call is of that kind, or when the code
/// binds attributes in ways a reading of its lines cannot follow
/// (`setattr`, `add_module`, a name in quotes), or the family mixes
/// poolings with other layers, or activations of different kinds.
pub fn repair_missing_layer(code: &str) -> Option<(String, Vec<RepairNote>)> {
    if binds_unreadably(code) {
        return None;
    }
    let lines: Vec<&str> = code.split('\n').collect();
    let bound = bound_names(&lines);
    let defined: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| match bound_by(l) {
            (names, Some(rhs)) => names.into_iter().next().map(|n| (n, rhs)),
            _ => None,
        })
        .collect();
    let quoted = |name: &str| code.contains(&format!("\"{name}\"")) || code.contains(&format!("'{name}'"));
    let functional = functional_module(&lines);
    // What a missing name's call becomes: unwrapped (pooling), its
    // family's first layer (the same computation), or, with no family, the
    // functional form of its name.
    let resolve = |name: &str| -> Option<CallFix> {
        if bound.contains(name) || quoted(name) || family(name).is_empty() {
            return None;
        }
        let kin: Vec<&(String, String)> = defined.iter().filter(|(n, _)| family(n) == family(name)).collect();
        if kin.is_empty() {
            return functional_form(name, functional.as_deref()?);
        }
        let (first, rhs) = kin.first()?;
        let (class, resizes) = free_layer(rhs)?;
        let same = |r: &str| r.split_whitespace().collect::<String>() == rhs.split_whitespace().collect::<String>();
        // A pooling call is taken out, so the family's poolings may differ
        // (a max pooling beside an average one); an activation or dropout
        // call is given its kin, so the family must be one layer.
        let fits = |r: &str| match free_layer(r) {
            Some((_, true)) => resizes,
            Some((c, false)) => !resizes && c == class && same(r),
            None => false,
        };
        if !kin.iter().all(|(_, r)| fits(r)) {
            return None;
        }
        Some(if resizes { CallFix::Unwrap } else { CallFix::Kin(first.clone()) })
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut notes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let fixed = rewrite_self_calls(line, &resolve)?;
        if fixed != *line {
            notes.push(RepairNote::before_evaluation("missing_layer", i + 1, line.to_string(), fixed.clone()));
            out[i] = fixed;
        }
    }
    (!notes.is_empty()).then(|| (out.join("\n"), notes))
}

/// What [`rewrite_self_calls`] does with a call `self.name(...)`.
enum CallFix {
    /// Takes the call out: its one argument is left in its place.
    Unwrap,
    /// Calls `self.other` instead.
    Kin(String),
    /// Calls this function (`F.relu`) with the same arguments, and with
    /// `training=self.training` added when `training` is set and the call
    /// does not pass it.
    Function { name: String, training: bool },
}

/// The module prefix a design reaches `torch.nn.functional` through: `F.`
/// when it imports it as `F`, else through the `torch` or `nn` it imports.
fn functional_module(lines: &[&str]) -> Option<String> {
    [("F", "F."), ("torch", "torch.nn.functional."), ("nn", "nn.functional.")]
        .into_iter()
        .find(|(name, _)| imports(lines, name))
        .map(|(_, prefix)| prefix.to_string())
}

/// The functional forms of the parameter-free layers whose call the
/// embedded generator writes as `self.<name>(x, ...)` without defining
/// `self.<name>`: the attribute's name (or its family's) against the
/// function, and whether the function needs `training=self.training` to
/// behave as the layer does.
const FUNCTIONAL_FORMS: [(&str, &str, bool); 13] = [
    ("relu", "relu", false),
    ("relu6", "relu6", false),
    ("leaky_relu", "leaky_relu", false),
    ("gelu", "gelu", false),
    ("silu", "silu", false),
    ("elu", "elu", false),
    ("sigmoid", "sigmoid", false),
    ("tanh", "tanh", false),
    ("hardswish", "hardswish", false),
    ("mish", "mish", false),
    ("dropout", "dropout", true),
    ("dropout2d", "dropout2d", true),
    ("flatten", "flatten", false),
];

/// The call that stands in for `self.<name>(...)` ([`FUNCTIONAL_FORMS`]),
/// reached through `module` (`F.`). A flatten is `torch.flatten` (from the
/// second dimension when the call does not say: the batch stays).
fn functional_form(name: &str, module: &str) -> Option<CallFix> {
    let lower = name.to_ascii_lowercase();
    let (_, function, training) = FUNCTIONAL_FORMS
        .iter()
        .find(|(n, _, _)| *n == lower)
        .or_else(|| FUNCTIONAL_FORMS.iter().find(|(n, _, _)| *n == family(&lower)))?;
    let name = match *function {
        "flatten" => "torch.flatten".to_string(),
        f => format!("{module}{f}"),
    };
    Some(CallFix::Function { name, training: *training })
}

/// `line` with each call `self.name(...)` that `fix` resolves rewritten
/// ([`CallFix`]; a call taken out leaves its argument, which is read again:
/// it may call another). A line left as `x = x` is emptied (no statement).
/// `None` when a call to take out has other than one positional argument.
fn rewrite_self_calls(line: &str, fix: &dyn Fn(&str) -> Option<CallFix>) -> Option<String> {
    let mut fixed = line.to_string();
    let mut from = 0;
    while let Some(pos) = uncommented(&fixed)[from..].find("self.") {
        let at = from + pos;
        from = at + 1;
        if at > 0 && fixed[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = &fixed[at + "self.".len()..];
        let Some(open) = rest.find('(') else { continue };
        let name = &rest[..open];
        if !is_ident(name) {
            continue;
        }
        let Some(fix) = fix(name) else { continue };
        let call_start = at + "self.".len() + open;
        let Some((args, tail)) = call_args(&fixed[call_start..]) else { continue };
        let call_end = fixed.len() - tail.len();
        fixed = match fix {
            CallFix::Kin(kin) => format!("{}self.{kin}{}", &fixed[..at], &fixed[call_start..]),
            CallFix::Unwrap => match args.as_slice() {
                [arg] if !arg.contains('=') => {
                    from = at;
                    format!("{}{arg}{}", &fixed[..at], &fixed[call_end..])
                }
                _ => return None,
            },
            CallFix::Function { name, training } => {
                let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                // A flatten keeps the batch: from the second dimension
                // unless the call says where.
                if name == "torch.flatten" && args.len() == 1 && !args[0].contains('=') {
                    args.push("1".into());
                }
                let passes = |kw: &str| args.iter().any(|a| a.split('=').next().is_some_and(|k| k.trim() == kw));
                if training && !passes("training") {
                    args.push("training=self.training".into());
                }
                // The arguments are read again: one may call another layer.
                from = at;
                format!("{}{name}({}){}", &fixed[..at], args.join(", "), &fixed[call_end..])
            }
        };
    }
    if fixed != line {
        let statement = uncommented(&fixed).trim();
        if statement.split_once('=').is_some_and(|(l, r)| is_ident(l.trim()) && l.trim() == r.trim()) {
            fixed = String::new();
        }
    }
    Some(fixed)
}

/// The line of `code` (1-based) in `forward` where a pooling layer was fed
/// a feature map smaller than its window: torch says `Given input size:
/// (128x1x1). Calculated output size: (128x0x0). Output size is too small`,
/// and [`failing_forward_line`] names the line.
pub fn pooled_too_small_at(failure: &CandidateFailure, code: &str) -> Option<usize> {
    if !failure.message.contains("Output size is too small") {
        return None;
    }
    failing_forward_line(failure, code)
}

/// The line of `code` (1-based) a failure's traceback ends at in the
/// network: its last frame in a `forward` whose quoted source line is that
/// line of `code` (so any evaluator's file name works, and a traceback of
/// other code is not trusted).
pub fn failing_forward_line(failure: &CandidateFailure, code: &str) -> Option<usize> {
    let lines: Vec<&str> = code.split('\n').collect();
    let frames: Vec<&str> = failure.traceback.lines().collect();
    frames
        .iter()
        .enumerate()
        .filter_map(|(i, frame)| {
            let (_, rest) = frame.trim().strip_prefix("File \"")?.split_once("\", line ")?;
            let (n, func) = rest.split_once(',')?;
            let n: usize = n.trim().parse().ok()?;
            let quoted = frames.get(i + 1)?.trim();
            (func.trim() == "in forward"
                && n >= 1
                && lines.get(n - 1).is_some_and(|l| l.trim() == quoted)
                && !quoted.is_empty())
            .then_some(n)
        })
        .next_back()
}

/// Of several layers that could be the one a failure names (`candidates`,
/// each found by where in `code` its construction is, `at`), those bound to
/// an attribute the failing line of `forward` calls ([`failing_forward_line`]:
/// `x = self.fc2(x)` when `fc1` and `fc2` are both `nn.Linear(768, ...)`).
/// None of them when the traceback names no line; `candidates` unchanged
/// when there are fewer than two.
fn called_at_failure<T>(
    code: &str,
    failure: &CandidateFailure,
    candidates: Vec<T>,
    at: impl Fn(&T) -> usize,
) -> Vec<T> {
    if candidates.len() < 2 {
        return candidates;
    }
    let lines: Vec<&str> = code.split('\n').collect();
    let Some(failing) = failing_forward_line(failure, code).and_then(|n| lines.get(n - 1)) else { return Vec::new() };
    let calls = self_calls(failing);
    let binds = |c: &T| {
        let line = code[..at(c)].matches('\n').count();
        lines.get(line).is_some_and(|l| bound_by(l).0.iter().any(|n| calls.contains(n)))
    };
    candidates.into_iter().filter(|c| binds(c)).collect()
}

/// The names of the `self.name(...)` calls of a line, in order.
fn self_calls(line: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    let _ = rewrite_self_calls(line, &|name: &str| {
        names.borrow_mut().push(name.to_string());
        None
    });
    names.into_inner()
}

/// A network that pools more often than its input allows (`28 -> 14 -> 7 ->
/// 3 -> 1`, and a fifth pooling gets nothing): the pooling call at `line`
/// (1-based, in `forward`, from [`pooled_too_small_at`]) and every pooling
/// call after it in `forward` are taken out, as `missing_layer` takes one out
/// (a later pooling would get a map no larger). The head's size is then the
/// flatten repair's to fix. Pooling layers are the attributes `__init__`
/// builds as `nn.MaxPool2d`, `nn.AvgPool2d` and the like. `None` when `line`
/// holds no call of one (an `F.max_pool2d`, a pooling inside an
/// `nn.Sequential`), or a call cannot be taken out.
pub fn repair_pooling(code: &str, line: usize, failure: &CandidateFailure) -> Option<(String, Vec<RepairNote>)> {
    let lines: Vec<&str> = code.split('\n').collect();
    let (forward, end) = forward_span(&lines)?;
    let at = line.checked_sub(1).filter(|&i| i > forward && i < end)?;
    let pools: std::collections::BTreeSet<String> = lines
        .iter()
        .filter_map(|l| match bound_by(l) {
            (names, Some(rhs)) if matches!(free_layer(&rhs), Some((_, true))) => names.into_iter().next(),
            _ => None,
        })
        .collect();
    let take_out = |name: &str| pools.contains(name).then_some(CallFix::Unwrap);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut notes: Vec<RepairNote> = Vec::new();
    for i in at..end {
        let fixed = rewrite_self_calls(lines[i], &take_out)?;
        if fixed != lines[i] {
            let failure = notes.is_empty().then(|| failure.clone());
            notes.push(RepairNote {
                kind: "pooling".into(),
                line: i + 1,
                before: lines[i].to_string(),
                after: fixed.clone(),
                failure,
            });
            out[i] = fixed;
        }
    }
    // The failing line itself must be one that pools.
    (notes.first()?.line == line).then(|| (out.join("\n"), notes))
}

/// The kind of a [`repair_inplace`] note.
pub const INPLACE: &str = "inplace";

/// Whether a failure is autograd's refusal of a tensor changed in place
/// that the backward pass needed (`one of the variables needed for gradient
/// computation has been modified by an inplace operation`).
fn modified_in_place(failure: &CandidateFailure) -> bool {
    failure.message.contains("modified by an inplace operation")
}

/// A network whose backward pass fails because `forward` changed in place a
/// tensor the gradient needs: the embedded generator writes residual blocks
/// as `out = self.relu(out)` then `out += self.shortcut(x)`, and a ReLU's
/// backward needs its output as it was. Every augmented assignment in a
/// `forward` (any class's) becomes its out-of-place form (`out += e` is
/// `out = out + e`; `x *= a + b` is `x = x * (a + b)`), and every
/// `inplace=True` of the design's layers and functional calls becomes
/// `inplace=False`: the same values, computed into new tensors. One note per
/// changed line (kind [`INPLACE`]), the line count kept, the failure in the
/// first. `None` when the failure is not that one, or nothing is changed.
pub fn repair_inplace(code: &str, failure: &CandidateFailure) -> Option<(String, Vec<RepairNote>)> {
    if !modified_in_place(failure) {
        return None;
    }
    let lines: Vec<&str> = code.split('\n').collect();
    let mut in_forward = vec![false; lines.len()];
    for (start, end) in forward_spans(&lines) {
        in_forward[start + 1..end].iter_mut().for_each(|f| *f = true);
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut notes: Vec<RepairNote> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut fixed = line.to_string();
        if in_forward[i] {
            if let Some(plain) = out_of_place(line) {
                fixed = plain;
            }
        }
        let code_part = uncommented(&fixed).to_string();
        if code_part.contains("inplace=True") || code_part.contains("inplace = True") {
            let replaced =
                code_part.replace("inplace=True", "inplace=False").replace("inplace = True", "inplace = False");
            fixed = format!("{replaced}{}", &fixed[code_part.len()..]);
        }
        if fixed != *line {
            let failure = notes.is_empty().then(|| failure.clone());
            notes.push(RepairNote {
                kind: INPLACE.into(),
                line: i + 1,
                before: line.to_string(),
                after: fixed.clone(),
                failure,
            });
            out[i] = fixed;
        }
    }
    (!notes.is_empty()).then(|| (out.join("\n"), notes))
}

/// `target op= expr` as `target = target op expr` (the expression in
/// brackets unless it is one operand), keeping the line's indent, spacing
/// and comment; `None` for any other line (`**=`, `//=`, a comparison).
fn out_of_place(line: &str) -> Option<String> {
    let code = uncommented(line);
    let (comment, trail) = (&line[code.len()..], &code[code.trim_end().len()..]);
    let stmt = code.trim();
    let at = stmt.find("=")?;
    let op = stmt[..at].trim_end().chars().next_back()?;
    let target = stmt[..at].trim_end().strip_suffix(op)?.trim();
    let expr = stmt[at + 1..].trim();
    let readable = |t: &str| !t.is_empty() && t.split('.').all(is_ident);
    if !"+-*/".contains(op) || !readable(target) || expr.is_empty() || expr.starts_with('=') || !balanced(expr) {
        return None;
    }
    let operand = if one_operand(expr) { expr.to_string() } else { format!("({expr})") };
    let pad = &code[..indent(code)];
    Some(format!("{pad}{target} = {target} {op} {operand}{trail}{comment}"))
}

/// Whether `expr` is one operand (a name, a call, an index, a number): no
/// operator or space outside its brackets.
fn one_operand(expr: &str) -> bool {
    let mut depth = 0i32;
    for c in expr.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ if depth == 0 && (c.is_whitespace() || "+-*/%@<>&|^=!~".contains(c)) => return false,
            _ => {}
        }
    }
    true
}

/// The kind of a [`repair_norm_dim`] note.
pub const NORM_DIM: &str = "norm_dim";

/// A batch norm of the other dimensionality than the tensor it receives:
/// an `nn.BatchNorm2d` called on flattened features (torch: `expected 4D
/// input (got 2D input)`; the fifth target run's iteration 3 put one after
/// the flatten, where the design it changed had its first `nn.Linear`), or
/// an `nn.BatchNorm1d` called on feature maps (`expected 2D or 3D input
/// (got 4D input)`). The one batch norm of that kind that the line of
/// `forward` where the traceback ends calls becomes the other kind, its
/// arguments kept: the normalisation the design asked for, over the
/// features it has there. One note of kind [`NORM_DIM`], the line count
/// kept. Its size is then the `channels` repair's, or `uncalled`'s where
/// the line skipped the layer it was built for (that iteration's
/// `nn.BatchNorm1d(128)` gets the 3136 flattened features, and the
/// `nn.Linear(3136, 128)` that `forward` dropped is called before it).
/// `None` for another failure, an unreadable binding, or no single batch
/// norm of that kind called on that line.
pub fn repair_norm_dim(code: &str, failure: &CandidateFailure) -> Option<(String, Vec<RepairNote>)> {
    let (from, to) = if failure.message.contains("expected 4D input (got 2D input)") {
        ("BatchNorm2d", "BatchNorm1d")
    } else if failure.message.contains("expected 2D or 3D input (got 4D input)") {
        ("BatchNorm1d", "BatchNorm2d")
    } else {
        return None;
    };
    if binds_unreadably(code) {
        return None;
    }
    let lines: Vec<&str> = code.split('\n').collect();
    let failing = failing_forward_line(failure, code)?;
    let calls = self_calls(lines.get(failing - 1)?);
    let norms: Vec<String> =
        bound_calls(code, &lines, from).into_iter().map(|(name, _)| name).filter(|n| calls.contains(n)).collect();
    let [norm] = norms.as_slice() else { return None };
    // Its one binding, which builds a batch norm of that kind (the class's
    // name not the end of a longer one).
    let bindings: Vec<usize> = (0..lines.len()).filter(|&i| bound_by(lines[i]).0.contains(norm)).collect();
    let [at] = bindings.as_slice() else { return None };
    let line = lines[*at];
    let c = uncommented(line);
    let (pos, _) = c
        .match_indices(&format!("{from}("))
        .find(|(i, _)| !c[..*i].ends_with(|ch: char| ch.is_alphanumeric() || ch == '_'))?;
    let fixed = format!("{}{to}{}", &line[..pos], &line[pos + from.len()..]);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[*at] = fixed.clone();
    let note = RepairNote {
        kind: NORM_DIM.into(),
        line: at + 1,
        before: line.into(),
        after: fixed,
        failure: Some(failure.clone()),
    };
    Some((out.join("\n"), vec![note]))
}

/// The kind of a [`repair_shortcut`] note.
pub const SHORTCUT: &str = "shortcut";

/// Whether `text` reads `name` as a whole name (not `self.name`, not part
/// of a longer one).
fn reads(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Whether `line` is a plain assignment to the name `name` (`x = ...`).
fn assigns(line: &str, name: &str) -> bool {
    uncommented(line).trim().split_once('=').is_some_and(|(lhs, rhs)| lhs.trim() == name && !rhs.starts_with('='))
}

/// A residual block whose shortcut is called on the block's output instead
/// of the input it saved: its `forward(self, x)` begins `identity = x`,
/// never reads `identity` again, binds `x` anew, and the line where the
/// failed check's traceback ends adds `self.shortcut(x)` (one layer called
/// on `x`, in a sum: `x += self.shortcut(x)`, `x = x + ...`,
/// `torch.add(...)`). The fifth target run's iteration 14: the projection
/// built for the block's 128 input channels got its 256 output channels.
/// The call takes the saved name (`self.shortcut(identity)`): the sum the
/// block was written for. One note of kind [`SHORTCUT`], the line count
/// kept. `None` for any other failing line.
pub fn repair_shortcut(code: &str, failure: &CandidateFailure) -> Option<(String, Vec<RepairNote>)> {
    let lines: Vec<&str> = code.split('\n').collect();
    let at = failing_forward_line(failure, code)? - 1;
    let (start, end) = forward_spans(&lines).into_iter().find(|&(s, e)| s < at && at < e)?;
    let params = uncommented(lines[start]).trim().strip_prefix("def forward(")?.split_once(')')?.0;
    let [me, input] = params.split(',').map(str::trim).collect::<Vec<_>>()[..] else { return None };
    if me != "self" || !is_ident(input) {
        return None;
    }
    let body: Vec<usize> = (start + 1..end).filter(|&i| !uncommented(lines[i]).trim().is_empty()).collect();
    let first = *body.first()?;
    let (saved, value) = uncommented(lines[first]).trim().split_once('=')?;
    let saved = saved.trim();
    if !is_ident(saved) || saved == input || value.trim() != input {
        return None;
    }
    // The saved input is never read; the input's name is bound anew
    // before the failing line.
    if body.iter().any(|&i| i > first && reads(uncommented(lines[i]), saved))
        || !body.iter().any(|&i| i > first && i < at && assigns(lines[i], input))
    {
        return None;
    }
    let line = lines[at];
    let c = uncommented(line);
    if !(c.contains('+') || c.contains("torch.add(")) {
        return None;
    }
    let on_input = |name: &String| c.contains(&format!("self.{name}({input})"));
    let called: Vec<String> = self_calls(line).into_iter().filter(on_input).collect();
    let [name] = called.as_slice() else { return None };
    let fixed = line.replacen(&format!("self.{name}({input})"), &format!("self.{name}({saved})"), 1);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[at] = fixed.clone();
    let note = RepairNote {
        kind: SHORTCUT.into(),
        line: at + 1,
        before: line.into(),
        after: fixed,
        failure: Some(failure.clone()),
    };
    Some((out.join("\n"), vec![note]))
}

/// The kind of a [`repair_uncalled`] note.
pub const UNCALLED: &str = "uncalled";

/// A `nn.Linear` that `__init__` builds and nothing calls, which the failed
/// check shows `forward` skipped:
///
/// - a batch norm built for its `out_features` (`nn.BatchNorm1d(self.fc1.out_features)`,
///   or the number) receives another number of features (torch:
///   `running_mean should contain 3136 elements not 128`) on the line of
///   `forward` where the traceback ends, `y = self.bn(x)` (or `return
///   self.bn(x)`): `x = self.fc1(x)` is added before that line;
/// - `forward` returns rows of another width than the classes (`returned
///   shape [2, 512]; expected [2, 10]`) and the layer gives the classes
///   (`out_features` `num_classes` or its value): `x = self.fc2(x)` is
///   added before `forward`'s one `return x`.
///
/// `x` is a plain name; exactly one uncalled `nn.Linear` must fit. Its
/// `in_features` is left: where it does not match, the next check says so
/// and the flatten repair sizes it. One note of kind [`UNCALLED`]: its line
/// is the one before the added call, `after` that line and the call. `None`
/// when the failure is neither, the code binds attributes in ways a reading
/// of its lines cannot follow, or no single layer fits.
pub fn repair_uncalled(
    code: &str,
    failure: &CandidateFailure,
    in_shape: [u64; 3],
    num_classes: u64,
) -> Option<(String, Vec<RepairNote>)> {
    if binds_unreadably(code) {
        return None;
    }
    let lines: Vec<&str> = code.split('\n').collect();
    let (forward, end) = forward_span(&lines)?;
    let names = shape_names(code);
    // The nn.Linear layers nothing calls: name, out_features' text and value.
    let uncalled: Vec<(String, String, Option<u64>)> = bound_calls(code, &lines, "Linear")
        .into_iter()
        .filter(|(name, _)| !code.contains(&format!("self.{name}(")))
        .filter_map(|(name, args)| {
            let out = layer_arg(&args, "out_features", 1)?;
            let value = eval(&out.text, in_shape, &names);
            Some((name, out.text, value))
        })
        .collect();
    let (linear, at) =
        if let Some(m) = channel_mismatch(&failure.message).filter(|m| m.layer == ChannelLayer::BatchNorm) {
            // The failing line calls a batch norm built for an uncalled layer's output.
            let at = failing_forward_line(failure, code)? - 1;
            let (norm, _) = self_call(called_expr(lines.get(at)?))?;
            let (_, args) = bound_calls(code, &lines, "BatchNorm1d").into_iter().find(|(name, _)| *name == norm)?;
            let size = layer_arg(&args, "num_features", 0)?.text;
            let fits: Vec<&str> = uncalled
                .iter()
                .filter(|(name, _, value)| {
                    size == format!("self.{name}.out_features")
                        || (*value == Some(m.built_for) && size.parse() == Ok(m.built_for))
                })
                .map(|(name, _, _)| name.as_str())
                .collect();
            let [fit] = fits.as_slice() else { return None };
            (*fit, at)
        } else if returns_other_width(&failure.message, num_classes) {
            // forward returns before the layer that gives the classes.
            let fits: Vec<&str> = uncalled
                .iter()
                .filter(|(_, text, value)| text == "num_classes" || *value == Some(num_classes))
                .map(|(name, _, _)| name.as_str())
                .collect();
            let [fit] = fits.as_slice() else { return None };
            let returns: Vec<usize> =
                (forward + 1..end).filter(|&i| uncommented(lines[i]).trim_start().starts_with("return ")).collect();
            let [at] = returns.as_slice() else { return None };
            (*fit, *at)
        } else {
            return None;
        };
    if at <= forward + 1 || at >= end {
        return None;
    }
    // The name the call on that line takes (`y = self.bn(x)`, `return x`).
    let expr = called_expr(lines[at]);
    let arg = if is_ident(expr) { expr.to_string() } else { self_call(expr)?.1.trim().to_string() };
    if !is_ident(&arg) {
        return None;
    }
    let added = format!("{}{arg} = self.{linear}({arg})", &lines[at][..indent(lines[at])]);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(at, added.clone());
    let note = RepairNote {
        kind: UNCALLED.into(),
        line: at,
        before: lines[at - 1].to_string(),
        after: format!("{}\n{added}", lines[at - 1]),
        failure: Some(failure.clone()),
    };
    Some((out.join("\n"), vec![note]))
}

/// The expression a line of `forward` computes: what it returns or assigns
/// (`return self.fc(x)`, `x = self.bn(x)`), else the line.
fn called_expr(line: &str) -> &str {
    let code = uncommented(line).trim();
    code.strip_prefix("return ").or_else(|| code.split_once('=').map(|(_, r)| r)).unwrap_or(code).trim()
}

/// Each call of the layer `class` ([`layer_calls`]) on a line that binds
/// it to one attribute (`self.fc1 = nn.Linear(...)`): the attribute and the
/// call's arguments.
fn bound_calls(code: &str, lines: &[&str], class: &str) -> Vec<(String, Vec<Arg>)> {
    layer_calls(code, class)
        .into_iter()
        .filter_map(|args| {
            let open = code[..args.first()?.start].rfind(&format!("{class}("))?;
            let (names, _) = bound_by(lines.get(code[..open].matches('\n').count())?);
            let [name] = names.as_slice() else { return None };
            Some((name.clone(), args))
        })
        .collect()
}

/// Whether the check's shape failure (`returned shape [2, 512]; expected
/// [2, 10]`) says `forward` returned rows (a 2-D output) of another width
/// than the classes.
fn returns_other_width(message: &str, num_classes: u64) -> bool {
    let read = || -> Option<bool> {
        let rest = &message[message.find("returned shape [")? + 16..];
        let dims: Vec<u64> =
            rest[..rest.find(']')?].split(',').map(|d| d.trim().parse().ok()).collect::<Option<_>>()?;
        let expected = &rest[rest.find("expected [")? + 10..];
        let classes: u64 = expected[..expected.find(']')?].split(',').nth(1)?.trim().parse().ok()?;
        Some(classes == num_classes && matches!(dims.as_slice(), [_, width] if *width != num_classes))
    };
    read().unwrap_or(false)
}

/// Module attributes a grafted `forward` may read without `__init__`
/// binding them.
const MODULE_ATTRIBUTES: [&str; 1] = ["training"];

/// Module-level names a `forward` commonly reads (`F.relu`, `torch.flatten`),
/// which the answer must import too.
const MODULE_NAMES: [&str; 6] = ["F", "torch", "nn", "math", "np", "numpy"];

/// An answer that stops after `__init__`: the embedded generator, asked to
/// change a layer, sometimes writes the class up to its head's layers and
/// no `forward` (iteration 34 of the 41-iteration embedded run: all three
/// answers, the two asked again included). When the design it changes
/// (`base`) has a `forward` whose every `self.name` the answer's class
/// binds (and whose `F.`/`torch.` the answer imports), that `forward` is
/// added after the class's last line, indented as the answer's methods are:
/// the answer's `__init__` is its change, and the layers it kept are called
/// as before. One note, of kind [`FORWARD`]: its line is the class's last
/// line, `after` that line and the added method. `None` when the answer has
/// a `forward`, no `class Net` with an `__init__`, binds attributes in ways
/// a reading of its lines cannot follow (`setattr`, `add_module`), or lacks
/// one the base's `forward` reads (the base's design is then not the
/// answer's).
pub fn repair_forward(code: &str, base: &str) -> Option<(String, Vec<RepairNote>)> {
    let lines: Vec<&str> = code.split('\n').collect();
    if lines.iter().any(|l| uncommented(l).trim_start().starts_with("def forward")) || binds_unreadably(code) {
        return None;
    }
    let (class, end) = net_class_span(&lines)?;
    let body = &lines[class + 1..end];
    let init = body.iter().find(|l| uncommented(l).trim_start().starts_with("def __init__("))?;
    let method_indent = indent(init);
    let mut bound = bound_names(body);
    bound.extend(MODULE_ATTRIBUTES.iter().map(|a| a.to_string()));
    let base_lines: Vec<&str> = base.split('\n').collect();
    let (forward, mut forward_end) = forward_span(&base_lines)?;
    while forward_end > forward + 1 && base_lines[forward_end - 1].trim().is_empty() {
        forward_end -= 1;
    }
    let block = &base_lines[forward..forward_end];
    for l in block {
        let c = uncommented(l);
        let mut from = 0;
        while let Some(pos) = c[from..].find("self.") {
            let at = from + pos;
            from = at + "self.".len();
            if c[..at].chars().next_back().is_some_and(|ch| ch.is_alphanumeric() || ch == '_' || ch == '.') {
                continue;
            }
            let name: String = c[from..].chars().take_while(|ch| ch.is_alphanumeric() || *ch == '_').collect();
            if !bound.contains(&name) {
                return None;
            }
        }
        for name in MODULE_NAMES {
            if module_read(c, name) && !imports(&lines, name) {
                return None;
            }
        }
    }
    let shift = method_indent as isize - indent(block[0]) as isize;
    let reindent = |l: &str| -> Option<String> {
        if l.trim().is_empty() {
            return Some(String::new());
        }
        match shift {
            s if s >= 0 => Some(format!("{}{l}", " ".repeat(s as usize))),
            s => l.strip_prefix(&" ".repeat((-s) as usize)).map(str::to_string),
        }
    };
    let added = block.iter().map(|l| reindent(l)).collect::<Option<Vec<String>>>()?;
    let last = (class..end).rev().find(|&i| !lines[i].trim().is_empty())?;
    let after = format!("{}\n\n{}", lines[last], added.join("\n"));
    let note = RepairNote::before_evaluation(FORWARD, last + 1, lines[last].to_string(), after.clone());
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[last] = after;
    Some((out.join("\n"), vec![note]))
}

/// Whether `line` reads the module-level name `name` (`F.relu(x)`, not
/// `self.F` or `x.F`).
fn module_read(line: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    line.match_indices(&format!("{name}.")).any(|(at, _)| !line[..at].chars().next_back().is_some_and(word))
}

/// Whether the top level of `lines` imports `name` (`import torch`,
/// `import torch.nn.functional as F`, `from torch import nn`).
pub(super) fn imports(lines: &[&str], name: &str) -> bool {
    lines.iter().any(|l| {
        let c = uncommented(l).trim_end();
        if indent(c) != 0 {
            return false;
        }
        let names = if let Some(rest) = c.strip_prefix("import ") {
            rest
        } else if let Some((_, rest)) = c.strip_prefix("from ").and_then(|r| r.split_once(" import ")) {
            rest
        } else {
            return false;
        };
        names.trim_matches(|ch| ch == '(' || ch == ')').split(',').any(|part| {
            let mut words = part.split_whitespace();
            let first = words.next().unwrap_or_default();
            let bound = match (words.next(), words.next()) {
                (Some("as"), Some(alias)) => alias,
                _ => first.split('.').next().unwrap_or_default(),
            };
            bound == name
        })
    })
}

/// The identifiers of a line, in order (string contents included).
fn idents(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

/// `line` with each whole-word `from` (outside a comment) written `to`.
fn rename_ident(line: &str, from: &str, to: &str) -> String {
    let code = uncommented(line);
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut i = 0;
    while let Some(found) = code[i..].find(from) {
        let start = i + found;
        let end = start + from.len();
        out.push_str(&code[i..start]);
        let whole = !word(code[..start].chars().next_back()) && !word(code[end..].chars().next());
        out.push_str(if whole { to } else { from });
        i = end;
    }
    out.push_str(&code[i..]);
    out.push_str(&line[code.len()..]);
    out
}

/// A line without its trailing comment (a `#` outside quotes).
pub(super) fn uncommented(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The first `def forward(` of `lines` and the end of its body (exclusive):
/// the first non-blank line indented no deeper than the `def`.
pub(super) fn forward_span(lines: &[&str]) -> Option<(usize, usize)> {
    method_span(lines, "forward")
}

/// The top-level `class Net` line of `lines` and the end of its body
/// (exclusive): the next non-blank, non-comment line at the left margin.
fn net_class_span(lines: &[&str]) -> Option<(usize, usize)> {
    let class = lines.iter().position(|l| {
        let c = uncommented(l);
        indent(c) == 0 && (c.trim_end().starts_with("class Net(") || c.trim_end() == "class Net:")
    })?;
    let end = (class + 1..lines.len())
        .find(|&i| !uncommented(lines[i]).trim().is_empty() && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    Some((class, end))
}

/// The `forward` of the `Net` class ([`net_class_span`]) and the end of its
/// body (exclusive), as [`forward_span`] reads one; without a `class Net`,
/// the only `forward` of `lines`. `None` when there is none, or several and
/// no `Net`.
fn net_forward_span(lines: &[&str]) -> Option<(usize, usize)> {
    let Some((class, body_end)) = net_class_span(lines) else {
        let spans = forward_spans(lines);
        return (spans.len() == 1).then(|| spans[0]);
    };
    let (start, end) = method_span(&lines[class + 1..body_end], "forward")?;
    Some((class + 1 + start, class + 1 + end))
}

/// The first `def {name}(` of `lines` and the end of its body (exclusive),
/// as [`forward_span`] reads `forward`.
fn method_span(lines: &[&str], name: &str) -> Option<(usize, usize)> {
    let def = format!("def {name}(");
    let start = lines.iter().position(|l| l.trim_start().starts_with(&def))?;
    let def_indent = indent(lines[start]);
    let end = (start + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent(lines[i]) <= def_indent)
        .unwrap_or(lines.len());
    Some((start, end))
}

pub(super) fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether `s` reads as a Python identifier (letters, digits and `_`, not
/// starting with a digit).
pub(crate) fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// `self.name(arg)`: the name and the argument's text.
fn self_call(expr: &str) -> Option<(String, String)> {
    let rest = expr.strip_prefix("self.")?;
    let open = rest.find('(')?;
    let name = &rest[..open];
    if !is_ident(name) {
        return None;
    }
    let (args, tail) = call_args(&rest[open..])?;
    (tail.trim().is_empty() && args.len() == 1).then(|| (name.to_string(), args[0].to_string()))
}

/// Splits `(a, b=c)` at its top-level commas: the arguments' texts and what
/// follows the closing bracket; `None` when the bracket is never closed.
pub(crate) fn call_args(s: &str) -> Option<(Vec<&str>, &str)> {
    if !s.starts_with('(') {
        return None;
    }
    let mut depth = 0i32;
    let mut start = 1;
    let mut args = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    let last = s[start..i].trim();
                    if !last.is_empty() {
                        args.push(last);
                    }
                    return Some((args, &s[i + 1..]));
                }
            }
            ',' if depth == 1 => {
                args.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The argument `squash` is applied to, when `expr` is one of its calls:
/// a function's (`F.relu(e)`, `torch.softmax(e, 1)`), a module's the
/// network binds (`self.relu5(e)`, `modules`), a module's built on the spot
/// (`nn.ReLU()(e)`) or a tensor method's (`e.softmax(dim=1)`).
fn squash_of(expr: &str, modules: &[String], squash: &Squash) -> Option<String> {
    for f in squash.functions {
        for prefix in ["F.", "torch.", "nn.functional.", "torch.nn.functional."] {
            let Some(rest) = expr.strip_prefix(prefix).and_then(|r| r.strip_prefix(f)) else { continue };
            let Some((args, tail)) = call_args(rest) else { continue };
            return (tail.trim().is_empty() && !args.is_empty() && !args[0].contains('=')).then(|| args[0].to_string());
        }
    }
    for m in squash.modules {
        for prefix in ["nn.", "torch.nn."] {
            let Some(rest) = expr.strip_prefix(prefix).and_then(|r| r.strip_prefix(m)) else { continue };
            let Some((_, applied)) = call_args(rest) else { continue };
            let (args, tail) = call_args(applied)?;
            return (tail.trim().is_empty() && args.len() == 1 && !args[0].contains('=')).then(|| args[0].to_string());
        }
    }
    if let Some((name, arg)) = self_call(expr) {
        return modules.contains(&name).then_some(arg);
    }
    // `e.softmax(dim=1)`: the receiver is everything before the last
    // top-level `.softmax(`.
    for f in squash.functions {
        let Some(at) = expr.rfind(&format!(".{f}(")) else { continue };
        let Some((_, tail)) = call_args(&expr[at + 1 + f.len()..]) else { continue };
        let receiver = &expr[..at];
        if tail.trim().is_empty() && !receiver.is_empty() && balanced(receiver) {
            return Some(receiver.to_string());
        }
    }
    None
}

pub(super) fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// Whether `text` builds one of `squash`'s modules (`nn.ReLU(inplace=True)`).
fn builds_squash(text: &str, squash: &Squash) -> bool {
    let text = text.trim();
    let class = text.strip_prefix("torch.nn.").or_else(|| text.strip_prefix("nn."));
    class.is_some_and(|c| squash.modules.iter().any(|m| c.strip_prefix(m).is_some_and(|r| r.starts_with('('))))
}

/// Attributes bound to one of `squash`'s modules: `self.name =
/// nn.Softmax(...)`.
fn squash_modules(code: &str, squash: &Squash) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let (lhs, rhs) = l.trim().split_once('=')?;
            let name = lhs.trim().strip_prefix("self.")?;
            (is_ident(name) && !rhs.starts_with('=') && builds_squash(rhs, squash)).then(|| name.to_string())
        })
        .collect()
}

/// Attributes bound to an `nn.Sequential(...)` whose last module is one of
/// `squash`'s, with the byte span of that last module's text.
fn sequentials_ending_in(code: &str, squash: &Squash) -> Vec<(String, (usize, usize))> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("nn.Sequential(") {
        let at = from + pos;
        from = at + 1;
        let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
        let Some((lhs, _)) = code[line_start..at].split_once('=') else { continue };
        let Some(name) = lhs.trim().strip_prefix("self.") else { continue };
        if !is_ident(name) {
            continue;
        }
        let open = at + "nn.Sequential".len();
        let Some((args, _)) = call_args(&code[open..]) else { continue };
        let Some(last) = args.last() else { continue };
        if !builds_squash(last, squash) {
            continue;
        }
        // `args` borrow from `code[open..]`: their offsets are the span.
        let start = last.as_ptr() as usize - code.as_ptr() as usize;
        out.push((name.to_string(), (start, start + last.len())));
    }
    out
}

fn identity_for(
    code: &str,
    sequentials: &[(String, (usize, usize))],
    name: &str,
    kind: &str,
) -> Option<(String, Vec<RepairNote>)> {
    let mut spans = sequentials.iter().filter(|(n, _)| n == name);
    let (_, (start, end)) = spans.next()?;
    if spans.next().is_some() {
        return None;
    }
    let out = format!("{}nn.Identity(){}", &code[..*start], &code[*end..]);
    let line = code[..*start].matches('\n').count() + 1;
    let line_of = |text: &str| text.split('\n').nth(line - 1).unwrap_or_default().to_string();
    // One line changes, or the note could not give the code back.
    if code[*start..*end].contains('\n') {
        return None;
    }
    let note = RepairNote::before_evaluation(kind, line, line_of(code), line_of(&out));
    Some((out, vec![note]))
}

/// One `nn.Linear(` call: its first argument's text and byte span.
#[derive(Debug)]
struct LinearCall {
    first_arg: String,
    arg_start: usize,
    arg_end: usize,
}

fn linear_calls(code: &str) -> Vec<LinearCall> {
    layer_calls(code, "Linear")
        .into_iter()
        .filter_map(|args| {
            let first = args.into_iter().next()?;
            matches!(first.keyword.as_deref(), None | Some("in_features")).then_some(LinearCall {
                first_arg: first.text,
                arg_start: first.start,
                arg_end: first.end,
            })
        })
        .collect()
}

/// The `out_features` of the first `nn.Linear` `code` builds, when it is
/// written as a number.
pub(crate) fn first_linear_out_features(code: &str) -> Option<u64> {
    let args = layer_calls(code, "Linear").into_iter().next()?;
    let out = args
        .iter()
        .find(|a| a.keyword.as_deref() == Some("out_features"))
        .or_else(|| args.get(1).filter(|a| a.keyword.is_none()))?;
    out.text.parse().ok()
}

/// One argument of a layer's constructor call: its keyword, its text and
/// the byte span of the text.
#[derive(Debug, Clone)]
pub(super) struct Arg {
    pub(super) keyword: Option<String>,
    pub(super) text: String,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// A layer's argument by keyword, else by position among the positional ones.
pub(super) fn layer_arg(args: &[Arg], keyword: &str, position: usize) -> Option<Arg> {
    args.iter()
        .find(|a| a.keyword.as_deref() == Some(keyword))
        .or_else(|| args.iter().filter(|a| a.keyword.is_none()).nth(position))
        .cloned()
}

/// Every call of the layer `name` (`nn.Conv2d(`, `torch.nn.Conv2d(` or an
/// imported `Conv2d(`; not `LazyConv2d(`) with its arguments, split at the
/// commas at depth 0.
pub(super) fn layer_calls(code: &str, name: &str) -> Vec<Vec<Arg>> {
    let opening = format!("{name}(");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(&opening) {
        let open = from + pos + opening.len();
        from = open;
        let before = code[..open - opening.len()].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut depth = 0i32;
        let mut args = Vec::new();
        let mut arg_start = open;
        let mut closed = false;
        for (i, c) in code[open..].char_indices() {
            let at = open + i;
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth > 0 => depth -= 1,
                ')' | ']' | '}' | ',' if depth == 0 => {
                    args.extend(arg_at(code, arg_start, at));
                    arg_start = at + 1;
                    if c != ',' {
                        closed = true;
                        break;
                    }
                }
                _ => {}
            }
        }
        if closed {
            out.push(args);
        }
    }
    out
}

/// The argument between bytes `start` and `end` of `code`, `None` when empty.
fn arg_at(code: &str, start: usize, end: usize) -> Option<Arg> {
    let raw = &code[start..end];
    let (keyword, value_start) = match raw.find('=') {
        Some(eq)
            if !raw[eq + 1..].starts_with('=')
                && raw[..eq].trim().chars().all(|c| c.is_alphanumeric() || c == '_')
                && !raw[..eq].trim().is_empty() =>
        {
            (Some(raw[..eq].trim().to_string()), start + eq + 1)
        }
        _ => (None, start),
    };
    let text = &code[value_start..end];
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let lead = text.len() - text.trim_start().len();
    Some(Arg { keyword, text: trimmed.to_string(), start: value_start + lead, end: value_start + lead + trimmed.len() })
}

/// A layer that receives another number of channels than it was built for,
/// as torch reports it: a convolution ("weight of size [64, 32, 3, 3],
/// expected input[2, 64, 14, 14] to have 32 channels, but got 64 channels
/// instead") or a batch norm ("running_mean should contain 64 elements not
/// 128": the input has 64 channels, the layer was built for 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMismatch {
    /// `Conv2d` or `BatchNorm`.
    pub layer: ChannelLayer,
    /// The channels the layer was built for.
    pub built_for: u64,
    /// The channels it receives.
    pub receives: u64,
    /// A convolution's `out_channels` (from its weight's size).
    pub out_channels: Option<u64>,
}

/// The kind of layer of a [`ChannelMismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelLayer {
    /// `nn.Conv2d`.
    Conv2d,
    /// `nn.BatchNorm2d` or `nn.BatchNorm1d`.
    BatchNorm,
}

/// The channel mismatch a failure message reports, if it is one.
pub fn channel_mismatch(message: &str) -> Option<ChannelMismatch> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &message[message.find(marker)? + marker.len()..];
        let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let m = if message.contains("channels, but got") {
        // Only plain convolutions: with groups the weight counts a group's channels.
        if !message.contains("groups=1,") {
            return None;
        }
        ChannelMismatch {
            layer: ChannelLayer::Conv2d,
            built_for: number_after("to have")?,
            receives: number_after("but got")?,
            out_channels: number_after("weight of size ["),
        }
    } else if message.contains("running_mean should contain") {
        ChannelMismatch {
            layer: ChannelLayer::BatchNorm,
            built_for: number_after("elements not")?,
            receives: number_after("should contain")?,
            out_channels: None,
        }
    } else {
        return None;
    };
    (m.built_for != m.receives).then_some(m)
}

/// Rewrites the input channels of the layer a channel mismatch names, to
/// the channels it receives: the one `nn.Conv2d` whose `in_channels` and
/// `out_channels` evaluate to the sizes torch reports (integer arithmetic
/// over literals and `in_shape`), or the one `nn.BatchNorm2d`/`BatchNorm1d`
/// built for the reported size. When several match, the one the failing
/// line of `forward` calls (the traceback's, [`failing_forward_line`]) is
/// taken. Its output keeps its size, so nothing after it changes. `None`
/// when no single layer matches.
pub fn repair_channels(
    code: &str,
    m: &ChannelMismatch,
    in_shape: [u64; 3],
    failure: &CandidateFailure,
) -> Option<(String, RepairNote)> {
    let names = shape_names(code);
    let value = |a: Option<&Arg>| a.and_then(|a| eval(&a.text, in_shape, &names));
    let arg = layer_arg;
    let candidates: Vec<Arg> = match m.layer {
        ChannelLayer::Conv2d => layer_calls(code, "Conv2d")
            .into_iter()
            .filter(|args| {
                value(arg(args, "in_channels", 0).as_ref()) == Some(m.built_for)
                    && m.out_channels.is_none_or(|o| value(arg(args, "out_channels", 1).as_ref()) == Some(o))
            })
            .filter_map(|args| arg(&args, "in_channels", 0))
            .collect(),
        ChannelLayer::BatchNorm => ["BatchNorm2d", "BatchNorm1d"]
            .into_iter()
            .flat_map(|name| layer_calls(code, name))
            .filter_map(|args| arg(&args, "num_features", 0))
            .filter(|a| value(Some(a)) == Some(m.built_for))
            .collect(),
    };
    let candidates = called_at_failure(code, failure, candidates, |a| a.start);
    let [a] = candidates.as_slice() else { return None };
    Some(rewrite_number(code, (a.start, a.end), m.receives, "channels", failure))
}

/// The names a line `C, H, W = in_shape` (or `(c, h, w) = in_shape`,
/// `_, H, W = in_shape`) binds to the input's dimensions, by index; a name
/// bound twice is left out (its value is not known without running the code).
pub(super) fn shape_names(code: &str) -> Vec<(String, usize)> {
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut twice = Vec::new();
    for line in code.lines() {
        let Some((lhs, rhs)) = line.split_once('=') else { continue };
        if rhs.trim() != "in_shape" {
            continue;
        }
        let lhs = lhs.trim().trim_start_matches('(').trim_end_matches(')');
        let parts: Vec<&str> = lhs.split(',').map(str::trim).collect();
        let ident = |p: &str| {
            p.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        if parts.len() != 3 || !parts.iter().all(|p| ident(p)) {
            continue;
        }
        for (i, p) in parts.iter().enumerate() {
            if *p != "_" {
                if names.iter().any(|(n, _)| n == p) {
                    twice.push(p.to_string());
                }
                names.push((p.to_string(), i));
            }
        }
    }
    names.retain(|(n, _)| !twice.contains(n));
    names
}

/// Evaluates integer arithmetic: literals, `+ - * // /` (exact), brackets,
/// `in_shape[0..2]` (also `in_shape[-3..-1]`) and the `names` bound to its
/// dimensions.
pub(super) fn eval(expr: &str, in_shape: [u64; 3], names: &[(String, usize)]) -> Option<u64> {
    let tokens = tokenize(expr, names)?;
    let mut p = Parser { tokens, pos: 0, in_shape };
    let v = p.expr()?;
    (p.pos == p.tokens.len() && v >= 0).then_some(v as u64)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(i64),
    Shape(usize),
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(s: &str, names: &[(String, usize)]) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Num(s[start..i].replace('_', "").parse().ok()?));
        } else if s[i..].starts_with("in_shape[") {
            let rest = &s[i + "in_shape[".len()..];
            let close = rest.find(']')?;
            let idx: i64 = rest[..close].trim().parse().ok()?;
            let idx = match idx {
                0..=2 => idx as usize,
                -3..=-1 => (idx + 3) as usize,
                _ => return None,
            };
            out.push(Tok::Shape(idx));
            i += "in_shape[".len() + close + 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let (_, idx) = names.iter().find(|(n, _)| n == &s[start..i])?;
            out.push(Tok::Shape(*idx));
        } else if s[i..].starts_with("//") {
            out.push(Tok::Op("//"));
            i += 2;
        } else {
            out.push(match c {
                '+' => Tok::Op("+"),
                '-' => Tok::Op("-"),
                '*' => Tok::Op("*"),
                '/' => Tok::Op("/"),
                '(' => Tok::Open,
                ')' => Tok::Close,
                _ => return None,
            });
            i += 1;
        }
    }
    Some(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    in_shape: [u64; 3],
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn expr(&mut self) -> Option<i64> {
        let mut v = self.term()?;
        while let Some(Tok::Op(op @ ("+" | "-"))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.term()?;
            v = if op == "+" { v.checked_add(r)? } else { v.checked_sub(r)? };
        }
        Some(v)
    }

    fn term(&mut self) -> Option<i64> {
        let mut v = self.atom()?;
        while let Some(Tok::Op(op @ ("*" | "/" | "//"))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.atom()?;
            v = match op {
                "*" => v.checked_mul(r)?,
                "//" => v.checked_div_euclid(r)?,
                _ if r != 0 && v % r == 0 => v / r,
                _ => return None,
            };
        }
        Some(v)
    }

    fn atom(&mut self) -> Option<i64> {
        match self.peek().cloned()? {
            Tok::Num(n) => {
                self.pos += 1;
                Some(n)
            }
            Tok::Shape(i) => {
                self.pos += 1;
                i64::try_from(self.in_shape[i]).ok()
            }
            Tok::Open => {
                self.pos += 1;
                let v = self.expr()?;
                (self.peek() == Some(&Tok::Close)).then_some(())?;
                self.pos += 1;
                Some(v)
            }
            Tok::Op("-") => {
                self.pos += 1;
                Some(-self.atom()?)
            }
            Tok::Op(_) | Tok::Close => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Iteration 4 of the second target run: a dropout built in `forward`,
    /// after the classifier (69.54 %).
    const DROPOUT_IN_FORWARD: &str = "import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super(Net, self).__init__()\n        C, H, W = in_shape\n        self.conv1 = nn.Conv2d(C, 32, kernel_size=3, padding=1)\n        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)\n        self.fc1 = nn.Linear(6272, 128)\n        self.fc2 = nn.Linear(128, num_classes)\n\n    def forward(self, x):\n        x = self.pool1(torch.relu(self.conv1(x)))\n        x = x.view(x.size(0), -1)\n        x = nn.ReLU()(self.fc1(x))\n        x = self.fc2(x)\n\n        x = nn.Dropout(0.3)(x)  # Add dropout\n\n        return x\n";

    #[test]
    fn a_layer_built_in_forward_is_bound_in_init_and_an_activation_is_left() {
        let (fixed, notes) = repair_layer_in_forward(DROPOUT_IN_FORWARD).expect("repaired");
        let changed: Vec<(&str, usize, &str, &str)> =
            notes.iter().map(|n| (n.kind.as_str(), n.line, n.before.trim(), n.after.trim())).collect();
        assert_eq!(
            changed,
            [
                (LAYER_IN_FORWARD, 19, "x = nn.Dropout(0.3)(x)  # Add dropout", "x = self.dropout(x)  # Add dropout"),
                (
                    LAYER_IN_FORWARD,
                    11,
                    "self.fc2 = nn.Linear(128, num_classes)",
                    "self.fc2 = nn.Linear(128, num_classes)\n        self.dropout = nn.Dropout(0.3)"
                ),
            ]
        );
        assert!(fixed.contains("        x = nn.ReLU()(self.fc1(x))\n"), "an activation is left: {fixed}");
        assert_eq!(screened(&notes, &fixed), DROPOUT_IN_FORWARD, "the notes undo it");
        assert_eq!(repair_layer_in_forward(&fixed), None, "nothing left to bind");
    }

    #[test]
    fn a_layer_bound_to_the_network_in_forward_moves_to_init() {
        // Recorded (the fourth target run's iteration 13): a residual block
        // built inside forward.
        let code = include_str!("testdata/layers_bound_in_forward.py");
        let (fixed, notes) = repair_layer_in_forward(code).expect("repaired");
        let changed: Vec<(usize, &str, &str)> =
            notes.iter().map(|n| (n.line, n.before.trim(), n.after.trim())).collect();
        assert_eq!(
            changed,
            [
                (32, "self.conv_res = nn.Conv2d(32, 32, kernel_size=3, padding=1)", ""),
                (33, "self.bn_res = nn.BatchNorm2d(32)", ""),
                (34, "self.relu_res = nn.ReLU()", ""),
                (
                    23,
                    "self.bn_fc = nn.BatchNorm1d(256)  # Apply batch normalization after the first nn.Linear",
                    "self.bn_fc = nn.BatchNorm1d(256)  # Apply batch normalization after the first nn.Linear\n        self.conv_res = nn.Conv2d(32, 32, kernel_size=3, padding=1)\n        self.bn_res = nn.BatchNorm2d(32)\n        self.relu_res = nn.ReLU()"
                ),
            ]
        );
        assert_eq!(screened(&notes, &fixed), code, "the notes undo it");
        assert_eq!(repair_layer_in_forward(&fixed), None, "nothing left to bind");
        // Sized by what forward computes: left.
        let sized = code.replace("nn.BatchNorm2d(32)", "nn.BatchNorm2d(x.size(1))");
        assert!(repair_layer_in_forward(&sized)
            .is_some_and(|(f, _)| f.contains("        self.bn_res = nn.BatchNorm2d(x.size(1))\n")));
    }

    #[test]
    fn a_functional_dropout_left_in_training_mode_gets_the_networks_mode() {
        // Recorded (the fourth target run's iteration 24, 71.18 %): a
        // dropout after the classifier that drops at test time too.
        let code = include_str!("testdata/functional_dropout_at_test_time.py");
        let (fixed, notes) = repair_layer_in_forward(code).expect("repaired");
        let changed: Vec<(&str, usize, &str, &str)> =
            notes.iter().map(|n| (n.kind.as_str(), n.line, n.before.trim(), n.after.trim())).collect();
        assert_eq!(
            changed,
            [(LAYER_IN_FORWARD, 50, "x = F.dropout(x, p=0.3)", "x = F.dropout(x, p=0.3, training=self.training)")]
        );
        assert_eq!(screened(&notes, &fixed), code, "the notes undo it");
        assert_eq!(repair_layer_in_forward(&fixed), None, "nothing left to do");
        for (line, after) in [
            (
                "x = torch.nn.functional.dropout2d(x, 0.25)  # maps",
                Some("x = torch.nn.functional.dropout2d(x, 0.25, training=self.training)  # maps"),
            ),
            ("x = nn.functional.alpha_dropout(x, p=0.1,)", Some("x = nn.functional.alpha_dropout(x, p=0.1, training=self.training)")),
            (
                "x = self.fc(F.dropout(x, p=0.5)) + nn.functional.dropout(y)",
                Some("x = self.fc(F.dropout(x, p=0.5, training=self.training)) + nn.functional.dropout(y, training=self.training)"),
            ),
            ("x = F.dropout(x, p=0.5, training=self.training)", None),
            ("x = F.dropout(x, 0.5, self.training)", None),
            ("x = F.dropout(x, p=0.5, training=True)  # meant", None),
            ("x = MyF.dropout(x, p=0.5)", None),
            ("x = F.relu(x)  # F.dropout(x, p=0.5) was here", None),
        ] {
            assert_eq!(dropout_in_eval(line).as_deref(), after, "{line}");
        }
        // In a block's forward too, and a dropout bound in forward beside it.
        let block = format!(
            "{code}\nclass Block(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x):\n        return F.dropout(x, 0.2)\n"
        );
        let (fixed, notes) = repair_layer_in_forward(&block).expect("repaired");
        assert!(fixed.ends_with("        return F.dropout(x, 0.2, training=self.training)\n"), "{fixed}");
        assert_eq!(notes.len(), 2);
        assert_eq!(screened(&notes, &fixed), block, "the notes undo it");
        let both = DROPOUT_IN_FORWARD.replace("x = self.fc2(x)", "x = self.fc2(F.dropout(x, p=0.2))");
        let (fixed, notes) = repair_layer_in_forward(&both).expect("repaired");
        assert!(fixed.contains("x = self.fc2(F.dropout(x, p=0.2, training=self.training))"), "{fixed}");
        assert!(
            fixed.contains("x = self.dropout(x)  # Add dropout") && fixed.contains("self.dropout = nn.Dropout(0.3)")
        );
        assert_eq!(screened(&notes, &fixed), both, "the notes undo it");
    }

    #[test]
    fn nested_and_prefixed_layers_are_bound_and_ones_sized_in_forward_are_left() {
        let nested = DROPOUT_IN_FORWARD.replace(
            "x = nn.Dropout(0.3)(x)  # Add dropout",
            "x = nn.BatchNorm1d(num_classes)(torch.nn.Dropout(p=0.5)(x))",
        );
        let (fixed, notes) = repair_layer_in_forward(&nested).expect("repaired");
        assert!(fixed.contains("        x = self.batchnorm1d(self.dropout(x))\n"), "{fixed}");
        assert!(
            fixed.contains("        self.batchnorm1d = nn.BatchNorm1d(num_classes)\n        self.dropout = torch.nn.Dropout(p=0.5)\n"),
            "{fixed}"
        );
        assert_eq!(screened(&notes, &fixed), nested);
        // A name already taken gets a number.
        let taken = nested.replace(
            "self.fc2 = nn.Linear(128, num_classes)",
            "self.fc2 = nn.Linear(128, num_classes)\n        self.dropout = nn.Dropout(0.1)",
        );
        let (fixed, _) = repair_layer_in_forward(&taken).expect("repaired");
        assert!(fixed.contains("self.dropout2 = torch.nn.Dropout(p=0.5)"), "{fixed}");
        // Sized by what forward sees, or only a built name: left.
        let sized = DROPOUT_IN_FORWARD.replace("nn.Dropout(0.3)(x)", "nn.Linear(x.size(1), 10)(x)");
        assert_eq!(repair_layer_in_forward(&sized), None);
        let bound = DROPOUT_IN_FORWARD.replace("x = nn.Dropout(0.3)(x)", "d = nn.Dropout(0.3)");
        assert_eq!(repair_layer_in_forward(&bound), None, "built, not called in the expression");
    }

    /// Recorded: the embedded generator told to "use ResNet layers".
    const RESNET: &str = "import torch\nimport torch.nn as nn\n\nclass ResNet(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super(ResNet, self).__init__()  # a ResNet\n        self.fc = nn.Linear(4, num_classes)\n\n    def forward(self, x):\n        return self.fc(x)\n";

    /// Recorded (embedded model): `self.pool2` called, never defined; the
    /// head's `64 * 7 * 7` counts the two pools `__init__` defines.
    const MISSING_POOL2: &str = include_str!("testdata/missing_pool2.py");
    /// Recorded: `self.pool3` and `self.pool4` called, neither defined.
    const MISSING_POOL3_POOL4: &str = include_str!("testdata/missing_pool3_pool4.py");

    #[test]
    fn a_pooling_layer_called_but_never_defined_is_taken_out_of_forward() {
        let (fixed, notes) = repair_missing_layer(MISSING_POOL2).expect("repaired");
        assert_eq!(notes.len(), 1, "{notes:?}");
        let n = &notes[0];
        assert_eq!((n.kind.as_str(), n.before.trim(), n.after.as_str()), ("missing_layer", "x = self.pool2(x)", ""));
        assert_eq!(fixed.lines().nth(n.line - 1), Some(""));
        assert_eq!(fixed.lines().count(), MISSING_POOL2.lines().count(), "the line count stays");
        assert_eq!(original(&notes, &fixed), MISSING_POOL2, "the note gives the code back");
        // What is left calls only what __init__ defines.
        assert!(!fixed.contains("self.pool2") && fixed.contains("x = self.pool3(x)"));
        let (fixed, notes) = repair_missing_layer(MISSING_POOL3_POOL4).expect("repaired");
        let removed: Vec<&str> = notes.iter().map(|n| n.before.trim()).collect();
        assert_eq!(removed, ["x = self.pool3(x)", "x = self.pool4(x)"]);
        assert!(!fixed.contains("self.pool3") && !fixed.contains("self.pool4"), "{fixed}");
        // Nothing to repair in the repaired code, nor in a design without the slip.
        assert_eq!(repair_missing_layer(&fixed), None);
        let defined = MISSING_POOL2.replace(
            "        self.relu2 = nn.ReLU()\n",
            "        self.relu2 = nn.ReLU()\n        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)\n",
        );
        assert_eq!(repair_missing_layer(&defined), None);
    }

    /// The best design of the 38-iteration embedded run (its pools: a max
    /// pooling, two average ones) with the `self.pool3` call three of the
    /// run's failures added to it (`'Net' object has no attribute 'pool3'`).
    fn mixed_pools_missing_pool3() -> String {
        let best = include_str!("../../../docs/results/embedded-run/run-38/best.py");
        best.replacen("        x = self.relu3(x)\n", "        x = self.relu3(x)\n        x = self.pool3(x)\n", 1)
    }

    /// The best design of the 38-iteration embedded run and an answer to
    /// "Add nn.Dropout(0.3) right before the first nn.Linear" written as
    /// the embedded generator wrote iteration 34's: the class up to its
    /// head's layers, the dropout defined, no `forward`.
    fn answer_without_forward() -> (&'static str, String) {
        let best = include_str!("../../../docs/results/embedded-run/run-38/best.py");
        let init = &best[..best.find("\n    def forward").expect("a forward")];
        let answer = init.replacen(
            "        self.fc1 = nn.Linear",
            "        self.dropout = nn.Dropout(0.3)\n        self.fc1 = nn.Linear",
            1,
        );
        (best, format!("{answer}\n"))
    }

    #[test]
    fn an_answer_without_forward_gets_the_forward_of_the_design_it_changes() {
        let (best, answer) = answer_without_forward();
        let (fixed, notes) = repair_forward(&answer, best).expect("grafted");
        let forward = &best[best.find("    def forward").expect("a forward")..];
        assert_eq!(fixed, format!("{}\n\n{}\n\n", answer.trim_end(), forward.trim_end()));
        let [note] = notes.as_slice() else { panic!("one note: {notes:?}") };
        assert_eq!((note.kind.as_str(), note.made_on_answer(), note.failure.as_ref()), (FORWARD, true, None));
        assert_eq!(note.before, "        self.fc2 = nn.Linear(2048, num_classes)");
        assert_eq!(fixed.split('\n').nth(note.line - 1), Some(note.before.as_str()));
        // The answer is what the note undoes; the novelty filter's code keeps
        // the graft.
        assert_eq!(original(&notes, &fixed), answer);
        assert_eq!(screened(&notes, &fixed), fixed);
        // Once there is a forward, nothing is added.
        assert_eq!(repair_forward(&fixed, best), None);
    }

    #[test]
    fn a_recorded_answer_without_forward_gets_its_best_designs_forward() {
        // Recorded (the embedded run at dbf3dc0, iteration 8, all three
        // answers alike): the best design's class with a dropout added,
        // ending after `__init__`.
        let (answer, best) = (include_str!("testdata/no_forward.py"), include_str!("testdata/no_forward_base.py"));
        let (fixed, notes) = repair_forward(answer, best).expect("grafted");
        let forward = &best[best.find("    def forward").expect("a forward")..];
        assert!(fixed.ends_with(forward.trim_end()), "{fixed}");
        assert_eq!(notes[0].before, "        self.dropout = nn.Dropout(0.3)");
        assert_eq!(original(&notes, &fixed), answer);
    }

    #[test]
    fn a_forward_is_added_inside_the_class_indented_as_its_methods() {
        let (best, answer) = answer_without_forward();
        // Code after the class stays after it.
        let tail = format!("{answer}\n\nif __name__ == '__main__':\n    print(Net((1, 28, 28), 10))\n");
        let (fixed, _) = repair_forward(&tail, best).expect("grafted");
        let at = |s: &str| fixed.find(s).expect(s);
        assert!(
            at("self.dropout = ") < at("    def forward(self, x):") && at("return x") < at("if __name__"),
            "{fixed}"
        );
        // A base indented by two spaces: its forward is moved to the
        // answer's method indent, its body kept deeper (valid Python).
        let two = best.replace("    ", "  ");
        let (fixed, _) = repair_forward(&answer, &two).expect("grafted");
        assert!(fixed.contains("\n    def forward(self, x):\n      x = self.conv1(x)\n"), "{fixed}");
    }

    #[test]
    fn no_forward_is_added_when_the_answer_lacks_what_it_reads() {
        let (best, answer) = answer_without_forward();
        // The answer renamed a layer the base's forward calls.
        assert_eq!(repair_forward(&answer.replace("self.conv3 =", "self.conv3a ="), best), None);
        // The base's forward reads F and the answer does not import it.
        let functional = best.replace("x = self.relu5(x)", "x = F.relu(x)");
        assert_eq!(repair_forward(&answer, &functional), None);
        let imported =
            answer.replacen("import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n", 1);
        assert!(repair_forward(&imported, &functional).is_some());
        // Layers bound where a reading of the lines cannot follow them; no
        // class Net; a base without forward.
        assert_eq!(repair_forward(&format!("{answer}        setattr(self, 'fc3', None)\n"), best), None);
        assert_eq!(repair_forward(&answer.replace("class Net(", "class Model("), best), None);
        assert_eq!(repair_forward(&answer, &answer), None);
    }

    /// Recorded (the embedded run at e1cc1b1, iterations 5 and 13): eight
    /// poolings of a 28x28 input, as eight layers and as one layer called
    /// eight times, with the check's tracebacks.
    const POOLED_TOO_OFTEN: (&str, &str) =
        (include_str!("testdata/pooled_too_often.py"), include_str!("testdata/pooled_too_often.traceback"));
    const POOLED_TOO_OFTEN_ONE_LAYER: (&str, &str) = (
        include_str!("testdata/pooled_too_often_one_layer.py"),
        include_str!("testdata/pooled_too_often_one_layer.traceback"),
    );

    fn too_small(traceback: &str) -> CandidateFailure {
        let mut f = CandidateFailure::new(
            "check",
            nas_plugin_api::FailureKind::Runtime,
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: Given input size: (128x1x1). Calculated output size: (128x0x0). Output size is too small",
        );
        f.traceback = traceback.to_string();
        f
    }

    #[test]
    fn the_pooling_that_gets_a_one_pixel_map_and_every_later_one_are_taken_out() {
        let cases = [
            (POOLED_TOO_OFTEN, 81, 4, ["pool1", "pool2", "pool3", "pool4"]),
            (POOLED_TOO_OFTEN_ONE_LAYER, 96, 5, ["pool1", "pool2", "pool2", "pool2"]),
        ];
        for ((code, traceback), line, taken, kept) in cases {
            let failure = too_small(traceback);
            assert_eq!(pooled_too_small_at(&failure, code), Some(line));
            let (fixed, notes) = repair_pooling(code, line, &failure).expect("repaired");
            assert_eq!(notes.len(), taken, "{notes:?}");
            assert_eq!(notes[0].line, line);
            assert!(notes.iter().all(|n| n.kind == "pooling" && n.after.is_empty() && n.before.contains("pool")));
            assert_eq!(notes[0].failure.as_ref(), Some(&failure), "the first note keeps the failure");
            assert!(notes[1..].iter().all(|n| n.failure.is_none()));
            assert_eq!(fixed.lines().count(), code.lines().count(), "the line count stays");
            assert_eq!(original(&notes, &fixed), code, "the notes give the code back");
            // The four poolings before it stay, in order; __init__ is untouched.
            let forward = fixed.split("def forward").nth(1).expect("a forward");
            let left: Vec<&str> = forward
                .lines()
                .filter_map(|l| l.trim().strip_prefix("x = self.")?.strip_suffix("(x)"))
                .filter(|n| n.starts_with("pool"))
                .collect();
            assert_eq!(left, kept);
            assert_eq!(fixed.split("def forward").next(), code.split("def forward").next());
        }
    }

    #[test]
    fn a_pooling_repair_needs_the_size_error_a_line_of_forward_and_a_pooling_call_there() {
        let (code, traceback) = POOLED_TOO_OFTEN;
        let failure = too_small(traceback);
        // Another message; a traceback whose quoted line is not the code's.
        let other =
            CandidateFailure { message: "the forward pass raised RuntimeError: boom".into(), ..failure.clone() };
        assert_eq!(pooled_too_small_at(&other, code), None);
        assert_eq!(
            pooled_too_small_at(&failure, &code.replace("x = self.pool5(x)", "x = self.pool5(x)  # five")),
            None
        );
        // A line that is not a pooling call, a line outside forward.
        let conv = code.lines().position(|l| l.trim() == "x = self.conv5(x)").expect("the conv5 line") + 1;
        assert_eq!(repair_pooling(code, conv, &failure), None);
        assert_eq!(repair_pooling(code, 12, &failure), None);
        // F.max_pool2d is not a layer the repair takes out.
        let functional = code.replace("x = self.pool5(x)", "x = F.max_pool2d(x, 2)");
        assert_eq!(repair_pooling(&functional, 81, &failure), None);
    }

    #[test]
    fn a_pooling_call_is_taken_out_when_its_family_mixes_max_and_average_pooling() {
        let mixed = mixed_pools_missing_pool3();
        let code = mixed.as_str();
        let (fixed, notes) = repair_missing_layer(code).expect("repaired");
        let removed: Vec<&str> = notes.iter().map(|n| n.before.trim()).collect();
        assert_eq!(removed, ["x = self.pool3(x)"]);
        assert_eq!(original(&notes, &fixed), code);
        assert!(!fixed.contains("self.pool3") && fixed.contains("x = self.pool2(x)"), "{fixed}");
        // A family that mixes a pooling with an activation is left.
        let odd = code.replace("self.pool5 = nn.AvgPool2d", "self.pool5 = nn.ReLU()  #");
        assert_eq!(repair_missing_layer(&odd), None);
    }

    #[test]
    fn a_layer_called_as_its_functional_form_and_never_defined_calls_the_function() {
        // Recorded (the third target run's iteration 10): forward calls
        // `self.dropout(x, p=0.3)`, no dropout defined, and skips fc1.
        let code = include_str!("testdata/functional_dropout.py");
        let (fixed, notes) = repair_missing_layer(code).expect("repaired");
        let changed: Vec<(usize, &str, &str)> =
            notes.iter().map(|n| (n.line, n.before.trim(), n.after.trim())).collect();
        assert_eq!(changed, [(45, "x = self.dropout(x, p=0.3)", "x = F.dropout(x, p=0.3, training=self.training)")]);
        assert_eq!(original(&notes, &fixed), code);
        // The line count is kept, so the recorded traceback still names the
        // batch norm's line: the uncalled repair then calls fc1 before it.
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 3136 elements not 128";
        let failure = CandidateFailure {
            traceback: include_str!("testdata/functional_dropout.traceback").to_string(),
            ..runtime(message)
        };
        let (called, _) = repair_uncalled(&fixed, &failure, [1, 28, 28], 10).expect("fc1 called");
        let order: Vec<&str> = called.lines().map(str::trim).filter(|l| l.starts_with("x = ")).collect();
        let at = order.iter().position(|l| *l == "x = self.fc1(x)").expect("fc1 called");
        assert_eq!(order[at + 1..at + 3], ["x = self.bn_fc(x)", "x = F.dropout(x, p=0.3, training=self.training)"]);

        // Reached through what the design imports; a training flag passed
        // is kept; activations and a flatten take their functions.
        let net = |imports: &str, line: &str| {
            format!("{imports}\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n    def forward(self, x):\n        {line}\n        return self.fc(x)\n")
        };
        let after = |imports: &str, line: &str| {
            let code = net(imports, line);
            repair_missing_layer(&code)
                .map(|(_, notes)| notes.iter().map(|n| n.after.trim().to_string()).collect::<Vec<_>>())
        };
        let torch = "import torch\nimport torch.nn as nn";
        assert_eq!(
            after(torch, "x = self.dropout(x, 0.2)").unwrap_or_default(),
            ["x = torch.nn.functional.dropout(x, 0.2, training=self.training)"]
        );
        assert_eq!(
            after("from torch import nn", "x = self.relu_1(x)").unwrap_or_default(),
            ["x = nn.functional.relu(x)"]
        );
        assert_eq!(after(torch, "x = self.drop(x, training=self.training)"), None, "not a name of the table");
        assert_eq!(
            after(torch, "x = self.dropout(x, p=0.5, training=self.training)").unwrap_or_default(),
            ["x = torch.nn.functional.dropout(x, p=0.5, training=self.training)"]
        );
        assert_eq!(
            after(torch, "x = self.flatten(self.gelu(x))").unwrap_or_default(),
            ["x = torch.flatten(torch.nn.functional.gelu(x), 1)"]
        );
        assert_eq!(after(torch, "x = self.flatten(x, 1)").unwrap_or_default(), ["x = torch.flatten(x, 1)"]);
        // relu6 is its own function, not the sixth relu.
        assert_eq!(after(torch, "x = self.relu6(x)").unwrap_or_default(), ["x = torch.nn.functional.relu6(x)"]);
        // A family with a layer defined calls that layer, as before.
        let kin = net(torch, "x = self.relu2(x)").replace("self.fc =", "self.relu1 = nn.ReLU()\n        self.fc =");
        assert!(repair_missing_layer(&kin).is_some_and(|(f, _)| f.contains("x = self.relu1(x)")));
        // Without an import to reach the functions through, left.
        assert_eq!(after("import numpy as np", "x = self.dropout(x, p=0.3)"), None);
    }

    #[test]
    fn an_activation_called_but_never_defined_calls_its_namesake_and_doubtful_cases_are_left() {
        let net = "class Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv1 = nn.Conv2d(1, 8, 3)\n        self.relu1 = nn.ReLU()\n        self.pool1 = nn.MaxPool2d(2)\n        self.fc = nn.Linear(8 * 13 * 13, num_classes)\n\n    def forward(self, x):\n        x = self.pool1(self.relu2(self.conv1(x)))  # block 1\n        return self.fc(self.pool(x).flatten(1))\n";
        let (fixed, notes) = repair_missing_layer(net).expect("repaired");
        let lines: Vec<(usize, &str)> = notes.iter().map(|n| (n.line, n.after.trim())).collect();
        assert_eq!(
            lines,
            [(10, "x = self.pool1(self.relu1(self.conv1(x)))  # block 1"), (11, "return self.fc(x.flatten(1))")]
        );
        assert_eq!(original(&notes, &fixed), net);
        // A family of mixed activations, a layer with parameters, a name set
        // by `setattr` or in quotes, an nn.Module method: left as they are.
        let mixed =
            net.replace("self.relu1 = nn.ReLU()", "self.relu1 = nn.LeakyReLU(0.1)\n        self.relu3 = nn.ReLU()");
        assert!(
            repair_missing_layer(&mixed).is_some_and(|(f, _)| f.contains("self.relu2(")),
            "relu2 left, pool repaired"
        );
        let learned = "    def forward(self, x):\n        x = self.conv2(x)\n        self.conv1 = nn.Conv2d(1, 8, 3)\n";
        assert_eq!(repair_missing_layer(learned), None);
        assert_eq!(repair_missing_layer(&format!("{net}\nsetattr(self, 'relu2', nn.ReLU())\n")), None);
        assert_eq!(repair_missing_layer(&net.replace("# block 1", "# see 'relu2' and 'pool'")), None);
        let method = "        self.relu1 = nn.ReLU()\n        n = sum(p.numel() for p in self.parameters())\n";
        assert_eq!(repair_missing_layer(method), None);
    }

    #[test]
    fn a_network_named_otherwise_is_renamed_net_on_its_class_and_super_lines() {
        let (fixed, notes) = repair_class_name(RESNET).expect("repaired");
        assert!(fixed.contains("class Net(nn.Module):") && fixed.contains("super(Net, self).__init__()  # a ResNet"));
        assert_eq!(
            notes.iter().map(|n| (n.kind.as_str(), n.line)).collect::<Vec<_>>(),
            [("class_name", 4), ("class_name", 6)]
        );
        assert_eq!(fixed.lines().count(), RESNET.lines().count());
        assert_eq!(original(&notes, &fixed), RESNET);
        // Blocks the network builds are used; the one class nothing uses is the network.
        let blocks = "class Block(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n\nclass Model(torch.nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.b = Block(8)\n";
        let (fixed, notes) = repair_class_name(blocks).expect("repaired");
        assert!(fixed.contains("class Net(torch.nn.Module):") && fixed.contains("class Block(nn.Module):"), "{fixed}");
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn a_design_with_a_net_or_no_single_candidate_is_left_alone() {
        assert_eq!(repair_class_name(&RESNET.replace("ResNet", "Net")), None, "already a Net");
        assert_eq!(repair_class_name(&format!("{RESNET}\nNet = ResNet\n")), None, "Net assigned");
        let two = format!("{RESNET}\nclass Other(nn.Module):\n    pass\n");
        assert_eq!(repair_class_name(&two), None, "two networks: which one is a guess");
        assert_eq!(repair_class_name(&format!("{RESNET}\nmodel = ResNet((1, 28, 28), 10)\n")), None, "used elsewhere");
        assert_eq!(repair_class_name("class Helper:\n    pass\n"), None, "not a module");
    }
    use nas_plugin_api::FailureKind;

    fn failure(msg: &str) -> CandidateFailure {
        CandidateFailure::new("check", FailureKind::Runtime, msg)
    }

    const NET: &str = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(in_shape[0], 64, 3, padding=1)\n        self.fc1 = nn.Linear(64 * 14 * 14, 512)\n        self.fc2 = nn.Linear(512, num_classes)\n\n    def forward(self, x):\n        return self.fc2(self.fc1(self.conv(x).flatten(1)))\n";

    #[test]
    fn the_sizes_are_read_from_torchs_message() {
        let f = failure("RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x2304 and 12544x512)");
        let m = flatten_mismatch(&f).expect("a mismatch");
        assert_eq!(m, FlattenMismatch { features: 2304, expected: 12544, out_features: 512 });
        let words = plain_words(&m);
        assert!(words.contains("2304") && words.contains("12544"), "{words}");
        assert_eq!(flatten_mismatch(&failure("name 'nn' is not defined")), None);
        assert_eq!(unflattened_linear(&f), None, "no dummy batch in the message: nothing to compare");
    }

    /// Iteration 48 of the kept target run: the feature maps reached the
    /// head unflattened, and the flatten repair used to set in_features to
    /// 14, which passed the matmul and returned [2, 128, 14, 10].
    #[test]
    fn a_linear_fed_unflattened_maps_is_not_a_flatten_size_to_repair() {
        let f = failure(
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: mat1 and mat2 shapes \
             cannot be multiplied (3584x14 and 256x10)",
        );
        assert_eq!(flatten_mismatch(&f), None);
        let words = unflattened_linear(&f).expect("said in plain words");
        assert!(words.contains("without a flatten") && words.contains("25088"), "{words}");
        let flattened = failure(
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: mat1 and mat2 shapes \
             cannot be multiplied (2x2304 and 12544x512)",
        );
        assert_eq!(flatten_mismatch(&flattened).map(|m| m.features), Some(2304));
        assert_eq!(unflattened_linear(&flattened), None);
    }

    #[test]
    fn a_flatten_is_added_before_a_linear_fed_unflattened_maps() {
        let code = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(1, 128, 3, padding=1)\n        self.pool = nn.MaxPool2d(2)\n        self.fc2 = nn.Linear(256, num_classes)\n\n    def forward(self, x):\n        x = self.pool(self.conv(x))\n        x = self.fc2(x)\n        return x\n";
        let traceback = "Traceback (most recent call last):\n  File \"/s/check.py\", line 171, in <module>\n    out = model(dummy)\n  File \"/s/candidate.py\", line 12, in forward\n    x = self.fc2(x)\n  File \"/t/linear.py\", line 134, in forward\n    return F.linear(input, self.weight, self.bias)\nRuntimeError: mat1 and mat2 shapes cannot be multiplied (3584x14 and 256x10)\n";
        let mut f = failure(
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: mat1 and mat2 shapes \
             cannot be multiplied (3584x14 and 256x10)",
        );
        f.traceback = traceback.into();
        let (fixed, notes) = repair_unflattened(code, &f).expect("repaired");
        assert!(
            fixed.contains("        x = self.pool(self.conv(x))\n        x = x.flatten(1)\n        x = self.fc2(x)"),
            "{fixed}"
        );
        assert_eq!((notes.len(), notes[0].kind.as_str(), notes[0].line), (1, "flatten", 11));
        assert_eq!(original(&notes, &fixed), code, "the note undoes it");
        // A call of a layer that is not a Linear, or a traceback of other code, is left alone.
        assert_eq!(repair_unflattened(&code.replace("nn.Linear(256", "nn.Bilinear(256"), &f), None);
        assert_eq!(repair_unflattened(&code.replace("x = self.fc2(x)", "y = self.fc2(x)"), &f), None);
    }

    #[test]
    fn the_layer_whose_size_matches_is_repaired_and_nothing_else() {
        let m = FlattenMismatch { features: 50176, expected: 12544, out_features: 512 };
        let f = failure("mat1 and mat2 shapes cannot be multiplied (2x50176 and 12544x512)");
        let (code, note) = repair_flatten(NET, &m, [1, 28, 28], &f).expect("repaired");
        assert!(code.contains("self.fc1 = nn.Linear(50176, 512)"), "{code}");
        assert!(code.contains("self.fc2 = nn.Linear(512, num_classes)"), "{code}");
        assert_eq!(note.line, 7);
        assert!(note.before.contains("64 * 14 * 14") && note.after.contains("50176"));
        assert_eq!(code.lines().count(), NET.lines().count());
        assert_eq!(note.original(&code), NET);
    }

    #[test]
    fn sizes_written_with_in_shape_and_keywords_are_evaluated() {
        let code = "self.fc = nn.Linear(in_features=in_shape[0] * (28 // 2) * 14, out_features=10)";
        let m = FlattenMismatch { features: 784, expected: 196, out_features: 10 };
        let (out, _) = repair_flatten(code, &m, [1, 28, 28], &failure("")).expect("repaired");
        assert_eq!(out, "self.fc = nn.Linear(in_features=784, out_features=10)");
    }

    #[test]
    fn sizes_written_with_the_names_in_shape_is_unpacked_to_are_evaluated() {
        // Recorded: three 2x2 poolings leave 3x3, the head assumed two.
        let code = "        C, H, W = in_shape\n        self.conv3 = nn.Conv2d(128, 256, kernel_size=3, padding=1)\n        self.fc1 = nn.Linear(256 * (H // 4) * (W // 4), 512)\n        self.fc2 = nn.Linear(512, 128)\n        self.fc3 = nn.Linear(128, num_classes)\n";
        let m = FlattenMismatch { features: 2304, expected: 12544, out_features: 512 };
        let (out, note) = repair_flatten(code, &m, [1, 28, 28], &failure("")).expect("repaired");
        assert!(out.contains("self.fc1 = nn.Linear(2304, 512)"), "{out}");
        assert!(out.contains("nn.Linear(512, 128)") && out.contains("nn.Linear(128, num_classes)"), "{out}");
        assert_eq!(note.line, 3);
        // A name bound twice is not known; neither is one never bound.
        let rebound = format!("{code}        C, H, W = (3, 32, 32)\n        H, W, C = in_shape\n");
        assert!(repair_flatten(&rebound, &m, [1, 28, 28], &failure("")).is_none());
        assert_eq!(eval("K * 2", [1, 28, 28], &shape_names(code)), None);
        assert_eq!(eval("C * H * W", [1, 28, 28], &shape_names(code)), Some(784));
    }

    #[test]
    fn an_ambiguous_file_is_left_alone() {
        let code = "a = nn.Linear(100, 10)\nb = nn.Linear(100, 10)\nc = nn.LazyLinear(10)\n";
        let m = FlattenMismatch { features: 50, expected: 100, out_features: 10 };
        assert!(repair_flatten(code, &m, [1, 28, 28], &failure("")).is_none());
        let unknown = "a = nn.Linear(n_feat, 10)\nb = nn.Linear(self.k, 10)\n";
        assert!(repair_flatten(unknown, &m, [1, 28, 28], &failure("")).is_none());
        let single = "self.head = nn.Linear(self.n, 10)\n";
        let (out, _) = repair_flatten(single, &m, [1, 28, 28], &failure("")).expect("the only layer");
        assert_eq!(out, "self.head = nn.Linear(50, 10)\n");
    }

    const SOFTMAX_NET: &str = "import torch.nn as nn\nimport torch.nn.functional as F\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n        self.softmax = nn.Softmax(dim=1)\n\n    def forward(self, x):\n        x = self.fc(x.flatten(1))\n        x = self.softmax(x)\n        return x\n";

    #[test]
    fn a_softmax_on_the_returned_value_is_taken_off_in_one_line() {
        // The embedded model's first design, every run: a module applied
        // last, then returned.
        // The call goes, and so does the module nothing calls now: neither
        // role is shown a softmax the design does not apply.
        let (out, notes) = repair_softmax(SOFTMAX_NET).expect("repaired");
        let lines: Vec<(usize, &str, &str)> =
            notes.iter().map(|n| (n.line, n.before.trim(), n.after.as_str())).collect();
        assert_eq!(lines, [(12, "x = self.softmax(x)", ""), (8, "self.softmax = nn.Softmax(dim=1)", "")]);
        assert!(notes.iter().all(|n| n.kind == "softmax" && n.failure.is_none()));
        assert!(!out.contains("oftmax"), "{out}");
        assert_eq!(out.lines().count(), SOFTMAX_NET.lines().count());
        assert_eq!(original(&notes, &out), SOFTMAX_NET);
        // Taken off, the design no longer ends in a softmax.
        assert!(repair_softmax(&out).is_none(), "{out}");
        // A module still called elsewhere keeps its definition.
        let shared = SOFTMAX_NET
            .replace("        x = self.fc(x.flatten(1))\n", "        x = self.fc(self.softmax(x).flatten(1))\n");
        let (_, notes) = repair_softmax(&shared).expect("repaired");
        assert_eq!(notes.len(), 1, "{notes:?}");

        let cases = [
            ("        return F.softmax(self.fc(x), dim=1)", "        return self.fc(x)"),
            ("        return torch.softmax(x, 1)", "        return x"),
            ("        return self.fc(x).softmax(dim=-1)", "        return self.fc(x)"),
            (
                "        return self.softmax(self.fc2(F.relu(self.fc1(x))))",
                "        return self.fc2(F.relu(self.fc1(x)))",
            ),
        ];
        for (ret, want) in cases {
            let code = format!("class Net(nn.Module):\n    def __init__(self):\n        self.softmax = nn.Softmax(dim=1)\n\n    def forward(self, x):\n        x = self.body(x)\n{ret}\n\n\nif __name__ == '__main__':\n    pass\n");
            let (out, notes) = repair_softmax(&code).unwrap_or_else(|| panic!("{ret}"));
            assert_eq!(notes[0].after, want);
            assert_eq!(original(&notes, &out), code);
        }
        let renamed = "    def forward(self, x):\n        x = self.fc(x)\n        probs = F.softmax(x, dim=1)  # probabilities\n\n        return probs\n";
        let (out, _) = repair_softmax(renamed).expect("an assignment before the return");
        assert!(out.contains("        probs = x\n"), "{out}");
    }

    #[test]
    fn a_sequential_closing_in_a_softmax_gets_an_identity() {
        let code = "class Net(nn.Module):\n    def __init__(self):\n        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())\n        self.head = nn.Sequential(\n            nn.Flatten(),\n            nn.Linear(5408, 10),\n            nn.Softmax(dim=1),\n        )\n\n    def forward(self, x):\n        x = self.features(x)\n        return self.head(x)\n";
        let (out, notes) = repair_softmax(code).expect("repaired");
        let [note] = notes.as_slice() else { panic!("{notes:?}") };
        assert_eq!(note.line, 7);
        assert_eq!(note.after, "            nn.Identity(),");
        assert!(out.contains("nn.Linear(5408, 10),\n            nn.Identity(),\n        )"), "{out}");
        assert_eq!(note.original(&out), code);
    }

    #[test]
    fn what_is_not_a_softmax_on_the_output_is_left_alone() {
        let left = [
            // A log-softmax gives cross-entropy the same loss.
            "    def forward(self, x):\n        return F.log_softmax(self.fc(x), dim=1)\n",
            // Attention: a softmax inside, not on the output.
            "    def forward(self, x):\n        w = F.softmax(self.att(x), dim=1)\n        x = self.fc(x * w)\n        return x\n",
            // A softmax two statements before the return.
            "    def forward(self, x):\n        x = F.softmax(x, dim=1)\n        x = self.fc(x)\n        return x\n",
            // No forward at all.
            "x = F.softmax(y, dim=1)\n",
            // A module that is not a softmax.
            "        self.act = nn.ReLU()\n    def forward(self, x):\n        return self.act(x)\n",
        ];
        for code in left {
            assert!(repair_softmax(code).is_none(), "{code}");
        }
    }

    #[test]
    fn an_activation_on_the_logits_is_taken_off() {
        // The fourth target run's best design (iteration 27): `x =
        // self.relu5(x)` after the classifier, then `return x`.
        let code = include_str!("testdata/relu_on_logits.py");
        let (out, notes) = repair_logits(code).expect("repaired");
        let lines: Vec<(usize, &str, &str)> =
            notes.iter().map(|n| (n.line, n.before.trim(), n.after.as_str())).collect();
        assert_eq!(
            lines,
            [(49, "x = self.relu5(x)", ""), (27, "self.relu5 = nn.ReLU()  # Apply a final ReLU activation", "")]
        );
        assert!(notes.iter().all(|n| n.kind == "logits" && n.failure.is_none()));
        assert!(!out.contains("relu5") && out.contains("x = self.relu4(x)"), "{out}");
        assert_eq!(out.lines().count(), code.lines().count());
        assert_eq!(original(&notes, &out), code);
        assert!(repair_logits(&out).is_none(), "{out}");
        // Neither repair takes the other's function off.
        assert!(repair_softmax(code).is_none());
        assert!(repair_logits(SOFTMAX_NET).is_none());

        let cases = [
            ("        return torch.sigmoid(self.fc(x))", "        return self.fc(x)"),
            ("        return F.relu(self.fc2(x), inplace=True)", "        return self.fc2(x)"),
            ("        return nn.functional.leaky_relu(x, 0.1)", "        return x"),
            ("        return self.fc(x).relu()", "        return self.fc(x)"),
            ("        return torch.tanh(x)", "        return x"),
            ("        return nn.ReLU()(self.fc(x))", "        return self.fc(x)"),
            ("        return self.act(self.fc(x))", "        return self.fc(x)"),
            ("        return F.relu6(x)", "        return x"),
        ];
        for (ret, want) in cases {
            let code = format!("class Net(nn.Module):\n    def __init__(self):\n        self.act = nn.ReLU6(inplace=True)\n\n    def forward(self, x):\n        x = self.body(x)\n{ret}\n");
            let (out, notes) = repair_logits(&code).unwrap_or_else(|| panic!("{ret}"));
            assert_eq!(notes[0].after, want);
            assert_eq!(original(&notes, &out), code);
        }
        let head = "class Net(nn.Module):\n    def __init__(self):\n        self.head = nn.Sequential(\n            nn.Linear(512, 10),\n            nn.ReLU(inplace=True),\n        )\n\n    def forward(self, x):\n        return self.head(x.flatten(1))\n";
        let (out, notes) = repair_logits(head).expect("a head closing in a ReLU");
        assert_eq!(notes.len(), 1);
        assert!(out.contains("nn.Linear(512, 10),\n            nn.Identity(),"), "{out}");
    }

    #[test]
    fn a_blocks_forward_is_not_the_networks_output() {
        // A residual block ends in a ReLU, an attention block in a softmax:
        // the network's logits are what `Net`'s `forward` returns.
        let code = "class Block(nn.Module):\n    def forward(self, x):\n        out = self.conv(x) + x\n        return F.relu(out)\n\nclass Attention(nn.Module):\n    def forward(self, x):\n        return F.softmax(self.score(x), dim=1)\n\nclass Net(nn.Module):\n    def __init__(self):\n        self.block = Block()\n\n    def forward(self, x):\n        x = self.block(x)\n        return self.fc(x.flatten(1))\n";
        assert!(repair_logits(code).is_none());
        assert!(repair_softmax(code).is_none());
        // After `Net`, the same: its own forward is read.
        let ending =
            code.replace("        return self.fc(x.flatten(1))\n", "        return F.relu(self.fc(x.flatten(1)))\n");
        let (out, notes) = repair_logits(&ending).expect("Net's own ReLU");
        assert_eq!(notes[0].line, 16);
        assert!(out.contains("        return F.relu(out)\n"), "{out}");
        // Several forwards and no `Net`: none is known to be the output.
        let unnamed = code.replace("class Net(", "class Model(");
        assert!(repair_logits(&unnamed.replace("return self.fc(", "return F.relu(self.fc(")).is_none());
    }

    #[test]
    fn what_is_not_an_activation_on_the_logits_is_left_alone() {
        let left = [
            "    def forward(self, x):\n        return F.log_softmax(self.fc(x), dim=1)\n",
            // An activation before the classifier.
            "    def forward(self, x):\n        x = F.relu(self.fc1(x))\n        return self.fc2(x)\n",
            // Two statements before the return.
            "    def forward(self, x):\n        x = self.relu(x)\n        x = self.fc(x)\n        return x\n",
            // A function the repair does not know, and a name that only
            // starts like one.
            "    def forward(self, x):\n        return torch.clamp(self.fc(x), min=0)\n",
            "    def forward(self, x):\n        return F.relu_custom(x)\n",
            "        self.relu = nn.ReLUish()\n    def forward(self, x):\n        return self.relu(x)\n",
            // A keyword input is not read.
            "    def forward(self, x):\n        return F.relu(input=x)\n",
        ];
        for code in left {
            assert!(repair_logits(code).is_none(), "{code}");
        }
    }

    #[test]
    fn several_repairs_give_the_code_back_in_reverse() {
        let (soft, mut notes) = repair_softmax(SOFTMAX_NET).expect("softmax");
        let m = FlattenMismatch { features: 784, expected: 784, out_features: 10 };
        let f = failure("mat1 and mat2 shapes cannot be multiplied (2x392 and 784x10)");
        let m = FlattenMismatch { features: 392, ..m };
        let (both, second) = repair_flatten(&soft, &m, [1, 28, 28], &f).expect("flatten");
        assert!(both.contains("nn.Linear(392, num_classes)"));
        notes.push(second.clone());
        assert_eq!(original(&notes, &both), SOFTMAX_NET);
        let first = notes[0].clone();
        // Records keep a list; records stored with one note still load.
        #[derive(Deserialize)]
        struct R {
            #[serde(default, deserialize_with = "notes_from")]
            repair: Vec<RepairNote>,
        }
        let one: R = serde_json::from_value(serde_json::json!({"repair": second})).expect("one loads");
        let many: R = serde_json::from_value(serde_json::json!({"repair": [first, second]})).expect("many loads");
        let none: R = serde_json::from_value(serde_json::json!({})).expect("none loads");
        let null: R = serde_json::from_value(serde_json::json!({"repair": null})).expect("null loads");
        assert_eq!((one.repair.len(), many.repair.len(), none.repair.len(), null.repair.len()), (1, 2, 0, 0));
    }

    fn runtime(message: &str) -> CandidateFailure {
        CandidateFailure::new("check", nas_plugin_api::FailureKind::Runtime, message)
    }

    /// The lines of `fixed` that `code` lacks.
    fn added_lines(code: &str, fixed: &str) -> Vec<String> {
        let had: Vec<&str> = code.lines().collect();
        fixed.lines().filter(|l| !had.contains(l)).map(str::to_string).collect()
    }

    #[test]
    fn a_tensor_changed_in_place_that_the_gradient_needs_is_computed_out_of_place() {
        // Recorded (the fourth target run's iteration 8): a residual block
        // adds its shortcut in place to its ReLU's output.
        let code = include_str!("testdata/inplace_residual.py");
        let failure = runtime(
            "the backward pass raised RuntimeError: one of the variables needed for gradient computation has been modified by an inplace operation: [torch.FloatTensor [2, 128, 4, 4]], which is output 0 of ReluBackward0, is at version 1; expected version 0 instead.",
        );
        let (fixed, notes) = repair_inplace(code, &failure).expect("repaired");
        let changed: Vec<(usize, &str, &str)> =
            notes.iter().map(|n| (n.line, n.before.as_str(), n.after.as_str())).collect();
        assert_eq!(changed, [(28, "        out += self.shortcut(x)", "        out = out + self.shortcut(x)")]);
        assert_eq!((notes[0].kind.as_str(), notes[0].failure.as_ref()), (INPLACE, Some(&failure)));
        assert_eq!(original(&notes, &fixed), code);
        // Only that failure.
        assert_eq!(repair_inplace(code, &runtime("mat1 and mat2 shapes cannot be multiplied (2x2 and 3x4)")), None);

        // An expression of several operands is bracketed; comments, indents
        // and inplace layers are handled; __init__'s arithmetic and what is
        // not an augmented assignment are left.
        let net = "class Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        n = 8\n        n += 8\n        self.act = nn.ReLU(inplace=True)  # saves memory\n\n    def forward(self, x):\n        y = x\n        y *= x + 1  # scale\n        self.steps+=1\n        x **= 2\n        x[0] += 1\n        if x.sum() >= 0:\n            x -= y\n        return F.relu(x, inplace = True)\n";
        let (fixed, notes) = repair_inplace(net, &failure).expect("repaired");
        let changed: Vec<(usize, &str)> = notes.iter().map(|n| (n.line, n.after.as_str())).collect();
        assert_eq!(
            changed,
            [
                (6, "        self.act = nn.ReLU(inplace=False)  # saves memory"),
                (10, "        y = y * (x + 1)  # scale"),
                (11, "        self.steps = self.steps + 1"),
                (15, "            x = x - y"),
                (16, "        return F.relu(x, inplace = False)"),
            ]
        );
        assert_eq!(original(&notes, &fixed), net);
        assert_eq!(repair_inplace("def forward(self, x):\n    return x\n", &failure), None, "nothing to change");
    }

    #[test]
    fn a_batch_norm_fed_the_flattened_maps_gets_the_linear_it_was_built_for_called_before_it() {
        // Recorded (the third target run's iteration 38): forward flattens
        // and calls bn_fc, built as nn.BatchNorm1d(self.fc1.out_features),
        // and never calls fc1.
        let code = include_str!("testdata/bn_before_its_linear.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 15488 elements not 512";
        let failure = CandidateFailure {
            traceback: include_str!("testdata/bn_before_its_linear.traceback").to_string(),
            ..runtime(message)
        };
        let (fixed, notes) = repair_uncalled(code, &failure, [1, 28, 28], 10).expect("repaired");
        assert_eq!(added_lines(code, &fixed), ["        x = self.fc1(x)"]);
        let order: Vec<&str> = fixed.lines().map(str::trim).filter(|l| l.starts_with("x = ")).collect();
        let at = order.iter().position(|l| *l == "x = x.view(x.size(0), -1)").expect("the flatten");
        assert_eq!(order[at + 1..at + 3], ["x = self.fc1(x)", "x = self.bn_fc(x)"], "{fixed}");
        let [note] = notes.as_slice() else { panic!("one note: {notes:?}") };
        assert_eq!((note.kind.as_str(), note.failure.as_ref()), (UNCALLED, Some(&failure)));
        assert_eq!(note.original(&fixed), code, "the note gives the code back");
        assert_eq!(original(&notes, &fixed), code);
        // The channels repair reads no size there (`self.fc1.out_features`).
        let m = channel_mismatch(message).expect("a batch norm mismatch");
        assert_eq!(repair_channels(code, &m, [1, 28, 28], &failure), None);
        // Without the traceback the failing line is not known.
        assert_eq!(repair_uncalled(code, &runtime(message), [1, 28, 28], 10), None);
        // Once fc1 is called anywhere, it is not the layer forward skipped.
        let called = code.replace("x = self.bn_fc(x)", "x = self.bn_fc(x) + 0 * self.fc1(x).sum()");
        assert_eq!(repair_uncalled(&called, &failure, [1, 28, 28], 10), None);
    }

    #[test]
    fn a_batch_norm_2d_on_the_flattened_features_becomes_1d_and_then_gets_the_linear_it_skipped() {
        // Recorded (the fifth target run's iteration 3): asked for "one more
        // batch normalization layer after the second fully connected layer",
        // the generator built self.bn3 = nn.BatchNorm2d(128) and called it
        // on the flattened maps in place of fc1.
        let code = include_str!("testdata/batch_norm_2d_on_features.py");
        let failure = CandidateFailure {
            traceback: include_str!("testdata/batch_norm_2d_on_features.traceback").to_string(),
            ..runtime("the forward pass on a dummy batch of shape [2, 1, 28, 28] raised ValueError: expected 4D input (got 2D input)")
        };
        let (fixed, notes) = repair_norm_dim(code, &failure).expect("repaired");
        assert_eq!(added_lines(code, &fixed), ["        self.bn3 = nn.BatchNorm1d(128)"]);
        assert_eq!(fixed.lines().count(), code.lines().count());
        let [note] = notes.as_slice() else { panic!("one note: {notes:?}") };
        assert_eq!((note.kind.as_str(), note.line, note.failure.as_ref()), (NORM_DIM, 20, Some(&failure)));
        assert_eq!(original(&notes, &fixed), code);
        // The next check (torch 2.11 on the repaired code): the batch norm
        // built for fc1's 128 outputs gets the 3136 flattened features, and
        // the uncalled repair calls fc1 before it.
        let next = CandidateFailure {
            traceback: include_str!("testdata/batch_norm_1d_before_its_linear.traceback").to_string(),
            ..runtime("the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 3136 elements not 128")
        };
        let (called, _) = repair_uncalled(&fixed, &next, [1, 28, 28], 10).expect("fc1 called");
        assert!(called.contains("        x = self.fc1(x)\n        x = self.bn3(x)"), "{called}");
        // Without the traceback the batch norm is not known; another failure
        // is not this one; a batch norm of the right kind is left.
        assert_eq!(repair_norm_dim(code, &runtime(&failure.message)), None);
        assert_eq!(
            repair_norm_dim(
                code,
                &CandidateFailure { message: "expected 4D input (got 3D input)".into(), ..failure.clone() }
            ),
            None
        );
        assert_eq!(repair_norm_dim(&fixed, &failure), None);
    }

    #[test]
    fn a_batch_norm_1d_on_feature_maps_becomes_2d() {
        // torch 2.11's failure for the same design with bn1 built as
        // nn.BatchNorm1d(32) after the first convolution.
        let code = include_str!("testdata/batch_norm_2d_on_features.py")
            .replace("self.bn1 = nn.BatchNorm2d(32)", "self.bn1 = nn.BatchNorm1d(32)  # after conv1");
        let failure = CandidateFailure {
            traceback: include_str!("testdata/batch_norm_1d_on_maps.traceback").to_string(),
            ..runtime("the forward pass on a dummy batch of shape [2, 1, 28, 28] raised ValueError: expected 2D or 3D input (got 4D input)")
        };
        let (fixed, notes) = repair_norm_dim(&code, &failure).expect("repaired");
        assert_eq!(added_lines(&code, &fixed), ["        self.bn1 = nn.BatchNorm2d(32)  # after conv1"]);
        assert_eq!(original(&notes, &fixed), code);
        // Two bindings of the name: not a reading that knows which one runs.
        let twice = code.replace("self.relu2 = nn.ReLU()", "self.bn1 = nn.BatchNorm1d(32)");
        assert_eq!(repair_norm_dim(&twice, &failure), None);
    }

    #[test]
    fn a_residual_block_that_shortcuts_its_output_shortcuts_the_input_it_saved() {
        // Recorded (the fifth target run's iteration 14): the block saves
        // identity = x and adds self.shortcut(x) of its own output.
        let code = include_str!("testdata/shortcut_on_output.py");
        let failure = CandidateFailure {
            traceback: include_str!("testdata/shortcut_on_output.traceback").to_string(),
            ..runtime("the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: Given groups=1, weight of size [256, 128, 1, 1], expected input[2, 256, 7, 7] to have 128 channels, but got 256 channels instead")
        };
        let (fixed, notes) = repair_shortcut(code, &failure).expect("repaired");
        assert_eq!(added_lines(code, &fixed), ["        x += self.shortcut(identity)"]);
        let [note] = notes.as_slice() else { panic!("one note: {notes:?}") };
        assert_eq!((note.kind.as_str(), note.line, note.failure.as_ref()), (SHORTCUT, 29, Some(&failure)));
        assert_eq!(original(&notes, &fixed), code);
        // The repaired line is not read as the fault again.
        assert_eq!(repair_shortcut(&fixed, &failure), None);
        // Without the traceback the line is not known.
        assert_eq!(repair_shortcut(code, &runtime(&failure.message)), None);
        // A block that reads what it saved elsewhere is left.
        let read =
            code.replace("        x += self.shortcut(x)", "        x += self.shortcut(x) * (identity.sum() * 0 + 1)");
        let read_failure = CandidateFailure {
            traceback: failure
                .traceback
                .replace("x += self.shortcut(x)\n", "x += self.shortcut(x) * (identity.sum() * 0 + 1)\n"),
            ..failure.clone()
        };
        assert_eq!(repair_shortcut(&read, &read_failure), None);
        // A shortcut on the input itself, never rebound, is not this fault.
        let block = "class B(nn.Module):\n    def forward(self, x):\n        identity = x\n        out = self.conv(x)\n        out += self.shortcut(x)\n        return out";
        let tb = "Traceback (most recent call last):\n  File \"c.py\", line 5, in forward\n    out += self.shortcut(x)\nRuntimeError: boom";
        assert_eq!(repair_shortcut(block, &CandidateFailure { traceback: tb.into(), ..runtime("boom") }), None);
    }

    #[test]
    fn a_batch_norm_sized_by_number_gets_the_one_uncalled_linear_of_that_size() {
        // Recorded (the embedded run at dbf3dc0, iteration 7): bn_fc is
        // nn.BatchNorm1d(64), fc1 = nn.Linear(512, 64) is never called.
        let code = include_str!("testdata/batch_norm_twice.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 512 elements not 64";
        let failure = CandidateFailure {
            traceback: include_str!("testdata/batch_norm_twice.traceback").to_string(),
            ..runtime(message)
        };
        let (fixed, notes) = repair_uncalled(code, &failure, [1, 28, 28], 10).expect("repaired");
        assert_eq!(added_lines(code, &fixed), ["        x = self.fc1(x)"]);
        assert!(fixed.contains("        x = self.fc1(x)\n        x = self.bn_fc(x)"), "{fixed}");
        assert_eq!(original(&notes, &fixed), code);
        // Another size than fc1's: not the layer the batch norm was built for.
        let other = code.replace("self.fc1 = nn.Linear(512, 64)", "self.fc1 = nn.Linear(512, 32)");
        assert_eq!(repair_uncalled(&other, &failure, [1, 28, 28], 10), None);
    }

    #[test]
    fn a_forward_that_returns_before_the_head_gets_the_head_called_before_its_return() {
        // Recorded (the third target run's iteration 39, after its flatten
        // repair): forward ends `x = self.relu5(x); return x`, and fc2 =
        // nn.Linear(512, num_classes) is never called.
        let code = include_str!("testdata/head_never_called.py");
        let failure = CandidateFailure::new(
            "check",
            nas_plugin_api::FailureKind::Shape,
            "forward on a batch of shape [2, 1, 28, 28] returned shape [2, 512]; expected [2, 10]",
        );
        let (fixed, notes) = repair_uncalled(code, &failure, [1, 28, 28], 10).expect("repaired");
        assert_eq!(added_lines(code, &fixed), ["        x = self.fc2(x)"]);
        assert!(fixed.contains("        x = self.fc2(x)\n        return x"), "{fixed}");
        assert_eq!(original(&notes, &fixed), code);
        // The head written with its number of classes is found the same way.
        let numbered = code.replace("nn.Linear(512, num_classes)", "nn.Linear(512, 10)");
        assert!(repair_uncalled(&numbered, &failure, [1, 28, 28], 10).is_some());
        // Not when no uncalled layer gives the classes, nor when two do.
        let other = code.replace("nn.Linear(512, num_classes)", "nn.Linear(512, 7)");
        assert_eq!(repair_uncalled(&other, &failure, [1, 28, 28], 10), None);
        let two = code.replace(
            "        self.fc2 = nn.Linear(512, num_classes)",
            "        self.fc2 = nn.Linear(512, num_classes)\n        self.fc3 = nn.Linear(512, num_classes)",
        );
        assert_eq!(repair_uncalled(&two, &failure, [1, 28, 28], 10), None);
        // A 4-D output or the right width is not this failure.
        for message in [
            "forward on a batch of shape [2, 1, 28, 28] returned shape [2, 512, 7, 7]; expected [2, 10]",
            "forward on a batch of shape [2, 1, 28, 28] returned shape [2]; expected [2, 10]",
        ] {
            let f = CandidateFailure::new("check", nas_plugin_api::FailureKind::Shape, message);
            assert_eq!(repair_uncalled(code, &f, [1, 28, 28], 10), None, "{message}");
        }
        // A forward with two returns: which one skipped the head is not known.
        let branches =
            code.replace("        return x", "        if x.sum() > 0:\n            return x\n        return x");
        assert_eq!(repair_uncalled(&branches, &failure, [1, 28, 28], 10), None);
    }

    #[test]
    fn a_convolution_built_for_other_channels_gets_the_ones_it_receives() {
        // Recorded from an embedded run: the first convolution built for 64
        // channels, fed the 1-channel image.
        let code = include_str!("testdata/conv_in_channels.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: Given groups=1, weight of size [64, 64, 3, 3], expected input[2, 1, 28, 28] to have 64 channels, but got 1 channels instead";
        let m = channel_mismatch(message).expect("a channel mismatch");
        assert_eq!(
            m,
            ChannelMismatch { layer: ChannelLayer::Conv2d, built_for: 64, receives: 1, out_channels: Some(64) }
        );
        let (fixed, note) = repair_channels(code, &m, [1, 28, 28], &runtime(message)).expect("repaired");
        assert_eq!(note.kind, "channels");
        assert_eq!(note.before.trim(), "self.conv1 = nn.Conv2d(64, 64, kernel_size=3, padding=1)");
        assert_eq!(note.after.trim(), "self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1)");
        assert_eq!(fixed.lines().count(), code.lines().count());
        assert_eq!(note.original(&fixed), code);
        // conv2 (64 -> 128) also takes 64 channels, but its weight is not [64, 64, ...].
        assert!(fixed.contains("self.conv2 = nn.Conv2d(64, 128"));
    }

    #[test]
    fn a_batch_norm_built_for_other_channels_gets_the_ones_it_receives() {
        // Recorded: conv1's 32 channels reach the BatchNorm2d(128) that
        // replaced bn1; torch names the input's 32 first.
        let code = include_str!("testdata/batch_norm_width.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 32 elements not 128";
        let m = channel_mismatch(message).expect("a channel mismatch");
        assert_eq!((m.layer, m.built_for, m.receives), (ChannelLayer::BatchNorm, 128, 32));
        let (fixed, note) = repair_channels(code, &m, [1, 28, 28], &runtime(message)).expect("repaired");
        assert_eq!(note.after.trim(), "self.bn1 = nn.BatchNorm2d(32)");
        assert_eq!(note.original(&fixed), code);
    }

    #[test]
    fn of_several_batch_norms_built_for_the_size_the_one_the_traceback_names_is_repaired() {
        // Recorded (the embedded run at dbf3dc0, iteration 7): bn2 and bn_fc
        // are both built for 64; forward skips fc1, so bn_fc gets 512.
        let code = include_str!("testdata/batch_norm_twice.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: running_mean should contain 512 elements not 64";
        let failure = CandidateFailure {
            traceback: include_str!("testdata/batch_norm_twice.traceback").to_string(),
            ..runtime(message)
        };
        let m = channel_mismatch(message).expect("a channel mismatch");
        let (fixed, note) = repair_channels(code, &m, [1, 28, 28], &failure).expect("repaired");
        assert_eq!(
            note.after.trim(),
            "self.bn_fc = nn.BatchNorm1d(512)  # Added a batch normalization layer after the first linear layer"
        );
        assert_eq!(note.original(&fixed), code);
        // Without the traceback the two cannot be told apart.
        assert_eq!(repair_channels(code, &m, [1, 28, 28], &runtime(message)), None);
        // A traceback whose quoted line is not the code's is not trusted.
        let other =
            CandidateFailure { traceback: failure.traceback.replace("self.bn_fc(x)", "self.bn2(x)"), ..failure };
        assert_eq!(repair_channels(code, &m, [1, 28, 28], &other), None);
    }

    #[test]
    fn of_several_linears_built_for_the_size_the_one_the_traceback_names_is_repaired() {
        // Recorded (the embedded run at 6f1bb4d, iteration 12): fc1 and fc2
        // are both nn.Linear(3 * 256, ...); forward skips fc1, so fc2 gets
        // the 512 flattened features.
        let code = include_str!("testdata/linear_twice.py");
        let message = "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x512 and 768x10)";
        let failure = CandidateFailure {
            traceback: include_str!("testdata/linear_twice.traceback").to_string(),
            ..runtime(message)
        };
        let m = flatten_mismatch(&failure).expect("a flatten mismatch");
        let (fixed, note) = repair_flatten(code, &m, [1, 28, 28], &failure).expect("repaired");
        assert_eq!(note.after.trim(), "self.fc2 = nn.Linear(512, num_classes)");
        assert_eq!(note.original(&fixed), code);
        assert_eq!(repair_flatten(code, &m, [1, 28, 28], &runtime(message)), None);
    }

    #[test]
    fn a_channel_mismatch_is_left_alone_when_no_single_layer_matches() {
        let message = "RuntimeError: running_mean should contain 32 elements not 64";
        let m = channel_mismatch(message).expect("a mismatch");
        let two = "self.bn1 = nn.BatchNorm2d(64)\nself.bn2 = nn.BatchNorm2d(num_features=64)\n";
        assert_eq!(repair_channels(two, &m, [1, 28, 28], &runtime(message)), None);
        let one = "C, H, W = in_shape\nself.bn1 = nn.BatchNorm2d(num_features=64)\nself.bn2 = nn.BatchNorm2d(C * 32)\n";
        let (fixed, _) = repair_channels(one, &m, [1, 28, 28], &runtime(message)).expect("the keyword one");
        assert!(fixed.contains("nn.BatchNorm2d(num_features=32)"), "{fixed}");
        // Grouped convolutions count a group's channels: not read.
        assert_eq!(
            channel_mismatch("Given groups=2, weight of size [64, 16, 3, 3], expected input[2, 64, 8, 8] to have 32 channels, but got 64 channels instead"),
            None
        );
        // Keywords and arithmetic over in_shape.
        let conv = "C, H, W = in_shape\nself.c = nn.Conv2d(in_channels=C * 64, out_channels=64, kernel_size=3)\n";
        let message = "Given groups=1, weight of size [64, 64, 3, 3], expected input[2, 1, 28, 28] to have 64 channels, but got 1 channels instead";
        let m = channel_mismatch(message).expect("a mismatch");
        let (fixed, _) = repair_channels(conv, &m, [1, 28, 28], &runtime(message)).expect("repaired");
        assert!(fixed.contains("nn.Conv2d(in_channels=1, out_channels=64"), "{fixed}");
    }
}
