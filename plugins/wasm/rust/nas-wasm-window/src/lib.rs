//! `memory.rs-window`: the paper's sliding window of the K most recent
//! diagnostic triples, as a `nas` WebAssembly component written in Rust
//! against the `nas:plugin/memory-strategy` world of `plugin-api/wit`.
//!
//! Build (see docs/wasm-plugins.md):
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! wasm-tools component new target/wasm32-unknown-unknown/release/nas_wasm_window.wasm -o window-rs.wasm
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

wit_bindgen::generate!({
    path: "../../../../plugin-api/wit",
    world: "nas:plugin/memory-strategy",
});

use exports::nas::plugin::memory::Guest as Memory;
use exports::nas::plugin::meta::Guest as Meta;
use nas::plugin::types::{
    ApiVersion, ErrorCode, HostContext, MemoryInput, MemorySelection, PluginError, PluginInfo, PluginKind,
};

const ID: &str = "memory.rs-window";

static K: AtomicU64 = AtomicU64::new(5);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "five")]
    k: u64,
}

fn five() -> u64 {
    5
}

fn config_error(message: String) -> PluginError {
    PluginError { code: ErrorCode::InvalidConfig, message, retry_after_s: None }
}

struct Window;

impl Meta for Window {
    fn info() -> PluginInfo {
        PluginInfo {
            id: ID.into(),
            kind: PluginKind::Memory,
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: ApiVersion { major: 1, minor: 0 },
            description: "Sliding window of the K most recent triples, in Rust.".into(),
        }
    }
}

impl Memory for Window {
    fn init(settings_json: String, _ctx: HostContext) -> Result<(), PluginError> {
        let s: Settings =
            serde_json::from_str(&settings_json).map_err(|e| config_error(format!("[{ID}] settings: {e}")))?;
        if s.k == 0 {
            return Err(config_error(format!("[{ID}] settings: `k` must be at least 1 (use memory.none for no history)")));
        }
        K.store(s.k, Ordering::Relaxed);
        Ok(())
    }

    fn select(input: MemoryInput) -> Result<MemorySelection, PluginError> {
        let k = K.load(Ordering::Relaxed) as usize;
        let mut entries = input.entries;
        let start = entries.len().saturating_sub(k);
        entries.drain(..start);
        Ok(MemorySelection { entries, summary: None, state_json: None, llm_task: None })
    }
}

export!(Window);
