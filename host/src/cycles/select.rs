//! Selection: which candidates of a cycle join the training set, and the
//! training examples they become.
//!
//! A candidate is selected when it trained (valid), its accuracy is at
//! least `min_accuracy`, and its design is novel: its MinHash Jaccard
//! similarity ([`crate::search::novelty`]) to every design of the seed
//! corpus and every model selected before it (earlier cycles, and earlier
//! iterations of its own cycle) is below `novelty_threshold`. The example
//! is the generator's prompt as recorded and its answer: the code block of
//! the design (whole files), or the diff (delta mode) — made again from the
//! parent to the evaluated design when a deterministic repair changed it.

use nas_plugin_api::TrainingExample;

use crate::corpus;
use crate::records::{IterationRecord, Outcome};
use crate::search::novelty::{self, Archive};

/// What must hold for a candidate to be selected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Accuracy at least this.
    pub min_accuracy: f64,
    /// Similarity to every archived design below this.
    pub novelty_threshold: f64,
}

/// The archive selection checks novelty against: the seed's designs, then
/// every model selected, in order.
#[derive(Debug, Clone, Default)]
pub struct Known {
    archive: Archive,
    next: u64,
}

impl Known {
    /// An archive of `designs` (the seed corpus's).
    pub fn new<'a>(designs: impl IntoIterator<Item = &'a String>) -> Known {
        let mut k = Known::default();
        for d in designs {
            k.add(d);
        }
        k
    }

    /// Adds a design.
    pub fn add(&mut self, design: &str) {
        self.next += 1;
        self.archive.add(self.next, novelty::signature(design));
    }

    /// Designs known.
    pub fn len(&self) -> usize {
        self.archive.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.archive.is_empty()
    }

    /// Whether `design` is below `threshold` against every known design.
    pub fn is_novel(&self, design: &str, threshold: f64) -> bool {
        self.archive.twin(&novelty::signature(design), threshold).is_none()
    }
}

/// The design a record evaluated (the repaired code when repaired).
pub fn design(record: &IterationRecord) -> Option<&str> {
    record.code.as_deref()
}

/// The answer a selected record teaches.
pub fn answer(record: &IterationRecord) -> Option<String> {
    let code = record.code.as_deref()?;
    match (&record.diff, record.repair.as_slice()) {
        (Some(diff), []) => Some(corpus::diff_answer(diff)),
        (Some(diff), _) => match super::seed::parent_in_prompt(&record.generator_prompt, diff) {
            Some((parent, _)) => Some(corpus::diff_answer(&corpus::unified_diff(&parent, code).0)),
            None => Some(corpus::code_answer(code)),
        },
        (None, _) => Some(corpus::code_answer(code)),
    }
}

/// The training example of a selected record.
pub fn example(record: &IterationRecord) -> Option<TrainingExample> {
    Some(TrainingExample {
        messages: record.generator_prompt.clone(),
        answer: answer(record)?,
        source: format!("cycle-{}:iteration-{}", record.cycle, record.iteration),
    })
}

/// Selects among `records` (one cycle's, in iteration order), adding each
/// selected design to `known`; returns the selected iterations.
pub fn select(records: &[&IterationRecord], known: &mut Known, criteria: Criteria) -> Vec<u64> {
    let mut out = Vec::new();
    for r in records {
        let Outcome::Ok { report } = &r.outcome else { continue };
        if report.accuracy < criteria.min_accuracy {
            continue;
        }
        let Some(code) = design(r) else { continue };
        if known.is_novel(code, criteria.novelty_threshold) {
            known.add(code);
            out.push(r.iteration);
        }
    }
    out
}

