//! End-to-end tests of `eval.tch-one-epoch` through the same door the host
//! uses (`NativeLibrary::from_ref(nas_eval_tch::library())`), on real
//! Fashion-MNIST (a subset) and a synthetic 32×32 colour set, with the real
//! sandboxed Python checker and the real tch worker.
//!
//! Needs: the project virtualenv (`.venv` with torch 2.11.0), the worker
//! binary built (`cargo build --release -p nas-eval-tch-worker`, which
//! `cargo test --release --workspace` does), and Debian's
//! `dataset-fashion-mnist` package.

mod attacks;
mod common;
mod warm;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::*;
use serde_json::json;

/// The tests share two cores with everything else: one evaluation at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn data_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Remove what earlier runs left (their processes are gone).
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("nas-eval-tch-tests-").and_then(|p| p.parse::<u32>().ok()) {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let root = base.join(format!("nas-eval-tch-tests-{}", std::process::id()));
        common::fashion_mnist(&root.join("fashion-mnist"), 4000, 1000);
        common::synthetic_cifar(&root.join("synthetic-cifar"), 1200, 300);
        root
    })
}

fn fmnist() -> PathBuf {
    data_root().join("fashion-mnist")
}

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(here(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn evaluator(extra: serde_json::Value) -> Box<dyn Evaluator> {
    evaluator_in(extra, &HostContext::default())
}

fn evaluator_in(extra: serde_json::Value, ctx: &HostContext) -> Box<dyn Evaluator> {
    let lib = NativeLibrary::from_ref(nas_eval_tch::library());
    let info = lib.plugins().expect("plugin list").into_iter().find(|p| p.id == "eval.tch-one-epoch").expect("listed");
    let mut config = json!({"device": "cpu", "memory_limit_mb": 3072, "cpu_threads": 2, "max_processes": 64});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    match lib.create(&info, &config, ctx) {
        Ok(PluginInstance::Evaluator(e)) => e,
        Ok(other) => panic!("not an evaluator: {other:?}"),
        Err(e) => panic!("creating the evaluator failed: {e}"),
    }
}

fn eval(e: &mut Box<dyn Evaluator>, id: &str, source: &str, dataset: &Path, limit_s: Option<f64>) -> EvalOutcome {
    let req = EvalRequest {
        candidate_id: id.into(),
        source: source.into(),
        dataset: DatasetRef { dir: dataset.to_path_buf(), name: "test".into() },
        time_limit_s: limit_s,
        seed: None,
        save_model: None,
        budget: Default::default(),
        known_networks: Vec::new(),
    };
    e.evaluate(&req).unwrap_or_else(|err| panic!("{id}: evaluator error (not a candidate failure): {err}"))
}

fn ok(outcome: EvalOutcome, id: &str) -> EvalReport {
    match outcome {
        EvalOutcome::Ok(r) => r,
        EvalOutcome::Failed(f) => panic!("{id} failed: {f:#?}"),
    }
}

fn failure(outcome: EvalOutcome, id: &str) -> CandidateFailure {
    match outcome {
        EvalOutcome::Failed(f) => f,
        EvalOutcome::Ok(r) => panic!("{id} should have failed, scored {r:?}"),
    }
}

#[test]
fn good_cnn_scores_well_above_chance_under_both_contracts_and_both_exports() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let data = fmnist();

    let r = ok(eval(&mut e, "good", &read("tests/candidates/good_cnn.md"), &data, None), "good");
    assert!(r.accuracy > 0.6, "a good CNN after one epoch of 4000 images: {}", r.accuracy);
    assert_eq!(r.device, "cpu");
    assert!(r.params.unwrap_or(0) > 10_000, "{:?}", r.params);
    assert!(r.flops.unwrap_or(0) > 1_000_000, "{:?}", r.flops);
    assert!(r.train_loss.is_some_and(|l| l.is_finite() && l > 0.0));
    assert!(r.epoch_seconds.is_some_and(|s| s > 0.0) && r.images_per_second.is_some_and(|s| s > 0.0));
    assert!(r.peak_memory_bytes.unwrap_or(0) > 10 << 20);
    assert_eq!(r.extra["export"], "script");
    // The JSON the host prints for `nas eval --json`.
    let text = serde_json::to_string(&EvalOutcome::Ok(r.clone())).expect("serializes");
    assert!(text.contains("\"status\":\"ok\"") && text.contains("\"accuracy\""), "{text}");

    let lemur = ok(eval(&mut e, "lemur", &read("tests/candidates/lemur_cnn.py"), &data, None), "lemur");
    assert_eq!(lemur.extra["contract"], "lemur");
    assert!(lemur.accuracy > 0.5, "LEMUR contract: {}", lemur.accuracy);

    let noargs = ok(eval(&mut e, "noargs", &read("tests/candidates/paper_noargs.py"), &data, None), "noargs");
    assert_eq!(noargs.extra["contract"], "paper()");
    assert!(noargs.accuracy > 0.5, "Net(): {}", noargs.accuracy);

    let traced = ok(eval(&mut e, "traced", &read("tests/candidates/trace_only.py"), &data, None), "traced");
    assert_eq!(traced.extra["export"], "trace");
    assert!(traced.accuracy > 0.5, "traced with scripted BatchNorm/Dropout: {}", traced.accuracy);

    // Same seed, same candidate: the same score.
    let again = ok(eval(&mut e, "good-again", &read("tests/candidates/good_cnn.md"), &data, None), "good-again");
    assert!((again.accuracy - r.accuracy).abs() < 0.02, "{} vs {}", again.accuracy, r.accuracy);
}

#[test]
fn a_budget_is_checked_on_the_exported_network_before_its_epoch() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 512, "max_test_examples": 256}));
    let data = fmnist();
    let source = read("tests/candidates/good_cnn.md");
    let request = |id: &str, budget: Budget| EvalRequest {
        candidate_id: id.into(),
        source: source.clone(),
        dataset: DatasetRef { dir: data.clone(), name: "test".into() },
        time_limit_s: None,
        seed: None,
        save_model: None,
        budget,
        known_networks: Vec::new(),
    };
    // Within the budget: trained, and measured as without one.
    let roomy = Budget { max_params: Some(u64::MAX), max_flops: Some(u64::MAX) };
    let r = ok(e.evaluate(&request("roomy", roomy)).expect("evaluates"), "roomy");
    let (params, flops) = (r.params.expect("params"), r.flops.expect("flops"));
    assert!(r.extra["steps"].as_u64().unwrap_or(0) > 0, "it trained: {:?}", r.extra);
    // One FLOP under what it costs: not trained, and the failure names both figures.
    let tight = Budget { max_params: None, max_flops: Some(flops - 1) };
    let f = failure(e.evaluate(&request("tight", tight)).expect("evaluates"), "tight");
    assert_eq!((f.stage.as_str(), f.kind), ("budget", FailureKind::Constraint), "{f:#?}");
    let shown =
        format!("{:.1} MFLOPs per example, over the limit of {:.1}", flops as f64 / 1e6, (flops - 1) as f64 / 1e6);
    assert!(f.message.contains("was not trained") && f.message.contains(&shown), "{}", f.message);
    // The meter counts parameters as the trainer does.
    let few = Budget { max_params: Some(params - 1), max_flops: Some(flops) };
    let f = failure(e.evaluate(&request("few", few)).expect("evaluates"), "few");
    assert_eq!(f.stage, "budget");
    assert!(f.message.contains("parameters, over the limit of") && !f.message.contains("MFLOPs"), "{}", f.message);
    // Exactly at the budget is within it.
    let exact = Budget { max_params: Some(params), max_flops: Some(flops) };
    assert_eq!(ok(e.evaluate(&request("exact", exact)).expect("evaluates"), "exact").params, Some(params));
}

