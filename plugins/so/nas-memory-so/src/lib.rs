//! The built-in memory strategies of `nas-memory`, exported as a plugin
//! library: `nas --plugin target/release/libnas_memory.so`.
nas_plugin_api::export_root_module!(nas_memory_lib::library);
