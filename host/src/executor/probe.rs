//! The probe job at the start of a run on Slurm: the host writes a token
//! into the run directory and a request into the shared folder; a job runs
//! `nas eval-job --probe` on a node with the evaluations' own options,
//! which reads the token, the dataset's manifest and the plugin libraries,
//! creates the evaluator, and writes what it found back. What it could not
//! do is said plainly, with what to change.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::job::{self, ProbeAnswer, ProbeRequest, ANSWER_FILE, FORMAT, PROBE_FILE};
use super::{ExecutorError, SlurmExecutor};
use crate::slurm::{JobId, JobState, SlurmError};

/// What the probe found: every check passed, on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The probe's job.
    pub job_id: u64,
    /// The node that ran it.
    pub node: String,
    /// Seconds from submission to the answer.
    pub seconds: f64,
}

/// Removes the probe's files when dropped.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
        }
    }
}

impl SlurmExecutor {
    /// Runs the probe job and waits for its answer (`probe_timeout_s` at
    /// most, queue wait included).
    pub fn probe(&self, dataset_dir: &Path) -> Result<ProbeReport, ExecutorError> {
        let cluster = self.cluster();
        let settings = cluster.settings();
        let nonce = job::nonce();
        let short = job::short(&nonce).to_string();
        let token_file = cluster.run_dir().join(format!(".nas-probe-{short}"));
        let dir = settings.shared_dir.join(format!("probe-{short}"));
        let _cleanup = Cleanup(vec![token_file.clone(), dir.clone()]);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ExecutorError::Io { what, path, source }
        };
        std::fs::write(&token_file, &nonce).map_err(io("cannot write", &token_file))?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io("cannot create", &dir))?;
        let request = ProbeRequest {
            format: FORMAT,
            nonce: nonce.clone(),
            run_dir: cluster.run_dir().to_path_buf(),
            config_dir: cluster.config_dir().to_path_buf(),
            plugins: cluster.plugins().to_vec(),
            token_file: token_file.clone(),
            token: nonce.clone(),
            dataset_dir: dataset_dir.to_path_buf(),
        };
        let path = dir.join(PROBE_FILE);
        let bytes = serde_json::to_vec_pretty(&request).map_err(|e| ExecutorError::Probe(e.to_string()))?;
        job::write_atomically(&path, &bytes).map_err(io("cannot write", &path))?;

        let mut spec = cluster.spec(&dir, &format!("nas-{}-probe-{short}", cluster.tag()), true);
        // The probe takes seconds; a short limit also lets it start sooner.
        spec.time_limit = Some(spec.time_limit.unwrap_or(Duration::MAX).min(Duration::from_secs(300)));
        eprintln!("checking that the Slurm nodes can run the evaluations (a probe job) ...");
        let started = Instant::now();
        let id = match cluster.slurm().submit(&spec) {
            Ok(id) => id,
            Err(SlurmError::Refused { message }) => {
                return Err(ExecutorError::Probe(format!(
                    "Slurm refused the probe job, and would refuse the evaluations: {message}. Check [executor] \
                     partition, account, qos, gres, mem_mb, cpus_per_task, time_limit_s and sbatch_args"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let answer = self.wait_for_answer(id, &dir, &nonce, started);
        if answer.is_err() {
            let _ = cluster.slurm().cancel(&[id]);
        }
        let answer = answer?;
        let failed: Vec<String> =
            answer.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.what, c.detail)).collect();
        if !failed.is_empty() {
            return Err(ExecutorError::Probe(format!(
                "the Slurm nodes cannot run this run's evaluations (probe job {id} on {}): {}. The run directory \
                 ([run] output_dir), the prepared datasets ($NAS_HOME/data), the plugin libraries and [executor] \
                 shared_dir must be on storage the nodes share, at the same paths",
                answer.node,
                failed.join("; ")
            )));
        }
        let report = ProbeReport { job_id: id.0, node: answer.node, seconds: started.elapsed().as_secs_f64() };
        eprintln!(
            "the Slurm nodes read the run directory and the dataset and create the evaluator (probe job {} on {}, {:.1} s)",
            report.job_id, report.node, report.seconds
        );
        Ok(report)
    }

    fn wait_for_answer(
        &self,
        id: JobId,
        dir: &Path,
        nonce: &str,
        started: Instant,
    ) -> Result<ProbeAnswer, ExecutorError> {
        let cluster = self.cluster();
        let settings = cluster.settings();
        let mut polled: Option<Instant> = None;
        let mut ended: Option<(Instant, String)> = None;
        let mut said_pending = false;
        let mut last = String::from("not asked yet");
        loop {
            if cluster.is_interrupted() {
                return Err(ExecutorError::Probe("interrupted while the probe job ran".into()));
            }
            let path = dir.join(ANSWER_FILE);
            match job::read_capped(&path, job::MAX_RESULT_BYTES) {
                Ok(Some(bytes)) => {
                    let answer: ProbeAnswer = serde_json::from_slice(&bytes)
                        .map_err(|e| ExecutorError::Probe(format!("the probe's answer {}: {e}", path.display())))?;
                    if answer.format != FORMAT || answer.nonce != nonce {
                        return Err(ExecutorError::Probe(format!(
                            "the probe's answer {} answers another probe: the nodes see another folder at that path",
                            path.display()
                        )));
                    }
                    return Ok(answer);
                }
                Ok(None) => {}
                Err(why) => return Err(ExecutorError::Probe(why)),
            }
            if let Some((since, what)) = &ended {
                if since.elapsed() >= settings.result_wait.min(Duration::from_secs(5)) {
                    // The accounting database may know the exit code by now.
                    let what = match cluster.slurm().status(id) {
                        Ok(Some(s)) if s.state.is_finished() && s.exit_code.is_some() => {
                            format!(
                                "ended {} (exit {})",
                                s.state,
                                s.exit_code.map(|e| e.to_string()).unwrap_or_default()
                            )
                        }
                        _ => what.clone(),
                    };
                    let tail = job::output_tail(dir, 400);
                    return Err(ExecutorError::Probe(format!(
                        "the probe job {id} {what} without an answer{}. Can the nodes run `{}` (set [executor] \
                         nas_command), and is {} on storage they share (set [executor] shared_dir)?",
                        if tail.is_empty() { String::new() } else { format!("; its output ends: {tail}") },
                        settings.nas_command.display(),
                        settings.shared_dir.display()
                    )));
                }
            } else if polled.is_none_or(|t| t.elapsed() >= settings.poll_interval) {
                polled = Some(Instant::now());
                match cluster.slurm().status(id) {
                    Ok(Some(s)) if s.state.is_finished() => {
                        let exit = s.exit_code.map(|e| format!(" (exit {e})")).unwrap_or_default();
                        ended = Some((Instant::now(), format!("ended {}{exit}", s.state)));
                    }
                    Ok(Some(s)) => {
                        if s.state == JobState::Pending && !said_pending && started.elapsed() > Duration::from_secs(10)
                        {
                            said_pending = true;
                            eprintln!(
                                "the probe job {id} waits in the queue ({})",
                                s.reason.clone().unwrap_or_default()
                            );
                        }
                        last = format!("{}{}", s.state, s.reason.map(|r| format!(", {r}")).unwrap_or_default());
                    }
                    Ok(None) => last = "unknown to Slurm".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() >= settings.probe_timeout {
                return Err(ExecutorError::Probe(format!(
                    "the probe job {id} gave no answer within probe_timeout_s = {} s (Slurm says: {last}); it is \
                     cancelled. Raise [executor] probe_timeout_s, or set probe = false to start without the check",
                    settings.probe_timeout.as_secs()
                )));
            }
            std::thread::sleep(cluster.tick());
        }
    }
}
