//! The llama.cpp engine behind `llm.local`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use nas_plugin_api::{ChatRequest, ChatResponse, ChatRole, ErrorCode, LlmBackend, PluginError, TokenUsage};

use crate::{free_cores, LocalSettings, ID};

/// Tokens decoded per batch while reading the prompt.
const PROMPT_BATCH: usize = 512;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, PluginError> {
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var_os("NAS_LLAMA_LOG").is_none() {
                b.void_logs();
            }
            Ok(b)
        })
        .as_ref()
        .map_err(|e| PluginError::internal(format!("[{ID}] llama.cpp did not start: {e}")))
}

/// A loaded GGUF model answering chat requests. The model is loaded once
/// and reused by every call. Up to `prompt_cache` contexts are kept with
/// the tokens they read: a call whose prompt begins as a kept context's
/// tokens reads only the rest (the keys and values of the common prefix are
/// the same computation); with `prompt_cache = 0` each call gets a fresh
/// context.
///
/// A request that names a LoRA adapter ([`ChatRequest::adapter`] with a
/// `gguf` file) is answered with it applied at its scale (1.0 unless set;
/// 0.0 gives the base). Adapters are loaded once and kept by path (loaded
/// again when the file changes); llama.cpp frees them with the model. A
/// request without an adapter runs on the plain base: its fresh context has
/// no adapter set.
pub struct LocalBackend {
    /// The model, and the contexts kept on it (dropped before it).
    loaded: Option<Loaded>,
    adapters: HashMap<PathBuf, LoadedAdapter>,
    /// Calls answered, to find the least recently used kept context.
    calls: u64,
    /// Prompt tokens the last call found already read.
    reused: usize,
    name: String,
    settings: LocalSettings,
    threads: Option<usize>,
    max_threads: Option<usize>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalBackend({})", self.name)
    }
}

