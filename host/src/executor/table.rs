//! The run store's table of Slurm jobs, `slurm_jobs` in `run.sqlite`: one
//! row per attempt at an evaluation, written before `sbatch` runs and
//! updated with the job id, what Slurm says of it and how it ended. A run
//! that did not use Slurm has no such table; the table is made the first
//! time the Slurm executor opens the store.
//!
//! | column | what |
//! |---|---|
//! | `candidate_id`, `code_sha256`, `attempt` | the evaluation (the search's `iteration-N` and the hash of the code) and the attempt, from 1 |
//! | `iteration` | N of `iteration-N`, for queries |
//! | `name` | the job's name, unique to the attempt (how a job submitted just before a crash is found again) |
//! | `nonce`, `dir` | the token the result must carry back, and the job's folder |
//! | `job_id` | Slurm's id, once `sbatch` answered |
//! | `state` | [`AttemptState`] |
//! | `fault`, `detail` | why an attempt ended without a result ([`JobFault`]) and what Slurm or the job said |
//! | `slurm_state`, `node` | what Slurm said last |
//! | `submitted_at`, `ended_at` | seconds since the Unix epoch |

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, DB_FILE};

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// The row is written; `sbatch` has not answered (yet).
    Submitting,
    /// Slurm has the job (queued, running, or ended and not yet read).
    Submitted,
    /// Its result was read.
    Done,
    /// It ended without a usable result: `fault` says why.
    Fault,
    /// This host cancelled it (Ctrl-C).
    Interrupted,
    /// It never reached Slurm: the host stopped before `sbatch` answered
    /// and no job has its name.
    Lost,
}

impl AttemptState {
    /// Every state.
    pub const ALL: [AttemptState; 6] = [
        AttemptState::Submitting,
        AttemptState::Submitted,
        AttemptState::Done,
        AttemptState::Fault,
        AttemptState::Interrupted,
        AttemptState::Lost,
    ];

    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Submitting => "submitting",
            AttemptState::Submitted => "submitted",
            AttemptState::Done => "done",
            AttemptState::Fault => "fault",
            AttemptState::Interrupted => "interrupted",
            AttemptState::Lost => "lost",
        }
    }

    /// The state with this name.
    pub fn parse(name: &str) -> Option<AttemptState> {
        AttemptState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a host may still follow it (it has or may have a job).
    pub fn is_open(self) -> bool {
        match self {
            AttemptState::Submitting | AttemptState::Submitted => true,
            AttemptState::Done | AttemptState::Fault | AttemptState::Interrupted | AttemptState::Lost => false,
        }
    }
}

/// Why an attempt ended without a result: an infrastructure fault, never a
/// judgement of the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobFault {
    /// `sbatch` refused the job (partition, account, QoS, limits...).
    Refused,
    /// `sbatch` could not reach the controller, or did not answer.
    Unavailable,
    /// Someone else cancelled the job (`scancel`).
    Cancelled,
    /// The job ran past its time limit.
    TimeLimit,
    /// The job was preempted.
    Preempted,
    /// The job's node failed (or did not boot).
    NodeFailure,
    /// The job ran past its memory (`--mem`).
    OutOfMemory,
    /// Slurm held the job after requeueing it, or ended it in another
    /// final state (named in the detail).
    Ended,
    /// The job script failed without writing a result.
    JobFailed,
    /// Neither the controller nor the accounting database knows the job.
    Vanished,
    /// The job ended well but its result never appeared.
    ResultMissing,
    /// The job's result was refused (size, format, another attempt's,
    /// numbers out of range).
    ResultInvalid,
    /// The evaluator on the node failed (could not be created, or broke).
    EvaluatorError,
}

impl JobFault {
    /// Every fault.
    pub const ALL: [JobFault; 13] = [
        JobFault::Refused,
        JobFault::Unavailable,
        JobFault::Cancelled,
        JobFault::TimeLimit,
        JobFault::Preempted,
        JobFault::NodeFailure,
        JobFault::OutOfMemory,
        JobFault::Ended,
        JobFault::JobFailed,
        JobFault::Vanished,
        JobFault::ResultMissing,
        JobFault::ResultInvalid,
        JobFault::EvaluatorError,
    ];

