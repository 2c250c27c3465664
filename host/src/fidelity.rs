//! How far a run's one-epoch score can be trusted, measured by retraining
//! its candidates through the run's own evaluator:
//!
//! - **proxy fidelity**: the best candidates and a stratified sample of the
//!   rest (one per stratum of one-epoch accuracy, drawn with a seeded
//!   generator) trained for more epochs; Spearman's ρ and Kendall's τ-b
//!   between one-epoch and longer accuracy, with percentile-bootstrap 95 %
//!   intervals (fixed seed), and the candidates whose rank moved most;
//! - **seed repeatability**: the best candidates trained again at one epoch
//!   under several seeds; the spread of their accuracy beside the best score.
//!
//! Every retraining is a row of the run store's `retrains` table, written
//! as soon as it returns: a stopped study continues where it was, and a
//! candidate already retrained (same study, epochs and seed) is not trained
//! again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nas_plugin_api::{DatasetRef, EvalOutcome, EvalRequest, Evaluator, PluginError};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::records::{IterationRecord, Outcome};
use crate::report::stats::{Estimate, SplitMix64};
use crate::store::DB_FILE;

/// Resamples of the correlation bootstrap.
pub const RESAMPLES: usize = 2_000;
const BOOTSTRAP_SEED: u64 = 0x6669_6465_6c69_7479;
const SAMPLE_SEED: u64 = 0x7374_7261_7461;

/// A study could not be run or read.
#[derive(Debug, thiserror::Error)]
pub enum FidelityError {
    /// SQLite failed.
    #[error("run store `{}`: {source}", path.display())]
    Sql {
        /// The database.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A row could not be (de)serialized.
    #[error("run store `{}`: a retraining row is not valid: {message}", path.display())]
    Record {
        /// The database.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The evaluator itself failed (not a bad candidate): the study stops,
    /// resumable.
    #[error("the evaluator failed on iteration {iteration}: {error}")]
    Evaluator {
        /// The candidate's iteration.
        iteration: u64,
        /// The evaluator's error.
        error: PluginError,
    },
}

/// Which study a retraining belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Study {
    /// Longer training than the search's.
    Fidelity,
    /// The search's training under other seeds.
    Seeds,
}

impl Study {
    /// The name in the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Study::Fidelity => "fidelity",
            Study::Seeds => "seeds",
        }
    }
}

/// One retraining of a recorded candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrain {
    /// The study.
    pub study: Study,
    /// The candidate's iteration in the run.
    pub iteration: u64,
    /// `top` (among the best) or `sample` (a stratum of the rest).
    pub role: String,
    /// Epochs it was trained for.
    pub epochs: u32,
    /// The seed it was trained with (the request's; an evaluator that
    /// honours it names it in its report too).
    pub seed: u64,
    /// Its accuracy in the search (one epoch).
    pub proxy_accuracy: f64,
    /// What the retraining gave.
    pub outcome: Outcome,
    /// Wall seconds of the evaluation.
    pub seconds: f64,
    /// Device seconds (the evaluator's, else the wall seconds).
    pub device_seconds: f64,
}

impl Retrain {
    /// The retrained accuracy, when it trained.
    pub fn accuracy(&self) -> Option<f64> {
        self.outcome.accuracy()
    }
}

/// The `retrains` table of a run store.
pub struct Retrains {
    conn: crate::store::Held,
    path: PathBuf,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS retrains (
    study TEXT NOT NULL, iteration INTEGER NOT NULL, epochs INTEGER NOT NULL, seed INTEGER NOT NULL,
    role TEXT NOT NULL, proxy_accuracy REAL NOT NULL, status TEXT NOT NULL, accuracy REAL,
    seconds REAL NOT NULL, device_seconds REAL NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (study, iteration, epochs, seed)
)";

impl Retrains {
    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, FidelityError> {
        r.map_err(|source| FidelityError::Sql { path: self.path.clone(), source })
    }

