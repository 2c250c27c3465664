//! Evaluators: a good candidate scores, bad candidates are typed failures
//! (values, not errors), and the same source under the same seed scores the
//! same.

use nas_plugin_api::{DatasetManifest, DatasetRef, EvalOutcome, EvalReport, EvalRequest, Evaluator, FailureKind};

use crate::{must, Report};

/// The candidates [`check_evaluator`] submits: the paper's contract
/// (`Net(in_shape, num_classes)`, `in_shape = (C, H, W)`), one linear layer,
/// so that any dataset fits and training takes moments.
pub mod candidates {
    /// Trains and scores.
    pub const GOOD: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear(c * h * w, num_classes)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";
    /// Does not parse.
    pub const SYNTAX_ERROR: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear((c * h * w, num_classes)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";
    /// Gives three outputs too many per example.
    pub const WRONG_SHAPE: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear(c * h * w, num_classes + 3)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";
    /// Defines `Model`, not `Net`.
    pub const MISSING_CLASS: &str = "import torch.nn as nn\n\n\nclass Model(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear(c * h * w, num_classes)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";
}

/// The seed every evaluation of the check asks for.
const SEED: u64 = 7;

/// Runs the evaluator checks against `evaluator` on the prepared dataset
/// `dataset` (its manifest gives the shapes). The evaluator's settings
/// decide how long a candidate takes: give it a small slice of the data.
///
/// Checks: `good_candidate_scores` (accuracy in 0..=1, finite, and the
/// parameter count of [`candidates::GOOD`]), `syntax_error_is_a_failure`,
/// `wrong_output_shape_is_a_failure`, `missing_class_is_a_failure` (each an
/// `EvalOutcome::Failed` of its kind, not a `PluginError`),
/// `same_seed_same_accuracy`.
pub fn check_evaluator(evaluator: &mut dyn Evaluator, dataset: &DatasetRef) -> Report {
    let mut r = Report::default();
    let manifest = DatasetManifest::load(&dataset.dir).map_err(|e| format!("the dataset given: {e}"));
    let mut evaluate = |name: &str, source: &str| -> Result<EvalOutcome, String> {
        let request = EvalRequest {
            candidate_id: format!("conformance-{name}"),
            source: source.to_string(),
            dataset: dataset.clone(),
            time_limit_s: None,
            seed: Some(SEED),
            save_model: None,
            budget: Default::default(),
            known_networks: Vec::new(),
        };
        must(&format!("evaluating the {name} candidate"), || evaluator.evaluate(&request))
    };
    let scored = |outcome: EvalOutcome| match outcome {
        EvalOutcome::Ok(report) => Ok(report),
        EvalOutcome::Failed(f) => Err(format!("failed ({} at {}): {}", f.kind, f.stage, f.message)),
    };
    let good = evaluate("good", candidates::GOOD).and_then(scored);
    r.record(
        "good_candidate_scores",
        good.as_ref().map_err(Clone::clone).and_then(|report| {
            let m = manifest.as_ref().map_err(Clone::clone)?;
            let [c, h, w] = m.input_shape;
            let params = (c * h * w * m.num_classes + m.num_classes) as u64;
            if !(report.accuracy.is_finite() && (0.0..=1.0).contains(&report.accuracy)) {
                Err(format!("accuracy {}", report.accuracy))
            } else if report.params != Some(params) {
                Err(format!("params {:?}, the network has {params}", report.params))
            } else {
                Ok(())
            }
        }),
    );
    for (check, name, source, kind) in [
        ("syntax_error_is_a_failure", "syntax-error", candidates::SYNTAX_ERROR, FailureKind::Syntax),
        ("wrong_output_shape_is_a_failure", "wrong-shape", candidates::WRONG_SHAPE, FailureKind::Shape),
        ("missing_class_is_a_failure", "missing-class", candidates::MISSING_CLASS, FailureKind::Contract),
    ] {
        r.record(
            check,
            evaluate(name, source).and_then(|outcome| match outcome {
                EvalOutcome::Failed(f) if f.kind == kind => Ok(()),
                EvalOutcome::Failed(f) => Err(format!("a {} failure (want {kind}): {}", f.kind, f.message)),
                EvalOutcome::Ok(report) => Err(format!("scored {}", report.accuracy)),
            }),
        );
    }
    r.record(
        "same_seed_same_accuracy",
        good.as_ref().map_err(Clone::clone).and_then(|first: &EvalReport| {
            let again = evaluate("good", candidates::GOOD).and_then(scored)?;
            if again.accuracy == first.accuracy {
                Ok(())
            } else {
                Err(format!("{} then {} under seed {SEED}", first.accuracy, again.accuracy))
            }
        }),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::{CandidateFailure, PluginError, SplitManifest, PREPARED_FORMAT_VERSION};

    /// Judges candidates by their text, the way the check's candidates differ.
    struct Reader {
        accuracy: f64,
    }

    impl Evaluator for Reader {
        fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
            let s = &request.source;
            let fail = |kind| Ok(EvalOutcome::Failed(CandidateFailure::new("check", kind, "no")));
            if !s.contains("class Net") {
                return fail(FailureKind::Contract);
            }
            if s.contains("((") {
                return fail(FailureKind::Syntax);
            }
            if s.contains("+ 3") {
                return fail(FailureKind::Shape);
            }
            self.accuracy += 0.125;
            Ok(EvalOutcome::Ok(EvalReport { accuracy: self.accuracy, params: Some(4 * 2 + 2), ..Default::default() }))
        }
    }

    #[test]
    fn an_evaluator_that_scores_differently_each_time_fails_only_the_seed_check() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let split = |n| SplitManifest { file: "x.safetensors".into(), count: n };
        DatasetManifest {
            format_version: PREPARED_FORMAT_VERSION,
            name: "toy".into(),
            family: String::new(),
            input_shape: [1, 2, 2],
            num_classes: 2,
            class_names: vec![],
            mean: vec![0.5],
            std: vec![0.25],
            splits: [("train".to_string(), split(3)), ("test".to_string(), split(2))].into(),
            sources: vec![],
            extra: Default::default(),
        }
        .save(tmp.path())
        .expect("save");
        let dataset = DatasetRef { dir: tmp.path().to_path_buf(), name: "toy".into() };
        let r = check_evaluator(&mut Reader { accuracy: 0.0 }, &dataset);
        assert_eq!(r.failures().iter().map(|c| c.name).collect::<Vec<_>>(), ["same_seed_same_accuracy"], "{r}");
        assert_eq!(r.passed().len(), 4, "{r}");
    }
}
