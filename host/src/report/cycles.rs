//! Cycles runs in reports: each cycles run's per-cycle table (the papers'
//! columns, Wilson intervals for the two rates, mean answer length in
//! lines, the fine-tune's loss), the metrics by cycle, and the loss curve
//! of every fine-tune; and for `nas compare`, the arms side by side by
//! cycle. Runs that are not cycles runs add nothing.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figures::{chart_frame, color, de, legend, render, Draw, DrawResult, Figure, FONT};
use super::html::escape;
use super::stats::{wilson, Estimate};
use super::{Group, ReportError, ReportOptions, RunData};
use crate::cycles::log::{self, CycleState};
use crate::cycles::select;
use crate::cycles::table::{self, CycleRow};

/// A value's interval (low, high), where it has one.
type Band = Option<(f64, f64)>;

/// A cycles run as the report shows it.
#[derive(Debug, Clone)]
pub struct CycleRun {
    /// The run's label.
    pub label: String,
    /// Its group (configuration).
    pub group: String,
    /// Its cycle states (cycle 0 first).
    pub states: Vec<CycleState>,
    /// Its rows (cycle 1 first).
    pub rows: Vec<CycleRow>,
}

/// Whether a run is a cycles run.
pub fn is_cycles(run: &RunData) -> bool {
    run.config.as_ref().is_some_and(|c| c.cycles.is_some())
}

/// The cycles runs of `groups`, in order.
pub fn cycle_runs(groups: &[Group]) -> Vec<CycleRun> {
    let mut out = Vec::new();
    for g in groups {
        for run in g.runs.iter().filter(|r| is_cycles(r)) {
            let states = log::read_dir(&run.dir);
            let rows = table::rows(&run.records, &states);
            out.push(CycleRun { label: run.label.clone(), group: g.name.clone(), states, rows });
        }
    }
    out
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

/// The table of one run: the papers' columns, then answer lines and loss.
fn run_table(run: &CycleRun) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = table::HEADER.iter().map(|s| s.to_string()).collect();
    header.extend(["Answer lines".to_string(), "Loss (first → last)".to_string()]);
    let rows = run
        .rows
        .iter()
        .map(|r| {
            let mut cells = r.cells();
            cells.push(opt(r.answer_lines, |l| format!("{l:.1}")));
            cells.push(r.loss.map_or_else(|| "-".into(), |(a, b)| format!("{a:.3} → {b:.3}")));
            cells
        })
        .collect();
    (header, rows)
}

fn seed_line(run: &CycleRun) -> String {
    match run.states.first() {
        Some(s) => {
            let adapter = match &s.adapter {
                Some(a) => format!(
                    "adapter 0: {} steps{}",
                    a.steps,
                    match (a.loss_curve.first(), a.loss_curve.last()) {
                        (Some(f), Some(l)) => format!(", loss {:.3} → {:.3}", f.loss, l.loss),
                        _ => String::new(),
                    }
                ),
                None => "adapter 0 not trained yet".into(),
            };
            format!("Seed corpus: {} training examples; {adapter}.", s.train_examples)
        }
        None => "No seed recorded yet.".into(),
    }
}

fn pooled(run: &CycleRun) -> String {
    let all = table::pooled_valid_rate(&run.rows);
    format!(
        "Valid over all cycles: {} % of {} candidates (Wilson 95 %).",
        table::rate(&all),
        run.rows.iter().map(|r| r.candidates).sum::<u64>()
    )
}

const NOTE: &str = "Valid: candidates that trained, of the cycle's candidates; ≥40%: valid candidates at or above 40 %, of the valid ones; both with Wilson 95 % intervals in brackets. Unique Models: the models the cycle selected (valid, at or above the selection threshold, novel against the seed corpus and every model selected before). Total Train Prompts: the training set of the cycle's adapter. Answer lines: the generator's answers (the diff in delta mode, the file otherwise), mean.";

