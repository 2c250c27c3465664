//! LLM backends: [`check_llm`] drives a backend that talks to the loopback
//! chat-completions server (`nas-llm-test-server`) and checks what crossed
//! the wire; [`check_llm_backend`] checks what any backend must do, whatever
//! it runs on (an in-process model included).

use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_plugin_api::{ChatMessage, ChatRequest, ChatResponse, ErrorCode, LlmBackend};
use serde_json::Value;

use crate::{guarded, must, must_fail, Report};

/// The model id the loopback server reports in its answers.
const SERVER_MODEL: &str = "test-model";

fn complete(backend: &mut dyn LlmBackend, request: &ChatRequest) -> Result<ChatResponse, String> {
    must("complete", || backend.complete(request))
}

/// Runs the LLM-backend checks against `backend`, which must be configured
/// to talk to `server` (its [`TestServer::base_url`]) with no retries on
/// client errors. `expected_authorization` is the `Authorization` header the
/// server must see (`Bearer <key>`), or `None` to skip that check.
///
/// The check sets the server's responder: a last user message `status:NNN`
/// is answered with that HTTP status, anything else with
/// `echo: <last user message>` (usage 11 prompt / 7 completion tokens).
///
/// Checks: `round_trip`, `usage_reported`, `model_reported`,
/// `sampling_forwarded`, `text_round_trips`, `unauthorized_is_an_error`,
/// `server_error_is_an_error`, `usable_after_error`, `authorization_sent`.
pub fn check_llm(backend: &mut dyn LlmBackend, server: &TestServer, expected_authorization: Option<&str>) -> Report {
    server.set_responder(|req: &RecordedRequest| {
        let last_user = req.body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())?;
        let code = last_user.strip_prefix("status:")?.trim().parse::<u16>().ok()?;
        Some(Step::status(code, &format!("the conformance server answers {code}")))
    });
    let mut r = Report::default();
    let ask = |content: &str| ChatRequest {
        messages: vec![ChatMessage::system("You write PyTorch."), ChatMessage::user(content)],
        ..Default::default()
    };
    let first = complete(backend, &ask("hello"));
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
            if o.model == SERVER_MODEL {
                Ok(())
            } else {
                Err(format!("model {:?}, the server reported {SERVER_MODEL:?}", o.model))
            }
        }),
    );
    let sampled = ChatRequest { temperature: Some(0.25), max_tokens: Some(321), ..ask("sampling") };
    r.record(
        "sampling_forwarded",
        complete(backend, &sampled).and_then(|_| {
            let body = server.requests().last().map(|s| s.body.clone()).unwrap_or(Value::Null);
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
        complete(backend, &ask(text)).and_then(|o| {
            if o.content == format!("echo: {text}") {
                Ok(())
            } else {
                Err(format!("answer was {:?}", o.content))
            }
        }),
    );
    r.record(
        "unauthorized_is_an_error",
        must_fail("a 401", || backend.complete(&ask("status:401"))).and_then(|e| {
            if e.code == ErrorCode::Unauthorized {
                Ok(())
            } else {
                Err(format!("error code {} (want unauthorized): {e}", e.code.as_str()))
            }
        }),
    );
    r.record("server_error_is_an_error", must_fail("a 400", || backend.complete(&ask("status:400"))).map(|_| ()));
    r.record(
        "usable_after_error",
        complete(backend, &ask("again")).and_then(|o| {
            if o.content == "echo: again" {
                Ok(())
            } else {
                Err(format!("answer was {:?}", o.content))
            }
        }),
    );
    if let Some(want) = expected_authorization {
        let seen = server.requests();
        r.record(
            "authorization_sent",
            match seen.iter().find(|s| s.header("authorization") != Some(want)) {
                None if !seen.is_empty() => Ok(()),
                None => Err("the server saw no request".into()),
                Some(s) => Err(format!("a request to {} had authorization {:?}", s.path, s.header("authorization"))),
            },
        );
    }
    r
}

/// What [`check_llm_backend`] may rely on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmBackendOptions {
    /// The backend's context in tokens, when it has a fixed one: a prompt
    /// several times longer must then be refused with
    /// [`ErrorCode::ContextTooLong`].
    pub context_tokens: Option<u32>,
}

