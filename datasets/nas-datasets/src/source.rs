//! Reading release files: whole-file reads with their sha256, transparent
//! gzip, and finding a file under its compressed or plain name.

use std::io::Read;
use std::path::{Path, PathBuf};

use nas_plugin_api::{PluginError, SourceChecksum};
use sha2::{Digest, Sha256};

use crate::error::{io_error, FormatError};

/// The most bytes a gzip member may inflate to (guards against gzip bombs).
pub const MAX_INFLATED_BYTES: u64 = 8 << 30;

/// A release file read into memory, with its checksum.
#[derive(Debug, Clone)]
pub struct SourceBytes {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes, as stored (still compressed if it was).
    pub bytes: Vec<u8>,
    /// Its name relative to the raw directory, sha256 and size.
    pub checksum: SourceChecksum,
}

/// Reads `raw_dir/name` and hashes it.
pub fn read_source(raw_dir: &Path, name: &str) -> Result<SourceBytes, PluginError> {
    let path = raw_dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| io_error(&path, &e))?;
    let checksum = SourceChecksum { name: name.to_string(), sha256: sha256_hex(&bytes), size: bytes.len() as u64 };
    Ok(SourceBytes { path, bytes, checksum })
}

/// The lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Inflates `bytes` when they are gzip, else returns them unchanged.
/// `size_hint` pre-sizes the output buffer.
pub fn gunzip_if_needed(bytes: Vec<u8>, size_hint: usize) -> Result<Vec<u8>, FormatError> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(size_hint);
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::Invalid(format!("gzip: {e}")))?;
    Ok(out)
}

/// Finds a release file by name: `name.gz` first, then plain `name`; returns
/// the name found (relative to `raw_dir`).
pub fn find_gz_or_plain(raw_dir: &Path, name: &str) -> Option<String> {
    let gz = format!("{name}.gz");
    if raw_dir.join(&gz).is_file() {
        Some(gz)
    } else if raw_dir.join(name).is_file() {
        Some(name.to_string())
    } else {
        None
    }
}
