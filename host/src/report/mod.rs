//! Reports: what `nas report` and `nas compare` write.
//!
//! A report is built from run directories as recorded (nothing is
//! re-evaluated) and written into one output directory:
//!
//! | file | what |
//! |---|---|
//! | `report.html` | one self-contained page: tables, every figure inline (SVG), the best architecture's code |
//! | `summary.md` | the same facts as Markdown, with the PNG figures linked |
//! | `iterations.md` | each run's iterations, one row each: outcome, what the loop did (retries, repairs, refused diagnoses, fallback changes), size, cost, best so far |
//! | `figures/*.svg`, `figures/*.png` | each figure in both formats |
//! | `records.csv`, `records.json` | one flat row per iteration per run |
//! | `records-full.jsonl` | every iteration record whole (prompts, answers, code), one per line |
//! | `summary.json` | each run's metrics, device time by role, fidelity and seed studies (and the comparison, for `nas compare`) |
//!
//! Runs are grouped: `nas report` makes one group per run, `nas compare` one
//! group per configuration with a run per seed.

pub mod comparison;
pub mod cycles;
pub mod fidelity;
pub mod figures;
pub mod html;
pub mod iterations;
pub mod stats;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::RunConfig;
use crate::metrics::{self, Summary};
use crate::records::{IterationRecord, Outcome};
use crate::run_dir::{PluginRecord, RecordedRun};
use crate::store;

/// A report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run could not be read.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// A file could not be written.
    #[error("cannot write `{path}`: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A run's retrainings could not be read.
    #[error(transparent)]
    Fidelity(#[from] crate::fidelity::FidelityError),
    /// A figure could not be drawn.
    #[error("figure `{name}`: {message}")]
    Figure {
        /// The figure.
        name: String,
        /// Why.
        message: String,
    },
}

pub(crate) fn write_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Write { path: path.to_path_buf(), message: e.to_string() }
}

/// One recorded run, read whole.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Its directory.
    pub dir: PathBuf,
    /// A short label (the directory's name, or `arm/seed-N` in a comparison).
    pub label: String,
    /// The frozen config, when it could be read.
    pub config: Option<RunConfig>,
    /// `running`, `finished`, `interrupted`, `failed`.
    pub status: String,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// The plugins it ran with.
    pub plugins: Vec<PluginRecord>,
    /// Its iterations.
    pub records: Vec<IterationRecord>,
    /// Its memory entries, oldest first.
    pub memory: Vec<nas_plugin_api::MemoryEntry>,
    /// Its metrics.
    pub summary: Summary,
    /// Its retrainings (`nas fidelity`).
    pub retrains: Vec<crate::fidelity::Retrain>,
}

impl RunData {
    /// Reads a run directory.
    pub fn load(dir: &Path) -> Result<RunData, ReportError> {
        let run = RecordedRun::open(dir)?;
        let summary = metrics::summarize(&run.records);
        Ok(RunData {
            dir: dir.to_path_buf(),
            label: run.name,
            config: run.config.ok().map(|l| l.config),
            status: run.status,
            stop_reason: run.stop_reason,
            plugins: run.plugins,
            records: run.records,
            memory: run.memory,
            summary,
            retrains: crate::fidelity::read(dir)?,
        })
    }

    /// A run named `r` of these records and memory entries, finished, with
    /// nothing else (the report's tests).
    #[cfg(test)]
    pub(crate) fn of(records: Vec<IterationRecord>, memory: Vec<nas_plugin_api::MemoryEntry>) -> RunData {
        let summary = metrics::summarize(&records);
        RunData {
            dir: "runs/r".into(),
            label: "r".into(),
            config: None,
            status: "finished".into(),
            stop_reason: None,
            plugins: Vec::new(),
            records,
            memory,
            summary,
            retrains: Vec::new(),
        }
    }

    /// The plugin id that ran in a config section (`memory`, `generator`, ...).
    pub fn plugin(&self, section: &str) -> String {
        self.plugins.iter().find(|p| p.section == section).map(|p| p.id.clone()).unwrap_or_else(|| "-".into())
    }

    /// The run's seed.
    pub fn seed(&self) -> Option<u64> {
        self.config.as_ref().map(|c| c.run.seed)
    }

