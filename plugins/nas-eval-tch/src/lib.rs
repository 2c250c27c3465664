//! # nas-eval-tch
//!
//! The `eval.tch-one-epoch` evaluator of `nas`: candidate source text in, a
//! score ([`EvalReport`]) or a typed failure ([`CandidateFailure`]) out, by
//! the paper's one-epoch proxy. Written against `nas-plugin-api` exactly as a
//! third-party plugin is; this crate does **not** link libtorch.
//!
//! One evaluation:
//!
//! 1. **extract** the code from the answer (first python fence, else any
//!    fence, else the whole text) — [`extract_code`];
//! 2. **check and export** in a sandboxed Python child (`python/check.py`,
//!    embedded here and written to the scratch directory): compile, import,
//!    check the contract (`Net()`, `Net(in_shape, num_classes)`, or LEMUR's
//!    `Net(in_shape, out_shape, prm, device)` with
//!    `supported_hyperparameters()`), forward a dummy batch and check the
//!    output shape, count parameters and FLOPs, export TorchScript (script;
//!    trace with BatchNorm/Dropout kept scripted as the fallback);
//! 3. **train** one epoch and **test** in the persistent worker
//!    `nas-eval-worker` (crate `nas-eval-tch-worker`, tch + libtorch), which
//!    holds the prepared dataset resident across candidates (on the GPU when
//!    it fits), runs in the same sandbox, and is restarted by this plugin's
//!    watchdog after a crash or a timeout.
//!
//! When the request sets [`EvalRequest::save_model`], the worker saves the
//! trained module (TorchScript, eval mode, CPU tensors; its input is the
//! normalised image batch `[N,C,H,W]`, normalised with the manifest's
//! mean/std) into its own scratch directory, and this plugin copies it to the
//! requested path once the candidate scored; a candidate that failed writes
//! nothing.
//!
//! Every process that runs candidate code starts in the [`sandbox`]: own
//! session, control group (process and memory limits), rlimits, a new
//! network namespace and Landlock filesystem confinement. See
//! `docs/sandbox.md`.
//!
//! ## Settings
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `lr` | 0.01 | SGD learning rate |
//! | `momentum` | 0.9 | SGD momentum |
//! | `weight_decay` | 5e-4 | SGD weight decay |
//! | `batch_size` | 128 | training batch size |
//! | `seed` | 43 | seed of initialisation, shuffling and augmentation |
//! | `epochs` | 1 | training epochs (the proxy is one) |
//! | `augment` | `"auto"` | `auto` (crop pad 4 + flip for 32×32 colour data), `crop_flip`, `none` |
//! | `device` | `"auto"` | `auto`, `cpu`, `cuda`, `cuda:N` |
//! | `time_limit_s` | 1800 | wall-clock limit of one evaluation (check + train + test) |
//! | `memory_limit_mb` | 8192 | memory limit of each sandboxed process tree |
//! | `cpu_threads` | host's | intra-op threads of the worker |
//! | `max_train_examples` | all | train on the first N examples only |
//! | `max_test_examples` | all | test on the first N examples only |
//! | `python` | discovered | Python with torch 2.11.0 (else `NAS_PYTHON`, else `.venv/bin/python` up from the working directory or the executable, else `python3`) |
//! | `worker_path` | discovered | the `nas-eval-worker` binary (else `NAS_EVAL_WORKER`, else next to the executable) |
//! | `max_processes` | 512 | processes and threads per sandboxed tree |
//! | `jit_profiling` | false | run the TorchScript profiling executor (slower first epoch) |
//! | `jit_optimize` | true | let the TorchScript executor optimise the graph (fusion, symbolic autodiff) |
//! | `omp_wait_policy` | `"auto"` | OpenMP waiting: `auto` (passive when the machine is busy), `active`, `passive` |
//! | `extra_read_paths` | `[]` | more paths the sandbox may read (e.g. a libtorch elsewhere) |
//! | `keep_scratch` | false | keep each candidate's scratch directory |
//!
//! ## Example
//!
//! ```no_run
//! use nas_plugin_api::{ffi::NativeLibrary, *};
//! let lib = NativeLibrary::from_ref(nas_eval_tch::library());
//! let info = lib.plugins().unwrap().remove(0);
//! let PluginInstance::Evaluator(mut eval) = lib
//!     .create(&info, &serde_json::json!({"device": "cpu"}), &HostContext::default())
//!     .unwrap() else { unreachable!() };
//! let outcome = eval.evaluate(&EvalRequest {
//!     candidate_id: "c1".into(),
//!     source: "```python\nclass Net: ...\n```".into(),
//!     dataset: DatasetRef { dir: "data/fashion-mnist".into(), name: "fashion-mnist".into() },
//!     time_limit_s: None,
//!     seed: None,
//!     save_model: None,
//! }).unwrap();
//! println!("{}", serde_json::to_string(&outcome).unwrap());
//! ```

