//! The search loop end to end: the `nas` binary against a chat-completions
//! server on loopback answering from a script, with the instant evaluator
//! fixture. Checks the method's prompts, triples, memory window, failures,
//! duplicates, delta mode, resume after kill -9 and replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nas_host::records::{IterationRecord, Outcome};
use nas_host::store::Store;
use nas_llm_test_server::TestServer;
use nas_tests::{build_cdylib, fence, nas, nas_bin, records, run_dirs, scripted, text, write_scripted_run, ADVICE};

fn net(body: &str) -> String {
    fence(&format!("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n{body}\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n"))
}

fn write_config(dir: &Path, server: &TestServer, extra_search: &str, memory_k: usize, eval_settings: &str) -> PathBuf {
    let log = dir.join("evaluated.log");
    write_scripted_run(
        dir,
        server,
        "t",
        extra_search,
        &format!(
            r#"
[evaluator]
plugin = "eval.instant"
[evaluator.settings]
log = "{log}"
{eval_settings}

[memory]
plugin = "builtin:memory.window"
[memory.settings]
k = {memory_k}
"#,
            log = log.display(),
        ),
    )
}

fn kind(r: &IterationRecord) -> String {
    match &r.outcome {
        Outcome::Ok { .. } => "ok".into(),
        other => other.failure_kind().unwrap_or_default(),
    }
}

fn user_prompt(msgs: &[nas_plugin_api::ChatMessage]) -> &str {
    msgs.last().map(|m| m.content.as_str()).unwrap_or("")
}

fn long_suggestion(tag: &str) -> String {
    format!(
        "{tag} widen the first block to 64 channels and add batch normalisation after every convolution; {}",
        "also consider a cosine schedule; ".repeat(12)
    )
}

