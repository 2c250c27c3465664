//! Slurm, against a real cluster: the typed client ([`client`]: jobs that
//! complete, fail, are cancelled, run past their time or memory, lose their
//! node's `slurmd`, or are refused, seen through `sbatch`, `squeue`, `sacct`
//! and `scancel`), and whole `nas run`s whose evaluations are Slurm jobs
//! ([`runs`]: every fault a typed record and the run going on, kill -9 and
//! resume following the jobs instead of submitting them again, Ctrl-C
//! cancelling them).
//!
//! The tests need a running cluster: `scripts/slurm-cluster.sh start DIR`
//! starts one on this machine (and links its config to
//! `/etc/slurm/slurm.conf`; otherwise set `SLURM_CONF`); `scripts/test.sh`
//! does so. Without a cluster they skip with a message, unless
//! `NAS_REQUIRE_SLURM=1` is set: then they fail. The tests that kill
//! `slurmd` or change the accounting database run only on a cluster that
//! script started; those that take the node down run alone (the others wait
//! for them).

mod client;
mod runs;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use nas_host::slurm::{JobId, JobSpec, JobStatus, Slurm};

/// Held shared by each test, exclusively by those that take the node down.
static NODE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    NODE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    NODE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The line `scripts/slurm-cluster.sh` starts its `slurm.conf` with.
const SCRIPT_MARK: &str = "# Written by scripts/slurm-cluster.sh";

struct Cluster {
    slurm: Slurm,
    /// The folder `scripts/slurm-cluster.sh` runs the cluster from, when it
    /// does.
    script_dir: Option<PathBuf>,
    /// Whether the node has GPUs (real or counted) to ask for.
    has_gpus: bool,
}

impl Cluster {
    /// A job with the settings every test uses.
    fn spec(&self, name: &str, dir: &Path, script: &str) -> JobSpec {
        let mut spec = JobSpec::new(script);
        spec.name = Some(format!("nas-test-{name}"));
        spec.working_dir = Some(dir.to_path_buf());
        spec.output = Some(dir.join("job.out"));
        spec.time_limit = Some(Duration::from_secs(5 * 60));
        spec.cpus_per_task = Some(1);
        if self.script_dir.is_some() {
            spec.account = Some("nas".into());
            spec.qos = Some("normal".into());
        }
        spec
    }

    fn script_dir(&self, test: &str) -> Option<&Path> {
        if self.script_dir.is_none() {
            eprintln!(
                "skipping {test}: it changes the cluster (slurmd, accounting), which it does only on a cluster \
                 scripts/slurm-cluster.sh started"
            );
        }
        self.script_dir.as_deref()
    }
}

/// The cluster to test against, or `None` (the test skips) when none
/// answers and `NAS_REQUIRE_SLURM` is not `1`. Asked once per test binary.
fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(find_cluster) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            if std::env::var("NAS_REQUIRE_SLURM").as_deref() == Ok("1") {
                panic!("NAS_REQUIRE_SLURM=1 but there is no Slurm cluster: {why}");
            }
            eprintln!("skipping: no Slurm cluster ({why}); start one with scripts/slurm-cluster.sh start DIR");
            None
        }
    }
}

fn find_cluster() -> Result<Cluster, String> {
    // Without a config Slurm's commands retry for a minute before failing.
    let conf = config_path();
    if !conf.exists() {
        return Err(format!("no {} (set SLURM_CONF)", conf.display()));
    }
    let slurm = Slurm::default();
    let nodes = slurm.clone().with_timeout(Duration::from_secs(15)).nodes().map_err(|e| e.to_string())?;
    if !nodes.iter().any(|n| n.is_usable()) {
        return Err(format!("no node takes jobs: {nodes:?}"));
    }
    let has_gpus = nodes.iter().any(|n| n.gres.as_deref().is_some_and(|g| g.starts_with("gpu")));
    Ok(Cluster { slurm, script_dir: script_dir(&conf), has_gpus })
}

/// The `slurm.conf` Slurm's commands read.
fn config_path() -> PathBuf {
    std::env::var_os("SLURM_CONF").map(PathBuf::from).unwrap_or_else(|| "/etc/slurm/slurm.conf".into())
}

/// `DIR` when the cluster's config is one `scripts/slurm-cluster.sh start DIR` wrote.
fn script_dir(conf: &Path) -> Option<PathBuf> {
    let conf = fs::canonicalize(conf).ok()?;
    let text = fs::read_to_string(&conf).ok()?;
    if !text.starts_with(SCRIPT_MARK) {
        return None;
    }
    Some(conf.parent()?.parent()?.to_path_buf())
}

/// Polls the job until `done` accepts its status; panics with the last
/// status after `limit`.
fn wait_for(slurm: &Slurm, id: JobId, limit: Duration, done: impl Fn(&JobStatus) -> bool) -> JobStatus {
    let started = Instant::now();
    loop {
        let last = match slurm.status(id) {
            Ok(Some(status)) if done(&status) => return status,
            Ok(status) => format!("{status:?}"),
            Err(e) => e.to_string(),
        };
        assert!(started.elapsed() < limit, "job {id}: still not there after {limit:?}, last: {last:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `probe` every 50 ms until it gives a value; panics with `what`
/// after `limit`.
fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the cluster's slurmd (SIGKILL, as a crash would).
fn kill_slurmd(dir: &Path) {
    let pid = fs::read_to_string(dir.join("run/slurmd.pid")).expect("slurmd pid file");
    let killed = Command::new("kill").args(["-KILL", pid.trim()]).status().expect("runs kill");
    assert!(killed.success(), "kill slurmd {}", pid.trim());
}

/// Brings slurmd back the way an operator would: the script starts what is
/// not running and waits for the node.
fn restart_cluster(dir: &Path) {
    let script = nas_tests::workspace_root().join("scripts/slurm-cluster.sh");
    let started = Command::new(script).arg("start").arg(dir).status().expect("runs slurm-cluster.sh");
    assert!(started.success(), "slurm-cluster.sh start: {started}");
}

/// This user's uid.
fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("runs id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a uid")
}
