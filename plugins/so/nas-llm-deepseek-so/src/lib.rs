//! `llm.deepseek-coder` of `nas-llm-openai`, exported alone as a plugin
//! library: `nas --plugin target/release/libnas_llm_deepseek.so`.
nas_plugin_api::export_root_module!(nas_llm_openai_lib::deepseek_library);
