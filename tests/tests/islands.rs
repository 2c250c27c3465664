//! Several candidates in flight: islands sharing the novelty archive and
//! passing their best along a ring, LLM calls in flight at once, evaluation
//! slots; and what keeps it exact: kill -9 and resume, replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nas_host::records::{IterationRecord, Outcome};
use nas_host::store::Store;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_tests::{fence, nas, nas_bin, records, role_and_attempt, run_dirs, scripted_config, text};

/// A design of its own for attempt `a` (names and sizes differ, so designs
/// of different attempts are not near-duplicates), scored `accuracy` by the
/// instant evaluator, which fingerprints it as `network`.
fn net(a: u64, accuracy: f64, network: &str) -> String {
    let width = 8 + a;
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.hidden{a} = nn.Linear(64, {width})\n        self.act{a} = nn.ReLU()\n        self.head{a} = nn.Linear({width}, num_classes)\n        # accuracy: {accuracy:.2}\n        # network: {network}\n\n    def forward(self, x):\n        return self.head{a}(self.act{a}(self.hidden{a}(x.flatten(1))))\n"
    ))
}

/// The network attempt `a`'s design builds: its own, except that attempts 2,
/// 7 and 8 build, in words of their own, the networks of attempts 1, 3 and 4
/// (three islands: 2 is island 1's first, before any migration; 7 is island
/// 0's third, after it took island 2's first epoch, which trained 3; 8 is
/// island 1's third, after it took island 0's, which trained 4).
fn network_of(a: u64) -> String {
    let built = match a {
        2 => 1,
        7 => 3,
        8 => 4,
        a => a,
    };
    format!("n{built}")
}

/// A server answering by attempt number after `delay_ms`, counting the
/// requests it serves at once.
fn server(delay_ms: u64) -> (TestServer, Arc<AtomicUsize>) {
    let server = TestServer::start();
    let (busy, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peak_out = peak.clone();
    server.set_responder(move |req: &RecordedRequest| {
        let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(delay_ms));
        busy.fetch_sub(1, Ordering::SeqCst);
        let (role, attempt) = role_and_attempt(&req.body);
        Some(Step::reply(if role == "generator" {
            // Every fifth attempt repeats attempt 1's design: a duplicate
            // whose twin is the same in every run.
            let a = if attempt % 5 == 0 { 1 } else { attempt };
            net(a, 0.5 + (a % 7) as f64 * 0.05, &network_of(a))
        } else {
            format!("```json\n{{\"reason\": \"R{attempt} the head is narrow\", \"improvement_suggestions\": \"S{attempt} widen fc to {} units\"}}\n```", 16 + attempt)
        }))
    });
    (server, peak_out)
}