/// The network of `tests/candidates/good_cnn.md` written otherwise: its layers
/// renamed and bound in another order (both convolutions first), a comment,
/// `view` for `flatten`, the pooling as a module.
const GOOD_CNN_REWRITTEN: &str = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\nclass Net(nn.Module):\n    # the same network\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        channels, height, width = in_shape\n        self.first = nn.Conv2d(channels, 32, kernel_size=3, padding=1)\n        self.second = nn.Conv2d(32, 64, kernel_size=3, padding=1)\n        self.norm1 = nn.BatchNorm2d(32)\n        self.norm2 = nn.BatchNorm2d(64)\n        self.dropout = nn.Dropout(p=0.25)\n        self.head = nn.Linear(64 * (height // 4) * (width // 4), num_classes)\n        self.pool = nn.MaxPool2d(2)\n\n    def forward(self, x):\n        x = self.pool(torch.relu(self.norm1(self.first(x))))\n        x = self.pool(torch.relu(self.norm2(self.second(x))))\n        x = x.view(x.size(0), -1)\n        return self.head(self.dropout(x))\n";

#[test]
fn a_network_already_trained_is_refused_before_its_epoch_however_it_is_written() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 512, "max_test_examples": 256}));
    let data = fmnist();
    let request = |id: &str, source: &str, known: Vec<String>| EvalRequest {
        candidate_id: id.into(),
        source: source.into(),
        dataset: DatasetRef { dir: data.clone(), name: "test".into() },
        time_limit_s: None,
        seed: None,
        save_model: None,
        budget: Default::default(),
        known_networks: known,
    };
    let good = read("tests/candidates/good_cnn.md");
    let r = ok(e.evaluate(&request("good", &good, Vec::new())).expect("evaluates"), "good");
    let network = r.extra[NETWORK_KEY].as_str().expect("the report carries the network's fingerprint").to_string();
    assert_eq!(network.len(), 32, "{network}");
    // Written otherwise, with its fingerprint known: not trained again.
    let f = failure(
        e.evaluate(&request("rewritten", GOOD_CNN_REWRITTEN, vec!["0".repeat(32), network.clone()]))
            .expect("evaluates"),
        "rewritten",
    );
    assert_eq!((f.stage.as_str(), f.kind), ("network", FailureKind::Duplicate), "{f:#?}");
    assert!(f.message.contains(&network) && f.message.contains("not trained again"), "{}", f.message);
    // Not known: trained, with the same fingerprint.
    let again =
        ok(e.evaluate(&request("rewritten-alone", GOOD_CNN_REWRITTEN, Vec::new())).expect("evaluates"), "alone");
    assert_eq!(again.extra[NETWORK_KEY], r.extra[NETWORK_KEY]);
    // Another seed initialises it otherwise; another dropout rate trains otherwise: other networks.
    let other_seed = EvalRequest { seed: Some(7), ..request("seed-7", &good, vec![network.clone()]) };
    let seven = ok(e.evaluate(&other_seed).expect("evaluates"), "seed 7");
    assert_ne!(seven.extra[NETWORK_KEY], r.extra[NETWORK_KEY]);
    let other_rate = good.replace("nn.Dropout(0.25)", "nn.Dropout(0.5)");
    let rate = ok(e.evaluate(&request("dropout-0.5", &other_rate, vec![network.clone()])).expect("evaluates"), "0.5");
    assert_ne!(rate.extra[NETWORK_KEY], r.extra[NETWORK_KEY]);
}

