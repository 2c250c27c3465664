//! The typed client on its own: each job's story as `sbatch`, `squeue`,
//! `sacct` and `scancel` tell it.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nas_host::slurm::{ExitCode, JobId, JobState, JobStatus, Slurm, SlurmError, StatusSource};

use super::{cluster, exclusive, kill_slurmd, restart_cluster, shared, uid, wait_for};

fn state_is(state: JobState) -> impl Fn(&JobStatus) -> bool {
    move |s| s.state == state
}

/// Waits for a file the job writes.
fn wait_for_file(path: &Path, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(started.elapsed() < limit, "{} not written within {limit:?}", path.display());
        thread::sleep(Duration::from_millis(50));
    }
}

/// A batch script that says it started, then waits for the file `go`.
const WAIT_FOR_GO: &str = "#!/bin/sh\necho started > started\nwhile [ ! -e go ]; do sleep 0.1; done\necho done\n";

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn a_job_writes_its_file_is_running_then_completed() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = cluster.spec(
        "complete",
        dir.path(),
        "#!/bin/sh\necho \"$NAS_TEST_VALUE job=$SLURM_JOB_ID gpus=${CUDA_VISIBLE_DEVICES:-none}\" > result.txt\n\
         while [ ! -e go ]; do sleep 0.1; done\necho done\n",
    );
    spec.env.insert("NAS_TEST_VALUE".into(), "hello from the host".into());
    spec.memory_mb = Some(100);
    if cluster.has_gpus {
        spec.gres = Some("gpu:1".into());
    }
    let id = cluster.slurm.submit(&spec).expect("submits");

    let running = wait_for(&cluster.slurm, id, SHORT, |s| s.state == JobState::Running);
    assert_eq!(running.source, StatusSource::Queue);
    assert!(running.nodes.is_some(), "{running:?}");
    assert_eq!(running.exit_code, None);
    let result = wait_for_file(&dir.path().join("result.txt"), SHORT);
    let gpus = if cluster.has_gpus { "gpus=0" } else { "gpus=none" };
    assert_eq!(result, format!("hello from the host job={id} {gpus}\n"));
    // Still running: it waits for `go`.
    assert_eq!(cluster.slurm.status(id).expect("asks").map(|s| s.state), Some(JobState::Running));

    fs::write(dir.path().join("go"), "").expect("writes go");
    let done = wait_for(&cluster.slurm, id, SHORT, |s| s.state.is_finished() && s.exit_code.is_some());
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.exit_code, Some(ExitCode { code: 0, signal: 0 }));
    assert_eq!(fs::read_to_string(dir.path().join("job.out")).expect("job output"), "done\n");
}

#[test]
fn a_failing_job_is_failed_with_its_exit_code() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = cluster.spec("fail", dir.path(), "#!/bin/sh\necho about to fail\nexit 3\n");
    let id = cluster.slurm.submit(&spec).expect("submits");
    let done = wait_for(&cluster.slurm, id, SHORT, |s| s.state.is_finished() && s.exit_code.is_some());
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert_eq!(done.exit_code, Some(ExitCode { code: 3, signal: 0 }));
    assert_eq!(fs::read_to_string(dir.path().join("job.out")).expect("job output"), "about to fail\n");
}

#[test]
fn scancel_mid_run_is_cancelled() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let id = cluster.slurm.submit(&cluster.spec("cancel", dir.path(), WAIT_FOR_GO)).expect("submits");
    wait_for(&cluster.slurm, id, SHORT, state_is(JobState::Running));
    wait_for_file(&dir.path().join("started"), SHORT);

    cluster.slurm.cancel(&[id]).expect("cancels");
    let done = wait_for(&cluster.slurm, id, SHORT, |s| s.state.is_finished() && s.exit_code.is_some());
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    assert_eq!(done.cancelled_by, Some(uid()), "{done:?}");
    // The job never saw `go`.
    assert!(!fs::read_to_string(dir.path().join("job.out")).unwrap_or_default().contains("done"));
    // Cancelling what has ended is not an error.
    cluster.slurm.cancel(&[id]).expect("cancels again");
}

