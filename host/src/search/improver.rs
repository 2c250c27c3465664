//! Reading the Prompt Improver's answer.
//!
//! It is asked for JSON: `{"reason", "inspiration", "improvement_suggestions"}`
//! (or the `{"analysis", "improvement_suggestions"}` variant). Small models
//! answer in many shapes, so this takes a ```` ```json ```` fence, then a bare
//! object anywhere in the text, then a lenient reading of `key: value`
//! lines, and accepts suggestions given as a string, a list of strings or a
//! list of objects.

use std::collections::BTreeSet;

use nas_plugin_api::text::truncate_chars;

use super::SUGGESTION_CHARS;

pub use crate::records::Advice;

/// One key of the answer's JSON object and what it must hold, as the
/// built-in prompts state it. The prompts show these descriptions, never a
/// filled-in example a small model could copy; [`rejection`] refuses an
/// answer that copies them anyway.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AnswerKey {
    /// The JSON key.
    pub key: &'static str,
    /// What its value must say.
    pub description: &'static str,
}

/// The keys of the Improver's answer (the paper's).
pub const ANSWER_KEYS: [AnswerKey; 3] = [
    AnswerKey {
        key: "reason",
        description: "your diagnosis of THIS design: which layer or setting caused its result or its error, in one or two sentences of your own",
    },
    AnswerKey { key: "inspiration", description: "a known architecture or technique worth borrowing, by name" },
    AnswerKey {
        key: "improvement_suggestions",
        description: "exactly one concrete change for the next attempt, naming the layer and the new value",
    },
];

/// Descriptions that earlier prompt templates showed as values of an example
/// object; an answer that repeats them copied the template.
const LEGACY_PLACEHOLDERS: [&str; 3] = [
    "the main problem with the current design, or why it scored what it did",
    "a known architecture or technique to borrow from",
    "the concrete change to make next",
];

fn words(s: &str) -> BTreeSet<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// What an Improver answer is checked against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked<'a> {
    /// The previous iteration's answer.
    pub previous: Option<&'a Advice>,
    /// The chain's earlier diagnoses (its memory entries), with what came
    /// of each.
    pub earlier: &'a [nas_plugin_api::MemoryEntry],
    /// The code of the design being diagnosed, when it has code.
    pub code: Option<&'a str>,
    /// The accuracy of the chain's best design, the one the next attempt
    /// changes (an entry's `best_before` equal to it was tried on it).
    pub best: Option<f64>,
}

/// How alike two suggestions must be (word sets) to be the same change.
const SAME_DIAGNOSIS: f64 = 0.9;

/// How alike two problems must be (word sets) for the same change to be the
/// same diagnosis. Lower than for the change: a small model rewords its
/// problem sentence ("The architecture uses" / "The current design uses",
/// a sentence added or dropped) while it gives the same change word for
/// word; a different problem (another error) may still call for a change
/// given before.
const SAME_PROBLEM: f64 = 0.5;

/// Why an answer is not a diagnosis, or `None` when it is one: it says
/// nothing, copies the answer format's descriptions (or an old template's
/// placeholders), repeats the previous diagnosis or one already tried, or
/// asks to replace or remove something the design does not have (a small
/// model copies the history's advice onto a design that already took it),
/// gives a torch layer a keyword argument it does not take (followed, the
/// design fails to build), changes the fixed training, puts an activation
/// on the logits or resizes the input images.
pub fn rejection(advice: &Advice, checked: &Checked<'_>) -> Option<String> {
    let (problem, suggestions) = (words(&advice.problem), words(&advice.suggestions));
    if suggestions.len() < 2 {
        return Some("it gives no suggestion".into());
    }
    let templates = ANSWER_KEYS
        .iter()
        .map(|k| k.description)
        .chain(LEGACY_PLACEHOLDERS)
        .chain([FALLBACK_PROBLEM, RUNNER_UP_PROBLEM]);
    for template in templates {
        let t = words(template);
        for (field, w) in [("reason", &problem), ("improvement_suggestions", &suggestions)] {
            if !w.is_empty() && jaccard(w, &t) >= 0.75 {
                return Some(format!("its `{field}` copies the answer format instead of diagnosing"));
            }
        }
    }
    // The same problem, and the same suggestion or the same first sentence
    // of it (small models repeat the change and add an explanation).
    let first = |text: &str| words(text.split(". ").next().unwrap_or_default());
    let suggestion = truncate_chars(&advice.suggestions, SUGGESTION_CHARS);
    let (mine, mine_first) = (words(suggestion), first(suggestion));
    let same_change = |s: &str| {
        jaccard(&mine, &words(s)) >= SAME_DIAGNOSIS
            || mine_first.len() >= 5 && jaccard(&mine_first, &first(s)) >= SAME_DIAGNOSIS
    };
    let same =
        |p: &str, s: &str| (problem.is_empty() || jaccard(&problem, &words(p)) >= SAME_PROBLEM) && same_change(s);
    if let Some(p) = checked.previous.filter(|p| p.rejected.is_none()) {
        if same(&p.problem, truncate_chars(&p.suggestions, SUGGESTION_CHARS)) {
            return Some("it repeats the previous diagnosis".into());
        }
    }
    // The same change to the same best design is the same experiment,
    // whatever problem it is given for (a small model keeps one change and
    // rewords the problem); once the best has changed, it may be tried on
    // the new one.
    let repeat = checked.earlier.iter().rev().find_map(|e| {
        let outcome = e.outcome.as_deref()?;
        if same(&e.problem, &e.suggestion) {
            Some(format!("it repeats the diagnosis of attempt {}, which was already tried ({outcome})", e.iteration))
        } else if tried_on(e, checked.best) && same_change(&e.suggestion) {
            Some(format!(
                "it repeats the change of attempt {}, already tried on this best design ({outcome})",
                e.iteration
            ))
        } else {
            None
        }
    });
    if repeat.is_some() {
        return repeat;
    }
    checked
        .code
        .and_then(|code| absent_target(&advice.suggestions, code))
        .or_else(|| invented_argument(&advice.suggestions))
        .or_else(|| recipe_change(&advice.suggestions))
        .or_else(|| output_activation(&advice.suggestions))
        .or_else(|| input_resize(&advice.suggestions))
}

/// Whether a design's code already has a change (or the change does not fit it).
pub type HasChange = fn(&str) -> bool;

/// Changes the search gives the generator in place of an Improver answer
/// that is not a diagnosis (`[search] fallback_changes`): common, concrete
/// edits of a small image classifier, each with a test of the best design's
/// code that says it already has the change (or that the change does not
/// fit it). A small Improver refused as a repeat gives the same change again
/// when asked again; without a change, the generator gives the best design
/// back.
pub const FALLBACK_CHANGES: [(&str, HasChange); 9] = [
    ("Add an nn.BatchNorm2d after each nn.Conv2d, before its activation.", |c| c.contains("BatchNorm2d")),
    ("Add nn.Dropout(0.3) right before the first nn.Linear.", |c| c.contains("Dropout")),
    (
        "Double the out_channels of the last nn.Conv2d, of the nn.BatchNorm2d after it if there is one, and the in_features of the nn.Linear after it to match.",
        |_| false,
    ),
    ("Add one more nn.Conv2d (3x3 kernel, padding=1, the same number of channels in and out) with its activation right before the last pooling layer.", |_| false),
    ("Use kernel_size=5 and padding=2 in the first nn.Conv2d.", |c| c.contains("kernel_size=5")),
    (
        "Double the out_features of the first nn.Linear and the in_features of the nn.Linear after it.",
        |c| super::repair::first_linear_out_features(c).is_some_and(|n| n >= WIDEST_HEAD),
    ),
    // The head of the hand-written one-epoch references (90.5 to 90.9 %).
    (
        "Add self.bn_fc = nn.BatchNorm1d(N) in __init__, where N is the out_features of the first nn.Linear, and apply x = self.bn_fc(x) in forward right after that nn.Linear, before its activation.",
        |c| c.contains("BatchNorm1d") || c.matches("nn.Linear(").count() < 2,
    ),
    (
        "Add nn.MaxPool2d(2) right after the activation of the last nn.Conv2d, and divide the in_features of the first nn.Linear by 4 to match.",
        |c| pools(c) >= 2,
    ),
    // The one-epoch references and the best of the ceiling study have a
    // hidden layer; the target run's best classified its flattened maps
    // with one nn.Linear.
    (
        "Add a hidden layer before the last nn.Linear: self.fc_hidden = nn.Linear(N, 256) and a ReLU, where N is the in_features of the last nn.Linear, which then takes 256.",
        |c| linears_used(c) != 1,
    ),
];