impl LocalBackend {
    /// Loads the GGUF at `path`. `threads` fixes the thread count; `None`
    /// picks the free cores at every call.
    pub fn load(path: &Path, settings: LocalSettings, threads: Option<usize>) -> Result<Self, PluginError> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| {
            PluginError::new(ErrorCode::Corrupt, format!("[{ID}] cannot load model {}: {e}", path.display()))
        })?;
        let name = model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(LocalBackend {
            loaded: Some(Loaded::new(model, |_| Vec::new())),
            adapters: HashMap::new(),
            calls: 0,
            reused: 0,
            name,
            settings,
            threads,
            max_threads: None,
        })
    }

    fn model(&self) -> &LlamaModel {
        model_of(&self.loaded)
    }

    /// Prompt tokens the last [`LlmBackend::complete`] call found already
    /// read in a kept context (0 when none began as its prompt, or with
    /// `prompt_cache = 0`).
    pub fn last_reused_tokens(&self) -> usize {
        self.reused
    }

    /// How many contexts are kept now.
    pub fn kept_contexts(&self) -> usize {
        self.loaded.as_ref().map(|l| l.borrow_dependent().len()).unwrap_or(0)
    }

    /// Loads the GGUF LoRA adapter at `path` unless it is loaded already
    /// (and unchanged); the key to find it again.
    fn load_adapter(&mut self, path: &Path) -> Result<PathBuf, PluginError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            PluginError::new(ErrorCode::NotFound, format!("[{ID}] LoRA adapter {}: {e}", path.display()))
        })?;
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let stamp = (meta.len(), meta.modified().ok());
        if self.adapters.get(&key).is_some_and(|a| a.stamp == stamp) {
            return Ok(key);
        }
        // Loading needs the model to itself: the kept contexts go (rare: an
        // adapter is loaded once per fine-tuning cycle).
        let mut model = self.loaded.take().expect("the model is in place").into_owner();
        let adapter = model.lora_adapter_init(&key);
        self.loaded = Some(Loaded::new(model, |_| Vec::new()));
        let adapter = adapter.map_err(|e| {
            PluginError::new(
                ErrorCode::Corrupt,
                format!(
                    "[{ID}] cannot load the LoRA adapter {} ({e}): not a GGUF LoRA adapter for this model \
                     (another architecture or other tensor shapes; set NAS_LLAMA_LOG=1 to see llama.cpp's reason)",
                    path.display()
                ),
            )
        })?;
        self.adapters.insert(key.clone(), LoadedAdapter { adapter, stamp });
        Ok(key)
    }

    /// How many distinct adapters were loaded.
    pub fn loaded_adapters(&self) -> usize {
        self.adapters.len()
    }

    /// The adapter a request names (loaded), and its scale.
    fn requested_adapter(&mut self, request: &ChatRequest) -> Result<Option<(PathBuf, f32)>, PluginError> {
        let Some(a) = &request.adapter else { return Ok(None) };
        let Some(path) = &a.gguf else {
            return Err(PluginError::unsupported(format!(
                "[{ID}] adapter `{}` names no GGUF file; llm.local applies GGUF LoRA adapters (tune.lora writes adapter.gguf)",
                a.name
            )));
        };
        let scale = a.scale.unwrap_or(1.0);
        if !scale.is_finite() {
            return Err(PluginError::input(format!("[{ID}] adapter scale must be a finite number, got {scale}")));
        }
        Ok(Some((self.load_adapter(path)?, scale)))
    }

    fn threads_now(&self) -> i32 {
        match self.threads {
            Some(t) => t,
            None => free_cores().min(self.max_threads.unwrap_or(usize::MAX)),
        }
        .max(1) as i32
    }

    /// How likely the model finds `answer` as the reply to `request`'s
    /// messages (through the chat template, with the request's adapter when
    /// it names one): the log-probability of each of the answer's tokens
    /// (special tokens such as `<|im_end|>` in `answer` are read as such),
    /// and the logits at the last prompt position. Sampling settings of the
    /// request are ignored.
    pub fn score(&mut self, request: &ChatRequest, answer: &str) -> Result<AnswerScore, PluginError> {
        if request.messages.is_empty() || answer.is_empty() {
            return Err(PluginError::input(format!("[{ID}] scoring needs messages and a non-empty answer")));
        }
        let adapter = self.requested_adapter(request)?;
        let prompt = self.prompt(request)?;
        let model = model_of(&self.loaded);
        let vocab = model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let prompt_tokens = tokens.len();
        tokens.extend(vocab.tokenize(answer.as_bytes(), false, true));
        let n_ctx = self.settings.context_tokens.min(model.n_ctx_train().max(256));
        if tokens.len() >= n_ctx as usize {
            return Err(PluginError::new(
                ErrorCode::ContextTooLong,
                format!("[{ID}] prompt and answer are {} tokens and the context holds {n_ctx}", tokens.len()),
            ));
        }
        let threads = self.threads_now();
        let mut ctx = new_context(model, &mut self.adapters, adapter, n_ctx, threads)?;
        let mut batch = LlamaBatch::new(PROMPT_BATCH, 1);
        let first = prompt_tokens - 1;
        let mut token_logprobs = Vec::with_capacity(tokens.len() - prompt_tokens);
        let mut last_prompt_logits = Vec::new();
        for (chunk_start, chunk) in tokens.chunks(PROMPT_BATCH).enumerate().map(|(i, c)| (i * PROMPT_BATCH, c)) {
            batch.clear();
            for (j, t) in chunk.iter().enumerate() {
                let pos = chunk_start + j;
                let wanted = pos >= first && pos + 1 < tokens.len();
                batch.add(*t, pos as i32, &[0], wanted).map_err(|e| internal("batch", e))?;
            }
            ctx.decode(&mut batch).map_err(|e| internal("scoring", e))?;
            for j in 0..chunk.len() {
                let pos = chunk_start + j;
                if pos < first || pos + 1 >= tokens.len() {
                    continue;
                }
                let logits = ctx.get_logits_ith(j as i32);
                if pos == first {
                    last_prompt_logits = logits.to_vec();
                }
                token_logprobs.push(log_softmax_at(logits, tokens[pos + 1].0 as usize));
            }
        }
        Ok(AnswerScore { prompt_tokens, token_logprobs, last_prompt_logits })
    }

    /// Caps the automatic thread count (the host's `HostContext::threads`).
    pub fn with_max_threads(mut self, max: Option<usize>) -> Self {
        self.max_threads = max;
        self
    }

    /// The model's `general.name`.
    pub fn model_name(&self) -> &str {
        &self.name
    }

    fn prompt(&self, request: &ChatRequest) -> Result<String, PluginError> {
        let messages = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    ChatRole::System => "system",
                    ChatRole::User => "user",
                    ChatRole::Assistant => "assistant",
                };
                LlamaChatMessage::new(role.into(), m.content.clone())
                    .map_err(|e| PluginError::input(format!("[{ID}] message cannot be passed to llama.cpp: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The GGUF's own template; ChatML (the Qwen family's) when it has none
        // llama.cpp understands.
        if let Ok(tmpl) = self.model().chat_template(None) {
            if let Ok(p) = self.model().apply_chat_template(&tmpl, &messages, true) {
                return Ok(p);
            }
        }
        let mut p = String::new();
        for m in &request.messages {
            let role = match m.role {
                ChatRole::System => "system",
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            };
            p.push_str(&format!("<|im_start|>{role}\n{}<|im_end|>\n", m.content));
        }
        p.push_str("<|im_start|>assistant\n");
        Ok(p)
    }
}

/// What [`LocalBackend::score`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerScore {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// The log-probability (natural) of each answer token given what came before.
    pub token_logprobs: Vec<f64>,
    /// The logits at the last prompt position (they predict the answer's first token).
    pub last_prompt_logits: Vec<f32>,
}

