//! Property tests of the text helpers that read LLM answers: whatever an
//! answer holds, extraction never panics and returns a piece of it, and a
//! well-fenced block comes back exactly. (A coverage-guided fuzz target for
//! the same helpers lives in `plugin-api/fuzz/`.)

use nas_plugin_api::text::{estimate_tokens, extract_code, extract_diff, fences, truncate_chars};
use proptest::prelude::*;

/// Answers built from the pieces that trip fence parsers: markers, info
/// strings, hunk headers, blank lines, multi-byte characters, and noise.
fn answer() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("```".to_string()),
        Just("~~~".to_string()),
        Just("```python".to_string()),
        Just("```diff".to_string()),
        Just("```json".to_string()),
        Just("  ```".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        Just("class Net(nn.Module):".to_string()),
        Just("@@ -1,2 +1,2 @@".to_string()),
        Just("-a".to_string()),
        Just("+b".to_string()),
        Just("é€😀".to_string()),
        "\\PC{0,12}",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

/// Lines with no fence markers in them.
fn plain_lines() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9_ =():.,+*/é-]{0,30}", 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn extraction_never_panics_and_returns_a_piece_of_the_answer(a in answer()) {
        for f in fences(&a) {
            let (w, p) = (a.as_ptr() as usize, f.body.as_ptr() as usize);
            prop_assert!(p >= w && p + f.body.len() <= w + a.len(), "a fence body is a slice of the answer");
        }
        if let Some(code) = extract_code(&a) {
            prop_assert!(a.contains(&code));
            prop_assert!(!code.trim().is_empty());
        }
        if let Some(diff) = extract_diff(&a) {
            prop_assert!(a.contains(&diff));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(a in "\\PC{0,300}") {
        let _ = fences(&a);
        if let Some(code) = extract_code(&a) {
            prop_assert!(a.contains(&code));
        }
        if let Some(diff) = extract_diff(&a) {
            prop_assert!(a.contains(&diff));
        }
    }

    #[test]
    fn a_python_fence_gives_back_its_code(prose in plain_lines(), code in plain_lines(), tail in plain_lines()) {
        let a = format!("{prose}\n```python\n{code}\n```\n{tail}");
        let want = code.trim_matches('\n');
        let got = extract_code(&a);
        if want.trim().is_empty() {
            prop_assert_eq!(got, None);
        } else {
            prop_assert_eq!(got, Some(want.to_string()));
        }
    }

    #[test]
    fn a_diff_fence_gives_back_its_diff(prose in plain_lines(), body in plain_lines()) {
        let diff = format!("--- a/net.py\n+++ b/net.py\n@@ -1 +1 @@\n{body}\n");
        let a = format!("{prose}\n~~~diff\n{diff}~~~\nThat is all.");
        prop_assert_eq!(extract_diff(&a), Some(diff));
        prop_assert_eq!(extract_code(&a), None, "a diff is not code");
    }

    #[test]
    fn truncation_is_a_prefix_of_at_most_n_characters(s in "\\PC{0,60}", n in 0usize..80) {
        let t = truncate_chars(&s, n);
        prop_assert!(s.starts_with(t));
        prop_assert_eq!(t.chars().count(), n.min(s.chars().count()));
    }

    #[test]
    fn token_estimates_grow_with_the_text(a in "\\PC{0,60}", b in "\\PC{0,60}") {
        let (ea, eab) = (estimate_tokens(&a), estimate_tokens(&format!("{a}{b}")));
        prop_assert!(ea <= eab);
        prop_assert!(eab <= ea + estimate_tokens(&b) + 1);
    }
}
