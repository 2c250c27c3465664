//! The run lock: one `nas run` or `nas resume` writes a run directory at a
//! time.
//!
//! The writer holds an exclusive `flock(2)` on `run.lock` in the run
//! directory for its whole life, with its pid written in the file. A second
//! writer is refused at once, with the run directory and the holder's pid in
//! the message. The kernel releases the lock when the holder dies, however it
//! dies (a `kill -9` leaves a stale file, never a stale lock), and the
//! descriptor is close-on-exec, so no evaluator or other child keeps it.
//! Readers (`nas report`, `nas export`, ...) take no lock: the store is
//! SQLite in WAL mode, read as of its last commit while it is written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    /// Another process writes the run.
    #[error(
        "the run `{}` is in use by another nas process ({}); wait for it to finish or stop it, then `nas resume {}`",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        dir.display()
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock the run `{}` ({}): {source}", dir.display(), path.display())]
    Io {
        /// The run directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock of a run directory; released when dropped or when the
/// process ends.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the run lock of `run_dir` without waiting: fails with
    /// [`RunLockError::Busy`] while another process holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, RunLockError> {
        let path = run_dir.join(LOCK_FILE);
        let io = |source| RunLockError::Io { dir: run_dir.to_path_buf(), path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        loop {
            // SAFETY: flock(2) on a descriptor owned by `file`, which
            // outlives the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    let mut text = String::new();
                    let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse::<u32>().ok());
                    return Err(RunLockError::Busy { dir: run_dir.to_path_buf(), holder });
                }
                _ => return Err(io(err)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

/// Whether the process that last held the run lock of `run_dir` is gone:
/// its pid, as it wrote it in the lock file, names no live process. `false`
/// when there is no lock file or no pid in it (nothing is known). Reads only;
/// it takes no lock, so it never stands in a writer's way.
pub fn holder_gone(run_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(run_dir.join(LOCK_FILE)) else { return false };
    let Ok(pid) = text.trim().parse::<u32>() else { return false };
    !Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_that_has_exited_is_gone_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!holder_gone(dir.path()), "no lock file: nothing known");
        let lock = RunLock::acquire(dir.path()).expect("lock");
        assert!(!holder_gone(dir.path()), "this process holds it");
        drop(lock);
        // No process has pid `pid_max` (pids are below it). Spawning a child
        // and waiting for it would race the lock test beside it: a fork
        // holds the parent's descriptors, locks included, until its exec.
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("pid_max");
        let pid: u32 = pid_max.trim().parse().expect("a number");
        std::fs::write(dir.path().join(LOCK_FILE), format!("{pid}\n")).expect("write");
        assert!(holder_gone(dir.path()), "no process has pid {pid}");
        std::fs::write(dir.path().join(LOCK_FILE), "not a pid").expect("write");
        assert!(!holder_gone(dir.path()));
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_returns_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = RunLock::acquire(dir.path()).expect("first");
        // flock locks belong to open file descriptions: a second open in the
        // same process conflicts as another process would.
        let err = RunLock::acquire(dir.path()).expect_err("second refused");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        drop(first);
        RunLock::acquire(dir.path()).expect("free again");
    }
}
