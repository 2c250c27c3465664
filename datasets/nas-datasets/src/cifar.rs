//! `data.cifar10` and `data.cifar100`: the CIFAR binary release, read from
//! the extracted folder or straight from the `.tar.gz`.
//!
//! A binary batch is a run of fixed-size records: the label byte(s) — one
//! for CIFAR-10; coarse then fine for CIFAR-100 — then 3072 pixel bytes,
//! the 32x32 red plane, then green, then blue (already `[C, H, W]`).
//! The python-pickle release (`cifar-10-batches-py/`, `cifar-100-python/`
//! or their `.tar.gz`) is read too, with the strict reader of
//! [`crate::pickle`]; the binary release is preferred when both are present.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, HostContext, PluginError, PrepareRequest,
    SourceChecksum, SourceFile,
};
use serde::{Deserialize, Serialize};

use crate::common::{settings_json, Common};
use crate::error::{not_found, FormatError};
use crate::prepared::{DatasetParts, SplitData};
use crate::source::{read_source, MAX_INFLATED_BYTES};

/// Pixel bytes per CIFAR image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// The CIFAR-10 class names.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The CIFAR-100 coarse (superclass) names.
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// The CIFAR-100 fine class names.
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// Parses a binary batch: `label_bytes` label bytes per record (the label is
/// the one at `label_index`), then [`IMAGE_BYTES`] pixels. Labels must be
/// below `num_classes`.
pub fn parse_batch(
    bytes: &[u8],
    label_bytes: usize,
    label_index: usize,
    num_classes: usize,
) -> Result<SplitData, FormatError> {
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(FormatError::Invalid("empty batch file".into()));
    }
    if !bytes.len().is_multiple_of(record) {
        let whole = bytes.len() / record;
        return Err(FormatError::truncated(
            format!("record {} of {record} bytes", whole + 1),
            ((whole + 1) * record) as u64,
            bytes.len() as u64,
        ));
    }
    let n = bytes.len() / record;
    let mut split = SplitData { images: Vec::with_capacity(n * IMAGE_BYTES), labels: Vec::with_capacity(n) };
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = r[label_index] as usize;
        if label >= num_classes {
            return Err(FormatError::Invalid(format!("record {i}: label {label} is outside 0..{num_classes}")));
        }
        split.labels.push(label as i64);
        split.images.extend_from_slice(&r[label_bytes..]);
    }
    Ok(split)
}

/// Parses a batch of the python-pickle release: a dict with `data` (numpy
/// uint8 `[N, 3072]`) and the list `label_key` (`labels`, `fine_labels` or
/// `coarse_labels`).
pub fn parse_pickled_batch(bytes: &[u8], label_key: &str, num_classes: usize) -> Result<SplitData, FormatError> {
    let value = crate::pickle::parse_pickle(bytes)?;
    let data = value.get("data").ok_or_else(|| FormatError::Invalid("the pickled dict has no `data`".into()))?;
    let (shape, pixels) = crate::pickle::numpy_u8(data)?;
    if shape.len() != 2 || shape[1] != IMAGE_BYTES {
        return Err(FormatError::Invalid(format!("`data` has shape {shape:?}, expected [N, {IMAGE_BYTES}]")));
    }
    let labels =
        value.get(label_key).ok_or_else(|| FormatError::Invalid(format!("the pickled dict has no `{label_key}`")))?;
    let labels = crate::pickle::int_list(labels)?;
    if labels.len() != shape[0] {
        return Err(FormatError::WrongSize(format!("{} labels for {} images", labels.len(), shape[0])));
    }
    if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= num_classes) {
        return Err(FormatError::Invalid(format!("label {bad} is outside 0..{num_classes}")));
    }
    Ok(SplitData { images: pixels, labels })
}

/// Batch files by name: where they were read from and their bytes.
type BatchFiles = HashMap<String, (PathBuf, Vec<u8>)>;

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// CIFAR-10.
    Ten,
    /// CIFAR-100 with fine (100) or coarse (20) labels.
    Hundred {
        /// Coarse labels instead of fine.
        coarse: bool,
    },
}

