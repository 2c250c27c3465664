//! Finding the Python that runs the trainer, and checking it has the
//! trainer's packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::TuneError;

/// The packages the trainer imports, pinned to the versions `scripts/setup.sh`
/// installs (they resolve together with torch 2.11.0 on Python 3.11).
pub const REQUIREMENTS: &[(&str, &str)] = &[
    ("torch", "2.11.0"),
    ("transformers", "5.23.0"),
    ("peft", "0.21.2"),
    ("accelerate", "1.15.0"),
    ("gguf", "0.19.0"),
    ("safetensors", "0.8.0"),
];

/// `pip install` arguments for [`REQUIREMENTS`].
pub fn pins() -> String {
    REQUIREMENTS.iter().map(|(p, v)| format!("{p}=={v}")).collect::<Vec<_>>().join(" ")
}

/// The Python to run the trainer with: `setting`, else `NAS_PYTHON`, else
/// the first `.venv/bin/python` walking up from the working directory and
/// from the executable's directory, else `python3`.
pub fn find_python(setting: Option<&Path>) -> Result<PathBuf, TuneError> {
    let existing = |p: &Path, what: &str| {
        if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(TuneError::PythonMissing { python: p.to_path_buf(), reason: format!("{what} names no file") })
        }
    };
    if let Some(p) = setting {
        return existing(p, "the `python` setting");
    }
    if let Some(p) = std::env::var_os("NAS_PYTHON") {
        return existing(Path::new(&p), "NAS_PYTHON");
    }
    let mut starts = Vec::new();
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        starts.push(d);
    }
    for start in starts {
        for dir in start.ancestors() {
            let p = dir.join(".venv/bin/python");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Ok(PathBuf::from("python3"))
}

/// Imports the trainer's packages in `python`; their versions, by name.
pub fn check_packages(python: &Path) -> Result<serde_json::Map<String, serde_json::Value>, TuneError> {
    let script = "import json, importlib.metadata as md\n\
                  import torch, transformers, peft, gguf, safetensors, accelerate\n\
                  print(json.dumps({p: md.version(p) for p in ('torch','transformers','peft','gguf','safetensors','accelerate')}))";
    let out = Command::new(python)
        .args(["-I", "-c", script])
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TuneError::PythonMissing { python: python.to_path_buf(), reason: e.to_string() })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string();
        return Err(TuneError::PackagesMissing { python: python.to_path_buf(), reason, pins: pins() });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| TuneError::PackagesMissing {
        python: python.to_path_buf(),
        reason: format!("the version check printed `{line}`: {e}"),
        pins: pins(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_setting_that_names_no_file_is_python_missing() {
        let e = find_python(Some(Path::new("/nonexistent/bin/python"))).expect_err("missing");
        assert!(matches!(e, TuneError::PythonMissing { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/bin/python"), "{e}");
    }

    #[test]
    fn an_interpreter_that_cannot_start_is_python_missing_and_one_without_the_packages_says_which() {
        let e = check_packages(Path::new("/nonexistent/python3")).expect_err("cannot start");
        assert!(matches!(e, TuneError::PythonMissing { .. }), "{e}");
        // `/bin/sh -I -c ...` fails like a Python without the packages does.
        let e = check_packages(Path::new("/bin/sh")).expect_err("not a Python with the packages");
        assert!(matches!(e, TuneError::PackagesMissing { .. }), "{e}");
        assert!(e.to_string().contains("peft==0.21.2"), "{e}");
    }
}
