//! The crash torture harness: `nas run` killed with SIGKILL at many seeded
//! moments (inside LLM calls, inside evaluations, right after commits, at
//! random), `nas resume` after each kill until the run finishes, then its
//! store compared with an uninterrupted run of the same config.
//!
//! Used by the `crash::` integration tests (a few kills) and by
//! `benches/torture.rs` (50 kills, figures in `docs/results/reliability.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nas_host::records::{IterationRecord, Outcome};
use nas_host::store::Store;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};

use crate::{fence, nas_bin, role_and_attempt, run_dirs, s, write_scripted_run};

/// How a torture run is set up.
#[derive(Debug, Clone)]
pub struct TortureConfig {
    /// SIGKILLs to deliver before the run may finish.
    pub kills: usize,
    /// Seeds the moments.
    pub seed: u64,
    /// The run's `max_iterations`.
    pub iterations: u64,
    /// How long the loopback server takes to answer each LLM call.
    pub llm_ms: u64,
    /// How long each evaluation takes (the instant evaluator's `delay_ms`).
    pub eval_ms: u64,
}

impl TortureConfig {
    /// A run long enough for `kills` kills: about one iteration per kill
    /// plus a few, 40 ms LLM calls, 60 ms evaluations.
    pub fn for_kills(kills: usize, seed: u64) -> TortureConfig {
        TortureConfig { kills, seed, iterations: (kills as u64 + 4).max(6), llm_ms: 40, eval_ms: 60 }
    }
}

/// Where a kill was aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KillMoment {
    /// While the loopback server held an LLM request unanswered.
    LlmCall,
    /// After the generator's answer was sent, within the evaluation's time.
    Evaluation,
    /// The moment a new committed iteration became visible in the store
    /// (racing the writes that follow a commit).
    AfterCommit,
    /// A uniformly drawn delay after start (start-up, dataset preparation,
    /// any step).
    Random,
}

impl KillMoment {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            KillMoment::LlmCall => "inside an LLM call",
            KillMoment::Evaluation => "inside an evaluation",
            KillMoment::AfterCommit => "right after a commit",
            KillMoment::Random => "at a random delay after start",
        }
    }
}

/// What a torture run found.
#[derive(Debug, Clone)]
pub struct TortureReport {
    /// Kills delivered, by where they were aimed.
    pub kills: BTreeMap<KillMoment, usize>,
    /// Processes started (`nas run` once, `nas resume` the rest).
    pub starts: usize,
    /// Iterations of the uninterrupted run.
    pub reference_iterations: usize,
    /// Iterations of the uninterrupted run missing from the killed one.
    pub lost: Vec<u64>,
    /// Iterations recorded more than once, or not in the uninterrupted run.
    pub duplicated: Vec<u64>,
    /// Iterations present in both whose deterministic fields differ.
    pub differing: Vec<u64>,
    /// Whether the memory tables are equal.
    pub memory_equal: bool,
    /// Kills confirmed to have landed where they were aimed: an LLM call
    /// still unanswered (the server's delay not over), an evaluation not
    /// finished (the evaluator had not logged it and the Improver had not
    /// been asked); a commit or random kill counts as it is.
    pub confirmed: BTreeMap<KillMoment, usize>,
    /// LLM requests made again after a kill (the killed request had no
    /// answer journaled).
    pub llm_calls_redone: usize,
    /// Seconds the uninterrupted run took.
    pub reference_seconds: f64,
    /// Seconds from the first start to the end of the last resume.
    pub torture_seconds: f64,
}

impl TortureReport {
    /// Total kills.
    pub fn total_kills(&self) -> usize {
        self.kills.values().sum()
    }
}

/// The fields of a record that a replayed, fixture-evaluated run repeats
/// exactly: number, code, outcome, accuracy, the Improver's advice and the
/// prompts both roles were given.
pub type Comparable = (u64, Option<String>, String, Option<f64>, Option<String>, String, String);

fn kind(r: &IterationRecord) -> String {
    match &r.outcome {
        Outcome::Ok { .. } => "ok".into(),
        other => other.failure_kind().unwrap_or_default(),
    }
}

/// [`Comparable`] of a record.
pub fn comparable(r: &IterationRecord) -> Comparable {
    (
        r.iteration,
        r.code.clone(),
        kind(r),
        r.outcome.accuracy(),
        r.advice.as_ref().map(|a| a.suggestions.clone()),
        r.generator_prompt.last().map(|m| m.content.clone()).unwrap_or_default(),
        r.improver_prompt.as_ref().and_then(|p| p.last()).map(|m| m.content.clone()).unwrap_or_default(),
    )
}

