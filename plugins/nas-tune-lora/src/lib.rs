//! # nas-tune-lora
//!
//! The `tune.lora` fine-tuner of `nas`: a base model and a training set of
//! chat examples in, a LoRA adapter out ([`FineTuner::tune`]). Written
//! against `nas-plugin-api` exactly as a third-party plugin is.
//!
//! The training runs in a Python child process (`python/tune_lora.py`,
//! embedded here and written next to the adapter), never inside the host:
//! transformers reads the very GGUF file `llm.local` serves (`gguf_file=`,
//! dequantised to float32, cached by the file's sha256), peft puts LoRA on
//! the attention and MLP projections, the loss is taken on the answer's
//! tokens only, and the run is deterministic under the seed. It writes
//!
//! - `adapter.gguf`: a GGUF LoRA adapter that llama.cpp applies over the
//!   quantised base (`llm.local`, through [`ChatRequest::adapter`]);
//! - `peft/`: a PEFT adapter (`adapter_model.safetensors` +
//!   `adapter_config.json`) for transformers and vLLM (`--enable-lora`);
//! - `adapter.json`: the [`Adapter`] record (base sha256, loss curve, tokens,
//!   seconds, settings, library versions).
//!
//! Progress (step, loss, tokens, tokens/s) is relayed to standard error. A
//! checkpoint (adapter, optimiser, step, RNG states, loss curve) is committed
//! every `checkpoint_every` steps; a trainer that was killed is continued
//! from the last one by calling `tune` again with the same request, and a
//! request whose adapter is already written returns it without training.
//! The child runs in its own process group (killed whole on timeout or when
//! the host goes), without network where the kernel allows a namespace.
//!
//! ## Settings
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `python` | discovered | Python with the trainer's packages (else `NAS_PYTHON`, else `.venv/bin/python` up from the working directory or the executable, else `python3`) |
//! | `device` | `"auto"` | `auto` (CUDA when torch sees it), `cpu`, `cuda`, `cuda:N` |
//! | `dtype` | `"auto"` | base weights: `auto` (float32 on CPU, bfloat16 on CUDA), `float32`, `bfloat16`, `float16`; LoRA weights are float32 |
//! | `threads` | host's, else all cores | CPU threads of the trainer |
//! | `omp_wait_policy` | `"auto"` | OpenMP waiting: `auto` (passive when the machine is busy), `active`, `passive` |
//! | `checkpoint_every` | 50 | steps between committed checkpoints |
//! | `keep_checkpoints` | false | keep the last checkpoint after the adapter is written |
//! | `cache` | true | cache the dequantised base (safetensors, ~4 bytes per parameter) |
//! | `cache_dir` | `<models_dir>/transformers` | where that cache lives |
//! | `micro_batch` | 1 | examples per forward pass (gradient accumulation up to `batch_size`) |
//! | `warmup_ratio` | 0.03 | share of steps with a linear learning-rate warm-up |
//! | `lr_schedule` | `"cosine"` | `cosine` (to 10 %), `linear` (to 0), `constant` |
//! | `weight_decay` | 0.0 | AdamW weight decay |
//! | `max_grad_norm` | 1.0 | gradient clipping (0: none) |
//! | `gradient_checkpointing` | false | recompute activations (long sequences on a GPU) |
//! | `write_gguf` | true | write `adapter.gguf` for llama.cpp |
//! | `time_limit_s` | none | wall-clock limit when the request sets none |
//! | `show_trainer_output` | false | copy the trainer's standard error to the host's |
//! | `defaults` | see below | [`TuneSettings`] for requests that leave them unset |
//!
//! Built-in [`TuneSettings`] defaults: rank 16, alpha 32, dropout 0.05,
//! target modules `q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`,
//! 1 epoch, learning rate 2e-4, batch size 8, max sequence length 2048,
//! seed 42.
//!
//! ## Example
//!
//! ```no_run
//! use nas_plugin_api::{ffi::NativeLibrary, *};
//! let lib = NativeLibrary::from_ref(nas_tune_lora::library());
//! let info = lib.plugins().unwrap().remove(0);
//! let PluginInstance::Tune(mut tuner) = lib
//!     .create(&info, &serde_json::json!({"device": "cpu"}), &HostContext::default())
//!     .unwrap() else { unreachable!() };
//! let adapter = tuner.tune(&TuneRequest {
//!     job_id: "cycle-1".into(),
//!     base: ModelRef { name: "qwen2.5-coder-0.5b".into(), path: "qwen.gguf".into(), sha256: None },
//!     train_set: "train.jsonl".into(),
//!     out_dir: "adapters/cycle-1".into(),
//!     settings: TuneSettings { max_steps: Some(20), ..Default::default() },
//!     init_adapter: None,
//!     time_limit_s: None,
//! }).unwrap();
//! println!("{:?} after {} steps", adapter.gguf, adapter.steps);
//! ```
//!
//! [`ChatRequest::adapter`]: nas_plugin_api::ChatRequest::adapter

