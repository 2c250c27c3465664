//! The OpenAI-compatible backends against a real HTTP server on loopback
//! that misbehaves on cue.

use std::time::{Duration, Instant};

use nas_llm_openai::{Family, OpenAiBackend};
use nas_llm_test_server::{refused_base_url, Step, TestServer};
use nas_plugin_api::{ChatMessage, ChatRequest, ErrorCode, HostContext, LlmBackend};
use serde_json::{json, Value};

fn backend(family: Family, base_url: &str, extra: Value) -> OpenAiBackend {
    let mut cfg = json!({"base_url": base_url, "model": "test-model", "retry_base_ms": 20, "max_retries": 3});
    for (k, v) in extra.as_object().expect("object").clone() {
        cfg[k] = v;
    }
    OpenAiBackend::new(family, &cfg, &HostContext::default()).expect("valid settings")
}

/// Runs `f`, returning what it gave and the seconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::system("You write PyTorch."), ChatMessage::user(text)],
        ..ChatRequest::default()
    }
}

#[test]
fn a_chat_completion_carries_the_papers_sampling_defaults_and_reports_usage() {
    let server = TestServer::start();
    server.push(Step::reply("```python\nclass Net: pass\n```"));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("write Net")).expect("answer");
    assert_eq!(r.content, "```python\nclass Net: pass\n```");
    assert_eq!(r.usage.prompt_tokens, 11);
    assert_eq!(r.usage.completion_tokens, 7);
    assert!(!r.usage.estimated);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.model, "test-model");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    let body = &reqs[0].body;
    assert_eq!(body["model"], "test-model");
    assert!((body["temperature"].as_f64().expect("temperature") - 0.7).abs() < 1e-6);
    assert!((body["top_p"].as_f64().expect("top_p") - 0.9).abs() < 1e-6);
    assert_eq!(body["max_tokens"], 2048);
    assert_eq!(body["messages"][1]["content"], "write Net");
    assert_eq!(body["messages"][0]["role"], "system");
}

#[test]
fn request_fields_override_the_settings() {
    let server = TestServer::start();
    let mut b = backend(Family::Generic, &server.base_url(), json!({"stop": ["END"], "seed": 5}));
    let req = ChatRequest { temperature: Some(0.1), max_tokens: Some(64), stop: vec!["###".into()], ..ask("x") };
    b.complete(&req).expect("answer");
    let body = &server.requests()[0].body;
    assert!((body["temperature"].as_f64().expect("t") - 0.1).abs() < 1e-6);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stop"], json!(["END", "###"]));
    assert_eq!(body["seed"], 5);
}

#[test]
fn usage_is_counted_locally_when_the_server_reports_none() {
    let server = TestServer::start();
    server.push(Step::reply_without_usage("a fairly long answer with several words in it"));
    let mut b = backend(Family::DeepSeekCoder, &server.base_url(), json!({}));
    let r = b.complete(&ask("write Net")).expect("answer");
    assert!(r.usage.estimated);
    assert!(r.usage.completion_tokens >= 10, "{:?}", r.usage);
    assert!(r.usage.prompt_tokens > 0);
}

