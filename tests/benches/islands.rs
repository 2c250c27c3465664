//! Several candidates in flight: iterations per hour with 1 island against
//! 4 islands (LLM calls in flight and evaluation slots to match), measured
//! side by side in one run, against a chat-completions server on loopback
//! that answers with a realistic delay and batches concurrent requests, and
//! the instant evaluator fixture holding each evaluation for a fixed time;
//! and the check time per candidate of eval.tch-one-epoch's checker, cold
//! (a fresh `import torch` per candidate) against warm (a fork of a process
//! that imported torch). Writes `docs/results/islands-bench.md`.
//!
//! `cargo bench -p nas-tests --bench islands`

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nas_host::records::Outcome;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_plugin_test_support::machine::{cpu, load};
use nas_tests::{build_cdylib, fence, nas_bin, records, role_and_attempt, run_dirs, venv_python, workspace_root};

/// The generator's answer time alone on the server, ms.
const GENERATOR_MS: u64 = 1200;
/// The Improver's answer time alone on the server, ms.
const IMPROVER_MS: u64 = 600;
/// Extra time per other request in flight: a batching server's answers slow
/// down a little as the batch grows.
const BATCH_SLOWDOWN: f64 = 0.08;
/// Each evaluation's duration, ms.
const EVAL_MS: u64 = 300;

/// One arm: islands, LLM calls in flight, evaluation slots, iterations.
struct Arm {
    islands: u32,
    llm_in_flight: u32,
    slots: u32,
    iterations: u64,
}

struct Measured {
    wall_s: f64,
    iterations: usize,
    trained: usize,
    peak_llm: usize,
}

/// A design of its own for attempt `a` (so no two attempts are duplicates).
fn net(a: u64) -> String {
    let width = 8 + a;
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.hidden{a} = nn.Linear(64, {width})\n        self.act{a} = nn.ReLU()\n        self.head{a} = nn.Linear({width}, num_classes)\n        # accuracy: {acc:.2}\n\n    def forward(self, x):\n        return self.head{a}(self.act{a}(self.hidden{a}(x.flatten(1))))\n",
        acc = 0.5 + (a % 9) as f64 * 0.04
    ))
}

/// The server: each answer's delay is its role's time, stretched by
/// [`BATCH_SLOWDOWN`] for every other answer in flight when it arrives.
fn server() -> (TestServer, Arc<Mutex<usize>>) {
    let server = TestServer::start();
    let ends: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(Mutex::new(0usize));
    let peak_out = peak.clone();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, attempt) = role_and_attempt(&req.body);
        let base = if role == "generator" { GENERATOR_MS } else { IMPROVER_MS };
        let now = Instant::now();
        let ms = {
            let mut ends = ends.lock().unwrap_or_else(|e| e.into_inner());
            ends.retain(|e| *e > now);
            let others = ends.len();
            let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
            *p = (*p).max(others + 1);
            let ms = (base as f64 * (1.0 + BATCH_SLOWDOWN * others as f64)) as u64;
            ends.push(now + Duration::from_millis(ms));
            ms
        };
        let answer = if role == "generator" {
            net(attempt)
        } else {
            format!("```json\n{{\"reason\": \"attempt {attempt} underfits\", \"improvement_suggestions\": \"widen the hidden layer to {} units\"}}\n```", 16 + attempt)
        };
        Some(Step::delayed(ms, Step::reply(answer)))
    });
    (server, peak_out)
}

fn run(arm: &Arm) -> Measured {
    let (server, peak) = server();
    let fixture = build_cdylib("nas-fixture-instant");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[run]
name = "bench"
output_dir = "runs"

[search]
max_iterations = {iterations}
islands = {islands}
llm_in_flight = {llm}
migration_interval = 5

[plugins]
load = ["{fixture}"]

[dataset]
plugin = "data.tiny"

[evaluator]
plugin = "eval.instant"
slots = {slots}
[evaluator.settings]
delay_ms = {EVAL_MS}

[generator]
plugin = "builtin:llm.openai"
[generator.settings]
base_url = "{url}"
model = "bench"
max_retries = 0

[memory]
plugin = "builtin:memory.window"
"#,
            iterations = arm.iterations,
            islands = arm.islands,
            llm = arm.llm_in_flight,
            slots = arm.slots,
            fixture = fixture.display(),
            url = server.base_url(),
        ),
    )
    .expect("write config");
    let t0 = Instant::now();
    let out = Command::new(nas_bin())
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .output()
        .expect("nas runs");
    let wall_s = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "nas run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let recs = records(&run_dirs(dir.path()).pop().expect("a run directory"));
    let trained = recs.iter().filter(|r| matches!(r.outcome, Outcome::Ok { .. })).count();
    let peak_llm = *peak.lock().unwrap_or_else(|e| e.into_inner());
    Measured { wall_s, iterations: recs.len(), trained, peak_llm }
}

