//! Where `nas` keeps its files.
//!
//! `NAS_HOME` (default `$XDG_CACHE_HOME/nas`, else `~/.cache/nas`) holds
//! `data/` (downloaded and prepared datasets), `models/` (LLM weights) and
//! `cache/` (compiled WebAssembly components and the like).

use std::path::PathBuf;

/// The root of `nas`'s own files.
pub fn nas_home() -> PathBuf {
    if let Some(p) = std::env::var_os("NAS_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("nas");
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("nas"),
        None => std::env::temp_dir().join("nas"),
    }
}

/// Datasets: `$NAS_HOME/data`.
pub fn data_dir() -> PathBuf {
    nas_home().join("data")
}

/// Models: `$NAS_HOME/models`.
pub fn models_dir() -> PathBuf {
    nas_home().join("models")
}

/// Caches: `$NAS_HOME/cache`.
pub fn cache_dir() -> PathBuf {
    nas_home().join("cache")
}

/// CPU threads to offer plugins: the available parallelism.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
