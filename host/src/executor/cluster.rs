//! The host side of evaluations on Slurm: attempts submitted, followed,
//! classified and retried; one `squeue` (and `sacct` for ended jobs) per
//! poll interval for every job in flight.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nas_plugin_api::{EvalOutcome, EvalRequest, Evaluator, PluginError};

use super::job::{self, Expected, JobRequest, JobResult, FORMAT, OUTPUT_FILE, REQUEST_FILE};
use super::table::{Attempt, AttemptState, JobFault, JobTable};
use super::{infra, ExecutorError, Settings, INTERRUPTED};
use crate::config::LoadedConfig;
use crate::slurm::{JobId, JobSpec, JobState, JobStatus, Slurm, SlurmError};

/// Evaluations as Slurm jobs, for one run: make its evaluators with
/// [`SlurmExecutor::evaluators`].
#[derive(Clone)]
pub struct SlurmExecutor {
    inner: Arc<Cluster>,
}

pub(super) struct Cluster {
    slurm: Slurm,
    settings: Settings,
    run_dir: PathBuf,
    config_dir: PathBuf,
    plugins: Vec<PathBuf>,
    /// Part of every job name: this run's, so that names are unique across
    /// runs sharing a cluster.
    tag: String,
    table: Mutex<JobTable>,
    tracker: Tracker,
    interrupt: Arc<AtomicBool>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SlurmExecutor {
    /// The executor of the run in `run_dir`, whose config is `loaded`;
    /// `plugins` are the libraries the nodes load; `interrupt` is the
    /// Ctrl-C flag.
    pub fn new(
        loaded: &LoadedConfig,
        run_dir: &Path,
        plugins: Vec<PathBuf>,
        interrupt: Arc<AtomicBool>,
    ) -> Result<SlurmExecutor, ExecutorError> {
        let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
        let (settings, slurm) = Settings::resolve(loaded, &run_dir)?;
        let config_dir = std::path::absolute(&loaded.dir).unwrap_or_else(|_| loaded.dir.clone());
        let created = crate::store::Store::open(&run_dir)?.meta("created_at")?.unwrap_or_default();
        let tag = job::sha256(&format!("{}|{created}", run_dir.display()))[..8].to_string();
        let table = JobTable::open(&run_dir)?;
        let tracker = Tracker::new(slurm.clone(), settings.poll_interval);
        Ok(SlurmExecutor {
            inner: Arc::new(Cluster {
                slurm,
                settings,
                run_dir,
                config_dir,
                plugins,
                tag,
                table: Mutex::new(table),
                tracker,
                interrupt,
            }),
        })
    }

    /// One evaluator per job in flight (`[executor] jobs`).
    pub fn evaluators(&self) -> Vec<Box<dyn Evaluator>> {
        (0..self.inner.settings.jobs)
            .map(|_| Box::new(SlurmEvaluator { cluster: self.inner.clone() }) as Box<dyn Evaluator>)
            .collect()
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The Slurm client.
    pub fn slurm(&self) -> &Slurm {
        &self.inner.slurm
    }

    /// The job name of an attempt at evaluating `code` as `candidate_id`.
    pub fn job_name(&self, candidate_id: &str, code: &str, attempt: u32) -> String {
        self.inner.job_name(candidate_id, &job::sha256(code), attempt)
    }

    /// The prefix every job name of this run starts with.
    pub fn name_prefix(&self) -> String {
        format!("nas-{}-", self.inner.tag)
    }

    /// The folder of an attempt's files.
    pub fn attempt_dir(&self, candidate_id: &str, code: &str, attempt: u32) -> PathBuf {
        self.inner.attempt_dir(candidate_id, &job::sha256(code), attempt)
    }

    /// The batch script of a job that runs `nas eval-job DIR`.
    pub fn script(&self, dir: &Path) -> String {
        self.inner.script(dir, false)
    }

    pub(super) fn cluster(&self) -> &Arc<Cluster> {
        &self.inner
    }
}

/// One evaluator of the pool: evaluations run as jobs, one at a time per
/// instance.
struct SlurmEvaluator {
    cluster: Arc<Cluster>,
}

impl Evaluator for SlurmEvaluator {
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        self.cluster.evaluate(request)
    }
}

/// How a followed job ended.
enum Ended {
    /// Its result, checked.
    Result(Box<JobResult>),
    /// Without a usable result.
    Fault(JobFault, String),
}

/// Quotes a path for `sh`.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// A candidate id as part of a file or job name.
fn plain(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .take(64)
        .collect()
}

fn store_error(e: crate::store::StoreError) -> PluginError {
    infra(format!("the run store's job table: {e}"))
}

impl Cluster {
    fn table(&self) -> MutexGuard<'_, JobTable> {
        locked(&self.table)
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    pub(super) fn job_name(&self, candidate_id: &str, sha: &str, attempt: u32) -> String {
        format!("nas-{}-{}-{}-{attempt}", self.tag, plain(candidate_id), job::short(sha))
    }

