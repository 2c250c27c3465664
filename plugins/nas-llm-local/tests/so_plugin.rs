//! `libnas_llm_local.so` loads through the native door (the one
//! `nas --plugin` uses) and generates real text with the 0.5B model.
//! `NAS_SKIP_MODEL_TESTS=1` skips the generation (the load is still checked).
#![cfg(feature = "llama")]

use std::path::PathBuf;

use nas_llm_local::{default_models_dir, fetch_model, FetchOptions};
use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::{ChatMessage, ChatRequest, HostContext, PluginInstance};
use nas_plugin_test_support::cargo::build_as_the_tests_do;

fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/release/deps/<test>").to_path_buf()
}

#[test]
fn the_local_library_loads_and_generates() {
    let dir = release_dir();
    let status = build_as_the_tests_do(&["--lib", "--quiet"])
        .env("CARGO_TARGET_DIR", dir.parent().expect("target dir"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building nas-llm-local-so failed");
    let lib = NativeLibrary::load(&dir.join("libnas_llm_local.so")).expect("loads");
    let infos = lib.plugins().expect("lists");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].id, "llm.local");
    if std::env::var_os("NAS_SKIP_MODEL_TESTS").is_some() {
        return;
    }
    let models = std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(default_models_dir);
    fetch_model("qwen2.5-coder-0.5b", &models, &FetchOptions::default()).expect("model available");
    let ctx = HostContext { models_dir: Some(models), ..HostContext::default() };
    let cfg = serde_json::json!({"model": "qwen2.5-coder-0.5b", "context_tokens": 512, "fetch": false});
    let PluginInstance::Llm(mut llm) = lib.create(&infos[0], &cfg, &ctx).expect("creates") else {
        panic!("an LLM backend")
    };
    let req = ChatRequest {
        messages: vec![ChatMessage::user("Say hello.")],
        max_tokens: Some(8),
        temperature: Some(0.0),
        ..ChatRequest::default()
    };
    let r = llm.complete(&req).expect("generates through the .so");
    assert!(!r.content.trim().is_empty());
    assert!(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
}
