//! Where candidate evaluations run: in this process (`[executor] kind =
//! "local"`, the `[evaluator]` instances the search holds) or as Slurm jobs
//! (`kind = "slurm"`), one job per evaluation.
//!
//! With Slurm the search is unchanged: it holds [`SlurmExecutor::evaluators`]
//! in its evaluator pool, one instance per job in flight (`[executor]
//! jobs`). An instance's `evaluate` writes the request into a folder on the
//! shared storage, records the attempt in the run store ([`table`]) before
//! `sbatch` runs, submits `nas eval-job DIR` ([`node`]) and blocks until
//! the job's result is there (or the job ended without one). The node
//! creates the run's `[evaluator]` from the frozen config exactly as a local
//! run does (same plugin, settings and sandbox) and writes the outcome
//! whole; the host reads it no more trustingly than a local outcome
//! ([`job`]). The search journals the outcome as it journals a local one,
//! so resume and replay work as they do locally.
//!
//! Faults (a refused submission, a job cancelled by someone else, past its
//! time limit or memory, preempted, on a failed node, gone from the queue,
//! without a result) are typed ([`table::JobFault`]), recorded per attempt,
//! and the evaluation is submitted again up to `max_attempts` times in one
//! `nas run`/`nas resume`; after that the evaluation is an infrastructure
//! error and the run stops, resumable. A bad candidate stays what it is
//! locally: a candidate failure from the evaluator.
//!
//! A host killed while its jobs run leaves them running: `nas resume`
//! follows each one again (by its id, or by its unique name when the host
//! died before `sbatch` answered) instead of submitting it again, and takes
//! the result of one that finished meanwhile. Ctrl-C cancels the jobs in
//! flight (`scancel`).

pub mod job;
pub mod node;
pub mod table;

mod cluster;
mod probe;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nas_plugin_api::{Evaluator, PluginError, PluginKind};

use crate::config::{ExecutorKind, LoadedConfig};
use crate::registry::{Origin, Registry};
use crate::run_dir::PluginRecord;
use crate::slurm::{JobSpec, Slurm, SlurmError};
use crate::store::StoreError;

pub use cluster::SlurmExecutor;
pub use probe::ProbeReport;

/// Seconds added to the evaluator's own time limit for a job's limit: the
/// job's start, the evaluator's creation, loading the data.
pub const TIME_MARGIN_S: f64 = 300.0;
/// The evaluator time limit assumed when its settings name none (the
/// method's 1800 s).
pub const DEFAULT_EVAL_LIMIT_S: f64 = 1800.0;

/// Why the Slurm executor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A setting is wrong or missing.
    #[error("[executor]: {0}")]
    Config(String),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or folder could not be made or read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Slurm failed.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// The probe job found that the nodes cannot run the evaluations.
    #[error("{0}")]
    Probe(String),
}

/// The process's Ctrl-C flag: `nas run` and `nas resume` set it on the
/// first Ctrl-C; the Slurm executor then cancels its jobs in flight.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone()
}

/// The start of the error an evaluation ends with when Ctrl-C cancelled
/// its job.
const INTERRUPTED: &str = "interrupted: Ctrl-C cancelled the Slurm job";

/// Whether an evaluator error is the Slurm executor saying Ctrl-C
/// cancelled its job (the run is interrupted, not broken).
pub fn is_interruption(e: &PluginError) -> bool {
    e.message.starts_with(INTERRUPTED)
}

