//! Regression tests for attacks on the score and on the sandbox: each hostile
//! candidate in `tests/hostile/` is run through the real evaluator, and the
//! test asserts the attack failed. See `docs/sandbox.md` for why each fails
//! and `docs/results/reliability.md` ("Attacks") for how each one ended.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nas_plugin_api::*;
use serde_json::json;

use super::{data_root, eval, evaluator, failure, fmnist, lock, ok, read};

/// Peak resident memory of this test process so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc/self/status")
}

/// Whether this machine gives sandboxed processes their own namespaces and
/// private root (else the weaker guarantees of the fallbacks are tested).
fn full_isolation() -> bool {
    nas_eval_tch::sandbox::Capabilities::probe().full_isolation()
}

/// Says how an attack ended (`attack <name>: ...` on stderr; the table in
/// `docs/results/reliability.md` is made of these lines).
fn report(name: &str, how: impl std::fmt::Display) {
    eprintln!("attack {name}: {how}");
}

/// An outcome in one line.
fn summary(o: &EvalOutcome) -> String {
    match o {
        EvalOutcome::Ok(r) => format!(
            "scored {:.4} (params {:?}, FLOPs {:?}, {} test examples)",
            r.accuracy,
            r.params,
            r.flops,
            r.extra.get("test_examples").map(|v| v.to_string()).unwrap_or_default()
        ),
        EvalOutcome::Failed(f) => {
            let msg: String = f.message.chars().take(160).collect();
            format!("failed: {} at {}: {}", f.kind, f.stage, msg.replace('\n', " "))
        }
    }
}

fn everything(f: &CandidateFailure) -> String {
    format!("{} {} {}", f.message, f.exception.as_deref().unwrap_or(""), f.traceback)
}

/// The first `n` labels of the real Fashion-MNIST test split, in file order
/// (the order of the prepared test split the tests use).
fn test_labels(n: usize) -> Vec<i64> {
    let src = Path::new(super::common::FASHION_MNIST_DIR);
    let (_, labels, _) =
        super::common::read_idx(&src.join("t10k-images-idx3-ubyte.gz"), &src.join("t10k-labels-idx1-ubyte.gz"), n);
    labels
}

#[test]
fn a_forward_that_prints_a_forged_answer_is_scored_by_the_trainer() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "forge-stdout", &read("tests/hostile/forge_stdout_answer.py"), &fmnist(), None);
    report("forge_stdout_answer", summary(&outcome));
    let r = ok(outcome, "forge");
    assert_ne!(r.accuracy, 0.987654, "the forged answer was taken");
    // Its logits are all zero: every prediction is class 0.
    assert!(r.accuracy < 0.2, "a network that always answers class 0 scored {}", r.accuracy);
    assert_eq!(r.extra["train_examples"], 4000);
    assert_eq!(r.params, Some(7850), "parameters counted by the trainer");
}

#[test]
fn a_check_that_forges_its_result_gets_its_parameters_and_flops_measured() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let source = read("tests/hostile/forge_check_result.py");
    let outcome = eval(&mut e, "forge-check", &source.replace("@MODE@", "model"), &fmnist(), None);
    report("forge_check_result (model)", summary(&outcome));
    let r = ok(outcome, "forge-check");
    // The model it wrote is a real 784 -> 10 linear layer: that is what is
    // trained, counted and measured, whatever the check said.
    assert_eq!(r.params, Some(7850), "parameters: {:?}", r.params);
    assert_eq!(r.flops, Some(2 * 784 * 10), "FLOPs: {:?}", r.flops);
    assert!(r.accuracy > 0.5, "the linear model it wrote trains honestly: {}", r.accuracy);

    let outcome = eval(&mut e, "forge-nomodel", &source.replace("@MODE@", "nomodel"), &fmnist(), None);
    report("forge_check_result (nomodel)", summary(&outcome));
    let f = failure(outcome, "nomodel");
    assert_eq!(f.kind, FailureKind::Export, "claimed a check without a model: {f:#?}");
}

