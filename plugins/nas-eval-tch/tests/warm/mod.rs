//! The warm checker (`warm_checker`, on by default): each candidate is
//! checked in a fresh fork of a sandboxed Python that imported torch once
//! (the zygote). A candidate must not reach the next candidate or the
//! zygote; a zygote that dies is not the candidate's failure; a hanging
//! candidate is killed at its time limit with everything it started.
//! See `docs/sandbox.md` ("The warm checker").

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nas_plugin_api::*;
use serde_json::json;

use super::{data_root, eval, evaluator_in, failure, fmnist, lock, ok, pids, read};

/// A fresh scratch directory for one test's evaluator (its processes are
/// found by it).
fn scratch(name: &str) -> PathBuf {
    let d = data_root().join(format!("warm-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch");
    d
}

/// A small evaluator (short training) below `scratch`.
fn small_evaluator(scratch: &Path, extra: serde_json::Value) -> Box<dyn Evaluator> {
    let ctx = HostContext { scratch_dir: Some(scratch.to_path_buf()), ..HostContext::default() };
    let mut config = json!({"max_train_examples": 500, "max_test_examples": 200});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    evaluator_in(config, &ctx)
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The zygotes of the evaluator whose scratch directory is `scratch`.
fn zygotes(scratch: &Path) -> Vec<i32> {
    let needle = scratch.display().to_string();
    pids().into_iter().filter(|&p| cmdline(p).contains("zygote.py") && cmdline(p).contains(&needle)).collect()
}

/// The one zygote of `scratch`'s evaluator.
fn zygote(scratch: &Path) -> i32 {
    let z = zygotes(scratch);
    assert_eq!(z.len(), 1, "one zygote serves the evaluator: {z:?}");
    z[0]
}

/// Processes whose working directory contains `marker` (a candidate's
/// directory is named after its id; forks of the zygote share its command line).
fn processes_in(marker: &str) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c.display().to_string().contains(marker))
        })
        .collect()
}

/// The children of `pid` (every thread's).
fn children(pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(text.split_whitespace().map(str::to_string));
        }
    }
    out
}

#[test]
fn a_candidate_cannot_affect_the_next_candidate_or_the_zygote() {
    let _g = lock();
    let dir = scratch("tamper");
    let mut e = small_evaluator(&dir, json!({}));
    let mark = format!("m{}", std::process::id());
    let probe = read("tests/hostile/probe_previous.py").replace("@MARK@", &mark);
    let tamper = read("tests/hostile/tamper_next.py").replace("@MARK@", &mark);

    // The probe passes on a clean checker, through the warm path.
    let r = ok(eval(&mut e, "probe-first", &probe, &fmnist(), None), "probe-first");
    assert_eq!(r.extra["check"], "warm", "{:?}", r.extra);
    let z = zygote(&dir);

    let f = failure(eval(&mut e, &format!("tamper-{mark}"), &tamper, &fmnist(), None), "tamper");
    eprintln!("tamper_next: {}", f.message);
    let (done, refused) = f.message.split_once(" | refused: ").expect("the candidate's report");
    assert!(!done.contains("wrote"), "a write outside its own directory worked: {done}");
    for what in ["planted-", "cand-next-", "/tmp/", "/dev/shm/", "torch/planted_"] {
        assert!(refused.contains(what), "{what} not tried: {refused}");
    }
    for what in ["/mem", "/environ", "/fd/3", "ptrace"] {
        assert!(refused.contains(what), "reaching the zygote ({what}) was not refused: {}", f.message);
    }
    assert!(f.message.starts_with("importing the code raised RuntimeError: parent 1;"), "{}", f.message);
    assert_eq!(zygote(&dir), z, "the same zygote serves on");
    assert!(processes_in(&format!("cand-tamper-{mark}")).is_empty(), "the process it left is gone");
    assert!(children(z).is_empty(), "nothing left in the zygote's namespace: {:?}", children(z));
    assert!(!dir.join(format!("planted-{mark}")).exists());

    // The next candidate sees none of it, from the same zygote.
    let r = ok(eval(&mut e, "probe-next", &probe, &fmnist(), None), "probe-next");
    assert_eq!(r.extra["check"], "warm", "{:?}", r.extra);
    assert_eq!(zygote(&dir), z, "checked by the same zygote");
    assert!(r.accuracy > 0.3, "a small MLP after 500 images: {}", r.accuracy);
    drop(e);
    assert!(zygotes(&dir).is_empty(), "the zygote goes with the evaluator");
}

