//! # nas-eval-worker
//!
//! The training worker of the `eval.tch-one-epoch` evaluator. It is the only
//! process of `nas` that links libtorch (through `tch`). The evaluator plugin
//! starts it inside its sandbox, keeps it running across candidates and talks
//! to it with JSON lines: requests on stdin, answers on the descriptor given
//! by `--answer-fd N` (the evaluator passes a pipe at 3; without the flag,
//! stdout). The candidate's TorchScript runs in this process and can print
//! to stdout (TorchScript's `print`), so with `--answer-fd` stdout is only a
//! log and never carries an answer. Each answer carries the `id` of its
//! request.
//!
//! - `{"op":"load", ...}` loads the training split (safetensors `images` u8
//!   `[N,C,H,W]` and `labels` i64 `[N]`) and the test images (a safetensors
//!   file with `images` only: the worker never sees a test label) once and
//!   keeps them resident, on the GPU when they fit;
//! - `{"op":"train", ...}` loads a TorchScript module, trains it for the
//!   configured epochs with SGD and cross-entropy, runs it on the test images
//!   in the order the request gives (`test_order`) and answers a report with
//!   its predictions (class indices, in that order) or a typed failure; with
//!   `save_to` it then saves the trained module there (TorchScript, eval
//!   mode, CPU tensors); the evaluator scores the predictions;
//! - `{"op":"ping"}` answers `{"ok":true}`.
//!
//! A candidate's error (a C++ exception, a panic inside tch, a non-finite
//! loss, an out-of-memory) is answered as a failure and the worker carries
//! on. Anything that kills the process (an abort inside libtorch) is seen by
//! the plugin as a closed pipe; its watchdog restarts the worker.

mod cuda_probe;
mod train;

use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, RawFd};

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
    let mut answers: Box<dyn Write> = match answer_fd() {
        Ok(Some(fd)) => {
            // SAFETY: the descriptor was handed to this process for its
            // answers (the evaluator's pipe); nothing else here owns it.
            Box::new(unsafe { std::fs::File::from_raw_fd(fd) })
        }
        Ok(None) => Box::new(std::io::stdout()),
        Err(e) => {
            eprintln!("nas-eval-worker: {e}");
            std::process::exit(2);
        }
    };
    let stdin = std::io::stdin();
    let mut state = train::Worker::default();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let (id, request) = match serde_json::from_str::<Value>(&line) {
            Ok(v) => (v.get("id").cloned(), serde_json::from_value::<Request>(v)),
            Err(e) => (None, Err(e)),
        };
        let mut answer = match request {
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            Ok(Request::Ping) => json!({"ok": true, "torch_threads": tch::get_num_threads()}),
            Ok(Request::Load(req)) => {
                answer_of(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.load(&req))))
            }
            Ok(Request::Train(req)) => {
                answer_of(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.train(&req))))
            }
        };
        if let (Some(id), Some(obj)) = (id, answer.as_object_mut()) {
            obj.insert("id".into(), id);
        }
        let text = answer.to_string();
        if writeln!(answers, "{text}").and_then(|()| answers.flush()).is_err() {
            break;
        }
    }
}

/// The `--answer-fd N` argument, if given.
fn answer_fd() -> Result<Option<RawFd>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, n] if flag == "--answer-fd" => {
            n.parse::<RawFd>().map(Some).map_err(|_| format!("--answer-fd takes a descriptor number, not `{n}`"))
        }
        _ => Err(format!("usage: nas-eval-worker [--answer-fd N]; got {args:?}")),
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
