//! # nas-memory
//!
//! The built-in memory strategies of `nas`, written against
//! `nas-plugin-api` exactly as a third-party plugin is. Each chooses which
//! diagnostic triples (problem, suggestion, outcome) the Prompt Improver
//! sees.
//!
//! | id | settings | what the Improver sees |
//! |---|---|---|
//! | `memory.window` | `k` (5) | the `k` most recent triples: the paper's baseline |
//! | `memory.none` | — | nothing (the "no history" ablation) |
//! | `memory.full` | `max_tokens` (2000) | every triple, oldest dropped first to fit the token budget |
//! | `memory.best-worst` | `k` (5) | the `k` most informative: largest gains, one of each distinct failure type, then the most recent |
//! | `memory.summary` | `k` (5), `batch` (5), `max_summary_chars` (1500) | the `k` most recent, plus a running summary of older ones written by the Improver |
//!
//! ```
//! use nas_plugin_api::*;
//! let lib = ffi::NativeLibrary::from_ref(nas_memory::library());
//! let ids: Vec<String> = lib.plugins().unwrap().into_iter().map(|p| p.id).collect();
//! assert!(ids.contains(&"memory.window".to_string()));
//! ```

use nas_plugin_api::text::{estimate_tokens, truncate_chars};
use nas_plugin_api::{
    ChatMessage, HostContext, MemoryEntry, MemoryInput, MemorySelection, MemoryStrategy, PluginError, PluginFactory,
    PluginInfo, PluginInstance, PluginKind,
};
use serde::Deserialize;

const VERSION: &str = env!("CARGO_PKG_VERSION");

nas_plugin_api::plugin_library!(
    /// The memory strategies of this crate as a plugin library.
    pub fn library = [WindowFactory, NoneFactory, FullFactory, BestWorstFactory, SummaryFactory]
);

fn check_k(id: &str, k: usize) -> Result<usize, PluginError> {
    if k == 0 {
        return Err(PluginError::config(format!(
            "[{id}] settings: `k` must be at least 1 (use memory.none for no history)"
        )));
    }
    Ok(k)
}

// --- memory.window ---------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSettings {
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

/// `memory.window`: the K most recent entries (the paper's baseline, K=5).
#[derive(Debug, Clone)]
pub struct Window {
    /// Window size.
    pub k: usize,
}

impl MemoryStrategy for Window {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let start = input.entries.len().saturating_sub(self.k);
        Ok(MemorySelection { entries: input.entries[start..].to_vec(), ..Default::default() })
    }
}

/// Factory of [`Window`].
pub struct WindowFactory;
impl PluginFactory for WindowFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "memory.window",
            PluginKind::Memory,
            VERSION,
            "Sliding window of the K most recent triples (paper baseline, K=5).",
        )
    }
    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let s: WindowSettings = PluginError::parse_config("memory.window", config)?;
        Ok(PluginInstance::Memory(Box::new(Window { k: check_k("memory.window", s.k)? })))
    }
}

// --- memory.none -----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// `memory.none`: shows nothing.
#[derive(Debug, Clone)]
pub struct Nothing;

impl MemoryStrategy for Nothing {
    fn select(&mut self, _input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        Ok(MemorySelection::default())
    }
}

/// Factory of [`Nothing`].
pub struct NoneFactory;
impl PluginFactory for NoneFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("memory.none", PluginKind::Memory, VERSION, "No history (the paper's history-off ablation).")
    }
    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let _: NoSettings = PluginError::parse_config("memory.none", config)?;
        Ok(PluginInstance::Memory(Box::new(Nothing)))
    }
}

// --- memory.full -----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullSettings {
    #[serde(default = "default_budget")]
    max_tokens: u64,
}

fn default_budget() -> u64 {
    2000
}

/// Estimated prompt tokens of one entry as the host renders it.
pub fn entry_tokens(e: &MemoryEntry) -> u64 {
    estimate_tokens(&e.problem) + estimate_tokens(&e.suggestion) + e.outcome.as_deref().map_or(0, estimate_tokens) + 12
}

/// `memory.full`: every entry, the oldest dropped first to fit a token budget.
#[derive(Debug, Clone)]
pub struct Full {
    /// Token budget for the rendered history.
    pub max_tokens: u64,
}

