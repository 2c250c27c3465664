//! Fine-tuning cycles ("Delta-Based NAS", "From Memorization to
//! Creativity"): the generator learns from its own best, novel designs.
//!
//! 0. **seed**: the training set of cycle 0 is the seed corpus ([`seed`]:
//!    LEMUR's models as `nas corpus lemur` builds them, or a JSONL file);
//!    adapter 0 is fine-tuned on it before anything is generated;
//! 1. each cycle `c ≥ 1` **generates** `candidates` candidates with adapter
//!    `c - 1` (a [`Search`] with a [`CycleContext`]: every candidate is asked
//!    as the first attempt of a fresh search, the prompt the training
//!    examples carry; delta mode diffs against designs drawn from the seed;
//!    no Prompt Improver), numbered `(c - 1)·n + 1 ..= c·n` in the run;
//! 2. the existing evaluator **evaluates** each (one epoch);
//! 3. **select** ([`select`]): valid, accuracy ≥ `min_accuracy`, and novel
//!    (MinHash Jaccard below `novelty_threshold` against every design of
//!    the seed corpus and every model selected before);
//! 4. the selected prompt → answer pairs are **appended** to the training
//!    set (`cycles/cycle-NN/train.jsonl` is the whole set cycle `c`'s
//!    adapter trains on);
//! 5. the `[tuner]` **fine-tunes** adapter `c` (from the base on the whole
//!    set, or from adapter `c - 1` with `train_from = "previous"`).
//!
//! Everything goes to the run store: the iterations as a search commits
//! them (each record carries its `cycle`), and one row per cycle
//! ([`log`]: phase, training set file, size and sha256, the adapter with
//! its loss curve). A run killed at any moment resumes with nothing lost
//! and nothing done twice: generation resumes through the search's
//! journals, a selection is recomputed from the records (deterministic) and
//! checked against the recorded sha256, a half-done fine-tune continues
//! from the tuner's checkpoints in the cycle's `adapter/` folder, and a
//! recorded adapter is never trained again. A replay (`nas cycles --replay
//! DIR`) answers every generator call from DIR's journal and takes DIR's
//! seed set and adapters as recorded instead of training (the generator is
//! never asked, so the adapters could change nothing); the selections and
//! training sets are made again from the replayed records.
//!
//! [`Search`]: crate::search::Search
//! [`CycleContext`]: crate::search::CycleContext

pub mod config;
pub mod driver;
pub mod log;
pub mod seed;
pub mod select;
pub mod shared;
pub mod table;

use std::path::PathBuf;

pub use config::{settle_budget, CyclesSection, SeedSection, TrainFrom, TuneSection};
pub use driver::{base_model, Driver, Ended, Observer, Setup};
pub use shared::SharedRoles;

/// The folder of a run directory that holds the cycles' files.
pub const CYCLES_DIR: &str = "cycles";

/// A cycle's folder name (`cycle-03`).
pub fn cycle_dir_name(c: u64) -> String {
    format!("cycle-{c:02}")
}

/// Why a cycles run stopped or could not start (a bad candidate is never
/// one of these: it is a record).
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The search (generation and evaluation) failed.
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The seed corpus could not be built.
    #[error("[cycles.seed]: {0}")]
    Seed(String),
    /// A corpus file could not be read or written.
    #[error(transparent)]
    Corpus(#[from] crate::corpus::CorpusError),
    /// The fine-tuner failed (after it started: the cycle resumes).
    #[error("the fine-tune of cycle {cycle} failed: {error}")]
    Tune {
        /// The cycle.
        cycle: u64,
        /// The tuner's error.
        error: nas_plugin_api::PluginError,
    },
    /// A file of the run could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// What is recorded contradicts what the run would make again (a
    /// training set edited by hand, another config).
    #[error("{0}")]
    Inconsistent(String),
    /// A setting makes no sense for this run.
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> CycleError {
    CycleError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// The sha256 of bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
