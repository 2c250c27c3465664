//! A client for a Slurm cluster, through Slurm's own commands.
//!
//! [`Slurm`] runs `sbatch --parsable` to submit a [`JobSpec`] (the batch
//! script goes to `sbatch` on its standard input), `squeue` and
//! `sacct --parsable2` to learn each job's [`JobState`], `scancel` to cancel,
//! and `sinfo` to list the nodes. Every answer is typed: a job is a
//! [`JobId`], its state a [`JobStatus`] with the reason Slurm gives and, once
//! it has ended, its [`ExitCode`]. Failures are a [`SlurmError`]: a command
//! that is not installed, a submission Slurm refused (with Slurm's message),
//! a controller that cannot be reached, output that cannot be parsed.
//!
//! The controller forgets a finished job `MinJobAge` seconds after it ends
//! (300 by default); [`Slurm::statuses`] then asks the accounting database
//! (`sacct`) instead, and it also takes a finished job's exit code and final
//! state from there. While a job is queued or running the controller's
//! answer wins: the database lags behind it (by a second or two, and it does
//! not know a job submitted a moment ago). On a cluster without accounting
//! the controller's answer is all there is.
//!
//! The commands' paths can be replaced ([`SlurmCommands`]), for sites that
//! wrap them, and every command can be given extra environment variables
//! (for example `SLURM_CONF`).
//!
//! ```no_run
//! use std::time::Duration;
//! use nas_host::slurm::{JobSpec, Slurm};
//!
//! # fn main() -> Result<(), nas_host::slurm::SlurmError> {
//! let slurm = Slurm::default();
//! let mut spec = JobSpec::new("#!/bin/sh\nnas eval candidate.json\n");
//! spec.partition = Some("gpu".into());
//! spec.gres = Some("gpu:1".into());
//! spec.time_limit = Some(Duration::from_secs(30 * 60));
//! let id = slurm.submit(&spec)?;
//! if let Some(status) = slurm.status(id)? {
//!     println!("job {id}: {}", status.state);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A Slurm job id (the number `sbatch --parsable` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(JobId)
    }
}

/// A job's state, as `squeue` (`%T`) and `sacct` (`State`) name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for resources, a dependency, its begin time, priority...
    Pending,
    /// Allocated, its nodes are booting or being set up.
    Configuring,
    /// Running.
    Running,
    /// Ended; processes on its nodes are still being cleaned up.
    Completing,
    /// Suspended (by an administrator or gang scheduling).
    Suspended,
    /// Stopped by a signal (SIGSTOP); still holds its resources.
    Stopped,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code or another failure.
    Failed,
    /// Cancelled by a user or administrator (`scancel`).
    Cancelled,
    /// Killed at its time limit.
    Timeout,
    /// Preempted by a job of higher priority (and not requeued).
    Preempted,
    /// Put back in the queue (by `scontrol requeue`, a node failure or
    /// preemption); it runs again under the same id.
    Requeued,
    /// Requeued and held.
    RequeueHold,
    /// Requeued by a federation.
    RequeueFed,
    /// Killed because a node it ran on failed.
    NodeFail,
    /// Killed for exceeding its memory limit.
    OutOfMemory,
    /// Its nodes failed to boot.
    BootFail,
    /// Not started (or not ended) before its `--deadline`.
    Deadline,
    /// Held because its reservation was deleted.
    ResvDelHold,
    /// Changing size.
    Resizing,
    /// Removed because a sibling job of a federation started.
    Revoked,
    /// Being sent a signal.
    Signaling,
    /// Ended with the special exit code that requeues it held.
    SpecialExit,
    /// Staging data out.
    StageOut,
    /// A state this client does not know (a newer Slurm), as Slurm wrote it.
    Other(String),
}

impl JobState {
    /// Parses a state as `squeue` or `sacct` write it: `CANCELLED by 1000`
    /// is [`JobState::Cancelled`] (the uid is read by [`parse_cancelled_by`]),
    /// a `+` that marks a truncated name is ignored.
    pub fn parse(text: &str) -> JobState {
        let word = text.split_whitespace().next().unwrap_or("").trim_end_matches('+');
        match word {
            "PENDING" | "PD" => JobState::Pending,
            "CONFIGURING" | "CF" => JobState::Configuring,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETING" | "CG" => JobState::Completing,
            "SUSPENDED" | "S" => JobState::Suspended,
            "STOPPED" | "ST" => JobState::Stopped,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "REQUEUED" | "RQ" => JobState::Requeued,
            "REQUEUE_HOLD" | "RH" => JobState::RequeueHold,
            "REQUEUE_FED" | "RF" => JobState::RequeueFed,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "BOOT_FAIL" | "BF" => JobState::BootFail,
            "DEADLINE" | "DL" => JobState::Deadline,
            "RESV_DEL_HOLD" | "RD" => JobState::ResvDelHold,
            "RESIZING" | "RS" => JobState::Resizing,
            "REVOKED" | "RV" => JobState::Revoked,
            "SIGNALING" | "SI" => JobState::Signaling,
            "SPECIAL_EXIT" | "SE" => JobState::SpecialExit,
            "STAGE_OUT" | "SO" => JobState::StageOut,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Slurm's name for the state.
    pub fn name(&self) -> &str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Suspended => "SUSPENDED",
            JobState::Stopped => "STOPPED",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::Preempted => "PREEMPTED",
            JobState::Requeued => "REQUEUED",
            JobState::RequeueHold => "REQUEUE_HOLD",
            JobState::RequeueFed => "REQUEUE_FED",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::ResvDelHold => "RESV_DEL_HOLD",
            JobState::Resizing => "RESIZING",
            JobState::Revoked => "REVOKED",
            JobState::Signaling => "SIGNALING",
            JobState::SpecialExit => "SPECIAL_EXIT",
            JobState::StageOut => "STAGE_OUT",
            JobState::Other(name) => name,
        }
    }

