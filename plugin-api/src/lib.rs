//! # nas-plugin-api
//!
//! What `nas` plugins and the `nas` host share, and nothing else. A plugin
//! depends on this crate only; the host depends on it too; neither depends on
//! the other.
//!
//! A plugin plays one of five **roles**, each a small trait over plain serde
//! data (the role table, [`PluginKind::role`], holds what differs between
//! them):
//!
//! | role | trait | what it does |
//! |---|---|---|
//! | LLM backend | [`LlmBackend`] | answers a chat request (Code Generator, Prompt Improver) |
//! | dataset loader | [`DatasetLoader`] | prepares a dataset into tensors on disk, once |
//! | evaluator | [`Evaluator`] | turns candidate source code into a score or a typed failure |
//! | memory strategy | [`MemoryStrategy`] | chooses which past attempts the Improver sees |
//! | fine-tuner | [`FineTuner`] | trains a LoRA adapter of the generator on chat examples |
//!
//! A plugin library offers one or more [`PluginFactory`] values. The native
//! door (a `cdylib` loaded with `nas --plugin lib.so`) is the [`ffi`] module:
//! a tiny abi_stable surface with JSON payloads inside, version-checked before
//! the first call, with every panic caught and turned into a [`PluginError`].
//! Built-in plugins use exactly the same door.
//!
//! ```
//! use nas_plugin_api::*;
//!
//! /// A memory strategy that shows the Improver nothing.
//! struct Forget;
//! impl MemoryStrategy for Forget {
//!     fn select(&mut self, _input: &MemoryInput) -> Result<MemorySelection, PluginError> {
//!         Ok(MemorySelection::default())
//!     }
//! }
//!
//! struct ForgetFactory;
//! impl PluginFactory for ForgetFactory {
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("memory.forget", PluginKind::Memory, "0.1.0", "Remembers nothing.")
//!     }
//!     fn create(&self, _config: &serde_json::Value, _ctx: &HostContext)
//!         -> Result<PluginInstance, PluginError> {
//!         Ok(PluginInstance::Memory(Box::new(Forget)))
//!     }
//! }
//!
//! // In a `cdylib` crate, this one line makes the library loadable with
//! // `nas --plugin path/to/lib.so`:
//! // nas_plugin_api::export_plugins!(ForgetFactory);
//! # let lib = ForgetFactory;
//! # assert_eq!(lib.info().id, "memory.forget");
//! ```
#![deny(missing_docs)]

mod dataset;
mod error;
mod eval;
pub mod ffi;
mod llm;
mod memory;
mod plugin;
mod role;
pub mod text;
mod tune;

pub use dataset::*;
pub use error::*;
pub use eval::*;
pub use llm::*;
pub use memory::*;
pub use plugin::*;
pub use role::*;
pub use tune::*;

/// The API version of this crate, checked by the host before the first call
/// into a plugin.
///
/// Changes are additive: a new optional field or a new method raises `minor`;
/// anything that breaks an existing plugin raises `major`.
///
/// - 1.1: [`EvalRequest::save_model`] (an evaluator may write the trained
///   model as TorchScript).
/// - 1.2: the fine-tuner role ([`FineTuner`], [`PluginKind::Tune`]) and
///   [`ChatRequest::adapter`] (a backend may apply a LoRA adapter).
/// - 1.3: [`EvalRequest::known_networks`], [`FailureKind::Duplicate`] and
///   [`NETWORK_KEY`] (an evaluator may refuse to train a network the search
///   has already trained).
pub const API_VERSION: ApiVersion = ApiVersion { major: 1, minor: 3 };

/// A plugin API version: `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ApiVersion {
    /// Raised on a breaking change.
    pub major: u32,
    /// Raised on an additive change.
    pub minor: u32,
}

impl ApiVersion {
    /// Whether a host built against `self` can drive a plugin built against
    /// `plugin`: same major version, and the plugin expects no more than the
    /// host offers.
    pub fn can_host(self, plugin: ApiVersion) -> bool {
        self.major == plugin.major && plugin.minor <= self.minor
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_compatibility_is_same_major_and_no_newer_minor() {
        let host = ApiVersion { major: 1, minor: 2 };
        assert!(host.can_host(ApiVersion { major: 1, minor: 0 }));
        assert!(host.can_host(ApiVersion { major: 1, minor: 2 }));
        assert!(!host.can_host(ApiVersion { major: 1, minor: 3 }));
        assert!(!host.can_host(ApiVersion { major: 2, minor: 0 }));
        assert!(!host.can_host(ApiVersion { major: 0, minor: 2 }));
    }
}
