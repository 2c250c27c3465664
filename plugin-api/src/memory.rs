//! The memory strategy role: which past attempts the Prompt Improver sees.
//!
//! The host keeps the whole history of diagnostic triples (problem
//! identified, suggestion given, result after applying) in its run store. A
//! memory strategy is a pure selection over that history: given every entry
//! and its own saved state, it returns what to show. Because its state is
//! data the host stores, a resumed run continues exactly where it stopped.
//!
//! A strategy may ask the host to run one LLM task for it (for example, to
//! compress old entries into a running summary written by the Improver): it
//! returns [`MemorySelection::llm_task`], the host asks the Improver's
//! backend, and calls [`MemoryStrategy::select`] again with the answer in
//! [`MemoryInput::llm_reply`].

use serde::{Deserialize, Serialize};

use crate::{ChatMessage, PluginError};

/// One diagnostic triple of the method, plus the facts a strategy may rank by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// The iteration whose Improver wrote this entry.
    pub iteration: u64,
    /// Problem identified (the Improver's `reason` or `analysis`).
    pub problem: String,
    /// Suggestion given (cut to 300 characters).
    pub suggestion: String,
    /// Result after applying: `accuracy: 72.23%` or `error: <first 200
    /// chars>`; `None` while the next iteration has not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The accuracy the suggestion led to (0–1), when it trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The failure kind the suggestion led to, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<String>,
    /// Best accuracy before the suggestion was applied (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_before: Option<f64>,
}

impl MemoryEntry {
    /// True once the outcome is known.
    pub fn is_closed(&self) -> bool {
        self.outcome.is_some()
    }

    /// Accuracy gained over the best before (positive = new best).
    pub fn gain(&self) -> Option<f64> {
        Some(self.accuracy? - self.best_before.unwrap_or(0.0))
    }
}

/// What a memory strategy is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryInput {
    /// Every entry of the run, oldest first. The last one may be open.
    pub entries: Vec<MemoryEntry>,
    /// The iteration about to prompt the Improver.
    #[serde(default)]
    pub iteration: u64,
    /// The state the strategy returned last time (`None` at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// The answer to the [`MemorySelection::llm_task`] of the previous call,
    /// when it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_reply: Option<String>,
}

/// What a memory strategy chose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySelection {
    /// The entries to show, in the order to show them.
    pub entries: Vec<MemoryEntry>,
    /// A summary of history not shown entry by entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// State to hand back next time (the host stores it with the iteration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// An LLM task the strategy needs answered before it can choose; the host
    /// answers it with the Improver's backend and calls again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_task: Option<Vec<ChatMessage>>,
}

/// A memory strategy.
pub trait MemoryStrategy: Send {
    /// Chooses what the Improver sees from the whole history.
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError>;
}