    /// Opens the table of the run in `run_dir`, creating it if needed.
    pub fn open(run_dir: &Path) -> Result<Retrains, FidelityError> {
        let path = run_dir.join(DB_FILE);
        let conn = crate::store::connect(&path).map_err(|source| FidelityError::Sql { path: path.clone(), source })?;
        let t = Retrains { conn, path };
        t.sql(t.conn.execute_batch("PRAGMA synchronous=FULL;"))?;
        t.sql(t.conn.execute_batch(SCHEMA))?;
        Ok(t)
    }

    /// Whether this retraining is recorded.
    pub fn done(&self, study: Study, iteration: u64, epochs: u32, seed: u64) -> Result<bool, FidelityError> {
        let found: Option<i64> = self.sql(
            self.conn
                .query_row(
                    "SELECT 1 FROM retrains WHERE study = ?1 AND iteration = ?2 AND epochs = ?3 AND seed = ?4",
                    params![study.as_str(), iteration as i64, epochs, seed as i64],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        Ok(found.is_some())
    }

    /// Records a retraining (one statement: it is there whole or not at all).
    pub fn insert(&self, r: &Retrain) -> Result<(), FidelityError> {
        let row = serde_json::to_string(r)
            .map_err(|e| FidelityError::Record { path: self.path.clone(), message: e.to_string() })?;
        self.sql(self.conn.execute(
            "INSERT OR REPLACE INTO retrains
             (study, iteration, epochs, seed, role, proxy_accuracy, status, accuracy, seconds, device_seconds, row)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                r.study.as_str(),
                r.iteration as i64,
                r.epochs,
                r.seed as i64,
                r.role,
                r.proxy_accuracy,
                r.outcome.status(),
                r.accuracy(),
                r.seconds,
                r.device_seconds,
                row
            ],
        ))
        .map(|_| ())
    }

    /// Every retraining, by study, epochs, seed and iteration.
    pub fn all(&self) -> Result<Vec<Retrain>, FidelityError> {
        let mut stmt =
            self.sql(self.conn.prepare("SELECT row FROM retrains ORDER BY study, epochs, seed, iteration"))?;
        let rows: Vec<String> = self.sql(stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()))?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| FidelityError::Record { path: self.path.clone(), message: e.to_string() })
            })
            .collect()
    }
}

/// The retrainings recorded in a run (none when the run has no table);
/// nothing is written.
pub fn read(run_dir: &Path) -> Result<Vec<Retrain>, FidelityError> {
    let path = run_dir.join(DB_FILE);
    let sql = |source| FidelityError::Sql { path: path.clone(), source };
    let conn = crate::store::connect(&path).map_err(sql)?;
    let exists: Option<String> = conn
        .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'retrains'", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Retrains { conn, path: path.clone() }.all()
}

/// A candidate chosen for retraining.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Its iteration.
    pub iteration: u64,
    /// `top` or `sample`.
    pub role: &'static str,
    /// Its one-epoch accuracy.
    pub proxy_accuracy: f64,
    /// Its code.
    pub code: String,
}

/// The trained candidates of a run with their code, best first (ties: the
/// earlier first).
fn ranked(records: &[IterationRecord]) -> Vec<Planned> {
    let mut all: Vec<Planned> = records
        .iter()
        .filter_map(|r| match (&r.outcome, &r.code) {
            (Outcome::Ok { report }, Some(code)) => Some(Planned {
                iteration: r.iteration,
                role: "top",
                proxy_accuracy: report.accuracy,
                code: code.clone(),
            }),
            _ => None,
        })
        .collect();
    all.sort_by(|a, b| b.proxy_accuracy.total_cmp(&a.proxy_accuracy).then(a.iteration.cmp(&b.iteration)));
    all
}

/// The fidelity study's candidates: the `top` best, then `sample` of the
/// rest, one from each of `sample` equal strata of the rest ordered by
/// one-epoch accuracy, drawn with a generator seeded by `seed`. The same
/// records and arguments give the same plan.
pub fn plan_fidelity(records: &[IterationRecord], top: usize, sample: usize, seed: u64) -> Vec<Planned> {
    let all = ranked(records);
    let split = top.min(all.len());
    let (best, rest) = all.split_at(split);
    let mut out: Vec<Planned> = best.to_vec();
    let k = sample.min(rest.len());
    let mut rng = SplitMix64::new(seed ^ SAMPLE_SEED);
    for stratum in 0..k {
        let from = stratum * rest.len() / k;
        let to = (stratum + 1) * rest.len() / k;
        let pick = &rest[from + rng.below(to - from)];
        out.push(Planned { role: "sample", ..pick.clone() });
    }
    out
}

