//! `nas compare` and `nas report` on runs recorded here: the `nas` binary
//! against a loopback chat server answering from a script, with the
//! instant evaluator fixture. The numbers in the table, the exports and the
//! page are checked against the run stores; the figures are decoded; the
//! page is opened in headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use nas_host::records::IterationRecord;
use nas_llm_test_server::{RecordedRequest, Step, TestServer};
use nas_tests::{nas, records, scripted_config, text};
use serde_json::Value;

const ARMS: [&str; 3] = ["window-k5", "none", "no-improver"];
const SEEDS: [u64; 2] = [1, 2];
const ITERATIONS: u64 = 5;

fn net(body: &str) -> String {
    format!("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n{body}\n    def forward(self, x):\n        return self.fc(self.features(x).flatten(1))\n")
}

/// Distinct architectures by attempt; `None` is an answer without code.
fn design(attempt: u64) -> Option<String> {
    let bodies = [
        Some("        self.features = nn.Identity()\n        self.fc = nn.Linear(64, num_classes)"),
        Some("        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())\n        self.fc = nn.Linear(16 * 64, num_classes)"),
        None,
        Some("        self.features = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))\n        self.fc = nn.Linear(32 * 16, num_classes)"),
        Some("        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())\n        self.fc = nn.Linear(4096, num_classes)\n        # fail: shape: mat1 and mat2 shapes cannot be multiplied (128x288 and 4096x10)"),
    ];
    bodies[((attempt.max(1) - 1) % bodies.len() as u64) as usize].map(net)
}

/// Generator answers vary with the run's seed (the request's seed is the
/// run seed + 16 × iteration) and score higher when the Improver's advice
/// reached the prompt; the Improver always gives the same advice.
fn start_server() -> TestServer {
    let server = TestServer::start();
    server.set_responder(|req: &RecordedRequest| {
        let (role, attempt) = nas_tests::role_and_attempt(&req.body);
        let attempt = attempt.max(1);
        if role == "generator" {
            let user = req.body["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str());
            let user = user.unwrap_or("");
            let seed = req.body["seed"].as_u64().unwrap_or(0).saturating_sub(16 * attempt);
            let advised = user.contains("S-widen");
            Some(Step::reply(match design(attempt) {
                Some(code) => {
                    let acc = 0.50 + 0.07 * attempt as f64 + 0.01 * seed as f64 + if advised { 0.05 } else { 0.0 };
                    format!("```python\n{code}        # accuracy: {acc:.4}\n```")
                }
                None => "I would try a deeper network with residual connections next.".into(),
            }))
        } else {
            // A diagnosis of its own per attempt: a repeated one is not memory.
            Some(Step::reply(format!(
                "```json\n{{\"reason\": \"underfits after attempt {attempt}\", \"improvement_suggestions\": \"S-widen the first block to {} channels\"}}\n```",
                32 + 16 * attempt
            )))
        }
    });
    server
}

fn write_files(dir: &Path, server: &TestServer) -> PathBuf {
    let base = scripted_config(server, "\n[evaluator]\nplugin = \"eval.instant\"\n");
    std::fs::write(dir.join("base.toml"), base).expect("write base");
    let compare = format!(
        r#"
[compare]
name = "memory"
base = "base.toml"
seeds = [1, 2]
jobs = 2
max_iterations = {ITERATIONS}
output_dir = "cmp"

[[arm]]
name = "none"
memory = {{ plugin = "memory.none" }}

[[arm]]
name = "no-improver"
search = {{ use_improver = false }}
"#
    );
    let path = dir.join("compare.toml");
    std::fs::write(&path, compare).expect("write compare");
    path
}

fn best_so_far(recs: &[IterationRecord], t: usize) -> f64 {
    recs.iter().take(t).filter_map(|r| r.outcome.accuracy()).fold(0.0, f64::max)
}

/// Wilson's interval, written out independently of the host's.
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let c = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let h = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (if k == 0.0 { 0.0 } else { c - h }, if k == n { 1.0 } else { c + h })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number, got {v}"))
}

/// Decodes a PNG and checks it is a real picture: the size asked for,
/// many colours, neither blank nor solid.
fn check_png(path: &Path, size: Option<(u32, u32)>, min_ink: f64) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display())).to_rgb8();
    if let Some(size) = size {
        assert_eq!(img.dimensions(), size, "{}", path.display());
    }
    let total = (img.width() * img.height()) as f64;
    let ink = img.pixels().filter(|p| p.0.iter().any(|c| *c < 235)).count() as f64 / total;
    let colours: BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(ink > min_ink && ink < 0.9, "{}: {:.1}% of the pixels are ink", path.display(), ink * 100.0);
    assert!(colours.len() > 20, "{}: only {} colours", path.display(), colours.len());
}

