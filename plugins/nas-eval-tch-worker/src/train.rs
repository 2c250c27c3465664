//! Loading a prepared dataset and training one TorchScript candidate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, TchError, Tensor};

/// `{"op":"load"}`: which data to hold, where.
#[derive(Debug, Deserialize)]
pub struct LoadRequest {
    /// The prepared training split (safetensors `images` and `labels`).
    pub train: Source,
    /// The test images (safetensors `images` only; the labels stay with the evaluator).
    pub test_images: Source,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    #[serde(default = "auto")]
    pub device: String,
    /// Keep at most this many training examples (the first ones).
    #[serde(default)]
    pub max_train_examples: Option<i64>,
    /// Per-channel mean, 0–1 scale.
    pub mean: Vec<f64>,
    /// Per-channel std, 0–1 scale.
    pub std: Vec<f64>,
    /// Intra-op threads (0: libtorch's default).
    #[serde(default)]
    pub cpu_threads: i32,
    /// Whether the TorchScript profiling executor runs (slower first epoch).
    #[serde(default)]
    pub jit_profiling: bool,
    /// Whether the TorchScript graph executor optimises (fusion, symbolic
    /// autodiff) or runs the graph's ops one by one with eager autograd.
    #[serde(default = "yes")]
    pub jit_optimize: bool,
    /// On a GPU: whether cuDNN times its candidate kernels and takes the
    /// fastest (benchmark mode; the choice, and with it the arithmetic, can
    /// differ from run to run) or takes its heuristics' pick.
    #[serde(default = "yes")]
    pub cudnn_benchmark: bool,
    /// Deterministic algorithms (torch's `use_deterministic_algorithms(True,
    /// warn_only=True)` and cuDNN's deterministic mode; on a GPU, cuDNN's
    /// benchmark mode off): the same seed gives the same score where every
    /// operation has a deterministic implementation, and each training
    /// reports the operations that ran without one.
    #[serde(default)]
    pub deterministic: bool,
}

/// Where a file comes from: a path, or a descriptor this process was
/// started with (`{"fd": 4}`: the evaluator opens the files and hands them
/// over, so that the sandboxed worker needs no path to the dataset).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A path to open.
    Path(PathBuf),
    /// An open descriptor, read from its start.
    Fd {
        /// The descriptor number.
        fd: i32,
    },
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Fd { fd } => format!("descriptor {fd}"),
        }
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::Path(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
            Source::Fd { fd } => {
                use std::io::Read;
                use std::os::fd::BorrowedFd;
                // SAFETY: the descriptor was handed to this process for this
                // file; it is borrowed for the duration of the read only.
                let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
                let owned = borrowed.try_clone_to_owned().map_err(|e| format!("descriptor {fd}: {e}"))?;
                let mut f = std::fs::File::from(owned);
                let _ = std::io::Seek::rewind(&mut f);
                let mut out = Vec::new();
                f.read_to_end(&mut out).map_err(|e| format!("descriptor {fd}: {e}"))?;
                Ok(out)
            }
        }
    }
}

fn yes() -> bool {
    true
}

fn auto() -> String {
    "auto".into()
}

/// `{"op":"train"}`: one candidate.
#[derive(Debug, Deserialize)]
pub struct TrainRequest {
    /// The TorchScript file.
    pub model: PathBuf,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub batch_size: i64,
    pub seed: u64,
    pub epochs: u32,
    /// Random crop (pad 4) and horizontal flip.
    pub augment: bool,
    /// Number of classes the output must have.
    pub num_classes: i64,
    /// Where to save the trained module (TorchScript, CPU tensors, eval
    /// mode) after the test; absent: not saved.
    #[serde(default)]
    pub save_to: Option<PathBuf>,
    /// The order to run the test images in (a permutation of their
    /// indices); the predictions come back in this order. Empty: file order.
    #[serde(default)]
    pub test_order: Vec<i64>,
    /// Run forward passes under bfloat16 autocast (training, test, latency).
    #[serde(default)]
    pub bf16: bool,
    /// Hold 4-D weights and input batches in channels-last memory order.
    #[serde(default)]
    pub channels_last: bool,
    /// The seconds this training and its test may take. When the pace of
    /// the first batches projects well past it, the training stops there
    /// (a `timeout` failure that says the projection) instead of running
    /// into the evaluator's time limit. Absent: no projection.
    #[serde(default)]
    pub seconds_left: Option<f64>,
}

