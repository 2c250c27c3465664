//! `data.celeba`: CelebA's aligned faces with one of its 40 binary
//! attributes as the label (default `Smiling`: label 1 = smiling, 0 = not).
//!
//! Reads `img_align_celeba/*.jpg`, `list_attr_celeba.txt` (a count line,
//! the attribute names, then `<file> ±1 ...` per image) and
//! `list_eval_partition.txt` (`<file> 0|1|2`: train, val, test).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, HostContext, PluginError, PrepareRequest, SourceFile,
};
use serde::{Deserialize, Serialize};

use crate::common::{settings_json, Common};
use crate::error::{not_found, FormatError};
use crate::folder::{decode_split, spread};
use crate::prepared::DatasetParts;
use crate::source::read_source;

/// The attribute used when none is configured.
pub const DEFAULT_ATTRIBUTE: &str = "Smiling";

fn default_attribute() -> String {
    DEFAULT_ATTRIBUTE.into()
}
fn default_size() -> u32 {
    64
}

/// Settings of `data.celeba`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelebaSettings {
    /// Directory holding `img_align_celeba/` and the two list files.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The attribute used as the binary label (a column of
    /// `list_attr_celeba.txt`, e.g. `Smiling`, `Male`, `Eyeglasses`).
    #[serde(default = "default_attribute")]
    pub attribute: String,
    /// Side of the square images written (default 64).
    #[serde(default = "default_size")]
    pub image_size: u32,
    /// Keep at most this many images per split, spread evenly.
    #[serde(default)]
    pub max_images_per_split: Option<usize>,
}

/// The attribute names, and per image file whether the chosen one is present.
pub type Attributes = (Vec<String>, Vec<(String, bool)>);

/// Parses `list_attr_celeba.txt`: the attribute names and, per image file,
/// whether `attribute` is present.
pub fn parse_attributes(text: &str, attribute: &str) -> Result<Attributes, FormatError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| FormatError::Invalid("line 1 must be the number of images".into()))?;
    let names: Vec<String> = lines
        .next()
        .ok_or_else(|| FormatError::truncated("the attribute names (line 2)", 2, 1))?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let column = names.iter().position(|n| n == attribute).ok_or_else(|| {
        FormatError::Invalid(format!("no attribute `{attribute}`; the file has: {}", names.join(", ")))
    })?;
    let mut rows = Vec::with_capacity(count.min(1 << 20));
    for (i, line) in lines.enumerate() {
        let mut fields = line.split_whitespace();
        let file = fields.next().unwrap_or_default().to_string();
        let values: Vec<&str> = fields.collect();
        if values.len() != names.len() {
            return Err(FormatError::Invalid(format!(
                "line {}: {} values for {} attributes",
                i + 3,
                values.len(),
                names.len()
            )));
        }
        let present = match values[column] {
            "1" => true,
            "-1" | "0" => false,
            other => return Err(FormatError::Invalid(format!("line {}: value `{other}` is not 1 or -1", i + 3))),
        };
        rows.push((file, present));
    }
    if rows.len() != count {
        return Err(FormatError::WrongSize(format!("line 1 says {count} images, {} rows follow", rows.len())));
    }
    Ok((names, rows))
}

/// Parses `list_eval_partition.txt`: image file → 0 (train), 1 (val), 2 (test).
pub fn parse_partition(text: &str) -> Result<HashMap<String, u8>, FormatError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let (Some(file), Some(part), None) = (f.next(), f.next(), f.next()) else {
            return Err(FormatError::Invalid(format!("line {}: expected `<file> <0|1|2>`", i + 1)));
        };
        let part = match part {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            other => return Err(FormatError::Invalid(format!("line {}: partition `{other}` is not 0, 1 or 2", i + 1))),
        };
        out.insert(file.to_string(), part);
    }
    Ok(out)
}

/// The CelebA loader.
#[derive(Debug, Clone)]
pub struct CelebaLoader {
    settings: CelebaSettings,
    common: Common,
}

