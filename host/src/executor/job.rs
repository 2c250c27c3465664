//! The files of one evaluation job, in its own folder on the shared
//! storage: what the host asks (`request.json`), what the node answers
//! (`result.json`, written whole or not at all) and what the job printed
//! (`job.out`). The probe job's `probe.json` and `answer.json` live here too.
//!
//! The host reads an answer no more trustingly than a local evaluation's:
//! at most [`MAX_RESULT_BYTES`], parsed strictly, for this attempt only (its
//! nonce, the candidate and the hash of its code), with one of an outcome or
//! an error, and numbers in range.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nas_plugin_api::{EvalOutcome, EvalRequest, PluginError};
use serde::{Deserialize, Serialize};

/// The request file in a job's folder.
pub const REQUEST_FILE: &str = "request.json";
/// The result file in a job's folder.
pub const RESULT_FILE: &str = "result.json";
/// What the job printed (stdout and stderr).
pub const OUTPUT_FILE: &str = "job.out";
/// The probe's request.
pub const PROBE_FILE: &str = "probe.json";
/// The probe's answer.
pub const ANSWER_FILE: &str = "answer.json";
/// The version of these files.
pub const FORMAT: u32 = 1;
/// The largest result the host reads.
pub const MAX_RESULT_BYTES: u64 = 8 << 20;
/// The largest request a node reads (a candidate's source is in it).
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// What the host asks of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// [`FORMAT`].
    pub format: u32,
    /// Unique to this attempt; the result must carry it back.
    pub nonce: String,
    /// The run directory (its frozen `config.toml` names the evaluator).
    pub run_dir: PathBuf,
    /// The directory relative paths of the config were resolved against.
    pub config_dir: PathBuf,
    /// Plugin libraries the host loaded (`--plugin`, `[plugins] load`).
    pub plugins: Vec<PathBuf>,
    /// The evaluation.
    pub request: EvalRequest,
}

/// What a job answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    /// [`FORMAT`].
    pub format: u32,
    /// The request's nonce.
    pub nonce: String,
    /// The request's candidate.
    pub candidate_id: String,
    /// The sha256 of the request's source, hex.
    pub code_sha256: String,
    /// The evaluator's outcome, when it gave one.
    #[serde(default)]
    pub outcome: Option<EvalOutcome>,
    /// The evaluator's error (it could not be created, or it broke), when
    /// it gave no outcome.
    #[serde(default)]
    pub error: Option<PluginError>,
    /// The node that ran it.
    pub node: String,
    /// The Slurm job (`SLURM_JOB_ID`), when it ran in one.
    #[serde(default)]
    pub job_id: Option<u64>,
    /// Seconds from the job's start to a ready evaluator.
    pub setup_seconds: f64,
    /// Seconds of the evaluation itself.
    pub eval_seconds: f64,
}

/// What the host asks of the probe job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// [`FORMAT`].
    pub format: u32,
    /// The answer must carry it back.
    pub nonce: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The directory relative paths of the config were resolved against.
    pub config_dir: PathBuf,
    /// Plugin libraries the host loaded.
    pub plugins: Vec<PathBuf>,
    /// A file the host wrote in the run directory...
    pub token_file: PathBuf,
    /// ...holding this.
    pub token: String,
    /// The prepared dataset (its `manifest.json` must be readable).
    pub dataset_dir: PathBuf,
}

/// One thing the probe checked on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeCheck {
    /// What (`run directory`, `dataset`, `plugin library`, `evaluator`).
    pub what: String,
    /// Whether it passed.
    pub ok: bool,
    /// The path or the error.
    pub detail: String,
}

/// What the probe job answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswer {
    /// [`FORMAT`].
    pub format: u32,
    /// The request's nonce.
    pub nonce: String,
    /// The node that ran it.
    pub node: String,
    /// Each check, in order.
    pub checks: Vec<ProbeCheck>,
}

/// What a result must match: the attempt that asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected<'a> {
    /// The attempt's nonce.
    pub nonce: &'a str,
    /// The candidate.
    pub candidate_id: &'a str,
    /// The sha256 of its code.
    pub code_sha256: &'a str,
}

/// The sha256 of a text, hex.
pub fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A fresh 128-bit random token, hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: the clock and the process make it unique, which
        // is what the nonce is for (it is no secret from the job's user).
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mixed = sha256(&format!("{t}-{}-{:p}", std::process::id(), &bytes));
        return mixed[..32].to_string();
    }
    hex::encode(bytes)
}