#[test]
fn the_trainer_cannot_read_the_test_labels() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let split = fmnist().join("test.safetensors");
    let source = read("tests/hostile/read_test_split.py")
        .replace("@TEST_SPLIT@", &split.display().to_string())
        .replace("@N_TEST@", "1000");
    let outcome = eval(&mut e, "read-test-split", &source, &fmnist(), None);
    report("read_test_split", summary(&outcome));
    match outcome {
        EvalOutcome::Ok(r) => assert!(r.accuracy < 0.5, "read the test labels while scored: {}", r.accuracy),
        EvalOutcome::Failed(f) => {
            assert!(matches!(f.kind, FailureKind::Runtime | FailureKind::Sandbox), "expected the read to fail: {f:#?}")
        }
    }
}

#[test]
fn the_checker_cannot_read_any_dataset() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "bake-labels", &read("tests/hostile/bake_labels.py"), &fmnist(), None);
    report("bake_labels", summary(&outcome));
    match outcome {
        EvalOutcome::Ok(r) => {
            panic!("read the labels under /usr/share/datasets at check time and scored {}", r.accuracy)
        }
        EvalOutcome::Failed(f) => {
            assert!(matches!(f.kind, FailureKind::Runtime | FailureKind::Sandbox), "{f:#?}");
            assert!(f.exception.as_deref().is_some_and(|x| x.ends_with("Error")), "{f:#?}");
        }
    }
}

#[test]
fn test_examples_come_in_an_order_the_candidate_cannot_know() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let labels: Vec<String> = test_labels(1000).iter().map(|l| l.to_string()).collect();
    let source = read("tests/hostile/known_labels.py").replace("@LABELS@", &labels.join(","));
    let outcome = eval(&mut e, "known-labels", &source, &fmnist(), None);
    report("known_labels", summary(&outcome));
    let r = ok(outcome, "known-labels");
    assert!(r.accuracy < 0.3, "answered by position with the true label sequence and scored {}", r.accuracy);
}

#[test]
fn other_processes_and_the_host_environment_are_hidden() {
    let _g = lock();
    // An entry of this process's environment that the sandbox does not pass on.
    let passed = ["PATH=", "HOME=", "TMPDIR=", "OMP_", "PYTHON", "LANG=", "LD_LIBRARY_PATH=", "CUDA_VISIBLE_DEVICES="];
    let environ = std::fs::read("/proc/self/environ").expect("own environ");
    let marker = environ
        .split(|&b| b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .find(|e| e.contains('=') && e.len() > 8 && !passed.iter().any(|p| e.starts_with(p)))
        .expect("the test process has some environment of its own");
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "environ", &read("tests/hostile/read_host_environ.py"), &fmnist(), None);
    report("read_host_environ", summary(&outcome));
    let f = failure(outcome, "environ");
    assert!(f.message.contains("visible processes"), "{f:#?}");
    assert!(!everything(&f).contains(&marker), "the host's environment ({marker}) leaked: {}", f.message);
}

#[test]
fn candidates_hold_no_privileges() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "privileges", &read("tests/hostile/privileges.py"), &fmnist(), None);
    report("privileges", summary(&outcome));
    let f = failure(outcome, "privileges");
    if full_isolation() {
        assert!(f.message.contains("probes: 6; escaped: none"), "{}", f.message);
    } else {
        // Without a private root, `nobody` may not reach the toolchain and the
        // candidate then runs as root, but without any capability.
        let ok = ["probes: 6; escaped: none", "probes: 6; escaped: uid 0"].iter().any(|e| f.message.ends_with(e));
        assert!(ok, "{}", f.message);
    }
}

