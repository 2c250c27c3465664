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
//!    `supported_hyperparameters()`), forward and backward a dummy batch and
//!    check the output shape, export TorchScript (script; trace with
//!    BatchNorm/Dropout kept scripted as the fallback). The candidate runs in
//!    this process, so its verdict is only a gate: it can fail the
//!    candidate, never pass it;
//!    When the request carries a [`nas_plugin_api::Budget`], the meter
//!    (below) measures the exported module's parameters and FLOPs first, and
//!    a network over the budget fails at stage `budget` without training.
//!    The check also takes the network's fingerprint (a hash of its initial
//!    parameters and buffers and of its outputs on the check's batch in
//!    evaluation and in training mode, computed in float64 and rounded to
//!    float32 so that the threads, the CPU and the checker do not change
//!    it; reported as `extra.network`): a
//!    network whose fingerprint is in the request's `known_networks` fails
//!    at stage `network` (kind `duplicate`) without training. Written by
//!    the candidate's process, a forged one can only refuse the candidate;
//! 3. **train** one epoch and **predict** the test images in the persistent
//!    worker `nas-eval-worker` (crate `nas-eval-tch-worker`, tch + libtorch),
//!    which holds the training split and the test images (never their
//!    labels) resident across candidates (on the GPU when they fit), runs in
//!    the same sandbox, counts the parameters, and is restarted by this
//!    plugin's watchdog after a crash or a timeout; meanwhile a persistent
//!    sandboxed **meter** (`python/meter.py`) counts the FLOPs of the
//!    exported module; both run only TorchScript and answer on a descriptor
//!    the candidate's code cannot write;
//! 4. **score**: the test images are predicted in an order drawn for this
//!    evaluation, and the accuracy is computed here against the labels,
//!    which never leave this process.
//!
//! Generated code may use `torch`, `nn`, `F` and `Tensor` without importing
//! them (the paper's contract): the check defines them in the candidate's
//! module namespace before running its file as written. The worker also
//! measures the inference latency (batch 1 and the training batch size), the
//! trainee's own peak memory and the device seconds of the evaluation.
//! The report names the machine that trained (`extra.machine`: the GPU, or
//! the CPU's model and the instruction set ATen's kernels use, and the torch
//! version): float32 training on another processor gives other last bits,
//! so the same seed repeats a score exactly only on the same machine.
//!
//! When the request sets [`EvalRequest::save_model`], the worker saves the
//! trained module (TorchScript, eval mode, CPU tensors; its input is the
//! normalised image batch `[N,C,H,W]`, normalised with the manifest's
//! mean/std) into its own scratch directory, and this plugin copies it to the
//! requested path once the candidate scored; a candidate that failed writes
//! nothing. The plugin then exports it to ONNX beside it (`.onnx`, checked
//! with onnxruntime against the module in a sandboxed Python,
//! `python/onnx_export.py`).
//!
//! Every process that runs candidate code starts in the [`sandbox`]: PID 1
//! of its own PID namespace (dies with the host, takes everything it started
//! with it), a private root with only what it needs (datasets hidden), new
//! network, IPC and UTS namespaces, `nobody` with no capabilities, a control
//! group (process and memory limits), rlimits, no inherited descriptors,
//! bounded output, and Landlock. See `docs/sandbox.md`.
//!
//! **The warm checker** (`warm_checker`, on by default where the sandbox has
//! its own PID namespace and Landlock): one sandboxed Python imports torch
//! once (`python/zygote.py`, the first process of its PID namespace,
//! non-dumpable) and forks a child per candidate. Before the candidate's
//! code runs, the child takes the cold checker's descriptors (output and
//! answer pipes made for this check, passed over a unix socket), its CPU
//! limit, its candidate directory, and stacks a Landlock ruleset that leaves
//! it the cold checker's rights only (read the toolchain, write its own
//! candidate directory); then it runs `check.py` as `python -I check.py`
//! would. When the child ends, or at the time limit, everything it started
//! is killed (`kill(-1)` from the namespace's first process) before the next
//! child is forked. A zygote that dies or fails is not the candidate's
//! failure: that candidate is checked cold (the time lost is not charged to
//! it) and the next check starts a new zygote; after three failures in a row
//! the evaluator stays cold. The report says which checker ran
//! (`extra.check`: `warm` or `cold`) and how long the check took
//! (`extra.check_seconds`).
//!
//! ## Settings
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `lr` | 0.01 | SGD learning rate |
//! | `momentum` | 0.9 | SGD momentum |
//! | `weight_decay` | 5e-4 | SGD weight decay |
//! | `batch_size` | 128 | training batch size |
//! | `seed` | 43 | seed of initialisation, shuffling and augmentation when the request has none (echoed in the report) |
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
//! | `cudnn_benchmark` | true | on a GPU, let cuDNN time its candidate kernels and take the fastest; `false` takes its heuristics' pick: 15–30 % longer epochs on an H200 and no more repeatable (the same seed's scores spread by up to half a point either way: kernels accumulate in a varying order; `docs/results/ceiling-bench.md`) |
//! | `omp_wait_policy` | `"auto"` | OpenMP waiting: `auto` (passive when the machine is busy, else libgomp's default: spin a moment, then sleep), `active` (spin without end, also while the worker waits between candidates and the LLM runs: for benchmarks), `passive` |
//! | `extra_read_paths` | `[]` | more paths the sandbox may read (e.g. a libtorch elsewhere) |
//! | `keep_scratch` | false | keep each candidate's scratch directory |
//! | `deterministic` | false | deterministic algorithms, as `torch.use_deterministic_algorithms(True, warn_only=True)` with cuDNN's deterministic mode (and its benchmark mode off) and a fixed cuBLAS workspace: where every operation of a candidate has a deterministic implementation, the same seed gives the same score on a GPU too; an operation without one (on a GPU: the backward passes of `AdaptiveAvgPool2d`, `AdaptiveMaxPool2d`, bilinear `interpolate`, `ReflectionPad2d`; anywhere: `MaxUnpool2d`) runs as before and is named in the score's `nondeterministic_ops` (empty: the score repeats exactly). On the CPU the evaluator is deterministic either way on one machine (`extra.machine` names it) |
//! | `bf16` | false | bfloat16 autocast for forward passes (training, test, latency); the paper's recipe is fp32 |
//! | `channels_last` | false | channels-last memory order for 4-D weights and input batches |
//! | `stop_early` | true | stop a training whose first batches (after two warm-up batches, at least 3 batches and 3 s) project the training and the test past 1.5 times the evaluation's time left: a `timeout` failure that says the projection, in seconds instead of at the limit |
//! | `warm_checker` | true | check each candidate in a fresh fork of a sandboxed Python that imported torch once (the zygote), instead of a fresh `python -I check.py` (which imports torch every time); used where the sandbox has its own PID namespace and Landlock, else the cold checker (said at startup) |
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
//!     budget: Default::default(),
//!     known_networks: Vec::new(),
//! }).unwrap();
//! println!("{}", serde_json::to_string(&outcome).unwrap());
//! ```

