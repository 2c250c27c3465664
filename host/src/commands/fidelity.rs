//! `nas fidelity RUN_DIR`: retrain a run's candidates for longer or under
//! other seeds ([`crate::fidelity`]), and the same studies at the end of
//! `nas run` when `[fidelity] enabled`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{anyhow, Context};
use nas_plugin_api::PluginKind;

use crate::cli::FidelityArgs;
use crate::commands::{Failure, UsageContext};
use crate::config::{FidelitySection, LoadedConfig};
use crate::fidelity::{self, Planned, Retrains, Study};
use crate::registry::Registry;
use crate::run_dir;
use crate::session;
use crate::store::Store;

/// One study to run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    /// Longer training of the best `top` and `sample` of the rest.
    Fidelity { epochs: u32, top: usize, sample: usize },
    /// The best `top` at one epoch under `seeds` other seeds.
    Seeds { seeds: u32, top: usize },
}

/// Runs `nas fidelity`.
pub fn run(plugins: &[PathBuf], args: &FidelityArgs) -> Result<(), Failure> {
    let run_dir = &args.run_dir;
    let st = Store::open(run_dir).usage()?;
    let loaded = crate::config::load(&run_dir.join(run_dir::CONFIG_FILE)).usage()?;
    let config_dir = st.meta("config_dir").usage()?.map(PathBuf::from).unwrap_or_else(|| loaded.dir.clone());
    let loaded = LoadedConfig { dir: config_dir, ..loaded };
    let f = loaded.config.fidelity;
    let task = match args.seeds {
        Some(0) => return Err(Failure::Usage(anyhow!("--seeds must be at least 1"))),
        Some(seeds) => Task::Seeds { seeds, top: args.seed_top.unwrap_or(f.seed_top) },
        None => Task::Fidelity {
            epochs: args.epochs.unwrap_or(f.epochs),
            top: args.top.unwrap_or(f.top),
            sample: args.sample.unwrap_or(f.sample),
        },
    };
    match task {
        Task::Fidelity { epochs: 0, .. } => return Err(Failure::Usage(anyhow!("--epochs must be at least 1"))),
        Task::Fidelity { top: 0, sample: 0, .. } => {
            return Err(Failure::Usage(anyhow!("--top and --sample are both 0: nothing to retrain")))
        }
        Task::Seeds { top: 0, .. } => return Err(Failure::Usage(anyhow!("--seed-top must be at least 1"))),
        _ => {}
    }
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(loaded.config.plugins.load.iter().cloned());
    let mut registry = crate::commands::registry(&extra)?;
    drop(st);
    studies(&mut registry, &loaded, run_dir, &[task])
}

