//! The conformance kit: one set of role-level checks that every plugin of a
//! role must pass, whichever door it came through (built-in, native `.so`,
//! WebAssembly component).
//!
//! Each check function takes a live instance (`&mut dyn MemoryStrategy`,
//! `&mut dyn LlmBackend`) and returns a [`Report`] saying which checks
//! passed. LLM backends are checked against a [`ChatServer`]: a real
//! chat-completions HTTP server on loopback that this module starts.
//!
//! ```
//! use nas_plugin_api::conformance::check_memory;
//! use nas_plugin_api::*;
//!
//! struct Last;
//! impl MemoryStrategy for Last {
//!     fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
//!         let entries = input.entries.last().cloned().into_iter().collect();
//!         Ok(MemorySelection { entries, ..Default::default() })
//!     }
//! }
//! let report = check_memory(&mut Last);
//! assert!(report.all_passed(), "{report}");
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::{ChatMessage, ChatRequest, ErrorCode, LlmBackend, MemoryEntry, MemoryInput, MemoryStrategy};

/// One check and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// A short snake_case name, stable across versions.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen when it failed (empty when it passed).
    pub detail: String,
}

/// The checks run against one plugin instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    fn record(&mut self, name: &'static str, result: Result<(), String>) {
        let (passed, detail) = match result {
            Ok(()) => (true, String::new()),
            Err(d) => (false, d),
        };
        self.checks.push(Check { name, passed, detail });
    }

    /// True when every check passed.
    pub fn all_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.passed).map(|c| c.name).collect()
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            if c.passed {
                writeln!(f, "  ok    {}", c.name)?;
            } else {
                writeln!(f, "  FAIL  {}: {}", c.name, c.detail)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Memory strategies.

/// A realistic history of `n` entries: closed ones with accuracies and
/// failures, non-ASCII text, and the last one open.
pub fn sample_history(n: usize) -> Vec<MemoryEntry> {
    (0..n)
        .map(|i| {
            let i64_ = i as u64;
            let failed = i % 4 == 3;
            let accuracy = (!failed).then(|| 0.40 + (i as f64 * 0.037) % 0.5);
            MemoryEntry {
                iteration: i64_ + 1,
                problem: format!("iteration {i}: the network underfits — loss plateaus at 1.{i:02} (µ, 深度)"),
                suggestion: format!(
                    "add a residual block with {} channels and BatchNorm; keep dropout at 0.{}",
                    32 << (i % 3),
                    i % 5
                ),
                outcome: if i + 1 == n {
                    None
                } else if failed {
                    Some(format!("error: RuntimeError: shape mismatch at layer {i}"))
                } else {
                    Some(format!("accuracy: {:.2}%", accuracy.unwrap_or(0.0) * 100.0))
                },
                accuracy: if i + 1 == n { None } else { accuracy },
                failure_kind: (failed && i + 1 != n).then(|| "shape".to_string()),
                best_before: (i > 0).then_some(0.40 + (i as f64 * 0.01)),
            }
        })
        .collect()
}

/// Entries are the same, with floats equal to within 1e-12 (serde_json's
/// default float parsing, on the JSON path of the native door, may be off by
/// one unit in the last place).
fn same_entry(a: &MemoryEntry, b: &MemoryEntry) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12,
        (None, None) => true,
        _ => false,
    };
    a.iteration == b.iteration
        && a.problem == b.problem
        && a.suggestion == b.suggestion
        && a.outcome == b.outcome
        && a.failure_kind == b.failure_kind
        && close(a.accuracy, b.accuracy)
        && close(a.best_before, b.best_before)
}

fn select(s: &mut dyn MemoryStrategy, input: &MemoryInput) -> Result<crate::MemorySelection, String> {
    s.select(input).map_err(|e| format!("select failed: {e}"))
}

/// Selects, answering any LLM task the strategy asks for with a fixed reply
/// (at most three rounds).
fn select_answering(s: &mut dyn MemoryStrategy, input: &MemoryInput) -> Result<crate::MemorySelection, String> {
    let mut input = input.clone();
    for _ in 0..3 {
        let out = select(s, &input)?;
        if out.llm_task.is_none() {
            return Ok(out);
        }
        input.llm_reply = Some("Summary: residual blocks helped; shape errors came from flattening.".into());
        input.state = out.state.clone();
    }
    Err("still asks for an LLM task after three answered rounds".into())
}

