#![no_main]
//! CIFAR binary batch parsing never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nas_datasets::cifar::parse_batch(data, 1, 0, 10);
    let _ = nas_datasets::cifar::parse_batch(data, 2, 1, 100);
});