/// A batch norm over a hidden layer's 512 features: in float32 its training
/// mode output on the check's batch differs in the last bit between one
/// thread and two (the fourth target run's iterations 34 and 47, one network
/// checked at two fingerprints and trained twice).
const NORMED_HIDDEN: &str = "import torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.hidden = nn.Linear(c * h * w, 512)\n        self.norm = nn.BatchNorm1d(512)\n        self.head = nn.Linear(512, num_classes)\n\n    def forward(self, x):\n        return self.head(torch.relu(self.norm(self.hidden(x.flatten(1)))))\n";

#[test]
fn a_networks_fingerprint_does_not_depend_on_the_threads_or_the_checker() {
    let _g = lock();
    let request = |id: &str, known: Vec<String>| EvalRequest {
        candidate_id: id.into(),
        source: NORMED_HIDDEN.into(),
        dataset: DatasetRef { dir: fmnist(), name: "test".into() },
        time_limit_s: None,
        seed: None,
        save_model: None,
        budget: Default::default(),
        known_networks: known,
    };
    let small = json!({"max_train_examples": 256, "max_test_examples": 128});
    let network = {
        let mut e = evaluator(small.clone());
        let r = ok(e.evaluate(&request("two-threads", Vec::new())).expect("evaluates"), "two threads");
        r.extra[NETWORK_KEY].as_str().expect("a fingerprint").to_string()
    };
    // One thread, the cold checker: the same network, refused before its epoch.
    let mut one = evaluator(
        json!({"max_train_examples": 256, "max_test_examples": 128, "cpu_threads": 1, "warm_checker": false}),
    );
    let f = failure(one.evaluate(&request("one-thread", vec![network.clone()])).expect("evaluates"), "one thread");
    assert_eq!((f.stage.as_str(), f.kind), ("network", FailureKind::Duplicate), "{f:#?}");
    assert!(f.message.contains(&network), "{}", f.message);
}

/// Three 512-channel convolutions at full resolution: over 30 GFLOPs per
/// training example, many minutes for 4000 examples on any CPU, while one
/// batch of 8 takes a second or so (the projection is made in seconds).
const SLOW: &str = "import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.body = nn.Sequential(nn.Conv2d(in_shape[0], 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))\n        self.head = nn.Linear(512, num_classes)\n\n    def forward(self, x):\n        return self.head(self.body(x).flatten(1))\n";

#[test]
fn a_training_that_cannot_finish_in_time_stops_early_and_says_its_projection() {
    let _g = lock();
    let mut e = evaluator(json!({"batch_size": 8}));
    let f = failure(eval(&mut e, "slow", SLOW, &fmnist(), Some(60.0)), "slow");
    assert_eq!((f.stage.as_str(), f.kind), ("train", FailureKind::Timeout), "{f:#?}");
    let (done, steps) = f
        .message
        .strip_prefix("stopped after ")
        .and_then(|m| m.split_once(" training batches"))
        .and_then(|(counts, _)| counts.split_once(" of "))
        .map(|(d, n)| (d.parse::<u64>().expect("done"), n.parse::<u64>().expect("steps")))
        .unwrap_or_else(|| panic!("{}", f.message));
    assert!(done >= 5 && done < steps && steps == 500, "{}", f.message);
    assert!(f.message.contains("s left of its time limit"), "{}", f.message);
    // Without the projection the same candidate runs into the watchdog.
    let mut e = evaluator(json!({"batch_size": 8, "stop_early": false}));
    let f = failure(eval(&mut e, "slow", SLOW, &fmnist(), Some(20.0)), "slow");
    assert_eq!(f.kind, FailureKind::Timeout);
    assert!(f.message.contains("ran past the time limit"), "{}", f.message);
}