/// The repeatability study's candidates: the `top` best.
pub fn plan_seeds(records: &[IterationRecord], top: usize) -> Vec<Planned> {
    ranked(records).into_iter().take(top).collect()
}

/// The seeds of the repeatability study: `count` seeds after the run's.
pub fn repeat_seeds(run_seed: u64, count: u32) -> Vec<u64> {
    (1..=u64::from(count)).map(|i| run_seed.wrapping_add(i)).collect()
}

/// How a study went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Retrainings made now.
    pub trained: usize,
    /// Retrainings found recorded and skipped.
    pub skipped: usize,
    /// Whether it stopped on Ctrl-C before the end.
    pub interrupted: bool,
}

/// Retrains `planned` under each of `seeds` for `epochs` epochs through
/// `evaluator` (created with those epochs), recording each as it returns and
/// skipping those recorded, each within `time_limit_s` when given (else the
/// evaluator's own limit). Stops before the next retraining once
/// `interrupt` is set. `each` sees every new row.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    evaluator: &mut dyn Evaluator,
    dataset: &DatasetRef,
    table: &Retrains,
    study: Study,
    planned: &[Planned],
    epochs: u32,
    seeds: &[u64],
    time_limit_s: Option<f64>,
    interrupt: &AtomicBool,
    mut each: impl FnMut(&Retrain),
) -> Result<Progress, FidelityError> {
    let mut progress = Progress::default();
    for &seed in seeds {
        for p in planned {
            if table.done(study, p.iteration, epochs, seed)? {
                progress.skipped += 1;
                continue;
            }
            if interrupt.load(Ordering::SeqCst) {
                progress.interrupted = true;
                return Ok(progress);
            }
            let request = EvalRequest {
                candidate_id: format!("{}-e{epochs}-s{seed}-iteration-{}", study.as_str(), p.iteration),
                source: p.code.clone(),
                dataset: dataset.clone(),
                time_limit_s,
                seed: Some(seed),
                save_model: None,
                budget: Default::default(),
                known_networks: Vec::new(),
            };
            let t0 = Instant::now();
            let result = evaluator
                .evaluate(&request)
                .map_err(|error| FidelityError::Evaluator { iteration: p.iteration, error })?;
            let seconds = t0.elapsed().as_secs_f64();
            let (outcome, device) = match result {
                EvalOutcome::Ok(report) => {
                    let d = report.device_seconds;
                    (Outcome::Ok { report }, d)
                }
                EvalOutcome::Failed(failure) => (Outcome::Failed { failure }, None),
            };
            let row = Retrain {
                study,
                iteration: p.iteration,
                role: p.role.to_string(),
                epochs,
                seed,
                proxy_accuracy: p.proxy_accuracy,
                outcome,
                seconds,
                device_seconds: device.unwrap_or(seconds),
            };
            table.insert(&row)?;
            progress.trained += 1;
            each(&row);
        }
    }
    Ok(progress)
}

/// Average ranks, 1 for the smallest; ties share the mean of their ranks.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut out = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    let d = (sxx * syy).sqrt();
    (d > 0.0).then(|| (sxy / d).clamp(-1.0, 1.0))
}

/// Spearman's ρ: Pearson's correlation of the average ranks (ties
/// handled). `None` with fewer than two pairs or a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

/// Kendall's τ-b (ties on either side handled). `None` with fewer than two
/// pairs or a constant side.
pub fn kendall(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n != y.len() || n < 2 {
        return None;
    }
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).partial_cmp(&0.0).map_or(0, |o| o as i64);
            let dy = (y[i] - y[j]).partial_cmp(&0.0).map_or(0, |o| o as i64);
            match (dx, dy) {
                (0, 0) => {
                    tied_x += 1;
                    tied_y += 1;
                }
                (0, _) => tied_x += 1,
                (_, 0) => tied_y += 1,
                _ if dx == dy => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as i64;
    let d = (((pairs - tied_x) * (pairs - tied_y)) as f64).sqrt();
    (d > 0.0).then(|| ((concordant - discordant) as f64 / d).clamp(-1.0, 1.0))
}