impl AnswerScore {
    /// The answer's log-likelihood.
    pub fn total(&self) -> f64 {
        self.token_logprobs.iter().sum()
    }

    /// The mean log-probability per answer token.
    pub fn mean(&self) -> f64 {
        self.total() / self.token_logprobs.len().max(1) as f64
    }
}

fn log_softmax_at(logits: &[f32], i: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.get(i).map(|&l| l as f64 - max - sum.ln()).unwrap_or(f64::NEG_INFINITY)
}

/// A fresh context on `model` with `adapter` (a key of `adapters`) set at its
/// scale; without one, the plain base.
fn new_context<'m>(
    model: &'m LlamaModel,
    adapters: &mut HashMap<PathBuf, LoadedAdapter>,
    adapter: Option<(PathBuf, f32)>,
    n_ctx: u32,
    threads: i32,
) -> Result<LlamaContext<'m>, PluginError> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(PROMPT_BATCH as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend()?, params).map_err(|e| internal("cannot create a context", e))?;
    if let Some((key, scale)) = adapter {
        let loaded = adapters.get_mut(&key).expect("load_adapter inserted it");
        ctx.lora_adapter_set(&mut loaded.adapter, scale).map_err(|e| internal("applying the LoRA adapter", e))?;
    }
    Ok(ctx)
}

fn model_of(loaded: &Option<Loaded>) -> &LlamaModel {
    loaded.as_ref().expect("the model is put back after loading an adapter").borrow_owner()
}

self_cell::self_cell!(
    /// The model and the contexts kept on it.
    struct Loaded {
        owner: LlamaModel,
        #[covariant]
        dependent: KeptContexts,
    }
);

type KeptContexts<'m> = Vec<Kept<'m>>;

/// A context kept between calls, with the tokens whose keys and values it
/// holds (position by position) and what it was made with.
struct Kept<'m> {
    ctx: LlamaContext<'m>,
    tokens: Vec<LlamaToken>,
    made: Made,
    used: u64,
}

/// What a context was made with: a call may use one only with the same.
#[derive(Debug, Clone, PartialEq)]
struct Made {
    adapter: Option<(PathBuf, u32)>,
    threads: i32,
}

/// Which context a call reads its prompt into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Kept context `i`, whose first `n` tokens are the prompt's.
    Reuse(usize, usize),
    /// A new context, kept after the call.
    New,
    /// A new context in place of kept context `i` (the least recently used).
    Replace(usize),
}

/// Picks the context for a prompt of `len` tokens among kept ones, each
/// given as (made the same way, tokens in common with the prompt, last
/// use), with room for `room` kept contexts. A kept context that already
/// read at least half the prompt is continued; otherwise a new one is made
/// while there is room, else the least recently used one is replaced (or
/// continued, when it was made the same way).
fn pick_slot(kept: &[(bool, usize, u64)], len: usize, room: usize) -> Slot {
    let best = kept.iter().enumerate().filter(|(_, k)| k.0).max_by_key(|(_, k)| (k.1, k.2));
    if let Some((i, &(_, n, _))) = best {
        if n * 2 >= len && n > 0 {
            return Slot::Reuse(i, n);
        }
    }
    if kept.len() < room {
        return Slot::New;
    }
    match kept.iter().enumerate().min_by_key(|(_, k)| k.2) {
        Some((i, &(true, n, _))) => Slot::Reuse(i, n),
        Some((i, _)) => Slot::Replace(i),
        None => Slot::New,
    }
}

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// An adapter loaded into the model, and the file's size and time when it was.
struct LoadedAdapter {
    adapter: LlamaLoraAdapter,
    stamp: (u64, Option<SystemTime>),
}