mod discover;
mod landlock;
pub mod sandbox;
mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nas_plugin_api::{
    CandidateFailure, DatasetManifest, EvalOutcome, EvalReport, EvalRequest, Evaluator, FailureKind, HostContext,
    PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind,
};
use serde::Deserialize;
use serde_json::{json, Value};

pub use discover::{find_python, find_worker};

/// The plugin id.
pub const PLUGIN_ID: &str = "eval.tch-one-epoch";

const CHECK_PY: &str = include_str!("python/check.py");

nas_plugin_api::plugin_library!(
    /// The plugins of this crate: [`TchOneEpochFactory`].
    pub fn library = [TchOneEpochFactory]
);

/// Data augmentation choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// Random crop (pad 4) + horizontal flip for 32×32 colour data, none otherwise.
    #[default]
    Auto,
    /// Always random crop (pad 4) + horizontal flip.
    CropFlip,
    /// No augmentation.
    None,
}

/// OpenMP waiting policy of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OmpWaitPolicy {
    /// Passive when other processes keep the cores busy, active otherwise.
    #[default]
    Auto,
    /// Spin-wait (fastest on an idle machine).
    Active,
    /// Sleep-wait (robust on a busy machine).
    Passive,
}

/// The settings of `eval.tch-one-epoch` (see the crate overview for the table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD weight decay.
    pub weight_decay: f64,
    /// Training batch size.
    pub batch_size: u32,
    /// Seed.
    pub seed: u64,
    /// Training epochs.
    pub epochs: u32,
    /// Augmentation.
    pub augment: Augment,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Wall-clock limit of one evaluation.
    pub time_limit_s: f64,
    /// Memory limit per sandboxed process tree.
    pub memory_limit_mb: u64,
    /// Worker intra-op threads.
    pub cpu_threads: Option<usize>,
    /// Train on the first N examples only.
    pub max_train_examples: Option<u64>,
    /// Test on the first N examples only.
    pub max_test_examples: Option<u64>,
    /// Python interpreter with torch.
    pub python: Option<PathBuf>,
    /// The `nas-eval-worker` binary.
    pub worker_path: Option<PathBuf>,
    /// Processes and threads per sandboxed tree.
    pub max_processes: u64,
    /// TorchScript profiling executor.
    pub jit_profiling: bool,
    /// TorchScript graph optimisation (fusion, symbolic autodiff).
    pub jit_optimize: bool,
    /// OpenMP waiting policy.
    pub omp_wait_policy: OmpWaitPolicy,
    /// More readable paths for the sandbox.
    pub extra_read_paths: Vec<PathBuf>,
    /// Keep candidates' scratch directories.
    pub keep_scratch: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch_size: 128,
            seed: 43,
            epochs: 1,
            augment: Augment::Auto,
            device: "auto".into(),
            time_limit_s: 1800.0,
            memory_limit_mb: 8192,
            cpu_threads: None,
            max_train_examples: None,
            max_test_examples: None,
            python: None,
            worker_path: None,
            max_processes: 512,
            jit_profiling: false,
            jit_optimize: true,
            omp_wait_policy: OmpWaitPolicy::Auto,
            extra_read_paths: Vec::new(),
            keep_scratch: false,
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<(), PluginError> {
        let bad = |m: String| Err(PluginError::config(format!("[{PLUGIN_ID}] settings: {m}")));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("`lr` must be a positive number, got {}", self.lr));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(format!("`momentum` must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("`weight_decay` must be ≥ 0, got {}", self.weight_decay));
        }
        if self.batch_size == 0 || self.epochs == 0 {
            return bad("`batch_size` and `epochs` must be ≥ 1".into());
        }
        if !(self.time_limit_s.is_finite() && self.time_limit_s > 0.0) {
            return bad(format!("`time_limit_s` must be a positive number, got {}", self.time_limit_s));
        }
        if self.memory_limit_mb < 256 {
            return bad(format!("`memory_limit_mb` must be ≥ 256, got {}", self.memory_limit_mb));
        }
        let d = self.device.as_str();
        let cuda_n = d.strip_prefix("cuda:").map(|n| n.parse::<usize>().is_ok()).unwrap_or(false);
        if !matches!(d, "auto" | "cpu" | "cuda") && !cuda_n {
            return bad(format!("`device` must be auto, cpu, cuda or cuda:N, got `{d}`"));
        }
        Ok(())
    }
}

