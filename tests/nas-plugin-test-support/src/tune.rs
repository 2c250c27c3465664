//! Fine-tuners: one optimiser step on a two-example training set writes an
//! adapter whose files exist, with a loss point per step; a missing training
//! set is an error naming the file.

use std::io::Write;
use std::path::Path;

use nas_plugin_api::{Adapter, ChatMessage, FineTuner, ModelRef, TrainingExample, TuneRequest, TuneSettings};

use crate::{must, must_fail, Report};

/// Writes a two-example training set (JSONL, one [`TrainingExample`] a
/// line) to `path`.
pub fn write_training_set(path: &Path) -> std::io::Result<()> {
    let example = |task: &str, answer: &str, n: usize| TrainingExample {
        messages: vec![
            ChatMessage::system("You are an expert deep-learning engineer. Answer with code only."),
            ChatMessage::user(task),
        ],
        answer: answer.to_string(),
        source: format!("file:{}:{n}", path.display()),
    };
    let examples = [
        example(
            "Write `class Net(nn.Module)` for 1x28x28 inputs and 10 classes.",
            "```python\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n```",
            1,
        ),
        example(
            "Write `class Net(nn.Module)` for 3x32x32 inputs and 10 classes, with one convolution.",
            "```python\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n        self.fc = nn.Linear(8 * 32 * 32, num_classes)\n\n    def forward(self, x):\n        return self.fc(self.conv(x).relu().flatten(1))\n```",
            2,
        ),
    ];
    let mut f = std::fs::File::create(path)?;
    for e in &examples {
        writeln!(f, "{}", serde_json::to_string(e).map_err(std::io::Error::other)?)?;
    }
    Ok(())
}

/// Runs the fine-tuner checks against `tuner`: it trains on `base` for one
/// step, in `work_dir` (created if missing).
///
/// Checks: `adapter_written` (the adapter's directory and every file it
/// names exist, and it names a GGUF or PEFT adapter), `loss_point_per_step`,
/// `examples_counted`, `base_recorded` (only when `base.sha256` is given),
/// `missing_training_set_is_an_error`.
pub fn check_fine_tuner(tuner: &mut dyn FineTuner, base: &ModelRef, work_dir: &Path) -> Report {
    let mut r = Report::default();
    let train_set = work_dir.join("train.jsonl");
    let request = TuneRequest {
        job_id: "conformance".into(),
        base: base.clone(),
        train_set: train_set.clone(),
        out_dir: work_dir.join("adapter"),
        settings: TuneSettings { max_steps: Some(1), seed: Some(1), ..Default::default() },
        init_adapter: None,
        time_limit_s: None,
    };
    let adapter = std::fs::create_dir_all(work_dir)
        .and_then(|()| write_training_set(&train_set))
        .map_err(|e| format!("cannot write {}: {e}", train_set.display()))
        .and_then(|()| must("tune", || tuner.tune(&request)));
    r.record("adapter_written", adapter.as_ref().map_err(Clone::clone).and_then(files_exist));
    r.record(
        "loss_point_per_step",
        adapter.as_ref().map_err(Clone::clone).and_then(|a| {
            let steps: Vec<u64> = a.loss_curve.iter().map(|p| p.step).collect();
            if a.steps != 1 {
                Err(format!("{} steps with max_steps = 1", a.steps))
            } else if steps != (1..=a.steps).collect::<Vec<_>>() {
                Err(format!("loss points at steps {steps:?} for {} steps", a.steps))
            } else if let Some(p) = a.loss_curve.iter().find(|p| !p.loss.is_finite()) {
                Err(format!("loss {} at step {}", p.loss, p.step))
            } else {
                Ok(())
            }
        }),
    );
    r.record(
        "examples_counted",
        adapter.as_ref().map_err(Clone::clone).and_then(|a| {
            if a.examples == 2 {
                Ok(())
            } else {
                Err(format!("{} examples counted in a set of 2", a.examples))
            }
        }),
    );
    if base.sha256.is_some() {
        r.record(
            "base_recorded",
            adapter.as_ref().map_err(Clone::clone).and_then(|a| {
                if a.base_sha256 == base.sha256 {
                    Ok(())
                } else {
                    Err(format!("base sha256 {:?}, the base is {:?}", a.base_sha256, base.sha256))
                }
            }),
        );
    }
    let absent = work_dir.join("absent-train.jsonl");
    let missing = TuneRequest { train_set: absent.clone(), out_dir: work_dir.join("adapter-absent"), ..request };
    r.record(
        "missing_training_set_is_an_error",
        must_fail("tune on a training set that is not there", || tuner.tune(&missing)).and_then(|e| {
            if e.message.contains(&absent.display().to_string()) {
                Ok(())
            } else {
                Err(format!("the error does not name {}: {e}", absent.display()))
            }
        }),
    );
    r
}

fn files_exist(a: &Adapter) -> Result<(), String> {
    if !a.dir.is_dir() {
        return Err(format!("the adapter directory {} does not exist", a.dir.display()));
    }
    if a.gguf.is_none() && a.peft_dir.is_none() {
        return Err("the adapter names neither a GGUF file nor a PEFT directory".into());
    }
    if let Some(g) = a.gguf.as_ref().filter(|g| !g.is_file()) {
        return Err(format!("the GGUF adapter {} does not exist", g.display()));
    }
    if let Some(p) = a.peft_dir.as_ref().filter(|p| !p.is_dir()) {
        return Err(format!("the PEFT directory {} does not exist", p.display()));
    }
    Ok(())
}