pub mod discover;
mod held_out;
mod landlock;
pub mod output;
pub mod sandbox;
mod warm;
mod worker;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use held_out::HeldOut;

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
const METER_PY: &str = include_str!("python/meter.py");
const ONNX_PY: &str = include_str!("python/onnx_export.py");
const ZYGOTE_PY: &str = include_str!("python/zygote.py");

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
    /// Passive when other processes keep the cores busy, else libgomp's own
    /// default (spin a moment, then sleep). Never active: the worker lives
    /// for the whole search and idles between evaluations while the host's
    /// LLM runs, and an active team spins on a core all that time.
    #[default]
    Auto,
    /// Spin-wait without end, also while the worker idles between
    /// evaluations (a benchmark's setting, not a search's).
    Active,
    /// Sleep-wait (robust on a busy machine).
    Passive,
}

/// The `OMP_WAIT_POLICY` a child of the evaluator gets (`None`: unset,
/// libgomp's default). `busy` is asked only under `auto`.
fn omp_wait_policy(policy: OmpWaitPolicy, busy: impl FnOnce() -> bool) -> Option<&'static str> {
    match policy {
        OmpWaitPolicy::Active => Some("ACTIVE"),
        OmpWaitPolicy::Passive => Some("PASSIVE"),
        OmpWaitPolicy::Auto => busy().then_some("PASSIVE"),
    }
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
    /// cuDNN's benchmark mode on a GPU.
    pub cudnn_benchmark: bool,
    /// Deterministic algorithms (warn-only), each score saying which
    /// operations had none.
    pub deterministic: bool,
    /// OpenMP waiting policy.
    pub omp_wait_policy: OmpWaitPolicy,
    /// More readable paths for the sandbox.
    pub extra_read_paths: Vec<PathBuf>,
    /// Keep candidates' scratch directories.
    pub keep_scratch: bool,
    /// bfloat16 autocast for the forward passes.
    pub bf16: bool,
    /// Channels-last memory order for 4-D weights and inputs.
    pub channels_last: bool,
    /// Check candidates in forks of a Python that imported torch once.
    pub warm_checker: bool,
    /// Stop a training whose first batches project well past the time left.
    pub stop_early: bool,
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
            cudnn_benchmark: true,
            deterministic: false,
            omp_wait_policy: OmpWaitPolicy::Auto,
            extra_read_paths: Vec::new(),
            keep_scratch: false,
            bf16: false,
            channels_last: false,
            warm_checker: true,
            stop_early: true,
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

/// Refuses a CUDA device that this machine does not have (`cuda` or
/// `cuda:N` with `cuda_devices` ≤ N), when the plugin is created rather than
/// at the first evaluation.
fn check_device(device: &str, cuda_devices: usize) -> Result<(), PluginError> {
    let wanted = match device {
        "cuda" => Some(0),
        d => d.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()),
    };
    match wanted {
        // `Unsupported`, not `InvalidConfig`: the setting is right, this
        // machine lacks the device (the same config runs on the GPU box).
        Some(n) if n >= cuda_devices => Err(PluginError::unsupported(format!(
            "[{PLUGIN_ID}] settings: `device = \"{device}\"` was asked for, but torch sees {cuda_devices} CUDA device(s) on this machine; \
             use `device = \"cpu\"` or `\"auto\"` (CUDA when there is one), or run where the GPU is"
        ))),
        _ => Ok(()),
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
    /// The torch that trains here and the machine it runs on.
    torch: discover::TorchInfo,
    caps: sandbox::Capabilities,
    dirs: Scratch,
    read_paths: Vec<PathBuf>,
    /// Where the worker's shared libraries (libtorch) are.
    worker_libs: Vec<PathBuf>,
    /// Never visible to a sandboxed process: dataset locations.
    hide: Vec<PathBuf>,
    threads: usize,
    worker: Option<worker::Server>,
    worker_restarts: u64,
    /// The test labels of the data the worker holds.
    held_out: Option<HeldOut>,
    meter: Option<worker::Server>,
    meter_failed: bool,
    models: u64,
    /// The warm checker's zygote, once started.
    zygote: Option<warm::Zygote>,
    /// Why the warm checker is not used (off, unsupported here, or failing).
    warm_off: Option<String>,
    /// Failures of the warm checker in a row.
    warm_failures: u32,
    zygotes: u64,
    /// Which checker checked the current candidate, and in how many seconds.
    last_check: Option<(&'static str, f64)>,
}

impl std::fmt::Debug for TchOneEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchOneEpoch").field("python", &self.python).field("worker", &self.worker_path).finish()
    }
}

/// This instance's directories, all below `root` (removed on drop; a root
/// left by a host that was killed is removed by the next instance: its lock
/// is free).
#[derive(Debug)]
struct Scratch {
    root: PathBuf,
    /// The embedded scripts (read-only to sandboxed processes).
    bin: PathBuf,
    /// Files handed to the worker and the meter (read-only to them): the
    /// exported model, the test images.
    inbox: PathBuf,
    /// The worker's own directory (its only writable place).
    worker: PathBuf,
    /// The meter's own directory.
    meter: PathBuf,
    /// The candidates' directories (each the only writable place of its checker).
    checks: PathBuf,
    _lock: std::fs::File,
}

const SCRATCH_LOCK: &str = ".lock";

