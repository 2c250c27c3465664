//! The built-in dataset loaders of `nas-datasets`, exported as a plugin
//! library: `nas --plugin target/release/libnas_datasets.so`.
nas_plugin_api::export_root_module!(nas_datasets_lib::library);
