//! What every loader shares: the default raw directory, the cache-reuse
//! check, the settings recorded in the manifest, decoding threads.

use std::path::{Path, PathBuf};

use nas_plugin_api::{DatasetManifest, HostContext, PluginError, PrepareRequest};

use crate::prepared::{reusable_cache, write_prepared, DatasetParts, LOADER_KEY, SETTINGS_KEY};

/// The key in the manifest's `extra` holding the raw directory read.
pub const RAW_DIR_KEY: &str = "raw_dir";

/// The facts a loader instance carries from `create` to `prepare`.
#[derive(Debug, Clone)]
pub struct Common {
    /// Plugin id (`data.<name>`).
    pub id: &'static str,
    /// Dataset name (`<name>`).
    pub name: String,
    /// Where the release files are.
    pub raw_dir: PathBuf,
    /// The settings, as recorded in the manifest (a cache is reused only with
    /// the same settings).
    pub settings: serde_json::Value,
    /// Threads for decoding.
    pub threads: usize,
}

impl Common {
    /// Resolves the raw directory (`root` from the settings, else
    /// `<data_dir>/raw/<name>`, else `fallback` when it exists).
    pub fn new(
        id: &'static str,
        name: &str,
        root: Option<&Path>,
        fallback: Option<&Path>,
        settings: serde_json::Value,
        ctx: &HostContext,
    ) -> Result<Common, PluginError> {
        let raw_dir = match root {
            Some(root) => ctx.resolve(root),
            None => match (fallback.filter(|f| f.is_dir()), &ctx.data_dir) {
                (Some(f), _) => f.to_path_buf(),
                (None, Some(data)) => data.join("raw").join(name),
                (None, None) => {
                    return Err(PluginError::config(format!(
                        "[{id}] settings: no `root` given and the host has no data directory; set `root` under \
                         [dataset.settings] to the directory holding the {name} release files"
                    )))
                }
            },
        };
        let threads = ctx
            .threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        Ok(Common { id, name: name.to_string(), raw_dir, settings, threads })
    }

    /// Reuses a valid cache unless `request.force` (one made from this raw
    /// directory, or carried from another to where no release file is);
    /// otherwise runs `read` and writes its result atomically into
    /// `request.cache_dir`.
    pub fn prepare_with(
        &self,
        request: &PrepareRequest,
        read: impl FnOnce() -> Result<DatasetParts, PluginError>,
    ) -> Result<DatasetManifest, PluginError> {
        let raw_dir = serde_json::Value::String(self.raw_dir.display().to_string());
        if !request.force {
            if let Some(manifest) = reusable_cache(&request.cache_dir, &self.raw_dir, self.id, &self.settings) {
                // A cache made from another raw directory is reused only when
                // this one holds none of its release files: a cache carried to
                // a machine without them (a GPU machine, a cluster node) has
                // nothing here to be prepared again from.
                let carried = !manifest.sources.iter().any(|s| self.raw_dir.join(&s.name).exists());
                if manifest.extra.get(RAW_DIR_KEY) == Some(&raw_dir) || carried {
                    return Ok(manifest);
                }
            }
        }
        let mut parts = read()?;
        parts.extra.insert(RAW_DIR_KEY.into(), raw_dir);
        parts.extra.insert(LOADER_KEY.into(), serde_json::Value::String(self.id.into()));
        parts.extra.insert(SETTINGS_KEY.into(), self.settings.clone());
        write_prepared(&request.cache_dir, parts)
    }

    /// The hint appended to a missing-file error.
    pub fn fetch_hint(&self) -> String {
        format!(
            "run `nas data fetch {}`, or set `root` under [dataset.settings] of the run config (plugin `{}`)",
            self.name, self.id
        )
    }
}

/// Serialises settings for the manifest (settings structs always serialise).
pub fn settings_json<T: serde::Serialize>(settings: &T) -> serde_json::Value {
    serde_json::to_value(settings).unwrap_or(serde_json::Value::Null)
}
