//! The evaluator role: candidate source code in, a score or a typed failure
//! out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::PluginError;

/// Which prepared dataset to evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// The prepared dataset's directory (holding `manifest.json`).
    pub dir: PathBuf,
    /// Its short name.
    #[serde(default)]
    pub name: String,
}

/// A candidate to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRequest {
    /// A stable id for logs and scratch directories.
    pub candidate_id: String,
    /// The candidate's source: an LLM answer, or plain Python. The evaluator
    /// extracts the code (first python fence, else any fence, else the whole
    /// text).
    pub source: String,
    /// The prepared dataset.
    pub dataset: DatasetRef,
    /// Wall-clock limit for the whole evaluation, overriding the evaluator's
    /// setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<f64>,
    /// Seed overriding the evaluator's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// When set, an evaluator that can writes the trained model there as
    /// TorchScript (after the proxy training, with its weights); others
    /// ignore it. The search never sets it; `nas export` does. Added in
    /// plugin API 1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_model: Option<PathBuf>,
    /// The compute budget the network must fit before it is trained. An
    /// evaluator that can measure the network before training (parameters,
    /// forward FLOPs) fails one over the budget with a
    /// [`FailureKind::Constraint`] at stage `budget`, without training it;
    /// one that cannot ignores it (the host still judges the report it
    /// returns). Added in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    /// The network fingerprints ([`NETWORK_KEY`] of earlier reports) of the
    /// networks this search has already trained. An evaluator that
    /// fingerprints the network before training fails one whose
    /// fingerprint is among them with a [`FailureKind::Duplicate`] at stage
    /// `network`, naming the fingerprint in its message, without training
    /// it; one that cannot ignores them. Added in plugin API 1.3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_networks: Vec<String>,
}

/// The key in [`EvalReport::extra`] under which an evaluator that can
/// reports the network's fingerprint: equal for two candidates that build
/// the same network (the same parameters and buffers, initialised the same
/// at the same seed, giving the same outputs in training and in evaluation
/// mode), whatever their source text; they would train to the same score.
pub const NETWORK_KEY: &str = "network";

/// The key in [`EvalReport::extra`] under which an evaluator that can names
/// the machine that trained the candidate, as one line (the processor, and
/// what else decides the score's last bits: `AMD EPYC (AVX2) with torch
/// 2.11.0`, `NVIDIA H100 80GB HBM3 with torch 2.11.0+cu128`). The same seed
/// repeats a score exactly only where this is the same; the host's report
/// lists the machines of a run that trained on more than one.
pub const MACHINE_KEY: &str = "machine";

/// The stage of a [`CandidateFailure`] that refuses a candidate before its
/// training because it breaks the request's [`Budget`] (kind
/// [`FailureKind::Constraint`]); a host may answer it (a narrower design,
/// a request to make it cheaper).
pub const BUDGET_STAGE: &str = "budget";

/// A compute budget checked before training: what a network may cost to be
/// worth an epoch. Unset fields are unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Most trainable parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_params: Option<u64>,
    /// Most forward FLOPs for one example (multiply-add counted as 2), as
    /// [`EvalReport::flops`] counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flops: Option<u64>,
}

impl Budget {
    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.max_params.is_none() && self.max_flops.is_none()
    }

    /// What `params` and `flops` break of this budget, each as a sentence
    /// ("15,904,138 parameters, over the limit of 2,000,000"); a figure
    /// not measured breaks nothing.
    pub fn broken_by(&self, params: Option<u64>, flops: Option<u64>) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(max), Some(p)) = (self.max_params, params) {
            if p > max {
                out.push(format!(
                    "{} parameters, over the limit of {}",
                    crate::text::thousands(p),
                    crate::text::thousands(max)
                ));
            }
        }
        if let (Some(max), Some(f)) = (self.max_flops, flops) {
            if f > max {
                out.push(format!(
                    "{:.1} MFLOPs per example, over the limit of {:.1}",
                    f as f64 / 1e6,
                    max as f64 / 1e6
                ));
            }
        }
        out
    }
}

/// A successful evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Test accuracy after the proxy training, 0–1.
    pub accuracy: f64,
    /// Mean training loss over the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Trainable parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    /// Forward FLOPs for one example (multiply-add counted as 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<u64>,
    /// Seconds of the training epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_seconds: Option<f64>,
    /// Training throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_second: Option<f64>,
    /// Peak memory in bytes of the trainee's own allocations (CUDA
    /// allocator peak on a GPU, the worker's resident set on a CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Inference latency of one example (batch 1), in milliseconds, on the
    /// evaluation device after warm-up. Added in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Inference latency of one training-size batch, in milliseconds, on the
    /// evaluation device after warm-up. Added in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_latency_ms: Option<f64>,
    /// Seconds the evaluation device worked for this candidate (check,
    /// training, test, measurements): GPU-seconds on a GPU. Added in plugin
    /// API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_seconds: Option<f64>,
    /// The seed the candidate was trained with. Added in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The device trained on (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: String,
    /// Seconds of the whole evaluation (check, export, train, test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<f64>,
    /// Evaluator-specific metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl EvalReport {
    /// The machine that trained the candidate ([`MACHINE_KEY`]), when the
    /// evaluator named it.
    pub fn machine(&self) -> Option<&str> {
        self.extra.get(MACHINE_KEY).and_then(|m| m.as_str())
    }
}

