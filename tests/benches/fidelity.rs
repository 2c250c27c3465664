//! Proxy fidelity on Fashion-MNIST: how well the one-epoch score ranks
//! candidates against their accuracy after 5 epochs, measured with the real
//! evaluator (`eval.tch-one-epoch`) and the real `nas` binary.
//!
//! 1. A run of 20 candidates: `nas run` (the release binary, as a user runs
//!    it) with `llm.openai` against a chat-completions server on loopback
//!    (nas-llm-test-server) that answers the Code Generator with the 20
//!    hand-varied designs of `tests/benches/fidelity/*.py` (attempt N gets
//!    the N-th file) and the Prompt Improver with valid JSON; Fashion-MNIST
//!    (`data.fashion-mnist`), trained for one epoch on a slice of it
//!    ([`MAX_TRAIN`] / [`MAX_TEST`] examples; `NAS_FIDELITY_TRAIN`,
//!    `NAS_FIDELITY_TEST` to change). Or, with `NAS_FIDELITY_RUN=<run dir>`,
//!    an existing run (a real LLM's) instead.
//! 2. `nas fidelity RUN --epochs 5 --top 5 --sample 15`: the 5 best and one
//!    candidate from each of 15 strata of the rest retrained for 5 epochs
//!    (all 20 of a 20-candidate run); then `nas report RUN`, whose
//!    `summary.json` gives Spearman's rho and Kendall's tau-b with their
//!    bootstrap intervals.
//! 3. rho, tau and the ranks computed again here from the retrainings'
//!    accuracies (average ranks, Pearson's r of the ranks; tau-b by counting
//!    pairs) as a cross-check; writes `docs/results/fidelity-bench.md`
//!    (`NAS_FIDELITY_OUT` to write elsewhere).
//!
//! ```sh
//! cargo bench -p nas-tests --bench fidelity
//! NAS_FIDELITY_RUN=runs/fashion-20261122-181500 cargo bench -p nas-tests --bench fidelity
//! ```
//!
//! The fixture run is kept in `target/fidelity-bench/` (`nas report` it, or
//! point `NAS_FIDELITY_RUN` at it to finish an interrupted study: what is
//! recorded is not retrained).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nas_host::fidelity::{self, Retrain, Study};
use nas_host::records::{IterationRecord, Outcome};
use nas_host::search::novelty;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_plugin_test_support::machine::{cpu, load};
use nas_tests::stats::{kendall, ranks_desc, spearman};
use nas_tests::{eval_worker_bin, fence, nas_bin, records, role_and_attempt, target_dir, venv_python, workspace_root};

/// Epochs of the longer training.
const EPOCHS: u32 = 5;
/// The best candidates retrained.
const TOP: usize = 5;
/// Strata of the rest, one candidate retrained from each.
const SAMPLE: usize = 15;
/// Training examples of the slice (the first N of the training split).
const MAX_TRAIN: u64 = 20000;
/// Test examples of the slice.
const MAX_TEST: u64 = 5000;
/// The search's novelty threshold (the default); no two designs may reach it.
const NOVELTY_THRESHOLD: f64 = 0.90;
/// Delta-NAS's reported Spearman rho of its proxy against 50 epochs.
const DELTA_NAS_RHO: f64 = 0.926;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One fixture design: its file stem and code.
struct Design {
    name: String,
    code: String,
}

/// The designs of `tests/benches/fidelity/*.py`, by file name.
fn designs() -> Vec<Design> {
    let dir = workspace_root().join("tests/benches/fidelity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/benches/fidelity")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let stem = p.file_stem().expect("a file name").to_string_lossy();
            // "07_mlp_softmax" -> "mlp_softmax"
            let name = stem.split_once('_').map_or(stem.as_ref(), |(_, n)| n).to_string();
            Design { name, code: std::fs::read_to_string(p).expect("read a design") }
        })
        .collect()
}

