//! Prompt templates: one set per dataset family, written for this project
//! and embedded in the binary; a user's directory can replace any of them.
//!
//! Templates are [minijinja](https://docs.rs/minijinja) files. A name is
//! looked up in the user's `[prompts] dir` first, then in the family's set
//! (`host/prompts/<family>/`), then in the common set
//! (`host/prompts/common/`). The files: `system_generator.md`,
//! `generator.md`, `generator_delta.md`, `generator_retry.md` (asked when
//! an answer repeats an evaluated design), `generator_fix.md` (asked to fix
//! a design that failed before training), `system_improver.md`,
//! `improver.md`, `improver_retry.md` (why the answers so far were refused
//! when the Improver is asked again in a fresh turn: `improver.md`
//! includes it where `refused` is set), and the pieces they include (`task.md`, `hints.md`,
//! `answer_format.md`, `previous.md`).

use std::path::PathBuf;

use minijinja::Environment;
use serde::Serialize;

const COMMON: &[(&str, &str)] = &[
    ("system_generator.md", include_str!("../../prompts/common/system_generator.md")),
    ("system_improver.md", include_str!("../../prompts/common/system_improver.md")),
    ("task.md", include_str!("../../prompts/common/task.md")),
    ("generator.md", include_str!("../../prompts/common/generator.md")),
    ("generator_delta.md", include_str!("../../prompts/common/generator_delta.md")),
    ("generator_retry.md", include_str!("../../prompts/common/generator_retry.md")),
    ("generator_fix.md", include_str!("../../prompts/common/generator_fix.md")),
    ("improver.md", include_str!("../../prompts/common/improver.md")),
    ("improver_retry.md", include_str!("../../prompts/common/improver_retry.md")),
    ("answer_format.md", include_str!("../../prompts/common/answer_format.md")),
    ("previous.md", include_str!("../../prompts/common/previous.md")),
    ("hints.md", ""),
];

const FAMILIES: &[(&str, &str, &str)] = &[
    ("mnist", "hints.md", include_str!("../../prompts/mnist/hints.md")),
    ("cifar", "hints.md", include_str!("../../prompts/cifar/hints.md")),
    ("imagenette", "hints.md", include_str!("../../prompts/imagenette/hints.md")),
];

/// The family whose templates a dataset uses.
pub fn family_for(dataset_family: &str, name: &str) -> &'static str {
    let key = if dataset_family.is_empty() { name } else { dataset_family };
    let key = key.to_ascii_lowercase();
    if key.contains("mnist") {
        "mnist"
    } else if key.contains("cifar") || key.contains("svhn") {
        "cifar"
    } else if key.contains("imagenet") || key.contains("folder") || key.contains("celeba") {
        "imagenette"
    } else {
        "common"
    }
}

/// A template problem (a user template that does not parse or render).
#[derive(Debug, thiserror::Error)]
#[error("prompt template `{name}`{origin}: {message}")]
pub struct PromptError {
    name: String,
    origin: String,
    message: String,
}

/// The loaded template set.
pub struct Prompts {
    env: Environment<'static>,
    user_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prompts(user dir {:?})", self.user_dir)
    }
}

impl Prompts {
    /// The set for a family, with optional user overrides.
    pub fn new(family: &'static str, user_dir: Option<PathBuf>) -> Prompts {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        let dir = user_dir.clone();
        env.set_loader(move |name: &str| {
            if let Some(dir) = &dir {
                let p = dir.join(name);
                if p.is_file() {
                    return std::fs::read_to_string(&p).map(Some).map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("{}: {e}", p.display()))
                    });
                }
            }
            if let Some((_, _, text)) = FAMILIES.iter().find(|(f, n, _)| *f == family && *n == name) {
                return Ok(Some((*text).to_string()));
            }
            Ok(COMMON.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_string()))
        });
        Prompts { env, user_dir }
    }

    /// Renders a template with a context.
    pub fn render<S: Serialize>(&self, name: &str, ctx: &S) -> Result<String, PromptError> {
        let origin = match &self.user_dir {
            Some(d) if d.join(name).is_file() => format!(" ({})", d.join(name).display()),
            _ => String::new(),
        };
        let err = |e: minijinja::Error| {
            let mut message = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                message.push_str(&format!(": {s}"));
                src = s.source();
            }
            PromptError { name: name.to_string(), origin: origin.clone(), message }
        };
        let t = self.env.get_template(name).map_err(err)?;
        let text = t.render(ctx).map_err(err)?;
        Ok(squeeze_blank_lines(&text))
    }
}

