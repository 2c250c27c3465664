//! Exports from recorded runs (`nas export`): the best model, every valid
//! architecture in LEMUR's contract, and a prompt→code fine-tuning corpus.
//!
//! This module reads runs and writes files; re-training the best candidate
//! for its weights goes through the run's evaluator plugin in
//! `commands::export`. Formats: `docs/exports.md`.
//!
//! | folder | what |
//! |---|---|
//! | `best/` | `model.py` (the best candidate's source), `info.json`, `model.pt` (TorchScript with trained weights) |
//! | `lemur/` | one file per valid architecture in LEMUR's contract ([`lemur`]), `index.csv` |
//! | `corpus/` | `train.jsonl` (chat `messages`, one object a line), `index.csv` |

pub mod lemur;

use std::io::Write;
use std::path::{Path, PathBuf};

use nas_plugin_api::{ChatMessage, EvalReport};
use serde_json::{json, Value};

use crate::config::{self, LoadedConfig};
use crate::records::{IterationRecord, Outcome};
use crate::run_dir::RecordedRun;
use crate::search::novelty;
use crate::store::StoreError;

/// An export problem.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A run directory could not be read (the store error names the path).
    #[error("{source}")]
    Store {
        /// The run directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A run's frozen config could not be read.
    #[error("run `{path}`: {source}")]
    Config {
        /// The run directory.
        path: PathBuf,
        /// Why.
        source: config::ConfigError,
    },
    /// No run holds a candidate that trained.
    #[error("no valid candidate (trained, not a duplicate) in {}", runs.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", "))]
    NoValidCandidate {
        /// The runs given.
        runs: Vec<PathBuf>,
    },
    /// A file or directory could not be written.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Write { path: path.to_path_buf(), source }
}

/// One recorded run, as read for export.
#[derive(Debug)]
pub struct Run {
    /// The run directory (absolute when it could be made so).
    pub dir: PathBuf,
    /// Its directory name.
    pub name: String,
    /// Its frozen config; `dir` is the directory the run's config was
    /// resolved against.
    pub config: LoadedConfig,
    /// Its records, in iteration order.
    pub records: Vec<IterationRecord>,
}

impl Run {
    /// Reads a run directory: its store and its frozen config.
    pub fn open(dir: &Path) -> Result<Run, ExportError> {
        let run = RecordedRun::open(dir).map_err(|source| ExportError::Store { path: dir.to_path_buf(), source })?;
        let config = run.config.map_err(|source| ExportError::Config { path: dir.to_path_buf(), source })?;
        Ok(Run { dir: run.dir, name: run.name, config, records: run.records })
    }
}

/// A valid candidate: it trained and was scored (not failed, not a
/// duplicate), and its code is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Index of its run in the list given.
    pub run: usize,
    /// Its record.
    pub record: &'a IterationRecord,
    /// Its code.
    pub code: &'a str,
    /// Its evaluation.
    pub report: &'a EvalReport,
}

impl Candidate<'_> {
    /// The contract the evaluator recorded (`extra.contract`), if any.
    pub fn recorded_contract(&self) -> Option<&str> {
        self.report.extra.get("contract").and_then(Value::as_str)
    }
}

/// Every valid candidate, in run order then iteration order.
pub fn valid_candidates(runs: &[Run]) -> Vec<Candidate<'_>> {
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        for r in &run.records {
            if let (Outcome::Ok { report }, Some(code)) = (&r.outcome, r.code.as_deref()) {
                out.push(Candidate { run: i, record: r, code, report });
            }
        }
    }
    out
}

/// The best candidate: highest accuracy; the earliest of equals (run order,
/// then iteration), as the search's strictly-greater rule picks.
pub fn best<'a>(candidates: &[Candidate<'a>]) -> Option<Candidate<'a>> {
    let mut best: Option<Candidate<'a>> = None;
    for c in candidates {
        if best.is_none_or(|b| c.report.accuracy > b.report.accuracy) {
            best = Some(*c);
        }
    }
    best
}

/// How the corpus is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusOptions {
    /// At most this many examples.
    pub top: usize,
    /// Only candidates at or above this accuracy (0–1).
    pub min_accuracy: f64,
    /// A candidate whose estimated Jaccard similarity to an already chosen
    /// one is at or above this is a near-duplicate and left out.
    pub novelty_threshold: f64,
}

/// The chosen corpus and what was left out.
#[derive(Debug, Clone)]
pub struct CorpusSelection<'a> {
    /// The examples, by accuracy, highest first.
    pub chosen: Vec<Candidate<'a>>,
    /// Left out: below the minimum accuracy.
    pub below_min: usize,
    /// Left out: near-duplicates of a chosen one.
    pub near_duplicates: usize,
    /// Left out: beyond `top`.
    pub beyond_top: usize,
}

/// Chooses the corpus: valid candidates by accuracy (highest first; ties in
/// run and iteration order), those below the minimum dropped, then each one
/// kept unless it is a near-duplicate (MinHash, [`novelty`]) of one already
/// kept, up to `top`.
pub fn select_corpus<'a>(candidates: &[Candidate<'a>], options: &CorpusOptions) -> CorpusSelection<'a> {
    let mut sorted: Vec<Candidate<'a>> = candidates.to_vec();
    sorted.sort_by(|a, b| b.report.accuracy.total_cmp(&a.report.accuracy));
    let mut selection = CorpusSelection { chosen: Vec::new(), below_min: 0, near_duplicates: 0, beyond_top: 0 };
    let mut archive = novelty::Archive::default();
    for c in sorted {
        if c.report.accuracy < options.min_accuracy {
            selection.below_min += 1;
            continue;
        }
        let sig = novelty::signature(c.code);
        if archive.twin(&sig, options.novelty_threshold).is_some() {
            selection.near_duplicates += 1;
            continue;
        }
        if selection.chosen.len() >= options.top {
            selection.beyond_top += 1;
            continue;
        }
        archive.add(selection.chosen.len() as u64, sig);
        selection.chosen.push(c);
    }
    selection
}

