//! The per-cycle table the papers report, from a run's records and cycle
//! states:
//!
//! | column | what |
//! |---|---|
//! | Cycle | the cycle (1, 2, ...) |
//! | Valid (%) | candidates that trained, of the cycle's candidates, with a Wilson 95 % interval |
//! | Best (%) | the best accuracy of the cycle |
//! | Mean (%) | the mean accuracy of its valid candidates |
//! | ≥40% (%) | valid candidates at or above 40 %, of its valid candidates, with a Wilson 95 % interval |
//! | Unique Models | the models the cycle selected: valid, at or above `min_accuracy`, novel against the seed and every model selected before |
//! | Total Train Prompts | the training set the cycle's adapter is trained on (seed + every selection so far) |
//!
//! Rows also carry the mean length of the generator's answers in lines (the
//! diff in delta mode, the file otherwise) and the fine-tune's loss.

use serde::Serialize;

use super::log::CycleState;
use super::select;
use crate::metrics::GOOD_ACCURACY;
use crate::records::IterationRecord;
use crate::report::stats::{wilson, Estimate};

/// One cycle's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CycleRow {
    /// The cycle (1-based).
    pub cycle: u64,
    /// Candidates recorded in it.
    pub candidates: u64,
    /// Valid candidates.
    pub valid: u64,
    /// Valid rate with its Wilson interval.
    pub valid_rate: Estimate,
    /// Best accuracy.
    pub best: Option<f64>,
    /// Mean accuracy of the valid candidates.
    pub mean: Option<f64>,
    /// Valid candidates at or above 40 %.
    pub at_least_40: u64,
    /// Their share of the valid candidates, with its Wilson interval.
    pub at_least_40_rate: Estimate,
    /// Models selected (novel, at or above the threshold).
    pub unique_models: u64,
    /// Training examples after the cycle's selection (`None` before it).
    pub train_prompts: Option<u64>,
    /// Mean lines of the generator's answers.
    pub answer_lines: Option<f64>,
    /// Where the cycle stands.
    pub phase: String,
    /// The fine-tune's first and last loss.
    pub loss: Option<(f64, f64)>,
}

/// The rows of the cycles that have records or a state (cycle 0, the
/// seed, has no row).
pub fn rows(records: &[IterationRecord], states: &[CycleState]) -> Vec<CycleRow> {
    let last = records.iter().map(|r| r.cycle).chain(states.iter().map(|s| s.cycle)).max().unwrap_or(0);
    (1..=last).map(|c| row(c, records, states.get(c as usize))).collect()
}

fn row(c: u64, records: &[IterationRecord], state: Option<&CycleState>) -> CycleRow {
    let mine: Vec<&IterationRecord> = records.iter().filter(|r| r.cycle == c).collect();
    let accs: Vec<f64> = mine.iter().filter_map(|r| r.outcome.accuracy()).collect();
    let valid = accs.len() as u64;
    let good = accs.iter().filter(|a| **a >= GOOD_ACCURACY).count() as u64;
    let lines: Vec<usize> = mine.iter().filter_map(|r| select::answer_lines(r)).collect();
    let selected_phase = state.is_some_and(|s| s.phase >= super::log::Phase::Selected);
    CycleRow {
        cycle: c,
        candidates: mine.len() as u64,
        valid,
        valid_rate: wilson(valid, mine.len() as u64),
        best: accs.iter().copied().reduce(f64::max),
        mean: (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64),
        at_least_40: good,
        at_least_40_rate: wilson(good, valid),
        unique_models: state.map_or(0, |s| s.selected.len() as u64),
        train_prompts: state.filter(|_| selected_phase).map(|s| s.train_examples),
        answer_lines: (!lines.is_empty()).then(|| lines.iter().sum::<usize>() as f64 / lines.len() as f64),
        phase: state.map_or_else(|| "generating".to_string(), |s| s.phase.to_string()),
        loss: state
            .and_then(|s| s.adapter.as_ref())
            .and_then(|a| Some((a.loss_curve.first()?.loss, a.loss_curve.last()?.loss))),
    }
}

/// The papers' column names.
pub const HEADER: [&str; 7] =
    ["Cycle", "Valid (%)", "Best (%)", "Mean (%)", "≥40% (%)", "Unique Models", "Total Train Prompts"];

