//! The seed corpus of a cycles run (cycle 0's training set), and the
//! designs a training set holds.
//!
//! `source = "lemur"` builds the LEMUR corpus exactly as `nas corpus lemur`
//! does for the run's dataset, mode and prompts ([`crate::corpus`]); a path
//! reads a JSONL file, a corpus folder (`train.jsonl`) or a `nas export`
//! folder (`corpus/train.jsonl`) as `nas corpus import` does.
//!
//! A *design* is the code an example teaches: a whole-file answer's code,
//! or a diff answer applied to the parent its prompt shows. The designs of
//! the seed are what selected models must be novel against, and what delta
//! mode's candidates diff against.

use std::path::{Path, PathBuf};

use nas_plugin_api::{ChatRole, DatasetManifest, TrainingExample};
use serde_json::json;

use super::config::SeedSection;
use super::CycleError;
use crate::config::GenerationMode;
use crate::corpus::prompt::PromptSetup;
use crate::corpus::wheel::{self, DatasetMatch, LemurWheel, Statistic};
use crate::corpus::{self, DeltaOptions, ImportOptions, LemurOptions, Rng};
use crate::search::{delta, extract};

/// A built seed: its examples and what was read and kept.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The examples, in order.
    pub examples: Vec<TrainingExample>,
    /// What the build read, kept and left out (for the record).
    pub summary: serde_json::Value,
}

/// The JSONL file a seed path names: the file itself, `<dir>/train.jsonl`
/// or `<dir>/corpus/train.jsonl`.
pub fn seed_file(path: &Path) -> Result<PathBuf, CycleError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for candidate in [path.join(corpus::TRAIN_FILE), path.join("corpus").join(corpus::TRAIN_FILE)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(CycleError::Seed(format!(
        "source {}: no such file, and no {} in it or in its corpus/ folder",
        path.display(),
        corpus::TRAIN_FILE
    )))
}

/// Builds the seed. `config_dir` resolves relative paths; `mode` and
/// `prompts` are the run's (LEMUR examples are rendered with them).
pub fn build(
    section: &SeedSection,
    config_dir: &Path,
    mode: GenerationMode,
    prompts: &PromptSetup,
    manifest: &DatasetManifest,
    seed: u64,
) -> Result<Seed, CycleError> {
    let built = if section.is_lemur() {
        lemur(section, config_dir, mode, prompts, manifest, seed)?
    } else {
        let path = seed_file(&config_dir.join(&section.source))?;
        let opts = ImportOptions { top: section.top, novelty_threshold: section.novelty_threshold };
        let (c, counts) = corpus::import_corpus(std::slice::from_ref(&path), &opts)?;
        Seed {
            examples: c.examples.into_iter().map(|(e, _)| e).collect(),
            summary: json!({"source": "file", "file": path, "counts": counts}),
        }
    };
    if built.examples.is_empty() {
        return Err(CycleError::Seed(format!("the seed corpus has no examples ({})", built.summary)));
    }
    Ok(built)
}

fn lemur(
    section: &SeedSection,
    config_dir: &Path,
    mode: GenerationMode,
    prompts: &PromptSetup,
    manifest: &DatasetManifest,
    seed: u64,
) -> Result<Seed, CycleError> {
    let statistics = match section.statistics_from.as_deref() {
        Some("none") => None,
        Some(name) => Some(name.to_string()),
        None => match wheel::match_dataset(&manifest.name, &manifest.family) {
            DatasetMatch::Same { lemur, .. } => Some(lemur),
            DatasetMatch::Nearest { lemur, why } => {
                return Err(CycleError::Seed(format!(
                    "LEMUR has no statistics for `{}`; the nearest dataset it has statistics for is `{lemur}` ({why}): set statistics_from = \"{lemur}\" (or \"none\" for its models in a seeded draw)",
                    manifest.name
                )))
            }
            DatasetMatch::None => {
                return Err(CycleError::Seed(format!(
                    "LEMUR has no statistics for `{}`: set statistics_from to a dataset it has (cifar-10, cifar-100, mnist, svhn, imagenette, celeba-gender, places365) or \"none\"",
                    manifest.name
                )))
            }
        },
    };
    let wheel_path = match &section.wheel {
        Some(p) => {
            let p = config_dir.join(p);
            wheel::verify(&p)?;
            p
        }
        None => wheel::ensure(&wheel::default_dir(), &crate::fetch::FetchOptions::default())?,
    };
    let mut w = LemurWheel::open(&wheel_path)?;
    if let Some(name) = statistics.as_deref() {
        let available = w.classification_datasets();
        if !available.contains_key(name) {
            let list = available.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(CycleError::Seed(format!(
                "statistics_from: LEMUR has no statistics named `{name}` (it has {list}, or \"none\")"
            )));
        }
    }
    let statistic: Statistic = section.statistic.parse().map_err(CycleError::Seed)?;
    let opts = LemurOptions {
        mode,
        statistics: statistics.clone(),
        statistic,
        min_accuracy: section.min_accuracy,
        top: section.top,
        novelty_threshold: section.novelty_threshold,
        seed,
        delta: DeltaOptions { max_diff_lines: section.max_diff_lines, ..DeltaOptions::default() },
    };
    let c = corpus::lemur_corpus(&mut w, prompts, &opts)?;
    let summary = json!({
        "source": "lemur", "package": wheel::PACKAGE, "wheel_sha256": wheel::WHEEL_SHA256,
        "statistics": statistics, "statistic": statistic.as_str(), "counts": c.counts,
    });
    Ok(Seed { examples: c.examples.into_iter().map(|(e, _)| e).collect(), summary })
}

