//! `data.image-folder` and `data.imagenette`: folders of JPEG/PNG images,
//! `root/<split>/<class>/*.{jpg,jpeg,png}`, decoded with the `image` crate,
//! converted to RGB, resized so the shorter side is `image_size` and
//! centre-cropped to `image_size` x `image_size`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, HostContext, PluginError, PrepareRequest,
    SourceChecksum, SourceFile,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::common::{settings_json, Common};
use crate::error::{io_error, not_found};
use crate::prepared::{DatasetParts, SplitData};
use crate::source::MAX_INFLATED_BYTES;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The ImageNette wnids and their class names, in label order.
pub const IMAGENETTE_CLASSES: [(&str, &str); 10] = [
    ("n01440764", "tench"),
    ("n02102040", "English springer"),
    ("n02979186", "cassette player"),
    ("n03000684", "chain saw"),
    ("n03028079", "church"),
    ("n03394916", "French horn"),
    ("n03417042", "garbage truck"),
    ("n03425413", "gas pump"),
    ("n03445777", "golf ball"),
    ("n03888605", "parachute"),
];

/// The class folders of one split: `(class folder name, image files)`,
/// sorted by name. A class folder without images is an error naming it.
pub fn scan_split(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, PluginError> {
    if !dir.is_dir() {
        return Err(not_found(dir, "expected a folder of class folders"));
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))? {
        let entry = entry.map_err(|e| io_error(dir, &e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let mut files = Vec::new();
        for f in std::fs::read_dir(&path).map_err(|e| io_error(&path, &e))? {
            let f = f.map_err(|e| io_error(&path, &e))?.path();
            let ext = f.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if f.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                files.push(f);
            }
        }
        if files.is_empty() {
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: empty class folder (no .jpg, .jpeg or .png files)", path.display()),
            ));
        }
        files.sort();
        classes.push((name, files));
    }
    if classes.is_empty() {
        return Err(PluginError::new(ErrorCode::Corrupt, format!("{}: no class folders", dir.display())));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(classes)
}

/// Decodes one image file to `[3, size, size]` bytes (RGB, shorter side
/// resized to `size`, centre crop). Returns the pixels and the file's sha256.
pub fn load_image(path: &Path, size: u32) -> Result<(Vec<u8>, [u8; 32]), PluginError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let img = image::load_from_memory(&bytes)
        .map_err(|e| PluginError::new(ErrorCode::Corrupt, format!("{}: unreadable image: {e}", path.display())))?;
    Ok((to_chw(&img.to_rgb8(), size), digest))
}

/// Resizes (shorter side to `size`), centre-crops and lays out as planes.
pub fn to_chw(rgb: &image::RgbImage, size: u32) -> Vec<u8> {
    let (w, h) = rgb.dimensions();
    let scale = size as f64 / w.min(h).max(1) as f64;
    let nw = ((w as f64 * scale).round() as u32).max(size);
    let nh = ((h as f64 * scale).round() as u32).max(size);
    let resized = if (nw, nh) == (w, h) {
        rgb.clone()
    } else {
        image::imageops::resize(rgb, nw, nh, image::imageops::FilterType::Triangle)
    };
    let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
    let s = size as usize;
    let mut out = vec![0u8; 3 * s * s];
    for y in 0..s {
        for x in 0..s {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                out[c * s * s + y * s + x] = p[c];
            }
        }
    }
    out
}

