//! `nas run`, `nas resume`: start or continue a search.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use nas_plugin_api::{
    ChatRequest, ChatResponse, DatasetLoader, ErrorCode, Evaluator, HostContext, LlmBackend, MemoryStrategy,
    PluginError, PluginInstance, PluginKind,
};
use serde::{Deserialize, Serialize};

use crate::cli::{Failure, RunArgs, UsageContext};
use crate::config::{self, LoadedConfig, PluginSection, RunConfig};
use crate::registry::{Registered, Registry};
use crate::search::{self, DatasetContext, Progress, Roles, Stage, StopReason};
use crate::store::{self, IterationRecord, Store};

/// Loads the config named on the command line, or the embedded defaults.
pub fn load_config(path: Option<&Path>) -> Result<LoadedConfig, Failure> {
    match path {
        Some(path) => config::load(path).usage(),
        None => Ok(LoadedConfig {
            config: RunConfig::default(),
            path: PathBuf::from("(defaults)"),
            dir: PathBuf::from("."),
        }),
    }
}

/// A plugin as recorded in `plugins.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginRecord {
    /// Config section.
    pub section: String,
    /// Plugin id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its API version.
    pub api_version: String,
    /// Where it came from.
    pub origin: String,
}

/// The host context for plugins of a run.
pub fn host_context(config_dir: &Path, run_dir: Option<&Path>) -> HostContext {
    HostContext {
        host_api_version: Some(nas_plugin_api::API_VERSION),
        data_dir: Some(crate::paths::data_dir()),
        models_dir: Some(crate::paths::models_dir()),
        scratch_dir: run_dir.map(|d| d.join("scratch")),
        run_dir: run_dir.map(Path::to_path_buf),
        threads: Some(crate::paths::threads()),
        config_dir: Some(config_dir.to_path_buf()),
    }
}

fn create(
    registry: &mut Registry,
    loaded: &LoadedConfig,
    name: &str,
    section: &PluginSection,
    kind: PluginKind,
    ctx: &HostContext,
) -> Result<(Registered, PluginInstance), Failure> {
    let reference = section.plugin.resolved(&loaded.dir);
    registry
        .create(&reference, kind, &section.settings_json(), ctx)
        .map_err(|e| anyhow!("{}: [{name}]: {e}", loaded.path.display()))
        .usage()
}

/// A backend that only replays: any call it gets is a missing recording.
struct NoLlm;
impl LlmBackend for NoLlm {
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        Err(PluginError::new(
            ErrorCode::NotFound,
            format!("replaying: no recorded answer for this {} call", request.purpose.as_deref().unwrap_or("LLM")),
        ))
    }
}

struct Plugins {
    dataset: Box<dyn DatasetLoader>,
    roles: Roles,
    records: Vec<PluginRecord>,
}