#[test]
fn the_loop_follows_the_method_step_by_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = net("        self.fc = nn.Linear(784, num_classes)\n        # accuracy: 0.62");
    let generator = vec![
        a.clone(),
        net("        self.fc = nn.Linear((784, num_classes)"),
        "I would suggest trying a deeper network with residual connections.".to_string(),
        net("        self.conv = nn.Conv2d(1, 32, 3)\n        self.bn = nn.BatchNorm2d(32)\n        self.fc = nn.Linear(32 * 26 * 26, num_classes)\n        # accuracy: 0.81"),
        a.clone(),
        net("        self.fc = nn.Linear(1568, num_classes)\n        # fail: shape: mat1 and mat2 shapes cannot be multiplied (128x3136 and 1568x10)"),
        "```python\nimport torch.nn as nn\nclass Model(nn.Module):\n    pass\n```".to_string(),
        net("        self.conv = nn.Conv2d(1, 16, 5)\n        self.fc = nn.Linear(16 * 24 * 24, num_classes)\n        # accuracy: 0.79"),
    ];
    let improver = vec![
        format!("```json\n{{\"reason\": \"P1 underfits\", \"inspiration\": \"LeNet\", \"improvement_suggestions\": \"{}\"}}\n```", long_suggestion("S1")),
        "Here: {\"analysis\": \"P2 syntax error\", \"improvement_suggestions\": \"S2 close the parenthesis\"}".to_string(),
        "```json\n{\"reason\": \"P3 no code\", \"improvement_suggestions\": [{\"change\": \"S3 answer with code\"}, \"keep it small\"]}\n```".to_string(),
        "{\"reason\": \"P4 good, \"improvement_suggestions\": \"S4 add dropout\"".to_string(),
        "S5 try something different entirely.".to_string(),
        "```json\n{\"reason\": \"P6 flatten size\", \"improvement_suggestions\": \"S6 use adaptive pooling\"}\n```".to_string(),
        "```json\n{\"reason\": \"P7 wrong class name\", \"improvement_suggestions\": \"S7 name it Net\"}\n```".to_string(),
        "```json\n{\"reason\": \"P8 fine\", \"improvement_suggestions\": \"S8 more channels\"}\n```".to_string(),
    ];
    let server = scripted(generator, improver);
    let cfg = write_config(dir.path(), &server, "max_iterations = 8", 2, "");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let run = run_dirs(dir.path()).pop().expect("a run directory");
    let recs = records(&run);

    // Outcomes, in order: failures and duplicates are records, not errors.
    let kinds: Vec<String> = recs.iter().map(kind).collect();
    assert_eq!(kinds, ["ok", "syntax", "extract", "ok", "duplicate", "shape", "contract", "ok"]);
    assert!(matches!(recs[4].outcome, Outcome::Duplicate { of: 1, .. }), "{:?}", recs[4].outcome);
    // Duplicates and answers without code are not evaluated.
    let evaluated = std::fs::read_to_string(dir.path().join("evaluated.log")).expect("log");
    let evaluated: Vec<&str> = evaluated.lines().collect();
    assert_eq!(evaluated, ["iteration-1", "iteration-2", "iteration-4", "iteration-6", "iteration-7", "iteration-8"]);
    // Best is strictly greater.
    assert_eq!(recs[3].best, Some((4, 0.81)));
    assert_eq!(recs[7].best, Some((4, 0.81)));

    // The Improver's answers in every accepted shape.
    let parsed: Vec<String> = recs.iter().map(|r| r.advice.as_ref().expect("advice").parsed_as.clone()).collect();
    assert_eq!(&parsed[..5], ["json_fence", "bare_object", "json_fence", "lenient", "raw"]);
    assert_eq!(recs[1].advice.as_ref().expect("advice").problem, "P2 syntax error");
    assert_eq!(
        recs[2].advice.as_ref().expect("advice").suggestions,
        "1. change: S3 answer with code\n2. keep it small"
    );

    // The triples: problem, suggestion cut to 300 chars, outcome of the next iteration.
    let memory = Store::open(&run).expect("store").memory().expect("memory");
    assert_eq!(memory.len(), 8);
    assert_eq!(memory[0].problem, "P1 underfits");
    assert_eq!(memory[0].suggestion.chars().count(), 300);
    assert!(memory[0].suggestion.starts_with("S1 widen"));
    assert!(memory[0].outcome.as_deref().expect("closed").starts_with("error: syntax: "), "{:?}", memory[0].outcome);
    assert_eq!(memory[2].outcome.as_deref(), Some("accuracy: 81.00%"));
    assert_eq!(memory[3].outcome.as_deref(), Some("error: duplicate of iteration 1 (similarity 1.00); not trained"));
    assert!(memory[4].outcome.as_deref().expect("closed").contains("mat1 and mat2"));
    assert_eq!(memory[7].outcome, None, "the last entry stays open");

    // The generator's prompt: task and contract, best code + accuracy,
    // previous code + accuracy or failure, the latest suggestions.
    let p5 = user_prompt(&recs[4].generator_prompt);
    for needle in [
        "class Net(nn.Module)",
        "(batch, 1, 8, 8)",
        "attempt 5",
        "test accuracy 81.00%",
        "nn.BatchNorm2d(32)",
        "S4 add dropout",
    ] {
        assert!(p5.contains(needle), "generator prompt 5 lacks {needle:?}:\n{p5}");
    }
    let p3 = user_prompt(&recs[2].generator_prompt);
    assert!(p3.contains("Previous attempt (2): failed") && p3.contains("syntax"), "{p3}");
    assert!(p3.contains("nn.Linear((784") && p3.contains("S2 close the parenthesis"), "{p3}");
    assert!(!user_prompt(&recs[0].generator_prompt).contains("Best design so far"));

    // The Improver's prompt: best and current code with results, the
    // evaluator's feedback, and the memory window sliding at K=2.
    let i6 = user_prompt(recs[5].improver_prompt.as_ref().expect("improver ran"));
    for needle in [
        "test accuracy 81.00%",
        "Current design (attempt 6)",
        "mat1 and mat2 shapes",
        "attempt 4: problem: P4",
        "attempt 5: problem:",
    ] {
        assert!(i6.contains(needle), "improver prompt 6 lacks {needle:?}:\n{i6}");
    }
    assert!(!i6.contains("attempt 3: problem"), "the window holds K=2 entries:\n{i6}");
    assert_eq!(recs[5].memory_shown.iter().map(|e| e.iteration).collect::<Vec<_>>(), [4, 5]);

    // What a user sees at the end.
    assert!(stdout.contains("valid rate            37.50% (3/8)"), "{stdout}");
    assert!(stdout.contains("best accuracy         81.00% (iteration 4)"), "{stdout}");
    assert!(stdout.contains("stopped: reached max_iterations"), "{stdout}");
    assert!(stdout.contains("unique architectures  6 (1 duplicates skipped)"), "{stdout}");
}

const BASELINE: &str = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(64, num_classes)\n        # accuracy: 0.50\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n";

