//! Template for a `nas` WebAssembly plugin in Rust: a memory strategy.
//!
//! Copy this directory, rename the package and `ID`, and fill in `select`.
//! For another role, change `world:` below to `nas:plugin/llm-backend`,
//! `nas:plugin/dataset-loader` or `nas:plugin/evaluator` and implement that
//! interface's `Guest` trait instead (its functions are listed in
//! plugin-api/wit/nas-plugin.wit). Fix the `path:` if you move the crate out
//! of this repository (copy plugin-api/wit next to it).

wit_bindgen::generate!({
    path: "../../../../plugin-api/wit",
    world: "nas:plugin/memory-strategy",
});

use exports::nas::plugin::memory::Guest as Memory;
use exports::nas::plugin::meta::Guest as Meta;
use nas::plugin::types::{ApiVersion, ErrorCode, HostContext, MemoryInput, MemorySelection, PluginError, PluginInfo, PluginKind};

/// `<kind>.<name>`: must match the manifest's `id`.
const ID: &str = "memory.my-plugin";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    // Your settings, snake_case with units in the names (`timeout_s`).
}

struct Plugin;

impl Meta for Plugin {
    fn info() -> PluginInfo {
        PluginInfo {
            id: ID.into(),
            kind: PluginKind::Memory,
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: ApiVersion { major: 1, minor: 0 },
            description: "What it does, in one line.".into(),
        }
    }
}

impl Memory for Plugin {
    fn init(settings_json: String, _ctx: HostContext) -> Result<(), PluginError> {
        let _settings: Settings = serde_json::from_str(&settings_json).map_err(|e| PluginError {
            code: ErrorCode::InvalidConfig,
            message: format!("[{ID}] settings: {e}"),
            retry_after_s: None,
        })?;
        Ok(())
    }

    fn select(input: MemoryInput) -> Result<MemorySelection, PluginError> {
        // Choose what the Prompt Improver sees; here: everything.
        Ok(MemorySelection { entries: input.entries, summary: None, state_json: None, llm_task: None })
    }
}

export!(Plugin);
