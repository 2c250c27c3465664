//! Dataset loaders: `describe` is consistent, `prepare` writes a manifest
//! that [`DatasetManifest::check`] accepts and split files of the shapes it
//! states, a second `prepare` reuses the cache, and failures are
//! `PluginError`s naming what is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nas_plugin_api::{DatasetDescription, DatasetLoader, DatasetManifest, PrepareRequest, MANIFEST_FILE};
use serde_json::Value;

use crate::{must, must_fail, Report};

/// Runs the dataset-loader checks against `loader`, whose release files must
/// be in place, preparing into `cache_dir` (created if missing, as the host
/// does).
///
/// Checks: `describe_consistent`, `prepare_writes_a_valid_manifest`,
/// `agrees_with_describe`, `split_files_match_the_manifest`,
/// `second_prepare_reuses_the_cache`, `unwritable_cache_is_an_error`.
pub fn check_dataset(loader: &mut dyn DatasetLoader, cache_dir: &Path) -> Report {
    let mut r = Report::default();
    let described = must("describe", || loader.describe());
    r.record(
        "describe_consistent",
        described.as_ref().map_err(Clone::clone).and_then(|d| {
            check_description(d)?;
            let again = must("a second describe", || loader.describe())?;
            if &again == d {
                Ok(())
            } else {
                Err(format!("a second describe differs: {again:?} vs {d:?}"))
            }
        }),
    );
    let prepared = std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))
        .and_then(|()| must("prepare", || loader.prepare(&request(cache_dir, false))));
    r.record(
        "prepare_writes_a_valid_manifest",
        prepared.as_ref().map_err(Clone::clone).and_then(|m| {
            m.check().map_err(|e| format!("the manifest returned does not check: {e}"))?;
            let on_disk = DatasetManifest::load(cache_dir).map_err(|e| format!("the manifest on disk: {e}"))?;
            if &on_disk == m {
                Ok(())
            } else {
                Err(format!("{MANIFEST_FILE} differs from the manifest returned: {on_disk:?} vs {m:?}"))
            }
        }),
    );
    r.record(
        "agrees_with_describe",
        match (&described, &prepared) {
            (Ok(d), Ok(m)) => agrees(d, m),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        },
    );
    r.record(
        "split_files_match_the_manifest",
        prepared.as_ref().map_err(Clone::clone).and_then(|m| {
            for split in ["train", "test"] {
                if m.splits.get(split).is_none_or(|s| s.count == 0) {
                    return Err(format!("the `{split}` split is empty"));
                }
            }
            for (name, split) in &m.splits {
                check_split_file(&cache_dir.join(&split.file), split.count, m)
                    .map_err(|e| format!("split `{name}` ({}): {e}", split.file))?;
            }
            Ok(())
        }),
    );
    r.record(
        "second_prepare_reuses_the_cache",
        prepared.as_ref().map_err(Clone::clone).and_then(|m| {
            let before = modified(cache_dir, m)?;
            let again = must("a second prepare", || loader.prepare(&request(cache_dir, false)))?;
            if &again != m {
                return Err(format!("a second prepare returned another manifest: {again:?} vs {m:?}"));
            }
            let after = modified(cache_dir, m)?;
            match before.iter().find(|(file, t)| after.get(*file) != Some(t)) {
                Some((file, _)) => Err(format!("{file} was written again though the cache was valid")),
                None => Ok(()),
            }
        }),
    );
    // A cache directory below a regular file can be neither made nor written.
    let blocked = cache_dir.join(MANIFEST_FILE).join("below-a-file");
    r.record(
        "unwritable_cache_is_an_error",
        must_fail("prepare into a directory below a file", || loader.prepare(&request(&blocked, true))).map(|_| ()),
    );
    r
}

/// Runs the checks for a loader whose release files are absent, preparing
/// into `cache_dir` (created if missing): `prepare` is an error that names
/// where the files were looked for, and leaves no manifest behind.
///
/// Checks: `missing_release_is_an_error`, `no_manifest_left`.
pub fn check_dataset_missing_release(loader: &mut dyn DatasetLoader, cache_dir: &Path) -> Report {
    let mut r = Report::default();
    let described = must("describe", || loader.describe());
    let failed = std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))
        .and_then(|()| must_fail("prepare without the release", || loader.prepare(&request(cache_dir, false))));
    r.record(
        "missing_release_is_an_error",
        failed.and_then(|e| {
            let d = described?;
            let raw = d.raw_dir.display().to_string();
            let named = e.message.contains(&raw) || d.sources.iter().any(|s| e.message.contains(&s.name));
            if named {
                Ok(())
            } else {
                Err(format!("the error names neither {raw} nor a release file: {e}"))
            }
        }),
    );
    r.record(
        "no_manifest_left",
        if cache_dir.join(MANIFEST_FILE).exists() {
            Err(format!("{} was written by a prepare that failed", cache_dir.join(MANIFEST_FILE).display()))
        } else {
            Ok(())
        },
    );
    r
}