/// The factory of `eval.tch-one-epoch`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TchOneEpochFactory;

impl PluginFactory for TchOneEpochFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            PLUGIN_ID,
            PluginKind::Evaluator,
            env!("CARGO_PKG_VERSION"),
            "One-epoch proxy: sandboxed check + TorchScript export in Python, training in Rust (tch).",
        )
    }

    fn create(&self, config: &Value, ctx: &HostContext) -> Result<PluginInstance, PluginError> {
        Ok(PluginInstance::Evaluator(Box::new(TchOneEpoch::new(config, ctx)?)))
    }
}

/// The evaluator instance. Built through [`TchOneEpochFactory`]; also usable
/// directly.
pub struct TchOneEpoch {
    settings: Settings,
    python: PathBuf,
    worker_path: PathBuf,
    caps: sandbox::Capabilities,
    scratch: PathBuf,
    read_paths: Vec<PathBuf>,
    threads: usize,
    worker: Option<worker::WorkerProc>,
    worker_restarts: u64,
}

impl std::fmt::Debug for TchOneEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchOneEpoch").field("python", &self.python).field("worker", &self.worker_path).finish()
    }
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

impl TchOneEpoch {
    /// A configured evaluator; checks that Python imports torch and that the
    /// worker binary exists.
    pub fn new(config: &Value, ctx: &HostContext) -> Result<TchOneEpoch, PluginError> {
        let mut settings: Settings = PluginError::parse_config(PLUGIN_ID, config)?;
        settings.validate()?;
        settings.python = settings.python.take().map(|p| ctx.resolve(p));
        settings.worker_path = settings.worker_path.take().map(|p| ctx.resolve(p));
        settings.extra_read_paths = settings.extra_read_paths.iter().map(|p| ctx.resolve(p.clone())).collect();
        let python = find_python(settings.python.as_deref())?;
        let worker_path = find_worker(settings.worker_path.as_deref())?;
        discover::check_torch(&python)?;
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        // This instance's own directory (below the host's scratch when given), removed on drop.
        let scratch = match &ctx.scratch_dir {
            Some(d) => d.join(format!("eval-tch-{}-{n}", std::process::id())),
            None => std::env::temp_dir().join(format!("nas-eval-tch-{}-{n}", std::process::id())),
        };
        std::fs::create_dir_all(&scratch).map_err(|e| PluginError::io(&scratch, e))?;
        let scratch = scratch.canonicalize().map_err(|e| PluginError::io(&scratch, e))?;
        let threads = settings
            .cpu_threads
            .or(ctx.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1);
        let mut read_paths = discover::system_read_paths();
        read_paths.extend(discover::python_roots(&python));
        read_paths.extend(discover::library_roots());
        read_paths.extend(settings.extra_read_paths.iter().cloned());
        let caps = sandbox::Capabilities::probe();
        eprintln!("[{PLUGIN_ID}] {}", caps.describe());
        Ok(TchOneEpoch {
            settings,
            python,
            worker_path,
            caps,
            scratch,
            read_paths,
            threads,
            worker: None,
            worker_restarts: 0,
        })
    }

    /// What the sandbox enforces on this machine.
    pub fn sandbox_description(&self) -> String {
        self.caps.describe()
    }

    /// How many times the worker was started again after a crash or timeout.
    pub fn worker_restarts(&self) -> u64 {
        self.worker_restarts
    }