fn time_seed() -> u32 {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (n ^ (n >> 32)) as u32
}

fn internal(what: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::internal(format!("[{ID}] {what}: {e}"))
}

impl LlmBackend for LocalBackend {
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        let started = Instant::now();
        if request.messages.is_empty() {
            return Err(PluginError::input(format!("[{ID}] a chat request needs at least one message")));
        }
        let adapter = self.requested_adapter(request)?;
        let s = &self.settings;
        let temperature = request.temperature.unwrap_or(s.temperature);
        let top_p = request.top_p.unwrap_or(s.top_p);
        let max_tokens = request.max_tokens.unwrap_or(s.max_tokens).max(1);
        let stops: Vec<String> = s.stop.iter().chain(&request.stop).filter(|x| !x.is_empty()).cloned().collect();
        let seed = request.seed.or(s.seed).map(|x| (x ^ (x >> 32)) as u32).unwrap_or_else(time_seed);
        let room = s.prompt_cache;

        let prompt = self.prompt(request)?;
        let tokens = self.model().vocab().tokenize(prompt.as_bytes(), true, true);
        let n_ctx = self.settings.context_tokens.min(self.model().n_ctx_train().max(256));
        if tokens.len() + 1 >= n_ctx as usize {
            return Err(PluginError::new(
                ErrorCode::ContextTooLong,
                format!(
                    "[{ID}] the prompt is {} tokens and the context holds {n_ctx} (`context_tokens`)",
                    tokens.len()
                ),
            ));
        }
        let threads = self.threads_now();
        let made = Made { adapter: adapter.as_ref().map(|(k, scale)| (k.clone(), scale.to_bits())), threads };
        self.calls += 1;
        let call = self.calls;
        let adapters = &mut self.adapters;
        let loaded = self.loaded.as_mut().expect("the model is in place");
        let (content, generated, finish, reused) = loaded.with_dependent_mut(|model, kept| {
            let slot = if room == 0 {
                None
            } else {
                let seen: Vec<_> =
                    kept.iter().map(|k| (k.made == made, common_prefix(&k.tokens, &tokens), k.used)).collect();
                Some(pick_slot(&seen, tokens.len(), room))
            };
            let mut fresh;
            let (ctx, kept_tokens, from) = match slot {
                Some(Slot::Reuse(i, n)) => {
                    let k = &mut kept[i];
                    // At least the last prompt token is read again: its
                    // logits give the first answer token.
                    let n = n.min(tokens.len() - 1);
                    k.used = call;
                    let cut = k.ctx.clear_kv_cache_seq(Some(0), Some(n as u32), None).unwrap_or(false);
                    if !cut {
                        k.ctx.clear_kv_cache();
                    }
                    let from = if cut { n } else { 0 };
                    k.tokens.truncate(from);
                    (&mut k.ctx, Some(&mut k.tokens), from)
                }
                Some(slot @ (Slot::Replace(_) | Slot::New)) => {
                    let made_now = Kept {
                        ctx: new_context(model, adapters, adapter, n_ctx, threads)?,
                        tokens: Vec::new(),
                        made: made.clone(),
                        used: call,
                    };
                    let i = match slot {
                        Slot::Replace(i) => {
                            kept[i] = made_now;
                            i
                        }
                        _ => {
                            kept.push(made_now);
                            kept.len() - 1
                        }
                    };
                    let k = &mut kept[i];
                    (&mut k.ctx, Some(&mut k.tokens), 0)
                }
                None => {
                    fresh = new_context(model, adapters, adapter, n_ctx, threads)?;
                    (&mut fresh, None, 0)
                }
            };
            let mut read = Vec::new();
            let result = answer(
                model,
                ctx,
                &tokens,
                from,
                &mut read,
                Sampling { temperature, top_p, seed, max_tokens, stops: &stops, n_ctx },
            );
            if let Some(kt) = kept_tokens {
                // What the context holds now; after a failed decode nothing
                // past the prefix is trusted.
                if result.is_ok() {
                    kt.extend_from_slice(&read);
                } else {
                    ctx.clear_kv_cache();
                    kt.clear();
                }
            }
            result.map(|(content, generated, finish)| (content, generated, finish, from))
        })?;
        self.reused = reused;
        Ok(ChatResponse {
            content,
            model: self.name.clone(),
            finish_reason: Some(finish.to_string()),
            usage: TokenUsage { prompt_tokens: tokens.len() as u64, completion_tokens: generated, estimated: false },
            latency_ms: started.elapsed().as_millis() as u64,
            attempts: 1,
        })
    }
}

