//! Training sets for the fine-tuner: prompt → answer examples
//! ([`TrainingExample`], one JSON object a line) built from the LEMUR
//! dataset's models and statistics, or read from a `nas export` corpus or
//! the user's own JSONL.
//!
//! The LEMUR seed corpus ("Delta-Based NAS", "From Memorization to
//! Creativity" start their fine-tuning cycles from it):
//!
//! 1. [`wheel`]: the `nn-dataset==2.1.2` wheel (pinned sha256) is fetched
//!    into `$NAS_HOME/corpus/` and read as a zip: about 10,500 model files
//!    and, per dataset, each model's first-epoch accuracy;
//! 2. [`convert`]: each model is rewritten in the search's contract
//!    (`Net(in_shape, num_classes)`), so that it answers the prompt the
//!    generator sees;
//! 3. [`lemur_corpus`]: models with statistics for the dataset, the most
//!    accurate first, those below a minimum accuracy dropped, near-duplicates
//!    (MinHash, [`crate::search::novelty`]) of one already kept dropped, at
//!    most `top`; each becomes a whole-file example, or in delta mode a
//!    unified diff from a baseline (a less accurate LEMUR model near it);
//! 4. [`prompt`]: the prompt is the search's own generator prompt for the
//!    dataset;
//! 5. [`write`]: `train.jsonl`, `index.csv`, `summary.json` and the code of
//!    every model used under `models/`.
//!
//! ```
//! use nas_host::corpus::wheel::{match_dataset, DatasetMatch};
//! assert!(matches!(match_dataset("fashion-mnist", "mnist"), DatasetMatch::Nearest { lemur: "mnist", .. }));
//! ```

pub mod convert;
pub mod import;
pub mod prompt;
pub mod wheel;

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nas_plugin_api::TrainingExample;
use serde::Serialize;

use crate::config::GenerationMode;
use crate::search::{delta, novelty};
use prompt::PromptSetup;
use wheel::{LemurWheel, ModelStats, Statistic};

/// A corpus problem. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The wheel could not be fetched.
    #[error("cannot fetch the LEMUR wheel ({package}): {0}", package = wheel::PACKAGE)]
    Fetch(String),
    /// A wheel file is not the pinned one.
    #[error("{}: not the pinned {} wheel ({actual}; expected sha256 {}, {} bytes)", path.display(), wheel::PACKAGE, wheel::WHEEL_SHA256, wheel::WHEEL_SIZE)]
    WrongWheel {
        /// The file.
        path: PathBuf,
        /// What it is.
        actual: String,
    },
    /// The wheel is not a readable zip archive.
    #[error("{}: the LEMUR wheel is damaged, not a readable zip archive ({message}); delete it and it is fetched again", path.display())]
    CorruptWheel {
        /// The file.
        path: PathBuf,
        /// The zip reader's complaint.
        message: String,
    },
    /// A line of a JSONL file is not a training example.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A prompt template failed.
    #[error(transparent)]
    Prompt(#[from] crate::search::prompts::PromptError),
    /// The options make no sense together.
    #[error("{0}")]
    Options(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io { path: path.to_path_buf(), source }
}

/// How delta examples pick their baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOptions {
    /// Only models at least this similar to the target (MinHash Jaccard
    /// estimate, 0–1) can be its baseline.
    pub min_similarity: f64,
    /// The baseline is drawn among this many of the most similar candidates.
    pub nearest: usize,
    /// Diffs changing more lines than this (`+` and `-` lines) are not used.
    pub max_diff_lines: usize,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions { min_similarity: 0.5, nearest: 8, max_diff_lines: 80 }
    }
}

/// How a LEMUR corpus is built.
#[derive(Debug, Clone, PartialEq)]
pub struct LemurOptions {
    /// Whole files or diffs.
    pub mode: GenerationMode,
    /// The LEMUR dataset whose statistics rank the models (`cifar-10`,
    /// `mnist`, ...); `None`: no statistics, models drawn at random with
    /// `seed`.
    pub statistics: Option<String>,
    /// Which run stands for a model.
    pub statistic: Statistic,
    /// Models below this first-epoch accuracy (0–1) are left out.
    pub min_accuracy: f64,
    /// At most this many examples.
    pub top: Option<usize>,
    /// A model at or above this similarity to one already kept is a
    /// near-duplicate and left out (1.0 or more keeps all).
    pub novelty_threshold: f64,
    /// Seeds the draws (baselines; the order without statistics).
    pub seed: u64,
    /// Delta mode's baseline choice.
    pub delta: DeltaOptions,
}

