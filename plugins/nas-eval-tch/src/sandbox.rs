//! The sandbox every process that runs candidate code starts in.
//!
//! A process is started by [`spawn`] with our own `clone`, not
//! `std::process::Command`, so that it is the first process (PID 1) of its
//! own PID namespace: when it ends, or is killed, the kernel kills everything
//! it started, grandchildren in their own sessions included; and it dies with
//! the host (`PR_SET_PDEATHSIG`). Between `clone` and `execve`, with system
//! calls only, the child:
//!
//! 1. puts the descriptors it is given at 0, 1, 2, 3, ... and marks every
//!    other descriptor close-on-exec (nothing the host left open is
//!    inherited); resets signal handling; starts its own session;
//! 2. joins its control groups (process count and memory limits) and sets
//!    rlimits (no core files, file size, CPU time, no realtime priority);
//! 3. in new user (when the host is not root), mount, network, IPC and UTS
//!    namespaces: builds a private root from a tmpfs with only the allowed
//!    paths bound in (read-only unless writable by the policy; `nosuid`,
//!    `nodev` and, where writable, `noexec`), the hidden paths (datasets)
//!    covered by empty read-only tmpfs, a minimal `/dev` with only the
//!    allowed device nodes, and a fresh `/proc` that shows only its own
//!    namespace; then `pivot_root` into it — nothing else of the machine is
//!    reachable, unix sockets included;
//! 4. drops every capability and, when the host is root, becomes `nobody`
//!    (65534); sets `PR_SET_NO_NEW_PRIVS`;
//! 5. applies Landlock: read and execute only below the allowed paths
//!    (minus the hidden ones), write only below the writable ones, no TCP,
//!    no signals or abstract unix sockets reaching outside (by ABI).
//!
//! What is enforced on this machine is probed once ([`Capabilities::probe`])
//! by starting a real sandboxed process at each isolation level, and said in
//! [`Capabilities::describe`]; see `docs/sandbox.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::landlock;

/// The user and group candidates run as when the host is root.
pub const NOBODY: u32 = 65534;

/// How far a sandboxed process is isolated from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Own PID, mount, network, IPC and UTS namespaces (and user namespace
    /// when the host is not root): a private root and `/proc`.
    Full {
        /// Whether a user namespace is used (the host is not root).
        user_ns: bool,
    },
    /// Only a network namespace (in a user namespace when not root).
    Network {
        /// Whether a user namespace is used.
        user_ns: bool,
    },
    /// No namespaces.
    None,
}

/// How the network is cut off (kept for callers that only ask this).
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
    /// How far processes are isolated.
    pub isolation: Isolation,
    /// How the network is cut off.
    pub net: NetIsolation,
    cgroups: Option<CgroupKind>,
    is_root: bool,
    /// Whether candidates run as `nobody` (the host is root and that works here).
    drop_root: bool,
    /// The directory new roots are built on (a mount point per process).
    root_dir: PathBuf,
}

static PROBE_DIRS: AtomicU64 = AtomicU64::new(0);

impl Capabilities {
    /// Probes the kernel with `/bin/true` (see [`Capabilities::probe_with`]),
    /// building sandbox roots below the system's temporary directory.
    pub fn probe() -> Capabilities {
        let n = PROBE_DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nas-sandbox-probe-{}-{n}", std::process::id()));
        let caps = Capabilities::probe_with(&dir, &crate::discover::system_read_paths(), Path::new("/bin/true"), &[]);
        let _ = std::fs::remove_dir_all(&dir);
        caps
    }

    /// Probes the kernel once: Landlock, control groups, and the strongest
    /// isolation under which `program args` (reading `read`) really runs.
    /// `work` is created and holds the mount point of sandbox roots; it must
    /// stay while the capabilities are used.
    pub fn probe_with(work: &Path, read: &[PathBuf], program: &Path, args: &[&str]) -> Capabilities {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        cleanup_stale_cgroups();
        let mut caps = Capabilities {
            landlock_abi: landlock::abi_version(),
            isolation: Isolation::None,
            net: NetIsolation::None,
            cgroups: probe_cgroups(),
            is_root,
            drop_root: false,
            root_dir: work.join(".root"),
        };
        if std::fs::create_dir_all(&caps.root_dir).is_err() {
            return caps;
        }
        let scratch = work.join(".probe");
        let _ = std::fs::create_dir_all(&scratch);
        let levels = [
            (Isolation::Full { user_ns: !is_root }, is_root),
            (Isolation::Network { user_ns: !is_root }, is_root),
            (Isolation::None, is_root),
            (Isolation::None, false),
        ];
        // `NAS_SANDBOX_MAX=network|none` starts lower (to exercise the fallbacks).
        let skip = match std::env::var("NAS_SANDBOX_MAX").as_deref() {
            Ok("network") => 1,
            Ok("none") => 2,
            _ => 0,
        };
        for (i, (isolation, drop_root)) in levels.into_iter().enumerate().skip(skip) {
            caps.isolation = isolation;
            caps.drop_root = drop_root;
            if drop_root {
                let _ = std::os::unix::fs::chown(&scratch, Some(NOBODY), Some(NOBODY));
            }
            if i + 1 == levels.len() || caps.runs(read, &scratch, false, program, args, None) {
                break;
            }
        }
        caps.net = match caps.isolation {
            Isolation::Full { user_ns: false } | Isolation::Network { user_ns: false } => NetIsolation::NetNamespace,
            Isolation::Full { user_ns: true } | Isolation::Network { user_ns: true } => NetIsolation::UserNamespace,
            Isolation::None => NetIsolation::None,
        };
        let _ = std::fs::remove_dir_all(&scratch);
        caps
    }

