//! `llm.qwen2.5` of `nas-llm-openai`, exported alone as a plugin library:
//! `nas --plugin target/release/libnas_llm_qwen.so`.
nas_plugin_api::export_root_module!(nas_llm_openai_lib::qwen_library);
