//! The common changes the search makes itself (`[search] repair`
//! `"change"`): when the generator gives the design it was asked to change
//! back unchanged, and gives it back again each time it is asked again (the
//! embedded 1.5B model on a concrete change: iterations 20, 21 and 23 of the
//! 25-iteration embedded run, two more answers each), the iteration would
//! record a duplicate and train nothing. The search then makes one of
//! [`super::improver::FALLBACK_CHANGES`] on the best design by rewriting its
//! text, so the iteration trains a neighbour of the best, and the next
//! prompt says which change it was.
//!
//! Only changes a reading of the lines can make exactly are made: a layer's
//! sizes written as integer arithmetic ([`double_last_conv`],
//! [`wider_first_kernel`], [`wider_head`]), and a layer added beside one
//! bound to `self` and called by name in `forward` ([`batch_norm_after_convs`],
//! [`dropout_before_head`], [`batch_norm_in_head`]). The sizes downstream of
//! a resized layer are left to the evaluation's repairs (`"flatten"`,
//! `"channels"`), which record their own notes. Every line changed or added
//! is one [`RepairNote`] of kind [`CHANGE`], in order, so
//! [`super::repair::original`] gives the best design back.

use super::improver::FALLBACK_CHANGES;
use super::repair::{self, layer_arg as arg, Arg, RepairNote};
use nas_plugin_api::{CandidateFailure, FailureKind};

/// The kind of a change's notes.
pub const CHANGE: &str = "change";

/// A change the search makes itself: the changed code and its notes, or
/// `None` when the design is not one it can change exactly.
pub type Maker = fn(&str, [u64; 3]) -> Option<(String, Vec<RepairNote>)>;

/// The code being changed, line by line, with the notes of what changed.
struct Edit {
    lines: Vec<String>,
    notes: Vec<RepairNote>,
    /// The notes' kind: [`CHANGE`], or [`BUDGET`] with the failure behind it.
    kind: &'static str,
    failure: Option<CandidateFailure>,
}

impl Edit {
    fn new(code: &str) -> Self {
        Edit { lines: code.split('\n').map(str::to_string).collect(), notes: Vec::new(), kind: CHANGE, failure: None }
    }

    /// Notes of a repair of `failure`, of kind `kind`.
    fn repairing(code: &str, kind: &'static str, failure: &CandidateFailure) -> Self {
        Edit { kind, failure: Some(failure.clone()), ..Edit::new(code) }
    }

