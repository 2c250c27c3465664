//! The report's figures, drawn with plotters into SVG (inlined in the page)
//! and PNG (for slides and the Markdown summary).
//!
//! Text in PNGs is rendered with DejaVu Sans, embedded in the binary, so a
//! machine without fonts draws the same figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::stats::pareto_front;
use super::{Group, ReportError, ReportOptions, RunData};
use crate::records::Outcome;

/// One figure, written as SVG and PNG.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`accuracy`, `valid_rate`, ...).
    pub name: String,
    /// Its title.
    pub title: String,
    /// A sentence saying how to read it.
    pub caption: String,
    /// The SVG document.
    pub svg: String,
    /// Where the SVG was written.
    pub svg_path: PathBuf,
    /// Where the PNG was written.
    pub png_path: PathBuf,
}

/// Series colours (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// The colour of the `i`-th series.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

pub(super) const FONT: &str = "sans-serif";

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The embedded fonts are valid TrueType; a failure would only mean
        // text-less PNGs, so it is not fatal.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub(super) type DrawResult = Result<(), String>;

pub(super) fn de(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Something drawable on any plotters backend.
pub(super) trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

pub(super) fn render(
    fig: &impl Draw,
    name: &str,
    title: &str,
    caption: &str,
    dir: &Path,
    size: (u32, u32),
) -> Result<Figure, ReportError> {
    register_fonts();
    let err = |message: String| ReportError::Figure { name: name.to_string(), message };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(de(e)))?;
    }
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(de(e)))?;
    }
    let svg_path = dir.join(format!("{name}.svg"));
    std::fs::write(&svg_path, &svg).map_err(|e| super::write_err(&svg_path, e))?;
    let png_path = dir.join(format!("{name}.png"));
    let image = image::RgbImage::from_raw(size.0, size.1, pixels)
        .ok_or_else(|| err("the pixel buffer does not match the image size".into()))?;
    image.save_with_format(&png_path, image::ImageFormat::Png).map_err(|e| super::write_err(&png_path, e))?;
    Ok(Figure { name: name.into(), title: title.into(), caption: caption.into(), svg, svg_path, png_path })
}

fn max_iterations(groups: &[Group]) -> u64 {
    groups.iter().flat_map(|g| &g.runs).map(|r| r.records.len() as u64).max().unwrap_or(0).max(1)
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// Axes with whole-number iteration ticks and percent or count ticks.
fn iteration_mesh<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, y_desc: &str, n: f64) -> DrawResult {
    let whole = |v: &f64| if (v - v.round()).abs() < 1e-6 { format!("{v:.0}") } else { String::new() };
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc(y_desc)
        .x_labels((n as usize + 1).min(21))
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(de)
}

pub(super) fn chart_frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    String,
> {
    root.fill(&WHITE).map_err(de)?;
    ChartBuilder::on(root)
        .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(de)
}

pub(super) fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(de)
}

fn no_data<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, text: &str) -> DrawResult {
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2 - 180, h as i32 / 2),
        (FONT, 22).into_font().color(&BLACK.mix(0.6)),
    ))
    .map_err(de)
}

/// Per-iteration accuracy (dots), failures (crosses on the axis) and the
/// best so far (steps), one colour per group.
struct Accuracy<'a> {
    groups: &'a [Group],
}

