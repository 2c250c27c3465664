//! `tune.lora` on the real Qwen2.5-Coder-0.5B GGUF, with the real trainer
//! (transformers + peft in the project's virtualenv) and llama.cpp serving
//! the result through `llm.local`: short sequences, a few steps.
//!
//! One fine-tune is made for all the tests here (it is killed once with
//! SIGKILL after its first checkpoint and resumed); each test checks one
//! property of it. The model is fetched (and verified) into
//! `NAS_TEST_MODELS_DIR`, else the default models directory; the
//! dequantised base is cached below it (`transformers/`), so only the first
//! run on a machine pays for the conversion. Set `NAS_SKIP_MODEL_TESTS=1` to
//! skip on a machine that cannot get the model or the Python packages.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nas_llm_local::{default_models_dir, fetch_model, AnswerScore, FetchOptions, LocalBackend, LocalSettings};
use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::{
    Adapter, AdapterRef, ChatMessage, ChatRequest, ErrorCode, FineTuner, HostContext, ModelRef, PluginInstance,
    TrainingExample, TuneRequest, TuneSettings,
};
use serde_json::{json, Value};

const MODEL: &str = "qwen2.5-coder-0.5b";
const STEPS: u64 = 4;

fn skip() -> bool {
    if std::env::var_os("NAS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("NAS_SKIP_MODEL_TESTS is set: skipping the real-model test");
        return true;
    }
    false
}

/// The heavy parts run one at a time (the machines have 2 cores).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn examples() -> Vec<TrainingExample> {
    let system = "You write PyTorch models. Answer with code only.";
    let body = |layers: &str| {
        format!(
            "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        \
             self.body = nn.Sequential({layers})\n\n    def forward(self, x):\n        return self.body(x)\n"
        )
    };
    [
        (
            "Write a tiny CNN for 28x28 grey images, 10 classes.",
            "nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)",
        ),
        (
            "Write an MLP for 28x28 grey images, 10 classes.",
            "nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)",
        ),
        (
            "Write a tiny CNN for 32x32 colour images, 10 classes.",
            "nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)",
        ),
        (
            "Write an MLP for 32x32 colour images, 100 classes.",
            "nn.Flatten(), nn.Linear(3072, 128), nn.ReLU(), nn.Linear(128, 100)",
        ),
    ]
    .into_iter()
    .map(|(task, layers)| TrainingExample {
        messages: vec![ChatMessage::system(system), ChatMessage::user(task)],
        answer: body(layers),
        source: "test".into(),
    })
    .collect()
}

struct Trained {
    model: PathBuf,
    models_dir: PathBuf,
    request: TuneRequest,
    adapter: Adapter,
    /// The error the killed attempt ended with.
    killed_error: nas_plugin_api::PluginError,
    /// Losses the killed attempt reported, by step.
    first_attempt: Vec<(u64, f64)>,
    tuner: Mutex<Box<dyn FineTuner>>,
}

fn tuner(models_dir: &Path) -> Box<dyn FineTuner> {
    let lib = NativeLibrary::from_ref(nas_tune_lora::library());
    let info = lib.plugins().expect("plugins").remove(0);
    assert_eq!(info.id, "tune.lora");
    let config = json!({"device": "cpu", "checkpoint_every": 2, "lr_schedule": "constant", "warmup_ratio": 0.0});
    let ctx = HostContext { models_dir: Some(models_dir.to_path_buf()), ..HostContext::default() };
    let PluginInstance::Tune(t) = lib.create(&info, &config, &ctx).expect("tune.lora starts") else {
        panic!("tune.lora is a fine-tuner")
    };
    t
}

fn step_events(progress: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(progress)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .map(|v| (v["step"].as_u64().unwrap_or(0), v["loss"].as_f64().unwrap_or(f64::NAN)))
        .collect()
}

