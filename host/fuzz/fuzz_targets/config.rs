#![no_main]
//! Parsing a run configuration never panics, its errors name a line that
//! exists, and what parses serialises to text that parses back to the same
//! configuration (compared as text: settings may hold NaN).
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nas_host::config::{parse, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let again = toml::to_string(&config).expect("a parsed config serialises");
            let back = parse(&again, Path::new("again.toml")).expect("a serialised config parses");
            assert_eq!(toml::to_string(&back).expect("serialises"), again, "round trip");
        }
        Err(ConfigError::Invalid { line, column, .. }) => {
            assert!(line >= 1 && column >= 1);
            let lines = text.matches('\n').count() + 1;
            assert!(line <= lines, "line {line} of {lines}");
        }
        Err(_) => {}
    }
});