fn create_plugins(
    registry: &mut Registry,
    loaded: &LoadedConfig,
    ctx: &HostContext,
    replaying: bool,
) -> Result<Plugins, Failure> {
    let c = &loaded.config;
    let mut records = Vec::new();
    let mut record = |section: &str, r: &Registered| {
        records.push(PluginRecord {
            section: section.into(),
            id: r.info.id.clone(),
            version: r.info.version.clone(),
            api_version: r.info.api_version.to_string(),
            origin: r.origin.to_string(),
        })
    };
    let (r, memory) = create(registry, loaded, "memory", &c.memory, PluginKind::Memory, ctx)?;
    record("memory", &r);
    let PluginInstance::Memory(memory) = memory else {
        return Err(Failure::Usage(anyhow!("[memory] is not a memory strategy")));
    };
    let (r, dataset) = create(registry, loaded, "dataset", &c.dataset, PluginKind::Dataset, ctx)?;
    record("dataset", &r);
    let PluginInstance::Dataset(dataset) = dataset else {
        return Err(Failure::Usage(anyhow!("[dataset] is not a dataset loader")));
    };
    let (r, evaluator) = create(registry, loaded, "evaluator", &c.evaluator, PluginKind::Evaluator, ctx)?;
    record("evaluator", &r);
    let PluginInstance::Evaluator(evaluator) = evaluator else {
        return Err(Failure::Usage(anyhow!("[evaluator] is not an evaluator")));
    };
    let (generator, improver): (Box<dyn LlmBackend>, Option<Box<dyn LlmBackend>>) = if replaying {
        (Box::new(NoLlm), None)
    } else {
        let (r, g) = create(registry, loaded, "generator", &c.generator, PluginKind::Llm, ctx)?;
        record("generator", &r);
        let PluginInstance::Llm(g) = g else {
            return Err(Failure::Usage(anyhow!("[generator] is not an LLM backend")));
        };
        let improver = match &c.improver {
            Some(section) if section != &c.generator => {
                let (r, i) = create(registry, loaded, "improver", section, PluginKind::Llm, ctx)?;
                record("improver", &r);
                let PluginInstance::Llm(i) = i else {
                    return Err(Failure::Usage(anyhow!("[improver] is not an LLM backend")));
                };
                Some(i)
            }
            _ => None,
        };
        (g, improver)
    };
    let roles = Roles {
        evaluator: evaluator as Box<dyn Evaluator>,
        generator,
        improver,
        memory: memory as Box<dyn MemoryStrategy>,
    };
    Ok(Plugins { dataset, roles, records })
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub(crate) fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The config with every path made absolute, as frozen into a run.
pub(crate) fn frozen(loaded: &LoadedConfig) -> RunConfig {
    let mut c = loaded.config.clone();
    let abs = |p: &Path| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p));
    for section in [&mut c.memory, &mut c.dataset, &mut c.evaluator, &mut c.generator] {
        section.plugin = section.plugin.resolved(&abs(Path::new(".")));
    }
    if let Some(i) = c.improver.as_mut() {
        i.plugin = i.plugin.resolved(&abs(Path::new(".")));
    }
    c.search.baseline = c.search.baseline.as_deref().map(abs);
    c.prompts.dir = c.prompts.dir.as_deref().map(abs);
    c.plugins.load = c.plugins.load.iter().map(|p| abs(p)).collect();
    c.run.output_dir = abs(&c.run.output_dir);
    c
}

/// Runs `nas run`.
pub fn run(plugins: &[PathBuf], args: &RunArgs) -> Result<(), Failure> {
    let replay = match &args.replay {
        Some(dir) => Some(Store::open(dir).with_context(|| format!("--replay {}", dir.display())).usage()?),
        None => None,
    };
    let config_path = match (&args.config, &args.replay) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => Some(dir.join(store::CONFIG_FILE)),
        (None, None) => None,
    };
    let mut loaded = load_config(config_path.as_deref())?;
    if let Some(n) = args.max_iterations {
        loaded.config.search.max_iterations = n;
    }
    if let Some(dir) = &args.output_dir {
        loaded.config.run.output_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    }
    let config = frozen(&loaded);
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(config.plugins.load.iter().cloned());
    let mut registry = crate::cli::registry(&extra)?;

    let run_dir = match &args.run_dir {
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            if dir.exists() {
                return Err(Failure::Usage(anyhow!(
                    "--run-dir {}: it already exists; continue a run with `nas resume {}`",
                    dir.display(),
                    dir.display()
                )));
            }
            dir
        }
        None => config.run.output_dir.join(format!("{}-{}", config.run.name, timestamp())),
    };
    let baseline = read_baseline(&config)?;

    // The run directory appears whole or not at all: it is built under a
    // hidden name and renamed, so a kill at any moment leaves either nothing
    // or a run that `nas resume` accepts.
    let file_name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = run_dir.with_file_name(format!(".{file_name}.partial"));
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create run directory {}", staging.display()))
        .usage()?;
    let toml_text = toml::to_string_pretty(&config).context("cannot write the frozen config").usage()?;
    std::fs::write(staging.join(store::CONFIG_FILE), toml_text).context("cannot write config.toml").usage()?;
    {
        let st = Store::create(&staging).usage()?;
        st.set_meta("config_dir", &std::path::absolute(&loaded.dir).unwrap_or(loaded.dir.clone()).to_string_lossy())
            .usage()?;
        st.set_meta("created_at", &timestamp()).usage()?;
        if let Some(dir) = &args.replay {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            st.set_meta("replay_of", &abs.to_string_lossy()).usage()?;
        }
        st.checkpoint().usage()?;
    }
    std::fs::rename(&staging, &run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))
        .usage()?;
    // Plugins get their scratch space inside the run directory, so they are
    // created once it exists; a run whose plugins cannot start is removed.
    let ctx = host_context(&loaded.dir, Some(&run_dir));
    let started = create_plugins(&mut registry, &loaded, &ctx, replay.is_some()).and_then(|mut created| {
        let prepared = prepare_dataset(&mut created, &config.dataset)?;
        let plugins_json = serde_json::to_string_pretty(&created.records).usage()?;
        std::fs::write(run_dir.join(store::PLUGINS_FILE), plugins_json).context("cannot write plugins.json").usage()?;
        Ok((created, prepared))
    });
    let (created, prepared) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
    };
    let mut st = Store::open(&run_dir).usage()?;
    eprintln!("run directory: {}", run_dir.display());
    execute(&config, created.roles, prepared, &mut st, replay.as_ref(), baseline, &run_dir)
}

