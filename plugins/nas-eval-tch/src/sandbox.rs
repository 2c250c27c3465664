//! The sandbox every process that runs candidate code starts in.
//!
//! Applied between `fork` and `exec` (in `pre_exec`, with system calls only):
//!
//! - its own session and process group (`setsid`), and death with the host
//!   (`PR_SET_PDEATHSIG`);
//! - a control group per process tree (cgroup v1 or v2) with a process count
//!   limit (fork bombs) and a memory limit, so the whole tree is found and
//!   killed and an out-of-memory kill is seen as such; without a writable
//!   cgroup hierarchy, `RLIMIT_NPROC` and `RLIMIT_AS` stand in;
//! - resource limits: no core files, a file size limit, a CPU time limit;
//! - a new network namespace (no interfaces but a down loopback): no network;
//!   inside a new user namespace when not root;
//! - Landlock: read and execute only below the Python install, the libtorch
//!   install, the dataset and system library directories; write only below
//!   the scratch directory; on kernels with Landlock ABI ≥ 4 no TCP, ≥ 6 no
//!   signals to processes outside the sandbox.
//!
//! What is enforced on this machine is probed once ([`Capabilities::probe`])
//! and said in [`Capabilities::describe`]; see `docs/sandbox.md`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::landlock;

/// How the network is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetIsolation {
    /// A new network namespace (root).
    NetNamespace,
    /// A new user namespace holding a new network namespace (not root).
    UserNamespace,
    /// Not isolated: the kernel allows neither.
    None,
}

/// Which cgroup hierarchy is used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CgroupKind {
    /// v1: separate `pids` and `memory` hierarchies.
    V1 { pids: PathBuf, memory: PathBuf },
    /// v2: one unified hierarchy with `pids` and `memory` enabled below `base`.
    V2 { base: PathBuf },
}

/// What the sandbox can enforce on the running machine.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Landlock ABI version, when Landlock is enabled.
    pub landlock_abi: Option<u32>,
    /// How the network is cut off.
    pub net: NetIsolation,
    cgroups: Option<CgroupKind>,
    is_root: bool,
}

impl Capabilities {
    /// Probes the kernel once: Landlock, namespaces, cgroups.
    pub fn probe() -> Capabilities {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let net = probe_net();
        Capabilities { landlock_abi: landlock::abi_version(), net, cgroups: probe_cgroups(), is_root }
    }

    /// Whether process-tree control groups (process count and memory limits) are used.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// One paragraph saying what is and is not enforced here.
    pub fn describe(&self) -> String {
        let mut on = vec!["own session and process group, whole tree killed on timeout".to_string()];
        let mut off = Vec::new();
        match &self.cgroups {
            Some(CgroupKind::V1 { .. }) => on.push("cgroup v1 process count and memory limits".into()),
            Some(CgroupKind::V2 { .. }) => on.push("cgroup v2 process count and memory limits".into()),
            None => {
                off.push("no writable cgroup hierarchy: memory by RLIMIT_AS only, processes by RLIMIT_NPROC only (which root ignores)".to_string());
            }
        }
        on.push("rlimits (core 0, file size, CPU time)".into());
        match self.net {
            NetIsolation::NetNamespace => on.push("no network (new network namespace)".into()),
            NetIsolation::UserNamespace => on.push("no network (new user + network namespace)".into()),
            NetIsolation::None => off.push("network NOT isolated (namespaces not permitted)".into()),
        }
        match self.landlock_abi {
            Some(abi) => {
                on.push(format!(
                    "Landlock ABI {abi}: reads limited to the toolchain, dataset and scratch, writes to scratch"
                ));
                if abi < 4 {
                    off.push("Landlock < 4: TCP not restricted by Landlock".into());
                }
                if abi < 6 {
                    off.push("Landlock < 6: signals to outside processes not restricted".into());
                }
            }
            None => off.push("Landlock NOT available: the filesystem is NOT confined".into()),
        }
        let mut s = format!("sandbox: {}", on.join("; "));
        if !off.is_empty() {
            s.push_str(&format!(". NOT enforced: {}", off.join("; ")));
        }
        if self.is_root && self.net != NetIsolation::UserNamespace {
            s.push_str(". Candidates run as root (uid 0) inside these limits");
        }
        s
    }
}

fn probe_net() -> NetIsolation {
    for (mode, flags) in [
        (NetIsolation::NetNamespace, libc::CLONE_NEWNET),
        (NetIsolation::UserNamespace, libc::CLONE_NEWUSER | libc::CLONE_NEWNET),
    ] {
        let mut cmd = Command::new("/bin/true");
        // SAFETY: the closure only makes a system call (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(flags) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if cmd.status().map(|s| s.success()).unwrap_or(false) {
            return mode;
        }
    }
    NetIsolation::None
}