mod error;
pub mod process;
mod python;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nas_plugin_api::{
    Adapter, FineTuner, HostContext, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind, TuneRequest,
    TuneSettings,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use error::TuneError;
pub use python::{find_python, pins, REQUIREMENTS};

/// The plugin id.
pub const ID: &str = "tune.lora";

/// The trainer script.
pub const TRAINER_PY: &str = include_str!("python/tune_lora.py");

/// The projections adapted by default: attention and MLP.
pub const DEFAULT_TARGETS: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

nas_plugin_api::plugin_library!(
    /// The plugins of this crate: [`LoraFactory`].
    pub fn library = [LoraFactory]
);

/// Learning-rate schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Cosine decay to 10 % of the peak.
    #[default]
    Cosine,
    /// Linear decay to 0.
    Linear,
    /// The peak throughout.
    Constant,
}

impl LrSchedule {
    fn as_str(self) -> &'static str {
        match self {
            LrSchedule::Cosine => "cosine",
            LrSchedule::Linear => "linear",
            LrSchedule::Constant => "constant",
        }
    }
}

/// OpenMP waiting policy of the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OmpWaitPolicy {
    /// Passive when other processes keep the cores busy, active otherwise.
    #[default]
    Auto,
    /// Spin-wait (fastest on an idle machine).
    Active,
    /// Sleep-wait (robust on a busy machine: spin-waiting threads that share
    /// cores with other processes make a step several times slower).
    Passive,
}

/// The settings of `tune.lora` (see the crate overview for the table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Python interpreter with the trainer's packages.
    pub python: Option<PathBuf>,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `auto`, `float32`, `bfloat16`, `float16`.
    pub dtype: String,
    /// CPU threads.
    pub threads: Option<usize>,
    /// OpenMP waiting policy.
    pub omp_wait_policy: OmpWaitPolicy,
    /// Steps between committed checkpoints.
    pub checkpoint_every: u64,
    /// Keep the last checkpoint after the adapter is written.
    pub keep_checkpoints: bool,
    /// Cache the dequantised base.
    pub cache: bool,
    /// Where the cache lives.
    pub cache_dir: Option<PathBuf>,
    /// Examples per forward pass.
    pub micro_batch: u32,
    /// Share of steps with a linear warm-up.
    pub warmup_ratio: f64,
    /// Schedule after the warm-up.
    pub lr_schedule: LrSchedule,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient clipping norm (0: none).
    pub max_grad_norm: f64,
    /// Recompute activations in the backward pass.
    pub gradient_checkpointing: bool,
    /// Write the GGUF adapter.
    pub write_gguf: bool,
    /// Wall-clock limit when a request sets none.
    pub time_limit_s: Option<f64>,
    /// Copy the trainer's standard error to the host's.
    pub show_trainer_output: bool,
    /// Defaults for requests' unset [`TuneSettings`].
    pub defaults: Value,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            python: None,
            device: "auto".into(),
            dtype: "auto".into(),
            threads: None,
            omp_wait_policy: OmpWaitPolicy::Auto,
            checkpoint_every: 50,
            keep_checkpoints: false,
            cache: true,
            cache_dir: None,
            micro_batch: 1,
            warmup_ratio: 0.03,
            lr_schedule: LrSchedule::Cosine,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            gradient_checkpointing: false,
            write_gguf: true,
            time_limit_s: None,
            show_trainer_output: false,
            defaults: Value::Null,
        }
    }
}

/// The [`TuneSettings`] used when neither the request nor the `defaults`
/// setting gives one.
pub fn builtin_defaults() -> TuneSettings {
    TuneSettings {
        rank: Some(16),
        alpha: Some(32.0),
        dropout: Some(0.05),
        target_modules: DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
        epochs: Some(1.0),
        max_steps: None,
        learning_rate: Some(2e-4),
        batch_size: Some(8),
        max_seq_len: Some(2048),
        seed: Some(42),
    }
}