/// Trains once: starts the fine-tune, SIGKILLs the trainer once its step-2
/// checkpoint is committed and step 3 is done, then calls `tune` again.
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let _g = heavy();
        let started = Instant::now();
        let models_dir = std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(default_models_dir);
        let model = fetch_model(MODEL, &models_dir, &FetchOptions { verbose: true, ..FetchOptions::default() })
            .expect("the 0.5B model can be fetched and verified");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tune-lora");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let train_set = dir.join("train.jsonl");
        let lines: Vec<String> = examples().iter().map(|e| serde_json::to_string(e).expect("serialises")).collect();
        std::fs::write(&train_set, lines.join("\n") + "\n").expect("training set");
        let request = TuneRequest {
            job_id: "test".into(),
            base: ModelRef { name: MODEL.into(), path: model.clone(), sha256: None },
            train_set,
            out_dir: dir.join("adapter"),
            settings: TuneSettings {
                rank: Some(8),
                alpha: Some(16.0),
                max_steps: Some(STEPS),
                learning_rate: Some(1e-3),
                batch_size: Some(2),
                max_seq_len: Some(128),
                seed: Some(7),
                ..TuneSettings::default()
            },
            init_adapter: None,
            time_limit_s: None,
        };

        let mut t = tuner(&models_dir);
        let req = request.clone();
        let first = std::thread::spawn(move || {
            let r = t.tune(&req);
            (t, r)
        });
        let out = &request.out_dir;
        let progress = out.join("trainer/progress.jsonl");
        let checkpoint = out.join("checkpoints/step-00000002");
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            assert!(!first.is_finished(), "the trainer ended before it could be killed");
            assert!(Instant::now() < deadline, "no checkpoint after 15 minutes");
            if checkpoint.is_dir() && step_events(&progress).iter().any(|(s, _)| *s == 3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid: i32 =
            std::fs::read_to_string(out.join("trainer/pid")).expect("pid file").trim().parse().expect("a pid");
        // SAFETY: the pid is the trainer this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "SIGKILL the trainer");
        let (t, killed) = first.join().expect("the tuning thread");
        let killed_error = killed.expect_err("a killed trainer is an error");
        let first_attempt = step_events(&progress);

        let mut t = t;
        let adapter = t.tune(&request).expect("the second call finishes the fine-tune");
        eprintln!("fine-tune with kill and resume: {:.1} s", started.elapsed().as_secs_f64());
        Trained { model, models_dir, request, adapter, killed_error, first_attempt, tuner: Mutex::new(t) }
    })
}

#[test]
fn a_killed_trainer_resumes_from_its_last_checkpoint_and_ends_with_the_same_steps() {
    if skip() {
        return;
    }
    let t = trained();
    assert_eq!(t.killed_error.code, ErrorCode::Internal, "{}", t.killed_error);
    assert!(t.killed_error.message.contains("SIGKILL"), "{}", t.killed_error);
    let a = &t.adapter;
    assert_eq!(a.steps, STEPS);
    let steps: Vec<u64> = a.loss_curve.iter().map(|p| p.step).collect();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>(), "every step once in the loss curve");
    let resumed: Vec<u64> = serde_json::from_value(a.extra["resumed_from"].clone()).expect("resumed_from");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!((2..STEPS).contains(&resumed[0]), "{resumed:?}");
    // Nothing committed was lost and the continuation is the same training:
    // the steps the killed attempt reported have the final curve's losses,
    // those it redid after its checkpoint included (same data order, same
    // dropout draws, same optimiser state).
    let redone = t.first_attempt.iter().filter(|(s, _)| *s > resumed[0]).count();
    eprintln!("resumed from step {}; {redone} step(s) redone", resumed[0]);
    for (step, loss) in &t.first_attempt {
        let fin = a.loss_curve[(*step - 1) as usize].loss;
        assert!((fin - loss).abs() <= 1e-6 * loss.abs().max(1.0), "step {step}: {loss} then {fin}");
    }
}

