#![no_main]
//! Reading the Prompt Improver's answer never panics and always says how it
//! was read.
use libfuzzer_sys::fuzz_target;
use nas_host::search::improver::parse;

fuzz_target!(|data: &[u8]| {
    let answer = String::from_utf8_lossy(data);
    let advice = parse(&answer);
    assert!(
        matches!(advice.parsed_as.as_str(), "json_fence" | "bare_object" | "lenient" | "raw"),
        "{}",
        advice.parsed_as
    );
    if advice.parsed_as == "raw" {
        assert_eq!(advice.suggestions, answer.trim());
    }
    let _ = nas_host::search::extract::extract_code(&answer);
});
