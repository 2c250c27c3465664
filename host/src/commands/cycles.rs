//! `nas cycles`: fine-tuning cycles (seed fine-tune, then generate →
//! evaluate → select → fine-tune, cycle after cycle). The work is in
//! [`crate::cycles`]; this sets the run up, prints the per-cycle table and
//! maps errors to exit codes. `nas resume` continues a cycles run through
//! [`resume`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};

use crate::cli::CyclesArgs;
use crate::commands::{Failure, UsageContext};
use crate::config::LoadedConfig;
use crate::cycles::log::CycleState;
use crate::cycles::table::{self, CycleRow};
use crate::cycles::{self, Driver, Ended, Observer, Setup, SharedRoles};
use crate::records::IterationRecord;
use crate::run_dir;
use crate::search::{DatasetContext, Progress, Stage};
use crate::session;
use crate::store::Store;

/// Whether a run directory holds a cycles run (its frozen config has
/// `[cycles]`).
pub fn is_cycles_run(dir: &Path) -> bool {
    crate::config::load(&dir.join(run_dir::CONFIG_FILE)).is_ok_and(|l| l.config.cycles.is_some())
}

/// Runs `nas cycles`.
pub fn run(plugins: &[PathBuf], args: &CyclesArgs) -> Result<(), Failure> {
    if let Some(dir) = &args.resume {
        // One writer at a time, as for `nas resume` (which takes the lock
        // before it comes to [`resume`]).
        let _lock = super::run::writer_of(dir)?;
        return resume(plugins, dir);
    }
    let config_path = match (&args.config, &args.replay) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join(run_dir::CONFIG_FILE),
        (None, None) => {
            return Err(Failure::Usage(anyhow!(
                "give the run config: nas cycles --config FILE (with a [cycles] section and a [tuner]); or --resume RUN_DIR"
            )))
        }
    };
    let replay_dir = match &args.replay {
        Some(dir) => {
            Store::open(dir).with_context(|| format!("--replay {}", dir.display())).usage()?;
            Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
        }
        None => None,
    };
    let mut loaded = crate::config::load(&config_path).usage()?;
    cycles::settle_budget(&config_path, &mut loaded.config);
    if loaded.config.cycles.is_none() {
        return Err(Failure::Usage(anyhow!(
            "{}: no [cycles] section; `nas cycles` runs fine-tuning cycles (docs/cycles.md), `nas run` a search",
            config_path.display()
        )));
    }
    if loaded.config.tuner.is_none() && replay_dir.is_none() {
        return Err(Failure::Usage(anyhow!(
            "{}: no [tuner] section; the cycles fine-tune the generator with it (e.g. plugin = \"tune.lora\")",
            config_path.display()
        )));
    }
    if let Some(dir) = &args.output_dir {
        loaded.config.run.output_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    }
    let config = session::frozen(&loaded);
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(config.plugins.load.iter().cloned());
    let mut registry = crate::commands::registry(&extra)?;
    let run_dir = session::new_run_dir(&config, args.run_dir.as_deref()).usage()?;
    let baseline = session::read_baseline(&config).usage()?;
    let mut meta = vec![("kind", "cycles".to_string())];
    if let Some(dir) = &replay_dir {
        meta.push(("replay_of", dir.to_string_lossy().into_owned()));
    }
    session::create_run_dir(&run_dir, &config, &loaded.dir, &meta).usage()?;
    let _lock = crate::run_lock::RunLock::acquire(&run_dir).usage()?;
    let loaded = LoadedConfig { config: config.clone(), ..loaded };
    let started = setup(&mut registry, &loaded, &run_dir, replay_dir.clone(), baseline, true);
    let setup = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
    };
    let mut st = Store::open(&run_dir).usage()?;
    eprintln!("run directory: {}", run_dir.display());
    execute(setup, &mut st, &run_dir)
}

/// Runs `nas resume RUN_DIR` (or `nas cycles --resume`) for a cycles run;
/// the caller holds the run lock.
pub fn resume(plugins: &[PathBuf], run_dir: &Path) -> Result<(), Failure> {
    let st = Store::open(run_dir).usage()?;
    st.verify().usage()?;
    let loaded = crate::config::load(&run_dir.join(run_dir::CONFIG_FILE)).usage()?;
    if loaded.config.cycles.is_none() {
        return Err(Failure::Usage(anyhow!(
            "{} is not a cycles run; continue it with `nas resume`",
            run_dir.display()
        )));
    }
    let config_dir = st.meta("config_dir").usage()?.map(PathBuf::from).unwrap_or_else(|| loaded.dir.clone());
    let loaded = LoadedConfig { dir: config_dir, ..loaded };
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(loaded.config.plugins.load.iter().cloned());
    let mut registry = crate::commands::registry(&extra)?;
    let replay_dir = st.meta("replay_of").usage()?.map(PathBuf::from);
    drop(st);
    let baseline = session::read_baseline(&loaded.config).usage()?;
    let setup = setup(&mut registry, &loaded, run_dir, replay_dir, baseline, false)?;
    let mut st = Store::open(run_dir).usage()?;
    let done = st.last_iteration().usage()?;
    eprintln!("resuming the cycles run {} after iteration {done}", run_dir.display());
    execute(setup, &mut st, run_dir)
}

