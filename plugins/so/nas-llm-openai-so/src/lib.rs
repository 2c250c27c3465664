//! `llm.openai` of `nas-llm-openai` (any OpenAI-compatible server),
//! exported alone as a plugin library:
//! `nas --plugin target/release/libnas_llm_openai.so`.
nas_plugin_api::export_root_module!(nas_llm_openai_lib::openai_library);
