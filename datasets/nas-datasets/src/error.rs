//! Errors of the format parsers, and how they become [`PluginError`]s that
//! name the file at fault.

use std::path::Path;

use nas_plugin_api::{ErrorCode, PluginError};

/// What is wrong with the bytes of a release file. Parsers return this; the
/// loaders add the file's path with [`FormatError::at`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The data ends before the format says it should.
    #[error("truncated: {what} needs {needed} bytes, only {available} present")]
    Truncated {
        /// What was being read.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The file does not start with the format's magic number.
    #[error("wrong magic number: expected {expected}, found {found}")]
    BadMagic {
        /// What the format expects.
        expected: String,
        /// What the file has.
        found: String,
    },
    /// The data is longer than its header says.
    #[error("wrong size: {0}")]
    WrongSize(String),
    /// Any other inconsistency.
    #[error("{0}")]
    Invalid(String),
    /// A feature of the format this reader does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl FormatError {
    /// A [`FormatError::Truncated`].
    pub fn truncated(what: impl Into<String>, needed: u64, available: u64) -> Self {
        FormatError::Truncated { what: what.into(), needed, available }
    }

    /// This error as a [`PluginError`] ([`ErrorCode::Corrupt`], or
    /// [`ErrorCode::Unsupported`]) naming `path`.
    pub fn at(self, path: &Path) -> PluginError {
        let code = match self {
            FormatError::Unsupported(_) => ErrorCode::Unsupported,
            _ => ErrorCode::Corrupt,
        };
        PluginError::new(code, format!("{}: {self}", path.display()))
    }
}

/// A missing file as a [`PluginError`] ([`ErrorCode::NotFound`]).
pub fn not_found(path: &Path, hint: &str) -> PluginError {
    let mut message = format!("{}: not found", path.display());
    if !hint.is_empty() {
        message.push_str(" (");
        message.push_str(hint);
        message.push(')');
    }
    PluginError::new(ErrorCode::NotFound, message)
}

/// An I/O error on `path` as a [`PluginError`]: [`ErrorCode::NotFound`] when
/// the file is missing, [`ErrorCode::Io`] otherwise.
pub fn io_error(path: &Path, err: &std::io::Error) -> PluginError {
    if err.kind() == std::io::ErrorKind::NotFound {
        not_found(path, "")
    } else {
        PluginError::io(path, err)
    }
}