#[test]
fn a_refused_connection_is_retried_then_reported_unreachable() {
    let url = refused_base_url();
    let mut b = backend(Family::Qwen25, &url, json!({"max_retries": 2, "retry_base_ms": 10}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("nothing listens"));
    assert_eq!(e.code, ErrorCode::Unreachable, "{e}");
    assert!(secs < 2.0, "three refusals and two short waits took {secs} s");
    assert!(e.message.contains("after 3 attempts"), "{e}");
    assert!(e.message.contains(url.trim_end_matches("/v1")), "names the server: {e}");
}

#[test]
fn an_answer_after_the_read_timeout_is_a_timeout_and_is_not_repeated() {
    let server = TestServer::start();
    server.push(Step::delayed(2_000, Step::reply("too late")));
    let mut b = backend(Family::Glm, &server.base_url(), json!({"read_timeout_s": 0.3}));
    let t = Instant::now();
    let e = b.complete(&ask("x")).expect_err("too slow");
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(e.message.contains("read_timeout_s"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 1.5, "gave up at the timeout");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_500_then_success_is_retried_and_counts_the_attempts() {
    let server = TestServer::start();
    server.push_all([Step::status(500, "boom"), Step::status(503, "busy"), Step::reply("fine")]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("x")).expect("third time lucky");
    assert_eq!(r.content, "fine");
    assert_eq!(r.attempts, 3);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn server_errors_that_persist_end_the_call_with_the_servers_message() {
    let server = TestServer::start();
    server.push_all((0..3).map(|_| Step::status(503, "model is loading")));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 2}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("always 503"));
    assert_eq!(e.code, ErrorCode::Unreachable);
    assert!(secs < 2.0, "backoff of 20 then 40 ms at most, took {secs} s");
    assert!(e.message.contains("model is loading") && e.message.contains("503"), "{e}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_429_waits_for_retry_after_then_succeeds() {
    let server = TestServer::start();
    server.push_all([Step::rate_limited(0.4), Step::reply("ok")]);
    let mut b = backend(Family::DeepSeekCoder, &server.base_url(), json!({"retry_base_ms": 1}));
    let t = Instant::now();
    let r = b.complete(&ask("x")).expect("after waiting");
    assert!(t.elapsed().as_secs_f64() >= 0.4, "honoured Retry-After: {:?}", t.elapsed());
    assert_eq!(r.attempts, 2);
    assert!(r.latency_ms >= 400);
}

#[test]
fn a_429_that_persists_is_rate_limited_with_retry_after() {
    let server = TestServer::start();
    server.push_all((0..2).map(|_| Step::rate_limited(0.05)));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 1}));
    let e = b.complete(&ask("x")).expect_err("still limited");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after_s, Some(0.05));
}

#[test]
fn a_retry_after_longer_than_allowed_fails_at_once() {
    let server = TestServer::start();
    server.push(Step::rate_limited(3600.0));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retry_wait_s": 5}));
    let t = Instant::now();
    let e = b.complete(&ask("x")).expect_err("an hour is too long");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after_s, Some(3600.0));
    assert!(t.elapsed().as_secs_f64() < 2.0);
    assert!(e.message.contains("max_retry_wait_s"), "{e}");
}

#[test]
fn malformed_json_is_a_bad_response_naming_the_body() {
    let server = TestServer::start();
    server.push(Step::Malformed);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("not JSON"));
    assert!(secs < 2.0, "{secs} s");
    assert_eq!(e.code, ErrorCode::BadResponse);
    assert!(e.message.contains("not valid JSON") && e.message.contains("unterminated"), "{e}");
    assert_eq!(server.requests().len(), 1, "a malformed answer is not retried");
}

#[test]
fn a_body_cut_short_is_retried_then_a_bad_response() {
    let server = TestServer::start();
    server.push_all([Step::CutShort, Step::reply("whole")]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("x")).expect("the retry gets the whole body");
    assert_eq!((r.content.as_str(), r.attempts), ("whole", 2));

    server.push(Step::CutShort);
    let mut once = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 0}));
    let e = once.complete(&ask("x")).expect_err("cut");
    assert_eq!(e.code, ErrorCode::BadResponse);
    assert!(e.message.contains("cut short"), "{e}");
}