/// The code of every python fence of the example's last user message.
fn prompt_codes(messages: &[nas_plugin_api::ChatMessage]) -> Vec<String> {
    let Some(user) = messages.iter().rev().find(|m| m.role == ChatRole::User) else { return Vec::new() };
    extract::fences(&user.content)
        .into_iter()
        .filter(|f| matches!(f.lang.as_str(), "python" | "py" | "python3" | ""))
        .map(|f| f.body.to_string())
        .collect()
}

/// The parent a diff applies to among the designs a prompt shows, and the
/// design it makes.
pub fn parent_in_prompt(messages: &[nas_plugin_api::ChatMessage], diff: &str) -> Option<(String, String)> {
    for code in prompt_codes(messages) {
        for parent in [code.clone(), format!("{}\n", code.trim_end_matches('\n'))] {
            if let Ok((design, _)) = delta::apply(&parent, diff) {
                return Some((parent, design));
            }
        }
    }
    None
}

/// The design an example teaches: a diff answer applied to its prompt's
/// parent, else the answer's code. `None` when it has neither.
pub fn design(example: &TrainingExample) -> Option<String> {
    match extract::extract_diff(&example.answer) {
        Some(diff) => parent_in_prompt(&example.messages, &diff).map(|(_, design)| design),
        None => extract::extract_code(&example.answer),
    }
}

/// `n` designs drawn from `designs` with `seed` (all of them, shuffled,
/// when `n` is 0 or at least their number); exact copies count once.
pub fn draw_parents(designs: &[String], n: usize, seed: u64) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for d in designs {
        if !unique.contains(d) {
            unique.push(d.clone());
        }
    }
    let mut rng = Rng::new(seed ^ 0x7061_7265_6e74_7321);
    for i in (1..unique.len()).rev() {
        unique.swap(i, rng.below(i + 1));
    }
    if n > 0 {
        unique.truncate(n);
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::ChatMessage;

    const PARENT: &str = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";

    fn example(user: &str, answer: &str) -> TrainingExample {
        TrainingExample {
            messages: vec![ChatMessage::system("s"), ChatMessage::user(user)],
            answer: answer.into(),
            source: String::new(),
        }
    }

    #[test]
    fn designs_come_from_whole_files_and_from_diffs_applied_to_their_parent() {
        let full = example("write a net", &corpus::code_answer(PARENT));
        assert_eq!(design(&full).as_deref(), Some(PARENT.trim_end()));
        let wider = PARENT.replace(
            "nn.Linear(784, num_classes)",
            "nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))",
        );
        let (diff, _) = corpus::unified_diff(PARENT, &wider);
        let prompt = format!("Parent design (attempt 0):\n```python\n{}\n```\nAnswer with a diff.", PARENT.trim_end());
        let delta = example(&prompt, &corpus::diff_answer(&diff));
        assert_eq!(design(&delta).as_deref(), Some(wider.as_str()));
        let (parent, _) = parent_in_prompt(&delta.messages, &diff).expect("the parent is found");
        assert_eq!(parent, PARENT);
        let orphan = example("no parent here", &corpus::diff_answer(&diff));
        assert_eq!(design(&orphan), None);
    }

    #[test]
    fn parents_are_a_seeded_draw_without_copies() {
        let designs: Vec<String> =
            (0..10).map(|i| format!("class Net{i}: pass")).chain(["class Net0: pass".to_string()]).collect();
        let a = draw_parents(&designs, 4, 7);
        assert_eq!(a.len(), 4);
        assert_eq!(a, draw_parents(&designs, 4, 7), "the same seed draws the same parents");
        assert_ne!(draw_parents(&designs, 0, 7), draw_parents(&designs, 0, 8));
        let all = draw_parents(&designs, 0, 7);
        assert_eq!(all.len(), 10, "copies count once");
        assert_eq!(draw_parents(&designs, 50, 7).len(), 10);
    }
}
