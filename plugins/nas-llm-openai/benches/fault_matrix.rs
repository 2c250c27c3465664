//! Injects every kind of server fault, many times each, into the real
//! client through the loopback server, and writes how each call ended and
//! how long it took, as a Markdown table, to `docs/results/fault-matrix.md`
//! (and prints it).
//!
//! ```sh
//! cargo bench -p nas-llm-openai --bench fault_matrix [-- REPEATS]
//! ```
//!
//! Client settings for every call: `max_retries` 3, `retry_base_ms` 20,
//! `read_timeout_s` 1, `total_timeout_s` 3, `max_retry_wait_s` 5 (and
//! `max_response_bytes` 1 MiB where stated).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use nas_llm_openai::{Family, OpenAiBackend};
use nas_llm_test_server::{refused_base_url, Step, TestServer};
use nas_plugin_api::{ChatMessage, ChatRequest, HostContext, LlmBackend};
use serde_json::{json, Value};

struct Fault {
    name: &'static str,
    /// The steps one call meets, in order.
    steps: fn() -> Vec<Step>,
    /// Extra client settings.
    settings: Value,
    /// Served models, when the server checks them.
    models: Option<&'static [&'static str]>,
    /// Point the client at a port where nothing listens.
    refused: bool,
}

fn status(code: u16) -> Step {
    Step::status(code, "injected")
}

fn faults() -> Vec<Fault> {
    let f = |name, steps: fn() -> Vec<Step>| Fault { name, steps, settings: json!({}), models: None, refused: false };
    vec![
        Fault { refused: true, ..f("connection refused", Vec::new) },
        f("reset mid-body, then an answer", || vec![Step::Reset { after_bytes: 40 }, Step::reply("ok")]),
        f("reset mid-body, every attempt", || (0..4).map(|_| Step::Reset { after_bytes: 40 }).collect()),
        f("hang-up before the answer, then an answer", || vec![Step::Hangup, Step::reply("ok")]),
        f("body dripped 1 byte / 50 ms (never finishes)", || {
            vec![Step::Drip { content: "x".repeat(400), interval_ms: 50 }]
        }),
        f("headers after 2 s (answer too late)", || vec![Step::delayed(2_000, Step::reply("late"))]),
        f("429 Retry-After 0.2 s, then an answer", || vec![Step::rate_limited(0.2), Step::reply("ok")]),
        f("429 Retry-After 3600 s (over the 5 s cap)", || vec![Step::rate_limited(3600.0)]),
        f("429 without Retry-After, then an answer", || {
            vec![Step::rate_limited_without_retry_after(), Step::reply("ok")]
        }),
        f("429 without Retry-After, every attempt", || {
            (0..4).map(|_| Step::rate_limited_without_retry_after()).collect()
        }),
        f("5xx burst 500/502/503, then an answer", || vec![status(500), status(502), status(503), Step::reply("ok")]),
        f("5xx burst longer than the retries (6 × 503)", || (0..6).map(|_| status(503)).collect()),
        f("malformed JSON", || vec![Step::Malformed]),
        f("empty `choices`", || vec![Step::EmptyChoices]),
        f("body cut short (Content-Length), then an answer", || vec![Step::CutShort, Step::reply("ok")]),
        f("chunked stream cut halfway, then an answer", || {
            vec![Step::Chunked { content: "y".repeat(100_000), complete: false }, Step::reply("ok")]
        }),
        f("3 MiB answer (under the default 4 MiB cap)", || vec![Step::reply("z".repeat(3 << 20))]),
        Fault {
            settings: json!({"max_response_bytes": 1 << 20}),
            ..f("6 MiB answer, Content-Length (cap 1 MiB)", || vec![Step::reply("z".repeat(6 << 20))])
        },
        Fault {
            settings: json!({"max_response_bytes": 1 << 20}),
            ..f("6 MiB answer, chunked (cap 1 MiB)", || {
                vec![Step::Chunked { content: "z".repeat(6 << 20), complete: true }]
            })
        },
        Fault {
            settings: json!({"model": "gpt-9"}),
            models: Some(&["test-model"]),
            ..f("wrong model name (vLLM's 404)", Vec::new)
        },
        Fault {
            settings: json!({"model": "gpt-9"}),
            ..f("wrong model name (DeepSeek's 400)", || vec![Step::status(400, "Model Not Exist")])
        },
    ]
}

