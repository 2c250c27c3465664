//! Trusting the score, in reports: the proxy-fidelity study of each run
//! (Spearman's ρ and Kendall's τ-b with their intervals, the candidates
//! whose rank moved most, a scatter of one-epoch against longer accuracy),
//! the seed-repeatability spread beside the best score, and the device time
//! of each run by role against `[search] max_device_hours`. Runs without
//! retrainings add no fidelity section.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figures::{chart_frame, color, de, legend, render, Draw, DrawResult, Figure, FONT};
use super::html::escape;
use super::stats::Estimate;
use super::{Group, ReportError, ReportOptions, RunData};
use crate::fidelity::{self, FidelitySummary, SeedSpread, Study};
use crate::records::IterationRecord;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn est(e: &Option<Estimate>) -> String {
    e.as_ref().map_or_else(|| "-".into(), |e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high))
}

/// A table: header and rows.
pub(super) type Table = (Vec<String>, Vec<Vec<String>>);

fn every_run(groups: &[Group]) -> impl Iterator<Item = &RunData> {
    groups.iter().flat_map(|g| &g.runs)
}

/// The fidelity studies of each run that has any.
pub fn summaries(groups: &[Group]) -> Vec<(&RunData, Vec<FidelitySummary>)> {
    every_run(groups).map(|r| (r, fidelity::fidelity_summaries(&r.retrains))).filter(|(_, s)| !s.is_empty()).collect()
}

/// The fidelity table: a row per run and length of training.
pub fn fidelity_table(groups: &[Group]) -> Option<Table> {
    let all = summaries(groups);
    if all.is_empty() {
        return None;
    }
    let header = ["run", "epochs", "candidates", "failed", "Spearman ρ [95%]", "Kendall τ [95%]", "device s"]
        .map(String::from)
        .to_vec();
    let rows = all
        .iter()
        .flat_map(|(run, ss)| {
            ss.iter().map(|s| {
                vec![
                    run.label.clone(),
                    s.epochs.to_string(),
                    s.pairs.len().to_string(),
                    s.failed.to_string(),
                    est(&s.spearman),
                    est(&s.kendall),
                    format!("{:.1}", s.device_seconds),
                ]
            })
        })
        .collect();
    Some((header, rows))
}

/// The candidates whose rank moved most, per run and length of training.
pub fn moved_table(groups: &[Group], n: usize) -> Option<Table> {
    let all = summaries(groups);
    if all.is_empty() {
        return None;
    }
    let header = ["run", "iteration", "chosen as", "1 epoch", "longer", "rank at 1 epoch", "rank after", "moved"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for (run, ss) in &all {
        for s in ss {
            for p in s.most_moved(n) {
                rows.push(vec![
                    run.label.clone(),
                    p.iteration.to_string(),
                    p.role.clone(),
                    pct(p.proxy),
                    format!("{} ({} epochs)", pct(p.long), s.epochs),
                    format!("{}", p.proxy_rank),
                    format!("{}", p.long_rank),
                    format!("{:+}", p.moved()),
                ]);
            }
        }
    }
    Some((header, rows))
}

/// The repeatability spreads of each run that has any.
pub fn spreads(groups: &[Group]) -> Vec<(&RunData, Vec<SeedSpread>)> {
    every_run(groups).map(|r| (r, fidelity::seed_spreads(&r.retrains))).filter(|(_, s)| !s.is_empty()).collect()
}

/// The repeatability table: a row per retrained candidate.
pub fn seeds_table(groups: &[Group]) -> Option<Table> {
    let all = spreads(groups);
    if all.is_empty() {
        return None;
    }
    let header = ["run", "iteration", "search", "seeds", "mean ± sd", "min–max"].map(String::from).to_vec();
    let rows = all
        .iter()
        .flat_map(|(run, ss)| {
            ss.iter().map(|s| {
                vec![
                    run.label.clone(),
                    s.iteration.to_string(),
                    pct(s.recorded),
                    s.runs.len().to_string(),
                    format!("{} ± {:.2} pp", pct(s.mean), s.sd * 100.0),
                    format!("{} – {}", pct(s.min), pct(s.max)),
                ]
            })
        })
        .collect();
    Some((header, rows))
}

/// What the repeatability study says of a run's best candidate, when it
/// retrained it: its spread under other seeds, and whether the best stands
/// above the runner-up by more than that.
pub fn best_note(run: &RunData, iteration: u64) -> Option<String> {
    let spreads = fidelity::seed_spreads(&run.retrains);
    let best = spreads.iter().find(|s| s.iteration == iteration)?;
    let mut note = format!(
        "Under {} other seeds it trains to {} ± {:.2} pp (min–max {} – {}).",
        best.runs.len(),
        pct(best.mean),
        best.sd * 100.0,
        pct(best.min),
        pct(best.max)
    );
    if let Some(next) = spreads.iter().filter(|s| s.iteration != iteration).max_by(|a, b| a.mean.total_cmp(&b.mean)) {
        let clear = best.min > next.max;
        let _ = write!(
            note,
            " The next best retrained (iteration {}) gives {} ± {:.2} pp: {}.",
            next.iteration,
            pct(next.mean),
            next.sd * 100.0,
            if clear {
                "the best is above the seed noise"
            } else {
                "their ranges overlap, so the order is within the seed noise"
            }
        );
    }
    Some(note)
}

/// Device seconds of one run, by role.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DeviceTime {
    /// The evaluator in the search (its devices' seconds, else wall).
    pub search: f64,
    /// The Code Generator's LLM calls (wall seconds).
    pub generator: f64,
    /// The Prompt Improver's LLM calls (wall seconds).
    pub improver: f64,
    /// Longer retraining (`nas fidelity`).
    pub fidelity: f64,
    /// Retraining under other seeds.
    pub seeds: f64,
}

