#![no_main]
//! MATLAB v5 parsing never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nas_datasets::mat::parse_mat(data);
});