#[test]
fn empty_choices_are_a_bad_response() {
    let server = TestServer::start();
    server.push(Step::EmptyChoices);
    let mut b = backend(Family::Glm, &server.base_url(), json!({}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("no choices"));
    assert_eq!(e.code, ErrorCode::BadResponse);
    assert!(e.message.contains("no choices"), "{e}");
    assert!(secs < 2.0, "{secs} s");
    assert_eq!(server.requests().len(), 1, "an answer with no choices is not retried");
}

#[test]
fn a_hang_up_is_retried() {
    let server = TestServer::start();
    server.push_all([Step::Hangup, Step::reply("back")]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("x")).expect("retried");
    assert_eq!((r.content.as_str(), r.attempts), ("back", 2));
}

#[test]
fn unauthorised_names_the_variable_but_never_the_key() {
    let server = TestServer::start();
    // The server echoes the key back in its message; it must not leak.
    let key = "sk-test-0123456789abcdef";
    std::env::set_var("NAS_TEST_LLM_KEY", key);
    server.push(Step::status(401, &format!("Incorrect API key provided: {key}")));
    let mut b = backend(Family::DeepSeekCoder, &server.base_url(), json!({"api_key_env": "NAS_TEST_LLM_KEY"}));
    let e = b.complete(&ask("x")).expect_err("refused");
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(e.message.contains("NAS_TEST_LLM_KEY"), "{e}");
    assert!(!e.message.contains(key), "the key leaked: {e}");
    assert!(!format!("{b:?}").contains(key), "the key leaked through Debug");
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Bearer {key}").as_str()));
    assert_eq!(server.requests().len(), 1, "401 is not retried");
}

#[test]
fn an_unset_key_variable_sends_no_authorization_and_says_so_on_401() {
    let server = TestServer::start();
    server.push(Step::status(401, "missing key"));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"api_key_env": "NAS_TEST_LLM_KEY_UNSET"}));
    let e = b.complete(&ask("x")).expect_err("refused");
    assert!(e.message.contains("`NAS_TEST_LLM_KEY_UNSET` is not set"), "{e}");
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[test]
fn a_context_length_400_is_context_too_long() {
    let server = TestServer::start();
    server.push(Step::status(
        400,
        "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens.",
    ));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let e = b.complete(&ask("x")).expect_err("too long");
    assert_eq!(e.code, ErrorCode::ContextTooLong, "{e}");
    let server2 = TestServer::start();
    server2.push(Step::status(400, "unknown field `foo`"));
    let mut b2 = backend(Family::Qwen25, &server2.base_url(), json!({}));
    assert_eq!(b2.complete(&ask("x")).expect_err("rejected").code, ErrorCode::BadResponse);
}

#[test]
fn raw_completions_render_the_family_template_and_cut_at_its_stop() {
    let server = TestServer::start();
    server.push(Step::reply("class Net: pass<|im_end|>\n<|im_start|>user"));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"api": "completions"}));
    let r = b.complete(&ask("write Net")).expect("answer");
    assert_eq!(r.content, "class Net: pass");
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/completions");
    let prompt = req.body["prompt"].as_str().expect("prompt");
    assert!(prompt.starts_with("<|im_start|>system\nYou write PyTorch.<|im_end|>"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    assert!(req.body["stop"].as_array().expect("stop").contains(&json!("<|im_end|>")));

    let server = TestServer::start();
    let mut ds = backend(Family::DeepSeekCoder, &server.base_url(), json!({"api": "completions"}));
    ds.complete(&ask("write Net")).expect("answer");
    let prompt = server.requests()[0].body["prompt"].as_str().expect("prompt").to_string();
    assert!(prompt.ends_with("### Instruction:\nwrite Net\n### Response:\n"), "{prompt}");

    let server = TestServer::start();
    let mut glm = backend(Family::Glm, &server.base_url(), json!({"api": "completions"}));
    glm.complete(&ask("write Net")).expect("answer");
    let prompt = server.requests()[0].body["prompt"].as_str().expect("prompt").to_string();
    assert!(prompt.starts_with("[gMASK]<sop><|system|>") && prompt.ends_with("<|assistant|>\n"), "{prompt}");
}

#[test]
fn extra_headers_are_sent() {
    let server = TestServer::start();
    let mut b = backend(Family::Generic, &server.base_url(), json!({"headers": {"X-Org": "lab-7"}}));
    b.complete(&ask("x")).expect("answer");
    assert_eq!(server.requests()[0].header("x-org"), Some("lab-7"));
}

#[test]
fn settings_are_checked_with_the_key_at_fault_named() {
    let ctx = HostContext::default();
    let e = OpenAiBackend::new(Family::Qwen25, &json!({"temprature": 0.5}), &ctx).expect_err("typo");
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(e.message.contains("temprature") && e.message.contains("llm.qwen2.5"), "{e}");
    let e = OpenAiBackend::new(Family::Generic, &json!({"model": "m"}), &ctx).expect_err("no url");
    assert!(e.message.contains("base_url"), "{e}");
    let e = OpenAiBackend::new(Family::Qwen25, &json!({"top_p": 1.5}), &ctx).expect_err("top_p");
    assert!(e.message.contains("top_p"), "{e}");
    let e = OpenAiBackend::new(Family::Qwen25, &json!({"api": "stream"}), &ctx).expect_err("api");
    assert!(e.message.contains("api") || e.message.contains("stream"), "{e}");
    let b = OpenAiBackend::new(Family::Glm, &json!({}), &ctx).expect("family defaults");
    assert_eq!(b.endpoint(), "https://open.bigmodel.cn/api/paas/v4/chat/completions");
    assert_eq!(b.model(), "glm-4");
}

#[test]
fn responses_round_trip_through_json_for_record_and_replay() {
    let server = TestServer::start();
    server.push(Step::reply("answer"));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("x")).expect("answer");
    let back: nas_plugin_api::ChatResponse =
        serde_json::from_str(&serde_json::to_string(&r).expect("serializes")).expect("parses");
    assert_eq!(back, r);
}

