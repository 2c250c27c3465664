//! Host overhead per iteration of the search loop: everything except LLM
//! time and training time, over 200 iterations against a chat-completions
//! server on loopback (instant answers) with the instant evaluator fixture.
//! Target: <= 50 ms per iteration. Writes `docs/results/host-overhead.md`.
//!
//! `cargo bench -p nas-tests --bench host_overhead`

use std::time::Instant;

use nas_host::store::Store;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_tests::{build_cdylib, nas_bin, workspace_root};

const ITERATIONS: u64 = 200;

fn attempt(req: &RecordedRequest) -> u64 {
    let text = req.body["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
    for marker in ["This is attempt ", "Current design (attempt "] {
        if let Some(rest) = text.split(marker).nth(1) {
            return rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    0
}

fn main() {
    let server = TestServer::start();
    server.set_responder(|req| {
        let n = attempt(req);
        let system = req.body["messages"][0]["content"].as_str().unwrap_or("");
        Some(Step::reply(if system.contains("reviewer") {
            format!("```json\n{{\"reason\": \"attempt {n} underfits\", \"improvement_suggestions\": \"widen layer {n}\"}}\n```")
        } else {
            format!(
                "```python\nimport torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv{n} = nn.Conv2d(1, {c}, 3)\n        self.fc{n} = nn.Linear({f}, num_classes)\n        # accuracy: 0.{a:02}\n    def forward(self, x):\n        return self.fc{n}(self.conv{n}(x).flatten(1))\n```",
                c = 8 + n % 57,
                f = 100 + n * 7,
                a = 40 + n % 55
            )
        }))
    });
    let fixture = build_cdylib("nas-fixture-instant");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"bench\"\noutput_dir = \"runs\"\n[search]\nmax_iterations = {ITERATIONS}\n[plugins]\nload = [\"{}\"]\n[dataset]\nplugin = \"data.tiny\"\n[evaluator]\nplugin = \"eval.instant\"\n[generator]\nplugin = \"builtin:llm.openai\"\n[generator.settings]\nbase_url = \"{}\"\nmodel = \"bench\"\n[memory]\nplugin = \"builtin:memory.window\"\n",
            fixture.display(),
            server.base_url()
        ),
    )
    .expect("write config");
    let nas = nas_bin();
    let t0 = Instant::now();
    let out = std::process::Command::new(nas)
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .output()
        .expect("nas runs");
    let process_s = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .expect("run dir");
    let records = Store::open(&run).expect("store").iterations().expect("records");
    assert_eq!(records.len() as u64, ITERATIONS);
    // Per iteration: the time from one iteration's end to the next one's (so
    // each commit is counted), less the time inside LLM calls and the evaluator.
    let mut per_iter: Vec<f64> = records
        .windows(2)
        .map(|w| {
            let r = &w[1];
            ((r.finished_at - w[0].finished_at) - r.generator_usage.seconds - r.improver_usage.seconds - r.eval_seconds)
                * 1000.0
        })
        .collect();
    let loop_s = records.last().map_or(0.0, |r| r.finished_at) - records.first().map_or(0.0, |r| r.finished_at)
        + records.first().map_or(0.0, |r| r.wall_seconds);
    let host_ms = per_iter.iter().sum::<f64>() / per_iter.len() as f64;
    let startup_ms = (process_s - loop_s) * 1000.0;
    per_iter.sort_by(f64::total_cmp);
    let p50 = per_iter[per_iter.len() / 2];
    let p95 = per_iter[per_iter.len() * 95 / 100];
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::consts::ARCH
    );
    let report = format!(
        "# Host overhead per iteration\n\n\
         `cargo bench -p nas-tests --bench host_overhead` ({machine}, release build).\n\n\
         {ITERATIONS} iterations of the full loop (Code Generator and Prompt Improver prompts rendered, both LLM calls over HTTP \
         to a chat-completions server on loopback answering at once, extraction, MinHash novelty filter against the growing \
         archive, the instant evaluator fixture, memory window, Improver JSON parsing, one SQLite transaction per iteration \
         plus the journal writes, progress). Host overhead = the time from one iteration's end to the next one's (its \
         commit included) minus the time inside LLM calls and inside the evaluator.\n\n\
         | figure | value | target |\n|---|---|---|\n\
         | host overhead per iteration (mean) | {host_ms:.2} ms | <= 50 ms |\n\
         | host overhead per iteration (median / p95) | {p50:.2} / {p95:.2} ms | |\n\
         | process start, plugin loading, dataset preparation, summary | {startup_ms:.0} ms | |\n\
         | whole process for {ITERATIONS} iterations | {process_s:.2} s | |\n"
    );
    let path = workspace_root().join("docs/results/host-overhead.md");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &report).expect("write results");
    println!("{report}");
}
