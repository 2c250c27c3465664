//! The `nas` host library: everything the `nas` binary does, as a library the
//! integration tests drive too.
//!
//! | module | role |
//! |---|---|
//! | [`cli`] | the command line, exit codes, error rendering |
//! | [`config`] | the run config (TOML, strict) |
//! | [`registry`] | plugin references, built-ins, native libraries, creation |
//! | [`builtins`] | the plugins linked into `nas` |
//! | [`paths`] | `NAS_HOME` and the directories under it |
//! | [`fetch`] | resumable, checksum-verified downloads |
//! | [`wasm`] | WebAssembly component plugins |
//! | [`search`] | the method's loop: generator, evaluation, memory, improver |
//! | [`executor`] | where evaluations run: here, or as Slurm jobs (`nas eval-job` on the nodes) |
//! | [`slurm`] | a typed client for Slurm's commands |
//! | [`session`] | setting up a run: registry, frozen config, run directory, plugins, dataset |
//! | [`run_dir`] | a run directory's layout, and reading a recorded run back |
//! | [`records`] | what a run records: outcomes, iteration records, LLM usage and calls |
//! | [`store`] | the run store (SQLite): records, memory, LLM journal |
//! | [`time`] | timestamps |
//! | [`metrics`] | valid rate, best/mean accuracy, ... from records |
//! | [`datasets`] | the prepared-dataset cache of a run |
//! | [`corpus`] | fine-tuning sets: the LEMUR seed corpus, imported JSONL |
//! | [`cycles`] | fine-tuning cycles: seed, generate, evaluate, select, fine-tune, resumable |
//! | [`export`] | `nas export`: the best model, LEMUR-contract files, a fine-tuning corpus |
//! | [`fidelity`] | `nas fidelity`: one-epoch scores against longer training and other seeds |
//! | [`report`] | reports: HTML, Markdown, figures, CSV/JSON exports |
//! | [`compare`] | comparing configurations over seeds, with confidence intervals |

pub mod builtins;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod corpus;
pub mod cycles;
pub mod datasets;
pub mod executor;
pub mod export;
pub mod fetch;
pub mod fidelity;
pub mod metrics;
pub mod paths;
pub mod records;
pub mod registry;
pub mod report;
pub mod run_dir;
pub mod run_lock;
pub mod search;
pub mod session;
pub mod slurm;
pub mod store;
pub mod time;
pub mod wasm;