#[test]
fn each_failure_type_is_reported_as_its_kind() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let data = fmnist();
    let cases: &[(&str, &str, FailureKind)] = &[
        ("syntax", "tests/candidates/syntax_error.md", FailureKind::Syntax),
        ("contract", "tests/candidates/no_net.py", FailureKind::Contract),
        ("shape", "tests/candidates/wrong_shape.py", FailureKind::Shape),
        ("runtime", "tests/candidates/runtime_error.py", FailureKind::Runtime),
        ("nan", "tests/candidates/nan_loss.py", FailureKind::NonFinite),
        ("export", "tests/candidates/export_error.py", FailureKind::Export),
        ("oom", "tests/candidates/train_oom.py", FailureKind::OutOfMemory),
    ];
    let f = failure(eval(&mut e, "extract", "  \n ```python\n```\n", &data, None), "extract");
    assert_eq!(f.kind, FailureKind::Extract);
    for (id, file, kind) in cases {
        let f = failure(eval(&mut e, id, &read(file), &data, None), id);
        assert_eq!(f.kind, *kind, "{id}: {f:#?}");
        assert!(!f.message.is_empty());
        if *kind == FailureKind::Runtime {
            assert_eq!(f.exception.as_deref(), Some("RuntimeError"), "{f:#?}");
            assert!(f.traceback.contains("candidate.py"), "the traceback names the candidate's lines: {}", f.traceback);
        }
    }
    // Layers bound to the network inside forward: named, not the state
    // dict's missing keys as the process ends.
    let f = failure(eval(&mut e, "bound", &read("tests/candidates/layers_in_forward.py"), &data, None), "bound");
    assert_eq!((f.kind, f.stage.as_str()), (FailureKind::Runtime, "check"), "{f:#?}");
    assert!(f.message.starts_with("forward binds layers to the network as it runs (bn_res, conv_res)"), "{f:#?}");
    let f = failure(eval(&mut e, "timeout", &read("tests/hostile/endless_loop.py"), &data, Some(10.0)), "timeout");
    assert_eq!(f.kind, FailureKind::Timeout, "{f:#?}");
    // An endless loop inside the TorchScript graph: the worker is killed at
    // the deadline and started again for the next candidate.
    let f = failure(
        eval(&mut e, "train-timeout", &read("tests/candidates/train_timeout.py"), &data, Some(25.0)),
        "train-timeout",
    );
    assert_eq!(f.kind, FailureKind::Timeout, "{f:#?}");
    assert_eq!(f.stage, "train", "{f:#?}");
    // After all of that (including worker restarts), a good candidate is fine.
    let r = ok(eval(&mut e, "after", &read("tests/candidates/good_cnn.md"), &data, None), "after");
    assert!(r.accuracy > 0.6);
}

#[test]
fn hostile_candidates_are_contained_and_the_next_candidate_is_fine() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let data = fmnist();
    let outside = std::env::temp_dir().join(format!("nas-eval-tch-pwned-{}", std::process::id()));
    let in_project = here(&format!("target-pwned-{}", std::process::id()));
    let mut cases: Vec<(String, String, Vec<FailureKind>)> = vec![
        ("network".into(), read("tests/hostile/network.py"), vec![FailureKind::Sandbox]),
        // Outside its private root these places do not exist at all
        // (FileNotFoundError, a runtime failure) or are read-only (sandbox).
        (
            "write-tmp".into(),
            read("tests/hostile/write_outside.py").replace("@TARGET@", &outside.display().to_string()),
            vec![FailureKind::Sandbox, FailureKind::Runtime],
        ),
        (
            "write-project".into(),
            read("tests/hostile/write_outside.py").replace("@TARGET@", &in_project.display().to_string()),
            vec![FailureKind::Sandbox, FailureKind::Runtime],
        ),
        ("read-secret".into(), read("tests/hostile/read_secret.py"), vec![FailureKind::Sandbox, FailureKind::Runtime]),
        ("memory-bomb".into(), read("tests/hostile/memory_bomb.py"), vec![FailureKind::OutOfMemory]),
        ("fork-bomb".into(), read("tests/hostile/fork_bomb.py"), vec![FailureKind::Timeout, FailureKind::Sandbox]),
        ("endless".into(), read("tests/hostile/endless_loop.py"), vec![FailureKind::Timeout]),
    ];
    let caps = nas_eval_tch::sandbox::Capabilities::probe();
    if caps.full_isolation() {
        // In its own PID namespace its parent is not there (getppid() is 0):
        // the signal reaches nobody outside, and the file defines no Net.
        cases.push(("kill-host".into(), read("tests/hostile/kill_host.py"), vec![FailureKind::Contract]));
    } else if caps.landlock_abi.is_some_and(|v| v >= 6) {
        cases.push(("kill-host".into(), read("tests/hostile/kill_host.py"), vec![FailureKind::Sandbox]));
    } else {
        eprintln!("kill-host case skipped: no PID namespace and no Landlock signal scoping (ABI 6) here");
    }
    for (id, source, kinds) in &cases {
        let started = std::time::Instant::now();
        // Those expected to end by a timeout get a short limit; the others a
        // limit long enough for importing torch on a busy machine.
        let limit = if kinds.contains(&FailureKind::Timeout) { 10.0 } else { 60.0 };
        let f = failure(eval(&mut e, id, source, &data, Some(limit)), id);
        assert!(kinds.contains(&f.kind), "{id}: expected one of {kinds:?}, got {f:#?}");
        assert!(started.elapsed().as_secs_f64() < limit + 25.0, "{id} was not stopped in time");
    }
    assert!(!outside.exists(), "a candidate wrote {}", outside.display());
    assert!(!in_project.exists(), "a candidate wrote {}", in_project.display());
    let r = ok(eval(&mut e, "after-hostile", &read("tests/candidates/good_cnn.md"), &data, None), "after-hostile");
    assert!(r.accuracy > 0.6);
}

#[test]
fn colour_32x32_data_takes_the_crop_flip_normalise_path() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let data = data_root().join("synthetic-cifar");
    let r = ok(eval(&mut e, "tiny", &read("reference/tiny_cnn.py"), &data, None), "tiny");
    assert!(r.accuracy > 0.8, "dominant-colour classes after crop/flip training: {}", r.accuracy);
    assert_eq!(r.extra["train_examples"], 1200);
}