impl MemoryStrategy for Full {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let mut used = 0;
        let mut start = input.entries.len();
        for (i, e) in input.entries.iter().enumerate().rev() {
            let t = entry_tokens(e);
            if used + t > self.max_tokens {
                break;
            }
            used += t;
            start = i;
        }
        Ok(MemorySelection { entries: input.entries[start..].to_vec(), ..Default::default() })
    }
}

/// Factory of [`Full`].
pub struct FullFactory;
impl PluginFactory for FullFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "memory.full",
            PluginKind::Memory,
            VERSION,
            "Every triple, truncated to a token budget (oldest dropped first).",
        )
    }
    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let s: FullSettings = PluginError::parse_config("memory.full", config)?;
        if s.max_tokens == 0 {
            return Err(PluginError::config("[memory.full] settings: `max_tokens` must be positive"));
        }
        Ok(PluginInstance::Memory(Box::new(Full { max_tokens: s.max_tokens })))
    }
}

// --- memory.best-worst -----------------------------------------------------

/// `memory.best-worst`: the K most informative entries — the largest
/// accuracy gains first (up to half the window), then the most recent entry
/// of each distinct failure type, then the most recent of the rest; shown
/// oldest first.
#[derive(Debug, Clone)]
pub struct BestWorst {
    /// Window size.
    pub k: usize,
}

impl MemoryStrategy for BestWorst {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let n = input.entries.len();
        if n <= self.k {
            return Ok(MemorySelection { entries: input.entries.clone(), ..Default::default() });
        }
        let mut chosen: Vec<usize> = Vec::with_capacity(self.k);
        // Largest positive gains, up to half the window (at least one).
        let mut gains: Vec<(usize, f64)> = input
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.gain().filter(|g| *g > 0.0).map(|g| (i, g)))
            .collect();
        gains.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        chosen.extend(gains.iter().take(self.k.div_ceil(2)).map(|(i, _)| *i));
        // The most recent entry of each distinct failure type.
        let mut kinds_seen: Vec<&str> = Vec::new();
        for (i, e) in input.entries.iter().enumerate().rev() {
            if chosen.len() >= self.k {
                break;
            }
            if let Some(kind) = e.failure_kind.as_deref() {
                if !kinds_seen.contains(&kind) {
                    kinds_seen.push(kind);
                    if !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
            }
        }
        // Fill with the most recent.
        for i in (0..n).rev() {
            if chosen.len() >= self.k {
                break;
            }
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        chosen.sort_unstable();
        Ok(MemorySelection {
            entries: chosen.into_iter().map(|i| input.entries[i].clone()).collect(),
            ..Default::default()
        })
    }
}

/// Factory of [`BestWorst`].
pub struct BestWorstFactory;
impl PluginFactory for BestWorstFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "memory.best-worst",
            PluginKind::Memory,
            VERSION,
            "The K most informative triples: best gains and distinct failure types.",
        )
    }
    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let s: WindowSettings = PluginError::parse_config("memory.best-worst", config)?;
        Ok(PluginInstance::Memory(Box::new(BestWorst { k: check_k("memory.best-worst", s.k)? })))
    }
}

// --- memory.summary --------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummarySettings {
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "default_k")]
    batch: usize,
    #[serde(default = "default_summary_chars")]
    max_summary_chars: usize,
}

fn default_summary_chars() -> usize {
    1500
}

#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct SummaryState {
    /// Entries `[0, summarized)` are folded into `summary`.
    summarized: usize,
    summary: Option<String>,
    /// Entries `[summarized, pending)` were sent for summarising.
    #[serde(default)]
    pending: usize,
}

/// `memory.summary`: the K most recent entries verbatim, and older ones
/// compressed into a running summary that the Improver writes, `batch`
/// entries at a time.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Entries shown verbatim.
    pub k: usize,
    /// Old entries folded into the summary per LLM call.
    pub batch: usize,
    /// Longest summary kept.
    pub max_summary_chars: usize,
}

