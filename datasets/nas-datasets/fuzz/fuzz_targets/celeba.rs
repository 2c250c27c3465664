#![no_main]
//! CelebA list parsing never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nas_datasets::celeba::parse_attributes(text, "Smiling");
        let _ = nas_datasets::celeba::parse_partition(text);
    }
});