/// `label_mode` of CIFAR-100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelMode {
    /// The 100 classes.
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// Settings of `data.cifar10`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cifar10Settings {
    /// Directory holding `cifar-10-batches-bin/` or `cifar-10-binary.tar.gz`.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// Settings of `data.cifar100`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cifar100Settings {
    /// Directory holding `cifar-100-binary/` or `cifar-100-binary.tar.gz`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// `fine` (100 classes, default) or `coarse` (20 superclasses).
    #[serde(default)]
    pub label_mode: LabelMode,
}

/// A CIFAR loader.
#[derive(Debug, Clone)]
pub struct CifarLoader {
    variant: Variant,
    common: Common,
}

impl CifarLoader {
    /// `data.cifar10`.
    pub fn cifar10(config: &serde_json::Value, ctx: &HostContext) -> Result<CifarLoader, PluginError> {
        let s: Cifar10Settings = PluginError::parse_config("data.cifar10", config)?;
        let common = Common::new("data.cifar10", "cifar10", s.root.as_deref(), None, settings_json(&s), ctx)?;
        Ok(CifarLoader { variant: Variant::Ten, common })
    }

    /// `data.cifar100`.
    pub fn cifar100(config: &serde_json::Value, ctx: &HostContext) -> Result<CifarLoader, PluginError> {
        let s: Cifar100Settings = PluginError::parse_config("data.cifar100", config)?;
        let common = Common::new("data.cifar100", "cifar100", s.root.as_deref(), None, settings_json(&s), ctx)?;
        Ok(CifarLoader { variant: Variant::Hundred { coarse: s.label_mode == LabelMode::Coarse }, common })
    }

    fn dir_and_archive(&self) -> (&'static str, &'static str) {
        self.layout(false).0
    }