impl Default for LemurOptions {
    fn default() -> Self {
        LemurOptions {
            mode: GenerationMode::Full,
            statistics: None,
            statistic: Statistic::Best,
            min_accuracy: 0.0,
            top: None,
            novelty_threshold: 0.90,
            seed: 0,
            delta: DeltaOptions::default(),
        }
    }
}

/// What a corpus build read, kept and left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Model files in the wheel.
    pub model_files: usize,
    /// Statistics files (`1.json`) for the dataset.
    pub statistics_files: usize,
    /// Statistics files that were not a JSON list (skipped).
    pub statistics_unreadable: usize,
    /// Statistics files with no usable run.
    pub statistics_empty: usize,
    /// Runs skipped (no accuracy in 0–1).
    pub runs_skipped: usize,
    /// Models with statistics for the dataset (all models without statistics).
    pub with_statistics: usize,
    /// Model files that could not be read.
    pub unreadable_models: usize,
    /// Models not in LEMUR's contract as this reader understands it.
    pub not_convertible: usize,
    /// Left out: below the minimum accuracy.
    pub below_min_accuracy: usize,
    /// Left out: near-duplicates of a kept model.
    pub near_duplicates: usize,
    /// Left out: beyond `top`.
    pub beyond_top: usize,
    /// Delta mode: targets with no baseline near enough.
    pub no_baseline: usize,
    /// Examples written.
    pub examples: usize,
}

/// One model as used in the corpus.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its LEMUR name.
    pub name: String,
    /// Its code, in the search's contract.
    pub code: String,
    /// Its first-epoch statistics, when the corpus has any.
    pub stats: Option<ModelStats>,
    /// Its accuracy by the chosen statistic.
    pub accuracy: Option<f64>,
}

/// One index row: where an example came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexRow {
    /// `full` or `delta`.
    pub mode: String,
    /// The model (LEMUR name) or the example's source.
    pub model: String,
    /// Its first-epoch accuracy, when known.
    pub accuracy: Option<f64>,
    /// Runs behind the accuracy.
    pub runs: Option<usize>,
    /// Delta: the baseline model.
    pub baseline: Option<String>,
    /// Delta: the baseline's accuracy.
    pub baseline_accuracy: Option<f64>,
    /// Delta: estimated Jaccard similarity of baseline and target.
    pub similarity: Option<f64>,
    /// Lines of the answer's code or diff.
    pub answer_lines: usize,
}

/// A corpus: its examples with their index rows, the models they use, and
/// the counts.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The examples, in order, each with its row.
    pub examples: Vec<(TrainingExample, IndexRow)>,
    /// The code of every model an example uses (targets and baselines).
    pub models: BTreeMap<String, String>,
    /// What was read, kept and left out.
    pub counts: Counts,
}

/// A small deterministic generator (splitmix64) for seeded draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A whole-file answer: the code in one python block, as the generator is
/// asked to answer.
pub fn code_answer(code: &str) -> String {
    format!("```python\n{}\n```", code.trim_end())
}

/// A diff answer: the diff in one diff block.
pub fn diff_answer(diff: &str) -> String {
    // Only the final newline goes: a hunk may end in a blank context line (" ").
    format!("```diff\n{}\n```", diff.trim_end_matches('\n'))
}

/// The unified diff from `baseline` to `target` (`--- a/net.py`,
/// `+++ b/net.py`, three lines of context), and how many lines it changes.
pub fn unified_diff(baseline: &str, target: &str) -> (String, usize) {
    let patch = diffy::DiffOptions::new()
        .set_original_filename("a/net.py")
        .set_modified_filename("b/net.py")
        .create_patch(baseline, target);
    let text = patch.to_string();
    let changed = text
        .lines()
        .filter(|l| (l.starts_with('+') && !l.starts_with("+++")) || (l.starts_with('-') && !l.starts_with("---")))
        .count();
    (text, changed)
}