    /// The best valid candidate: its record and accuracy.
    pub fn best(&self) -> Option<(&IterationRecord, f64)> {
        let (iteration, acc) = self.summary.best?;
        self.records.iter().find(|r| r.iteration == iteration).map(|r| (r, acc))
    }

    /// LLM seconds of both roles.
    pub fn llm_seconds(&self) -> f64 {
        self.summary.generator.seconds + self.summary.improver.seconds
    }

    /// Device time: the evaluator's seconds plus the LLM's.
    pub fn device_seconds(&self) -> f64 {
        self.summary.eval_seconds + self.llm_seconds()
    }

    /// LLM tokens, in and out, both roles.
    pub fn tokens(&self) -> u64 {
        self.records.iter().map(IterationRecord::tokens).sum()
    }
}

/// Runs compared as one: a configuration and its seeds.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its runs.
    pub runs: Vec<RunData>,
}

/// One iteration as a flat row (the CSV and JSON exports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The group (configuration).
    pub group: String,
    /// The run's label.
    pub run: String,
    /// The run's seed.
    pub seed: Option<u64>,
    /// 1-based iteration.
    pub iteration: u64,
    /// `full` or `delta`.
    pub mode: String,
    /// `ok`, `failed` or `duplicate`.
    pub status: String,
    /// Test accuracy (0–1), when it trained.
    pub accuracy: Option<f64>,
    /// The failure kind (`duplicate` for duplicates).
    pub failure_kind: Option<String>,
    /// The stage that failed.
    pub failure_stage: Option<String>,
    /// The failure's message.
    pub failure_message: Option<String>,
    /// The twin of a duplicate.
    pub duplicate_of: Option<u64>,
    /// Generator answers asked for again (no code, no `forward`, or a
    /// near-duplicate; `[search] generation_retries`; or a design that
    /// failed before training, `[search] fix_retries`).
    pub regenerated: u64,
    /// Of those, designs that failed before training and that the generator
    /// was asked to fix (`[search] fix_retries`): the first failure's kind.
    pub fixed_after: Option<String>,
    /// Why the Prompt Improver's answer was not taken as a diagnosis (it
    /// then opened no memory entry).
    pub diagnosis_rejected: Option<String>,
    /// The deterministic repairs made before training, in order
    /// (`softmax`, `flatten`; `[search] repair`), joined by `+`.
    pub repaired: Option<String>,
    /// The parent in delta mode.
    pub parent: Option<u64>,
    /// Trainable parameters.
    pub params: Option<u64>,
    /// Forward FLOPs per example.
    pub flops: Option<u64>,
    /// Mean training loss.
    pub train_loss: Option<f64>,
    /// Seconds of the training epoch.
    pub epoch_seconds: Option<f64>,
    /// Inference latency at batch 1, ms.
    pub latency_ms: Option<f64>,
    /// Inference latency of a training-size batch, ms.
    pub batch_latency_ms: Option<f64>,
    /// The trainee's peak memory, bytes.
    pub peak_memory_bytes: Option<u64>,
    /// The seed the evaluator trained it with, as it reported.
    pub train_seed: Option<u64>,
    /// The machine that trained it, as the evaluator named it
    /// (`extra.machine`: processor and torch).
    pub machine: Option<String>,
    /// The evaluator's device seconds (else its wall seconds).
    pub device_seconds: f64,
    /// Seconds in the evaluator.
    pub eval_seconds: f64,
    /// Seconds in LLM calls (both roles).
    pub llm_seconds: f64,
    /// Seconds of the whole iteration.
    pub wall_seconds: f64,
    /// Code Generator prompt tokens.
    pub generator_tokens_in: u64,
    /// Code Generator generated tokens.
    pub generator_tokens_out: u64,
    /// Prompt Improver prompt tokens.
    pub improver_tokens_in: u64,
    /// Prompt Improver generated tokens.
    pub improver_tokens_out: u64,
    /// All tokens of the iteration.
    pub tokens: u64,
    /// Best accuracy after this iteration.
    pub best_so_far: Option<f64>,
}

