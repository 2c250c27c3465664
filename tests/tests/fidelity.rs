//! Trusting the score: `nas fidelity` on recorded runs (the instant
//! evaluator told each candidate's accuracy at one epoch and after longer
//! training), its rank correlations against an independent computation,
//! stopping and resuming; seed repeatability; `[fidelity]` at the end of a
//! run; and the budgets `max_tokens`, `max_wall_time_s` and
//! `max_device_hours` stopping a run, resumable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nas_host::fidelity::{self, Retrain, Study};
use nas_host::records::Outcome;
use nas_host::store::Store;
use nas_llm_test_server::TestServer;
use nas_tests::stats::{kendall, spearman};
use nas_tests::{fence, nas, nas_bin, records, run_dirs, s, scripted, text, write_scripted_run};

/// A net the instant evaluator scores `one` at one epoch and `long` after 3.
fn net(i: usize, one: f64, long: f64, extra: &str) -> String {
    fence(&format!(
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        self.c = nn.Conv2d(1, {}, 3)\n        self.fc = nn.Linear({}, num_classes)\n        # accuracy: {one}\n        # accuracy@3: {long}\n{extra}    def forward(self, x):\n        return self.fc(self.c(x).flatten(1))\n",
        4 * i,
        100 * i
    ))
}

/// Distinct Improver answers, so that none is asked again as a repeat.
fn advice(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("```json\n{{\"reason\": \"R{i}\", \"improvement_suggestions\": \"S{i}\"}}\n```")).collect()
}

/// One-epoch and three-epoch accuracies of 12 candidates: mostly in order,
/// some swapped, two tied after longer training.
const ACCURACIES: [(f64, f64); 12] = [
    (0.61, 0.70),
    (0.82, 0.88),
    (0.55, 0.66),
    (0.74, 0.79),
    (0.68, 0.81),
    (0.90, 0.91),
    (0.58, 0.60),
    (0.77, 0.79),
    (0.64, 0.72),
    (0.86, 0.85),
    (0.71, 0.69),
    (0.52, 0.63),
];

fn recorded_run(dir: &Path, server: &TestServer, eval_settings: &str, more: &str) -> PathBuf {
    let log = dir.join("evaluated.log");
    let cfg = write_scripted_run(
        dir,
        server,
        "f",
        "max_iterations = 12\nnovelty_filter = false",
        &format!(
            "\n[evaluator]\nplugin = \"eval.instant\"\n[evaluator.settings]\nlog = \"{}\"\n{eval_settings}\n{more}",
            log.display()
        ),
    );
    let out = nas(dir, &["run", "--config", s(&cfg)]);
    assert!(out.status.success(), "{:?}", text(&out));
    run_dirs(dir).pop().expect("a run directory")
}

fn script(extra: &str) -> TestServer {
    let generator = ACCURACIES.iter().enumerate().map(|(i, (a, b))| net(i + 1, *a, *b, extra)).collect();
    scripted(generator, advice(12))
}

fn rows(run: &Path, study: Study) -> Vec<Retrain> {
    fidelity::read(run).expect("retrains").into_iter().filter(|r| r.study == study).collect()
}

fn fidelity_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("fidelity-") || l.starts_with("seeds-"))
        .map(String::from)
        .collect()
}

