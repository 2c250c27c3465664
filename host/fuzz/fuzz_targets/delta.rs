#![no_main]
//! Applying an LLM's diff to a parent never panics; a diff that `diffy`
//! makes from A to B applies to A and gives B.
//!
//! Input: `parent \0 diff-or-new`. The second half is tried both as a diff
//! against the parent (arbitrary, lenient path) and as a new version of the
//! parent (a well-formed diff is made from it and must apply exactly).
use libfuzzer_sys::fuzz_target;
use nas_host::search::delta::apply;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (parent, other) = text.split_once('\0').unwrap_or((text, ""));
    let _ = apply(parent, other);
    if parent != other {
        let patch = diffy::create_patch(parent, other).to_string();
        match apply(parent, &patch) {
            Ok((out, _)) => assert_eq!(out, other, "the diff from A to B applied to A:\n{patch}"),
            Err(e) => panic!("a diffy diff from A to B does not apply to A: {e}\n{patch}"),
        }
    }
});