#[test]
fn unix_sockets_outside_the_sandbox_are_unreachable() {
    let _g = lock();
    let path = std::env::temp_dir().join(format!("nas-eval-tch-sock-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let pathname = UnixListener::bind(&path).expect("bind a pathname socket");
    pathname.set_nonblocking(true).expect("nonblocking");
    let abstract_name = format!("nas-eval-tch-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("address");
        UnixListener::bind_addr(&addr).expect("bind an abstract socket")
    };
    abstract_listener.set_nonblocking(true).expect("nonblocking");
    let source = read("tests/hostile/unix_socket.py")
        .replace("@PATH@", &path.display().to_string())
        .replace("@ABSTRACT@", &abstract_name);
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "unix-socket", &source, &fmnist(), None);
    let _ = std::fs::remove_file(&path);
    let pathname_hit = pathname.accept().is_ok();
    let abstract_hit = abstract_listener.accept().is_ok();
    report(
        "unix_socket",
        format!("{}; listeners accepted: pathname {pathname_hit}, abstract {abstract_hit}", summary(&outcome)),
    );
    let f = failure(outcome, "unix-socket");
    if full_isolation() {
        assert!(!pathname_hit, "a candidate connected to {}", path.display());
    } else {
        eprintln!("pathname unix sockets are reachable without a private root (said at startup)");
    }
    assert!(!abstract_hit, "a candidate connected to @{abstract_name}");
    assert!(f.message.contains("connected: none") || !full_isolation(), "{}", f.message);
}

#[test]
fn a_flood_of_check_output_is_kept_as_a_bounded_tail() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let before = peak_rss();
    let started = Instant::now();
    let outcome = eval(&mut e, "flood-check", &read("tests/hostile/flood_check.py"), &fmnist(), Some(25.0));
    let grown = peak_rss().saturating_sub(before);
    report("flood_check", format!("{}; host peak memory grew {} MiB", summary(&outcome), grown >> 20));
    let f = failure(outcome, "flood");
    assert_eq!(f.kind, FailureKind::Timeout, "{}", f.message);
    assert!(started.elapsed() < Duration::from_secs(50), "not stopped in time");
    assert!(grown < 128 << 20, "the host grew by {} MiB reading 1 GiB of output", grown >> 20);
    assert!(f.traceback.contains("flood") && f.traceback.len() <= 8192, "{} bytes of tail", f.traceback.len());
}

#[test]
fn a_huge_line_printed_by_forward_neither_fills_the_host_nor_hides_the_answer() {
    let _g = lock();
    let mut e = evaluator(json!({}));
    let before = peak_rss();
    let source = read("tests/hostile/flood_forward.py").replace("@MIB@", "384");
    let outcome = eval(&mut e, "flood-forward", &source, &fmnist(), Some(90.0));
    let grown = peak_rss().saturating_sub(before);
    report("flood_forward", format!("{}; host peak memory grew {} MiB", summary(&outcome), grown >> 20));
    let r = ok(outcome, "flood-forward");
    assert!(r.accuracy > 0.5, "the real answer: {}", r.accuracy);
    assert!(grown < 128 << 20, "the host grew by {} MiB reading a 384 MiB line", grown >> 20);
}

#[test]
fn descriptors_left_open_by_the_host_are_not_inherited() {
    let _g = lock();
    let path = data_root().join(format!("inherited-{}.txt", std::process::id()));
    let c_path = std::ffi::CString::new(path.display().to_string()).expect("no NUL");
    // Opened without O_CLOEXEC, as a careless library in the host would.
    // SAFETY: a plain open(2) of a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644) };
    assert!(fd >= 0, "open {}", path.display());
    let mut e = evaluator(json!({}));
    let outcome = eval(&mut e, "inherited-fd", &read("tests/hostile/inherited_fd.py"), &fmnist(), None);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    let mut written = String::new();
    std::fs::File::open(&path).expect("open").read_to_string(&mut written).expect("read");
    report("inherited_fd", format!("{}; bytes in the host's open file: {}", summary(&outcome), written.len()));
    let f = failure(outcome, "fd");
    assert!(written.is_empty(), "a candidate wrote {written:?} to {} through an inherited descriptor", path.display());
    assert!(!f.message.contains(&path.display().to_string()), "{}", f.message);
}

