//! The evaluator benchmark: three reference models (tiny 2-conv CNN,
//! AlexNet-like with BatchNorm + Dropout, ResNet-18 for 32×32), one epoch
//! each on the same data, batch 128, fp32, in one run:
//!
//! (a) through `eval.tch-one-epoch`, candidate-to-score (sandboxed check and
//!     export, then the tch worker), and
//! (b) through a plain eager PyTorch loop with the data resident on the
//!     device (`bench/eager.py`).
//!
//! Writes the times and ratios to `docs/results/eval-bench.md` (or `--out`).
//!
//! ```text
//! cargo bench -p nas-eval-tch --bench eval_bench -- \
//!     [--device cpu|cuda] [--train 10000] [--resnet-train 2000] [--test 2000] [--out FILE]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::*;
use nas_plugin_test_support::machine::cpu as machine;
use serde_json::{json, Value};

struct Args {
    device: String,
    train: usize,
    resnet_train: usize,
    test: usize,
    out: PathBuf,
    threads: usize,
    /// Extra evaluator settings.
    settings: Value,
    /// Which reference files to run (all by default).
    models: Vec<String>,
    /// Runs per side, alternating; the fastest epoch of each side is kept.
    repeat: usize,
}

fn args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut a = Args {
        device: "cpu".into(),
        train: 10_000,
        resnet_train: 2_000,
        test: 2_000,
        out: root.join("docs/results/eval-bench.md"),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        settings: json!({}),
        models: Vec::new(),
        repeat: 1,
    };
    // `cargo bench` appends `--bench` to the arguments.
    let v: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let val = v[i + 1].clone();
        match v[i].as_str() {
            "--device" => a.device = val,
            "--train" => a.train = val.parse().expect("--train N"),
            "--resnet-train" => a.resnet_train = val.parse().expect("--resnet-train N"),
            "--test" => a.test = val.parse().expect("--test N"),
            "--out" => a.out = PathBuf::from(val),
            "--threads" => a.threads = val.parse().expect("--threads N"),
            "--settings" => a.settings = serde_json::from_str(&val).expect("--settings JSON"),
            "--repeat" => a.repeat = val.parse().expect("--repeat N"),
            "--models" => a.models = val.split(',').map(str::to_string).collect(),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn main() {
    let a = args();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::temp_dir().join(format!("nas-eval-bench-{}", std::process::id()));
    let dataset = common::fashion_mnist(&data.join("fashion-mnist"), a.train.max(a.resnet_train), a.test);
    let python = nas_eval_tch::find_python(None).expect("python");
    let lib = NativeLibrary::from_ref(nas_eval_tch::library());
    let info = lib.plugins().expect("plugins").remove(0);
    let models = [
        ("tiny 2-conv CNN", "tiny_cnn.py", a.train),
        ("AlexNet-like (BN, Dropout)", "alexnet_bn.py", a.train),
        ("ResNet-18 (32×32 stem)", "resnet18.py", a.resnet_train),
    ];
    let mut rows = Vec::new();
    let mut sandbox = String::new();
    for (name, file, n_train) in models {
        if !a.models.is_empty() && !a.models.iter().any(|m| file.starts_with(m.as_str())) {
            continue;
        }
        let path = here.join("reference").join(file);
        let source = std::fs::read_to_string(&path).expect("reference model");
        let mut best: Option<(EvalReport, Value)> = None;
        let mut all_ev = Vec::new();
        let mut all_eg = Vec::new();
        for _ in 0..a.repeat.max(1) {
            // (a) the evaluator.
            let mut config = json!({"device": a.device, "max_train_examples": n_train, "max_test_examples": a.test, "cpu_threads": a.threads, "omp_wait_policy": "active"});
            if let (Some(c), Some(extra)) = (config.as_object_mut(), a.settings.as_object()) {
                for (k, v) in extra {
                    c.insert(k.clone(), v.clone());
                }
            }
            let PluginInstance::Evaluator(mut e) = lib.create(&info, &config, &HostContext::default()).expect("create")
            else {
                panic!("not an evaluator")
            };
            let req = EvalRequest {
                candidate_id: file.into(),
                source: source.clone(),
                dataset: DatasetRef { dir: dataset.clone(), name: "fashion-mnist".into() },
                time_limit_s: None,
                seed: None,
                save_model: None,
                budget: Default::default(),
                known_networks: Vec::new(),
            };
            let report = match e.evaluate(&req).expect("evaluate") {
                EvalOutcome::Ok(r) => r,
                EvalOutcome::Failed(f) => panic!("{file} failed: {f:#?}"),
            };
            drop(e);
            if sandbox.is_empty() {
                sandbox = nas_eval_tch::sandbox::Capabilities::probe().describe();
            }
            // (b) eager PyTorch, same data, same threads.
            let out = Command::new(&python)
                .arg(here.join("bench/eager.py"))
                .arg(&path)
                .arg(&dataset)
                .arg(n_train.to_string())
                .arg(a.test.to_string())
                .arg(if a.device == "cpu" { "cpu" } else { "cuda" })
                .env("OMP_NUM_THREADS", a.threads.to_string())
                .env("OMP_WAIT_POLICY", "ACTIVE")
                .output()
                .expect("run eager.py");
            let eager: Value =
                serde_json::from_slice(out.stdout.rsplit(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap_or(b"{}"))
                    .unwrap_or_else(|e| panic!("eager.py: {e}: {}", String::from_utf8_lossy(&out.stderr)));

            let ev = report.epoch_seconds.unwrap_or(f64::NAN);
            let eg = eager["epoch_seconds"].as_f64().unwrap_or(f64::NAN);
            all_ev.push(ev);
            all_eg.push(eg);
            let keep = match &best {
                None => true,
                Some((r, _)) => ev < r.epoch_seconds.unwrap_or(f64::INFINITY),
            };
            let eager = match &best {
                Some((_, e)) if e["epoch_seconds"].as_f64().unwrap_or(f64::INFINITY) <= eg => e.clone(),
                _ => eager,
            };
            let report = if keep { report } else { best.take().map(|b| b.0).unwrap_or(report) };
            best = Some((report, eager));
        }
        let (report, eager) = best.expect("at least one run");
        let ev_epoch = report.epoch_seconds.unwrap_or(f64::NAN);
        let eg_epoch = eager["epoch_seconds"].as_f64().unwrap_or(f64::NAN);
        let row = json!({
            "model": name, "train": n_train, "params": report.params, "device": report.device,
            "eval_epoch_s": ev_epoch, "eval_total_s": report.total_seconds, "eval_acc": report.accuracy,
            "eager_epoch_s": eg_epoch, "eager_total_s": eager["total_seconds"], "eager_acc": eager["accuracy"],
            "ratio": ev_epoch / eg_epoch, "export": report.extra.get("export"),
            "eval_epochs_all": all_ev, "eager_epochs_all": all_eg,
        });
        eprintln!("{row}");
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&data);
    let mut md = String::new();
    md.push_str("# eval.tch-one-epoch benchmark\n\n");
    md.push_str(&format!(
        "Machine: {}; device `{}`; {} thread(s) for both sides (`OMP_WAIT_POLICY=ACTIVE`). Written by \
         `cargo bench -p nas-eval-tch --bench eval_bench -- {}`.\n\n",
        machine(),
        a.device,
        a.threads,
        std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>().join(" ")
    ));
    md.push_str(&format!(
        "Data: the first {} Fashion-MNIST training images (1×28×28) for the two small nets, the first {} for \
         ResNet-18 (kept small so that the run finishes in minutes on 2 cores), {} test images; batch 128, fp32, \
         SGD lr 0.01 / momentum 0.9 / weight decay 5e-4, seed 43, one epoch, data resident on the device on both \
         sides.\n\n",
        a.train, a.resnet_train, a.test
    ));
    md.push_str(&format!("Each side ran {} time(s), alternating (a), (b), (a), (b), ...; the table keeps each side's fastest epoch (the machine is shared, so the minimum is the least disturbed run) and lists all of them.\n\n", a.repeat.max(1)));
    md.push_str("(a) evaluator: the epoch as timed inside the worker (TorchScript module, tch, first and only epoch: warm-up included), and candidate-to-score (sandboxed Python check + export, worker start and dataset load, epoch, test).\n(b) eager: a plain PyTorch loop in Python on the same data (`plugins/nas-eval-tch/bench/eager.py`), epoch only and whole process.\n\n");
    md.push_str("| model | train images | params | (a) epoch s | (b) eager epoch s | ratio (a)/(b) | (a) candidate-to-score s | (b) eager process s | (a) acc | (b) acc | export | all (a) epochs s | all (b) epochs s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | **{:.2}×** | {:.2} | {:.2} | {:.3} | {:.3} | {} | {} | {} |\n",
            r["model"].as_str().unwrap_or(""),
            r["train"],
            r["params"],
            r["eval_epoch_s"].as_f64().unwrap_or(f64::NAN),
            r["eager_epoch_s"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["eval_total_s"].as_f64().unwrap_or(f64::NAN),
            r["eager_total_s"].as_f64().unwrap_or(f64::NAN),
            r["eval_acc"].as_f64().unwrap_or(f64::NAN),
            r["eager_acc"].as_f64().unwrap_or(f64::NAN),
            r["export"].as_str().unwrap_or(""),
            fmt_list(&r["eval_epochs_all"]),
            fmt_list(&r["eager_epochs_all"])
        ));
    }
    md.push_str(&format!("\nEvaluator settings beyond the defaults: `{}`.\n\n{sandbox}.\n", a.settings));
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).expect("results dir");
    }
    std::fs::write(&a.out, md).expect("write results");
    eprintln!("wrote {}", a.out.display());
}

fn fmt_list(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}