fn write_config(dir: &Path, server: &TestServer, search: &str, slots: u32, delay_ms: u64) -> PathBuf {
    let cfg = dir.join("run.toml");
    let text = scripted_config(
        server,
        &format!(
            r#"
[run]
name = "islands"
output_dir = "runs"

[search]
{search}

[evaluator]
plugin = "eval.instant"
slots = {slots}
[evaluator.settings]
delay_ms = {delay_ms}
log = "{log}"
spans = "{spans}"

[memory]
plugin = "builtin:memory.window"
[memory.settings]
k = 3
"#,
            log = dir.join("evaluated.log").display(),
            spans = dir.join("spans.log").display(),
        ),
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

type Comparable = (u64, u64, Option<String>, String, Option<f64>, Option<(u64, f64)>, Option<String>, String);

fn comparable(r: &IterationRecord) -> Comparable {
    (
        r.iteration,
        r.island,
        r.code.clone(),
        r.outcome.failure_kind().unwrap_or_else(|| "ok".into()),
        r.outcome.accuracy(),
        r.best,
        r.advice.as_ref().map(|a| a.suggestions.clone()),
        r.generator_prompt.last().map(|m| m.content.clone()).unwrap_or_default(),
    )
}

/// The largest number of evaluations the instant evaluator ran at once, from
/// its log of spans.
fn peak_evaluations(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).expect("evaluation log");
    let mut events: Vec<(u128, i32)> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [_, start, end] = parts[..] {
            events.push((start.parse().expect("start"), 1));
            events.push((end.parse().expect("end"), -1));
        }
    }
    events.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

#[test]
fn islands_run_side_by_side_share_the_archive_and_migrate_their_best() {
    let (server, peak_llm) = server(150);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &server, "max_iterations = 12\nislands = 3\nmigration_interval = 2", 2, 150);
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = run_dirs(dir.path()).pop().expect("run");
    let recs = records(&run);
    assert_eq!(recs.iter().map(|r| r.iteration).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    for r in &recs {
        assert_eq!(r.island, (r.iteration - 1) % 3, "iteration {} ran on island {}", r.iteration, r.island);
    }
    // The archive is shared: attempts 5 and 10 repeat attempt 1's design (5
    // on another island) and are duplicates of it.
    for t in [5, 10] {
        assert!(matches!(recs[t - 1].outcome, Outcome::Duplicate { of: 1, .. }), "{t}: {:?}", recs[t - 1].outcome);
    }
    // Networks trained reach the other islands along the ring at each
    // migration: 2 builds attempt 1's network before island 1 took any and
    // trains; 7 builds 3's after island 0 took island 2's first epoch, and 8
    // builds 4's after island 1 took island 0's; both are refused before
    // their epoch, naming the attempt that trained it.
    assert!(matches!(recs[1].outcome, Outcome::Ok { .. }), "2: {:?}", recs[1].outcome);
    for (t, of) in [(7, 3), (8, 4)] {
        assert!(
            matches!(recs[t - 1].outcome, Outcome::Duplicate { of: o, network: true, .. } if o == of),
            "{t}: {:?}",
            recs[t - 1].outcome
        );
    }
    // Each island's generator saw its own previous attempt.
    for r in recs.iter().filter(|r| r.iteration > 3) {
        let prompt = &r.generator_prompt.last().expect("prompt").content;
        assert!(prompt.contains(&format!("Previous attempt ({})", r.iteration - 3)), "{}: {prompt}", r.iteration);
    }
    // Migration: after its 2nd iteration each island takes the best of the
    // island before it in the ring when it is better, so after the first
    // epoch no island's best is below its neighbour's best of that epoch.
    let best_after =
        |island: u64, k: u64| recs[(k as usize - 1) * 3 + island as usize].best.map(|b| b.1).unwrap_or(0.0);
    for island in 0..3u64 {
        let from = (island + 2) % 3;
        let third = recs[(2 * 3 + island) as usize].best.map(|b| b.1).unwrap_or(0.0);
        assert!(third >= best_after(from, 2), "island {island} did not take island {from}'s best");
    }
    // Calls and evaluations really overlapped, within their caps.
    assert!(peak_llm.load(Ordering::SeqCst) >= 2, "LLM calls never overlapped");
    assert!(peak_llm.load(Ordering::SeqCst) <= 3, "more calls in flight than islands");
    let evals = peak_evaluations(&dir.path().join("spans.log"));
    assert_eq!(evals, 2, "evaluations at once: {evals}, slots: 2");
}

#[test]
fn one_island_records_do_not_name_an_island() {
    let (server, peak_llm) = server(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &server, "max_iterations = 3", 1, 0);
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = run_dirs(dir.path()).pop().expect("run");
    let store = Store::open(&run).expect("store");
    let json = store.iterations().expect("records");
    assert_eq!(json.len(), 3);
    let raw = std::fs::read(run.join("run.sqlite")).expect("db");
    assert!(!String::from_utf8_lossy(&raw).contains("\"island\""), "the paper's run records no island field");
    assert_eq!(peak_llm.load(Ordering::SeqCst), 1);
}

#[test]
fn islands_and_slots_killed_at_random_points_resume_to_the_uninterrupted_records_and_replay() {
    let search = "max_iterations = 12\nislands = 3\nmigration_interval = 2";
    let (server, _) = server(60);
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(reference_dir.path(), &server, search, 2, 250);
    let out = nas(reference_dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let reference_run = run_dirs(reference_dir.path()).pop().expect("run");
    let reference: Vec<Comparable> = records(&reference_run).iter().map(comparable).collect();
    assert_eq!(reference.len(), 12);

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &server, search, 2, 250);
    let mut seed: u64 = 0x151a4d5;
    let mut next_delay = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_millis(150 + (seed >> 33) % 700)
    };
    let (mut kills, mut finished) = (0, false);
    for attempt in 0..40 {
        let mut cmd = Command::new(nas_bin());
        cmd.current_dir(dir.path())
            .env("NAS_HOME", dir.path().join(".nas-home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match run_dirs(dir.path()).pop() {
            None => cmd.args(["run", "--config", cfg.to_str().expect("utf-8")]),
            Some(run) => cmd.args(["resume", run.to_str().expect("utf-8")]),
        };
        let mut child = cmd.spawn().expect("spawn nas");
        let deadline = std::time::Instant::now() + next_delay();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if std::time::Instant::now() >= deadline && attempt < 30 {
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                kills += 1;
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(s) = status {
            assert!(s.success(), "nas exited with {s}");
            finished = true;
            break;
        }
    }
    assert!(finished, "the run finished within 40 starts");
    assert!(kills >= 3, "the run was killed several times ({kills})");
    let run = run_dirs(dir.path()).pop().expect("run");
    let resumed: Vec<Comparable> = records(&run).iter().map(comparable).collect();
    assert_eq!(resumed, reference, "killed-and-resumed records equal the uninterrupted run's");
    let memory = Store::open(&run).expect("store").memory().expect("memory");
    assert_eq!(memory, Store::open(&reference_run).expect("store").memory().expect("memory"));

    drop(server);
    let replay_dir = tempfile::tempdir().expect("tempdir");
    let out = nas(
        replay_dir.path(),
        &[
            "run",
            "--replay",
            reference_run.to_str().expect("utf-8"),
            "--output-dir",
            replay_dir.path().join("runs").to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let replayed: Vec<Comparable> =
        records(&run_dirs(replay_dir.path()).pop().expect("replay run")).iter().map(comparable).collect();
    assert_eq!(replayed, reference, "a replay reproduces the records");
}

/// A config of 4 islands and 4 slots on a shared device of 100 MB whose
/// candidates take 40 MB each (attempt 6's design 150 MB), with the
/// `[evaluator]` keys `evaluator`.
fn write_memory_config(dir: &Path, server: &TestServer, evaluator: &str) -> PathBuf {
    let cfg = dir.join("run.toml");
    let text = scripted_config(
        server,
        &format!(
            r#"
[run]
name = "memory"
output_dir = "runs"

[search]
max_iterations = 12
islands = 4
migration_interval = 0

[evaluator]
plugin = "eval.instant"
slots = 4
{evaluator}
[evaluator.settings]
delay_ms = 300
peak_mb = 40
device_mb = 100
spans = "{spans}"

[memory]
plugin = "builtin:memory.window"
"#,
            spans = dir.join("spans.log").display(),
        ),
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

/// A server like [`server`] whose attempt 6 is a design too large for the
/// device alone.
fn memory_server() -> TestServer {
    let server = TestServer::start();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, attempt) = role_and_attempt(&req.body);
        Some(Step::reply(if role == "generator" {
            let design = net(attempt, 0.5 + (attempt % 7) as f64 * 0.05, &format!("n{attempt}"));
            if attempt == 6 {
                design.replace("        # accuracy", "        # peak_mb: 150\n        # accuracy")
            } else {
                design
            }
        } else {
            format!("```json\n{{\"reason\": \"R{attempt}\", \"improvement_suggestions\": \"S{attempt} widen\"}}\n```")
        }))
    });
    server
}

fn is_oom(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed { failure } if failure.kind == nas_plugin_api::FailureKind::OutOfMemory)
}

#[test]
fn a_candidate_out_of_memory_beside_others_is_retried_alone_and_one_out_of_memory_alone_fails() {
    let server = memory_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_memory_config(dir.path(), &server, "");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let recs = records(&run_dirs(dir.path()).pop().expect("run"));
    assert_eq!(recs.len(), 12);
    for r in &recs {
        if r.iteration == 6 {
            assert!(is_oom(&r.outcome), "150 MB on a 100 MB device fails alone: {:?}", r.outcome);
        } else {
            assert!(matches!(r.outcome, Outcome::Ok { .. }), "{}: {:?}", r.iteration, r.outcome);
            let peak = match &r.outcome {
                Outcome::Ok { report } => report.peak_memory_bytes,
                _ => None,
            };
            assert_eq!(peak, Some(40 << 20), "the trainee's own peak is recorded");
        }
        for retry in &r.eval_retries {
            assert_eq!(retry.failure.kind, nas_plugin_api::FailureKind::OutOfMemory);
        }
    }
    let retried: Vec<u64> = recs.iter().filter(|r| !r.eval_retries.is_empty()).map(|r| r.iteration).collect();
    assert!(!retried.is_empty(), "four 40 MB evaluations at once on 100 MB: some ran out and were retried alone");
    // What the records say survives a resume: the store holds the retries.
    let raw = std::fs::read(run_dirs(dir.path()).pop().expect("run").join("run.sqlite")).expect("db");
    assert!(String::from_utf8_lossy(&raw).contains("\"eval_retries\""));
}

#[test]
fn evaluations_in_flight_fit_the_memory_budget() {
    let server = memory_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_memory_config(dir.path(), &server, "memory_budget_mb = 100\nmemory_estimate_mb = 40");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let recs = records(&run_dirs(dir.path()).pop().expect("run"));
    assert_eq!(recs.len(), 12);
    // Expected peak 40 MB × 1.25 = 50 MB: two fit the budget, never three.
    let at_once = peak_evaluations(&dir.path().join("spans.log"));
    assert!(at_once <= 2, "{at_once} evaluations at once on a budget of two");
    for r in recs.iter().filter(|r| r.iteration != 6) {
        assert!(matches!(r.outcome, Outcome::Ok { .. }), "{}: {:?}", r.iteration, r.outcome);
        assert!(r.eval_retries.is_empty(), "{}: admitted within the budget, nothing ran out", r.iteration);
    }
    assert!(is_oom(&recs[5].outcome), "too large alone: {:?}", recs[5].outcome);
}
