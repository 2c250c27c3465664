#![no_main]
//! IDX parsing (after optional gunzip) never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = nas_datasets::source::gunzip_if_needed(data.to_vec(), 0) {
        let _ = nas_datasets::idx::parse_idx(bytes);
    }
});