#[test]
fn a_candidate_that_signals_the_zygote_is_recorded_honestly_and_the_next_is_checked_warm() {
    let _g = lock();
    let dir = scratch("kill-parent");
    let mut e = small_evaluator(&dir, json!({}));
    let r = ok(eval(&mut e, "first", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "first");
    assert_eq!(r.extra["check"], "warm");
    let z = zygote(&dir);
    // `os.kill(os.getppid(), SIGKILL)`: its parent is the zygote, the first
    // process of the namespace, which the kernel does not let it signal.
    let f = failure(eval(&mut e, "kill-parent", &read("tests/hostile/kill_host.py"), &fmnist(), None), "kill-parent");
    assert_eq!(f.kind, FailureKind::Contract, "the signal is dropped; the file defines no Net: {f:#?}");
    assert_eq!(zygote(&dir), z, "the zygote survived");
    let r = ok(eval(&mut e, "after", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "after");
    assert_eq!(r.extra["check"], "warm");
    assert_eq!(zygote(&dir), z);
}

#[test]
fn a_zygote_that_dies_during_a_check_is_not_the_candidates_failure() {
    let _g = lock();
    let dir = scratch("zygote-dies");
    let mut e = small_evaluator(&dir, json!({}));
    let r = ok(eval(&mut e, "first", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "first");
    assert_eq!(r.extra["check"], "warm");
    let z = zygote(&dir);

    // Kill the zygote (SIGKILL from outside, as a crash) while the candidate
    // runs in its child; the candidate is then checked cold and scored.
    let source = read("tests/candidates/slow_import.py").replace("@SECONDS@", "3");
    let killer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                let found = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|inst| inst.path().join("checks/cand-slow/started").exists());
                if found {
                    // SAFETY: signalling the zygote this test's evaluator started.
                    unsafe { libc::kill(z, libc::SIGKILL) };
                    return true;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let r = ok(eval(&mut e, "slow", &source, &fmnist(), None), "slow");
    assert!(killer.join().expect("killer"), "the check never started");
    assert_eq!(r.extra["check"], "cold", "checked again by the cold checker: {:?}", r.extra);
    assert!(r.accuracy > 0.3, "{}", r.accuracy);

    // The next check starts a new zygote.
    let r = ok(eval(&mut e, "next", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "next");
    assert_eq!(r.extra["check"], "warm", "{:?}", r.extra);
    assert_ne!(zygote(&dir), z, "a new zygote");
}

#[test]
fn a_hanging_candidate_in_the_warm_checker_is_killed_at_its_time_limit_with_all_it_started() {
    let _g = lock();
    let dir = scratch("hang");
    let mut e = small_evaluator(&dir, json!({}));
    let r = ok(eval(&mut e, "first", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "first");
    assert_eq!(r.extra["check"], "warm");
    let z = zygote(&dir);
    // It hangs, with a grandchild in its own session that hangs too.
    let started = Instant::now();
    let f = failure(eval(&mut e, "hang", &read("tests/hostile/hang_forever.py"), &fmnist(), Some(8.0)), "hang");
    let took = started.elapsed();
    assert_eq!(f.kind, FailureKind::Timeout, "{f:#?}");
    assert!(took >= Duration::from_secs(7) && took < Duration::from_secs(14), "stopped after {took:?}");
    assert!(processes_in("cand-hang").is_empty(), "left running: {:?}", processes_in("cand-hang"));
    assert_eq!(zygote(&dir), z, "the zygote serves on");
    assert!(children(z).is_empty(), "nothing left in the zygote's namespace: {:?}", children(z));
    let r = ok(eval(&mut e, "after", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "after");
    assert_eq!(r.extra["check"], "warm");
}

#[test]
fn the_warm_checker_is_a_setting() {
    let _g = lock();
    let dir = scratch("cold");
    let mut e = small_evaluator(&dir, json!({"warm_checker": false}));
    let r = ok(eval(&mut e, "cold", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "cold");
    assert_eq!(r.extra["check"], "cold", "{:?}", r.extra);
    assert!(r.extra["check_seconds"].as_f64().is_some_and(|s| s > 0.0), "{:?}", r.extra);
    assert!(zygotes(&dir).is_empty(), "no zygote when it is off");
}

#[test]
fn memory_and_fork_bombs_in_the_warm_checker_end_as_their_kind_and_the_zygote_serves_on() {
    let _g = lock();
    let dir = scratch("bombs");
    let mut e = small_evaluator(&dir, json!({}));
    let r = ok(eval(&mut e, "first", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "first");
    assert_eq!(r.extra["check"], "warm");
    let z = zygote(&dir);
    // The memory limit covers the zygote and its child together: the
    // kernel's OOM killer takes the child (the larger), not the zygote.
    let f = failure(eval(&mut e, "memory-bomb", &read("tests/hostile/memory_bomb.py"), &fmnist(), Some(60.0)), "mem");
    assert_eq!(f.kind, FailureKind::OutOfMemory, "{f:#?}");
    assert_eq!(zygote(&dir), z, "the zygote survived the memory bomb");
    let f = failure(eval(&mut e, "fork-bomb", &read("tests/hostile/fork_bomb.py"), &fmnist(), Some(10.0)), "fork");
    assert!(matches!(f.kind, FailureKind::Timeout | FailureKind::Sandbox), "{f:#?}");
    assert_eq!(zygote(&dir), z, "the zygote survived the fork bomb");
    assert!(children(z).is_empty(), "nothing left in the zygote's namespace: {:?}", children(z));
    let r = ok(eval(&mut e, "after", &read("tests/candidates/paper_noargs.py"), &fmnist(), None), "after");
    assert_eq!(r.extra["check"], "warm");
    assert_eq!(zygote(&dir), z);
}
