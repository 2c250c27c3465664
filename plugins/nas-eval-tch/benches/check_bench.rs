//! Check time per candidate, cold against warm, through the real evaluator:
//! two `eval.tch-one-epoch` instances on the same data, one with
//! `warm_checker = false` (a fresh sandboxed `python -I check.py` per
//! candidate) and one with the warm checker (a fresh fork of a sandboxed
//! Python that imported torch once); the same small candidates evaluated
//! alternately on each. The check's time is the report's
//! `extra.check_seconds` (from writing the candidate's files to the
//! verdict, the sandbox included); each instance's first evaluation is a
//! warm-up (worker start, and the zygote's torch import on the warm side)
//! and is reported apart.
//!
//! Writes `docs/results/check-bench.md` (or `--out`).
//!
//! ```text
//! cargo bench -p nas-eval-tch --bench check_bench -- [--rounds 5] [--out FILE]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::*;
use nas_plugin_test_support::machine::{cpu as machine, load};
use serde_json::json;

/// Small candidates (those of `tests/benches/check_timing.py`).
const CANDIDATES: &[(&str, &str)] = &[
    (
        "tiny-cnn",
        r#"
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * (h // 4) * (w // 4), num_classes)
    def forward(self, x):
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc(x.flatten(1))
"#,
    ),
    (
        "bn-dropout",
        r#"
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))
    def forward(self, x):
        return self.head(self.features(x).flatten(1))
"#,
    ),
    (
        "mlp",
        r#"
import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, num_classes))
    def forward(self, x):
        return self.net(x)
"#,
    ),
];

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
}

