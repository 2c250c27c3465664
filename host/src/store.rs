//! The run store: one SQLite database per run directory
//! ([`crate::run_dir`] has the directory's other files), `run.sqlite`:
//!
//! | table | what |
//! |---|---|
//! | `meta` | key/value facts: status, stop reason, start time |
//! | `iterations` | one row per finished iteration: columns for what is queried, `record` (JSON) for everything |
//! | `memory` | the diagnostic triples, by the iteration whose Improver wrote them |
//! | `llm_calls` | every LLM request and response, journaled as it happens (for resume and replay) |
//!
//! Each iteration is committed in one transaction (its row, the memory
//! entry it closes and the one it opens). A run killed at any moment
//! resumes from the last committed iteration; the journaled LLM answers of
//! the unfinished one are reused, so nothing is done twice.

use std::path::{Path, PathBuf};

use nas_plugin_api::MemoryEntry;
use rusqlite::{params, Connection, OptionalExtension};

use crate::records::{IterationRecord, LlmCall, LlmRole, Outcome};

/// The database file inside a run directory.
pub const DB_FILE: &str = "run.sqlite";

const SCHEMA_VERSION: i64 = 1;

/// A store problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("run store `{path}`: {source}")]
    Sql {
        /// The database.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A record could not be (de)serialized.
    #[error("run store `{path}`: a record is not valid: {message}")]
    Record {
        /// The database.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The directory is not a run.
    #[error("`{0}` is not a run directory (no {DB_FILE})")]
    NotARun(PathBuf),
    /// The database file is damaged (truncated, overwritten, not SQLite);
    /// nothing was written to it.
    #[error("run store `{path}` is damaged: {detail}; it was left as it is (restore it from a copy)")]
    Damaged {
        /// The database.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// What is wrong with the file at `path` when its header shows it is not a
/// whole SQLite database: not one at all, or shorter than the pages its
/// header counts (a truncated copy). `None` when the header is sound or the
/// file cannot be read (opening it then says why).
fn header_damage(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut header = [0u8; 100];
    if len < header.len() as u64 {
        return Some(format!("{len} bytes, shorter than an SQLite header (100 bytes)"));
    }
    file.read_exact(&mut header).ok()?;
    if &header[..16] != b"SQLite format 3\0" {
        return Some("not an SQLite database (its first bytes are not the SQLite header)".into());
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([header[28], header[29], header[30], header[31]]));
    let counter = &header[24..28];
    let valid_for = &header[92..96];
    // With a write-ahead log (or a rollback journal) beside it, the file
    // may lag its header until the log is checkpointed: SQLite reads the
    // log and judges.
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        std::fs::metadata(PathBuf::from(name)).is_ok_and(|m| m.len() > 0)
    };
    if counter == valid_for && pages > 0 && page_size * pages > len && !beside("-wal") && !beside("-journal") {
        return Some(format!(
            "truncated: its header counts {pages} pages of {page_size} bytes ({} bytes), the file has {len}",
            page_size * pages
        ));
    }
    None
}

/// An open run store.
pub struct Store {
    conn: Held,
    path: PathBuf,
}

/// A file by device and inode.
type FileId = (u64, u64);

/// The run stores this process holds open, by file, with how many
/// connections hold each. SQLite's locks are POSIX record locks, which a
/// process loses on a file as soon as it closes *any* descriptor of it: the
/// header check below opens the file itself, so it runs only when no
/// connection of this process has the file open (else another process,
/// believing itself the last, would delete the write-ahead log under this
/// one). Every connection to a run store in the host goes through
/// [`connect`], which registers it here; the registry's lock is held from
/// before a connection opens until it is registered, and over a header
/// check, so the two never interleave.
fn held() -> std::sync::MutexGuard<'static, std::collections::HashMap<FileId, usize>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<FileId, usize>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A connection to a run store, registered in [`held`] until it is closed.
pub(crate) struct Held {
    // Fields drop in order: the connection closes, then its registration ends.
    conn: Connection,
    _hold: Hold,
}

impl std::ops::Deref for Held {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

struct Hold(Option<FileId>);

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            let mut held = held();
            if let Some(n) = held.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&id);
                }
            }
        }
    }
}