/// How a call samples.
struct Sampling<'a> {
    temperature: f32,
    top_p: f32,
    seed: u32,
    max_tokens: u32,
    stops: &'a [String],
    n_ctx: u32,
}

/// Reads `tokens[from..]` into `ctx` (which holds `tokens[..from]`) and
/// samples the answer; every token read into the context is pushed to
/// `read`. Returns the answer, the tokens generated and the finish reason.
fn answer(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    tokens: &[LlamaToken],
    from: usize,
    read: &mut Vec<LlamaToken>,
    p: Sampling<'_>,
) -> Result<(String, u64, &'static str), PluginError> {
    let vocab = model.vocab();
    let mut batch = LlamaBatch::new(PROMPT_BATCH, 1);
    let last = tokens.len() - 1;
    for (chunk_start, chunk) in
        tokens[from..].chunks(PROMPT_BATCH).enumerate().map(|(i, c)| (from + i * PROMPT_BATCH, c))
    {
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = chunk_start + j;
            batch.add(*t, pos as i32, &[0], pos == last).map_err(|e| internal("batch", e))?;
        }
        ctx.decode(&mut batch).map_err(|e| internal("reading the prompt", e))?;
        read.extend_from_slice(chunk);
    }

    let mut samplers = Vec::new();
    if p.temperature <= 0.0 {
        samplers.push(LlamaSampler::greedy());
    } else {
        samplers.push(LlamaSampler::top_p(p.top_p, 1));
        samplers.push(LlamaSampler::temp(p.temperature));
        samplers.push(LlamaSampler::dist(p.seed));
    }
    let mut sampler = LlamaSampler::chain_simple(samplers);

    let budget = (p.max_tokens as usize).min(p.n_ctx as usize - tokens.len());
    let mut bytes: Vec<u8> = Vec::new();
    let mut generated = 0u64;
    let mut finish = "length";
    let mut idx = batch.n_tokens() - 1;
    for step in 0..budget {
        let pos = (tokens.len() + step) as i32;
        let token = sampler.sample(ctx, idx);
        sampler.accept(token);
        generated += 1;
        if vocab.is_eog(token) {
            finish = "stop";
            break;
        }
        bytes.extend_from_slice(&vocab.token_to_piece(token, false, None));
        if !p.stops.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            if let Some(cut) = p.stops.iter().filter_map(|st| text.find(st.as_str())).min() {
                let kept = text[..cut].to_string();
                bytes = kept.into_bytes();
                finish = "stop";
                break;
            }
        }
        batch.clear();
        batch.add(token, pos, &[0], true).map_err(|e| internal("batch", e))?;
        ctx.decode(&mut batch).map_err(|e| internal("generating", e))?;
        read.push(token);
        idx = batch.n_tokens() - 1;
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), generated, finish))
}

#[cfg(test)]
mod tests {
    use super::{pick_slot, Slot};

    #[test]
    fn a_prompt_continues_the_kept_context_that_read_most_of_it() {
        // The Improver asked again: its conversation so far is 900 of 1000 tokens.
        assert_eq!(pick_slot(&[(true, 12, 1), (true, 900, 2)], 1000, 2), Slot::Reuse(1, 900));
        // Ties go to the most recently used.
        assert_eq!(pick_slot(&[(true, 600, 3), (true, 600, 5)], 1000, 2), Slot::Reuse(1, 600));
    }

    #[test]
    fn another_role_gets_a_context_of_its_own_while_there_is_room() {
        // Only the chat template's first tokens in common: a new context, the
        // generator's kept one stays.
        assert_eq!(pick_slot(&[(true, 5, 1)], 1000, 2), Slot::New);
        assert_eq!(pick_slot(&[], 1000, 2), Slot::New);
    }

    #[test]
    fn without_room_the_least_recently_used_context_gives_way() {
        assert_eq!(pick_slot(&[(true, 5, 4), (true, 7, 2)], 1000, 2), Slot::Reuse(1, 7));
        // Made with another adapter or thread count: replaced, not continued.
        assert_eq!(pick_slot(&[(true, 5, 4), (false, 900, 2)], 1000, 2), Slot::Replace(1));
        // A context made another way is never continued, however much it read.
        assert_eq!(pick_slot(&[(false, 1000, 9)], 1000, 1), Slot::Replace(0));
    }
}