const TUNE_KEYS: &[&str] = &[
    "rank",
    "alpha",
    "dropout",
    "target_modules",
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "max_seq_len",
    "seed",
];

impl Settings {
    fn validate(&self) -> Result<TuneSettings, TuneError> {
        let bad = |m: String| Err(TuneError::Settings(m));
        let d = self.device.as_str();
        let cuda_n = d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if !matches!(d, "auto" | "cpu" | "cuda") && !cuda_n {
            return bad(format!("`device` must be auto, cpu, cuda or cuda:N, got `{d}`"));
        }
        if !matches!(self.dtype.as_str(), "auto" | "float32" | "bfloat16" | "float16") {
            return bad(format!("`dtype` must be auto, float32, bfloat16 or float16, got `{}`", self.dtype));
        }
        if self.threads == Some(0) || self.micro_batch == 0 || self.checkpoint_every == 0 {
            return bad("`threads`, `micro_batch` and `checkpoint_every` must be at least 1".into());
        }
        if !(self.warmup_ratio.is_finite() && (0.0..1.0).contains(&self.warmup_ratio)) {
            return bad(format!("`warmup_ratio` must be in [0, 1), got {}", self.warmup_ratio));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("`weight_decay` must be ≥ 0, got {}", self.weight_decay));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(format!("`max_grad_norm` must be ≥ 0, got {}", self.max_grad_norm));
        }
        if let Some(t) = self.time_limit_s {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!("`time_limit_s` must be a positive number, got {t}"));
            }
        }
        let defaults = match &self.defaults {
            Value::Null => TuneSettings::default(),
            Value::Object(m) => {
                if let Some(k) = m.keys().find(|k| !TUNE_KEYS.contains(&k.as_str())) {
                    return bad(format!(
                        "`defaults.{k}` is not a fine-tuning setting (known: {})",
                        TUNE_KEYS.join(", ")
                    ));
                }
                serde_json::from_value(self.defaults.clone())
                    .map_err(|e| TuneError::Settings(format!("`defaults`: {e}")))?
            }
            other => return bad(format!("`defaults` must be a table, got {other}")),
        };
        let merged = merge(&defaults, &builtin_defaults());
        check_tune_settings(&merged)?;
        Ok(merged)
    }
}

/// `first`'s settings, each unset one taken from `then`.
pub fn merge(first: &TuneSettings, then: &TuneSettings) -> TuneSettings {
    TuneSettings {
        rank: first.rank.or(then.rank),
        alpha: first.alpha.or(then.alpha),
        dropout: first.dropout.or(then.dropout),
        target_modules: if first.target_modules.is_empty() {
            then.target_modules.clone()
        } else {
            first.target_modules.clone()
        },
        epochs: first.epochs.or(then.epochs),
        max_steps: first.max_steps.or(then.max_steps),
        learning_rate: first.learning_rate.or(then.learning_rate),
        batch_size: first.batch_size.or(then.batch_size),
        max_seq_len: first.max_seq_len.or(then.max_seq_len),
        seed: first.seed.or(then.seed),
    }
}

fn check_tune_settings(s: &TuneSettings) -> Result<(), TuneError> {
    let bad = |m: String| Err(TuneError::Settings(m));
    if s.rank == Some(0) {
        return bad("`rank` must be at least 1".into());
    }
    if let Some(a) = s.alpha {
        if !(a.is_finite() && a > 0.0) {
            return bad(format!("`alpha` must be a positive number, got {a}"));
        }
    }
    if let Some(d) = s.dropout {
        if !(d.is_finite() && (0.0..1.0).contains(&d)) {
            return bad(format!("`dropout` must be in [0, 1), got {d}"));
        }
    }
    if let Some(lr) = s.learning_rate {
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("`learning_rate` must be a positive number, got {lr}"));
        }
    }
    if let Some(e) = s.epochs {
        if !(e.is_finite() && e > 0.0) {
            return bad(format!("`epochs` must be a positive number, got {e}"));
        }
    }
    if s.max_steps == Some(0) || s.batch_size == Some(0) {
        return bad("`max_steps` and `batch_size` must be at least 1".into());
    }
    if s.max_seq_len.is_some_and(|n| n < 16) {
        return bad(format!("`max_seq_len` must be at least 16, got {}", s.max_seq_len.unwrap_or_default()));
    }
    if s.target_modules.iter().any(|m| m.is_empty() || m.contains(char::is_whitespace)) {
        return bad(format!("`target_modules` must be module names, got {:?}", s.target_modules));
    }
    Ok(())
}