/// The studies `[fidelity]` asks for at the end of a search, when it is
/// enabled and the search finished (not interrupted, not failed).
pub fn after_search(registry: &mut Registry, loaded: &LoadedConfig, run_dir: &Path) -> Result<(), Failure> {
    let f: FidelitySection = loaded.config.fidelity;
    if !f.enabled {
        return Ok(());
    }
    let status = Store::open(run_dir).usage()?.meta("status").usage()?;
    if status.as_deref() != Some("finished") {
        return Ok(());
    }
    let mut tasks = Vec::new();
    if f.top + f.sample > 0 {
        tasks.push(Task::Fidelity { epochs: f.epochs, top: f.top, sample: f.sample });
    }
    if f.seeds > 0 {
        tasks.push(Task::Seeds { seeds: f.seeds, top: f.seed_top });
    }
    println!("[fidelity]: retraining recorded candidates");
    studies(registry, loaded, run_dir, &tasks)
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn studies(registry: &mut Registry, loaded: &LoadedConfig, run_dir: &Path, tasks: &[Task]) -> Result<(), Failure> {
    let c = &loaded.config;
    let records = Store::open(run_dir).usage()?.iterations().usage()?;
    let ctx = session::host_context(&loaded.dir, Some(run_dir));
    let (_, dataset) = session::create(registry, loaded, "dataset", &c.dataset, PluginKind::Dataset, &ctx).usage()?;
    let mut dataset = dataset.into_dataset().map_err(|_| anyhow!("[dataset] is not a dataset loader")).usage()?;
    eprintln!("preparing dataset ...");
    let prepared = session::prepare_dataset(dataset.as_mut(), &c.dataset).usage()?;
    let table = Retrains::open(run_dir).usage()?;
    let interrupt = crate::executor::interrupt_flag();
    {
        let flag = interrupt.clone();
        // Already installed when a search ran in this process: its handler
        // sets the same flag.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopping now");
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current candidate (Ctrl-C again to stop now)");
        });
    }
    for task in tasks {
        let (study, planned, epochs, seeds): (Study, Vec<Planned>, u32, Vec<u64>) = match *task {
            Task::Fidelity { epochs, top, sample } => {
                (Study::Fidelity, fidelity::plan_fidelity(&records, top, sample, c.run.seed), epochs, vec![c.run.seed])
            }
            Task::Seeds { seeds, top } => {
                (Study::Seeds, fidelity::plan_seeds(&records, top), 1, fidelity::repeat_seeds(c.run.seed, seeds))
            }
        };
        if planned.is_empty() {
            println!("{}: no candidate of the run trained; nothing to retrain", study.as_str());
            continue;
        }
        let mut section = c.evaluator.clone();
        if study == Study::Fidelity {
            section.settings.insert("epochs".into(), toml::Value::Integer(i64::from(epochs)));
        }
        // A time limit set for one epoch grows with the epochs.
        let time_limit_s = c
            .evaluator
            .settings
            .get("time_limit_s")
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .map(|t| t * f64::from(epochs));
        let (_, evaluator) =
            session::create(registry, loaded, "evaluator", &section, PluginKind::Evaluator, &ctx).usage()?;
        let mut evaluator =
            evaluator.into_evaluator().map_err(|_| anyhow!("[evaluator] is not an evaluator")).usage()?;
        let total = planned.len() * seeds.len();
        match study {
            Study::Fidelity => eprintln!(
                "retraining {} candidates ({} best, {} sampled) for {epochs} epochs",
                planned.len(),
                planned.iter().filter(|p| p.role == "top").count(),
                planned.iter().filter(|p| p.role == "sample").count()
            ),
            Study::Seeds => {
                eprintln!("retraining the {} best candidates under {} seeds at one epoch", planned.len(), seeds.len())
            }
        }
        let mut n = 0;
        let progress = fidelity::execute(
            evaluator.as_mut(),
            &prepared.reference,
            &table,
            study,
            &planned,
            epochs,
            &seeds,
            time_limit_s,
            &interrupt,
            |r| {
                n += 1;
                let result = r.accuracy().map_or_else(|| r.outcome.failure_kind().unwrap_or_default(), pct);
                eprintln!(
                    "{} {n}: iteration {} (seed {}): {} -> {result}",
                    study.as_str(),
                    r.iteration,
                    r.seed,
                    pct(r.proxy_accuracy)
                );
            },
        )
        .with_context(|| {
            format!(
                "{} stopped; what was retrained is recorded: continue with `nas fidelity {}`",
                study.as_str(),
                run_dir.display()
            )
        })
        .run_failed()?;
        if progress.skipped > 0 {
            eprintln!("{} of {total} already recorded, not retrained", progress.skipped);
        }
        if progress.interrupted {
            println!("stopped: interrupted");
            println!(
                "continue with: nas fidelity {}{}",
                run_dir.display(),
                match *task {
                    Task::Fidelity { epochs, top, sample } =>
                        format!(" --epochs {epochs} --top {top} --sample {sample}"),
                    Task::Seeds { seeds, top } => format!(" --seeds {seeds} --seed-top {top}"),
                }
            );
            return Ok(());
        }
    }
    let rows = fidelity::read(run_dir).usage()?;
    print_summary(&rows, tasks);
    println!("report: nas report {}", run_dir.display());
    Ok(())
}

fn interval(e: &crate::report::stats::Estimate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high)
}

fn print_summary(rows: &[fidelity::Retrain], tasks: &[Task]) {
    for task in tasks {
        match *task {
            Task::Fidelity { epochs, .. } => {
                let Some(s) = fidelity::fidelity_summaries(rows).into_iter().find(|s| s.epochs == epochs) else {
                    continue;
                };
                println!(
                    "proxy fidelity: one epoch against {epochs} epochs, {} candidates ({} failed)",
                    s.pairs.len(),
                    s.failed
                );
                let show = |e: &Option<crate::report::stats::Estimate>| e.as_ref().map_or_else(|| "-".into(), interval);
                println!("spearman rho  {}", show(&s.spearman));
                println!("kendall tau   {}", show(&s.kendall));
                let moved = s.most_moved(5);
                if !moved.is_empty() {
                    println!("moved most (rank at one epoch -> rank at {epochs}):");
                    for p in moved {
                        println!(
                            "  iteration {}: {} -> {} ({} -> {})",
                            p.iteration,
                            p.proxy_rank,
                            p.long_rank,
                            pct(p.proxy),
                            pct(p.long)
                        );
                    }
                }
                println!("device time: {:.1} s", s.device_seconds);
            }
            Task::Seeds { .. } => {
                let spreads = fidelity::seed_spreads(rows);
                if spreads.is_empty() {
                    continue;
                }
                println!("seed repeatability (one epoch):");
                let header = ["iteration", "recorded", "seeds", "mean ± sd", "min–max"].map(String::from);
                let table: Vec<Vec<String>> = spreads
                    .iter()
                    .map(|s| {
                        vec![
                            s.iteration.to_string(),
                            pct(s.recorded),
                            s.runs.len().to_string(),
                            format!("{} ± {:.2}", pct(s.mean), s.sd * 100.0),
                            format!("{}–{}", pct(s.min), pct(s.max)),
                        ]
                    })
                    .collect();
                println!("{}", super::text_table(&header, &table, true));
            }
        }
    }
}