fn probe_cgroups() -> Option<CgroupKind> {
    let root = Path::new("/sys/fs/cgroup");
    let name = format!("nas-eval-{}", std::process::id());
    if root.join("cgroup.controllers").exists() {
        // v2: a child of the root with pids and memory delegated.
        let ok = std::fs::write(root.join("cgroup.subtree_control"), "+pids +memory").is_ok();
        let kind = CgroupKind::V2 { base: root.join(&name) };
        // The probe leaves nothing behind; `spawn` makes the directories again.
        let usable = ok && ensure_base(&kind).is_ok();
        remove_base(&kind);
        return usable.then_some(kind);
    }
    let kind = CgroupKind::V1 { pids: root.join("pids").join(&name), memory: root.join("memory").join(&name) };
    let usable = ensure_base(&kind).is_ok();
    remove_base(&kind);
    usable.then_some(kind)
}

/// Creates this process's base control group directories.
fn ensure_base(kind: &CgroupKind) -> std::io::Result<()> {
    match kind {
        CgroupKind::V1 { pids, memory } => {
            std::fs::create_dir_all(pids)?;
            std::fs::create_dir_all(memory)
        }
        CgroupKind::V2 { base } => {
            std::fs::create_dir_all(base)?;
            std::fs::write(base.join("cgroup.subtree_control"), "+pids +memory")
        }
    }
}

