//! Preparing a run's dataset: where the prepared cache lives and when a
//! loader is asked to (re)build it.

use std::path::{Path, PathBuf};

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
    // Runs side by side (`nas compare --jobs N`) prepare the same cache:
    // one prepares it while the others wait, then find it valid.
    let mut lock_name = dir.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let _lock = CacheLock::acquire(&dir.with_file_name(lock_name))?;
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

/// An exclusive advisory lock on a file, held until dropped (or until the
/// process dies: the kernel releases it).
struct CacheLock(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

impl CacheLock {
    fn acquire(path: &Path) -> Result<CacheLock, PluginError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| PluginError::io(path, e))?;
        loop {
            // SAFETY: flock(2) on a descriptor owned by `file`, which
            // outlives the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(CacheLock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(PluginError::io(path, err));
            }
        }
    }
}