/// The factory of `tune.lora`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoraFactory;

impl PluginFactory for LoraFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            ID,
            PluginKind::Tune,
            env!("CARGO_PKG_VERSION"),
            "LoRA fine-tuning of the GGUF model llm.local serves (transformers + peft in a child process); writes GGUF and PEFT adapters.",
        )
    }

    fn create(&self, config: &Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        Ok(PluginInstance::Tune(Box::new(LoraTuner::new(config, ctx)?)))
    }
}

/// The fine-tuner instance. Built through [`LoraFactory`]; also usable
/// directly.
#[derive(Debug)]
pub struct LoraTuner {
    settings: Settings,
    defaults: TuneSettings,
    python: PathBuf,
    /// The trainer's package versions, once checked.
    versions: Option<serde_json::Map<String, Value>>,
    threads: usize,
    cache_dir: Option<PathBuf>,
}

impl LoraTuner {
    /// A configured fine-tuner. Finding Python is immediate; its packages are
    /// checked at the first [`FineTuner::tune`].
    pub fn new(config: &Value, ctx: &HostContext) -> Result<LoraTuner, PluginError> {
        let mut settings: Settings = PluginError::parse_config(ID, config)?;
        let defaults = settings.validate()?;
        settings.python = settings.python.take().map(|p| ctx.resolve(p));
        let python = find_python(settings.python.as_deref())?;
        let python = std::path::absolute(&python).unwrap_or(python);
        let threads = settings
            .threads
            .or(ctx.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1);
        let cache_dir = match (settings.cache, &settings.cache_dir, &ctx.models_dir) {
            (false, _, _) => None,
            (true, Some(d), _) => Some(ctx.resolve(d)),
            (true, None, Some(m)) => Some(m.join("transformers")),
            (true, None, None) => Some(default_models_dir().join("transformers")),
        };
        Ok(LoraTuner { settings, defaults, python, versions: None, threads, cache_dir })
    }

    /// The Python the trainer runs with.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The settings a request trains with: its own, then the `defaults`
    /// setting, then the built-in defaults.
    pub fn resolve(&self, request: &TuneSettings) -> Result<TuneSettings, TuneError> {
        let s = merge(request, &self.defaults);
        check_tune_settings(&s)?;
        Ok(s)
    }

    fn run(&mut self, request: &TuneRequest) -> Result<Adapter, TuneError> {
        let settings = self.resolve(&request.settings)?;
        let base = std::path::absolute(&request.base.path).unwrap_or_else(|_| request.base.path.clone());
        if !base.exists() {
            return Err(TuneError::BaseMissing(base));
        }
        let train_set = std::path::absolute(&request.train_set).unwrap_or_else(|_| request.train_set.clone());
        File::open(&train_set).map_err(|e| TuneError::TrainSet(format!("cannot read {}: {e}", train_set.display())))?;
        let init_adapter = match &request.init_adapter {
            Some(d) => {
                let d = std::path::absolute(d).unwrap_or_else(|_| d.clone());
                if !d.join("adapter_model.safetensors").is_file() {
                    return Err(TuneError::Settings(format!(
                        "`init_adapter` {} is not a PEFT adapter directory (no adapter_model.safetensors)",
                        d.display()
                    )));
                }
                Some(d)
            }
            None => None,
        };
        if self.versions.is_none() {
            self.versions = Some(python::check_packages(&self.python)?);
        }
        let out_dir = std::path::absolute(&request.out_dir).unwrap_or_else(|_| request.out_dir.clone());
        let trainer_dir = out_dir.join("trainer");
        std::fs::create_dir_all(&trainer_dir).map_err(|e| TuneError::io(&trainer_dir, e))?;
        let lock_path = trainer_dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| TuneError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(TuneError::Busy(out_dir));
        }
        let sha256 = match &request.base.sha256 {
            Some(s) => s.to_ascii_lowercase(),
            None if base.is_dir() => sha256_dir(&base)?,
            None => sha256_file(&base)?,
        };
        let script = trainer_dir.join("tune_lora.py");
        write_file(&script, TRAINER_PY.as_bytes())?;
        let s = &self.settings;
        let job = json!({
            "job_id": request.job_id,
            "base": {"name": request.base.name, "path": base, "sha256": sha256},
            "train_set": train_set,
            "out_dir": out_dir,
            "init_adapter": init_adapter,
            "settings": settings,
            "trainer": {
                "device": s.device,
                "dtype": s.dtype,
                "threads": self.threads,
                "checkpoint_every": s.checkpoint_every,
                "keep_checkpoints": s.keep_checkpoints,
                "cache_dir": self.cache_dir,
                "micro_batch": s.micro_batch,
                "warmup_ratio": s.warmup_ratio,
                "lr_schedule": s.lr_schedule.as_str(),
                "weight_decay": s.weight_decay,
                "max_grad_norm": s.max_grad_norm,
                "gradient_checkpointing": s.gradient_checkpointing,
                "write_gguf": s.write_gguf,
            },
        });
        let job_path = trainer_dir.join("job.json");
        let text = serde_json::to_vec_pretty(&job).map_err(|e| TuneError::io(&job_path, e))?;
        write_file(&job_path, &text)?;