impl Scratch {
    fn create(parent: &Path, prefix: &str) -> Result<Scratch, PluginError> {
        std::fs::create_dir_all(parent).map_err(|e| PluginError::io(parent, e))?;
        remove_stale(parent, prefix);
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let root = parent.join(format!("{prefix}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| PluginError::io(&root, e))?;
        let root = root.canonicalize().map_err(|e| PluginError::io(&root, e))?;
        let lock_path = root.join(SCRATCH_LOCK);
        let lock = std::fs::File::create(&lock_path).map_err(|e| PluginError::io(&lock_path, e))?;
        lock.try_lock().map_err(|e| PluginError::io(&lock_path, format!("locking: {e}")))?;
        let dirs = Scratch {
            bin: root.join("bin"),
            inbox: root.join("inbox"),
            worker: root.join("worker"),
            meter: root.join("meter"),
            checks: root.join("checks"),
            root,
            _lock: lock,
        };
        for d in [&dirs.root, &dirs.bin, &dirs.inbox, &dirs.worker, &dirs.meter, &dirs.checks] {
            std::fs::create_dir_all(d).map_err(|e| PluginError::io(d, e))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(|e| PluginError::io(d, e))?;
        }
        for (name, text) in
            [("check.py", CHECK_PY), ("meter.py", METER_PY), ("onnx_export.py", ONNX_PY), ("zygote.py", ZYGOTE_PY)]
        {
            let p = dirs.bin.join(name);
            write_readable(&p, text.as_bytes())?;
        }
        Ok(dirs)
    }
}

/// Removes instance directories below `parent` whose owner is gone (its
/// lock is free; directories of older layouts: the process in the name is
/// gone).
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        let path = e.path();
        let stale = match std::fs::File::open(path.join(SCRATCH_LOCK)) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => rest
                .split('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// What the check said when it passed (untrusted: only a gate).
struct CheckPass {
    contract: String,
    export: String,
    /// The network's fingerprint ([`nas_plugin_api::NETWORK_KEY`]): 32 hex
    /// digits, when the check could take it.
    network: Option<String>,
}

/// A short printable text from an untrusted answer.
fn untrusted_text(v: &Value, max: usize) -> String {
    v.as_str().unwrap_or_default().chars().filter(|c| !c.is_control() || *c == '\n').take(max).collect()
}

impl TchOneEpoch {
    /// A configured evaluator; checks that Python imports torch and that the
    /// worker binary exists, and probes what the sandbox can enforce here.
    pub fn new(config: &Value, ctx: &HostContext) -> Result<TchOneEpoch, PluginError> {
        let mut settings: Settings = PluginError::parse_config(PLUGIN_ID, config)?;
        settings.validate()?;
        settings.python = settings.python.take().map(|p| ctx.resolve(p));
        settings.worker_path = settings.worker_path.take().map(|p| ctx.resolve(p));
        settings.extra_read_paths = settings.extra_read_paths.iter().map(|p| ctx.resolve(p.clone())).collect();
        let python = find_python(settings.python.as_deref())?;
        let worker_path = find_worker(settings.worker_path.as_deref())?;
        let torch = discover::check_torch(&python)?;
        check_device(&settings.device, torch.cuda.len())?;
        let python = std::path::absolute(&python).unwrap_or(python);
        let worker_path = worker_path.canonicalize().unwrap_or(worker_path);
        // This instance's own directory (below the host's scratch when given), removed on drop.
        let dirs = match &ctx.scratch_dir {
            Some(d) => Scratch::create(d, "eval-tch-")?,
            None => Scratch::create(&std::env::temp_dir(), "nas-eval-tch-")?,
        };
        let threads = settings
            .cpu_threads
            .or(ctx.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1);
        let mut read_paths = discover::system_read_paths();
        read_paths.extend(discover::python_roots(&python));
        read_paths.extend(discover::library_roots());
        read_paths.extend(settings.extra_read_paths.iter().cloned());
        let worker_libs = discover::library_dirs_of(&worker_path);
        let mut hide = vec![PathBuf::from(discover::SYSTEM_DATASETS)];
        hide.extend(ctx.data_dir.iter().cloned());
        let caps = sandbox::Capabilities::probe_with(&dirs.root, &read_paths, &python, &["-I", "-c", ""]);
        eprintln!("[{PLUGIN_ID}] {}", caps.describe());
        // `checks/` itself stays the host's: only each candidate's directory
        // in it is made writable for the sandbox.
        for d in [&dirs.worker, &dirs.meter] {
            caps.make_writable(d).map_err(|e| PluginError::io(d, e))?;
        }
        let warm_off = if !settings.warm_checker {
            Some("off (`warm_checker = false`)".to_string())
        } else if !caps.full_isolation() {
            Some("not used: the sandbox has no PID namespace of its own here".to_string())
        } else if caps.landlock_abi.is_none() {
            Some("not used: no Landlock here (a child could not be confined to its own directory)".to_string())
        } else {
            None
        };
        eprintln!(
            "[{PLUGIN_ID}] warm checker: {}",
            warm_off.as_deref().unwrap_or(
                "on (each candidate is checked in a fresh fork of a sandboxed Python that imported torch once, \
                 confined by a stacked Landlock ruleset to its own directory; all it started is killed when it ends)"
            )
        );
        Ok(TchOneEpoch {
            settings,
            python,
            worker_path,
            torch,
            caps,
            dirs,
            read_paths,
            worker_libs,
            hide,
            threads,
            worker: None,
            worker_restarts: 0,
            held_out: None,
            meter: None,
            meter_failed: false,
            models: 0,
            zygote: None,
            warm_off,
            warm_failures: 0,
            zygotes: 0,
            last_check: None,
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

    /// The policy of a sandboxed process: the toolchain and `read_extra` to
    /// read, `write` to write, datasets (and `hide_extra`) hidden.
    fn policy(
        &self,
        read_extra: &[PathBuf],
        write: &[PathBuf],
        hide_extra: &[PathBuf],
        cpu_time_s: Option<u64>,
        gpu: bool,
    ) -> sandbox::Policy {
        let mut read = self.read_paths.clone();
        read.extend(read_extra.iter().cloned());
        let mut write = write.to_vec();
        // GPU device files must be opened read-write.
        if gpu {
            if let Ok(entries) = std::fs::read_dir("/dev") {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("nvidia") {
                        write.push(e.path());
                    }
                }
            }
        }
        write.push(PathBuf::from("/dev/null"));
        let mut hide = self.hide.clone();
        hide.extend(hide_extra.iter().cloned());
        sandbox::Policy {
            read,
            write,
            hide,
            memory_limit_bytes: Some(self.settings.memory_limit_mb * 1024 * 1024),
            cpu_time_s,
            max_processes: self.settings.max_processes,
            max_file_bytes: 4 << 30,
            gpu,
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
        let cand_dir = self.dirs.checks.join(format!("cand-{}", sanitize(&request.candidate_id)));
        let _ = std::fs::remove_dir_all(&cand_dir);
        std::fs::create_dir_all(&cand_dir).map_err(|e| PluginError::io(&cand_dir, e))?;
        self.caps.make_writable(&cand_dir).map_err(|e| PluginError::io(&cand_dir, e))?;
        self.models += 1;
        let model = self.dirs.inbox.join(format!("model-{}.pt", self.models));
        let mut job = Job {
            request,
            code: &code,
            dataset_dir: &dataset_dir,
            manifest: &manifest,
            cand_dir: &cand_dir,
            model: &model,
            deadline,
            seed,
        };
        let result = self.check_and_train(&mut job);
        if !self.settings.keep_scratch {
            let _ = std::fs::remove_dir_all(&cand_dir);
        }
        let _ = std::fs::remove_file(&model);
        let mut outcome = result?;
        if let EvalOutcome::Ok(report) = &mut outcome {
            report.total_seconds = Some(started.elapsed().as_secs_f64());
        }
        Ok(outcome)
    }

    /// The steps of one evaluation after extraction: check (a gate), take
    /// the exported model, train and test it, measure it, score it.
    fn check_and_train(&mut self, job: &mut Job<'_>) -> Result<EvalOutcome, PluginError> {
        self.ensure_meter();
        self.last_check = None;
        let pass = match self.check(job)? {
            Ok(pass) => pass,
            Err(failure) => return Ok(failure),
        };
        if let Err(failure) = take_model(&job.cand_dir.join("model.pt"), job.model)? {
            return Ok(failure);
        }
        // A network the search has trained already is not trained again.
        if let Some(network) = pass.network.as_ref().filter(|n| job.request.known_networks.contains(n)) {
            return Ok(failed(
                "network",
                FailureKind::Duplicate,
                format!(
                    "the same network as one already trained in this search (network {network}: the same layers, \
                     initialised the same, giving the same outputs), so it was not trained again"
                ),
            ));
        }
        // A budget is checked on the exported module before the epoch is
        // spent; without one the meter runs beside the training.
        let budget = job.request.budget;
        let mut metered = None;
        if !budget.is_empty() {
            let m = self.meter_send(job.model, job.manifest).and_then(|id| self.meter_receive(&id, job.deadline));
            let broken = m.map(|m| budget.broken_by(m.params, m.flops)).unwrap_or_default();
            if !broken.is_empty() {
                return Ok(failed(
                    nas_plugin_api::BUDGET_STAGE,
                    FailureKind::Constraint,
                    format!("it breaks the search's limits, so it was not trained: {}", broken.join("; ")),
                ));
            }
            metered = Some(m);
        }
        self.ensure_worker(job.dataset_dir, job.manifest)?;
        let pending = if metered.is_none() { self.meter_send(job.model, job.manifest) } else { None };
        let trained = self.train(job)?;
        let flops = match metered {
            Some(m) => m.and_then(|m| m.flops),
            None => pending.and_then(|id| self.meter_receive(&id, job.deadline)).and_then(|m| m.flops),
        };
        let (report, order) = match trained {
            Ok(v) => v,
            Err(failure) => return Ok(failure),
        };
        let mut outcome = self.score(job, &pass, &report, &order, flops)?;
        if let (EvalOutcome::Ok(r), Some(network)) = (&mut outcome, &pass.network) {
            r.extra.insert(nas_plugin_api::NETWORK_KEY.into(), json!(network));
        }
        if let (EvalOutcome::Ok(r), Some((path, secs))) = (&mut outcome, self.last_check) {
            r.extra.insert("check".into(), json!(path));
            r.extra.insert("check_seconds".into(), json!((secs * 1000.0).round() / 1000.0));
        }
        if let (EvalOutcome::Ok(r), Some(dest)) = (&mut outcome, &job.request.save_model) {
            let onnx = dest.with_extension("onnx");
            let _ = std::fs::remove_file(&onnx);
            match self.export_onnx(job, dest, &onnx) {
                Ok(facts) => {
                    r.extra.insert("onnx".into(), facts);
                }
                Err(e) => {
                    eprintln!("[{PLUGIN_ID}] the ONNX export of {} failed: {e}", job.request.candidate_id);
                    r.extra.insert("onnx_error".into(), json!(e));
                }
            }
        }
        Ok(outcome)
    }

    /// Exports the trained TorchScript module at `trained` to ONNX at
    /// `dest` in a sandboxed Python (`python/onnx_export.py`: torch.onnx,
    /// then onnx.checker and onnxruntime against the module's outputs);
    /// answers what the check found, or why there is no ONNX file. Never a
    /// candidate failure: the candidate trained and scored.
    fn export_onnx(&mut self, job: &Job<'_>, trained: &Path, dest: &Path) -> Result<Value, String> {
        let dir = job.cand_dir.join("onnx");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.caps.make_writable(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let model = dir.join("model.pt");
        std::fs::copy(trained, &model).map_err(|e| format!("copying {}: {e}", trained.display()))?;
        let _ = std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o644));
        let out = dir.join("model.onnx");
        let req_path = dir.join("request.json");
        let req = json!({
            "model_path": model, "onnx_path": out, "in_shape": job.manifest.input_shape, "threads": self.threads.min(4),
        });
        write_readable(&req_path, req.to_string().as_bytes()).map_err(|e| e.to_string())?;
        // Its own time: the export of a trained model is not the candidate's evaluation.
        let deadline = Instant::now() + Duration::from_secs(300);
        let policy = self.policy(
            std::slice::from_ref(&self.dirs.bin),
            std::slice::from_ref(&dir),
            &[job.dataset_dir.to_path_buf()],
            Some(300 * self.threads.min(4) as u64),
            false,
        );
        let io = |e: std::io::Error| format!("starting the sandboxed ONNX export: {e}");
        let (log_r, log_w) = sandbox::pipe().map_err(io)?;
        let (ans_r, ans_w) = sandbox::pipe().map_err(io)?;
        let null: OwnedFd = std::fs::File::open("/dev/null").map_err(io)?.into();
        let log_w2 = log_w.try_clone().map_err(io)?;
        let launch = sandbox::Launch {
            program: self.python.clone(),
            args: vec!["-I".into(), self.dirs.bin.join("onnx_export.py").into(), req_path.into()],
            env: self.child_env(&dir, self.threads.min(4)),
            cwd: dir.clone(),
            fds: vec![null, log_w, log_w2, ans_w],
        };
        let mut child = sandbox::spawn(launch, &policy, &self.caps).map_err(io)?;
        let log = output::Tail::spawn(log_r, CHECK_LOG_TAIL);
        let answer = output::Tail::spawn(ans_r, CHECK_ANSWER_MAX);
        let finished = loop {
            match child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() >= deadline => break false,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for the ONNX export: {e}")),
            }
        };
        child.kill_all();
        let _ = child.wait();
        drop(child);
        answer.wait_closed(Duration::from_millis(500));
        log.wait_closed(Duration::from_millis(500));
        if !finished {
            return Err("the ONNX export ran past 300 s".into());
        }
        let bytes = answer.bytes();
        let Some(facts) = bytes
            .split(|&b| b == b'\n')
            .rev()
            .find_map(|l| serde_json::from_slice::<Value>(l).ok().filter(Value::is_object))
        else {
            return Err(format!("the ONNX export ended without an answer: {}", log.text(1500)));
        };
        if facts["ok"] != json!(true) {
            return Err(untrusted_text(&facts["error"], 2000));
        }
        match take_model(&out, dest).map_err(|e| e.to_string())? {
            Ok(()) => {}
            Err(_) => return Err("the ONNX export wrote no regular model.onnx".into()),
        }
        Ok(json!({
            "file": dest,
            "opset": facts["opset"],
            "checked_with": untrusted_text(&facts["checked_with"], 32),
            "max_abs_diff": facts["max_abs_diff"],
        }))
    }

    /// Checks the candidate (warm when the warm checker serves, else cold):
    /// `Ok(pass)` when the check says the code passed (untrusted), `Err(failure)` otherwise.
    fn check(&mut self, job: &mut Job<'_>) -> Result<Result<CheckPass, EvalOutcome>, PluginError> {
        let (request, cand_dir) = (job.request, job.cand_dir);
        let code_path = cand_dir.join("candidate.py");
        write_readable(&code_path, job.code.as_bytes())?;
        let req_path = cand_dir.join("request.json");
        let check_req = json!({
            "code_path": code_path, "model_path": cand_dir.join("model.pt"),
            "in_shape": job.manifest.input_shape, "num_classes": job.manifest.num_classes, "seed": job.seed,
            "lr": self.settings.lr, "momentum": self.settings.momentum, "batch_size": self.settings.batch_size,
            "threads": self.threads.min(4),
        });
        write_readable(&req_path, check_req.to_string().as_bytes())?;
        let started = Instant::now();
        if self.warm_off.is_none() {
            match self.check_warm(job, &req_path) {
                Ok(verdict) => {
                    self.warm_failures = 0;
                    self.last_check = Some(("warm", started.elapsed().as_secs_f64()));
                    return Ok(verdict);
                }
                Err(why) => {
                    // Not the candidate's failure: it is checked cold, and
                    // the time the warm attempt took is not charged to it.
                    job.deadline += started.elapsed();
                    self.warm_failed(&request.candidate_id, &why);
                }
            }
        }
        let cold_started = Instant::now();
        let verdict = self.check_cold(job, &req_path)?;
        self.last_check = Some(("cold", cold_started.elapsed().as_secs_f64()));
        Ok(verdict)
    }

    /// CPU seconds of a check: the time left on every thread the checker may use.
    fn check_cpu_s(&self, deadline: Instant) -> u64 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        (remaining.as_secs() + 2) * self.threads.min(4) as u64
    }

    /// Starts the zygote unless one serves for this dataset and device.
    fn ensure_zygote(&mut self, job: &Job<'_>) -> Result<(), String> {
        let gpu = self.settings.device != "cpu";
        let key = json!({"dataset": job.dataset_dir, "gpu": gpu});
        if let Some(z) = &mut self.zygote {
            if z.key == key && z.alive() {
                return Ok(());
            }
            if let Some(z) = self.zygote.take() {
                z.shutdown();
            }
        }
        let bin = std::slice::from_ref(&self.dirs.bin);
        let hide = [job.dataset_dir.to_path_buf()];
        // The zygote may write the directory of all candidates' directories;
        // each child keeps only the cold checker's rights: the same read
        // rules, and its own directory (added by the child) to write.
        let policy = self.policy(bin, std::slice::from_ref(&self.dirs.checks), &hide, None, gpu);
        let child = self.policy(bin, &[], &hide, None, gpu);
        let read = sandbox::expand_excluding(&child.read, &child.hide);
        self.zygotes += 1;
        let config_path = self.dirs.bin.join(format!("zygote-{}.json", self.zygotes));
        let config = json!({"landlock_abi": self.caps.landlock_abi, "read": read, "write": child.write});
        write_readable(&config_path, config.to_string().as_bytes()).map_err(|e| e.to_string())?;
        let mut z = warm::Zygote::start(
            self.python.clone(),
            vec!["-I".into(), self.dirs.bin.join("zygote.py").into(), config_path.into()],
            self.child_env(&self.dirs.checks, self.threads.min(4)),
            self.dirs.checks.clone(),
            &policy,
            &self.caps,
            key,
        )
        .map_err(|e| format!("starting it: {e}"))?;
        if let Err(e) = z.wait_ready(Duration::from_secs(120)) {
            z.shutdown();
            return Err(format!("starting it: {e}"));
        }
        self.zygote = Some(z);
        Ok(())
    }

    /// Notes a failure of the warm checker (not the candidate's): the zygote
    /// goes; after three in a row the evaluator stays with the cold checker.
    fn warm_failed(&mut self, candidate: &str, why: &str) {
        let served = self.zygote.as_ref().map_or(0, |z| z.served);
        if let Some(z) = self.zygote.take() {
            z.shutdown();
        }
        self.warm_failures += 1;
        eprintln!(
            "[{PLUGIN_ID}] the warm checker failed while checking {candidate} ({why}; it had answered {served} \
             check(s)); checking it cold"
        );
        if self.warm_failures >= 3 {
            eprintln!("[{PLUGIN_ID}] the warm checker failed three times in a row: the cold checker from now on");
            self.warm_off = Some(format!("off after three failures in a row (the last: {why})"));
        }
    }

    /// The check in a fresh child of the zygote; `Err` when the zygote gave
    /// no verdict (never the candidate's failure).
    fn check_warm(&mut self, job: &Job<'_>, req_path: &Path) -> Result<Result<CheckPass, EvalOutcome>, String> {
        self.ensure_zygote(job)?;
        let cpu_s = self.check_cpu_s(job.deadline);
        let io = |e: std::io::Error| format!("making the check's pipes: {e}");
        let (log_r, log_w) = sandbox::pipe().map_err(io)?;
        let (ans_r, ans_w) = sandbox::pipe().map_err(io)?;
        let log = output::Tail::spawn(log_r, CHECK_LOG_TAIL);
        let answer = output::Tail::spawn(ans_r, CHECK_ANSWER_MAX);
        let remaining = job.deadline.saturating_duration_since(Instant::now());
        let home = job.cand_dir.display().to_string();
        let req = json!({
            "dir": job.cand_dir,
            "argv": [self.dirs.bin.join("check.py"), req_path],
            "env": {"HOME": home, "TMPDIR": home},
            "cpu_s": cpu_s,
            "timeout_s": remaining.as_secs_f64(),
        });
        let z = self.zygote.as_mut().expect("ensure_zygote started it");
        // The zygote kills the child at the time limit; a little more for it to say so.
        let ended = match z.check(&req, log_w, ans_w, job.deadline + Duration::from_secs(5)) {
            Ok(ended) => ended,
            Err(e) => return Err(format!("{e}; {}", z.output_tail().trim())),
        };
        answer.wait_closed(Duration::from_millis(500));
        log.wait_closed(Duration::from_millis(500));
        Ok(self.verdict(job, ended.status, ended.oom, ended.cpu, cpu_s, &answer, &log))
    }

    /// The cold check: a fresh `python -I check.py request.json` in the sandbox.
    fn check_cold(&mut self, job: &Job<'_>, req_path: &Path) -> Result<Result<CheckPass, EvalOutcome>, PluginError> {
        let cand_dir = job.cand_dir;
        let cpu_s = self.check_cpu_s(job.deadline);
        let policy = self.policy(
            std::slice::from_ref(&self.dirs.bin),
            &[cand_dir.to_path_buf()],
            &[job.dataset_dir.to_path_buf()],
            Some(cpu_s),
            self.settings.device != "cpu",
        );
        let started = |e: std::io::Error| {
            PluginError::internal(format!("starting the sandboxed checker {}: {e}", self.python.display()))
        };
        let (log_r, log_w) = sandbox::pipe().map_err(started)?;
        let (ans_r, ans_w) = sandbox::pipe().map_err(started)?;
        let null: OwnedFd = std::fs::File::open("/dev/null").map_err(started)?.into();
        let log_w2 = log_w.try_clone().map_err(started)?;
        let launch = sandbox::Launch {
            program: self.python.clone(),
            args: vec!["-I".into(), self.dirs.bin.join("check.py").into(), req_path.into()],
            env: self.child_env(cand_dir, self.threads.min(4)),
            cwd: cand_dir.to_path_buf(),
            fds: vec![null, log_w, log_w2, ans_w],
        };
        let mut child = sandbox::spawn(launch, &policy, &self.caps).map_err(started)?;
        let log = output::Tail::spawn(log_r, CHECK_LOG_TAIL);
        let answer = output::Tail::spawn(ans_r, CHECK_ANSWER_MAX);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= job.deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(PluginError::internal(format!("waiting for the checker: {e}"))),
            }
        };
        let oom = child.oom_killed();
        child.kill_all();
        let _ = child.wait();
        let cpu = child.cpu_time();
        drop(child);
        answer.wait_closed(Duration::from_millis(500));
        log.wait_closed(Duration::from_millis(500));
        Ok(self.verdict(job, status, oom, cpu, cpu_s, &answer, &log))
    }

    /// The verdict of a check that ended with `status` (`None`: past the
    /// time limit), from what it wrote on its answer channel (a gate) and
    /// its output.
    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    fn verdict(
        &self,
        job: &Job<'_>,
        status: Option<std::process::ExitStatus>,
        oom: bool,
        cpu: Duration,
        cpu_s: u64,
        answer: &output::Tail,
        log: &output::Tail,
    ) -> Result<CheckPass, EvalOutcome> {
        let log_tail = log.text(3000);
        let Some(status) = status else {
            return Err(failed_tb(
                "check",
                FailureKind::Timeout,
                format!(
                    "checking and exporting ran past the time limit of {:.0} s",
                    secs_left(job.request, &self.settings)
                ),
                log_tail,
            ));
        };
        // The last JSON object written on the answer channel.
        let bytes = answer.bytes();
        let check: Option<Value> = bytes
            .split(|&b| b == b'\n')
            .rev()
            .find_map(|l| serde_json::from_slice::<Value>(l).ok().filter(Value::is_object));
        let Some(check) = check else {
            use std::os::unix::process::ExitStatusExt;
            let cpu_limit = Duration::from_secs(cpu_s);
            let (kind, msg) = match status.signal() {
                _ if oom => (
                    FailureKind::OutOfMemory,
                    "the code ran out of memory (killed by the sandbox's memory limit)".to_string(),
                ),
                Some(libc::SIGXCPU) => (FailureKind::Timeout, "the code ran past its CPU time limit".to_string()),
                Some(libc::SIGKILL) if cpu + Duration::from_secs(2) >= cpu_limit => {
                    (FailureKind::Timeout, "the code ran past its CPU time limit".to_string())
                }
                Some(libc::SIGKILL) if Instant::now() + Duration::from_millis(500) >= job.deadline => {
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
            return Err(failed_tb("check", kind, msg, log_tail));
        };
        if check["ok"] != json!(true) {
            let kind: FailureKind = serde_json::from_value(check["kind"].clone()).unwrap_or(FailureKind::Runtime);
            let stage = match check["stage"].as_str() {
                Some("export") => "export",
                _ => "check",
            };
            let message = untrusted_text(&check["message"], 2000);
            let mut f = CandidateFailure::new(
                stage,
                kind,
                if message.is_empty() { "the check failed".into() } else { message },
            );
            f.exception = check["exception"].as_str().map(|_| untrusted_text(&check["exception"], 100));
            f.traceback = untrusted_text(&check["traceback"], 4000);
            return Err(EvalOutcome::Failed(f));
        }
        let network = check["network"]
            .as_str()
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        Ok(CheckPass {
            contract: untrusted_text(&check["contract"], 64),
            export: untrusted_text(&check["export"], 16),
            network,
        })
    }

    /// Trains and tests the model in the worker: its report and the test
    /// order it was asked for, or the candidate's failure.
    #[allow(clippy::type_complexity)]
    fn train(&mut self, job: &Job<'_>) -> Result<Result<(Value, Vec<usize>), EvalOutcome>, PluginError> {
        let request = job.request;
        let augment = match self.settings.augment {
            Augment::None => false,
            Augment::CropFlip => true,
            Augment::Auto => job.manifest.input_shape == [3, 32, 32],
        };
        // The worker writes only below its own directory; the trained
        // module is copied out from there.
        let trained_path = request
            .save_model
            .as_ref()
            .map(|_| self.dirs.worker.join(format!("trained-{}.pt", sanitize(&request.candidate_id))));
        if let Some(p) = &trained_path {
            let _ = std::fs::remove_file(p);
        }
        let order = self.held_out.as_ref().map(HeldOut::order).unwrap_or_default();
        let mut train = json!({
            "op": "train", "model": job.model, "lr": self.settings.lr, "momentum": self.settings.momentum,
            "weight_decay": self.settings.weight_decay, "batch_size": self.settings.batch_size, "seed": job.seed,
            "epochs": self.settings.epochs, "augment": augment, "num_classes": job.manifest.num_classes,
            "save_to": trained_path, "test_order": order,
            "bf16": self.settings.bf16, "channels_last": self.settings.channels_last,
        });
        let remaining = job.deadline.saturating_duration_since(Instant::now());
        if self.settings.stop_early {
            train["seconds_left"] = json!(remaining.as_secs_f64());
        }
        let worker = self.worker.as_mut().expect("ensure_worker started it");
        let answer = match worker.request(&train, remaining) {
            Ok(a) => a,
            Err(e) => {
                let oom = worker.oom_killed();
                let output = worker.output_tail();
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
                return Ok(Err(failed_tb("train", kind, msg, output)));
            }
        };
        if answer["ok"] == json!(true) {
            if let (Some(dest), Some(trained)) = (&request.save_model, &trained_path) {
                deliver_trained(&answer["report"], trained, dest)?;
            }
            return Ok(Ok((answer["report"].clone(), order)));
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
            return Ok(Err(EvalOutcome::Failed(fail)));
        }
        Err(PluginError::internal(format!("the training worker answered an error: {}", answer["error"])))
    }

    /// The report: accuracy scored here against the held-out labels,
    /// parameters as the trainer counted them, FLOPs as the meter measured them.
    fn score(
        &mut self,
        job: &Job<'_>,
        pass: &CheckPass,
        r: &Value,
        order: &[usize],
        flops: Option<u64>,
    ) -> Result<EvalOutcome, PluginError> {
        let predictions: Vec<i64> = r["predictions"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_i64().unwrap_or(-1)).collect())
            .unwrap_or_default();
        let accuracy = self.held_out.as_ref().and_then(|h| h.accuracy(order, &predictions));
        let Some(accuracy) = accuracy else {
            self.kill_worker();
            return Ok(failed(
                "test",
                FailureKind::Runtime,
                format!(
                    "the training worker answered {} predictions for {} test examples",
                    predictions.len(),
                    order.len()
                ),
            ));
        };
        let mut extra = std::collections::BTreeMap::new();
        for key in [
            "test_seconds",
            "steps",
            "train_examples",
            "test_examples",
            "worker_seconds",
            "peak_memory_kind",
            "latency_batch_size",
            "latency_error",
            "bf16",
            "channels_last",
            "output_dtype",
            "deterministic",
            "nondeterministic_ops",
        ] {
            if !r[key].is_null() {
                extra.insert(key.to_string(), r[key].clone());
            }
        }
        extra.insert("contract".into(), json!(pass.contract));
        extra.insert("export".into(), json!(pass.export));
        extra.insert(
            nas_plugin_api::MACHINE_KEY.into(),
            json!(self.torch.machine(r["device"].as_str().unwrap_or("cpu"))),
        );
        Ok(EvalOutcome::Ok(EvalReport {
            accuracy,
            train_loss: r["train_loss"].as_f64(),
            params: r["params"].as_u64(),
            flops,
            epoch_seconds: r["epoch_seconds"].as_f64(),
            images_per_second: r["images_per_second"].as_f64(),
            peak_memory_bytes: r["peak_memory_bytes"].as_u64(),
            latency_ms: r["latency_ms"].as_f64(),
            batch_latency_ms: r["batch_latency_ms"].as_f64(),
            device_seconds: r["device_seconds"].as_f64(),
            seed: Some(job.seed),
            device: r["device"].as_str().unwrap_or("cpu").to_string(),
            total_seconds: None,
            extra,
        }))
    }

    fn child_env(&self, home: &Path, threads: usize) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("HOME".to_string(), home.display().to_string()),
            ("TMPDIR".to_string(), home.display().to_string()),
            ("OMP_NUM_THREADS".to_string(), threads.to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
            ("PYTHONNOUSERSITE".to_string(), "1".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        if let Some(policy) = omp_wait_policy(self.settings.omp_wait_policy, || discover::machine_busy(threads)) {
            env.push(("OMP_WAIT_POLICY".to_string(), policy.to_string()));
        }
        for key in ["LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"] {
            if let Ok(v) = std::env::var(key) {
                env.push((key.to_string(), v));
            }
        }
        env
    }

    /// Starts the worker with `dataset_dir`'s training split and the
    /// held-out test images, unless it already holds them.
    fn ensure_worker(&mut self, dataset_dir: &Path, manifest: &DatasetManifest) -> Result<(), PluginError> {
        let key = json!({
            "dir": dataset_dir, "device": self.settings.device, "max_train_examples": self.settings.max_train_examples,
            "max_test_examples": self.settings.max_test_examples, "cpu_threads": self.threads,
        });
        if let Some(w) = &mut self.worker {
            if w.loaded.as_ref() == Some(&key) && w.alive() {
                return Ok(());
            }
            let died = !w.alive();
            if let Some(w) = self.worker.take() {
                w.shutdown();
            }
            if died {
                self.worker_restarts += 1;
            }
        }
        let split = |name: &str| -> Result<PathBuf, PluginError> {
            let p = manifest.split_path(dataset_dir, name).ok_or_else(|| {
                PluginError::new(
                    nas_plugin_api::ErrorCode::Corrupt,
                    format!("{}: no `{name}` split", dataset_dir.display()),
                )
            })?;
            p.canonicalize().map_err(|e| PluginError::io(&p, e))
        };
        let (train_file, test_file) = (split("train")?, split("test")?);
        if train_file == test_file {
            return Err(PluginError::new(
                nas_plugin_api::ErrorCode::Corrupt,
                format!(
                    "{}: the train and test splits are one file; the test labels cannot be held out",
                    dataset_dir.display()
                ),
            ));
        }
        self.held_out = None;
        let images = self.dirs.inbox.join("test-images.safetensors");
        let held = HeldOut::prepare(&test_file, self.settings.max_test_examples, &images)?;

        let mut env = self.child_env(&self.dirs.worker, self.threads);
        env.retain(|(k, _)| !k.starts_with("PYTHON"));
        if self.settings.deterministic {
            // cuBLAS reads its workspace configuration when the worker
            // creates its first handle: a fixed one makes its reductions
            // repeatable (torch's deterministic mode asks for it).
            env.push(("CUBLAS_WORKSPACE_CONFIG".to_string(), ":4096:8".to_string()));
        }
        // The worker sees no dataset path: the training split and the test
        // images come as open descriptors (4 and 5).
        let open = |p: &Path| -> Result<OwnedFd, PluginError> {
            std::fs::File::open(p).map(OwnedFd::from).map_err(|e| PluginError::io(p, e))
        };
        let fds = vec![open(&train_file)?, open(&held.images_path)?];
        let mut worker_read = vec![self.worker_path.clone(), self.dirs.inbox.clone()];
        worker_read.extend(self.worker_libs.iter().cloned());
        let policy = self.policy(
            &worker_read,
            std::slice::from_ref(&self.dirs.worker),
            &[dataset_dir.to_path_buf()],
            None,
            self.settings.device != "cpu",
        );
        let mut w = worker::Server::start(
            self.worker_path.clone(),
            vec!["--answer-fd".into(), "3".into()],
            env,
            self.dirs.worker.clone(),
            fds,
            &policy,
            &self.caps,
        )
        .map_err(|e| {
            PluginError::internal(format!("starting the training worker {}: {e}", self.worker_path.display()))
        })?;
        let load = json!({
            "op": "load", "train": {"fd": 4}, "test_images": {"fd": 5}, "device": self.settings.device,
            "max_train_examples": self.settings.max_train_examples,
            "mean": manifest.mean, "std": manifest.std, "cpu_threads": self.threads, "jit_profiling": self.settings.jit_profiling,
            "jit_optimize": self.settings.jit_optimize, "cudnn_benchmark": self.settings.cudnn_benchmark,
            "deterministic": self.settings.deterministic,
        });
        let answer = match w.request(&load, Duration::from_secs(600)) {
            Ok(a) => a,
            Err(e) => {
                let tail = w.output_tail();
                w.shutdown();
                return Err(PluginError::internal(format!(
                    "the training worker failed to load the dataset {}: {e}\n{tail}",
                    dataset_dir.display()
                )));
            }
        };
        if answer["ok"] != json!(true) {
            w.shutdown();
            return Err(PluginError::new(
                nas_plugin_api::ErrorCode::Corrupt,
                format!("the training worker could not load {}: {}", dataset_dir.display(), answer["error"]),
            ));
        }
        if answer["test_examples"].as_u64() != Some(held.len() as u64) {
            w.shutdown();
            return Err(PluginError::internal(format!(
                "the training worker loaded {} test images, {} were written",
                answer["test_examples"],
                held.len()
            )));
        }
        w.loaded = Some(key);
        self.worker = Some(w);
        self.held_out = Some(held);
        Ok(())
    }

    /// Starts the FLOP meter (once, and again after it failed), without
    /// waiting for it: it imports torch while the check runs.
    fn ensure_meter(&mut self) {
        if let Some(m) = &mut self.meter {
            if m.alive() {
                return;
            }
            if let Some(m) = self.meter.take() {
                m.shutdown();
            }
        }
        if self.meter_failed {
            return;
        }
        let policy = self.policy(
            &[self.dirs.bin.clone(), self.dirs.inbox.clone()],
            std::slice::from_ref(&self.dirs.meter),
            &[],
            None,
            false,
        );
        match worker::Server::start(
            self.python.clone(),
            vec!["-I".into(), self.dirs.bin.join("meter.py").into()],
            self.child_env(&self.dirs.meter, 1),
            self.dirs.meter.clone(),
            Vec::new(),
            &policy,
            &self.caps,
        ) {
            Ok(m) => self.meter = Some(m),
            Err(e) => {
                eprintln!("[{PLUGIN_ID}] the FLOP meter did not start ({e}); FLOPs are not reported");
                self.meter_failed = true;
            }
        }
    }

    /// Asks the meter for the FLOPs of `model`; the request id.
    fn meter_send(&mut self, model: &Path, manifest: &DatasetManifest) -> Option<String> {
        let m = self.meter.as_mut()?;
        let req = json!({"op": "flops", "model": model, "in_shape": manifest.input_shape});
        match m.send(&req, Duration::from_secs(10)) {
            Ok(id) => Some(id),
            Err(_) => {
                if let Some(m) = self.meter.take() {
                    m.shutdown();
                }
                None
            }
        }
    }

    /// The meter's answer to `id`: the deadline's time left, 30 s at least
    /// (it imports torch on its first request).
    fn meter_receive(&mut self, id: &str, deadline: Instant) -> Option<Metered> {
        let m = self.meter.as_mut()?;
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(30));
        match m.receive(id, wait) {
            Ok(a) => Some(Metered { flops: a["flops"].as_u64(), params: a["params"].as_u64() }),
            Err(_) => {
                if let Some(m) = self.meter.take() {
                    m.shutdown();
                }
                None
            }
        }
    }

    fn kill_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown();
            self.worker_restarts += 1;
        }
    }
}

