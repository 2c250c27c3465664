//! What runs on a node: `nas eval-job DIR` reads the job's request, creates
//! the run's `[evaluator]` exactly as `nas run` does locally (the same
//! plugin, settings and sandbox, from the run's frozen config), evaluates
//! the one candidate and writes the result whole; `nas eval-job --probe DIR`
//! checks what the evaluations will need and writes what it found.
//!
//! A job that cannot write a result (no request, a folder it cannot write)
//! exits non-zero with the reason on stderr (the job's output); anything
//! else, the evaluator's failure to start included, is in the result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nas_plugin_api::{ErrorCode, EvalOutcome, Evaluator, PluginError, PluginKind, MANIFEST_FILE};

use super::job::{
    self, JobRequest, JobResult, ProbeAnswer, ProbeCheck, ProbeRequest, ANSWER_FILE, FORMAT, MAX_REQUEST_BYTES,
    PROBE_FILE, REQUEST_FILE, RESULT_FILE,
};
use crate::config::LoadedConfig;
use crate::session;

/// Why a job could not write its answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request is missing or unreadable.
    #[error("{0}")]
    Request(String),
    /// The answer could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The node's name: Slurm's for it, else the host name.
pub fn node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn slurm_job_id() -> Option<u64> {
    std::env::var("SLURM_JOB_ID").ok().and_then(|j| j.trim().parse().ok())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, NodeError> {
    let bytes = job::read_capped(path, MAX_REQUEST_BYTES).map_err(NodeError::Request)?.ok_or_else(|| {
        NodeError::Request(format!("{} does not exist (is the folder shared with this node?)", path.display()))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| NodeError::Request(format!("{}: {e}", path.display())))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), NodeError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| NodeError::Write { path: path.to_path_buf(), source: e.into() })?;
    job::write_atomically(path, &bytes).map_err(|source| NodeError::Write { path: path.to_path_buf(), source })
}

/// A node-local folder for the evaluator's scratch files (`$TMPDIR`, which
/// Slurm sites often make per job), removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(nonce: &str) -> Scratch {
        let id = slurm_job_id().map_or_else(|| format!("p{}", std::process::id()), |j| j.to_string());
        Scratch(std::env::temp_dir().join(format!("nas-job-{id}-{}", job::short(nonce))))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates the run's evaluator as `nas run` would, from its frozen config.
fn create_evaluator(
    run_dir: &Path,
    config_dir: &Path,
    plugins: &[PathBuf],
    scratch: &Path,
) -> Result<Box<dyn Evaluator>, PluginError> {
    let config_file = run_dir.join(crate::run_dir::CONFIG_FILE);
    let loaded = crate::config::load(&config_file).map_err(|e| PluginError::config(e.to_string()))?;
    let loaded = LoadedConfig { dir: config_dir.to_path_buf(), ..loaded };
    let mut registry = session::registry(plugins).map_err(|e| PluginError::new(ErrorCode::NotFound, e.to_string()))?;
    let mut ctx = session::host_context(config_dir, Some(run_dir));
    ctx.scratch_dir = Some(scratch.to_path_buf());
    let section = loaded.config.evaluator.clone();
    let (_, instance) = session::create(&mut registry, &loaded, "evaluator", &section, PluginKind::Evaluator, &ctx)
        .map_err(|e| PluginError::config(e.to_string()))?;
    instance.into_evaluator().map_err(|_| PluginError::config("[evaluator] is not an evaluator"))
}