/// A one-line description of a design: the first line of `class Net`'s
/// docstring, else a count of its layers.
fn describe(code: &str) -> String {
    let after_net = code.split("class Net").nth(1).unwrap_or(code);
    if let Some(doc) = after_net.split("\"\"\"").nth(1) {
        if let Some(line) = doc.lines().map(str::trim).find(|l| !l.is_empty()) {
            return line.trim_end_matches('.').replace('|', "/");
        }
    }
    let count = |what: &str| code.matches(what).count();
    let parts: Vec<String> = [
        ("Conv2d(", "conv"),
        ("Linear(", "linear"),
        ("BatchNorm", "batchnorm"),
        ("Dropout", "dropout"),
        ("pool", "pool"),
    ]
    .iter()
    .filter(|(k, _)| count(k) > 0)
    .map(|(k, n)| format!("{} {n}", count(k)))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Improver answers: the method's JSON, one of its own per attempt.
fn advice(attempt: u64) -> String {
    const SUGGESTIONS: [(&str, &str); 5] = [
        (
            "the model underfits after one epoch: training loss is still high",
            "add a convolutional block with BatchNorm before the classifier",
        ),
        ("the classifier head is large for the features it receives", "use global average pooling before the head"),
        ("accuracy is limited by the small receptive field", "stack two 3x3 convolutions before each pooling step"),
        ("activations saturate early in training", "use ReLU activations and BatchNorm after each convolution"),
        ("the network overfits the training slice", "add dropout of 0.3 before the last linear layer"),
    ];
    let (reason, suggestion) = SUGGESTIONS[attempt as usize % SUGGESTIONS.len()];
    format!(
        "```json\n{{\"reason\": \"attempt {attempt}: {reason}\", \"improvement_suggestions\": \"{suggestion} (try {} channels)\"}}\n```",
        16 + 8 * (attempt % 4)
    )
}

/// The loopback chat server: attempt N of the Code Generator gets design N.
fn server(designs: &[Design]) -> TestServer {
    let answers: Vec<String> = designs.iter().map(|d| fence(&d.code)).collect();
    let server = TestServer::start();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, attempt) = role_and_attempt(&req.body);
        if role == "generator" {
            let i = (attempt.max(1) as usize - 1) % answers.len();
            Some(Step::reply(answers[i].clone()))
        } else {
            Some(Step::reply(advice(attempt)))
        }
    });
    server
}

