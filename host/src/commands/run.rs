//! `nas run`, `nas resume`: start or continue a search.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{anyhow, Context};

use crate::cli::RunArgs;
use crate::commands::{Failure, UsageContext};
use crate::config::{LoadedConfig, RunConfig};
use crate::records::IterationRecord;
use crate::run_dir;
use crate::search::{self, DatasetContext, Progress, Roles, Stage, StopReason};
use crate::session;
use crate::store::Store;

/// Runs `nas run`.
pub fn run(plugins: &[PathBuf], args: &RunArgs) -> Result<(), Failure> {
    let replay = match &args.replay {
        Some(dir) => Some(Store::open(dir).with_context(|| format!("--replay {}", dir.display())).usage()?),
        None => None,
    };
    let config_path = match (&args.config, &args.replay) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => Some(dir.join(run_dir::CONFIG_FILE)),
        (None, None) => None,
    };
    let mut loaded = session::load_config(config_path.as_deref()).usage()?;
    if let Some(n) = args.max_iterations {
        loaded.config.search.max_iterations = n;
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
    let mut meta = Vec::new();
    if let Some(dir) = &args.replay {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        meta.push(("replay_of", abs.to_string_lossy().into_owned()));
    }
    session::create_run_dir(&run_dir, &config, &loaded.dir, &meta).usage()?;
    let _lock = crate::run_lock::RunLock::acquire(&run_dir).usage()?;
    // Plugins get their scratch space inside the run directory, so they are
    // created once it exists; a run whose plugins cannot start is removed.
    let ctx = session::host_context(&loaded.dir, Some(&run_dir));
    let started = session::create_plugins(&mut registry, &loaded, &ctx, replay.is_some()).and_then(|mut created| {
        eprintln!("preparing dataset ...");
        let prepared = session::prepare_dataset(created.dataset.as_mut(), &config.dataset)?;
        crate::executor::check_nodes(&loaded, &run_dir, &prepared.reference.dir, &registry)
            .map_err(|e| session::SessionError::Other(e.to_string()))?;
        session::write_plugin_records(&run_dir, &created.records)?;
        Ok((created, prepared))
    });
    let (created, prepared) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(Failure::Usage(e.into()));
        }
    };
    let mut st = Store::open(&run_dir).usage()?;
    eprintln!("run directory: {}", run_dir.display());
    execute(&config, created.roles, prepared, &mut st, replay, baseline, &run_dir)?;
    drop(st);
    let frozen = LoadedConfig { config, ..loaded };
    super::fidelity::after_search(&mut registry, &frozen, &run_dir)
}

/// The run lock of the existing run in `dir`, for a command that continues
/// it: one writer at a time, held until the lock is dropped. A directory
/// without a run store is a usage error, as is a run another process holds.
pub(super) fn writer_of(dir: &Path) -> Result<crate::run_lock::RunLock, Failure> {
    if !run_dir::is_run(dir) {
        return Err(Failure::Usage(crate::store::StoreError::NotARun(dir.to_path_buf()).into()));
    }
    crate::run_lock::RunLock::acquire(dir).usage()
}

/// Runs `nas resume RUN_DIR`.
pub fn resume(plugins: &[PathBuf], run_dir: &Path) -> Result<(), Failure> {
    let _lock = writer_of(run_dir)?;
    if super::cycles::is_cycles_run(run_dir) {
        return super::cycles::resume(plugins, run_dir);
    }
    let mut st = Store::open(run_dir).usage()?;
    st.verify().usage()?;
    let loaded = crate::config::load(&run_dir.join(run_dir::CONFIG_FILE)).usage()?;
    let config_dir = st.meta("config_dir").usage()?.map(PathBuf::from).unwrap_or_else(|| loaded.dir.clone());
    let loaded = LoadedConfig { dir: config_dir.clone(), ..loaded };
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(loaded.config.plugins.load.iter().cloned());
    let mut registry = crate::commands::registry(&extra)?;
    let replay_dir = st.meta("replay_of").usage()?.map(PathBuf::from);
    let replay = match &replay_dir {
        Some(d) => Some(Store::open(d).with_context(|| format!("the replayed run {}", d.display())).usage()?),
        None => None,
    };
    let ctx = session::host_context(&config_dir, Some(run_dir));
    let mut created = session::create_plugins(&mut registry, &loaded, &ctx, replay.is_some()).usage()?;
    session::warn_changed_plugins(run_dir, &created.records);
    let config = loaded.config.clone();
    let baseline = session::read_baseline(&config).usage()?;
    eprintln!("preparing dataset ...");
    let prepared = session::prepare_dataset(created.dataset.as_mut(), &config.dataset).usage()?;
    crate::executor::check_nodes(&loaded, run_dir, &prepared.reference.dir, &registry).usage()?;
    eprintln!("resuming {} after iteration {}", run_dir.display(), st.last_iteration().usage()?);
    execute(&config, created.roles, prepared, &mut st, replay, baseline, run_dir)?;
    drop(st);
    super::fidelity::after_search(&mut registry, &loaded, run_dir)
}

