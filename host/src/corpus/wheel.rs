//! The LEMUR release that bundles its models and their training statistics:
//! the `nn-dataset==2.1.2` wheel from PyPI, fetched with a pinned sha256 and
//! read as a zip archive. Its Python package is never installed or imported.
//!
//! What the wheel holds, as this module reads it:
//!
//! - `ab/nn/nn/<model>.py`: one model per file, in LEMUR's contract
//!   (`Net(in_shape, out_shape, prm, device)` and a module-level
//!   `supported_hyperparameters()`); about 10,500 of them.
//! - `ab/nn/stat/train/<task>_<dataset>_<metric>_<model>/<epoch>.json`: per
//!   configuration and epoch, a JSON list of training runs, each an object
//!   with `accuracy` (0–1, after that epoch), the hyperparameters of the
//!   run (`lr`, `momentum`, `batch`, `dropout`, ... and `transform`),
//!   `duration` (ns) and `uid`; some carry `epoch`, the number of epochs
//!   the run was set up for (a run of 5 epochs has one entry in each of
//!   `1.json` … `5.json`, all with `"epoch": 5`). Image classification uses
//!   task `img-classification` and metric `acc`.
//!
//! The first-epoch accuracy of a model on a dataset is read from its
//! `1.json`: the best run's accuracy ([`Statistic::Best`], the default: what
//! the architecture reaches with the hyperparameters that suit it), or the
//! mean over its runs ([`Statistic::Mean`]). A run with no accuracy in 0–1
//! is skipped; a file that is not a JSON list is skipped; every skip is
//! counted.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;

use nas_plugin_api::SourceFile;
use serde_json::Value;

use super::CorpusError;
use crate::fetch::{self, FetchOptions};

/// The package, as pip names it.
pub const PACKAGE: &str = "nn-dataset==2.1.2";
/// The wheel's file name.
pub const WHEEL_FILE: &str = "nn_dataset-2.1.2-py3-none-any.whl";
/// Where PyPI serves it.
pub const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/1a/a5/c1bc9bbf68fa451a27ab9b2fb282270a5bd99c7e959152833d6bd1329f7c/nn_dataset-2.1.2-py3-none-any.whl";
/// Its sha256 (lower-case hex), as PyPI publishes it.
pub const WHEEL_SHA256: &str = "1f0b66a4f4de80a27b44a502112d4436eac1f97361ea3aae3266a550f01b07de";
/// Its size in bytes.
pub const WHEEL_SIZE: u64 = 102_904_100;

/// Where model files live inside the wheel.
pub const MODELS_DIR: &str = "ab/nn/nn/";
/// Where training statistics live inside the wheel.
pub const TRAIN_STATS_DIR: &str = "ab/nn/stat/train/";
/// The task of image classification statistics.
pub const CLASSIFICATION_TASK: &str = "img-classification";

/// The wheel as a file to fetch.
pub fn source() -> SourceFile {
    SourceFile {
        name: WHEEL_FILE.to_string(),
        urls: vec![WHEEL_URL.to_string()],
        sha256: Some(WHEEL_SHA256.to_string()),
        size: Some(WHEEL_SIZE),
        required: true,
    }
}

/// Where the wheel is kept: `$NAS_HOME/corpus`.
pub fn default_dir() -> PathBuf {
    crate::paths::nas_home().join("corpus")
}

/// Checks that `path` is the pinned wheel (size, then sha256).
pub fn verify(path: &Path) -> Result<(), CorpusError> {
    let (sha256, size) = fetch::sha256_file(path).map_err(|e| CorpusError::Fetch(e.to_string()))?;
    if size != WHEEL_SIZE || sha256 != WHEEL_SHA256 {
        return Err(CorpusError::WrongWheel {
            path: path.to_path_buf(),
            actual: format!("sha256 {sha256}, {size} bytes"),
        });
    }
    Ok(())
}

