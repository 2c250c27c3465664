//! Preparing a run's dataset: where the prepared cache lives and when a
//! loader is asked to (re)build it.

use std::path::PathBuf;

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, DatasetRef, ErrorCode, PluginError, PrepareRequest,
};
use sha2::{Digest, Sha256};

/// `$NAS_HOME/data/prepared/<name>-<first 12 hex of sha256(settings)>`: one
/// cache per dataset and loader settings.
pub fn prepared_dir(description: &DatasetDescription, settings: &serde_json::Value) -> PathBuf {
    let digest = Sha256::digest(settings.to_string().as_bytes());
    let hash: String = hex::encode(digest).chars().take(12).collect();
    crate::paths::data_dir().join("prepared").join(format!("{}-{hash}", description.name))
}

/// A prepared dataset ready for an evaluator.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the loader says about it.
    pub description: DatasetDescription,
    /// Where it is.
    pub reference: DatasetRef,
    /// Its manifest.
    pub manifest: DatasetManifest,
}

/// Asks the loader to prepare its dataset (it reuses a valid cache unless
/// `force`), adding a hint on what to do when release files are missing.
pub fn prepare(
    loader: &mut dyn DatasetLoader,
    settings: &serde_json::Value,
    force: bool,
) -> Result<Prepared, PluginError> {
    let description = loader.describe()?;
    let dir = prepared_dir(&description, settings);
    std::fs::create_dir_all(&dir).map_err(|e| PluginError::io(&dir, e))?;
    let manifest = loader.prepare(&PrepareRequest { cache_dir: dir.clone(), force }).map_err(|mut e| {
        if e.code == ErrorCode::NotFound && !e.message.contains("nas data fetch") {
            e.message = format!(
                "{}. The release files of `{}` are expected in {}; `nas data fetch {}` downloads them, or point the dataset's `root` setting at your copy",
                e.message,
                description.name,
                description.raw_dir.display(),
                description.name
            );
        }
        e
    })?;
    let reference = DatasetRef { dir, name: description.name.clone() };
    Ok(Prepared { description, reference, manifest })
}