    /// Whether `program args` exits 0 within 10 s in a sandbox that reads
    /// `read` and writes `scratch` (a GPU tree when `gpu`), its standard
    /// error going to `stderr` when given, else to /dev/null.
    fn runs(
        &self,
        read: &[PathBuf],
        scratch: &Path,
        gpu: bool,
        program: &Path,
        args: &[&str],
        stderr: Option<std::fs::File>,
    ) -> bool {
        let policy = Policy {
            read: read.to_vec(),
            write: vec![scratch.to_path_buf(), PathBuf::from("/dev/null")],
            max_processes: 64,
            max_file_bytes: 1 << 20,
            gpu,
            ..Policy::default()
        };
        let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") else { return false };
        let mut fds: Vec<OwnedFd> = (0..3).filter_map(|_| null.try_clone().ok().map(OwnedFd::from)).collect();
        if let (Some(err), Some(slot)) = (stderr, fds.get_mut(2)) {
            *slot = err.into();
        }
        let launch = Launch {
            program: program.to_path_buf(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: scratch.to_path_buf(),
            fds,
        };
        let Ok(mut p) = spawn(launch, &policy, self) else { return false };
        for _ in 0..1000 {
            match p.try_wait() {
                Ok(Some(s)) => return s.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return false,
            }
        }
        false
    }

    /// Whether process-tree control groups (process count and memory limits) are used.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Whether sandboxed processes get their own PID namespace and private root.
    pub fn full_isolation(&self) -> bool {
        matches!(self.isolation, Isolation::Full { .. })
    }

    /// The user id candidates run as (on the host's side).
    pub fn candidate_uid(&self) -> u32 {
        if self.drop_root {
            NOBODY
        } else {
            // SAFETY: getuid has no preconditions.
            unsafe { libc::getuid() }
        }
    }

    /// Makes `dir` writable by sandboxed processes (owned by `nobody` when the
    /// host is root; already the host user's otherwise).
    pub fn make_writable(&self, dir: &Path) -> std::io::Result<()> {
        if self.drop_root {
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY))?;
        }
        Ok(())
    }

    /// One paragraph saying what is and is not enforced here.
    pub fn describe(&self) -> String {
        let mut on = Vec::new();
        let mut off = Vec::new();
        match self.isolation {
            Isolation::Full { user_ns } => {
                on.push(format!(
                    "own PID namespace (nothing outlives the sandbox or the host; /proc shows only its own processes); \
                     private root: only the toolchain and each process's own files bound in, datasets hidden, no unix \
                     socket outside reachable; own IPC and host name{}",
                    if user_ns { "; in a user namespace" } else { "" }
                ));
                on.push("no network (new network namespace)".into());
            }
            Isolation::Network { user_ns } => {
                on.push(format!("no network (new {}network namespace)", if user_ns { "user + " } else { "" }));
                off.push(
                    "no PID or mount namespace: other processes visible in /proc, unix sockets outside reachable, \
                     grandchildren killed only through the control group"
                        .to_string(),
                );
            }
            Isolation::None => {
                off.push("namespaces not permitted: network NOT isolated (Landlock ≥ 4 still denies TCP), other processes visible, unix sockets outside reachable".to_string());
            }
        }
        match &self.cgroups {
            Some(CgroupKind::V1 { .. }) => on.push("cgroup v1 process count and memory limits".into()),
            Some(CgroupKind::V2 { .. }) => on.push("cgroup v2 process count and memory limits".into()),
            None => {
                off.push("no writable cgroup hierarchy: memory per process by RLIMIT_DATA only (not on a GPU), processes by RLIMIT_NPROC only".to_string());
            }
        }
        on.push("rlimits (core 0, file size, CPU time, no realtime priority)".into());
        on.push("inherited descriptors closed, output read through bounded tails".into());
        if self.drop_root {
            on.push(format!("candidates run as nobody ({NOBODY}) with no capabilities"));
        } else if self.is_root {
            off.push("candidates run as root (uid 0): nobody (65534) cannot run the toolchain here".into());
        } else {
            on.push("candidates run as the host's user with no capabilities".into());
        }
        match self.landlock_abi {
            Some(abi) => {
                on.push(format!(
                    "Landlock ABI {abi}: reads limited to the toolchain and what each process needs (no dataset labels), writes to scratch"
                ));
                if abi < 4 {
                    off.push("Landlock < 4: TCP not restricted by Landlock".into());
                }
                if abi < 6 {
                    off.push("Landlock < 6: signals and abstract unix sockets to outside processes not restricted by Landlock".into());
                }
            }
            None => off.push("Landlock NOT available: the filesystem is confined only by the private root".into()),
        }
        let mut s = format!("sandbox: {}", on.join("; "));
        if !off.is_empty() {
            s.push_str(&format!(". NOT enforced: {}", off.join("; ")));
        }
        s
    }
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

/// Whether process `pid` exists.
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Kills what is left in the control groups of evaluator processes that
/// died without cleaning up (killed by SIGKILL) and removes the groups.
pub fn cleanup_stale_cgroups() {
    let root = Path::new("/sys/fs/cgroup");
    for dir in [root.to_path_buf(), root.join("pids"), root.join("memory")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("nas-eval-").and_then(|p| p.parse::<i32>().ok()) else { continue };
            if pid_alive(pid) {
                continue;
            }
            let base = e.path();
            let children: Vec<PathBuf> = std::fs::read_dir(&base)
                .map(|es| es.flatten().filter(|c| c.path().is_dir()).map(|c| c.path()).collect())
                .unwrap_or_default();
            for g in &children {
                kill_group(g, dir == root);
                remove_group(g);
            }
            let _ = std::fs::remove_dir(&base);
        }
    }
}