/// A correlation with its 95 % percentile-bootstrap interval over pairs
/// (resamples where it is undefined, a constant side, are left out).
pub fn bootstrap_correlation(x: &[f64], y: &[f64], f: fn(&[f64], &[f64]) -> Option<f64>) -> Option<Estimate> {
    let value = f(x, y)?;
    let n = x.len();
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED);
    let mut draws = Vec::with_capacity(RESAMPLES);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..RESAMPLES {
        for k in 0..n {
            let i = rng.below(n);
            bx[k] = x[i];
            by[k] = y[i];
        }
        if let Some(v) = f(&bx, &by) {
            draws.push(v);
        }
    }
    if draws.is_empty() {
        return Some(Estimate::exact(value, n as u64));
    }
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (draws.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos.fract());
        let next = draws[(i + 1).min(draws.len() - 1)];
        draws[i] + (next - draws[i]) * frac
    };
    Some(Estimate { value, low: at(0.025), high: at(0.975), n: n as u64 })
}

/// One retrained candidate in the fidelity summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// Its iteration.
    pub iteration: u64,
    /// `top` or `sample`.
    pub role: String,
    /// One-epoch accuracy.
    pub proxy: f64,
    /// Accuracy after the longer training.
    pub long: f64,
    /// Its rank by one-epoch accuracy among the pairs (1 = best).
    pub proxy_rank: f64,
    /// Its rank after the longer training.
    pub long_rank: f64,
}

impl Pair {
    /// Places the rank moved (positive: it rose with longer training).
    pub fn moved(&self) -> f64 {
        self.proxy_rank - self.long_rank
    }
}

/// The fidelity study of one length of training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidelitySummary {
    /// Epochs of the longer training.
    pub epochs: u32,
    /// Candidates retrained that trained.
    pub pairs: Vec<Pair>,
    /// Candidates whose retraining failed.
    pub failed: usize,
    /// Spearman's ρ with its interval.
    pub spearman: Option<Estimate>,
    /// Kendall's τ-b with its interval.
    pub kendall: Option<Estimate>,
    /// Device seconds of the retrainings.
    pub device_seconds: f64,
}

impl FidelitySummary {
    /// The pairs by how far their rank moved, most first (ties: earlier
    /// iteration first).
    pub fn most_moved(&self, n: usize) -> Vec<&Pair> {
        let mut v: Vec<&Pair> = self.pairs.iter().collect();
        v.sort_by(|a, b| b.moved().abs().total_cmp(&a.moved().abs()).then(a.iteration.cmp(&b.iteration)));
        v.into_iter().take(n).collect()
    }
}

/// The fidelity studies among `rows`, one per length of training.
pub fn fidelity_summaries(rows: &[Retrain]) -> Vec<FidelitySummary> {
    let mut lengths: Vec<u32> = rows.iter().filter(|r| r.study == Study::Fidelity).map(|r| r.epochs).collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths
        .into_iter()
        .map(|epochs| {
            let mine: Vec<&Retrain> =
                rows.iter().filter(|r| r.study == Study::Fidelity && r.epochs == epochs).collect();
            let trained: Vec<(&Retrain, f64)> = mine.iter().filter_map(|r| r.accuracy().map(|a| (*r, a))).collect();
            let proxy: Vec<f64> = trained.iter().map(|(r, _)| r.proxy_accuracy).collect();
            let long: Vec<f64> = trained.iter().map(|(_, a)| *a).collect();
            // Rank 1 = best: ranks of the negated accuracies.
            let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<f64>>();
            let (rp, rl) = (ranks(&neg(&proxy)), ranks(&neg(&long)));
            let pairs = trained
                .iter()
                .enumerate()
                .map(|(i, (r, a))| Pair {
                    iteration: r.iteration,
                    role: r.role.clone(),
                    proxy: r.proxy_accuracy,
                    long: *a,
                    proxy_rank: rp[i],
                    long_rank: rl[i],
                })
                .collect();
            FidelitySummary {
                epochs,
                pairs,
                failed: mine.len() - trained.len(),
                spearman: bootstrap_correlation(&proxy, &long, spearman),
                kendall: bootstrap_correlation(&proxy, &long, kendall),
                device_seconds: mine.iter().map(|r| r.device_seconds).sum(),
            }
        })
        .collect()
}