    /// Whether the job has ended for good: it will not run (again) under
    /// this id. A requeued job has not ended, nor has one still completing.
    /// An unknown state counts as not ended (ask again later).
    pub fn is_finished(&self) -> bool {
        match self {
            JobState::Completed
            | JobState::Failed
            | JobState::Cancelled
            | JobState::Timeout
            | JobState::Preempted
            | JobState::NodeFail
            | JobState::OutOfMemory
            | JobState::BootFail
            | JobState::Deadline
            | JobState::Revoked
            | JobState::SpecialExit => true,
            JobState::Pending
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
            | JobState::Other(_) => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The uid in `sacct`'s `CANCELLED by 1000`, if the text has one.
pub fn parse_cancelled_by(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(_), Some("by"), Some(uid)) => uid.parse().ok(),
        _ => None,
    }
}

/// A finished job's exit code as `sacct` reports it (`3:0`): the batch
/// script's exit code, and the signal that ended it (0 when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitCode {
    /// The exit code of the batch script.
    pub code: i32,
    /// The signal that killed it, 0 when none.
    pub signal: i32,
}

impl FromStr for ExitCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (code, signal) = s.trim().split_once(':').ok_or_else(|| "expected CODE:SIGNAL".to_string())?;
        Ok(ExitCode {
            code: code.parse().map_err(|e| format!("exit code {code:?}: {e}"))?,
            signal: signal.parse().map_err(|e| format!("signal {signal:?}: {e}"))?,
        })
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.code, self.signal)
    }
}

/// Where a [`JobStatus`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSource {
    /// The controller (`squeue`): the job is queued, running, or ended
    /// moments ago.
    Queue,
    /// The accounting database (`sacct`).
    Accounting,
}

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Slurm's reason (why it is pending, why it ended: `Resources`,
    /// `Dependency`, `TimeLimit`, `NonZeroExitCode`...); `None` when Slurm
    /// says `None`.
    pub reason: Option<String>,
    /// The exit code, once the job has ended and the accounting database
    /// knows it.
    pub exit_code: Option<ExitCode>,
    /// The uid that cancelled it (`CANCELLED by UID`), when known.
    pub cancelled_by: Option<u32>,
    /// The nodes it runs or ran on, in Slurm's notation (`node[01-04]`).
    pub nodes: Option<String>,
    /// Which command answered.
    pub source: StatusSource,
}

/// A job to submit with [`Slurm::submit`]. Options left `None` are not
/// passed, so the cluster's defaults (and `SBATCH_*` variables) apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// The batch script, from `#!` on; `#SBATCH` lines in it work as usual
    /// (options on the command line win over them).
    pub script: String,
    /// `--job-name`.
    pub name: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`; Slurm rounds it up to whole minutes, one at least.
    pub time_limit: Option<Duration>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// `--mem`, in megabytes.
    pub memory_mb: Option<u64>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--output` (Slurm's patterns such as `%j` work).
    pub output: Option<PathBuf>,
    /// `--error`; without it stderr goes to the output file.
    pub error: Option<PathBuf>,
    /// `--chdir`, the job's working directory.
    pub working_dir: Option<PathBuf>,
    /// Variables set in the job's environment (given to `sbatch`, which
    /// passes its environment on to the job under Slurm's default
    /// `--export=ALL`).
    pub env: BTreeMap<String, String>,
    /// `--requeue` (`Some(true)`) or `--no-requeue` (`Some(false)`): whether
    /// Slurm may run the job again after a node failure or preemption.
    pub requeue: Option<bool>,
    /// More `sbatch` options, passed last (so they win over the above).
    pub extra_args: Vec<String>,
}

impl JobSpec {
    /// A job that runs `script`, with every option left to the cluster.
    pub fn new(script: impl Into<String>) -> Self {
        JobSpec { script: script.into(), ..JobSpec::default() }
    }

    /// The `sbatch` arguments for this job (the script goes on stdin).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--parsable".into()];
        let mut option = |name: &str, value: Option<OsString>| {
            if let Some(value) = value {
                let mut arg = OsString::from(format!("--{name}="));
                arg.push(value);
                args.push(arg);
            }
        };
        option("job-name", self.name.as_ref().map(Into::into));
        option("partition", self.partition.as_ref().map(Into::into));
        option("account", self.account.as_ref().map(Into::into));
        option("qos", self.qos.as_ref().map(Into::into));
        option("time", self.time_limit.map(|t| format_time_limit(t).into()));
        option("gres", self.gres.as_ref().map(Into::into));
        option("mem", self.memory_mb.map(|mb| format!("{mb}M").into()));
        option("cpus-per-task", self.cpus_per_task.map(|n| n.to_string().into()));
        option("output", self.output.as_ref().map(|p| p.as_os_str().to_owned()));
        option("error", self.error.as_ref().map(|p| p.as_os_str().to_owned()));
        option("chdir", self.working_dir.as_ref().map(|p| p.as_os_str().to_owned()));
        match self.requeue {
            Some(true) => args.push("--requeue".into()),
            Some(false) => args.push("--no-requeue".into()),
            None => {}
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }
}