/// `nas eval-job DIR`: evaluates the request in `DIR` and writes its result
/// there; returns a one-line summary.
pub fn run_job(dir: &Path) -> Result<String, NodeError> {
    let started = Instant::now();
    let request: JobRequest = read_json(&dir.join(REQUEST_FILE))?;
    if request.format != FORMAT {
        return Err(NodeError::Request(format!(
            "{}: format {} (this nas reads {FORMAT}): the nodes run another nas than the host",
            dir.join(REQUEST_FILE).display(),
            request.format
        )));
    }
    let scratch = Scratch::new(&request.nonce);
    let mut setup_seconds = 0.0;
    let mut eval_seconds = 0.0;
    let answer: Result<EvalOutcome, PluginError> =
        create_evaluator(&request.run_dir, &request.config_dir, &request.plugins, &scratch.0).and_then(|mut e| {
            setup_seconds = started.elapsed().as_secs_f64();
            let t = Instant::now();
            let outcome = e.evaluate(&request.request);
            eval_seconds = t.elapsed().as_secs_f64();
            outcome
        });
    drop(scratch);
    let node = node_name();
    let summary = match &answer {
        Ok(EvalOutcome::Ok(r)) => format!("ok, accuracy {:.2}%", r.accuracy * 100.0),
        Ok(EvalOutcome::Failed(f)) => format!("failed ({} at stage {})", f.kind, f.stage),
        Err(e) => format!("the evaluator failed: {e}"),
    };
    let (outcome, error) = match answer {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e)),
    };
    let result = JobResult {
        format: FORMAT,
        nonce: request.nonce.clone(),
        candidate_id: request.request.candidate_id.clone(),
        code_sha256: job::sha256(&request.request.source),
        outcome,
        error,
        node: node.clone(),
        job_id: slurm_job_id(),
        setup_seconds,
        eval_seconds,
    };
    write_json(&dir.join(RESULT_FILE), &result)?;
    Ok(format!(
        "nas eval-job: {} on {node}: {summary}; setup {setup_seconds:.1} s, evaluation {eval_seconds:.1} s",
        request.request.candidate_id
    ))
}

/// `nas eval-job --probe DIR`: checks that this node reads the run
/// directory, the dataset and the plugin libraries and can create the
/// evaluator; writes the answer in `DIR`; returns a one-line summary.
pub fn run_probe(dir: &Path) -> Result<String, NodeError> {
    let request: ProbeRequest = read_json(&dir.join(PROBE_FILE))?;
    let mut checks = Vec::new();
    let mut check = |what: &str, result: Result<String, String>| {
        let ok = result.is_ok();
        checks.push(ProbeCheck { what: what.into(), ok, detail: result.unwrap_or_else(|e| e) });
        ok
    };
    let token = std::fs::read_to_string(&request.token_file);
    let run_dir_ok = check(
        "run directory",
        match token {
            Ok(t) if t.trim() == request.token => Ok(request.run_dir.display().to_string()),
            Ok(_) => Err(format!(
                "{} holds another token: this node sees another folder at that path",
                request.token_file.display()
            )),
            Err(e) => Err(format!("cannot read {}: {e}", request.token_file.display())),
        },
    );
    let manifest = request.dataset_dir.join(MANIFEST_FILE);
    check(
        "dataset",
        std::fs::read(&manifest)
            .map(|_| request.dataset_dir.display().to_string())
            .map_err(|e| format!("cannot read {}: {e}", manifest.display())),
    );
    let mut libraries_ok = true;
    for lib in &request.plugins {
        libraries_ok &= check(
            "plugin library",
            std::fs::metadata(lib)
                .map(|_| lib.display().to_string())
                .map_err(|e| format!("cannot read {}: {e}", lib.display())),
        );
    }
    if run_dir_ok && libraries_ok {
        let scratch = Scratch::new(&request.nonce);
        let created = create_evaluator(&request.run_dir, &request.config_dir, &request.plugins, &scratch.0);
        check("evaluator", created.map(|_| "created".to_string()).map_err(|e| e.to_string()));
    }
    let node = node_name();
    let failed = checks.iter().filter(|c| !c.ok).count();
    let answer = ProbeAnswer { format: FORMAT, nonce: request.nonce, node: node.clone(), checks };
    write_json(&dir.join(ANSWER_FILE), &answer)?;
    Ok(format!("nas eval-job --probe on {node}: {failed} check(s) failed"))
}