    /// `((folder, archive), [(split, batch files)])` of the binary release,
    /// or of the python-pickle one.
    #[allow(clippy::type_complexity)]
    fn layout(&self, python: bool) -> ((&'static str, &'static str), Vec<(&'static str, Vec<&'static str>)>) {
        match (self.variant, python) {
            (Variant::Ten, false) => (
                ("cifar-10-batches-bin", "cifar-10-binary.tar.gz"),
                vec![
                    (
                        "train",
                        vec![
                            "data_batch_1.bin",
                            "data_batch_2.bin",
                            "data_batch_3.bin",
                            "data_batch_4.bin",
                            "data_batch_5.bin",
                        ],
                    ),
                    ("test", vec!["test_batch.bin"]),
                ],
            ),
            (Variant::Ten, true) => (
                ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
                vec![
                    ("train", vec!["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]),
                    ("test", vec!["test_batch"]),
                ],
            ),
            (Variant::Hundred { .. }, false) => (
                ("cifar-100-binary", "cifar-100-binary.tar.gz"),
                vec![("train", vec!["train.bin"]), ("test", vec!["test.bin"])],
            ),
            (Variant::Hundred { .. }, true) => (
                ("cifar-100-python", "cifar-100-python.tar.gz"),
                vec![("train", vec!["train"]), ("test", vec!["test"])],
            ),
        }
    }

    /// Which release is present, binary first: `Some(python)`.
    fn release(&self) -> Option<bool> {
        let raw = &self.common.raw_dir;
        [false, true]
            .into_iter()
            .find(|&py| raw.join(self.layout(py).0 .0).is_dir())
            .or_else(|| [false, true].into_iter().find(|&py| raw.join(self.layout(py).0 .1).is_file()))
    }

    fn class_names(&self) -> Vec<String> {
        let names: &[&str] = match self.variant {
            Variant::Ten => &CIFAR10_CLASSES,
            Variant::Hundred { coarse: true } => &CIFAR100_COARSE,
            Variant::Hundred { coarse: false } => &CIFAR100_FINE,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Reads the batch files: `(name relative to the extracted folder, bytes)`
    /// and the checksums of what was read.
    fn read_files(&self) -> Result<(BatchFiles, Vec<SourceChecksum>), PluginError> {
        let raw = &self.common.raw_dir;
        let python = self.release().unwrap_or(false);
        let ((dir, archive), batches) = self.layout(python);
        let wanted: Vec<&str> = batches.into_iter().flat_map(|(_, f)| f).collect();
        if raw.join(dir).is_dir() {
            let mut files = HashMap::new();
            let mut sums = Vec::new();
            for name in wanted {
                let rel = format!("{dir}/{name}");
                let src = read_source(raw, &rel)?;
                sums.push(src.checksum);
                files.insert(name.to_string(), (src.path, src.bytes));
            }
            return Ok((files, sums));
        }
        let archive_path = raw.join(archive);
        if !archive_path.is_file() {
            return Err(not_found(
                &raw.join(dir),
                &format!(
                    "nor {} is present (nor the python release `{}`); {}",
                    archive_path.display(),
                    self.layout(true).0 .0,
                    self.common.fetch_hint()
                ),
            ));
        }
        let src = read_source(raw, archive)?;
        let path = src.path.clone();
        let corrupt = |e: std::io::Error| PluginError::new(ErrorCode::Corrupt, format!("{}: {e}", path.display()));
        let gz = flate2::read::GzDecoder::new(&src.bytes[..]).take(MAX_INFLATED_BYTES);
        let mut tar = tar::Archive::new(gz);
        let mut files = HashMap::new();
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let entry_path = entry.path().map_err(corrupt)?.to_string_lossy().into_owned();
            let Some(name) = entry_path.rsplit('/').next().filter(|n| wanted.contains(n)) else { continue };
            let name = name.to_string();
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(corrupt)?;
            files.insert(name, (path.join(&entry_path), bytes));
        }
        for name in wanted {
            if !files.contains_key(name) {
                return Err(PluginError::new(
                    ErrorCode::Corrupt,
                    format!("{}: the archive has no `{dir}/{name}`", path.display()),
                ));
            }
        }
        Ok((files, vec![src.checksum]))
    }
}

impl DatasetLoader for CifarLoader {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        let (_, archive) = self.dir_and_archive();
        let (sha, size, title) = match self.variant {
            Variant::Ten => (
                Some("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
                Some(170052171),
                "CIFAR-10: 60,000 32x32 colour images, 10 classes",
            ),
            Variant::Hundred { .. } => (
                Some("58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
                None,
                "CIFAR-100: 60,000 32x32 colour images, 100 classes (20 superclasses)",
            ),
        };
        Ok(DatasetDescription {
            name: self.common.name.clone(),
            title: title.to_string(),
            family: "cifar".to_string(),
            raw_dir: self.common.raw_dir.clone(),
            sources: vec![SourceFile {
                name: archive.to_string(),
                urls: vec![format!("https://www.cs.toronto.edu/~kriz/{archive}")],
                sha256: sha.map(str::to_string),
                size,
                required: true,
            }],
            input_shape: Some([3, 32, 32]),
            num_classes: Some(self.class_names().len()),
            notes: format!(
                "The binary release, read from `{}/` or straight from `{archive}` (no need to extract).",
                self.dir_and_archive().0
            ),
        })
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.common.prepare_with(request, || {
            let (files, sources) = self.read_files()?;
            let (label_bytes, label_index) = match self.variant {
                Variant::Ten => (1, 0),
                Variant::Hundred { coarse: true } => (2, 0),
                Variant::Hundred { coarse: false } => (2, 1),
            };
            let classes = self.class_names();
            let python = self.release().unwrap_or(false);
            let label_key = match self.variant {
                Variant::Ten => "labels",
                Variant::Hundred { coarse: true } => "coarse_labels",
                Variant::Hundred { coarse: false } => "fine_labels",
            };
            let mut splits = BTreeMap::new();
            for (split, names) in self.layout(python).1 {
                let mut data = SplitData::default();
                for name in names {
                    let (path, bytes) = files.get(name).expect("read_files returns every wanted batch");
                    let part = if python {
                        parse_pickled_batch(bytes, label_key, classes.len())
                    } else {
                        parse_batch(bytes, label_bytes, label_index, classes.len())
                    }
                    .map_err(|e| e.at(path))?;
                    data.images.extend(part.images);
                    data.labels.extend(part.labels);
                }
                splits.insert(split.to_string(), data);
            }
            let mut extra = BTreeMap::new();
            if let Variant::Hundred { coarse } = self.variant {
                extra.insert("label_mode".into(), serde_json::json!(if coarse { "coarse" } else { "fine" }));
            }
            Ok(DatasetParts {
                name: self.common.name.clone(),
                family: "cifar".to_string(),
                input_shape: [3, 32, 32],
                class_names: classes,
                splits,
                sources,
                extra,
            })
        })
    }
}
