//! An example third-party memory strategy for `nas`: `memory.failures-first`.
//!
//! It shows the Prompt Improver the most recent failure of each distinct
//! kind first (so recurring errors stay in view), then the most recent
//! successes, `k` entries in all.
//!
//! Build it with `cargo build --release` and load it with
//! `nas --plugin target/release/libnas_example_plugin.so plugins list`.

use nas_plugin_api::{
    HostContext, MemoryInput, MemorySelection, MemoryStrategy, PluginError, PluginFactory, PluginInfo, PluginInstance,
    PluginKind,
};
use serde::Deserialize;

/// The plugin's settings: the `[memory.settings]` table of a run config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// How many entries to show.
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

/// The strategy itself: plain Rust over plain data.
struct FailuresFirst {
    k: usize,
}

impl MemoryStrategy for FailuresFirst {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let mut chosen = Vec::new();
        let mut kinds = Vec::new();
        // The latest failure of each kind, newest first.
        for (i, entry) in input.entries.iter().enumerate().rev() {
            if let Some(kind) = &entry.failure_kind {
                if !kinds.contains(kind) && chosen.len() < self.k {
                    kinds.push(kind.clone());
                    chosen.push(i);
                }
            }
        }
        // Then the most recent of the rest.
        for i in (0..input.entries.len()).rev() {
            if chosen.len() >= self.k {
                break;
            }
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        Ok(MemorySelection {
            entries: chosen.into_iter().map(|i| input.entries[i].clone()).collect(),
            ..Default::default()
        })
    }
}

/// The factory: says what the plugin is and makes instances.
struct FailuresFirstFactory;

impl PluginFactory for FailuresFirstFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "memory.failures-first",
            PluginKind::Memory,
            env!("CARGO_PKG_VERSION"),
            "Latest failure of each kind first, then the most recent entries.",
        )
    }

    fn create(&self, config: &serde_json::Value, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let settings: Settings = PluginError::parse_config("memory.failures-first", config)?;
        if settings.k == 0 {
            return Err(PluginError::config("[memory.failures-first] settings: `k` must be at least 1"));
        }
        Ok(PluginInstance::Memory(Box::new(FailuresFirst { k: settings.k })))
    }
}

// The one line that makes this cdylib a nas plugin library.
nas_plugin_api::export_plugins!(FailuresFirstFactory);
