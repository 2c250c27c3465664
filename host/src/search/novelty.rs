//! The novelty filter: MinHash over token shingles of normalised code.
//!
//! Code is normalised (comments, docstrings and imports dropped, whitespace
//! ignored),
//! split into tokens (identifiers, numbers, punctuation), and cut into
//! shingles of [`SHINGLE`] tokens. A signature of [`PERMUTATIONS`] minimum
//! hashes estimates the Jaccard similarity of two shingle sets; a candidate
//! at or above the threshold (0.90 by default) against any archived one is a
//! duplicate.

use std::collections::HashSet;

/// Tokens per shingle.
pub const SHINGLE: usize = 5;
/// Hash functions in a signature.
pub const PERMUTATIONS: usize = 128;

/// A MinHash signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(pub Vec<u64>);

/// The tokens of code with comments, docstrings and layout removed.
pub fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_doc: Option<&str> = None;
    for line in code.lines() {
        let mut l = line.trim();
        if let Some(q) = in_doc {
            if let Some(end) = l.find(q) {
                in_doc = None;
                l = &l[end + 3..];
            } else {
                continue;
            }
        }
        for q in ["\"\"\"", "'''"] {
            if let Some(stripped) = l.strip_prefix(q) {
                match stripped.find(q) {
                    Some(end) => l = &stripped[end + 3..],
                    None => {
                        in_doc = Some(q);
                        l = "";
                    }
                }
            }
        }
        let l = match l.find('#') {
            Some(i) if !l[..i].contains(['"', '\'']) => &l[..i],
            _ => l,
        };
        // The imports say nothing of the architecture: a design given back
        // without them (the evaluator supplies torch) is the same design.
        if l.starts_with("import ") || l.starts_with("from ") && l.contains(" import ") {
            continue;
        }
        let mut cur = String::new();
        for c in l.chars() {
            if c.is_alphanumeric()
                || c == '_'
                || (c == '.' && cur.chars().all(|d| d.is_ascii_digit()) && !cur.is_empty())
            {
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                if !c.is_whitespace() {
                    out.push(c.to_string());
                }
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The splitmix64 finaliser: a well-spread 64-bit hash of `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hashed shingles of code.
pub fn shingles(code: &str) -> HashSet<u64> {
    let toks = tokens(code);
    if toks.len() < SHINGLE {
        return std::iter::once(fnv1a(toks.join(" ").as_bytes())).collect();
    }
    toks.windows(SHINGLE).map(|w| fnv1a(w.join("\u{1f}").as_bytes())).collect()
}

/// The MinHash signature of code.
pub fn signature(code: &str) -> Signature {
    let set = shingles(code);
    let sig = (0..PERMUTATIONS as u64)
        .map(|i| {
            let seed = mix(i.wrapping_add(0x9e37_79b9_7f4a_7c15));
            set.iter().map(|h| mix(h ^ seed)).min().unwrap_or(u64::MAX)
        })
        .collect();
    Signature(sig)
}

impl Signature {
    /// Estimated Jaccard similarity with another signature.
    pub fn similarity(&self, other: &Signature) -> f64 {
        let same = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        same as f64 / self.0.len().max(1) as f64
    }
}

/// The archive of evaluated candidates.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: Vec<(u64, Signature)>,
}

impl Archive {
    /// Adds an evaluated candidate.
    pub fn add(&mut self, iteration: u64, sig: Signature) {
        self.entries.push((iteration, sig));
    }

    /// The most similar archived candidate at or above `threshold`.
    pub fn twin(&self, sig: &Signature, threshold: f64) -> Option<(u64, f64)> {
        self.entries
            .iter()
            .map(|(i, s)| (*i, s.similarity(sig)))
            .filter(|(_, sim)| *sim >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Archived candidates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = "import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)\n        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)\n        self.pool = nn.MaxPool2d(2)\n        self.fc = nn.Linear(64 * 7 * 7, num_classes)\n    def forward(self, x):\n        x = self.pool(self.conv1(x).relu())\n        x = self.pool(self.conv2(x).relu())\n        return self.fc(x.flatten(1))\n";

    #[test]
    fn comments_docstrings_and_layout_do_not_make_code_new() {
        let noisy = format!(
            "\"\"\"A network.\n\nWith a docstring.\"\"\"\n# a comment\n{}",
            NET.replace("    ", "\t").replace(", ", ",")
        );
        assert_eq!(tokens(&noisy), tokens(NET));
        assert!((signature(&noisy).similarity(&signature(NET)) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_design_given_back_without_or_with_other_imports_is_the_same_design() {
        let bare = NET.replace("import torch.nn as nn\n", "");
        let more = format!("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n{bare}");
        assert_eq!(tokens(&bare), tokens(NET));
        assert_eq!(tokens(&more), tokens(NET));
        // A name that merely starts like an import is code.
        let code = format!("{NET}imported = nn.Linear(4, 4)\nfrom_scratch = True\n");
        assert_eq!(tokens(&code).len(), tokens(NET).len() + 13, "{:?}", tokens(&code));
    }

    #[test]
    fn a_real_change_is_novel_and_a_tiny_one_is_not() {
        let tiny = NET.replace("nn.MaxPool2d(2)", "nn.MaxPool2d(2) ");
        let wider = NET.replace("32", "128").replace("64", "256").replace("nn.MaxPool2d(2)", "nn.AvgPool2d(2)");
        let base = signature(NET);
        assert!(base.similarity(&signature(&tiny)) >= 0.9);
        assert!(base.similarity(&signature(&wider)) < 0.9, "{}", base.similarity(&signature(&wider)));
    }

    #[test]
    fn the_archive_points_at_the_closest_twin() {
        let mut a = Archive::default();
        a.add(1, signature(NET));
        a.add(2, signature(&NET.replace("32", "48").replace("64", "96")));
        let (twin, sim) = a.twin(&signature(NET), 0.9).expect("duplicate");
        assert_eq!(twin, 1);
        assert!(sim > 0.99);
        assert!(a.twin(&signature("class Other: pass"), 0.9).is_none());
    }
}