/// Reads the models of `names` from the wheel and rewrites them in the
/// search's contract; counts what could not be read or rewritten.
fn read_models<R: Read + Seek>(
    wheel: &mut LemurWheel<R>,
    names: Vec<(String, Option<ModelStats>)>,
    statistic: Statistic,
    counts: &mut Counts,
) -> Vec<Model> {
    let empty = serde_json::Map::new();
    let mut out = Vec::with_capacity(names.len());
    for (name, stats) in names {
        let source = match wheel.model_source(&name) {
            Ok(s) => s,
            Err(_) => {
                counts.unreadable_models += 1;
                continue;
            }
        };
        let hyper = stats.as_ref().map_or(&empty, |s| &s.best_run);
        match convert::to_search_contract(&source, hyper) {
            Ok(code) => {
                let accuracy = stats.as_ref().map(|s| s.accuracy(statistic));
                out.push(Model { name, code, stats, accuracy });
            }
            Err(_) => counts.not_convertible += 1,
        }
    }
    out
}

/// Builds a LEMUR corpus from an opened wheel (see the module docs).
pub fn lemur_corpus<R: Read + Seek>(
    wheel: &mut LemurWheel<R>,
    prompts: &PromptSetup,
    opts: &LemurOptions,
) -> Result<Corpus, CorpusError> {
    if opts.statistics.is_none() && opts.min_accuracy > 0.0 {
        return Err(CorpusError::Options("a minimum accuracy needs statistics: choose a LEMUR dataset".into()));
    }
    let mut counts = Counts { model_files: wheel.models().len(), ..Default::default() };
    // The models, the most accurate first (ties by name); without
    // statistics, every model in a seeded random order.
    let names: Vec<(String, Option<ModelStats>)> = match &opts.statistics {
        Some(dataset) => {
            let stats = wheel.first_epoch_stats(dataset);
            counts.statistics_files = stats.files;
            counts.statistics_unreadable = stats.unreadable_files;
            counts.statistics_empty = stats.empty_files;
            counts.runs_skipped = stats.skipped_runs;
            let mut v: Vec<(String, Option<ModelStats>)> =
                stats.models.into_iter().map(|(n, s)| (n, Some(s))).collect();
            v.sort_by(|a, b| {
                let acc = |x: &(String, Option<ModelStats>)| x.1.as_ref().map_or(0.0, |s| s.accuracy(opts.statistic));
                acc(b).total_cmp(&acc(a)).then_with(|| a.0.cmp(&b.0))
            });
            v
        }
        None => {
            let mut v: Vec<(String, Option<ModelStats>)> = wheel.models().iter().map(|n| (n.clone(), None)).collect();
            let mut rng = Rng::new(opts.seed);
            for i in (1..v.len()).rev() {
                v.swap(i, rng.below(i + 1));
            }
            v
        }
    };
    counts.with_statistics = names.len();
    let pool = read_models(wheel, names, opts.statistic, &mut counts);
    let signatures: Vec<novelty::Signature> = pool.iter().map(|m| novelty::signature(&m.code)).collect();

    // Selection: minimum accuracy, near-duplicates, top.
    let mut kept: Vec<usize> = Vec::new();
    let mut archive = novelty::Archive::default();
    for (i, m) in pool.iter().enumerate() {
        if m.accuracy.is_some_and(|a| a < opts.min_accuracy) {
            counts.below_min_accuracy += 1;
            continue;
        }
        if archive.twin(&signatures[i], opts.novelty_threshold).is_some() {
            counts.near_duplicates += 1;
            continue;
        }
        if opts.top.is_some_and(|t| kept.len() >= t) {
            counts.beyond_top += 1;
            continue;
        }
        archive.add(i as u64, signatures[i].clone());
        kept.push(i);
    }

    let mut corpus = Corpus::default();
    match opts.mode {
        GenerationMode::Full => {
            let messages = prompts.full()?;
            for &i in &kept {
                let m = &pool[i];
                let example = TrainingExample {
                    messages: messages.clone(),
                    answer: code_answer(&m.code),
                    source: format!("lemur:{}", m.name),
                };
                let row = IndexRow {
                    mode: "full".into(),
                    model: m.name.clone(),
                    accuracy: m.accuracy,
                    runs: m.stats.as_ref().map(|s| s.runs),
                    baseline: None,
                    baseline_accuracy: None,
                    similarity: None,
                    answer_lines: m.code.lines().count(),
                };
                corpus.models.insert(m.name.clone(), m.code.clone());
                corpus.examples.push((example, row));
            }
        }
        GenerationMode::Delta => {
            for &t in &kept {
                let target = &pool[t];
                let Some((b, similarity, diff, changed)) = pick_baseline(&pool, &signatures, t, opts) else {
                    counts.no_baseline += 1;
                    continue;
                };
                let baseline = &pool[b];
                let example = TrainingExample {
                    messages: prompts.delta(&baseline.code)?,
                    answer: diff_answer(&diff),
                    source: format!("lemur:{}", target.name),
                };
                let row = IndexRow {
                    mode: "delta".into(),
                    model: target.name.clone(),
                    accuracy: target.accuracy,
                    runs: target.stats.as_ref().map(|s| s.runs),
                    baseline: Some(baseline.name.clone()),
                    baseline_accuracy: baseline.accuracy,
                    similarity: Some(similarity),
                    answer_lines: changed,
                };
                corpus.models.insert(target.name.clone(), target.code.clone());
                corpus.models.insert(baseline.name.clone(), baseline.code.clone());
                corpus.examples.push((example, row));
            }
        }
    }
    counts.examples = corpus.examples.len();
    corpus.counts = counts;
    Ok(corpus)
}