#[test]
fn the_adapter_record_names_its_base_its_files_and_a_falling_loss() {
    if skip() {
        return;
    }
    let t = trained();
    let a = &t.adapter;
    let sha = nas_tune_lora::sha256_file(&t.model).expect("hash");
    assert_eq!(a.base_sha256.as_deref(), Some(sha.as_str()));
    let gguf = a.gguf.as_ref().expect("a GGUF adapter");
    assert!(std::fs::read(gguf).expect("reads").starts_with(b"GGUF"));
    let peft = a.peft_dir.as_ref().expect("a PEFT adapter");
    let config: Value =
        serde_json::from_slice(&std::fs::read(peft.join("adapter_config.json")).expect("config")).expect("json");
    assert_eq!(config["r"], 8);
    assert_eq!(config["lora_alpha"], 16.0);
    assert!(peft.join("adapter_model.safetensors").is_file());
    assert_eq!(a.examples, 4);
    assert!(a.tokens_seen > 500, "{}", a.tokens_seen);
    assert!(a.seconds > 0.0);
    assert_eq!(a.settings.rank, Some(8));
    assert_eq!(a.settings.target_modules.len(), 7);
    let (first, last) = (a.loss_curve[0].loss, a.loss_curve[STEPS as usize - 1].loss);
    assert!(last < first * 0.7, "the loss falls: {first} → {last}");
    assert!(!t.request.out_dir.join("checkpoints").exists(), "checkpoints are removed once the adapter is written");
}

#[test]
fn the_gguf_adapter_serves_through_llm_local() {
    if skip() {
        return;
    }
    let t = trained();
    let _g = heavy();
    let lib = NativeLibrary::from_ref(nas_llm_local::library());
    let info = lib.plugins().expect("plugins").remove(0);
    let ctx = HostContext { models_dir: Some(t.models_dir.clone()), ..HostContext::default() };
    let cfg = json!({"model": t.model, "context_tokens": 512, "seed": 1});
    let PluginInstance::Llm(mut llm) = lib.create(&info, &cfg, &ctx).expect("llm.local loads") else {
        panic!("llm.local is an LLM backend")
    };
    let ex = &examples()[0];
    let ask = |adapter: Option<AdapterRef>| ChatRequest {
        messages: ex.messages.clone(),
        max_tokens: Some(24),
        temperature: Some(0.0),
        adapter,
        ..ChatRequest::default()
    };
    let at =
        |scale: Option<f32>| AdapterRef { name: "test".into(), gguf: t.adapter.gguf.clone(), peft_dir: None, scale };
    let started = Instant::now();
    let tuned = llm.complete(&ask(Some(at(None)))).expect("generates with the adapter");
    assert!(tuned.usage.completion_tokens > 0 && !tuned.content.is_empty(), "{tuned:?}");
    assert!(tuned.content.contains("import torch"), "the tuned model answers in the trained form: {:?}", tuned.content);
    let base = llm.complete(&ask(None)).expect("generates without");
    let zero = llm.complete(&ask(Some(at(Some(0.0))))).expect("generates at scale 0");
    assert_eq!(zero.content, base.content, "at scale 0 the answer is the base's");
    eprintln!("three answers through llm.local: {:.1} s", started.elapsed().as_secs_f64());
}

fn scores(llm: &mut LocalBackend, adapter: Option<AdapterRef>, n: usize) -> Vec<AnswerScore> {
    examples()
        .iter()
        .take(n)
        .map(|ex| {
            let req = ChatRequest { messages: ex.messages.clone(), adapter: adapter.clone(), ..ChatRequest::default() };
            llm.score(&req, &format!("{}<|im_end|>", ex.answer)).expect("scores")
        })
        .collect()
}

