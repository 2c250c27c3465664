//! The `tune.lora` fine-tuner of `nas-tune-lora`, exported as a plugin library:
//! `nas --plugin target/release/libnas_tune_lora.so`.
nas_plugin_api::export_root_module!(nas_tune_lora_lib::library);
