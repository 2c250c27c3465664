//! What a run records: the outcome of each candidate, each iteration's
//! record, LLM usage and journaled calls. Plain data, shared by the search,
//! the run store, metrics, reports and exports; the store (SQLite) is one
//! reader and writer of it among others.

use nas_plugin_api::{CandidateFailure, ChatMessage, ChatResponse, EvalReport, MemoryEntry};
use serde::{Deserialize, Serialize};

/// Which LLM role of the method made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmRole {
    /// The Code Generator.
    Generator,
    /// The Prompt Improver.
    Improver,
    /// A task the memory strategy asked for (answered by the Improver's
    /// backend).
    Memory,
}

impl LlmRole {
    /// Every role.
    pub const ALL: [LlmRole; 3] = [LlmRole::Generator, LlmRole::Improver, LlmRole::Memory];

    /// The name in the store, the prompts and the logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LlmRole::Generator => "generator",
            LlmRole::Improver => "improver",
            LlmRole::Memory => "memory",
        }
    }

    /// The role with this name.
    pub fn parse(name: &str) -> Option<LlmRole> {
        LlmRole::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for LlmRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It trained and was scored.
    Ok {
        /// The evaluator's report.
        report: EvalReport,
    },
    /// It failed (extract, patch, syntax, ... or in training).
    Failed {
        /// The failure.
        failure: CandidateFailure,
    },
    /// The novelty filter found it too close to an evaluated one, or (with
    /// `network`) the evaluator found it builds a network already trained;
    /// not trained.
    Duplicate {
        /// The iteration of its twin.
        of: u64,
        /// Estimated Jaccard similarity of the texts (1 for the same network).
        similarity: f64,
        /// The same network as its twin's, however written: the evaluator's
        /// fingerprint of the network ([`nas_plugin_api::NETWORK_KEY`]) is
        /// the twin's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        network: bool,
    },
}

impl Outcome {
    /// The accuracy, when it trained.
    pub fn accuracy(&self) -> Option<f64> {
        match self {
            Outcome::Ok { report } => Some(report.accuracy),
            _ => None,
        }
    }

    /// `ok`, `failed` or `duplicate`: the store's `status` column.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Failed { .. } => "failed",
            Outcome::Duplicate { .. } => "duplicate",
        }
    }

    /// The network's fingerprint ([`nas_plugin_api::NETWORK_KEY`]) of a
    /// candidate that trained, when the evaluator reported one.
    pub fn network(&self) -> Option<&str> {
        match self {
            Outcome::Ok { report } => report.extra.get(nas_plugin_api::NETWORK_KEY).and_then(|v| v.as_str()),
            _ => None,
        }
    }

    /// The iteration of a duplicate's twin.
    pub fn duplicate_of(&self) -> Option<u64> {
        match self {
            Outcome::Duplicate { of, .. } => Some(*of),
            _ => None,
        }
    }

    /// The failure kind name, when it did not train (`duplicate` for
    /// duplicates).
    pub fn failure_kind(&self) -> Option<String> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { failure } => Some(failure.kind.as_str().to_string()),
            Outcome::Duplicate { .. } => Some("duplicate".into()),
        }
    }

    /// The text that closes a memory entry: `accuracy: 72.23%` or
    /// `error: <first 200 chars>`.
    pub fn memory_text(&self) -> String {
        match self {
            Outcome::Ok { report } => format!("accuracy: {:.2}%", report.accuracy * 100.0),
            Outcome::Failed { failure } => {
                let msg = format!("{}: {}", failure.kind, failure.message);
                format!("error: {}", nas_plugin_api::text::truncate_chars(&msg, 200))
            }
            Outcome::Duplicate { of, network: true, .. } => {
                format!("error: the same network as iteration {of}, written otherwise; not trained")
            }
            Outcome::Duplicate { of, similarity, .. } => {
                format!("error: duplicate of iteration {of} (similarity {similarity:.2}); not trained")
            }
        }
    }
}

/// Tokens and seconds spent by one LLM role in one iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleUsage {
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
    /// Wall seconds in LLM calls.
    pub seconds: f64,
    /// Calls made (journaled answers reused on resume count too).
    pub calls: u32,
}

impl RoleUsage {
    /// Adds another role's (or iteration's) usage.
    pub fn merge(&mut self, other: &RoleUsage) {
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.seconds += other.seconds;
        self.calls += other.calls;
    }

    /// Adds one response.
    pub fn add(&mut self, r: &ChatResponse) {
        self.tokens_in += r.usage.prompt_tokens;
        self.tokens_out += r.usage.completion_tokens;
        self.seconds += r.latency_ms as f64 / 1000.0;
        self.calls += 1;
    }
}