impl DeviceTime {
    /// Of a run.
    pub fn of(run: &RunData) -> DeviceTime {
        let retrained = |s: Study| run.retrains.iter().filter(|r| r.study == s).map(|r| r.device_seconds).sum();
        DeviceTime {
            search: run.records.iter().map(IterationRecord::device_seconds).sum(),
            generator: run.summary.generator.seconds,
            improver: run.summary.improver.seconds,
            fidelity: retrained(Study::Fidelity),
            seeds: retrained(Study::Seeds),
        }
    }

    /// Every role together.
    pub fn total(&self) -> f64 {
        self.search + self.generator + self.improver + self.fidelity + self.seeds
    }
}

/// Device time per run and role, and the search's against its budget.
pub fn device_table(groups: &[Group]) -> Table {
    let header = [
        "run",
        "evaluator s (search)",
        "per candidate s",
        "generator s",
        "improver s",
        "fidelity s",
        "seeds s",
        "total h",
        "max_device_hours",
    ]
    .map(String::from)
    .to_vec();
    let rows = every_run(groups)
        .map(|run| {
            let d = DeviceTime::of(run);
            let evaluated = run.records.iter().filter(|r| r.eval_seconds > 0.0).count();
            let budget = run.config.as_ref().and_then(|c| c.search.max_device_hours);
            vec![
                run.label.clone(),
                format!("{:.1}", d.search),
                if evaluated > 0 { format!("{:.2}", d.search / evaluated as f64) } else { "-".into() },
                format!("{:.1}", d.generator),
                format!("{:.1}", d.improver),
                format!("{:.1}", d.fidelity),
                format!("{:.1}", d.seeds),
                format!("{:.4}", d.total() / 3600.0),
                budget.map_or_else(
                    || "-".into(),
                    |h| format!("{:.4} of {h} ({:.1}%)", d.search / 3600.0, d.search / 3600.0 / h * 100.0),
                ),
            ]
        })
        .collect();
    (header, rows)
}

/// The notes under the tables.
pub const FIDELITY_NOTE: &str = "Each candidate chosen (the best, and one per stratum of the rest by \
one-epoch accuracy) was trained again through the run's evaluator for the stated epochs. Spearman's ρ and \
Kendall's τ-b (ties handled) are between one-epoch and longer accuracy, with 95% percentile-bootstrap \
intervals over candidates (2,000 resamples, fixed seed). Ranks: 1 is the most accurate; moved is how many \
places a candidate rose with longer training.";

/// The device-time note.
pub const DEVICE_NOTE: &str = "Evaluator seconds are the device time the evaluator reported (GPU-seconds \
on a GPU), else the evaluation's wall time; LLM seconds are the wall time of the calls. max_device_hours \
counts the search's evaluator time.";

/// One-epoch against longer accuracy for one run and length.
struct Scatter<'a> {
    label: &'a str,
    summary: &'a FidelitySummary,
}

