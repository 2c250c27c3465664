//! Shared helpers for the workspace-level integration tests (the one test
//! binary `tests/tests/main.rs`): build the `nas` binary and plugin
//! libraries from source, exactly as a user would, run them, and script the
//! loopback chat server that stands in for the LLM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use nas_llm_test_server::{RecordedRequest, Step, TestServer};

pub mod stats;
pub mod torture;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

pub use nas_plugin_test_support::cargo::{build_as_the_tests_do, cargo_command};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Runs `build` (a `cargo build`) with JSON messages and returns, for each
/// artifact it reports, the directory of the package that made it and the
/// artifact's files (its executable among them).
fn cargo_build(mut build: Command) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = build
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{build:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let package = msg["manifest_path"].as_str().map(Path::new).and_then(Path::parent).map(Path::to_path_buf);
        let files = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(msg.get("executable"))
            .filter_map(|f| f.as_str())
            .map(PathBuf::from)
            .collect();
        found.push((package.unwrap_or_default(), files));
    }
    found
}

/// `targets` of the workspace, built as the tests build them
/// ([`build_as_the_tests_do`]), from the workspace root.
fn as_the_tests_build(targets: &[&str]) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut build = build_as_the_tests_do(targets);
    build.current_dir(workspace_root());
    cargo_build(build)
}

/// Builds a workspace package's cdylib and returns the `.so` (the package
/// lives in a directory of its name).
pub fn build_cdylib(package: &str) -> PathBuf {
    as_the_tests_build(&["--lib"])
        .into_iter()
        .filter(|(dir, _)| dir.file_name().is_some_and(|n| n == package))
        .flat_map(|(_, files)| files)
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .unwrap_or_else(|| panic!("building the workspace's libraries produced no .so of {package}"))
}

/// The executable `bin` of the workspace, built once per test process.
fn workspace_bin(bin: &str) -> PathBuf {
    as_the_tests_build(&["--bin", bin])
        .into_iter()
        .flat_map(|(_, files)| files)
        .find(|f| f.file_name().is_some_and(|n| n == bin))
        .unwrap_or_else(|| panic!("{bin} builds"))
}

/// Builds the example third-party plugin from its own crate, as
/// `docs/plugin-guide.md` tells a stranger to, and returns its `.so`.
pub fn build_example_plugin() -> PathBuf {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let dir = workspace_root().join("plugins/examples/nas-example-plugin");
        let mut build = cargo_command();
        build.args(["build", "--release", "--lib"]).current_dir(&dir);
        cargo_build(build)
            .into_iter()
            .flat_map(|(_, files)| files)
            .find(|f| f.ends_with("libnas_example_plugin.so"))
            .expect("the example plugin builds a .so")
    })
    .clone()
}

/// The `nas` binary, built once per test process (as the tests build it).
pub fn nas_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("nas")).clone()
}

/// Runs `nas` with `args` in `cwd`, with `NAS_HOME` pointing into it.
pub fn nas(cwd: &Path, args: &[&str]) -> Output {
    Command::new(nas_bin())
        .args(args)
        .current_dir(cwd)
        .env("NAS_HOME", cwd.join(".nas-home"))
        .output()
        .expect("nas runs")
}

/// Runs `nas` like [`nas`], with the evaluator's training worker and the
/// project's Python pointed at (`NAS_EVAL_WORKER`, `NAS_PYTHON`), for runs
/// and exports that use the real `eval.tch-one-epoch`.
pub fn nas_with_evaluator(cwd: &Path, args: &[&str]) -> Output {
    Command::new(nas_bin())
        .args(args)
        .current_dir(cwd)
        .env("NAS_HOME", cwd.join(".nas-home"))
        .env("NAS_EVAL_WORKER", eval_worker_bin())
        .env("NAS_PYTHON", venv_python())
        .output()
        .expect("nas runs")
}

/// A path as `&str`, for command lines.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Asserts a failed command exited 2 (not a signal) with a one-paragraph
/// `error:` message containing every needle.
pub fn assert_usage_error(out: &Output, needles: &[&str]) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one paragraph on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr should mention {n:?}:\n{stderr}");
    }
}