fn request(cache_dir: &Path, force: bool) -> PrepareRequest {
    PrepareRequest { cache_dir: cache_dir.to_path_buf(), force }
}

fn check_description(d: &DatasetDescription) -> Result<(), String> {
    if d.name.trim().is_empty() {
        return Err("an empty name".into());
    }
    if d.input_shape.is_some_and(|s| s.contains(&0)) {
        return Err(format!("input shape {:?} has a zero dimension", d.input_shape));
    }
    if d.num_classes.is_some_and(|n| n < 2) {
        return Err(format!("{:?} classes", d.num_classes));
    }
    let mut names = std::collections::BTreeSet::new();
    for s in &d.sources {
        if s.name.trim().is_empty() || !names.insert(s.name.as_str()) {
            return Err(format!("source file name {:?} is empty or repeated", s.name));
        }
        if let Some(sha) = &s.sha256 {
            if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
                return Err(format!("{}: sha256 {sha:?} is not 64 lower-case hex digits", s.name));
            }
        }
    }
    Ok(())
}

fn agrees(d: &DatasetDescription, m: &DatasetManifest) -> Result<(), String> {
    if d.name != m.name {
        return Err(format!("describe says {:?}, the manifest {:?}", d.name, m.name));
    }
    if !d.family.is_empty() && d.family != m.family {
        return Err(format!("family: describe says {:?}, the manifest {:?}", d.family, m.family));
    }
    if d.input_shape.is_some_and(|s| s != m.input_shape) {
        return Err(format!("input shape: describe says {:?}, the manifest {:?}", d.input_shape, m.input_shape));
    }
    if d.num_classes.is_some_and(|n| n != m.num_classes) {
        return Err(format!("classes: describe says {:?}, the manifest {}", d.num_classes, m.num_classes));
    }
    Ok(())
}

/// A tensor as a safetensors header states it.
struct Tensor {
    dtype: String,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// Reads a safetensors file's header (not its data) and returns the tensors
/// it states and where the data begins.
fn read_header(path: &Path) -> Result<(BTreeMap<String, Tensor>, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| format!("no header length: {e}"))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(format!("a header of {len} bytes"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| format!("header cut short: {e}"))?;
    let header: Value = serde_json::from_slice(&header).map_err(|e| format!("header is not JSON: {e}"))?;
    let mut tensors = BTreeMap::new();
    for (name, t) in header.as_object().into_iter().flatten().filter(|(k, _)| k.as_str() != "__metadata__") {
        let shape = t["shape"].as_array().map(|s| s.iter().filter_map(Value::as_u64).map(|d| d as usize).collect());
        let offsets: Option<Vec<u64>> =
            t["data_offsets"].as_array().map(|o| o.iter().filter_map(Value::as_u64).collect());
        match (t["dtype"].as_str(), shape, offsets.as_deref()) {
            (Some(dtype), Some(shape), Some(&[start, end])) => {
                tensors.insert(name.clone(), Tensor { dtype: dtype.into(), shape, start, end });
            }
            _ => return Err(format!("tensor `{name}` has no dtype, shape or data offsets: {t}")),
        }
    }
    Ok((tensors, 8 + len))
}

fn check_split_file(path: &Path, count: usize, m: &DatasetManifest) -> Result<(), String> {
    let (tensors, data_start) = read_header(path)?;
    let [c, h, w] = m.input_shape;
    let want = [("images", "U8", vec![count, c, h, w], 1u64), ("labels", "I64", vec![count], 8)];
    let mut data_end = 0;
    for (name, dtype, shape, width) in want {
        let t = tensors.get(name).ok_or_else(|| format!("no `{name}` tensor"))?;
        if t.dtype != dtype || t.shape != shape {
            return Err(format!("`{name}` is {} {:?}, the manifest says {dtype} {shape:?}", t.dtype, t.shape));
        }
        if t.end - t.start != shape.iter().product::<usize>() as u64 * width {
            return Err(format!("`{name}` holds {} bytes for shape {shape:?}", t.end - t.start));
        }
        data_end = data_end.max(t.end);
    }
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size != data_start + data_end {
        return Err(format!("{size} bytes, the header promises {}", data_start + data_end));
    }
    let labels = &tensors["labels"];
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(data_start + labels.start)).map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; (labels.end - labels.start) as usize];
    f.read_exact(&mut bytes).map_err(|e| format!("labels cut short: {e}"))?;
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        let label = i64::from_le_bytes(chunk.try_into().expect("chunks_exact gives 8 bytes"));
        if !(0..m.num_classes as i64).contains(&label) {
            return Err(format!("label {i} is {label}, outside 0..{}", m.num_classes));
        }
    }
    Ok(())
}

