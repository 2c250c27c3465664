//! A run directory: its layout, and reading one back whole.
//!
//! | file | what |
//! |---|---|
//! | `config.toml` | the frozen config (paths absolute) |
//! | `plugins.json` | each plugin's section, id, version, API version, origin |
//! | `run.sqlite` | the run store ([`crate::store`]) |
//!
//! Reports, exports and comparisons read runs through [`RecordedRun`]; only
//! the search and the session write them.

use std::path::{Path, PathBuf};

use nas_plugin_api::MemoryEntry;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, LoadedConfig};
use crate::records::IterationRecord;
use crate::store::{Store, StoreError};

pub use crate::store::DB_FILE;
/// The frozen config inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The plugin list inside a run directory.
pub const PLUGINS_FILE: &str = "plugins.json";

/// A plugin as recorded in `plugins.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginRecord {
    /// Config section.
    pub section: String,
    /// Plugin id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its API version.
    pub api_version: String,
    /// Where it came from.
    pub origin: String,
}

/// Whether `dir` holds a run (its store exists).
pub fn is_run(dir: &Path) -> bool {
    dir.join(DB_FILE).is_file()
}

/// Reads `plugins.json` (empty when missing or unreadable: it is a record
/// for people, not something a run depends on).
pub fn read_plugins(dir: &Path) -> Vec<PluginRecord> {
    std::fs::read_to_string(dir.join(PLUGINS_FILE)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// One recorded run, read whole.
#[derive(Debug)]
pub struct RecordedRun {
    /// The run directory (absolute when it could be made so).
    pub dir: PathBuf,
    /// Its directory name.
    pub name: String,
    /// Its frozen config, resolved against the directory of the config it
    /// was started from; or why it could not be read (a report still shows
    /// the records of a run whose config no longer parses).
    pub config: Result<LoadedConfig, ConfigError>,
    /// `created`, `running`, `finished`, `interrupted`, `failed`.
    pub status: String,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// The plugins it ran with.
    pub plugins: Vec<PluginRecord>,
    /// Its iterations, in order.
    pub records: Vec<IterationRecord>,
    /// Its memory entries, oldest first.
    pub memory: Vec<MemoryEntry>,
}

impl RecordedRun {
    /// Reads a run directory.
    pub fn open(dir: &Path) -> Result<RecordedRun, StoreError> {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let st = Store::open(&abs)?;
        let records = st.iterations()?;
        let memory = st.memory()?;
        let mut status = st.meta("status")?.unwrap_or_else(|| "created".into());
        // A run killed (or stopped at once by a second Ctrl-C) never wrote
        // its end: `running` with its process gone is `stopped`.
        if status == "running" && crate::run_lock::holder_gone(&abs) {
            status = "stopped".into();
        }
        let stop_reason = st.meta("stop_reason")?;
        let config_dir = st.meta("config_dir")?.map(PathBuf::from);
        let config = config::load(&abs.join(CONFIG_FILE))
            .map(|loaded| LoadedConfig { dir: config_dir.unwrap_or_else(|| loaded.dir.clone()), ..loaded });
        let name = abs
            .canonicalize()
            .unwrap_or_else(|_| abs.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(RecordedRun { plugins: read_plugins(&abs), dir: abs, name, config, status, stop_reason, records, memory })
    }
}
