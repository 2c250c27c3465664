//! `nas compare FILE`: run every arm of a comparison over its seeds (each a
//! normal, resumable run in its own `nas` process), then tabulate them
//! against the baseline and write the report.
//!
//! Running it again continues where it stopped: finished runs are kept,
//! interrupted or failed ones are resumed, missing ones are started. A run
//! directory recorded with a different config than the file now asks for is
//! an error (nothing is overwritten).

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use crate::cli::CompareArgs;
use crate::commands::{Failure, UsageContext};
use crate::compare::{self, PlannedRun};
use crate::config::{self, RunConfig};
use crate::report::{self, Group, ReportOptions, RunData};
use crate::run_dir;
use crate::store::Store;

/// Where a planned run stands.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Not started.
    New,
    /// Finished; nothing to do.
    Done,
    /// Started and stopped (interrupted, killed, failed): resume it.
    Resume(String),
}

/// The config as `nas run` freezes it (a TOML round trip).
fn normalized(c: &RunConfig) -> Result<RunConfig, Failure> {
    let text = toml::to_string(c).context("cannot write a run config").usage()?;
    config::parse(&text, Path::new("(planned)")).usage()
}

/// The top-level config sections in which two configs differ.
fn differing_sections(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    let (Ok(ta), Ok(tb)) = (toml::Table::try_from(a), toml::Table::try_from(b)) else {
        return vec!["(unreadable)".into()];
    };
    let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| ta.get(*k) != tb.get(*k)).map(|k| format!("[{k}]")).collect()
}

fn state_of(run: &PlannedRun) -> Result<State, Failure> {
    if !run.dir.exists() {
        return Ok(State::New);
    }
    let st = Store::open(&run.dir).with_context(|| format!("{} exists but is not a run", run.dir.display())).usage()?;
    let recorded = config::load(&run.dir.join(run_dir::CONFIG_FILE)).usage()?.config;
    let planned = normalized(&run.config)?;
    if recorded != planned {
        return Err(Failure::Usage(anyhow!(
            "{} was recorded with a different config than the compare file now asks for (differs in {}); move it away \
             or set [compare] output_dir to start afresh",
            run.dir.display(),
            differing_sections(&recorded, &planned).join(", ")
        )));
    }
    let status = st.meta("status").usage()?.unwrap_or_else(|| "created".into());
    Ok(if status == "finished" { State::Done } else { State::Resume(status) })
}

fn log_path(plan_dir: &Path, run: &PlannedRun) -> PathBuf {
    plan_dir.join("logs").join(format!("{}-seed-{}.log", run.arm, run.seed))
}

fn config_path(plan_dir: &Path, run: &PlannedRun) -> PathBuf {
    plan_dir.join("configs").join(format!("{}-seed-{}.toml", run.arm, run.seed))
}

struct Active {
    index: usize,
    child: Child,
    started: Instant,
}

