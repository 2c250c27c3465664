//! `nas corpus` on the real LEMUR release: the pinned `nn-dataset==2.1.2`
//! wheel (about 103 MB), fetched once into a cache under the target
//! directory and shared by every test here. What comes out is checked for
//! real: statistics against the wheel's JSON read by Python's own zipfile,
//! every whole-file example's code through Python's parser, every diff
//! applied back to its baseline, a sample trained by the real evaluator, and
//! the prompts against those a real search sends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nas_host::corpus::wheel::{self, LemurWheel};
use nas_host::search::delta;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_plugin_api::{ChatRole, TrainingExample};
use nas_tests::{
    build_cdylib, eval_worker_bin, nas_bin, records, role_and_attempt, run_dirs, target_dir, text, venv_python,
};

/// The wheel, fetched (resumable, sha256-verified) once per cache.
fn lemur_wheel() -> PathBuf {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL
        .get_or_init(|| {
            let dir = target_dir().join("nas-test-cache").join("corpus");
            let opts = nas_host::fetch::FetchOptions { progress: false, ..Default::default() };
            wheel::ensure(&dir, &opts).unwrap_or_else(|e| panic!("fetching the LEMUR wheel: {e}"))
        })
        .clone()
}

/// Runs `nas` in `cwd` with `NAS_HOME` inside it and the evaluator's worker
/// and Python pointed at.
fn nas(cwd: &Path, args: &[&str]) -> Output {
    Command::new(nas_bin())
        .args(args)
        .current_dir(cwd)
        .env("NAS_HOME", cwd.join(".nas-home"))
        .env("NAS_EVAL_WORKER", eval_worker_bin())
        .env("NAS_PYTHON", venv_python())
        .output()
        .expect("nas runs")
}

