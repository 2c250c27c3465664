//! The family `.so` builds load through the native door
//! (`NativeLibrary::load`, the same one `nas --plugin` uses) and answer a
//! completion against a real server on loopback.

use std::path::PathBuf;

use nas_llm_test_server::{Step, TestServer};
use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::{ChatMessage, ChatRequest, ErrorCode, HostContext, PluginInstance};
use nas_plugin_test_support::cargo::build_as_the_tests_do;

const LIBS: [(&str, &str); 4] = [
    ("libnas_llm_deepseek.so", "llm.deepseek-coder"),
    ("libnas_llm_qwen.so", "llm.qwen2.5"),
    ("libnas_llm_glm.so", "llm.glm"),
    ("libnas_llm_openai.so", "llm.openai"),
];

/// `target/release`, found from this test's own path (`target/release/deps/…`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/release/deps/<test>").to_path_buf()
}

/// Builds the four shims (a no-op when they are fresh) into the same target
/// directory, as the tests build them.
fn build_libs() -> PathBuf {
    let dir = release_dir();
    let target_dir = dir.parent().expect("target dir").to_path_buf();
    let status = build_as_the_tests_do(&["--lib", "--quiet"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("run cargo build for the plugin libraries");
    assert!(status.success(), "building the plugin libraries failed");
    dir
}

#[test]
fn each_family_library_loads_alone_and_answers_through_the_door() {
    let dir = build_libs();
    let server = TestServer::start();
    for (file, id) in LIBS {
        let path = dir.join(file);
        let lib = NativeLibrary::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let infos = lib.plugins().expect("lists its plugins");
        assert_eq!(infos.len(), 1, "{file} offers one plugin");
        assert_eq!(infos[0].id, id);

        server.push(Step::reply(format!("hello from {id}")));
        let cfg = serde_json::json!({"base_url": server.base_url(), "model": "m", "retry_base_ms": 10});
        let PluginInstance::Llm(mut llm) = lib.create(&infos[0], &cfg, &HostContext::default()).expect("creates")
        else {
            panic!("{id} is an LLM backend")
        };
        let req = ChatRequest { messages: vec![ChatMessage::user("hi")], ..ChatRequest::default() };
        let r = llm.complete(&req).expect("answers through the .so");
        assert_eq!(r.content, format!("hello from {id}"));
        assert_eq!(r.usage.completion_tokens, 7);

        // Errors cross the boundary as typed data.
        server.push(Step::EmptyChoices);
        assert_eq!(llm.complete(&req).expect_err("no choices").code, ErrorCode::BadResponse);
        let bad = lib.create(&infos[0], &serde_json::json!({"bogus": 1}), &HostContext::default());
        assert_eq!(bad.expect_err("unknown key").code, ErrorCode::InvalidConfig);
    }
}