        let net = process::net_isolation();
        let launch = process::Launch {
            program: &self.python,
            args: vec!["-I".into(), script.display().to_string(), "train".into(), job_path.display().to_string()],
            env: self.child_env(&trainer_dir),
            cwd: &trainer_dir,
            net,
            max_line: 1 << 20,
            stderr_tail: 64 << 10,
            relay_stderr: s.show_trainer_output,
        };
        let started = Instant::now();
        let (mut trainer, lines, tail) = process::Trainer::spawn(launch)
            .map_err(|e| TuneError::PythonMissing { python: self.python.clone(), reason: e.to_string() })?;
        let pid_path = trainer_dir.join("pid");
        write_file(&pid_path, trainer.pid().to_string().as_bytes())?;
        let limit = request.time_limit_s.or(s.time_limit_s);
        let deadline = limit.map(|l| started + Duration::from_secs_f64(l));
        let mut progress = Progress { job: request.job_id.clone(), ..Progress::default() };
        loop {
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(1));
            match lines.recv_timeout(wait) {
                Ok(process::Line::Text(line)) => progress.on_line(&line),
                Ok(process::Line::TooLong(_)) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        trainer.kill();
                        let _ = trainer.wait();
                        let _ = std::fs::remove_file(&pid_path);
                        return Err(TuneError::Timeout { limit_s: limit.unwrap_or_default(), step: progress.step });
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = trainer.wait().map_err(|e| TuneError::io(&trainer_dir, e))?;
        let _ = std::fs::remove_file(&pid_path);
        tail.wait_closed(Duration::from_secs(5));
        if let Some((kind, message)) = progress.error.take() {
            return Err(match kind.as_str() {
                "base_missing" => TuneError::BaseMissing(base),
                "train_set" => TuneError::TrainSet(message),
                "out_of_memory" => TuneError::OutOfMemory(message),
                "unsupported" => TuneError::Unsupported(message),
                _ => TuneError::Settings(message),
            });
        }
        if !status.success() {
            let tail = tail.text(4000);
            let oom = ["OutOfMemoryError", "MemoryError", "CUDA out of memory", "std::bad_alloc"];
            if oom.iter().any(|m| tail.contains(m)) {
                return Err(TuneError::OutOfMemory(format!(
                    "the trainer {}: {tail}",
                    process::describe_status(status)
                )));
            }
            return Err(TuneError::Crashed { status: process::describe_status(status), tail });
        }
        let record_path = out_dir.join("adapter.json");
        let text = std::fs::read(&record_path).map_err(|e| TuneError::io(&record_path, e))?;
        let mut adapter: Adapter = serde_json::from_slice(&text).map_err(|e| TuneError::io(&record_path, e))?;
        for f in adapter.gguf.iter().chain(adapter.peft_dir.iter()) {
            if !f.exists() {
                return Err(TuneError::io(f, "the trainer finished but this output is missing"));
            }
        }
        adapter.extra.insert("sandbox".into(), json!(net.describe()));
        adapter.extra.insert("python".into(), json!(self.python));
        if progress.reused {
            adapter.extra.insert("reused".into(), json!(true));
        }
        Ok(adapter)
    }