    fn policy(&self, read_extra: &[PathBuf], write: &[PathBuf], cpu_time_s: Option<u64>) -> sandbox::Policy {
        let mut read = self.read_paths.clone();
        read.extend(read_extra.iter().cloned());
        let mut write = write.to_vec();
        // GPU device files must be opened read-write.
        if self.settings.device != "cpu" {
            if let Ok(entries) = std::fs::read_dir("/dev") {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("nvidia") {
                        write.push(e.path());
                    }
                }
            }
        }
        write.push(PathBuf::from("/dev/null"));
        sandbox::Policy {
            read,
            write,
            memory_limit_bytes: Some(self.settings.memory_limit_mb * 1024 * 1024),
            cpu_time_s,
            max_processes: self.settings.max_processes,
            max_file_bytes: 4 << 30,
            gpu: self.settings.device != "cpu",
        }
    }

    fn evaluate_inner(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        let started = Instant::now();
        let limit = request.time_limit_s.unwrap_or(self.settings.time_limit_s).max(0.1);
        let deadline = started + Duration::from_secs_f64(limit);
        let seed = request.seed.unwrap_or(self.settings.seed);

        let Some(code) = extract_code(&request.source) else {
            return Ok(failed("extract", FailureKind::Extract, "the answer holds no code (no fence and no text)"));
        };
        let dataset_dir = request.dataset.dir.canonicalize().map_err(|e| {
            PluginError::new(
                nas_plugin_api::ErrorCode::NotFound,
                format!("dataset {}: {e}", request.dataset.dir.display()),
            )
        })?;
        let manifest = DatasetManifest::load(&dataset_dir)?;

        // Scratch for this candidate.
        let cand_dir = self.scratch.join(format!("cand-{}", sanitize(&request.candidate_id)));
        let _ = std::fs::remove_dir_all(&cand_dir);
        std::fs::create_dir_all(&cand_dir).map_err(|e| PluginError::io(&cand_dir, e))?;
        let result = self.check_and_train(request, &code, &dataset_dir, &manifest, &cand_dir, deadline, seed);
        if !self.settings.keep_scratch {
            let _ = std::fs::remove_dir_all(&cand_dir);
        }
        let mut outcome = result?;
        if let EvalOutcome::Ok(report) = &mut outcome {
            report.total_seconds = Some(started.elapsed().as_secs_f64());
        }
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_and_train(
        &mut self,
        request: &EvalRequest,
        code: &str,
        dataset_dir: &Path,
        manifest: &DatasetManifest,
        cand_dir: &Path,
        deadline: Instant,
        seed: u64,
    ) -> Result<EvalOutcome, PluginError> {
        let io = |p: &Path, e: std::io::Error| PluginError::io(p, e);
        let code_path = cand_dir.join("candidate.py");
        std::fs::write(&code_path, code).map_err(|e| io(&code_path, e))?;
        let check_path = cand_dir.join("check.py");
        std::fs::write(&check_path, CHECK_PY).map_err(|e| io(&check_path, e))?;
        let model_path = cand_dir.join("model.pt");
        let result_path = cand_dir.join("result.json");
        let req_path = cand_dir.join("request.json");
        let check_req = json!({
            "code_path": code_path, "result_path": result_path, "model_path": model_path,
            "in_shape": manifest.input_shape, "num_classes": manifest.num_classes, "seed": seed,
            "lr": self.settings.lr, "momentum": self.settings.momentum, "batch_size": self.settings.batch_size,
            "threads": self.threads.min(4),
        });
        std::fs::write(&req_path, check_req.to_string()).map_err(|e| io(&req_path, e))?;

        // 1. Check and export, in the sandbox.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let log_path = cand_dir.join("check.log");
        let log = std::fs::File::create(&log_path).map_err(|e| io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| io(&log_path, e))?;
        let mut cmd = Command::new(&self.python);
        cmd.arg("-I").arg(&check_path).arg(&req_path);
        cmd.current_dir(cand_dir).env_clear().stdin(Stdio::null()).stdout(log).stderr(log2);
        for (k, v) in self.child_env(cand_dir, self.threads.min(4)) {
            cmd.env(k, v);
        }
        // CPU seconds: the time left on every thread the checker may use.
        let cpu_s = (remaining.as_secs() + 2) * self.threads.min(4) as u64;
        let policy = self.policy(&[], &[cand_dir.to_path_buf()], Some(cpu_s));
        let (mut child, jail) = sandbox::spawn(cmd, &policy, &self.caps).map_err(|e| {
            PluginError::internal(format!("starting the sandboxed checker {}: {e}", self.python.display()))
        })?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(PluginError::internal(format!("waiting for the checker: {e}"))),
            }
        };
        let oom = jail.oom_killed();
        jail.kill_all();
        let _ = child.wait();
        drop(jail);
        let log_tail = tail_of_file(&log_path, 3000);
        let Some(status) = status else {
            return Ok(failed_tb(
                "check",
                FailureKind::Timeout,
                format!(
                    "checking and exporting ran past the time limit of {:.0} s",
                    secs_left(request, &self.settings)
                ),
                log_tail,
            ));
        };
        let check: Value = match std::fs::read_to_string(&result_path).ok().and_then(|t| serde_json::from_str(&t).ok())
        {
            Some(v) => v,
            None => {
                use std::os::unix::process::ExitStatusExt;
                let (kind, msg) = match status.signal() {
                    _ if oom => (
                        FailureKind::OutOfMemory,
                        "the code ran out of memory (killed by the sandbox's memory limit)".to_string(),
                    ),
                    Some(libc::SIGXCPU) => (FailureKind::Timeout, "the code ran past its CPU time limit".to_string()),
                    Some(libc::SIGKILL) if Instant::now() + Duration::from_millis(500) >= deadline => {
                        (FailureKind::Timeout, "the code ran past its time limit".to_string())
                    }
                    Some(libc::SIGKILL) => (
                        FailureKind::OutOfMemory,
                        "the code was killed (SIGKILL), most likely by the memory limit".to_string(),
                    ),
                    Some(sig) => (FailureKind::Runtime, format!("the checker died of signal {sig}")),
                    None => (
                        FailureKind::Runtime,
                        format!(
                            "the code ended the process (exit status {}) before the check finished",
                            status.code().unwrap_or(-1)
                        ),
                    ),
                };
                return Ok(failed_tb("check", kind, msg, log_tail));
            }
        };
        if check["ok"] != json!(true) {
            let kind: FailureKind = serde_json::from_value(check["kind"].clone()).unwrap_or(FailureKind::Runtime);
            let mut f = CandidateFailure::new(
                check["stage"].as_str().unwrap_or("check"),
                kind,
                check["message"].as_str().unwrap_or("the check failed"),
            );
            f.exception = check["exception"].as_str().map(str::to_string);
            f.traceback = check["traceback"].as_str().unwrap_or_default().to_string();
            return Ok(EvalOutcome::Failed(f));
        }

        // 2. Train and test in the worker.
        let augment = match self.settings.augment {
            Augment::None => false,
            Augment::CropFlip => true,
            Augment::Auto => manifest.input_shape == [3, 32, 32],
        };
        let load = json!({
            "op": "load", "dir": dataset_dir, "device": self.settings.device,
            "max_train_examples": self.settings.max_train_examples, "max_test_examples": self.settings.max_test_examples,
            "mean": manifest.mean, "std": manifest.std, "cpu_threads": self.threads, "jit_profiling": self.settings.jit_profiling,
            "jit_optimize": self.settings.jit_optimize,
        });
        self.ensure_worker(&load, dataset_dir)?;
        // The sandboxed worker writes only below its own directory; the
        // trained module is copied out from there.
        let trained_path = request
            .save_model
            .as_ref()
            .map(|_| self.scratch.join("worker").join(format!("trained-{}.pt", sanitize(&request.candidate_id))));
        if let Some(p) = &trained_path {
            let _ = std::fs::remove_file(p);
        }
        let train = json!({
            "op": "train", "model": model_path, "lr": self.settings.lr, "momentum": self.settings.momentum,
            "weight_decay": self.settings.weight_decay, "batch_size": self.settings.batch_size, "seed": seed,
            "epochs": self.settings.epochs, "augment": augment, "num_classes": manifest.num_classes,
            "save_to": trained_path,
        });
        let remaining = deadline.saturating_duration_since(Instant::now());
        let worker = self.worker.as_mut().expect("ensure_worker started it");
        let answer = worker.request(&train, remaining);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let oom = worker.oom_killed();
                let stderr = worker.stderr_tail();
                self.kill_worker();
                let (kind, msg) = match e {
                    worker::WorkerError::Timeout => (
                        FailureKind::Timeout,
                        format!("training ran past the time limit of {:.0} s", secs_left(request, &self.settings)),
                    ),
                    _ if oom => (
                        FailureKind::OutOfMemory,
                        "training ran out of memory (killed by the sandbox's memory limit)".into(),
                    ),
                    worker::WorkerError::Died(s) => {
                        (FailureKind::Runtime, format!("the training worker died while training this candidate ({s})"))
                    }
                    worker::WorkerError::Io(s) => (FailureKind::Runtime, format!("the training worker failed: {s}")),
                };
                return Ok(failed_tb("train", kind, msg, stderr));
            }
        };
        if answer["ok"] == json!(true) {
            let r = &answer["report"];
            let mut extra = std::collections::BTreeMap::new();
            for key in
                ["test_seconds", "steps", "train_examples", "test_examples", "worker_seconds", "peak_memory_kind"]
            {
                if !r[key].is_null() {
                    extra.insert(key.to_string(), r[key].clone());
                }
            }
            extra.insert("contract".into(), check["contract"].clone());
            extra.insert("export".into(), check["export"].clone());
            if let (Some(dest), Some(trained)) = (&request.save_model, &trained_path) {
                self.deliver_trained(r, trained, dest)?;
            }
            let report = EvalReport {
                accuracy: r["accuracy"].as_f64().unwrap_or(0.0),
                train_loss: r["train_loss"].as_f64(),
                params: check["params"].as_u64().or(r["params"].as_u64()),
                flops: check["flops"].as_u64(),
                epoch_seconds: r["epoch_seconds"].as_f64(),
                images_per_second: r["images_per_second"].as_f64(),
                peak_memory_bytes: r["peak_memory_bytes"].as_u64(),
                device: r["device"].as_str().unwrap_or("cpu").to_string(),
                total_seconds: None,
                extra,
            };
            return Ok(EvalOutcome::Ok(report));
        }
        if let Some(f) = answer.get("failure") {
            let kind: FailureKind = serde_json::from_value(f["kind"].clone()).unwrap_or(FailureKind::Runtime);
            let mut fail = CandidateFailure::new(
                f["stage"].as_str().unwrap_or("train"),
                kind,
                f["message"].as_str().unwrap_or(""),
            );
            fail.exception = f["exception"].as_str().map(str::to_string);
            fail.traceback = f["traceback"].as_str().unwrap_or_default().to_string();
            return Ok(EvalOutcome::Failed(fail));
        }
        Err(PluginError::internal(format!("the training worker answered an error: {}", answer["error"])))
    }

    fn child_env(&self, home: &Path, threads: usize) -> Vec<(String, String)> {
        let policy = match self.settings.omp_wait_policy {
            OmpWaitPolicy::Active => "ACTIVE",
            OmpWaitPolicy::Passive => "PASSIVE",
            OmpWaitPolicy::Auto => {
                if discover::machine_busy(threads) {
                    "PASSIVE"
                } else {
                    "ACTIVE"
                }
            }
        };
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("HOME".to_string(), home.display().to_string()),
            ("TMPDIR".to_string(), home.display().to_string()),
            ("OMP_NUM_THREADS".to_string(), threads.to_string()),
            ("OMP_WAIT_POLICY".to_string(), policy.to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
            ("PYTHONNOUSERSITE".to_string(), "1".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        for key in ["LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"] {
            if let Ok(v) = std::env::var(key) {
                env.push((key.to_string(), v));
            }
        }
        env
    }

    fn ensure_worker(&mut self, load: &Value, dataset_dir: &Path) -> Result<(), PluginError> {
        if let Some(w) = &mut self.worker {
            if w.loaded.as_ref() == Some(load) && w.alive() {
                return Ok(());
            }
            if !w.alive() {
                self.kill_worker();
            }
        }
        if self.worker.is_none() {
            let home = self.scratch.join("worker");
            std::fs::create_dir_all(&home).map_err(|e| PluginError::io(&home, e))?;
            let mut cmd = Command::new(&self.worker_path);
            cmd.current_dir(&home).env_clear();
            for (k, v) in self.child_env(&home, self.threads) {
                cmd.env(k, v);
            }
            let policy = self.policy(
                &[dataset_dir.to_path_buf(), self.scratch.clone(), self.worker_path.clone()],
                std::slice::from_ref(&home),
                None,
            );
            let w = worker::WorkerProc::start(cmd, &policy, &self.caps).map_err(|e| {
                PluginError::internal(format!("starting the training worker {}: {e}", self.worker_path.display()))
            })?;
            self.worker = Some(w);
        }
        let w = self.worker.as_mut().expect("set above");
        let answer = w.request(load, Duration::from_secs(600)).map_err(|e| {
            let tail = w.stderr_tail();
            PluginError::internal(format!(
                "the training worker failed to load the dataset {}: {e:?}\n{tail}",
                dataset_dir.display()
            ))
        });
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.kill_worker();
                return Err(e);
            }
        };
        if answer["ok"] != json!(true) {
            self.kill_worker();
            return Err(PluginError::new(
                nas_plugin_api::ErrorCode::Corrupt,
                format!("the training worker could not load {}: {}", dataset_dir.display(), answer["error"]),
            ));
        }
        w.loaded = Some(load.clone());
        Ok(())
    }

    /// Copies the module the worker saved at `trained` to `dest`.
    fn deliver_trained(&self, report: &Value, trained: &Path, dest: &Path) -> Result<(), PluginError> {
        if let Some(e) = report["save_error"].as_str() {
            return Err(PluginError::internal(format!("the training worker could not save the trained model: {e}")));
        }
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| PluginError::io(dir, e))?;
        }
        std::fs::copy(trained, dest)
            .map_err(|e| PluginError::io(dest, format!("copying the trained model from {}: {e}", trained.display())))?;
        let _ = std::fs::remove_file(trained);
        Ok(())
    }

    fn kill_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown();
            self.worker_restarts += 1;
        }
    }
}