fn html_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table class=\"cycles\">\n<thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        s.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let (open, close) = if i == 0 { ("th scope=\"row\"", "th") } else { ("td", "td") };
            let _ = write!(s, "<{open}>{}</{close}>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let cell = |c: &String| c.replace('|', "\\|");
    let mut s =
        format!("| {} |\n|{}\n", header.iter().map(cell).collect::<Vec<_>>().join(" | "), "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.iter().map(cell).collect::<Vec<_>>().join(" | "));
    }
    s
}

/// The page's section on cycles (empty without cycles runs).
pub fn html(groups: &[Group]) -> String {
    let runs = cycle_runs(groups);
    if runs.is_empty() {
        return String::new();
    }
    let mut s = format!("<h2 id=\"cycles\">Fine-tuning cycles</h2>\n<p class=\"note\">{}</p>\n", escape(NOTE));
    for run in &runs {
        let (header, rows) = run_table(run);
        let _ = write!(
            s,
            "<h3>{}</h3>\n<p>{} {}</p>\n{}",
            escape(&run.label),
            escape(&seed_line(run)),
            escape(&pooled(run)),
            html_table(&header, &rows)
        );
    }
    s
}

/// The Markdown summary's section on cycles (empty without cycles runs).
pub fn markdown(groups: &[Group]) -> String {
    let runs = cycle_runs(groups);
    if runs.is_empty() {
        return String::new();
    }
    let mut s = format!("## Fine-tuning cycles\n\n{NOTE}\n\n");
    for run in &runs {
        let (header, rows) = run_table(run);
        let _ = write!(
            s,
            "### {}\n\n{} {}\n\n{}\n",
            run.label,
            seed_line(run),
            pooled(run),
            markdown_table(&header, &rows)
        );
    }
    s
}

/// One arm (group) by cycle, its seeds pooled.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmCycle {
    /// The arm.
    pub arm: String,
    /// The cycle (0: all cycles).
    pub cycle: u64,
    /// Runs with records in the cycle.
    pub runs: u64,
    /// Valid over candidates (Wilson).
    pub valid: Estimate,
    /// Mean over runs of each run's best.
    pub best: Option<f64>,
    /// Mean accuracy of every valid candidate.
    pub mean: Option<f64>,
    /// ≥ 40 % over valid (Wilson).
    pub at_least_40: Estimate,
    /// Mean over runs of the models selected.
    pub unique_models: Option<f64>,
    /// Mean over runs of the training set size.
    pub train_prompts: Option<f64>,
    /// Mean lines of every answer.
    pub answer_lines: Option<f64>,
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Each arm with cycles runs, by cycle and over all cycles (cycle 0), its
/// seeds pooled: what `nas compare` prints for full-file against delta
/// cycles.
pub fn by_arm(groups: &[Group]) -> Vec<ArmCycle> {
    let mut out = Vec::new();
    for g in groups {
        let runs: Vec<&RunData> = g.runs.iter().filter(|r| is_cycles(r)).collect();
        if runs.is_empty() {
            continue;
        }
        let per_run: Vec<(Vec<CycleRow>, &RunData)> =
            runs.iter().map(|r| (table::rows(&r.records, &log::read_dir(&r.dir)), *r)).collect();
        let last = per_run.iter().flat_map(|(rows, _)| rows.iter().map(|r| r.cycle)).max().unwrap_or(0);
        for c in (1..=last).chain([0]) {
            let take = |r: &&crate::records::IterationRecord| c == 0 || r.cycle == c;
            let recs: Vec<&crate::records::IterationRecord> =
                per_run.iter().flat_map(|(_, run)| run.records.iter().filter(|r| r.cycle >= 1)).filter(take).collect();
            if recs.is_empty() {
                continue;
            }
            let accs: Vec<f64> = recs.iter().filter_map(|r| r.outcome.accuracy()).collect();
            let good = accs.iter().filter(|a| **a >= crate::metrics::GOOD_ACCURACY).count() as u64;
            let lines: Vec<f64> = recs.iter().filter_map(|r| select::answer_lines(r)).map(|l| l as f64).collect();
            let rows: Vec<&CycleRow> =
                per_run.iter().filter_map(|(rows, _)| rows.iter().find(|r| r.cycle == c)).collect();
            let bests: Vec<f64> = match c {
                0 => per_run
                    .iter()
                    .filter_map(|(_, run)| {
                        run.records
                            .iter()
                            .filter(|r| r.cycle >= 1)
                            .filter_map(|r| r.outcome.accuracy())
                            .reduce(f64::max)
                    })
                    .collect(),
                _ => rows.iter().filter_map(|r| r.best).collect(),
            };
            let unique: Vec<f64> = match c {
                0 => per_run.iter().map(|(rows, _)| rows.iter().map(|r| r.unique_models).sum::<u64>() as f64).collect(),
                _ => rows.iter().map(|r| r.unique_models as f64).collect(),
            };
            let prompts: Vec<f64> = match c {
                0 => per_run
                    .iter()
                    .filter_map(|(rows, _)| rows.iter().rev().find_map(|r| r.train_prompts))
                    .map(|n| n as f64)
                    .collect(),
                _ => rows.iter().filter_map(|r| r.train_prompts).map(|n| n as f64).collect(),
            };
            out.push(ArmCycle {
                arm: g.name.clone(),
                cycle: c,
                runs: if c == 0 { per_run.len() as u64 } else { rows.len() as u64 },
                valid: wilson(accs.len() as u64, recs.len() as u64),
                best: mean(&bests),
                mean: mean(&accs),
                at_least_40: wilson(good, accs.len() as u64),
                unique_models: mean(&unique),
                train_prompts: mean(&prompts),
                answer_lines: mean(&lines),
            });
        }
    }
    out
}