/// The plugins, the prepared dataset and the base model.
fn setup(
    registry: &mut crate::registry::Registry,
    loaded: &LoadedConfig,
    run_dir: &Path,
    replay: Option<PathBuf>,
    baseline: Option<String>,
    fresh: bool,
) -> Result<Setup, Failure> {
    let ctx = session::host_context(&loaded.dir, Some(run_dir));
    let mut created = session::create_plugins(registry, loaded, &ctx, replay.is_some()).usage()?;
    if fresh {
        session::write_plugin_records(run_dir, &created.records).usage()?;
    } else {
        session::warn_changed_plugins(run_dir, &created.records);
    }
    let config = loaded.config.clone();
    let base = match &replay {
        Some(_) => None,
        None => Some(cycles::base_model(&config, &ctx).usage()?),
    };
    eprintln!("preparing dataset ...");
    let prepared = session::prepare_dataset(created.dataset.as_mut(), &config.dataset).usage()?;
    let dataset = DatasetContext {
        title: if prepared.description.title.is_empty() {
            prepared.manifest.name.clone()
        } else {
            prepared.description.title.clone()
        },
        reference: prepared.reference,
        manifest: prepared.manifest,
    };
    Ok(Setup {
        config,
        config_dir: loaded.dir.clone(),
        run_dir: std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf()),
        roles: SharedRoles::new(created.roles),
        tuner: created.tuner,
        base,
        dataset,
        baseline,
        replay,
        interrupt: Arc::new(AtomicBool::new(false)),
    })
}

/// Prints iterations as they finish and each cycle's row as it ends.
struct Terminal {
    header: bool,
}

impl Progress for Terminal {
    fn stage(&mut self, _iteration: u64, _stage: Stage) {}

    fn finished(&mut self, record: &IterationRecord, _records: &[IterationRecord]) {
        let what = match record.outcome.accuracy() {
            Some(a) => format!("{:.2}%", a * 100.0),
            None => record.outcome.failure_kind().unwrap_or_default(),
        };
        eprintln!("cycle {} iteration {}: {what}", record.cycle, record.iteration);
    }
}

impl Observer for Terminal {
    fn progress(&mut self) -> &mut dyn Progress {
        self
    }

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn cycle(&mut self, state: &CycleState, row: Option<&CycleRow>) {
        let adapter = match &state.adapter {
            Some(a) => {
                let loss = match (a.loss_curve.first(), a.loss_curve.last()) {
                    (Some(f), Some(l)) => format!("loss {:.4} -> {:.4}, ", f.loss, l.loss),
                    _ => String::new(),
                };
                let from = state.adapter_from.as_deref().map(|f| format!(", {f}")).unwrap_or_default();
                format!("adapter {}: {loss}{} steps, {:.0} s{from}", state.cycle, a.steps, a.seconds)
            }
            None => format!("no adapter for cycle {}", state.cycle),
        };
        match row {
            None => println!("cycle 0 (seed): {} training examples; {adapter}", state.train_examples),
            Some(row) => {
                if !self.header {
                    println!("{}", table::header_line());
                    self.header = true;
                }
                println!("{}", table::row_line(row));
                eprintln!("  {adapter}");
            }
        }
    }
}

fn execute(setup: Setup, st: &mut Store, run_dir: &Path) -> Result<(), Failure> {
    let interrupt = setup.interrupt.clone();
    {
        let flag = interrupt.clone();
        // A second handler cannot be installed in one process: an error
        // here only means "already set".
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopping now");
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current step (Ctrl-C again to stop now)");
        });
    }
    st.set_meta("status", "running").usage()?;
    let driver = Driver::new(setup).usage()?;
    let mut terminal = Terminal { header: false };
    let result = driver.run(st, &mut terminal);
    let records = st.iterations().usage()?;
    let states = cycles::log::read_all(st).usage()?;
    match result {
        Ok(Ended { complete, interrupted, reason }) => {
            st.set_meta("status", if interrupted { "interrupted" } else { "finished" }).usage()?;
            st.set_meta("stop_reason", &reason).usage()?;
            let rows = table::rows(&records, &states);
            if !rows.is_empty() {
                let all = table::pooled_valid_rate(&rows);
                println!(
                    "valid over all cycles: {} of {} candidates",
                    table::rate(&all),
                    rows.iter().map(|r| r.candidates).sum::<u64>()
                );
            }
            println!("stopped: {reason}");
            println!("run directory: {}", run_dir.display());
            if !complete && interrupted {
                println!("continue with: nas resume {}", run_dir.display());
            }
            Ok(())
        }
        Err(e) => {
            st.set_meta("status", "failed").usage()?;
            st.set_meta("stop_reason", &e.to_string()).usage()?;
            Err(Failure::Run(anyhow!(
                "the cycles run stopped after iteration {} (cycle {}): {e}. Nothing recorded is lost; fix the cause and continue with `nas resume {}`",
                records.last().map_or(0, |r| r.iteration),
                states.len().saturating_sub(1),
                run_dir.display()
            )))
        }
    }
}
