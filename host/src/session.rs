//! Setting up a run: the registry with the user's libraries, the frozen
//! config, the run directory (made whole or not at all), the plugins of each
//! config section, the baseline and the prepared dataset.
//!
//! `nas run`, `nas resume`, `nas eval`, `nas export` and `nas compare` all set
//! up through here; the command layer only maps [`SessionError`] to an exit
//! code.

use std::path::{Path, PathBuf};

use nas_plugin_api::{
    ChatRequest, ChatResponse, DatasetLoader, ErrorCode, Evaluator, FineTuner, HostContext, LlmBackend, MemoryStrategy,
    PluginError, PluginInstance, PluginKind,
};

use crate::config::{self, ConfigError, LoadedConfig, PluginSection, RunConfig};
use crate::registry::{Registered, Registry, RegistryError};
use crate::run_dir::{self, PluginRecord};
use crate::search::Roles;
use crate::store::{Store, StoreError};

/// Why a run could not be set up. Every variant names what and where.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The config could not be read or makes no sense.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin library could not be loaded, or a reference resolved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A plugin of a config section could not be created.
    #[error("{config}: [{section}]: {message}")]
    Plugin {
        /// The config file.
        config: PathBuf,
        /// The section (`generator`, `memory`, ...).
        section: String,
        /// Why.
        message: String,
    },
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory of the run could not be made.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--run-dir` names a directory that exists.
    #[error("--run-dir {}: it already exists; continue a run with `nas resume {}`", .0.display(), .0.display())]
    RunDirExists(PathBuf),
    /// The baseline architecture could not be read.
    #[error("[search] baseline: cannot read {}: {source}", path.display())]
    Baseline {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The dataset could not be prepared.
    #[error("[dataset]: {0}")]
    Dataset(PluginError),
    /// Anything else, said as it is.
    #[error("{0}")]
    Other(String),
}

/// Loads the config named on the command line, or the embedded defaults.
pub fn load_config(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    match path {
        Some(path) => config::load(path),
        None => Ok(LoadedConfig {
            config: RunConfig::embedded(),
            path: PathBuf::from("(defaults)"),
            dir: PathBuf::from("."),
        }),
    }
}

/// The registry: built-ins plus every library named with `--plugin` or in
/// `[plugins] load`.
pub fn registry(plugins: &[PathBuf]) -> Result<Registry, RegistryError> {
    let mut registry = Registry::with_builtins()?;
    for path in plugins {
        registry.load_path(path)?;
    }
    Ok(registry)
}

/// The host context for plugins of a run (`run_dir` is `None` outside one).
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

/// The config with every path made absolute, as frozen into a run.
pub fn frozen(loaded: &LoadedConfig) -> RunConfig {
    let mut c = loaded.config.clone();
    let abs = |p: &Path| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p));
    let here = abs(Path::new("."));
    for section in c.plugin_sections_mut() {
        section.plugin = section.plugin.resolved(&here);
    }
    c.search.baseline = c.search.baseline.as_deref().map(abs);
    c.prompts.dir = c.prompts.dir.as_deref().map(abs);
    c.plugins.load = c.plugins.load.iter().map(|p| abs(p)).collect();
    c.run.output_dir = abs(&c.run.output_dir);
    let e = &mut c.executor;
    e.shared_dir = e.shared_dir.as_deref().map(abs);
    e.slurm_conf = e.slurm_conf.as_deref().map(abs);
    // A command given as a plain name stays a name looked up on PATH.
    e.nas_command = e.nas_command.as_deref().map(|p| if p.components().count() > 1 { abs(p) } else { p.to_path_buf() });
    c
}

/// Reads `[search] baseline`, when set.
pub fn read_baseline(config: &RunConfig) -> Result<Option<String>, SessionError> {
    match &config.search.baseline {
        Some(p) => {
            std::fs::read_to_string(p).map(Some).map_err(|source| SessionError::Baseline { path: p.clone(), source })
        }
        None => Ok(None),
    }
}

/// Creates a plugin named by a config section, checking its role.
pub fn create(
    registry: &mut Registry,
    loaded: &LoadedConfig,
    section_name: &str,
    section: &PluginSection,
    kind: PluginKind,
    ctx: &HostContext,
) -> Result<(Registered, PluginInstance), SessionError> {
    let reference = section.plugin.resolved(&loaded.dir);
    let fail = |message: String| SessionError::Plugin {
        config: loaded.path.clone(),
        section: section_name.to_string(),
        message,
    };
    let (registered, instance) =
        registry.create(&reference, kind, &section.settings_json(), ctx).map_err(|e| fail(e.to_string()))?;
    if instance.kind() != kind {
        return Err(fail(format!("`{}` is a {}, not a {kind}", registered.info.id, instance.kind())));
    }
    Ok((registered, instance))
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

/// The plugins of a run, by role, and what was recorded about them.
pub struct RunPlugins {
    /// The dataset loader.
    pub dataset: Box<dyn DatasetLoader>,
    /// The roles the search drives.
    pub roles: Roles,
    /// The fine-tuner, when `[tuner]` is configured.
    pub tuner: Option<Box<dyn FineTuner>>,
    /// What goes into `plugins.json`.
    pub records: Vec<PluginRecord>,
}

/// Creates every plugin of a run config. When `replaying`, no LLM backend is
/// created: every answer comes from the recorded run. Instances the search
/// uses at once are created as many times as it may: `[evaluator] slots`,
/// and one LLM backend per call in flight (`[search] llm_in_flight`, by
/// default one per island), capped by what the plugin says it serves. With
/// `[executor] kind = "slurm"` the evaluator is not created here: the
/// evaluators are Slurm jobs, one per job in flight (`crate::executor`).
pub fn create_plugins(
    registry: &mut Registry,
    loaded: &LoadedConfig,
    ctx: &HostContext,
    replaying: bool,
) -> Result<RunPlugins, SessionError> {
    let c = &loaded.config;
    let mut records = Vec::new();
    let on_slurm = crate::executor::slurm_evaluators(registry, loaded, ctx.run_dir.as_deref())
        .map_err(|e| SessionError::Other(e.to_string()))?;
    let on_slurm = on_slurm.map(|(evaluators, record)| {
        records.push(record);
        evaluators
    });
    let in_flight = c.search.llm_in_flight.unwrap_or(c.search.islands).max(1);
    // Creates `wanted` instances (fewer when the plugin serves fewer at once)
    // and records the plugin once.
    let mut make = |name: &str, section: &PluginSection, kind: PluginKind, wanted: u32| {
        let (r, first) = create(registry, loaded, name, section, kind, ctx)?;
        let count = wanted.min(r.info.concurrency.unwrap_or(u32::MAX)).max(1);
        let mut all = vec![first];
        for _ in 1..count {
            all.push(create(registry, loaded, name, section, kind, ctx)?.1);
        }
        records.push(PluginRecord {
            section: name.into(),
            id: r.info.id.clone(),
            version: r.info.version.clone(),
            api_version: r.info.api_version.to_string(),
            origin: r.origin.to_string(),
        });
        Ok::<_, SessionError>(all)
    };
    let wrong = |section: &str, kind: PluginKind| SessionError::Other(format!("[{section}] is not a {kind}"));
    fn one(mut v: Vec<PluginInstance>) -> PluginInstance {
        v.swap_remove(0)
    }
    let memory: Box<dyn MemoryStrategy> = one(make("memory", &c.memory, PluginKind::Memory, 1)?)
        .into_memory()
        .map_err(|_| wrong("memory", PluginKind::Memory))?;
    let dataset = one(make("dataset", &c.dataset, PluginKind::Dataset, 1)?)
        .into_dataset()
        .map_err(|_| wrong("dataset", PluginKind::Dataset))?;
    let evaluators: Vec<Box<dyn Evaluator>> = match on_slurm {
        Some(evaluators) => evaluators,
        None => make("evaluator", &c.evaluator, PluginKind::Evaluator, c.evaluator.slots.unwrap_or(1))?
            .into_iter()
            .map(|i| i.into_evaluator().map_err(|_| wrong("evaluator", PluginKind::Evaluator)))
            .collect::<Result<_, _>>()?,
    };
    type Backends = Vec<Box<dyn LlmBackend>>;
    let llms = |v: Vec<PluginInstance>, section: &str| -> Result<Backends, SessionError> {
        v.into_iter().map(|i| i.into_llm().map_err(|_| wrong(section, PluginKind::Llm))).collect()
    };
    let (generators, improvers): (Backends, Backends) = if replaying {
        (vec![Box::new(NoLlm)], Vec::new())
    } else {
        let generators = llms(make("generator", &c.generator, PluginKind::Llm, in_flight)?, "generator")?;
        let improvers = match &c.improver {
            Some(section) if section != &c.generator => {
                llms(make("improver", section, PluginKind::Llm, in_flight)?, "improver")?
            }
            _ => Vec::new(),
        };
        (generators, improvers)
    };
    let tuner = match &c.tuner {
        Some(section) => Some(
            one(make("tuner", section, PluginKind::Tune, 1)?)
                .into_tune()
                .map_err(|_| wrong("tuner", PluginKind::Tune))?,
        ),
        None => None,
    };
    Ok(RunPlugins { dataset, roles: Roles { evaluators, generators, improvers, memory }, tuner, records })
}

/// Warns on stderr about each plugin whose id or version changed since the
/// run started.
pub fn warn_changed_plugins(run_dir: &Path, now: &[PluginRecord]) {
    let recorded = run_dir::read_plugins(run_dir);
    for now in now {
        if let Some(then) = recorded.iter().find(|r| r.section == now.section) {
            if then.id != now.id || then.version != now.version {
                eprintln!(
                    "warning: [{}] was {} {} when the run started and is {} {} now",
                    now.section, then.id, then.version, now.id, now.version
                );
            }
        }
    }
}

/// Where a new run goes: exactly `run_dir` when given (it must not exist),
/// else `<output_dir>/<name>-<time>`.
pub fn new_run_dir(config: &RunConfig, run_dir: Option<&Path>) -> Result<PathBuf, SessionError> {
    match run_dir {
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            if dir.exists() {
                return Err(SessionError::RunDirExists(dir));
            }
            Ok(dir)
        }
        None => Ok(config.run.output_dir.join(format!("{}-{}", config.run.name, crate::time::timestamp()))),
    }
}

/// Creates a run directory with its frozen config and an empty store. The
/// directory appears whole or not at all: it is built under a hidden name
/// and renamed, so a kill at any moment leaves either nothing or a run that
/// `nas resume` accepts. `meta` is written into the store first.
pub fn create_run_dir(
    run_dir: &Path,
    config: &RunConfig,
    config_dir: &Path,
    meta: &[(&str, String)],
) -> Result<(), SessionError> {
    let file_name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = run_dir.with_file_name(format!(".{file_name}.partial"));
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SessionError::Io { what, path, source }
    };
    std::fs::create_dir_all(&staging).map_err(io("cannot create run directory", &staging))?;
    let toml_text = toml::to_string_pretty(config)
        .map_err(|e| SessionError::Other(format!("cannot write the frozen config: {e}")))?;
    let config_file = staging.join(run_dir::CONFIG_FILE);
    std::fs::write(&config_file, toml_text).map_err(io("cannot write", &config_file))?;
    {
        let st = Store::create(&staging)?;
        let abs = std::path::absolute(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
        st.set_meta("config_dir", &abs.to_string_lossy())?;
        st.set_meta("created_at", &crate::time::timestamp())?;
        for (key, value) in meta {
            st.set_meta(key, value)?;
        }
        st.checkpoint()?;
    }
    std::fs::rename(&staging, run_dir).map_err(io("cannot create run directory", run_dir))
}

/// Writes `plugins.json`.
pub fn write_plugin_records(run_dir: &Path, records: &[PluginRecord]) -> Result<(), SessionError> {
    let json = serde_json::to_string_pretty(records).map_err(|e| SessionError::Other(e.to_string()))?;
    let path = run_dir.join(run_dir::PLUGINS_FILE);
    std::fs::write(&path, json).map_err(|source| SessionError::Io { what: "cannot write", path, source })
}

/// Prepares the run's dataset (once per dataset and settings; shared between
/// runs under a file lock).
pub fn prepare_dataset(
    dataset: &mut dyn DatasetLoader,
    section: &PluginSection,
) -> Result<crate::datasets::Prepared, SessionError> {
    crate::datasets::prepare(dataset, &section.settings_json(), false).map_err(SessionError::Dataset)
}