#[test]
fn a_reset_in_the_middle_of_the_body_is_retried_then_a_bad_response() {
    let server = TestServer::start();
    server.push_all([Step::Reset { after_bytes: 40 }, Step::reply("whole")]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let (r, secs) = timed(|| b.complete(&ask("x")).expect("the retry gets the whole answer"));
    assert_eq!((r.content.as_str(), r.attempts), ("whole", 2));
    assert!(secs < 3.0, "{secs} s");

    server.push_all([Step::Reset { after_bytes: 40 }, Step::Reset { after_bytes: 10 }]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 1}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("reset twice"));
    assert_eq!(e.code, ErrorCode::BadResponse, "{e}");
    assert!(e.message.contains("cut short") && e.message.contains("after 2 attempts"), "{e}");
    assert!(secs < 3.0, "{secs} s");
}

#[test]
fn a_body_dripped_a_byte_at_a_time_ends_at_the_read_deadline_not_at_an_idle_timeout() {
    // Headers after 0.6 s, then a byte every 50 ms: no read ever waits long,
    // so only a deadline on the whole attempt ends it at 0.8 s (a timeout
    // per phase would give up at 0.6 + 0.8 s, one per read never).
    let server = TestServer::start();
    server.push(Step::delayed(600, Step::Drip { content: "x".repeat(400), interval_ms: 50 }));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"read_timeout_s": 0.8}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("never finishes"));
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(e.message.contains("read_timeout_s"), "{e}");
    assert!((0.75..1.2).contains(&secs), "gave up at the 0.8 s deadline: {secs} s");
    assert_eq!(server.requests().len(), 1, "a timeout is not retried");
}

#[test]
fn the_total_timeout_bounds_a_dripping_answer_and_a_burst_of_retries() {
    let server = TestServer::start();
    server.push(Step::Drip { content: "x".repeat(400), interval_ms: 50 });
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"read_timeout_s": 30, "total_timeout_s": 0.7}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("never finishes"));
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(e.message.contains("total_timeout_s"), "{e}");
    assert!((0.65..1.5).contains(&secs), "{secs} s");
    assert_eq!(b.total_timeout(), Duration::from_secs_f64(0.7));

    // Many retries with long backoffs: the call ends before a wait would
    // run past the total.
    let server = TestServer::start();
    server.push_all((0..20).map(|_| Step::status(503, "overloaded")));
    let mut b = backend(
        Family::Qwen25,
        &server.base_url(),
        json!({"max_retries": 15, "retry_base_ms": 300, "total_timeout_s": 1.0}),
    );
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("always 503"));
    assert_eq!(e.code, ErrorCode::Unreachable, "{e}");
    assert!(e.message.contains("total_timeout_s"), "{e}");
    assert!(secs < 1.5, "{secs} s");
    assert!(server.requests().len() < 16, "stopped before spending every retry");
}