    /// The snake_case name, in the table and the records.
    pub fn as_str(self) -> &'static str {
        match self {
            JobFault::Refused => "refused",
            JobFault::Unavailable => "unavailable",
            JobFault::Cancelled => "cancelled",
            JobFault::TimeLimit => "time_limit",
            JobFault::Preempted => "preempted",
            JobFault::NodeFailure => "node_failure",
            JobFault::OutOfMemory => "out_of_memory",
            JobFault::Ended => "ended",
            JobFault::JobFailed => "job_failed",
            JobFault::Vanished => "vanished",
            JobFault::ResultMissing => "result_missing",
            JobFault::ResultInvalid => "result_invalid",
            JobFault::EvaluatorError => "evaluator_error",
        }
    }

    /// The fault with this name.
    pub fn parse(name: &str) -> Option<JobFault> {
        JobFault::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for JobFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt at an evaluation, as the table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The search's candidate id (`iteration-N`).
    pub candidate_id: String,
    /// N of `iteration-N`.
    pub iteration: Option<u64>,
    /// The sha256 of the evaluated code.
    pub code_sha256: String,
    /// 1, 2, ...
    pub attempt: u32,
    /// The job's unique name.
    pub name: String,
    /// The token its result carries back.
    pub nonce: String,
    /// The job's folder.
    pub dir: PathBuf,
    /// Slurm's id, once known.
    pub job_id: Option<u64>,
    /// Where it stands.
    pub state: AttemptState,
    /// Why it ended without a result.
    pub fault: Option<JobFault>,
    /// What Slurm or the job said.
    pub detail: String,
    /// Slurm's last word on it (`RUNNING`, `TIMEOUT`, ...).
    pub slurm_state: Option<String>,
    /// Where it ran.
    pub node: Option<String>,
    /// When the row was written.
    pub submitted_at: f64,
    /// When it ended (as this host saw it).
    pub ended_at: Option<f64>,
}

const COLUMNS: &str = "candidate_id, iteration, code_sha256, attempt, name, nonce, dir, job_id, state, fault, detail, \
                       slurm_state, node, submitted_at, ended_at";

/// The table, through a connection of its own to the run store.
pub struct JobTable {
    conn: crate::store::Held,
    path: PathBuf,
}

impl std::fmt::Debug for JobTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobTable({})", self.path.display())
    }
}

