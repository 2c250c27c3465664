//! The OpenAI-compatible client: settings, requests, retries, error mapping.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nas_plugin_api::text::{estimate_tokens, truncate_chars};
use nas_plugin_api::{
    AdapterRef, ChatMessage, ChatRequest, ChatResponse, ChatRole, ErrorCode, HostContext, LlmBackend, PluginError,
    TokenUsage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::family::{Family, Template};

/// Which endpoint the backend calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST {base_url}/chat/completions` (the server applies the template).
    #[default]
    Chat,
    /// `POST {base_url}/completions` with the family's chat template applied here.
    Completions,
}

/// Settings of the OpenAI-compatible backends (the plugin's TOML table).
/// Every key is optional where the family has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSettings {
    /// Server base URL, up to and including `/v1` (or the vendor's path).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model id as the server names it.
    #[serde(default)]
    pub model: Option<String>,
    /// Name of the environment variable holding the API key. The key itself
    /// is never written into files, records, logs or error messages. An
    /// unset or empty variable sends no `Authorization` header (local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Sampling temperature (the paper's 0.7).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Nucleus mass (the paper's 0.9).
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Most new tokens per answer (the paper's 2048).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Extra stop sequences (the template's own are added in `completions` mode).
    #[serde(default)]
    pub stop: Vec<String>,
    /// `chat` (default) or `completions`.
    #[serde(default)]
    pub api: Api,
    /// Chat template for `completions` mode; default: the family's.
    #[serde(default)]
    pub template: Option<Template>,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: f64,
    /// Seconds for one attempt, from connecting to the last byte of the
    /// answer: a deadline, not an idle timeout, so a server that drips bytes
    /// cannot stretch it.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_s: f64,
    /// Seconds for the whole call, retries and waits included (default:
    /// twice `read_timeout_s`). No attempt runs and no wait starts past it.
    #[serde(default)]
    pub total_timeout_s: Option<f64>,
    /// Most bytes read of one HTTP answer; a longer answer is a
    /// `bad_response`, read no further than this.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Retries after the first attempt (connection errors, 429, 5xx).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff in milliseconds; doubles each retry, with jitter.
    #[serde(default = "default_retry_base")]
    pub retry_base_ms: u64,
    /// Longest single wait in seconds, for backoff and for `Retry-After`; a
    /// server asking for longer ends the call as rate-limited at once.
    #[serde(default = "default_max_retry_wait")]
    pub max_retry_wait_s: f64,
    /// Extra HTTP headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sampling seed sent to servers that accept one (vLLM, llama.cpp, ...).
    #[serde(default)]
    pub seed: Option<u64>,
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
fn default_connect_timeout() -> f64 {
    10.0
}
fn default_read_timeout() -> f64 {
    600.0
}
fn default_max_response_bytes() -> u64 {
    4 << 20
}
fn default_max_retries() -> u32 {
    4
}
fn default_retry_base() -> u64 {
    500
}
fn default_max_retry_wait() -> f64 {
    60.0
}

/// An API key: shown as `***` by `Debug`, removed from every message.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An OpenAI-compatible backend of one family.
#[derive(Debug)]
pub struct OpenAiBackend {
    id: &'static str,
    base_url: String,
    model: String,
    api_key_env: String,
    api_key: Option<Secret>,
    template: Template,
    settings: OpenAiSettings,
    client: reqwest::blocking::Client,
    rng: u64,
    /// LoRA adapters this backend had the server load (vLLM's
    /// `load_lora_adapter`): served name → the PEFT directory loaded.
    loaded: BTreeMap<String, PathBuf>,
}

/// What the server said to a `load_lora_adapter`.
enum LoadAnswer {
    Loaded,
    /// A name the server already serves (loaded by an earlier process).
    AlreadyLoaded,
}

