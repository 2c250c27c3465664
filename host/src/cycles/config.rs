//! `[cycles]`: the fine-tuning cycles of `nas cycles`, parsed strictly.
//!
//! ```toml
//! [cycles]
//! cycles = 22                 # generate → evaluate → select → fine-tune, this many times
//! candidates = 50             # candidates generated per cycle
//! min_accuracy = 0.40         # a candidate joins the training set at or above this accuracy ...
//! novelty_threshold = 0.90    # ... when below this similarity to the seed corpus and every model selected before
//! train_from = "base"         # each adapter from the base on the whole set (the papers), or "previous"
//! parents = 20                # delta mode: designs drawn from the seed corpus for the diffs (0: all)
//! base_model = "qwen2.5-coder-0.5b"   # the GGUF the tuner trains (default: [generator]'s llm.local model)
//!
//! [cycles.seed]
//! source = "lemur"            # or a JSONL file, a corpus folder, a `nas export` folder
//! statistics_from = "mnist"   # LEMUR's statistics that rank its models (default: the dataset's own)
//! top = 500
//! min_accuracy = 0.0
//!
//! [cycles.tune]               # every fine-tune's settings (unset: the tuner's defaults)
//! rank = 16
//! max_steps = 200
//! ```
//!
//! Every key is documented in `docs/config.md` and `docs/cycles.md`.

use std::path::{Path, PathBuf};

use nas_plugin_api::TuneSettings;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;

/// Where each cycle's adapter starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrainFrom {
    /// From the base model, on the whole training set (the papers).
    #[default]
    Base,
    /// From the previous cycle's adapter, on the whole training set.
    Previous,
}

/// `[cycles.seed]`: the training set of cycle 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSection {
    /// `lemur` (the LEMUR models, as `nas corpus lemur` builds them), or a
    /// path (relative to the config file) to a JSONL file, a corpus folder
    /// holding `train.jsonl`, or a `nas export` folder (`corpus/train.jsonl`).
    #[serde(default = "lemur")]
    pub source: String,
    /// LEMUR: the dataset whose first-epoch statistics rank the models
    /// (`cifar-10`, `mnist`, ...; `none`: no statistics, a seeded draw);
    /// default: the run's dataset when LEMUR has statistics for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics_from: Option<String>,
    /// LEMUR: which run stands for a model (`best` or `mean`).
    #[serde(default = "best")]
    pub statistic: String,
    /// At most this many examples (LEMUR: the most accurate first; a file:
    /// in file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// LEMUR: only models with at least this first-epoch accuracy (0–1).
    #[serde(default)]
    pub min_accuracy: f64,
    /// Near-duplicates inside the seed are left out at or above this
    /// similarity (1.0 keeps them).
    #[serde(default = "tau")]
    pub novelty_threshold: f64,
    /// LEMUR, delta mode: diffs changing more lines than this are left out.
    #[serde(default = "max_diff_lines")]
    pub max_diff_lines: usize,
    /// LEMUR: a copy of the pinned wheel (else `$NAS_HOME/corpus/`, fetched once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheel: Option<PathBuf>,
}

fn lemur() -> String {
    "lemur".into()
}
fn best() -> String {
    "best".into()
}
fn tau() -> f64 {
    0.90
}
fn max_diff_lines() -> usize {
    80
}

impl Default for SeedSection {
    fn default() -> Self {
        SeedSection {
            source: lemur(),
            statistics_from: None,
            statistic: best(),
            top: None,
            min_accuracy: 0.0,
            novelty_threshold: tau(),
            max_diff_lines: max_diff_lines(),
            wheel: None,
        }
    }
}

impl SeedSection {
    /// Whether the seed is the LEMUR corpus.
    pub fn is_lemur(&self) -> bool {
        self.source == "lemur"
    }
}

/// `[cycles.tune]`: the settings of every fine-tune (a strict mirror of
/// [`TuneSettings`]; unset keys take the tuner's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSection {
    /// LoRA rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// LoRA alpha.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// LoRA dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Modules to adapt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_modules: Vec<String>,
    /// Passes over the training set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Optimiser steps (bounds training before `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Examples per optimiser step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Longest tokenised example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<u32>,
    /// Seed (default: `[run] seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl TuneSection {
    /// The request settings, the run's seed filling an unset seed.
    pub fn settings(&self, run_seed: u64) -> TuneSettings {
        TuneSettings {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.target_modules.clone(),
            epochs: self.epochs,
            max_steps: self.max_steps,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size,
            max_seq_len: self.max_seq_len,
            seed: Some(self.seed.unwrap_or(run_seed)),
        }
    }
}

