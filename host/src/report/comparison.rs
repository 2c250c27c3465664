//! A comparison's statistics: each arm over its seeds, against the K=5
//! window (the plan of runs is [`crate::compare`]).

use serde::Serialize;

use crate::report::stats::{self, Estimate};
use crate::report::{Group, RunData};

/// Best so far at a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct AtCheckpoint {
    /// The iteration.
    pub iteration: u64,
    /// Mean over seeds, bootstrap interval.
    pub best: Estimate,
}

/// One arm against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct VersusBaseline {
    /// Difference of mean best accuracy (bootstrap).
    pub best_accuracy: Option<Estimate>,
    /// Difference of valid rates (Newcombe).
    pub valid_rate: Estimate,
    /// Difference of mean accuracy (bootstrap).
    pub mean_accuracy: Option<Estimate>,
}

/// One arm's statistics over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ArmStats {
    /// The arm.
    pub name: String,
    /// Runs with at least one iteration.
    pub runs: u64,
    /// Runs that finished.
    pub finished: u64,
    /// Iterations over all runs.
    pub iterations: u64,
    /// Best accuracy per run (0 for a run where nothing trained), mean over
    /// seeds with a bootstrap interval.
    pub best_accuracy: Option<Estimate>,
    /// Best so far at each checkpoint.
    pub best_at: Vec<AtCheckpoint>,
    /// Valid candidates over all iterations (Wilson).
    pub valid_rate: Estimate,
    /// Mean accuracy of valid candidates per run, mean over seeds (bootstrap).
    pub mean_accuracy: Option<Estimate>,
    /// Candidates at or above 40 % over all iterations (Wilson).
    pub at_least_40: Estimate,
    /// Unique architectures per run (bootstrap).
    pub unique_architectures: Option<Estimate>,
    /// LLM tokens per run (bootstrap).
    pub tokens: Option<Estimate>,
    /// Evaluator plus LLM seconds per run (bootstrap).
    pub device_seconds: Option<Estimate>,
    /// Against the baseline (`None` for the baseline itself).
    pub versus_baseline: Option<VersusBaseline>,
    /// Mean best so far after each iteration, with its bootstrap band.
    pub curve: Vec<Estimate>,
    /// Each run's best accuracy (the samples behind `best_accuracy`).
    #[serde(skip)]
    pub best_samples: Vec<f64>,
    /// Each run's mean accuracy (the samples behind `mean_accuracy`).
    #[serde(skip)]
    pub mean_samples: Vec<f64>,
}

/// A whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Its name.
    pub name: String,
    /// The baseline arm.
    pub baseline: String,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Best-so-far checkpoints.
    pub checkpoints: Vec<u64>,
    /// Bootstrap resamples per interval.
    pub bootstrap_resamples: usize,
    /// Every arm, baseline first.
    pub arms: Vec<ArmStats>,
}

/// A run's best so far after iteration `t` (1-based): the last recorded
/// value carried forward past the run's end; 0 before anything trained.
pub fn best_at(run: &RunData, t: u64) -> f64 {
    if t == 0 || run.summary.best_so_far.is_empty() {
        return 0.0;
    }
    let i = (t as usize).min(run.summary.best_so_far.len()) - 1;
    run.summary.best_so_far[i].unwrap_or(0.0)
}

fn arm_stats(g: &Group, checkpoints: &[u64], horizon: u64) -> ArmStats {
    let runs: Vec<&RunData> = g.runs.iter().filter(|r| !r.records.is_empty()).collect();
    let iterations: u64 = runs.iter().map(|r| r.summary.iterations).sum();
    let valid: u64 = runs.iter().map(|r| r.summary.valid).sum();
    let good: u64 = runs
        .iter()
        .flat_map(|r| &r.records)
        .filter(|r| r.outcome.accuracy().is_some_and(|a| a >= crate::metrics::GOOD_ACCURACY))
        .count() as u64;
    let per_run = |f: &dyn Fn(&RunData) -> Option<f64>| -> Vec<f64> { runs.iter().filter_map(|r| f(r)).collect() };
    let best_samples = per_run(&|r| Some(r.summary.best.map_or(0.0, |b| b.1)));
    let mean_samples = per_run(&|r| r.summary.mean_accuracy);
    // The mean best so far after each iteration; the checkpoints are points
    // of this curve (a plan's checkpoints never pass its budget).
    let curve: Vec<Estimate> =
        (1..=horizon).filter_map(|t| stats::bootstrap_mean(&per_run(&|r| Some(best_at(r, t))))).collect();
    ArmStats {
        name: g.name.clone(),
        runs: runs.len() as u64,
        finished: runs.iter().filter(|r| r.status == "finished").count() as u64,
        iterations,
        best_accuracy: stats::bootstrap_mean(&best_samples),
        best_at: checkpoints
            .iter()
            .filter_map(|&t| {
                curve.get((t as usize).checked_sub(1)?).map(|best| AtCheckpoint { iteration: t, best: *best })
            })
            .collect(),
        valid_rate: stats::wilson(valid, iterations),
        mean_accuracy: stats::bootstrap_mean(&mean_samples),
        at_least_40: stats::wilson(good, iterations),
        unique_architectures: stats::bootstrap_mean(&per_run(&|r| Some(r.summary.unique_architectures as f64))),
        tokens: stats::bootstrap_mean(&per_run(&|r| Some(r.tokens() as f64))),
        device_seconds: stats::bootstrap_mean(&per_run(&|r| Some(r.device_seconds()))),
        versus_baseline: None,
        curve,
        best_samples,
        mean_samples,
    }
}

