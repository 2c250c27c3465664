//! Generation speed of `llm.local` beside a job started with `nice`, written
//! to `docs/results/llm-niced-bench.md`.
//!
//! `cargo bench -p nas-llm-local --bench niced` (fetches the default model
//! into the default models directory, or `NAS_TEST_MODELS_DIR`, when absent).
//!
//! By default `llm.local` generates with the cores that are free at each call
//! ([`free_cores`]). A thread 10 or more nice levels below ours does not count
//! as busy; this measures whether that holds on the machine: generated tokens
//! per second of the 1.5B model with 2 threads and with 1, idle and beside
//! background load (as many processes as cores, each spinning on the CPU or
//! streaming memory, at nice 19 in our session, or spinning at nice 19 each
//! in a session of its own; and one spinner at our own priority, the load the
//! count is there for). The conditions are taken in turns, `ROUNDS`
//! times, and each figure is the mean; what `free_cores` answers under each
//! load is recorded next to it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nas_llm_local::{default_models_dir, fetch_model, free_cores, FetchOptions, LocalBackend, LocalSettings};
use nas_plugin_api::{ChatMessage, ChatRequest, LlmBackend, PluginError};

const MODEL: &str = "qwen2.5-coder-1.5b";
const PROMPT: &str = "Write a PyTorch image classifier `class Net(nn.Module)` for 1x28x28 inputs and 10 classes, \
with `__init__(self, in_shape, num_classes)`. Answer with the code only, in one python block.";
const ROUNDS: usize = 1;
const NEW_TOKENS: u32 = 96;

/// Background processes, killed when dropped.
struct Load(Vec<Child>);

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Idle,
    /// A shell loop per core at nice 19: CPU only.
    NicedSpin,
    /// A Python loop per core at nice 19 copying a 256 MB buffer: the
    /// memory bandwidth a build or a data job takes.
    NicedStream,
    /// A shell loop per core at nice 19, each in a session of its own
    /// (`setsid`): with autogroups on, a group the kernel weighs against
    /// ours as an equal, whatever its nice.
    NicedSpinOtherSession,
    /// One shell loop at our own priority.
    Spin,
}

impl Kind {
    fn describe(self, cores: usize) -> String {
        match self {
            Kind::Idle => "idle".into(),
            Kind::NicedSpin => format!("{cores} CPU spinners at nice 19"),
            Kind::NicedStream => format!("{cores} memory streamers (256 MB copies) at nice 19"),
            Kind::NicedSpinOtherSession => format!("{cores} CPU spinners at nice 19, each in a session of its own"),
            Kind::Spin => "1 CPU spinner at our priority".into(),
        }
    }

