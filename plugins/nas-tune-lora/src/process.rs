//! The trainer's child process: started in its own session (one process
//! group, killed whole on timeout or drop), dying with the host
//! (`PR_SET_PDEATHSIG`), without core files, and — where the kernel allows
//! it — in a new network namespace (no network at all). Its output is read
//! with bounded memory: progress lines up to a length limit, and the last
//! bytes of its standard error.
//!
//! The trainer runs the model's own libraries (transformers, peft) on files
//! the user chose, not candidate code, so this is containment rather than
//! the evaluator's full sandbox: no private root or Landlock, which would
//! have to let it read the virtualenv, the model cache and the GPU anyway.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How the trainer is cut off from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetIsolation {
    /// A new network namespace (the host is root).
    NetNamespace,
    /// A new user namespace holding a new network namespace.
    UserNamespace,
    /// Not isolated: the kernel allows neither here.
    None,
}

impl NetIsolation {
    /// A few words for logs and the adapter record.
    pub fn describe(self) -> &'static str {
        match self {
            NetIsolation::NetNamespace => "no network (own network namespace)",
            NetIsolation::UserNamespace => "no network (own user + network namespace)",
            NetIsolation::None => "network NOT isolated (namespaces not permitted here)",
        }
    }
}

static PROBED: OnceLock<NetIsolation> = OnceLock::new();

/// The strongest network isolation under which a process really starts
/// here, probed once with `/bin/true`.
pub fn net_isolation() -> NetIsolation {
    *PROBED.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let order: &[NetIsolation] = if root {
            &[NetIsolation::NetNamespace, NetIsolation::UserNamespace]
        } else {
            &[NetIsolation::UserNamespace]
        };
        for &net in order {
            let mut cmd = Command::new("/bin/true");
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            if contain(&mut cmd, net).is_err() {
                continue;
            }
            if cmd.status().is_ok_and(|s| s.success()) {
                return net;
            }
        }
        NetIsolation::None
    })
}

/// The system calls the child makes between fork and exec.
fn contain(cmd: &mut Command, net: NetIsolation) -> std::io::Result<()> {
    // SAFETY: getpid/getuid/getgid have no preconditions.
    let (parent, uid, gid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
    let cs = |s: String| CString::new(s).map_err(|_| std::io::Error::other("NUL in a map"));
    let maps = [
        (cs("/proc/self/setgroups".into())?, cs("deny".into())?),
        (cs("/proc/self/uid_map".into())?, cs(format!("{uid} {uid} 1"))?),
        (cs("/proc/self/gid_map".into())?, cs(format!("{gid} {gid} 1"))?),
    ];
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The host went away before the line above took effect.
            if libc::getppid() != parent {
                libc::_exit(111);
            }
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            match net {
                NetIsolation::NetNamespace => {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                NetIsolation::UserNamespace => {
                    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (path, text) in &maps {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let bytes = text.as_bytes();
                        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                        libc::close(fd);
                        if n != bytes.len() as isize {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                NetIsolation::None => {}
            }
            Ok(())
        });
    }
    Ok(())
}

/// What to run.
#[derive(Debug)]
pub struct Launch<'a> {
    /// The interpreter.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment (nothing else of the host's is passed).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: &'a Path,
    /// How to cut the network.
    pub net: NetIsolation,
    /// Longest progress line kept (longer ones are dropped whole).
    pub max_line: usize,
    /// Bytes of standard error kept.
    pub stderr_tail: usize,
    /// Copy each standard error line to the host's standard error.
    pub relay_stderr: bool,
}

/// A running trainer. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct Trainer {
    child: Child,
    pgid: i32,
    status: Option<ExitStatus>,
    /// Whether we killed it.
    pub killed: bool,
}

/// A line of the trainer's progress output.
#[derive(Debug)]
pub enum Line {
    /// One complete line.
    Text(String),
    /// A line longer than the limit, dropped (its length).
    TooLong(u64),
}

