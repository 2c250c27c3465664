//! Crash safety: `nas run` killed with SIGKILL at seeded moments and resumed
//! (the torture harness in `nas_tests::torture`, a few kills here, 50 in
//! `cargo bench -p nas-tests --bench torture`), the disk filling up during a
//! commit, damaged run stores, two writers of one run, and reports of a run
//! while it is written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nas_host::store::Store;
use nas_tests::torture::{self, comparable, slow_scripted_server, Comparable, TortureConfig};
use nas_tests::{nas, nas_bin, records, run_dirs, s, text};

fn spawn_nas(dir: &Path, args: &[&str]) -> Child {
    Command::new(nas_bin())
        .args(args)
        .current_dir(dir)
        .env("NAS_HOME", dir.join(".nas-home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nas")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn committed(run: &Path) -> u64 {
    Store::open(run).ok().and_then(|st| st.last_iteration().ok()).unwrap_or(0)
}

/// The records of an uninterrupted run of `cfg` (instant evaluations).
fn reference(cfg: &TortureConfig) -> Vec<Comparable> {
    let (server, _) = slow_scripted_server(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = torture::write_config(dir.path(), &server, cfg);
    let out = nas(dir.path(), &["run", "--config", s(&file)]);
    assert!(out.status.success(), "{:?}", text(&out));
    records(&run_dirs(dir.path()).pop().expect("run")).iter().map(comparable).collect()
}

#[test]
fn killed_at_seeded_moments_and_resumed_the_records_equal_an_uninterrupted_run() {
    let kills = std::env::var("NAS_TORTURE_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(5);
    let report = torture::torture(&TortureConfig::for_kills(kills, 0x5eed_0017));
    eprintln!("{report:?}");
    assert!(report.total_kills() >= kills.min(3), "kills delivered: {:?}", report.kills);
    assert_eq!(report.lost, Vec::<u64>::new(), "iterations lost");
    assert_eq!(report.duplicated, Vec::<u64>::new(), "iterations recorded twice");
    assert_eq!(report.differing, Vec::<u64>::new(), "iterations that differ from the uninterrupted run's");
    assert!(report.memory_equal, "the memory tables differ");
}

/// A small tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(dir)])
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(dir.to_path_buf())).or_else(|| {
            eprintln!(
                "skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        })
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), s(&self.0)])
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_naming_the_file_keeps_every_commit_and_the_run_resumes_once_freed() {
    let cfg = TortureConfig { kills: 0, seed: 0, iterations: 40, llm_ms: 0, eval_ms: 0 };
    let wanted = reference(&cfg);
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&dir.path().join("runs"), "256k") else { return };
    let (server, _) = slow_scripted_server(0);
    let file = torture::write_config(dir.path(), &server, &cfg);
    let out = nas(dir.path(), &["run", "--config", s(&file)]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "the run should not fit in 256 KiB:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("disk is full") || stderr.contains("No space left on device"),
        "the error says the disk is full:\n{stderr}"
    );
    let run = run_dirs(dir.path()).pop().expect("the run directory was created");
    assert!(stderr.contains(s(&run)), "the error names the run's file or directory:\n{stderr}");
    assert!(stderr.contains("nas resume"), "the error says how to continue:\n{stderr}");
    // Every iteration committed before the disk filled is there, whole.
    let before: Vec<Comparable> = records(&run).iter().map(comparable).collect();
    assert!(!before.is_empty() && before.len() < wanted.len(), "{} of {} committed", before.len(), wanted.len());
    assert_eq!(before[..], wanted[..before.len()], "the records committed before the disk filled");
    eprintln!("disk full after {} of {} iterations", before.len(), wanted.len());

    // Space freed: the run continues where it stopped and ends as the
    // uninterrupted one did.
    fs.resize("64m");
    let out = nas(dir.path(), &["resume", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let after: Vec<Comparable> = records(&run).iter().map(comparable).collect();
    assert_eq!(after, wanted);
}

/// A finished run of `iterations` instant iterations in `dir`.
fn finished_run(dir: &Path, iterations: u64) -> PathBuf {
    let cfg = TortureConfig { kills: 0, seed: 0, iterations, llm_ms: 0, eval_ms: 0 };
    let (server, _) = slow_scripted_server(0);
    let file = torture::write_config(dir, &server, &cfg);
    let out = nas(dir, &["run", "--config", s(&file)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = run_dirs(dir).pop().expect("run");
    assert!(!run.join("run.sqlite-wal").exists(), "the store was checkpointed at the end");
    run
}

fn assert_names_the_damage(out: &Output, db: &Path, what: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(2), "{what}: exit code; stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains(s(db)), "{what}: the error names {}:\n{stderr}", db.display());
    assert!(stderr.contains("damaged"), "{what}: the error says the store is damaged:\n{stderr}");
}

#[test]
fn a_corrupted_or_truncated_store_is_named_by_resume_and_report_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = finished_run(dir.path(), 6);
    let whole = std::fs::read(run.join("run.sqlite")).expect("read store");
    assert!(whole.len() > 8192, "a store of several pages ({} bytes)", whole.len());
    let mut overwritten_header = whole.clone();
    overwritten_header[..100].copy_from_slice(&[0x5a; 100]);
    let mut garbled_pages = whole.clone();
    for (i, b) in garbled_pages[4096..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    let damages: [(&str, Vec<u8>); 4] = [
        ("header overwritten", overwritten_header),
        ("pages overwritten", garbled_pages),
        ("truncated to half", whole[..whole.len() / 2].to_vec()),
        ("truncated to 0 bytes", Vec::new()),
    ];
    for (what, bytes) in damages {
        let copy = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&copy).expect("mkdir");
        for f in ["config.toml", "plugins.json"] {
            std::fs::copy(run.join(f), copy.join(f)).expect("copy");
        }
        let db = copy.join("run.sqlite");
        std::fs::write(&db, &bytes).expect("write damaged store");
        let db = db.canonicalize().expect("abs");
        let out = nas(dir.path(), &["resume", s(&copy)]);
        assert_names_the_damage(&out, &db, &format!("resume, {what}"));
        assert_eq!(std::fs::read(&db).expect("read"), bytes, "resume, {what}: the file is unchanged");
        let out = nas(dir.path(), &["report", s(&copy), "--out", s(&dir.path().join("report"))]);
        assert_names_the_damage(&out, &db, &format!("report, {what}"));
        assert_eq!(std::fs::read(&db).expect("read"), bytes, "report, {what}: the file is unchanged");
    }
}

#[test]
fn a_second_resume_of_a_run_is_refused_naming_the_run_and_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hold = dir.path().join("hold");
    let cfg = TortureConfig { kills: 0, seed: 0, iterations: 3, llm_ms: 0, eval_ms: 0 };
    let (server, _) = slow_scripted_server(0);
    let file = torture::write_config(dir.path(), &server, &cfg);
    let config = std::fs::read_to_string(&file)
        .expect("read")
        .replace("delay_ms = 0", &format!("delay_ms = 0\nhold = \"{}\"", hold.display()));
    std::fs::write(&file, config).expect("write");

    // A run stopped by SIGKILL in its second evaluation.
    std::fs::write(&hold, "").expect("hold");
    let mut first = spawn_nas(dir.path(), &["run", "--config", s(&file)]);
    let run = {
        let mut found = None;
        wait_until("the run directory", Duration::from_secs(60), || {
            found = run_dirs(dir.path()).pop();
            found.is_some()
        });
        found.expect("run")
    };
    // While `nas run` writes it, a resume is refused too.
    std::thread::sleep(Duration::from_millis(300));
    let out = nas(dir.path(), &["resume", s(&run)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    first.kill().expect("kill -9");
    first.wait().expect("reap");

    // Two resumes at once: the first holds the run (its evaluation waits),
    // the second is refused at once with the run and the holder's pid.
    let mut a = spawn_nas(dir.path(), &["resume", s(&run)]);
    wait_until("the first resume to take the run", Duration::from_secs(60), || {
        std::fs::read_to_string(run.join("run.lock")).is_ok_and(|t| t.trim() == a.id().to_string())
    });
    let t0 = Instant::now();
    let out = nas(dir.path(), &["resume", s(&run)]);
    let (stdout, stderr) = text(&out);
    assert!(t0.elapsed() < Duration::from_secs(10), "refused at once, not after waiting");
    assert_eq!(out.status.code(), Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains(s(&run)), "the error names the run:\n{stderr}");
    assert!(stderr.contains(&format!("pid {}", a.id())), "the error names the holder:\n{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    // `nas cycles --resume` takes the same lock.
    let out = nas(dir.path(), &["cycles", "--resume", s(&run)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use") && stderr.contains(&format!("pid {}", a.id())), "{stderr}");
    assert_eq!(committed(&run), 0, "the refused resumes did nothing");

    // The first goes on and finishes alone; afterwards the run is free.
    std::fs::remove_file(&hold).expect("release");
    let status = a.wait().expect("wait");
    assert!(status.success(), "the first resume finishes");
    assert_eq!(records(&run).iter().map(|r| r.iteration).collect::<Vec<_>>(), [1, 2, 3]);
    let out = nas(dir.path(), &["resume", s(&run)]);
    assert!(out.status.success(), "a finished, unlocked run resumes (to nothing): {:?}", text(&out));
    assert_eq!(records(&run).len(), 3);
}

#[test]
fn report_reads_a_run_while_it_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TortureConfig { kills: 0, seed: 0, iterations: 12, llm_ms: 20, eval_ms: 120 };
    let (server, _) = slow_scripted_server(cfg.llm_ms);
    let file = torture::write_config(dir.path(), &server, &cfg);
    let mut child = spawn_nas(dir.path(), &["run", "--config", s(&file)]);
    let mut run = None;
    wait_until("the run directory", Duration::from_secs(60), || {
        run = run_dirs(dir.path()).pop();
        run.is_some()
    });
    let run = run.expect("run");
    let mut seen = Vec::new();
    let mut reports = 0;
    while child.try_wait().expect("wait").is_none() {
        let out_dir = dir.path().join(format!("report-{reports}"));
        let out = nas(dir.path(), &["report", s(&run), "--out", s(&out_dir)]);
        let (stdout, stderr) = text(&out);
        if child.try_wait().expect("wait").is_some() && reports > 0 {
            break;
        }
        assert!(out.status.success(), "report while the run is written:\n{stdout}\n{stderr}");
        let n: u64 = stdout
            .split(" iterations")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an iteration count in:\n{stdout}"));
        seen.push(n);
        reports += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "the run finished while it was read");
    assert!(seen.len() >= 3, "several reports during the run: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "counts never go back: {seen:?}");
    assert!(seen.iter().any(|&n| n > 0 && n < cfg.iterations), "a report saw the run half done: {seen:?}");
    assert_eq!(records(&run).len() as u64, cfg.iterations);
}
