//! `nas cycles` end to end: two tiny cycles of three candidates over a seed
//! corpus of four examples the test writes, with the REAL fine-tuner
//! (`tune.lora` training the real Qwen2.5-Coder-0.5B GGUF: short sequences,
//! two steps per adapter), the scripted loopback server as the generator and
//! the instant evaluator. One run goes through uninterrupted; another is
//! killed with SIGKILL during cycle 1's generation, during cycle 1's
//! fine-tune (after its first checkpoint) and during cycle 2's generation,
//! and resumed each time; both must end with the same records, the same
//! training sets and the same adapters, each recorded once. A replay of the
//! first reproduces its records and training sets without training, and
//! `nas report` shows the cycles.
//!
//! The model is fetched (and verified) into `NAS_TEST_MODELS_DIR`, else the
//! default models directory, and its dequantised copy is cached there, as
//! `tune.lora`'s own tests do. `NAS_SKIP_MODEL_TESTS=1` skips the real-model
//! test on a machine that cannot get the model or the trainer's packages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nas_host::cycles::log::{self, CycleState, Phase};
use nas_host::records::IterationRecord;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_tests::{assert_usage_error, build_cdylib, nas, nas_bin, s, text, venv_python};
use serde_json::Value;

const RUN_SEED: u64 = 43;
const MODEL: &str = "qwen2.5-coder-0.5b";

fn skip() -> bool {
    if std::env::var_os("NAS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("NAS_SKIP_MODEL_TESTS is set: skipping the real-model test");
        return true;
    }
    false
}

/// A small `class Net` whose layers are `body` and whose accuracy under
/// `eval.instant` is `acc`.
fn net(name: &str, body: &[&str], forward: &str, acc: f64) -> String {
    let layers: String = body.iter().map(|l| format!("        {l}\n")).collect();
    format!(
        "import torch\nimport torch.nn as nn\n\n# {name}\n# accuracy: {acc}\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n{layers}\n    def forward(self, x):\n        {forward}\n"
    )
}

/// The designs of the seed corpus.
fn seed_designs() -> Vec<String> {
    vec![
        net(
            "mlp",
            &["self.flat = nn.Flatten()", "self.fc1 = nn.Linear(64, 32)", "self.fc2 = nn.Linear(32, num_classes)"],
            "return self.fc2(torch.relu(self.fc1(self.flat(x))))",
            0.6,
        ),
        net(
            "conv",
            &[
                "self.conv = nn.Conv2d(1, 4, 3, padding=1)",
                "self.pool = nn.AdaptiveAvgPool2d(1)",
                "self.head = nn.Linear(4, num_classes)",
            ],
            "return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))",
            0.7,
        ),
        net(
            "bn",
            &[
                "self.c = nn.Conv2d(1, 6, 3)",
                "self.b = nn.BatchNorm2d(6)",
                "self.g = nn.AdaptiveMaxPool2d(1)",
                "self.o = nn.Linear(6, num_classes)",
            ],
            "return self.o(self.g(self.b(self.c(x)).relu()).flatten(1))",
            0.65,
        ),
        net(
            "tanh",
            &["self.lin = nn.Linear(64, 48)", "self.act = nn.Tanh()", "self.out = nn.Linear(48, num_classes)"],
            "return self.out(self.act(self.lin(x.flatten(1))))",
            0.5,
        ),
    ]
}

/// The generator's answer for candidate `t` (iterations 1–3: cycle 1, 4–6:
/// cycle 2): 1 is selected; 2 has no `class Net`; 3 is below 40 %; 4 copies
/// a seed design (valid and accurate, not novel); 5 and 6 are selected.
fn answer(t: u64) -> String {
    let code = match t {
        1 => net("deep", &["self.a = nn.Conv2d(1, 8, 3, padding=1)", "self.b = nn.Conv2d(8, 16, 3, padding=1)", "self.drop = nn.Dropout(0.25)", "self.fc = nn.Linear(16, num_classes)"], "return self.fc(self.drop(self.b(self.a(x).relu()).relu().mean((2, 3))))", 0.55),
        2 => "import torch.nn as nn\n\nclass Model(nn.Module):\n    pass\n".to_string(),
        3 => net("tiny", &["self.only = nn.Linear(64, num_classes)"], "return self.only(x.reshape(x.shape[0], -1))", 0.35),
        4 => seed_designs()[1].replace("# accuracy: 0.7", "# accuracy: 0.8"),
        5 => net("gelu", &["self.stem = nn.Conv2d(1, 12, 5, padding=2)", "self.norm = nn.GroupNorm(3, 12)", "self.act = nn.GELU()", "self.cls = nn.Linear(12, num_classes)"], "return self.cls(self.act(self.norm(self.stem(x))).amax(dim=(2, 3)))", 0.65),
        _ => net("residual", &["self.inp = nn.Conv2d(1, 10, 1)", "self.res = nn.Conv2d(10, 10, 3, padding=1)", "self.avg = nn.AvgPool2d(8)", "self.last = nn.Linear(10, num_classes)"], "h = self.inp(x)\n        h = h + torch.sigmoid(self.res(h))\n        return self.last(self.avg(h).flatten(1))", 0.45),
    };
    format!("Here is the design.\n```python\n{code}```\n")
}

