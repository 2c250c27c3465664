//! Plugin errors: plain data that crosses any boundary.

use serde::{Deserialize, Serialize};

/// What kind of thing went wrong inside a plugin.
///
/// Unknown codes from a newer plugin deserialize as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The plugin's configuration table is wrong.
    InvalidConfig,
    /// A request's content is wrong.
    InvalidInput,
    /// A file, dataset, model or id was not found.
    NotFound,
    /// Reading or writing a file failed.
    Io,
    /// A file is present but its content is corrupt or of the wrong format.
    Corrupt,
    /// A server could not be reached (after retries).
    Unreachable,
    /// A request ran out of time.
    Timeout,
    /// A server refused the credentials.
    Unauthorized,
    /// A server asked us to slow down (after retries).
    RateLimited,
    /// A server answered something that is not a valid response.
    BadResponse,
    /// The prompt does not fit the model's context.
    ContextTooLong,
    /// The plugin does not support what was asked.
    Unsupported,
    /// The plugin panicked; the host caught it.
    Panic,
    /// The plugin and host do not speak the same API.
    Incompatible,
    /// A bug or broken invariant inside the plugin.
    Internal,
    /// A code this host does not know (from a newer plugin).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Io => "io",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::Unreachable => "unreachable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadResponse => "bad_response",
            ErrorCode::ContextTooLong => "context_too_long",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Panic => "panic",
            ErrorCode::Incompatible => "incompatible",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// An error returned by a plugin. Plain data: it crosses the native and the
/// WebAssembly boundary unchanged.
///
/// A *bad candidate* is never a `PluginError`: it is an
/// [`EvalOutcome::Failed`](crate::EvalOutcome) value. A `PluginError` means
/// the plugin itself (or what it depends on) is broken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}", code = self.code.as_str())]
pub struct PluginError {
    /// The kind of error.
    pub code: ErrorCode,
    /// A human-readable message naming what and where.
    pub message: String,
    /// Seconds after which retrying may succeed (rate limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
}

impl PluginError {
    /// A new error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError { code, message: message.into(), retry_after_s: None }
    }
    /// [`ErrorCode::InvalidConfig`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, message)
    }
    /// [`ErrorCode::InvalidInput`].
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
    /// [`ErrorCode::Io`], naming the path.
    pub fn io(path: impl AsRef<std::path::Path>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Io, format!("{}: {err}", path.as_ref().display()))
    }
    /// [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// [`ErrorCode::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }

    /// Parses a plugin's configuration table into `T`, naming the key at
    /// fault on error.
    pub fn parse_config<T: serde::de::DeserializeOwned>(
        plugin_id: &str,
        config: &serde_json::Value,
    ) -> Result<T, PluginError> {
        let value = if config.is_null() { serde_json::Value::Object(Default::default()) } else { config.clone() };
        T::deserialize(value).map_err(|e| PluginError::config(format!("[{plugin_id}] settings: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_error_codes_from_newer_plugins_still_deserialize() {
        let e: PluginError = serde_json::from_str(r#"{"code":"quantum_flux","message":"m"}"#).expect("parses");
        assert_eq!(e.code, ErrorCode::Unknown);
        assert_eq!(e.message, "m");
    }

    #[test]
    fn codes_round_trip_through_their_wire_names() {
        for code in [ErrorCode::InvalidConfig, ErrorCode::RateLimited, ErrorCode::ContextTooLong, ErrorCode::Panic] {
            let s = serde_json::to_string(&code).expect("serializes");
            assert_eq!(s, format!("\"{}\"", code.as_str()));
        }
    }
}