/// Runs the checks every LLM backend must pass, whatever answers it (a
/// server, an in-process model): requests are small (at most 24 tokens
/// out) so that a real model answers them in seconds.
///
/// Checks: `answers`, `usage_reported`, `model_reported`,
/// `deterministic_with_a_seed` (temperature 0 and a seed give the same answer
/// twice), `unusual_text_accepted`, `overlong_prompt_is_an_error` (only with
/// [`LlmBackendOptions::context_tokens`]), `usable_after_error`.
pub fn check_llm_backend(backend: &mut dyn LlmBackend, options: &LlmBackendOptions) -> Report {
    let mut r = Report::default();
    let request = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a Python programmer. Answer with code only."),
            ChatMessage::user("Write a Python function `add(a, b)` that returns a + b."),
        ],
        max_tokens: Some(24),
        temperature: Some(0.0),
        seed: Some(7),
        ..Default::default()
    };
    let first = complete(backend, &request);
    r.record(
        "answers",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            if o.content.trim().is_empty() {
                Err("an empty answer".into())
            } else {
                Ok(())
            }
        }),
    );
    r.record(
        "usage_reported",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            let u = &o.usage;
            if u.prompt_tokens == 0 || u.completion_tokens == 0 {
                Err(format!("usage {u:?}: both counts must be positive"))
            } else if !u.estimated && u.completion_tokens > 24 {
                Err(format!("{} tokens out, max_tokens was 24", u.completion_tokens))
            } else {
                Ok(())
            }
        }),
    );
    r.record(
        "model_reported",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            if o.model.trim().is_empty() {
                Err("no model name in the answer".into())
            } else {
                Ok(())
            }
        }),
    );
    r.record(
        "deterministic_with_a_seed",
        first.as_ref().map_err(Clone::clone).and_then(|a| {
            let b = complete(backend, &request)?;
            if a.content == b.content {
                Ok(())
            } else {
                Err(format!("{:?} then {:?}", a.content, b.content))
            }
        }),
    );
    let unusual = ChatRequest {
        messages: vec![ChatMessage::user("Réponds « oui »: naïve “quotes” \\ 深度学习 🚀 \"json\" </end>\n\t")],
        max_tokens: Some(8),
        ..request.clone()
    };
    r.record("unusual_text_accepted", complete(backend, &unusual).map(|_| ()));
    if let Some(n) = options.context_tokens {
        let long = ChatRequest { messages: vec![ChatMessage::user("word ".repeat(n as usize * 3))], ..request.clone() };
        r.record(
            "overlong_prompt_is_an_error",
            must_fail("a prompt three times the context", || backend.complete(&long)).and_then(|e| {
                if e.code == ErrorCode::ContextTooLong {
                    Ok(())
                } else {
                    Err(format!("error code {} (want context_too_long): {e}", e.code.as_str()))
                }
            }),
        );
    }
    r.record(
        "usable_after_error",
        match (guarded(|| backend.complete(&request)), &first) {
            (Ok(Ok(again)), Ok(first)) if again.content == first.content => Ok(()),
            (Ok(Ok(again)), Ok(first)) => Err(format!("{:?} after {:?}", again.content, first.content)),
            (Ok(Ok(_)), Err(e)) => Err(format!("the first request failed: {e}")),
            (Ok(Err(e)), _) => Err(format!("complete failed: {e}")),
            (Err(p), _) => Err(format!("complete {p}")),
        },
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::{PluginError, TokenUsage};

    /// Answers without any server: passes what does not look at the wire.
    struct Offline;
    impl LlmBackend for Offline {
        fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
            let last = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            if let Some(code) = last.strip_prefix("status:") {
                let code = if code == "401" { ErrorCode::Unauthorized } else { ErrorCode::BadResponse };
                return Err(PluginError::new(code, "refused"));
            }
            Ok(ChatResponse {
                content: format!("echo: {last}"),
                model: SERVER_MODEL.into(),
                usage: TokenUsage { prompt_tokens: 11, completion_tokens: 7, estimated: false },
                ..Default::default()
            })
        }
    }

    #[test]
    fn a_backend_that_never_reaches_the_server_fails_the_wire_checks() {
        let server = TestServer::start();
        let r = check_llm(&mut Offline, &server, Some("Bearer k"));
        let failed: Vec<_> = r.failures().iter().map(|c| c.name).collect();
        assert_eq!(failed, ["sampling_forwarded", "authorization_sent"], "{r}");
        assert!(check_llm_backend(&mut Offline, &LlmBackendOptions::default()).all_passed());
    }

    struct Panics;
    impl LlmBackend for Panics {
        fn complete(&mut self, _: &ChatRequest) -> Result<ChatResponse, PluginError> {
            panic!("no answer today")
        }
    }

    #[test]
    fn a_panic_fails_the_checks_instead_of_the_test() {
        let r = check_llm_backend(&mut Panics, &LlmBackendOptions { context_tokens: Some(8) });
        assert!(r.passed().is_empty(), "{r}");
        assert!(r.failures()[0].detail.contains("panicked: no answer today"), "{r}");
    }
}