#[test]
fn a_job_past_its_time_limit_is_timeout() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = cluster.spec("timeout", dir.path(), WAIT_FOR_GO);
    spec.time_limit = Some(Duration::from_secs(60));
    let id = cluster.slurm.submit(&spec).expect("submits");
    wait_for(&cluster.slurm, id, SHORT, state_is(JobState::Running));
    // Slurm's shortest limit is a minute, and slurmctld looks for jobs past
    // theirs every 30 s, so a 1-minute job ends 60-90 s after it starts.
    // Moving its end to now (as an administrator can) makes that 0-30 s;
    // the limit is enforced the same way.
    let moved = Command::new("scontrol")
        .args(["update", &format!("JobId={id}"), "EndTime=now"])
        .status()
        .expect("runs scontrol");
    assert!(moved.success(), "scontrol update EndTime: {moved}");
    let done =
        wait_for(&cluster.slurm, id, Duration::from_secs(60), |s| s.state.is_finished() && s.exit_code.is_some());
    assert_eq!(done.state, JobState::Timeout, "{done:?}");
    assert!(!fs::read_to_string(dir.path().join("job.out")).unwrap_or_default().contains("done"));
}

#[test]
fn a_job_past_its_memory_is_out_of_memory() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    // `tail` keeps the whole line (400 MB without a newline) in memory.
    let mut spec = cluster.spec("oom", dir.path(), "#!/bin/sh\nhead -c 400000000 /dev/zero | tail -n 1 >/dev/null\n");
    spec.memory_mb = Some(50);
    let id = cluster.slurm.submit(&spec).expect("submits");
    let done = wait_for(&cluster.slurm, id, SHORT, |s| s.state.is_finished() && s.exit_code.is_some());
    // With cgroup memory control (most clusters, and the script's cluster
    // where the machine allows it) the kernel stops the job; without, the
    // accounting poll kills it.
    let killed_by_poll = done.state == JobState::Failed && done.exit_code.map(|e| e.signal) == Some(9);
    assert!(done.state == JobState::OutOfMemory || killed_by_poll, "{done:?}");
}