/// The loopback generator: the answer of candidate `t`, read from the
/// request's seed (`[run] seed + 16·t`): every candidate of a cycle gets the
/// same first-attempt prompt, so the seed is what tells them apart.
fn server() -> TestServer {
    let server = TestServer::start();
    // Speaks vLLM's runtime LoRA API: each cycle's PEFT adapter is loaded
    // and asked for by name.
    server.enable_lora_loading();
    server.set_responder(|req: &RecordedRequest| {
        let seed = req.body["seed"].as_u64().unwrap_or(RUN_SEED + 16);
        Some(Step::reply(answer((seed - RUN_SEED) / 16)))
    });
    server
}

fn seed_file(dir: &Path) -> PathBuf {
    let lines: Vec<String> = seed_designs()
        .iter()
        .enumerate()
        .map(|(i, code)| {
            serde_json::json!({
                "messages": [
                    {"role": "system", "content": "You write PyTorch image classifiers. Answer with one python block."},
                    {"role": "user", "content": format!("Write design {i} for 8x8 grey images, 2 classes.")},
                ],
                "answer": format!("```python\n{}```", code),
                "source": format!("test:{i}"),
            })
            .to_string()
        })
        .collect();
    let path = dir.join("seed.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("seed corpus");
    path
}

fn models() -> (PathBuf, PathBuf) {
    let dir =
        std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(nas_llm_local::default_models_dir);
    let opts = nas_llm_local::FetchOptions { verbose: true, ..nas_llm_local::FetchOptions::default() };
    let gguf = nas_llm_local::fetch_model(MODEL, &dir, &opts).expect("the 0.5B model can be fetched and verified");
    (gguf, dir)
}

/// A cycles config in `dir`: two cycles of three candidates, the real
/// trainer, evaluations logged to `<dir>/<log>`.
fn config(dir: &Path, server: &TestServer, log: &str, gguf: &Path, models_dir: &Path) -> PathBuf {
    let fixture = build_cdylib("nas-fixture-instant");
    seed_file(dir);
    let text = format!(
        r#"
[run]
name = "cycles"
seed = {RUN_SEED}

[plugins]
load = ["{fixture}"]

[dataset]
plugin = "data.tiny"

[evaluator]
plugin = "eval.instant"
[evaluator.settings]
delay_ms = 300
log = "{log}"

[generator]
plugin = "builtin:llm.openai"
[generator.settings]
base_url = "{url}"
model = "scripted"
max_retries = 0

[tuner]
plugin = "builtin:tune.lora"
[tuner.settings]
device = "cpu"
checkpoint_every = 1
lr_schedule = "constant"
warmup_ratio = 0.0
cache_dir = "{cache}"

[cycles]
cycles = 2
candidates = 3
base_model = "{gguf}"

[cycles.seed]
source = "seed.jsonl"

[cycles.tune]
rank = 4
alpha = 8.0
max_steps = 2
batch_size = 2
max_seq_len = 128
learning_rate = 1e-3
"#,
        fixture = fixture.display(),
        url = server.base_url(),
        log = dir.join(log).display(),
        cache = models_dir.join("transformers").display(),
        gguf = gguf.display(),
    );
    let path = dir.join(format!("{log}.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(nas_bin());
    cmd.args(args).current_dir(dir).env("NAS_HOME", dir.join(".nas-home")).env("NAS_PYTHON", venv_python());
    cmd
}

fn run_to_end(dir: &Path, args: &[&str]) -> Output {
    let out = command(dir, args).output().expect("nas runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "nas {args:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    out
}

/// Starts `nas args` and SIGKILLs it once `ready` holds; panics when it ends
/// first.
fn kill_when(dir: &Path, args: &[&str], what: &str, ready: impl Fn() -> bool) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("killed.log")).expect("log");
    let mut child: Child = command(dir, args)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("nas starts");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let log = std::fs::read_to_string(dir.join("killed.log")).unwrap_or_default();
            panic!("nas {args:?} ended ({status}) before it could be killed {what}; its output:\n{log}");
        }
        assert!(Instant::now() < deadline, "nothing to kill {what} after 15 minutes");
        if ready() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn records_of(run: &Path) -> Vec<IterationRecord> {
    nas_host::store::Store::open(run).and_then(|st| st.iterations()).unwrap_or_default()
}

fn states_of(run: &Path) -> Vec<CycleState> {
    let st = nas_host::store::Store::open(run).expect("a run store");
    log::read_all(&st).expect("cycle states")
}

/// What must be equal between two runs' records (not their timings).
fn essence(r: &IterationRecord) -> Value {
    serde_json::json!({
        "iteration": r.iteration, "cycle": r.cycle, "mode": r.mode, "prompt": r.generator_prompt,
        "answer": r.generator_response.content, "code": r.code, "status": r.outcome.status(),
        "accuracy": r.outcome.accuracy(), "failure": r.outcome.failure_kind(),
    })
}

fn losses(s: &CycleState) -> Vec<(u64, f64)> {
    s.adapter.as_ref().expect("an adapter").loss_curve.iter().map(|p| (p.step, p.loss)).collect()
}

#[test]
fn a_cycles_run_killed_during_generation_and_fine_tunes_ends_as_an_uninterrupted_one() {
    if skip() {
        return;
    }
    let started = Instant::now();
    let (gguf, models_dir) = models();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let server = server();

    // The uninterrupted run.
    let reference = d.join("reference");
    let cfg = config(d, &server, "reference-evals", &gguf, &models_dir);
    let out = run_to_end(d, &["cycles", "--config", s(&cfg), "--run-dir", s(&reference)]);
    let (stdout, _) = text(&out);
    let uninterrupted_s = started.elapsed().as_secs_f64();
    assert!(stdout.contains("Cycle  Valid (%)") && stdout.contains("Total Train Prompts"), "{stdout}");
    assert!(stdout.contains("cycle 0 (seed): 4 training examples"), "{stdout}");
    assert!(stdout.contains("stopped: completed 2 cycles"), "{stdout}");
    let loaded = server.loaded_adapters();
    assert!(
        !loaded.is_empty() && loaded.iter().all(|(_, path)| Path::new(path).join("adapter_config.json").is_file()),
        "each cycle's PEFT adapter is loaded on the server: {loaded:?}"
    );

    // The same, killed three times.
    let killed = d.join("killed");
    let cfg = config(d, &server, "killed-evals", &gguf, &models_dir);
    let in_cycle = |c: u64| {
        let run = killed.clone();
        move || records_of(&run).iter().any(|r| r.cycle == c)
    };
    kill_when(d, &["cycles", "--config", s(&cfg), "--run-dir", s(&killed)], "during cycle 1's generation", in_cycle(1));
    let checkpoint = killed.join("cycles/cycle-01/adapter/checkpoints/step-00000001");
    kill_when(d, &["resume", s(&killed)], "during cycle 1's fine-tune", || checkpoint.is_dir());
    kill_when(d, &["cycles", "--resume", s(&killed)], "during cycle 2's generation", in_cycle(2));
    let out = run_to_end(d, &["resume", s(&killed)]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("stopped: completed 2 cycles"), "{stdout}");
    eprintln!(
        "cycles: uninterrupted run {uninterrupted_s:.0} s; killed three times and resumed {:.0} s",
        started.elapsed().as_secs_f64() - uninterrupted_s
    );

    // The same records.
    let (a, b) = (records_of(&reference), records_of(&killed));
    assert_eq!(a.len(), 6);
    assert_eq!(a.iter().map(essence).collect::<Vec<_>>(), b.iter().map(essence).collect::<Vec<_>>());
    assert_eq!(a.iter().map(|r| r.cycle).collect::<Vec<_>>(), [1, 1, 1, 2, 2, 2]);
    for r in &a {
        let prompt = &r.generator_prompt[1].content;
        assert!(prompt.contains("This is attempt 1"), "every candidate is a first attempt: {prompt}");
    }

    // The same selections, training sets and adapters, each adapter once.
    let (sa, sb) = (states_of(&reference), states_of(&killed));
    assert_eq!(sa.len(), 3);
    assert_eq!(sa.iter().map(|s| s.selected.clone()).collect::<Vec<_>>(), [vec![], vec![1], vec![5, 6]]);
    assert_eq!(sa.iter().map(|s| s.train_examples).collect::<Vec<_>>(), [4, 5, 7]);
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!((x.phase, y.phase), (Phase::Tuned, Phase::Tuned));
        assert_eq!(x.selected, y.selected, "cycle {}", x.cycle);
        assert_eq!(x.train_sha256, y.train_sha256, "cycle {}: training sets", x.cycle);
        let file = std::fs::read(killed.join(&y.train_file)).expect("training set");
        assert_eq!(nas_host::cycles::sha256_hex(&file), y.train_sha256);
        assert_eq!(x.adapter_from, None);
        assert_eq!(x.tune_attempts, 1, "the uninterrupted run trains each adapter once");
        let (la, lb) = (losses(x), losses(y));
        assert_eq!(la.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2], "cycle {}: each step once", x.cycle);
        for ((_, p), (_, q)) in la.iter().zip(&lb) {
            assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "cycle {}: losses {la:?} vs {lb:?}", x.cycle);
        }
        let adapter = y.adapter.as_ref().expect("adapter");
        assert!(adapter.gguf.as_ref().is_some_and(|g| g.is_file()), "cycle {}: a GGUF adapter", y.cycle);
        assert!(adapter.peft_dir.as_ref().is_some_and(|p| p.join("adapter_model.safetensors").is_file()));
    }
    assert_eq!(sb[1].tune_attempts, 2, "cycle 1's fine-tune was killed once");
    assert_eq!((sb[0].tune_attempts, sb[2].tune_attempts), (1, 1));
    let resumed = &sb[1].adapter.as_ref().expect("adapter").extra["resumed_from"];
    assert!(
        resumed == &serde_json::json!([1]) || resumed == &serde_json::json!([2]),
        "the killed fine-tune went on from its checkpoint: {resumed}"
    );
    let evals = |name: &str| {
        std::fs::read_to_string(d.join(name)).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(evals("reference-evals").len(), 6, "one evaluation per candidate");
    let again = evals("killed-evals");
    assert!((6..=8).contains(&again.len()), "at most the two killed evaluations again: {again:?}");
    // The last cycle's training set: the seed, then the selected prompt → answer pairs.
    let set = std::fs::read_to_string(killed.join(&sb[2].train_file)).expect("set");
    let added: Vec<Value> = set.lines().skip(4).map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(added.len(), 3);
    assert_eq!(added[0]["answer"], format!("```python\n{}\n```", b[0].code.as_deref().expect("code").trim_end()));
    assert_eq!(added[0]["messages"], serde_json::to_value(&b[0].generator_prompt).expect("json"));
    assert_eq!(added[2]["source"], "cycle-2:iteration-6");

    // A replay reproduces records and training sets without training.
    let replayed = d.join("replayed");
    let out = run_to_end(d, &["cycles", "--replay", s(&reference), "--run-dir", s(&replayed)]);
    assert!(text(&out).0.contains("stopped: completed 2 cycles"));
    assert_eq!(
        a.iter().map(essence).collect::<Vec<_>>(),
        records_of(&replayed).iter().map(essence).collect::<Vec<_>>()
    );
    for (x, y) in sa.iter().zip(&states_of(&replayed)) {
        assert_eq!(x.train_sha256, y.train_sha256);
        assert_eq!(y.tune_attempts, 0, "a replay trains nothing");
        assert!(y.adapter_from.as_deref().is_some_and(|f| f.starts_with("replayed")), "{:?}", y.adapter_from);
        assert_eq!(losses(x), losses(y));
    }

    // The report shows the cycles.
    let report = d.join("report");
    run_to_end(d, &["report", s(&killed), "--out", s(&report)]);
    let html = std::fs::read_to_string(report.join("report.html")).expect("report");
    assert!(html.contains("Fine-tuning cycles") && html.contains("Total Train Prompts"), "no cycles section");
    let md = std::fs::read_to_string(report.join("summary.md")).expect("summary");
    assert!(md.contains("| Cycle | Valid (%) |"), "{md}");
    for f in ["cycles_metrics", "cycles_loss"] {
        assert!(report.join("figures").join(format!("{f}.png")).is_file(), "figure {f}");
    }
    eprintln!("cycles test: {:.0} s in all", started.elapsed().as_secs_f64());
}

#[test]
fn nas_cycles_refuses_configs_without_cycles_or_a_tuner() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let plain = d.join("plain.toml");
    std::fs::write(&plain, "[search]\nmax_iterations = 2\n").expect("write");
    assert_usage_error(&nas(d, &["cycles", "--config", s(&plain)]), &["no [cycles] section"]);
    let untuned = d.join("untuned.toml");
    std::fs::write(&untuned, "[cycles]\ncycles = 1\n").expect("write");
    assert_usage_error(&nas(d, &["cycles", "--config", s(&untuned)]), &["no [tuner] section"]);
    let typo = d.join("typo.toml");
    std::fs::write(&typo, "[tuner]\nplugin = \"tune.lora\"\n[cycles]\ncandidate = 3\n").expect("write");
    assert_usage_error(&nas(d, &["cycles", "--config", s(&typo)]), &["typo.toml:4:", "candidate"]);
    assert_usage_error(&nas(d, &["cycles"]), &["--config FILE"]);
    assert!(!d.join("runs").exists(), "no run directory is left by a refused config");
}