/// One candidate of the repeatability study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSpread {
    /// Its iteration.
    pub iteration: u64,
    /// Its accuracy in the search.
    pub recorded: f64,
    /// `(seed, accuracy)` of each retraining that trained.
    pub runs: Vec<(u64, f64)>,
    /// Retrainings that failed.
    pub failed: usize,
    /// Mean accuracy over the seeds.
    pub mean: f64,
    /// Sample standard deviation (0 with one seed).
    pub sd: f64,
    /// Lowest accuracy.
    pub min: f64,
    /// Highest accuracy.
    pub max: f64,
}

/// The repeatability study among `rows`, per candidate, best recorded first.
pub fn seed_spreads(rows: &[Retrain]) -> Vec<SeedSpread> {
    let mut iterations: Vec<(u64, f64)> =
        rows.iter().filter(|r| r.study == Study::Seeds).map(|r| (r.iteration, r.proxy_accuracy)).collect();
    iterations.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    iterations.dedup_by_key(|x| x.0);
    iterations
        .into_iter()
        .filter_map(|(iteration, recorded)| {
            let mine: Vec<&Retrain> =
                rows.iter().filter(|r| r.study == Study::Seeds && r.iteration == iteration).collect();
            let runs: Vec<(u64, f64)> = mine.iter().filter_map(|r| r.accuracy().map(|a| (r.seed, a))).collect();
            let accs: Vec<f64> = runs.iter().map(|r| r.1).collect();
            if accs.is_empty() {
                return None;
            }
            let n = accs.len() as f64;
            let mean = accs.iter().sum::<f64>() / n;
            let sd = if accs.len() > 1 {
                (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            Some(SeedSpread {
                iteration,
                recorded,
                failed: mine.len() - runs.len(),
                min: accs.iter().copied().fold(f64::INFINITY, f64::min),
                max: accs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                runs,
                mean,
                sd,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[0.3, 0.1, 0.3, 0.2]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn perfect_and_reversed_orders_give_plus_and_minus_one() {
        let x = [0.1, 0.2, 0.3, 0.4];
        let y = [0.5, 0.6, 0.7, 0.9];
        assert_eq!(spearman(&x, &y), Some(1.0));
        assert_eq!(kendall(&x, &y), Some(1.0));
        let r: Vec<f64> = y.iter().rev().copied().collect();
        assert_eq!(spearman(&x, &r), Some(-1.0));
        assert_eq!(kendall(&x, &r), Some(-1.0));
        assert_eq!(spearman(&x, &[0.5; 4]), None, "a constant side has no rank correlation");
    }

    #[test]
    fn kendall_tau_b_matches_a_worked_example_with_ties() {
        // x ties (1,2); y ties (3,4): C = 3, D = 1, pairs 6, tied x 1, tied y 1.
        let x = [1.0, 1.0, 2.0, 3.0];
        let y = [1.0, 2.0, 3.0, 3.0];
        let tau = kendall(&x, &y).expect("tau");
        assert!((tau - 4.0 / 5.0).abs() < 1e-12, "{tau}");
    }

    #[test]
    fn the_bootstrap_brackets_the_estimate_and_repeats() {
        let x = [0.5, 0.55, 0.6, 0.62, 0.7, 0.72, 0.8, 0.81];
        let y = [0.6, 0.58, 0.7, 0.75, 0.74, 0.8, 0.85, 0.9];
        let e = bootstrap_correlation(&x, &y, spearman).expect("estimate");
        assert!(e.low <= e.value && e.value <= e.high, "{e:?}");
        assert_eq!(Some(e), bootstrap_correlation(&x, &y, spearman));
    }
}