/// Runs the memory-strategy checks against `strategy`.
///
/// Checks: `empty_history`, `only_given_entries`, `no_duplicates`,
/// `text_round_trips`, `accepts_open_entry`, `deterministic`,
/// `state_round_trips`, `llm_task_answered`, `many_calls`.
pub fn check_memory(strategy: &mut dyn MemoryStrategy) -> Report {
    let mut r = Report::default();
    let history = sample_history(50);
    let input = MemoryInput { entries: history.clone(), iteration: 51, state: None, llm_reply: None };

    r.record(
        "empty_history",
        select_answering(strategy, &MemoryInput::default()).and_then(|o| {
            if o.entries.is_empty() {
                Ok(())
            } else {
                Err(format!("{} entries selected from an empty history", o.entries.len()))
            }
        }),
    );

    let first = select_answering(strategy, &input);
    r.record(
        "only_given_entries",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            match o.entries.iter().find(|e| !history.iter().any(|h| h.iteration == e.iteration)) {
                Some(e) => Err(format!("selected entry of iteration {} is not in the history", e.iteration)),
                None if o.entries.len() > history.len() => Err("more entries than the history has".into()),
                None => Ok(()),
            }
        }),
    );
    r.record(
        "no_duplicates",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            let mut seen: Vec<u64> = o.entries.iter().map(|e| e.iteration).collect();
            seen.sort_unstable();
            let before = seen.len();
            seen.dedup();
            if seen.len() == before {
                Ok(())
            } else {
                Err("an entry was selected twice".into())
            }
        }),
    );
    r.record(
        "text_round_trips",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            for e in &o.entries {
                if let Some(h) = history.iter().find(|h| h.iteration == e.iteration) {
                    if !same_entry(h, e) {
                        return Err(format!("entry of iteration {} changed on the way: {e:?} vs {h:?}", e.iteration));
                    }
                }
            }
            Ok(())
        }),
    );
    r.record(
        "accepts_open_entry",
        first.as_ref().map_err(Clone::clone).map(|_| ()).and_then(|_| {
            if history.last().is_some_and(|e| e.outcome.is_none()) {
                Ok(())
            } else {
                Err("the sample history should end open".into())
            }
        }),
    );
    r.record(
        "deterministic",
        first.as_ref().map_err(Clone::clone).and_then(|a| {
            let b = select_answering(strategy, &input)?;
            if a.entries.len() == b.entries.len()
                && a.entries.iter().zip(&b.entries).all(|(x, y)| same_entry(x, y))
                && a.summary == b.summary
            {
                Ok(())
            } else {
                Err("the same input gave a different selection".into())
            }
        }),
    );
    r.record(
        "state_round_trips",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            let next =
                MemoryInput { entries: sample_history(51), iteration: 52, state: o.state.clone(), llm_reply: None };
            select_answering(strategy, &next).map(|_| ())
        }),
    );
    r.record(
        "llm_task_answered",
        (|| {
            let out = select(strategy, &input)?;
            match out.llm_task {
                None => Ok(()),
                Some(task) if task.is_empty() => Err("asked for an LLM task with no messages".into()),
                Some(_) => select_answering(strategy, &input).map(|_| ()),
            }
        })(),
    );
    r.record(
        "many_calls",
        (|| {
            for n in 0..60 {
                let inp =
                    MemoryInput { entries: sample_history(n), iteration: n as u64 + 1, state: None, llm_reply: None };
                select_answering(strategy, &inp).map_err(|e| format!("history of {n}: {e}"))?;
            }
            Ok(())
        })(),
    );
    r
}

/// Checks that two strategies choose the same on histories of every length
/// from 0 to `max_len` (e.g. a native and a wasm build of one strategy).
pub fn check_memory_equivalent(a: &mut dyn MemoryStrategy, b: &mut dyn MemoryStrategy, max_len: usize) -> Report {
    let mut r = Report::default();
    r.record(
        "same_selection",
        (|| {
            for n in 0..=max_len {
                let input =
                    MemoryInput { entries: sample_history(n), iteration: n as u64 + 1, state: None, llm_reply: None };
                let x = select_answering(a, &input)?;
                let y = select_answering(b, &input)?;
                if x.summary != y.summary {
                    return Err(format!("history of {n}: summary {:?} vs {:?}", x.summary, y.summary));
                }
                if x.entries.len() != y.entries.len() {
                    return Err(format!(
                        "history of {n}: {:?} vs {:?}",
                        x.entries.iter().map(|e| e.iteration).collect::<Vec<_>>(),
                        y.entries.iter().map(|e| e.iteration).collect::<Vec<_>>()
                    ));
                }
                if let Some((a, b)) = x.entries.iter().zip(&y.entries).find(|(a, b)| !same_entry(a, b)) {
                    return Err(format!("history of {n}: entry {a:?} vs {b:?}"));
                }
            }
            Ok(())
        })(),
    );
    r
}