#[test]
fn delta_mode_applies_diffs_to_the_parent_and_records_patches_that_do_not_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("baseline.py"), BASELINE).expect("write");
    let generator = vec![
        "```diff\n--- a/net.py\n+++ b/net.py\n@@ -6,2 +6,3 @@\n         self.fc = nn.Linear(64, num_classes)\n-        # accuracy: 0.50\n+        self.drop = nn.Dropout(0.1)\n+        # accuracy: 0.70\n```".to_string(),
        "```diff\n@@ -1,1 +1,1 @@\n-class Model(nn.Module):\n+class Net(nn.Module):\n```".to_string(),
        "```python\nimport torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.fc = nn.Linear(64, 128)\n        # accuracy: 0.75\n```".to_string(),
    ];
    let improver = vec![ADVICE.to_string()];
    let server = scripted(generator, improver);
    let cfg =
        write_config(dir.path(), &server, "max_iterations = 3\nmode = \"delta\"\nbaseline = \"baseline.py\"", 5, "");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let recs = records(&run_dirs(dir.path()).pop().expect("run"));
    assert_eq!(recs.iter().map(kind).collect::<Vec<_>>(), ["ok", "patch", "ok"]);
    assert_eq!(recs[0].parent, Some(0), "the baseline is the first parent");
    assert!(user_prompt(&recs[0].generator_prompt).contains("self.fc = nn.Linear(64, num_classes)"));
    let code1 = recs[0].code.as_deref().expect("patched code");
    assert!(code1.contains("self.drop = nn.Dropout(0.1)") && code1.contains("def forward"), "{code1}");
    assert_eq!(recs[1].parent, Some(1), "the best so far is the parent");
    assert!(recs[1].diff.as_deref().expect("diff").contains("class Model"));
    let Outcome::Failed { failure } = &recs[1].outcome else { panic!("patch failure") };
    assert!(failure.message.contains("hunk 1"), "{}", failure.message);
    assert_eq!(recs[2].outcome.accuracy(), Some(0.75), "a whole file is accepted in delta mode");
}

fn comparable(r: &IterationRecord) -> (u64, Option<String>, String, Option<f64>, Option<String>, String) {
    (
        r.iteration,
        r.code.clone(),
        kind(r),
        r.outcome.accuracy(),
        r.advice.as_ref().map(|a| a.suggestions.clone()),
        user_prompt(r.improver_prompt.as_deref().unwrap_or_default()).to_string(),
    )
}

fn script_for_resume() -> (Vec<String>, Vec<String>) {
    let generator = (1..=12)
        .map(|i| match i % 4 {
            0 => net(&format!("        self.fc = nn.Linear({}, num_classes)\n        # fail: runtime: boom {i}", 100 + i)),
            _ => net(&format!(
                "        self.c{i} = nn.Conv2d(1, {}, 3)\n        self.fc = nn.Linear({}, num_classes)\n        # accuracy: 0.{}",
                8 * i,
                50 * i,
                40 + i * 3
            )),
        })
        .collect();
    let improver = (1..=12)
        .map(|i| format!("```json\n{{\"reason\": \"R{i}\", \"improvement_suggestions\": \"S{i}\"}}\n```"))
        .collect();
    (generator, improver)
}