/// A time limit in Slurm's `days-hours:minutes:seconds`.
pub fn format_time_limit(limit: Duration) -> String {
    let s = limit.as_secs();
    format!("{}-{:02}:{:02}:{:02}", s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60)
}

/// One node as `sinfo --Node` lists it (a node in several partitions is
/// listed once per partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its state as `sinfo` writes it (`idle`, `mixed`, `allocated`,
    /// `down*`, `drained`...; a `*` means it does not answer).
    pub state: String,
    /// CPUs allocated.
    pub cpus_allocated: u32,
    /// CPUs idle.
    pub cpus_idle: u32,
    /// CPUs in total.
    pub cpus_total: u32,
    /// Its generic resources (`gpu:4`, `gpu:a100:8(S:0-1)`), `None` when it
    /// has none.
    pub gres: Option<String>,
    /// The partition (without the `*` that marks the default one).
    pub partition: String,
    /// Whether that partition is the default one.
    pub default_partition: bool,
}

impl NodeInfo {
    /// Whether the node can take jobs now (up, answering, not drained).
    pub fn is_usable(&self) -> bool {
        let state = self.state.as_str();
        !state.ends_with('*') && ["idle", "mixed", "allocated", "completing"].iter().any(|s| state.starts_with(s))
    }
}

/// What can go wrong talking to Slurm.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The command is not installed (or not on `PATH`).
    #[error("`{}` not found: is Slurm's client installed and on PATH? (set its path in the Slurm settings if it has another name)", .command.display())]
    CommandMissing {
        /// The command as configured.
        command: PathBuf,
    },
    /// The command could not be started, or its output not read.
    #[error("cannot run `{}`: {source}", .command.display())]
    Io {
        /// The command.
        command: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The command did not finish in time (it was killed).
    #[error("`{}` did not answer within {} s", .command.display(), .timeout.as_secs())]
    TimedOut {
        /// The command.
        command: PathBuf,
        /// The limit it ran into.
        timeout: Duration,
    },
    /// Slurm refused the job (bad partition, account, QoS, resources that
    /// no node has, limits...). Submitting it again will not help.
    #[error("Slurm refused the job: {message}")]
    Refused {
        /// Slurm's message, e.g. `Invalid partition name specified`.
        message: String,
    },
    /// The controller could not be reached or is too busy; worth trying
    /// again later.
    #[error("Slurm is unavailable (`{}`): {message}", .command.display())]
    Unavailable {
        /// The command.
        command: PathBuf,
        /// Slurm's message.
        message: String,
    },
    /// The cluster keeps no accounting database (`sacct` has nothing to
    /// say). [`Slurm::statuses`] then answers from the controller alone: a
    /// job it has forgotten is missing, and no exit code is known.
    #[error("this Slurm cluster keeps no job accounting: {message}")]
    NoAccounting {
        /// Slurm's message.
        message: String,
    },
    /// The command failed in another way.
    #[error("`{}` failed ({status}): {message}", .command.display())]
    Failed {
        /// The command.
        command: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        message: String,
    },
    /// The command's output is not what this client expects.
    #[error("cannot read `{}` output {line:?}: {why}", .command.display())]
    Parse {
        /// The command.
        command: PathBuf,
        /// The line that could not be read.
        line: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The paths of Slurm's commands; each defaults to its plain name, looked
/// up on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmCommands {
    /// `sbatch`.
    pub sbatch: PathBuf,
    /// `squeue`.
    pub squeue: PathBuf,
    /// `sacct`.
    pub sacct: PathBuf,
    /// `scancel`.
    pub scancel: PathBuf,
    /// `sinfo`.
    pub sinfo: PathBuf,
}

impl Default for SlurmCommands {
    fn default() -> Self {
        SlurmCommands {
            sbatch: "sbatch".into(),
            squeue: "squeue".into(),
            sacct: "sacct".into(),
            scancel: "scancel".into(),
            sinfo: "sinfo".into(),
        }
    }
}

/// The most job ids passed to one `squeue`/`sacct`/`scancel` call.
const IDS_PER_CALL: usize = 200;

/// The fields asked of `squeue` (`-o`), `|`-separated.
const SQUEUE_FORMAT: &str = "%i|%T|%r|%N";
/// The fields asked of `sacct` (`-o`), `|`-separated by `--parsable2`.
const SACCT_FORMAT: &str = "JobID,State,ExitCode,Reason,NodeList";

/// Talks to one Slurm cluster through its commands.
#[derive(Debug, Clone)]
pub struct Slurm {
    commands: SlurmCommands,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl Default for Slurm {
    fn default() -> Self {
        Slurm::new(SlurmCommands::default())
    }
}

/// What a finished command left.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Slurm {
    /// A client using these commands, with a 60 s limit per command.
    pub fn new(commands: SlurmCommands) -> Self {
        Slurm { commands, env: Vec::new(), timeout: Duration::from_secs(60) }
    }

    /// Sets a variable in every command's environment (`SLURM_CONF` to
    /// reach a cluster whose config is not in the default place).
    #[must_use]
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The longest any one command may take before it is killed.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The commands this client runs.
    pub fn commands(&self) -> &SlurmCommands {
        &self.commands
    }

    /// Submits a job; its id once Slurm has queued it.
    pub fn submit(&self, spec: &JobSpec) -> Result<JobId, SlurmError> {
        let command = &self.commands.sbatch;
        let out = self.run(command, &spec.args(), Some(&spec.script), &spec.env)?;
        if !out.status.success() {
            let message = slurm_message(&out.stderr);
            return Err(if is_unavailable(&message) {
                SlurmError::Unavailable { command: command.clone(), message }
            } else {
                SlurmError::Refused { message }
            });
        }
        parse_sbatch(&out.stdout).map_err(|why| SlurmError::Parse {
            command: command.clone(),
            line: out.stdout.trim().to_string(),
            why,
        })
    }

    /// The status of one job; `None` when neither the controller nor the
    /// accounting database knows it.
    pub fn status(&self, id: JobId) -> Result<Option<JobStatus>, SlurmError> {
        Ok(self.statuses(&[id])?.remove(&id))
    }

    /// The status of each job Slurm knows, by id: from the controller while
    /// it has the job, with the final state and exit code from the
    /// accounting database once the job has ended, and from the database
    /// alone for a job the controller no longer lists. A job neither knows
    /// is missing from the map.
    pub fn statuses(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, SlurmError> {
        let wanted: BTreeSet<JobId> = ids.iter().copied().collect();
        let mut found = BTreeMap::new();
        for chunk in wanted.iter().copied().collect::<Vec<_>>().chunks(IDS_PER_CALL) {
            for status in self.squeue(chunk)? {
                if wanted.contains(&status.id) {
                    found.insert(status.id, status);
                }
            }
        }
        let ask_accounting: Vec<JobId> =
            wanted.iter().filter(|id| found.get(id).is_none_or(|s| s.state.is_finished())).copied().collect();
        for chunk in ask_accounting.chunks(IDS_PER_CALL) {
            let statuses = match self.sacct(chunk, false) {
                Ok(statuses) => statuses,
                // Without a database, what the controller says is all there is.
                Err(SlurmError::NoAccounting { .. }) => break,
                Err(e) => return Err(e),
            };
            for status in statuses {
                if !wanted.contains(&status.id) {
                    continue;
                }
                match found.get_mut(&status.id) {
                    // The database can lag: only an ended state it has
                    // replaces the controller's.
                    Some(queued) => {
                        if status.state.is_finished() {
                            queued.state = status.state;
                            queued.exit_code = status.exit_code;
                            queued.cancelled_by = status.cancelled_by.or(queued.cancelled_by);
                        }
                    }
                    None => {
                        found.insert(status.id, status);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The jobs named `name` (`--job-name`) that the controller holds or the
    /// accounting database recorded in the last `within`: how a client that
    /// died between `sbatch` and noting the id finds its job again, given a
    /// name unique to that submission (without commas or spaces: Slurm
    /// reads a comma as a list of names).
    pub fn jobs_named(&self, name: &str, within: Duration) -> Result<BTreeMap<JobId, JobStatus>, SlurmError> {
        let mut ids = BTreeSet::new();
        let command = &self.commands.squeue;
        let args: Vec<OsString> =
            ["--noheader".to_string(), "--states=all".to_string(), format!("--name={name}"), "--format=%i".to_string()]
                .map(OsString::from)
                .into();
        let out = self.run(command, &args, None, &BTreeMap::new())?;
        if !out.status.success() {
            return Err(self.failure(command, out.status, slurm_message(&out.stderr)));
        }
        ids.extend(out.stdout.lines().filter_map(plain_job_id));
        let command = &self.commands.sacct;
        let args: Vec<OsString> = [
            "--noheader".to_string(),
            "--parsable2".to_string(),
            "--allocations".to_string(),
            format!("--starttime=now-{}seconds", within.as_secs()),
            format!("--name={name}"),
            "--format=JobID".to_string(),
        ]
        .map(OsString::from)
        .into();
        let out = self.run(command, &args, None, &BTreeMap::new())?;
        if out.status.success() {
            ids.extend(out.stdout.lines().filter_map(plain_job_id));
        } else {
            let message = slurm_message(&out.stderr);
            if !message.contains("accounting storage is disabled") {
                return Err(self.failure(command, out.status, message));
            }
        }
        self.statuses(&ids.into_iter().collect::<Vec<_>>())
    }

    /// Every run of one job, oldest first, from the accounting database: a
    /// job requeued after a node failure has a `NODE_FAIL` (or `REQUEUED`)
    /// record and then one for the current run.
    pub fn history(&self, id: JobId) -> Result<Vec<JobStatus>, SlurmError> {
        Ok(self.sacct(&[id], true)?.into_iter().filter(|s| s.id == id).collect())
    }

    /// Cancels jobs. Jobs that already ended (or that Slurm no longer
    /// knows) are not an error.
    pub fn cancel(&self, ids: &[JobId]) -> Result<(), SlurmError> {
        let command = &self.commands.scancel;
        for chunk in ids.chunks(IDS_PER_CALL) {
            let args: Vec<OsString> = chunk.iter().map(|id| id.to_string().into()).collect();
            let out = self.run(command, &args, None, &BTreeMap::new())?;
            if !out.status.success() {
                let message = slurm_message(&out.stderr);
                let harmless = message
                    .lines()
                    .all(|l| l.contains("already completing or completed") || l.contains("Invalid job id"));
                if !harmless {
                    return Err(self.failure(command, out.status, message));
                }
            }
        }
        Ok(())
    }

    /// The cluster's nodes, one entry per node and partition.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, SlurmError> {
        let command = &self.commands.sinfo;
        let args: Vec<OsString> = ["--noheader", "--Node", "--format=%N|%T|%C|%G|%P"].map(OsString::from).into();
        let out = self.run(command, &args, None, &BTreeMap::new())?;
        if !out.status.success() {
            return Err(self.failure(command, out.status, slurm_message(&out.stderr)));
        }
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                parse_sinfo_line(line).map_err(|why| SlurmError::Parse {
                    command: command.clone(),
                    line: line.to_string(),
                    why,
                })
            })
            .collect()
    }

    /// `squeue` for these jobs, in every state the controller still holds.
    fn squeue(&self, ids: &[JobId]) -> Result<Vec<JobStatus>, SlurmError> {
        let command = &self.commands.squeue;
        let args: Vec<OsString> = [
            "--noheader".to_string(),
            "--states=all".to_string(),
            format!("--jobs={}", join_ids(ids)),
            format!("--format={SQUEUE_FORMAT}"),
        ]
        .map(OsString::from)
        .into();
        let out = self.run(command, &args, None, &BTreeMap::new())?;
        if !out.status.success() {
            let message = slurm_message(&out.stderr);
            // One id the controller has forgotten fails the whole call.
            if message.contains("Invalid job id specified") {
                return Ok(Vec::new());
            }
            return Err(self.failure(command, out.status, message));
        }
        parse_lines(command, &out.stdout, parse_squeue_line)
    }

    /// `sacct` for these jobs: the last run of each, or with `all_runs`
    /// every run.
    fn sacct(&self, ids: &[JobId], all_runs: bool) -> Result<Vec<JobStatus>, SlurmError> {
        let command = &self.commands.sacct;
        let mut args: Vec<OsString> = [
            "--noheader".to_string(),
            "--parsable2".to_string(),
            "--allocations".to_string(),
            format!("--jobs={}", join_ids(ids)),
            format!("--format={SACCT_FORMAT}"),
        ]
        .map(OsString::from)
        .into();
        if all_runs {
            args.push("--duplicates".into());
        }
        let out = self.run(command, &args, None, &BTreeMap::new())?;
        if !out.status.success() {
            let message = slurm_message(&out.stderr);
            if message.contains("accounting storage is disabled") {
                return Err(SlurmError::NoAccounting { message });
            }
            return Err(self.failure(command, out.status, message));
        }
        parse_lines(command, &out.stdout, parse_sacct_line)
    }

    fn failure(&self, command: &Path, status: ExitStatus, message: String) -> SlurmError {
        if is_unavailable(&message) {
            SlurmError::Unavailable { command: command.to_path_buf(), message }
        } else {
            SlurmError::Failed { command: command.to_path_buf(), status, message }
        }
    }

    /// Runs one command to its end (or the time limit), with `stdin` on its
    /// standard input and `env` added to its environment.
    fn run(
        &self,
        command: &Path,
        args: &[OsString],
        stdin: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Output, SlurmError> {
        let io_error = |source: io::Error| SlurmError::Io { command: command.to_path_buf(), source };
        let mut child = Command::new(command)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the
            // caller, which decides, and never kills an `sbatch` half way.
            .process_group(0)
            .spawn()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => SlurmError::CommandMissing { command: command.to_path_buf() },
                _ => io_error(source),
            })?;
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command that exits without reading its input closes the
            // pipe; its exit status then tells what happened.
            match pipe.write_all(text.as_bytes()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    kill(&mut child);
                    return Err(io_error(e));
                }
                _ => {}
            }
        }
        let status = match wait_until(&mut child, Instant::now() + self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                kill(&mut child);
                return Err(SlurmError::TimedOut { command: command.to_path_buf(), timeout: self.timeout });
            }
            Err(e) => {
                kill(&mut child);
                return Err(io_error(e));
            }
        };
        Ok(Output {
            status,
            stdout: join_reader(stdout).map_err(io_error)?,
            stderr: join_reader(stderr).map_err(io_error)?,
        })
    }
}

