//! # nas-plugin-test-support
//!
//! The conformance kit: one set of role-level checks that every plugin of a
//! role must pass, whichever door it came through (built-in, native `.so`,
//! WebAssembly component). A plugin's own tests use it as a
//! dev-dependency; it is never part of what a plugin compiles.
//!
//! Each `check_<role>` function takes a live instance and returns a
//! [`Report`] saying which checks passed. A panic inside the plugin fails the
//! check it happened in (it is caught here), so one report shows every
//! problem.
//!
//! | role | checks |
//! |---|---|
//! | LLM backend | [`check_llm`] against the loopback server [`TestServer`]; [`check_llm_backend`] for any backend |
//! | dataset loader | [`check_dataset`], [`check_dataset_missing_release`] |
//! | evaluator | [`check_evaluator`] |
//! | memory strategy | [`check_memory`], [`check_memory_equivalent`] |
//! | fine-tuner | [`check_fine_tuner`] |
//!
//! ```
//! use nas_plugin_api::*;
//! use nas_plugin_test_support::check_memory;
//!
//! struct Last;
//! impl MemoryStrategy for Last {
//!     fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
//!         let entries = input.entries.last().cloned().into_iter().collect();
//!         Ok(MemorySelection { entries, ..Default::default() })
//!     }
//! }
//! let report = check_memory(&mut Last);
//! assert!(report.all_passed(), "{report}");
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};

use nas_plugin_api::PluginError;

pub mod cargo;
mod dataset;
mod eval;
mod llm;
pub mod machine;
mod memory;
mod tune;

pub use dataset::{check_dataset, check_dataset_missing_release};
pub use eval::{candidates, check_evaluator};
pub use llm::{check_llm, check_llm_backend, LlmBackendOptions};
pub use memory::{check_memory, check_memory_equivalent, sample_history};
pub use nas_llm_test_server::TestServer;
pub use tune::{check_fine_tuner, write_training_set};

/// One check and its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// A short snake_case name, stable across versions.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen when it failed (empty when it passed).
    pub detail: String,
}

/// The checks run against one plugin instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    pub(crate) fn record(&mut self, name: &'static str, result: Result<(), String>) {
        let (passed, detail) = match result {
            Ok(()) => (true, String::new()),
            Err(d) => (false, d),
        };
        self.checks.push(Check { name, passed, detail });
    }

    /// True when every check passed.
    pub fn all_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.passed).map(|c| c.name).collect()
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            if c.passed {
                writeln!(f, "  ok    {}", c.name)?;
            } else {
                writeln!(f, "  FAIL  {}: {}", c.name, c.detail)?;
            }
        }
        Ok(())
    }
}

/// Calls into a plugin: `Err` when it panicked (with the panic's message),
/// else what the plugin returned.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<Result<T, PluginError>, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".into());
        format!("panicked: {message}")
    })
}

/// Calls into a plugin that must succeed: a panic or a `PluginError` is the
/// check's failure, named after `what`.
pub(crate) fn must<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, String> {
    guarded(f).map_err(|p| format!("{what} {p}"))?.map_err(|e| format!("{what} failed: {e} ({})", e.code.as_str()))
}

/// Checks that a call that must fail returned a `PluginError` (not a panic,
/// not an answer) whose code is not [`ErrorCode::Panic`](nas_plugin_api::ErrorCode::Panic)
/// and whose message is not empty; returns the error.
pub(crate) fn must_fail<T: std::fmt::Debug>(
    what: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<PluginError, String> {
    match guarded(f).map_err(|p| format!("{what} {p}"))? {
        Ok(v) => Err(format!("{what} succeeded: {v:?}")),
        Err(e) if e.code == nas_plugin_api::ErrorCode::Panic => Err(format!("{what} panicked behind the door: {e}")),
        Err(e) if e.message.trim().is_empty() => {
            Err(format!("{what} failed with an empty message ({})", e.code.as_str()))
        }
        Err(e) => Ok(e),
    }
}