#[test]
fn a_429_without_retry_after_backs_off_then_succeeds() {
    let server = TestServer::start();
    server.push_all([Step::rate_limited_without_retry_after(), Step::reply("ok")]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"retry_base_ms": 200}));
    let (r, secs) = timed(|| b.complete(&ask("x")).expect("after a backoff"));
    assert_eq!((r.content.as_str(), r.attempts), ("ok", 2));
    assert!((0.1..2.0).contains(&secs), "backoff of 100-200 ms: {secs} s");

    server.push_all((0..3).map(|_| Step::rate_limited_without_retry_after()));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 2}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("still limited"));
    assert_eq!(e.code, ErrorCode::RateLimited, "{e}");
    assert_eq!(e.retry_after_s, None);
    assert!(secs < 2.0, "{secs} s");
}

#[test]
fn a_burst_of_every_kind_of_5xx_is_ridden_out_by_the_retries() {
    let server = TestServer::start();
    server.push_all([
        Step::status(500, "boom"),
        Step::status(502, "bad gateway"),
        Step::status(503, "busy"),
        Step::status(504, "gateway timeout"),
        Step::reply("made it"),
    ]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 4}));
    let (r, secs) = timed(|| b.complete(&ask("x")).expect("fifth attempt"));
    assert_eq!((r.content.as_str(), r.attempts), ("made it", 5));
    assert!(secs < 2.0, "{secs} s");
}

#[test]
fn a_chunked_stream_cut_before_its_end_is_retried_then_a_bad_response() {
    let server = TestServer::start();
    server.push_all([
        Step::Chunked { content: "y".repeat(200_000), complete: false },
        Step::Chunked { content: "whole".into(), complete: true },
    ]);
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let (r, secs) = timed(|| b.complete(&ask("x")).expect("the retry gets the whole stream"));
    assert_eq!((r.content.as_str(), r.attempts), ("whole", 2));
    assert!(secs < 3.0, "{secs} s");

    server.push(Step::Chunked { content: "y".repeat(200_000), complete: false });
    let mut once = backend(Family::Qwen25, &server.base_url(), json!({"max_retries": 0}));
    let (e, secs) = timed(|| once.complete(&ask("x")).expect_err("cut"));
    assert_eq!(e.code, ErrorCode::BadResponse, "{e}");
    assert!(e.message.contains("cut short"), "{e}");
    assert!(secs < 3.0, "{secs} s");
}

#[test]
fn a_multi_megabyte_answer_is_read_only_up_to_the_cap() {
    // Under the default 4 MiB cap: read whole.
    let server = TestServer::start();
    server.push(Step::reply("z".repeat(3 << 20)));
    let mut b = backend(Family::Qwen25, &server.base_url(), json!({}));
    let r = b.complete(&ask("x")).expect("3 MiB fits");
    assert_eq!(r.content.len(), 3 << 20);

    // Over the cap with a length announced: refused before reading.
    server.push(Step::reply("z".repeat(6 << 20)));
    let mut capped = backend(Family::Qwen25, &server.base_url(), json!({"max_response_bytes": 1 << 20}));
    let (e, secs) = timed(|| capped.complete(&ask("x")).expect_err("too big"));
    assert_eq!(e.code, ErrorCode::BadResponse, "{e}");
    assert!(e.message.contains("max_response_bytes") && e.message.contains("announces 6291"), "{e}");
    assert!(secs < 3.0, "{secs} s");

    // Over the cap with no length (chunked): reading stops at the cap.
    server.push(Step::Chunked { content: "z".repeat(6 << 20), complete: true });
    let (e, secs) = timed(|| capped.complete(&ask("x")).expect_err("too big"));
    assert_eq!(e.code, ErrorCode::BadResponse, "{e}");
    assert!(e.message.contains("max_response_bytes") && e.message.contains("reading stopped"), "{e}");
    assert!(secs < 3.0, "{secs} s");
    assert_eq!(server.requests().len(), 3, "an answer over the cap is not retried");
}

