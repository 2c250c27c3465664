//! A persistent sandboxed server process (the training worker, the FLOP
//! meter): JSON requests on its stdin; JSON answers on descriptor 3, a pipe
//! that only the server's own code writes to (the candidate code it runs can
//! print to stdout, never to this pipe), each answer carrying the random id
//! of its request; stdout and stderr go to one bounded tail, kept for the
//! failure record when it dies.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::output::{self, LineEvent, Tail};
use crate::sandbox::{self, Capabilities, Launch, Policy, Sandboxed};

/// The longest answer line accepted (test-set predictions fit many times).
const MAX_ANSWER_LINE: usize = 64 << 20;

/// How much of the server's stdout and stderr is kept.
const OUTPUT_TAIL: usize = 32 << 10;

/// Why a request got no answer.
#[derive(Debug)]
pub enum WorkerError {
    /// The deadline passed.
    Timeout,
    /// The server exited or closed its answer channel.
    Died(String),
    /// Writing the request failed.
    Io(String),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Timeout => f.write_str("no answer before the deadline"),
            WorkerError::Died(s) => write!(f, "the process died: {s}"),
            WorkerError::Io(s) => write!(f, "talking to the process failed: {s}"),
        }
    }
}

/// A running server.
pub struct Server {
    proc: Sandboxed,
    stdin: std::fs::File,
    answers: Receiver<LineEvent>,
    output: Tail,
    /// The load request whose data it holds (the training worker).
    pub loaded: Option<Value>,
}

/// A fresh random request id (128 bits, hex).
pub fn random_id() -> String {
    format!("{:016x}{:016x}", crate::held_out::random_u64(), crate::held_out::random_u64())
}

impl Server {
    /// Starts `program args` in the sandbox: stdin a request pipe, stdout and
    /// stderr one bounded tail, descriptor 3 the answer pipe, `extra_fds` at
    /// 4, 5, ...
    pub fn start(
        program: PathBuf,
        args: Vec<std::ffi::OsString>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        extra_fds: Vec<OwnedFd>,
        policy: &Policy,
        caps: &Capabilities,
    ) -> std::io::Result<Server> {
        let (req_r, req_w) = sandbox::pipe()?;
        let (out_r, out_w) = sandbox::pipe()?;
        let (ans_r, ans_w) = sandbox::pipe()?;
        let out_w2 = out_w.try_clone()?;
        let mut fds = vec![req_r, out_w, out_w2, ans_w];
        fds.extend(extra_fds);
        let launch = Launch { program, args, env, cwd, fds };
        let proc = sandbox::spawn(launch, policy, caps)?;
        set_nonblocking(&req_w)?;
        Ok(Server {
            proc,
            stdin: std::fs::File::from(req_w),
            answers: output::spawn_lines(ans_r, MAX_ANSWER_LINE),
            output: Tail::spawn(out_r, OUTPUT_TAIL),
            loaded: None,
        })
    }

    /// Sends one request (its `id` set here) without waiting for the answer;
    /// returns the id.
    pub fn send(&mut self, req: &Value, timeout: Duration) -> Result<String, WorkerError> {
        // Drop answers left over from an earlier request.
        while self.answers.try_recv().is_ok() {}
        let id = random_id();
        let mut req = req.clone();
        if let Some(obj) = req.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        let text = format!("{req}\n");
        if let Err(e) = write_all_until(&mut self.stdin, text.as_bytes(), Instant::now() + timeout) {
            return Err(self.died_or(WorkerError::Io(e.to_string())));
        }
        Ok(id)
    }

    /// Waits for the answer to request `id` until `timeout`; lines that are
    /// not that answer are skipped.
    pub fn receive(&mut self, id: &str, timeout: Duration) -> Result<Value, WorkerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(LineEvent::Line(line)) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["id"].as_str() == Some(id) => return Ok(v),
                    _ => continue,
                },
                Ok(LineEvent::TooLong(_)) => continue,
                Err(RecvTimeoutError::Timeout) => return Err(WorkerError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.died_or(WorkerError::Died("it closed its answer channel".into())));
                }
            }
        }
    }

    /// Sends one request and waits for its answer until `timeout`.
    pub fn request(&mut self, req: &Value, timeout: Duration) -> Result<Value, WorkerError> {
        let started = Instant::now();
        let id = self.send(req, timeout)?;
        self.receive(&id, timeout.saturating_sub(started.elapsed()))
    }

    fn died_or(&mut self, other: WorkerError) -> WorkerError {
        for _ in 0..50 {
            if let Ok(Some(s)) = self.proc.try_wait() {
                use std::os::unix::process::ExitStatusExt;
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
        matches!(self.proc.try_wait(), Ok(None))
    }

    /// Whether the memory limit's OOM killer fired in its tree.
    pub fn oom_killed(&self) -> bool {
        self.proc.oom_killed()
    }

    /// The last of what it wrote on stdout and stderr.
    pub fn output_tail(&self) -> String {
        self.output.wait_closed(Duration::from_millis(100));
        self.output.text(8 << 10)
    }

    /// Kills the whole tree and reaps it.
    pub fn shutdown(self) {
        self.proc.kill_all();
        drop(self.proc);
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes all of `data` to a non-blocking pipe, waiting for room until `deadline`.
fn write_all_until(f: &mut std::fs::File, mut data: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !data.is_empty() {
        match f.write(data) {
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "pipe closed")),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the process does not read"));
                }
                let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: poll on one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