impl Draw for Accuracy<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = max_iterations(self.groups) as f64;
        let mut chart = chart_frame(root, "Accuracy per iteration and best so far", 0.5..n + 0.5, 0.0..100.0)?;
        iteration_mesh(&mut chart, "test accuracy after one epoch (%)", n)?;
        for (gi, g) in self.groups.iter().enumerate() {
            let c = color(gi);
            for (ri, run) in g.runs.iter().enumerate() {
                let steps: Vec<(f64, f64)> = run
                    .records
                    .iter()
                    .zip(&run.summary.best_so_far)
                    .filter_map(|(r, b)| b.map(|b| (r.iteration as f64, b * 100.0)))
                    .collect();
                let line = chart.draw_series(LineSeries::new(step_points(&steps), c.stroke_width(3))).map_err(de)?;
                if ri == 0 {
                    line.label(format!("{} (best so far)", g.name))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
                }
                let dots: Vec<(f64, f64)> = run
                    .records
                    .iter()
                    .filter_map(|r| r.outcome.accuracy().map(|a| (r.iteration as f64, a * 100.0)))
                    .collect();
                chart.draw_series(dots.iter().map(|&p| Circle::new(p, 5, c.mix(0.75).filled()))).map_err(de)?;
                let failed: Vec<f64> =
                    run.records.iter().filter(|r| r.outcome.accuracy().is_none()).map(|r| r.iteration as f64).collect();
                chart.draw_series(failed.iter().map(|&x| Cross::new((x, 1.5), 5, c.stroke_width(2)))).map_err(de)?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// `(x, y)` points as a step line: each value holds until the next.
fn step_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    if let Some(&(x, y)) = points.last() {
        out.push((x + 0.5, y));
    }
    out
}

/// The valid rate over a rolling window of iterations.
struct ValidRate<'a> {
    groups: &'a [Group],
    window: usize,
}

/// The rolling valid rate of a run: for each iteration, the fraction of
/// the last `window` iterations (fewer at the start) whose candidate trained.
pub fn rolling_valid_rate(run: &RunData, window: usize) -> Vec<f64> {
    let ok: Vec<bool> = run.records.iter().map(|r| r.outcome.accuracy().is_some()).collect();
    (0..ok.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window.max(1));
            let slice = &ok[from..=i];
            slice.iter().filter(|b| **b).count() as f64 / slice.len() as f64
        })
        .collect()
}