/// Everything recorded about one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// 1-based iteration number.
    pub iteration: u64,
    /// `full` or `delta`.
    pub mode: String,
    /// The Code Generator's prompt.
    pub generator_prompt: Vec<ChatMessage>,
    /// Its raw answer.
    pub generator_response: ChatResponse,
    /// The candidate's code (after applying the diff in delta mode).
    #[serde(default)]
    pub code: Option<String>,
    /// The diff, in delta mode.
    #[serde(default)]
    pub diff: Option<String>,
    /// The parent's iteration in delta mode (0 = the configured baseline).
    #[serde(default)]
    pub parent: Option<u64>,
    /// What happened.
    pub outcome: Outcome,
    /// The Prompt Improver's prompt, when it ran.
    #[serde(default)]
    pub improver_prompt: Option<Vec<ChatMessage>>,
    /// Its raw answer.
    #[serde(default)]
    pub improver_response: Option<ChatResponse>,
    /// Its advice as parsed.
    #[serde(default)]
    pub advice: Option<Advice>,
    /// The entries the memory strategy showed the Improver.
    #[serde(default)]
    pub memory_shown: Vec<MemoryEntry>,
    /// The memory strategy's summary, when it keeps one.
    #[serde(default)]
    pub memory_summary: Option<String>,
    /// The memory strategy's state after this iteration.
    #[serde(default)]
    pub memory_state: Option<serde_json::Value>,
    /// Best accuracy after this iteration, and its iteration.
    #[serde(default)]
    pub best: Option<(u64, f64)>,
    /// Code Generator usage.
    pub generator_usage: RoleUsage,
    /// Prompt Improver usage (memory-summary tasks included).
    pub improver_usage: RoleUsage,
    /// Seconds in the evaluator.
    pub eval_seconds: f64,
    /// Seconds of the whole iteration.
    pub wall_seconds: f64,
    /// When it finished (seconds since the Unix epoch).
    pub finished_at: f64,
    /// What deterministic repairs changed before training (`[search]
    /// repair`), in the order they were made; `code` is then the repaired
    /// code and `outcome` its result. Records stored with one note load as a
    /// list of one.
    #[serde(default, deserialize_with = "crate::search::repair::notes_from", skip_serializing_if = "Vec::is_empty")]
    pub repair: Vec<crate::search::repair::RepairNote>,
    /// The island whose chain ran it (0 when the run has one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub island: u64,
    /// The fine-tuning cycle that generated it (0 outside `nas cycles`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cycle: u64,
    /// What the evaluator measured of a candidate that trained but broke a
    /// limit of `[search] objective = "constrained"` (its outcome is the
    /// `constraint` failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_limit: Option<EvalReport>,
    /// The objective's value under `[search] objective = "weighted"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Evaluations of this iteration that ran out of memory while other
    /// evaluations shared the device and were run again alone (`outcome` is
    /// then the result alone). Which evaluations had company depends on
    /// timing, like `eval_seconds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval_retries: Vec<EvalRetry>,
    /// Answers of the generator that were asked for again within the
    /// iteration (`[search] generation_retries`), in order: one with no
    /// code, with no `forward`, or a near-duplicate of an evaluated design;
    /// then those whose design failed before training and that the
    /// generator was asked to fix (`[search] fix_retries`, with `failed`).
    /// `generator_prompt` stays the first request (what a fine-tuning corpus
    /// pairs with the code) and `generator_response` is the last answer,
    /// which `code` comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regenerated: Vec<Regenerated>,
    /// The common change the search made itself on the best design after
    /// the generator gave it back unchanged on every retry (`[search]
    /// repair` `"change"`); `repair` holds its lines (notes of kind
    /// `change`), and the memory entry this attempt closes holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_change: Option<String>,
    /// The design `made_change` was made on when it was not the best: every
    /// common change had been tried on the best, so the search made one on
    /// a next-best trained design (its iteration and accuracy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_on: Option<MadeOn>,
    /// The attempt whose network the generator's design built again (the
    /// evaluator's fingerprint, however it was written), when the search
    /// then made a change of its own in its place (`made_change`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_network_as: Option<u64>,
}

/// The trained design, not the best, that the search made a common change
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MadeOn {
    pub iteration: u64,
    pub accuracy: f64,
}

/// A generator answer asked for again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regenerated {
    /// The iteration whose design it repeated, when it was a near-duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<u64>,
    /// Its similarity to that design.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    /// The answer.
    pub answer: String,
    /// What the generator was told next.
    pub retry: String,
    /// The common change it was given in place of the Improver's, which it
    /// had not followed (`[search] fallback_changes`): the memory entry of
    /// that change now holds this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// How the answer's design failed before training, when it was checked
    /// and the generator was asked to fix it (`[search] fix_retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<CandidateFailure>,
}

/// An evaluation run again alone because it ran out of memory beside others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRetry {
    /// The failure of the attempt that had company (out of memory).
    pub failure: CandidateFailure,
    /// Seconds of that attempt.
    pub seconds: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl IterationRecord {
    /// Seconds the evaluator's device worked on this iteration (its report's
    /// `device_seconds`, else the evaluation's wall time).
    pub fn device_seconds(&self) -> f64 {
        let reported = match &self.outcome {
            Outcome::Ok { report } => report.device_seconds,
            Outcome::Failed { .. } | Outcome::Duplicate { .. } => None,
        };
        reported.or(self.over_limit.as_ref().and_then(|r| r.device_seconds)).unwrap_or(self.eval_seconds)
    }

    /// LLM tokens (in and out, both roles) spent by this iteration.
    pub fn tokens(&self) -> u64 {
        self.generator_usage.tokens_in
            + self.generator_usage.tokens_out
            + self.improver_usage.tokens_in
            + self.improver_usage.tokens_out
    }
}

/// One journaled LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The iteration.
    pub iteration: u64,
    /// Which role asked.
    pub role: LlmRole,
    /// Order within the iteration and role.
    pub seq: u32,
    /// The request's messages.
    pub request: Vec<ChatMessage>,
    /// The answer.
    pub response: ChatResponse,
}

/// What the Improver advised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// The problem identified (`reason` or `analysis`).
    pub problem: String,
    /// Where to look for ideas (`inspiration`), when given.
    #[serde(default)]
    pub inspiration: String,
    /// What to change next.
    pub suggestions: String,
    /// How the answer was read: `json_fence`, `bare_object`, `lenient`, `raw`.
    pub parsed_as: String,
    /// Why the answer is not a diagnosis (it copied the answer format's
    /// descriptions, repeated the previous diagnosis, or said nothing), when
    /// it is not: such advice is kept in the record but opens no memory
    /// entry and reaches no prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The change the search gave the generator instead, when the answer is
    /// not a diagnosis and `[search] fallback_changes` is on; it opens the
    /// memory entry the answer could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}