/// [`by_arm`] as a table: header and rows.
pub fn by_arm_table(groups: &[Group]) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let rows = by_arm(groups);
    if rows.is_empty() {
        return None;
    }
    let header = [
        "Arm",
        "Cycle",
        "Runs",
        "Valid (%)",
        "Best (%)",
        "Mean (%)",
        "≥40% (%)",
        "Unique Models",
        "Total Train Prompts",
        "Answer lines",
    ]
    .map(String::from)
    .to_vec();
    let pct = |x: f64| format!("{:.2}", x * 100.0);
    let body = rows
        .iter()
        .map(|r| {
            vec![
                r.arm.clone(),
                if r.cycle == 0 { "all".into() } else { r.cycle.to_string() },
                r.runs.to_string(),
                table::rate(&r.valid),
                opt(r.best, pct),
                opt(r.mean, pct),
                table::rate(&r.at_least_40),
                opt(r.unique_models, |x| format!("{x:.1}")),
                opt(r.train_prompts, |x| format!("{x:.0}")),
                opt(r.answer_lines, |x| format!("{x:.1}")),
            ]
        })
        .collect();
    Some((header, body))
}

/// Metrics by cycle: four panels (valid, best, mean, ≥ 40 %), a line per
/// cycles run, Wilson intervals as bars on the two rates.
struct ByCycle<'a> {
    runs: &'a [CycleRun],
}

type Metric = fn(&CycleRow) -> Option<(f64, Option<(f64, f64)>)>;