impl Draw for ValidRate<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = max_iterations(self.groups) as f64;
        let title = format!("Valid rate over the last {} iterations", self.window);
        let mut chart = chart_frame(root, &title, 0.5..n + 0.5, 0.0..105.0)?;
        iteration_mesh(&mut chart, "candidates that trained (%)", n)?;
        for (gi, g) in self.groups.iter().enumerate() {
            let c = color(gi);
            for (ri, run) in g.runs.iter().enumerate() {
                let pts: Vec<(f64, f64)> = rolling_valid_rate(run, self.window)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, v * 100.0))
                    .collect();
                let s = chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(3))).map_err(de)?;
                if ri == 0 {
                    s.label(g.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
                }
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(de)?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// Failure counts by kind per bin of iterations, stacked, all runs pooled.
struct Failures {
    kinds: Vec<String>,
    /// `(first iteration, last iteration, count per kind)`.
    bins: Vec<(u64, u64, Vec<u64>)>,
}

/// Failures by kind in bins of iterations over all runs of `groups`.
fn failure_bins(groups: &[Group]) -> Failures {
    let n = max_iterations(groups);
    let width = n.div_ceil(20).max(1);
    let bin_count = n.div_ceil(width) as usize;
    // Counts per bin, by kind (kinds in name order).
    let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in groups.iter().flat_map(|g| &g.runs).flat_map(|r| &r.records) {
        if let Some(k) = r.outcome.failure_kind() {
            let b = ((r.iteration.max(1) - 1) / width) as usize;
            if let Some(c) = by_kind.entry(k).or_insert_with(|| vec![0; bin_count]).get_mut(b) {
                *c += 1;
            }
        }
    }
    let bins = (0..bin_count)
        .map(|b| {
            let from = b as u64 * width + 1;
            (from, (from + width - 1).min(n), by_kind.values().map(|counts| counts[b]).collect())
        })
        .collect();
    Failures { kinds: by_kind.into_keys().collect(), bins }
}

impl Draw for Failures {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = self.bins.last().map_or(1, |b| b.1) as f64;
        let top = self.bins.iter().map(|b| b.2.iter().sum::<u64>()).max().unwrap_or(0).max(1) as f64;
        let mut chart = chart_frame(root, "Failures by kind over iterations", 0.5..n + 0.5, 0.0..top * 1.15)?;
        iteration_mesh(&mut chart, "failed candidates (all runs)", n)?;
        if self.kinds.is_empty() {
            return no_data(root, "no candidate failed");
        }
        for (ki, kind) in self.kinds.iter().enumerate() {
            let c = failure_color(kind, ki);
            let rects: Vec<Rectangle<(f64, f64)>> = self
                .bins
                .iter()
                .filter(|(_, _, counts)| counts[ki] > 0)
                .map(|(from, to, counts)| {
                    let below: u64 = counts[..ki].iter().sum();
                    let x0 = *from as f64 - 0.4;
                    let x1 = *to as f64 + 0.4;
                    Rectangle::new([(x0, below as f64), (x1, (below + counts[ki]) as f64)], c.filled())
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(de)?
                .label(kind.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}

/// A failure kind's colour: fixed for the common kinds.
pub fn failure_color(kind: &str, fallback: usize) -> RGBColor {
    let fixed =
        ["extract", "syntax", "contract", "shape", "runtime", "timeout", "out_of_memory", "nan", "patch", "duplicate"];
    match fixed.iter().position(|k| *k == kind) {
        Some(i) => color(i),
        None => color(fallback + fixed.len()),
    }
}

/// A cost the Pareto front is drawn against.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    /// File stem suffix (`params`, `flops`, `latency`, `memory`).
    pub key: &'static str,
    /// What it is, in words.
    pub what: &'static str,
    /// The cost of a report, when measured.
    pub cost: fn(&nas_plugin_api::EvalReport) -> Option<f64>,
    /// How a cost reads.
    pub show: fn(f64) -> String,
}

/// Every axis a Pareto front can be drawn over.
pub const AXES: [Axis; 4] = [
    Axis { key: "params", what: "parameters", cost: |r| r.params.map(|p| p as f64), show: si },
    Axis { key: "flops", what: "FLOPs", cost: |r| r.flops.map(|p| p as f64), show: si },
    Axis {
        key: "latency",
        what: "batch-1 latency (ms)",
        cost: |r| r.latency_ms,
        show: |v| if v >= 10.0 { format!("{v:.0} ms") } else { format!("{v:.2} ms") },
    },
    Axis {
        key: "memory",
        what: "peak training memory (MiB)",
        cost: |r| r.peak_memory_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        show: |v| format!("{v:.0} MiB"),
    },
];

/// The axes a report draws: those the runs' objectives name (a limit in
/// `[search.limits]` or a weight in `[search.weights]`), else parameters
/// and FLOPs.
pub fn chosen_axes(groups: &[Group]) -> Vec<Axis> {
    let mut keys: Vec<&str> = Vec::new();
    for c in groups.iter().flat_map(|g| &g.runs).filter_map(|r| r.config.as_ref()) {
        let (l, w) = (&c.search.limits, &c.search.weights);
        let named = [
            ("params", l.max_params.is_some() || w.per_million_params > 0.0),
            ("flops", l.max_flops.is_some() || w.per_gflop > 0.0),
            ("latency", l.max_latency_ms.is_some() || w.per_latency_ms > 0.0),
            ("memory", l.max_memory_mb.is_some() || w.per_memory_gb > 0.0),
        ];
        keys.extend(named.iter().filter(|(_, on)| *on).map(|(k, _)| *k));
    }
    if keys.is_empty() {
        keys = vec!["params", "flops"];
    }
    AXES.into_iter().filter(|a| keys.contains(&a.key)).collect()
}

/// A trained candidate on an axis: `(group, run label, iteration, cost,
/// accuracy)`.
pub type ParetoPoint<'a> = (usize, &'a str, u64, f64, f64);

/// The trained candidates of every run with a positive cost on `axis`.
pub fn pareto_points<'a>(groups: &'a [Group], axis: &Axis) -> Vec<ParetoPoint<'a>> {
    let mut pts = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for run in &g.runs {
            for r in &run.records {
                if let Outcome::Ok { report } = &r.outcome {
                    if let Some(c) = (axis.cost)(report).filter(|c| *c > 0.0 && c.is_finite()) {
                        pts.push((gi, run.label.as_str(), r.iteration, c, report.accuracy));
                    }
                }
            }
        }
    }
    pts
}