// ---------------------------------------------------------------------------
// LLM backends.

/// What the [`ChatServer`] saw of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// The request path.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// A real chat-completions server on loopback for the LLM checks.
///
/// It answers `POST .../chat/completions` with `echo: <last user message>`,
/// model `conformance-model`, usage 11 prompt / 7 completion tokens. A last
/// user message of `status:NNN` makes it answer that HTTP status instead.
/// It runs until dropped.
pub struct ChatServer {
    base_url: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    reply: Arc<Mutex<Option<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl ChatServer {
    /// Starts a server on `127.0.0.1` at a free port.
    pub fn start() -> std::io::Result<ChatServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reply: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (seen2, stop2, reply2) = (seen.clone(), stop.clone(), reply.clone());
        std::thread::Builder::new().name("nas-conformance-chat".into()).spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    let (seen, reply) = (seen2.clone(), reply2.clone());
                    std::thread::spawn(move || {
                        let _ = serve(s, &seen, &reply);
                    });
                }
            }
        })?;
        Ok(ChatServer { base_url: format!("http://{addr}/v1"), seen, reply, stop, addr })
    }

    /// `http://127.0.0.1:PORT/v1`: give this to the backend as its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers every later request with `content` instead of the echo
    /// (`status:NNN` messages still get their status).
    pub fn reply_with(&self, content: impl Into<String>) {
        if let Ok(mut r) = self.reply.lock() {
            *r = Some(content.into());
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<SeenRequest>>, reply: &Mutex<Option<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            } else if k == "authorization" {
                authorization = Some(v);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    if let Ok(mut s) = seen.lock() {
        s.push(SeenRequest { path: path.clone(), authorization, body });
    }
    let (status, reply) = if !path.ends_with("/chat/completions") {
        (404, json!({"error": {"message": format!("no route {path}")}}))
    } else if let Some(code) = last_user.strip_prefix("status:").and_then(|c| c.trim().parse::<u16>().ok()) {
        (code, json!({"error": {"message": format!("conformance server answers {code}")}}))
    } else {
        let content = reply.lock().ok().and_then(|r| r.clone()).unwrap_or_else(|| format!("echo: {last_user}"));
        (
            200,
            json!({
                "id": "chatcmpl-conformance",
                "object": "chat.completion",
                "model": "conformance-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            }),
        )
    };
    let text = reply.to_string();
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

/// Runs the LLM-backend checks against `backend`, which must be configured
/// to talk to `server` (its base URL) with no retries on client errors.
/// `expected_authorization` is the `Authorization` header the server must see
/// (`Bearer <key>`), or `None` to skip that check.
///
/// Checks: `round_trip`, `usage_reported`, `model_reported`,
/// `sampling_forwarded`, `text_round_trips`, `unauthorized_is_an_error`,
/// `server_error_is_an_error`, `usable_after_error`, `authorization_sent`.
pub fn check_llm(backend: &mut dyn LlmBackend, server: &ChatServer, expected_authorization: Option<&str>) -> Report {
    let mut r = Report::default();
    let ask = |content: &str| ChatRequest {
        messages: vec![ChatMessage::system("You write PyTorch."), ChatMessage::user(content)],
        ..Default::default()
    };
    let first = backend.complete(&ask("hello")).map_err(|e| format!("complete failed: {e}"));
    r.record(
        "round_trip",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            if o.content == "echo: hello" {
                Ok(())
            } else {
                Err(format!("answer was {:?}, the server sent \"echo: hello\"", o.content))
            }
        }),
    );
    r.record(
        "usage_reported",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            if o.usage.prompt_tokens == 11 && o.usage.completion_tokens == 7 && !o.usage.estimated {
                Ok(())
            } else {
                Err(format!("usage {:?}, the server reported 11/7", o.usage))
            }
        }),
    );
    r.record(
        "model_reported",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            if o.model == "conformance-model" {
                Ok(())
            } else {
                Err(format!("model {:?}", o.model))
            }
        }),
    );
    let sampled = ChatRequest { temperature: Some(0.25), max_tokens: Some(321), ..ask("sampling") };
    r.record(
        "sampling_forwarded",
        backend.complete(&sampled).map_err(|e| format!("complete failed: {e}")).and_then(|_| {
            let seen = server.seen();
            let body = seen.last().map(|s| s.body.clone()).unwrap_or(Value::Null);
            let t = body["temperature"].as_f64().unwrap_or(-1.0);
            if (t - 0.25).abs() < 1e-6 && body["max_tokens"] == 321 {
                Ok(())
            } else {
                Err(format!("the server saw temperature {} and max_tokens {}", body["temperature"], body["max_tokens"]))
            }
        }),
    );
    let text = "naïve “quotes” \\ backslash\n\ttab 深度学习 🚀 \"json\" </end>";
    r.record(
        "text_round_trips",
        backend.complete(&ask(text)).map_err(|e| format!("complete failed: {e}")).and_then(|o| {
            if o.content == format!("echo: {text}") {
                Ok(())
            } else {
                Err(format!("answer was {:?}", o.content))
            }
        }),
    );
    r.record(
        "unauthorized_is_an_error",
        match backend.complete(&ask("status:401")) {
            Err(e) if e.code == ErrorCode::Unauthorized => Ok(()),
            Err(e) => Err(format!("error code {} (want unauthorized): {e}", e.code.as_str())),
            Ok(o) => Err(format!("a 401 gave an answer: {:?}", o.content)),
        },
    );
    r.record(
        "server_error_is_an_error",
        match backend.complete(&ask("status:400")) {
            Err(_) => Ok(()),
            Ok(o) => Err(format!("a 400 gave an answer: {:?}", o.content)),
        },
    );
    r.record(
        "usable_after_error",
        backend.complete(&ask("again")).map_err(|e| format!("complete failed: {e}")).and_then(|o| {
            if o.content == "echo: again" {
                Ok(())
            } else {
                Err(format!("answer was {:?}", o.content))
            }
        }),
    );
    if let Some(want) = expected_authorization {
        r.record(
            "authorization_sent",
            match server.seen().iter().find(|s| s.authorization.as_deref() != Some(want)) {
                None if !server.seen().is_empty() => Ok(()),
                None => Err("the server saw no request".into()),
                Some(s) => Err(format!("a request to {} had authorization {:?}", s.path, s.authorization)),
            },
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemorySelection, PluginError};

    struct Window(usize);
    impl MemoryStrategy for Window {
        fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
            let start = input.entries.len().saturating_sub(self.0);
            Ok(MemorySelection { entries: input.entries[start..].to_vec(), ..Default::default() })
        }
    }

    struct Inventor;
    impl MemoryStrategy for Inventor {
        fn select(&mut self, _input: &MemoryInput) -> Result<MemorySelection, PluginError> {
            Ok(MemorySelection {
                entries: vec![MemoryEntry { iteration: 999, ..Default::default() }],
                ..Default::default()
            })
        }
    }

    #[test]
    fn a_window_passes_and_an_inventor_fails() {
        let r = check_memory(&mut Window(5));
        assert!(r.all_passed(), "{r}");
        let r = check_memory(&mut Inventor);
        let failed: Vec<_> = r.failures().iter().map(|c| c.name).collect();
        assert!(failed.contains(&"empty_history") && failed.contains(&"only_given_entries"), "{r}");
    }

    #[test]
    fn equivalence_spots_a_different_window() {
        assert!(check_memory_equivalent(&mut Window(5), &mut Window(5), 20).all_passed());
        assert!(!check_memory_equivalent(&mut Window(5), &mut Window(4), 20).all_passed());
    }

    #[test]
    fn chat_server_echoes_and_answers_statuses() {
        let server = ChatServer::start().expect("binds loopback");
        let talk = |content: &str| -> String {
            let body = json!({"messages": [{"role": "user", "content": content}]}).to_string();
            let mut s = TcpStream::connect(("127.0.0.1", server.port())).expect("connects");
            write!(
                s,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("writes");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("reads");
            out
        };
        let ok = talk("hi");
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("echo: hi"), "{ok}");
        assert!(talk("status:429").starts_with("HTTP/1.1 429"));
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer k"));
    }
}