#[test]
fn bad_settings_and_missing_datasets_are_errors_not_failures() {
    let lib = NativeLibrary::from_ref(nas_eval_tch::library());
    let info = lib.plugins().expect("list").remove(0);
    assert_eq!(info.id, "eval.tch-one-epoch");
    assert_eq!(info.kind, PluginKind::Evaluator);
    let err = lib.create(&info, &json!({"batch": 64}), &HostContext::default()).expect_err("unknown key");
    assert_eq!(err.code, ErrorCode::InvalidConfig);
    assert!(err.message.contains("batch"), "{err}");
    let err = lib
        .create(&info, &json!({"worker_path": "/nonexistent/nas-eval-worker"}), &HostContext::default())
        .expect_err("no worker");
    assert_eq!(err.code, ErrorCode::NotFound);
    let _g = lock();
    let mut e = evaluator(json!({}));
    let req = EvalRequest {
        candidate_id: "x".into(),
        source: read("tests/candidates/paper_noargs.py"),
        dataset: DatasetRef { dir: "/nonexistent/dataset".into(), name: "none".into() },
        time_limit_s: None,
        seed: None,
        save_model: None,
        budget: Default::default(),
        known_networks: Vec::new(),
    };
    let err = e.evaluate(&req).expect_err("no dataset is an evaluator error");
    assert!(err.message.contains("/nonexistent/dataset"), "{err}");
}

/// Python that loads a saved TorchScript module, checks it is in eval mode
/// with CPU tensors, and scores it on a prepared test split (normalised as
/// the worker normalises): prints `accuracy <a> <n>`.
const SCORE_SAVED_MODEL: &str = r#"
import json, struct, sys
import torch
model_path, data_dir = sys.argv[1], sys.argv[2]
m = torch.jit.load(model_path)
assert not m.training, "saved in eval mode"
assert all(p.device.type == "cpu" for p in m.parameters()), "CPU tensors"
manifest = json.load(open(data_dir + "/manifest.json"))
raw = open(data_dir + "/" + manifest["splits"]["test"]["file"], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
body = raw[8 + n:]
def tensor(name, dtype):
    t = header[name]
    a, b = t["data_offsets"]
    return torch.frombuffer(bytearray(body[a:b]), dtype=dtype).reshape(t["shape"])
x = tensor("images", torch.uint8).float() / 255.0
y = tensor("labels", torch.int64)
mean = torch.tensor(manifest["mean"]).view(1, -1, 1, 1)
std = torch.tensor(manifest["std"]).view(1, -1, 1, 1)
with torch.no_grad():
    out = m((x - mean) / std)
assert tuple(out.shape) == (x.shape[0], manifest["num_classes"]), out.shape
print("accuracy", (out.argmax(-1) == y).float().mean().item(), x.shape[0])
"#;

#[test]
fn save_model_writes_the_trained_module_as_torchscript_that_torch_loads() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let data = fmnist();
    let out = data_root().join("saved-models");
    let _ = std::fs::remove_dir_all(&out);
    let dest = out.join("nested/best/model.pt");
    let request = |id: &str, source: String, save: &Path| EvalRequest {
        candidate_id: id.into(),
        source,
        dataset: DatasetRef { dir: data.clone(), name: "test".into() },
        time_limit_s: None,
        seed: None,
        save_model: Some(save.to_path_buf()),
        budget: Default::default(),
        known_networks: Vec::new(),
    };
    let r = ok(e.evaluate(&request("saved", read("tests/candidates/good_cnn.md"), &dest)).expect("evaluate"), "saved");
    assert!(dest.is_file(), "the trained model was written to {}", dest.display());

    // torch loads it and it holds the trained weights: its test accuracy is
    // the reported one.
    let python = nas_eval_tch::find_python(None).expect("the project's python");
    let run = std::process::Command::new(&python)
        .args(["-c", SCORE_SAVED_MODEL])
        .arg(&dest)
        .arg(&data)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let accuracy: f64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {stdout:?}"));
    assert!(
        (accuracy - r.accuracy).abs() < 0.005,
        "saved model scores {accuracy}, the evaluator reported {}",
        r.accuracy
    );
    assert!(accuracy > 0.6, "trained weights, not the initial ones: {accuracy}");

    // A candidate that fails writes nothing; one without the field neither.
    let failed_dest = out.join("failed.pt");
    let f = failure(
        e.evaluate(&request("bad", read("tests/candidates/wrong_shape.py"), &failed_dest)).expect("evaluate"),
        "bad",
    );
    assert_eq!(f.kind, FailureKind::Shape);
    assert!(!failed_dest.exists());
    let entries: Vec<_> = std::fs::read_dir(&out).expect("read").flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, ["nested"], "nothing else was written");
}

/// Python printing the largest absolute difference between the parameters
/// of two saved TorchScript modules.
const WEIGHT_DIFF: &str = r#"
import sys, torch
a, b = (dict(torch.jit.load(p).named_parameters()) for p in sys.argv[1:3])
assert a.keys() == b.keys(), (a.keys(), b.keys())
print(max((a[k] - b[k]).abs().max().item() for k in a))
"#;

