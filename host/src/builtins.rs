//! The plugins linked into `nas`. Each comes through the same door as a
//! third-party `.so`: its crate's `library()` returns the abi_stable root
//! module that its `.so` build exports.

use nas_plugin_api::ffi::PluginLibRef;

/// Every built-in plugin library.
pub fn libraries() -> Vec<PluginLibRef> {
    vec![
        nas_memory::library(),
        nas_datasets::library(),
        nas_eval_tch::library(),
        nas_llm_openai::library(),
        nas_llm_local::library(),
        nas_tune_lora::library(),
    ]
}