/// One evaluation: the check's seconds, which checker ran, the whole evaluation's seconds.
fn evaluate(e: &mut Box<dyn Evaluator>, id: &str, source: &str, data: &Path) -> (f64, String, f64) {
    let req = EvalRequest {
        candidate_id: id.into(),
        source: source.into(),
        dataset: DatasetRef { dir: data.to_path_buf(), name: "fashion-mnist".into() },
        time_limit_s: None,
        seed: None,
        save_model: None,
        budget: Default::default(),
        known_networks: Vec::new(),
    };
    match e.evaluate(&req).expect("evaluate") {
        EvalOutcome::Ok(r) => (
            r.extra["check_seconds"].as_f64().expect("check_seconds"),
            r.extra["check"].as_str().unwrap_or("?").to_string(),
            r.total_seconds.unwrap_or(f64::NAN),
        ),
        EvalOutcome::Failed(f) => panic!("{id} failed: {f:#?}"),
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut rounds = 5usize;
    let mut out = root.join("docs/results/check-bench.md");
    let v: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--rounds" => rounds = v[i + 1].parse().expect("--rounds N"),
            "--out" => out = PathBuf::from(&v[i + 1]),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let load_before = load();
    let work = std::env::temp_dir().join(format!("nas-check-bench-{}", std::process::id()));
    let data = common::fashion_mnist(&work.join("fashion-mnist"), 256, 100);
    let lib = NativeLibrary::from_ref(nas_eval_tch::library());
    let info = lib.plugins().expect("plugins").remove(0);
    let make = |warm: bool| -> Box<dyn Evaluator> {
        let config =
            json!({"device": "cpu", "max_train_examples": 256, "max_test_examples": 100, "warm_checker": warm});
        match lib.create(&info, &config, &HostContext::default()).expect("create") {
            PluginInstance::Evaluator(e) => e,
            _ => panic!("not an evaluator"),
        }
    };
    let mut cold = make(false);
    let mut warm = make(true);
    let (cold_first, cold_path, _) = evaluate(&mut cold, "warm-up-cold", CANDIDATES[0].1, &data);
    let (warm_first, warm_path, _) = evaluate(&mut warm, "warm-up-warm", CANDIDATES[0].1, &data);
    assert_eq!((cold_path.as_str(), warm_path.as_str()), ("cold", "warm"), "each instance checks its own way");
    // Per candidate: its name, cold and warm check seconds, cold and warm evaluation seconds.
    type Row = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Row> =
        CANDIDATES.iter().map(|(n, _)| (*n, Vec::new(), Vec::new(), Vec::new(), Vec::new())).collect();
    for round in 0..rounds {
        for (k, (name, source)) in CANDIDATES.iter().enumerate() {
            let (c, path, ct) = evaluate(&mut cold, &format!("{name}-cold-{round}"), source, &data);
            assert_eq!(path, "cold");
            let (w, path, wt) = evaluate(&mut warm, &format!("{name}-warm-{round}"), source, &data);
            assert_eq!(path, "warm", "the warm checker fell back to cold");
            eprintln!("{name} round {round}: check cold {c:.3} s, warm {w:.3} s");
            rows[k].1.push(c);
            rows[k].2.push(w);
            rows[k].3.push(ct);
            rows[k].4.push(wt);
        }
    }
    drop((cold, warm));
    let _ = std::fs::remove_dir_all(&work);
    let every_cold: Vec<f64> = rows.iter().flat_map(|r| r.1.clone()).collect();
    let every_warm: Vec<f64> = rows.iter().flat_map(|r| r.2.clone()).collect();
    let (mc, mw) = (median(&every_cold), median(&every_warm));
    let mut md = format!(
        "# Check time per candidate: the cold checker against the warm checker\n\n\
Written by `cargo bench -p nas-eval-tch --bench check_bench -- --rounds {rounds}` \
(plugins/nas-eval-tch/benches/check_bench.rs). Machine: {}. Load average (1/5/15 min) before: {load_before}; \
after: {}. Other builds and tests shared the machine unless the load says otherwise.\n\n\
Two `eval.tch-one-epoch` instances on the same data (the first 256 Fashion-MNIST training images, 100 test \
images, CPU, the host's threads; the check uses up to 4), both in the full sandbox (below): \
`warm_checker = false` (**cold**: a fresh sandboxed `python -I check.py` per candidate, importing torch each time) and \
`warm_checker = true` (**warm**: a fresh fork, per candidate, of a sandboxed Python that imported torch once, \
confined by a stacked Landlock ruleset to the candidate's directory, everything it started killed when it ends). \
Three small candidates, {rounds} rounds, cold and warm alternating. The check's time is the report's \
`extra.check_seconds`: from writing the candidate's files to the verdict (compile, import, build the net, forward \
and backward on a dummy batch of 2, TorchScript export, reload and run), sandbox setup included.\n\n\
| candidate | cold check s (median) | warm check s (median) | saved s | cold checks s | warm checks s | cold evaluation s (median) | warm evaluation s (median) |\n\
|---|---|---|---|---|---|---|---|\n",
        machine(),
        load(),
    );
    for (name, c, w, ct, wt) in &rows {
        md += &format!(
            "| {name} | {:.2} | {:.3} | {:.2} | {} | {} | {:.2} | {:.2} |\n",
            median(c),
            median(w),
            median(c) - median(w),
            list(c),
            list(w),
            median(ct),
            median(wt)
        );
    }
    md += &format!(
        "\nMedian over every candidate: **cold {mc:.2} s, warm {mw:.3} s** ({:.0}× less; target: warm under 0.5 s \
on 2 cores). The first check of each instance (a warm-up, not in the table): cold {cold_first:.2} s, warm \
{warm_first:.2} s (the zygote's start and torch import, then the first fork). The evaluation column is the whole \
candidate-to-score time (check, training 256 images, test), for scale.\n\n{}.\n",
        mc / mw.max(1e-9),
        nas_eval_tch::sandbox::Capabilities::probe().describe(),
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("results dir");
    }
    std::fs::write(&out, md).expect("write results");
    eprintln!("wrote {}", out.display());
}
