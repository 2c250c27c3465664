//! The worker's JSON-lines protocol, spoken to the real binary. (Building
//! this test also builds `target/release/nas-eval-worker`, which the
//! evaluator plugin's tests use.)

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

#[test]
fn worker_answers_ping_and_reports_bad_requests_without_dying() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nas-eval-worker"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ask = |req: &str| -> serde_json::Value {
        writeln!(stdin, "{req}").expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    };
    assert_eq!(ask(r#"{"op":"ping"}"#)["ok"], true);
    let bad = ask(r#"{"op":"fly"}"#);
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap_or("").contains("bad request"), "{bad}");
    let missing = ask(
        r#"{"op":"load","train":"/nonexistent/ds/train.safetensors","test_images":"/nonexistent/t.safetensors","device":"cpu","mean":[0.5],"std":[0.5]}"#,
    );
    assert_eq!(missing["ok"], false);
    assert!(missing["error"].as_str().unwrap_or("").contains("/nonexistent/ds"), "{missing}");
    // No GPU here: a CUDA load says why, in the driver's words, not just "0 devices".
    let cuda = ask(
        r#"{"op":"load","train":"/nonexistent/ds/train.safetensors","test_images":"/nonexistent/t.safetensors","device":"cuda","mean":[0.5],"std":[0.5]}"#,
    );
    if cuda["ok"] == false && cuda["error"].as_str().unwrap_or("").contains("CUDA device(s)") {
        let e = cuda["error"].as_str().unwrap_or("");
        assert!(e.contains("libcuda.so.1") || e.contains("cuInit") || e.contains("the CUDA driver"), "{cuda}");
        assert!(e.contains("/dev/nvidia"), "names the device files: {cuda}");
    }
    let untrained = ask(
        r#"{"op":"train","model":"/x.pt","lr":0.01,"momentum":0.9,"weight_decay":0.0,"batch_size":8,"seed":1,"epochs":1,"augment":false,"num_classes":10}"#,
    );
    assert_eq!(untrained["ok"], false);
    assert_eq!(ask(r#"{"op":"ping"}"#)["ok"], true, "still alive");
    drop(stdin);
    assert!(child.wait().expect("exits").success());
}

#[test]
fn with_an_answer_descriptor_answers_carry_their_id_and_never_go_to_stdout() {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is valid for two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe returned two new descriptors that nothing else owns.
    let (answers_r, answers_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The read end must not leak into the worker.
    // SAFETY: fcntl on a descriptor owned here.
    unsafe { libc::fcntl(answers_r.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_nas-eval-worker"))
        .args(["--answer-fd", &answers_w.as_raw_fd().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts");
    drop(answers_w);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, r#"{{"op":"ping","id":"abc123"}}"#).expect("write");
    writeln!(stdin, r#"{{"op":"fly","id":"def456"}}"#).expect("write");
    drop(stdin);
    let answers: Vec<serde_json::Value> = BufReader::new(std::fs::File::from(answers_r))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("JSON"))
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!((answers[0]["id"].as_str(), answers[0]["ok"].as_bool()), (Some("abc123"), Some(true)));
    assert_eq!((answers[1]["id"].as_str(), answers[1]["ok"].as_bool()), (Some("def456"), Some(false)));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout).expect("read");
    assert!(stdout.is_empty(), "answers leaked to stdout: {stdout:?}");
    assert!(child.wait().expect("exits").success());
}