fn weight_diff(a: &Path, b: &Path) -> f64 {
    let python = nas_eval_tch::find_python(None).expect("the project's python");
    let run =
        std::process::Command::new(&python).args(["-c", WEIGHT_DIFF]).arg(a).arg(b).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    stdout.trim().parse().unwrap_or_else(|_| panic!("no number in {stdout:?}"))
}

#[test]
fn the_request_seed_drives_initialisation_and_data_order_and_is_echoed() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let data = fmnist();
    let out = data_root().join("seeded-models");
    let _ = std::fs::remove_dir_all(&out);
    let source = read("tests/candidates/good_cnn.md");
    let mut run = |id: &str, seed: Option<u64>| {
        let dest = out.join(format!("{id}.pt"));
        let req = EvalRequest {
            candidate_id: id.into(),
            source: source.clone(),
            dataset: DatasetRef { dir: data.clone(), name: "test".into() },
            time_limit_s: None,
            seed,
            save_model: Some(dest.clone()),
            budget: Default::default(),
            known_networks: Vec::new(),
        };
        (ok(e.evaluate(&req).expect("evaluate"), id), dest)
    };
    let (a, a_model) = run("seed-1", Some(1));
    let (b, b_model) = run("seed-2", Some(2));
    let (a2, a2_model) = run("seed-1-again", Some(1));
    let (default, _) = run("seed-default", None);
    assert_eq!((a.seed, b.seed, a2.seed), (Some(1), Some(2), Some(1)), "the seed is echoed in the report");
    assert_eq!(default.seed, Some(43), "without a request seed, the setting's (the paper's 43)");
    assert_eq!(a.accuracy, a2.accuracy, "same seed, same accuracy");
    assert_eq!(a.train_loss, a2.train_loss, "same seed, same training");
    assert_eq!(weight_diff(&a_model, &a2_model), 0.0, "same seed, same trained weights");
    assert!(weight_diff(&a_model, &b_model) > 1e-3, "another seed, other trained weights");
    assert_ne!(a.train_loss, b.train_loss, "another seed, another training run");
}

#[test]
fn paper_style_files_use_torch_nn_f_and_tensor_without_importing_them() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let data = fmnist();
    let source = read("tests/candidates/paper_implicit.py");
    assert!(
        source.starts_with("class Net(nn.Module):") && !source.contains("import"),
        "written as the paper's outputs are"
    );
    let r = ok(eval(&mut e, "implicit", &source, &data, None), "implicit");
    assert_eq!(r.extra["contract"], "paper(in_shape, num_classes)");
    assert_eq!(r.extra["export"], "script", "TorchScript resolves the names too");
    assert!(r.accuracy > 0.5, "a valid design in the paper's style trains: {}", r.accuracy);

    // An error keeps the file's own line numbers: the wrong flatten size
    // fails on line 10 of the candidate, where `self.fc` is called.
    let source = read("tests/candidates/paper_implicit_error.py");
    assert!(source.lines().nth(9).is_some_and(|l| l.contains("return self.fc(")));
    let f = failure(eval(&mut e, "implicit-error", &source, &data, None), "implicit-error");
    assert_eq!(f.kind, FailureKind::Runtime, "{f:#?}");
    assert_eq!(f.exception.as_deref(), Some("RuntimeError"), "not a NameError: {f:#?}");
    assert!(f.traceback.contains("candidate.py\", line 10, in forward"), "{}", f.traceback);
}

#[test]
fn latency_memory_and_device_time_are_measured_and_plausible() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let data = fmnist();
    let cnn = ok(eval(&mut e, "cnn", &read("tests/candidates/good_cnn.md"), &data, None), "cnn");
    let mlp = ok(eval(&mut e, "mlp", &read("tests/candidates/paper_noargs.py"), &data, None), "mlp");
    for (id, r) in [("cnn", &cnn), ("mlp", &mlp)] {
        let (one, batch) = (r.latency_ms.expect("latency_ms"), r.batch_latency_ms.expect("batch_latency_ms"));
        assert!(one > 0.0 && one < 1000.0, "{id}: batch-1 latency {one} ms");
        assert!(
            batch > one && batch < 10_000.0,
            "{id}: a batch of 128 takes longer than one example: {batch} vs {one} ms"
        );
        assert_eq!(r.extra["latency_batch_size"], 128, "{id}: the training batch size");
        let device = r.device_seconds.expect("device_seconds");
        let epoch = r.epoch_seconds.expect("epoch_seconds");
        let total = r.total_seconds.expect("total_seconds");
        assert!(device >= epoch && device <= total, "{id}: epoch {epoch} <= device {device} <= total {total} s");
        let peak = r.peak_memory_bytes.expect("peak_memory_bytes");
        assert!(peak < 3072 << 20, "{id}: within the sandbox's limit: {peak}");
        eprintln!(
            "{id}: latency {one:.3} ms, batch {batch:.3} ms, peak {peak} B ({}), device {device:.2} s",
            r.extra["peak_memory_kind"]
        );
        assert!(
            r.extra["peak_memory_kind"].as_str().is_some_and(|k| k.contains("above the worker's own")),
            "{:?}",
            r.extra
        );
    }
    // The CNN keeps 128×32×28×28 activations (12.8 MB a layer) for its
    // backward pass; the MLP's are a few hundred kilobytes: the figure is the
    // trainee's own, not the worker's whole resident set (which holds
    // libtorch and the dataset, hundreds of megabytes, for both).
    let (c, m) = (cnn.peak_memory_bytes.unwrap_or(0), mlp.peak_memory_bytes.unwrap_or(0));
    assert!(c > 12 << 20, "the CNN's activations: {c}");
    assert!(m < c / 4, "the MLP uses far less than the CNN: {m} vs {c}");
    assert!(cnn.batch_latency_ms > mlp.batch_latency_ms, "{:?} vs {:?}", cnn.batch_latency_ms, mlp.batch_latency_ms);
    // The machine that trained: this CPU's model, the instruction set
    // torch's kernels use here, and the torch version the Python reports.
    let python = nas_eval_tch::find_python(None).expect("python");
    let asked = |code: &str| {
        let out = std::process::Command::new(&python).args(["-c", code]).output().expect("python runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let expected = format!(
        "{} ({}) with torch {}",
        nas_eval_tch::discover::cpu_model(),
        asked("import torch; print(torch.backends.cpu.get_cpu_capability())"),
        asked("import torch; print(torch.__version__)")
    );
    assert_eq!(cnn.extra["machine"], json!(expected), "{:?}", cnn.extra);
    assert_eq!(mlp.extra["machine"], cnn.extra["machine"]);
}