/// Batches not timed for a projection (TorchScript optimises the graph on
/// its first runs; cuDNN picks its algorithms).
const PROJECTION_WARMUP_STEPS: i64 = 2;
/// Timed batches and seconds before the pace is trusted.
const PROJECTION_MIN_STEPS: i64 = 3;
const PROJECTION_MIN_SECONDS: f64 = 3.0;
/// How far past the time left a projection must reach to stop the training:
/// a candidate that might still finish is left to try.
const PROJECTION_MARGIN: f64 = 1.5;

/// The seconds the rest of an epoch's training and the test are projected
/// to take at the pace of `timed_steps` batches in `timed_seconds`: each
/// remaining batch at that pace, and the test's forward passes at a third
/// of a training step's cost per example.
fn projected_seconds(timed_seconds: f64, timed_steps: i64, steps_left: i64, batch: i64, test_examples: i64) -> f64 {
    let per_step = timed_seconds / timed_steps.max(1) as f64;
    per_step * steps_left as f64 + per_step / batch.max(1) as f64 * test_examples as f64 / 3.0
}

struct Data {
    device: Device,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    /// `x * scale + shift` turns 0–255 pixels into normalised values.
    scale: Tensor,
    shift: Tensor,
    resident_on_device: bool,
    /// Deterministic algorithms are on: each training records the
    /// operations that have none.
    deterministic: bool,
}

/// The worker's state: the resident dataset.
#[derive(Default)]
pub struct Worker {
    data: Option<Data>,
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::Cuda(n)),
            None => Err(format!("device `{other}` is not one of auto, cpu, cuda, cuda:N")),
        },
    }
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

fn read_split(source: &Source, max: Option<i64>, with_labels: bool) -> Result<(Tensor, Option<Tensor>), String> {
    let bytes = source.read()?;
    let path = Path::new(&source.describe()).to_path_buf();
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", path.display()))?;
    let images = st.tensor("images").map_err(|e| format!("{}: `images`: {e}", path.display()))?;
    if images.dtype() != safetensors::Dtype::U8 || images.shape().len() != 4 {
        return Err(format!(
            "{}: `images` must be uint8 [N,C,H,W], is {:?} {:?}",
            path.display(),
            images.dtype(),
            images.shape()
        ));
    }
    let shape: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
    let n = match max {
        Some(m) if m > 0 && m < shape[0] => m,
        _ => shape[0],
    };
    let x = Tensor::f_from_data_size(images.data(), &shape, Kind::Uint8).map_err(|e| e.to_string())?;
    if !with_labels {
        return Ok((x.narrow(0, 0, n), None));
    }
    let labels = st.tensor("labels").map_err(|e| format!("{}: `labels`: {e}", path.display()))?;
    if labels.dtype() != safetensors::Dtype::I64 || labels.shape().len() != 1 || labels.shape()[0] != images.shape()[0]
    {
        return Err(format!("{}: `labels` must be int64 [N] matching the images", path.display()));
    }
    let y = Tensor::f_from_data_size(labels.data(), &[shape[0]], Kind::Int64).map_err(|e| e.to_string())?;
    Ok((x.narrow(0, 0, n), Some(y.narrow(0, 0, n))))
}

impl Worker {
    /// Loads the dataset and keeps it resident.
    pub fn load(&mut self, req: &LoadRequest) -> Value {
        match self.try_load(req) {
            Ok(v) => v,
            Err(e) => json!({"ok": false, "error": e}),
        }
    }

