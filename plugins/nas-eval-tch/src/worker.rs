//! The handle on the persistent training worker: JSON lines over its
//! stdin/stdout, a deadline per request, and the stderr tail kept for the
//! failure record when it dies.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{self, Capabilities, Jail, Policy};

/// Why a request got no answer.
#[derive(Debug)]
pub enum WorkerError {
    /// The deadline passed.
    Timeout,
    /// The worker exited or closed its output.
    Died(String),
    /// Writing the request failed.
    Io(String),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Timeout => f.write_str("no answer before the deadline"),
            WorkerError::Died(s) => write!(f, "the worker died: {s}"),
            WorkerError::Io(s) => write!(f, "talking to the worker failed: {s}"),
        }
    }
}

/// A running worker.
pub struct WorkerProc {
    child: Child,
    jail: Jail,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The load request whose dataset it holds.
    pub loaded: Option<Value>,
}

impl WorkerProc {
    /// Starts `cmd` in the sandbox with piped stdio.
    pub fn start(mut cmd: Command, policy: &Policy, caps: &Capabilities) -> std::io::Result<WorkerProc> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, jail) = sandbox::spawn(cmd, policy, caps)?;
        let stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let stderr_pipe = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let buf = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let Ok(mut b) = buf.lock() else { break };
                b.push_back(line.chars().take(2000).collect());
                while b.len() > 60 {
                    b.pop_front();
                }
            }
        });
        Ok(WorkerProc { child, jail, stdin, lines, stderr, loaded: None })
    }

    /// Sends one request and waits for its answer until `timeout`.
    pub fn request(&mut self, req: &Value, timeout: Duration) -> Result<Value, WorkerError> {
        // Drop answers left over from an earlier request.
        while self.lines.try_recv().is_ok() {}
        let text = format!("{req}\n");
        if let Err(e) = self.stdin.write_all(text.as_bytes()).and_then(|()| self.stdin.flush()) {
            return Err(self.died_or(WorkerError::Io(e.to_string())));
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) => return Ok(v),
                    // Not an answer (e.g. a library printing on stdout): skip it.
                    Err(_) => continue,
                },
                Err(RecvTimeoutError::Timeout) => return Err(WorkerError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.died_or(WorkerError::Died("it closed its output".into())));
                }
            }
        }
    }

    fn died_or(&mut self, other: WorkerError) -> WorkerError {
        use std::os::unix::process::ExitStatusExt;
        for _ in 0..50 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return WorkerError::Died(match s.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit status {}", s.code().unwrap_or(-1)),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        other
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the memory limit's OOM killer fired in its tree.
    pub fn oom_killed(&self) -> bool {
        self.jail.oom_killed()
    }

    /// The last lines it wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().map(|b| b.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default()
    }

    /// Kills the whole tree and reaps it.
    pub fn shutdown(mut self) {
        self.jail.kill_all();
        let _ = self.child.wait();
    }
}
