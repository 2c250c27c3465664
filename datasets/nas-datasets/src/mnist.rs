//! `data.mnist` and `data.fashion-mnist`: the IDX releases (gzipped or raw).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, HostContext, PluginError, PrepareRequest, SourceFile,
};
use serde::{Deserialize, Serialize};

use crate::common::{settings_json, Common};
use crate::error::not_found;
use crate::idx::{parse_header, parse_idx};
use crate::prepared::{DatasetParts, SplitData};
use crate::source::{find_gz_or_plain, gunzip_if_needed, read_source};

/// Debian's `dataset-fashion-mnist` package puts the release here.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The Fashion-MNIST class names, index = label.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One IDX dataset: its names and release files.
#[derive(Debug, Clone, Copy)]
pub struct IdxSpec {
    /// Plugin id.
    pub id: &'static str,
    /// Dataset name.
    pub name: &'static str,
    /// One line for `nas data list`.
    pub title: &'static str,
    /// Download bases, canonical first (each ends with `/`).
    pub url_bases: &'static [&'static str],
    /// `(file, sha256, size)` of the four gzipped files: train images, train
    /// labels, test images, test labels.
    pub files: [(&'static str, &'static str, u64); 4],
    /// Class names.
    pub classes: [&'static str; 10],
    /// A directory used when no `root` is set and it exists.
    pub fallback_root: Option<&'static str>,
}

/// Fashion-MNIST (Zalando): checksums as published with the release.
pub const FASHION_MNIST: IdxSpec = IdxSpec {
    id: "data.fashion-mnist",
    name: "fashion-mnist",
    title: "Fashion-MNIST: 70,000 28x28 grey images of clothing, 10 classes",
    url_bases: &[
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
    files: [
        ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    ],
    classes: FASHION_CLASSES,
    fallback_root: Some(DEBIAN_FASHION_MNIST),
};

/// MNIST (LeCun, Cortes, Burges).
pub const MNIST: IdxSpec = IdxSpec {
    id: "data.mnist",
    name: "mnist",
    title: "MNIST: 70,000 28x28 grey images of handwritten digits, 10 classes",
    url_bases: &[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    files: [
        ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    ],
    classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    fallback_root: None,
};

/// Settings of `data.mnist` / `data.fashion-mnist`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSettings {
    /// Directory holding the four IDX files (`.gz` or uncompressed).
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// A loader for an IDX dataset.
#[derive(Debug, Clone)]
pub struct IdxLoader {
    spec: IdxSpec,
    common: Common,
}

impl IdxLoader {
    /// A loader of `spec` with the plugin's settings table.
    pub fn new(spec: IdxSpec, config: &serde_json::Value, ctx: &HostContext) -> Result<IdxLoader, PluginError> {
        let settings: IdxSettings = PluginError::parse_config(spec.id, config)?;
        let fallback = spec.fallback_root.map(Path::new);
        let common =
            Common::new(spec.id, spec.name, settings.root.as_deref(), fallback, settings_json(&settings), ctx)?;
        Ok(IdxLoader { spec, common })
    }

    fn read_split(
        &self,
        images: &str,
        labels: &str,
    ) -> Result<(SplitData, [usize; 2], Vec<nas_plugin_api::SourceChecksum>), PluginError> {
        let raw = &self.common.raw_dir;
        let find = |name: &str| {
            let stem = name.trim_end_matches(".gz");
            find_gz_or_plain(raw, stem).ok_or_else(|| not_found(&raw.join(name), &self.common.fetch_hint()))
        };
        let (images_name, labels_name) = (find(images)?, find(labels)?);
        let img_src = read_source(raw, &images_name)?;
        let lbl_src = read_source(raw, &labels_name)?;
        let (img_path, lbl_path) = (img_src.path.clone(), lbl_src.path.clone());
        let img = gunzip_if_needed(img_src.bytes, 48 << 20).map_err(|e| e.at(&img_path))?;
        // Check the header before parsing so a label file passed as images is named clearly.
        let (dims, _) = parse_header(&img).map_err(|e| e.at(&img_path))?;
        if dims.len() != 3 {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: an image file has 3 dimensions [N, H, W], this one has {dims:?}", img_path.display()),
            ));
        }
        let img = parse_idx(img).map_err(|e| e.at(&img_path))?;
        let lbl = gunzip_if_needed(lbl_src.bytes, 1 << 20).map_err(|e| e.at(&lbl_path))?;
        let lbl = parse_idx(lbl).map_err(|e| e.at(&lbl_path))?;
        if lbl.dims.len() != 1 {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: a label file has 1 dimension [N], this one has {:?}", lbl_path.display(), lbl.dims),
            ));
        }
        if lbl.dims[0] != img.dims[0] {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!(
                    "{}: {} labels for {} images in {}",
                    lbl_path.display(),
                    lbl.dims[0],
                    img.dims[0],
                    img_path.display()
                ),
            ));
        }
        if let Some(bad) = lbl.data.iter().find(|&&l| l as usize >= self.spec.classes.len()) {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: label {bad} is outside 0..{}", lbl_path.display(), self.spec.classes.len()),
            ));
        }
        let labels = lbl.data.iter().map(|&l| i64::from(l)).collect();
        Ok((
            SplitData { images: img.data, labels },
            [img.dims[1], img.dims[2]],
            vec![img_src.checksum, lbl_src.checksum],
        ))
    }
}

impl DatasetLoader for IdxLoader {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        let sources = self
            .spec
            .files
            .iter()
            .map(|&(name, sha, size)| SourceFile {
                name: name.to_string(),
                urls: self.spec.url_bases.iter().map(|b| format!("{b}{name}")).collect(),
                sha256: Some(sha.to_string()),
                size: Some(size),
                required: true,
            })
            .collect();
        Ok(DatasetDescription {
            name: self.spec.name.to_string(),
            title: self.spec.title.to_string(),
            family: "mnist".to_string(),
            raw_dir: self.common.raw_dir.clone(),
            sources,
            input_shape: Some([1, 28, 28]),
            num_classes: Some(10),
            notes: "IDX files, gzipped or not (`train-images-idx3-ubyte[.gz]`, ...). Repackaged copies (such as \
                    Debian's) may differ in their gzip bytes and so in checksum; they are read all the same."
                .to_string(),
        })
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.common.prepare_with(request, || {
            let [ti, tl, si, sl] = self.spec.files.map(|f| f.0);
            let (train, test) = std::thread::scope(|s| {
                let test = s.spawn(|| self.read_split(si, sl));
                let train = self.read_split(ti, tl);
                (train, test.join().unwrap_or_else(|_| Err(PluginError::internal("IDX reader panicked"))))
            });
            let (train, train_hw, mut sources) = train?;
            let (test, test_hw, test_sources) = test?;
            if train_hw != test_hw {
                return Err(PluginError::new(
                    ErrorCode::Corrupt,
                    format!(
                        "{}: train images are {train_hw:?} but test images are {test_hw:?}",
                        self.common.raw_dir.display()
                    ),
                ));
            }
            sources.extend(test_sources);
            let mut splits = BTreeMap::new();
            splits.insert("train".to_string(), train);
            splits.insert("test".to_string(), test);
            Ok(DatasetParts {
                name: self.spec.name.to_string(),
                family: "mnist".to_string(),
                input_shape: [1, train_hw[0], train_hw[1]],
                class_names: self.spec.classes.iter().map(|c| c.to_string()).collect(),
                splits,
                sources,
                extra: BTreeMap::new(),
            })
        })
    }
}
