//! `llm.local` of `nas-llm-local` (embedded llama.cpp), exported as a plugin
//! library: `nas --plugin target/release/libnas_llm_local.so`.
nas_plugin_api::export_root_module!(nas_llm_local_lib::library);