/// SIGKILLs every process of one control group until none is left (2 s at most).
fn kill_group(g: &Path, v2: bool) {
    if v2 {
        let _ = std::fs::write(g.join("cgroup.kill"), "1");
    }
    for _ in 0..200 {
        let mut any = false;
        if let Ok(text) = std::fs::read_to_string(g.join("cgroup.procs")) {
            for pid in text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                any = true;
                // SAFETY: the pid is a member of one of our sandboxes' control groups.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_group(g: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(g).is_ok() || !g.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What one sandboxed process tree may do.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Directories and files it may read (and execute).
    pub read: Vec<PathBuf>,
    /// Directories it may write (device files below `/dev` too).
    pub write: Vec<PathBuf>,
    /// Paths it may never see, even below `read` (datasets).
    pub hide: Vec<PathBuf>,
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

/// What to run: the program, its arguments and environment (nothing else
/// of the host's is passed), its working directory, and the descriptors it
/// gets: `fds[i]` becomes descriptor `i`.
#[derive(Debug)]
pub struct Launch {
    /// The program (an absolute path).
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Working directory (below a path the policy allows).
    pub cwd: PathBuf,
    /// Descriptors 0, 1, 2, ... of the child.
    pub fds: Vec<OwnedFd>,
}

/// A pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A running sandboxed process (the first process of its sandbox) and its
/// control groups. Dropping it kills the whole tree and reaps it.
#[derive(Debug)]
pub struct Sandboxed {
    pid: i32,
    status: Option<ExitStatus>,
    cpu: Duration,
    cgroups: Vec<PathBuf>,
    v2: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Steps of the child's setup, named in the error when one fails.
const STEPS: &[&str] = &[
    "moving descriptors",
    "setsid",
    "PR_SET_PDEATHSIG",
    "joining the control group",
    "setting rlimits",
    "writing the user namespace maps",
    "making mounts private",
    "mounting the new root",
    "creating a directory in the new root",
    "creating a file in the new root",
    "creating a symbolic link in the new root",
    "bind-mounting an allowed path",
    "making a bind mount read-only",
    "mounting a tmpfs",
    "mounting /proc",
    "pivot_root",
    "detaching the old root",
    "changing directory",
    "adding the /proc Landlock rule",
    "dropping capabilities",
    "setgroups",
    "setresgid",
    "setresuid",
    "PR_SET_NO_NEW_PRIVS",
    "landlock_restrict_self",
    "execve",
    "the host went away",
];

#[derive(Clone, Copy)]
#[repr(u32)]
enum Step {
    Fds,
    Setsid,
    Pdeathsig,
    Cgroup,
    Rlimit,
    Maps,
    Private,
    RootTmpfs,
    Mkdir,
    Touch,
    Symlink,
    Bind,
    BindRo,
    Tmpfs,
    Proc,
    Pivot,
    Detach,
    Chdir,
    ProcRule,
    Caps,
    Setgroups,
    Setresgid,
    Setresuid,
    NoNewPrivs,
    Landlock,
    Exec,
    HostGone,
}

/// One step of building the private root (paths already prefixed by the
/// root's mount point, except where said).
#[derive(Debug)]
enum MountOp {
    Mkdir(CString),
    Touch(CString),
    Symlink { target: CString, path: CString },
    Bind { src: CString, dst: CString, attr: u64, remount: libc::c_ulong },
    Tmpfs { dst: CString, data: CString, flags: libc::c_ulong },
    Proc { dst: CString },
}

#[derive(Debug)]
struct MountPlan {
    root: CString,
    ops: Vec<MountOp>,
    /// Paths (inside the new root) made read-only after the pivot.
    readonly_after: Vec<CString>,
}

struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

struct ChildPlan {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    fds: Vec<RawFd>,
    err_w: RawFd,
    alive_r: RawFd,
    alive_w: RawFd,
    cgroup_fds: Vec<RawFd>,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    maps: Option<[(CString, CString); 3]>,
    mounts: Option<MountPlan>,
    landlock: Option<(RawFd, u32)>,
    /// Whether the tree may use a GPU ([`Policy::gpu`]).
    gpu: bool,
    become_user: Option<Ids>,
    last_cap: i32,
    max_fd: i32,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: impl AsRef<OsStr>) -> std::io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| std::io::Error::other("a path holds a NUL byte"))
}

/// Starts `launch` inside the sandbox.
pub fn spawn(launch: Launch, policy: &Policy, caps: &Capabilities) -> std::io::Result<Sandboxed> {
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
    // From here on, a failure removes the groups again.
    let mut handle = Sandboxed { pid: 0, status: None, cpu: Duration::ZERO, cgroups, v2 };

    // Landlock, prepared here, applied in the child.
    let ruleset = match caps.landlock_abi {
        Some(abi) => {
            let read = expand_excluding(&policy.read, &policy.hide);
            let read: Vec<&Path> = read.iter().map(|p| p.as_path()).collect();
            let write: Vec<&Path> = policy.write.iter().map(|p| p.as_path()).collect();
            Some(landlock::Ruleset::new(abi, &read, &write)?)
        }
        None => None,
    };

    let (user_ns, mount) = match caps.isolation {
        Isolation::Full { user_ns } => (user_ns, true),
        Isolation::Network { user_ns } => (user_ns, false),
        Isolation::None => (false, false),
    };
    let mut flags: libc::c_int = 0;
    match caps.isolation {
        Isolation::Full { .. } => {
            flags |=
                libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        }
        Isolation::Network { .. } => flags |= libc::CLONE_NEWNET,
        Isolation::None => {}
    }
    if user_ns {
        flags |= libc::CLONE_NEWUSER;
    }

    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let maps = if user_ns {
        Some([
            (cstr("/proc/self/setgroups")?, cstr("deny")?),
            (cstr("/proc/self/uid_map")?, cstr(format!("{uid} {uid} 1"))?),
            (cstr("/proc/self/gid_map")?, cstr(format!("{gid} {gid} 1"))?),
        ])
    } else {
        None
    };
    let mounts = if mount { Some(plan_mounts(&caps.root_dir, policy, &launch.cwd)?) } else { None };
    let become_user = caps.drop_root.then(|| Ids { uid: NOBODY, gid: NOBODY, groups: device_groups(policy) });

    let mut rlimits = vec![
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_FSIZE, policy.max_file_bytes, policy.max_file_bytes),
        (libc::RLIMIT_RTPRIO, 0, 0),
    ];
    if let Some(c) = policy.cpu_time_s {
        // Soft limit sends SIGXCPU; the hard limit a second later SIGKILL.
        rlimits.push((libc::RLIMIT_CPU, c, c + 1));
    }
    if caps.cgroups.is_none() {
        rlimits.push((libc::RLIMIT_NPROC, policy.max_processes, policy.max_processes));
        // Private writable memory (heap, anonymous maps), not address space:
        // importing torch maps 3 GB of libraries it never writes.
        if let (false, Some(m)) = (policy.gpu, policy.memory_limit_bytes) {
            rlimits.push((libc::RLIMIT_DATA, m, m));
        }
    }

    let program = cstr(&launch.program)?;
    let mut argv_c = vec![program.clone()];
    for a in &launch.args {
        argv_c.push(cstr(a)?);
    }
    let envp_c: Vec<CString> =
        launch.env.iter().map(|(k, v)| cstr(format!("{k}={v}"))).collect::<std::io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let (err_r, err_w) = pipe()?;
    let (alive_r, alive_w) = pipe()?;
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(63);
    let max_fd = {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `lim` is a valid rlimit to write into.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        lim.rlim_cur.min(1 << 16) as i32
    };
    let plan = ChildPlan {
        program,
        argv,
        envp,
        cwd: cstr(&launch.cwd)?,
        fds: launch.fds.iter().map(|f| f.as_raw_fd()).collect(),
        err_w: err_w.as_raw_fd(),
        alive_r: alive_r.as_raw_fd(),
        alive_w: alive_w.as_raw_fd(),
        cgroup_fds: join_fds.iter().map(|f| f.as_raw_fd()).collect(),
        rlimits,
        maps,
        mounts,
        landlock: ruleset.as_ref().map(|r| (r.raw_fd(), r.abi)),
        gpu: policy.gpu,
        become_user,
        last_cap,
        max_fd,
    };

    // SAFETY: a fork-like clone (no CLONE_VM): the child gets a copy of this
    // address space with one thread and runs `run_child`, which makes only
    // async-signal-safe system calls on data prepared above and never
    // returns (execve or _exit).
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe { run_child(&plan) }
    }
    handle.pid = pid as i32;
    drop(err_w);
    drop(alive_r);
    // The child reports a failed step as two u32 (step, errno); end of file
    // means it reached execve.
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut err_r = std::fs::File::from(err_r);
    loop {
        use std::io::Read;
        match err_r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => {
                got += k;
                if got == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    drop(alive_w);
    drop(ruleset);
    drop(join_fds);
    drop(launch);
    if got == 8 {
        let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let _ = handle.wait();
        let e = std::io::Error::from_raw_os_error(errno);
        let what = STEPS.get(step).copied().unwrap_or("setup");
        return Err(std::io::Error::new(e.kind(), format!("sandbox setup failed at {what}: {e}")));
    }
    Ok(handle)
}

/// Reports a failed setup step to the host through the error pipe and exits.
struct ChildFail(RawFd);

impl ChildFail {
    /// Writes `(step, errno)` and `_exit`s.
    fn fail(&self, step: Step) -> ! {
        // SAFETY: reading errno, a write(2) of a stack buffer and _exit(2):
        // async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
            buf[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(self.0, buf.as_ptr().cast(), buf.len());
            libc::_exit(127)
        }
    }
}

/// The child's side of [`spawn`], between clone and execve.
///
/// # Safety
///
/// Must run in a freshly cloned child process; makes only async-signal-safe
/// system calls (raw ones where glibc would act on other threads: the
/// child's copy of glibc still believes the parent's threads exist),
/// allocates nothing and never returns.
unsafe fn run_child(plan: &ChildPlan) -> ! {
    // SAFETY (whole function): raw system calls on descriptors and
    // NUL-terminated strings prepared by the parent before clone.
    unsafe {
        // 1. Descriptors: out of the way of 0..n first, then into place.
        let err_w = libc::fcntl(plan.err_w, libc::F_DUPFD_CLOEXEC, 100);
        if err_w < 0 {
            libc::_exit(127);
        }
        let f = ChildFail(err_w);
        let mut moved = [0i32; 16];
        if plan.fds.len() > moved.len() {
            f.fail(Step::Fds);
        }
        for (slot, fd) in moved.iter_mut().zip(&plan.fds) {
            *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
            if *slot < 0 {
                f.fail(Step::Fds);
            }
        }
        for (i, m) in moved.iter().take(plan.fds.len()).enumerate() {
            if libc::dup2(*m, i as i32) < 0 {
                f.fail(Step::Fds);
            }
        }
        // Signals: nothing blocked, nothing ignored.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if libc::setsid() < 0 {
            f.fail(Step::Setsid);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            f.fail(Step::Pdeathsig);
        }
        // The host may have died before PR_SET_PDEATHSIG: it holds the write
        // end of `alive` until this child has exec'd or failed.
        libc::close(plan.alive_w);
        let mut pfd = libc::pollfd { fd: plan.alive_r, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            f.fail(Step::HostGone);
        }
        // 2. Control groups and rlimits.
        for fd in &plan.cgroup_fds {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                f.fail(Step::Cgroup);
            }
        }
        for (res, soft, hard) in &plan.rlimits {
            let lim = libc::rlimit { rlim_cur: *soft, rlim_max: *hard };
            if libc::setrlimit(*res, &lim) != 0 {
                f.fail(Step::Rlimit);
            }
        }
        // 3. Namespaces: the user namespace's maps, then the private root.
        if let Some(maps) = &plan.maps {
            for (path, data) in maps {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    f.fail(Step::Maps);
                }
                let bytes = data.as_bytes();
                if libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                    f.fail(Step::Maps);
                }
                libc::close(fd);
            }
        }
        if let Some(m) = &plan.mounts {
            build_root(m, &f);
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            f.fail(Step::Chdir);
        }
        // 4. Descriptors beyond 0..n close at exec.
        let n = plan.fds.len() as libc::c_uint;
        if libc::syscall(libc::SYS_close_range, n, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            for fd in n as i32..plan.max_fd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // 5. No capabilities, and not root.
        for cap in 0..=plan.last_cap {
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        if let Some(ids) = &plan.become_user {
            if libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) != 0 {
                f.fail(Step::Setgroups);
            }
            if libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) != 0 {
                f.fail(Step::Setresgid);
            }
            if libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) != 0 {
                f.fail(Step::Setresuid);
            }
        }
        drop_capabilities(&f);
        // A change of user clears the parent-death signal: set it again, and
        // check again that the host has not died in between.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            f.fail(Step::Pdeathsig);
        }
        let mut pfd = libc::pollfd { fd: plan.alive_r, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            f.fail(Step::HostGone);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            f.fail(Step::NoNewPrivs);
        }
        // 6. Landlock (the fresh /proc is another filesystem: its rule is added
        // here). A GPU tree may also write files there: the CUDA driver names
        // its threads in /proc/self/task/*/comm while cuInit runs and fails
        // (CUDA_ERROR_OPERATING_SYSTEM) when it cannot; what else /proc holds
        // is still closed to `nobody` by its owners and modes.
        if let Some((fd, abi)) = plan.landlock {
            if plan.mounts.is_some() {
                let proc_fd = libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if proc_fd < 0 || landlock::add_beneath_rule(fd, proc_fd, abi, plan.gpu) < 0 {
                    f.fail(Step::ProcRule);
                }
                libc::close(proc_fd);
            }
            if landlock::restrict_self(fd).is_err() {
                f.fail(Step::Landlock);
            }
        }
        libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        f.fail(Step::Exec)
    }
}

