//! The warm checker: a sandboxed Python that imported torch once (the
//! zygote, `python/zygote.py`) and gives each candidate a fresh child of
//! itself (a fork) that runs `check.py` exactly as a cold checker would.
//!
//! The zygote starts in the same sandbox as a cold checker and is the first
//! process of its PID namespace; its policy lets it write only the directory
//! that holds the candidates' directories, and each child restricts itself
//! further (a stacked Landlock ruleset) to the cold checker's read rules and
//! its own candidate directory. Requests go on descriptor 0, a unix
//! seqpacket socket, each with the write ends of two fresh pipes attached
//! (the check's output and its answer channel, read here into bounded tails
//! as for a cold checker); the zygote answers on descriptor 3 with the
//! child's wait status, its CPU time and whether it ran past its time limit,
//! after it killed everything the child left in the namespace. The child
//! never holds the request socket or the zygote's answer channel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::output::{self, LineEvent, Tail};
use crate::sandbox::{self, Capabilities, Launch, Policy, Sandboxed};

/// How much of the zygote's own output is kept (for its failure message).
const OUTPUT_TAIL: usize = 16 << 10;

/// Why the zygote gave no verdict on a check (never the candidate's failure).
#[derive(Debug)]
pub enum ZygoteError {
    /// It ended (or closed its answer channel).
    Died(String),
    /// It did not answer in time.
    Hung,
    /// The child failed before the candidate's code ran.
    Setup(String),
    /// Talking to it failed.
    Io(String),
}

impl std::fmt::Display for ZygoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZygoteError::Died(s) => write!(f, "it died ({s})"),
            ZygoteError::Hung => f.write_str("it did not answer in time"),
            ZygoteError::Setup(s) => write!(f, "the child's setup failed: {s}"),
            ZygoteError::Io(s) => write!(f, "{s}"),
        }
    }
}

/// How a check in a child ended, as the zygote saw it.
#[derive(Debug)]
pub struct Ended {
    /// The child's exit status; `None` when it ran past its time limit (and
    /// was killed with everything it started).
    pub status: Option<ExitStatus>,
    /// CPU time of the child (and the children it waited for).
    pub cpu: Duration,
    /// Whether the memory limit's OOM killer fired during the check.
    pub oom: bool,
}

/// A running zygote.
pub struct Zygote {
    proc: Sandboxed,
    control: OwnedFd,
    answers: Receiver<LineEvent>,
    output: Tail,
    /// What it was started for (the dataset it hides, the device files it may open).
    pub key: Value,
    /// Checks it answered.
    pub served: u64,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("pid", &self.proc.id()).field("served", &self.served).finish()
    }
}