    pub(super) fn attempt_dir(&self, candidate_id: &str, sha: &str, attempt: u32) -> PathBuf {
        self.settings
            .shared_dir
            .join(format!("{}-{}", plain(candidate_id), job::short(sha)))
            .join(format!("attempt-{attempt}"))
    }

    pub(super) fn script(&self, dir: &Path, probe: bool) -> String {
        format!(
            "#!/bin/sh\n# nas: {} for the run {}\nexec {} eval-job {}{}\n",
            if probe { "the probe job" } else { "one evaluation" },
            self.run_dir.display(),
            sh_quote(&self.settings.nas_command),
            if probe { "--probe " } else { "" },
            sh_quote(dir)
        )
    }

    /// A job spec for `dir` named `name`.
    pub(super) fn spec(&self, dir: &Path, name: &str, probe: bool) -> JobSpec {
        JobSpec {
            script: self.script(dir, probe),
            name: Some(name.to_string()),
            output: Some(dir.join(OUTPUT_FILE)),
            working_dir: Some(dir.to_path_buf()),
            ..self.settings.spec.clone()
        }
    }

    pub(super) fn slurm(&self) -> &Slurm {
        &self.slurm
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(super) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub(super) fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub(super) fn plugins(&self) -> &[PathBuf] {
        &self.plugins
    }

    pub(super) fn tag(&self) -> &str {
        &self.tag
    }

    pub(super) fn is_interrupted(&self) -> bool {
        self.interrupted()
    }

    /// How often a job's folder is looked at, between two polls.
    pub(super) fn tick(&self) -> Duration {
        (self.settings.poll_interval / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Evaluates one candidate: an open attempt of an earlier host is
    /// followed again; otherwise attempts are submitted until one gives a
    /// result or `max_attempts` fail.
    fn evaluate(&self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        let sha = job::sha256(&request.source);
        let mut history = self.table().attempts(&request.candidate_id, &sha).map_err(store_error)?;
        let mut faults = 0u32;
        if let Some(mut last) = history.pop() {
            if last.state.is_open() || last.state == AttemptState::Done {
                if let Some(ended) = self.reattach(&mut last)? {
                    if let Some(outcome) = self.conclude(&mut last, ended, &history)? {
                        return Ok(outcome);
                    }
                    faults += 1;
                }
            }
            history.push(last);
        }
        loop {
            if faults >= self.settings.max_attempts {
                return Err(self.exhausted(request, &history, faults));
            }
            if faults > 0 {
                self.pause(self.settings.retry_delay)?;
            }
            let number = history.last().map_or(1, |a| a.attempt + 1);
            let mut attempt = self.new_attempt(request, &sha, number)?;
            let ended = match self.submit(&mut attempt)? {
                Some(fault) => Ended::Fault(fault.0, fault.1),
                None => self.follow(&mut attempt)?,
            };
            if let Some(outcome) = self.conclude(&mut attempt, ended, &history)? {
                return Ok(outcome);
            }
            faults += 1;
            history.push(attempt);
        }
    }

    /// Sleeps, unless Ctrl-C comes first.
    fn pause(&self, d: Duration) -> Result<(), PluginError> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.interrupted() {
                return Err(PluginError::new(
                    nas_plugin_api::ErrorCode::Unknown,
                    format!("{INTERRUPTED} (before submitting)"),
                ));
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        Ok(())
    }

    /// Writes the attempt's folder and request, and its row (before
    /// `sbatch` runs).
    fn new_attempt(&self, request: &EvalRequest, sha: &str, number: u32) -> Result<Attempt, PluginError> {
        let dir = self.attempt_dir(&request.candidate_id, sha, number);
        // The folder holds the attempt's nonce: only this user reads it.
        let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir);
        made.map_err(|e| infra(format!("cannot create the job folder {}: {e}", dir.display())))?;
        let nonce = job::nonce();
        let job_request = JobRequest {
            format: FORMAT,
            nonce: nonce.clone(),
            run_dir: self.run_dir.clone(),
            config_dir: self.config_dir.clone(),
            plugins: self.plugins.clone(),
            request: request.clone(),
        };
        let path = dir.join(REQUEST_FILE);
        let bytes =
            serde_json::to_vec(&job_request).map_err(|e| infra(format!("cannot write {}: {e}", path.display())))?;
        job::write_atomically(&path, &bytes).map_err(|e| infra(format!("cannot write {}: {e}", path.display())))?;
        let attempt = Attempt {
            candidate_id: request.candidate_id.clone(),
            iteration: request.candidate_id.strip_prefix("iteration-").and_then(|n| n.parse().ok()),
            code_sha256: sha.to_string(),
            attempt: number,
            name: self.job_name(&request.candidate_id, sha, number),
            nonce,
            dir,
            job_id: None,
            state: AttemptState::Submitting,
            fault: None,
            detail: String::new(),
            slurm_state: None,
            node: None,
            submitted_at: crate::time::now_s(),
            ended_at: None,
        };
        self.table().insert(&attempt).map_err(store_error)?;
        Ok(attempt)
    }

    fn save(&self, a: &Attempt) -> Result<(), PluginError> {
        self.table().update(a).map_err(store_error)
    }

    /// Submits an attempt; `Some(fault)` when Slurm did not take it.
    fn submit(&self, a: &mut Attempt) -> Result<Option<(JobFault, String)>, PluginError> {
        match self.slurm.submit(&self.spec(&a.dir, &a.name, false)) {
            Ok(id) => {
                a.job_id = Some(id.0);
                a.state = AttemptState::Submitted;
                self.save(a)?;
                Ok(None)
            }
            Err(SlurmError::Refused { message }) => Ok(Some((JobFault::Refused, message))),
            Err(SlurmError::Unavailable { message, .. }) => Ok(Some((JobFault::Unavailable, message))),
            Err(e @ SlurmError::CommandMissing { .. }) => Err(PluginError::config(e.to_string())),
            // sbatch may have queued the job before it went wrong: its
            // unique name tells.
            Err(e) => match self.find_by_name(a) {
                Ok(true) => Ok(None),
                Ok(false) => Ok(Some((JobFault::Unavailable, e.to_string()))),
                Err(_) => Ok(Some((JobFault::Unavailable, e.to_string()))),
            },
        }
    }

    /// Looks for the attempt's job by its name; records its id when found.
    fn find_by_name(&self, a: &mut Attempt) -> Result<bool, SlurmError> {
        let within = Duration::from_secs_f64((crate::time::now_s() - a.submitted_at).max(0.0) + 600.0);
        let found = self.slurm.jobs_named(&a.name, within)?;
        match found.keys().max() {
            Some(id) => {
                a.job_id = Some(id.0);
                a.state = AttemptState::Submitted;
                self.table().update(a).map_err(|e| SlurmError::Io {
                    command: "run store".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Follows an attempt an earlier host left open (or whose result it
    /// read without recording the outcome); `None` when it never reached
    /// Slurm.
    fn reattach(&self, a: &mut Attempt) -> Result<Option<Ended>, PluginError> {
        let expected = Expected { nonce: &a.nonce, candidate_id: &a.candidate_id, code_sha256: &a.code_sha256 };
        if let Ok(Some(result)) = job::read_result(&a.dir, &expected) {
            return Ok(Some(Ended::Result(Box::new(result))));
        }
        if a.job_id.is_none() {
            let found = self.find_by_name(a).map_err(|e| {
                infra(format!("cannot ask Slurm whether the job {} of {} exists: {e}", a.name, a.candidate_id))
            })?;
            if !found {
                a.state = AttemptState::Lost;
                a.detail = "the host stopped before sbatch answered, and no job has its name".into();
                a.ended_at = Some(crate::time::now_s());
                self.save(a)?;
                return Ok(None);
            }
        }
        eprintln!("{}: following Slurm job {} again (attempt {})", a.candidate_id, a.job_id.unwrap_or(0), a.attempt);
        self.follow(a).map(Some)
    }

    /// Records how an attempt ended; the outcome when it has one.
    fn conclude(&self, a: &mut Attempt, ended: Ended, history: &[Attempt]) -> Result<Option<EvalOutcome>, PluginError> {
        a.ended_at = Some(crate::time::now_s());
        let (fault, detail) = match ended {
            Ended::Result(result) => match *result {
                JobResult { outcome: Some(outcome), node, .. } => {
                    a.state = AttemptState::Done;
                    a.node = Some(node);
                    self.save(a)?;
                    return Ok(Some(self.with_history(outcome, a, history)));
                }
                JobResult { error, node, .. } => {
                    a.node = Some(node.clone());
                    let error = error.map_or_else(|| "no outcome".to_string(), |e| e.to_string());
                    (JobFault::EvaluatorError, format!("the evaluator on {node} failed: {error}"))
                }
            },
            Ended::Fault(fault, detail) => (fault, detail),
        };
        a.state = AttemptState::Fault;
        a.fault = Some(fault);
        a.detail = detail;
        self.save(a)?;
        eprintln!(
            "{}: attempt {}{} on Slurm ended without a result: {fault}: {}",
            a.candidate_id,
            a.attempt,
            a.job_id.map(|j| format!(" (job {j})")).unwrap_or_default(),
            a.detail
        );
        Ok(None)
    }

    /// An outcome with its jobs' story in the report (`extra.slurm`): the
    /// job, its node, the attempt and the faults before it.
    fn with_history(&self, outcome: EvalOutcome, a: &Attempt, history: &[Attempt]) -> EvalOutcome {
        let EvalOutcome::Ok(mut report) = outcome else { return outcome };
        let faults: Vec<serde_json::Value> = history
            .iter()
            .filter(|h| h.state == AttemptState::Fault)
            .map(|h| {
                serde_json::json!({
                    "attempt": h.attempt, "job_id": h.job_id, "fault": h.fault,
                    "detail": nas_plugin_api::text::truncate_chars(&h.detail, 300),
                })
            })
            .collect();
        report.extra.insert(
            "slurm".into(),
            serde_json::json!({"job_id": a.job_id, "node": a.node, "attempt": a.attempt, "faults": faults}),
        );
        EvalOutcome::Ok(report)
    }

    fn exhausted(&self, request: &EvalRequest, history: &[Attempt], faults: u32) -> PluginError {
        let failed: Vec<&Attempt> = history.iter().filter(|a| a.state == AttemptState::Fault).collect();
        let recent: Vec<String> = failed[failed.len().saturating_sub(faults as usize)..]
            .iter()
            .map(|a| {
                format!(
                    "attempt {}{}: {}: {}",
                    a.attempt,
                    a.job_id.map(|j| format!(" (job {j})")).unwrap_or_default(),
                    a.fault.map_or("?", JobFault::as_str),
                    nas_plugin_api::text::truncate_chars(&a.detail, 300)
                )
            })
            .collect();
        infra(format!(
            "{}: {faults} attempts on Slurm ended without a result ({}); the attempts are in the run store's slurm_jobs table. \
             Fix the cause, then `nas resume` submits it again",
            request.candidate_id,
            recent.join("; ")
        ))
    }

    /// Cancels an attempt's job on Ctrl-C and says so.
    fn cancel(&self, a: &mut Attempt) -> PluginError {
        if let Some(id) = a.job_id {
            match self.slurm.cancel(&[JobId(id)]) {
                Ok(()) => eprintln!("{}: cancelled Slurm job {id}", a.candidate_id),
                Err(e) => eprintln!("{}: could not cancel Slurm job {id}: {e}", a.candidate_id),
            }
        }
        a.state = AttemptState::Interrupted;
        a.ended_at = Some(crate::time::now_s());
        let _ = self.save(a);
        PluginError::new(
            nas_plugin_api::ErrorCode::Unknown,
            format!("{INTERRUPTED} {} of {}", a.job_id.unwrap_or(0), a.candidate_id),
        )
    }

    /// Follows a submitted attempt until its result is there or its job
    /// ended without one.
    fn follow(&self, a: &mut Attempt) -> Result<Ended, PluginError> {
        let id = JobId(a.job_id.ok_or_else(|| infra(format!("{}: no job to follow", a.name)))?);
        let _tracked = self.tracker.track(id);
        let nonce = a.nonce.clone();
        let (candidate, sha) = (a.candidate_id.clone(), a.code_sha256.clone());
        let expected = Expected { nonce: &nonce, candidate_id: &candidate, code_sha256: &sha };
        let vanish_grace = (self.settings.poll_interval * 3).max(Duration::from_secs(30));
        let mut polled: Option<Instant> = None;
        let mut unreachable: Option<Instant> = None;
        let mut unknown: Option<Instant> = None;
        let mut ended: Option<(Instant, Option<JobStatus>)> = None;
        let mut ran = false;
        loop {
            if self.interrupted() {
                return Err(self.cancel(a));
            }
            match job::read_result(&a.dir, &expected) {
                Ok(Some(result)) => return Ok(Ended::Result(Box::new(result))),
                Ok(None) => {}
                Err(why) => {
                    let _ = self.slurm.cancel(&[id]);
                    return Ok(Ended::Fault(JobFault::ResultInvalid, why));
                }
            }
            if let Some((since, status)) = &ended {
                let completed = status.as_ref().is_some_and(|s| s.state == JobState::Completed) || status.is_none();
                let wait = if completed {
                    self.settings.result_wait
                } else {
                    self.settings.result_wait.min(Duration::from_secs(2))
                };
                if since.elapsed() >= wait {
                    // The accounting database may know more by now (the
                    // exit code, who cancelled it).
                    let last = status.as_ref().map(|s| {
                        self.slurm
                            .status(id)
                            .ok()
                            .flatten()
                            .filter(|n| n.state.is_finished())
                            .unwrap_or_else(|| s.clone())
                    });
                    if let Some(s) = &last {
                        self.note(a, s, &mut ran)?;
                    }
                    return Ok(match &last {
                        Some(s) => self.classify(s, &a.dir),
                        None => Ended::Fault(
                            JobFault::Vanished,
                            format!("neither squeue nor sacct knows job {id} any more, and it left no result"),
                        ),
                    });
                }
            } else if polled.is_none_or(|t| t.elapsed() >= self.settings.poll_interval) {
                polled = Some(Instant::now());
                match self.tracker.status(id) {
                    Err(e) => {
                        let since = *unreachable.get_or_insert_with(|| {
                            eprintln!("warning: Slurm does not answer about job {id} ({e}); asking again");
                            Instant::now()
                        });
                        if since.elapsed() >= self.settings.controller_timeout {
                            return Err(infra(format!(
                                "Slurm has not answered for {} s about job {id} of {} (last: {e}); the job goes on, and `nas resume` follows it again",
                                self.settings.controller_timeout.as_secs(),
                                a.candidate_id
                            )));
                        }
                    }
                    Ok(None) => {
                        unreachable = None;
                        if unknown.get_or_insert_with(Instant::now).elapsed() >= vanish_grace {
                            ended = Some((Instant::now(), None));
                        }
                    }
                    Ok(Some(s)) => {
                        unreachable = None;
                        unknown = None;
                        self.note(a, &s, &mut ran)?;
                        if s.state.is_finished() {
                            ended = Some((Instant::now(), Some(s)));
                        } else if s.state == JobState::RequeueHold {
                            let _ = self.slurm.cancel(&[id]);
                            return Ok(Ended::Fault(
                                JobFault::Ended,
                                format!("Slurm requeued job {id} and holds it ({})", s.reason.unwrap_or_default()),
                            ));
                        }
                    }
                }
            }
            std::thread::sleep(self.tick());
        }
    }

    /// Records what Slurm says of a job when it changed; a job seen running
    /// and then queued again was requeued (by Slurm, with `requeue = true`).
    fn note(&self, a: &mut Attempt, s: &JobStatus, ran: &mut bool) -> Result<(), PluginError> {
        let state = s.state.name().to_string();
        let requeued = matches!(s.state, JobState::Requeued | JobState::RequeueFed)
            || (*ran && matches!(s.state, JobState::Pending | JobState::Configuring));
        if requeued && *ran {
            *ran = false;
            let note = format!("requeued by Slurm ({})", s.reason.clone().unwrap_or_else(|| state.clone()));
            a.detail = if a.detail.is_empty() { note } else { format!("{}; {note}", a.detail) };
            eprintln!("{}: Slurm job {} was requeued; still following it", a.candidate_id, s.id);
        }
        if s.state == JobState::Running {
            *ran = true;
        }
        let changed = a.slurm_state.as_deref() != Some(state.as_str()) || (s.nodes.is_some() && a.node != s.nodes);
        if changed {
            a.slurm_state = Some(state);
            if s.nodes.is_some() {
                a.node = s.nodes.clone();
            }
            self.save(a)?;
        }
        Ok(())
    }

    /// The fault of a job that ended without a result.
    fn classify(&self, s: &JobStatus, dir: &Path) -> Ended {
        let tail = job::output_tail(dir, 400);
        let output = if tail.is_empty() { String::new() } else { format!("; its output ends: {tail}") };
        let exit = s.exit_code.map(|e| format!(" (exit {e})")).unwrap_or_default();
        let on = s.nodes.as_deref().map(|n| format!(" on {n}")).unwrap_or_default();
        let limit = self.settings.spec.time_limit.map(crate::slurm::format_time_limit).unwrap_or_default();
        let (fault, detail) = match &s.state {
            JobState::Completed => (
                JobFault::ResultMissing,
                format!(
                    "job {} completed{on} but no result appeared in {} within {} s{output}",
                    s.id,
                    dir.display(),
                    self.settings.result_wait.as_secs()
                ),
            ),
            JobState::Failed => {
                (JobFault::JobFailed, format!("job {} failed{exit}{on} without a result{output}", s.id))
            }
            JobState::Cancelled => (
                JobFault::Cancelled,
                match s.cancelled_by {
                    Some(uid) => format!("job {} was cancelled by uid {uid}", s.id),
                    None => format!("job {} was cancelled", s.id),
                },
            ),
            JobState::Timeout => (JobFault::TimeLimit, format!("job {} ran past its time limit {limit}{on}", s.id)),
            JobState::Preempted => (JobFault::Preempted, format!("job {} was preempted{on}", s.id)),
            JobState::NodeFail | JobState::BootFail => {
                (JobFault::NodeFailure, format!("job {} ended {}: its node failed{on}", s.id, s.state))
            }
            JobState::OutOfMemory => (
                JobFault::OutOfMemory,
                format!(
                    "job {} ran past its memory{}{on}",
                    s.id,
                    self.settings.spec.memory_mb.map(|m| format!(" (--mem={m}M)")).unwrap_or_default()
                ),
            ),
            JobState::Deadline
            | JobState::Revoked
            | JobState::SpecialExit
            | JobState::Pending
            | JobState::Configuring
            | JobState::Running
            | JobState::Completing
            | JobState::Suspended
            | JobState::Stopped
            | JobState::Requeued
            | JobState::RequeueHold
            | JobState::RequeueFed
            | JobState::ResvDelHold
            | JobState::Resizing
            | JobState::Signaling
            | JobState::StageOut
            | JobState::Other(_) => (JobFault::Ended, format!("job {} ended {}{exit}{on}{output}", s.id, s.state)),
        };
        Ended::Fault(fault, detail)
    }
}

/// What Slurm says of every job in flight, asked once per poll interval
/// for all of them.
struct Tracker {
    slurm: Slurm,
    interval: Duration,
    state: Arc<Mutex<Tracked>>,
}

struct Tracked {
    /// Jobs followed, and since when.
    live: BTreeMap<JobId, Instant>,
    /// When Slurm was last asked, and its answer.
    asked: Option<Instant>,
    answer: Result<BTreeMap<JobId, JobStatus>, String>,
}

impl Default for Tracked {
    fn default() -> Self {
        Tracked { live: BTreeMap::new(), asked: None, answer: Ok(BTreeMap::new()) }
    }
}

/// Stops tracking a job when dropped.
struct Untrack {
    state: Arc<Mutex<Tracked>>,
    id: JobId,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        locked(&self.state).live.remove(&self.id);
    }
}

impl Tracker {
    fn new(slurm: Slurm, interval: Duration) -> Tracker {
        Tracker { slurm, interval, state: Arc::new(Mutex::new(Tracked::default())) }
    }

    fn track(&self, id: JobId) -> Untrack {
        locked(&self.state).live.insert(id, Instant::now());
        Untrack { state: self.state.clone(), id }
    }

    /// The job's status: from the last answer when it is fresh and newer
    /// than the job's tracking, else from asking Slurm about every tracked
    /// job at once.
    fn status(&self, id: JobId) -> Result<Option<JobStatus>, String> {
        let mut st = locked(&self.state);
        let since = st.live.get(&id).copied().unwrap_or_else(Instant::now);
        let fresh = st.asked.is_some_and(|t| t >= since && t.elapsed() < self.interval);
        if !fresh {
            let mut ids: Vec<JobId> = st.live.keys().copied().collect();
            if !ids.contains(&id) {
                ids.push(id);
            }
            st.answer = self.slurm.statuses(&ids).map_err(|e| e.to_string());
            st.asked = Some(Instant::now());
        }
        st.answer.as_ref().map(|m| m.get(&id).cloned()).map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scripts_are_safe_for_slurm_and_sh() {
        assert_eq!(plain("iteration-12"), "iteration-12");
        assert_eq!(plain("a b,c/d"), "a_b_c_d");
        assert_eq!(sh_quote(Path::new("/x/it's here")), "'/x/it'\\''s here'");
    }
}