/// Runs `nas resume RUN_DIR`.
pub fn resume(plugins: &[PathBuf], run_dir: &Path) -> Result<(), Failure> {
    let mut st = Store::open(run_dir).usage()?;
    let loaded = config::load(&run_dir.join(store::CONFIG_FILE)).usage()?;
    let config_dir = st.meta("config_dir").usage()?.map(PathBuf::from).unwrap_or_else(|| loaded.dir.clone());
    let loaded = LoadedConfig { dir: config_dir.clone(), ..loaded };
    let mut extra: Vec<PathBuf> = plugins.to_vec();
    extra.extend(loaded.config.plugins.load.iter().cloned());
    let mut registry = crate::cli::registry(&extra)?;
    let replay_dir = st.meta("replay_of").usage()?.map(PathBuf::from);
    let replay = match &replay_dir {
        Some(d) => Some(Store::open(d).with_context(|| format!("the replayed run {}", d.display())).usage()?),
        None => None,
    };
    let ctx = host_context(&config_dir, Some(run_dir));
    let mut created = create_plugins(&mut registry, &loaded, &ctx, replay.is_some())?;
    let recorded: Vec<PluginRecord> = std::fs::read_to_string(run_dir.join(store::PLUGINS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for now in &created.records {
        if let Some(then) = recorded.iter().find(|r| r.section == now.section) {
            if then.id != now.id || then.version != now.version {
                eprintln!(
                    "warning: [{}] was {} {} when the run started and is {} {} now",
                    now.section, then.id, then.version, now.id, now.version
                );
            }
        }
    }
    let config = loaded.config.clone();
    let baseline = read_baseline(&config)?;
    let prepared = prepare_dataset(&mut created, &config.dataset)?;
    eprintln!("resuming {} after iteration {}", run_dir.display(), st.last_iteration().usage()?);
    execute(&config, created.roles, prepared, &mut st, replay.as_ref(), baseline, run_dir)
}

fn read_baseline(config: &RunConfig) -> Result<Option<String>, Failure> {
    match &config.search.baseline {
        Some(p) => std::fs::read_to_string(p)
            .map(Some)
            .with_context(|| format!("[search] baseline: cannot read {}", p.display()))
            .usage(),
        None => Ok(None),
    }
}

fn prepare_dataset(created: &mut Plugins, section: &PluginSection) -> Result<crate::datasets::Prepared, Failure> {
    eprintln!("preparing dataset ...");
    crate::datasets::prepare(created.dataset.as_mut(), &section.settings_json(), false)
        .map_err(|e| anyhow!("[dataset]: {e}"))
        .usage()
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
    replay: Option<&Store>,
    baseline: Option<String>,
    run_dir: &Path,
) -> Result<(), Failure> {
    let interrupt = Arc::new(AtomicBool::new(false));
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
        interrupt,
    );
    let result = search.run(&mut bar);
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
            st.set_meta("status", "failed").usage()?;
            st.set_meta("stop_reason", &e.to_string()).usage()?;
            println!("{summary}");
            Err(Failure::Run(anyhow!(
                "the run stopped after iteration {}: {e}. Nothing recorded is lost; fix the cause and continue with `nas resume {}`",
                records.last().map_or(0, |r| r.iteration),
                run_dir.display()
            )))
        }
    }
}
