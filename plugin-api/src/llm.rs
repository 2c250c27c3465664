//! The LLM backend role.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::PluginError;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions.
    System,
    /// The host's request.
    User,
    /// The model's answer.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: ChatRole,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::System, content: content.into() }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::User, content: content.into() }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage { role: ChatRole::Assistant, content: content.into() }
    }
}

/// A chat request. Sampling fields left `None` take the backend's defaults
/// (for the built-in families, the paper's: temperature 0.7, top_p 0.9, up to
/// 2048 new tokens).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Most new tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Extra stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Sampling seed, where the backend supports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Which role of the method asks (`generator`, `improver`, ...), for
    /// accounting and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// A LoRA adapter to answer with, made by a fine-tuner. A backend that
    /// cannot apply adapters refuses the request with
    /// [`ErrorCode::Unsupported`](crate::ErrorCode) rather than answer
    /// without it. Added in plugin API 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterRef>,
}

/// A LoRA adapter named in a [`ChatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    /// A stable name (`cycle-3`): the served name on an OpenAI-compatible
    /// server (vLLM `--enable-lora`), a cache key for embedded backends.
    pub name: String,
    /// The GGUF adapter file, for llama.cpp backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<PathBuf>,
    /// The PEFT adapter directory, for servers that load adapters by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_dir: Option<PathBuf>,
    /// The adapter's scale (1.0 when unset; 0.0 gives the base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
}

/// Tokens spent by one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// True when counted locally because the server did not report usage.
    #[serde(default)]
    pub estimated: bool,
}

/// A chat answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The generated text.
    pub content: String,
    /// The model that answered, as the server names it.
    #[serde(default)]
    pub model: String,
    /// Why generation stopped (`stop`, `length`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Tokens spent.
    #[serde(default)]
    pub usage: TokenUsage,
    /// Wall-clock milliseconds of the call, retries included.
    #[serde(default)]
    pub latency_ms: u64,
    /// How many attempts the call took (1 when the first succeeded).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// An LLM backend: answers chat requests.
///
/// Errors are infrastructure ([`ErrorCode::Unreachable`](crate::ErrorCode),
/// `Unauthorized`, `RateLimited` after retries, ...): the host stops the run
/// with the run resumable. An answer that is useless to the method (no code,
/// bad JSON) is *not* an error: the method records it as a failed attempt.
pub trait LlmBackend: Send {
    /// Answers one request.
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError>;
}