/// How many `nn.Linear` layers `code` uses: those it builds, less those
/// bound to an attribute that a `forward` never calls (`self.fc1 =
/// nn.Linear(...)` with no `self.fc1(`).
fn linears_used(code: &str) -> usize {
    let built = code.matches("Linear(").count() - code.matches("LazyLinear(").count();
    if !code.contains("def forward") {
        return built;
    }
    let unused = code
        .lines()
        .filter_map(|l| match super::repair::bound_by(l) {
            (names, Some(rhs))
                if names.len() == 1
                    && rhs.trim_start_matches("torch.").trim_start_matches("nn.").starts_with("Linear(") =>
            {
                Some(names[0].clone())
            }
            _ => None,
        })
        .filter(|name| !code.contains(&format!("self.{name}(")))
        .count();
    built.saturating_sub(unused)
}

/// The hidden width past which the search no longer offers a wider head:
/// in the 38-iteration embedded run, doubling the first `nn.Linear` from 512
/// to 2048 raised the best three times, and to 4096 (26 M parameters)
/// trained twice as slowly and lower.
pub const WIDEST_HEAD: u64 = 2048;

/// How many times `code` pools: its pooling calls in `forward`, or its
/// pooling layers when `forward` calls a block that holds them.
fn pools(code: &str) -> usize {
    let forward = code.split("def forward").nth(1).unwrap_or("");
    let calls = forward.lines().filter(|l| l.to_lowercase().contains("pool")).count();
    calls.max(code.matches("MaxPool2d(").count() + code.matches("AvgPool2d(").count())
}

/// The problem of the memory entry a fallback change opens.
pub const FALLBACK_PROBLEM: &str = "no diagnosis; a common change to the best design, chosen by the search";

/// The problem of the memory entry of a common change the search made on
/// one of the next-best designs, every change having been tried on the best.
pub const RUNNER_UP_PROBLEM: &str =
    "no diagnosis; every common change was tried on the best design, so the search made one on a next-best design";

/// The change the search gives iteration `t`'s generator when the Improver
/// gave none: one of [`FALLBACK_CHANGES`] the best design does not already
/// have and that was not tried on it (no memory entry with this best and
/// this suggestion), picked in an order seeded by `seed` and `t`. `None`
/// without a best design, or when every change was tried on it.
pub fn fallback_change(
    earlier: &[nas_plugin_api::MemoryEntry],
    best: Option<(f64, &str)>,
    seed: u64,
    t: u64,
) -> Option<&'static str> {
    open_fallback_changes(earlier, best, seed, t).into_iter().next()
}

/// Every change [`fallback_change`] could give, the one it gives first and
/// the others after it in [`FALLBACK_CHANGES`]' order (wrapping round).
pub fn open_fallback_changes(
    earlier: &[nas_plugin_api::MemoryEntry],
    best: Option<(f64, &str)>,
    seed: u64,
    t: u64,
) -> Vec<&'static str> {
    let Some((accuracy, code)) = best else { return Vec::new() };
    let mut open: Vec<&str> = FALLBACK_CHANGES
        .iter()
        .filter(|(_, has)| !has(code))
        .map(|(change, _)| *change)
        .filter(|change| !earlier.iter().any(|e| tried_on(e, Some(accuracy)) && e.suggestion == *change))
        .collect();
    if !open.is_empty() {
        let x = super::novelty::mix(seed ^ t.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let first = (x % open.len() as u64) as usize;
        open.rotate_left(first);
    }
    open
}

/// What one common change gave in a run, from its memory entries (those
/// whose suggestion is the change itself, closed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeStats {
    /// Attempts whose outcome is known.
    pub tried: usize,
    /// Of those, the ones that trained.
    pub trained: usize,
    /// Of those, the ones that beat the best before them.
    pub new_bests: usize,
    /// The mean accuracy (0–1) the trained attempts gained over the best
    /// before them (negative when below it); `None` when none trained.
    pub mean_gain: Option<f64>,
    /// The mean improvement per attempt: what each gained over the best
    /// before it where it beat it, 0 where it did not or failed (the
    /// expected improvement of trying the change again).
    pub improvement: f64,
}

impl ChangeStats {
    /// `change`'s attempts in `history`; `None` when it has none.
    pub fn of(change: &str, history: &[nas_plugin_api::MemoryEntry]) -> Option<ChangeStats> {
        ChangeStats::over(history.iter().filter(|e| e.suggestion == change))
    }

    /// The closed entries of `entries` taken as attempts of one change (or
    /// of one source of changes); `None` when none is closed.
    pub fn over<'a>(entries: impl IntoIterator<Item = &'a nas_plugin_api::MemoryEntry>) -> Option<ChangeStats> {
        let tried: Vec<&nas_plugin_api::MemoryEntry> = entries.into_iter().filter(|e| e.is_closed()).collect();
        let gains: Vec<f64> = tried.iter().filter_map(|e| e.gain()).collect();
        (!tried.is_empty()).then(|| ChangeStats {
            tried: tried.len(),
            trained: gains.len(),
            new_bests: gains.iter().filter(|g| **g > 0.0).count(),
            mean_gain: (!gains.is_empty()).then(|| gains.iter().sum::<f64>() / gains.len() as f64),
            improvement: gains.iter().fold(0.0, |sum, g| sum + g.max(0.0)) / tried.len() as f64,
        })
    }

    /// The order [`by_gain`] gives: the most improvement per attempt
    /// first; among equal ones (no attempt beat the best), the one whose
    /// trained attempts came closest to it, and those that only failed last.
    pub fn order(a: &Option<ChangeStats>, b: &Option<ChangeStats>) -> std::cmp::Ordering {
        match (a, b) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => b.improvement.total_cmp(&a.improvement).then_with(|| {
                let closeness = |s: &ChangeStats| s.mean_gain.unwrap_or(f64::NEG_INFINITY);
                closeness(b).total_cmp(&closeness(a))
            }),
        }
    }
}

