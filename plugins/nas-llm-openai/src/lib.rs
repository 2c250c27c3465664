//! # nas-llm-openai
//!
//! LLM backends of `nas` for every server that speaks the OpenAI API:
//! hosted (DeepSeek, DashScope's compatible mode for Qwen, Zhipu's GLM) and
//! self-served (vLLM, SGLang, Ollama, llama.cpp's server, LM Studio). One
//! blocking reqwest client speaks `POST /chat/completions` — or raw
//! `POST /completions`, rendering the family's chat template itself — to any
//! base URL, with a connect timeout, a deadline per attempt and one for the
//! whole call, retries with exponential backoff and jitter (connection
//! errors, resets, 429 honouring a capped `Retry-After`, 5xx), a cap on the
//! bytes read of an answer, typed errors, token usage (from the server, else
//! counted locally) and per-call latency.
//!
//! | id | default server | default model | key variable | template |
//! |---|---|---|---|---|
//! | `llm.deepseek-coder` | `https://api.deepseek.com/v1` | `deepseek-coder` | `DEEPSEEK_API_KEY` | `### Instruction:` / `### Response:` |
//! | `llm.qwen2.5` | `https://dashscope.aliyuncs.com/compatible-mode/v1` | `qwen2.5-coder-32b-instruct` | `DASHSCOPE_API_KEY` | ChatML |
//! | `llm.glm` | `https://open.bigmodel.cn/api/paas/v4` | `glm-4` | `ZHIPUAI_API_KEY` | `[gMASK]<sop><\|user\|>` |
//! | `llm.openai` | (required) | (required) | `OPENAI_API_KEY` | ChatML |
//!
//! Settings ([`OpenAiSettings`]): `base_url`, `model`, `api_key_env`,
//! `temperature` (0.7), `top_p` (0.9), `max_tokens` (2048), `stop`, `api`
//! (`chat` | `completions`), `template`, `connect_timeout_s` (10),
//! `read_timeout_s` (600), `total_timeout_s` (twice `read_timeout_s`),
//! `max_response_bytes` (4 MiB), `max_retries` (4), `retry_base_ms` (500),
//! `max_retry_wait_s` (60), `headers`, `seed`. The API key is read from the
//! environment variable named by `api_key_env` and is never written
//! anywhere.
//!
//! [`library`] offers all four; [`deepseek_library`], [`qwen_library`],
//! [`glm_library`] and [`openai_library`] offer one each, for the `.so`
//! builds under `plugins/so/`.
//!
//! ```
//! use nas_plugin_api::*;
//! let lib = ffi::NativeLibrary::from_ref(nas_llm_openai::library());
//! let ids: Vec<String> = lib.plugins().unwrap().into_iter().map(|p| p.id).collect();
//! assert_eq!(ids, ["llm.deepseek-coder", "llm.qwen2.5", "llm.glm", "llm.openai"]);
//! // A backend pointed at a local vLLM server:
//! let cfg = serde_json::json!({"base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen2.5-Coder-7B-Instruct"});
//! let backend = nas_llm_openai::OpenAiBackend::new(nas_llm_openai::Family::Qwen25, &cfg, &HostContext::default()).unwrap();
//! assert_eq!(backend.endpoint(), "http://127.0.0.1:8000/v1/chat/completions");
//! ```

mod client;
mod family;

pub use client::{request, Api, OpenAiBackend, OpenAiSettings};
pub use family::{Family, FamilyDefaults, Template};
use nas_plugin_api::{HostContext, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Makes backends of one family.
#[derive(Debug, Clone, Copy)]
pub struct FamilyFactory(pub Family);

impl PluginFactory for FamilyFactory {
    fn info(&self) -> PluginInfo {
        let d = self.0.defaults();
        PluginInfo::new(d.id, PluginKind::Llm, VERSION, d.description)
    }

    fn create(&self, config: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        Ok(PluginInstance::Llm(Box::new(OpenAiBackend::new(self.0, config, ctx)?)))
    }
}

nas_plugin_api::plugin_library!(
    /// All four OpenAI-compatible backends.
    pub fn library = [
        FamilyFactory(Family::DeepSeekCoder),
        FamilyFactory(Family::Qwen25),
        FamilyFactory(Family::Glm),
        FamilyFactory(Family::Generic),
    ]
);

nas_plugin_api::plugin_library!(
    /// `llm.deepseek-coder` alone (for `libnas_llm_deepseek.so`).
    pub fn deepseek_library = [FamilyFactory(Family::DeepSeekCoder)]
);

nas_plugin_api::plugin_library!(
    /// `llm.qwen2.5` alone (for `libnas_llm_qwen.so`).
    pub fn qwen_library = [FamilyFactory(Family::Qwen25)]
);

nas_plugin_api::plugin_library!(
    /// `llm.glm` alone (for `libnas_llm_glm.so`).
    pub fn glm_library = [FamilyFactory(Family::Glm)]
);

nas_plugin_api::plugin_library!(
    /// `llm.openai` alone (for `libnas_llm_openai.so`).
    pub fn openai_library = [FamilyFactory(Family::Generic)]
);
