//! # nas-eval-worker
//!
//! The training worker of the `eval.tch-one-epoch` evaluator. It is the only
//! process of `nas` that links libtorch (through `tch`). The evaluator plugin
//! starts it inside its sandbox, keeps it running across candidates and talks
//! to it with JSON lines on stdin/stdout:
//!
//! - `{"op":"load", ...}` loads a prepared dataset (safetensors `images` u8
//!   `[N,C,H,W]` and `labels` i64 `[N]`) once and keeps it resident, on the
//!   GPU when it fits;
//! - `{"op":"train", ...}` loads a TorchScript module, trains it for the
//!   configured epochs with SGD and cross-entropy, evaluates it on the test
//!   split and answers a report or a typed failure; with `save_to` it then
//!   saves the trained module there (TorchScript, eval mode, CPU tensors);
//! - `{"op":"ping"}` answers `{"ok":true}`.
//!
//! A candidate's error (a C++ exception, a panic inside tch, a non-finite
//! loss, an out-of-memory) is answered as a failure and the worker carries
//! on. Anything that kills the process (an abort inside libtorch) is seen by
//! the plugin as a closed pipe; its watchdog restarts the worker.
//!
//! Every line the worker writes on stdout is one JSON answer; logs go to
//! stderr.

mod train;

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Ping,
    Load(train::LoadRequest),
    Train(train::TrainRequest),
}

fn main() {
    // Errors inside libtorch surface as panics in some tch calls; they are
    // caught per request, so the default hook's message would only be noise.
    std::panic::set_hook(Box::new(|_| {}));
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut state = train::Worker::default();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            Ok(Request::Ping) => json!({"ok": true, "torch_threads": tch::get_num_threads()}),
            Ok(Request::Load(req)) => {
                answer_of(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.load(&req))))
            }
            Ok(Request::Train(req)) => {
                answer_of(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.train(&req))))
            }
        };
        let text = answer.to_string();
        if writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_err() {
            break;
        }
    }
}

fn answer_of(result: std::thread::Result<Value>) -> Value {
    match result {
        Ok(v) => v,
        Err(payload) => {
            let msg = panic_message(&payload);
            json!({"ok": false, "failure": train::failure_from_message("train", &msg)})
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic with a non-text payload".to_string()
    }
}