/// The processes /proc lists (from here, outside the sandboxes' namespaces).
fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()))
        .collect()
}

/// CPU seconds (user + system) of this process's `nas-eval-worker`
/// descendants.
fn workers_cpu_seconds() -> f64 {
    let me = std::process::id() as i32;
    let stat = |pid: i32| -> Option<(String, i32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (open, close) = (text.find('(')?, text.rfind(')')?);
        let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((text[open + 1..close].to_string(), fields.get(1)?.parse().ok()?, ticks))
    };
    let mut ticks = 0;
    for pid in pids() {
        let Some((comm, mut parent, t)) = stat(pid) else { continue };
        if comm != "nas-eval-worker" {
            continue;
        }
        while parent > 1 && parent != me {
            parent = stat(parent).map_or(0, |(_, p, _)| p);
        }
        if parent == me {
            ticks += t;
        }
    }
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn the_worker_does_not_spin_while_it_waits_for_the_next_candidate() {
    // The worker outlives each evaluation and waits while the host's LLM
    // writes the next design. Under the default `omp_wait_policy` its OpenMP
    // team sleeps then; under `active` (the control: it shows this
    // measurement sees a spinning team) a thread spins on a core.
    let _g = lock();
    let data = fmnist();
    let mut idle = Vec::new();
    for policy in ["active", "auto"] {
        let mut e = evaluator(json!({"omp_wait_policy": policy, "max_train_examples": 500, "max_test_examples": 200}));
        ok(eval(&mut e, policy, &read("tests/candidates/good_cnn.md"), &data, None), policy);
        let before = workers_cpu_seconds();
        std::thread::sleep(std::time::Duration::from_secs(2));
        idle.push(workers_cpu_seconds() - before);
        drop(e);
    }
    eprintln!("CPU seconds of the idle worker in 2 s: active {:.2}, auto {:.2}", idle[0], idle[1]);
    assert!(idle[0] > 0.3, "the control: an active team spins while the worker waits ({:.2} s)", idle[0]);
    assert!(idle[1] < 0.1, "the default: the waiting worker sleeps ({:.2} s of CPU in 2 s)", idle[1]);
}

#[test]
fn bf16_channels_last_and_epochs_are_settings() {
    let _g = lock();
    let data = fmnist();
    let mut e = evaluator(json!({
        "max_train_examples": 1000, "max_test_examples": 300, "epochs": 2, "bf16": true, "channels_last": true,
    }));
    let r = ok(eval(&mut e, "bf16", &read("tests/candidates/good_cnn.md"), &data, None), "bf16");
    assert_eq!((r.extra["bf16"].clone(), r.extra["channels_last"].clone()), (json!(true), json!(true)));
    assert_eq!(r.extra["output_dtype"], "BFloat16", "the forward pass ran under bfloat16 autocast: {:?}", r.extra);
    assert_eq!(r.extra["steps"], 2 * 8, "two epochs of ⌈1000/128⌉ steps");
    assert!(r.accuracy > 0.6, "trains in bfloat16 and channels-last: {}", r.accuracy);
    assert!(r.latency_ms.is_some() && r.batch_latency_ms.is_some());
    // The defaults: the paper's fp32, one epoch.
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let r = ok(eval(&mut e, "fp32", &read("tests/candidates/good_cnn.md"), &data, None), "fp32");
    assert_eq!((r.extra["bf16"].clone(), r.extra["channels_last"].clone()), (json!(false), json!(false)));
    assert_eq!(r.extra["output_dtype"], "Float");
    assert_eq!(r.extra["steps"], 8);
}

#[test]
fn deterministic_algorithms_are_a_setting_and_each_score_names_the_operations_that_have_none() {
    let _g = lock();
    let data = fmnist();
    let good = read("tests/candidates/good_cnn.md");
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300, "deterministic": true}));
    let det = ok(eval(&mut e, "deterministic", &good, &data, None), "deterministic");
    assert_eq!(det.extra["deterministic"], json!(true), "{:?}", det.extra);
    assert_eq!(
        det.extra["nondeterministic_ops"],
        json!([]),
        "a plain CNN has a deterministic implementation of every operation"
    );
    let unpool = ok(eval(&mut e, "unpool", &read("tests/candidates/max_unpool.py"), &data, None), "unpool");
    assert_eq!(
        unpool.extra["nondeterministic_ops"],
        json!(["max_unpooling2d_forward_out"]),
        "the operation without a deterministic implementation is named, once: {:?}",
        unpool.extra
    );
    assert!(unpool.accuracy > 0.3, "it trains as before: {}", unpool.accuracy);
    // The next candidate's record starts empty.
    let again = ok(eval(&mut e, "deterministic-again", &good, &data, None), "deterministic-again");
    assert_eq!(again.extra["nondeterministic_ops"], json!([]));
    assert_eq!(again.accuracy, det.accuracy, "the same seed, the same score");
    // The default: off, nothing recorded; on the CPU the score is the same.
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let default = ok(eval(&mut e, "default", &good, &data, None), "default");
    assert_eq!(default.extra["deterministic"], json!(false));
    assert!(!default.extra.contains_key("nondeterministic_ops"), "{:?}", default.extra);
    assert_eq!(default.accuracy, det.accuracy, "on the CPU the evaluator is deterministic either way");
    assert_eq!(default.train_loss, det.train_loss);
}