impl Trainer {
    /// Starts the trainer; its progress lines arrive on the receiver, its
    /// standard error's tail in the [`Tail`].
    pub fn spawn(launch: Launch<'_>) -> std::io::Result<(Trainer, Receiver<Line>, Tail)> {
        let mut cmd = Command::new(launch.program);
        cmd.args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        contain(&mut cmd, launch.net)?;
        let mut child = cmd.spawn()?;
        let pgid = child.id() as i32;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o, e),
            _ => {
                let mut t = Trainer { child, pgid, status: None, killed: false };
                t.kill();
                return Err(std::io::Error::other("the trainer's output pipes were not opened"));
            }
        };
        let lines = spawn_lines(stdout, launch.max_line);
        let tail = Tail::spawn(stderr, launch.stderr_tail, launch.relay_stderr);
        Ok((Trainer { child, pgid, status: None, killed: false }, lines, tail))
    }

    /// The trainer's process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the whole process group.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            self.killed = true;
            // SAFETY: the group is the trainer's own session, started by us.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }

    /// Waits for the trainer to end; what remains of its group is killed.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.status = Some(s);
        // SAFETY: as in `kill`; anything the trainer left in its group goes too.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        Ok(s)
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.kill();
        let _ = self.wait();
    }
}

/// How an exit status reads in an error message.
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(libc::SIGKILL)) => {
            "was killed by SIGKILL (the kernel's out-of-memory killer sends it; so may another process)".to_string()
        }
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended without a status".to_string(),
    }
}

fn spawn_lines(stdout: ChildStdout, max_line: usize) -> Receiver<Line> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || read_lines(stdout, max_line, &tx));
    rx
}