    fn child_env(&self, trainer_dir: &Path) -> Vec<(String, String)> {
        let threads = self.threads.to_string();
        let passive = match self.settings.omp_wait_policy {
            OmpWaitPolicy::Passive => true,
            OmpWaitPolicy::Active => false,
            OmpWaitPolicy::Auto => machine_busy(self.threads),
        };
        let hf_home = self.cache_dir.clone().unwrap_or_else(|| trainer_dir.to_path_buf()).join("huggingface");
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
            ("PYTHONWARNINGS".to_string(), "ignore".to_string()),
            ("OMP_NUM_THREADS".to_string(), threads.clone()),
            ("MKL_NUM_THREADS".to_string(), threads),
            ("OMP_WAIT_POLICY".to_string(), if passive { "PASSIVE" } else { "ACTIVE" }.to_string()),
            ("HF_HOME".to_string(), hf_home.display().to_string()),
            ("HF_HUB_OFFLINE".to_string(), "1".to_string()),
            ("TRANSFORMERS_OFFLINE".to_string(), "1".to_string()),
        ];
        for key in ["HOME", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME"]
        {
            if let Ok(v) = std::env::var(key) {
                env.push((key.to_string(), v));
            }
        }
        env
    }
}

impl FineTuner for LoraTuner {
    fn tune(&mut self, request: &TuneRequest) -> Result<Adapter, PluginError> {
        Ok(self.run(request)?)
    }
}

/// What the trainer reported so far.
#[derive(Debug, Default)]
struct Progress {
    job: String,
    step: u64,
    error: Option<(String, String)>,
    reused: bool,
}

impl Progress {
    fn on_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let job = &self.job;
        match v.get("event").and_then(Value::as_str).unwrap_or_default() {
            "step" => {
                self.step = num("step") as u64;
                eprintln!(
                    "[{ID}] {job}: step {}/{} loss {:.4}, {} tokens, {:.0} tokens/s, {:.2} s/step",
                    self.step,
                    num("steps") as u64,
                    num("loss"),
                    num("tokens") as u64,
                    num("tokens_per_s"),
                    num("seconds"),
                );
            }
            "start" => eprintln!(
                "[{ID}] {job}: {} examples ({} cut to fit), {} steps from step {}, {} {} with {} threads, {} trainable parameters, base loaded in {:.1} s",
                num("examples") as u64,
                num("truncated") as u64,
                num("steps") as u64,
                num("start_step") as u64,
                v.get("device").and_then(Value::as_str).unwrap_or("?"),
                v.get("dtype").and_then(Value::as_str).unwrap_or("?"),
                num("threads") as u64,
                num("trainable_params") as u64,
                num("load_seconds"),
            ),
            "resume" => {
                self.step = num("step") as u64;
                eprintln!("[{ID}] {job}: continuing from the checkpoint of step {}", self.step);
            }
            "checkpoint" => eprintln!("[{ID}] {job}: checkpoint committed at step {}", num("step") as u64),
            "cache" => match v.get("state").and_then(Value::as_str) {
                Some("building") => eprintln!("[{ID}] {job}: dequantising the base model into the cache (once per model)"),
                _ => eprintln!("[{ID}] {job}: base model cached in {:.1} s", num("seconds")),
            },
            "discard" => eprintln!(
                "[{ID}] {job}: discarding a checkpoint of another job: {}",
                v.get("path").and_then(Value::as_str).unwrap_or("?")
            ),
            "done" => {
                self.reused = v.get("reused").and_then(Value::as_bool).unwrap_or(false);
                if self.reused {
                    eprintln!("[{ID}] {job}: the adapter of this job is already written; reusing it");
                }
            }
            "error" => {
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or("unknown").to_string();
                let message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
                self.error = Some((kind, message));
            }
            _ => {}
        }
    }
}

/// The default models directory: `$NAS_HOME/models`, else
/// `~/.cache/nas/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("NAS_HOME") {
        return PathBuf::from(h).join("models");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/nas/models")
}

/// Whether other processes keep the cores busy: the 1-minute load average
/// plus our `threads` exceeds the core count.
fn machine_busy(threads: usize) -> bool {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    load + threads as f64 > cores + 0.5
}