/// The baseline of target `t`: among the models less accurate than it
/// (any other model, without statistics) whose code differs and is at least
/// `min_similarity` alike, the `nearest` most similar whose diff changes at
/// most `max_diff_lines` lines and applies back to the target; one of them
/// drawn with the seed. Returns the baseline's index, the similarity, the
/// diff and the lines it changes.
fn pick_baseline(
    pool: &[Model],
    signatures: &[novelty::Signature],
    t: usize,
    opts: &LemurOptions,
) -> Option<(usize, f64, String, usize)> {
    let target = &pool[t];
    let mut near: Vec<(usize, f64)> = pool
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            *i != t
                && match (m.accuracy, target.accuracy) {
                    (Some(a), Some(ta)) => a < ta,
                    _ => true,
                }
        })
        .map(|(i, _)| (i, signatures[i].similarity(&signatures[t])))
        .filter(|(_, s)| *s >= opts.delta.min_similarity)
        .collect();
    near.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut usable = Vec::new();
    for (i, similarity) in near {
        if usable.len() >= opts.delta.nearest {
            break;
        }
        if pool[i].code == target.code {
            continue;
        }
        let (diff, changed) = unified_diff(&pool[i].code, &target.code);
        if changed == 0 || changed > opts.delta.max_diff_lines {
            continue;
        }
        match delta::apply(&pool[i].code, &diff) {
            Ok((code, _)) if code == target.code => usable.push((i, similarity, diff, changed)),
            _ => continue,
        }
    }
    if usable.is_empty() {
        return None;
    }
    let mut rng = Rng::new(opts.seed ^ name_hash(&target.name));
    let pick = rng.below(usable.len());
    Some(usable.swap_remove(pick))
}

/// How an imported training set is filtered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportOptions {
    /// At most this many examples (in file order).
    pub top: Option<usize>,
    /// An example whose answer is at or above this similarity to a kept
    /// one's is a near-duplicate and left out (1.0 or more keeps all).
    pub novelty_threshold: f64,
}

/// What an import read and kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportCounts {
    /// Examples read.
    pub read: usize,
    /// Left out: near-duplicates.
    pub near_duplicates: usize,
    /// Left out: beyond `top`.
    pub beyond_top: usize,
    /// Examples written.
    pub examples: usize,
}

