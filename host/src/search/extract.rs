//! Taking code (or a diff) out of an LLM answer: the shared helpers of
//! `nas_plugin_api::text`, which the evaluators use too.

pub use nas_plugin_api::text::{extract_code, extract_diff, fences, Fence};