#[test]
fn a_bad_partition_is_refused_with_slurms_message() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = cluster.spec("refused", dir.path(), "#!/bin/sh\ntrue\n");
    spec.partition = Some("no-such-partition".into());
    match cluster.slurm.submit(&spec) {
        Err(SlurmError::Refused { message }) => {
            assert!(message.contains("Invalid partition name specified"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_job_gone_from_the_queue_is_read_from_accounting() {
    let Some(cluster) = cluster() else { return };
    if cluster.script_dir("a_job_gone_from_the_queue_is_read_from_accounting").is_none() {
        return;
    }
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let id = cluster.slurm.submit(&cluster.spec("vanish", dir.path(), "#!/bin/sh\nexit 7\n")).expect("submits");
    // The script's cluster forgets finished jobs after MinJobAge=2 s.
    let gone = wait_for(&cluster.slurm, id, SHORT, |s| s.source == StatusSource::Accounting);
    assert_eq!(gone.state, JobState::Failed, "{gone:?}");
    assert_eq!(gone.exit_code, Some(ExitCode { code: 7, signal: 0 }));
    assert_eq!(cluster.slurm.status(JobId(60_000_000)).expect("asks"), None);
}

#[test]
fn a_cluster_without_accounting_answers_from_the_controller() {
    let Some(cluster) = cluster() else { return };
    let Some(dir) = cluster.script_dir("a_cluster_without_accounting_answers_from_the_controller") else {
        return;
    };
    let _node = shared();
    // The same controller, seen through a config that has no accounting
    // database: `sacct` then refuses to answer, as on such a cluster.
    let etc = tempfile::tempdir().expect("temp dir");
    for entry in fs::read_dir(dir.join("etc")).expect("lists etc") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_owned();
        let text = fs::read_to_string(&path).unwrap_or_default();
        let text = if name == "slurm.conf" {
            text.lines()
                .filter(|l| !l.starts_with("AccountingStorage"))
                .chain(["AccountingStorageType=accounting_storage/none"])
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        fs::write(etc.path().join(name), text).expect("writes config");
    }
    let slurm = Slurm::default().with_env("SLURM_CONF", etc.path().join("slurm.conf"));
    let work = tempfile::tempdir().expect("temp dir");
    let id = slurm.submit(&cluster.spec("no-accounting", work.path(), "#!/bin/sh\nexit 5\n")).expect("submits");

    let ended = wait_for(&slurm, id, SHORT, |s| s.state.is_finished());
    assert_eq!(ended.state, JobState::Failed, "{ended:?}");
    assert_eq!((ended.source, ended.exit_code), (StatusSource::Queue, None), "{ended:?}");
    assert!(matches!(slurm.history(id), Err(SlurmError::NoAccounting { .. })));
    // Once the controller forgets the job, nothing knows it.
    wait_for_absence(&slurm, id);
    // The database did record it, for a client that can ask.
    let recorded = wait_for(&cluster.slurm, id, SHORT, |s| s.exit_code.is_some());
    assert_eq!(recorded.exit_code, Some(ExitCode { code: 5, signal: 0 }));
}

fn wait_for_absence(slurm: &Slurm, id: JobId) {
    let started = Instant::now();
    while slurm.status(id).expect("asks").is_some() {
        assert!(started.elapsed() < SHORT, "job {id} still listed after {SHORT:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_job_is_found_again_by_its_name() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let name = format!("nas-test-named-{}-{nanos}", std::process::id());
    let mut spec = cluster.spec(
        "named",
        dir.path(),
        "#!/bin/sh
exit 0
",
    );
    spec.name = Some(name.clone());
    let id = cluster.slurm.submit(&spec).expect("submits");
    let found = cluster.slurm.jobs_named(&name, Duration::from_secs(3600)).expect("asks");
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), [id]);
    let other = cluster.slurm.jobs_named("nas-test-no-such-name", Duration::from_secs(3600)).expect("asks");
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn slurmd_killed_and_restarted_mid_job_leaves_the_job_running() {
    let Some(cluster) = cluster() else { return };
    let Some(dir) = cluster.script_dir("slurmd_killed_and_restarted_mid_job_leaves_the_job_running") else {
        return;
    };
    let _node = exclusive();
    let work = tempfile::tempdir().expect("temp dir");
    let id = cluster.slurm.submit(&cluster.spec("slurmd-restart", work.path(), WAIT_FOR_GO)).expect("submits");
    wait_for(&cluster.slurm, id, SHORT, state_is(JobState::Running));
    wait_for_file(&work.path().join("started"), SHORT);

    kill_slurmd(dir);
    restart_cluster(dir);
    // The job's slurmstepd outlived slurmd, and the new slurmd took it back.
    assert_eq!(cluster.slurm.status(id).expect("asks").map(|s| s.state), Some(JobState::Running));
    fs::write(work.path().join("go"), "").expect("writes go");
    let done = wait_for(&cluster.slurm, id, SHORT, |s| s.state.is_finished() && s.exit_code.is_some());
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(fs::read_to_string(work.path().join("job.out")).expect("job output"), "done\n");
}

#[test]
fn slurmd_down_past_its_timeout_fails_the_node_and_requeues() {
    let Some(cluster) = cluster() else { return };
    let Some(dir) = cluster.script_dir("slurmd_down_past_its_timeout_fails_the_node_and_requeues") else {
        return;
    };
    let _node = exclusive();
    let once = tempfile::tempdir().expect("temp dir");
    let again = tempfile::tempdir().expect("temp dir");
    let mut spec = cluster.spec("node-fail", once.path(), WAIT_FOR_GO);
    spec.requeue = Some(false);
    let no_requeue = cluster.slurm.submit(&spec).expect("submits");
    let mut spec = cluster.spec("node-fail-requeue", again.path(), WAIT_FOR_GO);
    spec.requeue = Some(true);
    let requeue = cluster.slurm.submit(&spec).expect("submits");
    for id in [no_requeue, requeue] {
        wait_for(&cluster.slurm, id, SHORT, state_is(JobState::Running));
    }

    kill_slurmd(dir);
    // The node is declared down SlurmdTimeout (10 s here) after it stopped
    // answering; its jobs fail with it.
    let failed = wait_for(&cluster.slurm, no_requeue, Duration::from_secs(60), |s| s.state.is_finished());
    assert_eq!(failed.state, JobState::NodeFail, "{failed:?}");
    // The other goes back to the queue, under the same id.
    let queued = wait_for(&cluster.slurm, requeue, SHORT, |s| s.state == JobState::Pending);
    assert!(!queued.state.is_finished());
    let history = wait_for_history(&cluster.slurm, requeue);
    assert_eq!(history[0].state, JobState::NodeFail, "{history:?}");

    restart_cluster(dir);
    cluster.slurm.cancel(&[requeue]).expect("cancels");
    let cancelled = wait_for(&cluster.slurm, requeue, SHORT, |s| s.state.is_finished());
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    assert!(cluster.slurm.nodes().expect("lists nodes").iter().all(|n| n.is_usable()));
}

/// The requeued job's runs, once the database has both.
fn wait_for_history(slurm: &Slurm, id: JobId) -> Vec<JobStatus> {
    let started = Instant::now();
    loop {
        let history = slurm.history(id).expect("asks sacct");
        if history.len() >= 2 {
            return history;
        }
        assert!(started.elapsed() < SHORT, "job {id}: history {history:?}");
        thread::sleep(Duration::from_millis(200));
    }
}