/// `[cycles]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CyclesSection {
    /// Cycles after the seed fine-tune (cycle 0).
    #[serde(default = "default_cycles")]
    pub cycles: u64,
    /// Candidates generated and evaluated per cycle.
    #[serde(default = "default_candidates")]
    pub candidates: u64,
    /// A valid candidate joins the training set at or above this accuracy.
    #[serde(default = "default_min_accuracy")]
    pub min_accuracy: f64,
    /// ... and when its similarity to every design of the seed corpus and
    /// every model selected before is below this (MinHash Jaccard).
    #[serde(default = "tau")]
    pub novelty_threshold: f64,
    /// Where each adapter starts: `base` or `previous`.
    #[serde(default)]
    pub train_from: TrainFrom,
    /// Delta mode: how many designs of the seed corpus the diffs are asked
    /// against (drawn with `[run] seed`; 0: all of them).
    #[serde(default = "default_parents")]
    pub parents: usize,
    /// The GGUF base model the tuner trains: a catalogue name or a path
    /// (default: the `[generator]`'s `model` when it is `llm.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// `[cycles.seed]`.
    #[serde(default)]
    pub seed: SeedSection,
    /// `[cycles.tune]`.
    #[serde(default)]
    pub tune: TuneSection,
}

fn default_cycles() -> u64 {
    22
}
fn default_candidates() -> u64 {
    50
}
fn default_min_accuracy() -> f64 {
    0.40
}
fn default_parents() -> usize {
    20
}

impl Default for CyclesSection {
    fn default() -> Self {
        CyclesSection {
            cycles: default_cycles(),
            candidates: default_candidates(),
            min_accuracy: default_min_accuracy(),
            novelty_threshold: tau(),
            train_from: TrainFrom::Base,
            parents: default_parents(),
            base_model: None,
            seed: SeedSection::default(),
            tune: TuneSection::default(),
        }
    }
}

fn fraction(name: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(format!("[cycles] {name} is {x}; it is a fraction between 0 and 1"))
    }
}