/// The designs on the Pareto front of `axis`, by increasing cost.
pub fn pareto_designs<'a>(groups: &'a [Group], axis: &Axis) -> Vec<ParetoPoint<'a>> {
    let pts = pareto_points(groups, axis);
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.3, p.4)).collect();
    pareto_front(&xy).into_iter().map(|i| pts[i]).collect()
}

/// Accuracy against a cost, log scale, with the Pareto front over every run
/// and its designs marked by iteration.
struct Pareto<'a> {
    groups: &'a [Group],
    axis: Axis,
}

impl Pareto<'_> {
    fn points(&self) -> Vec<(usize, f64, f64, u64)> {
        pareto_points(self.groups, &self.axis).into_iter().map(|p| (p.0, p.3, p.4 * 100.0, p.2)).collect()
    }
}

impl Draw for Pareto<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(de)?;
        let pts = self.points();
        let what = self.axis.what;
        let title = format!("Accuracy against {what} (Pareto front marked)");
        if pts.is_empty() {
            ChartBuilder::on(root)
                .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
                .margin(16)
                .build_cartesian_2d(0.0..1.0, 0.0..1.0)
                .map_err(de)?;
            return no_data(root, &format!("no trained candidate reported its {what}"));
        }
        // log10 of the cost on a linear axis, labelled with the cost itself:
        // ticks stay readable however narrow the range.
        let pts: Vec<(usize, f64, f64, u64)> = pts.into_iter().map(|(g, c, a, i)| (g, c.log10(), a, i)).collect();
        let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.08).max(0.15);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..100.0)
            .map_err(de)?;
        chart
            .configure_mesh()
            .x_desc(format!("{what} (log scale)"))
            .y_desc("test accuracy after one epoch (%)")
            .x_labels(8)
            .x_label_formatter(&|v| (self.axis.show)(10f64.powf(*v)))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(BLACK.mix(0.05))
            .draw()
            .map_err(de)?;
        for (gi, g) in self.groups.iter().enumerate() {
            let c = color(gi);
            let mine: Vec<(f64, f64)> = pts.iter().filter(|p| p.0 == gi).map(|p| (p.1, p.2)).collect();
            if mine.is_empty() {
                continue;
            }
            chart
                .draw_series(mine.iter().map(|&p| Circle::new(p, 6, c.mix(0.8).filled())))
                .map_err(de)?
                .label(g.name.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, c.filled()));
        }
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).collect();
        let on_front = pareto_front(&xy);
        let front: Vec<(f64, f64)> = on_front.iter().map(|&i| xy[i]).collect();
        let mut steps = Vec::new();
        for (i, &(x, y)) in front.iter().enumerate() {
            if i > 0 {
                steps.push((x, front[i - 1].1));
            }
            steps.push((x, y));
        }
        chart
            .draw_series(LineSeries::new(steps, BLACK.stroke_width(2)))
            .map_err(de)?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], BLACK.stroke_width(2)));
        chart.draw_series(front.iter().map(|&p| Circle::new(p, 9, BLACK.stroke_width(2)))).map_err(de)?;
        chart
            .draw_series(on_front.iter().map(|&i| {
                Text::new(format!("#{}", pts[i].3), (pts[i].1, pts[i].2 + 2.5), (FONT, 14).into_font().color(&BLACK))
            }))
            .map_err(de)?;
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// `1.2k`, `3.4M`, `5.6G`.
pub fn si(v: f64) -> String {
    let (d, s) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if x >= 100.0 || s.is_empty() {
        format!("{x:.0}{s}")
    } else {
        format!("{x:.1}{s}")
    }
}

/// Best so far per configuration: the mean over seeds with its 95 %
/// bootstrap band.
struct Bands<'a> {
    comparison: &'a crate::report::comparison::Comparison,
}