/// Decodes `files` (`(path, label)`) on `threads` threads into a split;
/// returns it with one checksum over every file (name `<split>/`).
pub fn decode_split(
    files: &[(PathBuf, i64)],
    size: u32,
    threads: usize,
    root: &Path,
    split_name: &str,
) -> Result<(SplitData, SourceChecksum), PluginError> {
    let per = 3 * (size as usize) * (size as usize);
    let mut images = vec![0u8; files.len() * per];
    let mut digests = vec![[0u8; 32]; files.len()];
    let chunk = files.len().div_ceil(threads.max(1)).max(1);
    let results: Vec<Result<(), PluginError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .zip(images.chunks_mut(chunk * per))
            .zip(digests.chunks_mut(chunk))
            .map(|((fs, out), dg)| {
                s.spawn(move || {
                    for (i, (path, _)) in fs.iter().enumerate() {
                        let (pixels, digest) = load_image(path, size)?;
                        out[i * per..(i + 1) * per].copy_from_slice(&pixels);
                        dg[i] = digest;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(PluginError::internal("decoder panicked"))))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let mut all = Sha256::new();
    let mut total = 0u64;
    for ((path, _), d) in files.iter().zip(&digests) {
        let rel = path.strip_prefix(root).unwrap_or(path);
        all.update(rel.to_string_lossy().as_bytes());
        all.update([0]);
        all.update(d);
        total += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    let checksum = SourceChecksum { name: format!("{split_name}/"), sha256: hex::encode(all.finalize()), size: total };
    Ok((SplitData { images, labels: files.iter().map(|f| f.1).collect() }, checksum))
}

/// Keeps at most `limit` of `items`, spread evenly over the (sorted) list.
pub fn spread<T: Clone>(items: Vec<T>, limit: Option<usize>) -> Vec<T> {
    match limit {
        Some(limit) if limit < items.len() => (0..limit).map(|i| items[i * items.len() / limit].clone()).collect(),
        _ => items,
    }
}

/// What [`read_folders`] read: class folder names, class names, splits,
/// one checksum per split.
type FolderData = (Vec<String>, Vec<String>, BTreeMap<String, SplitData>, Vec<SourceChecksum>);

/// Reads a whole image-folder dataset: `(split name in the manifest, folder
/// name on disk)` pairs; the classes are those of the first split.
fn read_folders(
    root: &Path,
    splits: &[(&str, &str)],
    size: u32,
    limit: Option<usize>,
    threads: usize,
    class_of: &dyn Fn(&str) -> String,
) -> Result<FolderData, PluginError> {
    let mut folders: Vec<String> = Vec::new();
    let mut out = BTreeMap::new();
    let mut sums = Vec::new();
    for (i, (split, on_disk)) in splits.iter().enumerate() {
        let dir = root.join(on_disk);
        let classes = scan_split(&dir)?;
        if i == 0 {
            folders = classes.iter().map(|c| c.0.clone()).collect();
            if folders.len() < 2 {
                return Err(PluginError::new(
                    ErrorCode::Corrupt,
                    format!("{}: {} class folder(s), at least 2 are needed", dir.display(), folders.len()),
                ));
            }
        }
        let mut files = Vec::new();
        for (name, paths) in classes {
            let label = folders.iter().position(|f| *f == name).ok_or_else(|| {
                PluginError::new(
                    ErrorCode::Corrupt,
                    format!("{}: class `{name}` is not among the {} classes", dir.join(&name).display(), splits[0].1),
                )
            })?;
            files.extend(paths.into_iter().map(|p| (p, label as i64)));
        }
        let files = spread(files, limit);
        let (data, sum) = decode_split(&files, size, threads, root, on_disk)?;
        out.insert(split.to_string(), data);
        sums.push(sum);
    }
    let names = folders.iter().map(|f| class_of(f)).collect();
    Ok((folders, names, out, sums))
}

fn check_size(id: &str, size: u32) -> Result<u32, PluginError> {
    if !(8..=1024).contains(&size) {
        return Err(PluginError::config(format!("[{id}] settings: `image_size` is {size}, expected 8..=1024")));
    }
    Ok(size)
}

fn default_folder_size() -> u32 {
    64
}
fn default_imagenette_size() -> u32 {
    160
}
fn default_train() -> String {
    "train".into()
}
fn default_test() -> String {
    "test".into()
}

/// Settings of `data.image-folder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSettings {
    /// The folder holding `<split>/<class>/*.jpg|png`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Dataset name in the manifest (default `image-folder`).
    #[serde(default)]
    pub name: Option<String>,
    /// Side of the square images written (default 64).
    #[serde(default = "default_folder_size")]
    pub image_size: u32,
    /// Folder of the train split (default `train`).
    #[serde(default = "default_train")]
    pub train_split: String,
    /// Folder of the test split (default `test`).
    #[serde(default = "default_test")]
    pub test_split: String,
    /// Keep at most this many images per split, spread over the classes.
    #[serde(default)]
    pub max_images_per_split: Option<usize>,
}

/// Settings of `data.imagenette`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagenetteSettings {
    /// Directory holding `imagenette2-160/` (or `imagenette2-160.tgz`, or
    /// `train/` and `val/` directly).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Side of the square images written (default 160, as in the paper).
    #[serde(default = "default_imagenette_size")]
    pub image_size: u32,
    /// Keep at most this many images per split, spread over the classes.
    #[serde(default)]
    pub max_images_per_split: Option<usize>,
}

/// `data.image-folder` or `data.imagenette`.
#[derive(Debug, Clone)]
pub struct FolderLoader {
    imagenette: bool,
    name: String,
    size: u32,
    splits: [String; 2],
    limit: Option<usize>,
    common: Common,
}

/// The ImageNette release folder and archive names.
pub const IMAGENETTE_DIR: &str = "imagenette2-160";
/// The ImageNette archive.
pub const IMAGENETTE_ARCHIVE: &str = "imagenette2-160.tgz";

impl FolderLoader {
    /// `data.image-folder`.
    pub fn image_folder(config: &serde_json::Value, ctx: &HostContext) -> Result<FolderLoader, PluginError> {
        let id = "data.image-folder";
        let s: FolderSettings = PluginError::parse_config(id, config)?;
        let size = check_size(id, s.image_size)?;
        let name = s.name.clone().unwrap_or_else(|| "image-folder".into());
        let common = Common::new(id, &name, s.root.as_deref(), None, settings_json(&s), ctx)?;
        Ok(FolderLoader {
            imagenette: false,
            name,
            size,
            splits: [s.train_split, s.test_split],
            limit: s.max_images_per_split,
            common,
        })
    }

    /// `data.imagenette`.
    pub fn imagenette(config: &serde_json::Value, ctx: &HostContext) -> Result<FolderLoader, PluginError> {
        let id = "data.imagenette";
        let s: ImagenetteSettings = PluginError::parse_config(id, config)?;
        let size = check_size(id, s.image_size)?;
        let common = Common::new(id, "imagenette", s.root.as_deref(), None, settings_json(&s), ctx)?;
        Ok(FolderLoader {
            imagenette: true,
            name: "imagenette".into(),
            size,
            splits: ["train".into(), "val".into()],
            limit: s.max_images_per_split,
            common,
        })
    }

    /// The folder holding the split folders (ImageNette: unpacks the archive
    /// on first use when only it is present).
    fn images_root(&self) -> Result<PathBuf, PluginError> {
        let raw = &self.common.raw_dir;
        if !self.imagenette || raw.join(&self.splits[0]).is_dir() {
            return Ok(raw.clone());
        }
        let dir = raw.join(IMAGENETTE_DIR);
        if dir.is_dir() {
            return Ok(dir);
        }
        let archive = raw.join(IMAGENETTE_ARCHIVE);
        if !archive.is_file() {
            return Err(not_found(
                &dir,
                &format!("nor {} is present; {}", archive.display(), self.common.fetch_hint()),
            ));
        }
        let corrupt = |e: std::io::Error| PluginError::new(ErrorCode::Corrupt, format!("{}: {e}", archive.display()));
        let file = std::fs::File::open(&archive).map_err(|e| io_error(&archive, &e))?;
        let gz = std::io::Read::take(flate2::read::GzDecoder::new(std::io::BufReader::new(file)), MAX_INFLATED_BYTES);
        let staging = raw.join(format!(".unpack-{}", std::process::id()));
        tar::Archive::new(gz).unpack(&staging).map_err(corrupt)?;
        let unpacked = staging.join(IMAGENETTE_DIR);
        if !unpacked.is_dir() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(PluginError::new(
                ErrorCode::Corrupt,
                format!("{}: the archive has no `{IMAGENETTE_DIR}/` folder", archive.display()),
            ));
        }
        std::fs::rename(&unpacked, &dir).map_err(|e| PluginError::io(&dir, e))?;
        let _ = std::fs::remove_dir_all(&staging);
        Ok(dir)
    }
}

impl DatasetLoader for FolderLoader {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        let s = self.size as usize;
        Ok(if self.imagenette {
            DatasetDescription {
                name: self.name.clone(),
                title: "ImageNette: 13,394 colour images of 10 easy ImageNet classes (160px release)".into(),
                family: "imagenette".into(),
                raw_dir: self.common.raw_dir.clone(),
                sources: vec![SourceFile {
                    name: IMAGENETTE_ARCHIVE.into(),
                    urls: vec![format!("https://s3.amazonaws.com/fast-ai-imageclas/{IMAGENETTE_ARCHIVE}")],
                    sha256: None,
                    size: None,
                    required: true,
                }],
                input_shape: Some([3, s, s]),
                num_classes: Some(10),
                notes: format!(
                    "Read from `{IMAGENETTE_DIR}/{{train,val}}/<wnid>/*.JPEG`; the archive is unpacked on first use. \
                     `val` becomes the test split. Images are resized (shorter side) and centre-cropped to {s}x{s}."
                ),
            }
        } else {
            DatasetDescription {
                name: self.name.clone(),
                title: format!("Image folder: {}/<class>/*.jpg|png, resized to {s}x{s}", self.splits[0]),
                family: "image-folder".into(),
                raw_dir: self.common.raw_dir.clone(),
                sources: Vec::new(),
                input_shape: Some([3, s, s]),
                num_classes: None,
                notes: format!(
                    "Put images under {}/{{{},{}}}/<class>/; class names are the folder names.",
                    self.common.raw_dir.display(),
                    self.splits[0],
                    self.splits[1]
                ),
            }
        })
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.common.prepare_with(request, || {
            let root = self.images_root()?;
            let imagenette = self.imagenette;
            let class_of = move |folder: &str| {
                if imagenette {
                    IMAGENETTE_CLASSES.iter().find(|c| c.0 == folder).map(|c| c.1.to_string()).unwrap_or(folder.into())
                } else {
                    folder.to_string()
                }
            };
            let (folders, class_names, splits, sources) = read_folders(
                &root,
                &[("train", &self.splits[0]), ("test", &self.splits[1])],
                self.size,
                self.limit,
                self.common.threads,
                &class_of,
            )?;
            let mut extra = BTreeMap::new();
            extra.insert("class_folders".into(), serde_json::json!(folders));
            let s = self.size as usize;
            Ok(DatasetParts {
                name: self.name.clone(),
                family: if imagenette { "imagenette" } else { "image-folder" }.into(),
                input_shape: [3, s, s],
                class_names,
                splits,
                sources,
                extra,
            })
        })
    }
}