impl CyclesSection {
    /// Checks values that parse but make no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.cycles == 0 {
            return Err("[cycles] cycles must be at least 1".into());
        }
        if self.candidates == 0 {
            return Err("[cycles] candidates must be at least 1".into());
        }
        fraction("min_accuracy", self.min_accuracy)?;
        if !(self.novelty_threshold > 0.0 && self.novelty_threshold <= 1.0) {
            return Err(format!("[cycles] novelty_threshold is {}; it must be in (0, 1]", self.novelty_threshold));
        }
        let s = &self.seed;
        if s.source.trim().is_empty() {
            return Err("[cycles.seed] source is empty: `lemur` or a path".into());
        }
        if !matches!(s.statistic.as_str(), "best" | "mean") {
            return Err(format!("[cycles.seed] statistic is `{}`; it is `best` or `mean`", s.statistic));
        }
        fraction("seed.min_accuracy", s.min_accuracy)?;
        if !(s.novelty_threshold.is_finite() && s.novelty_threshold > 0.0) {
            return Err("[cycles.seed] novelty_threshold must be above 0 (1.0 keeps near-duplicates)".into());
        }
        if s.top == Some(0) {
            return Err("[cycles.seed] top must be at least 1".into());
        }
        if !s.is_lemur() {
            if s.min_accuracy > 0.0 {
                return Err(
                    "[cycles.seed] min_accuracy needs LEMUR's statistics; a file seed has none (use top)".into()
                );
            }
            if s.statistics_from.is_some() || s.wheel.is_some() {
                return Err("[cycles.seed] statistics_from and wheel are for source = \"lemur\"".into());
            }
        }
        if s.is_lemur() && s.statistics_from.as_deref() == Some("none") && s.min_accuracy > 0.0 {
            return Err("[cycles.seed] min_accuracy needs statistics; statistics_from = \"none\" has none".into());
        }
        let t = &self.tune;
        if t.rank == Some(0) || t.max_steps == Some(0) || t.batch_size == Some(0) || t.max_seq_len == Some(0) {
            return Err("[cycles.tune] rank, max_steps, batch_size and max_seq_len must be at least 1".into());
        }
        for (name, v) in [("alpha", t.alpha), ("epochs", t.epochs), ("learning_rate", t.learning_rate)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("[cycles.tune] {name} is {v}; it must be a positive number"));
                }
            }
        }
        if let Some(d) = t.dropout {
            if !(0.0..1.0).contains(&d) {
                return Err(format!("[cycles.tune] dropout is {d}; it must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Candidates over all cycles.
    pub fn total_candidates(&self) -> u64 {
        self.cycles.saturating_mul(self.candidates)
    }
}

/// Whether a run config file sets `[search] max_iterations` itself.
fn sets_max_iterations(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(table) = text.parse::<toml::Table>() else { return false };
    table.get("search").and_then(|s| s.as_table()).is_some_and(|s| s.contains_key("max_iterations"))
}

/// The budget of a cycles run: `[search] max_iterations` caps the
/// candidates over all cycles; when the config file `path` leaves it unset,
/// it is `cycles × candidates` (not the search's default of 20). Nothing
/// changes for a config without `[cycles]`.
pub fn settle_budget(path: &Path, config: &mut RunConfig) {
    if let Some(c) = &config.cycles {
        if !sets_max_iterations(path) {
            config.search.max_iterations = c.total_candidates();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, String> {
        crate::config::parse(text, Path::new("c.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_papers() {
        let c = parse("[cycles]\n").expect("parses").cycles.expect("a [cycles] section");
        assert_eq!((c.cycles, c.candidates, c.parents), (22, 50, 20));
        assert!((c.min_accuracy - 0.40).abs() < 1e-12 && (c.novelty_threshold - 0.90).abs() < 1e-12);
        assert_eq!(c.train_from, TrainFrom::Base);
        assert!(c.seed.is_lemur());
        assert_eq!(c.tune.settings(43).seed, Some(43), "the run's seed seeds the fine-tunes");
        assert!(parse("").expect("parses").cycles.is_none(), "no section: no cycles");
    }

    #[test]
    fn unknown_keys_and_nonsense_are_refused_with_the_key() {
        let e = parse("[cycles]\ncandidate = 3\n").expect_err("typo");
        assert!(e.contains("c.toml:2:") && e.contains("candidate"), "{e}");
        let e = parse("[cycles.tune]\nrnak = 8\n").expect_err("typo");
        assert!(e.contains("rnak"), "{e}");
        let e = parse("[cycles]\ntrain_from = \"scratch\"\n").expect_err("bad variant");
        assert!(e.contains("train_from") || e.contains("scratch"), "{e}");
        assert!(parse("[cycles]\ncycles = 0\n").expect_err("zero").contains("cycles must be at least 1"));
        assert!(parse("[cycles]\nmin_accuracy = 40\n").expect_err("percent").contains("fraction"));
        let e = parse("[cycles.seed]\nsource = \"seed.jsonl\"\nmin_accuracy = 0.5\n").expect_err("no statistics");
        assert!(e.contains("statistics"), "{e}");
        assert!(parse("[cycles.tune]\ndropout = 1.0\n").expect_err("dropout").contains("dropout"));
    }

    #[test]
    fn the_budget_is_all_cycles_unless_the_file_caps_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let open = dir.path().join("open.toml");
        std::fs::write(&open, "[cycles]\ncycles = 3\ncandidates = 4\n").expect("write");
        let mut c = crate::config::load(&open).expect("loads").config;
        settle_budget(&open, &mut c);
        assert_eq!(c.search.max_iterations, 12);
        let capped = dir.path().join("capped.toml");
        std::fs::write(&capped, "[search]\nmax_iterations = 5\n[cycles]\ncycles = 3\ncandidates = 4\n").expect("write");
        let mut c = crate::config::load(&capped).expect("loads").config;
        settle_budget(&capped, &mut c);
        assert_eq!(c.search.max_iterations, 5);
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, "").expect("write");
        let mut c = crate::config::load(&plain).expect("loads").config;
        settle_budget(&plain, &mut c);
        assert_eq!(c.search.max_iterations, 20, "a config without [cycles] keeps the search's default");
    }
}