/// Lines of a record's answer as the generator wrote it: its diff in delta
/// mode, else its code (before any repair). `None` when it had neither.
pub fn answer_lines(record: &IterationRecord) -> Option<usize> {
    if let Some(d) = &record.diff {
        return Some(d.trim_end().lines().count());
    }
    let code = record.code.as_deref()?;
    let original = crate::search::repair::original(&record.repair, code);
    Some(original.trim_end().lines().count())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nas_plugin_api::{CandidateFailure, ChatMessage, ChatResponse, EvalReport, FailureKind};

    pub(crate) fn record(t: u64, code: &str, outcome: Outcome) -> IterationRecord {
        // Built from JSON so that fields added to records later take their
        // defaults here too.
        let mut r: IterationRecord = serde_json::from_value(serde_json::json!({
            "iteration": t, "mode": "full",
            "generator_prompt": [ChatMessage::system("s"), ChatMessage::user("write a net")],
            "generator_response": ChatResponse { content: format!("```python\n{code}\n```"), ..Default::default() },
            "outcome": outcome,
            "generator_usage": crate::records::RoleUsage::default(), "improver_usage": crate::records::RoleUsage::default(),
            "eval_seconds": 0.0, "wall_seconds": 0.0, "finished_at": 0.0, "cycle": 1,
        }))
        .expect("a record");
        r.code = Some(code.to_string());
        r
    }

    fn ok(acc: f64) -> Outcome {
        Outcome::Ok { report: EvalReport { accuracy: acc, ..Default::default() } }
    }

    fn net(width: usize, extra: &str) -> String {
        format!("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(1, {width}, 3)\n{extra}        self.fc = nn.Linear({width}, num_classes)\n    def forward(self, x):\n        return self.fc(self.conv(x).mean((2, 3)))\n")
    }

    #[test]
    fn valid_accurate_and_novel_candidates_are_selected_in_order() {
        let seed = net(8, "");
        let mut known = Known::new([&seed]);
        let deep = net(
            16,
            "        self.a = nn.BatchNorm2d(16)\n        self.b = nn.GELU()\n        self.c = nn.Dropout(0.2)\n",
        );
        let wide = net(64, "        self.x = nn.LayerNorm(64)\n        self.y = nn.SiLU()\n        self.z = nn.MaxPool2d(2)\n        self.w = nn.Identity()\n");
        let failed = Outcome::Failed { failure: CandidateFailure::new("train", FailureKind::Runtime, "boom") };
        let records = [
            record(1, &seed, ok(0.9)),  // a copy of the seed: not novel
            record(2, &deep, ok(0.3)),  // below the threshold
            record(3, &deep, ok(0.5)),  // selected
            record(4, &deep, ok(0.6)),  // a copy of iteration 3: not novel
            record(5, &wide, failed),   // not valid
            record(6, &wide, ok(0.40)), // at the threshold: selected
        ];
        let refs: Vec<&IterationRecord> = records.iter().collect();
        let criteria = Criteria { min_accuracy: 0.40, novelty_threshold: 0.90 };
        assert_eq!(select(&refs, &mut known, criteria), vec![3, 6]);
        assert_eq!(known.len(), 3);
        let again = select(&refs, &mut known, criteria);
        assert!(again.is_empty(), "what was selected is known");
        let e = example(&records[2]).expect("an example");
        assert_eq!(e.messages, records[2].generator_prompt);
        assert_eq!(e.answer, corpus::code_answer(&deep));
        assert_eq!(e.source, "cycle-1:iteration-3");
    }

    #[test]
    fn delta_answers_are_the_diff_and_lines_count_what_the_generator_wrote() {
        let parent = net(8, "");
        let child = net(32, "");
        let (diff, _) = corpus::unified_diff(&parent, &child);
        let mut r = record(1, &child, ok(0.7));
        r.mode = "delta".into();
        r.diff = Some(diff.clone());
        r.generator_prompt = vec![ChatMessage::user(format!("Parent design:\n```python\n{}```\n", parent))];
        assert_eq!(answer(&r), Some(corpus::diff_answer(&diff)));
        assert_eq!(answer_lines(&r), Some(diff.trim_end().lines().count()));
        let full = record(2, &child, ok(0.7));
        assert_eq!(answer_lines(&full), Some(child.trim_end().lines().count()));
    }
}