/// How a request names its adapter on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AdapterUse {
    /// No adapter (none asked, or scale 0): the base model.
    Base,
    /// The adapter's served name; with the directory to load it from, when
    /// the request gives one.
    Served { name: String, dir: Option<PathBuf> },
}

/// What an attempt that failed says about retrying.
struct Failure {
    error: PluginError,
    retryable: bool,
}

/// Which deadline an attempt runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// `read_timeout_s`, the attempt's own.
    Attempt,
    /// What is left of `total_timeout_s`.
    Total,
}

impl Failure {
    fn fatal(error: PluginError) -> Self {
        Failure { error, retryable: false }
    }
    fn transient(error: PluginError) -> Self {
        Failure { error, retryable: true }
    }
}

impl OpenAiBackend {
    /// A backend of `family` from its settings table.
    pub fn new(family: Family, config: &Value, _ctx: &HostContext) -> Result<Self, PluginError> {
        let d = family.defaults();
        let id = d.id;
        let settings: OpenAiSettings = PluginError::parse_config(id, config)?;
        let bad = |m: String| Err(PluginError::config(format!("[{id}] settings: {m}")));
        let base_url = match settings.base_url.as_deref().or(d.base_url) {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => return bad("`base_url` is required, e.g. \"http://127.0.0.1:8000/v1\" for vLLM".into()),
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return bad(format!("`base_url` must start with http:// or https://, got `{base_url}`"));
        }
        let model = match settings.model.as_deref().or(d.model) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return bad("`model` is required: the model id as the server names it".into()),
        };
        if !(0.0..=2.0).contains(&settings.temperature) {
            return bad(format!("`temperature` must be within 0..=2, got {}", settings.temperature));
        }
        if !(settings.top_p > 0.0 && settings.top_p <= 1.0) {
            return bad(format!("`top_p` must be within (0, 1], got {}", settings.top_p));
        }
        if settings.max_tokens == 0 {
            return bad("`max_tokens` must be at least 1".into());
        }
        for (key, v) in [
            ("connect_timeout_s", settings.connect_timeout_s),
            ("read_timeout_s", settings.read_timeout_s),
            ("total_timeout_s", settings.total_timeout_s.unwrap_or(1.0)),
            ("max_retry_wait_s", settings.max_retry_wait_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("`{key}` must be a positive number of seconds, got {v}"));
            }
        }
        if settings.max_response_bytes < 1024 {
            return bad(format!("`max_response_bytes` must be at least 1024, got {}", settings.max_response_bytes));
        }
        let api_key_env = settings.api_key_env.clone().unwrap_or_else(|| d.api_key_env.to_string());
        let api_key =
            std::env::var(&api_key_env).ok().filter(|k| !k.trim().is_empty()).map(|k| Secret(k.trim().into()));
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &settings.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes());
            let value = reqwest::header::HeaderValue::from_str(v);
            match (name, value) {
                (Ok(n), Ok(v)) => {
                    headers.insert(n, v);
                }
                _ => return bad(format!("`headers`: `{k}` is not a valid HTTP header")),
            }
        }
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs_f64(settings.connect_timeout_s))
            .timeout(Duration::from_secs_f64(settings.read_timeout_s))
            .default_headers(headers)
            .user_agent(concat!("nas/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PluginError::internal(format!("[{id}] cannot build the HTTP client: {e}")))?;
        let template = settings.template.unwrap_or(d.template);
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|t| t.as_nanos() as u64).unwrap_or(0x9e37);
        Ok(OpenAiBackend {
            id,
            base_url,
            model,
            api_key_env,
            api_key,
            template,
            settings,
            client,
            rng: seed | 1,
            loaded: BTreeMap::new(),
        })
    }

    /// The endpoint URL this backend posts to.
    pub fn endpoint(&self) -> String {
        match self.settings.api {
            Api::Chat => format!("{}/chat/completions", self.base_url),
            Api::Completions => format!("{}/completions", self.base_url),
        }
    }

    /// The model id sent to the server.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The longest a [`complete`](LlmBackend::complete) call takes,
    /// retries and waits included (`total_timeout_s`).
    pub fn total_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.settings.total_timeout_s.unwrap_or(2.0 * self.settings.read_timeout_s))
    }

    fn stops(&self, request: &ChatRequest) -> Vec<String> {
        let mut stops: Vec<String> = Vec::new();
        if self.settings.api == Api::Completions {
            stops.extend(self.template.stops().iter().map(|s| s.to_string()));
        }
        for s in self.settings.stop.iter().chain(&request.stop) {
            if !s.is_empty() && !stops.contains(s) {
                stops.push(s.clone());
            }
        }
        stops
    }

    fn body(&self, request: &ChatRequest, model: &str) -> Value {
        let mut body = json!({
            "model": model,
            "temperature": request.temperature.unwrap_or(self.settings.temperature),
            "top_p": request.top_p.unwrap_or(self.settings.top_p),
            "max_tokens": request.max_tokens.unwrap_or(self.settings.max_tokens),
            "stream": false,
        });
        match self.settings.api {
            Api::Chat => {
                body["messages"] = Value::Array(
                    request.messages.iter().map(|m| json!({"role": role(m.role), "content": m.content})).collect(),
                );
            }
            Api::Completions => body["prompt"] = Value::String(self.template.render(&request.messages)),
        }
        let stops = self.stops(request);
        if !stops.is_empty() {
            body["stop"] = json!(stops);
        }
        if let Some(seed) = request.seed.or(self.settings.seed) {
            body["seed"] = json!(seed);
        }
        body
    }

    /// Removes the key from a message, should a server echo it.
    fn redact(&self, msg: String) -> String {
        match &self.api_key {
            Some(Secret(k)) if k.len() >= 4 => msg.replace(k.as_str(), "[redacted]"),
            _ => msg,
        }
    }

    fn err(&self, code: ErrorCode, msg: String) -> PluginError {
        PluginError::new(code, self.redact(format!("[{}] {msg}", self.id)))
    }

    /// One HTTP exchange, over by `deadline` (the call's) or `read_timeout_s`
    /// from now, whichever comes first: the status, `Retry-After` and body.
    fn exchange(
        &self,
        url: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<(reqwest::StatusCode, Option<f64>, String), Failure> {
        let per_attempt = Duration::from_secs_f64(self.settings.read_timeout_s);
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, bound) = if left < per_attempt { (left, Bound::Total) } else { (per_attempt, Bound::Attempt) };
        if limit.is_zero() {
            return Err(self.timeout_failure(url, bound));
        }
        let attempt_deadline = Instant::now() + limit;
        // A per-request timeout covers the whole exchange, body included.
        let mut req = self.client.post(url).json(body).timeout(limit);
        if let Some(Secret(k)) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => return Err(self.transport_failure(url, &e, bound)),
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let text = self.read_body(url, resp, attempt_deadline, bound)?;
        Ok((status, retry_after, text))
    }

    /// One chat exchange: the answer's JSON, or why it failed.
    fn attempt(&self, url: &str, body: &Value, deadline: Instant) -> Result<Value, Failure> {
        let (status, retry_after, text) = self.exchange(url, body, deadline)?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                Failure::fatal(self.err(
                    ErrorCode::BadResponse,
                    format!("{url}: the answer is not valid JSON ({e}): {}", excerpt(&text)),
                ))
            });
        }
        let code = status.as_u16();
        let server_msg = server_message(&text);
        let mut failure = match code {
            401 | 403 => {
                let key = if self.api_key.is_some() {
                    format!("the key read from `{}`", self.api_key_env)
                } else {
                    format!("no key: the environment variable `{}` is not set", self.api_key_env)
                };
                Failure::fatal(self.err(
                    ErrorCode::Unauthorized,
                    format!("{url}: the server refused the credentials (HTTP {code}; {key}): {server_msg}"),
                ))
            }
            429 => Failure::transient(
                self.err(ErrorCode::RateLimited, format!("{url}: rate-limited (HTTP 429): {server_msg}")),
            ),
            400 | 413 | 422 if is_context_error(&text) => Failure::fatal(self.err(
                ErrorCode::ContextTooLong,
                format!("{url}: the prompt does not fit the model's context (HTTP {code}): {server_msg}"),
            )),
            400 | 404 | 422 if is_model_error(&text) => Failure::fatal(self.err(
                ErrorCode::NotFound,
                format!(
                    "{url}: the server does not serve model `{}` (HTTP {code}): {}. Check `model`; \
                     the server lists its models at {}/models",
                    self.model,
                    server_msg.trim_end_matches('.'),
                    self.base_url
                ),
            )),
            404 => Failure::fatal(self.err(
                ErrorCode::NotFound,
                format!(
                    "{url}: not found (HTTP 404): {}. Check `base_url` and that the server serves model `{}`",
                    server_msg.trim_end_matches('.'),
                    self.model
                ),
            )),
            408 | 500..=599 => {
                let kind = if matches!(code, 502..=504) { ErrorCode::Unreachable } else { ErrorCode::BadResponse };
                Failure::transient(self.err(kind, format!("{url}: server error (HTTP {code}): {server_msg}")))
            }
            _ => Failure::fatal(self.err(
                ErrorCode::BadResponse,
                format!("{url}: the server rejected the request (HTTP {code}): {server_msg}"),
            )),
        };
        failure.error.retry_after_s = retry_after;
        Err(failure)
    }

    /// Reads the body of `resp`, at most `max_response_bytes` of it, and no
    /// later than `deadline`.
    fn read_body(
        &self,
        url: &str,
        mut resp: reqwest::blocking::Response,
        deadline: Instant,
        bound: Bound,
    ) -> Result<String, Failure> {
        let cap = self.settings.max_response_bytes;
        let status = resp.status().as_u16();
        let too_long = |what: String| {
            Failure::fatal(self.err(
                ErrorCode::BadResponse,
                format!("{url}: the answer (HTTP {status}) is longer than `max_response_bytes` = {cap}: {what}"),
            ))
        };
        if let Some(announced) = resp.content_length().filter(|n| *n > cap) {
            return Err(too_long(format!("it announces {announced} bytes, none of them read")));
        }
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if Instant::now() >= deadline {
                return Err(self.timeout_failure(url, bound));
            }
            match resp.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if (buf.len() + n) as u64 > cap {
                        return Err(too_long("reading stopped at the cap".to_string()));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if io_is_timeout(&e) || Instant::now() >= deadline => {
                    return Err(self.timeout_failure(url, bound))
                }
                Err(e) => {
                    return Err(Failure::transient(self.err(
                        ErrorCode::BadResponse,
                        format!(
                            "{url}: the answer was cut short (HTTP {status}, {} bytes in): {}",
                            buf.len(),
                            io_chain(&e)
                        ),
                    )))
                }
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn timeout_failure(&self, url: &str, bound: Bound) -> Failure {
        let what = match bound {
            Bound::Attempt => format!("{} s (`read_timeout_s`)", self.settings.read_timeout_s),
            Bound::Total => {
                format!("the {} s the whole call may take (`total_timeout_s`)", self.total_timeout().as_secs_f64())
            }
        };
        Failure::fatal(self.err(ErrorCode::Timeout, format!("{url}: no complete answer within {what}")))
    }

    fn transport_failure(&self, url: &str, e: &reqwest::Error, bound: Bound) -> Failure {
        if e.is_connect() && !e.is_timeout() {
            return Failure::transient(
                self.err(ErrorCode::Unreachable, format!("{url}: cannot connect: {}", chain(e))),
            );
        }
        if e.is_timeout() {
            if e.is_connect() {
                return Failure::transient(self.err(
                    ErrorCode::Unreachable,
                    format!("{url}: no connection within {} s (`connect_timeout_s`)", self.settings.connect_timeout_s),
                ));
            }
            return self.timeout_failure(url, bound);
        }
        // The connection broke before an answer came (reset, hang-up).
        Failure::transient(self.err(ErrorCode::Unreachable, format!("{url}: {}", chain(e))))
    }

    fn next_random(&mut self) -> f64 {
        // xorshift64*: jitter only, no need for a real generator.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait before retry number `retry` (1-based): exponential with
    /// jitter (half to full of `retry_base_ms * 2^(retry-1)`), capped.
    fn backoff(&mut self, retry: u32) -> Duration {
        let base = self.settings.retry_base_ms as f64 / 1000.0 * 2f64.powi(retry.saturating_sub(1).min(20) as i32);
        let capped = base.min(self.settings.max_retry_wait_s);
        Duration::from_secs_f64(capped * (0.5 + 0.5 * self.next_random()))
    }

    fn parse(&self, url: &str, v: &Value, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        let bad = |m: String| self.err(ErrorCode::BadResponse, format!("{url}: {m}"));
        let choice = match v.get("choices").and_then(Value::as_array) {
            Some(c) if !c.is_empty() => &c[0],
            Some(_) => return Err(bad("the answer has no choices".into())),
            None => {
                if let Some(e) = v.get("error") {
                    return Err(bad(format!("the server answered an error: {}", excerpt(&e.to_string()))));
                }
                return Err(bad(format!("the answer has no `choices`: {}", excerpt(&v.to_string()))));
            }
        };
        let content = match self.settings.api {
            Api::Chat => choice.pointer("/message/content").and_then(Value::as_str),
            Api::Completions => choice.get("text").and_then(Value::as_str),
        };
        let Some(content) = content else {
            return Err(bad(format!("the first choice has no text: {}", excerpt(&choice.to_string()))));
        };
        let mut content = content.to_string();
        if self.settings.api == Api::Completions {
            // Servers differ in whether they include the stop sequence.
            if let Some(cut) = self.stops(request).iter().filter_map(|s| content.find(s.as_str())).min() {
                content.truncate(cut);
            }
        }
        let usage = match (
            v.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
            v.pointer("/usage/completion_tokens").and_then(Value::as_u64),
        ) {
            (Some(p), Some(c)) => TokenUsage { prompt_tokens: p, completion_tokens: c, estimated: false },
            _ => {
                let prompt: u64 = request.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
                TokenUsage { prompt_tokens: prompt, completion_tokens: estimate_tokens(&content), estimated: true }
            }
        };
        Ok(ChatResponse {
            content,
            model: v.get("model").and_then(Value::as_str).unwrap_or(&self.model).to_string(),
            finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
            usage,
            latency_ms: 0,
            attempts: 1,
        })
    }
}

impl OpenAiBackend {
    /// Runs `once` until it succeeds, fails for good, or the retries or the
    /// time run out: the value and the attempts it took.
    fn with_retries<T>(
        &mut self,
        deadline: Instant,
        mut once: impl FnMut(&Self) -> Result<T, Failure>,
    ) -> Result<(T, u32), PluginError> {
        let max_attempts = self.settings.max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match once(self) {
                Ok(v) => return Ok((v, attempt)),
                Err(f) => f,
            };
            let mut error = failure.error;
            let too_long = error.retry_after_s.is_some_and(|s| s > self.settings.max_retry_wait_s);
            let wait = match error.retry_after_s {
                Some(s) => Duration::from_secs_f64(s.clamp(0.0, self.settings.max_retry_wait_s)),
                None => self.backoff(attempt),
            };
            let out_of_time = Instant::now() + wait >= deadline;
            if !failure.retryable || attempt >= max_attempts || too_long || out_of_time {
                if failure.retryable && attempt > 1 {
                    error.message.push_str(&format!(" (after {attempt} attempts)"));
                }
                if too_long {
                    error.message.push_str(&format!(
                        " (the server asked to wait {:.0} s, more than `max_retry_wait_s` = {})",
                        error.retry_after_s.unwrap_or(0.0),
                        self.settings.max_retry_wait_s
                    ));
                } else if failure.retryable && attempt < max_attempts && out_of_time {
                    error.message.push_str(&format!(
                        " (no time left to wait {:.1} s and retry within `total_timeout_s` = {} s)",
                        wait.as_secs_f64(),
                        self.total_timeout().as_secs_f64()
                    ));
                }
                return Err(error);
            }
            std::thread::sleep(wait);
        }
    }

    /// How `adapter` is used on the server: its served name (vLLM serves a
    /// LoRA adapter as a model of its own), the base model at scale 0.
    fn adapter_use(&self, adapter: Option<&AdapterRef>) -> Result<AdapterUse, PluginError> {
        let Some(adapter) = adapter else { return Ok(AdapterUse::Base) };
        match adapter.scale {
            Some(0.0) => return Ok(AdapterUse::Base),
            Some(s) if s != 1.0 => {
                return Err(self.err(
                    ErrorCode::Unsupported,
                    format!(
                        "adapter `{}` at scale {s}: an OpenAI-compatible server (vLLM) applies a LoRA adapter at \
                         scale 1 only (0 asks for the base model); use `llm.local` for other scales",
                        adapter.name
                    ),
                ))
            }
            _ => {}
        }
        let name = adapter.name.trim();
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(self.err(
                ErrorCode::InvalidInput,
                format!("adapter name `{}`: the served name must be one word, not empty", adapter.name),
            ));
        }
        Ok(AdapterUse::Served { name: name.to_string(), dir: adapter.peft_dir.clone() })
    }

    /// The model id a request goes to, after having the server load the
    /// request's adapter if this backend has not yet (once per adapter).
    fn served_model(&mut self, request: &ChatRequest, deadline: Instant) -> Result<String, PluginError> {
        match self.adapter_use(request.adapter.as_ref())? {
            AdapterUse::Base => Ok(self.model.clone()),
            AdapterUse::Served { name, dir: None } => Ok(name),
            AdapterUse::Served { name, dir: Some(dir) } => {
                if self.loaded.get(&name) != Some(&dir) {
                    if self.loaded.contains_key(&name) {
                        // The same name for other files: serve the new ones.
                        self.unload_adapter(&name, deadline)?;
                    }
                    self.load_adapter(&name, &dir, deadline)?;
                }
                Ok(name)
            }
        }
    }

    /// `POST {base_url}/load_lora_adapter`: the server loads the PEFT
    /// adapter in `dir` (a path on the server's machine) and serves it as
    /// model `name`. A name the server already serves from an earlier
    /// process is unloaded and loaded again, so that it serves these files.
    fn load_adapter(&mut self, name: &str, dir: &Path, deadline: Instant) -> Result<(), PluginError> {
        let url = format!("{}/load_lora_adapter", self.base_url);
        let body = json!({"lora_name": name, "lora_path": dir.to_string_lossy()});
        let (answer, _) = self.with_retries(deadline, |s| s.load_once(&url, &body, name, dir, deadline))?;
        if let LoadAnswer::AlreadyLoaded = answer {
            self.unload_adapter(name, deadline)?;
            let (again, _) = self.with_retries(deadline, |s| s.load_once(&url, &body, name, dir, deadline))?;
            if let LoadAnswer::AlreadyLoaded = again {
                return Err(self.err(
                    ErrorCode::BadResponse,
                    format!("{url}: the server still serves adapter `{name}` after unloading it"),
                ));
            }
        }
        self.loaded.insert(name.to_string(), dir.to_path_buf());
        Ok(())
    }

    /// `POST {base_url}/unload_lora_adapter`; an adapter the server does not
    /// know is already gone.
    fn unload_adapter(&mut self, name: &str, deadline: Instant) -> Result<(), PluginError> {
        let url = format!("{}/unload_lora_adapter", self.base_url);
        let body = json!({"lora_name": name});
        self.with_retries(deadline, |s| {
            let (status, retry_after, text) = s.exchange(&url, &body, deadline)?;
            let code = status.as_u16();
            if status.is_success() || (code == 404 && text.contains("cannot be found")) {
                Ok(())
            } else {
                Err(s.lora_failure(&url, code, retry_after, &text, name))
            }
        })?;
        self.loaded.remove(name);
        Ok(())
    }

    fn load_once(
        &self,
        url: &str,
        body: &Value,
        name: &str,
        dir: &Path,
        deadline: Instant,
    ) -> Result<LoadAnswer, Failure> {
        let (status, retry_after, text) = self.exchange(url, body, deadline)?;
        let code = status.as_u16();
        if status.is_success() {
            return Ok(LoadAnswer::Loaded);
        }
        if code == 400 && text.contains("already been loaded") {
            return Ok(LoadAnswer::AlreadyLoaded);
        }
        if code == 404 && text.contains("No adapter found") {
            return Err(Failure::fatal(self.err(
                ErrorCode::NotFound,
                format!(
                    "{url}: the server found no adapter at `{}` (HTTP 404): {}. The path must be a PEFT adapter \
                     directory (adapter_config.json, adapter_model.safetensors) readable on the server's machine",
                    dir.display(),
                    server_message(&text).trim_end_matches('.')
                ),
            )));
        }
        Err(self.lora_failure(url, code, retry_after, &text, name))
    }

    /// A failed answer of the LoRA routes.
    fn lora_failure(&self, url: &str, code: u16, retry_after: Option<f64>, text: &str, name: &str) -> Failure {
        let server_msg = server_message(text);
        let mut failure = match code {
            404 | 405 => Failure::fatal(self.err(
                ErrorCode::Unsupported,
                format!(
                    "{url}: the server does not load LoRA adapters at run time (HTTP {code}: {}), so it cannot \
                     serve adapter `{name}`. Start vLLM with `--enable-lora` (and `--max-lora-rank` at least the \
                     adapter's rank) and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                    server_msg.trim_end_matches('.')
                ),
            )),
            401 | 403 => Failure::fatal(self.err(
                ErrorCode::Unauthorized,
                format!("{url}: the server refused the credentials (HTTP {code}): {server_msg}"),
            )),
            429 => Failure::transient(
                self.err(ErrorCode::RateLimited, format!("{url}: rate-limited (HTTP 429): {server_msg}")),
            ),
            408 | 500..=599 => {
                let kind = if matches!(code, 502..=504) { ErrorCode::Unreachable } else { ErrorCode::BadResponse };
                Failure::transient(self.err(kind, format!("{url}: server error (HTTP {code}): {server_msg}")))
            }
            _ => Failure::fatal(self.err(
                ErrorCode::InvalidInput,
                format!(
                    "{url}: the server refused adapter `{name}` (HTTP {code}): {}. vLLM loads adapters only when \
                     started with `--enable-lora`, up to its `--max-lora-rank` and for the base model it serves",
                    server_msg.trim_end_matches('.')
                ),
            )),
        };
        failure.error.retry_after_s = retry_after;
        failure
    }

    /// One chat call to `model`.
    fn chat(
        &mut self,
        request: &ChatRequest,
        model: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<ChatResponse, PluginError> {
        let url = self.endpoint();
        let body = self.body(request, model);
        let (v, attempts) = self.with_retries(deadline, |s| s.attempt(&url, &body, deadline))?;
        // A well-formed HTTP answer that says nothing useful is not retried.
        let mut r = self.parse(&url, &v, request)?;
        r.latency_ms = started.elapsed().as_millis() as u64;
        r.attempts = attempts;
        Ok(r)
    }
}

impl LlmBackend for OpenAiBackend {
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        if request.messages.is_empty() {
            return Err(PluginError::input(format!("[{}] a chat request needs at least one message", self.id)));
        }
        let started = Instant::now();
        let deadline = started + self.total_timeout();
        let model = self.served_model(request, deadline)?;
        match self.chat(request, &model, started, deadline) {
            // A server restarted since the load has forgotten the adapter:
            // load it again, once.
            Err(e) if e.code == ErrorCode::NotFound && self.loaded.contains_key(&model) => {
                self.loaded.remove(&model);
                let model = self.served_model(request, deadline)?;
                self.chat(request, &model, started, deadline)
            }
            other => other,
        }
    }
}