const WIDTHS: [usize; 7] = [5, 19, 8, 8, 19, 13, 19];

fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

/// A rate with its interval: `44.0 [30.5, 58.5]`.
pub fn rate(e: &Estimate) -> String {
    if e.n == 0 {
        return "-".into();
    }
    format!("{:.1} [{:.1}, {:.1}]", e.value * 100.0, e.low * 100.0, e.high * 100.0)
}

impl CycleRow {
    /// The row's cells under [`HEADER`].
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.cycle.to_string(),
            rate(&self.valid_rate),
            self.best.map_or_else(|| "-".into(), pct),
            self.mean.map_or_else(|| "-".into(), pct),
            rate(&self.at_least_40_rate),
            self.unique_models.to_string(),
            self.train_prompts.map_or_else(|| "-".into(), |n| n.to_string()),
        ]
    }
}

fn line(cells: &[String]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .zip(WIDTHS)
        .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
        .collect();
    parts.join("  ").trim_end().to_string()
}

/// The header line, for rows printed one at a time.
pub fn header_line() -> String {
    line(&HEADER.map(String::from))
}

/// A row as a line under [`header_line`].
pub fn row_line(row: &CycleRow) -> String {
    line(&row.cells())
}

/// The whole table, with a note on the intervals.
pub fn text(rows: &[CycleRow]) -> String {
    let mut out = vec![header_line()];
    out.extend(rows.iter().map(row_line));
    out.join("\n")
}

/// All cycles pooled: valid candidates over all candidates (Wilson).
pub fn pooled_valid_rate(rows: &[CycleRow]) -> Estimate {
    wilson(rows.iter().map(|r| r.valid).sum(), rows.iter().map(|r| r.candidates).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cycles::log::Phase;
    use crate::records::Outcome;
    use nas_plugin_api::{CandidateFailure, EvalReport, FailureKind};

    fn rec(t: u64, cycle: u64, acc: Option<f64>) -> IterationRecord {
        let outcome = match acc {
            Some(a) => Outcome::Ok { report: EvalReport { accuracy: a, ..Default::default() } },
            None => Outcome::Failed { failure: CandidateFailure::new("train", FailureKind::Runtime, "x") },
        };
        let mut r = crate::cycles::select::tests::record(t, "class Net:\n    pass\n", outcome);
        r.cycle = cycle;
        r
    }

    #[test]
    fn rows_count_each_cycle_with_wilson_intervals() {
        let records = vec![
            rec(1, 1, Some(0.30)),
            rec(2, 1, None),
            rec(3, 1, Some(0.50)),
            rec(4, 2, Some(0.45)),
            rec(5, 2, Some(0.60)),
        ];
        let states = vec![
            CycleState { cycle: 0, phase: Phase::Tuned, train_examples: 4, ..Default::default() },
            CycleState { cycle: 1, phase: Phase::Tuned, selected: vec![3], train_examples: 5, ..Default::default() },
            CycleState { cycle: 2, phase: Phase::Generated, ..Default::default() },
        ];
        let rows = rows(&records, &states);
        assert_eq!(rows.len(), 2);
        let one = &rows[0];
        assert_eq!((one.candidates, one.valid, one.at_least_40, one.unique_models), (3, 2, 1, 1));
        assert_eq!(one.valid_rate, wilson(2, 3));
        assert_eq!(one.at_least_40_rate, wilson(1, 2), "the ≥40% share is of the valid candidates");
        assert_eq!((one.best, one.train_prompts), (Some(0.5), Some(5)));
        assert!((one.mean.expect("a mean") - 0.4).abs() < 1e-12);
        assert_eq!(one.answer_lines, Some(2.0));
        assert_eq!(rows[1].train_prompts, None, "not selected yet");
        let cells = one.cells();
        assert_eq!(cells[1], rate(&wilson(2, 3)));
        assert!(cells[1].starts_with("66.7 ["), "{}", cells[1]);
        assert_eq!(cells[2], "50.00");
        let t = text(&rows);
        assert!(t.starts_with("Cycle  Valid (%)") && t.lines().count() == 3, "{t}");
        assert_eq!(pooled_valid_rate(&rows), wilson(4, 5));
    }
}