/// Processes whose command line or working directory contains `marker`
/// (a cold checker's command line names the candidate's request; a child of
/// the warm checker has the warm checker's command line, and works in the
/// candidate's directory).
fn processes_with(marker: &str) -> Vec<i32> {
    super::pids()
        .into_iter()
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cwd =
                std::fs::read_link(format!("/proc/{pid}/cwd")).map(|c| c.display().to_string()).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(marker) || cwd.contains(marker)
        })
        .collect()
}

const KILLED_HOST_SCRATCH: &str = "NAS_EVAL_TCH_TEST_KILLED_HOST_SCRATCH";

/// The host that `killing_the_host_leaves_nothing_running_or_on_disk` kills:
/// runs only when started by that test (in a child process), evaluating a
/// candidate that hangs and leaves a grandchild in its own session.
#[test]
fn killed_host_child() {
    let Some(scratch) = std::env::var_os(KILLED_HOST_SCRATCH) else { return };
    let ctx = HostContext { scratch_dir: Some(PathBuf::from(scratch)), ..HostContext::default() };
    let mut e = super::evaluator_in(json!({}), &ctx);
    let id = std::env::var("NAS_EVAL_TCH_TEST_MARKER").expect("marker");
    let outcome = eval(&mut e, &id, &read("tests/hostile/hang_forever.py"), &fmnist(), Some(600.0));
    panic!("the hanging candidate ended: {outcome:?}");
}

#[test]
fn killing_the_host_leaves_nothing_running_or_on_disk() {
    let _g = lock();
    let scratch = data_root().join("killed-host");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let marker = format!("hangmarker{}", std::process::id());
    let _ = fmnist();
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "attacks::killed_host_child", "--nocapture", "--test-threads=1"])
        .env(KILLED_HOST_SCRATCH, &scratch)
        .env("NAS_EVAL_TCH_TEST_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the child host");
    let host_pid = child.id();
    // Wait until the candidate and its grandchild run.
    let started = Instant::now();
    while processes_with(&marker).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(120), "the hanging candidate never started");
        assert!(child.try_wait().expect("wait").is_none(), "the child host ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL the host");
    child.wait().expect("reap the host");
    let killed = Instant::now();
    let mut left = processes_with(&marker);
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_with(&marker);
    }
    let full = full_isolation();
    let ctx = HostContext { scratch_dir: Some(scratch.clone()), ..HostContext::default() };
    if !full {
        // Without a PID namespace, what escaped the process group is killed
        // through its control group when the next evaluator starts.
        let e = super::evaluator_in(json!({}), &ctx);
        drop(e);
        std::thread::sleep(Duration::from_millis(500));
        left = processes_with(&marker);
    }
    for pid in &left {
        // SAFETY: signalling processes this test started (they carry its marker).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    report(
        "hang_forever (host SIGKILLed)",
        format!(
            "{} processes of the candidate left running {:.1} s after the kill",
            left.len(),
            killed.elapsed().as_secs_f64()
        ),
    );
    assert!(left.is_empty(), "still running after the host was killed: {left:?}");

    // What the dead host could not remove goes at the next start.
    let e = super::evaluator_in(json!({}), &ctx);
    let stale: Vec<_> = std::fs::read_dir(&scratch)
        .expect("scratch")
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("eval-tch-{host_pid}-")))
        .collect();
    assert!(stale.is_empty(), "the killed host's scratch is still there: {stale:?}");
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"] {
        let g = Path::new(root).join(format!("nas-eval-{host_pid}"));
        assert!(!g.exists(), "the killed host's control group {} is still there", g.display());
    }
    report("hang_forever (next start)", "the killed host's scratch directory and control groups were removed");
    drop(e);
}