fn role(r: ChatRole) -> &'static str {
    match r {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    }
}

/// `Retry-After` (seconds) or `retry-after-ms`, when present.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(ms / 1000.0);
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
}

/// The error message a server put in its body (`error.message`, `message`,
/// `detail`), else the body's start.
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for p in ["/error/message", "/message", "/detail", "/error"] {
            if let Some(s) = v.pointer(p).and_then(Value::as_str) {
                return excerpt(s);
            }
        }
    }
    excerpt(body)
}

/// Phrases servers use when a prompt is longer than the context (OpenAI,
/// vLLM, SGLang, llama.cpp server, DeepSeek, DashScope, GLM).
fn is_context_error(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "exceeds the available context",
        "exceed_context_size",
        "too many tokens",
        "prompt is too long",
        "input is too long",
        "range of input length",
        "exceeds max length",
        "prompt exceeds",
    ]
    .iter()
    .any(|p| b.contains(p))
}

/// Phrases servers use for a model they do not serve (vLLM, SGLang,
/// OpenAI, Ollama, DeepSeek, DashScope, GLM, LM Studio).
fn is_model_error(body: &str) -> bool {
    let b = body.to_lowercase();
    if b.contains("model_not_found") || b.contains("模型不存在") {
        return true;
    }
    b.contains("model")
        && [
            "does not exist",
            "not exist",
            "not found",
            "no such model",
            "unknown model",
            "invalid model",
            "model not available",
            "is not available",
            "not loaded",
        ]
        .iter()
        .any(|p| b.contains(p))
}