/// Clears the effective, permitted and inheritable capability sets.
///
/// # Safety
///
/// Async-signal-safe; for the child between clone and execve.
unsafe fn drop_capabilities(f: &ChildFail) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 };
    let data =
        [Data { effective: 0, permitted: 0, inheritable: 0 }, Data { effective: 0, permitted: 0, inheritable: 0 }];
    // SAFETY: capset with a v3 header and two data structs, as the ABI expects.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } != 0 {
        f.fail(Step::Caps);
    }
}

/// Builds the private root and pivots into it.
///
/// # Safety
///
/// Async-signal-safe; for the child between clone and execve, in its own
/// mount namespace.
unsafe fn build_root(m: &MountPlan, f: &ChildFail) {
    // SAFETY (whole function): mount system calls on NUL-terminated strings
    // prepared before clone.
    unsafe {
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            f.fail(Step::Private);
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            m.root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=1m".as_ptr().cast(),
        ) != 0
        {
            f.fail(Step::RootTmpfs);
        }
        for op in &m.ops {
            match op {
                MountOp::Mkdir(p) => {
                    if libc::mkdir(p.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST {
                        f.fail(Step::Mkdir);
                    }
                }
                MountOp::Touch(p) => {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                    if fd < 0 {
                        f.fail(Step::Touch);
                    }
                    libc::close(fd);
                }
                MountOp::Symlink { target, path } => {
                    if libc::symlink(target.as_ptr(), path.as_ptr()) != 0 && *libc::__errno_location() != libc::EEXIST {
                        f.fail(Step::Symlink);
                    }
                }
                MountOp::Bind { src, dst, attr, remount } => {
                    if libc::mount(src.as_ptr(), dst.as_ptr(), none, libc::MS_BIND | libc::MS_REC, std::ptr::null())
                        != 0
                    {
                        f.fail(Step::Bind);
                    }
                    set_attr(dst, *attr, true, *remount, f);
                }
                MountOp::Tmpfs { dst, data, flags } => {
                    if libc::mount(c"tmpfs".as_ptr(), dst.as_ptr(), c"tmpfs".as_ptr(), *flags, data.as_ptr().cast())
                        != 0
                    {
                        f.fail(Step::Tmpfs);
                    }
                }
                MountOp::Proc { dst } => {
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    if libc::mount(c"proc".as_ptr(), dst.as_ptr(), c"proc".as_ptr(), flags, std::ptr::null()) != 0 {
                        f.fail(Step::Proc);
                    }
                }
            }
        }
        if libc::chdir(m.root.as_ptr()) != 0 {
            f.fail(Step::Chdir);
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            f.fail(Step::Pivot);
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            f.fail(Step::Detach);
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            f.fail(Step::Chdir);
        }
        let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        for p in &m.readonly_after {
            set_attr(p, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false, ro, f);
        }
    }
}

