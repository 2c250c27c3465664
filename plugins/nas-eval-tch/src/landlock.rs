//! Landlock (Linux ≥ 5.13) through its three system calls: a ruleset that
//! lets a process read and execute below some paths, write below others, and
//! touch nothing else; on newer kernels also no TCP and no signals or
//! abstract sockets reaching outside the sandbox.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const TRUNCATE: u64 = 1 << 14;
/// Rights that make sense on a single file (not a directory).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, or `None` when Landlock
/// is not available (not built in, or not enabled among the LSMs).
pub fn abi_version() -> Option<u32> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0
    // only returns the ABI version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Which access rights a Landlock ABI version can restrict.
fn handled_fs(abi: u32) -> u64 {
    let mut bits = (1u64 << 13) - 1; // ABI 1: EXECUTE ..= MAKE_SYM
    if abi >= 2 {
        bits |= 1 << 13; // REFER
    }
    if abi >= 3 {
        bits |= TRUNCATE;
    }
    // IOCTL_DEV (ABI 5) is left unhandled: GPU drivers work by ioctl on the
    // device files that the rules allow to open.
    bits
}

/// A ready ruleset, as a file descriptor to hand to [`restrict_self`] in the
/// child after fork.
#[derive(Debug)]
pub struct Ruleset {
    fd: OwnedFd,
    /// The ABI the ruleset was made for.
    pub abi: u32,
}

impl Ruleset {
    /// A ruleset allowing reading (and executing) below `read` and anything
    /// below `write`; paths that do not exist are skipped.
    pub fn new(abi: u32, read: &[&Path], write: &[&Path]) -> std::io::Result<Ruleset> {
        let fs = handled_fs(abi);
        let net = abi >= 4;
        let scoped = abi >= 6;
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if net { 0b11 } else { 0 },
            scoped: if scoped { 0b11 } else { 0 },
        };
        let size = if scoped {
            std::mem::size_of::<RulesetAttr>()
        } else if net {
            16
        } else {
            8
        };
        // SAFETY: `attr` is a valid landlock_ruleset_attr of at least `size` bytes
        // (the kernel reads only the first `size` bytes).
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let ruleset = Ruleset { fd, abi };
        for p in read {
            ruleset.allow(p, EXECUTE | READ_FILE | READ_DIR)?;
        }
        for p in write {
            ruleset.allow(p, fs)?;
        }
        Ok(ruleset)
    }

    fn allow(&self, path: &Path, access: u64) -> std::io::Result<()> {
        let file = match std::fs::File::options().read(true).custom_flags(libc::O_PATH | libc::O_CLOEXEC).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
        let access = if is_dir { access } else { access & FILE_RIGHTS };
        let rule = PathBeneathAttr { allowed_access: access & handled_fs(self.abi), parent_fd: file.as_raw_fd() };
        // SAFETY: `rule` is a valid landlock_path_beneath_attr and both file
        // descriptors are open for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(e.kind(), format!("landlock rule for {}: {e}", path.display())));
        }
        Ok(())
    }

    /// The raw descriptor, for [`restrict_self`] in a forked child.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Adds a read (and execute) rule below the directory open at `parent_fd`
/// to the ruleset `ruleset_fd`, with writing files too when `write_files`,
/// with system calls only (async-signal-safe: for the child between clone
/// and execve, where a directory exists only after mounting). Returns the
/// system call's result (negative on error).
pub fn add_beneath_rule(ruleset_fd: i32, parent_fd: i32, abi: u32, write_files: bool) -> i64 {
    let write = if write_files { WRITE_FILE | TRUNCATE } else { 0 };
    let rule =
        PathBeneathAttr { allowed_access: (EXECUTE | READ_FILE | READ_DIR | write) & handled_fs(abi), parent_fd };
    // SAFETY: `rule` is a valid landlock_path_beneath_attr; both descriptors
    // are owned by the caller for the duration of the call.
    unsafe {
        libc::syscall(libc::SYS_landlock_add_rule, ruleset_fd, RULE_PATH_BENEATH, &rule as *const PathBeneathAttr, 0u32)
    }
}

/// Applies the ruleset to the calling process (and everything it starts).
/// Async-signal-safe: meant for `pre_exec`. `PR_SET_NO_NEW_PRIVS` must be set
/// first.
pub fn restrict_self(fd: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on a descriptor owned by the caller.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
