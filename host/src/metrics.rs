//! The metrics the method's papers report, computed from a run's records.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::records::{IterationRecord, LlmRole, Outcome, RoleUsage};

/// Threshold of the "fraction of candidates ≥ 40 %" metric.
pub const GOOD_ACCURACY: f64 = 0.40;

/// A run's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Iterations recorded.
    pub iterations: u64,
    /// Candidates that trained and were scored.
    pub valid: u64,
    /// `valid / iterations`.
    pub valid_rate: f64,
    /// Best accuracy and its iteration.
    pub best: Option<(u64, f64)>,
    /// Mean accuracy of the valid candidates.
    pub mean_accuracy: Option<f64>,
    /// Fraction of all iterations whose candidate reached 40 %.
    pub fraction_at_least_40: f64,
    /// Candidates evaluated that were not duplicates (unique architectures).
    pub unique_architectures: u64,
    /// Duplicates skipped by the novelty filter.
    pub duplicates: u64,
    /// Failures by kind (duplicates not included).
    pub failures: BTreeMap<String, u64>,
    /// Code Generator usage.
    pub generator: RoleUsage,
    /// Prompt Improver usage.
    pub improver: RoleUsage,
    /// Seconds in the evaluator.
    pub eval_seconds: f64,
    /// Seconds of all iterations.
    pub wall_seconds: f64,
    /// Best accuracy after each iteration (`None` before the first valid one).
    pub best_so_far: Vec<Option<f64>>,
}

/// Summarises records.
pub fn summarize(records: &[IterationRecord]) -> Summary {
    let mut s = Summary { iterations: records.len() as u64, ..Default::default() };
    let mut accs = Vec::new();
    let mut best: Option<(u64, f64)> = None;
    for r in records {
        match &r.outcome {
            Outcome::Ok { report } => {
                accs.push(report.accuracy);
                s.unique_architectures += 1;
                if best.is_none_or(|(_, b)| report.accuracy > b) {
                    best = Some((r.iteration, report.accuracy));
                }
            }
            Outcome::Failed { failure } => {
                if r.code.is_some() {
                    s.unique_architectures += u64::from(!matches!(failure.kind, nas_plugin_api::FailureKind::Patch));
                }
                *s.failures.entry(failure.kind.as_str().to_string()).or_default() += 1;
            }
            Outcome::Duplicate { .. } => s.duplicates += 1,
        }
        s.best_so_far.push(best.map(|(_, a)| a));
        s.generator.merge(&r.generator_usage);
        s.improver.merge(&r.improver_usage);
        s.eval_seconds += r.eval_seconds;
        s.wall_seconds += r.wall_seconds;
    }
    s.valid = accs.len() as u64;
    if s.iterations > 0 {
        s.valid_rate = s.valid as f64 / s.iterations as f64;
        s.fraction_at_least_40 = accs.iter().filter(|a| **a >= GOOD_ACCURACY).count() as f64 / s.iterations as f64;
    }
    s.mean_accuracy = (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64);
    s.best = best;
    s
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        writeln!(f, "iterations            {}", self.iterations)?;
        writeln!(f, "valid rate            {} ({}/{})", pct(self.valid_rate), self.valid, self.iterations)?;
        match self.best {
            Some((i, a)) => writeln!(f, "best accuracy         {} (iteration {i})", pct(a))?,
            None => writeln!(f, "best accuracy         - (no candidate trained)")?,
        }
        writeln!(f, "mean accuracy         {}", self.mean_accuracy.map(pct).unwrap_or_else(|| "-".into()))?;
        writeln!(f, "candidates >= 40%     {}", pct(self.fraction_at_least_40))?;
        writeln!(f, "unique architectures  {} ({} duplicates skipped)", self.unique_architectures, self.duplicates)?;
        if self.failures.is_empty() {
            writeln!(f, "failures              none")?;
        } else {
            let list: Vec<String> = self.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "failures              {}", list.join(", "))?;
        }
        for (role, u) in [(LlmRole::Generator, &self.generator), (LlmRole::Improver, &self.improver)] {
            let name = role.as_str();
            writeln!(
                f,
                "{name:<10}            {} calls, {} tokens in, {} out, {:.1} s",
                u.calls, u.tokens_in, u.tokens_out, u.seconds
            )?;
        }
        write!(f, "evaluator             {:.1} s; wall {:.1} s", self.eval_seconds, self.wall_seconds)
    }
}