/// Renders entries for the summary prompt.
fn render_for_summary(entries: &[MemoryEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "- iteration {}: problem: {} | suggestion: {} | result: {}",
                e.iteration,
                e.problem,
                e.suggestion,
                e.outcome.as_deref().unwrap_or("pending")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl MemoryStrategy for Summary {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let mut state: SummaryState = match &input.state {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| PluginError::input(format!("memory.summary: saved state is not valid: {e}")))?,
            None => SummaryState::default(),
        };
        let n = input.entries.len();
        if state.summarized > n {
            return Err(PluginError::input(format!(
                "memory.summary: saved state covers {} entries but only {n} exist",
                state.summarized
            )));
        }
        if let Some(reply) = &input.llm_reply {
            if state.pending > state.summarized && state.pending <= n {
                let text = reply.trim();
                state.summary = Some(truncate_chars(text, self.max_summary_chars).to_string());
                state.summarized = state.pending;
            }
            state.pending = 0;
        }
        let window_start = n.saturating_sub(self.k);
        let mut selection = MemorySelection {
            entries: input.entries[window_start.max(state.summarized)..].to_vec(),
            summary: state.summary.clone(),
            ..Default::default()
        };
        // Entries older than the window that are not yet in the summary.
        if input.llm_reply.is_none() && window_start >= state.summarized + self.batch {
            let upto = state.summarized + self.batch;
            let mut prompt = String::from(
                "You keep a running summary of a neural architecture search. Fold the new attempts below into the summary. \
                 Keep what worked (with accuracies), what failed and why, and which ideas are exhausted. \
                 Answer with the updated summary only, at most 150 words.\n\n",
            );
            prompt.push_str("Summary so far:\n");
            prompt.push_str(state.summary.as_deref().unwrap_or("(none yet)"));
            prompt.push_str("\n\nNew attempts:\n");
            prompt.push_str(&render_for_summary(&input.entries[state.summarized..upto]));
            state.pending = upto;
            selection.llm_task = Some(vec![
                ChatMessage::system("You summarise experiment logs precisely and briefly."),
                ChatMessage::user(prompt),
            ]);
        }
        selection.state = Some(serde_json::to_value(&state).map_err(|e| PluginError::internal(e.to_string()))?);
        Ok(selection)
    }
}

