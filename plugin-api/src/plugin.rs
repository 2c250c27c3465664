//! What every plugin is: an id, a kind, a version; a factory that makes
//! instances of one of the roles.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ApiVersion, DatasetLoader, Evaluator, FineTuner, LlmBackend, MemoryStrategy, PluginError, API_VERSION};

/// The role a plugin plays. What differs between roles is in the role table
/// ([`PluginKind::role`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// An [`LlmBackend`]; ids `llm.<name>`.
    Llm,
    /// A [`DatasetLoader`]; ids `data.<name>`.
    Dataset,
    /// An [`Evaluator`]; ids `eval.<name>`.
    Evaluator,
    /// A [`MemoryStrategy`]; ids `memory.<name>`.
    Memory,
    /// A [`FineTuner`]; ids `tune.<name>`. Added in plugin API 1.2.
    Tune,
    /// A role this host does not know (from a newer plugin).
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.role().map_or("unknown", |r| r.noun))
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// `<kind>.<name>`, e.g. `memory.window`, `llm.qwen2.5`.
    pub id: String,
    /// Its role.
    pub kind: PluginKind,
    /// The plugin's own version (semver).
    pub version: String,
    /// The plugin API version it was built against.
    pub api_version: ApiVersion,
    /// One line for `nas plugins list`.
    #[serde(default)]
    pub description: String,
    /// How many instances of this plugin are worth running at once in one
    /// process (`None`: no limit). A backend that serves one call at a time
    /// on the machine's cores, like an embedded model, says 1, and the host
    /// keeps one instance however many calls it could have in flight. Added
    /// in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

impl PluginInfo {
    /// Info for a plugin built against this crate's [`API_VERSION`].
    pub fn new(
        id: impl Into<String>,
        kind: PluginKind,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        PluginInfo {
            id: id.into(),
            kind,
            version: version.into(),
            api_version: API_VERSION,
            description: description.into(),
            concurrency: None,
        }
    }

    /// The same info with a concurrency limit (see [`Self::concurrency`]).
    pub fn with_concurrency(mut self, instances: u32) -> Self {
        self.concurrency = Some(instances);
        self
    }

    /// Checks the id has the form `<kind prefix>.<name>` with a non-empty
    /// name of `[A-Za-z0-9._-]`.
    pub fn validate(&self) -> Result<(), String> {
        let prefix = self.kind.prefix();
        let Some(name) = self.id.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            return Err(format!("plugin id `{}` must start with `{prefix}.` for a {}", self.id, self.kind));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(format!(
                "plugin id `{}` must be `{prefix}.<name>` with a name of letters, digits, `.`, `_` or `-`",
                self.id
            ));
        }
        Ok(())
    }
}

/// What the host tells a plugin when it creates it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostContext {
    /// The host's API version.
    #[serde(default)]
    pub host_api_version: Option<ApiVersion>,
    /// Where downloaded and prepared data lives (`$NAS_HOME/data`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Where models live (`$NAS_HOME/models`).
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// A scratch directory this plugin instance may write to.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// The run directory, when a run is in progress.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// How many CPU threads the plugin may use.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Directory against which relative paths in the plugin's settings are
    /// resolved (the config file's directory).
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
}

impl HostContext {
    /// Resolves a path from a plugin's settings against [`Self::config_dir`].
    pub fn resolve(&self, path: impl Into<PathBuf>) -> PathBuf {
        let path = path.into();
        match (&self.config_dir, path.is_relative()) {
            (Some(dir), true) => dir.join(path),
            _ => path,
        }
    }
}

/// A live plugin instance of one role.
pub enum PluginInstance {
    /// An LLM backend.
    Llm(Box<dyn LlmBackend>),
    /// A dataset loader.
    Dataset(Box<dyn DatasetLoader>),
    /// An evaluator.
    Evaluator(Box<dyn Evaluator>),
    /// A memory strategy.
    Memory(Box<dyn MemoryStrategy>),
    /// A fine-tuner.
    Tune(Box<dyn FineTuner>),
}

impl PluginInstance {
    /// The role of this instance.
    pub fn kind(&self) -> PluginKind {
        match self {
            PluginInstance::Llm(_) => PluginKind::Llm,
            PluginInstance::Dataset(_) => PluginKind::Dataset,
            PluginInstance::Evaluator(_) => PluginKind::Evaluator,
            PluginInstance::Memory(_) => PluginKind::Memory,
            PluginInstance::Tune(_) => PluginKind::Tune,
        }
    }
}

macro_rules! into_role {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $trait:ident) => {
        $(#[$doc])*
        pub fn $name(self) -> Result<Box<dyn $trait>, PluginInstance> {
            match self {
                PluginInstance::$variant(p) => Ok(p),
                other => Err(other),
            }
        }
    };
}

impl PluginInstance {
    into_role!(
        /// The LLM backend, or the instance back when it is of another role.
        into_llm, Llm, LlmBackend
    );
    into_role!(
        /// The dataset loader, or the instance back.
        into_dataset, Dataset, DatasetLoader
    );
    into_role!(
        /// The evaluator, or the instance back.
        into_evaluator, Evaluator, Evaluator
    );
    into_role!(
        /// The memory strategy, or the instance back.
        into_memory, Memory, MemoryStrategy
    );
    into_role!(
        /// The fine-tuner, or the instance back.
        into_tune, Tune, FineTuner
    );
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginInstance({})", self.kind())
    }
}

/// Makes instances of one plugin. A plugin library offers one or more.
pub trait PluginFactory: Send + Sync {
    /// What this plugin is.
    fn info(&self) -> PluginInfo;

    /// A new instance, configured by the plugin's settings table (the TOML
    /// table from the run config, as JSON; `{}` when none was given).
    fn create(&self, config: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, PluginError>;
}
