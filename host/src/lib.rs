//! The `nas` host library: everything the `nas` binary does, as a library the
//! integration tests drive too.

pub mod fetch;
pub mod wasm;