/// `nas corpus lemur ARGS --wheel <the cached wheel>`, which must succeed;
/// returns stdout.
fn lemur_corpus(cwd: &Path, args: &[&str]) -> String {
    let w = lemur_wheel();
    let mut all = vec!["corpus", "lemur"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wheel", s(&w)]);
    let out = nas(cwd, &all);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "nas {all:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The examples of a corpus folder's `train.jsonl`.
fn examples(dir: &Path) -> Vec<TrainingExample> {
    read(&dir.join("train.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The rows of a corpus folder's `index.csv`, as maps from header to value.
fn index(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join("index.csv")).expect("index.csv");
    let header: Vec<String> = r.headers().expect("a header").iter().map(String::from).collect();
    r.records().map(|rec| header.iter().cloned().zip(rec.expect("a row").iter().map(String::from)).collect()).collect()
}

/// The number before `word` on the line of stdout that starts with `line`.
fn count(stdout: &str, line: &str, word: &str) -> usize {
    let l = stdout.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no `{line}` line in:\n{stdout}"));
    let at = l.find(word).unwrap_or_else(|| panic!("no `{word}` in `{l}`"));
    l[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before `{word}` in `{l}`"))
}

/// Runs a Python script under the project's Python with arguments; returns
/// stdout, failing the test on a non-zero exit.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(venv_python()).arg("-c").arg(script).args(args).output().expect("python runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_wheel_holds_thousands_of_models_and_its_statistics_read_as_python_reads_them() {
    let path = lemur_wheel();
    let mut w = LemurWheel::open(&path).expect("opens");
    assert!(w.models().len() > 10_000, "{} model files", w.models().len());
    let datasets = w.classification_datasets();
    for (d, at_least) in [
        ("cifar-10", 8_000),
        ("svhn", 2_500),
        ("mnist", 2_000),
        ("celeba-gender", 2_000),
        ("cifar-100", 1_500),
        ("imagenette", 1_500),
    ] {
        assert!(datasets.get(d).is_some_and(|n| *n >= at_least), "{d}: {datasets:?}");
    }
    let stats = w.first_epoch_stats("cifar-10");
    assert!(stats.models.len() > 4_000 && stats.unreadable_files == 0, "{} models", stats.models.len());
    // Three models' statistics, read independently by Python's zipfile and json.
    let keys: Vec<&String> = stats.models.keys().collect();
    assert!(stats.models.contains_key("AirNet"), "AirNet has cifar-10 statistics");
    let names = [keys[0].as_str(), keys[keys.len() / 2].as_str(), "AirNet"];
    let script = r#"
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in sys.argv[2:]:
    runs = json.loads(z.read(f"ab/nn/stat/train/img-classification_cifar-10_acc_{name}/1.json"))
    acc = [r["accuracy"] for r in runs]
    print(name, repr(max(acc)), repr(sum(acc) / len(acc)), len(acc))
"#;
    let mut args = vec![s(&path)];
    args.extend(names);
    let out = python(script, &args);
    assert_eq!(out.lines().count(), names.len(), "{out}");
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let m = &stats.models[f[0]];
        assert_eq!(m.best, f[1].parse::<f64>().expect("best"), "{line}");
        assert!((m.mean - f[2].parse::<f64>().expect("mean")).abs() < 1e-12, "{line}");
        assert_eq!(m.runs, f[3].parse::<usize>().expect("runs"), "{line}");
    }
}

/// Checks a whole-file corpus's code with Python: every answer parses, and
/// `Net.__init__` takes `(self, in_shape, num_classes)`.
const PARSE_ALL: &str = r#"
import ast, json, sys
n = 0
for line in open(sys.argv[1]):
    answer = json.loads(line)["answer"]
    assert answer.startswith("```python\n") and answer.endswith("\n```"), answer[:40]
    tree = ast.parse(answer[len("```python\n"):-len("\n```")])
    net = [c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Net"][-1]
    init = [f for f in net.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"][0]
    assert [a.arg for a in init.args.args] == ["self", "in_shape", "num_classes"], [a.arg for a in init.args.args]
    n += 1
print(n)
"#;

#[test]
fn a_cifar10_corpus_of_whole_files_is_python_in_the_search_contract_and_says_its_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c");
    let stdout =
        lemur_corpus(dir.path(), &["--dataset", "cifar10", "--min-accuracy", "0.5", "--top", "150", "--out", s(&out)]);
    assert!(count(&stdout, "LEMUR", "model files") > 10_000, "{stdout}");
    assert!(count(&stdout, "statistics:", "models with statistics") > 4_000, "{stdout}");
    assert!(
        count(&stdout, "left out:", "below") > 1_000,
        "most cifar-10 models are below 50% after one epoch: {stdout}"
    );
    assert!(count(&stdout, "left out:", "near-duplicates") > 0, "{stdout}");
    assert_eq!(count(&stdout, "examples:", "("), 150, "{stdout}");
    let ex = examples(&out);
    assert_eq!(ex.len(), 150);
    for e in &ex {
        assert_eq!(e.messages.iter().map(|m| m.role).collect::<Vec<_>>(), [ChatRole::System, ChatRole::User]);
        assert!(e.messages[1].content.contains("CIFAR-10") && e.messages[1].content.contains("(batch, 3, 32, 32)"));
        assert!(e.source.starts_with("lemur:"), "{}", e.source);
    }
    let rows = index(&out);
    let acc: Vec<f64> = rows.iter().map(|r| r["accuracy"].parse().expect("accuracy")).collect();
    assert!(acc.windows(2).all(|w| w[0] >= w[1]) && acc.iter().all(|a| *a >= 0.5), "{acc:?}");
    assert_eq!(python(PARSE_ALL, &[s(&out.join("train.jsonl"))]).trim(), "150");
    let summary: serde_json::Value = serde_json::from_str(&read(&out.join("summary.json"))).expect("summary");
    assert_eq!(summary["statistics"], "cifar-10");
    assert_eq!(summary["counts"]["examples"], 150);
}

#[test]
fn every_delta_example_applies_to_its_baseline_giving_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("d");
    let stdout =
        lemur_corpus(dir.path(), &["--dataset", "cifar10", "--mode", "delta", "--top", "120", "--out", s(&out)]);
    let ex = examples(&out);
    let rows = index(&out);
    assert_eq!(ex.len(), rows.len());
    assert!(ex.len() >= 80, "most of the 120 most accurate have a baseline near them: {stdout}");
    for (e, row) in ex.iter().zip(&rows) {
        let target = read(&out.join("models").join(format!("{}.py", row["model"])));
        let baseline = read(&out.join("models").join(format!("{}.py", row["baseline"])));
        let diff = nas_plugin_api::text::extract_diff(&e.answer).expect("a diff block");
        let (code, how) = delta::apply(&baseline, &diff).expect("applies");
        assert_eq!(code, target, "{}", row["model"]);
        assert_eq!(how, delta::Applied::Exact, "{}", row["model"]);
        assert!(e.messages[1].content.contains(baseline.trim_end()), "the prompt shows the baseline as it is");
        let (acc, base): (f64, f64) =
            (row["accuracy"].parse().expect("accuracy"), row["baseline_accuracy"].parse().expect("baseline accuracy"));
        assert!(base < acc, "{row:?}");
        let lines: usize = row["answer_lines"].parse().expect("lines");
        assert!((1..=80).contains(&lines), "{row:?}");
    }
}

/// Two LEMUR models that run at 28×28 (most of LEMUR's MNIST models were
/// trained on upscaled images and need 64 px or more) and are small enough
/// to train quickly; found by building each ranked model at (1, 28, 28).
const RUNS_AT_28: [&str; 2] = ["rag-b47ae85bb08af6b385d5a03f005d90d5", "rag-fc485ab1df772617b46259f23eb5df57"];

#[test]
fn fashion_mnist_offers_the_nearest_statistics_and_a_sample_trains_in_the_real_evaluator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = lemur_wheel();
    let out = nas(dir.path(), &["corpus", "lemur", "--dataset", "fashion-mnist", "--out", "x", "--wheel", s(&w)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no statistics for `fashion-mnist`") && stderr.contains("--statistics-from mnist"),
        "{stderr}"
    );
    assert!(stderr.contains("--statistics-from none"), "{stderr}");

    let c = dir.path().join("c");
    lemur_corpus(
        dir.path(),
        &["--dataset", "fashion-mnist", "--statistics-from", "mnist", "--min-accuracy", "0.98", "--out", s(&c)],
    );
    let ex = examples(&c);
    assert!(ex[0].messages[1].content.contains("(batch, 1, 28, 28)"), "the prompts are Fashion-MNIST's");
    let rows = index(&c);
    for name in RUNS_AT_28 {
        let i = rows.iter().position(|r| r["model"] == name).unwrap_or_else(|| panic!("{name} is in the corpus"));
        let code = nas_plugin_api::text::extract_code(&ex[i].answer).expect("a python block");
        let file = dir.path().join(format!("{name}.py"));
        std::fs::write(&file, code).expect("write");
        let run =
            nas(dir.path(), &["eval", s(&file), "--dataset", "fashion-mnist", "--max-train-examples", "500", "--json"]);
        let (stdout, stderr) = text(&run);
        assert!(run.status.success(), "{name}:\n{stdout}\n{stderr}");
        let outcome: serde_json::Value = serde_json::from_str(&stdout).expect("JSON outcome");
        assert_eq!(outcome["status"], "ok", "{stdout}");
        assert!(outcome["accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{stdout}");
    }
}

/// A scripted chat server: the generator gets `generator`, anything else
/// the method's advice.
fn server(generator: String) -> TestServer {
    let server = TestServer::start();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, _) = role_and_attempt(&req.body);
        Some(Step::reply(if role == "generator" {
            generator.clone()
        } else {
            "```json\n{\"reason\": \"r\", \"improvement_suggestions\": \"s\"}\n```".to_string()
        }))
    });
    server
}

fn config(dir: &Path, name: &str, server: &TestServer, search: &str) -> PathBuf {
    let fixture = build_cdylib("nas-fixture-instant");
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[run]\nname = \"{name}\"\noutput_dir = \"runs\"\n\n[search]\nmax_iterations = 1\nuse_improver = false\n{search}\n\n[plugins]\nload = [\"{}\"]\n\n[dataset]\nplugin = \"data.tiny\"\n\n[evaluator]\nplugin = \"eval.instant\"\n\n[generator]\nplugin = \"builtin:llm.openai\"\n[generator.settings]\nbase_url = \"{}\"\nmodel = \"scripted\"\nmax_retries = 0\n\n[memory]\nplugin = \"builtin:memory.window\"\n",
        fixture.display(),
        server.base_url()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn record_run(dir: &Path, cfg: &Path) -> PathBuf {
    let before = run_dirs(dir);
    let out = nas(dir, &["run", "--config", s(cfg)]);
    assert!(out.status.success(), "{:?}", text(&out));
    run_dirs(dir).into_iter().find(|d| !before.contains(d)).expect("a new run directory")
}

const LINEAR: &str = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear(c * h * w, num_classes)\n        # accuracy: 0.62\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";

#[test]
fn the_prompts_are_those_a_search_sends_and_an_export_corpus_imports_as_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A whole-file search of one attempt records the generator's prompt.
    let srv = server(format!("```python\n{LINEAR}```"));
    let cfg = config(dir.path(), "full", &srv, "");
    let run = record_run(dir.path(), &cfg);
    let recorded = records(&run).remove(0);
    let full = dir.path().join("full");
    lemur_corpus(dir.path(), &["--config", s(&cfg), "--statistics-from", "mnist", "--top", "3", "--out", s(&full)]);
    let ex = examples(&full);
    assert_eq!(ex[0].messages, recorded.generator_prompt, "whole-file examples answer the search's first prompt");

    // A delta search from a corpus baseline records the delta prompt.
    let delta = dir.path().join("delta");
    lemur_corpus(
        dir.path(),
        &["--config", s(&cfg), "--mode", "delta", "--statistics-from", "mnist", "--top", "5", "--out", s(&delta)],
    );
    let dex = examples(&delta);
    let row = &index(&delta)[0];
    let baseline = delta.join("models").join(format!("{}.py", row["baseline"]));
    let dcfg = config(dir.path(), "delta", &srv, &format!("mode = \"delta\"\nbaseline = \"{}\"", s(&baseline)));
    let drun = record_run(dir.path(), &dcfg);
    assert_eq!(dex[0].messages, records(&drun)[0].generator_prompt, "diff examples answer the search's delta prompt");

    // The first run's export corpus imports as it was recorded; malformed
    // lines name their file and line.
    let export = dir.path().join("export");
    let out = nas(dir.path(), &["export", s(&run), "--no-model", "--min-accuracy", "0", "--out", s(&export)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let mine = dir.path().join("mine.jsonl");
    let own = serde_json::json!({"messages": [{"role": "user", "content": "Write a CNN."}], "answer": "```python\nclass Net: pass\n```"});
    std::fs::write(&mine, format!("{own}\n\n{own}\n")).expect("write");
    let imported = dir.path().join("imported");
    let exported = export.join("corpus").join("train.jsonl");
    let out = nas(dir.path(), &["corpus", "import", s(&exported), s(&mine), "--out", s(&imported)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("read 3 examples") && stdout.contains("left out 1 near-duplicates"), "{stdout}");
    let got = examples(&imported);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].messages, recorded.generator_prompt);
    assert_eq!(got[0].answer, format!("```python\n{}\n```", LINEAR.trim_end()));
    assert_eq!(got[1].source, format!("file:{}:1", s(&mine)));
    std::fs::write(&mine, format!("{own}\n{{\"messages\": [{{\"role\": \"user\", \"content\": \"u\"}}]}}\n"))
        .expect("write");
    let out = nas(dir.path(), &["corpus", "import", s(&mine), "--out", s(&imported)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:2: ", s(&mine))), "{stderr}");
}
