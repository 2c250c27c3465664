//! `nas export` on real recorded runs: the `nas` binary against a
//! chat-completions server on loopback answering from a script, with the
//! instant evaluator fixture (and, for the trained weights, the real
//! `eval.tch-one-epoch`). The exported files are checked for real: the
//! corpus parses and holds what was recorded, the LEMUR files import and
//! train under the project's Python and pass `nas eval`, `model.pt` loads
//! in torch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nas_host::records::{IterationRecord, Outcome};
use nas_host::search::novelty;
use nas_llm_test_server::TestServer;
use nas_tests::{
    assert_usage_error, build_cdylib, fence, nas_with_evaluator as nas, records, run_dirs, s, text, venv_python,
    write_scripted_run, ADVICE,
};
use serde_json::Value;

/// A server answering the generator by attempt number, the improver always alike.
fn scripted(generator: Vec<String>) -> TestServer {
    nas_tests::scripted(generator, vec![ADVICE.to_string()])
}

/// A config for a run named `name` (distinct names: two runs started in the
/// same second get distinct directories).
fn write_config(dir: &Path, name: &str, server: &TestServer, search: &str, evaluator: &str) -> PathBuf {
    let more = format!("\n[evaluator]\n{evaluator}\n\n[memory]\nplugin = \"builtin:memory.window\"\n");
    write_scripted_run(dir, server, name, search, &more)
}

/// Runs a search from `cfg` and returns its run directory.
fn record_run(dir: &Path, cfg: &Path) -> PathBuf {
    let before = run_dirs(dir);
    let out = nas(dir, &["run", "--config", s(cfg)]);
    assert!(out.status.success(), "{:?}", text(&out));
    run_dirs(dir).into_iter().find(|d| !before.contains(d)).expect("a new run directory")
}

fn name(p: &Path) -> String {
    p.file_name().expect("a name").to_string_lossy().into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Rows of a CSV file without quoted fields, as maps from header to value.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = read(path);
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(String::from).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

// Candidates for the tiny dataset (1×8×8 images, two classes), each a real
// PyTorch network; `# accuracy:` is what the instant evaluator scores.

const LINEAR: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.fc = nn.Linear(c * h * w, num_classes)\n        # accuracy: 0.62\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";

/// `Net()` with `super(Net, self)`: the renaming must reach it.
const CONV: &str = "import torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super(Net, self).__init__()\n        self.conv = nn.Conv2d(1, 8, 3, padding=1)\n        self.bn = nn.BatchNorm2d(8)\n        self.pool = nn.AdaptiveAvgPool2d(2)\n        self.fc = nn.Linear(8 * 2 * 2, 2)\n        # accuracy: 0.81\n\n    def forward(self, x):\n        x = torch.relu(self.bn(self.conv(x)))\n        return self.fc(self.pool(x).flatten(1))\n";

const MLP: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], 16), nn.Tanh(), nn.Linear(16, num_classes))\n        # accuracy: 0.35\n\n    def forward(self, x):\n        return self.body(x)\n";

const LEMUR: &str = "import torch\nimport torch.nn as nn\n\n\ndef supported_hyperparameters():\n    return {'lr', 'momentum'}\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n        self.device = device\n        self.features = nn.Sequential(nn.Conv2d(in_shape[1], 4, 3, padding=1), nn.ReLU(), nn.Flatten())\n        self.head = nn.Linear(4 * in_shape[2] * in_shape[3], out_shape[0])\n        # accuracy: 0.70\n\n    def forward(self, x):\n        return self.head(self.features(x))\n\n    def train_setup(self, prm):\n        self.to(self.device)\n        self.criteria = (nn.CrossEntropyLoss().to(self.device),)\n        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])\n\n    def learn(self, train_data):\n        self.train()\n        for inputs, labels in train_data:\n            inputs, labels = inputs.to(self.device), labels.to(self.device)\n            self.optimizer.zero_grad()\n            loss = self.criteria[0](self(inputs), labels)\n            loss.backward()\n            self.optimizer.step()\n";

