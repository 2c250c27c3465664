//! Taking code (or a diff) out of an LLM answer, on top of the shared
//! helpers of `nas_plugin_api::text` that the evaluators use too.

pub use nas_plugin_api::text::{extract_diff, fences, Fence};

/// The code of a generator's answer: as `nas_plugin_api::text::extract_code`,
/// except that an answer with no code fence counts as code only when it
/// looks like Python. Prose ("I would try a deeper network") is then an
/// `extract` failure without a trip through the evaluator.
pub fn extract_code(answer: &str) -> Option<String> {
    let code = nas_plugin_api::text::extract_code(answer)?;
    if fences(answer).is_empty() && !looks_like_python(answer) {
        return None;
    }
    Some(code)
}

fn looks_like_python(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        ["class ", "import ", "from ", "def ", "with ", "while ", "for ", "if "].iter().any(|k| l.starts_with(k))
            || l.split_once('=').is_some_and(|(lhs, _)| {
                let lhs = lhs.trim();
                !lhs.is_empty() && lhs.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_without_a_fence_is_no_code_but_bare_python_is() {
        assert_eq!(extract_code("I would suggest trying a deeper network with residual connections."), None);
        assert_eq!(extract_code("import torch\nclass Net: pass").as_deref(), Some("import torch\nclass Net: pass"));
        assert_eq!(extract_code("hog = []\nhog.append(1)").as_deref(), Some("hog = []\nhog.append(1)"));
        assert_eq!(extract_code("Here:\n```\nx = 1\n```").as_deref(), Some("x = 1"));
    }
}
