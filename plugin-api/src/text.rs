//! Small text helpers that plugins and the host share.

/// The first `max_chars` characters of `s` (never splitting a character).
pub fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

/// A rough token count for text (about four characters a token for code and
/// English), used where a server reports no usage.
pub fn estimate_tokens(s: &str) -> u64 {
    let chars = s.chars().count() as u64;
    chars.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(truncate_chars("", 3), "");
    }

    #[test]
    fn token_estimate_grows_with_length() {
        assert_eq!(estimate_tokens(""), 0);
        assert!(estimate_tokens("def forward(self, x): return x") >= 7);
    }
}