/// Opens a connection to the run store at `path` (the database file),
/// registered so that no header check of this process closes a descriptor
/// of the file while the connection holds its locks. Every connection to a
/// run store in the host is made here.
pub(crate) fn connect(path: &Path) -> rusqlite::Result<Held> {
    let mut held = held();
    let conn = Connection::open(path)?;
    let id = file_id(path);
    if let Some(id) = id {
        *held.entry(id).or_insert(0) += 1;
    }
    Ok(Held { conn, _hold: Hold(id) })
}

/// [`header_damage`], unless a connection of this process holds the file.
fn header_damage_unheld(path: &Path) -> Option<String> {
    let held = held();
    if file_id(path).is_some_and(|id| held.contains_key(&id)) {
        return None;
    }
    header_damage(path)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

impl Store {
    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Damaged { path: self.path.clone(), detail: source.to_string() }
            }
            _ => StoreError::Sql { path: self.path.clone(), source },
        })
    }

    fn record_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Record { path: self.path.clone(), message: e.to_string() }
    }

    /// Creates the database of a new run in `run_dir`.
    pub fn create(run_dir: &Path) -> Result<Store, StoreError> {
        let path = run_dir.join(DB_FILE);
        let conn = connect(&path).map_err(|source| StoreError::Sql { path: path.clone(), source })?;
        let store = Store { conn, path };
        store.sql(store.conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS iterations (
                iteration INTEGER PRIMARY KEY,
                status TEXT NOT NULL,
                accuracy REAL,
                failure_kind TEXT,
                duplicate_of INTEGER,
                tokens INTEGER NOT NULL,
                wall_seconds REAL NOT NULL,
                record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS memory (iteration INTEGER PRIMARY KEY, entry TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS evaluations (
                iteration INTEGER NOT NULL, code_sha256 TEXT NOT NULL, outcome TEXT NOT NULL, seconds REAL NOT NULL,
                PRIMARY KEY (iteration, code_sha256)
             );
             CREATE TABLE IF NOT EXISTS llm_calls (
                iteration INTEGER NOT NULL, role TEXT NOT NULL, seq INTEGER NOT NULL,
                request TEXT NOT NULL, response TEXT NOT NULL,
                PRIMARY KEY (iteration, role, seq)
             );",
        ))?;
        store.set_meta("schema_version", &SCHEMA_VERSION.to_string())?;
        Ok(store)
    }

    /// Opens the database of an existing run.
    pub fn open(run_dir: &Path) -> Result<Store, StoreError> {
        let path = run_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NotARun(run_dir.to_path_buf()));
        }
        if let Some(detail) = header_damage_unheld(&path) {
            return Err(StoreError::Damaged { path, detail });
        }
        let conn = connect(&path).map_err(|source| StoreError::Sql { path: path.clone(), source })?;
        let store = Store { conn, path };
        store.sql(store.conn.execute_batch("PRAGMA synchronous=FULL;"))?;
        Ok(store)
    }

    /// Checks the whole database (SQLite's `quick_check`) before a writer
    /// continues a run, so a damaged store is reported, not written to.
    pub fn verify(&self) -> Result<(), StoreError> {
        let damaged = |detail: String| StoreError::Damaged { path: self.path.clone(), detail };
        let problems: Vec<String> = match self.conn.prepare("PRAGMA quick_check").and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0)).and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        }) {
            Ok(rows) => rows,
            Err(e) => return Err(damaged(e.to_string())),
        };
        match problems.as_slice() {
            [ok] if ok == "ok" => {}
            [] => return Err(damaged("the integrity check returned nothing".into())),
            many => return Err(damaged(many.iter().take(3).cloned().collect::<Vec<_>>().join("; "))),
        }
        // The run's own tables are there (an empty file is a valid, empty
        // SQLite database).
        self.conn
            .query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .and_then(|_| self.conn.query_row("SELECT COUNT(*) FROM iterations", [], |r| r.get::<_, i64>(0)))
            .map_err(|e| damaged(e.to_string()))?;
        Ok(())
    }

    /// Writes the write-ahead log into the database file (before the
    /// directory holding it is moved).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.sql(self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.sql(self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        ))
        .map(|_| ())
    }

    /// Reads a meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.sql(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional())
    }

    /// Every committed iteration, in order.
    pub fn iterations(&self) -> Result<Vec<IterationRecord>, StoreError> {
        let mut stmt = self.sql(self.conn.prepare("SELECT record FROM iterations ORDER BY iteration"))?;
        let rows: Vec<String> = self.sql(stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()))?;
        rows.iter().map(|r| serde_json::from_str(r).map_err(|e| self.record_err(e))).collect()
    }

    /// The number of the last committed iteration (0 when none).
    pub fn last_iteration(&self) -> Result<u64, StoreError> {
        let n: Option<i64> =
            self.sql(self.conn.query_row("SELECT MAX(iteration) FROM iterations", [], |r| r.get(0)))?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Every memory entry, oldest first.
    pub fn memory(&self) -> Result<Vec<MemoryEntry>, StoreError> {
        let mut stmt = self.sql(self.conn.prepare("SELECT entry FROM memory ORDER BY iteration"))?;
        let rows: Vec<String> = self.sql(stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()))?;
        rows.iter().map(|r| serde_json::from_str(r).map_err(|e| self.record_err(e))).collect()
    }

    /// Commits one iteration in one transaction: its record, the memory
    /// entry it closes and the one it opens.
    pub fn commit_iteration(
        &mut self,
        record: &IterationRecord,
        closed: Option<&MemoryEntry>,
        opened: Option<&MemoryEntry>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| self.record_err(e))?;
        let tokens = record.tokens();
        let closed_json = closed.map(serde_json::to_string).transpose().map_err(|e| self.record_err(e))?;
        let opened_json = opened.map(serde_json::to_string).transpose().map_err(|e| self.record_err(e))?;
        let path = self.path.clone();
        let sql = |e| StoreError::Sql { path: path.clone(), source: e };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO iterations(iteration, status, accuracy, failure_kind, duplicate_of, tokens, wall_seconds, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                record.iteration as i64,
                record.outcome.status(),
                record.outcome.accuracy(),
                record.outcome.failure_kind(),
                record.outcome.duplicate_of().map(|of| of as i64),
                tokens as i64,
                record.wall_seconds,
                json
            ],
        )
        .map_err(sql)?;
        if let (Some(entry), Some(text)) = (closed, closed_json) {
            tx.execute("UPDATE memory SET entry = ?2 WHERE iteration = ?1", params![entry.iteration as i64, text])
                .map_err(sql)?;
        }
        if let (Some(entry), Some(text)) = (opened, opened_json) {
            tx.execute("INSERT INTO memory(iteration, entry) VALUES (?1, ?2)", params![entry.iteration as i64, text])
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Journals one LLM call as soon as it returns.
    pub fn journal(&self, call: &LlmCall) -> Result<(), StoreError> {
        let req = serde_json::to_string(&call.request).map_err(|e| self.record_err(e))?;
        let resp = serde_json::to_string(&call.response).map_err(|e| self.record_err(e))?;
        self.sql(self.conn.execute(
            "INSERT OR REPLACE INTO llm_calls(iteration, role, seq, request, response) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![call.iteration as i64, call.role.as_str(), call.seq, req, resp],
        ))
        .map(|_| ())
    }

    /// The journaled answer of a call, if any.
    pub fn journaled(&self, iteration: u64, role: LlmRole, seq: u32) -> Result<Option<LlmCall>, StoreError> {
        let row: Option<(String, String)> = self.sql(
            self.conn
                .query_row(
                    "SELECT request, response FROM llm_calls WHERE iteration = ?1 AND role = ?2 AND seq = ?3",
                    params![iteration as i64, role.as_str(), seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional(),
        )?;
        row.map(|(req, resp)| {
            Ok(LlmCall {
                iteration,
                role,
                seq,
                request: serde_json::from_str(&req).map_err(|e| self.record_err(e))?,
                response: serde_json::from_str(&resp).map_err(|e| self.record_err(e))?,
            })
        })
        .transpose()
    }

    /// Journals an evaluation as soon as it returns, keyed by the iteration
    /// and the code's hash (an iteration may evaluate a repaired code too).
    pub fn journal_evaluation(
        &self,
        iteration: u64,
        code: &str,
        outcome: &Outcome,
        seconds: f64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(outcome).map_err(|e| self.record_err(e))?;
        self.sql(self.conn.execute(
            "INSERT OR REPLACE INTO evaluations(iteration, code_sha256, outcome, seconds) VALUES (?1, ?2, ?3, ?4)",
            params![iteration as i64, sha256(code), json, seconds],
        ))
        .map(|_| ())
    }

    /// The journaled evaluation of exactly this code at this iteration.
    pub fn journaled_evaluation(&self, iteration: u64, code: &str) -> Result<Option<(Outcome, f64)>, StoreError> {
        let row: Option<(String, String, f64)> = self.sql(
            self.conn
                .query_row(
                    "SELECT code_sha256, outcome, seconds FROM evaluations WHERE iteration = ?1 AND code_sha256 = ?2",
                    params![iteration as i64, sha256(code)],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional(),
        )?;
        match row {
            Some((sha, json, secs)) if sha == sha256(code) => {
                Ok(Some((serde_json::from_str(&json).map_err(|e| self.record_err(e))?, secs)))
            }
            _ => Ok(None),
        }
    }
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RoleUsage;
    use nas_plugin_api::{CandidateFailure, ChatMessage, ChatResponse, EvalReport, FailureKind};

    /// Another process reads the store and closes its connection while
    /// this one has it open through two connections, the second opened
    /// (with its header check) while the first held the file: the write-ahead
    /// log must survive, and what this process writes after must reach the
    /// other. Closing a descriptor of the file in the header check would
    /// have dropped this process's locks, and the other process, believing
    /// itself the last, would have deleted the log under it.
    #[test]
    fn a_reader_in_another_process_does_not_take_the_log_from_under_a_store_opened_beside_a_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::create(dir.path()).expect("create"));
        let path = dir.path().join(DB_FILE);
        let first = connect(&path).expect("first connection");
        let _: i64 = first.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).expect("read");
        let store = Store::open(dir.path()).expect("open beside it");
        store.set_meta("before", "1").expect("write");
        let read_in_child = |key: &str| -> String {
            let out = std::process::Command::new("python3")
                .arg("-c")
                .arg(
                    "import sqlite3, sys\n\
                     c = sqlite3.connect(sys.argv[1])\n\
                     r = c.execute('SELECT value FROM meta WHERE key = ?', (sys.argv[2],)).fetchall()\n\
                     c.close()\n\
                     print(r[0][0] if r else '')",
                )
                .arg(&path)
                .arg(key)
                .output()
                .expect("python3 runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(read_in_child("before"), "1");
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        assert!(wal.exists(), "the other process deleted the write-ahead log of a store open here");
        store.set_meta("after", "2").expect("write after");
        assert_eq!(read_in_child("after"), "2", "a write of this process did not reach the other");
        drop(first);
    }

    fn record(i: u64, outcome: Outcome) -> IterationRecord {
        IterationRecord {
            iteration: i,
            mode: "full".into(),
            generator_prompt: vec![ChatMessage::user("write a net")],
            generator_response: ChatResponse {
                content: "```python\nclass Net: pass\n```".into(),
                ..Default::default()
            },
            code: Some("class Net: pass".into()),
            diff: None,
            parent: None,
            outcome,
            improver_prompt: None,
            improver_response: None,
            advice: None,
            memory_shown: vec![],
            memory_summary: None,
            memory_state: None,
            best: None,
            generator_usage: RoleUsage { tokens_in: 10, tokens_out: 5, seconds: 1.0, calls: 1 },
            improver_usage: RoleUsage::default(),
            eval_seconds: 2.0,
            wall_seconds: 3.0,
            finished_at: 0.0,
            repair: Vec::new(),
            island: 0,
            cycle: 0,
            over_limit: None,
            score: None,
            eval_retries: Vec::new(),
            regenerated: Vec::new(),
            made_change: None,
            made_on: None,
            same_network_as: None,
        }
    }

    #[test]
    fn iterations_and_memory_commit_together_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::create(dir.path()).expect("create");
        let open = MemoryEntry { iteration: 1, problem: "p".into(), suggestion: "s".into(), ..Default::default() };
        s.commit_iteration(
            &record(1, Outcome::Ok { report: EvalReport { accuracy: 0.5, ..Default::default() } }),
            None,
            Some(&open),
        )
        .expect("commit 1");
        let closed = MemoryEntry { outcome: Some("error: syntax: bad".into()), ..open.clone() };
        let failure = CandidateFailure::new("check", FailureKind::Syntax, "bad");
        s.commit_iteration(&record(2, Outcome::Failed { failure }), Some(&closed), None).expect("commit 2");
        drop(s);
        let s = Store::open(dir.path()).expect("open");
        assert_eq!(s.last_iteration().expect("last"), 2);
        let its = s.iterations().expect("records");
        assert_eq!(its.len(), 2);
        assert_eq!(its[1].outcome.failure_kind().as_deref(), Some("syntax"));
        assert_eq!(s.memory().expect("memory"), vec![closed]);
    }

    #[test]
    fn a_duplicate_iteration_number_is_refused_and_nothing_half_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::create(dir.path()).expect("create");
        let dup = Outcome::Duplicate { of: 1, similarity: 0.95, network: false };
        s.commit_iteration(&record(1, dup.clone()), None, None).expect("first");
        let entry = MemoryEntry { iteration: 1, ..Default::default() };
        assert!(s.commit_iteration(&record(1, dup), None, Some(&entry)).is_err());
        assert!(s.memory().expect("memory").is_empty(), "the failed transaction wrote nothing");
    }

    #[test]
    fn outcome_texts_follow_the_method() {
        let ok = Outcome::Ok { report: EvalReport { accuracy: 0.72234, ..Default::default() } };
        assert_eq!(ok.memory_text(), "accuracy: 72.23%");
        let long = "x".repeat(500);
        let failed = Outcome::Failed { failure: CandidateFailure::new("train", FailureKind::Runtime, long) };
        let text = failed.memory_text();
        assert!(text.starts_with("error: runtime: xxx"));
        assert_eq!(text.chars().count(), "error: ".len() + 200);
    }

    #[test]
    fn the_journal_returns_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::create(dir.path()).expect("create");
        let call = LlmCall {
            iteration: 3,
            role: LlmRole::Generator,
            seq: 0,
            request: vec![ChatMessage::user("hi")],
            response: ChatResponse { content: "answer".into(), ..Default::default() },
        };
        s.journal(&call).expect("journal");
        assert_eq!(s.journaled(3, LlmRole::Generator, 0).expect("read"), Some(call));
        assert_eq!(s.journaled(3, LlmRole::Improver, 0).expect("read"), None);
    }
}
