//! Whole `nas run`s whose evaluations are Slurm jobs (`[executor] kind =
//! "slurm"`), on the scripted chat server and the instant evaluator (whose
//! `hold` file keeps a job running until a test has done what it does to
//! it), and one real `eval.tch-one-epoch` candidate on a slice of
//! Fashion-MNIST.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nas_host::executor::table::{Attempt, AttemptState, JobFault, JobTable};
use nas_host::records::{IterationRecord, Outcome};
use nas_llm_test_server::TestServer;
use nas_tests::{
    fence, nas, nas_bin, nas_with_evaluator, records, run_dirs, s, scripted, scripted_config, text, ADVICE,
};

use super::{cluster, exclusive, kill_slurmd, restart_cluster, shared, wait_until, Cluster};

/// A design of its own for attempt `a` (names and sizes differ, so no two
/// are near-duplicates), scored `accuracy` by the instant evaluator.
fn net(a: u64, accuracy: f64) -> String {
    let width = 8 + a;
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.hidden{a} = nn.Linear(64, {width})\n        self.head{a} = nn.Linear({width}, num_classes)\n        # accuracy: {accuracy:.2}\n\n    def forward(self, x):\n        return self.head{a}(self.hidden{a}(x.flatten(1)))\n"
    ))
}

fn designs(n: u64) -> Vec<String> {
    (1..=n).map(|a| net(a, 0.5 + a as f64 * 0.04)).collect()
}

/// A test's run: its folder, its LLM, its config.
struct Setup {
    dir: tempfile::TempDir,
    _server: TestServer,
    config: PathBuf,
}

impl Setup {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The instant evaluator's hold file: present, every evaluation waits.
    fn hold(&self) -> PathBuf {
        self.path().join("hold")
    }

    fn set_hold(&self, on: bool) {
        if on {
            std::fs::write(self.hold(), "").expect("hold");
        } else {
            let _ = std::fs::remove_file(self.hold());
        }
    }

