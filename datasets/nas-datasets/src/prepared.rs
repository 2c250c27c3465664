//! Writing and reading prepared datasets (the format documented in
//! `nas_plugin_api::dataset`): `manifest.json` plus one safetensors file per
//! split with `images` (`u8 [N, C, H, W]`) and `labels` (`i64 [N]`).
//!
//! [`write_prepared`] writes a whole dataset atomically: everything goes to a
//! temporary sibling directory, which then replaces the cache directory.
//! [`PreparedDataset::open`] memory-maps the split files and checks their
//! headers against the manifest without reading the pixels.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nas_plugin_api::{
    DatasetManifest, ErrorCode, PluginError, SourceChecksum, SplitManifest, MANIFEST_FILE, PREPARED_FORMAT_VERSION,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::io_error;

/// The key in [`DatasetManifest::extra`] holding the loader settings a cache
/// was made with; a cache is reused only when they are equal.
pub const SETTINGS_KEY: &str = "settings";
/// The key in [`DatasetManifest::extra`] holding the id of the loader.
pub const LOADER_KEY: &str = "loader";

/// One split held in memory before it is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SplitData {
    /// `N * C * H * W` pixel bytes, image after image, channel planes in order.
    pub images: Vec<u8>,
    /// `N` class indices.
    pub labels: Vec<i64>,
}