/// Fails in training (the instant evaluator reads the `# fail:` line).
const FAILING: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(in_shape[0], 32, 5)\n        self.fc = nn.Linear(1568, num_classes)\n        # fail: runtime: mat1 and mat2 shapes cannot be multiplied (4x512 and 1568x2)\n\n    def forward(self, x):\n        return self.fc(self.conv(x).flatten(1))\n";

const BASELINE: &str = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(64, num_classes)\n        # accuracy: 0.50\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";

const DIFF: &str = "--- a/net.py\n+++ b/net.py\n@@ -7,5 +7,6 @@\n-        self.fc = nn.Linear(64, num_classes)\n-        # accuracy: 0.50\n+        self.hidden = nn.Linear(64, 32)\n+        self.fc = nn.Linear(32, num_classes)\n+        # accuracy: 0.90\n \n     def forward(self, x):\n-        return self.fc(x.flatten(1))\n+        return self.fc(self.hidden(x.flatten(1)).relu())\n";

/// Imports every `.py` in a folder under torch and runs LEMUR's contract:
/// `supported_hyperparameters()`, `Net(in_shape, out_shape, prm, device)`,
/// `train_setup(prm)`, `learn(batches)` (which must change the weights),
/// `forward` with the right output shape. Prints `ok <file>` per file.
const LEMUR_CONTRACT: &str = r#"
import importlib.util, pathlib, sys
import torch
folder = pathlib.Path(sys.argv[1])
for path in sorted(folder.glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hp = mod.supported_hyperparameters()
    assert {"lr", "momentum"} <= set(hp), (path.name, hp)
    prm = {"lr": 0.01, "momentum": 0.9}
    torch.manual_seed(0)
    net = mod.Net((4, 1, 8, 8), (2,), prm, torch.device("cpu"))
    assert isinstance(net, torch.nn.Module), path.name
    net.train_setup(prm)
    before = [p.detach().clone() for p in net.parameters()]
    batches = [(torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4,))) for _ in range(2)]
    net.learn(batches)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters())), path.name + ": learn changed nothing"
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(4, 1, 8, 8))
    assert tuple(out.shape) == (4, 2), (path.name, out.shape)
    print("ok", path.name)
"#;