/// One corpus line: the generator's recorded prompt (system and user
/// messages exactly as sent) and the answer that produced the candidate — a
/// ```` ```python ```` block with its code, or in delta mode a
/// ```` ```diff ```` block with its diff.
pub fn corpus_example(record: &IterationRecord, code: &str) -> Value {
    let answer = match record.diff.as_deref().filter(|_| record.mode == "delta") {
        Some(diff) => format!("```diff\n{}\n```", diff.trim_end()),
        None => format!("```python\n{}\n```", code.trim_end()),
    };
    let mut messages: Vec<Value> = record.generator_prompt.iter().map(message).collect();
    messages.push(json!({"role": "assistant", "content": answer}));
    json!({ "messages": messages })
}

fn message(m: &ChatMessage) -> Value {
    json!({"role": m.role, "content": m.content})
}

/// One CSV record (quoted where needed), with its line end.
fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(fields).expect("writing CSV into memory cannot fail");
    let bytes = w.into_inner().expect("flushing CSV into memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

fn opt(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

/// A valid Python module name for a candidate: `<run>_iter<NNN>`, the run
/// name reduced to letters, digits and underscores.
pub fn module_name(run: &str, iteration: u64) -> String {
    let mut base: String = run.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        base.insert_str(0, "run_");
    }
    format!("{base}_iter{iteration:03}")
}

/// A LEMUR file written.
#[derive(Debug, Clone, PartialEq)]
pub struct LemurFile {
    /// File name inside `lemur/`.
    pub file: String,
    /// The contract the candidate was written in.
    pub contract: lemur::Contract,
}

/// Writes `dir/<module>.py` for every valid candidate and `dir/index.csv`
/// (file, run, iteration, accuracy, params, flops, contract).
pub fn write_lemur(dir: &Path, runs: &[Run], candidates: &[Candidate<'_>]) -> Result<Vec<LemurFile>, ExportError> {
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut index =
        csv_line(&["file", "run", "iteration", "accuracy", "params", "flops", "contract"].map(String::from));
    let mut written: Vec<LemurFile> = Vec::new();
    for c in candidates {
        let run = &runs[c.run];
        let stem = module_name(&run.name, c.record.iteration);
        let mut file = format!("{stem}.py");
        let mut n = 2;
        while written.iter().any(|w| w.file == file) {
            file = format!("{stem}_{n}.py");
            n += 1;
        }
        let (text, contract) = lemur::to_lemur(c.code, c.recorded_contract());
        let path = dir.join(&file);
        std::fs::write(&path, text).map_err(write_err(&path))?;
        index.push_str(&csv_line(&[
            file.clone(),
            run.name.clone(),
            c.record.iteration.to_string(),
            c.report.accuracy.to_string(),
            opt(c.report.params),
            opt(c.report.flops),
            contract.as_str().to_string(),
        ]));
        written.push(LemurFile { file, contract });
    }
    let path = dir.join("index.csv");
    std::fs::write(&path, index).map_err(write_err(&path))?;
    Ok(written)
}

/// Writes `dir/train.jsonl` (one [`corpus_example`] a line) and
/// `dir/index.csv` (line, run, iteration, accuracy; lines count from 1).
pub fn write_corpus(dir: &Path, runs: &[Run], chosen: &[Candidate<'_>]) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let path = dir.join("train.jsonl");
    let mut jsonl = std::io::BufWriter::new(std::fs::File::create(&path).map_err(write_err(&path))?);
    let mut index = csv_line(&["line", "run", "iteration", "accuracy", "mode"].map(String::from));
    for (i, c) in chosen.iter().enumerate() {
        writeln!(jsonl, "{}", corpus_example(c.record, c.code)).map_err(write_err(&path))?;
        index.push_str(&csv_line(&[
            (i + 1).to_string(),
            runs[c.run].name.clone(),
            c.record.iteration.to_string(),
            c.report.accuracy.to_string(),
            c.record.mode.clone(),
        ]));
    }
    jsonl.flush().map_err(write_err(&path))?;
    let path = dir.join("index.csv");
    std::fs::write(&path, index).map_err(write_err(&path))?;
    Ok(())
}

/// Removes what an earlier export left in `out` (its `best/`, `lemur/`,
/// `corpus/` folders only) and creates `out`.
pub fn prepare_out_dir(out: &Path) -> Result<(), ExportError> {
    for sub in ["best", "lemur", "corpus"] {
        let d = out.join(sub);
        if d.is_dir() {
            std::fs::remove_dir_all(&d).map_err(write_err(&d))?;
        }
    }
    std::fs::create_dir_all(out).map_err(write_err(out))
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    std::fs::write(path, text + "\n").map_err(write_err(path))
}

/// Writes `text` to `path`, creating its folder.
pub fn write_text(path: &Path, text: &str) -> Result<(), ExportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    }
    std::fs::write(path, text).map_err(write_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_python_identifiers() {
        assert_eq!(module_name("fashion-20261122-181500", 7), "fashion_20261122_181500_iter007");
        assert_eq!(module_name("2026 run.x", 123), "run_2026_run_x_iter123");
        assert_eq!(module_name("t", 1234), "t_iter1234");
    }

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_line(&["a".into(), "b,c".into(), "say \"x\"".into()]), "a,\"b,c\",\"say \"\"x\"\"\"\n");
    }
}