/// Reads a file of at most `max` bytes; `Ok(None)` when it does not exist.
pub fn read_capped(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(Some(bytes))
}

/// Writes a file whole or not at all: a temporary file beside it, synced,
/// then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename is durable once the folder is synced; a folder that
            // cannot be opened for that (some network filesystems) is fine.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads and checks a job's result: `Ok(None)` when there is none yet,
/// `Err(why)` when there is one the host does not accept.
pub fn read_result(dir: &Path, expected: &Expected<'_>) -> Result<Option<JobResult>, String> {
    let path = dir.join(RESULT_FILE);
    let Some(bytes) = read_capped(&path, MAX_RESULT_BYTES)? else { return Ok(None) };
    let result: JobResult =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a job result: {e}", path.display()))?;
    check_result(&result, expected).map_err(|why| format!("{}: {why}", path.display()))?;
    Ok(Some(result))
}

/// The checks of [`read_result`] on a parsed result.
pub fn check_result(r: &JobResult, expected: &Expected<'_>) -> Result<(), String> {
    if r.format != FORMAT {
        return Err(format!("format {} (this nas writes and reads {FORMAT})", r.format));
    }
    if r.nonce != expected.nonce {
        return Err("it answers another attempt (its nonce differs)".into());
    }
    if r.candidate_id != expected.candidate_id || r.code_sha256 != expected.code_sha256 {
        return Err(format!("it answers candidate {} ({}), not this one", r.candidate_id, short(&r.code_sha256)));
    }
    for (what, v) in [("setup_seconds", r.setup_seconds), ("eval_seconds", r.eval_seconds)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{what} is {v}"));
        }
    }
    match (&r.outcome, &r.error) {
        (Some(outcome), None) => check_outcome(outcome),
        (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => Err("it has both an outcome and an error".into()),
        (None, None) => Err("it has neither an outcome nor an error".into()),
    }
}

/// Numbers an outcome may hold: an accuracy in [0, 1], finite losses,
/// durations and rates that are not negative.
pub fn check_outcome(outcome: &EvalOutcome) -> Result<(), String> {
    let EvalOutcome::Ok(r) = outcome else { return Ok(()) };
    if !(r.accuracy.is_finite() && (0.0..=1.0).contains(&r.accuracy)) {
        return Err(format!("accuracy {} is not in [0, 1]", r.accuracy));
    }
    if let Some(loss) = r.train_loss {
        if !loss.is_finite() {
            return Err(format!("train_loss is {loss}"));
        }
    }
    let durations = [
        ("epoch_seconds", r.epoch_seconds),
        ("images_per_second", r.images_per_second),
        ("total_seconds", r.total_seconds),
    ];
    for (what, v) in durations {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{what} is {v}"));
            }
        }
    }
    Ok(())
}