impl SplitData {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the split has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What a loader knows about its dataset once it has read it; completed into
/// a [`DatasetManifest`] by [`write_prepared`].
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetParts {
    /// Short name.
    pub name: String,
    /// Prompt-template family.
    pub family: String,
    /// `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Splits by name (at least `train` and `test`).
    pub splits: BTreeMap<String, SplitData>,
    /// Checksums of the release files read.
    pub sources: Vec<SourceChecksum>,
    /// Loader-specific facts, including [`SETTINGS_KEY`] and [`LOADER_KEY`].
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Per-channel mean and standard deviation on the 0–1 scale of `images`
/// (`[N, C, H*W]` bytes), computed exactly from per-channel histograms.
pub fn channel_stats(images: &[u8], channels: usize, plane: usize) -> (Vec<f32>, Vec<f32>) {
    let mut hist = vec![[0u64; 256]; channels];
    if channels > 0 && plane > 0 {
        for image in images.chunks_exact(channels * plane) {
            for (c, chunk) in image.chunks_exact(plane).enumerate() {
                let h = &mut hist[c];
                for &v in chunk {
                    h[v as usize] += 1;
                }
            }
        }
    }
    let mut mean = Vec::with_capacity(channels);
    let mut std = Vec::with_capacity(channels);
    for h in &hist {
        let n: u64 = h.iter().sum();
        if n == 0 {
            mean.push(0.0);
            std.push(1.0);
            continue;
        }
        let (mut s, mut s2) = (0f64, 0f64);
        for (v, &count) in h.iter().enumerate() {
            let x = v as f64 / 255.0;
            s += x * count as f64;
            s2 += x * x * count as f64;
        }
        let m = s / n as f64;
        let var = (s2 / n as f64 - m * m).max(0.0);
        let sd = var.sqrt();
        mean.push(m as f32);
        // A constant channel would make std zero; 1 keeps normalisation finite.
        std.push(if sd > 1e-6 { sd as f32 } else { 1.0 });
    }
    (mean, std)
}

/// Writes one split as a safetensors file.
pub fn write_split(path: &Path, split: &SplitData, shape: [usize; 3]) -> Result<(), PluginError> {
    let n = split.labels.len();
    let expected = n * shape[0] * shape[1] * shape[2];
    if split.images.len() != expected {
        return Err(PluginError::internal(format!(
            "{}: {} image bytes for {n} images of shape {shape:?} (expected {expected})",
            path.display(),
            split.images.len()
        )));
    }
    let label_bytes: Vec<u8> = split.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let bad = |e: safetensors::SafeTensorError| PluginError::internal(format!("{}: {e}", path.display()));
    let images = TensorView::new(Dtype::U8, vec![n, shape[0], shape[1], shape[2]], &split.images).map_err(bad)?;
    let labels = TensorView::new(Dtype::I64, vec![n], &label_bytes).map_err(bad)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "nas-prepared".to_string());
    safetensors::tensor::serialize_to_file([("images", images), ("labels", labels)], Some(meta), path)
        .map_err(|e| PluginError::io(path, e))
}

/// Writes a whole prepared dataset into `cache_dir`, atomically: the files go
/// to a temporary sibling directory which then replaces `cache_dir` (an
/// interrupted run leaves the old cache, or none, never a mix).
pub fn write_prepared(cache_dir: &Path, parts: DatasetParts) -> Result<DatasetManifest, PluginError> {
    let [c, h, w] = parts.input_shape;
    let train = parts
        .splits
        .get("train")
        .ok_or_else(|| PluginError::internal(format!("{}: no train split to write", parts.name)))?;
    let (mean, std) = channel_stats(&train.images, c, h * w);
    for (name, split) in &parts.splits {
        if let Some(bad) = split.labels.iter().find(|&&l| l < 0 || l as usize >= parts.class_names.len()) {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: split `{name}` has label {bad}, outside 0..{}", parts.name, parts.class_names.len()),
            ));
        }
    }
    let manifest = DatasetManifest {
        format_version: PREPARED_FORMAT_VERSION,
        name: parts.name.clone(),
        family: parts.family.clone(),
        input_shape: parts.input_shape,
        num_classes: parts.class_names.len(),
        class_names: parts.class_names.clone(),
        mean,
        std,
        splits: parts
            .splits
            .iter()
            .map(|(name, s)| (name.clone(), SplitManifest { file: format!("{name}.safetensors"), count: s.len() }))
            .collect(),
        sources: parts.sources.clone(),
        extra: parts.extra.clone(),
    };
    manifest
        .check()
        .map_err(|e| PluginError::new(ErrorCode::Corrupt, format!("{}: cannot prepare: {e}", parts.name)))?;

    let tmp = sibling(cache_dir, "tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| PluginError::io(&tmp, e))?;
    let written = (|| {
        let shape = parts.input_shape;
        let results: Vec<Result<(), PluginError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .splits
                .iter()
                .map(|(name, split)| {
                    let path = tmp.join(format!("{name}.safetensors"));
                    scope.spawn(move || write_split(&path, split, shape))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(PluginError::internal("a split writer panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        manifest.save(&tmp)?;
        swap_into_place(&tmp, cache_dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(manifest)
}

fn sibling(dir: &Path, what: &str) -> PathBuf {
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "prepared".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    dir.with_file_name(format!(".{base}.{what}-{}-{nanos}", std::process::id()))
}

fn swap_into_place(tmp: &Path, cache_dir: &Path) -> Result<(), PluginError> {
    let old = sibling(cache_dir, "old");
    let had_old = match std::fs::rename(cache_dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(PluginError::io(cache_dir, e)),
    };
    if let Err(e) = std::fs::rename(tmp, cache_dir) {
        if had_old {
            let _ = std::fs::rename(&old, cache_dir);
        }
        return Err(PluginError::io(cache_dir, e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// The manifest of a valid cache in `cache_dir` made by the same loader with
/// the same `settings`, whose split files open and whose release files (where
/// still present in `raw_dir`) have the recorded sizes; `None` otherwise.
pub fn reusable_cache(
    cache_dir: &Path,
    raw_dir: &Path,
    loader_id: &str,
    settings: &serde_json::Value,
) -> Option<DatasetManifest> {
    if !cache_dir.join(MANIFEST_FILE).is_file() {
        return None;
    }
    let dataset = PreparedDataset::open(cache_dir).ok()?;
    let manifest = dataset.manifest;
    if manifest.extra.get(LOADER_KEY) != Some(&serde_json::Value::String(loader_id.to_string()))
        || manifest.extra.get(SETTINGS_KEY) != Some(settings)
    {
        return None;
    }
    for source in &manifest.sources {
        if let Ok(meta) = std::fs::metadata(raw_dir.join(&source.name)) {
            if meta.is_file() && meta.len() != source.size {
                return None;
            }
        }
    }
    Some(manifest)
}

/// One split of an opened prepared dataset: its file, memory-mapped.
#[derive(Debug)]
pub struct PreparedSplit {
    path: PathBuf,
    map: Mmap,
    images: std::ops::Range<usize>,
    labels: std::ops::Range<usize>,
    count: usize,
    shape: [usize; 3],
}

impl PreparedSplit {
    /// Opens and checks a split file: `images` u8 `[count, C, H, W]` and
    /// `labels` i64 `[count]`.
    pub fn open(path: &Path, count: usize, shape: [usize; 3]) -> Result<PreparedSplit, PluginError> {
        let file = File::open(path).map_err(|e| io_error(path, &e))?;
        // SAFETY: the file is mapped read-only; prepared files are written once
        // into a fresh directory and never modified in place (a new cache
        // replaces the directory), so the mapping does not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| PluginError::io(path, e))?;
        let corrupt = |m: String| PluginError::new(ErrorCode::Corrupt, format!("{}: {m}", path.display()));
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| corrupt(format!("not a safetensors file: {e}")))?;
        let base = 8 + header_len;
        let range = |name: &str, dtype: Dtype, dims: Vec<usize>| {
            let info = meta.info(name).ok_or_else(|| corrupt(format!("no `{name}` tensor")))?;
            if info.dtype != dtype || info.shape != dims {
                return Err(corrupt(format!(
                    "`{name}` is {:?} {:?}, the manifest says {dtype:?} {dims:?}",
                    info.dtype, info.shape
                )));
            }
            let (a, b) = info.data_offsets;
            Ok(base + a..base + b)
        };
        let images = range("images", Dtype::U8, vec![count, shape[0], shape[1], shape[2]])?;
        let labels = range("labels", Dtype::I64, vec![count])?;
        if images.end > map.len() || labels.end > map.len() {
            return Err(corrupt("truncated".into()));
        }
        Ok(PreparedSplit { path: path.to_path_buf(), map, images, labels, count, shape })
    }

    /// The file this split was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.count
    }
    /// Whether the split has no examples.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// `[C, H, W]` of each image.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    /// All pixel bytes, `[N, C, H, W]`.
    pub fn images(&self) -> &[u8] {
        &self.map[self.images.clone()]
    }
    /// The pixel bytes of image `i` (`[C, H, W]`), `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.shape.iter().product::<usize>();
        (i < self.count).then(|| &self.images()[i * size..(i + 1) * size])
    }
    /// The label of example `i`, `None` past the end.
    pub fn label(&self, i: usize) -> Option<i64> {
        (i < self.count).then(|| {
            let at = self.labels.start + 8 * i;
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.map[at..at + 8]);
            i64::from_le_bytes(b)
        })
    }
    /// The raw little-endian bytes of the labels.
    pub fn label_bytes(&self) -> &[u8] {
        &self.map[self.labels.clone()]
    }
    /// All labels.
    pub fn labels(&self) -> Vec<i64> {
        self.label_bytes()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }
}

/// A prepared dataset opened for reading: the manifest and every split,
/// memory-mapped (opening reads only headers).
#[derive(Debug)]
pub struct PreparedDataset {
    /// The directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: DatasetManifest,
    splits: BTreeMap<String, PreparedSplit>,
}

impl PreparedDataset {
    /// Opens `dir`: reads and checks `manifest.json`, maps every split file
    /// and checks its tensors against the manifest.
    pub fn open(dir: &Path) -> Result<PreparedDataset, PluginError> {
        let manifest = DatasetManifest::load(dir)?;
        let mut splits = BTreeMap::new();
        for (name, split) in &manifest.splits {
            let path = dir.join(&split.file);
            splits.insert(name.clone(), PreparedSplit::open(&path, split.count, manifest.input_shape)?);
        }
        Ok(PreparedDataset { dir: dir.to_path_buf(), manifest, splits })
    }

    /// A split by name (`train`, `test`, ...).
    pub fn split(&self, name: &str) -> Option<&PreparedSplit> {
        self.splits.get(name)
    }

    /// The names of the splits.
    pub fn split_names(&self) -> impl Iterator<Item = &str> {
        self.splits.keys().map(String::as_str)
    }
}
