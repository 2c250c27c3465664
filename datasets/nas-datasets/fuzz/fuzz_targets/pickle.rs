#![no_main]
//! The CIFAR python-pickle reader never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nas_datasets::cifar::parse_pickled_batch(data, "labels", 10);
});
