#![no_main]
//! Reading and checking a wasm plugin manifest never panics; a manifest
//! that passes its checks has a parseable API version.
use libfuzzer_sys::fuzz_target;
use nas_host::wasm::manifest::WasmManifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(manifest) = toml::from_str::<WasmManifest>(text) else { return };
    if manifest.check().is_ok() {
        assert!(manifest.api().is_ok());
        assert_eq!(manifest.sha256.len(), 64);
    }
});