    /// Candidates the instant evaluator evaluated (on the nodes), in order.
    fn evaluated(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("evaluated.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn run_dir(&self) -> PathBuf {
        run_dirs(self.path()).pop().expect("a run directory")
    }

    /// `nas run` in the background, its stderr read line by line.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut child = Command::new(nas_bin())
            .args(args)
            .current_dir(self.path())
            .env("NAS_HOME", self.path().join(".nas-home"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nas starts");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }
}

/// A `nas` in the background.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Waits for `n` lines of stderr containing `needle`.
    fn wait_for_lines(&mut self, needle: &str, n: usize, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    panic!("{n} lines with {needle:?} not within {limit:?}; stderr so far:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Waits for the process to end; its exit code and whole stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("nas did not end within {limit:?}; stderr:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"))
    }
}

/// The `[executor]` every test uses on this cluster (quick polls and
/// retries; the account and QoS the script's cluster requires), with
/// `more` keys added or replacing these.
fn executor(cluster: &Cluster, more: &[(&str, &str)]) -> String {
    let mut keys: BTreeMap<&str, String> = [
        ("kind", "\"slurm\""),
        ("cpus_per_task", "1"),
        ("time_limit_s", "600"),
        ("poll_interval_s", "0.2"),
        ("retry_delay_s", "0.5"),
        ("result_wait_s", "5"),
        ("probe_timeout_s", "120"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    if cluster.script_dir.is_some() {
        keys.insert("account", "\"nas\"".into());
        keys.insert("qos", "\"normal\"".into());
    }
    for (k, v) in more {
        keys.insert(k, v.to_string());
    }
    let lines: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("[executor]\n{}\n", lines.join("\n"))
}

/// A run of `n` scripted designs on the instant evaluator through Slurm,
/// with `search` settings and `executor_more` keys.
fn setup(cluster: &Cluster, n: u64, search: &str, executor_more: &[(&str, &str)]) -> Setup {
    setup_with(cluster, designs(n), search, executor_more, true)
}

fn setup_with(
    cluster: &Cluster,
    designs: Vec<String>,
    search: &str,
    executor_more: &[(&str, &str)],
    on_slurm: bool,
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = scripted(designs, vec![ADVICE.to_string()]);
    let executor = if on_slurm { executor(cluster, executor_more) } else { String::new() };
    let text = scripted_config(
        &server,
        &format!(
            r#"
[run]
name = "slurm"
output_dir = "runs"

[search]
{search}

[evaluator]
plugin = "eval.instant"
[evaluator.settings]
log = "{log}"
hold = "{hold}"

[memory]
plugin = "builtin:memory.window"

{executor}"#,
            log = dir.path().join("evaluated.log").display(),
            hold = dir.path().join("hold").display(),
        ),
    );
    let config = dir.path().join("run.toml");
    std::fs::write(&config, text).expect("write config");
    Setup { dir, _server: server, config }
}

fn attempts(run_dir: &Path) -> Vec<Attempt> {
    JobTable::read_all(run_dir).expect("the job table")
}

/// The attempts of one iteration, in order.
fn attempts_of(run_dir: &Path, iteration: u64) -> Vec<Attempt> {
    attempts(run_dir).into_iter().filter(|a| a.iteration == Some(iteration)).collect()
}

/// Waits for an attempt of `iteration` with a job id whose job runs.
fn running_job(cluster: &Cluster, run: &Path, iteration: u64) -> Attempt {
    wait_until(&format!("a running job for iteration {iteration}"), Duration::from_secs(60), || {
        let found = attempts_of(run, iteration).into_iter().rev().find(|a| a.job_id.is_some())?;
        let status = cluster.slurm.status(nas_host::slurm::JobId(found.job_id?)).ok()??;
        (status.state == nas_host::slurm::JobState::Running && found.state == AttemptState::Submitted).then_some(found)
    })
}

/// Waits for the run directory (and its job table) of a `nas` that runs.
fn wait_for_run(setup: &Setup, running: &mut Running) -> PathBuf {
    wait_until("the run directory", Duration::from_secs(120), || {
        if let Ok(Some(status)) = running.child.try_wait() {
            running.seen.extend(running.lines.try_iter());
            panic!("nas ended ({status}) before its run started:\n{}", running.seen.join("\n"));
        }
        run_dirs(setup.path()).pop().filter(|d| JobTable::read_all(d).is_ok())
    })
}

/// Waits for `iteration`'s attempt `attempt` to end with a fault.
fn wait_for_fault(run: &Path, iteration: u64, attempt: u32, limit: Duration) -> Attempt {
    wait_until(&format!("a fault for attempt {attempt} of iteration {iteration}"), limit, || {
        attempts_of(run, iteration).into_iter().find(|a| a.attempt == attempt && a.state == AttemptState::Fault)
    })
}

/// The outcome of every record with what Slurm added taken out, for
/// comparing with a local run.
fn comparable(records: &[IterationRecord]) -> Vec<(u64, Outcome)> {
    records
        .iter()
        .map(|r| {
            let mut outcome = r.outcome.clone();
            if let Outcome::Ok { report } = &mut outcome {
                report.extra.remove("slurm");
            }
            (r.iteration, outcome)
        })
        .collect()
}

/// The `extra.slurm` of an iteration's report.
fn slurm_extra(r: &IterationRecord) -> serde_json::Value {
    match &r.outcome {
        Outcome::Ok { report } => report.extra.get("slurm").cloned().unwrap_or_default(),
        other => panic!("iteration {}: {other:?}", r.iteration),
    }
}

/// Every job of a run the accounting database knows, by name: the run's
/// jobs carry its prefix (`nas-<tag>-`).
fn jobs_by_name(run: &Path) -> BTreeMap<String, Vec<u64>> {
    let table = attempts(run);
    let first = table.first().expect("a job").name.clone();
    let prefix: String = first.splitn(3, '-').take(2).collect::<Vec<_>>().join("-") + "-";
    let out = Command::new("sacct")
        .args(["--noheader", "--parsable2", "--allocations", "--starttime=now-2hours", "--format=JobID,JobName"])
        .output()
        .expect("sacct runs");
    assert!(out.status.success(), "sacct: {}", String::from_utf8_lossy(&out.stderr));
    let mut jobs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((id, name)) = line.split_once('|') {
            if name.starts_with(&prefix) && !name.contains("-probe-") {
                jobs.entry(name.to_string()).or_default().push(id.parse().expect("a job id"));
            }
        }
    }
    jobs
}

/// Waits until the accounting database has as many of the run's jobs as
/// its table has job ids, then returns them by name.
fn accounted_jobs(run: &Path) -> BTreeMap<String, Vec<u64>> {
    let submitted = attempts(run).iter().filter(|a| a.job_id.is_some()).count();
    wait_until("sacct to know every job", Duration::from_secs(30), || {
        let jobs = jobs_by_name(run);
        (jobs.values().map(Vec::len).sum::<usize>() >= submitted).then_some(jobs)
    })
}

#[test]
fn every_evaluation_of_a_run_is_a_slurm_job_with_the_outcomes_of_a_local_run() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let search = "max_iterations = 5\nislands = 2\nmigration_interval = 0";
    let mut answers = designs(5);
    // A bad candidate stays a candidate failure.
    answers[2] = answers[2].replace("# accuracy: 0.62", "# fail: shape: mat1 and mat2 shapes cannot be multiplied");
    let local = setup_with(cluster, answers.clone(), search, &[], false);
    let out = nas(local.path(), &["run", "--config", s(&local.config)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let slurm = setup_with(cluster, answers, search, &[], true);
    let out = nas(slurm.path(), &["run", "--config", s(&slurm.config)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("the Slurm nodes read the run directory and the dataset"), "{stderr}");

    let run = slurm.run_dir();
    let recs = records(&run);
    assert_eq!(comparable(&recs), comparable(&records(&local.run_dir())), "the same outcomes as evaluated here");
    assert!(matches!(&recs[2].outcome, Outcome::Failed { failure } if failure.kind.as_str() == "shape"));
    // One job per evaluation, each done at its first attempt; each record
    // names its job and node.
    let table = attempts(&run);
    assert_eq!(table.len(), 5, "{table:#?}");
    for a in &table {
        assert_eq!((a.attempt, a.state, a.fault), (1, AttemptState::Done, None), "{a:#?}");
        assert!(a.node.is_some() && a.job_id.is_some(), "{a:#?}");
    }
    for r in recs.iter().filter(|r| r.outcome.accuracy().is_some()) {
        let extra = slurm_extra(r);
        let row = table.iter().find(|a| a.iteration == Some(r.iteration)).expect("a row");
        assert_eq!(extra["job_id"].as_u64(), row.job_id, "{extra}");
        assert_eq!(extra["node"].as_str(), row.node.as_deref(), "{extra}");
        assert_eq!(extra["faults"], serde_json::json!([]), "{extra}");
    }
    // The jobs were really Slurm's: accounting has each name once, with the
    // recorded id; the evaluator ran once per candidate, on the node.
    let jobs = accounted_jobs(&run);
    for a in &table {
        assert_eq!(jobs.get(&a.name), Some(&vec![a.job_id.expect("id")]), "{jobs:?}");
    }
    let mut evaluated = slurm.evaluated();
    evaluated.sort();
    assert_eq!(evaluated, (1..=5).map(|i| format!("iteration-{i}")).collect::<Vec<_>>());
    // What the run recorded about itself.
    let frozen = std::fs::read_to_string(run.join("config.toml")).expect("frozen config");
    assert!(frozen.contains("[executor]") && frozen.contains("kind = \"slurm\""), "{frozen}");
    let plugins = std::fs::read_to_string(run.join("plugins.json")).expect("plugins.json");
    assert!(plugins.contains("\"eval.instant\""), "{plugins}");
    assert!(run.join("jobs").is_dir());
}

#[test]
fn a_real_candidate_trains_one_epoch_of_fashion_mnist_on_a_node() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = "import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.body = nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))\n        self.head = nn.Linear(8 * 4 * 4, num_classes)\n\n    def forward(self, x):\n        return self.head(self.body(x).flatten(1))\n";
    let server = scripted(vec![fence(good)], vec![ADVICE.to_string()]);
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[run]
name = "tch"
output_dir = "runs"

[search]
max_iterations = 1

[dataset]
plugin = "builtin:data.fashion-mnist"

[evaluator]
plugin = "builtin:eval.tch-one-epoch"
[evaluator.settings]
device = "cpu"
cpu_threads = 2
max_train_examples = 512
max_test_examples = 512
memory_limit_mb = 3072
max_processes = 64
time_limit_s = 600

[generator]
plugin = "builtin:llm.openai"
[generator.settings]
base_url = "{url}"
model = "scripted"
max_retries = 0

{executor}"#,
            url = server.base_url(),
            executor = executor(cluster, &[("cpus_per_task", "2"), ("mem_mb", "3500"), ("time_limit_s", "900")]),
        ),
    )
    .expect("write config");
    let out = nas_with_evaluator(dir.path(), &["run", "--config", s(&config)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let run = run_dirs(dir.path()).pop().expect("run");
    let recs = records(&run);
    let Outcome::Ok { report } = &recs[0].outcome else { panic!("{:?}", recs[0].outcome) };
    assert!(report.accuracy > 0.1 && report.accuracy <= 1.0, "{report:?}");
    assert_eq!(report.device, "cpu");
    assert!(report.params.is_some_and(|p| p > 0), "{report:?}");
    let table = attempts(&run);
    assert_eq!(table.len(), 1);
    assert_eq!(slurm_extra(&recs[0])["job_id"].as_u64(), table[0].job_id);
}

#[test]
fn a_job_cancelled_by_someone_else_is_a_fault_and_the_candidate_runs_again() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let setup = setup(cluster, 2, "max_iterations = 2", &[]);
    setup.set_hold(true);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    let first = running_job(cluster, &run, 1);
    let scancel = Command::new("scancel").arg(first.job_id.expect("id").to_string()).status().expect("scancel");
    assert!(scancel.success());
    let fault = wait_for_fault(&run, 1, 1, Duration::from_secs(60));
    setup.set_hold(false);
    let (code, stderr) = running.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");

    assert_eq!(fault.fault, Some(JobFault::Cancelled), "{fault:#?}");
    assert!(fault.detail.contains(&format!("job {} was cancelled by uid", first.job_id.expect("id"))), "{fault:#?}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    let again = attempts_of(&run, 1);
    assert_eq!(again.len(), 2);
    assert_eq!((again[1].attempt, again[1].state), (2, AttemptState::Done));
    let recs = records(&run);
    assert_eq!(recs.len(), 2, "the run went on");
    let extra = slurm_extra(&recs[0]);
    assert_eq!(extra["attempt"], 2, "{extra}");
    assert_eq!(extra["faults"][0]["fault"], "cancelled", "{extra}");
    assert_eq!(extra["faults"][0]["job_id"].as_u64(), first.job_id, "{extra}");
}

#[test]
fn a_job_past_its_time_limit_is_a_fault_and_the_candidate_runs_again() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let setup = setup(cluster, 1, "max_iterations = 1", &[]);
    setup.set_hold(true);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    let first = running_job(cluster, &run, 1);
    // Slurm's shortest limit is a minute and slurmctld looks for jobs past
    // theirs every 30 s; moving the job's end to now (as an administrator
    // can) ends it within that look, the same way.
    let moved = Command::new("scontrol")
        .args(["update", &format!("JobId={}", first.job_id.expect("id")), "EndTime=now"])
        .status()
        .expect("runs scontrol");
    assert!(moved.success(), "scontrol update EndTime: {moved}");
    let fault = wait_for_fault(&run, 1, 1, Duration::from_secs(90));
    setup.set_hold(false);
    let (code, stderr) = running.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fault.fault, Some(JobFault::TimeLimit), "{fault:#?}");
    assert_eq!(fault.slurm_state.as_deref(), Some("TIMEOUT"), "{fault:#?}");
    assert!(fault.detail.contains("ran past its time limit 0-00:10:00"), "{fault:#?}");
    let recs = records(&run);
    assert_eq!(slurm_extra(&recs[0])["faults"][0]["fault"], "time_limit");
    assert_eq!(attempts_of(&run, 1)[1].state, AttemptState::Done);
}

#[test]
fn a_node_whose_slurmd_dies_fails_its_job_and_the_candidate_runs_again_once_it_is_back() {
    let Some(cluster) = cluster() else { return };
    let Some(dir) = cluster.script_dir("a_node_whose_slurmd_dies_fails_its_job_and_the_candidate_runs_again") else {
        return;
    };
    let _node = exclusive();
    let setup = setup(cluster, 2, "max_iterations = 2", &[]);
    setup.set_hold(true);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    running_job(cluster, &run, 1);
    kill_slurmd(dir);
    // The node is declared down SlurmdTimeout (10 s here) after it stopped
    // answering, and its job with it (the executor submits with
    // --no-requeue, so the job ends rather than going back to the queue).
    let fault = wait_for_fault(&run, 1, 1, Duration::from_secs(90));
    restart_cluster(dir);
    setup.set_hold(false);
    let (code, stderr) = running.finish(Duration::from_secs(180));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fault.fault, Some(JobFault::NodeFailure), "{fault:#?}");
    assert!(fault.detail.contains("NODE_FAIL"), "{fault:#?}");
    let recs = records(&run);
    assert_eq!(recs.len(), 2, "the run went on");
    assert_eq!(slurm_extra(&recs[0])["faults"][0]["fault"], "node_failure");
    assert!(cluster.slurm.nodes().expect("nodes").iter().all(|n| n.is_usable()));
}

/// A QoS of this test's own on the script's cluster, its submit limit set
/// to `limit` (`-1`: none).
fn refusing_qos(limit: i64) -> &'static str {
    const QOS: &str = "nas-test-refuse";
    let sacctmgr = |args: &[&str]| {
        let out = Command::new("sacctmgr").arg("-i").args(args).output().expect("sacctmgr runs");
        assert!(out.status.success(), "sacctmgr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if Command::new("sacctmgr")
        .args(["-n", "-P", "list", "qos", QOS, "format=name"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().is_empty())
        .unwrap_or(true)
    {
        sacctmgr(&["add", "qos", QOS]);
        let user =
            String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout).trim().to_string();
        sacctmgr(&["modify", "user", &user, "set", &format!("qos+={QOS}")]);
    }
    sacctmgr(&["modify", "qos", QOS, "set", &format!("MaxSubmitJobsPerUser={limit}")]);
    QOS
}

#[test]
fn a_refused_submission_is_a_fault_and_the_candidate_is_submitted_again() {
    let Some(cluster) = cluster() else { return };
    if cluster.script_dir("a_refused_submission_is_a_fault_and_the_candidate_is_submitted_again").is_none() {
        return;
    }
    let _node = shared();
    let qos = refusing_qos(0);
    // The probe would be refused too (which is what it is for).
    let qos = format!("\"{qos}\"");
    // Attempts enough to outlast lifting the limit on a loaded machine
    // (sacctmgr, then slurmdbd telling slurmctld, take seconds there).
    let more = [("probe", "false"), ("retry_delay_s", "1"), ("max_attempts", "60"), ("qos", qos.as_str())];
    let setup = setup(cluster, 2, "max_iterations = 2", &more);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    let fault = wait_for_fault(&run, 1, 1, Duration::from_secs(60));
    refusing_qos(-1);
    let (code, stderr) = running.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(fault.fault, Some(JobFault::Refused), "{fault:#?}");
    assert_eq!(fault.job_id, None);
    assert!(fault.detail.contains("QOS"), "Slurm's words: {fault:#?}");
    let first = attempts_of(&run, 1);
    assert_eq!(first.last().map(|a| a.state), Some(AttemptState::Done), "{first:#?}");
    assert!(first[..first.len() - 1].iter().all(|a| a.fault == Some(JobFault::Refused)), "{first:#?}");
    assert_eq!(records(&run).len(), 2, "the run went on");
}

#[test]
fn attempts_used_up_stop_the_run_resumable_and_resume_submits_again() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    // A node that cannot run nas: every job fails. No probe, to see the
    // attempts themselves.
    let more = [("probe", "false"), ("max_attempts", "2"), ("nas_command", "\"/nonexistent/nas\"")];
    let setup = setup(cluster, 2, "max_iterations = 2", &more);
    let out = nas(setup.path(), &["run", "--config", s(&setup.config)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 attempts on Slurm ended without a result"), "{stderr}");
    assert!(stderr.contains("job_failed") && stderr.contains("nas resume"), "{stderr}");
    let run = setup.run_dir();
    let first = attempts_of(&run, 1);
    assert_eq!(first.len(), 2, "{first:#?}");
    for a in &first {
        assert_eq!(a.fault, Some(JobFault::JobFailed), "{a:#?}");
        assert!(a.detail.contains("exit 127") && a.detail.contains("/nonexistent/nas"), "{a:#?}");
    }
    assert!(records(&run).is_empty());
    let status = nas_host::store::Store::open(&run).expect("store").meta("status").expect("meta");
    assert_eq!(status.as_deref(), Some("failed"));

    // Fixed (the frozen config is the run's own), the run resumes.
    let frozen = run.join("config.toml");
    let fixed = std::fs::read_to_string(&frozen).expect("frozen").replace("nas_command = \"/nonexistent/nas\"\n", "");
    std::fs::write(&frozen, fixed).expect("write");
    let out = nas(setup.path(), &["resume", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let first = attempts_of(&run, 1);
    assert_eq!(
        first.iter().map(|a| a.state).collect::<Vec<_>>(),
        [AttemptState::Fault, AttemptState::Fault, AttemptState::Done]
    );
    assert_eq!(records(&run).len(), 2);
}

#[test]
fn nodes_that_cannot_run_nas_stop_the_run_at_start_with_the_reason() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let setup = setup(cluster, 1, "max_iterations = 1", &[("nas_command", "\"/nonexistent/nas\"")]);
    let out = nas(setup.path(), &["run", "--config", s(&setup.config)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    assert!(
        error.contains("probe job") && error.contains("/nonexistent/nas") && error.contains("nas_command"),
        "{error}"
    );
    // The reason: the exit code when accounting has it within the wait (on
    // a loaded machine slurmdbd may not yet), else the job's own output.
    assert!(error.contains("exit 127") || error.contains("/nonexistent/nas: not found"), "{error}");
    assert!(run_dirs(setup.path()).is_empty(), "a run that cannot start leaves no run directory");
    assert!(setup.evaluated().is_empty());
}

#[test]
fn ctrl_c_cancels_the_jobs_in_flight_and_the_run_resumes() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    let setup = setup(cluster, 3, "max_iterations = 3", &[]);
    setup.set_hold(true);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    let job = running_job(cluster, &run, 1);
    let id = job.job_id.expect("id");
    let sent = Command::new("kill").args(["-INT", &running.child.id().to_string()]).status().expect("kill");
    assert!(sent.success());
    let (code, stderr) = running.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "an interrupted run ends well: {stderr}");
    assert!(stderr.contains(&format!("cancelled Slurm job {id}")), "{stderr}");
    let cancelled =
        super::wait_for(&cluster.slurm, nas_host::slurm::JobId(id), Duration::from_secs(30), |s| s.state.is_finished());
    assert_eq!(cancelled.state, nas_host::slurm::JobState::Cancelled, "{cancelled:?}");
    assert_eq!(attempts_of(&run, 1)[0].state, AttemptState::Interrupted);
    let status = nas_host::store::Store::open(&run).expect("store").meta("status").expect("meta");
    assert_eq!(status.as_deref(), Some("interrupted"));

    setup.set_hold(false);
    let out = nas(setup.path(), &["resume", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(records(&run).len(), 3);
    let first = attempts_of(&run, 1);
    assert_eq!(first.iter().map(|a| a.state).collect::<Vec<_>>(), [AttemptState::Interrupted, AttemptState::Done]);
}

#[test]
fn a_run_killed_while_its_jobs_run_resumes_and_follows_them_instead_of_submitting_again() {
    let Some(cluster) = cluster() else { return };
    let _node = shared();
    // A controller slow to answer iteration 2's submission: the job is
    // queued, but the host dies before it learns the id.
    let setup = setup(cluster, 4, "max_iterations = 4\nislands = 2\nmigration_interval = 0", &[]);
    let wrapper = setup.path().join("slow-sbatch");
    let queued = setup.path().join("queued-iteration-2");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nout=$(sbatch \"$@\")\nrc=$?\ncase \"$*\" in *-iteration-2-*) touch '{}'; sleep 30;; esac\necho \"$out\"\nexit $rc\n",
            queued.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut config = std::fs::read_to_string(&setup.config).expect("config");
    config.push_str(&format!("[executor.commands]\nsbatch = \"{}\"\n", wrapper.display()));
    std::fs::write(&setup.config, config).expect("config");

    setup.set_hold(true);
    let mut running = setup.spawn(&["run", "--config", s(&setup.config)]);
    let run = wait_for_run(&setup, &mut running);
    let first = running_job(cluster, &run, 1);
    wait_until("iteration 2's job queued", Duration::from_secs(60), || queued.exists().then_some(()));
    let second = attempts_of(&run, 2);
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].state, second[0].job_id), (AttemptState::Submitting, None), "sbatch has not answered");
    running.child.kill().expect("kill -9");
    let _ = running.child.wait();

    let mut resumed = setup.spawn(&["resume", s(&run)]);
    resumed.wait_for_lines("following Slurm job", 2, Duration::from_secs(120));
    setup.set_hold(false);
    let (code, stderr) = resumed.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("iteration-1: following Slurm job {}", first.job_id.expect("id"))), "{stderr}");

    assert_eq!(records(&run).len(), 4);
    let table = attempts(&run);
    for i in 1..=4 {
        let of: Vec<&Attempt> = table.iter().filter(|a| a.iteration == Some(i)).collect();
        assert_eq!(of.len(), 1, "iteration {i} was submitted once: {of:#?}");
        assert_eq!(of[0].state, AttemptState::Done);
    }
    assert_eq!(attempts_of(&run, 1)[0].job_id, first.job_id, "followed again, by its id");
    // Slurm ran exactly one job per evaluation (the one queued while the
    // host died was found by its name), and each evaluation ran once.
    let jobs = accounted_jobs(&run);
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    for a in &table {
        assert_eq!(jobs.get(&a.name), Some(&vec![a.job_id.expect("id")]), "{jobs:?}");
    }
    let mut evaluated = setup.evaluated();
    evaluated.sort();
    assert_eq!(evaluated, (1..=4).map(|i| format!("iteration-{i}")).collect::<Vec<_>>());
}