/// Parses an SVG and counts what it draws.
fn check_svg(path: &Path, title: &str) {
    let text = std::fs::read_to_string(path).expect("read svg");
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let shapes = doc
        .descendants()
        .filter(|n| ["polyline", "path", "circle", "rect", "line", "polygon"].contains(&n.tag_name().name()))
        .count();
    assert!(shapes > 10, "{}: {shapes} shapes", path.display());
    let texts: String = doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
    assert!(texts.contains(title), "{} lacks its title {title:?}", path.display());
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("headless Chromium is needed (Debian's `chromium`; scripts/setup.sh installs it)");
}

fn headless(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(args)
        .env("HOME", dir)
        .output()
        .expect("chromium runs")
}

#[test]
fn compare_runs_every_arm_and_seed_and_its_numbers_match_the_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server();
    let compare = write_files(dir.path(), &server);
    let file = compare.to_str().expect("utf-8");

    let out = nas(dir.path(), &["compare", file]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("added baseline: window-k5"), "{stderr}");
    let cmp = dir.path().join("cmp");

    // Every arm ran every seed to the budget, as a normal run.
    let mut recs: BTreeMap<(String, u64), Vec<IterationRecord>> = BTreeMap::new();
    for arm in ARMS {
        for seed in SEEDS {
            let run = cmp.join(arm).join(format!("seed-{seed}"));
            let r = records(&run);
            assert_eq!(r.len() as u64, ITERATIONS, "{}", run.display());
            let cfg = std::fs::read_to_string(run.join("config.toml")).expect("frozen config");
            assert!(cfg.contains(&format!("seed = {seed}")), "{cfg}");
            recs.insert((arm.to_string(), seed), r);
        }
    }
    // The arms differ as configured: no Improver, no advice, lower scores.
    let advised = |arm: &str| recs[&(arm.to_string(), 1)].iter().any(|r| r.improver_prompt.is_some());
    assert!(advised("window-k5") && advised("none") && !advised("no-improver"));
    assert!(best_so_far(&recs[&("no-improver".into(), 1)], 5) < best_so_far(&recs[&("window-k5".into(), 1)], 5));

    // The comparison's numbers are the records'.
    let report = cmp.join("report");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).expect("summary")).expect("json");
    let comparison = &summary["comparison"];
    assert_eq!(comparison["baseline"], "window-k5");
    let arms = comparison["arms"].as_array().expect("arms");
    assert_eq!(arms.iter().map(|a| a["name"].as_str().unwrap_or("")).collect::<Vec<_>>(), ARMS);
    let html = std::fs::read_to_string(report.join("report.html")).expect("html");
    let md = std::fs::read_to_string(report.join("summary.md")).expect("markdown");
    for a in arms {
        let name = a["name"].as_str().expect("name");
        let runs: Vec<&Vec<IterationRecord>> = SEEDS.iter().map(|s| &recs[&(name.to_string(), *s)]).collect();
        let bests: Vec<f64> = runs.iter().map(|r| best_so_far(r, r.len())).collect();
        let mean_best = bests.iter().sum::<f64>() / bests.len() as f64;
        assert!(close(f(&a["best_accuracy"]["value"]), mean_best), "{name}: {a}");
        assert!(f(&a["best_accuracy"]["low"]) <= mean_best && mean_best <= f(&a["best_accuracy"]["high"]));
        for cp in a["best_at"].as_array().expect("checkpoints") {
            let t = cp["iteration"].as_u64().expect("t") as usize;
            let m = runs.iter().map(|r| best_so_far(r, t)).sum::<f64>() / runs.len() as f64;
            assert!(close(f(&cp["best"]["value"]), m), "{name} at {t}: {cp}");
        }
        let n: usize = runs.iter().map(|r| r.len()).sum();
        let valid = runs.iter().flat_map(|r| r.iter()).filter(|r| r.outcome.accuracy().is_some()).count();
        let (lo, hi) = wilson(valid as f64, n as f64);
        assert!(close(f(&a["valid_rate"]["value"]), valid as f64 / n as f64), "{a}");
        assert!(close(f(&a["valid_rate"]["low"]), lo) && close(f(&a["valid_rate"]["high"]), hi), "{a}");
        let good =
            runs.iter().flat_map(|r| r.iter()).filter(|r| r.outcome.accuracy().is_some_and(|x| x >= 0.4)).count();
        assert!(close(f(&a["at_least_40"]["value"]), good as f64 / n as f64));
        let tokens: u64 = runs.iter().flat_map(|r| r.iter()).map(|r| r.tokens()).sum();
        assert!(close(f(&a["tokens"]["value"]), tokens as f64 / runs.len() as f64), "{a}");
        let curve = a["curve"].as_array().expect("curve");
        assert_eq!(curve.len() as u64, ITERATIONS);
        for (i, e) in curve.iter().enumerate() {
            let m = runs.iter().map(|r| best_so_far(r, i + 1)).sum::<f64>() / runs.len() as f64;
            assert!(close(f(&e["value"]), m));
        }
        // ... and the page and the summary show them.
        let shown = format!("{:.2}", mean_best * 100.0);
        assert!(html.contains(&shown) && md.contains(&shown), "{name}: {shown} not in the report");
        let vs = &a["versus_baseline"];
        if name == "window-k5" {
            assert!(vs.is_null());
        } else {
            let base: Vec<f64> = SEEDS
                .iter()
                .map(|s| recs[&("window-k5".to_string(), *s)].as_slice())
                .map(|r| best_so_far(r, 5))
                .collect();
            let d = mean_best - base.iter().sum::<f64>() / base.len() as f64;
            assert!(close(f(&vs["best_accuracy"]["value"]), d), "{vs}");
        }
    }
    assert!(stdout.contains("window-k5 (baseline)") && stdout.contains("no-improver"), "{stdout}");

    // The CSV and JSON exports hold every iteration as recorded.
    let mut csv = csv::Reader::from_path(report.join("records.csv")).expect("csv");
    let headers = csv.headers().expect("headers").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (c_group, c_seed, c_it, c_acc, c_kind) =
        (col("group"), col("seed"), col("iteration"), col("accuracy"), col("failure_kind"));
    let mut rows = 0;
    for row in csv.records() {
        let row = row.expect("row");
        let seed: u64 = row[c_seed].parse().expect("seed");
        let it: usize = row[c_it].parse().expect("iteration");
        let rec = &recs[&(row[c_group].to_string(), seed)][it - 1];
        match rec.outcome.accuracy() {
            Some(a) => assert!(close(row[c_acc].parse::<f64>().expect("accuracy"), a)),
            None => {
                assert_eq!(&row[c_acc], "");
                assert_eq!(Some(row[c_kind].to_string()), rec.outcome.failure_kind());
            }
        }
        rows += 1;
    }
    assert_eq!(rows as u64, ITERATIONS * 6);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("records.json")).expect("json")).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(rows));
    let full = std::fs::read_to_string(report.join("records-full.jsonl")).expect("jsonl");
    assert_eq!(full.lines().count(), rows);
    let first: Value = serde_json::from_str(full.lines().next().expect("a line")).expect("json line");
    assert!(first["record"]["generator_prompt"].is_array());
    let table = std::fs::read_to_string(report.join("comparison.csv")).expect("comparison.csv");
    assert_eq!(table.lines().count(), 4, "{table}");

    // iterations.md: each run's section has a row per iteration, in order,
    // its outcome as recorded.
    let iterations = std::fs::read_to_string(report.join("iterations.md")).expect("iterations.md");
    for ((arm, seed), recs) in &recs {
        let label = format!("{arm}/seed-{seed}");
        let section = iterations
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{label}\n")))
            .unwrap_or_else(|| panic!("no section {label} in\n{iterations}"));
        let row_lines: Vec<&str> =
            section.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| iteration |")).collect();
        assert_eq!(row_lines.len(), recs.len(), "{section}");
        for (rec, line) in recs.iter().zip(&row_lines) {
            let shown = match (rec.outcome.accuracy(), rec.outcome.failure_kind()) {
                (Some(a), _) => format!("| {} | trained: {:.2}% |", rec.iteration, a * 100.0),
                (None, Some(kind)) if kind == "duplicate" => format!("| {} | duplicate of ", rec.iteration),
                (None, kind) => format!("| {} | failed ({}): ", rec.iteration, kind.expect("a failure kind")),
            };
            assert!(line.starts_with(&shown), "{label}: {line:?} is not {shown:?}");
        }
    }

    // The figures are real pictures.
    for (name, title) in [
        ("best_so_far_bands", "Best so far: mean over seeds"),
        ("accuracy", "Accuracy per iteration"),
        ("valid_rate", "Valid rate over the last 5"),
        ("failures", "Failures by kind"),
        ("pareto_params", "Accuracy against parameters"),
        ("pareto_flops", "Accuracy against FLOPs"),
    ] {
        check_png(&report.join("figures").join(format!("{name}.png")), Some((1200, 675)), 0.01);
        check_svg(&report.join("figures").join(format!("{name}.svg")), title);
        assert!(html.contains(&format!("id=\"fig-{name}\"")), "{name} is not on the page");
    }

    // The page is self-contained and a browser draws it.
    assert!(!html.contains("src=\"http") && !html.contains("<script"), "the page fetches nothing");
    let url = format!("file://{}", report.join("report.html").display());
    let dom = headless(dir.path(), &["--dump-dom", &url]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom_text.matches("<svg").count(), 6, "Chromium parsed six figures");
    assert!(dom_text.contains("Comparison against window-k5"));
    let shot = dir.path().join("shot.png");
    let out = headless(dir.path(), &["--window-size=1280,2400", &format!("--screenshot={}", shot.display()), &url]);
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    check_png(&shot, Some((1280, 2400)), 0.03);

    // Running it again keeps finished runs and asks the LLM nothing.
    let asked = server.requests().len();
    let out = nas(dir.path(), &["compare", file]);
    let (stdout2, stderr2) = text(&out);
    assert!(out.status.success(), "{stdout2}\n{stderr2}");
    assert!(!stderr2.contains("start ") && !stderr2.contains("resume "), "{stderr2}");
    assert_eq!(server.requests().len(), asked);
    assert_eq!(stdout2.lines().next(), stdout.lines().next());

    // A run cut short is resumed, from its journal, to the same records.
    let cut = cmp.join("none").join("seed-2");
    let before = records(&cut);
    {
        let db = rusqlite::Connection::open(cut.join("run.sqlite")).expect("sqlite");
        let last = ITERATIONS as i64;
        db.execute("DELETE FROM iterations WHERE iteration = ?1", [last]).expect("delete");
        db.execute("DELETE FROM memory WHERE iteration = ?1", [last]).expect("delete");
        let entry: String =
            db.query_row("SELECT entry FROM memory WHERE iteration = ?1", [last - 1], |r| r.get(0)).expect("entry");
        let mut entry: Value = serde_json::from_str(&entry).expect("json");
        entry["outcome"] = Value::Null;
        db.execute("UPDATE memory SET entry = ?2 WHERE iteration = ?1", rusqlite::params![last - 1, entry.to_string()])
            .expect("reopen");
        db.execute("UPDATE meta SET value = 'interrupted' WHERE key = 'status'", []).expect("status");
    }
    let out = nas(dir.path(), &["compare", file, "--jobs", "1"]);
    let (_, stderr3) = text(&out);
    assert!(out.status.success(), "{stderr3}");
    assert!(stderr3.contains("resume none seed 2"), "{stderr3}");
    assert_eq!(stderr3.matches("resume ").count(), 1, "{stderr3}");
    let after = records(&cut);
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((a.iteration, &a.code, &a.outcome), (b.iteration, &b.code, &b.outcome));
    }
    assert_eq!(server.requests().len(), asked, "journaled answers were reused");

    // A compare file that now asks for something else does not touch the runs.
    let changed = std::fs::read_to_string(&compare).expect("read").replace(
        "memory = { plugin = \"memory.none\" }",
        "memory = { plugin = \"memory.window\", settings = { k = 2 } }",
    );
    std::fs::write(&compare, changed).expect("write");
    let out = nas(dir.path(), &["compare", file]);
    let (_, stderr4) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr4}");
    assert!(stderr4.contains("none/seed-1") && stderr4.contains("[memory]"), "{stderr4}");
    assert_eq!(records(&cmp.join("none").join("seed-1")).len() as u64, ITERATIONS);
}