impl Draw for Bands<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        let n = self.comparison.arms.iter().map(|a| a.curve.len()).max().unwrap_or(1).max(1) as f64;
        let mut chart = chart_frame(root, "Best so far: mean over seeds with 95% band", 0.5..n + 0.5, 0.0..100.0)?;
        iteration_mesh(&mut chart, "best accuracy so far (%)", n)?;
        for (ai, arm) in self.comparison.arms.iter().enumerate() {
            let c = color(ai);
            if arm.curve.is_empty() {
                continue;
            }
            let mut band: Vec<(f64, f64)> =
                arm.curve.iter().enumerate().map(|(i, e)| ((i + 1) as f64, e.high * 100.0)).collect();
            band.extend(arm.curve.iter().enumerate().rev().map(|(i, e)| ((i + 1) as f64, e.low * 100.0)));
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled()))).map_err(de)?;
            let mean: Vec<(f64, f64)> =
                arm.curve.iter().enumerate().map(|(i, e)| ((i + 1) as f64, e.value * 100.0)).collect();
            let width = if arm.name == self.comparison.baseline { 4 } else { 3 };
            let label = if arm.name == self.comparison.baseline {
                format!("{} (baseline)", arm.name)
            } else {
                arm.name.clone()
            };
            chart
                .draw_series(LineSeries::new(mean, c.stroke_width(width)))
                .map_err(de)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(width)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// Draws every figure of a report into `dir`.
pub fn draw_all(
    groups: &[Group],
    dir: &Path,
    options: &ReportOptions,
    comparison: Option<&crate::report::comparison::Comparison>,
) -> Result<Vec<Figure>, ReportError> {
    let size = options.png_size;
    let mut out = Vec::new();
    if let Some(c) = comparison {
        out.push(render(
            &Bands { comparison: c },
            "best_so_far_bands",
            "Best so far, by configuration",
            "The line is the mean over seeds of the best accuracy reached by each iteration (0 before a \
             run's first trained candidate); the band is its 95% bootstrap interval.",
            dir,
            size,
        )?);
    }
    out.push(render(
        &Accuracy { groups },
        "accuracy",
        "Accuracy per iteration and best so far",
        "Dots: candidates that trained, at their test accuracy. Crosses on the axis: candidates that failed or \
         were duplicates. Steps: the best accuracy so far of each run.",
        dir,
        size,
    )?);
    out.push(render(
        &ValidRate { groups, window: options.window },
        "valid_rate",
        "Rolling valid rate",
        &format!(
            "For each iteration, the share of the last {} candidates (fewer at the start) that trained and were scored.",
            options.window
        ),
        dir,
        size,
    )?);
    out.push(render(
        &failure_bins(groups),
        "failures",
        "Failures by kind over iterations",
        "Failed and duplicate candidates of all runs, by kind, in bins of iterations.",
        dir,
        size,
    )?);
    for axis in chosen_axes(groups) {
        out.push(render(
            &Pareto { groups, axis },
            &format!("pareto_{}", axis.key),
            &format!("Accuracy against {}", axis.what),
            &format!(
                "Each trained candidate by its {}; the black steps join the Pareto front (no other candidate is both \
                 cheaper and more accurate), its designs circled and labelled by iteration.",
                axis.what
            ),
            dir,
            size,
        )?);
    }
    out.extend(super::cycles::figures(groups, dir, options)?);
    out.extend(super::fidelity::figures(groups, dir, options)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes_read_well() {
        assert_eq!(si(950.0), "950");
        assert_eq!(si(1_500.0), "1.5k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(si(320_000_000.0), "320M");
    }

    #[test]
    fn step_points_hold_each_value_until_the_next() {
        let s = step_points(&[(1.0, 10.0), (3.0, 20.0)]);
        assert_eq!(s, vec![(1.0, 10.0), (3.0, 10.0), (3.0, 20.0), (3.5, 20.0)]);
    }
}