#[test]
fn a_run_killed_at_random_points_resumes_with_nothing_lost_or_done_twice_and_replays() {
    let (generator, improver) = script_for_resume();
    let server = scripted(generator, improver);

    // The reference: one uninterrupted run.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(reference_dir.path(), &server, "max_iterations = 10", 3, "delay_ms = 300");
    let out = nas(reference_dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let reference_run = run_dirs(reference_dir.path()).pop().expect("run");
    let reference: Vec<_> = records(&reference_run).iter().map(comparable).collect();
    assert_eq!(reference.len(), 10);

    // The same run, killed with SIGKILL at pseudo-random moments and resumed.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &server, "max_iterations = 10", 3, "delay_ms = 300");
    let mut seed: u64 = 0x5eed_1234;
    let mut next_delay = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_millis(100 + (seed >> 33) % 800)
    };
    let mut kills = 0;
    let mut finished = false;
    for attempt in 0..40 {
        let mut cmd = Command::new(nas_bin());
        cmd.current_dir(dir.path())
            .env("NAS_HOME", dir.path().join(".nas-home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match run_dirs(dir.path()).pop() {
            None => cmd.args(["run", "--config", cfg.to_str().expect("utf-8")]),
            Some(run) => cmd.args(["resume", run.to_str().expect("utf-8")]),
        };
        let mut child = cmd.spawn().expect("spawn nas");
        let deadline = std::time::Instant::now() + next_delay();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if std::time::Instant::now() >= deadline && attempt < 30 {
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                kills += 1;
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(s) = status {
            assert!(s.success(), "nas exited with {s}");
            finished = true;
            break;
        }
    }
    assert!(finished, "the run finished within 40 starts");
    assert!(kills >= 3, "the run was killed several times ({kills})");
    let run = run_dirs(dir.path()).pop().expect("run");
    let resumed: Vec<_> = records(&run).iter().map(comparable).collect();
    assert_eq!(resumed, reference, "killed-and-resumed records equal the uninterrupted run's");
    let memory = Store::open(&run).expect("store").memory().expect("memory");
    assert_eq!(memory, Store::open(&reference_run).expect("store").memory().expect("memory"));

    // Replay: the recorded LLM answers, no server at all.
    drop(server);
    let replay_dir = tempfile::tempdir().expect("tempdir");
    let out = nas(
        replay_dir.path(),
        &[
            "run",
            "--replay",
            reference_run.to_str().expect("utf-8"),
            "--output-dir",
            replay_dir.path().join("runs").to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let replayed: Vec<_> =
        records(&run_dirs(replay_dir.path()).pop().expect("replay run")).iter().map(comparable).collect();
    assert_eq!(replayed, reference, "a replay reproduces the records");
}

#[test]
fn an_unreachable_llm_stops_the_run_with_exit_1_and_the_run_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = scripted(vec![net("        self.fc = nn.Linear(64, num_classes)")], vec!["{}".into()]);
    let cfg = write_config(dir.path(), &server, "max_iterations = 2", 5, "");
    let text_cfg = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace(&server.base_url(), &nas_llm_test_server::refused_base_url());
    std::fs::write(&cfg, text_cfg).expect("write");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("generator") && stderr.contains("nas resume"), "{stderr}");
    let run = run_dirs(dir.path()).pop().expect("run dir kept");
    assert_eq!(Store::open(&run).expect("store").meta("status").expect("meta").as_deref(), Some("failed"));
}

#[test]
fn budgets_stop_the_run_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generator = vec![
        net("        self.fc = nn.Linear(10, num_classes)\n        # accuracy: 0.60"),
        net("        self.fc = nn.Linear(20, num_classes)\n        # accuracy: 0.95"),
        net("        self.fc = nn.Linear(30, num_classes)\n        # accuracy: 0.70"),
    ];
    let server = scripted(generator, vec![ADVICE.into()]);
    let cfg = write_config(dir.path(), &server, "max_iterations = 10\ntarget_accuracy = 0.9", 5, "");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("stopped: reached target_accuracy"), "{stdout}");
    assert_eq!(records(&run_dirs(dir.path()).pop().expect("run")).len(), 2);
}

#[test]
fn the_family_backends_load_as_so_files_and_drive_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let libs: Vec<(PathBuf, &str)> = [
        ("nas-llm-qwen-so", "llm.qwen2.5"),
        ("nas-llm-deepseek-so", "llm.deepseek-coder"),
        ("nas-llm-glm-so", "llm.glm"),
    ]
    .into_iter()
    .map(|(pkg, id)| (build_cdylib(pkg), id))
    .collect();
    for (so, id) in &libs {
        let out = nas(dir.path(), &["--plugin", so.to_str().expect("utf-8"), "plugins", "list"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&format!("{id} "))).collect();
        assert_eq!(rows.len(), 2, "the built-in and the loaded one: {stdout}");
        assert!(rows.iter().any(|r| r.contains(&format!("native:{}", so.display()))), "{stdout}");
        assert!(rows.iter().any(|r| r.contains("builtin (overridden)")), "{stdout}");
    }
    // A whole run whose generator and improver are the qwen .so, on loopback.
    let server = scripted(
        vec![net("        self.fc = nn.Linear(64, num_classes)\n        # accuracy: 0.66")],
        vec![ADVICE.into()],
    );
    let cfg = write_config(dir.path(), &server, "max_iterations = 1", 5, "");
    let text_cfg = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("plugin = \"builtin:llm.openai\"", &format!("plugin = \"native:{}\"", libs[0].0.display()));
    std::fs::write(&cfg, text_cfg).expect("write");
    let out = nas(dir.path(), &["run", "--config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = run_dirs(dir.path()).pop().expect("run");
    assert_eq!(records(&run)[0].outcome.accuracy(), Some(0.66));
    let plugins = std::fs::read_to_string(run.join("plugins.json")).expect("plugins.json");
    assert!(plugins.contains("llm.qwen2.5") && plugins.contains("libnas_llm_qwen.so"), "{plugins}");
    assert!(server.requests().iter().any(|r| r.path.ends_with("/chat/completions")));
}