fn main() {
    // `cargo bench` appends `--bench` to the arguments.
    let given: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let repeats: usize = given.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let command = if given.is_empty() {
        "cargo bench -p nas-llm-openai --bench fault_matrix".to_string()
    } else {
        format!("cargo bench -p nas-llm-openai --bench fault_matrix -- {}", given.join(" "))
    };
    let mut md = String::new();
    let _ = write!(
        md,
        "# OpenAI-compatible client: fault matrix\n\n\
         Every kind of server fault, {repeats} calls each, injected into the real client of `nas-llm-openai` \
         through the loopback server of `tests/fixtures/nas-llm-test-server`. Written by `{command}` \
         (plugins/nas-llm-openai/benches/fault_matrix.rs).\n\n\
         Client settings for every call: `max_retries` 3, `retry_base_ms` 20, `read_timeout_s` 1, \
         `total_timeout_s` 3, `max_retry_wait_s` 5 (and `max_response_bytes` 1 MiB where stated). \
         Machine: {} CPU threads visible, possibly shared with other work.\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let request = ChatRequest { messages: vec![ChatMessage::user("write Net")], ..ChatRequest::default() };
    md.push_str("| fault | calls | how each call ended | attempts | seconds (min / median / max) |\n");
    md.push_str("|---|---|---|---|---|\n");
    let mut messages: Vec<(&str, String)> = Vec::new();
    let mut total = 0;
    let mut longest: f64 = 0.0;
    for fault in faults() {
        let mut endings: BTreeMap<String, usize> = BTreeMap::new();
        let mut attempts: BTreeMap<usize, usize> = BTreeMap::new();
        let mut secs: Vec<f64> = Vec::new();
        for _ in 0..repeats {
            let server = TestServer::start();
            if let Some(models) = fault.models {
                server.serve_models(models.iter().copied());
            }
            server.push_all((fault.steps)());
            let base_url = if fault.refused { refused_base_url() } else { server.base_url() };
            let mut cfg = json!({
                "base_url": base_url, "model": "test-model", "max_retries": 3, "retry_base_ms": 20,
                "read_timeout_s": 1, "total_timeout_s": 3, "max_retry_wait_s": 5,
            });
            for (k, v) in fault.settings.as_object().cloned().unwrap_or_default() {
                cfg[k] = v;
            }
            let mut backend =
                OpenAiBackend::new(Family::Generic, &cfg, &HostContext::default()).expect("valid settings");
            let started = Instant::now();
            let result = backend.complete(&request);
            secs.push(started.elapsed().as_secs_f64());
            let seen = if fault.refused { 0 } else { server.requests().len() };
            let ending = match result {
                Ok(r) => {
                    *attempts.entry(r.attempts as usize).or_default() += 1;
                    "answer".to_string()
                }
                Err(e) => {
                    if !messages.iter().any(|(name, _)| *name == fault.name) {
                        let port = base_url.trim_start_matches("http://127.0.0.1:");
                        let port = port.split('/').next().unwrap_or_default();
                        messages.push((fault.name, e.to_string().replace(port, "PORT")));
                    }
                    // Nothing listens on a refused port: the client's count.
                    let tried = e
                        .message
                        .split("after ")
                        .nth(1)
                        .and_then(|t| t.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    *attempts.entry(if fault.refused { tried } else { seen }).or_default() += 1;
                    format!("`{}`", e.code.as_str())
                }
            };
            *endings.entry(ending).or_default() += 1;
            total += 1;
        }
        secs.sort_by(f64::total_cmp);
        longest = longest.max(secs[secs.len() - 1]);
        let join = |m: &BTreeMap<String, usize>| m.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>();
        let tries: Vec<String> = attempts.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(
            md,
            "| {} | {repeats} | {} | {} | {:.2} / {:.2} / {:.2} |",
            fault.name,
            join(&endings).join(", "),
            tries.join(", "),
            secs[0],
            secs[secs.len() / 2],
            secs[secs.len() - 1],
        );
    }
    md.push_str("\nWhat the first failing call of each kind said:\n\n");
    for (name, message) in &messages {
        let _ = writeln!(md, "- {name}: `{}`", message.replace('`', "'"));
    }
    let _ = writeln!(md, "\n{total} calls; the longest took {longest:.2} s (`total_timeout_s` = 3 s).");
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/fault-matrix.md");
    if let Err(e) = std::fs::write(&out, &md) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    if longest > 3.5 {
        eprintln!("a call ran past its total timeout");
        std::process::exit(1);
    }
}