#[test]
fn fidelity_retrains_the_best_and_a_stratified_sample_resumes_after_a_kill_and_correlates_as_computed_by_hand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = script("");
    let run = recorded_run(dir.path(), &server, "epoch_delay_ms = 150\ndevice_seconds_per_epoch = 0.5", "");
    let log = dir.path().join("evaluated.log");

    // Stopped hard part-way: what was retrained stays recorded.
    let mut child = Command::new(nas_bin())
        .args(["fidelity", s(&run), "--epochs", "3", "--top", "3", "--sample", "4"])
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nas fidelity starts");
    let t0 = Instant::now();
    while rows(&run, Study::Fidelity).len() < 2 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let before = rows(&run, Study::Fidelity);
    assert!((2..7).contains(&before.len()), "killed part-way: {} retrained", before.len());

    // Continued: the rest is retrained, nothing twice.
    let out = nas(dir.path(), &["fidelity", s(&run), "--epochs", "3", "--top", "3", "--sample", "4"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("already recorded, not retrained"), "{stderr}");
    let all = rows(&run, Study::Fidelity);
    assert_eq!(all.len(), 7, "3 best and one from each of 4 strata");
    let lines = fidelity_lines(&log);
    for r in &before {
        let id = format!("fidelity-e3-s43-iteration-{}", r.iteration);
        assert_eq!(lines.iter().filter(|l| **l == id).count(), 1, "{id} trained once: {lines:?}");
    }
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "{lines:?}");

    // The plan: the 3 best at one epoch, then one from each stratum of the
    // other 9 ordered by accuracy (sizes 2, 2, 2, 3).
    let mut by_one: Vec<(u64, f64)> = ACCURACIES.iter().enumerate().map(|(i, (a, _))| (i as u64 + 1, *a)).collect();
    by_one.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<u64> = by_one[..3].iter().map(|x| x.0).collect();
    let mut chosen_top: Vec<u64> = all.iter().filter(|r| r.role == "top").map(|r| r.iteration).collect();
    chosen_top.sort_by_key(|i| top.iter().position(|t| t == i));
    assert_eq!(chosen_top, top);
    let rest: Vec<u64> = by_one[3..].iter().map(|x| x.0).collect();
    let sampled: Vec<usize> = all
        .iter()
        .filter(|r| r.role == "sample")
        .map(|r| rest.iter().position(|i| *i == r.iteration).expect("a sampled candidate is of the rest"))
        .collect();
    let mut strata: Vec<usize> = sampled.iter().map(|&p| [0, 0, 1, 1, 2, 2, 3, 3, 3][p]).collect();
    strata.sort_unstable();
    assert_eq!(strata, [0, 1, 2, 3], "one per stratum: positions {sampled:?}");

    // Each retraining ran at 3 epochs under the run's seed, as recorded.
    for r in &all {
        let (one, long) = ACCURACIES[r.iteration as usize - 1];
        assert_eq!(r.proxy_accuracy, one);
        assert_eq!(r.accuracy(), Some(long), "iteration {}", r.iteration);
        assert_eq!((r.epochs, r.seed), (3, 43));
        let Outcome::Ok { report } = &r.outcome else { panic!("trained") };
        assert_eq!(report.seed, Some(43));
        assert_eq!(r.device_seconds, 1.5, "the evaluator's device seconds, 3 epochs × 0.5");
    }

    // The correlations, against the same pairs computed by hand.
    let x: Vec<f64> = all.iter().map(|r| r.proxy_accuracy).collect();
    let y: Vec<f64> = all.iter().map(|r| r.accuracy().expect("trained")).collect();
    let (rho, tau) = (spearman(&x, &y), kendall(&x, &y));
    let summary = fidelity::fidelity_summaries(&fidelity::read(&run).expect("rows")).remove(0);
    let got_rho = summary.spearman.expect("rho");
    let got_tau = summary.kendall.expect("tau");
    assert!((got_rho.value - rho).abs() < 1e-12, "{got_rho:?} against {rho}");
    assert!((got_tau.value - tau).abs() < 1e-12, "{got_tau:?} against {tau}");
    assert!(got_rho.low <= rho && rho <= got_rho.high && got_rho.low < got_rho.high, "{got_rho:?}");
    assert!(got_tau.low <= tau && tau <= got_tau.high, "{got_tau:?}");
    assert!(stdout.contains(&format!("spearman rho  {rho:.3} [")), "{stdout}");
    assert!(stdout.contains(&format!("kendall tau   {tau:.3} [")), "{stdout}");
    // The interval is the same on every reading (fixed seed).
    let again = fidelity::fidelity_summaries(&fidelity::read(&run).expect("rows")).remove(0);
    assert_eq!(again.spearman, summary.spearman);

    // The report: the table, the moved ranks, the scatter, device time.
    let out = nas(dir.path(), &["report", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let html = std::fs::read_to_string(run.join("report/report.html")).expect("html");
    assert!(html.contains("Proxy fidelity") && html.contains("Rank moved most"), "fidelity section");
    assert!(html.contains(&format!("{rho:.3} [")), "rho in the page");
    let svg = std::fs::read_to_string(run.join("report/figures/fidelity_e3.svg")).expect("scatter");
    assert!(svg.contains("<circle") || svg.contains("<path"), "the scatter has points");
    assert!(run.join("report/figures/fidelity_e3.png").is_file());
    assert!(html.contains("Device time") && html.contains("fidelity s"), "device table");
    let md = std::fs::read_to_string(run.join("report/summary.md")).expect("md");
    let device = &md[md.find("## Device time").expect("device section")..];
    let device_row = device.lines().find(|l| l.starts_with("| f-")).expect("a run row");
    assert!(device_row.contains("| 10.5 |"), "7 retrainings × 1.5 device seconds:\n{device_row}");
}

#[test]
fn seed_repeatability_shows_the_spread_beside_the_best_and_records_each_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = script("        # seed_noise: 0.02\n");
    let run = recorded_run(dir.path(), &server, "", "");
    let out = nas(dir.path(), &["fidelity", s(&run), "--seeds", "4", "--seed-top", "2"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let all = rows(&run, Study::Seeds);
    assert_eq!(all.len(), 8, "2 candidates × 4 seeds");
    let recs = records(&run);
    let best = recs
        .iter()
        .filter_map(|r| r.outcome.accuracy().map(|a| (r.iteration, a)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("best");
    let mut seeds: Vec<u64> = all.iter().filter(|r| r.iteration == best.0).map(|r| r.seed).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [44, 45, 46, 47], "seeds after the run's 43");
    for r in &all {
        let Outcome::Ok { report } = &r.outcome else { panic!("trained") };
        assert_eq!(report.seed, Some(r.seed), "the record says which seed trained it");
        assert_eq!(r.epochs, 1);
    }
    let accs: Vec<f64> = all.iter().filter(|r| r.iteration == best.0).filter_map(Retrain::accuracy).collect();
    assert!(accs.iter().any(|a| (a - accs[0]).abs() > 1e-9), "different seeds, different accuracies: {accs:?}");
    let mean = accs.iter().sum::<f64>() / 4.0;
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    // Again: same seeds, nothing retrained.
    let out = nas(dir.path(), &["fidelity", s(&run), "--seeds", "4", "--seed-top", "2"]);
    assert!(out.status.success());
    assert!(text(&out).1.contains("8 of 8 already recorded"), "{:?}", text(&out));
    assert_eq!(fidelity_lines(&dir.path().join("evaluated.log")).len(), 8);

    let out = nas(dir.path(), &["report", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let md = std::fs::read_to_string(run.join("report/summary.md")).expect("md");
    let note = format!("Under 4 other seeds it trains to {:.2}% ± {:.2} pp", mean * 100.0, sd * 100.0);
    let best_at = md.find("## Best architecture").expect("best section");
    assert!(md[best_at..].contains(&note), "{note}\n{md}");
    assert!(md.contains("## Seed repeatability"), "{md}");
    let csv = std::fs::read_to_string(run.join("report/records.csv")).expect("csv");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    let col = header.iter().position(|h| *h == "train_seed").expect("train_seed column");
    assert_eq!(csv.lines().nth(1).expect("row").split(',').nth(col), Some("43"));
}

#[test]
fn fidelity_in_the_run_config_runs_when_the_search_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = script("");
    let run = recorded_run(
        dir.path(),
        &server,
        "",
        "\n[fidelity]\nenabled = true\nepochs = 3\ntop = 2\nsample = 2\nseeds = 2\nseed_top = 1\n",
    );
    assert_eq!(rows(&run, Study::Fidelity).len(), 4);
    assert_eq!(rows(&run, Study::Seeds).len(), 2);
    // A config whose studies cannot retrain anything is refused.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[fidelity]\nenabled = true\ntop = 0\nsample = 0\n").expect("write");
    let out = nas(dir.path(), &["run", "--config", s(&bad)]);
    nas_tests::assert_usage_error(&out, &["[fidelity] retrains nothing"]);
}

fn budget_run(dir: &Path, search: &str, eval_settings: &str) -> (PathBuf, String, TestServer) {
    let generator = (1..=12).map(|i| net(i, 0.5 + i as f64 / 100.0, 0.6, "")).collect();
    let server = scripted(generator, advice(12));
    let log = dir.join("evaluated.log");
    let cfg = write_scripted_run(
        dir,
        &server,
        "b",
        &format!("max_iterations = 12\nnovelty_filter = false\n{search}"),
        &format!(
            "\n[evaluator]\nplugin = \"eval.instant\"\n[evaluator.settings]\nlog = \"{}\"\n{eval_settings}\n",
            log.display()
        ),
    );
    let out = nas(dir, &["run", "--config", s(&cfg)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (run_dirs(dir).pop().expect("run"), stdout, server)
}

fn stop_reason(run: &Path) -> Option<String> {
    Store::open(run).expect("store").meta("stop_reason").expect("meta")
}

/// Raises a budget in the run's frozen config and resumes.
fn raise_and_resume(dir: &Path, run: &Path, from: &str, to: &str) -> String {
    let cfg = run.join("config.toml");
    let text_cfg = std::fs::read_to_string(&cfg).expect("config");
    assert!(text_cfg.contains(from), "{text_cfg}");
    std::fs::write(&cfg, text_cfg.replace(from, to)).expect("write");
    let out = nas(dir, &["resume", s(run)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn max_tokens_stops_the_run_at_the_budget_and_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (run, stdout, _server) = budget_run(dir.path(), "max_tokens = 100", "");
    assert!(stdout.contains("stopped: reached max_tokens"), "{stdout}");
    assert_eq!(stop_reason(&run).as_deref(), Some("reached max_tokens"));
    let recs = records(&run);
    let used: Vec<u64> = recs.iter().map(|r| r.tokens()).collect();
    let total: u64 = used.iter().sum();
    assert!(total >= 100 && total - used.last().expect("one") < 100, "stopped at the first iteration over: {used:?}");
    // Resumed as it is: still over budget, nothing more done.
    let out = nas(dir.path(), &["resume", s(&run)]);
    assert!(text(&out).0.contains("stopped: reached max_tokens"), "{:?}", text(&out));
    assert_eq!(records(&run).len(), recs.len());
    // With the budget raised, it continues from where it stopped.
    let stdout = raise_and_resume(dir.path(), &run, "max_tokens = 100", "max_tokens = 200");
    assert!(stdout.contains("stopped: reached max_tokens"), "{stdout}");
    let more = records(&run);
    assert!(more.len() > recs.len(), "{} then {}", recs.len(), more.len());
    assert_eq!(more[..recs.len()], recs[..], "the first iterations untouched");
    assert!(more.iter().map(|r| r.tokens()).sum::<u64>() >= 200);
}

#[test]
fn max_wall_time_stops_the_run_at_the_budget_and_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (run, stdout, _server) = budget_run(dir.path(), "max_wall_time_s = 0.5", "delay_ms = 200");
    assert!(stdout.contains("stopped: reached max_wall_time_s"), "{stdout}");
    assert_eq!(stop_reason(&run).as_deref(), Some("reached max_wall_time_s"));
    let recs = records(&run);
    let walls: Vec<f64> = recs.iter().map(|r| r.wall_seconds).collect();
    let total: f64 = walls.iter().sum();
    assert!(total >= 0.5 && total - walls.last().expect("one") < 0.5, "stopped at the first iteration over: {walls:?}");
    assert!(recs.len() < 12);
    let stdout = raise_and_resume(dir.path(), &run, "max_wall_time_s = 0.5", "max_wall_time_s = 600.0");
    assert!(stdout.contains("stopped: reached max_iterations"), "{stdout}");
    let more = records(&run);
    assert_eq!(more.len(), 12);
    assert_eq!(more[..recs.len()], recs[..]);
}

#[test]
fn max_device_hours_counts_the_evaluators_device_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (run, stdout, _server) = budget_run(dir.path(), "max_device_hours = 1.0", "device_seconds_per_epoch = 1500.0");
    assert!(stdout.contains("stopped: reached max_device_hours"), "{stdout}");
    assert_eq!(records(&run).len(), 3, "1500 s a candidate: 3 reach an hour");
    let out = nas(dir.path(), &["report", s(&run)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let md = std::fs::read_to_string(run.join("report/summary.md")).expect("md");
    assert!(md.contains("1.2500 of 1 (125.0%)"), "device hours against the budget:\n{md}");
}

/// Networks for the fixture's tiny dataset (1×8×8 images, two classes).
fn tiny_net(hidden: usize) -> String {
    fence(&format!(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c, h, w = in_shape\n        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, {hidden}), nn.ReLU(), nn.Linear({hidden}, num_classes))\n\n    def forward(self, x):\n        return self.body(x)\n"
    ))
}

#[test]
fn fidelity_through_the_real_evaluator_trains_longer_with_the_runs_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = scripted((1..=3).map(|i| tiny_net(4 * i)).collect(), advice(3));
    let cfg = write_scripted_run(
        dir.path(),
        &server,
        "tch",
        "max_iterations = 3\nnovelty_filter = false",
        "\n[evaluator]\nplugin = \"builtin:eval.tch-one-epoch\"\n[evaluator.settings]\ndevice = \"cpu\"\nmemory_limit_mb = 3072\ncpu_threads = 2\nmax_processes = 64\n",
    );
    let out = nas_tests::nas_with_evaluator(dir.path(), &["run", "--config", s(&cfg)]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = run_dirs(dir.path()).pop().expect("run");
    assert!(records(&run).iter().all(|r| r.outcome.accuracy().is_some()), "all three trained");

    let out = nas_tests::nas_with_evaluator(
        dir.path(),
        &["fidelity", s(&run), "--epochs", "3", "--top", "2", "--sample", "1"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let all = rows(&run, Study::Fidelity);
    assert_eq!(all.len(), 3);
    for r in &all {
        let Outcome::Ok { report } = &r.outcome else { panic!("trained: {:?}", r.outcome) };
        assert_eq!(report.seed, Some(43), "the run's seed reached the trainer");
        assert!((0.0..=1.0).contains(&report.accuracy));
        assert_eq!(r.epochs, 3);
    }
    let x: Vec<f64> = all.iter().map(|r| r.proxy_accuracy).collect();
    let y: Vec<f64> = all.iter().filter_map(Retrain::accuracy).collect();
    let summary = fidelity::fidelity_summaries(&fidelity::read(&run).expect("rows")).remove(0);
    match summary.spearman {
        Some(e) => assert!((e.value - spearman(&x, &y)).abs() < 1e-12, "{e:?}"),
        // A side without spread has no rank correlation.
        None => assert!(x.iter().all(|v| *v == x[0]) || y.iter().all(|v| *v == y[0]), "{x:?} {y:?}"),
    }
}