/// Makes sure the pinned wheel is in `dir` and returns its path: a verified
/// copy is kept; a copy with another hash is deleted and fetched again; a
/// missing one is downloaded from PyPI (resumable, verified; see
/// [`crate::fetch`]), and when PyPI's file host cannot be reached, asked of
/// pip (`pip download --no-deps`, which honours the user's index settings)
/// and verified the same.
pub fn ensure(dir: &Path, opts: &FetchOptions) -> Result<PathBuf, CorpusError> {
    let path = dir.join(WHEEL_FILE);
    if path.is_file() {
        match verify(&path) {
            Ok(()) => return Ok(path),
            Err(CorpusError::WrongWheel { .. }) => {
                std::fs::remove_file(&path).map_err(|source| CorpusError::Io { path: path.clone(), source })?;
            }
            Err(e) => return Err(e),
        }
    }
    match fetch::fetch_all(&[source()], dir, opts) {
        Ok(_) => {
            verify(&path)?;
            Ok(path)
        }
        Err(fetch::FetchError::Manual { reason, files }) => match pip_download(dir) {
            Ok(()) => {
                verify(&path)?;
                Ok(path)
            }
            Err(pip) => Err(CorpusError::Fetch(format!("{reason}; {pip}\n{}", fetch::manual_instructions(&files)))),
        },
        Err(e) => Err(CorpusError::Fetch(e.to_string())),
    }
}

/// The python whose pip downloads: `NAS_PYTHON`, `.venv/bin/python`, else
/// `python3`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("NAS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

/// `pip download --no-deps nn-dataset==2.1.2` into a folder beside the
/// wheel's place, then moves the wheel into place.
fn pip_download(dir: &Path) -> Result<(), String> {
    let tmp = dir.join(format!(".pip-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let python = python();
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&tmp)
        .arg(PACKAGE)
        .status();
    let got = tmp.join(WHEEL_FILE);
    let result = match status {
        Ok(s) if s.success() && got.is_file() => {
            std::fs::rename(&got, dir.join(WHEEL_FILE)).map_err(|e| format!("{}: {e}", dir.display()))
        }
        Ok(s) => Err(format!("`{} -m pip download {PACKAGE}` failed ({s})", python.display())),
        Err(e) => Err(format!("cannot run `{} -m pip`: {e} (set NAS_PYTHON)", python.display())),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Which number stands for a model's first-epoch accuracy when it was
/// trained several times (different hyperparameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Statistic {
    /// The best run's accuracy.
    #[default]
    Best,
    /// The mean over its runs.
    Mean,
}

impl Statistic {
    /// `best` or `mean`.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Best => "best",
            Statistic::Mean => "mean",
        }
    }
}

impl std::str::FromStr for Statistic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "best" => Ok(Statistic::Best),
            "mean" => Ok(Statistic::Mean),
            other => Err(format!("`{other}`: the statistic is `best` or `mean`")),
        }
    }
}

/// A model's first-epoch results on one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    /// The best run's accuracy (0–1).
    pub best: f64,
    /// The mean accuracy over its runs.
    pub mean: f64,
    /// How many runs.
    pub runs: usize,
    /// The best run's fields other than the accuracy (its hyperparameters,
    /// `transform`, `duration`, `uid`).
    pub best_run: serde_json::Map<String, Value>,
}

impl ModelStats {
    /// The accuracy that stands for the model.
    pub fn accuracy(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::Best => self.best,
            Statistic::Mean => self.mean,
        }
    }
}

/// The first-epoch statistics of one dataset, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct DatasetStats {
    /// Models with at least one usable run, by name.
    pub models: BTreeMap<String, ModelStats>,
    /// `1.json` files found for the dataset.
    pub files: usize,
    /// Files that could not be read or are not a JSON list (skipped).
    pub unreadable_files: usize,
    /// Files with no usable run (an empty list, or only skipped runs).
    pub empty_files: usize,
    /// Runs skipped: no numeric accuracy in 0–1.
    pub skipped_runs: usize,
}