impl Draw for Scatter<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let s = self.summary;
        let xs: Vec<f64> = s.pairs.iter().map(|p| p.proxy * 100.0).collect();
        let ys: Vec<f64> = s.pairs.iter().map(|p| p.long * 100.0).collect();
        let lo = xs.iter().chain(&ys).copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().chain(&ys).copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { ((lo - 3.0).max(0.0), (hi + 3.0).min(100.0)) } else { (0.0, 100.0) };
        let title = format!(
            "{}: one epoch against {} epochs (ρ = {})",
            self.label,
            s.epochs,
            s.spearman.map_or_else(|| "-".into(), |e| format!("{:.2}", e.value))
        );
        let mut chart = chart_frame(root, &title, lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("test accuracy after one epoch (%)")
            .y_desc(format!("test accuracy after {} epochs (%)", s.epochs))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(BLACK.mix(0.05))
            .draw()
            .map_err(de)?;
        chart
            .draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], BLACK.mix(0.3).stroke_width(1)))
            .map_err(de)?
            .label("same accuracy")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], BLACK.mix(0.3).stroke_width(1)));
        for (ci, role) in ["top", "sample"].into_iter().enumerate() {
            let c = color(ci);
            let pts: Vec<(f64, f64)> =
                s.pairs.iter().filter(|p| p.role == role).map(|p| (p.proxy * 100.0, p.long * 100.0)).collect();
            if pts.is_empty() {
                continue;
            }
            let label = if role == "top" { "best candidates" } else { "stratified sample" };
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 6, c.mix(0.85).filled())))
                .map_err(de)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, c.filled()));
        }
        // The candidates that moved most, by iteration.
        for p in s.most_moved(5) {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("#{}", p.iteration),
                    (p.proxy * 100.0, p.long * 100.0),
                    (FONT, 15).into_font().color(&BLACK.mix(0.75)),
                )))
                .map_err(de)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// A scatter per run and length of training.
pub fn figures(groups: &[Group], dir: &Path, options: &ReportOptions) -> Result<Vec<Figure>, ReportError> {
    let mut out = Vec::new();
    let all = summaries(groups);
    let many = all.len() > 1;
    for (i, (run, ss)) in all.iter().enumerate() {
        for s in ss {
            let name =
                if many { format!("fidelity_{}_e{}", i + 1, s.epochs) } else { format!("fidelity_e{}", s.epochs) };
            out.push(render(
                &Scatter { label: &run.label, summary: s },
                &name,
                &format!("{}: one-epoch against {}-epoch accuracy", run.label, s.epochs),
                &format!(
                    "Each retrained candidate at its one-epoch accuracy (search) and after {} epochs; points on the \
                     diagonal kept their accuracy. Labels: the five whose rank moved most, by iteration. Spearman ρ \
                     {}, Kendall τ {}.",
                    s.epochs,
                    est(&s.spearman),
                    est(&s.kendall)
                ),
                dir,
                options.png_size,
            )?);
        }
    }
    Ok(out)
}

fn html_table((header, rows): &Table, class: &str) -> String {
    let mut s = format!("<table class=\"{class}\">\n<thead><tr>");
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

fn md_table((header, rows): &Table) -> String {
    let cell = |c: &String| c.replace('|', "\\|");
    let mut s = format!("| {} |\n", header.iter().map(cell).collect::<Vec<_>>().join(" | "));
    s.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        s.push_str(&format!("| {} |\n", row.iter().map(cell).collect::<Vec<_>>().join(" | ")));
    }
    s
}

/// The HTML sections: fidelity, seed repeatability, device time.
pub fn html(groups: &[Group]) -> String {
    let mut s = String::new();
    if let Some(t) = fidelity_table(groups) {
        let _ = write!(
            s,
            "<h2 id=\"fidelity\">Proxy fidelity</h2>\n<p class=\"note\">{}</p>\n{}",
            escape(FIDELITY_NOTE),
            html_table(&t, "fidelity")
        );
        if let Some(m) = moved_table(groups, 5) {
            let _ = write!(s, "<h3>Rank moved most</h3>\n{}", html_table(&m, "moved"));
        }
    }
    if let Some(t) = seeds_table(groups) {
        let _ = write!(
            s,
            "<h2 id=\"seeds\">Seed repeatability</h2>\n<p class=\"note\">The best candidates trained again at one \
             epoch under other seeds; sd is the sample standard deviation, in percentage points.</p>\n{}",
            html_table(&t, "seeds")
        );
    }
    let _ = write!(
        s,
        "<h2 id=\"device\">Device time</h2>\n<p class=\"note\">{}</p>\n{}",
        escape(DEVICE_NOTE),
        html_table(&device_table(groups), "device")
    );
    s
}

/// The Markdown sections.
pub fn markdown(groups: &[Group]) -> String {
    let mut s = String::new();
    if let Some(t) = fidelity_table(groups) {
        let _ = write!(s, "## Proxy fidelity\n\n{}\n{}\n", md_table(&t), FIDELITY_NOTE);
        if let Some(m) = moved_table(groups, 5) {
            let _ = write!(s, "\n### Rank moved most\n\n{}\n", md_table(&m));
        }
    }
    if let Some(t) = seeds_table(groups) {
        let _ = write!(s, "## Seed repeatability\n\n{}\n", md_table(&t));
    }
    let _ = write!(s, "## Device time\n\n{}\n{}\n\n", md_table(&device_table(groups)), DEVICE_NOTE);
    s
}