/// Removes the base directories (only succeeds once they are empty).
fn remove_base(kind: &CgroupKind) {
    match kind {
        CgroupKind::V1 { pids, memory } => {
            let _ = std::fs::remove_dir(pids);
            let _ = std::fs::remove_dir(memory);
        }
        CgroupKind::V2 { base } => {
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// What one sandboxed process tree may do.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Directories and files it may read (and execute).
    pub read: Vec<PathBuf>,
    /// Directories it may write.
    pub write: Vec<PathBuf>,
    /// Memory limit for the whole tree.
    pub memory_limit_bytes: Option<u64>,
    /// CPU seconds per process (`RLIMIT_CPU`).
    pub cpu_time_s: Option<u64>,
    /// Processes (and threads) in the tree.
    pub max_processes: u64,
    /// Largest file it may write.
    pub max_file_bytes: u64,
    /// Whether the tree may use a GPU (no `RLIMIT_AS`: CUDA reserves address space).
    pub gpu: bool,
}

/// A running sandboxed process tree: its control groups, for kill and cleanup.
#[derive(Debug)]
pub struct Jail {
    pid: i32,
    cgroups: Vec<PathBuf>,
    v2: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Starts `cmd` inside the sandbox.
pub fn spawn(mut cmd: Command, policy: &Policy, caps: &Capabilities) -> std::io::Result<(Child, Jail)> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Control groups, created here and joined by the child before exec.
    let mut cgroups = Vec::new();
    let mut join_fds: Vec<OwnedFd> = Vec::new();
    let mut v2 = false;
    if let Some(kind) = &caps.cgroups {
        ensure_base(kind)?;
        let mem = policy.memory_limit_bytes.map(|b| b.to_string());
        let procs = policy.max_processes.to_string();
        let made = match kind {
            CgroupKind::V1 { pids, memory } => {
                let p = pids.join(format!("t{n}"));
                let m = memory.join(format!("t{n}"));
                std::fs::create_dir_all(&p)?;
                std::fs::create_dir_all(&m)?;
                std::fs::write(p.join("pids.max"), &procs)?;
                if let Some(mem) = &mem {
                    std::fs::write(m.join("memory.limit_in_bytes"), mem)?;
                    let _ = std::fs::write(m.join("memory.memsw.limit_in_bytes"), mem);
                }
                vec![p, m]
            }
            CgroupKind::V2 { base } => {
                v2 = true;
                let g = base.join(format!("t{n}"));
                std::fs::create_dir_all(&g)?;
                std::fs::write(g.join("pids.max"), &procs)?;
                if let Some(mem) = &mem {
                    std::fs::write(g.join("memory.max"), mem)?;
                    let _ = std::fs::write(g.join("memory.swap.max"), "0");
                }
                vec![g]
            }
        };
        for g in &made {
            let f = std::fs::OpenOptions::new().write(true).open(g.join("cgroup.procs"))?;
            join_fds.push(f.into());
        }
        cgroups = made;
    }
    let join: Vec<i32> = join_fds.iter().map(|f| f.as_raw_fd()).collect();

    // Landlock, prepared here, applied in the child.
    let ruleset = match caps.landlock_abi {
        Some(abi) => {
            let read: Vec<&Path> = policy.read.iter().map(|p| p.as_path()).collect();
            let write: Vec<&Path> = policy.write.iter().map(|p| p.as_path()).collect();
            Some(landlock::Ruleset::new(abi, &read, &write)?)
        }
        None => None,
    };
    let ruleset_fd = ruleset.as_ref().map(|r| r.raw_fd());

    // User namespace maps, prepared here.
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let uid_map = CString::new(format!("0 {uid} 1")).expect("no NUL in a number");
    let gid_map = CString::new(format!("0 {gid} 1")).expect("no NUL in a number");
    let net = caps.net;
    let use_as = caps.cgroups.is_none() && !policy.gpu;
    let memory = policy.memory_limit_bytes;
    let cpu = policy.cpu_time_s;
    let nproc = policy.max_processes;
    let fsize = policy.max_file_bytes;
    let no_cgroup = caps.cgroups.is_none();

    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls on data prepared before the fork; it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            for fd in &join {
                let zero = b"0";
                if libc::write(*fd, zero.as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let set = |res, v: u64| {
                let lim = libc::rlimit { rlim_cur: v, rlim_max: v };
                libc::setrlimit(res, &lim)
            };
            set(libc::RLIMIT_CORE, 0);
            set(libc::RLIMIT_FSIZE, fsize);
            if let Some(c) = cpu {
                // Soft limit sends SIGXCPU; the hard limit a second later SIGKILL.
                let lim = libc::rlimit { rlim_cur: c, rlim_max: c + 1 };
                libc::setrlimit(libc::RLIMIT_CPU, &lim);
            }
            if no_cgroup {
                set(libc::RLIMIT_NPROC, nproc);
                if let (true, Some(m)) = (use_as, memory) {
                    set(libc::RLIMIT_AS, m);
                }
            }
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
                    write_file(c"/proc/self/setgroups", c"deny".to_bytes());
                    write_file(c"/proc/self/uid_map", uid_map.as_bytes());
                    write_file(c"/proc/self/gid_map", gid_map.as_bytes());
                }
                NetIsolation::None => {}
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = ruleset_fd {
                landlock::restrict_self(fd)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(ruleset);
    drop(join_fds);
    let pid = child.id() as i32;
    Ok((child, Jail { pid, cgroups, v2 }))
}

/// Writes `data` to `path` with raw system calls (for `pre_exec`).
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) {
    // SAFETY: `path` is NUL-terminated; `data` is valid for its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, data.as_ptr().cast(), data.len());
            libc::close(fd);
        }
    }
}

impl Jail {
    /// Kills the whole tree: the process group, then every process left in
    /// its control groups (which also holds those that left the group).
    pub fn kill_all(&self) {
        // SAFETY: signalling a process group we created; a stale id only fails.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
        if self.cgroups.is_empty() {
            return;
        }
        if self.v2 {
            let _ = std::fs::write(self.cgroups[0].join("cgroup.kill"), "1");
        }
        for _ in 0..200 {
            let mut any = false;
            for g in &self.cgroups {
                if let Ok(text) = std::fs::read_to_string(g.join("cgroup.procs")) {
                    for pid in text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                        any = true;
                        // SAFETY: the pid is a member of our sandbox's control group.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the kernel's out-of-memory killer fired in this tree.
    pub fn oom_killed(&self) -> bool {
        for g in &self.cgroups {
            for (file, key) in [("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")] {
                if let Ok(text) = std::fs::read_to_string(g.join(file)) {
                    for line in text.lines() {
                        let mut it = line.split_whitespace();
                        if it.next() == Some(key) && it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) > 0 {
                            return true;
                        }
                    }
                }
            }
            if let Ok(text) = std::fs::read_to_string(g.join("memory.failcnt")) {
                if text.trim().parse::<u64>().unwrap_or(0) > 0 && !self.alive() {
                    return true;
                }
            }
        }
        false
    }

    /// Peak memory of the tree, when the control group records it.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        for g in &self.cgroups {
            for file in ["memory.max_usage_in_bytes", "memory.peak"] {
                if let Ok(text) = std::fs::read_to_string(g.join(file)) {
                    if let Ok(v) = text.trim().parse::<u64>() {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks existence.
        unsafe { libc::kill(self.pid, 0) == 0 }
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        self.kill_all();
        for g in &self.cgroups {
            for _ in 0..50 {
                if std::fs::remove_dir(g).is_ok() || !g.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Removes this process's cgroup base directories (at exit of the evaluator).
pub fn cleanup_cgroups(caps: &Capabilities) {
    if let Some(kind) = &caps.cgroups {
        remove_base(kind);
    }
}