/// Reads training sets (see [`import`]) into one corpus: near-duplicate
/// answers dropped, at most `top` kept, in file order.
pub fn import_corpus(files: &[PathBuf], opts: &ImportOptions) -> Result<(Corpus, ImportCounts), CorpusError> {
    let mut counts = ImportCounts::default();
    let mut corpus = Corpus::default();
    let mut archive = novelty::Archive::default();
    for file in files {
        for (example, _) in import::read_jsonl(file)? {
            counts.read += 1;
            let sig = novelty::signature(&example.answer);
            if archive.twin(&sig, opts.novelty_threshold).is_some() {
                counts.near_duplicates += 1;
                continue;
            }
            if opts.top.is_some_and(|t| corpus.examples.len() >= t) {
                counts.beyond_top += 1;
                continue;
            }
            archive.add(corpus.examples.len() as u64, sig);
            let mode = if nas_plugin_api::text::fences(&example.answer).iter().any(|f| f.lang == "diff") {
                "delta"
            } else {
                "full"
            };
            let row = IndexRow {
                mode: mode.into(),
                model: example.source.clone(),
                accuracy: None,
                runs: None,
                baseline: None,
                baseline_accuracy: None,
                similarity: None,
                answer_lines: example.answer.lines().count(),
            };
            corpus.examples.push((example, row));
        }
    }
    counts.examples = corpus.examples.len();
    corpus.counts.examples = counts.examples;
    Ok((corpus, counts))
}

