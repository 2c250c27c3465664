//! What a cycles run records about each cycle, in the run store: one `meta`
//! row per cycle (`cycle:<n>`, a JSON [`CycleState`]), rewritten in one
//! statement at each phase change, so a run killed at any moment finds
//! every cycle's phase, its training set (file, size, sha256) and its
//! adapter (the tuner's record with its loss curve) as they were last
//! committed. The iterations themselves are the search's records (each
//! carries its `cycle`).

use nas_plugin_api::Adapter;
use serde::{Deserialize, Serialize};

use super::CycleError;
use crate::store::Store;

/// Where a cycle stands. Cycle 0 (the seed) starts at [`Phase::Selected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Its candidates are being generated and evaluated.
    #[default]
    Generating,
    /// Every candidate of the cycle is committed.
    Generated,
    /// The training set of the cycle is written (selection done).
    Selected,
    /// The fine-tune is under way (possibly killed: it resumes from the
    /// tuner's checkpoints).
    Tuning,
    /// The adapter is recorded; it is never trained again.
    Tuned,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Generating => "generating",
            Phase::Generated => "generated",
            Phase::Selected => "selected",
            Phase::Tuning => "tuning",
            Phase::Tuned => "tuned",
        })
    }
}

/// One cycle as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleState {
    /// The cycle (0: the seed fine-tune).
    pub cycle: u64,
    /// Where it stands.
    pub phase: Phase,
    /// The iterations of the run that belong to it (cycle `c` of `n`
    /// candidates: `(c - 1)·n + 1 ..= c·n`); empty for cycle 0.
    #[serde(default)]
    pub iterations: (u64, u64),
    /// The iterations whose prompt → answer joined the training set.
    #[serde(default)]
    pub selected: Vec<u64>,
    /// The training set the cycle's adapter is trained on, relative to the
    /// run directory.
    #[serde(default)]
    pub train_file: String,
    /// Its examples.
    #[serde(default)]
    pub train_examples: u64,
    /// Its sha256 (hex).
    #[serde(default)]
    pub train_sha256: String,
    /// Fine-tune attempts started (a killed one counts).
    #[serde(default)]
    pub tune_attempts: u32,
    /// Seconds of the fine-tune attempts that returned.
    #[serde(default)]
    pub tune_seconds: f64,
    /// The adapter, once trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<Adapter>,
    /// How the adapter came to be when it was not trained by this run's
    /// tuner: `unchanged` (nothing new was selected, so the previous
    /// cycle's adapter stands), `replayed` (copied from the replayed run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_from: Option<String>,
}

/// The meta key of cycle `c`.
pub fn key(c: u64) -> String {
    format!("cycle:{c}")
}

/// Reads cycle `c`'s state.
pub fn read(st: &Store, c: u64) -> Result<Option<CycleState>, CycleError> {
    match st.meta(&key(c))? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CycleError::Inconsistent(format!("{st:?}: the record `{}` is not valid: {e}", key(c)))),
        None => Ok(None),
    }
}

/// Every recorded cycle, from 0, up to the first missing one.
pub fn read_all(st: &Store) -> Result<Vec<CycleState>, CycleError> {
    let mut out = Vec::new();
    while let Some(s) = read(st, out.len() as u64)? {
        out.push(s);
    }
    Ok(out)
}

/// Commits a cycle's state (one statement).
pub fn write(st: &Store, state: &CycleState) -> Result<(), CycleError> {
    let text = serde_json::to_string(state)
        .map_err(|e| CycleError::Inconsistent(format!("the record `{}` cannot be written: {e}", key(state.cycle))))?;
    Ok(st.set_meta(&key(state.cycle), &text)?)
}

/// The cycle states of a run directory, empty when it is not a cycles run
/// (or cannot be read: reports still show its records).
pub fn read_dir(run_dir: &std::path::Path) -> Vec<CycleState> {
    Store::open(run_dir).ok().and_then(|st| read_all(&st).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_the_store_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let st = Store::create(dir.path()).expect("store");
        assert!(read_all(&st).expect("reads").is_empty());
        let seed = CycleState { cycle: 0, phase: Phase::Selected, train_examples: 5, ..Default::default() };
        write(&st, &seed).expect("writes");
        let mut one = CycleState { cycle: 1, iterations: (1, 3), ..Default::default() };
        write(&st, &one).expect("writes");
        one.phase = Phase::Tuned;
        one.adapter = Some(Adapter { steps: 2, ..Default::default() });
        write(&st, &one).expect("rewrites");
        let all = read_all(&st).expect("reads");
        assert_eq!(all, vec![seed, one]);
        assert!(Phase::Generating < Phase::Generated && Phase::Tuning < Phase::Tuned);
        assert_eq!(read_dir(dir.path()).len(), 2);
        assert!(read_dir(&dir.path().join("absent")).is_empty());
    }
}
