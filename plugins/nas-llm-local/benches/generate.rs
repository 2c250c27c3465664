//! Generation speed of `llm.local` on this machine, written to
//! `docs/results/llm-bench.md`.
//!
//! `cargo bench -p nas-llm-local --bench generate` (fetches the models into the default models
//! directory, or `NAS_TEST_MODELS_DIR`, when absent). The figure of interest
//! is generated tokens per second for the default 1.5B model on an idle
//! machine; the load average at the time is recorded next to it.
//! `NAS_BENCH_THREADS` fixes the thread count (default: the free cores).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use nas_llm_local::{
    default_models_dir, fetch_model, find_model, free_cores, FetchOptions, LocalBackend, LocalSettings,
};
use nas_plugin_api::{ChatMessage, ChatRequest, LlmBackend, PluginError};

const PROMPT: &str = "Write a PyTorch image classifier `class Net(nn.Module)` for 1x28x28 inputs and 10 classes, \
with `__init__(self, in_shape, num_classes)`. Answer with the code only, in one python block.";

struct Row {
    model: String,
    threads: usize,
    prompt_tokens: u64,
    prompt_tps: f64,
    generated: u64,
    gen_tps: f64,
    load_s: f64,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn measure(
    name: &str,
    dir: &std::path::Path,
    runs: usize,
    max_tokens: u32,
    threads: usize,
) -> Result<Row, PluginError> {
    let path = fetch_model(name, dir, &FetchOptions { verbose: true, ..FetchOptions::default() })?;
    let settings: LocalSettings =
        PluginError::parse_config("llm.local", &serde_json::json!({"context_tokens": 2048, "prompt_cache": 0}))?;
    let t = Instant::now();
    let mut b = LocalBackend::load(&path, settings, Some(threads))?;
    let load_s = t.elapsed().as_secs_f64();
    let req = |max: u32, seed: u64| ChatRequest {
        messages: vec![ChatMessage::user(PROMPT)],
        max_tokens: Some(max),
        seed: Some(seed),
        ..ChatRequest::default()
    };
    b.complete(&req(8, 1))?; // warm-up
    let mut best_prompt = f64::MAX;
    let mut prompt_tokens = 0;
    for _ in 0..runs {
        let r = b.complete(&req(1, 43))?;
        best_prompt = best_prompt.min(r.latency_ms as f64 / 1000.0);
        prompt_tokens = r.usage.prompt_tokens;
    }
    let (mut gen_tokens, mut gen_s) = (0u64, 0f64);
    for i in 0..runs {
        let r = b.complete(&req(max_tokens, 43 + i as u64))?;
        let secs = (r.latency_ms as f64 / 1000.0 - best_prompt).max(1e-3);
        gen_tokens += r.usage.completion_tokens.saturating_sub(1);
        gen_s += secs;
    }
    Ok(Row {
        model: find_model(name)
            .map(|m| m.description.split(':').next().unwrap_or(name).to_string())
            .unwrap_or_default(),
        threads,
        prompt_tokens,
        prompt_tps: prompt_tokens as f64 / best_prompt,
        generated: gen_tokens,
        gen_tps: gen_tokens as f64 / gen_s,
        load_s,
    })
}

/// The search's calls in the shape they have: a role's system prompt, a
/// design with its result and the memory window, the same conversation asked
/// again after a refused answer, and the next iteration's request.
fn search_calls() -> [Vec<ChatMessage>; 3] {
    let design = include_str!("../../../docs/results/embedded-run/run-28/best.py");
    let system = ChatMessage::system(
        "You are the Prompt Improver of a neural architecture search. You read a PyTorch image classifier, \
         the result of training it for one epoch on Fashion-MNIST (1x28x28 images, 10 classes) and the \
         memory of recent attempts (problem, suggestion, outcome), and you diagnose the design: the main \
         problem with it, a known architecture or technique to borrow from, and exactly one concrete \
         change for the next attempt, naming the layer and the new value. Do not change the training \
         (one epoch of SGD, learning rate 0.01, batch 128): only the network can change. Answer with \
         one JSON object with the keys reason, inspiration and improvement_suggestions.",
    );
    // The window moves on by one entry each iteration.
    let memory = |attempt: u32| -> String {
        (attempt - 5..attempt)
        .map(|i| {
            format!(
                "Attempt {i}: problem: the head has too few features for ten classes after pooling {i} times; \
                 suggestion: double the out_channels of conv{i} and the in_features of fc1; outcome: accuracy 8{i}.{i}0%\n"
            )
        })
        .collect()
    };
    let ask = |attempt: u32| {
        ChatMessage::user(format!(
            "Memory of recent attempts:\n{}\nCurrent design (attempt {attempt}), accuracy 89.{attempt}0% after one epoch, \
             0.42 M parameters, 8 MFLOPs per image:\n```python\n{design}\n```\nDiagnose it.",
            memory(attempt)
        ))
    };
    let first = vec![system.clone(), ask(6)];
    let mut again = first.clone();
    again.push(ChatMessage::assistant(
        "```json\n{\"reason\": \"The network pools once.\", \"inspiration\": \"VGG\", \"improvement_suggestions\": \"Double the out_channels of conv3.\"}\n```",
    ));
    again.push(ChatMessage::user(
        "That answer repeats the change of attempt 5, already tried on this best design. Give another diagnosis, \
         with one concrete change that was not tried.",
    ));
    [first, again, vec![system, ask(7)]]
}

/// Seconds of each of [`search_calls`] (64 new tokens, greedy) with
/// `prompt_cache` 0 and 2, taken in turns, best of `runs`; and the prompt
/// tokens of each call and those the kept contexts had read.
fn cache_rows(name: &str, dir: &std::path::Path, runs: usize, threads: usize) -> Result<Vec<String>, PluginError> {
    let path = fetch_model(name, dir, &FetchOptions::default())?;
    let load = |cache: usize| -> Result<LocalBackend, PluginError> {
        let settings: LocalSettings = PluginError::parse_config(
            "llm.local",
            &serde_json::json!({"context_tokens": 4096, "prompt_cache": cache}),
        )?;
        LocalBackend::load(&path, settings, Some(threads))
    };
    let calls = search_calls();
    let mut best = [[f64::MAX; 3]; 2];
    let (mut tokens, mut reused) = ([0u64; 3], [0usize; 3]);
    for _ in 0..runs {
        for (k, cache) in [0usize, 2].into_iter().enumerate() {
            let mut b = load(cache)?;
            for (i, messages) in calls.iter().enumerate() {
                let r = b.complete(&ChatRequest {
                    messages: messages.clone(),
                    max_tokens: Some(64),
                    temperature: Some(0.0),
                    ..ChatRequest::default()
                })?;
                best[k][i] = best[k][i].min(r.latency_ms as f64 / 1000.0);
                tokens[i] = r.usage.prompt_tokens;
                if cache > 0 {
                    reused[i] = b.last_reused_tokens();
                }
            }
        }
    }
    let what = ["first request", "asked again (answer + note added)", "next iteration (same system prompt)"];
    Ok((0..3)
        .map(|i| {
            format!(
                "| {name} | {} | {} | {} | {:.1} | {:.1} | **{:.2}** |",
                what[i],
                tokens[i],
                reused[i],
                best[0][i],
                best[1][i],
                best[1][i] / best[0][i]
            )
        })
        .collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(default_models_dir);
    let before = loadavg();
    let mut rows = Vec::new();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let fixed: Option<usize> = std::env::var("NAS_BENCH_THREADS").ok().and_then(|t| t.parse().ok());
    let free = fixed.unwrap_or_else(free_cores);
    // The default model with the automatic thread count, and with every core
    // when that differs (it shows what a busy machine does to generation).
    let mut plan = vec![("qwen2.5-coder-1.5b", free)];
    if fixed.is_none() && free != cores {
        plan.push(("qwen2.5-coder-1.5b", cores));
    }
    plan.push(("qwen2.5-coder-0.5b", free));
    for (name, threads) in plan {
        eprintln!("measuring {name} with {threads} threads ...");
        let row = measure(name, &dir, 3, 256, threads)?;
        eprintln!("{name}: {:.1} generated tokens/s, {:.1} prompt tokens/s", row.gen_tps, row.prompt_tps);
        rows.push(row);
    }
    eprintln!("measuring the prompt cache ...");
    let mut cache = cache_rows("qwen2.5-coder-1.5b", &dir, 2, free)?;
    cache.extend(cache_rows("qwen2.5-coder-0.5b", &dir, 2, free)?);
    let after = loadavg();
    let mut md = String::new();
    writeln!(md, "# llm.local generation speed\n")?;
    writeln!(
        md,
        "Written by `cargo bench -p nas-llm-local --bench generate` (plugins/nas-llm-local/benches/generate.rs). llama.cpp in-process \
         through llama-cpp-2, built with `-march=x86-64-v3`; prompt: write `class Net` for 1x28x28 / 10 classes \
         (chat template of the GGUF); temperature 0.7, top_p 0.9, up to 256 new tokens, 3 runs each. \
         Generation rate = (tokens − 1) / (call time − prompt time).\n"
    )?;
    writeln!(
        md,
        "Machine: {} ({} cores). Load average (1/5/15 min) before: {before}; after: {after}. Other builds and tests shared the machine unless the load says otherwise.\n",
        cpu(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )?;
    writeln!(
        md,
        "| model | threads | load s | prompt tokens | prompt tokens/s | generated tokens | generated tokens/s |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {:.1} | {} | {:.0} | {} | **{:.1}** |",
            r.model, r.threads, r.load_s, r.prompt_tokens, r.prompt_tps, r.generated, r.gen_tps
        )?;
    }
    writeln!(md, "\nTarget: at least 18 generated tokens/s for the 1.5B model on an idle 2-core machine.")?;
    writeln!(md, "\n## Prompt cache\n")?;
    writeln!(
        md,
        "The search's calls in their shape (an Improver system prompt, a design with its result and a 5-entry \
         memory, the same conversation asked again after a refused answer, the next iteration's request), \
         64 new tokens each, greedy, on a backend with `prompt_cache = 0` (a fresh context every call) and one \
         with `prompt_cache = 2`, loaded in turns; best of 2. The rows above are measured with `prompt_cache = 0`.\n"
    )?;
    writeln!(md, "| model | call | prompt tokens | read before | s, fresh context | s, kept contexts | ratio |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for row in &cache {
        writeln!(md, "{row}")?;
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/llm-bench.md");
    std::fs::write(&out, md)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