fn net(i: u64) -> String {
    let body = match i % 5 {
        0 => format!("        self.fc = nn.Linear({}, num_classes)\n        # fail: runtime: boom {i}", 100 + i),
        3 => format!("        self.fc = nn.Linear({}, num_classes)\n        # fail: shape: mat1 and mat2 {i}", 200 + i),
        _ => format!(
            "        self.c{i} = nn.Conv2d(1, {}, 3)\n        self.fc = nn.Linear({}, num_classes)\n        # accuracy: 0.{}",
            8 * i,
            50 * i,
            40 + (i * 7) % 59
        ),
    };
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n{body}\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    ))
}

/// What a server saw, with when.
pub type EventLog = Arc<Mutex<Vec<(Instant, String)>>>;

/// A loopback server answering the generator with a distinct candidate
/// per attempt and the Improver with a distinct advice, each after
/// `delay_ms`; the events it saw are appended to the returned log.
pub fn slow_scripted_server(delay_ms: u64) -> (TestServer, EventLog) {
    let server = TestServer::start();
    let events: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let log = events.clone();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, attempt) = role_and_attempt(&req.body);
        log.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), role.clone()));
        let text = match role.as_str() {
            "generator" => net(attempt.max(1)),
            _ => format!(
                "```json\n{{\"reason\": \"R{attempt}\", \"improvement_suggestions\": \"S{attempt} widen layer {attempt}\"}}\n```"
            ),
        };
        Some(if delay_ms > 0 { Step::delayed(delay_ms, Step::reply(text)) } else { Step::reply(text) })
    });
    (server, events)
}

/// Writes the torture run's config into `dir` (its evaluator logs each
/// evaluation's candidate id to `dir/evaluated.log`).
pub fn write_config(dir: &Path, server: &TestServer, cfg: &TortureConfig) -> PathBuf {
    let log = dir.join("evaluated.log");
    write_scripted_run(
        dir,
        server,
        "torture",
        &format!("max_iterations = {}", cfg.iterations),
        &format!(
            r#"
[evaluator]
plugin = "eval.instant"
[evaluator.settings]
log = "{log}"
delay_ms = {eval}

[memory]
plugin = "builtin:memory.window"
[memory.settings]
k = 3
"#,
            log = log.display(),
            eval = cfg.eval_ms,
        ),
    )
}

/// The `nas` command for `dir`: `nas run` when it holds no run yet, else
/// `nas resume` of its run.
fn start(dir: &Path, cfg_file: &Path) -> std::process::Child {
    let mut cmd = Command::new(nas_bin());
    cmd.current_dir(dir).env("NAS_HOME", dir.join(".nas-home")).stdout(Stdio::null()).stderr(Stdio::null());
    match run_dirs(dir).pop() {
        None => cmd.args(["run", "--config", s(cfg_file)]),
        Some(run) => cmd.args(["resume", s(&run)]),
    };
    cmd.spawn().expect("spawn nas")
}

/// The number of committed iterations, read as `nas report` reads them (0
/// while there is no run or it cannot be read yet).
fn committed(dir: &Path) -> usize {
    run_dirs(dir)
        .pop()
        .and_then(|run| Store::open(&run).ok())
        .and_then(|st| st.last_iteration().ok())
        .map_or(0, |n| n as usize)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(String::from).collect()).unwrap_or_default()
}