/// The first-epoch statistics from the text of one `1.json`: `Ok(None)`
/// when it holds no usable run, `Err` when it is not a JSON list. Also
/// returns the runs skipped.
pub fn parse_first_epoch(text: &str) -> Result<(Option<ModelStats>, usize), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Array(runs) = value else {
        return Err("not a JSON list of runs".into());
    };
    let mut skipped = 0;
    let mut best: Option<(f64, serde_json::Map<String, Value>)> = None;
    let mut sum = 0.0;
    let mut n = 0usize;
    for run in runs {
        let Value::Object(mut fields) = run else {
            skipped += 1;
            continue;
        };
        let accuracy =
            fields.get("accuracy").and_then(Value::as_f64).filter(|a| a.is_finite() && (0.0..=1.0).contains(a));
        let Some(accuracy) = accuracy else {
            skipped += 1;
            continue;
        };
        fields.remove("accuracy");
        sum += accuracy;
        n += 1;
        if best.as_ref().is_none_or(|(b, _)| accuracy > *b) {
            best = Some((accuracy, fields));
        }
    }
    Ok((best.map(|(b, best_run)| ModelStats { best: b, mean: sum / n as f64, runs: n, best_run }), skipped))
}

/// The opened wheel: its model names and statistics folders, read from the
/// zip's central directory.
pub struct LemurWheel<R: Read + Seek> {
    path: PathBuf,
    zip: zip::ZipArchive<R>,
    models: Vec<String>,
    stats: Vec<String>,
}

impl<R: Read + Seek> std::fmt::Debug for LemurWheel<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LemurWheel({}, {} models)", self.path.display(), self.models.len())
    }
}

impl LemurWheel<std::io::BufReader<std::fs::File>> {
    /// Opens a wheel file.
    pub fn open(path: &Path) -> Result<Self, CorpusError> {
        let file = std::fs::File::open(path).map_err(|source| CorpusError::Io { path: path.to_path_buf(), source })?;
        LemurWheel::from_reader(path, std::io::BufReader::new(file))
    }
}