fn excerpt(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut = truncate_chars(&one, 300);
    if cut.len() < one.len() {
        format!("{cut}…")
    } else {
        one
    }
}

/// Whether a read error is a timeout, however deep reqwest wrapped it.
fn io_is_timeout(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if err.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout)
            || err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An I/O error with what it wraps.
fn io_chain(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => chain(inner),
        None => e.to_string(),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// A chat request from plain messages, for the examples and tests.
pub fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest { messages, ..ChatRequest::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_errors_are_recognised_in_the_servers_words() {
        assert!(is_context_error(
            r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens"}}"#
        ));
        assert!(is_context_error(
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#
        ));
        assert!(is_context_error(r#"{"error":{"code":"1261","message":"Prompt exceeds max length"}}"#));
        assert!(!is_context_error(r#"{"error":{"message":"unknown field `foo`"}}"#));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut b = OpenAiBackend::new(
            Family::Generic,
            &json!({"base_url": "http://127.0.0.1:9/v1", "model": "m", "retry_base_ms": 1000, "max_retry_wait_s": 3}),
            &HostContext::default(),
        )
        .expect("valid settings");
        for _ in 0..20 {
            let one = b.backoff(1).as_secs_f64();
            assert!((0.5..=1.0).contains(&one), "{one}");
            let two = b.backoff(2).as_secs_f64();
            assert!((1.0..=2.0).contains(&two), "{two}");
            let ten = b.backoff(10).as_secs_f64();
            assert!((1.5..=3.0).contains(&ten), "{ten}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let s = Secret("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "***");
    }
}