/// Sets mount attributes with `mount_setattr` (recursively when asked), or
/// with a bind remount keeping `remount`'s flags on kernels without it.
///
/// # Safety
///
/// Async-signal-safe; `path` is NUL-terminated.
unsafe fn set_attr(path: &CString, attr: u64, recursive: bool, remount: libc::c_ulong, f: &ChildFail) {
    if attr == 0 {
        return;
    }
    let a = MountAttr { attr_set: attr, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags: libc::c_uint = if recursive { 0x8000 } else { 0 }; // AT_RECURSIVE
                                                                  // SAFETY: `a` is a valid struct mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &a as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return;
    }
    // SAFETY: reading errno and a plain mount(2) on a NUL-terminated path.
    unsafe {
        if *libc::__errno_location() != libc::ENOSYS {
            f.fail(Step::BindRo);
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(none, path.as_ptr(), none, libc::MS_REMOUNT | libc::MS_BIND | remount, std::ptr::null()) != 0 {
            f.fail(Step::BindRo);
        }
    }
}

/// The mount flags a bind remount must keep (locked in a user namespace).
fn kept_flags(path: &Path) -> libc::c_ulong {
    let Ok(c) = cstr(path) else { return 0 };
    // SAFETY: statvfs into a zeroed struct; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut out = 0;
    for (st_flag, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms;
        }
    }
    out
}