/// What the meter measured of an exported module.
#[derive(Debug, Clone, Copy)]
struct Metered {
    /// Forward FLOPs of one example in eval mode.
    flops: Option<u64>,
    /// Trainable parameters.
    params: Option<u64>,
}

/// One evaluation's inputs.
struct Job<'a> {
    request: &'a EvalRequest,
    code: &'a str,
    dataset_dir: &'a Path,
    manifest: &'a DatasetManifest,
    cand_dir: &'a Path,
    /// Where the exported model is handed to the worker and the meter.
    model: &'a Path,
    deadline: Instant,
    seed: u64,
}

/// The largest exported model accepted.
const MAX_MODEL_BYTES: u64 = 4 << 30;
/// How much of the checker's output is kept for its failure record.
const CHECK_LOG_TAIL: usize = 16 << 10;
/// How much of the checker's answer channel is kept.
const CHECK_ANSWER_MAX: usize = 1 << 20;

/// Copies the model the checker wrote (`exported`, in the candidate's
/// scratch) to `dest`, reading it as a regular file only (never through a
/// symbolic link the candidate left there).
fn take_model(exported: &Path, dest: &Path) -> Result<Result<(), EvalOutcome>, PluginError> {
    let src = match std::fs::File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(exported)
    {
        Ok(f) => f,
        Err(_) => {
            return Ok(Err(failed(
                "export",
                FailureKind::Export,
                "the check passed but no exported model was written (model.pt is missing or not a regular file)",
            )))
        }
    };
    let meta = src.metadata().map_err(|e| PluginError::io(exported, e))?;
    if !meta.is_file() || meta.len() > MAX_MODEL_BYTES {
        return Ok(Err(failed(
            "export",
            FailureKind::Export,
            format!("the exported model is not a regular file of at most {} GiB", MAX_MODEL_BYTES >> 30),
        )));
    }
    let _ = std::fs::remove_file(dest);
    let mut out = std::fs::File::create(dest).map_err(|e| PluginError::io(dest, e))?;
    out.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| PluginError::io(dest, e))?;
    std::io::copy(&mut std::io::Read::take(src, MAX_MODEL_BYTES), &mut out).map_err(|e| PluginError::io(dest, e))?;
    Ok(Ok(()))
}