/// Every iteration of every run as rows.
pub fn rows(groups: &[Group]) -> Vec<Row> {
    let mut out = Vec::new();
    for g in groups {
        for run in &g.runs {
            for (r, best) in run.records.iter().zip(&run.summary.best_so_far) {
                let (report, failure) = match &r.outcome {
                    Outcome::Ok { report } => (Some(report), None),
                    Outcome::Failed { failure } => (None, Some(failure)),
                    Outcome::Duplicate { .. } => (None, None),
                };
                // A candidate over a limit keeps what was measured.
                let measured = report.or(r.over_limit.as_ref());
                out.push(Row {
                    group: g.name.clone(),
                    run: run.label.clone(),
                    seed: run.seed(),
                    iteration: r.iteration,
                    mode: r.mode.clone(),
                    status: r.outcome.status().into(),
                    accuracy: report.map(|x| x.accuracy),
                    failure_kind: r.outcome.failure_kind(),
                    failure_stage: failure.map(|f| f.stage.clone()),
                    failure_message: failure.map(|f| f.message.clone()),
                    duplicate_of: r.outcome.duplicate_of(),
                    regenerated: r.regenerated.len() as u64,
                    fixed_after: r.regenerated.iter().find_map(|g| g.failed.as_ref()).map(|f| f.kind.to_string()),
                    diagnosis_rejected: r.advice.as_ref().and_then(|a| a.rejected.clone()),
                    repaired: (!r.repair.is_empty()).then(|| {
                        // One softmax repair may change two lines (the call
                        // and the module's definition): named once.
                        let mut kinds: Vec<&str> = r.repair.iter().map(|n| n.kind.as_str()).collect();
                        kinds.dedup();
                        kinds.join("+")
                    }),
                    parent: r.parent,
                    params: report.and_then(|x| x.params),
                    flops: report.and_then(|x| x.flops),
                    train_loss: report.and_then(|x| x.train_loss),
                    epoch_seconds: report.and_then(|x| x.epoch_seconds),
                    latency_ms: measured.and_then(|x| x.latency_ms),
                    batch_latency_ms: measured.and_then(|x| x.batch_latency_ms),
                    peak_memory_bytes: measured.and_then(|x| x.peak_memory_bytes),
                    train_seed: measured.and_then(|x| x.seed),
                    machine: measured.and_then(|x| x.machine()).map(String::from),
                    device_seconds: r.device_seconds(),
                    eval_seconds: r.eval_seconds,
                    llm_seconds: r.generator_usage.seconds + r.improver_usage.seconds,
                    wall_seconds: r.wall_seconds,
                    generator_tokens_in: r.generator_usage.tokens_in,
                    generator_tokens_out: r.generator_usage.tokens_out,
                    improver_tokens_in: r.improver_usage.tokens_in,
                    improver_tokens_out: r.improver_usage.tokens_out,
                    tokens: r.tokens(),
                    best_so_far: *best,
                });
            }
        }
    }
    out
}

/// Options of a report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The page's title.
    pub title: String,
    /// Iterations in the rolling valid-rate window.
    pub window: usize,
    /// PNG width and height in pixels.
    pub png_size: (u32, u32),
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { title: "nas report".into(), window: 5, png_size: (1200, 675) }
    }
}

/// The files a report wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Written {
    /// The HTML page.
    pub html: PathBuf,
    /// The Markdown summary.
    pub markdown: PathBuf,
    /// The iterations, one row each (Markdown).
    pub iterations: PathBuf,
    /// Every figure file (SVG and PNG).
    pub figures: Vec<PathBuf>,
    /// The record exports.
    pub exports: Vec<PathBuf>,
}