impl Evaluator for TchOneEpoch {
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        self.evaluate_inner(request)
    }
}

impl Drop for TchOneEpoch {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown();
        }
        if !self.settings.keep_scratch {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
        sandbox::cleanup_cgroups(&self.caps);
    }
}

fn secs_left(request: &EvalRequest, s: &Settings) -> f64 {
    request.time_limit_s.unwrap_or(s.time_limit_s)
}

fn failed(stage: &str, kind: FailureKind, message: impl Into<String>) -> EvalOutcome {
    EvalOutcome::Failed(CandidateFailure::new(stage, kind, message))
}

fn failed_tb(stage: &str, kind: FailureKind, message: impl Into<String>, traceback: String) -> EvalOutcome {
    let mut f = CandidateFailure::new(stage, kind, message);
    f.traceback = traceback;
    EvalOutcome::Failed(f)
}

fn tail_of_file(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn sanitize(id: &str) -> String {
    let s: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect();
    if s.is_empty() {
        "candidate".into()
    } else {
        s
    }
}

/// The code in an LLM answer: the first ```python fence, else the first fence
/// of another language (not a diff or JSON), else the whole text; `None` when
/// nothing but whitespace is left (an `extract` failure).
pub use nas_plugin_api::text::extract_code;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_prefers_the_first_python_fence() {
        let t = "Here:\n```text\nnot code\n```\n```python\nclass Net: pass\n```\n```python\nsecond\n```";
        assert_eq!(extract_code(t).as_deref(), Some("class Net: pass"));
    }

    #[test]
    fn extraction_falls_back_to_any_fence_then_whole_text() {
        assert_eq!(extract_code("x\n```\nimport torch\n```").as_deref(), Some("import torch"));
        assert_eq!(extract_code("import torch\nclass Net: pass").as_deref(), Some("import torch\nclass Net: pass"));
        assert_eq!(extract_code("   \n\t"), None);
        assert_eq!(extract_code("```python\n\n```"), None);
    }

    #[test]
    fn settings_reject_unknown_keys_and_bad_values() {
        let e = PluginError::parse_config::<Settings>(PLUGIN_ID, &json!({"learning_rate": 0.1}))
            .expect_err("must be rejected");
        assert!(e.message.contains("learning_rate"), "{e}");
        let s: Settings = PluginError::parse_config(PLUGIN_ID, &json!({"device": "tpu"})).expect("valid");
        assert!(s.validate().expect_err("tpu is no device").message.contains("device"));
        let s: Settings = PluginError::parse_config(PLUGIN_ID, &json!({})).expect("valid");
        assert_eq!((s.lr, s.momentum, s.weight_decay, s.batch_size, s.seed), (0.01, 0.9, 5e-4, 128, 43));
        s.validate().expect("valid");
    }

    #[test]
    fn candidate_ids_become_safe_directory_names() {
        assert_eq!(sanitize("../../etc/x"), "______etc_x");
        assert_eq!(sanitize(""), "candidate");
    }
}
