//! What each model family brings: default server, model, key variable, the
//! chat template for raw `/completions` servers, and stop sequences.

use nas_plugin_api::{ChatMessage, ChatRole};
use serde::Deserialize;

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// DeepSeek-Coder (`llm.deepseek-coder`).
    DeepSeekCoder,
    /// Qwen2.5 / Qwen2.5-Coder (`llm.qwen2.5`).
    Qwen25,
    /// GLM-4 (`llm.glm`).
    Glm,
    /// Any other model behind an OpenAI-compatible server (`llm.openai`).
    Generic,
}

/// A chat template for servers that offer only raw `/completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    /// ChatML (`<|im_start|>role ... <|im_end|>`), the Qwen family's.
    Chatml,
    /// DeepSeek-Coder's `### Instruction:` / `### Response:` format.
    DeepseekCoder,
    /// GLM-4's `[gMASK]<sop><|user|>` format.
    Glm4,
}

/// The defaults of a family.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDefaults {
    /// Plugin id.
    pub id: &'static str,
    /// One line for `nas plugins list`.
    pub description: &'static str,
    /// Default base URL (`None`: must be given).
    pub base_url: Option<&'static str>,
    /// Default model id.
    pub model: Option<&'static str>,
    /// Environment variable holding the API key.
    pub api_key_env: &'static str,
    /// Template for raw completions.
    pub template: Template,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 4] = [Family::DeepSeekCoder, Family::Qwen25, Family::Glm, Family::Generic];

    /// The family's defaults.
    pub fn defaults(self) -> FamilyDefaults {
        match self {
            Family::DeepSeekCoder => FamilyDefaults {
                id: "llm.deepseek-coder",
                description: "DeepSeek-Coder over an OpenAI-compatible API (api.deepseek.com, or vLLM/SGLang/Ollama/llama.cpp/LM Studio).",
                base_url: Some("https://api.deepseek.com/v1"),
                model: Some("deepseek-coder"),
                api_key_env: "DEEPSEEK_API_KEY",
                template: Template::DeepseekCoder,
            },
            Family::Qwen25 => FamilyDefaults {
                id: "llm.qwen2.5",
                description: "Qwen2.5(-Coder) over an OpenAI-compatible API (DashScope compatible mode, or vLLM/SGLang/Ollama/llama.cpp/LM Studio).",
                base_url: Some("https://dashscope.aliyuncs.com/compatible-mode/v1"),
                model: Some("qwen2.5-coder-32b-instruct"),
                api_key_env: "DASHSCOPE_API_KEY",
                template: Template::Chatml,
            },
            Family::Glm => FamilyDefaults {
                id: "llm.glm",
                description: "Zhipu GLM-4 over an OpenAI-compatible API (open.bigmodel.cn, or a local server).",
                base_url: Some("https://open.bigmodel.cn/api/paas/v4"),
                model: Some("glm-4"),
                api_key_env: "ZHIPUAI_API_KEY",
                template: Template::Glm4,
            },
            Family::Generic => FamilyDefaults {
                id: "llm.openai",
                description: "Any model behind an OpenAI-compatible chat-completions server (base_url and model required).",
                base_url: None,
                model: None,
                api_key_env: "OPENAI_API_KEY",
                template: Template::Chatml,
            },
        }
    }
}

fn role_name(role: ChatRole) -> &'static str {
    match role {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}

const DEEPSEEK_SYSTEM: &str = "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeek Company, and you only answer questions related to computer science. For politically sensitive questions, security and privacy issues, and other non-computer science questions, you will refuse to answer.";
const QWEN_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

impl Template {
    /// Renders a conversation as one prompt ending where the assistant's
    /// answer begins.
    pub fn render(self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        match self {
            Template::Chatml => {
                if messages.first().map(|m| m.role) != Some(ChatRole::System) {
                    out.push_str(&format!("<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"));
                }
                for m in messages {
                    out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", role_name(m.role), m.content));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            Template::DeepseekCoder => {
                let (system, rest) = match messages.split_first() {
                    Some((first, rest)) if first.role == ChatRole::System => (first.content.as_str(), rest),
                    _ => (DEEPSEEK_SYSTEM, messages),
                };
                out.push_str(system);
                out.push('\n');
                for m in rest {
                    match m.role {
                        ChatRole::User | ChatRole::System => {
                            out.push_str(&format!("### Instruction:\n{}\n", m.content));
                        }
                        ChatRole::Assistant => out.push_str(&format!("### Response:\n{}\n<|EOT|>\n", m.content)),
                    }
                }
                out.push_str("### Response:\n");
            }
            Template::Glm4 => {
                out.push_str("[gMASK]<sop>");
                for m in messages {
                    out.push_str(&format!("<|{}|>\n{}", role_name(m.role), m.content));
                }
                out.push_str("<|assistant|>\n");
            }
        }
        out
    }

    /// Stop sequences that end an answer under this template.
    pub fn stops(self) -> &'static [&'static str] {
        match self {
            Template::Chatml => &["<|im_end|>", "<|endoftext|>"],
            Template::DeepseekCoder => &["<|EOT|>", "### Instruction:"],
            Template::Glm4 => &["<|user|>", "<|observation|>", "<|endoftext|>"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Write Net."),
            ChatMessage::assistant("ok"),
            ChatMessage::user("Again."),
        ]
    }

    #[test]
    fn chatml_wraps_every_message_and_opens_the_assistant_turn() {
        let p = Template::Chatml.render(&chat());
        assert!(p.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWrite Net.<|im_end|>\n"));
        assert!(p.ends_with("<|im_start|>user\nAgain.<|im_end|>\n<|im_start|>assistant\n"));
        let q = Template::Chatml.render(&[ChatMessage::user("hi")]);
        assert!(q.starts_with("<|im_start|>system\nYou are Qwen"), "Qwen's default system prompt: {q}");
    }

    #[test]
    fn deepseek_coder_uses_instruction_and_response_blocks() {
        let p = Template::DeepseekCoder.render(&chat());
        assert_eq!(
            p,
            "Be brief.\n### Instruction:\nWrite Net.\n### Response:\nok\n<|EOT|>\n### Instruction:\nAgain.\n### Response:\n"
        );
        assert!(Template::DeepseekCoder
            .render(&[ChatMessage::user("x")])
            .starts_with("You are an AI programming assistant"));
    }

    #[test]
    fn glm4_starts_with_gmask_sop_and_ends_with_the_assistant_tag() {
        let p = Template::Glm4.render(&[ChatMessage::user("hi")]);
        assert_eq!(p, "[gMASK]<sop><|user|>\nhi<|assistant|>\n");
        assert!(Template::Glm4.stops().contains(&"<|user|>"));
    }
}