#[test]
fn a_model_the_server_does_not_serve_is_not_found_naming_the_model_and_the_server() {
    let server = TestServer::start();
    server.serve_models(["test-model"]);
    let mut b = backend(Family::Generic, &server.base_url(), json!({"model": "gpt-9"}));
    let (e, secs) = timed(|| b.complete(&ask("x")).expect_err("not served"));
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    assert!(e.message.contains("`gpt-9`") && e.message.contains(&server.base_url()), "{e}");
    assert!(e.message.contains("does not serve model"), "{e}");
    assert!(secs < 2.0, "{secs} s");
    assert_eq!(server.requests().len(), 1, "not retried");
    let mut ok = backend(Family::Generic, &server.base_url(), json!({"model": "test-model"}));
    ok.complete(&ask("x")).expect("a served model answers");

    // DeepSeek's and DashScope's 400, Ollama's 404.
    for (status, body) in [
        (400, json!({"error": {"message": "Model Not Exist", "type": "invalid_request_error"}})),
        (400, json!({"code": "InvalidParameter", "message": "Model not exist."})),
        (404, json!({"error": "model \"gpt-9\" not found, try pulling it first"})),
    ] {
        let server = TestServer::start();
        server.push(Step::Status { status, body: body.to_string(), headers: vec![] });
        let mut b = backend(Family::Generic, &server.base_url(), json!({"model": "gpt-9"}));
        let e = b.complete(&ask("x")).expect_err("not served");
        assert_eq!(e.code, ErrorCode::NotFound, "{body}: {e}");
        assert!(e.message.contains("`gpt-9`") && e.message.contains(&server.base_url()), "{e}");
    }
}

/// A PEFT adapter directory as a fine-tuner writes it (the server checks
/// only that `adapter_config.json` is there).
fn peft_dir(root: &std::path::Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("adapter_config.json"), r#"{"peft_type": "LORA", "r": 8}"#).expect("write");
    std::fs::write(dir.join("adapter_model.safetensors"), b"").expect("write");
    dir
}

fn with_adapter(name: &str, dir: Option<&std::path::Path>, scale: Option<f32>) -> ChatRequest {
    ChatRequest {
        adapter: Some(nas_plugin_api::AdapterRef {
            name: name.into(),
            peft_dir: dir.map(|d| d.to_path_buf()),
            gguf: None,
            scale,
        }),
        ..ask("write Net")
    }
}