    fn try_load(&mut self, req: &LoadRequest) -> Result<Value, String> {
        let started = Instant::now();
        if req.cpu_threads > 0 {
            tch::set_num_threads(req.cpu_threads);
            tch::set_num_interop_threads(1);
        }
        tch::jit::set_profiling_mode(req.jit_profiling);
        tch::jit::set_graph_executor_optimize(req.jit_optimize);
        let device = parse_device(&req.device)?;
        if let Device::Cuda(n) = device {
            if !tch::Cuda::is_available() || n >= tch::Cuda::device_count().max(0) as usize {
                return Err(format!(
                    "device {} was asked for, but libtorch sees {} CUDA device(s) ({})",
                    device_name(device),
                    tch::Cuda::device_count(),
                    crate::cuda_probe::why_no_cuda()
                ));
            }
            tch::Cuda::cudnn_set_benchmark(req.cudnn_benchmark && !req.deterministic);
        }
        // SAFETY: a C function of this crate's shim that catches every C++
        // exception; it takes and returns plain integers.
        if unsafe { nas_set_deterministic(i32::from(req.deterministic)) } != 0
            || unsafe { nas_deterministic() } != i64::from(req.deterministic)
        {
            return Err(format!(
                "deterministic algorithms could not be turned {}",
                if req.deterministic { "on" } else { "off" }
            ));
        }
        self.data = None;
        let (train_x, train_y) = read_split(&req.train, req.max_train_examples, true)?;
        let train_y = train_y.ok_or_else(|| format!("{}: no labels", req.train.describe()))?;
        let (test_x, _) = read_split(&req.test_images, None, false)?;
        if test_x.size()[1..] != train_x.size()[1..] {
            return Err(format!(
                "test images {:?} and training images {:?} differ in shape",
                test_x.size(),
                train_x.size()
            ));
        }
        let channels = train_x.size()[1];
        if req.mean.len() as i64 != channels || req.std.len() as i64 != channels {
            return Err(format!("mean/std have {} values for {channels} channels", req.mean.len()));
        }
        let scale: Vec<f32> = req.std.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
        let shift: Vec<f32> = req.mean.iter().zip(&req.std).map(|(m, s)| (-m / s) as f32).collect();
        let scale = Tensor::from_slice(&scale).view([1, channels, 1, 1]).to_device(device);
        let shift = Tensor::from_slice(&shift).view([1, channels, 1, 1]).to_device(device);
        // Keep the data on the device when it fits; else on the host, moved per batch.
        let move_all = |t: &Tensor| t.f_to_device(device);
        let (resident, train_x, train_y, test_x) = match (move_all(&train_x), move_all(&train_y), move_all(&test_x)) {
            (Ok(a), Ok(b), Ok(c)) => (true, a, b, c),
            _ => (false, train_x, train_y, test_x),
        };
        let info = json!({
            "ok": true,
            "device": device_name(device),
            "resident_on_device": resident,
            "train_examples": train_x.size()[0],
            "test_examples": test_x.size()[0],
            "input_shape": &train_x.size()[1..],
            "torch_threads": tch::get_num_threads(),
            "load_seconds": started.elapsed().as_secs_f64(),
            "deterministic": req.deterministic,
        });
        self.data = Some(Data {
            device,
            train_x,
            train_y,
            test_x,
            scale,
            shift,
            resident_on_device: resident,
            deterministic: req.deterministic,
        });
        Ok(info)
    }

    /// Trains one candidate; answers a report or a failure.
    pub fn train(&mut self, req: &TrainRequest) -> Value {
        let Some(data) = &self.data else {
            return json!({"ok": false, "error": "no dataset loaded"});
        };
        match train_one(data, req) {
            Ok(report) => json!({"ok": true, "report": report}),
            Err(Failure::NonFinite(step)) => json!({"ok": false, "failure": {
                "stage": "train", "kind": "non_finite",
                "message": format!("the training loss became NaN or infinite (by step {step})"),
            }}),
            Err(Failure::Shape(msg)) => json!({"ok": false, "failure": {
                "stage": "train", "kind": "shape", "message": msg,
            }}),
            Err(Failure::Projected(done, steps, projected, left)) => json!({"ok": false, "failure": {
                "stage": "train", "kind": "timeout",
                "message": format!(
                    "stopped after {done} of {steps} training batches: at their pace the training and the test would take about {projected:.0} s, and the evaluation had {left:.0} s left of its time limit; a cheaper network (fewer channels, or pooling earlier) fits"
                ),
            }}),
            Err(Failure::Torch(stage, e)) => {
                json!({"ok": false, "failure": failure_from_message(stage, &e.to_string())})
            }
            Err(Failure::Request(e)) => json!({"ok": false, "error": e}),
        }
    }
}

enum Failure {
    NonFinite(i64),
    /// Stopped early: (batches done, batches in the training, projected
    /// seconds from the start, seconds it had).
    Projected(i64, i64, f64, f64),
    Shape(String),
    Torch(&'static str, TchError),
    /// A malformed request (an evaluator bug, not the candidate's).
    Request(String),
}

/// A failure record for an error text from libtorch.
pub fn failure_from_message(stage: &str, msg: &str) -> Value {
    let lower = msg.to_lowercase();
    let kind =
        if lower.contains("out of memory") || lower.contains("can't allocate memory") || lower.contains("bad_alloc") {
            "out_of_memory"
        } else {
            "runtime"
        };
    // The first line carries the exception text; the rest is the C++/TorchScript trace.
    let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg);
    let tail: String = {
        let lines: Vec<&str> = msg.lines().collect();
        let start = lines.len().saturating_sub(30);
        lines[start..].join("\n")
    };
    json!({
        "stage": stage,
        "kind": kind,
        "message": nas_truncate(first, 400),
        "exception": "torch.jit.Error",
        "traceback": tail,
    })
}

