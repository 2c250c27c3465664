#![no_main]
//! Code and diff extraction from LLM answers never panics, and what it
//! returns is a piece of the answer.
use libfuzzer_sys::fuzz_target;
use nas_plugin_api::text::{estimate_tokens, extract_code, extract_diff, fences, truncate_chars};

/// Whether `part` is a substring of `whole`, as text.
fn within(whole: &str, part: &str) -> bool {
    whole.contains(part)
}

/// Whether `part` is a slice of `whole`'s own bytes.
fn slice_of(whole: &str, part: &str) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = std::str::from_utf8(data) else { return };
    for f in fences(answer) {
        assert!(slice_of(answer, f.body), "a fence body is a slice of the answer");
        assert!(!f.lang.contains('\n'), "an info string is one line: {:?}", f.lang);
    }
    if let Some(code) = extract_code(answer) {
        assert!(within(answer, &code), "extracted code comes from the answer");
        assert!(!code.trim().is_empty());
    }
    if let Some(diff) = extract_diff(answer) {
        assert!(within(answer, &diff), "an extracted diff comes from the answer");
    }
    let n = data.first().copied().unwrap_or(0) as usize;
    let cut = truncate_chars(answer, n);
    assert!(answer.starts_with(cut) && cut.chars().count() <= n);
    assert!(estimate_tokens(answer) <= answer.len() as u64);
});