impl<R: Read + Seek> LemurWheel<R> {
    /// Reads a wheel's directory from `reader`; `path` names it in errors.
    pub fn from_reader(path: &Path, reader: R) -> Result<Self, CorpusError> {
        let zip = zip::ZipArchive::new(reader)
            .map_err(|e| CorpusError::CorruptWheel { path: path.to_path_buf(), message: e.to_string() })?;
        let mut models: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.strip_prefix(MODELS_DIR)?.strip_suffix(".py"))
            .filter(|m| !m.is_empty() && !m.contains('/') && !m.starts_with("__"))
            .map(str::to_string)
            .collect();
        models.sort();
        let mut stats: Vec<String> =
            zip.file_names().filter(|n| n.starts_with(TRAIN_STATS_DIR)).map(str::to_string).collect();
        stats.sort();
        Ok(LemurWheel { path: path.to_path_buf(), zip, models, stats })
    }

    /// The wheel's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every model's name (its file name without `.py`), sorted.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// A model's source; `Err` names why it could not be read (a damaged
    /// entry, not UTF-8).
    pub fn model_source(&mut self, model: &str) -> Result<String, String> {
        self.read_text(&format!("{MODELS_DIR}{model}.py"))
    }

    fn read_text(&mut self, name: &str) -> Result<String, String> {
        let mut entry = self.zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 24));
        entry.read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8"))
    }

    /// The image-classification datasets with first-epoch statistics, with
    /// how many configurations (model folders) each has.
    pub fn classification_datasets(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for name in &self.stats {
            if let Some((dataset, _)) = first_epoch_file(name) {
                *out.entry(dataset.to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// The first-epoch statistics of every model on a LEMUR dataset
    /// (`cifar-10`, `mnist`, ...). Damaged and unexpected files are skipped
    /// and counted; statistics of a model with no source file are dropped.
    pub fn first_epoch_stats(&mut self, dataset: &str) -> DatasetStats {
        let files: Vec<(String, String)> = self
            .stats
            .iter()
            .filter_map(|n| first_epoch_file(n).filter(|(d, _)| *d == dataset).map(|(_, m)| (n.clone(), m.to_string())))
            .collect();
        let mut out = DatasetStats { files: files.len(), ..Default::default() };
        for (file, model) in files {
            let parsed = self.read_text(&file).and_then(|t| parse_first_epoch(&t));
            match parsed {
                Err(_) => out.unreadable_files += 1,
                Ok((stats, skipped)) => {
                    out.skipped_runs += skipped;
                    match stats {
                        Some(s) if self.models.binary_search(&model).is_ok() => {
                            out.models.insert(model, s);
                        }
                        Some(_) | None => out.empty_files += 1,
                    }
                }
            }
        }
        out
    }
}

/// `(dataset, model)` of an image-classification accuracy `1.json` path.
fn first_epoch_file(name: &str) -> Option<(&str, &str)> {
    let folder = name.strip_prefix(TRAIN_STATS_DIR)?.strip_suffix("/1.json")?;
    let rest = folder.strip_prefix(CLASSIFICATION_TASK)?.strip_prefix('_')?;
    let (dataset, rest) = rest.split_once('_')?;
    let model = rest.strip_prefix("acc_")?;
    (!model.is_empty() && !model.contains('/')).then_some((dataset, model))
}

/// How a nas dataset maps onto LEMUR's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetMatch {
    /// LEMUR has statistics for this dataset under this name.
    Same {
        /// LEMUR's name.
        lemur: String,
        /// A remark on the match, when it is not exact.
        note: Option<&'static str>,
    },
    /// LEMUR has none; the nearest dataset that has some.
    Nearest {
        /// LEMUR's name of the nearest dataset.
        lemur: &'static str,
        /// Why it is the nearest.
        why: &'static str,
    },
    /// LEMUR has none and nothing is near.
    None,
}

/// Maps a nas dataset name (`cifar10`, `fashion-mnist`, `data.mnist`, ...)
/// or a LEMUR name onto LEMUR's statistics. `family` is the loader's
/// prompt family (`mnist`, `cifar`, `imagenette`), for the nearest match of
/// an unknown dataset.
pub fn match_dataset(name: &str, family: &str) -> DatasetMatch {
    let name = name.strip_prefix("data.").unwrap_or(name).to_ascii_lowercase();
    let same = |lemur: &str| DatasetMatch::Same { lemur: lemur.to_string(), note: None };
    match name.as_str() {
        "cifar10" | "cifar-10" => same("cifar-10"),
        "cifar100" | "cifar-100" => same("cifar-100"),
        "mnist" => same("mnist"),
        "svhn" => same("svhn"),
        "imagenette" => same("imagenette"),
        "places365" | "places-365" => same("places365"),
        "celeba-gender" => same("celeba-gender"),
        "celeba" => DatasetMatch::Same {
            lemur: "celeba-gender".to_string(),
            note: Some("LEMUR's CelebA statistics are for the gender label (`Male`); the architectures are binary CelebA classifiers for any attribute"),
        },
        "fashion-mnist" | "fashionmnist" | "fmnist" => DatasetMatch::Nearest {
            lemur: "mnist",
            why: "MNIST has the same shape: 28x28 grayscale, 10 classes",
        },
        _ => match family {
            "mnist" => DatasetMatch::Nearest { lemur: "mnist", why: "the same prompt family (small grayscale images)" },
            "cifar" => DatasetMatch::Nearest { lemur: "cifar-10", why: "the same prompt family (32x32 colour images)" },
            "imagenette" => {
                DatasetMatch::Nearest { lemur: "imagenette", why: "the same prompt family (larger colour images)" }
            }
            _ => DatasetMatch::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in files {
            w.start_file(*name, opts).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn first_epoch_statistics_take_the_best_and_the_mean_and_skip_what_they_cannot_read() {
        let text = r#"[{"accuracy": 0.5, "lr": 0.1, "batch": 64, "uid": "a"},
                       {"accuracy": 0.7, "lr": 0.01, "dropout": 0.2, "uid": "b"},
                       {"accuracy": 0.3, "epoch": 5},
                       {"accuracy": "high"}, {"lr": 0.1}, 3, {"accuracy": 1.5}]"#;
        let (stats, skipped) = parse_first_epoch(text).expect("a list");
        let stats = stats.expect("usable runs");
        assert_eq!(skipped, 4);
        assert_eq!(stats.runs, 3);
        assert_eq!(stats.best, 0.7);
        assert!((stats.mean - 0.5).abs() < 1e-12);
        assert_eq!(stats.best_run.get("dropout").and_then(Value::as_f64), Some(0.2));
        assert!(!stats.best_run.contains_key("accuracy"));
        assert_eq!(stats.accuracy(Statistic::Mean), stats.mean);
        assert_eq!(parse_first_epoch("[]").expect("list"), (None, 0));
        assert!(parse_first_epoch("{\"accuracy\": 1}").is_err());
        assert!(parse_first_epoch("[{\"accura").is_err());
    }

    #[test]
    fn a_wheel_is_read_from_its_directory_and_damaged_files_are_counted() {
        let good = br#"[{"accuracy": 0.61, "lr": 0.01}]"#;
        let bytes = wheel(&[
            ("ab/nn/nn/A.py", b"class Net: pass\n"),
            ("ab/nn/nn/B-1234.py", b"class Net: pass\n"),
            ("ab/nn/nn/__init__.py", b""),
            ("ab/nn/nn/sub/C.py", b""),
            ("ab/nn/stat/train/img-classification_cifar-10_acc_A/1.json", good),
            ("ab/nn/stat/train/img-classification_cifar-10_acc_A/2.json", good),
            ("ab/nn/stat/train/img-classification_cifar-10_acc_B-1234/1.json", b"not json"),
            ("ab/nn/stat/train/img-classification_cifar-10_acc_Gone/1.json", good),
            ("ab/nn/stat/train/img-classification_mnist_acc_A/1.json", b"[]"),
            ("ab/nn/stat/train/img-captioning_coco_bleu_A/1.json", good),
        ]);
        let mut w = LemurWheel::from_reader(Path::new("x.whl"), Cursor::new(bytes)).expect("opens");
        assert_eq!(w.models(), ["A", "B-1234"]);
        assert_eq!(w.classification_datasets(), BTreeMap::from([("cifar-10".into(), 3), ("mnist".into(), 1)]));
        let s = w.first_epoch_stats("cifar-10");
        assert_eq!((s.files, s.unreadable_files, s.empty_files), (3, 1, 1));
        assert_eq!(s.models.keys().collect::<Vec<_>>(), ["A"]);
        assert_eq!(s.models["A"].best, 0.61);
        assert_eq!(w.first_epoch_stats("mnist").empty_files, 1);
        assert_eq!(w.model_source("A").as_deref(), Ok("class Net: pass\n"));
        assert!(w.model_source("Nope").is_err());
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_a_clear_error_naming_it() {
        let err = LemurWheel::from_reader(Path::new("/x/broken.whl"), Cursor::new(b"PK\x03\x04 cut".to_vec()))
            .expect_err("not a zip");
        assert!(err.to_string().contains("/x/broken.whl"), "{err}");
    }

    #[test]
    fn dataset_names_map_onto_lemur_and_fashion_mnist_offers_mnist() {
        assert_eq!(match_dataset("cifar10", "cifar"), DatasetMatch::Same { lemur: "cifar-10".into(), note: None });
        assert_eq!(match_dataset("data.cifar100", ""), DatasetMatch::Same { lemur: "cifar-100".into(), note: None });
        assert!(
            matches!(match_dataset("celeba", "imagenette"), DatasetMatch::Same { ref lemur, note: Some(_) } if lemur == "celeba-gender")
        );
        assert!(matches!(match_dataset("fashion-mnist", "mnist"), DatasetMatch::Nearest { lemur: "mnist", .. }));
        assert!(matches!(
            match_dataset("image-folder", "imagenette"),
            DatasetMatch::Nearest { lemur: "imagenette", .. }
        ));
        assert_eq!(match_dataset("tiny", ""), DatasetMatch::None);
    }

    #[test]
    fn statistic_files_name_their_dataset_and_model() {
        assert_eq!(
            first_epoch_file("ab/nn/stat/train/img-classification_celeba-gender_acc_Net-x_y/1.json"),
            Some(("celeba-gender", "Net-x_y"))
        );
        assert_eq!(first_epoch_file("ab/nn/stat/train/img-classification_mnist_acc_A/2.json"), None);
        assert_eq!(first_epoch_file("ab/nn/stat/train/img-segmentation_coco_iou_A/1.json"), None);
    }
}