#[test]
fn report_writes_a_page_figures_and_exports_for_one_run_or_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server();
    let _ = write_files(dir.path(), &server);
    let base = dir.path().join("base.toml");
    let mut runs = Vec::new();
    for seed in [3u64, 4] {
        let run = dir.path().join("runs").join(format!("r{seed}"));
        let text_cfg = std::fs::read_to_string(&base).expect("base") + &format!("\n[run]\nseed = {seed}\n");
        let cfg = dir.path().join(format!("run{seed}.toml"));
        std::fs::write(&cfg, text_cfg).expect("write");
        let out = nas(
            dir.path(),
            &[
                "run",
                "--config",
                cfg.to_str().expect("utf-8"),
                "--max-iterations",
                "4",
                "--run-dir",
                run.to_str().expect("utf-8"),
            ],
        );
        assert!(out.status.success(), "{:?}", text(&out));
        runs.push(run);
    }
    // --run-dir refuses a directory that exists.
    let out = nas(
        dir.path(),
        &["run", "--config", base.to_str().expect("utf-8"), "--run-dir", runs[0].to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("nas resume"), "{:?}", text(&out));

    // One run: the report goes into the run directory.
    let out = nas(dir.path(), &["report", runs[0].to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report = runs[0].join("report");
    let recs = records(&runs[0]);
    let best = recs.iter().filter_map(|r| r.outcome.accuracy().map(|a| (a, r))).max_by(|a, b| a.0.total_cmp(&b.0));
    let (best_acc, best_rec) = best.expect("something trained");
    let md = std::fs::read_to_string(report.join("summary.md")).expect("summary.md");
    assert!(md.contains(&format!("{:.2}% from `r3`, iteration {}", best_acc * 100.0, best_rec.iteration)), "{md}");
    assert!(md.contains(best_rec.code.as_deref().expect("code").trim_end()), "the best code is in the summary");
    let html = std::fs::read_to_string(report.join("report.html")).expect("html");
    assert!(html.contains("self.features = nn.Sequential"), "the best code is on the page");
    let valid = recs.iter().filter(|r| r.outcome.accuracy().is_some()).count();
    assert!(stdout.contains(&format!("valid {valid}/4")), "{stdout}");
    for name in ["accuracy", "valid_rate", "failures", "pareto_params", "pareto_flops"] {
        check_png(&report.join("figures").join(format!("{name}.png")), Some((1200, 675)), 0.01);
    }
    assert!(!report.join("figures").join("best_so_far_bands.png").exists(), "bands are for comparisons");

    // Many runs, found under a directory, each its own series.
    let out_dir = dir.path().join("both");
    let out = nas(
        dir.path(),
        &["report", dir.path().join("runs").to_str().expect("utf-8"), "--out", out_dir.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let rows = std::fs::read_to_string(out_dir.join("records.csv")).expect("csv").lines().count();
    assert_eq!(rows, 1 + 8);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).expect("json")).expect("json");
    let listed: Vec<&str> =
        summary["runs"].as_array().expect("runs").iter().filter_map(|r| r["run"].as_str()).collect();
    assert_eq!(listed, ["r3", "r4"]);

    // Bad input: a directory without runs.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = nas(dir.path(), &["report", empty.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("is not a run directory"), "{:?}", text(&out));
}

#[test]
fn ctrl_c_stops_a_comparison_after_the_current_step_and_the_next_one_resumes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start();
    server.set_responder(|req: &RecordedRequest| {
        let attempt = nas_tests::role_and_attempt(&req.body).1.max(1);
        let answer = match design(attempt) {
            Some(code) => format!("```python\n{code}        # accuracy: 0.6\n```"),
            None => "no code".into(),
        };
        Some(Step::delayed(250, Step::reply(answer)))
    });
    let compare = write_files(dir.path(), &server);
    let text_cfg = std::fs::read_to_string(&compare)
        .expect("read")
        .replace("seeds = [1, 2]", "seeds = [1]")
        .replace("\n[[arm]]\nname = \"no-improver\"\nsearch = { use_improver = false }\n", "");
    std::fs::write(&compare, text_cfg).expect("write");
    let file = compare.to_str().expect("utf-8");
    let child = Command::new(nas_tests::nas_bin())
        .args(["compare", file, "--jobs", "1"])
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nas compare starts");
    // Once the first run has committed an iteration, Ctrl-C.
    let first = dir.path().join("cmp").join("window-k5").join("seed-1");
    let waited = std::time::Instant::now();
    while !first.join("run.sqlite").is_file() || records(&first).is_empty() {
        assert!(waited.elapsed().as_secs() < 60, "the first run never committed an iteration");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("nas compare ends");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(stdout.contains("continue with: nas compare"), "{stdout}");
    let meta = |run: &Path| {
        let db = rusqlite::Connection::open(run.join("run.sqlite")).expect("sqlite");
        db.query_row("SELECT value FROM meta WHERE key = 'status'", [], |r| r.get::<_, String>(0)).expect("status")
    };
    assert_eq!(meta(&first), "interrupted");
    let done = records(&first).len() as u64;
    assert!(done < ITERATIONS, "stopped early: {done} iterations");
    let second = dir.path().join("cmp").join("none").join("seed-1");
    assert!(!second.exists(), "no run starts after Ctrl-C");

    let out = nas(dir.path(), &["compare", file]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resume window-k5 seed 1") && stderr.contains("start none seed 1"), "{stderr}");
    for run in [&first, &second] {
        assert_eq!(records(run).len() as u64, ITERATIONS, "{}", run.display());
        assert_eq!(meta(run), "finished");
    }
    let iterations: Vec<u64> = records(&first).iter().map(|r| r.iteration).collect();
    assert_eq!(iterations, (1..=ITERATIONS).collect::<Vec<_>>());
}
