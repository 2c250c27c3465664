//! The integration tests: one binary, a module per area, helpers once in the
//! `nas-tests` library (`tests/src/lib.rs`).
//!
//! Run one area with `cargo test --release -p nas-tests --test integration <module>::`.

mod conformance;
mod corpus;
mod crash;
mod cycles;
mod docs;
mod export;
mod fetch;
mod fidelity;
mod improve;
mod islands;
mod properties;
mod report;
mod search;
mod slurm;
mod spine;
mod wasm;
