//! The worker's JSON-lines protocol, spoken to the real binary. (Building
//! this test also builds `target/release/nas-eval-worker`, which the
//! evaluator plugin's tests use.)

use std::io::{BufRead, BufReader, Write};
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
    let missing = ask(r#"{"op":"load","dir":"/nonexistent/ds","device":"cpu","mean":[0.5],"std":[0.5]}"#);
    assert_eq!(missing["ok"], false);
    assert!(missing["error"].as_str().unwrap_or("").contains("/nonexistent/ds"), "{missing}");
    let untrained = ask(
        r#"{"op":"train","model":"/x.pt","lr":0.01,"momentum":0.9,"weight_decay":0.0,"batch_size":8,"seed":1,"epochs":1,"augment":false,"num_classes":10}"#,
    );
    assert_eq!(untrained["ok"], false);
    assert_eq!(ask(r#"{"op":"ping"}"#)["ok"], true, "still alive");
    drop(stdin);
    assert!(child.wait().expect("exits").success());
}