/// The statistics of `groups` (one per arm), each arm against `baseline`.
pub fn compare(
    name: &str,
    groups: &[Group],
    baseline: &str,
    seeds: &[u64],
    checkpoints: &[u64],
    horizon: u64,
) -> Comparison {
    let mut arms: Vec<ArmStats> = groups.iter().map(|g| arm_stats(g, checkpoints, horizon)).collect();
    arms.sort_by_key(|a| a.name != baseline);
    if let Some(base) = arms.iter().find(|a| a.name == baseline).cloned() {
        for arm in arms.iter_mut().filter(|a| a.name != baseline) {
            arm.versus_baseline = Some(VersusBaseline {
                best_accuracy: stats::bootstrap_difference(&arm.best_samples, &base.best_samples),
                valid_rate: stats::rate_difference(&arm.valid_rate, &base.valid_rate),
                mean_accuracy: stats::bootstrap_difference(&arm.mean_samples, &base.mean_samples),
            });
        }
    }
    Comparison {
        name: name.to_string(),
        baseline: baseline.to_string(),
        seeds: seeds.to_vec(),
        checkpoints: checkpoints.to_vec(),
        bootstrap_resamples: stats::BOOTSTRAP_RESAMPLES,
        arms,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

/// `81.20 [79.10, 83.30]` in percent, or the value alone when the interval is a point.
pub fn pct_ci(e: &Estimate) -> String {
    if e.low == e.high {
        pct(e.value)
    } else {
        format!("{} [{}, {}]", pct(e.value), pct(e.low), pct(e.high))
    }
}

/// A difference in percentage points, with `*` when its interval excludes 0.
pub fn delta_ci(e: &Estimate) -> String {
    let sig = if e.sign() != 0 { " *" } else { "" };
    if e.low == e.high {
        format!("{:+.2}{sig}", e.value * 100.0)
    } else {
        format!("{:+.2} [{:+.2}, {:+.2}]{sig}", e.value * 100.0, e.low * 100.0, e.high * 100.0)
    }
}

/// A count or amount with its interval.
pub fn num_ci(e: &Estimate, decimals: usize) -> String {
    if e.low == e.high {
        format!("{:.*}", decimals, e.value)
    } else {
        format!("{:.*} [{:.*}, {:.*}]", decimals, e.value, decimals, e.low, decimals, e.high)
    }
}

impl Comparison {
    /// The table: a header and one row per arm.
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = vec!["configuration".into(), "runs".into(), "best acc %".into()];
        header.extend(self.checkpoints.iter().map(|t| format!("best@{t} %")));
        header.extend(
            [
                "valid rate %",
                "mean acc %",
                ">=40% %",
                "unique archs",
                "tokens",
                "device s",
                "Δ best vs baseline (pp)",
                "Δ valid vs baseline (pp)",
            ]
            .map(String::from),
        );
        let dash = || "-".to_string();
        let rows = self
            .arms
            .iter()
            .map(|a| {
                let name = if a.name == self.baseline { format!("{} (baseline)", a.name) } else { a.name.clone() };
                let mut row = vec![name, format!("{}/{}", a.finished, a.runs)];
                row.push(a.best_accuracy.as_ref().map_or_else(dash, pct_ci));
                for t in &self.checkpoints {
                    row.push(a.best_at.iter().find(|c| c.iteration == *t).map_or_else(dash, |c| pct_ci(&c.best)));
                }
                row.push(pct_ci(&a.valid_rate));
                row.push(a.mean_accuracy.as_ref().map_or_else(dash, pct_ci));
                row.push(pct_ci(&a.at_least_40));
                row.push(a.unique_architectures.as_ref().map_or_else(dash, |e| num_ci(e, 1)));
                row.push(a.tokens.as_ref().map_or_else(dash, |e| num_ci(e, 0)));
                row.push(a.device_seconds.as_ref().map_or_else(dash, |e| num_ci(e, 1)));
                match &a.versus_baseline {
                    Some(v) => {
                        row.push(v.best_accuracy.as_ref().map_or_else(dash, delta_ci));
                        row.push(delta_ci(&v.valid_rate));
                    }
                    None => row.extend([dash(), dash()]),
                }
                row
            })
            .collect();
        (header, rows)
    }
}