/// `nas` with the evaluator's worker and the project's Python named, and
/// `NAS_HOME` when given.
fn nas(cwd: &Path, home: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(nas_bin());
    cmd.args(args).current_dir(cwd).env("NAS_EVAL_WORKER", eval_worker_bin()).env("NAS_PYTHON", venv_python());
    if let Some(home) = home {
        cmd.env("NAS_HOME", home);
    }
    cmd
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Makes the fixture run in `work`; returns its directory and wall seconds.
fn fixture_run(work: &Path, designs: &[Design], train: u64, test: u64) -> (PathBuf, f64) {
    let server = server(designs);
    let cfg = work.join("fidelity.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[run]
name = "fidelity"
seed = 43

[search]
max_iterations = {n}
novelty_threshold = {NOVELTY_THRESHOLD}

[dataset]
plugin = "builtin:data.fashion-mnist"

[evaluator]
plugin = "builtin:eval.tch-one-epoch"
[evaluator.settings]
device = "cpu"
cpu_threads = {threads}
max_train_examples = {train}
max_test_examples = {test}
memory_limit_mb = 4096
max_processes = 64

[generator]
plugin = "builtin:llm.openai"
[generator.settings]
base_url = "{url}"
model = "fixture-designs"
max_retries = 0

[memory]
plugin = "builtin:memory.window"
[memory.settings]
k = 5
"#,
            n = designs.len(),
            threads = cores(),
            url = server.base_url(),
        ),
    )
    .expect("write the config");
    let run = work.join("run");
    eprintln!("fidelity bench: nas run, {} candidates, {train}/{test} examples", designs.len());
    let t0 = Instant::now();
    let status = nas(work, Some(&work.join(".nas-home")), &["run", "--config", s(&cfg), "--run-dir", s(&run)])
        .status()
        .expect("nas runs");
    let wall = t0.elapsed().as_secs_f64();
    assert!(status.success(), "nas run failed: {status}");
    (run, wall)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn torch_version() -> String {
    Command::new(venv_python())
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

fn minutes(s: f64) -> String {
    format!("{s:.0} s ({:.1} min)", s / 60.0)
}

/// The run's evaluator settings as `key = value`, for the slice line.
fn evaluator_settings(run: &Path) -> (String, toml::Table) {
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap_or_default();
    let table: toml::Table = text.parse().unwrap_or_default();
    let ev = table.get("evaluator").and_then(|v| v.as_table()).cloned().unwrap_or_default();
    let plugin = ev.get("plugin").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let settings = ev.get("settings").and_then(|v| v.as_table()).cloned().unwrap_or_default();
    (plugin, settings)
}

fn dataset_plugin(run: &Path) -> String {
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap_or_default();
    let table: toml::Table = text.parse().unwrap_or_default();
    table
        .get("dataset")
        .and_then(|d| d.get("plugin"))
        .and_then(|p| p.as_str())
        .unwrap_or("builtin:data.fashion-mnist")
        .to_string()
}

/// What a record gave, for the table: the accuracy, or the failure kind.
fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok { report } => pct(report.accuracy),
        Outcome::Failed { .. } => format!("failed ({})", o.failure_kind().unwrap_or_default()),
        Outcome::Duplicate { of, .. } => format!("duplicate of {of}"),
    }
}