    fn note(&self, line: usize, before: String, after: String) -> RepairNote {
        let mut note = RepairNote::before_evaluation(self.kind, line, before, after);
        note.failure = self.failure.clone();
        note
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Line `i` (0-based) becomes `after`.
    fn replace(&mut self, i: usize, after: String) {
        if self.lines[i] != after {
            let before = std::mem::replace(&mut self.lines[i], after.clone());
            let note = self.note(i + 1, before, after);
            self.notes.push(note);
        }
    }

    /// `added` goes in after line `i` (0-based); the note keeps line `i`
    /// and the line after it, as a grafted `forward`'s does.
    fn insert_after(&mut self, i: usize, added: String) {
        let before = self.lines[i].clone();
        let after = format!("{before}\n{added}");
        let note = self.note(i + 1, before, after);
        self.notes.push(note);
        self.lines.insert(i + 1, added);
    }

    /// The code with the byte spans of `code` (its text now) replaced, the
    /// later first; one note per changed line.
    fn replace_spans(&mut self, mut spans: Vec<((usize, usize), String)>) {
        spans.sort_by_key(|(s, _)| std::cmp::Reverse(s.0));
        let mut out = self.text();
        for ((start, end), text) in &spans {
            out.replace_range(*start..*end, text);
        }
        let changed: Vec<String> = out.split('\n').map(str::to_string).collect();
        if changed.len() != self.lines.len() {
            return;
        }
        for (i, line) in changed.into_iter().enumerate() {
            self.replace(i, line);
        }
    }

    fn done(self) -> Option<(String, Vec<RepairNote>)> {
        (!self.notes.is_empty()).then(|| (self.text(), self.notes))
    }
}

/// The value of a layer's argument written as integer arithmetic.
fn value(code: &str, a: &Arg, in_shape: [u64; 3]) -> Option<u64> {
    repair::eval(&a.text, in_shape, &repair::shape_names(code))
}

/// The header lines of the blocks enclosing byte `at` of `code` (`def
/// __init__(self, ...):`, `for ...:`, `class Block(nn.Module):`),
/// innermost first, their comments taken off: each line above it indented
/// less than everything between.
fn enclosing_heads(code: &str, at: usize) -> Vec<&str> {
    let lines: Vec<&str> = code.split('\n').collect();
    let mut i = code[..at].matches('\n').count();
    let mut within = repair::indent(lines[i]);
    let mut heads = Vec::new();
    while i > 0 {
        i -= 1;
        let line = repair::uncommented(lines[i]);
        if line.trim().is_empty() || repair::indent(line) >= within {
            continue;
        }
        within = repair::indent(line);
        heads.push(line.trim());
    }
    heads
}

/// Whether the layer call starting at byte `at` of `code` builds one
/// layer: not in a comprehension, a loop or a helper function (`def
/// block(i, o): return nn.Sequential(nn.Conv2d(i, o, 3), ...)`), where
/// changing its text would change every layer it builds.
fn builds_one(code: &str, at: usize) -> bool {
    let line = code[..at].rfind('\n').map_or(0, |i| i + 1);
    if repair::uncommented(code[line..].split('\n').next().unwrap_or_default()).contains(" for ") {
        return false;
    }
    let init = |h: &&str| h.starts_with("def __init__(");
    enclosing_heads(code, at)
        .into_iter()
        .find(|h| init(h) || ["def ", "for ", "while ", "class ", "lambda"].iter().any(|k| h.starts_with(k)))
        .is_some_and(|h| init(&h))
}

/// Whether `forward` flattens to a size written in its text
/// (`x.view(-1, 256 * 7 * 7)`): a change of the maps' size then breaks the
/// batch, which no repair mends.
fn flattens_to_written_size(code: &str) -> bool {
    let lines: Vec<&str> = code.split('\n').collect();
    let Some((start, end)) = repair::forward_span(&lines) else { return true };
    lines[start..end].iter().any(|l| {
        let c: String = repair::uncommented(l).split_whitespace().collect();
        c.contains(".view(-1,") || c.contains(".reshape(-1,")
    })
}

/// How a torch layer's class is written: `torch.nn.Conv2d`, `nn.Conv2d`,
/// or imported by name.
const MODULE_PREFIXES: [&str; 3] = ["torch.nn.", "nn.", ""];

/// "Double the out_channels of the last nn.Conv2d": its `out_channels`
/// written as twice its value, and so the `num_features` of an
/// `nn.BatchNorm2d` that follows it in the same `nn.Sequential`; a batch
/// norm bound to an attribute and the layer after it get the size from the
/// evaluation's `"channels"` and `"flatten"` repairs.
/// `None` for a grouped convolution, sizes that are not integer arithmetic,
/// a convolution built in a loop or helper, or a `forward` that flattens to
/// a written size.
pub fn double_last_conv(code: &str, in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let calls = repair::layer_calls(code, "Conv2d");
    let args = calls.last()?;
    if args.iter().any(|a| a.keyword.as_deref() == Some("groups"))
        || !builds_one(code, args.first()?.start)
        || flattens_to_written_size(code)
    {
        return None;
    }
    let out = arg(args, "out_channels", 1)?;
    let n = value(code, &out, in_shape)?;
    let mut spans = vec![((out.start, out.end), (2 * n).to_string())];
    // The batch norm right after it in the same `nn.Sequential` is doubled
    // too: the `"channels"` repair cannot tell it from the others of its
    // size when the traceback ends on the `nn.Sequential`'s call (the
    // fifth target run's iteration 49: four `nn.BatchNorm2d(256)`, one of
    // them after the doubled convolution in an `se_block`).
    let close = args.last()?.end + code[args.last()?.end..].find(')')?;
    let norm = repair::layer_calls(code, "BatchNorm2d").into_iter().find_map(|bn| {
        let first = bn.first()?;
        let between: String = code.get(close + 1..first.start)?.split_whitespace().collect();
        let next = between.strip_prefix(',')?;
        MODULE_PREFIXES.iter().any(|p| next == format!("{p}BatchNorm2d(")).then_some(bn)
    });
    if let Some(features) = norm.as_ref().and_then(|bn| arg(bn, "num_features", 0)) {
        if value(code, &features, in_shape) == Some(n) {
            spans.push(((features.start, features.end), (2 * n).to_string()));
        }
    }
    let mut edit = Edit::new(code);
    edit.replace_spans(spans);
    edit.done()
}

/// "Use kernel_size=5 and padding=2 in the first nn.Conv2d": a 3x3 (or 1x1)
/// first convolution gets a 5x5 kernel and padding 2, keeping the map's size
/// when it kept it before. `None` for a kernel given as a tuple or already 5
/// or wider, a padding that is not a number (`"same"`), a convolution built
/// in a loop or helper, or a `forward` that flattens to a written size.
pub fn wider_first_kernel(code: &str, in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let calls = repair::layer_calls(code, "Conv2d");
    let args = calls.first()?;
    if !builds_one(code, args.first()?.start) || flattens_to_written_size(code) {
        return None;
    }
    let kernel = arg(args, "kernel_size", 2)?;
    if value(code, &kernel, in_shape)? >= 5 {
        return None;
    }
    let mut spans = vec![((kernel.start, kernel.end), "5".to_string())];
    match arg(args, "padding", 4) {
        Some(p) => {
            value(code, &p, in_shape)?;
            spans.push(((p.start, p.end), "2".to_string()));
        }
        None => {
            let last = args.last()?;
            spans.push(((last.end, last.end), ", padding=2".to_string()));
        }
    }
    let mut edit = Edit::new(code);
    edit.replace_spans(spans);
    edit.done()
}

/// "Double the out_features of the first nn.Linear and the in_features of
/// the nn.Linear after it": both written as twice their value, when the
/// second `nn.Linear` takes what the first gives (a batch norm between them
/// gets its size from the `"channels"` repair).
pub fn wider_head(code: &str, in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let calls = repair::layer_calls(code, "Linear");
    let (first, second) = (calls.first()?, calls.get(1)?);
    if !builds_one(code, first.first()?.start) || !builds_one(code, second.first()?.start) {
        return None;
    }
    // A first `nn.Linear` bound to an attribute that `forward` never calls
    // (the 25-iteration run's best) would change nothing that runs.
    let line = code.split('\n').nth(code[..first.first()?.start].matches('\n').count())?;
    if let [name] = repair::bound_by(line).0.as_slice() {
        if !code.contains(&format!("self.{name}(")) {
            return None;
        }
    }
    let out = arg(first, "out_features", 1)?;
    let next_in = arg(second, "in_features", 0)?;
    let n = value(code, &out, in_shape)?;
    if value(code, &next_in, in_shape)? != n {
        return None;
    }
    let wide = (2 * n).to_string();
    let mut edit = Edit::new(code);
    edit.replace_spans(vec![((out.start, out.end), wide.clone()), ((next_in.start, next_in.end), wide)]);
    edit.done()
}

/// A layer bound to `self`: its name and the module prefix its class is
/// written with (`nn.`, `torch.nn.`).
struct Bound {
    name: String,
    prefix: String,
}

/// The line (0-based) where the statement that starts on line `i` ends.
fn statement_end(lines: &[String], i: usize) -> usize {
    let mut end = i;
    let mut statement = repair::uncommented(&lines[i]).to_string();
    while !repair::balanced(&statement) && end + 1 < lines.len() {
        end += 1;
        statement.push_str(repair::uncommented(&lines[end]));
    }
    end
}

/// The layers of class `class` (`"Conv2d"`) that `lines` bind one to an
/// attribute (`self.conv1 = nn.Conv2d(...)`), in order. `None` when a
/// `class` layer is built any other way (inside an `nn.Sequential`, in a
/// loop, with `setattr`): a change to "each" or "the first" of them could
/// not be made to all.
fn bound_layers(lines: &[String], class: &str) -> Option<Vec<Bound>> {
    let code = lines.join("\n");
    if repair::binds_unreadably(&code) {
        return None;
    }
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (names, rhs) = repair::bound_by(&lines[i]);
        let layer =
            rhs.as_deref().and_then(|r| MODULE_PREFIXES.into_iter().find(|p| r.starts_with(&format!("{p}{class}("))));
        match (names.as_slice(), layer) {
            ([name], Some(prefix)) => {
                let end = statement_end(lines, i);
                found.push(Bound { name: name.clone(), prefix: prefix.to_string() });
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    (found.len() == repair::layer_calls(&code, class).len()).then_some(found)
}

/// The calls `self.name(...)` on the lines of `forward`, each rewritten by
/// `wrap` (given the call's text and its arguments); `None` when `forward`
/// never calls it or `wrap` refuses a call.
fn wrap_calls(edit: &mut Edit, name: &str, wrap: &dyn Fn(&str, &[&str]) -> Option<String>) -> Option<()> {
    let lines: Vec<&str> = edit.lines.iter().map(String::as_str).collect();
    let (start, end) = repair::forward_span(&lines)?;
    let opening = format!("self.{name}(");
    let mut changed = Vec::new();
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        let code = repair::uncommented(line);
        let mut out = String::new();
        let mut from = 0;
        let mut wrapped = false;
        while let Some(pos) = code[from..].find(&opening) {
            let at = from + pos;
            if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                out.push_str(&code[from..at + opening.len()]);
                from = at + opening.len();
                continue;
            }
            let (args, tail) = repair::call_args(&code[at + opening.len() - 1..])?;
            let call_end = code.len() - tail.len();
            out.push_str(&code[from..at]);
            out.push_str(&wrap(&code[at..call_end], &args)?);
            from = call_end;
            wrapped = true;
        }
        if wrapped {
            out.push_str(&code[from..]);
            out.push_str(&line[code.len()..]);
            changed.push((i, out));
        }
    }
    if changed.is_empty() {
        return None;
    }
    for (i, line) in changed {
        edit.replace(i, line);
    }
    Some(())
}

/// A name for an added layer, `base` or `base2`, `base3`..., that the code
/// does not use yet.
pub(super) fn fresh_name(code: &str, base: &str) -> String {
    let used = |n: &str| {
        code.match_indices(&format!("self.{n}"))
            .any(|(at, m)| !code[at + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    };
    (1..).map(|i| if i == 1 { base.to_string() } else { format!("{base}{i}") }).find(|n| !used(n)).unwrap_or_default()
}

/// Adds `self.{added} = {layer}` after the statement binding `beside` (at
/// its indentation), and has `forward` call it as `wrap` rewrites each call
/// of `beside`.
fn add_beside(
    edit: &mut Edit,
    beside: &str,
    added: &str,
    layer: String,
    wrap: &dyn Fn(&str, &[&str]) -> Option<String>,
) -> Option<()> {
    wrap_calls(edit, beside, wrap)?;
    let binding = edit.lines.iter().position(|l| repair::bound_by(l).0 == [beside.to_string()])?;
    let end = statement_end(&edit.lines, binding);
    let indent = " ".repeat(repair::indent(&edit.lines[binding]));
    edit.insert_after(end, format!("{indent}self.{added} = {layer}"));
    Some(())
}

/// "Add an nn.BatchNorm2d after each nn.Conv2d, before its activation":
/// each convolution `self.conv` gets `self.conv_bn =
/// nn.BatchNorm2d(self.conv.out_channels)` after it, and `forward` calls it
/// on each call's result (`self.conv_bn(self.conv(x))`, inside whatever
/// activation wraps the call). `None` when a convolution is not bound to an
/// attribute of its own or `forward` never calls one.
pub fn batch_norm_after_convs(code: &str, _in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let mut edit = Edit::new(code);
    let convs = bound_layers(&edit.lines, "Conv2d")?;
    for conv in &convs {
        let bn = fresh_name(&edit.text(), &format!("{}_bn", conv.name));
        let layer = format!("{}BatchNorm2d(self.{}.out_channels)", module_prefix(code, &conv.prefix)?, conv.name);
        add_beside(&mut edit, &conv.name, &bn, layer, &|call, _| Some(format!("self.{bn}({call})")))?;
    }
    edit.done()
}

/// "Add nn.Dropout(0.3) right before the first nn.Linear": when the first
/// `nn.Linear` is bound to an attribute and `forward` calls it on one
/// argument, `self.drop_fc = nn.Dropout(0.3)` is added after it and each
/// call takes the dropout of its argument.
pub fn dropout_before_head(code: &str, _in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let mut edit = Edit::new(code);
    let fc = bound_layers(&edit.lines, "Linear")?.into_iter().next()?;
    let drop = fresh_name(code, "drop_fc");
    let layer = format!("{}Dropout(0.3)", module_prefix(code, &fc.prefix)?);
    let name = fc.name.clone();
    add_beside(&mut edit, &fc.name, &drop, layer, &|_, args| match args {
        [a] if !a.contains('=') => Some(format!("self.{name}(self.{drop}({a}))")),
        _ => None,
    })?;
    edit.done()
}

/// "Add self.bn_fc = nn.BatchNorm1d(N) ... right after that nn.Linear": when
/// the first `nn.Linear` is bound to an attribute and `forward` calls it,
/// `self.bn_fc = nn.BatchNorm1d(self.fc.out_features)` is added after it and
/// applied to each call's result, inside its activation.
pub fn batch_norm_in_head(code: &str, _in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let mut edit = Edit::new(code);
    let fc = bound_layers(&edit.lines, "Linear")?.into_iter().next()?;
    let bn = fresh_name(code, "bn_fc");
    let layer = format!("{}BatchNorm1d(self.{}.out_features)", module_prefix(code, &fc.prefix)?, fc.name);
    add_beside(&mut edit, &fc.name, &bn, layer, &|call, _| Some(format!("self.{bn}({call})")))?;
    edit.done()
}

/// "Add nn.MaxPool2d(2) right after the activation of the last nn.Conv2d,
/// and divide the in_features of the first nn.Linear by 4 to match": when
/// `forward` flattens a name (`x = x.view(x.size(0), -1)`, `torch.flatten(x,
/// 1)`, `self.fc(x.flatten(1))`) on a line of its own level after the last
/// call of its last convolution, with no pooling from that call to the
/// flatten, `self.pool_last = nn.MaxPool2d(2)` is added after the
/// convolution and `x = self.pool_last(x)` before the flattening line: the
/// same place, as nothing between them changes the maps' size. The head's
/// size is then the `"flatten"` repair's. `None` for a convolution not bound
/// to an attribute of its own, a flatten to a written size or of a value
/// that is not a name (`self.body(x).flatten(1)`), or a pooling already
/// after the last convolution.
pub fn pool_after_last_conv(code: &str, _in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    if flattens_to_written_size(code) {
        return None;
    }
    let mut edit = Edit::new(code);
    let conv = bound_layers(&edit.lines, "Conv2d")?.pop()?;
    let lines: Vec<&str> = code.split('\n').collect();
    let (start, end) = repair::forward_span(&lines)?;
    let call = format!("self.{}(", conv.name);
    let called = (start + 1..end).rev().find(|&i| repair::uncommented(lines[i]).contains(&call))?;
    let flat = (called + 1..end).find(|&i| flattened_name(repair::uncommented(lines[i])).is_some())?;
    if lines[called..=flat].iter().any(|l| repair::uncommented(l).to_lowercase().contains("pool")) {
        return None;
    }
    // The flattening line starts a statement at the level of `forward`'s body.
    let level = (start + 1..end).map(|i| lines[i]).find(|l| !repair::uncommented(l).trim().is_empty())?;
    let before = repair::uncommented(lines[flat - 1]);
    if repair::indent(lines[flat]) != repair::indent(level)
        || !repair::balanced(before)
        || before.trim_end().ends_with('\\')
    {
        return None;
    }
    let name = flattened_name(repair::uncommented(lines[flat]))?;
    let pool = fresh_name(code, "pool_last");
    let layer = format!("{}MaxPool2d(2)", module_prefix(code, &conv.prefix)?);
    let indent = " ".repeat(repair::indent(lines[flat]));
    edit.insert_after(flat - 1, format!("{indent}{name} = self.{pool}({name})"));
    let binding = edit.lines.iter().position(|l| repair::bound_by(l).0 == [conv.name.clone()])?;
    let end = statement_end(&edit.lines, binding);
    let indent = " ".repeat(repair::indent(&edit.lines[binding]));
    edit.insert_after(end, format!("{indent}self.{pool} = {layer}"));
    edit.done()
}

/// The width of the hidden layer [`hidden_layer`] adds.
const HIDDEN: u64 = 256;

/// "Add a hidden layer before the last nn.Linear": when the network's one
/// used `nn.Linear` (`self.fc`, bound to an attribute, built once, called
/// on one argument) classifies what it is given, `self.fc_hidden =
/// nn.Linear(N, 256)` and `self.fc_hidden_act = nn.ReLU()` are added after
/// it, it takes 256 inputs, and each call `self.fc(a)` becomes
/// `self.fc(self.fc_hidden_act(self.fc_hidden(a)))`. `None` for a head in
/// an `nn.Sequential`, several used `nn.Linear`s, or an `in_features` that
/// is not one argument.
pub fn hidden_layer(code: &str, _in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let mut edit = Edit::new(code);
    // Every nn.Linear is bound (or `bound_layers` is `None`), so the calls
    // are the bound layers' in the same order.
    let used: Vec<(Bound, Vec<Arg>)> = bound_layers(&edit.lines, "Linear")?
        .into_iter()
        .zip(repair::layer_calls(code, "Linear"))
        .filter(|(b, _)| code.contains(&format!("self.{}(", b.name)))
        .collect();
    let [(fc, args)] = used.as_slice() else { return None };
    let binding = edit.lines.iter().position(|l| repair::bound_by(l).0 == [fc.name.clone()])?;
    if !builds_one(code, args.first()?.start) {
        return None;
    }
    let n = arg(args, "in_features", 0)?;
    let prefix = module_prefix(code, &fc.prefix)?;
    let (hidden, act) = (fresh_name(code, "fc_hidden"), fresh_name(code, "fc_hidden_act"));
    let name = fc.name.clone();
    edit.replace_spans(vec![((n.start, n.end), HIDDEN.to_string())]);
    wrap_calls(&mut edit, &fc.name, &|_, args| match args {
        [a] if !a.contains('=') => Some(format!("self.{name}(self.{act}(self.{hidden}({a})))")),
        _ => None,
    })?;
    let end = statement_end(&edit.lines, binding);
    let indent = " ".repeat(repair::indent(&edit.lines[binding]));
    edit.insert_after(end, format!("{indent}self.{hidden} = {prefix}Linear({}, {HIDDEN})", n.text.trim()));
    edit.insert_after(end + 1, format!("{indent}self.{act} = {prefix}ReLU()"));
    edit.done()
}

/// The name a line flattens: `x` of `x.view(...)`, `x.reshape(...)`,
/// `x.flatten(...)` or `torch.flatten(x, ...)`; `None` when it flattens
/// nothing or something else than a name.
fn flattened_name(line: &str) -> Option<String> {
    if let Some(at) = line.find("torch.flatten(") {
        let (args, _) = repair::call_args(&line[at + "torch.flatten".len()..])?;
        let first = args.first()?.trim();
        return repair::is_ident(first).then(|| first.to_string());
    }
    for method in [".view(", ".reshape(", ".flatten("] {
        if let Some(at) = line.find(method) {
            let head = line[..at].trim_end_matches(|c: char| c.is_alphanumeric() || c == '_');
            let receiver = &line[head.len()..at];
            let attribute = head.ends_with('.');
            return (repair::is_ident(receiver) && receiver != "self" && !attribute).then(|| receiver.to_string());
        }
    }
    None
}

/// The prefix an added layer's class is written with: the one the layer
/// beside it uses, or `torch.nn.` for a class imported by name (`from
/// torch.nn import Linear`) when `torch` is imported.
fn module_prefix(code: &str, prefix: &str) -> Option<String> {
    let lines: Vec<&str> = code.lines().collect();
    match prefix {
        "" if repair::imports(&lines, "torch") => Some("torch.nn.".into()),
        "" => None,
        p => Some(p.to_string()),
    }
}

/// The kind of a [`narrower`] note (`[search] repair` `"budget"`).
pub const BUDGET: &str = "budget";

/// Whether `failure` is the evaluator's refusal of a design over the
/// search's compute budget (`max_flops`, `max_params`), before training.
pub fn over_budget(failure: &CandidateFailure) -> bool {
    failure.kind == FailureKind::Constraint && failure.stage == nas_plugin_api::BUDGET_STAGE
}

/// Layers whose sizes follow the channels of a convolution in ways a
/// reading of one argument cannot halve.
const CHANNEL_LAYERS_LEFT: [&str; 5] = ["GroupNorm", "InstanceNorm2d", "ConvTranspose2d", "LayerNorm", "Conv1d"];

/// A design the evaluator refused as over the search's budget, made
/// narrower (`[search] repair` `"budget"`): every `nn.Conv2d` gets half its
/// `out_channels`, and half its `in_channels` where they come from another
/// convolution (all but the input's channels); every `nn.BatchNorm2d` half
/// its `num_features` (one written as `self.conv1.out_channels` follows by
/// itself). A convolution's multiply-adds are in × out × the map, so the
/// convolutions between others cost a quarter, and the head's input is
/// half (its size is then the `"flatten"` repair's). A layer of a helper
/// module class sized by its `__init__`'s parameters
/// (`nn.Conv2d(in_channels, out_channels, 3)` in `class
/// ResidualBlock(nn.Module)`) is halved where the class is called: those
/// parameters' values in each `ResidualBlock(32, 64)` (the input's channels
/// left). The candidate is evaluated again and, still over, made narrower
/// again, within the repairs one candidate gets. `None` when the failure is
/// another, the design has no convolution, a convolution is grouped, built
/// in a loop or helper function, has sizes that are neither integer
/// arithmetic nor a helper class's parameters, `out_channels` under 2,
/// equal to the input's channels or to `num_classes` (a convolution that
/// gives the classes' scores), a helper class is called without a value
/// for such a parameter, a layer of [`CHANNEL_LAYERS_LEFT`] takes channels,
/// or `forward` flattens to a written size.
pub fn narrower(
    code: &str,
    in_shape: [u64; 3],
    num_classes: u64,
    failure: &CandidateFailure,
) -> Option<(String, Vec<RepairNote>)> {
    if !over_budget(failure) || flattens_to_written_size(code) {
        return None;
    }
    if CHANNEL_LAYERS_LEFT.iter().any(|l| !repair::layer_calls(code, l).is_empty()) {
        return None;
    }
    let convs = repair::layer_calls(code, "Conv2d");
    if convs.is_empty() {
        return None;
    }
    let mut spans = Vec::new();
    let mut helpers = Vec::new();
    for args in &convs {
        if args.iter().any(|a| a.keyword.as_deref() == Some("groups")) || !builds_one(code, args.first()?.start) {
            return None;
        }
        let (inp, out) = (arg(args, "in_channels", 0)?, arg(args, "out_channels", 1)?);
        match value(code, &out, in_shape) {
            Some(o) if o < 2 || o == in_shape[0] || o == num_classes => return None,
            Some(o) => spans.push(((out.start, out.end), (o / 2).to_string())),
            None => helper_parameter(code, &out, &mut helpers)?,
        }
        match value(code, &inp, in_shape) {
            Some(i) if i != in_shape[0] => spans.push(((inp.start, inp.end), (i / 2).max(1).to_string())),
            Some(_) => {}
            None => helper_parameter(code, &inp, &mut helpers)?,
        }
    }
    for args in repair::layer_calls(code, "BatchNorm2d") {
        let n = arg(&args, "num_features", 0)?;
        match value(code, &n, in_shape) {
            Some(v) => spans.push(((n.start, n.end), (v / 2).max(1).to_string())),
            None if n.text.trim().ends_with(".out_channels") => {}
            None => helper_parameter(code, &n, &mut helpers)?,
        }
    }
    // Each helper class's channel parameters, halved where it is called.
    for helper in &helpers {
        for call in repair::layer_calls(code, &helper.class) {
            // The class's own line (`class ResidualBlock(nn.Module):`) is no call.
            let at = call.first().map_or(0, |a| a.start);
            let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
            if code[line_start..].trim_start().starts_with("class ") {
                continue;
            }
            for channel in &helper.channels {
                let position = helper.params.iter().position(|p| p == channel)?;
                let a = arg(&call, channel, position)?;
                match value(code, &a, in_shape)? {
                    v if v == in_shape[0] => {}
                    v if v < 2 => return None,
                    v => spans.push(((a.start, a.end), (v / 2).to_string())),
                }
            }
        }
    }
    let mut edit = Edit::repairing(code, BUDGET, failure);
    edit.replace_spans(spans);
    edit.done()
}

/// A helper module class whose layers take channels from its `__init__`'s
/// parameters: its name, those parameters in order, and the ones that are
/// channels.
struct Helper {
    class: String,
    params: Vec<String>,
    channels: Vec<String>,
}

/// Records `a` as a channel parameter of the helper class whose `__init__`
/// it is in; `None` when it is not one of that `__init__`'s parameters
/// (or the class is `Net`).
fn helper_parameter(code: &str, a: &Arg, helpers: &mut Vec<Helper>) -> Option<()> {
    let name = a.text.trim();
    let (class, params) = helper_init(code, a.start)?;
    if !params.iter().any(|p| p == name) {
        return None;
    }
    match helpers.iter_mut().find(|h| h.class == class) {
        Some(h) if h.channels.iter().any(|c| c == name) => {}
        Some(h) => h.channels.push(name.to_string()),
        None => helpers.push(Helper { class, params, channels: vec![name.to_string()] }),
    }
    Some(())
}

/// The module class whose `__init__` holds byte `at` of `code` (the
/// nearest enclosing `def` being that `__init__`), and the `__init__`'s
/// parameters after `self`; `None` for `Net`, or a signature on more than
/// one line or with `*args`.
fn helper_init(code: &str, at: usize) -> Option<(String, Vec<String>)> {
    let heads = enclosing_heads(code, at);
    let def = heads.iter().position(|h| h.starts_with("def "))?;
    let signature = heads[def].strip_prefix("def __init__(")?.rsplit_once(')')?.0;
    let names: Vec<String> = signature
        .split(',')
        .map(|p| p.split(['=', ':']).next().unwrap_or("").trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if names.first().map(String::as_str) != Some("self") || !names.iter().all(|n| repair::is_ident(n)) {
        return None;
    }
    let class = heads[def + 1..].iter().find_map(|h| h.strip_prefix("class "))?;
    let class = class.split(['(', ':']).next()?.trim();
    (class != "Net").then(|| (class.to_string(), names[1..].to_vec()))
}

/// The changes of [`FALLBACK_CHANGES`] the search can make itself, by
/// index: all but adding a convolution (where the new layer and its
/// activation go in `forward` is not one call to wrap).
const MAKERS: [(usize, Maker); 8] = [
    (0, batch_norm_after_convs),
    (1, dropout_before_head),
    (2, double_last_conv),
    (4, wider_first_kernel),
    (5, wider_head),
    (6, batch_norm_in_head),
    (7, pool_after_last_conv),
    (8, hidden_layer),
];

/// Makes `change` (one of [`FALLBACK_CHANGES`]) on `code`, whose input is
/// `in_shape`; `None` when it is not one the search makes itself or `code`
/// is not a design it can make it on.
pub fn make(change: &str, code: &str, in_shape: [u64; 3]) -> Option<(String, Vec<RepairNote>)> {
    let (_, maker) = MAKERS.iter().find(|(i, _)| FALLBACK_CHANGES[*i].0 == change)?;
    maker(code, in_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FASHION: [u64; 3] = [1, 28, 28];

    fn design(path: &str) -> String {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The notes undo the change, line by line.
    fn undone(code: &str, made: &(String, Vec<RepairNote>)) {
        assert!(made.1.iter().all(|n| n.kind == CHANGE && n.made_on_answer()));
        assert_eq!(repair::original(&made.1, &made.0), code, "the notes give the design back");
    }

    fn changed_lines(code: &str, made: &(String, Vec<RepairNote>)) -> Vec<String> {
        let before: Vec<&str> = code.lines().collect();
        made.0.lines().filter(|l| !before.contains(l)).map(|l| l.trim().to_string()).collect()
    }

    #[test]
    fn the_two_conv_design_gets_each_change_a_line_reading_can_make() {
        let code = design("tests/benches/fidelity/11_cnn_two_conv.py");
        let all = |maker: Maker| {
            let made = maker(&code, FASHION).expect("made");
            undone(&code, &made);
            changed_lines(&code, &made)
        };
        assert_eq!(
            all(batch_norm_after_convs),
            [
                "self.conv1_bn = nn.BatchNorm2d(self.conv1.out_channels)",
                "self.conv2_bn = nn.BatchNorm2d(self.conv2.out_channels)",
                "x = F.max_pool2d(F.relu(self.conv1_bn(self.conv1(x))), 2)",
                "x = F.max_pool2d(F.relu(self.conv2_bn(self.conv2(x))), 2)",
            ]
        );
        assert_eq!(
            all(dropout_before_head),
            ["self.drop_fc = nn.Dropout(0.3)", "x = F.relu(self.fc1(self.drop_fc(torch.flatten(x, 1))))"]
        );
        assert_eq!(
            all(batch_norm_in_head),
            [
                "self.bn_fc = nn.BatchNorm1d(self.fc1.out_features)",
                "x = F.relu(self.bn_fc(self.fc1(torch.flatten(x, 1))))"
            ]
        );
        assert_eq!(all(double_last_conv), ["self.conv2 = nn.Conv2d(16, 64, 3, padding=1)"]);
        assert_eq!(all(wider_first_kernel), ["self.conv1 = nn.Conv2d(c, 16, 5, padding=2)"]);
        assert_eq!(
            all(wider_head),
            ["self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), 256)", "self.fc2 = nn.Linear(256, num_classes)"]
        );
        // Added layers follow the statement they sit beside.
        let made = batch_norm_after_convs(&code, FASHION).expect("made");
        let lines: Vec<&str> = made.0.lines().map(str::trim).collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).expect(l);
        assert_eq!(
            at("self.conv1_bn = nn.BatchNorm2d(self.conv1.out_channels)"),
            at("self.conv1 = nn.Conv2d(c, 16, 3, padding=1)") + 1
        );
    }

    #[test]
    fn sizes_written_as_arithmetic_are_doubled_and_a_head_forward_never_calls_is_left() {
        // The 25-iteration embedded run's best: conv5 built `2 * 512`, and a
        // head whose fc1 `forward` never calls.
        let code = design("docs/results/embedded-run/best.py");
        let made = double_last_conv(&code, FASHION).expect("made");
        undone(&code, &made);
        assert_eq!(changed_lines(&code, &made), ["self.conv5 = nn.Conv2d(512, 2048, kernel_size=3, padding=1)"]);
        assert!(wider_head(&code, FASHION).is_none(), "fc1 is never called");
        assert!(dropout_before_head(&code, FASHION).is_none(), "fc1 is never called");
        let made = wider_first_kernel(&code, FASHION).expect("made");
        assert_eq!(changed_lines(&code, &made), ["self.conv1 = nn.Conv2d(C, 64, kernel_size=5, padding=2)"]);
    }

    #[test]
    fn the_batch_norm_after_the_last_convolution_in_a_sequential_is_doubled_with_it() {
        // The fifth target run's best (iteration 42) has the `se_block` of
        // its iteration 49's design: the last convolution is in an
        // `nn.Sequential`, followed there by one of four
        // `nn.BatchNorm2d(256)`; doubled alone, the check failed on the
        // `se_block` call (`running_mean should contain 512 elements not 256`).
        let code = design("docs/results/embedded-run/target-run-5/best.py");
        let made = double_last_conv(&code, FASHION).expect("made");
        undone(&code, &made);
        assert_eq!(
            changed_lines(&code, &made),
            ["nn.Conv2d(256, 512, kernel_size=1, bias=False),", "nn.BatchNorm2d(512),"]
        );
        // A batch norm of another size after it is not the convolution's.
        let other = code.replacen("nn.Conv2d(256, 256, kernel_size=1, bias=False),\n            nn.BatchNorm2d(256),\n            nn.ReLU()\n        )", "nn.Conv2d(256, 256, kernel_size=1, bias=False),\n            nn.BatchNorm2d(128),\n            nn.ReLU()\n        )", 1);
        assert_ne!(other, code);
        let made = double_last_conv(&other, FASHION).expect("made");
        assert_eq!(changed_lines(&other, &made), ["nn.Conv2d(256, 512, kernel_size=1, bias=False),"]);
    }

    #[test]
    fn a_convolution_built_by_a_helper_or_a_flatten_to_a_written_size_is_not_resized() {
        // Every block's convolution is one call in `block`.
        let vgg = design("docs/results/embedded-run/references/vgg-32-64.py");
        assert!(double_last_conv(&vgg, FASHION).is_none());
        assert!(wider_first_kernel(&vgg, FASHION).is_none());
        assert!(batch_norm_after_convs(&vgg, FASHION).is_none(), "convolutions in nn.Sequential");
        assert!(batch_norm_in_head(&vgg, FASHION).is_none(), "the head is an nn.Sequential");
        // Its head is one call each, built once: that change is made.
        let made = wider_head(&vgg, FASHION).expect("made");
        undone(&vgg, &made);
        assert!(made.0.contains("nn.Linear(64 * (H // 4) * (W // 4), 512), nn.BatchNorm1d(256)"), "{}", made.0);
        assert!(made.0.contains("nn.Linear(512, num_classes)"), "{}", made.0);
        // The 41-iteration run's best flattens with view(-1, 256 * 7 * 7).
        let best41 = design("docs/results/embedded-run/run-41/best.py");
        assert!(double_last_conv(&best41, FASHION).is_none());
        assert!(wider_first_kernel(&best41, FASHION).is_none());
        let made = wider_head(&best41, FASHION).expect("made");
        assert_eq!(
            changed_lines(&best41, &made),
            [
                "self.fc1 = nn.Linear(256 * 7 * 7, 1024)  # Increase in_features",
                "self.fc2 = nn.Linear(1024, num_classes)"
            ]
        );
    }

    #[test]
    fn a_pooling_goes_after_the_last_convolution_where_forward_flattens() {
        // The target run's best: conv3's block, then `x = x.view(x.size(0), -1)`.
        let code = design("docs/results/embedded-run/target-run/best.py");
        let made = pool_after_last_conv(&code, FASHION).expect("made");
        undone(&code, &made);
        assert_eq!(changed_lines(&code, &made), ["self.pool_last = nn.MaxPool2d(2)", "x = self.pool_last(x)"]);
        let lines: Vec<&str> = made.0.lines().map(str::trim).collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).expect(l);
        assert_eq!(
            at("self.pool_last = nn.MaxPool2d(2)"),
            at("self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)") + 1
        );
        assert_eq!(at("x = self.pool_last(x)") + 1, at("x = x.view(x.size(0), -1)"));
        assert!(at("x = self.relu3(x)") < at("x = self.pool_last(x)"));
        // The two-convolution design pools on its last convolution's line.
        assert!(pool_after_last_conv(&design("tests/benches/fidelity/11_cnn_two_conv.py"), FASHION).is_none());
        // A convolution inside an nn.Sequential, and a flatten of a call, are left.
        let sequential = "import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())\n        self.head = nn.Linear(8 * 26 * 26, num_classes)\n    def forward(self, x):\n        return self.head(self.body(x).flatten(1))\n";
        assert!(pool_after_last_conv(sequential, FASHION).is_none());
        let called = sequential
            .replace("self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())", "self.conv = nn.Conv2d(1, 8, 3)")
            .replace("self.body(x).flatten(1)", "self.conv(x).flatten(1)");
        assert!(pool_after_last_conv(&called, FASHION).is_none(), "{called}");
        // Flattened on the return line: the pooling goes on the line before it.
        let returned = called.replace(
            "        return self.head(self.conv(x).flatten(1))",
            "        x = torch.relu(self.conv(x))\n        return self.head(x.flatten(1))",
        );
        let made = pool_after_last_conv(&returned, FASHION).expect("made");
        undone(&returned, &made);
        assert!(made.0.contains("        x = self.pool_last(x)\n        return self.head(x.flatten(1))"), "{}", made.0);
    }

    #[test]
    fn a_head_of_one_linear_gets_a_hidden_layer() {
        // The target run's best: fc1 is built and never called; fc2 classifies.
        let code = design("docs/results/embedded-run/target-run/best.py");
        let made = hidden_layer(&code, FASHION).expect("made");
        undone(&code, &made);
        assert_eq!(
            changed_lines(&code, &made),
            [
                "self.fc2 = nn.Linear(256, num_classes)",
                "self.fc_hidden = nn.Linear(25088, 256)",
                "self.fc_hidden_act = nn.ReLU()",
                "x = self.fc2(self.fc_hidden_act(self.fc_hidden(x)))"
            ]
        );
        // Two used nn.Linear layers, or one in an nn.Sequential: left.
        assert!(hidden_layer(&design("tests/benches/fidelity/11_cnn_two_conv.py"), FASHION).is_none());
        let sequential = "import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(1, 8, 3)\n        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 26 * 26, num_classes))\n    def forward(self, x):\n        return self.head(self.conv(x))\n";
        assert!(hidden_layer(sequential, FASHION).is_none());
        // A keyword in_features, written as arithmetic, is carried to the new layer.
        let keyword = sequential
            .replace(
                "self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 26 * 26, num_classes))",
                "self.head = nn.Linear(in_features=8 * 26 * 26, out_features=num_classes)",
            )
            .replace("self.head(self.conv(x))", "self.head(self.conv(x).flatten(1))");
        let made = hidden_layer(&keyword, FASHION).expect("made");
        undone(&keyword, &made);
        assert_eq!(
            changed_lines(&keyword, &made),
            [
                "self.head = nn.Linear(in_features=256, out_features=num_classes)",
                "self.fc_hidden = nn.Linear(8 * 26 * 26, 256)",
                "self.fc_hidden_act = nn.ReLU()",
                "return self.head(self.fc_hidden_act(self.fc_hidden(self.conv(x).flatten(1))))"
            ]
        );
    }

    #[test]
    fn the_flattened_name_is_read_from_each_way_of_flattening() {
        assert_eq!(flattened_name("x = x.view(x.size(0), -1)").as_deref(), Some("x"));
        assert_eq!(flattened_name("out = torch.flatten(out, 1)").as_deref(), Some("out"));
        assert_eq!(flattened_name("return self.fc(h.flatten(1))").as_deref(), Some("h"));
        assert_eq!(flattened_name("x = x.reshape(x.shape[0], -1)").as_deref(), Some("x"));
        assert_eq!(flattened_name("x = self.body(x).flatten(1)"), None);
        assert_eq!(flattened_name("x = self.x.view(2, -1)"), None);
        assert_eq!(flattened_name("x = torch.flatten(self.pool(x), 1)"), None);
        assert_eq!(flattened_name("x = self.conv(x)"), None);
    }

    #[test]
    fn make_takes_the_changes_by_their_words_and_refuses_the_others() {
        let code = design("tests/benches/fidelity/10_lenet5.py");
        for (change, _) in FALLBACK_CHANGES {
            let made = make(change, &code, FASHION);
            let by_hand = MAKERS.iter().any(|(i, _)| FALLBACK_CHANGES[*i].0 == change);
            // LeNet-5's first kernel is 5x5 already, it pools after its last
            // convolution and its head has hidden layers.
            let had = ["Use kernel_size=5", "Add nn.MaxPool2d(2)", "Add a hidden layer"]
                .iter()
                .any(|w| change.starts_with(w));
            assert_eq!(made.is_some(), by_hand && !had, "{change}");
        }
        assert!(make("Add residual connections.", &code, FASHION).is_none());
        // Each maker is the change its words say.
        let words = [
            (0, "Add an nn.BatchNorm2d after each"),
            (1, "Add nn.Dropout(0.3)"),
            (2, "Double the out_channels of the last"),
            (4, "Use kernel_size=5"),
            (5, "Double the out_features of the first"),
            (6, "Add self.bn_fc"),
            (7, "Add nn.MaxPool2d(2)"),
            (8, "Add a hidden layer before the last nn.Linear"),
        ];
        for ((i, _), (j, w)) in MAKERS.iter().zip(words) {
            assert!(*i == j && FALLBACK_CHANGES[*i].0.starts_with(w), "{i}: {w}");
        }
    }

    fn budget_failure() -> CandidateFailure {
        CandidateFailure::new(
            "budget",
            FailureKind::Constraint,
            "it breaks the search's limits, so it was not trained: 290.0 MFLOPs per example, over the limit of 200.0",
        )
    }

    #[test]
    fn a_design_over_the_budget_is_made_narrower_layer_by_layer_and_the_notes_give_it_back() {
        // The first target run's iteration 47: five convolutions up to 512
        // channels, 290 MFLOPs per example against 200.
        let code = include_str!("testdata/over_budget.py");
        let failure = budget_failure();
        let (narrow, notes) = narrower(code, FASHION, 10, &failure).expect("made narrower");
        assert!(notes.iter().all(|n| n.kind == BUDGET && n.failure.as_ref() == Some(&failure)), "{notes:?}");
        assert!(!notes.iter().any(RepairNote::made_on_answer), "screened as the answer was");
        assert_eq!(repair::original(&notes, &narrow), code, "the notes give the design back");
        let changed = changed_lines(code, &(narrow.clone(), notes));
        assert_eq!(
            changed,
            [
                "self.conv1 = nn.Conv2d(C, 16, kernel_size=3, padding=1)",
                "self.bn1 = nn.BatchNorm2d(16)",
                "self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)",
                "self.bn2 = nn.BatchNorm2d(32)",
                "self.conv3 = nn.Conv2d(32, 64, kernel_size=3, padding=1)",
                "self.bn3 = nn.BatchNorm2d(64)",
                "self.conv4 = nn.Conv2d(64, 128, kernel_size=3, padding=1)",
                "self.bn4 = nn.BatchNorm2d(128)",
                "self.conv5 = nn.Conv2d(128, 256, kernel_size=3, padding=1)",
                "self.bn5 = nn.BatchNorm2d(256)",
            ]
        );
        // Again, still over: a quarter of the channels.
        let (narrower_still, _) = narrower(&narrow, FASHION, 10, &failure).expect("again");
        assert!(
            narrower_still.contains("self.conv5 = nn.Conv2d(64, 128, kernel_size=3, padding=1)"),
            "{narrower_still}"
        );
    }

    #[test]
    fn a_helper_block_sized_by_its_parameters_is_made_narrower_where_it_is_called() {
        // The fifth target run's iteration 12: three residual blocks of a
        // helper class at full resolution, 334 MFLOPs per example against
        // 200.
        let code = include_str!("testdata/residual_helper_over_budget.py");
        let failure = budget_failure();
        let (narrow, notes) = narrower(code, FASHION, 10, &failure).expect("made narrower");
        assert_eq!(repair::original(&notes, &narrow), code, "the notes give the design back");
        assert_eq!(
            changed_lines(code, &(narrow.clone(), notes)),
            [
                "self.conv1 = nn.Conv2d(C, 16, kernel_size=3, padding=1)",
                "self.bn1 = nn.BatchNorm2d(16)",
                "self.residual_block1 = ResidualBlock(16, 32)",
                "self.residual_block2 = ResidualBlock(32, 32)",
                "self.residual_block3 = ResidualBlock(32, 32)",
            ]
        );
        // The block's layers follow their parameters, untouched.
        assert!(narrow.contains("nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)"));
        // By keyword too; the input's channels are left.
        let keyword = code.replace(
            "self.residual_block1 = ResidualBlock(32, 64)",
            "self.residual_block1 = ResidualBlock(in_channels=C, out_channels=64)",
        );
        let (narrow, _) = narrower(&keyword, FASHION, 10, &failure).expect("made narrower");
        assert!(narrow.contains("ResidualBlock(in_channels=C, out_channels=32)"), "{narrow}");
        // A call without a value for a channel parameter (its default) is
        // not a reading that can halve it.
        let defaulted = code
            .replace(
                "def __init__(self, in_channels, out_channels, stride=1)",
                "def __init__(self, in_channels, out_channels=64, stride=1)",
            )
            .replace("ResidualBlock(64, 64)", "ResidualBlock(64)");
        assert!(narrower(&defaulted, FASHION, 10, &failure).is_none());
        // A size that is neither arithmetic nor a parameter.
        let other = code.replace("nn.BatchNorm2d(out_channels)", "nn.BatchNorm2d(self.width)");
        assert!(narrower(&other, FASHION, 10, &failure).is_none());
    }

    #[test]
    fn only_a_design_over_the_budget_whose_channels_a_reading_can_halve_is_made_narrower() {
        let code = include_str!("testdata/over_budget.py");
        let failure = budget_failure();
        let other = CandidateFailure::new("check", FailureKind::Runtime, "mat1 and mat2 shapes cannot be multiplied");
        assert!(narrower(code, FASHION, 10, &other).is_none(), "another failure");
        let refused = [
            ("nn.Conv2d(64, 128, kernel_size=3, padding=1)", "nn.Conv2d(64, 128, kernel_size=3, padding=1, groups=2)"),
            ("x = x.view(x.size(0), -1)", "x = x.view(-1, 512 * 7 * 7)"),
            ("nn.Conv2d(32, 64, kernel_size=3, padding=1)", "nn.Conv2d(32, self.width, kernel_size=3, padding=1)"),
            ("self.bn2 = nn.BatchNorm2d(64)", "self.bn2 = nn.GroupNorm(8, 64)"),
            ("self.bn3 = nn.BatchNorm2d(128)", "self.bn3 = nn.BatchNorm2d(self.width)"),
            // A convolution that gives the ten classes' scores.
            ("nn.Conv2d(256, 512, kernel_size=3, padding=1)", "nn.Conv2d(256, 10, kernel_size=1)"),
        ];
        for (from, to) in refused {
            let changed = code.replace(from, to);
            assert_ne!(changed, code, "{from}");
            assert!(narrower(&changed, FASHION, 10, &failure).is_none(), "{to}");
        }
        // A convolution built in a loop would change every layer it builds.
        let looped = code.replace(
            "        self.conv1 = nn.Conv2d(C, 32, kernel_size=3, padding=1)",
            "        self.convs = nn.ModuleList([nn.Conv2d(C, 32, 3) for _ in range(2)])\n        self.conv1 = nn.Conv2d(C, 32, kernel_size=3, padding=1)",
        );
        assert!(narrower(&looped, FASHION, 10, &failure).is_none());
        // A batch norm sized by its convolution follows it.
        let follows =
            code.replace("self.bn1 = nn.BatchNorm2d(32)", "self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)");
        let (narrow, _) = narrower(&follows, FASHION, 10, &failure).expect("made narrower");
        assert!(narrow.contains("self.bn1 = nn.BatchNorm2d(self.conv1.out_channels)"), "{narrow}");
    }
}