/// Groups the sandboxed user needs to open the allowed device files that are
/// not open to everyone (GPU devices on some machines).
fn device_groups(policy: &Policy) -> Vec<libc::gid_t> {
    let mut out = BTreeSet::new();
    for p in policy.read.iter().chain(&policy.write) {
        if !p.starts_with("/dev/") {
            continue;
        }
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o006 != 0o006 && m.gid() != 0 {
                out.insert(m.gid());
            }
        }
    }
    out.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A real path bound at the same place.
    Bind { access: Access, device: bool, dir: bool },
    /// An empty read-only tmpfs over a path below a bind.
    Hide,
    /// The fresh /proc.
    Proc,
    /// The tmpfs holding device nodes (`/dev`) or a small scratch tmpfs (`/dev/shm`).
    Tmpfs { data: &'static str },
    /// A symbolic link replica.
    Symlink(PathBuf),
}

/// Lexical absolute path without `.`/`..`.
fn normal(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Records symlink replicas for every symbolic link met on the way to `p`
/// (resolving each), and returns the canonical path.
fn follow(p: &Path, links: &mut BTreeMap<PathBuf, PathBuf>) -> Option<PathBuf> {
    let p = normal(p)?;
    let mut cur = PathBuf::from("/");
    for c in p.components().skip(1) {
        let next = cur.join(c);
        let meta = std::fs::symlink_metadata(&next).ok()?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&next).ok()?;
            links.insert(next.clone(), target);
            cur = next.canonicalize().ok()?;
        } else {
            cur = next;
        }
    }
    Some(cur)
}