/// stdout and stderr of an output, for assertions and messages.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The evaluator's training worker `nas-eval-worker`, built once per test
/// process (the `nas` binary finds it through `NAS_EVAL_WORKER`).
pub fn eval_worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("nas-eval-worker")).clone()
}

/// The project's Python with torch (`NAS_PYTHON`, else `.venv/bin/python`
/// in the workspace root).
pub fn venv_python() -> PathBuf {
    std::env::var_os("NAS_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// Which role a chat request made by the search loop is for (`generator`,
/// `improver` or `memory`) and its attempt number (0 when the prompt names
/// none), read from the request's JSON body as the loopback server got it.
pub fn role_and_attempt(body: &serde_json::Value) -> (String, u64) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let system = messages.first().and_then(|m| m["content"].as_str()).unwrap_or("").to_string();
    let user = messages.last().and_then(|m| m["content"].as_str()).unwrap_or("").to_string();
    let number_after = |marker: &str| -> u64 {
        user.split(marker)
            .nth(1)
            .and_then(|rest| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    if system.contains("expert deep-learning engineer") {
        ("generator".into(), number_after("This is attempt"))
    } else if system.contains("reviewer") {
        ("improver".into(), number_after("Current design (attempt"))
    } else {
        ("memory".into(), 0)
    }
}

/// The run directories in `<dir>/runs` (hidden `.partial` ones left out),
/// sorted.
pub fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every committed iteration of a run, read from its store.
pub fn records(run_dir: &Path) -> Vec<nas_host::records::IterationRecord> {
    nas_host::store::Store::open(run_dir).expect("open store").iterations().expect("records")
}

/// `code` as an LLM answer: in a python fence.
pub fn fence(code: &str) -> String {
    format!("```python\n{code}```")
}

/// An Improver answer in the method's JSON shape, with a reason `r` and a
/// suggestion `s`.
pub const ADVICE: &str = "```json\n{\"reason\": \"r\", \"improvement_suggestions\": \"s\"}\n```";

/// A loopback chat server answering the generator and the improver from
/// their lists by attempt number (attempt `n` gets entry `(n - 1) % len`).
pub fn scripted(generator: Vec<String>, improver: Vec<String>) -> TestServer {
    let server = TestServer::start();
    server.set_responder(move |req: &RecordedRequest| {
        let (role, attempt) = role_and_attempt(&req.body);
        let list = if role == "generator" { &generator } else { &improver };
        let i = (attempt.max(1) as usize - 1) % list.len();
        Some(Step::reply(list[i].clone()))
    });
    server
}

/// The sections a scripted run shares: the instant-evaluator fixture loaded
/// (`[plugins]`), its tiny dataset (`[dataset]`) and `llm.openai` against
/// `server` without retries (`[generator]`, which also serves the
/// Improver), followed by `more` (the `[run]`, `[search]`, `[evaluator]`,
/// `[memory]` sections a test needs).
pub fn scripted_config(server: &TestServer, more: &str) -> String {
    let fixture = build_cdylib("nas-fixture-instant");
    format!(
        r#"
[plugins]
load = ["{fixture}"]

[dataset]
plugin = "data.tiny"

[generator]
plugin = "builtin:llm.openai"
[generator.settings]
base_url = "{url}"
model = "scripted"
max_retries = 0
{more}"#,
        fixture = fixture.display(),
        url = server.base_url(),
    )
}

/// Writes `dir/run.toml`, a scripted run (see [`scripted_config`]) named
/// `name` whose run directories go to `dir/runs`, with the `[search]` keys
/// `search` and the sections `more`; returns its path.
pub fn write_scripted_run(dir: &Path, server: &TestServer, name: &str, search: &str, more: &str) -> PathBuf {
    let cfg = dir.join("run.toml");
    let text = scripted_config(
        server,
        &format!("\n[run]\nname = \"{name}\"\noutput_dir = \"runs\"\n\n[search]\n{search}\n{more}"),
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}