/// `open` (changes of [`FALLBACK_CHANGES`], in the seeded order of
/// [`open_fallback_changes`]) ordered by what each gave in `history` (the
/// chain's memory entries, whose suggestion is the change itself;
/// [`ChangeStats`]): the changes not yet tried first, then those tried by
/// their improvement per attempt (the search is after a new best, so a
/// change that beat the best once in three attempts goes before one that
/// always comes close and never beats it), then, among those that never
/// beat the best, the one whose trained attempts came closest, and those
/// that only failed last. Ties keep the seeded order.
pub fn by_gain(open: Vec<&'static str>, history: &[nas_plugin_api::MemoryEntry]) -> Vec<&'static str> {
    let mut ranked: Vec<(&'static str, Option<ChangeStats>)> =
        open.into_iter().map(|c| (c, ChangeStats::of(c, history))).collect();
    ranked.sort_by(|a, b| ChangeStats::order(&a.1, &b.1));
    ranked.into_iter().map(|(c, _)| c).collect()
}

/// Whether entry `e` was tried on the best design of accuracy `best`: it
/// was opened while that design was the best, the one the next attempt
/// changes.
fn tried_on(e: &nas_plugin_api::MemoryEntry, best: Option<f64>) -> bool {
    best.is_some() && e.best_before == best
}

/// Words of a change to the training, which the search keeps fixed (one
/// epoch of the dataset's recipe), as (word, what it is called).
const RECIPE_WORDS: [(&str, &str); 14] = [
    ("epoch", "more epochs"),
    ("epochs", "more epochs"),
    ("lr", "the learning rate"),
    ("optimizer", "the optimizer"),
    ("optimiser", "the optimizer"),
    ("adam", "the optimizer"),
    ("adamw", "the optimizer"),
    ("scheduler", "the learning-rate schedule"),
    ("warmup", "the learning-rate schedule"),
    ("augmentation", "data augmentation"),
    ("augment", "data augmentation"),
    ("longer", "longer training"),
    ("momentum", "the optimizer"),
    ("decay", "the optimizer"),
];

/// Words that name a part of the network: a suggestion with one of them
/// changes the design, whatever else it says about training.
const NETWORK_WORDS: &str = "conv conv2d convolution convolutional layer layers channel channels block blocks \
    filter filters kernel linear fc batchnorm batchnorm2d normalization normalisation pool pooling maxpool dropout \
    residual skip stride padding relu activation neurons units depth width head classifier attention";

/// The training change `suggestions` asks for when it names no part of the
/// network (more epochs, another optimizer or learning rate): the generator
/// writes only the network, so followed, it changes nothing (the embedded
/// model's Improver asks for more epochs once its designs train well).
fn recipe_change(suggestions: &str) -> Option<String> {
    let lower = suggestions.to_lowercase();
    let ws = words(&lower);
    if NETWORK_WORDS.split_whitespace().any(|w| ws.contains(w)) || lower.contains("nn.") {
        return None;
    }
    let what = RECIPE_WORDS.iter().find(|(w, _)| ws.contains(*w)).map(|(_, what)| *what).or_else(|| {
        ["learning rate", "batch size", "weight decay", "train for"].iter().find(|p| lower.contains(*p)).map(|p| {
            match *p {
                "learning rate" => "the learning rate",
                "batch size" => "the batch size",
                "weight decay" => "the optimizer",
                _ => "longer training",
            }
        })
    })?;
    Some(format!("it changes the training ({what}), which the search keeps fixed; only the network can change"))
}

/// The parameters `nn.Conv1d`, `Conv2d` and `Conv3d` share.
const CONV: &[&str] = &[
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
    "device",
    "dtype",
];
/// The parameters `nn.BatchNorm1d`, `BatchNorm2d` and `InstanceNorm2d` share.
const NORM: &[&str] = &["num_features", "eps", "momentum", "affine", "track_running_stats", "device", "dtype"];
/// The one parameter of the in-place activations.
const INPLACE: &[&str] = &["inplace"];
/// The constructor parameters of common `torch.nn` layers (torch 2.x, as
/// `inspect.signature` gives them). `nn.Identity` takes anything and is not
/// listed; neither is a layer this table does not know.
const LAYER_PARAMETERS: &[(&str, &[&str])] = &[
    ("Conv1d", CONV),
    ("Conv2d", CONV),
    ("Conv3d", CONV),
    (
        "ConvTranspose2d",
        &[
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "output_padding",
            "groups",
            "bias",
            "dilation",
            "padding_mode",
            "device",
            "dtype",
        ],
    ),
    ("Linear", &["in_features", "out_features", "bias", "device", "dtype"]),
    ("BatchNorm1d", NORM),
    ("BatchNorm2d", NORM),
    ("LayerNorm", &["normalized_shape", "eps", "elementwise_affine", "bias", "device", "dtype"]),
    ("GroupNorm", &["num_groups", "num_channels", "eps", "affine", "device", "dtype"]),
    ("InstanceNorm2d", NORM),
    ("Dropout", &["p", "inplace"]),
    ("Dropout2d", &["p", "inplace"]),
    ("MaxPool2d", &["kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"]),
    ("AvgPool2d", &["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]),
    ("AdaptiveAvgPool2d", &["output_size"]),
    ("AdaptiveMaxPool2d", &["output_size", "return_indices"]),
    ("ReLU", INPLACE),
    ("ReLU6", INPLACE),
    ("LeakyReLU", &["negative_slope", "inplace"]),
    ("GELU", &["approximate"]),
    ("SiLU", INPLACE),
    ("ELU", &["alpha", "inplace"]),
    ("PReLU", &["num_parameters", "init", "device", "dtype"]),
    ("Sigmoid", &[]),
    ("Tanh", &[]),
    ("Softmax", &["dim"]),
    ("LogSoftmax", &["dim"]),
    ("Flatten", &["start_dim", "end_dim"]),
    ("Upsample", &["size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"]),
];

/// The first `nn.<Layer>(..., name=...)` in `suggestions` whose layer does
/// not take `name`. Recorded: `nn.Linear(128, num_classes, bias=False,
/// weight_regularizer='l2', weight_decay=0.0001)`, and a `weight_initializer`
/// given to `nn.Conv2d`.
fn invented_argument(suggestions: &str) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = suggestions[from..].find("nn.") {
        let at = from + pos + "nn.".len();
        from = at;
        if suggestions[..at - 3].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = suggestions[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !suggestions[at + name.len()..].starts_with('(') {
            continue;
        }
        let Some(&(_, params)) = LAYER_PARAMETERS.iter().find(|(n, _)| *n == name) else { continue };
        // An unclosed call (the text cut short) is not read.
        let Some((parts, _)) = super::repair::call_args(&suggestions[at + name.len()..]) else { continue };
        for part in parts {
            let Some((key, value)) = part.split_once('=') else { continue };
            let key = key.trim();
            if super::repair::is_ident(key) && !value.starts_with('=') && !params.contains(&key) {
                return Some(format!("it gives `nn.{name}` an argument it does not take (`{key}`)"));
            }
        }
    }
    None
}

/// The sentences of a suggestion: its lines and `;`-separated parts, split
/// at each ". ".
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', ';']).flat_map(|l| l.split(". "))
}

/// The lowercase words, in order, of each sentence of `suggestions` that
/// has none of `unless` (the words of a sentence that takes away or avoids
/// what a refusal looks for).
fn asking<'a>(suggestions: &'a str, unless: &'a [&str]) -> impl Iterator<Item = Vec<String>> + 'a {
    sentences(suggestions)
        .map(|sentence| {
            let lower = sentence.to_lowercase();
            lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
        })
        .filter(move |ws: &Vec<String>| !ws.iter().any(|w| unless.contains(&w.as_str())))
}

/// Words that name an activation a suggestion may put on the network's
/// output.
const OUTPUT_ACTIVATIONS: [&str; 5] = ["relu", "softmax", "sigmoid", "tanh", "activation"];

/// What a suggestion calls the layer that gives the logits, after "after
/// the last" or "after the final".
const OUTPUT_LAYERS: [&str; 7] = ["linear", "fully", "fc", "classifier", "output", "dense", "head"];

/// The activation a sentence of `suggestions` asks to put on the logits
/// `forward` returns: "a final ReLU activation", "a relu activation function
/// after the last nn.Linear layer", "softmax on the output". Recorded
/// (the fourth target run, iterations 18 to 23): the embedded model's
/// Improver asked for "a final activation layer (ReLU)" in every answer;
/// followed, the designs trained below the best they changed, and the
/// generator copied the ReLU into the next attempts. Cross-entropy takes the
/// logits raw. A sentence that removes or replaces (the good change) is left
/// alone, as is a log-softmax.
fn output_activation(suggestions: &str) -> Option<String> {
    for sentence in asking(suggestions, &["remove", "delete", "drop", "replace", "without", "instead"]) {
        let ws: Vec<&str> = sentence.iter().map(String::as_str).collect();
        let activation =
            |i: usize| OUTPUT_ACTIVATIONS.contains(&ws[i]) && !(ws[i] == "softmax" && i > 0 && ws[i - 1] == "log");
        let found = (0..ws.len()).filter(|&i| activation(i)).find_map(|i| {
            // "a final ReLU (activation)", not "before the final relu".
            let final_before =
                (i.saturating_sub(2)..i).find(|&j| ws[j] == "final").filter(|&j| j < 2 || ws[j - 2] != "before");
            // "... after the last/final [nn.]Linear", "... on/to the output/logits".
            let rest = &ws[i + 1..];
            let after_output = rest.windows(3).enumerate().any(|(k, w)| {
                w[0] == "after"
                    && w[1] == "the"
                    && ["last", "final", "output"].contains(&w[2])
                    && rest[k + 3..].iter().take(2).any(|l| OUTPUT_LAYERS.contains(l))
            });
            let on_output = rest.windows(3).any(|w| {
                ["on", "to"].contains(&w[0]) && w[1] == "the" && ["output", "logits", "outputs"].contains(&w[2])
            });
            (final_before.is_some() || after_output || on_output).then_some(ws[i])
        });
        if let Some(what) = found {
            let what = if what == "activation" { "an activation".to_string() } else { format!("a {what}") };
            return Some(format!(
                "it asks for {what} on the logits `forward` returns (after the last nn.Linear); the logits stay raw, \
                 since cross-entropy applies its own softmax"
            ));
        }
    }
    None
}

/// Words that resize an image.
const RESIZE_WORDS: [&str; 8] =
    ["resize", "resized", "resizing", "upsample", "upsampling", "upscale", "interpolate", "interpolation"];

/// The request of a sentence of `suggestions` to resize the input images
/// ("resize the input images to 224x224 before feeding them to the VGG16
/// model"). Recorded (the fourth target run, iterations 32 to 37): followed
/// with `F.interpolate`, the design ran the check out of memory (its head
/// sized for 224x224 maps); with `nn.ReflectionPad2d`, it failed to build;
/// then as a pooling. The images reach the network at the dataset's size: a
/// larger copy adds no detail and multiplies every layer's cost. A sentence
/// that removes or avoids the resizing is left alone.
fn input_resize(suggestions: &str) -> Option<String> {
    for ws in asking(suggestions, &["remove", "delete", "drop", "not", "don", "without", "avoid"]) {
        let has = |w: &str| ws.iter().any(|x| x == w);
        if RESIZE_WORDS.iter().any(|w| has(w)) && ["input", "inputs", "image", "images"].iter().any(|w| has(w)) {
            return Some(
                "it asks to resize the input images, which reach the network at the dataset's size; a larger copy \
                 adds no detail and multiplies every layer's cost"
                    .into(),
            );
        }
    }
    None
}

/// Layer words a suggestion may ask to remove, looked up in the code as
/// they are (case-insensitively).
const LAYER_WORDS: [&str; 7] = ["softmax", "dropout", "batchnorm", "maxpool", "avgpool", "sigmoid", "tanh"];

/// The first thing a "replace"/"remove" sentence of `suggestions` names —
/// an attribute `self.<name>` or a layer word — when `code` does not have
/// it. Sentences that also add or insert are left alone.
fn absent_target(suggestions: &str, code: &str) -> Option<String> {
    let code_lower = code.to_lowercase();
    for sentence in sentences(suggestions) {
        let lower = sentence.to_lowercase();
        let ws = words(&lower);
        if ws.contains("add") || ws.contains("insert") {
            continue;
        }
        let Some((verb, at)) = ["replace", "remove", "delete"]
            .iter()
            .filter_map(|v| word_at(&lower, v).map(|i| (*v, i + v.len())))
            .min_by_key(|(_, i)| *i)
        else {
            continue;
        };
        let rest = &lower[at..];
        let attribute = rest.find("self.").map(|i| {
            let name: String = rest[i + 5..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (i, format!("self.{name}"))
        });
        let layer = LAYER_WORDS.iter().filter_map(|w| rest.find(w).map(|i| (i, w.to_string()))).min();
        let target = match (attribute, layer) {
            (Some(a), Some(l)) => Some(if a.0 <= l.0 { a } else { l }),
            (a, l) => a.or(l),
        };
        if let Some((_, thing)) = target.filter(|(_, t)| t != "self." && !code_lower.contains(t.as_str())) {
            return Some(format!("it asks to {verb} `{thing}`, which this design does not have"));
        }
    }
    None
}

/// What of `code` takes part in the net: comments cut off, and the
/// definitions of attributes nothing else uses dropped (a design whose
/// `x = self.softmax(x)` is commented out has no softmax, though `__init__`
/// still defines `self.softmax`). What a suggestion may ask to replace or
/// remove is looked up in this.
pub fn effective(code: &str) -> String {
    let live: Vec<&str> = code.lines().map(|l| l.split('#').next().unwrap_or_default()).collect();
    let defined = |line: &str| -> Option<String> {
        let rest = line.trim_start().strip_prefix("self.")?;
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after = rest[name.len()..].trim_start();
        (!name.is_empty() && after.starts_with('=') && !after.starts_with("==")).then_some(name)
    };
    let used = |name: &str, skip: usize| {
        let needle = format!("self.{name}");
        live.iter().enumerate().filter(|(i, _)| *i != skip).any(|(_, l)| {
            l.match_indices(&needle)
                .any(|(at, _)| !l[at + needle.len()..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_'))
        })
    };
    live.iter()
        .enumerate()
        .filter(|(i, l)| defined(l).is_none_or(|name| used(&name, *i)))
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `word` starts in `text` as a whole word.
fn word_at(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = text[i + word.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        before && after
    })
}

/// Reads an Improver answer. Never fails: an answer with no structure
/// becomes raw suggestions (`parsed_as: "raw"`).
pub fn parse(answer: &str) -> Advice {
    for f in super::extract::fences(answer) {
        if f.lang == "json" || f.body.trim_start().starts_with('{') {
            if let Some(a) = from_json_text(f.body, "json_fence") {
                return a;
            }
        }
    }
    for candidate in balanced_objects(answer) {
        if let Some(a) = from_json_text(candidate, "bare_object") {
            return a;
        }
    }
    if let Some(a) = lenient(answer) {
        return a;
    }
    Advice {
        problem: String::new(),
        inspiration: String::new(),
        suggestions: answer.trim().to_string(),
        parsed_as: "raw".into(),
        rejected: None,
        fallback: None,
    }
}

fn from_json_text(text: &str, how: &str) -> Option<Advice> {
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .or_else(|_| serde_json::from_str(&strip_trailing_commas(text.trim())))
        .ok()?;
    from_value(&value, how)
}

fn from_value(value: &serde_json::Value, how: &str) -> Option<Advice> {
    let obj = value.as_object()?;
    let get = |keys: &[&str]| keys.iter().find_map(|k| obj.get(*k)).map(flatten).unwrap_or_default();
    let suggestions = get(&["improvement_suggestions", "suggestions", "improvements", "suggestion"]);
    let problem = get(&["reason", "analysis", "problem", "diagnosis"]);
    if suggestions.is_empty() && problem.is_empty() {
        return None;
    }
    Some(Advice {
        problem,
        inspiration: get(&["inspiration"]),
        suggestions,
        parsed_as: how.into(),
        rejected: None,
        fallback: None,
    })
}

/// A JSON value as prose: strings as they are, lists as numbered lines,
/// objects as `key: value` pairs.
fn flatten(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(flatten)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect::<Vec<_>>()
            .join("\n"),
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{k}: {}", flatten(v))).collect::<Vec<_>>().join("; ")
        }
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strip_trailing_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if !matches!(next, Some('}') | Some(']')) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// Every balanced `{...}` span of the text (outermost first), respecting strings.
fn balanced_objects(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            let (mut depth, mut j, mut in_str) = (0usize, i, false);
            while j < bytes.len() {
                let b = bytes[j];
                if in_str {
                    if b == b'\\' {
                        j += 1;
                    } else if b == b'"' {
                        in_str = false;
                    }
                } else if b == b'"' {
                    in_str = true;
                } else if b == b'{' {
                    depth += 1;
                } else if b == b'}' {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                j += 1;
            }
            if j < bytes.len() {
                out.push(&text[i..=j]);
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// `reason: ...` / `"improvement_suggestions": "...` pairs, for answers that
/// are almost JSON or plain key-value prose: each known key followed by `:`
/// or `=` starts a value that runs to the next key.
fn lenient(text: &str) -> Option<Advice> {
    const KEYS: [(&str, &str); 7] = [
        ("improvement_suggestions", "suggestions"),
        ("improvement suggestions", "suggestions"),
        ("suggestions", "suggestions"),
        ("inspiration", "inspiration"),
        ("analysis", "problem"),
        ("problem", "problem"),
        ("reason", "problem"),
    ];
    let lower = text.to_ascii_lowercase();
    // (start of key, start of value, slot)
    let mut hits: Vec<(usize, usize, &str)> = Vec::new();
    for (name, slot) in KEYS {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(name) {
            let start = from + pos;
            from = start + name.len();
            let boundary = lower[..start].chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            let after = &lower[from..];
            let skipped = after.len() - after.trim_start_matches(['"', '*', ' ', '\'']).len();
            let sep = after[skipped..].chars().next();
            if boundary && matches!(sep, Some(':') | Some('=')) {
                hits.push((start, from + skipped + 1, slot));
            }
        }
    }
    hits.sort_by_key(|h| h.0);
    // Drop keys found inside a longer key (`suggestions` in `improvement_suggestions`).
    let mut kept: Vec<(usize, usize, &str)> = Vec::new();
    for h in hits {
        if kept.last().is_none_or(|k| h.0 >= k.1) {
            kept.push(h);
        }
    }
    let clean = |s: &str| {
        s.trim()
            .trim_start_matches('"')
            .trim_end_matches(['}', ',', ' ', '\n'])
            .trim_end_matches('"')
            .trim()
            .to_string()
    };
    let mut advice = Advice { parsed_as: "lenient".into(), ..Default::default() };
    for (i, (_, value_start, slot)) in kept.iter().enumerate() {
        let end = kept.get(i + 1).map_or(text.len(), |n| n.0);
        let value = clean(&text[*value_start..end]);
        let target = match *slot {
            "suggestions" => &mut advice.suggestions,
            "inspiration" => &mut advice.inspiration,
            _ => &mut advice.problem,
        };
        if target.is_empty() {
            *target = value;
        }
    }
    (!advice.suggestions.is_empty()).then_some(advice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::MemoryEntry;

    /// A diagnosis as the Improver's JSON answer gives it.
    fn diagnosis(problem: &str, suggestions: &str) -> Advice {
        Advice {
            problem: problem.into(),
            suggestions: suggestions.into(),
            parsed_as: "json_fence".into(),
            ..Default::default()
        }
    }

    #[test]
    fn template_copies_and_repeats_are_not_diagnoses() {
        let copied = parse(
            r#"```json
{"reason": "the main problem with the current design, or why it scored what it did", "inspiration": "a known architecture or technique to borrow from", "improvement_suggestions": "Add BatchNorm after each conv."}
```"#,
        );
        assert!(rejection(&copied, &Checked::default()).is_some_and(|r| r.contains("reason")), "{copied:?}");
        let described =
            parse(&format!("{{\"reason\": \"x\", \"improvement_suggestions\": \"{}\"}}", ANSWER_KEYS[2].description));
        assert!(rejection(&described, &Checked::default()).is_some_and(|r| r.contains("improvement_suggestions")));
        let real = parse(
            r#"{"reason": "fc1 expects 12544 inputs but the two poolings leave 64x7x7 = 3136", "improvement_suggestions": "Set fc1 = nn.Linear(3136, 256)."}"#,
        );
        assert_eq!(rejection(&real, &Checked::default()), None);
        let again = parse(
            r#"{"reason": "fc1 expects 12544 inputs but the two poolings leave 64x7x7 = 3136.", "improvement_suggestions": "set fc1 = nn.Linear(3136, 256)"}"#,
        );
        assert_eq!(
            rejection(&again, &Checked { previous: Some(&real), ..Default::default() }).as_deref(),
            Some("it repeats the previous diagnosis")
        );
        assert!(rejection(&parse("{}"), &Checked::default()).is_some());
    }

    /// The design a run's Improver diagnosed at attempt 2 (89.05 %): its
    /// softmax was removed at that attempt.
    const NO_SOFTMAX: &str = "class Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        self.fc1 = nn.Linear(64 * 7 * 7, 128)\n        self.relu3 = nn.ReLU()\n        self.fc2 = nn.Linear(128, num_classes)\n    def forward(self, x):\n        x = self.relu3(self.fc1(x.flatten(1)))\n        return self.fc2(x)\n";

    #[test]
    fn advice_to_remove_what_the_design_does_not_have_is_not_a_diagnosis() {
        // Recorded: the 1.5B Improver copied attempt 1's advice onto attempt
        // 2, which had already taken it.
        let stale = parse(
            r#"```json
{"reason": "The current design applies a softmax to its output, but the training loss (cross-entropy) expects raw logits and applies its own softmax layer.", "inspiration": "The softmax layer is unnecessary for classification tasks.", "improvement_suggestions": "Replace the line x = self.softmax(x) with x = x. This will remove the softmax layer from the network."}
```"#,
        );
        let checked = Checked { code: Some(NO_SOFTMAX), ..Default::default() };
        assert_eq!(
            rejection(&stale, &checked).as_deref(),
            Some("it asks to replace `self.softmax`, which this design does not have")
        );
        let with_softmax = format!("{NO_SOFTMAX}        self.softmax = nn.Softmax(dim=1)\n");
        assert_eq!(rejection(&stale, &Checked { code: Some(&with_softmax), ..Default::default() }), None);
        let bare = parse(
            r#"{"reason": "it ends in a softmax", "improvement_suggestions": "Remove the softmax at the end of forward."}"#,
        );
        assert!(rejection(&bare, &checked).is_some_and(|r| r.contains("`softmax`")));
        for fine in [
            r#"{"reason": "fc1 is narrow", "improvement_suggestions": "Replace self.fc1 = nn.Linear(3136, 128) with nn.Linear(3136, 256)."}"#,
            r#"{"reason": "no regularisation", "improvement_suggestions": "Add dropout: self.drop = nn.Dropout(0.3) before self.fc2, and replace nothing else."}"#,
            r#"{"reason": "too shallow", "improvement_suggestions": "Add a third conv block with 128 channels."}"#,
        ] {
            assert_eq!(rejection(&parse(fine), &checked), None, "{fine}");
        }
    }

    #[test]
    fn a_softmax_defined_but_no_longer_applied_is_not_there_to_remove() {
        // Recorded: the generator commented the call out and left the layer.
        let code = format!("{NO_SOFTMAX}        self.softmax = nn.Softmax(dim=1)\n        # x = self.softmax(x)\n");
        let seen = effective(&code);
        assert!(!seen.contains("softmax") && seen.contains("self.fc2 = nn.Linear"), "{seen}");
        let stale = parse(
            r#"{"reason": "it applies a softmax", "improvement_suggestions": "Remove the `self.softmax` call before returning the output in the `forward` method."}"#,
        );
        assert_eq!(
            rejection(&stale, &Checked { code: Some(&seen), ..Default::default() }).as_deref(),
            Some("it asks to remove `self.softmax`, which this design does not have")
        );
        // Applied in forward, it is there.
        let applied = format!("{NO_SOFTMAX}        self.softmax = nn.Softmax(dim=1)\n    def f(self, x):\n        return self.softmax(x)\n");
        assert_eq!(rejection(&stale, &Checked { code: Some(&effective(&applied)), ..Default::default() }), None);
    }

    #[test]
    fn a_diagnosis_already_tried_is_not_given_again() {
        let tried = MemoryEntry {
            iteration: 4,
            problem: "fc1 is too narrow for 3136 features".into(),
            suggestion: "Set fc1 = nn.Linear(3136, 256).".into(),
            outcome: Some("accuracy: 88.68%".into()),
            accuracy: Some(0.8868),
            failure_kind: None,
            best_before: Some(0.8905),
        };
        let earlier = [tried.clone()];
        let again = parse(
            r#"{"reason": "fc1 is too narrow for 3136 features.", "improvement_suggestions": "set fc1 = nn.Linear(3136, 256)"}"#,
        );
        let checked = Checked { earlier: &earlier, ..Default::default() };
        assert_eq!(
            rejection(&again, &checked).as_deref(),
            Some("it repeats the diagnosis of attempt 4, which was already tried (accuracy: 88.68%)")
        );
        // Recorded: the same change with a sentence of explanation added.
        let explained = parse(
            r#"{"reason": "fc1 is too narrow for 3136 features", "improvement_suggestions": "Set fc1 = nn.Linear(3136, 256). This gives the head more room to separate the ten classes."}"#,
        );
        assert!(rejection(&explained, &checked).is_some_and(|r| r.contains("attempt 4")));
        // Still open (its result not in yet): the previous-diagnosis rule decides.
        let open = [MemoryEntry { outcome: None, ..tried }];
        assert_eq!(rejection(&again, &Checked { earlier: &open, ..Default::default() }), None);
        let other = parse(
            r#"{"reason": "only two conv blocks", "improvement_suggestions": "Add a third conv block with 128 channels."}"#,
        );
        assert_eq!(rejection(&other, &checked), None);
        // The same change for another problem (a different error) is one.
        let elsewhere = parse(
            r#"{"reason": "the flattened features are 2304, the first Linear expects 12544", "improvement_suggestions": "Set fc1 = nn.Linear(3136, 256)."}"#,
        );
        assert_eq!(rejection(&elsewhere, &checked), None);
    }

    #[test]
    fn the_same_change_under_a_reworded_problem_is_a_repeat() {
        // Recorded (embedded model, attempts 1 and 5 of one run): the
        // problem reworded and shortened by a sentence, the change word for
        // word; its problem sentences share 60 % of their words.
        let first = MemoryEntry {
            iteration: 1,
            problem: "The architecture uses multiple 2x2 pooling layers, which can reduce the spatial dimensions of the feature maps. This can lead to less information being retained, potentially leading to underfitting or worse performance. Increasing the number of pooling layers or decreasing the size of the feature maps may improve the performance.".into(),
            suggestion: "Replace the current 2x2 pooling layers with 3x3 pooling layers, or reduce the size of the feature maps by using smaller convolutions. This can help retain more information and improve the performance.".into(),
            outcome: Some("accuracy: 88.13%".into()),
            accuracy: Some(0.8813),
            failure_kind: None,
            best_before: Some(0.8905),
        };
        let reworded = diagnosis("The current design uses multiple 2x2 pooling layers, which can reduce the spatial dimensions of the feature maps. This can lead to less information being retained, potentially leading to underfitting or worse performance.", &first.suggestion);
        let earlier = [first];
        let why = rejection(&reworded, &Checked { earlier: &earlier, ..Default::default() });
        assert!(why.is_some_and(|w| w.contains("attempt 1")));
    }

    #[test]
    fn a_change_already_tried_on_this_best_is_a_repeat_whatever_its_problem() {
        // Recorded (embedded model, attempts 9 and 11 of one run, the best
        // unchanged between them): the same change for a problem reworded
        // past the problem rule; followed, it gave attempt 7's design again.
        let tried = MemoryEntry {
            iteration: 9,
            problem: "The addition of the third convolutional layer (conv3) and the corresponding linear layer (fc3) increased the depth of the model but did not significantly improve the test accuracy. The increase in parameters from 239658 to 242021 may have been a factor in the slight decrease in accuracy.".into(),
            suggestion: "Replace the last two layers with a smaller convolutional layer (e.g., 32x32 kernel) followed by a linear layer. This will allow the model to learn more efficiently and achieve higher accuracy.".into(),
            outcome: Some("error: runtime: the forward pass on a dummy batch of shape [2, 1, 28, 28] raised NotImplementedError".into()),
            accuracy: None,
            failure_kind: Some("runtime".into()),
            best_before: Some(0.8992),
        };
        let again = Advice { inspiration: "VGG16 or ResNet".into(), ..diagnosis("The architecture includes a third convolutional layer and a corresponding linear layer, which are added without any context on what these layers are supposed to do or what their expected performance is. This adds unnecessary complexity and may not be necessary for the specific dataset. The use of a pooling layer at the end of the architecture also reduces the spatial dimensions of the feature maps, which can potentially lead to underfitting and a higher test accuracy. A smaller convolutional layer followed by a linear layer is a known technique that can help reduce the number of parameters and potentially improve performance.", &tried.suggestion) };
        let earlier = [tried];
        let on = |best: Option<f64>| rejection(&again, &Checked { earlier: &earlier, best, ..Default::default() });
        assert_eq!(
            on(Some(0.8992)).as_deref(),
            Some("it repeats the change of attempt 9, already tried on this best design (error: runtime: the forward pass on a dummy batch of shape [2, 1, 28, 28] raised NotImplementedError)")
        );
        // A new best is a new base: the change may be tried on it.
        assert_eq!(on(Some(0.9013)), None);
        assert_eq!(on(None), None);
        // Another change on the same best is a diagnosis.
        let other = Advice { suggestions: "Add nn.BatchNorm2d(64) after conv2.".into(), ..again.clone() };
        assert_eq!(rejection(&other, &Checked { earlier: &earlier, best: Some(0.8992), ..Default::default() }), None);
    }

    #[test]
    fn a_fallback_change_is_one_the_best_design_lacks_and_was_not_tried_on_it() {
        let best = "self.conv1 = nn.Conv2d(1, 32, 3, padding=1)\nself.bn1 = nn.BatchNorm2d(32)\nself.fc = nn.Linear(32 * 7 * 7, 10)";
        let picked = |earlier: &[MemoryEntry], t| fallback_change(earlier, Some((0.8956, best)), 43, t);
        let first = picked(&[], 6).expect("a change");
        assert_ne!(first, FALLBACK_CHANGES[0].0, "the design has batch norm");
        assert_eq!(picked(&[], 6), Some(first), "the same seed and iteration pick the same change");
        // Tried on this best: not given again. Tried on another best: may be.
        let tried = |change: &str, best_before| MemoryEntry {
            iteration: 5,
            problem: String::new(),
            suggestion: change.into(),
            outcome: Some("accuracy: 89.21%".into()),
            accuracy: Some(0.8921),
            failure_kind: None,
            best_before: Some(best_before),
        };
        // All but batch norm after each conv (it has it) and batch norm in a
        // one-layer head (a hidden layer is offered to it).
        let open = FALLBACK_CHANGES.len() - 2;
        let mut earlier = Vec::new();
        for t in 0..open as u64 {
            let change = picked(&earlier, 6 + t).expect("one left");
            assert!(earlier.iter().all(|e: &MemoryEntry| e.suggestion != change), "{change} given twice");
            earlier.push(tried(change, 0.8956));
        }
        assert_eq!(picked(&earlier, 20), None, "every change was tried on this best");
        let elsewhere: Vec<MemoryEntry> =
            earlier.iter().map(|e| MemoryEntry { best_before: Some(0.89), ..e.clone() }).collect();
        assert!(picked(&elsewhere, 20).is_some());
        assert_eq!(fallback_change(&[], None, 43, 6), None, "no best design, nothing to change");
    }

    #[test]
    fn by_gain_the_untried_changes_come_first_then_those_that_beat_the_best_then_the_closest() {
        let change = |i: usize| FALLBACK_CHANGES[i].0;
        let (dropout, wider_conv, one_more_conv, kernel5, wider_head, head_norm) = (1, 2, 3, 4, 5, 6);
        let entry = |i: usize, accuracy: Option<f64>, best_before: f64| MemoryEntry {
            iteration: 5,
            problem: FALLBACK_PROBLEM.into(),
            suggestion: change(i).into(),
            outcome: Some(accuracy.map_or("error: runtime".to_string(), |a| format!("accuracy: {:.2}%", a * 100.0))),
            accuracy,
            failure_kind: accuracy.is_none().then(|| "runtime".to_string()),
            best_before: Some(best_before),
        };
        // The third target run's: the dropout always close below the best;
        // one more convolution twice a new best, twice well below.
        let history = vec![
            entry(dropout, Some(0.8975), 0.9018),
            entry(dropout, Some(0.8996), 0.9023),
            entry(one_more_conv, Some(0.8930), 0.8895),
            entry(one_more_conv, Some(0.9018), 0.8994),
            entry(one_more_conv, Some(0.8841), 0.9018),
            entry(one_more_conv, Some(0.8933), 0.9074),
            entry(wider_conv, Some(0.9030), 0.9023),
            entry(wider_conv, Some(0.8876), 0.9018),
            entry(kernel5, Some(0.8845), 0.8994),
            entry(wider_head, None, 0.9030),
            // Open (its outcome not known yet): no evidence.
            MemoryEntry { outcome: None, accuracy: None, ..entry(head_norm, None, 0.9074) },
        ];
        let stats = ChangeStats::of(change(one_more_conv), &history).expect("tried");
        assert_eq!((stats.tried, stats.trained, stats.new_bests), (4, 4, 2));
        assert!((stats.improvement - (0.0035 + 0.0024) / 4.0).abs() < 1e-9, "{stats:?}");
        assert!((stats.mean_gain.unwrap_or(0.0) - (0.0035 + 0.0024 - 0.0177 - 0.0141) / 4.0).abs() < 1e-9, "{stats:?}");
        assert_eq!(ChangeStats::of(change(wider_head), &history).map(|s| (s.trained, s.mean_gain)), Some((0, None)));
        assert_eq!(ChangeStats::of(change(head_norm), &history), None);

        let open = vec![
            change(dropout),
            change(wider_head),
            change(kernel5),
            change(head_norm),
            change(one_more_conv),
            change(wider_conv),
        ];
        assert_eq!(
            by_gain(open.clone(), &history),
            [
                change(head_norm),     // untried
                change(one_more_conv), // 0.15 points per attempt
                change(wider_conv),    // 0.035
                change(dropout),       // none: -0.35 below the best on average
                change(kernel5),       // none: -1.49
                change(wider_head),    // only failed
            ]
        );
        // Without a history the seeded order stands.
        assert_eq!(by_gain(open.clone(), &[]), open);
        // A suggestion in the Improver's own words is not a common change's evidence.
        let own = vec![MemoryEntry { suggestion: "Add dropout.".into(), ..entry(dropout, Some(0.95), 0.9) }];
        assert_eq!(by_gain(open.clone(), &own), open);
    }

    #[test]
    fn a_pooling_change_fits_a_design_pooled_once_and_a_head_norm_a_two_layer_head() {
        let has = |i: usize, code: &str| (FALLBACK_CHANGES[i].1)(code);
        let (head_norm, second_pool) = (6, 7);
        // The best design of the last embedded run: one pooling, a 12544 -> 512 -> 10 head.
        let best = include_str!("../../../docs/results/embedded-run/run-28/best.py");
        assert!(!has(head_norm, best) && !has(second_pool, best));
        // A pool layer called twice in `forward` pools twice.
        let twice = best.replace("x = self.relu3(x)\n", "x = self.relu3(x)\n        x = self.pool1(x)\n");
        assert_eq!(pools(&twice), 2);
        assert!(has(second_pool, &twice));
        // Blocks in nn.Sequential: the layers are counted.
        let blocks = "self.f = nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.MaxPool2d(2))\n    def forward(self, x):\n        return self.fc(self.f(x).flatten(1))";
        assert!(has(second_pool, blocks));
        assert!(has(head_norm, &best.replace("nn.Dropout(0.3)", "nn.BatchNorm1d(512)")));
    }

    #[test]
    fn a_hidden_layer_is_offered_to_a_head_of_one_used_linear() {
        let offered = |code: &str| !(FALLBACK_CHANGES[8].1)(code);
        assert!(FALLBACK_CHANGES[8].0.starts_with("Add a hidden layer before the last nn.Linear"));
        // The target run's best builds fc1 and never calls it: one used.
        let best = include_str!("../../../docs/results/embedded-run/target-run/best.py");
        assert_eq!(linears_used(best), 1);
        assert!(offered(best));
        // A 12544 -> 512 -> 10 head has one already; a net without nn.Linear is left.
        assert!(!offered(include_str!("../../../docs/results/embedded-run/run-28/best.py")));
        assert!(!offered("self.conv = nn.Conv2d(1, 10, 28)"));
        assert_eq!(linears_used("self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10))"), 2);
    }

    #[test]
    fn a_wider_head_is_offered_until_the_first_linear_has_the_widest_head() {
        let wider = |code: &str| (FALLBACK_CHANGES[5].1)(code);
        assert!(FALLBACK_CHANGES[5].0.starts_with("Double the out_features of the first nn.Linear"));
        // 12544 -> 512: offered; the 38-iteration run's best, 6272 -> 2048: not.
        assert!(!wider(include_str!("../../../docs/results/embedded-run/run-28/best.py")));
        assert!(wider(include_str!("../../../docs/results/embedded-run/run-38/best.py")));
        assert!(wider("self.fc1 = nn.Linear(in_features=6272, out_features=4096)"));
        assert!(!wider("self.fc1 = nn.Linear(6272, 1024)\n        self.fc2 = nn.Linear(1024, 4096)"));
        // A width the code computes is not read: offered.
        assert!(!wider("self.fc1 = nn.Linear(6272, 2 * width)"));
    }

    #[test]
    fn a_json_fence_with_the_paper_keys() {
        let a = parse("Sure.\n```json\n{\"reason\": \"Flatten size is wrong.\", \"inspiration\": \"VGG\", \"improvement_suggestions\": \"Use adaptive pooling.\"}\n```");
        assert_eq!(a.parsed_as, "json_fence");
        assert_eq!(a.problem, "Flatten size is wrong.");
        assert_eq!(a.inspiration, "VGG");
        assert_eq!(a.suggestions, "Use adaptive pooling.");
    }

    #[test]
    fn the_cifar100_variant_and_a_bare_object() {
        let a =
            parse("My answer: {\"analysis\": \"Underfits.\", \"improvement_suggestions\": \"Wider layers.\",} thanks");
        assert_eq!(a.parsed_as, "bare_object");
        assert_eq!(a.problem, "Underfits.");
        assert_eq!(a.suggestions, "Wider layers.");
    }

    #[test]
    fn suggestions_as_a_list_of_objects() {
        let a = parse("```json\n{\"reason\": \"r\", \"improvement_suggestions\": [{\"change\": \"add BN\", \"why\": \"stability\"}, \"drop lr\"]}\n```");
        assert_eq!(a.suggestions, "1. change: add BN; why: stability\n2. drop lr");
    }

    #[test]
    fn lenient_key_value_lines() {
        let a = parse("reason: the model overfits\nimprovement_suggestions: add dropout\nand augment\n");
        assert_eq!(a.parsed_as, "lenient");
        assert_eq!(a.problem, "the model overfits");
        assert_eq!(a.suggestions, "add dropout\nand augment");
    }

    #[test]
    fn malformed_json_falls_back_to_lenient_then_raw() {
        let a = parse("{\"reason\": \"broken, \"improvement_suggestions\": \"use residuals\"");
        assert_eq!(a.parsed_as, "lenient");
        assert_eq!(a.suggestions, "use residuals");
        let raw = parse("Try a deeper network.");
        assert_eq!(raw.parsed_as, "raw");
        assert_eq!(raw.suggestions, "Try a deeper network.");
    }

    #[test]
    fn a_suggestion_giving_a_layer_an_argument_it_does_not_take_is_refused() {
        // Recorded (embedded model, iteration 1): followed, the design
        // failed to build with a TypeError.
        let recorded = "Add a regularization term. For example: `self.fc2 = nn.Linear(128, num_classes, bias=False, weight_regularizer='l2', weight_decay=0.0001)`.";
        let why = invented_argument(recorded).expect("refused");
        assert!(why.contains("nn.Linear") && why.contains("weight_regularizer"), "{why}");
        assert!(invented_argument("use torch.nn.Conv2d(32, 64, kernel_size=(3, 3), weight_initializer='he')")
            .is_some_and(|w| w.contains("weight_initializer")));
        for fine in [
            "use nn.Conv2d(32, 64, kernel_size=(3, 3), padding=1, bias=False) in the second block",
            "add nn.Dropout(p=0.3) after fc1 and nn.BatchNorm1d(256, momentum=0.1)",
            "use nn.MyBlock(channels=64)",           // not a layer the table knows
            "wrap it in nn.Identity(anything=1)",    // takes anything
            "set nn.Linear(256, 10) and use lr=0.1", // the keyword is outside the call
            "an unclosed nn.ReLU(inplace=True",
        ] {
            assert_eq!(invented_argument(fine), None, "{fine}");
        }
        let advice = diagnosis("the head is small", recorded);
        let why = rejection(&advice, &Checked::default());
        assert!(why.is_some_and(|w| w.contains("does not take")));
    }

    #[test]
    fn an_activation_on_the_logits_is_not_a_direction() {
        // Recorded: the fourth target run's Improver, iterations 18 to 21.
        for recorded in [
            "Add a classifier head with 10 classes and a final activation layer (ReLU) to the current design. This can be done by adding a new nn.Linear layer with 10 in_features and a relu activation function after the last nn.Linear layer.",
            "Add a classifier head with 10 classes and a final ReLU activation to the current design.",
            "Add a classifier head with 10 in_features and a relu activation function after the last nn.Linear layer.",
            "Apply a softmax to the output so the network gives probabilities",
            "add a sigmoid after the final fully connected layer",
        ] {
            let why = output_activation(recorded).unwrap_or_else(|| panic!("not refused: {recorded}"));
            assert!(why.contains("logits") && why.contains("cross-entropy"), "{why}");
        }
        assert!(output_activation("Add a final ReLU activation.").is_some_and(|w| w.contains("a relu on the logits")));
        for fine in [
            "Remove the final ReLU activation after the last nn.Linear.",
            "Replace the final softmax with nothing: return the logits.",
            "Add a dropout before the final relu of the head.",
            "Add nn.BatchNorm1d and a ReLU after the first nn.Linear.",
            "Add a ReLU after the last nn.Conv2d.",
            "Apply log_softmax to the output.",
            "Use a final fully connected layer with 10 outputs.",
        ] {
            assert_eq!(output_activation(fine), None, "{fine}");
        }
        // The search's own changes are never refused by it.
        for (change, _) in FALLBACK_CHANGES {
            assert_eq!(output_activation(change), None, "{change}");
        }
        let advice = diagnosis(
            "the model does not have a final activation layer (ReLU)",
            "Add a final ReLU activation to the current design.",
        );
        assert!(rejection(&advice, &Checked::default()).is_some_and(|w| w.contains("logits")));
    }

    #[test]
    fn resizing_the_input_images_is_not_a_direction() {
        // Recorded: the fourth target run's Improver, iterations 32 to 37.
        for recorded in [
            "Resize the input images to 224x224 before feeding them to the VGG16 model. You can do this by using the torch.nn.functional.interpolate function with the mode='bilinear'.",
            "Add nn.ReflectionPad2d((2,2), (2,2)) right after the first nn.Conv2d in the input layer to add padding and resize the input images to 224x224.",
            "Instead of using `reflection_pad`, use `nn.MaxPool2d` or `nn.AvgPool2d` with a kernel size of 4 to resize the input images to 224x224.",
            "Upsample the input to 56x56 with nn.Upsample(scale_factor=2).",
        ] {
            let why = input_resize(recorded).unwrap_or_else(|| panic!("not refused: {recorded}"));
            assert!(why.contains("resize the input images"), "{why}");
        }
        for fine in [
            "Remove the interpolation of the input images.",
            "Do not resize the images; use a stride-2 first convolution instead.",
            "Add nn.MaxPool2d(2) right after the activation of the last nn.Conv2d.",
            "Use bilinear upsampling in the decoder block of the feature maps.",
        ] {
            assert_eq!(input_resize(fine), None, "{fine}");
        }
        for (change, _) in FALLBACK_CHANGES {
            assert_eq!(input_resize(change), None, "{change}");
        }
        let advice = diagnosis("VGG16 expects 224x224 images", "Resize the input images to 224x224.");
        assert!(rejection(&advice, &Checked::default()).is_some_and(|w| w.contains("dataset's size")));
    }

    #[test]
    fn a_change_to_the_fixed_training_is_not_a_direction() {
        for recipe in [
            "Increase the number of epochs to 5.",
            "Train for longer so the model converges.",
            "Use the Adam optimizer with a learning rate of 0.001.",
            "Lower the learning rate to 0.005 and add a cosine scheduler.",
            "Apply data augmentation (random rotations).",
        ] {
            let why = recipe_change(recipe).unwrap_or_else(|| panic!("refused: {recipe}"));
            assert!(why.contains("keeps fixed") && why.contains("only the network"), "{why}");
        }
        assert!(recipe_change("Increase the number of epochs to 5.").is_some_and(|w| w.contains("more epochs")));
        assert!(recipe_change("Use the Adam optimizer").is_some_and(|w| w.contains("the optimizer")));
        for network in [
            "Add a third conv block with 128 channels; it needs fewer epochs to learn.",
            "Set the BatchNorm momentum to 0.01 in every block.",
            "Replace fc1 with nn.Linear(3136, 256).",
            "Double the width of the first two blocks.",
            "Use a global average pool before the classifier.",
        ] {
            assert_eq!(recipe_change(network), None, "{network}");
        }
        let advice = diagnosis("the network is undertrained after one epoch", "Increase the number of epochs to 10");
        let why = rejection(&advice, &Checked::default());
        assert!(why.is_some_and(|w| w.contains("more epochs")));
    }
}