    fn start(self, cores: usize) -> Load {
        let spawn = |nice: &str, program: &str, script: &str| {
            Command::new("nice").args(["-n", nice, program, "-c", script]).spawn().expect("nice runs")
        };
        let python = std::env::var("NAS_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let children = match self {
            Kind::Idle => Vec::new(),
            Kind::NicedSpin => (0..cores).map(|_| spawn("19", "sh", "while :; do :; done")).collect(),
            Kind::NicedStream => (0..cores)
                .map(|_| spawn("19", &python, "b = bytearray(256 << 20)\nwhile True:\n    c = bytes(b)"))
                .collect(),
            Kind::NicedSpinOtherSession => (0..cores)
                .map(|_| {
                    Command::new("setsid")
                        .args(["nice", "-n", "19", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("setsid runs")
                })
                .collect(),
            Kind::Spin => vec![spawn("0", "sh", "while :; do :; done")],
        };
        // Until the loops run (Python allocates its buffer first).
        std::thread::sleep(Duration::from_millis(if children.is_empty() { 0 } else { 1500 }));
        Load(children)
    }
}

/// Generated tokens per second of one call (the prompt's time, measured
/// before, taken off).
fn rate(b: &mut LocalBackend, prompt_s: f64, seed: u64) -> Result<f64, PluginError> {
    let r = b.complete(&request(NEW_TOKENS, seed))?;
    let secs = (r.latency_ms as f64 / 1000.0 - prompt_s).max(1e-3);
    Ok(r.usage.completion_tokens.saturating_sub(1) as f64 / secs)
}

fn request(max_tokens: u32, seed: u64) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user(PROMPT)],
        max_tokens: Some(max_tokens),
        seed: Some(seed),
        temperature: Some(0.0),
        ..ChatRequest::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(default_models_dir);
    let path = fetch_model(MODEL, &dir, &FetchOptions { verbose: true, ..FetchOptions::default() })?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let counts: Vec<usize> = if cores > 1 { vec![cores, 1] } else { vec![1] };
    let settings: LocalSettings =
        PluginError::parse_config("llm.local", &serde_json::json!({"context_tokens": 2048, "prompt_cache": 0}))?;
    let mut backends = Vec::new();
    for &t in &counts {
        let mut b = LocalBackend::load(&path, settings.clone(), Some(t))?;
        b.complete(&request(8, 1))?; // warm-up
                                     // The prompt's time on an idle machine, best of 2.
        let mut prompt_s = f64::MAX;
        for _ in 0..2 {
            prompt_s = prompt_s.min(b.complete(&request(1, 43))?.latency_ms as f64 / 1000.0);
        }
        backends.push((t, b, prompt_s));
    }
    let kinds = [Kind::Idle, Kind::NicedSpin, Kind::NicedStream, Kind::NicedSpinOtherSession, Kind::Spin];
    // rates[kind][thread count] over the rounds; what free_cores said.
    let mut rates = vec![vec![Vec::new(); counts.len()]; kinds.len()];
    let mut chosen = vec![Vec::new(); kinds.len()];
    let started = Instant::now();
    for round in 0..ROUNDS {
        for (k, kind) in kinds.iter().enumerate() {
            let _load = kind.start(cores);
            chosen[k].push(free_cores());
            for (i, (t, b, prompt_s)) in backends.iter_mut().enumerate() {
                let r = rate(b, *prompt_s, 43 + round as u64)?;
                eprintln!("round {round}, {}, {t} threads: {r:.1} tokens/s", kind.describe(cores));
                rates[k][i].push(r);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut md = String::new();
    writeln!(md, "# llm.local beside a niced job\n")?;
    writeln!(
        md,
        "Written by `cargo bench -p nas-llm-local --bench niced` (plugins/nas-llm-local/benches/niced.rs), {:.0} s. \
         Qwen2.5-Coder-1.5B-Instruct Q4_K_M through llama.cpp; {NEW_TOKENS} new tokens, greedy, from the same \
         prompt; generated tokens/s = (tokens − 1) / (call time − prompt time on an idle machine). The loads are \
         taken in turns, {ROUNDS} round(s); each figure is the mean. `free_cores` is the thread count `llm.local` \
         chooses by default under that load (each round's answer).\n",
        started.elapsed().as_secs_f64()
    )?;
    let autogroups = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").unwrap_or_default();
    writeln!(md, "Machine: {cores} cores; kernel.sched_autogroup_enabled = {}.\n", autogroups.trim())?;
    write!(md, "| load | free_cores |")?;
    for t in &counts {
        write!(md, " {t} thread{}, tokens/s |", if *t == 1 { "" } else { "s" })?;
    }
    writeln!(md)?;
    writeln!(md, "|---|---|{}", "---|".repeat(counts.len()))?;
    for (k, kind) in kinds.iter().enumerate() {
        let said: Vec<String> = chosen[k].iter().map(|c| c.to_string()).collect();
        write!(md, "| {} | {} |", kind.describe(cores), said.join(", "))?;
        for rate in rates[k].iter().take(counts.len()) {
            write!(md, " {:.1} |", mean(rate))?;
        }
        writeln!(md)?;
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/llm-niced-bench.md");
    std::fs::write(&out, md)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