/// Collapses runs of blank lines to one.
fn squeeze_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.trim().lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> serde_json::Value {
        serde_json::json!({
            "dataset": {"title": "Fashion-MNIST", "channels": 1, "height": 28, "width": 28, "num_classes": 10,
                        "class_names": ["T-shirt/top", "Trouser"], "augment": false},
            "attempt": 4,
            "best": {"iteration": 2, "accuracy_pct": "85.10%", "code": "class Net: best"},
            "previous": {"iteration": 3, "status": "failed", "error": "shape: mat1 and mat2 shapes cannot be multiplied", "code": "class Net: prev"},
            "suggestions": "Use adaptive pooling.",
        })
    }

    #[test]
    fn the_compact_prompt_names_a_softmax_on_the_best_designs_output_and_the_papers_does_not() {
        let p = Prompts::new("mnist", None);
        let note = "The network applies a softmax to its output";
        let mut c = ctx();
        c["best"]["note"] = serde_json::json!(note);
        assert!(!p.render("generator.md", &c).expect("renders").contains(note));
        c["compact"] = serde_json::json!(true);
        assert!(p.render("generator.md", &c).expect("renders").contains(note));
        c["best"]["note"] = serde_json::Value::Null;
        assert!(!p.render("generator.md", &c).expect("renders").contains(note));
    }

    #[test]
    fn the_compact_prompt_shows_the_best_design_and_not_the_previous_attempts_code() {
        // The paper's prompt shows the previous attempt's code beside the
        // best; the compact one only its result. In the third and fourth
        // target runs, with a trained previous attempt shown, the 1.5B
        // generator carried lines of it into the best design in 30 of 50
        // attempts (2 new bests, 5 failures; 5 and 2 in the other 20): a
        // ReLU on the logits three attempts in a row, layers bound in
        // `forward`.
        let p = Prompts::new("mnist", None);
        for status in ["ok", "failed"] {
            let mut c = ctx();
            c["previous"]["status"] = serde_json::json!(status);
            c["previous"]["accuracy_pct"] = serde_json::json!("84.00%");
            let paper = p.render("generator.md", &c).expect("renders");
            assert!(paper.contains("class Net: prev") && paper.contains("class Net: best"), "{paper}");
            c["compact"] = serde_json::json!(true);
            let compact = p.render("generator.md", &c).expect("renders");
            assert!(!compact.contains("class Net: prev") && compact.contains("class Net: best"), "{compact}");
            assert!(compact.contains("Previous attempt (3): "), "{compact}");
        }
        // With no best yet, the failed attempt is what there is to fix.
        let mut c = ctx();
        c["compact"] = serde_json::json!(true);
        c["best"] = serde_json::Value::Null;
        assert!(p.render("generator.md", &c).expect("renders").contains("class Net: prev"));
    }

    #[test]
    fn the_generator_prompt_carries_what_the_method_says() {
        let p = Prompts::new("mnist", None);
        let text = p.render("generator.md", &ctx()).expect("renders");
        for needle in [
            "Fashion-MNIST",
            "(batch, 1, 28, 28)",
            "10 classes",
            "class Net(nn.Module)",
            "attempt 4",
            "class Net: best",
            "85.10%",
            "class Net: prev",
            "failed — shape",
            "Use adaptive pooling.",
            "28x28 input is 7x7",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(!text.contains("\n\n\n"));
        // Under limits, both roles read what the best design costs.
        let mut c = ctx();
        c["best"]["cost"] = serde_json::json!("it costs 8.2 of the 200.0 MFLOPs per example allowed");
        c["current"] = serde_json::json!({"iteration": 4, "code": "class Net: now", "result": "trained: 88.00%"});
        for template in ["generator.md", "improver.md"] {
            let text = p.render(template, &c).expect("renders");
            assert!(
                text.contains(
                    "(attempt 2, test accuracy 85.10%; it costs 8.2 of the 200.0 MFLOPs per example allowed):"
                ),
                "{template}:\n{text}"
            );
        }
    }

    #[test]
    fn an_improver_asked_again_reads_why_on_lines_of_their_own_above_its_instruction() {
        let p = Prompts::new("mnist", None);
        let mut c = ctx();
        c["current"] = serde_json::json!({"iteration": 4, "code": "class Net: now", "result": "trained: 88.00%"});
        c["answer_keys"] = serde_json::json!([]);
        let first = p.render("improver.md", &c).expect("renders");
        assert!(!first.contains("refused"), "{first}");
        c["refused"] = serde_json::json!(["it repeats the previous diagnosis"]);
        let again = p.render("improver.md", &c).expect("renders");
        let note = "\nAn answer to this was refused: it repeats the previous diagnosis.\nGive a different diagnosis: another cause of attempt 4's result in THIS design, and a change that is not in the history above.\nDiagnose attempt 4 ";
        assert!(again.contains(note), "{again}");
        // The first prompt and the note, nothing else.
        assert_eq!(again.replacen(&note[1..note.len() - "Diagnose attempt 4 ".len()], "", 1), first);
        c["refused"] = serde_json::json!(["it gives no suggestion", "it repeats the diagnosis of attempt 2"]);
        let twice = p.render("improver.md", &c).expect("renders");
        assert!(
            twice.contains("2 answers to this were refused:\n- it gives no suggestion\n- it repeats the diagnosis of attempt 2\nGive a different"),
            "{twice}"
        );
        assert!(!twice.contains("\n\n\n"), "{twice}");
    }

    #[test]
    fn a_user_directory_overrides_single_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hints.md"), "CUSTOM HINT for {{ dataset.title }}").expect("write");
        let p = Prompts::new("cifar", Some(dir.path().to_path_buf()));
        let text = p.render("generator.md", &ctx()).expect("renders");
        assert!(text.contains("CUSTOM HINT for Fashion-MNIST"));
        assert!(!text.contains("VGG-style"));
        std::fs::write(dir.path().join("improver.md"), "{% if %}").expect("write");
        let err = p.render("improver.md", &ctx()).expect_err("bad template");
        assert!(err.to_string().contains("improver.md"), "{err}");
    }
}