/// Writes a file that sandboxed processes may read (mode 0644 whatever the umask).
fn write_readable(path: &Path, data: &[u8]) -> Result<(), PluginError> {
    std::fs::write(path, data).map_err(|e| PluginError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| PluginError::io(path, e))
}

/// Copies the module the worker saved at `trained` to `dest` (never through
/// a symbolic link).
fn deliver_trained(report: &Value, trained: &Path, dest: &Path) -> Result<(), PluginError> {
    if let Some(e) = report["save_error"].as_str() {
        return Err(PluginError::internal(format!("the training worker could not save the trained model: {e}")));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PluginError::io(dir, e))?;
    }
    let mut src = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(trained)
        .map_err(|e| PluginError::io(trained, e))?;
    if !src.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(PluginError::io(trained, "not a regular file"));
    }
    let mut out = std::fs::File::create(dest).map_err(|e| PluginError::io(dest, e))?;
    std::io::copy(&mut src, &mut out)
        .map_err(|e| PluginError::io(dest, format!("copying the trained model from {}: {e}", trained.display())))?;
    let _ = std::fs::remove_file(trained);
    Ok(())
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
        if let Some(m) = self.meter.take() {
            m.shutdown();
        }
        if let Some(z) = self.zygote.take() {
            z.shutdown();
        }
        if !self.settings.keep_scratch {
            let _ = std::fs::remove_dir_all(&self.dirs.root);
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
    fn auto_never_makes_the_worker_spin_wait() {
        // The worker outlives each evaluation and idles while the host's LLM
        // runs: under `auto` its OpenMP team may spin only briefly (libgomp's
        // default, unset) or sleep (PASSIVE), never without end (ACTIVE).
        assert_eq!(omp_wait_policy(OmpWaitPolicy::Auto, || false), None);
        assert_eq!(omp_wait_policy(OmpWaitPolicy::Auto, || true), Some("PASSIVE"));
        assert_eq!(omp_wait_policy(OmpWaitPolicy::Active, || panic!("not asked")), Some("ACTIVE"));
        assert_eq!(omp_wait_policy(OmpWaitPolicy::Passive, || panic!("not asked")), Some("PASSIVE"));
    }

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
    fn a_missing_cuda_device_is_refused_with_a_clear_error() {
        let e = check_device("cuda", 0).expect_err("no CUDA device");
        assert_eq!(e.code, nas_plugin_api::ErrorCode::Unsupported);
        assert!(e.message.contains("device = \"cuda\"") && e.message.contains("0 CUDA device"), "{e}");
        assert!(check_device("cuda:1", 1).is_err(), "device 1 of one");
        check_device("cuda:0", 1).expect("present");
        check_device("auto", 0).expect("auto falls back to the CPU");
        check_device("cpu", 0).expect("cpu");
    }

    #[test]
    fn candidate_ids_become_safe_directory_names() {
        assert_eq!(sanitize("../../etc/x"), "______etc_x");
        assert_eq!(sanitize(""), "candidate");
    }
}