/// The sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String, TuneError> {
    let mut f = File::open(path).map_err(|e| TuneError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| TuneError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The sha256 of a model directory: of each file's relative path, size and
/// sha256, in path order.
pub fn sha256_dir(dir: &Path) -> Result<String, TuneError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TuneError> {
        for e in std::fs::read_dir(dir).map_err(|e| TuneError::io(dir, e))? {
            let p = e.map_err(|e| TuneError::io(dir, e))?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let len = f.metadata().map_err(|e| TuneError::io(f, e))?.len();
        h.update(format!("{}\0{len}\0{}\n", rel.display(), sha256_file(f)?).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TuneError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| TuneError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TuneError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::{ErrorCode, ModelRef};

    fn tuner(config: Value) -> Result<LoraTuner, PluginError> {
        LoraTuner::new(&config, &HostContext::default())
    }

    fn request(dir: &Path, base: &Path) -> TuneRequest {
        TuneRequest {
            job_id: "j".into(),
            base: ModelRef { name: "m".into(), path: base.to_path_buf(), sha256: None },
            train_set: dir.join("train.jsonl"),
            out_dir: dir.join("out"),
            settings: TuneSettings::default(),
            init_adapter: None,
            time_limit_s: None,
        }
    }

    #[test]
    fn settings_reject_unknown_keys_bad_ranges_and_unknown_defaults() {
        let e = tuner(json!({"devise": "cpu"})).expect_err("typo");
        assert!(e.message.contains("devise"), "{e}");
        let e = tuner(json!({"device": "tpu"})).expect_err("bad device");
        assert_eq!(e.code, ErrorCode::InvalidConfig, "{e}");
        let e = tuner(json!({"defaults": {"rnak": 8}})).expect_err("typo in defaults");
        assert!(e.message.contains("defaults.rnak"), "{e}");
        let e = tuner(json!({"defaults": {"dropout": 1.5}})).expect_err("bad dropout");
        assert!(e.message.contains("dropout"), "{e}");
        tuner(Value::Null).expect("defaults are valid");
    }

    #[test]
    fn request_settings_override_configured_defaults_which_override_the_built_in_ones() {
        let t = tuner(json!({"defaults": {"rank": 8, "learning_rate": 1e-3}})).expect("valid");
        let s = t.resolve(&TuneSettings { rank: Some(4), ..Default::default() }).expect("valid");
        assert_eq!(s.rank, Some(4));
        assert_eq!(s.learning_rate, Some(1e-3));
        assert_eq!(s.alpha, Some(32.0));
        assert_eq!(s.target_modules.len(), 7);
        let e = t.resolve(&TuneSettings { max_seq_len: Some(4), ..Default::default() }).expect_err("too short");
        assert!(e.to_string().contains("max_seq_len"), "{e}");
    }

    #[test]
    fn a_missing_base_model_and_an_unreadable_training_set_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut t = tuner(json!({"python": "/bin/sh"})).expect("valid");
        let e = t.tune(&request(dir.path(), &dir.path().join("absent.gguf"))).expect_err("no base");
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
        assert!(e.message.contains("absent.gguf") && e.message.contains("base model"), "{e}");
        let base = dir.path().join("base.gguf");
        std::fs::write(&base, b"GGUF").expect("write");
        let e = t.tune(&request(dir.path(), &base)).expect_err("no training set");
        assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
        assert!(e.message.contains("train.jsonl"), "{e}");
        // With both present, a Python without the packages is named.
        std::fs::write(dir.path().join("train.jsonl"), b"{}\n").expect("write");
        let e = t.tune(&request(dir.path(), &base)).expect_err("no packages");
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
        assert!(e.message.contains("transformers==5.23.0"), "{e}");
    }

    #[test]
    fn progress_lines_are_read_and_errors_kept() {
        let mut p = Progress { job: "j".into(), ..Progress::default() };
        p.on_line(r#"{"event":"step","step":3,"steps":9,"loss":1.5,"tokens":300,"tokens_per_s":20,"seconds":1}"#);
        assert_eq!(p.step, 3);
        p.on_line("not json");
        p.on_line(r#"{"event":"error","kind":"train_set","message":"line 2: bad"}"#);
        assert_eq!(p.error, Some(("train_set".into(), "line 2: bad".into())));
    }

    #[test]
    fn the_sha256_of_a_model_directory_follows_every_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("config.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("sub/model.safetensors"), b"weights").expect("write");
        let a = sha256_dir(dir.path()).expect("hashes");
        assert_eq!(a, sha256_dir(dir.path()).expect("hashes"), "stable");
        std::fs::write(dir.path().join("sub/model.safetensors"), b"weightz").expect("write");
        assert_ne!(a, sha256_dir(dir.path()).expect("hashes"), "a changed file changes it");
    }

    #[test]
    fn the_sha256_of_a_file_is_its_hex_digest() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(sha256_file(&p).expect("reads"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