/// Runs the uninterrupted reference and the killed-and-resumed run of
/// `cfg`, and compares them.
pub fn torture(cfg: &TortureConfig) -> TortureReport {
    let (server, events) = slow_scripted_server(cfg.llm_ms);

    // The reference: one uninterrupted run.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference_cfg = write_config(reference_dir.path(), &server, cfg);
    let t0 = Instant::now();
    let out = crate::nas(reference_dir.path(), &["run", "--config", s(&reference_cfg)]);
    assert!(out.status.success(), "the reference run failed: {:?}", crate::text(&out));
    let reference_seconds = t0.elapsed().as_secs_f64();
    let reference_run = run_dirs(reference_dir.path()).pop().expect("reference run");
    let reference: Vec<Comparable> = crate::records(&reference_run).iter().map(comparable).collect();
    assert_eq!(reference.len() as u64, cfg.iterations, "the reference run did every iteration");
    let reference_memory = Store::open(&reference_run).expect("store").memory().expect("memory");
    let reference_requests = events.lock().unwrap_or_else(|e| e.into_inner()).len();

    // The same run, killed and resumed.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_file = write_config(dir.path(), &server, cfg);
    let mut rng = Rng(cfg.seed);
    let mut kills: BTreeMap<KillMoment, usize> = BTreeMap::new();
    let mut confirmed: BTreeMap<KillMoment, usize> = BTreeMap::new();
    let mut starts = 0;
    let t0 = Instant::now();
    let max_starts = cfg.kills * 3 + 20;
    loop {
        assert!(starts < max_starts, "the run did not finish within {max_starts} starts");
        let killing = kills.values().sum::<usize>() < cfg.kills;
        let moment = match rng.below(4) {
            0 => KillMoment::LlmCall,
            1 => KillMoment::Evaluation,
            2 => KillMoment::AfterCommit,
            _ => KillMoment::Random,
        };
        // Which occurrence after this start: the first to the third.
        let nth = 1 + rng.below(3) as usize;
        let fraction = 0.1 + rng.below(700) as f64 / 1000.0;
        let random_delay = Duration::from_millis(30 + rng.below(1500));
        let seen_llm = events.lock().unwrap_or_else(|e| e.into_inner()).len();
        let seen_commits = committed(dir.path());
        let started = Instant::now();
        let mut child = start(dir.path(), &cfg_file);
        starts += 1;
        // When the kill is due, once known.
        let mut due: Option<Instant> = None;
        // For a kill aimed at an evaluation: the evaluator's log length and
        // the LLM events seen when its generator answer was sent.
        let mut aimed_at: Option<(usize, usize)> = None;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if killing && due.is_none() {
                due = match moment {
                    KillMoment::Random => Some(started + random_delay),
                    KillMoment::LlmCall | KillMoment::Evaluation => {
                        let ev = events.lock().unwrap_or_else(|e| e.into_inner());
                        let fresh: Vec<&(Instant, String)> = ev[seen_llm..]
                            .iter()
                            .filter(|(_, role)| moment == KillMoment::LlmCall || role == "generator")
                            .collect();
                        fresh.get(nth - 1).map(|(at, _)| {
                            aimed_at = Some((lines_of(&dir.path().join("evaluated.log")).len(), ev.len()));
                            if moment == KillMoment::LlmCall {
                                *at + Duration::from_secs_f64(cfg.llm_ms as f64 / 1000.0 * fraction)
                            } else {
                                *at + Duration::from_millis(cfg.llm_ms)
                                    + Duration::from_secs_f64(cfg.eval_ms as f64 / 1000.0 * fraction)
                            }
                        })
                    }
                    KillMoment::AfterCommit => (committed(dir.path()) >= seen_commits + nth.min(2)).then(Instant::now),
                };
            }
            if due.is_some_and(|d| Instant::now() >= d) {
                let kill_at = Instant::now();
                let (evaluated_at_kill, events_at_kill) = (
                    lines_of(&dir.path().join("evaluated.log")).len(),
                    events.lock().unwrap_or_else(|e| e.into_inner()).len(),
                );
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                let landed = match (moment, aimed_at) {
                    (KillMoment::Evaluation, Some((evaluated, seen))) => {
                        evaluated_at_kill == evaluated && events_at_kill == seen
                    }
                    (KillMoment::LlmCall, _) => {
                        // The aimed request's answer was still being held.
                        let ev = events.lock().unwrap_or_else(|e| e.into_inner());
                        ev[seen_llm..]
                            .get(nth - 1)
                            .is_some_and(|(at, _)| kill_at.duration_since(*at) < Duration::from_millis(cfg.llm_ms))
                    }
                    _ => true,
                };
                *kills.entry(moment).or_default() += 1;
                if landed {
                    *confirmed.entry(moment).or_default() += 1;
                }
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Some(status) = status {
            assert!(status.success(), "nas exited with {status} (start {starts})");
            if !killing {
                break;
            }
            // It finished before the kill was due: the run is complete.
            if committed(dir.path()) as u64 >= cfg.iterations {
                break;
            }
        }
    }
    let torture_seconds = t0.elapsed().as_secs_f64();

    let run = run_dirs(dir.path()).pop().expect("run");
    let records = crate::records(&run);
    let got: Vec<Comparable> = records.iter().map(comparable).collect();
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &records {
        *count.entry(r.iteration).or_default() += 1;
    }
    let wanted: BTreeMap<u64, &Comparable> = reference.iter().map(|c| (c.0, c)).collect();
    let lost: Vec<u64> = wanted.keys().filter(|i| !count.contains_key(i)).copied().collect();
    let duplicated: Vec<u64> =
        count.iter().filter(|(i, n)| **n > 1 || !wanted.contains_key(i)).map(|(i, _)| *i).collect();
    let differing: Vec<u64> = got.iter().filter(|c| wanted.get(&c.0).is_some_and(|w| *w != *c)).map(|c| c.0).collect();
    let memory_equal = Store::open(&run).expect("store").memory().expect("memory") == reference_memory;
    let requests = events.lock().unwrap_or_else(|e| e.into_inner()).len();
    TortureReport {
        kills,
        starts,
        reference_iterations: reference.len(),
        lost,
        duplicated,
        differing,
        memory_equal,
        confirmed,
        llm_calls_redone: (requests - reference_requests).saturating_sub(reference_requests),
        reference_seconds,
        torture_seconds,
    }
}