#[test]
fn exports_the_best_model_lemur_files_and_a_deduplicated_corpus_from_several_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let evaluator = "plugin = \"eval.instant\"";

    // Run A, full mode: valid, failed, duplicate, below-minimum and LEMUR candidates.
    let server = scripted(vec![
        fence(LINEAR),
        fence("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self:\n"),
        fence(CONV),
        fence(LINEAR),
        fence(FAILING),
        fence(MLP),
        fence(LEMUR),
    ]);
    let cfg = write_config(dir.path(), "a", &server, "max_iterations = 7", evaluator);
    let run_a = record_run(dir.path(), &cfg);
    let a = records(&run_a);
    let kinds: Vec<String> = a.iter().map(|r| r.outcome.failure_kind().unwrap_or_else(|| "ok".into())).collect();
    assert_eq!(kinds, ["ok", "syntax", "ok", "duplicate", "runtime", "ok", "ok"]);
    drop(server);

    // Run B, delta mode: a diff that makes the best of both runs, then a
    // near-duplicate of run A's iteration 3 (only its comment differs).
    std::fs::write(dir.path().join("baseline.py"), BASELINE).expect("write");
    let server =
        scripted(vec![format!("```diff\n{DIFF}```"), fence(&CONV.replace("# accuracy: 0.81", "# accuracy: 0.79"))]);
    let cfg = write_config(
        dir.path(),
        "b",
        &server,
        "max_iterations = 2\nmode = \"delta\"\nbaseline = \"baseline.py\"",
        evaluator,
    );
    let run_b = record_run(dir.path(), &cfg);
    let b = records(&run_b);
    assert_eq!(b.iter().map(|r| r.outcome.accuracy()).collect::<Vec<_>>(), [Some(0.90), Some(0.79)]);
    drop(server);

    let out_dir = dir.path().join("out");
    let out = nas(dir.path(), &["export", s(&run_a), s(&run_b), "--out", s(&out_dir)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // best/: the best record's code, and what the instant evaluator cannot do, said.
    assert_eq!(read(&out_dir.join("best/model.py")), b[0].code.clone().expect("code"));
    assert!(!out_dir.join("best/model.pt").exists());
    assert!(
        stderr.contains("warning: best/model.pt was not written") && stderr.contains("eval.instant"),
        "the warning names the evaluator:\n{stderr}"
    );
    let info: Value = serde_json::from_str(&read(&out_dir.join("best/info.json"))).expect("info.json");
    assert_eq!(info["run"], s(&run_b));
    assert_eq!(info["iteration"], 1);
    assert_eq!(info["mode"], "delta");
    assert_eq!(info["accuracy"], 0.90);
    assert_eq!(info["reevaluated_accuracy"], 0.90, "the instant evaluator scores the same code alike");
    let Outcome::Ok { report } = &b[0].outcome else { panic!("valid") };
    assert_eq!(info["params"], report.params.expect("params"));
    assert_eq!(info["flops"], report.flops.expect("flops"));
    assert!(info["model"].is_null());
    assert!(info["model_note"].as_str().expect("a note").contains("eval.instant"), "{info}");
    assert_eq!(info["dataset"]["plugin"], "data.tiny");
    assert_eq!(info["dataset"]["input_shape"], serde_json::json!([1, 8, 8]));
    assert!(info["evaluator"]["plugin"].as_str().expect("plugin").contains("eval.instant"));

    // corpus/: the most accurate first, no failures, no duplicates, no
    // near-duplicates, nothing below 40%, prompts exactly as recorded.
    let by_key: HashMap<(String, u64), &IterationRecord> = a
        .iter()
        .map(|r| ((name(&run_a), r.iteration), r))
        .chain(b.iter().map(|r| ((name(&run_b), r.iteration), r)))
        .collect();
    let index = csv(&out_dir.join("corpus/index.csv"));
    let chosen: Vec<(String, u64)> =
        index.iter().map(|row| (row["run"].clone(), row["iteration"].parse().expect("iteration"))).collect();
    assert_eq!(
        chosen,
        [(name(&run_b), 1), (name(&run_a), 3), (name(&run_a), 7), (name(&run_a), 1)],
        "0.90, 0.81, 0.70, 0.62; the 0.79 near-duplicate, the 0.35 one and every failure left out"
    );
    let lines: Vec<String> = read(&out_dir.join("corpus/train.jsonl")).lines().map(String::from).collect();
    assert_eq!(lines.len(), index.len());
    let mut accuracies = Vec::new();
    let mut codes: Vec<String> = Vec::new();
    for (i, (line, row)) in lines.iter().zip(&index).enumerate() {
        assert_eq!(row["line"], (i + 1).to_string());
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["messages"], "only `messages` in a line");
        let messages = obj["messages"].as_array().expect("messages");
        let record = by_key[&(row["run"].clone(), row["iteration"].parse::<u64>().expect("iteration"))];
        let Outcome::Ok { report } = &record.outcome else { panic!("a failed candidate in the corpus: {row:?}") };
        assert_eq!(row["accuracy"].parse::<f64>().expect("accuracy"), report.accuracy);
        accuracies.push(report.accuracy);
        assert_eq!(messages.len(), record.generator_prompt.len() + 1);
        for (m, recorded) in messages.iter().zip(&record.generator_prompt) {
            assert_eq!(m["role"], serde_json::to_value(recorded.role).expect("role"));
            assert_eq!(m["content"], recorded.content.as_str(), "the prompt exactly as recorded");
        }
        assert!(messages.iter().any(|m| m["role"] == "system") && messages.iter().any(|m| m["role"] == "user"));
        let answer = messages.last().expect("answer");
        assert_eq!(answer["role"], "assistant");
        let code = record.code.clone().expect("code");
        match record.diff.as_deref() {
            Some(diff) => assert_eq!(answer["content"], format!("```diff\n{}\n```", diff.trim_end())),
            None => assert_eq!(answer["content"], format!("```python\n{}\n```", code.trim_end())),
        }
        codes.push(code);
    }
    assert!(accuracies.windows(2).all(|w| w[0] >= w[1]), "sorted by accuracy: {accuracies:?}");
    assert!(accuracies.iter().all(|a| *a >= 0.40));
    for (i, x) in codes.iter().enumerate() {
        for y in &codes[i + 1..] {
            let sim = novelty::signature(x).similarity(&novelty::signature(y));
            assert!(sim < 0.90, "near-duplicates in the corpus (similarity {sim})");
        }
    }
    assert!(stdout.contains("4 examples of 6 valid") && stdout.contains("1 near-duplicates"), "{stdout}");

    // lemur/: every valid architecture, numbers as recorded.
    let lemur_index = csv(&out_dir.join("lemur/index.csv"));
    let valid: Vec<(String, &IterationRecord)> = a
        .iter()
        .map(|r| (name(&run_a), r))
        .chain(b.iter().map(|r| (name(&run_b), r)))
        .filter(|(_, r)| r.outcome.accuracy().is_some())
        .collect();
    assert_eq!(lemur_index.len(), valid.len());
    for (row, (run, record)) in lemur_index.iter().zip(&valid) {
        let Outcome::Ok { report } = &record.outcome else { panic!("valid") };
        assert_eq!(row["run"], *run);
        assert_eq!(row["iteration"], record.iteration.to_string());
        assert_eq!(row["accuracy"].parse::<f64>().expect("accuracy"), report.accuracy);
        assert_eq!(row["params"], report.params.expect("params").to_string());
        assert_eq!(row["flops"], report.flops.expect("flops").to_string());
        let file = out_dir.join("lemur").join(&row["file"]);
        let stem = file.file_stem().expect("stem").to_string_lossy().into_owned();
        assert!(stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a Python module name: {stem}");
        let code = read(&file);
        let recorded = record.code.clone().expect("code");
        if recorded.trim_end() == LEMUR.trim_end() {
            assert_eq!(row["contract"], "lemur");
            assert_eq!(code, recorded, "LEMUR code is kept as is");
        } else {
            assert_eq!(row["contract"], "paper");
            assert!(code.contains("class NasCandidate(nn.Module)"), "{code}");
        }
    }
    let conv_file = lemur_index.iter().find(|r| r["run"] == name(&run_a) && r["iteration"] == "3").expect("conv");
    let conv_code = read(&out_dir.join("lemur").join(&conv_file["file"]));
    assert!(conv_code.contains("super(NasCandidate, self).__init__()"), "{conv_code}");

    // The LEMUR files import and run LEMUR's contract under torch.
    let py = Command::new(venv_python())
        .args(["-c", LEMUR_CONTRACT])
        .arg(out_dir.join("lemur"))
        .output()
        .expect("python runs");
    let (py_out, py_err) = text(&py);
    assert!(py.status.success(), "{py_out}\n{py_err}");
    assert_eq!(py_out.lines().filter(|l| l.starts_with("ok ")).count(), valid.len(), "{py_out}");

    // A second export: --top and --min-accuracy, no re-training, elsewhere.
    let out2 = dir.path().join("out2");
    let out = nas(
        dir.path(),
        &["export", s(&run_a), s(&run_b), "--out", s(&out2), "--top", "2", "--min-accuracy", "0.75", "--no-model"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("eval.instant"), "nothing re-trained: {stderr}");
    assert_eq!(read(&out2.join("corpus/train.jsonl")).lines().count(), 2);
    let info: Value = serde_json::from_str(&read(&out2.join("best/info.json"))).expect("info.json");
    assert!(info["reevaluated_accuracy"].is_null() && info["model"].is_null());
}

#[test]
fn export_errors_name_the_path_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_run = dir.path().join("nothing-here");
    std::fs::create_dir_all(&not_a_run).expect("mkdir");
    for (args, needle) in [
        (vec!["export", s(&not_a_run)], s(&not_a_run).to_string()),
        (vec!["export", s(&not_a_run), "--min-accuracy", "40"], "--min-accuracy".to_string()),
    ] {
        assert_usage_error(&nas(dir.path(), &args), &[&needle]);
    }

    // A run whose candidates all failed has nothing to export.
    let server = scripted(vec![fence(&LINEAR.replace("# accuracy: 0.62", "# fail: shape: wrong"))]);
    let cfg = write_config(dir.path(), "failed", &server, "max_iterations = 1", "plugin = \"eval.instant\"");
    let run = record_run(dir.path(), &cfg);
    let out = nas(dir.path(), &["export", s(&run)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: no valid candidate") && stderr.contains(s(&run)), "{stderr}");
    assert!(!run.join("export").exists(), "nothing written");
}

/// The tch evaluator's settings for the tiny dataset on two cores.
const TCH: &str = "plugin = \"builtin:eval.tch-one-epoch\"\n[evaluator.settings]\ndevice = \"cpu\"\nmemory_limit_mb = 3072\ncpu_threads = 2\nmax_processes = 64";

#[test]
fn the_real_evaluator_writes_the_trained_best_model_as_torchscript_and_lemur_files_pass_nas_eval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = scripted(vec![fence(LINEAR), fence(CONV)]);
    let cfg = write_config(dir.path(), "tch", &server, "max_iterations = 2", TCH);
    let run = record_run(dir.path(), &cfg);
    let recs = records(&run);
    assert!(recs.iter().all(|r| r.outcome.accuracy().is_some()), "both trained: {:?}", recs[0].outcome);
    drop(server);

    let out = nas(dir.path(), &["export", s(&run)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let out_dir = run.join("export");
    let best = recs
        .iter()
        .fold(None::<&IterationRecord>, |b, r| match (b, r.outcome.accuracy()) {
            (Some(b), Some(a)) if a <= b.outcome.accuracy().unwrap_or(0.0) => Some(b),
            (_, Some(_)) => Some(r),
            (b, None) => b,
        })
        .expect("a best");
    assert_eq!(read(&out_dir.join("best/model.py")), best.code.clone().expect("code"));
    let info: Value = serde_json::from_str(&read(&out_dir.join("best/info.json"))).expect("info.json");
    assert_eq!(info["iteration"], best.iteration);
    assert_eq!(info["accuracy"], best.outcome.accuracy().expect("accuracy"));
    let again = info["reevaluated_accuracy"].as_f64().expect("re-evaluated accuracy");
    assert!((0.0..=1.0).contains(&again));
    assert_eq!(info["model"]["file"], "model.pt");
    assert_eq!(info["evaluator"]["reevaluated_with"], "eval.tch-one-epoch");
    assert_eq!(info["evaluator"]["settings"]["device"], "cpu");

    // torch loads the model and runs it.
    let model = out_dir.join("best/model.pt");
    let check = "import sys, torch\nm = torch.jit.load(sys.argv[1])\nm.eval()\nwith torch.no_grad():\n    out = m(torch.randn(3, 1, 8, 8))\nprint(tuple(out.shape), m.training)";
    let py = Command::new(venv_python()).args(["-c", check]).arg(&model).output().expect("python runs");
    let (py_out, py_err) = text(&py);
    assert!(py.status.success(), "{py_out}\n{py_err}");
    assert_eq!(py_out.trim(), "(3, 2) False");

    // Exported LEMUR files, wrapped or not, pass the real evaluator.
    let fixture = build_cdylib("nas-fixture-instant");
    std::fs::write(dir.path().join("lemur_native.py"), LEMUR).expect("write");
    let wrapped = out_dir.join("lemur").join(format!("{}_iter002.py", name(&run).replace('-', "_")));
    for file in [wrapped, dir.path().join("lemur_native.py")] {
        let out = nas(
            dir.path(),
            &[
                "--plugin",
                s(&fixture),
                "eval",
                s(&file),
                "--dataset",
                "data.tiny",
                "--device",
                "cpu",
                "--max-train-examples",
                "16",
                "--seed",
                "7",
                "--json",
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}: {stdout}\n{stderr}", file.display());
        let outcome: Value = serde_json::from_str(&stdout).expect("json outcome");
        assert_eq!(outcome["status"], "ok", "{outcome}");
        assert_eq!(outcome["extra"]["contract"], "lemur", "{outcome}");
        assert_eq!(outcome["seed"], 7, "the seed given is the one trained with: {outcome}");
    }
}