/// The settings of the Slurm executor, resolved against the config's
/// directory and the run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs in flight at most.
    pub jobs: u32,
    /// Every job's options (script, name, output and folder are set per job).
    pub spec: JobSpec,
    /// Where the jobs' folders go.
    pub shared_dir: PathBuf,
    /// The `nas` the nodes run.
    pub nas_command: PathBuf,
    /// Attempts per evaluation in one host process.
    pub max_attempts: u32,
    /// Between two looks at the queue.
    pub poll_interval: Duration,
    /// Before submitting again.
    pub retry_delay: Duration,
    /// How long a result may take to appear after its job completed.
    pub result_wait: Duration,
    /// How long the controller may be unreachable before the run stops.
    pub controller_timeout: Duration,
    /// Whether to run the probe job at start.
    pub probe: bool,
    /// How long the probe may take, queue wait included.
    pub probe_timeout: Duration,
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Settings {
    /// The `[executor]` settings of a loaded config, for the run in
    /// `run_dir`, with Slurm's client.
    pub fn resolve(loaded: &LoadedConfig, run_dir: &Path) -> Result<(Settings, Slurm), ExecutorError> {
        let c = &loaded.config;
        let e = &c.executor;
        if e.kind != ExecutorKind::Slurm {
            return Err(ExecutorError::Config("kind is not \"slurm\"".into()));
        }
        let resolve = |p: &Path| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p));
        // A command given as a plain name is looked up on PATH; one with a
        // folder is a path like any other in the config.
        let command = |p: &Path| if p.components().count() > 1 { resolve(p) } else { p.to_path_buf() };
        let eval_limit = c
            .evaluator
            .settings
            .get("time_limit_s")
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(DEFAULT_EVAL_LIMIT_S);
        let time_limit = e.time_limit_s.unwrap_or(eval_limit + TIME_MARGIN_S);
        let spec = JobSpec {
            partition: e.partition.clone(),
            account: e.account.clone(),
            qos: e.qos.clone(),
            time_limit: Some(Duration::from_secs(time_limit.ceil() as u64)),
            gres: e.gres.clone(),
            memory_mb: e.mem_mb,
            cpus_per_task: e.cpus_per_task,
            requeue: Some(e.requeue),
            extra_args: e.sbatch_args.clone(),
            ..JobSpec::default()
        };
        let nas_command = match &e.nas_command {
            Some(p) => command(p),
            None => std::env::current_exe().and_then(|p| p.canonicalize()).map_err(|e| {
                ExecutorError::Config(format!("cannot tell where this nas binary is ({e}): set nas_command"))
            })?,
        };
        let settings = Settings {
            jobs: e.jobs.unwrap_or_else(|| c.search.islands.max(c.evaluator.slots.unwrap_or(1))).max(1),
            spec,
            shared_dir: e.shared_dir.as_deref().map_or_else(|| run_dir.join("jobs"), resolve),
            nas_command,
            max_attempts: e.max_attempts.max(1),
            poll_interval: seconds(e.poll_interval_s),
            retry_delay: seconds(e.retry_delay_s),
            result_wait: seconds(e.result_wait_s),
            controller_timeout: seconds(e.controller_timeout_s),
            probe: e.probe,
            probe_timeout: seconds(e.probe_timeout_s),
        };
        let mut commands = e.commands.clone();
        for p in [
            &mut commands.sbatch,
            &mut commands.squeue,
            &mut commands.sacct,
            &mut commands.scancel,
            &mut commands.sinfo,
        ] {
            *p = command(p);
        }
        let mut slurm = Slurm::new(commands);
        if let Some(conf) = &e.slurm_conf {
            slurm = slurm.with_env("SLURM_CONF", resolve(conf));
        }
        Ok((settings, slurm))
    }
}

/// The plugin libraries loaded into a registry (`--plugin`, `[plugins]
/// load`), for the nodes to load too.
pub fn libraries(registry: &Registry) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in registry.plugins() {
        let path = match &p.origin {
            Origin::Native(path) | Origin::Wasm(path) => path,
            Origin::Builtin => continue,
        };
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

/// The evaluators that submit Slurm jobs, one per job in flight, and the
/// `[evaluator]` plugin's record.
pub type SlurmEvaluators = (Vec<Box<dyn Evaluator>>, PluginRecord);

/// For `[executor] kind = "slurm"`: the evaluators the search holds (one
/// per job in flight) and the `[evaluator]` plugin's record. The evaluator
/// plugin itself is only looked up here, never created: it runs on the
/// nodes (a login node may not be able to create it). `None` for local
/// evaluation.
pub fn slurm_evaluators(
    registry: &mut Registry,
    loaded: &LoadedConfig,
    run_dir: Option<&Path>,
) -> Result<Option<SlurmEvaluators>, ExecutorError> {
    if loaded.config.executor.is_local() {
        return Ok(None);
    }
    let run_dir =
        run_dir.ok_or_else(|| ExecutorError::Config("Slurm evaluates the candidates of a run only".into()))?;
    let reference = loaded.config.evaluator.plugin.resolved(&loaded.dir);
    let found = registry
        .resolve(&reference, PluginKind::Evaluator)
        .map_err(|e| ExecutorError::Config(format!("the evaluator the nodes would run: {e}")))?;
    let record = PluginRecord {
        section: "evaluator".into(),
        id: found.info.id.clone(),
        version: found.info.version.clone(),
        api_version: found.info.api_version.to_string(),
        origin: found.origin.to_string(),
    };
    let executor = SlurmExecutor::new(loaded, run_dir, libraries(registry), interrupt_flag())?;
    Ok(Some((executor.evaluators(), record)))
}

/// At the start of a run on Slurm (`nas run`, `nas resume`): a probe job
/// checks that the nodes read the run directory, the prepared dataset and
/// the plugin libraries and can create the evaluator. Nothing to do for
/// local evaluation or with `probe = false`.
pub fn check_nodes(
    loaded: &LoadedConfig,
    run_dir: &Path,
    dataset_dir: &Path,
    registry: &Registry,
) -> Result<Option<ProbeReport>, ExecutorError> {
    if loaded.config.executor.is_local() || !loaded.config.executor.probe {
        return Ok(None);
    }
    let executor = SlurmExecutor::new(loaded, run_dir, libraries(registry), interrupt_flag())?;
    executor.probe(dataset_dir).map(Some)
}

/// A plugin error for what stops an evaluation on Slurm.
fn infra(message: String) -> PluginError {
    PluginError::new(nas_plugin_api::ErrorCode::Unreachable, message)
}