struct Bar {
    bar: indicatif::ProgressBar,
    max: u64,
}

impl Bar {
    fn new(max: u64, done: u64) -> Bar {
        let bar = indicatif::ProgressBar::with_draw_target(Some(max), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:24}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_position(done);
        Bar { bar, max }
    }
}

impl Progress for Bar {
    fn stage(&mut self, iteration: u64, stage: Stage) {
        let msg = self.bar.message();
        let head = msg.split(" | stage").next().unwrap_or("").to_string();
        self.bar.set_message(format!("{head} | stage: {stage} (iteration {iteration}/{})", self.max));
    }
    fn finished(&mut self, record: &IterationRecord, records: &[IterationRecord]) {
        let s = crate::metrics::summarize(records);
        let best = s.best.map(|(_, a)| format!("{:.2}%", a * 100.0)).unwrap_or_else(|| "-".into());
        let this = match record.outcome.accuracy() {
            Some(a) => format!("{:.2}%", a * 100.0),
            None => record.outcome.failure_kind().unwrap_or_default(),
        };
        self.bar.set_position(record.iteration);
        self.bar.set_message(format!("best {best} | valid {}/{} | last {this}", s.valid, s.iterations));
        if self.bar.is_hidden() {
            eprintln!("iteration {}: {this} (best {best}, valid {}/{})", record.iteration, s.valid, s.iterations);
        }
    }
}

fn execute(
    config: &RunConfig,
    roles: Roles,
    prepared: crate::datasets::Prepared,
    st: &mut Store,
    replay: Option<Store>,
    baseline: Option<String>,
    run_dir: &Path,
) -> Result<(), Failure> {
    // The Slurm executor's evaluators watch the same flag (and cancel their
    // jobs when it is set).
    let interrupt = crate::executor::interrupt_flag();
    {
        let flag = interrupt.clone();
        // A second handler cannot be installed in one process; tests drive
        // `execute` once per process, so an error here only means "already set".
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopping now");
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current step (Ctrl-C again to stop now)");
        });
    }
    let family = search::prompts::family_for(&prepared.manifest.family, &prepared.manifest.name);
    let prompts = search::prompts::Prompts::new(family, config.prompts.dir.clone());
    let dataset = DatasetContext {
        title: if prepared.description.title.is_empty() {
            prepared.manifest.name.clone()
        } else {
            prepared.description.title.clone()
        },
        reference: prepared.reference,
        manifest: prepared.manifest,
    };
    let done = st.last_iteration().usage()?;
    st.set_meta("status", "running").usage()?;
    let mut bar = Bar::new(config.search.max_iterations, done);
    let mut search = search::Search::new(
        config.search.clone(),
        roles,
        dataset,
        prompts,
        st,
        replay,
        baseline,
        config.run.seed,
        interrupt.clone(),
    );
    let result = match search.run(&mut bar) {
        // Ctrl-C cancelled Slurm jobs in flight: the run is interrupted.
        Err(search::SearchError::Evaluator(e))
            if interrupt.load(Ordering::SeqCst) && crate::executor::is_interruption(&e) =>
        {
            Ok(StopReason::Interrupted)
        }
        other => other,
    };
    bar.bar.finish_and_clear();
    let records = st.iterations().usage()?;
    let summary = crate::metrics::summarize(&records);
    match result {
        Ok(reason) => {
            st.set_meta("status", if reason == StopReason::Interrupted { "interrupted" } else { "finished" })
                .usage()?;
            st.set_meta("stop_reason", &reason.to_string()).usage()?;
            println!("{summary}");
            println!("stopped: {reason}");
            println!("run directory: {}", run_dir.display());
            if reason == StopReason::Interrupted {
                println!("continue with: nas resume {}", run_dir.display());
            }
            Ok(())
        }
        Err(e) => {
            // The status is a note for reports: when it cannot be written
            // (the disk that stopped the run is still full), the error that
            // stopped the run is the one to show.
            let noted = st.set_meta("status", "failed").and_then(|()| st.set_meta("stop_reason", &e.to_string()));
            if let Err(note) = noted {
                eprintln!("warning: {note}");
            }
            println!("{summary}");
            Err(Failure::Run(anyhow!(
                "the run stopped after iteration {}: {e}. Nothing recorded is lost; fix the cause and continue with `nas resume {}`",
                records.last().map_or(0, |r| r.iteration),
                run_dir.display()
            )))
        }
    }
}