#[test]
fn a_cuda_device_that_is_missing_is_refused_when_the_plugin_is_created() {
    let lib = NativeLibrary::from_ref(nas_eval_tch::library());
    let info = lib.plugins().expect("list").remove(0);
    let mut missing = vec!["cuda:99"];
    if !Path::new("/dev/nvidia0").exists() {
        missing.push("cuda");
    }
    for device in missing {
        let err = lib.create(&info, &json!({"device": device}), &HostContext::default()).expect_err(device);
        assert_eq!(err.code, ErrorCode::Unsupported, "{err}");
        assert!(err.message.contains(&format!("`device = \"{device}\"` was asked for")), "{err}");
        assert!(err.message.contains("CUDA device(s) on this machine"), "{err}");
    }
}

/// Python that runs the saved TorchScript module and its ONNX twin (with
/// onnxruntime) on the normalised test images: prints the largest output
/// difference and the share of equal predictions.
const ONNX_ROUND_TRIP: &str = r#"
import json, struct, sys
import torch, onnxruntime
pt, onnx_path, data_dir = sys.argv[1:4]
manifest = json.load(open(data_dir + "/manifest.json"))
raw = open(data_dir + "/" + manifest["splits"]["test"]["file"], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
t = header["images"]
a, b = t["data_offsets"]
x = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.uint8).reshape(t["shape"])[:300].float() / 255.0
x = (x - torch.tensor(manifest["mean"]).view(1, -1, 1, 1)) / torch.tensor(manifest["std"]).view(1, -1, 1, 1)
with torch.no_grad():
    expected = torch.jit.load(pt)(x)
session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
print((got - expected).abs().max().item(), (got.argmax(-1) == expected.argmax(-1)).float().mean().item())
"#;

#[test]
fn save_model_writes_an_onnx_twin_checked_against_the_torchscript_module() {
    let _g = lock();
    let mut e = evaluator(json!({"max_train_examples": 1000, "max_test_examples": 300}));
    let data = fmnist();
    let out = data_root().join("onnx-models");
    let _ = std::fs::remove_dir_all(&out);
    let dest = out.join("best/model.pt");
    let req = EvalRequest {
        candidate_id: "onnx".into(),
        source: read("tests/candidates/good_cnn.md"),
        dataset: DatasetRef { dir: data.clone(), name: "test".into() },
        time_limit_s: None,
        seed: None,
        save_model: Some(dest.clone()),
        budget: Default::default(),
        known_networks: Vec::new(),
    };
    let r = ok(e.evaluate(&req).expect("evaluate"), "onnx");
    let onnx = out.join("best/model.onnx");
    assert!(dest.is_file() && onnx.is_file(), "TorchScript and ONNX beside it: {:?}", r.extra.get("onnx_error"));
    let facts = &r.extra["onnx"];
    assert_eq!(facts["checked_with"], "onnxruntime", "{facts}");
    assert!(facts["max_abs_diff"].as_f64().is_some_and(|d| d < 1e-3), "{facts}");

    // The round trip, independently: onnxruntime on real test images gives
    // the TorchScript module's logits and predictions.
    let python = nas_eval_tch::find_python(None).expect("the project's python");
    let run = std::process::Command::new(&python)
        .args(["-c", ONNX_ROUND_TRIP])
        .arg(&dest)
        .arg(&onnx)
        .arg(&data)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let figures: Vec<f64> = stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(figures.len(), 2, "{stdout}");
    assert!(figures[0] < 1e-3, "largest logit difference {}", figures[0]);
    assert_eq!(figures[1], 1.0, "the same predictions on all 300 test images");

    // Without save_model, nothing is exported.
    let plain = ok(eval(&mut e, "plain", &read("tests/candidates/paper_noargs.py"), &data, None), "plain");
    assert!(!plain.extra.contains_key("onnx") && !plain.extra.contains_key("onnx_error"));
}
