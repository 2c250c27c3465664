//! `nas report RUN_DIR...`: a report of recorded runs.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use crate::cli::ReportArgs;
use crate::commands::{Failure, UsageContext};
use crate::report::{self, Group, ReportOptions, RunData};
use crate::run_dir;

/// The run directories under `dir`: itself when it is a run, else the runs
/// it holds (two levels down at most), sorted. Unfinished run directories
/// (`.name.partial`) are skipped.
pub fn find_runs(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if dir.join(run_dir::DB_FILE).is_file() {
            out.push(dir.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        children.sort();
        for c in children {
            walk(&c, depth - 1, out);
        }
    }
    let mut out = Vec::new();
    walk(dir, 2, &mut out);
    out
}

/// Gives runs with the same label the name of their parent too.
pub fn disambiguate(runs: &mut [RunData]) {
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in runs.iter_mut() {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            let parent = r
                .dir
                .canonicalize()
                .ok()
                .and_then(|d| d.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()));
            if let Some(p) = parent {
                r.label = format!("{p}/{}", r.label);
            }
        }
    }
}

/// Runs `nas report`.
pub fn run(args: &ReportArgs) -> Result<(), Failure> {
    let mut dirs = Vec::new();
    for d in &args.run_dirs {
        if !d.is_dir() {
            return Err(Failure::Usage(anyhow!("`{}` is not a directory", d.display())));
        }
        let found = find_runs(d);
        if found.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "`{}` is not a run directory (no {}) and holds none",
                d.display(),
                run_dir::DB_FILE
            )));
        }
        dirs.extend(found);
    }
    dirs.dedup();
    let mut runs = Vec::new();
    for d in &dirs {
        runs.push(RunData::load(d).with_context(|| format!("reading the run {}", d.display())).usage()?);
    }
    disambiguate(&mut runs);
    let out = match &args.out {
        Some(o) => o.clone(),
        None if args.run_dirs.len() == 1 => args.run_dirs[0].join("report"),
        None => PathBuf::from("report"),
    };
    if args.window == 0 {
        return Err(Failure::Usage(anyhow!("--window must be at least 1")));
    }
    let title = args.title.clone().unwrap_or_else(|| match runs.as_slice() {
        [one] => format!("nas report: {}", one.label),
        many => format!("nas report: {} runs", many.len()),
    });
    let groups: Vec<Group> = runs.into_iter().map(|r| Group { name: r.label.clone(), runs: vec![r] }).collect();
    let options = ReportOptions { title, window: args.window, ..Default::default() };
    let written = report::write_report(&groups, &out, &options, None).usage()?;
    for g in &groups {
        let run = &g.runs[0];
        let best = run.summary.best.map_or_else(|| "-".into(), |(i, a)| format!("{:.2}% (iteration {i})", a * 100.0));
        println!(
            "{}: {} iterations, valid {}/{}, best {best}",
            run.label, run.summary.iterations, run.summary.valid, run.summary.iterations
        );
    }
    println!("report: {}", written.html.display());
    println!("summary: {}", written.markdown.display());
    println!("iterations: {}", written.iterations.display());
    println!("figures: {} files in {}", written.figures.len(), out.join("figures").display());
    println!("records: {}", written.exports.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}