/// One run's summary as exported in `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary<'a> {
    /// The group.
    pub group: &'a str,
    /// The run's label.
    pub run: &'a str,
    /// Its directory.
    pub dir: &'a Path,
    /// Its seed.
    pub seed: Option<u64>,
    /// Its status and stop reason.
    pub status: &'a str,
    /// Why it stopped.
    pub stop_reason: Option<&'a str>,
    /// Plugins by section.
    pub plugins: &'a [PluginRecord],
    /// LLM tokens, both roles.
    pub tokens: u64,
    /// Evaluator plus LLM seconds.
    pub device_seconds: f64,
    /// Device seconds by role (search evaluator, LLM roles, retraining).
    pub device_time: fidelity::DeviceTime,
    /// The proxy-fidelity studies.
    pub fidelity: Vec<crate::fidelity::FidelitySummary>,
    /// The seed-repeatability study.
    pub seed_spreads: Vec<crate::fidelity::SeedSpread>,
    /// The metrics.
    pub summary: &'a Summary,
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<PathBuf, ReportError> {
    std::fs::write(path, bytes).map_err(|e| write_err(path, e))?;
    Ok(path.to_path_buf())
}

/// Writes the record exports: `records.csv`, `records.json`,
/// `records-full.jsonl`, `summary.json` (with `extra` merged in).
pub fn write_exports(
    groups: &[Group],
    out: &Path,
    extra: Option<serde_json::Value>,
) -> Result<Vec<PathBuf>, ReportError> {
    let rows = rows(groups);
    let csv_path = out.join("records.csv");
    let mut w = csv::Writer::from_path(&csv_path).map_err(|e| write_err(&csv_path, e))?;
    for row in &rows {
        w.serialize(row).map_err(|e| write_err(&csv_path, e))?;
    }
    w.flush().map_err(|e| write_err(&csv_path, e))?;
    let mut written = vec![csv_path];
    let json = serde_json::to_string_pretty(&rows).map_err(|e| write_err(&out.join("records.json"), e))?;
    written.push(write(&out.join("records.json"), json)?);

    let full_path = out.join("records-full.jsonl");
    let mut full = String::new();
    for g in groups {
        for run in &g.runs {
            for r in &run.records {
                let line = serde_json::json!({ "group": g.name, "run": run.label, "record": r });
                full.push_str(&line.to_string());
                full.push('\n');
            }
        }
    }
    written.push(write(&full_path, full)?);

    let runs: Vec<RunSummary> = groups
        .iter()
        .flat_map(|g| {
            g.runs.iter().map(move |run| RunSummary {
                group: &g.name,
                run: &run.label,
                dir: &run.dir,
                seed: run.seed(),
                status: &run.status,
                stop_reason: run.stop_reason.as_deref(),
                plugins: &run.plugins,
                tokens: run.tokens(),
                device_seconds: run.device_seconds(),
                device_time: fidelity::DeviceTime::of(run),
                fidelity: crate::fidelity::fidelity_summaries(&run.retrains),
                seed_spreads: crate::fidelity::seed_spreads(&run.retrains),
                summary: &run.summary,
            })
        })
        .collect();
    let mut summary = serde_json::json!({ "runs": runs });
    if let Some(extra) = extra {
        summary["comparison"] = extra;
    }
    let text = serde_json::to_string_pretty(&summary).map_err(|e| write_err(&out.join("summary.json"), e))?;
    written.push(write(&out.join("summary.json"), text)?);
    Ok(written)
}

/// Writes a whole report of `groups` into `out` (created if needed). A
/// comparison, when given, adds its table and banded curves.
pub fn write_report(
    groups: &[Group],
    out: &Path,
    options: &ReportOptions,
    comparison: Option<&crate::report::comparison::Comparison>,
) -> Result<Written, ReportError> {
    let fig_dir = out.join("figures");
    std::fs::create_dir_all(&fig_dir).map_err(|e| write_err(&fig_dir, e))?;
    let figures = figures::draw_all(groups, &fig_dir, options, comparison)?;
    let exports = write_exports(groups, out, comparison.map(|c| serde_json::to_value(c).unwrap_or_default()))?;
    let page = html::page(groups, &figures, options, comparison);
    let html_path = write(&out.join("report.html"), page)?;
    let md = html::markdown(groups, &figures, options, comparison);
    let md_path = write(&out.join("summary.md"), md)?;
    let iterations_path = write(&out.join("iterations.md"), iterations::markdown(groups, &options.title))?;
    Ok(Written {
        html: html_path,
        markdown: md_path,
        iterations: iterations_path,
        figures: figures.iter().flat_map(|f| [f.svg_path.clone(), f.png_path.clone()]).collect(),
        exports,
    })
}