/// The checker section: cold against warm, from `check_timing.py`.
fn check_section() -> String {
    let root = workspace_root();
    let check = root.join("plugins/nas-eval-tch/src/python/check.py");
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(venv_python())
        .arg(root.join("tests/benches/check_timing.py"))
        .arg(&check)
        .arg(work.path())
        .arg("3")
        .output()
        .expect("python runs");
    if !out.status.success() {
        return format!(
            "## Check time per candidate\n\nNot measured: the checker did not run here ({}).\n",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("no message")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the timing script prints JSON");
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
    let list = |x: &serde_json::Value| {
        x.as_array()
            .map(|a| a.iter().map(|s| format!("{:.2}", f(s))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let median = |x: &serde_json::Value| {
        let mut s: Vec<f64> = x.as_array().map(|a| a.iter().map(f).collect()).unwrap_or_default();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut text = format!(
        "## Check time per candidate: cold against warm\n\n\
eval.tch-one-epoch checks each candidate in a sandboxed Python process running its `check.py` (compile, \
`import torch`, build the net, forward and backward on a dummy batch of 2, TorchScript export, reload and run). \
Measured by `tests/benches/check_timing.py` with the project's Python (Python {py}, torch {torch}), 1 intra-op \
thread, Fashion-MNIST's shape (1×28×28, 10 classes), three small candidates, 3 rounds, cold and warm alternating:\n\n\
- **cold**: a fresh `python -I check.py request.json` per candidate, the process the evaluator's cold checker \
(`warm_checker = false`) starts (without the sandbox around it: Landlock, namespaces, cgroups and rlimits add \
process setup on top);\n\
- **warm**: a parent that imported torch once, and a fork of it per candidate running the same `check.py` \
(what the evaluator's warm checker, on by default, gives each candidate: a fresh child with torch already \
imported; measured through the evaluator, in the sandbox, by `cargo bench -p nas-eval-tch --bench check_bench`: \
`docs/results/check-bench.md`).\n\n\
| candidate | cold s (median) | warm s (median) | saved s | cold runs | warm runs |\n|---|---|---|---|---|---|\n",
        py = v["python"].as_str().unwrap_or("?"),
        torch = v["torch"].as_str().unwrap_or("?"),
    );
    if let Some(rows) = v["rows"].as_object() {
        for (name, r) in rows {
            let (c, w) = (median(&r["cold"]), median(&r["warm"]));
            text +=
                &format!("| {name} | {c:.2} | {w:.3} | {:.2} | {} | {} |\n", c - w, list(&r["cold"]), list(&r["warm"]));
        }
    }
    let (c, w) = (f(&v["median_cold_s"]), f(&v["median_warm_s"]));
    text += &format!(
        "\nMedian over every candidate: **cold {c:.2} s, warm {w:.3} s** ({:.0}× less; target for a warm checker: \
under 0.5 s). A bare `python -I -c \"import torch\"` took {} s; the warm parent's one import took {:.2} s.\n",
        c / w.max(1e-9),
        list(&v["bare_import_s"]),
        f(&v["parent_import_s"]),
    );
    text
}

fn main() {
    let arms = [
        Arm { islands: 1, llm_in_flight: 1, slots: 1, iterations: 12 },
        Arm { islands: 4, llm_in_flight: 4, slots: 4, iterations: 48 },
        Arm { islands: 4, llm_in_flight: 4, slots: 1, iterations: 48 },
    ];
    let load_before = load();
    // Build first, so no arm pays for it.
    let _ = (nas_bin(), build_cdylib("nas-fixture-instant"));
    let measured: Vec<Measured> = arms.iter().map(run).collect();
    let load_after = load();
    let per_hour = |m: &Measured| m.iterations as f64 / m.wall_s * 3600.0;
    let base = per_hour(&measured[0]);
    let mut table = String::from(
        "| islands | llm_in_flight | [evaluator] slots | iterations | trained | wall s | iterations/hour | speed-up | most LLM calls at once |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (a, m) in arms.iter().zip(&measured) {
        table += &format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.0} | **{:.2}×** | {} |\n",
            a.islands,
            a.llm_in_flight,
            a.slots,
            m.iterations,
            m.trained,
            m.wall_s,
            per_hour(m),
            per_hour(m) / base,
            m.peak_llm
        );
        println!("islands {} slots {}: {} iterations in {:.1} s", a.islands, a.slots, m.iterations, m.wall_s);
    }
    let speedup = per_hour(&measured[1]) / base;
    let llm_share = (GENERATOR_MS + IMPROVER_MS) as f64 / (GENERATOR_MS + IMPROVER_MS + EVAL_MS) as f64;
    let check = check_section();
    let text = format!(
        "# Several candidates in flight\n\n\
Written by `cargo bench -p nas-tests --bench islands` (tests/benches/islands.rs). Machine: {cpu}. Load average \
(1/5/15 min) before: {load_before}; after: {load_after}. Other builds and tests shared the machine unless the load \
says otherwise.\n\n\
## Iterations per hour: 1 island against 4\n\n\
`nas run` (the release binary, as a user runs it) against `llm.openai` and a chat-completions server on loopback \
(nas-llm-test-server) that answers the Code Generator after {GENERATOR_MS} ms and the Prompt Improver after \
{IMPROVER_MS} ms when alone, and batches: every other request in flight when one arrives stretches its answer by \
{slow:.0}% (an assumed model of a vLLM or SGLang server decoding a batch: with 4 sequences each is served about a \
quarter slower than alone, about 3× the tokens per second in all; not measured here). The instant evaluator fixture holds each evaluation {EVAL_MS} ms. \
So the LLM is {share:.0}% of an iteration run alone — the paper's regime, scaled down about 1:20 in time (its \
recorded log: about 55 s per iteration, most of it the two LLM answers). Memory strategy `memory.window`, \
migration every 5 iterations of an island, every design distinct (no duplicates). The three arms ran one after \
the other in this one run; each wall time is the whole `nas run` process.\n\n{table}\n\
**4 islands: {speedup:.2}× the iterations per hour of 1 island** (target: at least 3× when the LLM dominates). \
With one evaluation slot the evaluations queue behind each other, so the third arm shows what `[evaluator] slots` \
adds once the LLM calls overlap.\n\n{check}",
        cpu = cpu(),
        slow = BATCH_SLOWDOWN * 100.0,
        share = llm_share * 100.0,
    );
    let path = workspace_root().join("docs/results/islands-bench.md");
    std::fs::write(&path, text).expect("write the results file");
    println!("wrote {}; speed-up {speedup:.2}×", path.display());
}