fn main() {
    let root = workspace_root();
    let external = std::env::var_os("NAS_FIDELITY_RUN").map(PathBuf::from);
    let out_path = std::env::var_os("NAS_FIDELITY_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("docs/results/fidelity-bench.md"));
    let (train, test) = (env_or("NAS_FIDELITY_TRAIN", MAX_TRAIN), env_or("NAS_FIDELITY_TEST", MAX_TEST));
    let load_before = load();
    // Build first, so no timing pays for it.
    let _ = (nas_bin(), eval_worker_bin());

    let fixtures = designs();
    let started = Instant::now();
    let (run, run_wall, home, cwd) = match &external {
        Some(dir) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|e| panic!("NAS_FIDELITY_RUN {}: {e}", dir.display()));
            (dir, None, None, std::env::current_dir().expect("a working directory"))
        }
        None => {
            // Every pair of designs below the novelty threshold: none is dropped.
            let sigs: Vec<_> = fixtures.iter().map(|d| novelty::signature(&d.code)).collect();
            let mut closest = (0.0f64, 0, 0);
            for i in 0..sigs.len() {
                for j in i + 1..sigs.len() {
                    let sim = sigs[i].similarity(&sigs[j]);
                    assert!(
                        sim < NOVELTY_THRESHOLD,
                        "designs {} and {} are {sim:.2} similar: the novelty filter would drop one",
                        fixtures[i].name,
                        fixtures[j].name
                    );
                    if sim > closest.0 {
                        closest = (sim, i, j);
                    }
                }
            }
            eprintln!(
                "fidelity bench: closest designs {} and {} at {:.2} (threshold {NOVELTY_THRESHOLD})",
                fixtures[closest.1].name, fixtures[closest.2].name, closest.0
            );
            let work = target_dir().join("fidelity-bench");
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).expect("create target/fidelity-bench");
            let (run, wall) = fixture_run(&work, &fixtures, train, test);
            (run, Some(wall), Some(work.join(".nas-home")), work)
        }
    };
    let recs: Vec<IterationRecord> = records(&run);
    let recorded_before = fidelity::read(&run)
        .expect("read the retrainings")
        .iter()
        .filter(|r| r.study == Study::Fidelity && r.epochs == EPOCHS)
        .count();

    // 2. The study, as a user runs it.
    let (epochs, top, sample) = (EPOCHS.to_string(), TOP.to_string(), SAMPLE.to_string());
    let fidelity_args = ["fidelity", s(&run), "--epochs", &epochs, "--top", &top, "--sample", &sample];
    eprintln!("fidelity bench: nas {}", fidelity_args.join(" "));
    let t0 = Instant::now();
    let out =
        nas(&cwd, home.as_deref(), &fidelity_args).stderr(std::process::Stdio::inherit()).output().expect("nas runs");
    let fidelity_wall = t0.elapsed().as_secs_f64();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{printed}");
    assert!(out.status.success(), "nas fidelity failed: {}", out.status);
    let report = nas(&cwd, home.as_deref(), &["report", s(&run)]).output().expect("nas runs");
    assert!(report.status.success(), "nas report failed:\n{}", String::from_utf8_lossy(&report.stderr));
    let total_wall = started.elapsed().as_secs_f64();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("report/summary.json")).expect("nas report writes report/summary.json"),
    )
    .expect("summary.json is JSON");
    let study = summary["runs"][0]["fidelity"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["epochs"] == EPOCHS))
        .cloned()
        .expect("summary.json has the 5-epoch study");
    let estimate = |key: &str| {
        let e = &study[key];
        (e["value"].as_f64(), e["low"].as_f64(), e["high"].as_f64())
    };
    let (rho, rho_low, rho_high) = estimate("spearman");
    let (tau, tau_low, tau_high) = estimate("kendall");

    // 3. The same from the retrainings, computed here.
    let rows: Vec<Retrain> = fidelity::read(&run)
        .expect("read the retrainings")
        .into_iter()
        .filter(|r| r.study == Study::Fidelity && r.epochs == EPOCHS)
        .collect();
    let trained: Vec<(&Retrain, f64)> = rows.iter().filter_map(|r| r.accuracy().map(|a| (r, a))).collect();
    let proxy: Vec<f64> = trained.iter().map(|(r, _)| r.proxy_accuracy).collect();
    let long: Vec<f64> = trained.iter().map(|(_, a)| *a).collect();
    let (my_rho, my_tau) = (spearman(&proxy, &long), kendall(&proxy, &long));
    let (rank_one, rank_long) = (ranks_desc(&proxy), ranks_desc(&long));
    let agree = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    let cross_check = agree(rho, my_rho) && agree(tau, my_tau);
    println!(
        "rho {} (here {my_rho:.6}), tau {} (here {my_tau:.6}): {}",
        rho.map_or("-".into(), |v| format!("{v:.6}")),
        tau.map_or("-".into(), |v| format!("{v:.6}")),
        if cross_check { "agree" } else { "DIFFER" }
    );

    // The table: every retrained candidate, best at 5 epochs first.
    let by_iteration = |i: u64| recs.iter().find(|r| r.iteration == i);
    let name_of = |i: u64| -> (String, String) {
        let code = by_iteration(i).and_then(|r| r.code.clone()).unwrap_or_default();
        let fixture = fixtures.iter().find(|d| d.code.trim() == code.trim());
        (fixture.map_or_else(|| format!("iteration {i}"), |d| d.name.clone()), describe(&code))
    };
    let mut order: Vec<usize> = (0..trained.len()).collect();
    order.sort_by(|&a, &b| rank_long[a].total_cmp(&rank_long[b]).then(rank_one[a].total_cmp(&rank_one[b])));
    let mut table = String::from(
        "| iteration | design | what it is | params | 1-epoch acc % | 5-epoch acc % | rank at 1 | rank at 5 | moved | 5-epoch s |\n\
|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &k in &order {
        let (r, a) = trained[k];
        let (name, what) = name_of(r.iteration);
        let params = by_iteration(r.iteration)
            .and_then(|rec| match &rec.outcome {
                Outcome::Ok { report } => report.params,
                _ => None,
            })
            .map_or_else(|| "-".into(), |p| p.to_string());
        let moved = rank_one[k] - rank_long[k];
        table += &format!(
            "| {} | `{name}` | {what} | {params} | {} | {} | {} | {} | {}{} | {:.1} |\n",
            r.iteration,
            pct(r.proxy_accuracy),
            pct(a),
            rank_one[k],
            rank_long[k],
            if moved > 0.0 { "+" } else { "" },
            moved,
            r.seconds
        );
    }
    let failed_retrains: Vec<String> = rows
        .iter()
        .filter(|r| r.accuracy().is_none())
        .map(|r| {
            format!(
                "- iteration {} (`{}`): 1-epoch {} %, retraining failed ({})\n",
                r.iteration,
                name_of(r.iteration).0,
                pct(r.proxy_accuracy),
                r.outcome.failure_kind().unwrap_or_default()
            )
        })
        .collect();
    let not_trained: Vec<String> = recs
        .iter()
        .filter(|r| r.outcome.accuracy().is_none())
        .map(|r| format!("- iteration {} (`{}`): {}\n", r.iteration, name_of(r.iteration).0, outcome_text(&r.outcome)))
        .collect();

    // Time: the search's evaluations and the retrainings.
    let search_eval: f64 = recs.iter().map(|r| r.eval_seconds).sum();
    let one_epoch: Vec<f64> = recs
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok { report } => report.epoch_seconds,
            _ => None,
        })
        .collect();
    let retrain_s: f64 = rows.iter().map(|r| r.seconds).sum();
    let (plugin, settings) = evaluator_settings(&run);
    let setting = |k: &str| settings.get(k).map_or_else(|| "all".to_string(), |v| v.to_string());
    let overrides: Vec<String> = ["lr", "momentum", "weight_decay", "batch_size"]
        .iter()
        .filter_map(|k| settings.get(*k).map(|v| format!("{k} = {v}")))
        .collect();
    let slice = format!(
        "{} training / {} test examples (`max_train_examples`, `max_test_examples`) of `{}`, through `{plugin}` \
(device `{}`, `cpu_threads` {}; optimiser settings {})",
        setting("max_train_examples"),
        setting("max_test_examples"),
        dataset_plugin(&run).trim_start_matches("builtin:"),
        settings.get("device").and_then(|v| v.as_str()).unwrap_or("auto"),
        settings.get("cpu_threads").map_or_else(|| "the host's cores".to_string(), |v| v.to_string()),
        if overrides.is_empty() {
            "the evaluator's defaults: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128".to_string()
        } else {
            format!("as the run set them: {}", overrides.join(", "))
        }
    );
    let show = |v: Option<f64>, lo: Option<f64>, hi: Option<f64>| match (v, lo, hi) {
        (Some(v), Some(lo), Some(hi)) => format!("**{v:.3}** [{lo:.3}, {hi:.3}]"),
        _ => "undefined (a constant side or fewer than 2 candidates)".into(),
    };
    let source = match &external {
        Some(dir) => format!(
            "The run is `{}` (`NAS_FIDELITY_RUN`): its candidates were written by the run's own generator \
(`{}`), {} candidates recorded, {} trained.",
            dir.display(),
            summary["runs"][0]["plugins"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["section"] == "generator"))
                .and_then(|p| p["id"].as_str())
                .unwrap_or("see its plugins.json"),
            recs.len(),
            recs.iter().filter(|r| r.outcome.accuracy().is_some()).count()
        ),
        None => format!(
            "**The designs are a fixed, hand-varied set, not written by an LLM**: the {} files of \
`tests/benches/fidelity/` (paper style: `class Net(nn.Module)`, `torch`, `nn` and `F` predefined), served in \
order as the Code Generator's answers by a chat-completions server on loopback (nas-llm-test-server) to `nas run` \
with `llm.openai`, the Prompt Improver answered with valid JSON. They span MLPs of several widths and depths \
(with and without BatchNorm or dropout, one with sigmoids, one ending in a softmax), a linear model, LeNet-5, CNNs \
of several depths and widths, with and without BatchNorm and dropout, max, average, strided and global pooling, a \
small ResNet, depthwise-separable convolutions, and a deep plain CNN without BatchNorm that is slow to start at \
lr 0.01. No two reach the novelty threshold ({NOVELTY_THRESHOLD}; checked before the run), so all {} were trained. \
The same command with `NAS_FIDELITY_RUN=<run dir>` measures a real LLM run the same way (e.g. a run on a GPU \
machine).",
            fixtures.len(),
            fixtures.len()
        ),
    };
    let command = match &external {
        Some(dir) => format!("NAS_FIDELITY_RUN={} cargo bench -p nas-tests --bench fidelity", dir.display()),
        None if (train, test) != (MAX_TRAIN, MAX_TEST) => {
            format!("NAS_FIDELITY_TRAIN={train} NAS_FIDELITY_TEST={test} cargo bench -p nas-tests --bench fidelity")
        }
        None => "cargo bench -p nas-tests --bench fidelity".into(),
    };
    let mean_epoch =
        if one_epoch.is_empty() { f64::NAN } else { one_epoch.iter().sum::<f64>() / one_epoch.len() as f64 };
    let wall = match run_wall {
        Some(run_wall) => format!(
            "- `nas run` ({} candidates, one epoch each, with checks, FLOP counts and latency measurement): {}; the \
evaluations {} of it (mean training epoch {mean_epoch:.1} s)\n\
- `nas fidelity` ({} retrainings of {EPOCHS} epochs{}): {}; the retrainings {}\n\
- the whole benchmark (run, study, `nas report`): **{}**\n",
            recs.len(),
            minutes(run_wall),
            minutes(search_eval),
            rows.len(),
            if recorded_before > 0 { format!(", {recorded_before} found recorded") } else { String::new() },
            minutes(fidelity_wall),
            minutes(retrain_s),
            minutes(total_wall)
        ),
        None => format!(
            "- the run's search evaluations (recorded): {} (mean training epoch {mean_epoch:.1} s)\n\
- `nas fidelity` ({} retrainings of {EPOCHS} epochs{}): {}; the retrainings {}\n\
- this command (study and `nas report`): **{}**\n",
            minutes(search_eval),
            rows.len(),
            if recorded_before > 0 {
                format!(", {recorded_before} found recorded and not trained again")
            } else {
                String::new()
            },
            minutes(fidelity_wall),
            minutes(retrain_s),
            minutes(total_wall)
        ),
    };
    let moved = fidelity_moved(&printed);
    let text = format!(
        "# Proxy fidelity: one epoch against {EPOCHS} epochs\n\n\
Written by `cargo bench -p nas-tests --bench fidelity` (tests/benches/fidelity.rs). Machine: {cpu}; torch {torch}. \
Load average (1/5/15 min) before: {load_before}; after: {load_after}. Other builds and tests shared the machine \
unless the load says otherwise (this changes the seconds, not the accuracies).\n\n\
## What ran\n\n\
{source}\n\n\
Slice: {slice}. The search trained each candidate for one epoch (the proxy score); \
`nas fidelity RUN --epochs {EPOCHS} --top {TOP} --sample {SAMPLE}` then retrained the {TOP} best and one candidate \
from each of {SAMPLE} strata of the rest for {EPOCHS} epochs through the same evaluator (same slice, same seed), \
and `nas report RUN` wrote the study to `report/summary.json`, where rho and tau below are read from.\n\n\
Command: `{command}` — the `nas` commands it runs: `nas run --config fidelity.toml --run-dir RUN` (unless \
`NAS_FIDELITY_RUN`), `nas {fargs}`, `nas report RUN`.\n\n\
## Result\n\n\
- **Spearman's rho** = {rho_s} (95 % percentile bootstrap over candidates, 2,000 resamples)\n\
- **Kendall's tau-b** = {tau_s}\n\
- {n} candidates retrained and trained at {EPOCHS} epochs; {nf} failed when retrained\n\
- cross-check: rho and tau computed again in the benchmark from the accuracies of the `retrains` table (average \
ranks, Pearson's r of the ranks; tau-b by counting pairs): rho {my_rho:.6}, tau {my_tau:.6} — {agree} `nas`'s \
{rho_v}, {tau_v}\n\n\
For context: the Delta-NAS paper reports **rho = {DELTA_NAS_RHO}** between its proxy and accuracy after 50 \
epochs (full data, its own candidates). The figure here is one epoch against {EPOCHS} on a slice, for this set of \
designs; it says how far the one-epoch ranking holds within the first few epochs, not at convergence.\n\n\
## Per candidate\n\n\
Best at {EPOCHS} epochs first. Ranks: 1 = most accurate, ties share the average; moved = places risen with the \
longer training. Params from the search's evaluation.\n\n{table}\n{failed}{not_trained}\
## Wall time\n\n{wall}\n{moved}\n{history}",
        cpu = cpu(),
        torch = torch_version(),
        load_after = load(),
        fargs = fidelity_args.join(" ").replace(s(&run), "RUN"),
        rho_s = show(rho, rho_low, rho_high),
        tau_s = show(tau, tau_low, tau_high),
        n = trained.len(),
        nf = rows.len() - trained.len(),
        agree = if cross_check { "the same as" } else { "**differs from**" },
        rho_v = rho.map_or("-".into(), |v| format!("{v:.6}")),
        tau_v = tau.map_or("-".into(), |v| format!("{v:.6}")),
        failed = if failed_retrains.is_empty() {
            String::new()
        } else {
            format!("Retrainings that failed (left out of rho and tau):\n\n{}\n", failed_retrains.concat())
        },
        history = history(
            &out_path,
            &format!(
                "- {}: {}; {} / {} examples; rho {}, tau {}; {} candidates; {:.1} min",
                utc_now(),
                match &external {
                    Some(dir) => format!("run `{}`", dir.display()),
                    None => "the fixture designs".into(),
                },
                settings.get("max_train_examples").map_or_else(|| "all".into(), |v| v.to_string()),
                settings.get("max_test_examples").map_or_else(|| "all".into(), |v| v.to_string()),
                show(rho, rho_low, rho_high).replace("**", ""),
                show(tau, tau_low, tau_high).replace("**", ""),
                trained.len(),
                total_wall / 60.0
            )
        ),
        not_trained = if not_trained.is_empty() {
            String::new()
        } else {
            format!("Candidates of the run that did not train in the search:\n\n{}\n", not_trained.concat())
        },
    );
    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir).expect("create the results folder");
    }
    std::fs::write(&out_path, text).expect("write the results file");
    println!(
        "wrote {}; rho {}, tau {}",
        out_path.display(),
        show(rho, rho_low, rho_high),
        show(tau, tau_low, tau_high)
    );
    assert!(cross_check, "rho/tau computed here differ from nas's");
}

/// The current UTC time, minutes.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown time".into())
}

/// The "Runs" section: the lines of the file's previous one, then `line`
/// (so figures of other slices and runs stay beside the latest).
fn history(path: &Path, line: &str) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = old
        .split("\n## Runs\n")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|l| !l.starts_with("## "))
                .filter(|l| l.starts_with("- "))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    lines.push(line.to_string());
    format!(
        "## Runs\n\nEvery run of this benchmark that wrote this file, latest last (the sections above are the latest's):\n\n{}\n",
        lines.join("\n")
    )
}

/// `nas fidelity`'s own lines on the candidates that moved most, quoted.
fn fidelity_moved(printed: &str) -> String {
    let lines: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("proxy fidelity"))
        .take_while(|l| !l.starts_with("report:"))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("## What `nas fidelity` printed\n\n```\n{}\n```\n", lines.join("\n"))
}
