//! The prompts of training examples: the Code Generator's own, rendered
//! through the search's templates ([`crate::search::prompts`]) with the
//! context the search gives them, so that what the generator is fine-tuned
//! on is what it is asked during a search.
//!
//! A whole-file example answers the first attempt's prompt (no best design
//! yet, no previous attempt, no suggestions). A diff example answers the
//! delta-mode prompt whose parent is its baseline, given as the search gives
//! a configured `[search] baseline`: attempt 0, accuracy not measured.

use nas_plugin_api::{ChatMessage, DatasetManifest};
use serde_json::{json, Value};

use crate::config::{PromptStyle, SearchSection};
use crate::search::prompts::{PromptError, Prompts};

pub use crate::search::dataset_context;

/// Renders the generator's prompts for one dataset and search setup.
pub struct PromptSetup {
    prompts: Prompts,
    dataset: Value,
    compact: bool,
    use_best_reference: bool,
}

impl std::fmt::Debug for PromptSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PromptSetup({:?}, {})", self.prompts, self.dataset)
    }
}

impl PromptSetup {
    /// The prompts of a search over `manifest` (titled `title`) with the
    /// templates `prompts` and the `[search]` settings `search`.
    pub fn new(prompts: Prompts, manifest: &DatasetManifest, title: &str, search: &SearchSection) -> PromptSetup {
        PromptSetup {
            prompts,
            dataset: dataset_context(manifest, title),
            compact: search.prompt_style == PromptStyle::Compact,
            use_best_reference: search.use_best_reference,
        }
    }

    fn render(&self, template: &str, ctx: &Value) -> Result<Vec<ChatMessage>, PromptError> {
        Ok(vec![
            ChatMessage::system(self.prompts.render("system_generator.md", ctx)?),
            ChatMessage::user(self.prompts.render(template, ctx)?),
        ])
    }

    /// The first attempt's prompt of a whole-file search.
    pub fn full(&self) -> Result<Vec<ChatMessage>, PromptError> {
        let ctx = json!({
            "dataset": self.dataset, "compact": self.compact, "attempt": 1,
            "best": null, "previous": null, "suggestions": null, "parent": null,
        });
        self.render("generator.md", &ctx)
    }

    /// The first attempt's prompt of a delta-mode search whose baseline is
    /// `parent`.
    pub fn delta(&self, parent: &str) -> Result<Vec<ChatMessage>, PromptError> {
        let best = self
            .use_best_reference
            .then(|| json!({"iteration": 0, "code": parent, "accuracy_pct": "not measured yet"}));
        let ctx = json!({
            "dataset": self.dataset, "compact": self.compact, "attempt": 1,
            "best": best, "previous": null, "suggestions": null,
            "parent": {"iteration": 0, "code": parent, "accuracy_pct": null},
        });
        self.render("generator_delta.md", &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> DatasetManifest {
        serde_json::from_value(json!({
            "format_version": 1, "name": "cifar10", "family": "cifar", "input_shape": [3, 32, 32],
            "num_classes": 10, "class_names": ["airplane", "automobile"], "mean": [0.5], "std": [0.25],
            "splits": {"train": {"file": "train.safetensors", "count": 50000}},
        }))
        .expect("a manifest")
    }

    #[test]
    fn prompts_carry_the_dataset_and_the_parent() {
        let setup = PromptSetup::new(Prompts::new("cifar", None), &manifest(), "CIFAR-10", &SearchSection::default());
        let full = setup.full().expect("renders");
        assert_eq!(full.len(), 2);
        let user = &full[1].content;
        assert!(
            user.contains("CIFAR-10") && user.contains("(batch, 3, 32, 32)") && user.contains("airplane"),
            "{user}"
        );
        assert!(user.contains("attempt 1") && user.contains("random crop"), "{user}");
        let delta = setup.delta("class Net: parent\n").expect("renders");
        assert!(delta[1].content.contains("class Net: parent") && delta[1].content.contains("```diff"));
        assert_eq!(delta[0], full[0], "one system prompt for both modes");
    }
}