/// Factory of [`Summary`].
pub struct SummaryFactory;
impl PluginFactory for SummaryFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "memory.summary",
            PluginKind::Memory,
            VERSION,
            "The K most recent triples plus a running summary of older ones, written by the Improver.",
        )
    }
    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let s: SummarySettings = PluginError::parse_config("memory.summary", config)?;
        if s.batch == 0 || s.max_summary_chars == 0 {
            return Err(PluginError::config(
                "[memory.summary] settings: `batch` and `max_summary_chars` must be positive",
            ));
        }
        Ok(PluginInstance::Memory(Box::new(Summary {
            k: check_k("memory.summary", s.k)?,
            batch: s.batch,
            max_summary_chars: s.max_summary_chars,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, acc: Option<f64>, fail: Option<&str>, best_before: f64) -> MemoryEntry {
        MemoryEntry {
            iteration: i,
            problem: format!("problem {i}"),
            suggestion: format!("suggestion {i}"),
            outcome: Some(match (acc, fail) {
                (Some(a), _) => format!("accuracy: {:.2}%", a * 100.0),
                (_, Some(f)) => format!("error: {f}"),
                _ => "error: ?".into(),
            }),
            accuracy: acc,
            failure_kind: fail.map(str::to_string),
            best_before: Some(best_before),
        }
    }

    fn history(n: u64) -> Vec<MemoryEntry> {
        (1..=n).map(|i| entry(i, Some(0.5 + i as f64 / 100.0), None, 0.5)).collect()
    }

    fn iterations(sel: &MemorySelection) -> Vec<u64> {
        sel.entries.iter().map(|e| e.iteration).collect()
    }

    #[test]
    fn window_slides_at_k() {
        let mut w = Window { k: 5 };
        let input = |n| MemoryInput { entries: history(n), ..Default::default() };
        assert_eq!(iterations(&w.select(&input(3)).expect("ok")), vec![1, 2, 3]);
        assert_eq!(iterations(&w.select(&input(5)).expect("ok")), vec![1, 2, 3, 4, 5]);
        assert_eq!(iterations(&w.select(&input(6)).expect("ok")), vec![2, 3, 4, 5, 6]);
        assert_eq!(iterations(&w.select(&input(12)).expect("ok")), vec![8, 9, 10, 11, 12]);
    }

    #[test]
    fn window_rejects_k_zero() {
        let err = WindowFactory.create(&serde_json::json!({"k": 0}), &HostContext::default()).expect_err("k=0");
        assert!(err.message.contains("`k`"), "{}", err.message);
    }

    #[test]
    fn settings_with_unknown_keys_are_rejected() {
        let err = WindowFactory.create(&serde_json::json!({"kk": 3}), &HostContext::default()).expect_err("unknown");
        assert!(err.message.contains("kk"), "{}", err.message);
    }

    #[test]
    fn none_shows_nothing() {
        let sel = Nothing.select(&MemoryInput { entries: history(4), ..Default::default() }).expect("ok");
        assert!(sel.entries.is_empty() && sel.summary.is_none());
    }

    #[test]
    fn full_keeps_the_newest_entries_that_fit_the_budget() {
        let h = history(50);
        let per = entry_tokens(&h[0]);
        let mut f = Full { max_tokens: per * 10 + per / 2 };
        let sel = f.select(&MemoryInput { entries: h, ..Default::default() }).expect("ok");
        assert_eq!(sel.entries.len(), 10);
        assert_eq!(sel.entries.last().map(|e| e.iteration), Some(50));
        let mut all = Full { max_tokens: 1_000_000 };
        assert_eq!(
            all.select(&MemoryInput { entries: history(50), ..Default::default() }).expect("ok").entries.len(),
            50
        );
    }

    #[test]
    fn best_worst_keeps_best_gains_and_each_failure_type() {
        let mut h: Vec<MemoryEntry> = (1..=20).map(|i| entry(i, Some(0.40), None, 0.50)).collect();
        h[2] = entry(3, Some(0.80), None, 0.50); // gain 0.30
        h[7] = entry(8, Some(0.70), None, 0.50); // gain 0.20
        h[10] = entry(11, None, Some("shape"), 0.8);
        h[12] = entry(13, None, Some("syntax"), 0.8);
        h[14] = entry(15, None, Some("shape"), 0.8);
        let mut bw = BestWorst { k: 5 };
        let sel = bw.select(&MemoryInput { entries: h, ..Default::default() }).expect("ok");
        // gains 3 and 8; the latest shape (15) and syntax (13) failures; then the most recent (20).
        assert_eq!(iterations(&sel), vec![3, 8, 13, 15, 20]);
    }

    #[test]
    fn summary_asks_the_improver_then_folds_old_entries() {
        let mut s = Summary { k: 2, batch: 3, max_summary_chars: 100 };
        // 4 entries: window is [3,4], only 2 older (< batch): no task.
        let sel = s.select(&MemoryInput { entries: history(4), ..Default::default() }).expect("ok");
        assert!(sel.llm_task.is_none());
        assert_eq!(iterations(&sel), vec![3, 4]);
        // 5 entries: 3 older than the window: a task covering entries 1..=3.
        let sel = s.select(&MemoryInput { entries: history(5), state: sel.state, ..Default::default() }).expect("ok");
        let task = sel.llm_task.clone().expect("asks for a summary");
        let prompt = &task[1].content;
        assert!(prompt.contains("iteration 1") && prompt.contains("iteration 3") && !prompt.contains("iteration 4"));
        // The host answers; the summary is taken and the window stays the last k.
        let sel = s
            .select(&MemoryInput {
                entries: history(5),
                state: sel.state,
                llm_reply: Some("  Wider convs helped; dropout>0.5 hurt. ".into()),
                ..Default::default()
            })
            .expect("ok");
        assert!(sel.llm_task.is_none());
        assert_eq!(sel.summary.as_deref(), Some("Wider convs helped; dropout>0.5 hurt."));
        assert_eq!(iterations(&sel), vec![4, 5]);
        // Next call, no new old entries: summary kept, no task.
        let sel = s.select(&MemoryInput { entries: history(6), state: sel.state, ..Default::default() }).expect("ok");
        assert!(sel.llm_task.is_none());
        assert_eq!(sel.summary.as_deref(), Some("Wider convs helped; dropout>0.5 hurt."));
        assert_eq!(iterations(&sel), vec![5, 6]);
    }

    #[test]
    fn summary_rejects_state_from_another_run() {
        let mut s = Summary { k: 2, batch: 3, max_summary_chars: 100 };
        let state = serde_json::json!({"summarized": 40, "summary": "x"});
        let err =
            s.select(&MemoryInput { entries: history(4), state: Some(state), ..Default::default() }).expect_err("bad");
        assert!(err.message.contains("40"), "{}", err.message);
    }
}