/// The mount plan of a private root for `policy`, built on `root_dir`.
fn plan_mounts(root_dir: &Path, policy: &Policy, cwd: &Path) -> std::io::Result<MountPlan> {
    let mut links: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let add_bind =
        |p: &Path, access: Access, entries: &mut BTreeMap<PathBuf, Entry>, links: &mut BTreeMap<PathBuf, PathBuf>| {
            if p.starts_with("/proc") {
                entries.insert(PathBuf::from("/proc"), Entry::Proc);
                return;
            }
            if p == Path::new("/dev/shm") {
                entries.insert(PathBuf::from("/dev/shm"), Entry::Tmpfs { data: "mode=1777,size=1m" });
                return;
            }
            let Some(real) = follow(p, links) else { return };
            let Ok(meta) = std::fs::metadata(&real) else { return };
            let device = real.starts_with("/dev/");
            let dir = meta.is_dir();
            let access = match entries.get(&real) {
                Some(Entry::Bind { access: a, .. }) => access.max(*a),
                _ => access,
            };
            entries.insert(real, Entry::Bind { access, device, dir });
        };
    for p in &policy.read {
        add_bind(p, Access::Read, &mut entries, &mut links);
    }
    for p in &policy.write {
        add_bind(p, Access::Write, &mut entries, &mut links);
    }
    // Nothing at or below a hidden path is bound.
    let hidden: Vec<PathBuf> = policy.hide.iter().filter_map(|h| h.canonicalize().ok()).collect();
    entries.retain(|k, e| !(matches!(e, Entry::Bind { .. }) && hidden.iter().any(|h| k.starts_with(h))));
    if let Some(real) = follow(cwd, &mut links) {
        if !entries.keys().any(|k| real.starts_with(k)) {
            return Err(std::io::Error::other(format!("the working directory {} is not allowed", cwd.display())));
        }
    }
    if entries.keys().any(|k| k.starts_with("/dev")) {
        entries.insert(PathBuf::from("/dev"), Entry::Tmpfs { data: "mode=0755,size=64k" });
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            entries.entry(Path::new("/dev").join(name)).or_insert(Entry::Symlink(PathBuf::from(target)));
        }
    }
    for real in hidden {
        // Only what a bind would show needs covering.
        let under_bind = entries
            .iter()
            .any(|(k, e)| real.starts_with(k) && real != *k && matches!(e, Entry::Bind { dir: true, .. }));
        if under_bind {
            entries.insert(real, Entry::Hide);
        }
    }
    for (link, target) in links {
        entries.entry(link).or_insert(Entry::Symlink(target));
    }

    // Order: by depth, so that every mount point's parent is in place.
    let mut order: Vec<(PathBuf, Entry)> = entries.into_iter().collect();
    order.sort_by_key(|(p, _)| (p.components().count(), p.clone()));
    let root = root_dir.to_path_buf();
    let inside = |p: &Path| -> PathBuf { root.join(p.strip_prefix("/").unwrap_or(p)) };
    let mut ops = Vec::new();
    let mut placed: Vec<(PathBuf, Entry)> = Vec::new();
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut readonly_after = vec![cstr("/")?];
    // Whether `p` lies on a real filesystem (below a bind) rather than one of our tmpfs.
    let on_real_fs = |p: &Path, placed: &[(PathBuf, Entry)]| -> bool {
        placed
            .iter()
            .filter(|(k, _)| p.starts_with(k))
            .max_by_key(|(k, _)| k.components().count())
            .map(|(_, e)| matches!(e, Entry::Bind { .. }))
            .unwrap_or(false)
    };
    for (path, entry) in order {
        if let Entry::Bind { access, .. } = &entry {
            // Redundant below a bind of the same access that nothing hides in between.
            let parent = placed
                .iter()
                .filter(|(k, _)| path.starts_with(k) && *k != path)
                .max_by_key(|(k, _)| k.components().count());
            if let Some((_, Entry::Bind { access: a, .. })) = parent {
                if a == access {
                    placed.push((path, entry));
                    continue;
                }
            }
        }
        // Parents, in tmpfs territory.
        let mut cur = PathBuf::from("/");
        let comps: Vec<_> = path.components().skip(1).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur.push(c);
            if !on_real_fs(&cur, &placed) && !made.contains(&cur) {
                ops.push(MountOp::Mkdir(cstr(inside(&cur))?));
                made.insert(cur.clone());
            }
        }
        let real_fs = on_real_fs(&path, &placed);
        let dst = cstr(inside(&path))?;
        match &entry {
            Entry::Bind { access, device, dir } => {
                if !real_fs {
                    ops.push(if *dir { MountOp::Mkdir(dst.clone()) } else { MountOp::Touch(dst.clone()) });
                }
                let mut attr = MOUNT_ATTR_NOSUID;
                if !device {
                    attr |= MOUNT_ATTR_NODEV;
                }
                if *access == Access::Read {
                    attr |= MOUNT_ATTR_RDONLY;
                } else if !device {
                    attr |= MOUNT_ATTR_NOEXEC;
                }
                let mut remount = kept_flags(&path) | libc::MS_NOSUID;
                if !device {
                    remount |= libc::MS_NODEV;
                }
                if *access == Access::Read {
                    remount |= libc::MS_RDONLY;
                }
                ops.push(MountOp::Bind { src: cstr(&path)?, dst, attr, remount });
            }
            Entry::Hide => {
                ops.push(MountOp::Tmpfs {
                    dst,
                    data: cstr("mode=0555,size=4k")?,
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                });
                readonly_after.push(cstr(&path)?);
            }
            Entry::Proc => {
                if !real_fs {
                    ops.push(MountOp::Mkdir(dst.clone()));
                }
                ops.push(MountOp::Proc { dst });
            }
            Entry::Tmpfs { data } => {
                if !real_fs {
                    ops.push(MountOp::Mkdir(dst.clone()));
                }
                ops.push(MountOp::Tmpfs {
                    dst,
                    data: cstr(data)?,
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                });
                if path == Path::new("/dev") {
                    readonly_after.push(cstr(&path)?);
                }
            }
            Entry::Symlink(target) => {
                if !real_fs {
                    ops.push(MountOp::Symlink { target: cstr(target)?, path: dst });
                }
            }
        }
        made.insert(path.clone());
        placed.push((path, entry));
    }
    Ok(MountPlan { root: cstr(root_dir)?, ops, readonly_after })
}

/// `paths` with everything at or below an `excluded` path taken out: a path
/// that holds an excluded one is replaced by its children, recursively
/// along the way to it (Landlock rules only add access, so an allow-list
/// can only leave a subtree out this way).
pub fn expand_excluding(paths: &[PathBuf], excluded: &[PathBuf]) -> Vec<PathBuf> {
    let excluded: Vec<PathBuf> = excluded.iter().filter_map(|e| e.canonicalize().ok()).collect();
    let mut out = Vec::new();
    for p in paths {
        let Ok(real) = p.canonicalize() else {
            out.push(p.clone());
            continue;
        };
        expand_one(&real, &excluded, &mut out);
    }
    out
}