fn nas_truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Memory in use on the current CUDA device (`total - free` from
/// `cudaMemGetInfo` of the CUDA runtime libtorch already loaded): the whole
/// device, so it includes the resident dataset and the caching allocator's
/// reserve. `None` off CUDA.
fn cuda_used_bytes() -> Option<u64> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    static FUNC: std::sync::OnceLock<Option<MemGetInfo>> = std::sync::OnceLock::new();
    let func = FUNC.get_or_init(|| {
        for name in [c"libcudart.so.13", c"libcudart.so.12", c"libcudart.so"] {
            // SAFETY: RTLD_NOLOAD only looks up a library that is already loaded.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
            if handle.is_null() {
                continue;
            }
            // SAFETY: `handle` is a valid library handle; the name is NUL-terminated.
            let sym = unsafe { libc::dlsym(handle, c"cudaMemGetInfo".as_ptr()) };
            if !sym.is_null() {
                // SAFETY: cudaMemGetInfo has the C signature
                // `cudaError_t cudaMemGetInfo(size_t *free, size_t *total)`.
                return Some(unsafe { std::mem::transmute::<*mut libc::c_void, MemGetInfo>(sym) });
            }
        }
        None
    });
    let func = (*func)?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both pointers are valid for writes of a usize.
    let err = unsafe { func(&mut free, &mut total) };
    (err == 0 && total >= free).then(|| (total - free) as u64)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The process's peak resident set since it was last reset (`VmHWM`).
fn rss_high_water_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

unsafe extern "C" {
    /// Resets the CUDA caching allocator's peak statistics of `device`;
    /// answers the bytes allocated now, or -1 (`csrc/cuda_memory.cpp`).
    fn nas_cuda_reset_peak(device: i32) -> i64;
    /// The CUDA caching allocator's peak allocated bytes of `device` since
    /// the last reset, or -1.
    fn nas_cuda_peak_allocated(device: i32) -> i64;
    /// Turns bfloat16 autocast on or off for a device type (0 CPU, 1 CUDA)
    /// on this thread; 0, or -1 on an error.
    fn nas_autocast_bf16(device_type: i32, enabled: i32) -> i64;
    /// Turns deterministic algorithms (warn-only) and cuDNN's deterministic
    /// mode on (1) or off (0); 0, or -1.
    fn nas_set_deterministic(on: i32) -> i64;
    /// Whether deterministic algorithms are on (1, 0), or -1.
    fn nas_deterministic() -> i64;
    /// Starts recording, on this thread, the operations that run without a
    /// deterministic implementation; 0, or -1.
    fn nas_nondeterministic_begin() -> i64;
    /// Stops recording; writes the operations recorded, one per line, into
    /// `buf` (at most `cap` bytes); answers the length of the whole list, or -1.
    fn nas_nondeterministic_end(buf: *mut u8, cap: i64) -> i64;
}

/// Records, while it lives, the operations that run without a
/// deterministic implementation on this thread (with deterministic
/// algorithms on, torch warns of each instead of failing).
struct Nondeterministic {
    recording: bool,
}

impl Nondeterministic {
    fn record() -> Nondeterministic {
        // SAFETY: a C function of this crate's shim that catches every C++
        // exception; it takes no arguments.
        Nondeterministic { recording: unsafe { nas_nondeterministic_begin() } == 0 }
    }

    /// The operations recorded (sorted, each once); `None` when the record
    /// could not be made.
    fn finish(mut self) -> Option<Vec<String>> {
        self.recording = false;
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: `buf` is valid for `buf.len()` bytes; the shim writes at most that many.
        let n = unsafe { nas_nondeterministic_end(buf.as_mut_ptr(), buf.len() as i64) };
        let n = usize::try_from(n).ok()?.min(buf.len());
        let text = String::from_utf8_lossy(&buf[..n]);
        Some(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
    }
}

impl Drop for Nondeterministic {
    fn drop(&mut self) {
        if self.recording {
            // SAFETY: as in `finish`, with no buffer.
            unsafe { nas_nondeterministic_end(std::ptr::null_mut(), 0) };
        }
    }
}

/// bfloat16 autocast on this thread while it lives.
struct Autocast {
    device_type: i32,
}

impl Autocast {
    fn bf16(device: Device) -> Result<Autocast, TchError> {
        let device_type = i32::from(matches!(device, Device::Cuda(_)));
        // SAFETY: a C function of this crate's shim that catches every C++
        // exception; it takes and returns plain integers.
        if unsafe { nas_autocast_bf16(device_type, 1) } != 0 {
            return Err(TchError::Torch("bfloat16 autocast could not be enabled".into()));
        }
        Ok(Autocast { device_type })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `Autocast::bf16`.
        unsafe { nas_autocast_bf16(self.device_type, 0) };
    }
}

/// `x` in channels-last memory order (NHWC strides, same shape) when it has
/// four dimensions.
fn to_channels_last(x: &Tensor) -> Result<Tensor, TchError> {
    if x.dim() != 4 {
        return Ok(x.shallow_clone());
    }
    x.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
}

/// The trainee's own peak memory: what its training, test and latency runs
/// allocate above what the worker held before loading it (the resident
/// dataset, the runtime).
///
/// - CUDA: the caching allocator's peak of allocated bytes (as
///   `torch.cuda.max_memory_allocated` reports it) minus the bytes allocated
///   when it started; when those statistics cannot be read, the device
///   memory in use (sampled) minus its value at the start.
/// - CPU: the worker's peak resident set minus its resident set at the
///   start, after returning freed heap memory to the system (`malloc_trim`)
///   so that an earlier candidate's freed memory is not counted as this
///   one's; the peak is the kernel's high-water mark (`VmHWM`, reset through
///   `/proc/self/clear_refs`) where it can be reset, else sampled at every
///   step.
struct MemoryMeter {
    device: Device,
    baseline: u64,
    /// CPU: whether `VmHWM` was reset at the start.
    hwm_reset: bool,
    /// CUDA: whether the allocator's statistics answer.
    allocator_stats: bool,
    /// The sampled peak (resident set, or device memory in use).
    sampled_peak: u64,
}

impl MemoryMeter {
    fn start(device: Device) -> MemoryMeter {
        match device {
            Device::Cuda(i) => {
                // SAFETY: a C function of this crate's shim that catches every
                // C++ exception; it takes and returns plain integers.
                let now = unsafe { nas_cuda_reset_peak(i as i32) };
                let allocator_stats = now >= 0;
                let baseline = if allocator_stats { now as u64 } else { cuda_used_bytes().unwrap_or(0) };
                MemoryMeter { device, baseline, hwm_reset: false, allocator_stats, sampled_peak: baseline }
            }
            _ => {
                // SAFETY: malloc_trim only returns free heap pages to the system.
                unsafe { libc::malloc_trim(0) };
                let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
                let baseline = rss_bytes().unwrap_or(0);
                MemoryMeter { device, baseline, hwm_reset, allocator_stats: false, sampled_peak: baseline }
            }
        }
    }

    /// Takes a sample (cheap: one small /proc read, or nothing with the
    /// allocator's statistics).
    fn sample(&mut self) {
        let now = match self.device {
            Device::Cuda(_) if self.allocator_stats => return,
            Device::Cuda(_) => cuda_used_bytes(),
            _ => rss_bytes(),
        };
        self.sampled_peak = self.sampled_peak.max(now.unwrap_or(0));
    }

    /// The trainee's peak bytes and how they were measured.
    fn finish(&mut self) -> (Option<u64>, &'static str) {
        self.sample();
        match self.device {
            Device::Cuda(i) if self.allocator_stats => {
                // SAFETY: as in `start`.
                let peak = unsafe { nas_cuda_peak_allocated(i as i32) };
                if peak >= 0 {
                    return (
                        Some((peak as u64).saturating_sub(self.baseline)),
                        "CUDA allocator peak allocated bytes above the worker's own (max_memory_allocated)",
                    );
                }
                (None, "CUDA allocator statistics unavailable")
            }
            Device::Cuda(_) => (
                Some(self.sampled_peak.saturating_sub(self.baseline)),
                "CUDA device memory in use above the worker's own (sampled)",
            ),
            _ => {
                let hwm = if self.hwm_reset { rss_high_water_bytes().unwrap_or(0) } else { 0 };
                let kind = if self.hwm_reset {
                    "resident set peak (VmHWM) above the worker's own"
                } else {
                    "resident set above the worker's own (sampled per step)"
                };
                (Some(self.sampled_peak.max(hwm).saturating_sub(self.baseline)), kind)
            }
        }
    }
}

/// Inference latency of `model` (eval mode, no gradients) on `batch`
/// normalised test images on the device, in milliseconds: the median of
/// timed runs after warm-up runs (at most 10 runs, fewer when one run takes
/// long: about 2 s of timed runs in all).
fn latency_ms(
    model: &tch::TrainableCModule,
    data: &Data,
    batch: i64,
    prepare: &dyn Fn(Tensor) -> Result<Tensor, TchError>,
) -> Result<f64, TchError> {
    let nt = data.test_x.size()[0].max(1);
    let idx = Tensor::f_arange(batch, (Kind::Int64, data.test_x.device()))?.f_remainder(nt)?;
    let mut x = data.test_x.f_index_select(0, &idx)?;
    if !data.resident_on_device {
        x = x.f_to_device(data.device)?;
    }
    let x = prepare(x.f_to_kind(Kind::Float)?.f_mul(&data.scale)?.f_add(&data.shift)?)?;
    let sync = || {
        if let Device::Cuda(i) = data.device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    tch::no_grad(|| -> Result<f64, TchError> {
        let run = || -> Result<f64, TchError> {
            let t = Instant::now();
            let _ = model.forward_ts(&[&x])?;
            sync();
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        };
        sync();
        let first = run()?;
        let warmup = if first > 500.0 { 0 } else { 2 };
        for _ in 0..warmup {
            run()?;
        }
        let runs = ((2000.0 / first.max(1e-3)) as usize).clamp(1, 10);
        let mut times = (0..runs).map(|_| run()).collect::<Result<Vec<f64>, TchError>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
}

fn train_one(data: &Data, req: &TrainRequest) -> Result<Value, Failure> {
    let t = |stage| move |e| Failure::Torch(stage, e);
    let total = Instant::now();
    let device = data.device;
    let mut memory = MemoryMeter::start(device);
    let nondeterministic = data.deterministic.then(Nondeterministic::record);
    tch::manual_seed(req.seed as i64);
    let vs = nn::VarStore::new(device);
    let mut model = tch::TrainableCModule::load(&req.model, vs.root()).map_err(t("load"))?;
    let params: i64 = vs.trainable_variables().iter().map(|v| v.numel() as i64).sum();
    if req.channels_last {
        tch::no_grad(|| -> Result<(), TchError> {
            for mut v in vs.trainable_variables() {
                if v.dim() == 4 {
                    let cl = to_channels_last(&v)?;
                    v.set_data(&cl);
                }
            }
            Ok(())
        })
        .map_err(t("load"))?;
    }
    let prepare = |x: Tensor| if req.channels_last { to_channels_last(&x) } else { Ok(x) };
    let _autocast = if req.bf16 { Some(Autocast::bf16(device).map_err(t("load"))?) } else { None };
    let mut output_kind = None;
    let mut opt = nn::Sgd { momentum: req.momentum, dampening: 0.0, wd: req.weight_decay, nesterov: false }
        .build(&vs, req.lr)
        .map_err(t("train"))?;
    let n = data.train_x.size()[0];
    let (c, h, w) = {
        let s = data.train_x.size();
        (s[1], s[2], s[3])
    };
    let bs = req.batch_size.max(1);
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut steps = 0i64;
    let train_started = Instant::now();
    let total_steps = (n + bs - 1) / bs * i64::from(req.epochs.max(1));
    let test_examples = data.test_x.size()[0];
    let mut timed_from: Option<Instant> = None;
    for _epoch in 0..req.epochs.max(1) {
        model.f_set_train().map_err(t("train"))?;
        let perm = Tensor::f_randperm(n, (Kind::Int64, if data.resident_on_device { device } else { Device::Cpu }))
            .map_err(t("train"))?;
        let mut start = 0;
        while start < n {
            let len = bs.min(n - start);
            let idx = perm.narrow(0, start, len);
            let mut x = data.train_x.f_index_select(0, &idx).map_err(t("train"))?;
            let mut y = data.train_y.f_index_select(0, &idx).map_err(t("train"))?;
            if !data.resident_on_device {
                x = x.to_device(device);
                y = y.to_device(device);
            }
            if req.augment {
                x = crop_flip(&x, len, c, h, w, device).map_err(t("train"))?;
            }
            let x = x
                .f_to_kind(Kind::Float)
                .and_then(|x| x.f_mul(&data.scale))
                .and_then(|x| x.f_add(&data.shift))
                .and_then(&prepare)
                .map_err(t("train"))?;
            let out = model.forward_ts(&[&x]).map_err(t("train"))?;
            if steps == 0 {
                output_kind = Some(format!("{:?}", out.kind()));
                let size = out.size();
                if size != [len, req.num_classes] {
                    return Err(Failure::Shape(format!(
                        "the network's output has shape {size:?} for a batch of {len}; expected [{len}, {}]",
                        req.num_classes
                    )));
                }
            }
            let loss = out
                .f_log_softmax(-1, Kind::Float)
                .and_then(|l| l.f_nll_loss(&y, None::<Tensor>, Reduction::Mean, -100))
                .map_err(t("train"))?;
            opt.zero_grad();
            loss.f_backward().map_err(t("train"))?;
            opt.step();
            loss_sum =
                loss_sum.f_add(&loss.detach().f_mul_scalar(len as f64).map_err(t("train"))?).map_err(t("train"))?;
            steps += 1;
            if device == Device::Cpu || steps % 25 == 0 {
                memory.sample();
            }
            if steps % 25 == 0 {
                let v = loss_sum.f_double_value(&[]).map_err(t("train"))?;
                if !v.is_finite() {
                    return Err(Failure::NonFinite(steps));
                }
            }
            if steps == PROJECTION_WARMUP_STEPS {
                if let Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
                timed_from = Some(Instant::now());
            }
            // On a GPU the pace is read where the loss check synchronised.
            let synced = device == Device::Cpu || steps % 25 == 0;
            if let (Some(left), Some(from), true) = (req.seconds_left, timed_from, synced) {
                let timed_steps = steps - PROJECTION_WARMUP_STEPS;
                let timed = from.elapsed().as_secs_f64();
                if timed_steps >= PROJECTION_MIN_STEPS && timed >= PROJECTION_MIN_SECONDS {
                    let elapsed = train_started.elapsed().as_secs_f64();
                    let projected =
                        elapsed + projected_seconds(timed, timed_steps, total_steps - steps, bs, test_examples);
                    if projected > left * PROJECTION_MARGIN {
                        return Err(Failure::Projected(steps, total_steps, projected, left));
                    }
                }
            }
            start += len;
        }
    }
    let seen = (n * i64::from(req.epochs.max(1))) as f64;
    let train_loss = loss_sum.f_double_value(&[]).map_err(t("train"))? / seen;
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let epoch_seconds = train_started.elapsed().as_secs_f64() / f64::from(req.epochs.max(1));
    if !train_loss.is_finite() {
        return Err(Failure::NonFinite(steps));
    }
    memory.sample();

    // Test, in the order asked for; the predictions go back in that order.
    let test_started = Instant::now();
    model.f_set_eval().map_err(t("test"))?;
    let nt = data.test_x.size()[0];
    let order = if req.test_order.is_empty() {
        Tensor::f_arange(nt, (Kind::Int64, Device::Cpu)).map_err(t("test"))?
    } else {
        if req.test_order.len() as i64 != nt || req.test_order.iter().any(|&i| i < 0 || i >= nt) {
            return Err(Failure::Request(format!(
                "test_order must be a permutation of the {nt} test examples ({} given)",
                req.test_order.len()
            )));
        }
        Tensor::from_slice(&req.test_order)
    };
    let order = if data.resident_on_device { order.to_device(device) } else { order };
    let predictions = tch::no_grad(|| -> Result<Tensor, TchError> {
        let tb = 512i64;
        let mut preds = Vec::new();
        let mut start = 0;
        while start < nt {
            let len = tb.min(nt - start);
            let idx = order.narrow(0, start, len);
            let mut x = data.test_x.f_index_select(0, &idx)?;
            if !data.resident_on_device {
                x = x.to_device(device);
            }
            let x = prepare(x.f_to_kind(Kind::Float)?.f_mul(&data.scale)?.f_add(&data.shift)?)?;
            let out = model.forward_ts(&[&x])?;
            if out.size() != [len, req.num_classes] {
                return Err(TchError::Shape(format!(
                    "the network's output has shape {:?} for a test batch of {len}; expected [{len}, {}]",
                    out.size(),
                    req.num_classes
                )));
            }
            preds.push(out.f_argmax(-1, false)?);
            start += len;
            memory.sample();
        }
        Tensor::f_cat(&preds, 0)?.f_to_device(Device::Cpu)
    })
    .map_err(t("test"))?;
    let predictions = Vec::<i64>::try_from(&predictions).map_err(t("test"))?;
    let nt = nt.max(1);
    let test_seconds = test_started.elapsed().as_secs_f64();

    // Inference latency at batch 1 and at the training batch size. A
    // module that trained and predicted the test set but fails here (one
    // that keeps state across calls) is scored without latencies: the
    // error is reported beside them, never as the candidate's failure.
    let latencies = latency_ms(&model, data, 1, &prepare).and_then(|one| {
        memory.sample();
        Ok((one, latency_ms(&model, data, bs, &prepare)?))
    });
    let (latency, batch_latency, latency_error) = match latencies {
        Ok((one, batch)) => (Some(one), Some(batch), None),
        Err(e) => (None, None, Some(nas_truncate(e.to_string().lines().last().unwrap_or_default(), 400))),
    };
    let (peak_memory, peak_memory_kind) = memory.finish();
    // The latency runs call the forward pass the test called: no operation
    // of theirs is new.
    let nondeterministic_ops = nondeterministic.and_then(Nondeterministic::finish);
    let device_seconds = total.elapsed().as_secs_f64();
    drop(_autocast);
    let save_error = req.save_to.as_ref().and_then(|path| save_trained(&model, device, path).err());
    Ok(json!({
        "saved_model": req.save_to.as_ref().filter(|_| save_error.is_none()),
        "save_error": save_error,
        "predictions": predictions,
        "train_loss": train_loss,
        "params": params,
        "epoch_seconds": epoch_seconds,
        "images_per_second": n as f64 / epoch_seconds.max(1e-9),
        "peak_memory_bytes": peak_memory,
        "peak_memory_kind": peak_memory_kind,
        "latency_ms": latency,
        "batch_latency_ms": batch_latency,
        "latency_batch_size": bs,
        "latency_error": latency_error,
        "bf16": req.bf16,
        "channels_last": req.channels_last,
        "output_dtype": output_kind,
        "deterministic": data.deterministic,
        "nondeterministic_ops": nondeterministic_ops,
        "device_seconds": device_seconds,
        "device": device_name(device),
        "test_seconds": test_seconds,
        "worker_seconds": total.elapsed().as_secs_f64(),
        "steps": steps,
        "train_examples": n,
        "test_examples": nt,
    }))
}

/// Saves the trained module (in eval mode) as TorchScript with CPU tensors,
/// so that `torch.jit.load` opens it on any machine.
fn save_trained(model: &tch::TrainableCModule, device: Device, path: &std::path::Path) -> Result<(), String> {
    let shown = path.display();
    model.save(path).map_err(|e| format!("saving the trained module to {shown}: {e}"))?;
    if device != Device::Cpu {
        let cpu = tch::CModule::load_on_device(path, Device::Cpu)
            .map_err(|e| format!("reloading {shown} on the CPU: {e}"))?;
        cpu.save(path).map_err(|e| format!("saving the CPU copy to {shown}: {e}"))?;
    }
    Ok(())
}

/// Random crop with 4 pixels of zero padding and a random horizontal flip,
/// per example, on a uint8 batch `[B,C,H,W]`, in two gather kernels.
fn crop_flip(x: &Tensor, b: i64, c: i64, h: i64, w: i64, device: Device) -> Result<Tensor, TchError> {
    let pad = 4;
    let padded = x.f_constant_pad_nd([pad, pad, pad, pad])?;
    let opts = (Kind::Int64, device);
    let oy = Tensor::f_randint(2 * pad + 1, [b, 1], opts)?;
    let ox = Tensor::f_randint(2 * pad + 1, [b, 1], opts)?;
    let flip = Tensor::f_randint(2, [b, 1], opts)?;
    let ar_h = Tensor::f_arange(h, opts)?.f_view([1, h])?;
    let ar_w = Tensor::f_arange(w, opts)?.f_view([1, w])?;
    // Flipped columns read from the right: w-1-j.
    let cols_fwd = ar_w.f_add(&ox)?;
    let cols_rev = ar_w.f_neg()?.f_add_scalar(w - 1)?.f_add(&ox)?;
    let cols = cols_rev.f_where_self(&flip.f_eq(1)?, &cols_fwd)?;
    let rows = ar_h.f_add(&oy)?;
    let bi = Tensor::f_arange(b, opts)?.f_view([b, 1, 1, 1])?;
    let ci = Tensor::f_arange(c, opts)?.f_view([1, c, 1, 1])?;
    let ri = rows.f_view([b, 1, h, 1])?;
    let wi = cols.f_view([b, 1, 1, w])?;
    padded.f_index(&[Some(bi), Some(ci), Some(ri), Some(wi)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_projection_counts_the_remaining_batches_and_a_third_of_a_step_per_test_example() {
        // 10 batches of 128 in 5 s: 0.5 s a batch; 100 left is 50 s; 10,000
        // test examples at a third of 0.5/128 s each is about 13 s.
        let p = super::projected_seconds(5.0, 10, 100, 128, 10_000);
        assert!((p - (50.0 + 0.5 / 128.0 * 10_000.0 / 3.0)).abs() < 1e-9, "{p}");
        assert_eq!(super::projected_seconds(5.0, 10, 0, 128, 0), 0.0);
    }
}
