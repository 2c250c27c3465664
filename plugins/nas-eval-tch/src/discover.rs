//! Finding the Python interpreter and the worker binary, and the paths the
//! sandbox must let them read.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_plugin_api::{ErrorCode, PluginError};

use crate::PLUGIN_ID;

/// The worker's file name.
pub const WORKER_NAME: &str = "nas-eval-worker";

/// The Python to run the checker with: `setting`, else `NAS_PYTHON`, else
/// the first `.venv/bin/python` walking up from the working directory and
/// from the executable's directory, else `python3`.
pub fn find_python(setting: Option<&Path>) -> Result<PathBuf, PluginError> {
    if let Some(p) = setting {
        return existing(p, "the `python` setting");
    }
    if let Some(p) = std::env::var_os("NAS_PYTHON") {
        return existing(Path::new(&p), "NAS_PYTHON");
    }
    let mut starts = Vec::new();
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        starts.push(d);
    }
    for start in starts {
        for dir in start.ancestors() {
            let p = dir.join(".venv/bin/python");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Ok(PathBuf::from("python3"))
}

fn existing(p: &Path, what: &str) -> Result<PathBuf, PluginError> {
    if p.exists() {
        Ok(p.to_path_buf())
    } else {
        Err(PluginError::new(ErrorCode::NotFound, format!("[{PLUGIN_ID}] {what}: `{}` does not exist", p.display())))
    }
}

/// The worker binary: `setting`, else `NAS_EVAL_WORKER`, else next to the
/// running executable (or one directory up, for test binaries in
/// `target/release/deps`).
pub fn find_worker(setting: Option<&Path>) -> Result<PathBuf, PluginError> {
    if let Some(p) = setting {
        return existing(p, "the `worker_path` setting");
    }
    if let Some(p) = std::env::var_os("NAS_EVAL_WORKER") {
        return existing(Path::new(&p), "NAS_EVAL_WORKER");
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        for d in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
            let p = d.join(WORKER_NAME);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(PluginError::new(
        ErrorCode::NotFound,
        format!(
            "[{PLUGIN_ID}] the training worker `{WORKER_NAME}` was not found next to the executable; build it with \
             `LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH cargo build --release -p nas-eval-tch-worker`, \
             or point the `worker_path` setting or NAS_EVAL_WORKER at it"
        ),
    ))
}

/// What `python`'s torch says of this machine: the torch that trains here
/// (the worker links the same libtorch), and what decides a score's last
/// bits besides the seed.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct TorchInfo {
    /// `torch.__version__`.
    pub version: String,
    /// The CUDA devices torch sees, by name, in index order.
    pub cuda: Vec<String>,
    /// The instruction set ATen's CPU kernels dispatch to (`AVX2`,
    /// `AVX512`, `DEFAULT`; empty when this torch cannot say).
    pub cpu_capability: String,
    /// The CPU's model ([`cpu_model`]), read once.
    #[serde(skip)]
    pub cpu: String,
}

impl TorchInfo {
    /// The processor that trains on `device` (`cpu`, `cuda:N`), as a
    /// report's `extra.machine` names it: `AMD EPYC (AVX2) with torch 2.11.0`,
    /// `NVIDIA H100 80GB HBM3 with torch 2.11.0+cu128`. Float32 training on
    /// another processor or torch gives other last bits, so the same seed
    /// repeats a score only where this is the same.
    pub fn machine(&self, device: &str) -> String {
        let gpu = device.strip_prefix("cuda").map(|n| n.trim_start_matches(':').parse::<usize>().unwrap_or(0));
        let processor = match gpu {
            Some(n) => self.cuda.get(n).cloned().unwrap_or_else(|| format!("CUDA device {n}")),
            None if self.cpu_capability.is_empty() => self.cpu.clone(),
            None => format!("{} ({})", self.cpu, self.cpu_capability),
        };
        format!("{processor} with torch {}", self.version)
    }
}

/// The CPU's model name (`/proc/cpuinfo`), else the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| matches!(k.trim(), "model name" | "Model" | "cpu model"))
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The Python that asks torch what [`TorchInfo`] holds, one line of JSON.
const TORCH_INFO: &str = "import json, torch\n\
cap = getattr(getattr(torch.backends, 'cpu', None), 'get_cpu_capability', lambda: '')\n\
n = torch.cuda.device_count()\n\
print(json.dumps({'version': torch.__version__, 'cuda': [torch.cuda.get_device_name(i) for i in range(n)], 'cpu_capability': cap()}))";

/// Checks that `python` imports torch; answers its version, the CUDA
/// devices it sees and the CPU's instruction set. The error says how to set
/// it up.
pub fn check_torch(python: &Path) -> Result<TorchInfo, PluginError> {
    let out = Command::new(python).args(["-c", TORCH_INFO]).env("PYTHONNOUSERSITE", "1").output().map_err(|e| {
        PluginError::new(
            ErrorCode::NotFound,
            format!("[{PLUGIN_ID}] cannot run Python `{}`: {e}; create the project virtualenv with `python3 -m venv .venv && .venv/bin/pip install torch==2.11.0 numpy` or set `python` / NAS_PYTHON", python.display()),
        )
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        return Err(PluginError::new(
            ErrorCode::NotFound,
            format!("[{PLUGIN_ID}] `import torch` fails in `{}` ({last}); install it with `{} -m pip install torch==2.11.0 numpy`, or set `python` / NAS_PYTHON to a Python that has it", python.display(), python.display()),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let answer: Option<TorchInfo> = text.lines().last().and_then(|l| serde_json::from_str(l).ok());
    Ok(TorchInfo { cpu: cpu_model(), ..answer.unwrap_or_default() })
}

/// Where Debian's dataset packages install (raw data, labels included).
pub const SYSTEM_DATASETS: &str = "/usr/share/datasets";

/// System directories a Python or libtorch process needs to read.
pub fn system_read_paths() -> Vec<PathBuf> {
    [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/opt",
        "/proc",
        "/sys",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/os-release",
        "/etc/nsswitch.conf",
        "/etc/passwd",
        "/etc/group",
        "/etc/alternatives",
        "/etc/python3",
        "/etc/python3.11",
        "/etc/ssl/certs",
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
        "/dev/shm",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// The install roots of a Python: its virtualenv and the base interpreter.
pub fn python_roots(python: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let resolved = which(python);
    for p in [Some(resolved.clone()), resolved.canonicalize().ok()].into_iter().flatten() {
        if let Some(root) = p.parent().and_then(Path::parent) {
            out.push(root.to_path_buf());
            if let Ok(c) = root.canonicalize() {
                out.push(c);
            }
        }
    }
    out
}

/// Library directories named in `LD_LIBRARY_PATH` (e.g. a libtorch outside
/// the virtualenv).
pub fn library_roots() -> Vec<PathBuf> {
    std::env::var("LD_LIBRARY_PATH")
        .map(|v| v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default()
}

/// The directories of the shared libraries `binary` loads, as the dynamic
/// loader resolves them (its rpath, `LD_LIBRARY_PATH`, the system paths):
/// what the sandbox must let it read. Empty when they cannot be listed.
pub fn library_dirs_of(binary: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new(binary).env("LD_TRACE_LOADED_OBJECTS", "1").stdin(std::process::Stdio::null()).output()
    else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libtorch_cpu.so => /x/torch/lib/libtorch_cpu.so (0x...)"
        let Some(path) = line.split("=>").nth(1).and_then(|r| r.split_whitespace().next()) else { continue };
        if let Some(dir) = Path::new(path).parent().filter(|d| d.is_absolute()) {
            for d in [Some(dir.to_path_buf()), dir.canonicalize().ok()].into_iter().flatten() {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
    }
    dirs
}

fn which(p: &Path) -> PathBuf {
    if p.components().count() > 1 {
        return std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(p);
            if c.is_file() {
                return c;
            }
        }
    }
    p.to_path_buf()
}

/// Whether other processes keep the cores busy: the 1-minute load average
/// plus our `threads` exceeds the core count.
pub fn machine_busy(threads: usize) -> bool {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    load + threads as f64 > cores + 0.5
}
