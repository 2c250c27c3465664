//! What can go wrong around a fine-tune, and the plugin error each becomes.

use std::path::PathBuf;

use nas_plugin_api::{ErrorCode, PluginError};

use crate::ID;

/// A failure of `tune.lora`: the trainer could not start, its inputs are
/// missing or wrong, or it ended without an adapter.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// No Python interpreter at the path found or set.
    #[error("cannot run Python `{python}`: {reason}; create the project virtualenv with `scripts/setup.sh`, or set `python` / NAS_PYTHON")]
    PythonMissing {
        /// The interpreter tried.
        python: PathBuf,
        /// Why it did not run.
        reason: String,
    },
    /// The interpreter runs but lacks the trainer's packages.
    #[error("Python `{python}` cannot import the trainer's packages ({reason}); install them with `scripts/setup.sh` ({pins})")]
    PackagesMissing {
        /// The interpreter tried.
        python: PathBuf,
        /// The import error.
        reason: String,
        /// The pinned requirements.
        pins: String,
    },
    /// The base model file is not there.
    #[error("the base model `{0}` does not exist")]
    BaseMissing(PathBuf),
    /// The training set cannot be read or holds no valid examples.
    #[error("the training set is unusable: {0}")]
    TrainSet(String),
    /// A setting is out of range or does not fit the model.
    #[error("settings: {0}")]
    Settings(String),
    /// The model or adapter is of a kind the trainer does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// The trainer ran out of memory (host or device).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The wall-clock limit passed; the trainer was killed, its committed
    /// checkpoints kept.
    #[error(
        "the fine-tune ran past its {limit_s} s limit at step {step}; killed (resumable from its last checkpoint)"
    )]
    Timeout {
        /// The limit.
        limit_s: f64,
        /// The last step reported.
        step: u64,
    },
    /// Another trainer holds the output directory.
    #[error("another trainer is writing `{0}`")]
    Busy(PathBuf),
    /// The trainer ended without an adapter.
    #[error("the trainer {status}; last output:\n{tail}")]
    Crashed {
        /// How it ended.
        status: String,
        /// The tail of its standard error.
        tail: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl TuneError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        TuneError::Io { path: path.into(), reason: e.to_string() }
    }

    /// The plugin error code this failure travels as.
    pub fn code(&self) -> ErrorCode {
        match self {
            TuneError::PythonMissing { .. } | TuneError::PackagesMissing { .. } | TuneError::BaseMissing(_) => {
                ErrorCode::NotFound
            }
            TuneError::TrainSet(_) => ErrorCode::InvalidInput,
            TuneError::Settings(_) => ErrorCode::InvalidConfig,
            TuneError::Unsupported(_) => ErrorCode::Unsupported,
            TuneError::Timeout { .. } => ErrorCode::Timeout,
            TuneError::Io { .. } | TuneError::Busy(_) => ErrorCode::Io,
            TuneError::OutOfMemory(_) | TuneError::Crashed { .. } => ErrorCode::Internal,
        }
    }
}

impl From<TuneError> for PluginError {
    fn from(e: TuneError) -> Self {
        PluginError::new(e.code(), format!("[{ID}] {e}"))
    }
}