impl Draw for ByCycle<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(de)?;
        let n = self.runs.iter().flat_map(|r| r.rows.iter().map(|x| x.cycle)).max().unwrap_or(1).max(1) as f64;
        let panels: [(&str, Metric); 4] = [
            ("Valid (%)", |r| {
                (r.valid_rate.n > 0).then_some((r.valid_rate.value, Some((r.valid_rate.low, r.valid_rate.high))))
            }),
            ("Best (%)", |r| r.best.map(|b| (b, None))),
            ("Mean (%)", |r| r.mean.map(|m| (m, None))),
            ("≥40% of valid (%)", |r| {
                (r.at_least_40_rate.n > 0)
                    .then_some((r.at_least_40_rate.value, Some((r.at_least_40_rate.low, r.at_least_40_rate.high))))
            }),
        ];
        let areas = root.split_evenly((2, 2));
        for (area, (title, metric)) in areas.iter().zip(panels) {
            let mut chart = chart_frame(area, title, 0.5..n + 0.5, 0.0..105.0)?;
            let whole = |v: &f64| if (v - v.round()).abs() < 1e-6 { format!("{v:.0}") } else { String::new() };
            chart
                .configure_mesh()
                .x_desc("cycle")
                .x_labels((n as usize + 1).min(23))
                .x_label_formatter(&whole)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .light_line_style(BLACK.mix(0.05))
                .draw()
                .map_err(de)?;
            for (i, run) in self.runs.iter().enumerate() {
                let c = color(i);
                let pts: Vec<(f64, f64, Band)> = run
                    .rows
                    .iter()
                    .filter_map(|r| {
                        metric(r).map(|(v, ci)| (r.cycle as f64, v * 100.0, ci.map(|(l, h)| (l * 100.0, h * 100.0))))
                    })
                    .collect();
                let line = chart
                    .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                    .map_err(de)?;
                line.label(run.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
                chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled()))).map_err(de)?;
                let bars = pts
                    .iter()
                    .filter_map(|p| p.2.map(|(l, h)| PathElement::new(vec![(p.0, l), (p.0, h)], c.stroke_width(1))));
                chart.draw_series(bars).map_err(de)?;
            }
            if self.runs.len() > 1 {
                legend(&mut chart, SeriesLabelPosition::LowerRight)?;
            }
        }
        Ok(())
    }
}

/// The loss curves of one run's fine-tunes, a line per adapter.
struct Losses<'a> {
    run: &'a CycleRun,
}

impl Draw for Losses<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let curves: Vec<(u64, Vec<(f64, f64)>)> = self
            .run
            .states
            .iter()
            .filter(|s| s.adapter_from.is_none())
            .filter_map(|s| {
                s.adapter.as_ref().map(|a| (s.cycle, a.loss_curve.iter().map(|p| (p.step as f64, p.loss)).collect()))
            })
            .filter(|(_, pts): &(u64, Vec<(f64, f64)>)| !pts.is_empty())
            .collect();
        let steps = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(1.0, f64::max);
        let lo = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(f64::INFINITY, f64::min);
        let hi = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let title = format!("Fine-tune loss by step: {}", self.run.label);
        let mut chart = chart_frame(root, &title, 0.5..steps + 0.5, (lo - pad).max(0.0)..hi + pad)?;
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc("loss on the answer tokens")
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(BLACK.mix(0.05))
            .draw()
            .map_err(de)?;
        for (cycle, pts) in &curves {
            let c = color(*cycle as usize);
            let s = chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))).map_err(de)?;
            s.label(format!("adapter {cycle}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(de)?;
        }
        if !curves.is_empty() {
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    }
}

/// The figures of the cycles runs in `groups` (none without them): metrics
/// by cycle, and the loss curves of each run's fine-tunes (for at most
/// eight runs).
pub fn figures(groups: &[Group], dir: &Path, options: &ReportOptions) -> Result<Vec<Figure>, ReportError> {
    let runs = cycle_runs(groups);
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let size = options.png_size;
    let mut out = vec![render(
        &ByCycle { runs: &runs },
        "cycles_metrics",
        "Metrics by fine-tuning cycle",
        "Per cycle: the valid rate and the share of valid candidates at or above 40 % (bars: Wilson 95 % intervals), the best and the mean accuracy, one line per cycles run.",
        dir,
        size,
    )?];
    for (i, run) in runs.iter().enumerate().take(8) {
        let name = if runs.len() == 1 { "cycles_loss".to_string() } else { format!("cycles_loss_{}", i + 1) };
        out.push(render(
            &Losses { run },
            &name,
            &format!("Fine-tune loss curves of {}", run.label),
            "The training loss (mean over the answer tokens of each step's batch) of each adapter the run trained; adapter 0 is the seed fine-tune.",
            dir,
            size,
        )?);
    }
    Ok(out)
}