/// The first 8 characters of a hash.
pub fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// The last `max` characters of a job's output, for messages.
pub fn output_tail(dir: &Path, max: usize) -> String {
    let path = dir.join(OUTPUT_FILE);
    let Ok(mut f) = std::fs::File::open(&path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64 * 4);
    let mut bytes = Vec::new();
    use std::io::Seek;
    if f.seek(std::io::SeekFrom::Start(start)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let chars = text.chars().count();
    let tail: String = text.chars().skip(chars.saturating_sub(max)).collect();
    tail.replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::{CandidateFailure, DatasetRef, EvalReport, FailureKind};

    fn result(outcome: EvalOutcome) -> JobResult {
        JobResult {
            format: FORMAT,
            nonce: "n1".into(),
            candidate_id: "iteration-3".into(),
            code_sha256: sha256("class Net: pass"),
            outcome: Some(outcome),
            error: None,
            node: "node01".into(),
            job_id: Some(12),
            setup_seconds: 0.5,
            eval_seconds: 2.0,
        }
    }

    fn ok(accuracy: f64) -> EvalOutcome {
        EvalOutcome::Ok(EvalReport { accuracy, train_loss: Some(0.3), ..Default::default() })
    }

    #[test]
    fn a_result_is_accepted_only_for_its_attempt_and_with_numbers_in_range() {
        let sha = sha256("class Net: pass");
        let expected = Expected { nonce: "n1", candidate_id: "iteration-3", code_sha256: &sha };
        assert_eq!(check_result(&result(ok(0.8)), &expected), Ok(()));
        let failed = EvalOutcome::Failed(CandidateFailure::new("check", FailureKind::Syntax, "bad"));
        assert_eq!(check_result(&result(failed), &expected), Ok(()));

        let other = Expected { nonce: "n2", ..expected.clone() };
        assert!(check_result(&result(ok(0.8)), &other).expect_err("refused").contains("nonce"));
        let other_code = sha256("class Net: other");
        let other = Expected { code_sha256: &other_code, ..expected.clone() };
        assert!(check_result(&result(ok(0.8)), &other).expect_err("refused").contains("not this one"));
        assert!(check_result(&result(ok(1.5)), &expected).expect_err("refused").contains("accuracy"));
        assert!(check_result(&result(ok(-0.1)), &expected).expect_err("refused").contains("accuracy"));
        let mut r = result(ok(0.8));
        r.error = Some(PluginError::internal("boom"));
        assert!(check_result(&r, &expected).expect_err("refused").contains("both"));
        r.outcome = None;
        assert_eq!(check_result(&r, &expected), Ok(()));
        r.error = None;
        assert!(check_result(&r, &expected).expect_err("refused").contains("neither"));
        let mut r = result(ok(0.8));
        r.format = 2;
        assert!(check_result(&r, &expected).expect_err("refused").contains("format"));
        let mut r =
            result(EvalOutcome::Ok(EvalReport { accuracy: 0.5, epoch_seconds: Some(-1.0), ..Default::default() }));
        assert!(check_result(&r, &expected).expect_err("refused").contains("epoch_seconds"));
        r.outcome = Some(ok(0.5));
        r.eval_seconds = f64::NAN;
        assert!(check_result(&r, &expected).expect_err("refused").contains("eval_seconds"));
    }

    #[test]
    fn result_files_are_read_whole_strictly_and_within_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sha = sha256("class Net: pass");
        let expected = Expected { nonce: "n1", candidate_id: "iteration-3", code_sha256: &sha };
        assert_eq!(read_result(dir.path(), &expected), Ok(None));

        let good = result(ok(0.75));
        write_atomically(&dir.path().join(RESULT_FILE), &serde_json::to_vec(&good).expect("json")).expect("write");
        assert_eq!(read_result(dir.path(), &expected), Ok(Some(good.clone())));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(RESULT_FILE)], "no temporary file is left");

        // An unknown field, a truncated file, JSON's largest number and a
        // file over the cap are all refused.
        let mut value = serde_json::to_value(&good).expect("json");
        value["extra_field"] = serde_json::json!(1);
        std::fs::write(dir.path().join(RESULT_FILE), value.to_string()).expect("write");
        assert!(read_result(dir.path(), &expected).expect_err("refused").contains("extra_field"));
        let text = serde_json::to_string(&good).expect("json");
        std::fs::write(dir.path().join(RESULT_FILE), &text[..text.len() / 2]).expect("write");
        assert!(read_result(dir.path(), &expected).is_err());
        std::fs::write(dir.path().join(RESULT_FILE), text.replace("0.75", "1e999")).expect("write");
        assert!(read_result(dir.path(), &expected).is_err());
        let huge = vec![b' '; (MAX_RESULT_BYTES + 1) as usize];
        std::fs::write(dir.path().join(RESULT_FILE), huge).expect("write");
        assert!(read_result(dir.path(), &expected).expect_err("refused").contains("larger than"));
    }

    #[test]
    fn requests_round_trip_and_nonces_differ() {
        let request = JobRequest {
            format: FORMAT,
            nonce: nonce(),
            run_dir: "/shared/runs/r1".into(),
            config_dir: "/home/me".into(),
            plugins: vec!["/shared/lib/libx.so".into()],
            request: EvalRequest {
                candidate_id: "iteration-1".into(),
                source: "class Net: pass".into(),
                dataset: DatasetRef { dir: "/shared/data/prepared/fashion".into(), name: "fashion".into() },
                time_limit_s: None,
                seed: None,
                save_model: None,
                budget: nas_plugin_api::Budget { max_params: None, max_flops: Some(200_000_000) },
                known_networks: Vec::new(),
            },
        };
        let text = serde_json::to_string(&request).expect("json");
        assert_eq!(serde_json::from_str::<JobRequest>(&text).expect("parses"), request);
        assert_eq!(request.nonce.len(), 32);
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn the_output_tail_is_the_end_on_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(output_tail(dir.path(), 10), "");
        std::fs::write(dir.path().join(OUTPUT_FILE), "start\nmiddle\nnas: not found\n").expect("write");
        assert_eq!(output_tail(dir.path(), 21), "middle | nas: not found");
    }
}