fn join_ids(ids: &[JobId]) -> String {
    ids.iter().map(JobId::to_string).collect::<Vec<_>>().join(",")
}

type Reader = Option<JoinHandle<io::Result<String>>>;

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> Reader {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    })
}

fn join_reader(reader: Reader) -> io::Result<String> {
    match reader {
        None => Ok(String::new()),
        Some(handle) => handle.join().unwrap_or_else(|_| Err(io::Error::other("output reader panicked"))),
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn kill(child: &mut Child) {
    // Already gone is fine; nothing else can be done about a failure here.
    let _ = child.kill();
    let _ = child.wait();
}

/// Slurm's messages without the `sbatch: error: ` prefixes, one per line.
fn slurm_message(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let rest = line.split_once(": error: ").map_or(line, |(_, rest)| rest);
            rest.strip_prefix("Batch job submission failed: ").unwrap_or(rest)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a message says the controller could not be reached or is busy
/// (as opposed to refusing the request).
fn is_unavailable(message: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Slurm temporarily unable to accept job",
        "Resource temporarily unavailable",
        "Zero Bytes were transmitted or received",
        "Connection refused",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

fn parse_lines(
    command: &Path,
    stdout: &str,
    parse: fn(&str) -> Result<Option<JobStatus>, String>,
) -> Result<Vec<JobStatus>, SlurmError> {
    let mut statuses = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        match parse(line) {
            Ok(Some(status)) => statuses.push(status),
            Ok(None) => {}
            Err(why) => return Err(SlurmError::Parse { command: command.to_path_buf(), line: line.to_string(), why }),
        }
    }
    Ok(statuses)
}

/// The job id in `sbatch --parsable`'s answer (`123` or `123;cluster`).
pub fn parse_sbatch(stdout: &str) -> Result<JobId, String> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()).ok_or("no job id in the output")?;
    let id = line.split(';').next().unwrap_or(line);
    id.parse().map_err(|e| format!("job id {id:?}: {e}"))
}

/// A job id as the commands write it; `None` for array or heterogeneous
/// job members (`12_3`, `12+1`) and steps, which this client never submits.
fn plain_job_id(text: &str) -> Option<JobId> {
    text.trim().parse().ok()
}

/// `None`, `None assigned` and the empty string mean nothing.
fn something(text: &str) -> Option<String> {
    match text.trim() {
        "" | "None" | "None assigned" | "(null)" => None,
        other => Some(other.to_string()),
    }
}

/// One line of `squeue --format='%i|%T|%r|%N'`.
pub fn parse_squeue_line(line: &str) -> Result<Option<JobStatus>, String> {
    let fields: Vec<&str> = line.split('|').collect();
    let [id, state, reason, nodes] = fields[..] else {
        return Err(format!("expected 4 fields separated by |, got {}", fields.len()));
    };
    let Some(id) = plain_job_id(id) else { return Ok(None) };
    if state.trim().is_empty() {
        return Err("empty state".into());
    }
    Ok(Some(JobStatus {
        id,
        state: JobState::parse(state),
        reason: something(reason),
        exit_code: None,
        cancelled_by: None,
        nodes: something(nodes),
        source: StatusSource::Queue,
    }))
}

/// One line of `sacct --parsable2 --format=JobID,State,ExitCode,Reason,NodeList`.
pub fn parse_sacct_line(line: &str) -> Result<Option<JobStatus>, String> {
    let fields: Vec<&str> = line.split('|').collect();
    let [id, state, exit_code, reason, nodes] = fields[..] else {
        return Err(format!("expected 5 fields separated by |, got {}", fields.len()));
    };
    let Some(id) = plain_job_id(id) else { return Ok(None) };
    if state.trim().is_empty() {
        return Err("empty state".into());
    }
    let exit_code = match exit_code.trim() {
        "" => None,
        text => Some(text.parse::<ExitCode>()?),
    };
    let state_kind = JobState::parse(state);
    Ok(Some(JobStatus {
        id,
        // The database has an exit code for every job, 0:0 for those not
        // ended yet; only an ended job's is meaningful.
        exit_code: exit_code.filter(|_| state_kind.is_finished()),
        state: state_kind,
        reason: something(reason),
        cancelled_by: parse_cancelled_by(state),
        nodes: something(nodes),
        source: StatusSource::Accounting,
    }))
}

/// One line of `sinfo --Node --format='%N|%T|%C|%G|%P'`.
pub fn parse_sinfo_line(line: &str) -> Result<NodeInfo, String> {
    let fields: Vec<&str> = line.split('|').collect();
    let [name, state, cpus, gres, partition] = fields[..] else {
        return Err(format!("expected 5 fields separated by |, got {}", fields.len()));
    };
    let counts: Vec<u32> = cpus
        .split('/')
        .map(|n| n.trim().parse::<u32>().map_err(|e| format!("CPU count {n:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [allocated, idle, _other, total] = counts[..] else {
        return Err(format!("CPUs {cpus:?}: expected A/I/O/T"));
    };
    let partition = partition.trim();
    Ok(NodeInfo {
        name: name.trim().to_string(),
        state: state.trim().to_string(),
        cpus_allocated: allocated,
        cpus_idle: idle,
        cpus_total: total,
        gres: something(gres),
        partition: partition.trim_end_matches('*').to_string(),
        default_partition: partition.ends_with('*'),
    })
}

#[cfg(test)]
mod tests {
    //! The parsers on output captured from a real single-node cluster
    //! (Slurm 22.05, `scripts/slurm-cluster.sh`).

    use super::*;

    #[test]
    fn sbatch_answers_are_read() {
        assert_eq!(parse_sbatch("12\n"), Ok(JobId(12)));
        assert_eq!(parse_sbatch("4242;cluster-a\n"), Ok(JobId(4242)));
        assert!(parse_sbatch("").is_err());
        assert!(parse_sbatch("Submitted batch job 12\n").is_err());
    }

    #[test]
    fn squeue_lines_from_a_real_queue() {
        // `squeue --noheader --states=all --jobs=15,...,21 --format='%i|%T|%r|%N'`
        let captured = "17|PENDING|Resources|\n19|PENDING|Dependency|\n20|PENDING|BeginTime|\n\
                        21|PENDING|Priority|\n18|PENDING|JobHeldUser|\n15|RUNNING|None|vm\n\
                        16|RUNNING|None|vm\n6|CANCELLED|BeginTime|\n7|FAILED|NonZeroExitCode|vm\n\
                        2|TIMEOUT|TimeLimit|vm\n1|COMPLETED|None|vm\n";
        let parsed = parse_lines(Path::new("squeue"), captured, parse_squeue_line).expect("parses");
        let by_id: BTreeMap<u64, &JobStatus> = parsed.iter().map(|s| (s.id.0, s)).collect();
        assert_eq!(parsed.len(), 11);
        assert_eq!(by_id[&17].state, JobState::Pending);
        assert_eq!(by_id[&17].reason.as_deref(), Some("Resources"));
        assert_eq!(by_id[&17].nodes, None);
        assert_eq!(by_id[&15].state, JobState::Running);
        assert_eq!(by_id[&15].reason, None);
        assert_eq!(by_id[&15].nodes.as_deref(), Some("vm"));
        assert_eq!(by_id[&6].state, JobState::Cancelled);
        assert_eq!(by_id[&7].state, JobState::Failed);
        assert_eq!(by_id[&7].reason.as_deref(), Some("NonZeroExitCode"));
        assert_eq!(by_id[&2].state, JobState::Timeout);
        assert_eq!(by_id[&2].reason.as_deref(), Some("TimeLimit"));
        assert!(parsed.iter().all(|s| s.source == StatusSource::Queue && s.exit_code.is_none()));
    }

    #[test]
    fn sacct_lines_from_a_real_database() {
        // `sacct --noheader --parsable2 --allocations --format=JobID,State,ExitCode,Reason,NodeList`
        let captured = "15|COMPLETED|0:0|None|vm\n17|RUNNING|0:0|None|vm\n\
                        18|CANCELLED by 0|0:0|JobHeldUser|None assigned\n19|COMPLETED|0:0|Dependency|vm\n\
                        20|PENDING|0:0|BeginTime|None assigned\n7|FAILED|3:0|None|vm\n\
                        3|TIMEOUT|0:0|None|vm\n5|NODE_FAIL|0:0|None|vm\n6|REQUEUED|0:0|None|vm\n";
        let parsed = parse_lines(Path::new("sacct"), captured, parse_sacct_line).expect("parses");
        let by_id: BTreeMap<u64, &JobStatus> = parsed.iter().map(|s| (s.id.0, s)).collect();
        assert_eq!(by_id[&15].state, JobState::Completed);
        assert_eq!(by_id[&15].exit_code, Some(ExitCode { code: 0, signal: 0 }));
        // A job not ended yet has no exit code, whatever the database says.
        assert_eq!(by_id[&17].state, JobState::Running);
        assert_eq!(by_id[&17].exit_code, None);
        assert_eq!(by_id[&18].state, JobState::Cancelled);
        assert_eq!(by_id[&18].cancelled_by, Some(0));
        assert_eq!(by_id[&18].nodes, None);
        assert_eq!(by_id[&20].state, JobState::Pending);
        assert_eq!(by_id[&7].state, JobState::Failed);
        assert_eq!(by_id[&7].exit_code, Some(ExitCode { code: 3, signal: 0 }));
        assert_eq!(by_id[&3].state, JobState::Timeout);
        assert_eq!(by_id[&5].state, JobState::NodeFail);
        assert_eq!(by_id[&6].state, JobState::Requeued);
        assert!(!by_id[&6].state.is_finished());
        assert!(parsed.iter().all(|s| s.source == StatusSource::Accounting));
    }

    #[test]
    fn sacct_steps_and_array_members_are_skipped_and_garbage_is_an_error() {
        assert_eq!(parse_sacct_line("3.batch|CANCELLED|0:15||vm"), Ok(None));
        assert_eq!(parse_sacct_line("12_4|COMPLETED|0:0|None|vm"), Ok(None));
        assert!(parse_sacct_line("12|COMPLETED|0:0").is_err());
        assert!(parse_sacct_line("12|COMPLETED|zero|None|vm").is_err());
        assert!(parse_sacct_line("12||0:0|None|vm").is_err());
        assert!(parse_squeue_line("12 RUNNING None vm").is_err());
        assert_eq!(
            parse_sacct_line("9|CANCELLED|0:15|None|vm").map(|s| s.and_then(|s| s.exit_code)),
            Ok(Some(ExitCode { code: 0, signal: 15 }))
        );
    }

    #[test]
    fn every_state_slurm_names_is_known_and_round_trips() {
        let names = [
            "PENDING",
            "CONFIGURING",
            "RUNNING",
            "COMPLETING",
            "SUSPENDED",
            "STOPPED",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "PREEMPTED",
            "REQUEUED",
            "REQUEUE_HOLD",
            "REQUEUE_FED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
            "RESV_DEL_HOLD",
            "RESIZING",
            "REVOKED",
            "SIGNALING",
            "SPECIAL_EXIT",
            "STAGE_OUT",
        ];
        for name in names {
            let state = JobState::parse(name);
            assert!(!matches!(state, JobState::Other(_)), "{name}");
            assert_eq!(state.name(), name);
        }
        assert_eq!(JobState::parse("CANCELLED+"), JobState::Cancelled);
        assert_eq!(JobState::parse("LAUNCH_FAILED"), JobState::Other("LAUNCH_FAILED".into()));
        let finished: Vec<&str> = names.iter().copied().filter(|n| JobState::parse(n).is_finished()).collect();
        assert_eq!(
            finished,
            [
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                "TIMEOUT",
                "PREEMPTED",
                "NODE_FAIL",
                "OUT_OF_MEMORY",
                "BOOT_FAIL",
                "DEADLINE",
                "REVOKED",
                "SPECIAL_EXIT"
            ]
        );
    }

    #[test]
    fn sinfo_nodes_from_a_real_cluster() {
        let node = parse_sinfo_line("vm|idle|0/8/0/8|gpu:2|debug*").expect("parses");
        assert_eq!(node.name, "vm");
        assert_eq!((node.cpus_allocated, node.cpus_idle, node.cpus_total), (0, 8, 8));
        assert_eq!(node.gres.as_deref(), Some("gpu:2"));
        assert_eq!(node.partition, "debug");
        assert!(node.default_partition && node.is_usable());
        let down = parse_sinfo_line("vm|down*|0/0/8/8|(null)|gpu").expect("parses");
        assert_eq!(down.gres, None);
        assert!(!down.default_partition && !down.is_usable());
        assert!(!parse_sinfo_line("vm|drained|0/0/8/8|gpu:2|debug*").expect("parses").is_usable());
        assert!(parse_sinfo_line("vm|idle|0/8/8|gpu:2|debug*").is_err());
    }

    #[test]
    fn slurm_messages_lose_their_prefixes_and_are_classified() {
        let refused = "sbatch: error: invalid partition specified: nope\n\
                       sbatch: error: Batch job submission failed: Invalid partition name specified\n";
        assert_eq!(slurm_message(refused), "invalid partition specified: nope\nInvalid partition name specified");
        assert!(!is_unavailable(&slurm_message(refused)));
        let down = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n";
        assert!(is_unavailable(&slurm_message(down)));
    }

    #[test]
    fn job_specs_become_sbatch_options() {
        let mut spec = JobSpec::new("#!/bin/sh\ntrue\n");
        assert_eq!(spec.args(), vec![OsString::from("--parsable")]);
        spec.name = Some("cand 7".into());
        spec.partition = Some("gpu".into());
        spec.account = Some("lab".into());
        spec.qos = Some("normal".into());
        spec.time_limit = Some(Duration::from_secs(2 * 86_400 + 3 * 3600 + 4 * 60 + 5));
        spec.gres = Some("gpu:1".into());
        spec.memory_mb = Some(16_000);
        spec.cpus_per_task = Some(4);
        spec.output = Some("/shared/run/%j.out".into());
        spec.error = Some("/shared/run/%j.err".into());
        spec.working_dir = Some("/shared/run".into());
        spec.requeue = Some(false);
        spec.extra_args = vec!["--constraint=a100".into()];
        let args: Vec<String> = spec.args().into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--parsable",
                "--job-name=cand 7",
                "--partition=gpu",
                "--account=lab",
                "--qos=normal",
                "--time=2-03:04:05",
                "--gres=gpu:1",
                "--mem=16000M",
                "--cpus-per-task=4",
                "--output=/shared/run/%j.out",
                "--error=/shared/run/%j.err",
                "--chdir=/shared/run",
                "--no-requeue",
                "--constraint=a100"
            ]
        );
        assert_eq!(format_time_limit(Duration::from_secs(90)), "0-00:01:30");
    }

    #[test]
    fn a_missing_command_is_named() {
        let commands = SlurmCommands { sinfo: "/nonexistent/sinfo-wrapper".into(), ..SlurmCommands::default() };
        match Slurm::new(commands).nodes() {
            Err(SlurmError::CommandMissing { command }) => {
                assert_eq!(command, PathBuf::from("/nonexistent/sinfo-wrapper"))
            }
            other => panic!("expected CommandMissing, got {other:?}"),
        }
    }

    #[test]
    fn a_command_past_its_time_limit_is_killed() {
        // `sleep` stands in for a controller that does not answer.
        let commands = SlurmCommands { sinfo: "sleep".into(), ..SlurmCommands::default() };
        let slurm = Slurm::new(commands).with_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let result = slurm.run(Path::new("sleep"), &["30".into()], None, &BTreeMap::new());
        assert!(matches!(result, Err(SlurmError::TimedOut { .. })), "{:?}", result.err());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