impl CelebaLoader {
    /// `data.celeba` with its settings.
    pub fn new(config: &serde_json::Value, ctx: &HostContext) -> Result<CelebaLoader, PluginError> {
        let settings: CelebaSettings = PluginError::parse_config("data.celeba", config)?;
        if !(8..=512).contains(&settings.image_size) {
            return Err(PluginError::config(format!(
                "[data.celeba] settings: `image_size` is {}, expected 8..=512",
                settings.image_size
            )));
        }
        let common =
            Common::new("data.celeba", "celeba", settings.root.as_deref(), None, settings_json(&settings), ctx)?;
        Ok(CelebaLoader { settings, common })
    }
}

fn text_file(
    raw: &Path,
    name: &str,
    hint: &str,
) -> Result<(String, nas_plugin_api::SourceChecksum, PathBuf), PluginError> {
    if !raw.join(name).is_file() {
        return Err(not_found(&raw.join(name), hint));
    }
    let src = read_source(raw, name)?;
    let text = String::from_utf8(src.bytes)
        .map_err(|_| PluginError::new(ErrorCode::Corrupt, format!("{}: not UTF-8 text", src.path.display())))?;
    Ok((text, src.checksum, src.path))
}

impl DatasetLoader for CelebaLoader {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        let s = self.settings.image_size as usize;
        let file = |name: &str, required: bool| SourceFile {
            name: name.into(),
            urls: Vec::new(),
            sha256: None,
            size: None,
            required,
        };
        Ok(DatasetDescription {
            name: "celeba".into(),
            title: format!("CelebA: 202,599 aligned faces, label = attribute `{}`", self.settings.attribute),
            family: "celeba".into(),
            raw_dir: self.common.raw_dir.clone(),
            sources: vec![
                file("list_attr_celeba.txt", true),
                file("list_eval_partition.txt", true),
                file("img_align_celeba.zip", false),
            ],
            input_shape: Some([3, s, s]),
            num_classes: Some(2),
            notes: "CelebA is distributed from Google Drive behind a consent page \
                    (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html): download `img_align_celeba.zip`, \
                    `list_attr_celeba.txt` and `list_eval_partition.txt` by hand into the raw directory and unzip \
                    the images there (`img_align_celeba/*.jpg`)."
                .into(),
        })
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.common.prepare_with(request, || {
            let raw = self.common.raw_dir.clone();
            let hint = "download it by hand; see `nas data list` for where";
            let (attrs, attr_sum, attr_path) = text_file(&raw, "list_attr_celeba.txt", hint)?;
            let (parts, part_sum, part_path) = text_file(&raw, "list_eval_partition.txt", hint)?;
            let (_, rows) = parse_attributes(&attrs, &self.settings.attribute).map_err(|e| e.at(&attr_path))?;
            let partition = parse_partition(&parts).map_err(|e| e.at(&part_path))?;
            let images = raw.join("img_align_celeba");
            if !images.is_dir() {
                return Err(not_found(&images, "unzip img_align_celeba.zip there"));
            }
            let mut by_split: [Vec<(PathBuf, i64)>; 3] = Default::default();
            for (file, present) in rows {
                let part = *partition.get(&file).ok_or_else(|| {
                    PluginError::new(ErrorCode::Corrupt, format!("{}: no partition for `{file}`", part_path.display()))
                })?;
                by_split[part as usize].push((images.join(&file), i64::from(present)));
            }
            let mut splits = BTreeMap::new();
            let mut sources = vec![attr_sum, part_sum];
            for (i, name) in ["train", "val", "test"].into_iter().enumerate() {
                let files = spread(std::mem::take(&mut by_split[i]), self.settings.max_images_per_split);
                if files.is_empty() {
                    if name == "val" {
                        continue;
                    }
                    return Err(PluginError::new(
                        ErrorCode::Corrupt,
                        format!("{}: the `{name}` split has no images", part_path.display()),
                    ));
                }
                let (data, sum) = decode_split(&files, self.settings.image_size, self.common.threads, &raw, name)?;
                splits.insert(name.to_string(), data);
                sources.push(sum);
            }
            let attribute = &self.settings.attribute;
            let mut extra = BTreeMap::new();
            extra.insert("attribute".into(), serde_json::json!(attribute));
            let s = self.settings.image_size as usize;
            Ok(DatasetParts {
                name: "celeba".into(),
                family: "celeba".into(),
                input_shape: [3, s, s],
                class_names: vec![format!("not {attribute}"), attribute.clone()],
                splits,
                sources,
                extra,
            })
        })
    }
}
