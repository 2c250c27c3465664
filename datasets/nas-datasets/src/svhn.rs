//! `data.svhn`: the Street View House Numbers cropped-digit release
//! (`train_32x32.mat`, `test_32x32.mat`, optional `extra_32x32.mat`),
//! MATLAB v5 files holding `X` (uint8 `[32, 32, 3, N]`, column-major) and
//! `y` (`[N, 1]`, digits 1–10 where 10 means the digit 0).

use std::collections::BTreeMap;
use std::path::PathBuf;

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, HostContext, PluginError, PrepareRequest, SourceChecksum,
    SourceFile,
};
use serde::{Deserialize, Serialize};

use crate::common::{settings_json, Common};
use crate::error::{not_found, FormatError};
use crate::mat::{parse_mat, MatArray};
use crate::prepared::{DatasetParts, SplitData};
use crate::source::read_source;

/// Settings of `data.svhn`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvhnSettings {
    /// Directory holding the `.mat` files.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Append the 531,131 `extra_32x32.mat` images to the train split.
    #[serde(default)]
    pub include_extra: bool,
}

/// Converts SVHN's `X` and `y` variables to a split (`[N, C, H, W]` images,
/// labels with 10 mapped to 0).
pub fn svhn_split(x: &MatArray, y: &MatArray) -> Result<SplitData, FormatError> {
    let [h, w, c, n] = match x.dims[..] {
        [h, w, c, n] => [h, w, c, n],
        [h, w, c] => [h, w, c, 1],
        _ => return Err(FormatError::Invalid(format!("`X` has dimensions {:?}, expected [H, W, C, N]", x.dims))),
    };
    if [h, w, c] != [32, 32, 3] {
        return Err(FormatError::Invalid(format!("`X` has dimensions {:?}, expected [32, 32, 3, N]", x.dims)));
    }
    let pixels = x.data.to_u8().ok_or_else(|| FormatError::Invalid("`X` holds values outside 0..=255".into()))?;
    let labels = y.data.to_f64();
    if labels.len() != n {
        return Err(FormatError::WrongSize(format!("`y` has {} labels for {n} images", labels.len())));
    }
    let mut split = SplitData { images: vec![0u8; pixels.len()], labels: Vec::with_capacity(n) };
    let plane = h * w;
    for (i, &l) in labels.iter().enumerate() {
        if l.fract() != 0.0 || !(0.0..=10.0).contains(&l) {
            return Err(FormatError::Invalid(format!("`y`: label {l} of image {i} is not a digit 1..=10")));
        }
        split.labels.push(if l == 10.0 { 0 } else { l as i64 });
    }
    // MATLAB index (r, col, ch, i) lives at r + h*col + h*w*ch + h*w*c*i.
    for (src, dst) in pixels.chunks_exact(plane * c).zip(split.images.chunks_exact_mut(plane * c)) {
        for ch in 0..c {
            let s = &src[ch * plane..(ch + 1) * plane];
            let d = &mut dst[ch * plane..(ch + 1) * plane];
            for col in 0..w {
                for r in 0..h {
                    d[r * w + col] = s[r + h * col];
                }
            }
        }
    }
    Ok(split)
}

/// The SVHN loader.
#[derive(Debug, Clone)]
pub struct SvhnLoader {
    settings: SvhnSettings,
    common: Common,
}

impl SvhnLoader {
    /// `data.svhn` with its settings.
    pub fn new(config: &serde_json::Value, ctx: &HostContext) -> Result<SvhnLoader, PluginError> {
        let settings: SvhnSettings = PluginError::parse_config("data.svhn", config)?;
        let common = Common::new("data.svhn", "svhn", settings.root.as_deref(), None, settings_json(&settings), ctx)?;
        Ok(SvhnLoader { settings, common })
    }

    fn read(&self, name: &str) -> Result<(SplitData, SourceChecksum), PluginError> {
        let raw = &self.common.raw_dir;
        if !raw.join(name).is_file() {
            return Err(not_found(&raw.join(name), &self.common.fetch_hint()));
        }
        let src = read_source(raw, name)?;
        let at = |e: FormatError| e.at(&src.path);
        let vars = parse_mat(&src.bytes).map_err(at)?;
        let find = |n: &str| {
            vars.iter().find(|v| v.name == n).ok_or_else(|| at(FormatError::Invalid(format!("no variable `{n}`"))))
        };
        let split = svhn_split(find("X")?, find("y")?).map_err(at)?;
        Ok((split, src.checksum))
    }
}

fn mat_source(name: &str, required: bool) -> SourceFile {
    SourceFile {
        name: name.to_string(),
        urls: vec![format!("http://ufldl.stanford.edu/housenumbers/{name}")],
        sha256: None,
        size: None,
        required,
    }
}

impl DatasetLoader for SvhnLoader {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        Ok(DatasetDescription {
            name: "svhn".into(),
            title: "SVHN: 99,289 32x32 colour crops of house-number digits, 10 classes".into(),
            family: "svhn".into(),
            raw_dir: self.common.raw_dir.clone(),
            sources: vec![
                mat_source("train_32x32.mat", true),
                mat_source("test_32x32.mat", true),
                mat_source("extra_32x32.mat", self.settings.include_extra),
            ],
            input_shape: Some([3, 32, 32]),
            num_classes: Some(10),
            notes:
                "Format 2 (cropped digits). Published checksums are md5 only: train e26dedcc434d2e4c54c9b2d4a06d8373, \
                    test eb5a983be6a315427106f1b164d9cef3, extra a93ce644f1a588dc4d68dda5feec44a7."
                    .into(),
        })
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.common.prepare_with(request, || {
            let (train, test) = std::thread::scope(|s| {
                let test = s.spawn(|| self.read("test_32x32.mat"));
                let train = self.read("train_32x32.mat");
                (train, test.join().unwrap_or_else(|_| Err(PluginError::internal("SVHN reader panicked"))))
            });
            let (mut train, train_sum) = train?;
            let (test, test_sum) = test?;
            let mut sources = vec![train_sum, test_sum];
            if self.settings.include_extra {
                let (extra, sum) = self.read("extra_32x32.mat")?;
                train.images.extend(extra.images);
                train.labels.extend(extra.labels);
                sources.push(sum);
            }
            let mut splits = BTreeMap::new();
            splits.insert("train".to_string(), train);
            splits.insert("test".to_string(), test);
            Ok(DatasetParts {
                name: "svhn".into(),
                family: "svhn".into(),
                input_shape: [3, 32, 32],
                class_names: (0..10).map(|d| d.to_string()).collect(),
                splits,
                sources,
                extra: BTreeMap::new(),
            })
        })
    }
}