#[test]
fn in_llama_cpp_scale_zero_is_the_base_and_the_adapter_raises_the_training_answers_likelihood() {
    if skip() {
        return;
    }
    let t = trained();
    let _g = heavy();
    let settings: LocalSettings = serde_json::from_value(json!({"context_tokens": 512})).expect("settings");
    let mut llm = LocalBackend::load(&t.model, settings, None).expect("loads");
    let at = |scale: f32| AdapterRef {
        name: "test".into(),
        gguf: t.adapter.gguf.clone(),
        peft_dir: None,
        scale: Some(scale),
    };
    let started = Instant::now();
    let base = scores(&mut llm, None, 4);
    let zero = scores(&mut llm, Some(at(0.0)), 1);
    let tuned = scores(&mut llm, Some(at(1.0)), 4);
    assert_eq!(llm.loaded_adapters(), 1, "the adapter is loaded once");
    eprintln!("9 answers scored in llama.cpp: {:.1} s", started.elapsed().as_secs_f64());
    let mut max_diff = 0f32;
    for (b, z) in base.iter().zip(&zero) {
        assert_eq!(b.last_prompt_logits.len(), 151_936);
        for (x, y) in b.last_prompt_logits.iter().zip(&z.last_prompt_logits) {
            max_diff = max_diff.max((x - y).abs());
        }
        for (x, y) in b.token_logprobs.iter().zip(&z.token_logprobs) {
            assert!((x - y).abs() <= 1e-6, "answer log-probabilities at scale 0: {x} vs {y}");
        }
    }
    eprintln!("largest logit difference at scale 0: {max_diff}");
    assert!(max_diff <= 1e-6, "at scale 0 the logits are the base's (largest difference {max_diff})");
    let mean = |s: &[AnswerScore]| {
        s.iter().map(AnswerScore::total).sum::<f64>() / s.iter().map(|x| x.token_logprobs.len()).sum::<usize>() as f64
    };
    let (b, a) = (mean(&base), mean(&tuned));
    eprintln!("mean log-probability per answer token: base {b:.4}, adapter {a:.4}");
    assert!(a > b + 0.1, "the adapter raises the answers' likelihood: base {b:.4}, adapter {a:.4}");
    for (x, y) in base.iter().zip(&tuned) {
        assert!(y.total() > x.total(), "each answer is likelier: {} → {}", x.total(), y.total());
    }
}

#[test]
fn the_peft_adapter_loads_back_in_peft_and_scores_the_answers_higher() {
    if skip() {
        return;
    }
    let t = trained();
    let _g = heavy();
    let out = &t.request.out_dir;
    let python = nas_tune_lora::find_python(None).expect("python");
    let started = Instant::now();
    let o = std::process::Command::new(&python)
        .arg("-I")
        .arg(out.join("trainer/tune_lora.py"))
        .args(["score", &out.join("trainer/job.json").display().to_string(), "--adapter"])
        .arg(t.adapter.peft_dir.as_ref().expect("peft dir"))
        .env("PYTHONWARNINGS", "ignore")
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .output()
        .expect("runs the scorer");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a score line");
    assert_eq!(v["event"], "score");
    assert_eq!(v["adapter_rank"], 8);
    let (base, tuned) = (v["base_nll"].as_f64().expect("base"), v["adapter_nll"].as_f64().expect("adapter"));
    eprintln!(
        "mean answer NLL in transformers: base {base:.4}, adapter {tuned:.4} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(tuned < base - 0.1, "base {base}, adapter {tuned}");
}

#[test]
fn a_request_whose_adapter_is_written_gets_it_back_without_training() {
    if skip() {
        return;
    }
    let t = trained();
    let _g = heavy();
    let started = Instant::now();
    let again = t.tuner.lock().unwrap_or_else(|e| e.into_inner()).tune(&t.request).expect("reuses");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(again.extra.get("reused"), Some(&json!(true)));
    assert_eq!(again.loss_curve, t.adapter.loss_curve);
    assert_eq!(again.gguf, t.adapter.gguf);
}
