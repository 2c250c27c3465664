//! The dataset loader role, and the prepared-dataset format every evaluator
//! reads.
//!
//! A loader reads a dataset's real on-disk release once and writes it as a
//! **prepared dataset**: a directory holding `manifest.json`
//! ([`DatasetManifest`]) and one safetensors file per split. Each split file
//! holds two tensors:
//!
//! - `images`: `uint8`, shape `[N, C, H, W]`, raw pixel values 0–255;
//! - `labels`: `int64`, shape `[N]`, class indices `0..num_classes`.
//!
//! Normalisation is not baked in: the manifest carries per-channel `mean` and
//! `std` on the 0–1 scale, applied by the evaluator. Large data crosses
//! plugin boundaries by path, never by value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, PluginError};

/// The manifest file name inside a prepared dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The version of the prepared-dataset format written by this API.
pub const PREPARED_FORMAT_VERSION: u32 = 1;

/// One file of a dataset's release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    /// File name, relative to the loader's raw directory.
    pub name: String,
    /// Where it can be downloaded from, canonical source first.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Expected sha256 (lower-case hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Expected size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Whether the file is needed (optional files are alternatives or extras).
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// What a loader says about its dataset before anything is prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDescription {
    /// Short name, e.g. `fashion-mnist`.
    pub name: String,
    /// One line for `nas data list`.
    #[serde(default)]
    pub title: String,
    /// Prompt-template family (`mnist`, `cifar`, `imagenette`, ...).
    #[serde(default)]
    pub family: String,
    /// Where the loader expects the release files.
    pub raw_dir: PathBuf,
    /// The release files.
    #[serde(default)]
    pub sources: Vec<SourceFile>,
    /// `[C, H, W]` of prepared images, when known before preparing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shape: Option<[usize; 3]>,
    /// Number of classes, when known before preparing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Free-form notes for the user (licence, how to obtain files by hand).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// A request to prepare a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// The directory to write `manifest.json` and the split files into.
    /// The host chooses it (it depends on the loader's settings) and creates it.
    pub cache_dir: PathBuf,
    /// Prepare again even when a valid cache is present.
    #[serde(default)]
    pub force: bool,
}

/// A source file's checksum as seen when preparing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceChecksum {
    /// File name, relative to the raw directory.
    pub name: String,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One split of a prepared dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    /// The safetensors file, relative to the manifest's directory.
    pub file: String,
    /// Number of examples.
    pub count: usize,
}

/// The manifest of a prepared dataset (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    /// [`PREPARED_FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// Short name, e.g. `fashion-mnist`.
    pub name: String,
    /// Prompt-template family.
    #[serde(default)]
    pub family: String,
    /// `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Number of classes.
    pub num_classes: usize,
    /// Class names, index = label.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Per-channel mean on the 0–1 scale (of the train split).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation on the 0–1 scale (of the train split).
    pub std: Vec<f32>,
    /// Splits by name: at least `train` and `test`.
    pub splits: BTreeMap<String, SplitManifest>,
    /// Checksums of the release files it was made from.
    #[serde(default)]
    pub sources: Vec<SourceChecksum>,
    /// Loader-specific facts (e.g. CelebA's label attribute).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl DatasetManifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<DatasetManifest, PluginError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::Io };
            PluginError::new(code, format!("{}: {e}", path.display()))
        })?;
        let manifest: DatasetManifest = serde_json::from_str(&text).map_err(|e| {
            PluginError::new(ErrorCode::Corrupt, format!("{}: not a dataset manifest: {e}", path.display()))
        })?;
        manifest.check().map_err(|e| PluginError::new(ErrorCode::Corrupt, format!("{}: {e}", path.display())))?;
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` (atomically: a temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<PathBuf, PluginError> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| PluginError::internal(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| PluginError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PluginError::io(&path, e))?;
        Ok(path)
    }

    /// Checks the manifest is self-consistent.
    pub fn check(&self) -> Result<(), String> {
        if self.format_version > PREPARED_FORMAT_VERSION {
            return Err(format!(
                "prepared with format version {}, this build reads up to {PREPARED_FORMAT_VERSION}",
                self.format_version
            ));
        }
        let channels = self.input_shape[0];
        if self.input_shape.contains(&0) {
            return Err(format!("input shape {:?} has a zero dimension", self.input_shape));
        }
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(format!("mean/std must have {channels} values, one per channel"));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("std values must be finite and positive".into());
        }
        if self.num_classes < 2 {
            return Err(format!("num_classes is {}, at least 2 are needed", self.num_classes));
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return Err(format!("{} class names for {} classes", self.class_names.len(), self.num_classes));
        }
        for split in ["train", "test"] {
            if !self.splits.contains_key(split) {
                return Err(format!("the `{split}` split is missing"));
            }
        }
        Ok(())
    }

    /// The path of a split's safetensors file.
    pub fn split_path(&self, dir: &Path, split: &str) -> Option<PathBuf> {
        self.splits.get(split).map(|s| dir.join(&s.file))
    }
}

/// A dataset loader: describes a dataset and prepares it once into the
/// prepared-dataset format.
pub trait DatasetLoader: Send {
    /// What the dataset is and which release files it needs.
    fn describe(&mut self) -> Result<DatasetDescription, PluginError>;

    /// Reads the release files and writes the prepared dataset into
    /// `request.cache_dir`. Returns the manifest it wrote.
    ///
    /// A missing, truncated or corrupt release file is an error naming the
    /// file ([`ErrorCode::NotFound`], [`ErrorCode::Corrupt`]).
    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError>;
}