/// The training set's file name inside a corpus folder.
pub const TRAIN_FILE: &str = "train.jsonl";
/// The index's file name.
pub const INDEX_FILE: &str = "index.csv";
/// The summary's file name.
pub const SUMMARY_FILE: &str = "summary.json";
/// The folder of the models' code.
pub const MODELS_FOLDER: &str = "models";

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Writes a corpus into `dir`: `train.jsonl` (one [`TrainingExample`] a
/// line), `index.csv` (line, mode, model, accuracy, runs, baseline,
/// baseline_accuracy, similarity, answer_lines; lines count from 1),
/// `summary.json` (`summary`, as given) and `models/<name>.py` for every
/// model used. An earlier corpus's files there are replaced.
pub fn write(dir: &Path, corpus: &Corpus, summary: &serde_json::Value) -> Result<(), CorpusError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(TRAIN_FILE);
    let mut jsonl = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
    for (example, _) in &corpus.examples {
        let line = serde_json::to_string(example)
            .map_err(|e| CorpusError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        writeln!(jsonl, "{line}").map_err(io_err(&path))?;
    }
    jsonl.flush().map_err(io_err(&path))?;
    let path = dir.join(INDEX_FILE);
    let mut csv = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let header =
        ["line", "mode", "model", "accuracy", "runs", "baseline", "baseline_accuracy", "similarity", "answer_lines"];
    let csv_err = |e: csv::Error| CorpusError::Io { path: path.clone(), source: std::io::Error::other(e) };
    csv.write_record(header).map_err(csv_err)?;
    for (i, (_, row)) in corpus.examples.iter().enumerate() {
        csv.write_record([
            (i + 1).to_string(),
            row.mode.clone(),
            row.model.clone(),
            opt(row.accuracy),
            opt(row.runs),
            row.baseline.clone().unwrap_or_default(),
            opt(row.baseline_accuracy),
            opt(row.similarity),
            row.answer_lines.to_string(),
        ])
        .map_err(csv_err)?;
    }
    let bytes = csv.into_inner().map_err(|e| CorpusError::Io { path: path.clone(), source: e.into_error() })?;
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    let models = dir.join(MODELS_FOLDER);
    if models.is_dir() {
        std::fs::remove_dir_all(&models).map_err(io_err(&models))?;
    }
    if !corpus.models.is_empty() {
        std::fs::create_dir_all(&models).map_err(io_err(&models))?;
        for (name, code) in &corpus.models {
            let path = models.join(format!("{name}.py"));
            std::fs::write(&path, code).map_err(io_err(&path))?;
        }
    }
    let path = dir.join(SUMMARY_FILE);
    let text = serde_json::to_string_pretty(summary).unwrap_or_else(|_| summary.to_string());
    std::fs::write(&path, text + "\n").map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::config::SearchSection;
    use crate::search::prompts::Prompts;

    fn model(width: usize, extra: &str) -> String {
        format!(
            "import torch\nimport torch.nn as nn\n\n\ndef supported_hyperparameters():\n    return {{'lr', 'momentum', 'dropout'}}\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n        self.device = device\n        self.conv1 = nn.Conv2d(in_shape[1], {width}, 3, padding=1)\n        self.bn1 = nn.BatchNorm2d({width})\n        self.pool = nn.AdaptiveAvgPool2d(1)\n        self.drop = nn.Dropout(prm['dropout'])\n{extra}        self.fc = nn.Linear({width}, out_shape[0])\n\n    def forward(self, x):\n        x = torch.relu(self.bn1(self.conv1(x)))\n        return self.fc(self.drop(self.pool(x).flatten(1)))\n\n    def train_setup(self, prm):\n        self.to(self.device)\n\n    def learn(self, data):\n        pass\n"
        )
    }

    fn wheel() -> LemurWheel<Cursor<Vec<u8>>> {
        use std::io::Write as _;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let files: Vec<(String, String)> = vec![
            ("ab/nn/nn/A.py".into(), model(64, "")),
            ("ab/nn/nn/A-copy.py".into(), model(64, "")),
            ("ab/nn/nn/B.py".into(), model(64, "        self.extra1 = nn.Conv2d(64, 64, 1)\n        self.extra2 = nn.GroupNorm(8, 64)\n        self.extra3 = nn.GELU()\n")),
            ("ab/nn/nn/C.py".into(), model(32, "")),
            ("ab/nn/nn/Odd.py".into(), "class Net(nn.Module):\n    def __init__(self):\n        pass\n".into()),
            ("ab/nn/stat/train/img-classification_mnist_acc_A/1.json".into(), r#"[{"accuracy": 0.9, "dropout": 0.1}]"#.into()),
            ("ab/nn/stat/train/img-classification_mnist_acc_A-copy/1.json".into(), r#"[{"accuracy": 0.85}]"#.into()),
            ("ab/nn/stat/train/img-classification_mnist_acc_B/1.json".into(), r#"[{"accuracy": 0.8}, {"accuracy": 0.6}]"#.into()),
            ("ab/nn/stat/train/img-classification_mnist_acc_C/1.json".into(), r#"[{"accuracy": 0.3}]"#.into()),
            ("ab/nn/stat/train/img-classification_mnist_acc_Odd/1.json".into(), r#"[{"accuracy": 0.95}]"#.into()),
        ];
        for (name, data) in files {
            w.start_file(name, opts).expect("start");
            w.write_all(data.as_bytes()).expect("write");
        }
        let bytes = w.finish().expect("finish").into_inner();
        LemurWheel::from_reader(Path::new("t.whl"), Cursor::new(bytes)).expect("opens")
    }

    fn setup() -> PromptSetup {
        let manifest = serde_json::from_value(serde_json::json!({
            "format_version": 1, "name": "mnist", "family": "mnist", "input_shape": [1, 28, 28],
            "num_classes": 10, "mean": [0.1], "std": [0.3], "splits": {},
        }))
        .expect("manifest");
        PromptSetup::new(Prompts::new("mnist", None), &manifest, "MNIST", &SearchSection::default())
    }

    #[test]
    fn full_corpora_rank_filter_and_deduplicate() {
        let opts = LemurOptions { statistics: Some("mnist".into()), min_accuracy: 0.5, ..Default::default() };
        let corpus = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        let c = &corpus.counts;
        assert_eq!((c.model_files, c.with_statistics, c.not_convertible), (5, 5, 1));
        assert_eq!((c.below_min_accuracy, c.near_duplicates, c.examples), (1, 1, 2));
        let names: Vec<&str> = corpus.examples.iter().map(|(_, r)| r.model.as_str()).collect();
        assert_eq!(names, ["A", "B"], "the most accurate first, the copy of A left out");
        let (ex, row) = &corpus.examples[0];
        assert_eq!(row.accuracy, Some(0.9));
        assert_eq!(ex.source, "lemur:A");
        assert!(ex.messages[1].content.contains("(batch, 1, 28, 28)"));
        assert!(
            ex.answer.starts_with("```python\n") && ex.answer.contains("def __init__(self, in_shape, num_classes):")
        );
        assert!(ex.answer.contains("nn.Dropout(0.1)"), "the run's dropout: {}", ex.answer);
        let top1 = LemurOptions { top: Some(1), ..opts.clone() };
        let c1 = lemur_corpus(&mut wheel(), &setup(), &top1).expect("builds").counts;
        assert_eq!((c1.examples, c1.beyond_top), (1, 1));
        let mean = LemurOptions { statistic: Statistic::Mean, min_accuracy: 0.75, ..opts };
        let cm = lemur_corpus(&mut wheel(), &setup(), &mean).expect("builds");
        assert_eq!(cm.examples.iter().map(|(_, r)| r.model.as_str()).collect::<Vec<_>>(), ["A"], "B's mean is 0.7");
    }

    #[test]
    fn delta_examples_diff_from_a_less_accurate_neighbour_and_apply_back() {
        let opts = LemurOptions {
            mode: GenerationMode::Delta,
            statistics: Some("mnist".into()),
            novelty_threshold: 1.1,
            ..Default::default()
        };
        let corpus = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        assert!(corpus.counts.examples >= 2, "{:?}", corpus.counts);
        for (ex, row) in &corpus.examples {
            let baseline = row.baseline.as_deref().expect("a baseline");
            assert!(row.baseline_accuracy < row.accuracy, "{row:?}");
            let diff = nas_plugin_api::text::extract_diff(&ex.answer).expect("a diff block");
            let (code, _) = delta::apply(&corpus.models[baseline], &diff).expect("applies");
            assert_eq!(code, corpus.models[&row.model]);
            assert!(
                ex.messages[1].content.contains(corpus.models[baseline].trim_end()),
                "the prompt shows the baseline as it is"
            );
        }
        // C is the least accurate: nothing to diff from.
        assert!(corpus.counts.no_baseline >= 1);
        let again = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        assert_eq!(again.examples, corpus.examples, "seeded: the same draws");
    }

    #[test]
    fn without_statistics_models_are_drawn_with_the_seed() {
        let opts = LemurOptions { statistics: None, top: Some(2), novelty_threshold: 1.1, ..Default::default() };
        let a = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        assert_eq!((a.counts.with_statistics, a.counts.examples), (5, 2));
        assert!(a.examples.iter().all(|(_, r)| r.accuracy.is_none()));
        let b = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        assert_eq!(a.examples, b.examples);
        let bad = LemurOptions { min_accuracy: 0.3, ..opts };
        assert!(lemur_corpus(&mut wheel(), &setup(), &bad).is_err());
    }

    #[test]
    fn a_corpus_is_written_and_read_back_as_training_examples() {
        let dir = tempfile::tempdir().expect("tmp");
        let opts = LemurOptions { statistics: Some("mnist".into()), ..Default::default() };
        let corpus = lemur_corpus(&mut wheel(), &setup(), &opts).expect("builds");
        write(dir.path(), &corpus, &serde_json::json!({"ok": true})).expect("writes");
        let read = import::read_jsonl(&dir.path().join(TRAIN_FILE)).expect("reads back");
        assert_eq!(read.len(), corpus.examples.len());
        assert_eq!(read[0].0, corpus.examples[0].0);
        let index = std::fs::read_to_string(dir.path().join(INDEX_FILE)).expect("index");
        assert!(index.starts_with("line,mode,model,accuracy,runs,") && index.contains("\n1,full,A,0.9,1,"), "{index}");
        assert!(dir.path().join("models/A.py").is_file());
        let (again, counts) =
            import_corpus(&[dir.path().join(TRAIN_FILE)], &ImportOptions { top: None, novelty_threshold: 0.9 })
                .expect("imports");
        assert_eq!((counts.read, counts.examples), (corpus.examples.len(), corpus.examples.len()));
        assert_eq!(again.examples[0].0, corpus.examples[0].0);
    }

    #[test]
    fn the_rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<usize> = (0..100).map(|_| a.below(10)).collect();
        assert_eq!(xs, (0..100).map(|_| b.below(10)).collect::<Vec<_>>());
        assert!(xs.iter().all(|x| *x < 10) && xs.iter().any(|x| *x != xs[0]));
    }
}
