//! The fine-tuner role: a base model and a training set of chat examples in,
//! an adapter out.
//!
//! The method's closed loop ("Delta-Based NAS", "From Memorization to
//! Creativity") fine-tunes the Code Generator on its own best, novel designs,
//! cycle after cycle. A fine-tuner trains one adapter per call: the host
//! writes the training set (JSONL, one [`TrainingExample`] per line) and
//! names the base model by path; large data crosses the boundary by path,
//! never by value. The call blocks until the adapter is written; a trainer
//! that is stopped and called again with the same request and output
//! directory continues from its last checkpoint (a fine-tuner that cannot
//! resume starts over, which is correct but slower).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ChatMessage, PluginError};

/// One training example: the conversation up to the answer, and the answer.
/// The loss is taken on the answer's tokens only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingExample {
    /// The messages before the answer (system and user).
    pub messages: Vec<ChatMessage>,
    /// The answer the model should learn to give.
    pub answer: String,
    /// Where the example came from (`lemur:<model>`, `run:<dir>#<iteration>`,
    /// `file:<path>:<line>`), for the record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// The base model an adapter is trained on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// A short name (`qwen2.5-coder-0.5b`).
    #[serde(default)]
    pub name: String,
    /// The model file or directory (a GGUF file for the embedded models).
    pub path: PathBuf,
    /// sha256 of the model file, when known; recorded in the adapter so that
    /// an adapter is never applied to another base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// LoRA settings. `None` takes the fine-tuner's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuneSettings {
    /// LoRA rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// LoRA dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Module names to adapt (`q_proj`, `k_proj`, ..., `down_proj`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_modules: Vec<String>,
    /// Passes over the training set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Optimiser steps; when set, it bounds training before `epochs` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Examples per optimiser step (after gradient accumulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Longest tokenised example; longer ones are cut from the left of the
    /// prompt, never inside the answer when it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<u32>,
    /// Seed of initialisation, shuffling and dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One fine-tuning job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneRequest {
    /// A stable id for logs (`cycle-3`).
    pub job_id: String,
    /// The base model.
    pub base: ModelRef,
    /// The training set: JSONL, one [`TrainingExample`] per line.
    pub train_set: PathBuf,
    /// Where the adapter and the trainer's checkpoints go (created if
    /// missing; reused to resume).
    pub out_dir: PathBuf,
    /// LoRA settings.
    #[serde(default)]
    pub settings: TuneSettings,
    /// An adapter to continue training from instead of starting from the
    /// base (the papers start from the base every cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<f64>,
}

/// One point of the training loss curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    /// Optimiser step (1-based).
    pub step: u64,
    /// Mean loss over the answer tokens of the step's batch.
    pub loss: f64,
    /// Tokens seen so far.
    pub tokens: u64,
}

/// A trained adapter: where its files are and how it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    /// The adapter's directory.
    pub dir: PathBuf,
    /// A GGUF LoRA adapter for llama.cpp (`llm.local`), when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<PathBuf>,
    /// A PEFT adapter directory (`adapter_model.safetensors` +
    /// `adapter_config.json`) for vLLM and transformers, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_dir: Option<PathBuf>,
    /// sha256 of the base model it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// The loss curve, one point per optimiser step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_curve: Vec<LossPoint>,
    /// Optimiser steps taken.
    #[serde(default)]
    pub steps: u64,
    /// Training examples in the set.
    #[serde(default)]
    pub examples: u64,
    /// Tokens seen (all passes).
    #[serde(default)]
    pub tokens_seen: u64,
    /// Seconds of training (all attempts, when resumed).
    #[serde(default)]
    pub seconds: f64,
    /// The settings used, defaults filled in.
    #[serde(default)]
    pub settings: TuneSettings,
    /// Fine-tuner-specific facts (library versions, device, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A fine-tuner: trains an adapter on a base model.
///
/// Errors are infrastructure (the trainer cannot start, the base model is
/// missing, the training set is unreadable, out of memory): the host stops
/// the cycle with the run resumable.
pub trait FineTuner: Send {
    /// Trains one adapter; blocks until it is written.
    fn tune(&mut self, request: &TuneRequest) -> Result<Adapter, PluginError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_new_fields_default() {
        let r = TuneRequest {
            job_id: "cycle-1".into(),
            base: ModelRef { name: "m".into(), path: "/m.gguf".into(), sha256: None },
            train_set: "/t.jsonl".into(),
            out_dir: "/o".into(),
            settings: TuneSettings { rank: Some(8), ..Default::default() },
            init_adapter: None,
            time_limit_s: None,
        };
        let json = serde_json::to_string(&r).expect("serialises");
        assert_eq!(serde_json::from_str::<TuneRequest>(&json).expect("parses"), r);
        let minimal: TuneRequest =
            serde_json::from_str(r#"{"job_id":"j","base":{"path":"/m"},"train_set":"/t","out_dir":"/o"}"#)
                .expect("optional fields default");
        assert_eq!(minimal.settings, TuneSettings::default());
        let a: Adapter = serde_json::from_str(r#"{"dir":"/a"}"#).expect("adapter fields default");
        assert!(a.loss_curve.is_empty() && a.gguf.is_none());
    }
}