impl JobTable {
    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| StoreError::Sql { path: self.path.clone(), source })
    }

    /// Opens the run store of `run_dir`, making the table when it is not
    /// there.
    pub fn open(run_dir: &Path) -> Result<JobTable, StoreError> {
        let table = JobTable::connect(run_dir)?;
        table.sql(table.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS slurm_jobs (
                candidate_id TEXT NOT NULL,
                iteration INTEGER,
                code_sha256 TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                name TEXT NOT NULL,
                nonce TEXT NOT NULL,
                dir TEXT NOT NULL,
                job_id INTEGER,
                state TEXT NOT NULL,
                fault TEXT,
                detail TEXT NOT NULL DEFAULT '',
                slurm_state TEXT,
                node TEXT,
                submitted_at REAL NOT NULL,
                ended_at REAL,
                PRIMARY KEY (candidate_id, code_sha256, attempt)
             );",
        ))?;
        Ok(table)
    }

    fn connect(run_dir: &Path) -> Result<JobTable, StoreError> {
        let path = run_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NotARun(run_dir.to_path_buf()));
        }
        let conn = crate::store::connect(&path).map_err(|source| StoreError::Sql { path: path.clone(), source })?;
        let table = JobTable { conn, path };
        // The search writes through its own connection: wait for it rather
        // than fail.
        table.sql(table.conn.busy_timeout(std::time::Duration::from_secs(30)))?;
        table.sql(table.conn.execute_batch("PRAGMA synchronous=FULL;"))?;
        Ok(table)
    }

    /// Every attempt recorded in a run, in the order they were written
    /// (empty when the run never used Slurm).
    pub fn read_all(run_dir: &Path) -> Result<Vec<Attempt>, StoreError> {
        let table = JobTable::connect(run_dir)?;
        let exists: Option<String> = table.sql(
            table
                .conn
                .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'slurm_jobs'", [], |r| {
                    r.get(0)
                })
                .optional(),
        )?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        table.query(&format!("SELECT {COLUMNS} FROM slurm_jobs ORDER BY submitted_at, rowid"), params![])
    }

    /// The attempts at one evaluation, the first first.
    pub fn attempts(&self, candidate_id: &str, code_sha256: &str) -> Result<Vec<Attempt>, StoreError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM slurm_jobs WHERE candidate_id = ?1 AND code_sha256 = ?2 ORDER BY attempt"),
            params![candidate_id, code_sha256],
        )
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Attempt>, StoreError> {
        let mut stmt = self.sql(self.conn.prepare(sql))?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, String>(10)?,
                (r.get::<_, Option<String>>(11)?, r.get::<_, Option<String>>(12)?),
                (r.get::<_, f64>(13)?, r.get::<_, Option<f64>>(14)?),
            ))
        });
        let rows: Vec<_> = self.sql(rows.and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>()))?;
        let bad = |what: String| StoreError::Record { path: self.path.clone(), message: what };
        rows.into_iter()
            .map(|(cand, it, sha, attempt, name, nonce, dir, job, state, fault, detail, (sstate, node), (sub, end))| {
                Ok(Attempt {
                    candidate_id: cand,
                    iteration: it.map(|i| i as u64),
                    code_sha256: sha,
                    attempt: attempt as u32,
                    name,
                    nonce,
                    dir: PathBuf::from(dir),
                    job_id: job.map(|j| j as u64),
                    state: AttemptState::parse(&state).ok_or_else(|| bad(format!("slurm_jobs: state {state:?}")))?,
                    fault: match fault {
                        Some(f) => Some(JobFault::parse(&f).ok_or_else(|| bad(format!("slurm_jobs: fault {f:?}")))?),
                        None => None,
                    },
                    detail,
                    slurm_state: sstate,
                    node,
                    submitted_at: sub,
                    ended_at: end,
                })
            })
            .collect()
    }

    /// Writes a new attempt (before `sbatch` runs).
    pub fn insert(&self, a: &Attempt) -> Result<(), StoreError> {
        self.sql(self.conn.execute(
            &format!("INSERT INTO slurm_jobs({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
            params![
                a.candidate_id,
                a.iteration.map(|i| i as i64),
                a.code_sha256,
                a.attempt,
                a.name,
                a.nonce,
                a.dir.to_string_lossy(),
                a.job_id.map(|j| j as i64),
                a.state.as_str(),
                a.fault.map(JobFault::as_str),
                a.detail,
                a.slurm_state,
                a.node,
                a.submitted_at,
                a.ended_at,
            ],
        ))
        .map(|_| ())
    }

    /// Writes an attempt's changing fields: job id, state, fault, detail,
    /// Slurm's state and node, end time.
    pub fn update(&self, a: &Attempt) -> Result<(), StoreError> {
        self.sql(self.conn.execute(
            "UPDATE slurm_jobs SET job_id = ?4, state = ?5, fault = ?6, detail = ?7, slurm_state = ?8, node = ?9,
                ended_at = ?10
             WHERE candidate_id = ?1 AND code_sha256 = ?2 AND attempt = ?3",
            params![
                a.candidate_id,
                a.code_sha256,
                a.attempt,
                a.job_id.map(|j| j as i64),
                a.state.as_str(),
                a.fault.map(JobFault::as_str),
                a.detail,
                a.slurm_state,
                a.node,
                a.ended_at,
            ],
        ))
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32) -> Attempt {
        Attempt {
            candidate_id: "iteration-4".into(),
            iteration: Some(4),
            code_sha256: "ab".repeat(32),
            attempt: n,
            name: format!("nas-0123abcd-iteration-4-abababab-{n}"),
            nonce: "00ff".into(),
            dir: PathBuf::from("/shared/run/jobs/iteration-4"),
            job_id: None,
            state: AttemptState::Submitting,
            fault: None,
            detail: String::new(),
            slurm_state: None,
            node: None,
            submitted_at: 100.0 + f64::from(n),
            ended_at: None,
        }
    }

    #[test]
    fn attempts_are_written_before_submission_then_updated_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(crate::store::Store::create(dir.path()).expect("store"));
        assert!(JobTable::read_all(dir.path()).expect("reads").is_empty(), "a run without Slurm has no jobs");
        let table = JobTable::open(dir.path()).expect("opens");
        let mut first = attempt(1);
        table.insert(&first).expect("insert");
        first.job_id = Some(77);
        first.state = AttemptState::Fault;
        first.fault = Some(JobFault::TimeLimit);
        first.detail = "TIMEOUT after 0-00:05:00".into();
        first.slurm_state = Some("TIMEOUT".into());
        first.node = Some("node01".into());
        first.ended_at = Some(200.0);
        table.update(&first).expect("update");
        let second = attempt(2);
        table.insert(&second).expect("insert");
        assert!(table.insert(&second).is_err(), "an attempt is written once");
        assert_eq!(table.attempts("iteration-4", &"ab".repeat(32)).expect("reads"), vec![first.clone(), second]);
        assert!(table.attempts("iteration-4", &"cd".repeat(32)).expect("reads").is_empty());
        // A second connection (as the store's) sees it, and the store still
        // opens and reads as before.
        assert_eq!(JobTable::read_all(dir.path()).expect("reads")[0], first);
        let store = crate::store::Store::open(dir.path()).expect("store opens");
        assert_eq!(store.last_iteration().expect("reads"), 0);
    }

    #[test]
    fn states_and_faults_round_trip_their_names() {
        for s in AttemptState::ALL {
            assert_eq!(AttemptState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        for f in JobFault::ALL {
            assert_eq!(JobFault::parse(f.as_str()), Some(f));
            assert_eq!(serde_json::to_value(f).expect("json"), f.as_str());
        }
        assert!(AttemptState::Submitted.is_open() && !AttemptState::Lost.is_open());
    }
}
