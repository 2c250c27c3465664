//! Host bindings generated from `plugin-api/wit` (one module per world; the
//! shared interfaces are generated once, in `memory`, and reused).
#![allow(missing_docs, clippy::all)]

/// `nas:plugin/memory-strategy`; also home of `types`, `host` and `meta`.
pub mod memory {
    wasmtime::component::bindgen!({
        path: "../plugin-api/wit",
        world: "nas:plugin/memory-strategy",
    });
}

/// `nas:plugin/llm-backend`.
pub mod llm {
    wasmtime::component::bindgen!({
        path: "../plugin-api/wit",
        world: "nas:plugin/llm-backend",
        with: {
            "nas:plugin/types": super::memory::nas::plugin::types,
            "nas:plugin/host": super::memory::nas::plugin::host,
        },
    });
}

/// `nas:plugin/dataset-loader`; also home of `files`.
pub mod dataset {
    wasmtime::component::bindgen!({
        path: "../plugin-api/wit",
        world: "nas:plugin/dataset-loader",
        with: {
            "nas:plugin/types": super::memory::nas::plugin::types,
            "nas:plugin/host": super::memory::nas::plugin::host,
        },
    });
}

/// `nas:plugin/evaluator`.
pub mod eval {
    wasmtime::component::bindgen!({
        path: "../plugin-api/wit",
        world: "nas:plugin/evaluator",
        with: {
            "nas:plugin/types": super::memory::nas::plugin::types,
            "nas:plugin/host": super::memory::nas::plugin::host,
            "nas:plugin/files": super::dataset::nas::plugin::files,
        },
    });
}

pub use memory::nas::plugin::host::LogLevel;
pub use memory::nas::plugin::types as t;
