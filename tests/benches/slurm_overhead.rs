//! Overhead per evaluation of the Slurm executor against local evaluation on
//! the same machine: the same scripted search (10 distinct designs from the
//! loopback chat server, the instant evaluator fixture, one candidate at a
//! time) run three ways — evaluated in the host process, and as one Slurm
//! job per evaluation with `poll_interval_s` 0.2 and with the default 5 —
//! and, per evaluation, the time from the search handing over the candidate
//! to the outcome being back (the record's `eval_seconds`: for Slurm,
//! writing the request, `sbatch`, queueing, `nas eval-job` on the node
//! creating the evaluator from the frozen config, the result read back).
//! Writes `docs/results/slurm-overhead.md`.
//!
//! `cargo bench -p nas-tests --bench slurm_overhead`
//!
//! Needs a running Slurm cluster: `scripts/slurm-cluster.sh start DIR` starts
//! one on this machine (root; Debian's packages) and links its config to
//! `/etc/slurm/slurm.conf`; otherwise set `SLURM_CONF`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use nas_host::executor::table::{AttemptState, JobTable};
use nas_tests::{fence, nas_bin, records, run_dirs, scripted, scripted_config, workspace_root, ADVICE};

const ITERATIONS: u64 = 10;
const COMMAND: &str = "cargo bench -p nas-tests --bench slurm_overhead";

fn net(a: u64) -> String {
    let width = 8 + a;
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.hidden{a} = nn.Linear(64, {width})\n        self.head{a} = nn.Linear({width}, num_classes)\n        # accuracy: {:.2}\n\n    def forward(self, x):\n        return self.head{a}(self.hidden{a}(x.flatten(1)))\n",
        0.5 + a as f64 * 0.03
    ))
}

fn slurm_conf() -> PathBuf {
    std::env::var_os("SLURM_CONF").map(PathBuf::from).unwrap_or_else(|| "/etc/slurm/slurm.conf".into())
}

/// What one way of running measured.
struct Arm {
    name: String,
    /// Seconds per evaluation, sorted.
    eval_s: Vec<f64>,
    /// The whole `nas run`, seconds (the Slurm probe job at start included).
    wall_s: f64,
    /// Slurm jobs, and those done at their first attempt.
    jobs: Option<(usize, usize)>,
}

fn run(name: &str, executor: &str) -> Arm {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = scripted((1..=ITERATIONS).map(net).collect(), vec![ADVICE.to_string()]);
    let text = scripted_config(
        &server,
        &format!(
            "\n[run]\nname = \"overhead\"\noutput_dir = \"runs\"\n\n[search]\nmax_iterations = {ITERATIONS}\n\n\
             [evaluator]\nplugin = \"eval.instant\"\n\n[memory]\nplugin = \"builtin:memory.window\"\n\n{executor}"
        ),
    );
    let config = dir.path().join("run.toml");
    std::fs::write(&config, text).expect("write config");
    let started = Instant::now();
    let out = Command::new(nas_bin())
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .output()
        .expect("nas runs");
    let wall_s = started.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!("{name}: nas run failed:\n{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let run_dir = run_dirs(dir.path()).pop().expect("a run directory");
    let recs = records(&run_dir);
    assert_eq!(recs.len() as u64, ITERATIONS, "{name}: every iteration recorded");
    let mut eval_s: Vec<f64> = recs.iter().map(|r| r.eval_seconds).collect();
    eval_s.sort_by(f64::total_cmp);
    let jobs = (!executor.is_empty()).then(|| {
        let table = JobTable::read_all(&run_dir).expect("the job table");
        let first = table.iter().filter(|a| a.attempt == 1 && a.state == AttemptState::Done).count();
        (table.len(), first)
    });
    Arm { name: name.to_string(), eval_s, wall_s, jobs }
}

fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let conf = slurm_conf();
    let Ok(conf_text) = std::fs::read_to_string(&conf) else {
        eprintln!(
            "no Slurm cluster: {} is absent; start one with scripts/slurm-cluster.sh start DIR (or set SLURM_CONF)",
            conf.display()
        );
        std::process::exit(2);
    };
    // The cluster scripts/slurm-cluster.sh starts requires an account and QoS.
    let ours = conf_text.starts_with("# Written by scripts/slurm-cluster.sh");
    let executor = |poll: &str| {
        format!(
            "[executor]\nkind = \"slurm\"\ncpus_per_task = 1\ntime_limit_s = 600\npoll_interval_s = {poll}\n{}",
            if ours { "account = \"nas\"\nqos = \"normal\"\n" } else { "" }
        )
    };
    let arms = [
        run("local (in the host process)", ""),
        run("Slurm, `poll_interval_s = 0.2`", &executor("0.2")),
        run("Slurm, `poll_interval_s = 5` (default)", &executor("5")),
    ];
    let local = median(&arms[0].eval_s);
    let mut table = String::from(
        "| executor | per evaluation: median | min | max | overhead vs local (median) | whole run (10 evaluations) | jobs (done at first attempt) |\n|---|---|---|---|---|---|---|\n",
    );
    for arm in &arms {
        let m = median(&arm.eval_s);
        table.push_str(&format!(
            "| {} | {:.3} s | {:.3} s | {:.3} s | {} | {:.1} s | {} |\n",
            arm.name,
            m,
            arm.eval_s[0],
            arm.eval_s[arm.eval_s.len() - 1],
            if arm.jobs.is_some() { format!("+{:.2} s", m - local) } else { "–".into() },
            arm.wall_s,
            arm.jobs.map_or("–".into(), |(n, first)| format!("{n} ({first})")),
        ));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let version = Command::new("sinfo")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let text = format!(
        "# Slurm executor: overhead per evaluation\n\n\
         Written by `{COMMAND}` (tests/benches/slurm_overhead.rs), against {cluster} ({version}).\n\n\
         The same search three ways: {ITERATIONS} distinct designs from the loopback chat server, evaluated by the \
         instant evaluator fixture (`eval.instant`: scores a candidate in well under a millisecond), one candidate \
         at a time. \"Per evaluation\" is the record's `eval_seconds`: from the search handing the candidate over \
         to its outcome being back. On Slurm that is the request written to the shared folder and the attempt \
         to the run store, `sbatch`, the wait in the queue, `nas eval-job` on the node (a process start, the frozen \
         config read, the evaluator created, the candidate evaluated, the result written whole), and the host \
         noticing the job's end at its next look at the queue (`poll_interval_s`) and reading the result back. \
         The whole run includes the probe job at start (Slurm arms) and the LLM calls to loopback.\n\n\
         {table}\n\
         What it means: with a real evaluation (minutes of training per candidate) the Slurm path adds the \
         overhead above per candidate, most of it the poll interval (on average half of it, up to all of it) \
         and Slurm's own scheduling; the default `poll_interval_s = 5` keeps the controller's load small on a \
         shared cluster and costs a few seconds per candidate.\n\n\
         Machine: {} CPU threads visible, load average {loadavg} at the end; the node is this machine, so \
         \"shared storage\" is the local disk. Read as rough on a shared machine.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cluster = if ours {
            "the single-node cluster of `scripts/slurm-cluster.sh` on this machine"
        } else {
            "the cluster of `SLURM_CONF`"
        },
    );
    let out = workspace_root().join("docs/results/slurm-overhead.md");
    std::fs::write(&out, &text).expect("write results");
    println!("{text}");
}