fn expand_one(p: &Path, excluded: &[PathBuf], out: &mut Vec<PathBuf>) {
    if excluded.iter().any(|e| p.starts_with(e)) {
        return;
    }
    if !excluded.iter().any(|e| e.starts_with(p)) {
        out.push(p.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(p) else { return };
    for e in entries.flatten() {
        let child = e.path();
        match child.canonicalize() {
            // A symbolic link pointing elsewhere stays a rule on its target.
            Ok(real) if real != child => {
                if !excluded.iter().any(|x| real.starts_with(x) || x.starts_with(&real)) {
                    out.push(real);
                }
            }
            _ => expand_one(&child, excluded, out),
        }
    }
}

impl Sandboxed {
    /// The process id (in the host's PID namespace).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status, if it has ended (reaps it).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    /// Waits for the process to end.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.wait_flags(0)? {
                return Ok(s);
            }
        }
    }

    fn wait_flags(&mut self, flags: i32) -> std::io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        if self.pid <= 0 {
            return Ok(None);
        }
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value to write into.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut usage) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
        self.cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
        let s = ExitStatus::from_raw(status);
        self.status = Some(s);
        Ok(Some(s))
    }

    /// CPU time the process (and the children it waited for) used; known once reaped.
    pub fn cpu_time(&self) -> Duration {
        self.cpu
    }

    /// Kills the whole tree: the first process (which takes its PID
    /// namespace with it), its process group, then every process left in
    /// its control groups.
    pub fn kill_all(&self) {
        if self.pid > 0 && self.status.is_none() {
            // SAFETY: signalling our own unreaped child and its process group.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::kill(-self.pid, libc::SIGKILL);
            }
        }
        for g in &self.cgroups {
            kill_group(g, self.v2);
            if self.v2 {
                break;
            }
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
                if text.trim().parse::<u64>().unwrap_or(0) > 0 && self.status.is_some() {
                    return true;
                }
            }
        }
        false
    }

    /// How many processes the kernel's out-of-memory killer has killed in
    /// this tree's control group so far (0 without one): for a persistent
    /// tree, the difference across a request says whether it fired then.
    pub fn oom_kill_count(&self) -> u64 {
        let mut n = 0;
        for g in &self.cgroups {
            for (file, key) in [("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")] {
                if let Ok(text) = std::fs::read_to_string(g.join(file)) {
                    for line in text.lines() {
                        let mut it = line.split_whitespace();
                        if it.next() == Some(key) {
                            n += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                        }
                    }
                }
            }
        }
        n
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
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        self.kill_all();
        if self.pid > 0 {
            let _ = self.wait();
        }
        for g in &self.cgroups {
            remove_group(g);
        }
    }
}

/// Removes this process's cgroup base directories (at exit of the evaluator).
pub fn cleanup_cgroups(caps: &Capabilities) {
    if let Some(kind) = &caps.cgroups {
        remove_base(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setup_step_has_a_name() {
        assert_eq!(STEPS.len(), Step::HostGone as usize + 1);
        assert_eq!(STEPS[Step::Exec as usize], "execve");
    }

    #[test]
    fn excluding_a_subtree_keeps_its_siblings_and_drops_it() {
        let base = std::env::temp_dir().join(format!("nas-sandbox-excl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for d in ["a/keep", "a/share/datasets/x", "a/share/doc", "b"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        std::fs::write(base.join("a/file"), "x").expect("write");
        let base = base.canonicalize().expect("canonical");
        let mut got = expand_excluding(&[base.join("a"), base.join("b")], &[base.join("a/share/datasets")]);
        got.sort();
        let mut want = vec![base.join("a/file"), base.join("a/keep"), base.join("a/share/doc"), base.join("b")];
        want.sort();
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Whether `/bin/sh -c script` exits 0 in a sandbox with `gpu`, its
    /// standard error kept in `scratch/stderr`.
    fn sh_succeeds(caps: &Capabilities, scratch: &Path, gpu: bool, script: &str) -> bool {
        let err = std::fs::File::create(scratch.join("stderr")).expect("stderr file");
        let read = crate::discover::system_read_paths();
        caps.runs(&read, scratch, gpu, Path::new("/bin/sh"), &["-c", script], Some(err))
    }

    #[test]
    fn a_gpu_tree_may_name_its_threads_in_proc_and_no_other_may() {
        // The CUDA driver writes /proc/self/task/*/comm in cuInit; under a
        // read-only /proc rule it fails and libtorch counts 0 devices.
        let work = std::env::temp_dir().join(format!("nas-sandbox-comm-{}", std::process::id()));
        let caps = Capabilities::probe_with(&work, &crate::discover::system_read_paths(), Path::new("/bin/true"), &[]);
        if !caps.full_isolation() || caps.landlock_abi.is_none() {
            eprintln!("skipped: no private root with Landlock here ({})", caps.describe());
            let _ = std::fs::remove_dir_all(&work);
            return;
        }
        let scratch = work.join("scratch");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        caps.make_writable(&scratch).expect("writable");
        let name = "echo named > /proc/$$/comm && read n < /proc/$$/comm && test \"$n\" = named";
        assert!(
            sh_succeeds(&caps, &scratch, true, name),
            "a GPU tree names its threads: {}",
            std::fs::read_to_string(scratch.join("stderr")).unwrap_or_default()
        );
        assert!(!sh_succeeds(&caps, &scratch, false, "echo named > /proc/self/comm"), "a CPU tree may not write /proc");
        assert!(sh_succeeds(&caps, &scratch, false, "cat /proc/self/comm > /dev/null"), "but reads it");
        let _ = std::fs::remove_dir_all(&work);
    }

    #[test]
    fn the_mount_plan_binds_parents_first_and_hides_below_binds() {
        let policy = Policy {
            read: vec![
                PathBuf::from("/usr"),
                PathBuf::from("/etc/passwd"),
                PathBuf::from("/proc"),
                PathBuf::from("/dev/null"),
            ],
            write: vec![std::env::temp_dir()],
            hide: vec![PathBuf::from("/usr/share")],
            ..Policy::default()
        };
        let plan = plan_mounts(Path::new("/r"), &policy, &std::env::temp_dir()).expect("plan");
        let text = format!("{:?}", plan.ops);
        let usr = text.find("dst: \"/r/usr\"").expect("binds /usr");
        let share = text.find("Tmpfs { dst: \"/r/usr/share\"").expect("hides /usr/share");
        assert!(usr < share, "{text}");
        assert!(text.contains("Proc { dst: \"/r/proc\" }"), "{text}");
        assert!(text.contains("Touch(\"/r/etc/passwd\")"), "{text}");
        assert!(text.contains("Touch(\"/r/dev/null\")"), "{text}");
    }
}