/// The kind of a candidate's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No code could be extracted from the answer.
    Extract,
    /// The code does not parse or compile.
    Syntax,
    /// The code does not define a network by an accepted contract.
    Contract,
    /// The forward pass gives the wrong output shape.
    Shape,
    /// An exception while building, running or training.
    Runtime,
    /// The evaluation ran past its time limit.
    Timeout,
    /// The candidate ran out of (GPU or host) memory.
    OutOfMemory,
    /// The loss became NaN or infinite.
    NonFinite,
    /// The network could not be exported for training.
    Export,
    /// A delta-mode diff did not apply to its parent.
    Patch,
    /// The candidate was stopped by the sandbox (forbidden action).
    Sandbox,
    /// The candidate trained but breaks a limit of the search's objective
    /// (parameters, FLOPs, latency, memory). Added in plugin API 1.2.
    Constraint,
    /// The network is one the search has already trained (its fingerprint
    /// is in [`EvalRequest::known_networks`]), so it was not trained again.
    /// Added in plugin API 1.3.
    Duplicate,
    /// A kind this host does not know (from a newer plugin).
    #[serde(other)]
    Unknown,
}

impl FailureKind {
    /// The snake_case name used on the wire and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Extract => "extract",
            FailureKind::Syntax => "syntax",
            FailureKind::Contract => "contract",
            FailureKind::Shape => "shape",
            FailureKind::Runtime => "runtime",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::NonFinite => "non_finite",
            FailureKind::Export => "export",
            FailureKind::Patch => "patch",
            FailureKind::Sandbox => "sandbox",
            FailureKind::Constraint => "constraint",
            FailureKind::Duplicate => "duplicate",
            FailureKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a candidate failed: a value, recorded and fed back to the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateFailure {
    /// The stage that failed (`extract`, `check`, `export`, `train`, `test`, ...).
    pub stage: String,
    /// The kind of failure.
    pub kind: FailureKind,
    /// A one-paragraph message.
    pub message: String,
    /// The Python exception type, for runtime failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// The tail of the traceback or log, for the Prompt Improver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceback: String,
}

impl CandidateFailure {
    /// A failure of `kind` at `stage`.
    pub fn new(stage: impl Into<String>, kind: FailureKind, message: impl Into<String>) -> Self {
        CandidateFailure {
            stage: stage.into(),
            kind,
            message: message.into(),
            exception: None,
            traceback: String::new(),
        }
    }
}

/// The outcome of evaluating a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EvalOutcome {
    /// It trained and was scored.
    Ok(EvalReport),
    /// It failed; the failure is a learning signal, not an error.
    Failed(CandidateFailure),
}

/// An evaluator: scores candidates.
///
/// A bad candidate is `Ok(EvalOutcome::Failed(..))`. `Err(..)` means the
/// evaluator itself is broken (no Python, no dataset, a crashed worker that
/// cannot be restarted) and ends the run.
pub trait Evaluator: Send {
    /// Evaluates one candidate.
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_model_is_optional_on_the_wire_both_ways() {
        // A request from a 1.0 host parses, and a request without the
        // field serializes exactly as a 1.0 host's did.
        let old = r#"{"candidate_id":"c","source":"x","dataset":{"dir":"/d","name":"n"}}"#;
        let r: EvalRequest = serde_json::from_str(old).expect("a 1.0 request parses");
        assert_eq!(r.save_model, None);
        assert_eq!(serde_json::to_string(&r).expect("serializes"), old);
        let with = EvalRequest { save_model: Some(PathBuf::from("/out/model.pt")), ..r };
        let v = serde_json::to_value(&with).expect("serializes");
        assert_eq!(v["save_model"], "/out/model.pt");
    }

    #[test]
    fn a_budget_is_optional_on_the_wire_and_names_what_it_breaks() {
        let old = r#"{"candidate_id":"c","source":"x","dataset":{"dir":"/d","name":"n"}}"#;
        let r: EvalRequest = serde_json::from_str(old).expect("a request without a budget parses");
        assert!(r.budget.is_empty());
        let budget = Budget { max_params: Some(2_000_000), max_flops: Some(200_000_000) };
        let with = EvalRequest { budget, ..r };
        let text = serde_json::to_string(&with).expect("serializes");
        assert!(text.contains(r#""budget":{"max_params":2000000,"max_flops":200000000}"#), "{text}");
        assert_eq!(serde_json::from_str::<EvalRequest>(&text).expect("parses"), with);
        assert_eq!(
            budget.broken_by(Some(15_904_138), Some(1_099_200_000)),
            vec![
                "15,904,138 parameters, over the limit of 2,000,000".to_string(),
                "1099.2 MFLOPs per example, over the limit of 200.0".to_string()
            ]
        );
        assert!(budget.broken_by(Some(2_000_000), None).is_empty(), "at the limit, or not measured, breaks nothing");
    }
}