/// A unix seqpacket socket pair, both ends close-on-exec.
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is valid for two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` as one message with `fds` attached (SCM_RIGHTS).
fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header and `payload` bytes of
    // data (CMSG_SPACE above); CMSG_FIRSTHDR points into it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
    }
    loop {
        // SAFETY: `msg` is a valid msghdr whose buffers live through the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return if r as usize == data.len() {
                Ok(())
            } else {
                Err(std::io::Error::other("the request was cut short"))
            };
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Zygote {
    /// Starts `python -I zygote.py config` in the sandbox of `policy`:
    /// descriptor 0 the request socket, 1 and 2 a bounded tail, 3 the
    /// answer pipe. Does not wait for it to import torch ([`Zygote::wait_ready`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        python: PathBuf,
        args: Vec<std::ffi::OsString>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        policy: &Policy,
        caps: &Capabilities,
        key: Value,
    ) -> std::io::Result<Zygote> {
        let (host_end, zygote_end) = seqpacket_pair()?;
        let (out_r, out_w) = sandbox::pipe()?;
        let (ans_r, ans_w) = sandbox::pipe()?;
        let out_w2 = out_w.try_clone()?;
        let launch = Launch { program: python, args, env, cwd, fds: vec![zygote_end, out_w, out_w2, ans_w] };
        let proc = sandbox::spawn(launch, policy, caps)?;
        Ok(Zygote {
            proc,
            control: host_end,
            answers: output::spawn_lines(ans_r, 1 << 20),
            output: Tail::spawn(out_r, OUTPUT_TAIL),
            key,
            served: 0,
        })
    }

    /// Waits until it has imported torch and serves (`timeout` at most).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(LineEvent::Line(line)) => {
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    if v["ready"] == Value::Bool(true) {
                        return Ok(());
                    }
                    if v["ready"] == Value::Bool(false) {
                        return Err(format!("it refused to serve: {}", v["error"]));
                    }
                }
                Ok(LineEvent::TooLong(_)) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("not ready after {:.0} s: {}", timeout.as_secs_f64(), self.output_tail()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: {}", self.died_reason(), self.output_tail()));
                }
            }
        }
    }

    /// Runs one check: `req` (its `id` set here) with `out_w` and `ans_w`
    /// handed to the child as its output and answer descriptors. Waits for
    /// the zygote's answer until `deadline` (the zygote enforces the check's
    /// own time limit, `timeout_s` in `req`, before it).
    pub fn check(
        &mut self,
        req: &Value,
        out_w: OwnedFd,
        ans_w: OwnedFd,
        deadline: Instant,
    ) -> Result<Ended, ZygoteError> {
        while self.answers.try_recv().is_ok() {}
        let id = crate::worker::random_id();
        let mut req = req.clone();
        if let Some(obj) = req.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        let oom_before = self.proc.oom_kill_count();
        let text = req.to_string();
        let sent = send_with_fds(self.control.as_raw_fd(), text.as_bytes(), &[out_w.as_raw_fd(), ans_w.as_raw_fd()]);
        // Only the zygote (and, through it, the child) holds the write ends now.
        drop((out_w, ans_w));
        if let Err(e) = sent {
            return Err(if self.alive() {
                ZygoteError::Io(format!("sending the request: {e}"))
            } else {
                ZygoteError::Died(self.died_reason())
            });
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(LineEvent::Line(line)) => {
                    let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                    if v["id"].as_str() != Some(id.as_str()) {
                        continue;
                    }
                    self.served += 1;
                    if let Some(e) = v["setup_error"].as_str() {
                        return Err(ZygoteError::Setup(e.chars().take(2000).collect()));
                    }
                    let Some(raw) = v["status"].as_i64() else {
                        return Err(ZygoteError::Io(format!("an answer without a status: {line}")));
                    };
                    let timeout = v["timeout"] == Value::Bool(true);
                    let cpu = Duration::from_secs_f64(v["cpu_s"].as_f64().unwrap_or(0.0).max(0.0));
                    let oom = self.proc.oom_kill_count() > oom_before;
                    let status = (!timeout).then(|| ExitStatus::from_raw(raw as i32));
                    return Ok(Ended { status, cpu, oom });
                }
                Ok(LineEvent::TooLong(_)) => {}
                Err(RecvTimeoutError::Timeout) => return Err(ZygoteError::Hung),
                Err(RecvTimeoutError::Disconnected) => return Err(ZygoteError::Died(self.died_reason())),
            }
        }
    }

    fn died_reason(&mut self) -> String {
        for _ in 0..100 {
            if let Ok(Some(s)) = self.proc.try_wait() {
                return match s.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit status {}", s.code().unwrap_or(-1)),
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "it closed its answer channel".into()
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.proc.try_wait(), Ok(None))
    }

    /// The last of its own output.
    pub fn output_tail(&self) -> String {
        self.output.wait_closed(Duration::from_millis(100));
        self.output.text(2000)
    }

    /// Kills it with its whole namespace and reaps it.
    pub fn shutdown(self) {
        self.proc.kill_all();
        drop(self.proc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Receives one message and the descriptors attached to it.
    fn recv_with_fds(sock: RawFd) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut data = vec![0u8; 4096];
        let mut control = vec![0u64; 64];
        let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
        // SAFETY: a zeroed msghdr is valid; its buffers outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(control.as_slice()) as _;
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(sock, &mut msg, 0) };
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        data.truncate(n as usize);
        let mut fds = Vec::new();
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                    let p = libc::CMSG_DATA(c).cast::<RawFd>();
                    for i in 0..n {
                        fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        (data, fds)
    }

    #[test]
    fn a_request_carries_its_pipes_to_the_other_end() {
        let (host, zygote) = seqpacket_pair().expect("socketpair");
        let (r1, w1) = sandbox::pipe().expect("pipe");
        let (r2, w2) = sandbox::pipe().expect("pipe");
        send_with_fds(host.as_raw_fd(), b"{\"id\":\"x\"}", &[w1.as_raw_fd(), w2.as_raw_fd()]).expect("send");
        drop((w1, w2));
        let (data, fds) = recv_with_fds(zygote.as_raw_fd());
        assert_eq!(data, b"{\"id\":\"x\"}");
        assert_eq!(fds.len(), 2);
        for (fd, text) in fds.into_iter().zip(["output", "answer"]) {
            std::fs::File::from(fd).write_all(text.as_bytes()).expect("write through the passed descriptor");
        }
        for (r, text) in [(r1, "output"), (r2, "answer")] {
            let mut got = String::new();
            std::fs::File::from(r).read_to_string(&mut got).expect("read");
            assert_eq!(got, text, "what the other end wrote arrives on the host's pipe");
        }
    }
}