fn read_lines(mut from: impl Read, max_line: usize, tx: &Sender<Line>) {
    let mut chunk = vec![0u8; 64 << 10];
    let mut line: Vec<u8> = Vec::new();
    let mut dropping: Option<u64> = None;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for part in chunk[..n].split_inclusive(|&b| b == b'\n') {
            let (body, newline) = match part.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (part, false),
            };
            if let Some(len) = dropping.as_mut() {
                *len += body.len() as u64;
            } else if line.len() + body.len() > max_line {
                dropping = Some((line.len() + body.len()) as u64);
                line = Vec::new();
            } else {
                line.extend_from_slice(body);
            }
            if newline {
                let event = match dropping.take() {
                    Some(len) => Line::TooLong(len),
                    None => Line::Text(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned()),
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    buf: VecDeque<u8>,
    total: u64,
    closed: bool,
}

/// The last bytes written to the trainer's standard error.
#[derive(Debug, Clone)]
pub struct Tail {
    shared: Arc<(Mutex<Ring>, Condvar)>,
    cap: usize,
}

impl Tail {
    fn spawn(stderr: ChildStderr, cap: usize, relay: bool) -> Tail {
        let shared = Arc::new((Mutex::new(Ring::default()), Condvar::new()));
        let tail = Tail { shared: shared.clone(), cap };
        std::thread::spawn(move || {
            let mut from = stderr;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if relay {
                    eprint!("{}", String::from_utf8_lossy(&chunk[..n]));
                }
                let Ok(mut ring) = shared.0.lock() else { break };
                ring.total += n as u64;
                ring.buf.extend(&chunk[n.saturating_sub(cap)..n]);
                let excess = ring.buf.len().saturating_sub(cap);
                ring.buf.drain(..excess);
            }
            if let Ok(mut ring) = shared.0.lock() {
                ring.closed = true;
            }
            shared.1.notify_all();
        });
        tail
    }

    /// Waits until the pipe closes, `timeout` at most.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut ring) = self.shared.0.lock() else { return false };
        while !ring.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.shared.1.wait_timeout(ring, left) {
                Ok((r, _)) => ring = r,
                Err(_) => return false,
            }
        }
        true
    }

    /// The kept text (its last `max` bytes at most), saying how much came before.
    pub fn text(&self, max: usize) -> String {
        let Ok(ring) = self.shared.0.lock() else { return String::new() };
        let bytes: Vec<u8> = ring.buf.iter().copied().collect();
        let keep = &bytes[bytes.len().saturating_sub(max.min(self.cap))..];
        let text = String::from_utf8_lossy(keep).trim_end().to_string();
        let dropped = ring.total.saturating_sub(keep.len() as u64);
        if dropped > 0 {
            format!("[... {dropped} bytes before this not kept]\n{text}")
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Launch<'static> {
        Launch {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: Path::new("/"),
            net: net_isolation(),
            max_line: 64,
            stderr_tail: 100,
            relay_stderr: false,
        }
    }

    #[test]
    fn lines_arrive_overlong_ones_are_dropped_and_the_stderr_tail_is_bounded() {
        let script = "echo one; head -c 1000 /dev/zero | tr '\\0' x; echo; echo two; \
                      i=0; while [ $i -lt 100 ]; do echo err-line-$i >&2; i=$((i+1)); done";
        let (mut t, rx, tail) = Trainer::spawn(sh(script)).expect("spawns");
        let got: Vec<Line> = rx.iter().collect();
        assert!(t.wait().expect("waits").success());
        assert!(matches!(&got[0], Line::Text(l) if l == "one"), "{got:?}");
        assert!(matches!(&got[1], Line::TooLong(1000)), "{got:?}");
        assert!(matches!(&got[2], Line::Text(l) if l == "two"), "{got:?}");
        assert!(tail.wait_closed(Duration::from_secs(5)));
        let text = tail.text(100);
        assert!(text.ends_with("err-line-99"), "{text}");
        assert!(text.starts_with("[... "), "{text}");
    }

    #[test]
    fn killing_the_trainer_kills_its_whole_process_group() {
        // A grandchild that would outlive its parent.
        let (mut t, rx, _tail) = Trainer::spawn(sh("sleep 300 & echo $!; wait")).expect("spawns");
        let Ok(Line::Text(pid)) = rx.recv_timeout(Duration::from_secs(10)) else { panic!("no pid line") };
        let grandchild: i32 = pid.trim().parse().expect("a pid");
        t.kill();
        let status = t.wait().expect("waits");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(t.killed);
        for _ in 0..200 {
            // Gone, or a zombie waiting for whoever adopted it to reap it.
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the grandchild {grandchild} outlived the kill");
    }

    #[test]
    fn a_user_namespace_maps_the_trainer_to_its_own_user_without_network() {
        // The path taken when the host is not root, tried here whatever the user.
        let mut launch = sh("id -u; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '");
        launch.net = NetIsolation::UserNamespace;
        let Ok((mut t, rx, tail)) = Trainer::spawn(launch) else {
            eprintln!("user namespaces are not permitted here");
            return;
        };
        let lines: Vec<String> = rx.iter().filter_map(|l| if let Line::Text(s) = l { Some(s) } else { None }).collect();
        let status = t.wait().expect("waits");
        tail.wait_closed(Duration::from_secs(5));
        assert!(status.success(), "{}", tail.text(1000));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(lines, vec![uid.to_string(), "lo".to_string()]);
    }

    #[test]
    fn the_trainer_has_no_network_where_namespaces_are_permitted() {
        let net = net_isolation();
        if net == NetIsolation::None {
            eprintln!("namespaces are not permitted here: {}", net.describe());
            return;
        }
        // A new network namespace holds only a loopback device, and it is down.
        let (mut t, rx, _tail) =
            Trainer::spawn(sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")).expect("spawns");
        let names: Vec<String> = rx.iter().filter_map(|l| if let Line::Text(s) = l { Some(s) } else { None }).collect();
        assert!(t.wait().expect("waits").success());
        assert_eq!(names, vec!["lo".to_string()], "{}", net.describe());
    }
}