/// What became of the runs launched.
#[derive(Default)]
struct Outcomes {
    failed: Vec<String>,
    usage_error: Option<String>,
    interrupted: bool,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn launch(plugins: &[PathBuf], plan_dir: &Path, run: &PlannedRun, state: &State) -> Result<Child, Failure> {
    let exe = std::env::current_exe().context("cannot find the nas executable").run_failed()?;
    let log = log_path(plan_dir, run);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log {}", log.display()))
        .run_failed()?;
    let mut cmd = Command::new(exe);
    for p in plugins {
        cmd.arg("--plugin").arg(p);
    }
    match state {
        State::New => {
            let cfg = config_path(plan_dir, run);
            let text = toml::to_string_pretty(&run.config).context("cannot write a run config").usage()?;
            std::fs::write(&cfg, text).with_context(|| format!("cannot write {}", cfg.display())).usage()?;
            let command = if run.config.cycles.is_some() { "cycles" } else { "run" };
            cmd.arg(command).arg("--config").arg(&cfg).arg("--run-dir").arg(&run.dir);
        }
        State::Resume(_) | State::Done => {
            cmd.arg("resume").arg(&run.dir);
        }
    }
    let _ = writeln!(file, "\n=== {} seed {}: {:?} ===", run.arm, run.seed, cmd);
    let err = file.try_clone().context("cannot share the log file").run_failed()?;
    // Its own process group: a Ctrl-C in the terminal reaches this process
    // only, which passes it on once (a second one would stop a run at once).
    cmd.stdin(Stdio::null()).stdout(file).stderr(err).process_group(0);
    cmd.spawn().with_context(|| format!("cannot start the run {}", run.dir.display())).run_failed()
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet; it
        // touches no memory of ours.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn one_line(dir: &Path) -> String {
    match RunData::load(dir) {
        Ok(r) => {
            let best = r.summary.best.map_or_else(|| "-".into(), |(_, a)| format!("{:.2}%", a * 100.0));
            format!("{}; best {best}, valid {}/{}", r.status, r.summary.valid, r.summary.iterations)
        }
        Err(e) => format!("unreadable ({e})"),
    }
}

fn execute(plugins: &[PathBuf], plan: &compare::Plan, states: &[State]) -> Result<Outcomes, Failure> {
    for sub in ["logs", "configs"] {
        let d = plan.output_dir.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display())).usage()?;
    }
    let interrupts = Arc::new(AtomicUsize::new(0));
    {
        let n = interrupts.clone();
        let _ = ctrlc::set_handler(move || {
            n.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut queue: VecDeque<usize> = (0..plan.runs.len()).filter(|&i| states[i] != State::Done).collect();
    let total = queue.len();
    let mut active: Vec<Active> = Vec::new();
    let mut out = Outcomes::default();
    let mut forwarded = 0;
    let mut done = 0;
    while !queue.is_empty() || !active.is_empty() {
        let seen = interrupts.load(Ordering::SeqCst);
        if seen > forwarded {
            if forwarded == 0 {
                eprintln!("stopping: the running runs stop after their current step (Ctrl-C again to stop them now)");
            }
            for a in &active {
                signal(&a.child, libc::SIGINT);
            }
            forwarded = seen;
            out.interrupted = true;
        }
        let stop_launching = out.interrupted || out.usage_error.is_some();
        while !stop_launching && active.len() < plan.jobs {
            let Some(i) = queue.pop_front() else { break };
            let run = &plan.runs[i];
            let verb = if matches!(states[i], State::New) { "start" } else { "resume" };
            eprintln!(
                "[{}/{total}] {verb} {} seed {} (log: {})",
                done + active.len() + 1,
                run.arm,
                run.seed,
                log_path(&plan.output_dir, run).display()
            );
            let child = launch(plugins, &plan.output_dir, run, &states[i])?;
            active.push(Active { index: i, child, started: Instant::now() });
        }
        if stop_launching {
            queue.clear();
        }
        let mut still = Vec::new();
        for mut a in active.drain(..) {
            match a.child.try_wait() {
                Ok(None) => still.push(a),
                Ok(Some(status)) => {
                    done += 1;
                    let run = &plan.runs[a.index];
                    let secs = a.started.elapsed().as_secs_f64();
                    let what = format!("{} seed {}", run.arm, run.seed);
                    match status.code() {
                        Some(0) => eprintln!("[{done}/{total}] {what}: {} ({secs:.0} s)", one_line(&run.dir)),
                        Some(2) => {
                            let log = log_path(&plan.output_dir, run);
                            eprintln!("[{done}/{total}] {what}: could not start; see {}", log.display());
                            out.usage_error.get_or_insert_with(|| format!("{what}: {}", tail(&log, 3)));
                        }
                        _ => {
                            let log = log_path(&plan.output_dir, run);
                            eprintln!("[{done}/{total}] {what}: failed ({status}); see {}", log.display());
                            out.failed.push(format!("{what} ({})", tail(&log, 1)));
                        }
                    }
                }
                Err(e) => {
                    return Err(Failure::Run(anyhow!("waiting for a run: {e}")));
                }
            }
        }
        active = still;
        if !active.is_empty() || !queue.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(out)
}

/// Loads every recorded run of the plan, grouped by arm.
fn groups(plan: &compare::Plan) -> Result<Vec<Group>, Failure> {
    let mut groups = Vec::new();
    for arm in &plan.arms {
        let mut runs = Vec::new();
        for r in plan.runs.iter().filter(|r| &r.arm == arm) {
            if r.dir.join(run_dir::DB_FILE).is_file() {
                let mut data = RunData::load(&r.dir).with_context(|| format!("reading {}", r.dir.display())).usage()?;
                data.label = format!("{arm}/seed-{}", r.seed);
                runs.push(data);
            }
        }
        groups.push(Group { name: arm.clone(), runs });
    }
    Ok(groups)
}

/// Runs `nas compare`.
pub fn run(plugins: &[PathBuf], args: &CompareArgs) -> Result<(), Failure> {
    let mut plan = compare::plan(&args.file).usage()?;
    if let Some(j) = args.jobs {
        if j == 0 {
            return Err(Failure::Usage(anyhow!("--jobs must be at least 1")));
        }
        plan.jobs = j;
    }
    let states: Vec<State> = plan.runs.iter().map(state_of).collect::<Result<_, _>>()?;
    eprintln!(
        "comparison `{}`: {} ({}baseline: {}), seeds {:?}, {} runs of up to {} iterations, {} side by side",
        plan.name,
        plan.arms.join(", "),
        if plan.baseline_added { "added " } else { "" },
        plan.baseline,
        plan.seeds,
        plan.runs.len(),
        plan.max_iterations,
        plan.jobs
    );
    eprintln!("output: {}", plan.output_dir.display());
    if args.dry_run {
        for (r, s) in plan.runs.iter().zip(&states) {
            let s = match s {
                State::New => "to start".to_string(),
                State::Done => "finished".to_string(),
                State::Resume(status) => format!("to resume ({status})"),
            };
            println!("{:<20} seed {:<6} {:<22} {}", r.arm, r.seed, s, r.dir.display());
        }
        return Ok(());
    }
    let outcomes = if args.report_only { Outcomes::default() } else { execute(plugins, &plan, &states)? };
    if let Some(e) = &outcomes.usage_error {
        return Err(Failure::Usage(anyhow!("a run of the comparison could not start: {e}")));
    }

    let groups = groups(&plan)?;
    let comparison = report::comparison::compare(
        &plan.name,
        &groups,
        &plan.baseline,
        &plan.seeds,
        &plan.checkpoints,
        plan.max_iterations,
    );
    let (header, rows) = comparison.table();
    println!("{}", super::text_table(&header, &rows, true));
    if let Some((header, rows)) = report::cycles::by_arm_table(&groups) {
        println!("\nfine-tuning cycles, seeds pooled (Valid and ≥40% with Wilson 95% intervals):");
        println!("{}", super::text_table(&header, &rows, true));
    }
    let report_dir = plan.output_dir.join("report");
    let options = ReportOptions { title: format!("nas compare: {}", plan.name), ..Default::default() };
    let written = report::write_report(&groups, &report_dir, &options, Some(&comparison)).usage()?;
    let csv_path = report_dir.join("comparison.csv");
    write_csv(&csv_path, &header, &rows).usage()?;
    println!("report: {}", written.html.display());
    println!("table: {} and {}", csv_path.display(), written.markdown.display());

    let missing = plan.runs.iter().filter(|r| !r.dir.join(run_dir::DB_FILE).is_file()).count();
    if outcomes.interrupted || missing > 0 {
        println!("continue with: nas compare {}", args.file.display());
    }
    if !outcomes.failed.is_empty() {
        return Err(Failure::Run(anyhow!(
            "{} run(s) failed: {}. Their records are kept; fix the cause and run `nas compare {}` again to resume them",
            outcomes.failed.len(),
            outcomes.failed.join("; "),
            args.file.display()
        )));
    }
    Ok(())
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}