/// (path, model or lora_name) of every request the server got.
fn calls(server: &TestServer) -> Vec<(String, String)> {
    server
        .requests()
        .iter()
        .map(|r| {
            let who = r.body.get("model").or_else(|| r.body.get("lora_name")).and_then(Value::as_str);
            (r.path.clone(), who.unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn a_named_adapter_is_loaded_on_the_server_once_and_answers_as_its_own_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, two) = (peft_dir(tmp.path(), "cycle-1"), peft_dir(tmp.path(), "cycle-2"));
    let server = TestServer::start();
    server.serve_models(["test-model"]);
    server.enable_lora_loading();
    let mut b = backend(Family::Generic, &server.base_url(), json!({}));
    for _ in 0..2 {
        let r = b.complete(&with_adapter("cycle-1", Some(&one), None)).expect("answer");
        assert!(r.content.starts_with("echo: "), "{r:?}");
    }
    b.complete(&with_adapter("cycle-2", Some(&two), Some(1.0))).expect("answer");
    b.complete(&ask("write Net")).expect("the base model");
    b.complete(&with_adapter("cycle-2", Some(&two), Some(0.0))).expect("scale 0 is the base model");
    let load = "/v1/load_lora_adapter".to_string();
    let chat = "/v1/chat/completions".to_string();
    assert_eq!(
        calls(&server),
        vec![
            (load.clone(), "cycle-1".into()),
            (chat.clone(), "cycle-1".into()),
            (chat.clone(), "cycle-1".into()),
            (load, "cycle-2".into()),
            (chat.clone(), "cycle-2".into()),
            (chat.clone(), "test-model".into()),
            (chat, "test-model".into()),
        ]
    );
    let loads: Vec<Value> =
        server.requests().into_iter().filter(|r| r.path.ends_with("/load_lora_adapter")).map(|r| r.body).collect();
    assert_eq!(loads[0]["lora_path"], json!(one.to_string_lossy()));
    assert_eq!(loads[1]["lora_path"], json!(two.to_string_lossy()));
    assert_eq!(
        server.loaded_adapters(),
        vec![
            ("cycle-1".into(), one.to_string_lossy().into_owned()),
            ("cycle-2".into(), two.to_string_lossy().into_owned())
        ]
    );
}

#[test]
fn adapters_on_a_server_without_runtime_lora_loading_are_a_typed_error_that_says_how_to_start_vllm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = peft_dir(tmp.path(), "cycle-1");
    let server = TestServer::start();
    let mut b = backend(Family::Generic, &server.base_url(), json!({}));
    let e = b.complete(&with_adapter("cycle-1", Some(&dir), None)).expect_err("no dynamic LoRA");
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    for needle in ["--enable-lora", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "cycle-1", "HTTP 404"] {
        assert!(e.message.contains(needle), "{needle:?} in {e}");
    }
    assert_eq!(server.requests().len(), 1, "one load attempt (not retried), no chat without the adapter");
}

#[test]
fn adapter_files_the_server_cannot_find_and_scales_it_cannot_apply_are_refused_before_any_chat() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start();
    server.enable_lora_loading();
    let mut b = backend(Family::Generic, &server.base_url(), json!({}));
    let missing = tmp.path().join("not-an-adapter");
    let e = b.complete(&with_adapter("cycle-1", Some(&missing), None)).expect_err("no adapter there");
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    assert!(e.message.contains(&*missing.to_string_lossy()) && e.message.contains("readable on the server"), "{e}");
    let dir = peft_dir(tmp.path(), "cycle-1");
    let e = b.complete(&with_adapter("cycle-1", Some(&dir), Some(0.5))).expect_err("scale 0.5");
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(e.message.contains("scale 1 only"), "{e}");
    assert!(server.requests().iter().all(|r| !r.path.ends_with("/chat/completions")));
    assert!(server.loaded_adapters().is_empty());
}

#[test]
fn an_adapter_name_left_loaded_by_an_earlier_process_or_forgotten_by_a_restarted_server_is_loaded_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (old, new) = (peft_dir(tmp.path(), "old"), peft_dir(tmp.path(), "new"));
    let server = TestServer::start();
    server.serve_models(["test-model"]);
    server.enable_lora_loading();
    backend(Family::Generic, &server.base_url(), json!({}))
        .complete(&with_adapter("cycle-3", Some(&old), None))
        .expect("an earlier process");
    // A new process names other files with the same name: the server ends
    // up serving the new ones.
    let mut b = backend(Family::Generic, &server.base_url(), json!({}));
    b.complete(&with_adapter("cycle-3", Some(&new), None)).expect("answer");
    assert_eq!(server.loaded_adapters(), vec![("cycle-3".into(), new.to_string_lossy().into_owned())]);
    // The server forgets it (a restart): the next call loads it again.
    let unload = reqwest::blocking::Client::new()
        .post(format!("{}/unload_lora_adapter", server.base_url()))
        .json(&json!({"lora_name": "cycle-3"}))
        .send()
        .expect("unload");
    assert!(unload.status().is_success());
    let before = server.requests().len();
    let r = b.complete(&with_adapter("cycle-3", Some(&new), None)).expect("loaded again");
    assert!(r.content.starts_with("echo: "));
    let tail: Vec<(String, String)> = calls(&server)[before..].to_vec();
    assert_eq!(
        tail,
        vec![
            ("/v1/chat/completions".into(), "cycle-3".into()),
            ("/v1/load_lora_adapter".into(), "cycle-3".into()),
            ("/v1/chat/completions".into(), "cycle-3".into()),
        ]
    );
    assert_eq!(server.loaded_adapters().len(), 1);
}