/// Modification times of the manifest and every split file.
fn modified(dir: &Path, m: &DatasetManifest) -> Result<BTreeMap<String, SystemTime>, String> {
    let files = std::iter::once(MANIFEST_FILE.to_string()).chain(m.splits.values().map(|s| s.file.clone()));
    files
        .map(|f| {
            let p: PathBuf = dir.join(&f);
            let t = std::fs::metadata(&p).and_then(|md| md.modified()).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((f, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::{ErrorCode, PluginError, SplitManifest, PREPARED_FORMAT_VERSION};

    /// Writes a safetensors file by hand: `images` u8 `[n, 1, 2, 2]`, `labels` i64 `[n]`.
    fn write_split(path: &Path, labels: &[i64], image_bytes: usize) -> Result<(), PluginError> {
        let n = labels.len();
        let header = serde_json::json!({
            "images": {"dtype": "U8", "shape": [n, 1, 2, 2], "data_offsets": [0, image_bytes]},
            "labels": {"dtype": "I64", "shape": [n], "data_offsets": [image_bytes, image_bytes + 8 * n]},
        })
        .to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![7u8; image_bytes]);
        bytes.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
        std::fs::write(path, bytes).map_err(|e| PluginError::io(path, e))
    }

    /// A loader of a 1×2×2 two-class dataset; `label` is written for every example.
    struct Toy {
        raw: PathBuf,
        label: i64,
        prepared: usize,
    }

    impl DatasetLoader for Toy {
        fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
            Ok(DatasetDescription {
                name: "toy".into(),
                title: "A toy".into(),
                family: "mnist".into(),
                raw_dir: self.raw.clone(),
                sources: vec![],
                input_shape: Some([1, 2, 2]),
                num_classes: Some(2),
                notes: String::new(),
            })
        }
        fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
            if !self.raw.is_dir() {
                return Err(PluginError::new(ErrorCode::NotFound, format!("{}: no release", self.raw.display())));
            }
            if let Ok(m) = DatasetManifest::load(&request.cache_dir) {
                if !request.force {
                    return Ok(m);
                }
            }
            let mut splits = BTreeMap::new();
            for (name, n) in [("train", 3usize), ("test", 2)] {
                let file = format!("{name}.safetensors");
                write_split(&request.cache_dir.join(&file), &vec![self.label; n], 4 * n)?;
                splits.insert(name.to_string(), SplitManifest { file, count: n });
            }
            let m = DatasetManifest {
                format_version: PREPARED_FORMAT_VERSION,
                name: "toy".into(),
                family: "mnist".into(),
                input_shape: [1, 2, 2],
                num_classes: 2,
                class_names: vec![],
                mean: vec![0.5],
                std: vec![0.25],
                splits,
                sources: vec![],
                extra: Default::default(),
            };
            m.save(&request.cache_dir)?;
            self.prepared += 1;
            Ok(m)
        }
    }

    #[test]
    fn a_loader_of_a_well_formed_dataset_passes_and_a_bad_label_fails() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut good = Toy { raw: tmp.path().to_path_buf(), label: 1, prepared: 0 };
        let r = check_dataset(&mut good, &tmp.path().join("good"));
        assert!(r.all_passed(), "{r}");
        assert_eq!(good.prepared, 1, "the second prepare reused the cache");
        let mut bad = Toy { raw: tmp.path().to_path_buf(), label: 2, prepared: 0 };
        let r = check_dataset(&mut bad, &tmp.path().join("bad"));
        assert_eq!(r.failures().iter().map(|c| c.name).collect::<Vec<_>>(), ["split_files_match_the_manifest"], "{r}");
        assert!(r.failures()[0].detail.contains("label 0 is 2"), "{r}");
    }

    #[test]
    fn a_loader_without_its_release_must_say_where_it_looked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut absent = Toy { raw: tmp.path().join("nowhere"), label: 0, prepared: 0 };
        let r = check_dataset_missing_release(&mut absent, &tmp.path().join("cache"));
        assert!(r.all_passed(), "{r}");
        let mut present = Toy { raw: tmp.path().to_path_buf(), label: 0, prepared: 0 };
        let r = check_dataset_missing_release(&mut present, &tmp.path().join("cache2"));
        assert_eq!(
            r.failures().iter().map(|c| c.name).collect::<Vec<_>>(),
            ["missing_release_is_an_error", "no_manifest_left"],
            "{r}"
        );
    }
}
