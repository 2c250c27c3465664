//! WebAssembly component plugins, hosted by wasmtime.
//!
//! The second plugin door beside the native one: a component that targets one
//! of the worlds of the `nas:plugin@1.0.0` WIT package (`plugin-api/wit/`),
//! with a manifest beside it (`x.wasm` + `x.toml`, see [`WasmManifest`]).
//! [`load_component`] runs every [`WasmLoadStep`] in order and gives a
//! [`WasmLibrary`]; [`WasmLibrary::create`] makes a [`PluginInstance`] the
//! host drives exactly like a native one.
//!
//! The sandbox:
//! - one wasmtime `Store` per plugin instance; guests get no WASI at all,
//!   only the imports of their world;
//! - `http.post` reaches only the manifest's `allowed_hosts`, and the host
//!   adds the API key (from the env var named by the `api_key_env` setting)
//!   so the guest never sees it;
//! - `files` reads only the manifest's `allowed_dirs` (and, for an
//!   evaluator, the prepared dataset of the request) and writes only into the
//!   cache directory of the current prepare request;
//! - fuel per call, a deadline on guest time per call, and a cap on linear
//!   memory. A guest that traps, runs out of fuel or time, or grows past its
//!   cap gives a [`PluginError`] naming what happened; its instance is
//!   thrown away and a fresh one is made on the next call.
//!
//! ```no_run
//! use nas_host::wasm::{load_component, WasmOptions};
//! use nas_plugin_api::{HostContext, MemoryInput, PluginInstance};
//!
//! let lib = load_component("window.wasm".as_ref(), &WasmOptions::default())?;
//! let info = lib.plugins().remove(0);
//! let PluginInstance::Memory(mut memory) = lib.create(&info, &serde_json::json!({"k": 3}), &HostContext::default())?
//! else { unreachable!("a memory manifest gives a memory instance") };
//! let picked = memory.select(&MemoryInput::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bindings;
mod convert;
mod imports;
pub mod manifest;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nas_plugin_api::{
    ApiVersion, DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, EvalOutcome, EvalRequest, Evaluator,
    HostContext, LlmBackend, MemoryInput, MemorySelection, MemoryStrategy, PluginError, PluginInfo, PluginInstance,
    PluginKind, PrepareRequest, API_VERSION,
};
use serde::Serialize;
use sha2::Digest;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};

use bindings::t;
use manifest::HostRule;
pub use manifest::WasmManifest;

/// The WIT package version this host speaks (its `major.minor` is the plugin
/// API version).
pub const WIT_VERSION: &str = "1.0.0";

/// The WIT package this host speaks.
pub const WIT_PACKAGE: &str = "nas:plugin@1.0.0";

/// How often the epoch ticks (the granularity of `deadline_ms`).
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A check [`load_component`] performs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WasmLoadStep {
    /// The component file exists and can be read.
    FileExists,
    /// A valid manifest sits beside it.
    Manifest,
    /// The file's sha256 is the manifest's.
    Hash,
    /// The manifest's plugin API version is one this host drives.
    ApiVersion,
    /// It compiles as a WebAssembly component (or comes from the cache).
    Compile,
    /// It targets the world of its manifest's kind at this host's WIT version.
    World,
    /// It instantiates within its limits.
    Instantiate,
    /// What it says about itself (`meta.info`) matches the manifest.
    Info,
}

impl WasmLoadStep {
    /// Every step, in order.
    pub const ALL: [WasmLoadStep; 8] = [
        WasmLoadStep::FileExists,
        WasmLoadStep::Manifest,
        WasmLoadStep::Hash,
        WasmLoadStep::ApiVersion,
        WasmLoadStep::Compile,
        WasmLoadStep::World,
        WasmLoadStep::Instantiate,
        WasmLoadStep::Info,
    ];

    /// What the step checks, for `nas plugins check`.
    pub fn describe(self) -> &'static str {
        match self {
            WasmLoadStep::FileExists => "file exists",
            WasmLoadStep::Manifest => "has a valid manifest beside it",
            WasmLoadStep::Hash => "sha256 matches the manifest",
            WasmLoadStep::ApiVersion => "plugin API version is compatible",
            WasmLoadStep::Compile => "compiles as a WebAssembly component",
            WasmLoadStep::World => "targets the world of its kind (nas:plugin@1.0.0)",
            WasmLoadStep::Instantiate => "instantiates within its limits",
            WasmLoadStep::Info => "describes itself as its manifest does",
        }
    }
}

/// Why a component could not be loaded: the step that failed (the ones before
/// it passed) and a message naming the file and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct WasmLoadError {
    /// The step that failed.
    pub step: WasmLoadStep,
    /// A one-paragraph message.
    pub message: String,
}

/// Options for [`load_component`].
#[derive(Debug, Clone, Default)]
pub struct WasmOptions {
    /// Where compiled components are cached (keyed by the component's sha256
    /// and the engine's compatibility hash); none = no cache.
    pub cache_dir: Option<PathBuf>,
    /// Echo the guest's `host.log` lines to stderr (they are kept in memory
    /// either way).
    pub log_to_stderr: bool,
}

/// The role interface name and world name of a kind.
fn role_names(kind: PluginKind) -> (&'static str, &'static str) {
    match kind {
        PluginKind::Memory => ("memory", "memory-strategy"),
        PluginKind::Llm => ("llm", "llm-backend"),
        PluginKind::Dataset => ("dataset", "dataset-loader"),
        PluginKind::Evaluator => ("eval", "evaluator"),
        PluginKind::Unknown => ("unknown", "unknown"),
    }
}

/// The imports each world offers.
fn world_imports(kind: PluginKind) -> &'static [&'static str] {
    match kind {
        PluginKind::Memory => &["types", "host"],
        PluginKind::Llm => &["types", "host", "http"],
        PluginKind::Dataset | PluginKind::Evaluator => &["types", "host", "files"],
        PluginKind::Unknown => &[],
    }
}

/// The one engine of the process (fuel and epoch interruption on), with a
/// ticker thread driving epochs.
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.consume_fuel(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("cannot start the wasm engine: {e}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("nas-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                })
                .map_err(|e| format!("cannot start the wasm epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Per-store data: the sandbox's grants and the per-call accounting.
pub(crate) struct GuestState {
    plugin_id: String,
    limiter: Limiter,
    allowed_hosts: Vec<HostRule>,
    allowed_host_names: Vec<String>,
    base_read_dirs: Vec<PathBuf>,
    read_dirs: Vec<PathBuf>,
    allowed_dir_names: Vec<String>,
    write_dir: Option<PathBuf>,
    api_key: Option<(String, String)>,
    http: Option<reqwest::blocking::Client>,
    denials: Vec<String>,
    host_time: Duration,
    call_start: Instant,
    deadline: Option<Duration>,
    deadline_hit: bool,
    log: Vec<String>,
    log_to_stderr: bool,
}

/// Caps linear memory, remembering a refused growth so the error can say so.
struct Limiter {
    cap: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "memory growth to {desired} bytes refused: the cap is {} bytes",
                self.cap
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Pre-instantiated bindings of each world.
#[derive(Clone)]
enum Pre {
    Memory(bindings::memory::MemoryStrategyPre<GuestState>),
    Llm(bindings::llm::LlmBackendPre<GuestState>),
    Dataset(bindings::dataset::DatasetLoaderPre<GuestState>),
    Eval(bindings::eval::EvaluatorPre<GuestState>),
}

/// A live instance of one world.
enum Bound {
    Memory(bindings::memory::MemoryStrategy),
    Llm(bindings::llm::LlmBackend),
    Dataset(bindings::dataset::DatasetLoader),
    Eval(bindings::eval::Evaluator),
}

impl Pre {
    fn new(kind: PluginKind, pre: InstancePre<GuestState>) -> wasmtime::Result<Pre> {
        Ok(match kind {
            PluginKind::Llm => Pre::Llm(bindings::llm::LlmBackendPre::new(pre)?),
            PluginKind::Dataset => Pre::Dataset(bindings::dataset::DatasetLoaderPre::new(pre)?),
            PluginKind::Evaluator => Pre::Eval(bindings::eval::EvaluatorPre::new(pre)?),
            _ => Pre::Memory(bindings::memory::MemoryStrategyPre::new(pre)?),
        })
    }

    fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::Memory(p) => Bound::Memory(p.instantiate(store)?),
            Pre::Llm(p) => Bound::Llm(p.instantiate(store)?),
            Pre::Dataset(p) => Bound::Dataset(p.instantiate(store)?),
            Pre::Eval(p) => Bound::Eval(p.instantiate(store)?),
        })
    }
}

impl Bound {
    fn info(&self, store: &mut Store<GuestState>) -> wasmtime::Result<t::PluginInfo> {
        match self {
            Bound::Memory(b) => b.nas_plugin_meta().call_info(store),
            Bound::Llm(b) => b.nas_plugin_meta().call_info(store),
            Bound::Dataset(b) => b.nas_plugin_meta().call_info(store),
            Bound::Eval(b) => b.nas_plugin_meta().call_info(store),
        }
    }

    fn init(
        &self,
        store: &mut Store<GuestState>,
        settings: &str,
        ctx: &t::HostContext,
    ) -> wasmtime::Result<Result<(), t::PluginError>> {
        match self {
            Bound::Memory(b) => b.nas_plugin_memory().call_init(store, settings, ctx),
            Bound::Llm(b) => b.nas_plugin_llm().call_init(store, settings, ctx),
            Bound::Dataset(b) => b.nas_plugin_dataset().call_init(store, settings, ctx),
            Bound::Eval(b) => b.nas_plugin_eval().call_init(store, settings, ctx),
        }
    }
}

/// What every instance of a loaded component shares.
struct Shared {
    path: PathBuf,
    manifest: WasmManifest,
    manifest_dir: PathBuf,
    info: PluginInfo,
    pre: Pre,
    log_to_stderr: bool,
    from_cache: bool,
}

/// A loaded WebAssembly component plugin: one plugin, described by its
/// manifest, from which instances are made.
#[derive(Clone)]
pub struct WasmLibrary {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WasmLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WasmLibrary({} from {})", self.shared.info.id, self.shared.path.display())
    }
}

/// Loads the component at `path` with the manifest beside it, running every
/// [`WasmLoadStep`].
pub fn load_component(path: &Path, options: &WasmOptions) -> Result<WasmLibrary, WasmLoadError> {
    let shown = path.display();
    let fail = |step, message: String| WasmLoadError { step, message };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(
            WasmLoadStep::FileExists,
            format!("cannot read wasm plugin `{shown}`: {e}. Check the path given to --plugin or after `wasm:` in the config."),
        )
    })?;

    let manifest_path = WasmManifest::path_for(path).map_err(|m| fail(WasmLoadStep::Manifest, m))?;
    let manifest = WasmManifest::load(&manifest_path).map_err(|m| fail(WasmLoadStep::Manifest, m))?;
    let manifest_dir = manifest_path.parent().map(Path::to_path_buf).unwrap_or_default();

    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    if sha != manifest.sha256 {
        return Err(fail(
            WasmLoadStep::Hash,
            format!(
                "`{shown}` has sha256 {sha}, but its manifest `{}` says {}: the component changed after the manifest was written (rebuild, or update `sha256` if you trust the new file)",
                manifest_path.display(),
                manifest.sha256
            ),
        ));
    }

    let api = manifest.api().map_err(|m| fail(WasmLoadStep::Manifest, m))?;
    if !API_VERSION.can_host(api) {
        return Err(fail(
            WasmLoadStep::ApiVersion,
            format!("`{shown}` declares plugin API {api}, and this host speaks plugin API {API_VERSION} (WIT package {WIT_PACKAGE}): a host drives plugins of the same major version and an equal or lower minor version. Rebuild the plugin against {WIT_PACKAGE}."),
        ));
    }

    let engine = engine().map_err(|m| fail(WasmLoadStep::Compile, m))?;
    let (component, from_cache) = compile(engine, &bytes, &sha, options.cache_dir.as_deref())
        .map_err(|m| fail(WasmLoadStep::Compile, format!("`{shown}`: {m}")))?;

    check_world(engine, &component, manifest.kind).map_err(|m| fail(WasmLoadStep::World, format!("`{shown}` {m}")))?;
    let linker = make_linker(engine, manifest.kind)
        .map_err(|e| fail(WasmLoadStep::World, format!("cannot set up the host imports: {e}")))?;
    let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
        fail(WasmLoadStep::World, format!("`{shown}` does not fit the {} world: {e}", role_names(manifest.kind).1))
    })?;
    let pre = Pre::new(manifest.kind, instance_pre).map_err(|e| {
        fail(WasmLoadStep::World, format!("`{shown}` does not export the {} world: {e}", role_names(manifest.kind).1))
    })?;

    let info = PluginInfo {
        id: manifest.id.clone(),
        kind: manifest.kind,
        version: manifest.version.clone(),
        api_version: api,
        description: manifest.description.clone(),
    };
    let shared = Shared {
        path: path.to_path_buf(),
        manifest,
        manifest_dir,
        info,
        pre,
        log_to_stderr: options.log_to_stderr,
        from_cache,
    };

    // One throwaway instance: it must instantiate within its limits and say
    // what its manifest says.
    let mut store = shared
        .new_store(engine, &HostContext::default(), None)
        .map_err(|e| fail(WasmLoadStep::Instantiate, e.message))?;
    shared.arm(&mut store);
    let bound = shared.pre.instantiate(&mut store).map_err(|e| {
        fail(
            WasmLoadStep::Instantiate,
            format!("`{shown}` did not instantiate: {}", describe_trap(&shared, &store, &e, "instantiation")),
        )
    })?;
    shared.arm(&mut store);
    let said = bound.info(&mut store).map_err(|e| {
        fail(WasmLoadStep::Info, format!("`{shown}`: {}", describe_trap(&shared, &store, &e, "meta.info")))
    })?;
    let said = convert::info(said);
    let m = &shared.manifest;
    let mismatch = if said.id != m.id {
        Some(format!("its id is `{}`, its manifest says `{}`", said.id, m.id))
    } else if said.kind != m.kind {
        Some(format!("it is a {}, its manifest says {}", said.kind, m.kind))
    } else if said.api_version != api {
        Some(format!("it was built against plugin API {}, its manifest says {api}", said.api_version))
    } else if said.version != m.version {
        Some(format!("its version is {}, its manifest says {}", said.version, m.version))
    } else {
        None
    };
    if let Some(why) = mismatch {
        return Err(fail(WasmLoadStep::Info, format!("`{shown}` does not match its manifest: {why}")));
    }
    Ok(WasmLibrary { shared: Arc::new(shared) })
}

/// Compiles a component, through the cache when there is one.
fn compile(engine: &Engine, bytes: &[u8], sha: &str, cache: Option<&Path>) -> Result<(Component, bool), String> {
    if bytes.len() >= 8 && &bytes[0..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
        return Err("is a core WebAssembly module, not a component: wrap it with `wasm-tools component new` (see docs/wasm-plugins.md)".into());
    }
    let cached = cache.map(|dir| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{sha}-{:016x}.cwasm", h.finish()))
    });
    if let Some(file) = cached.as_ref().filter(|f| f.is_file()) {
        // SAFETY: the file was written by `Component::serialize` below into
        // the host's own cache directory, under a name keyed by the source's
        // sha256 and this engine's compatibility hash; wasmtime checks the
        // header and compatibility again before using it.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, file) } {
            return Ok((c, true));
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| format!("is not a valid WebAssembly component: {e}"))?;
    if let (Some(file), Ok(data)) = (cached, component.serialize()) {
        // A cache that cannot be written only costs time.
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, data).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Ok((component, false))
}

/// Checks a component's exports and imports against the world of `kind`,
/// naming the world or version it targets instead.
fn check_world(engine: &Engine, component: &Component, kind: PluginKind) -> Result<(), String> {
    let (role, world) = role_names(kind);
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let want = format!("nas:plugin/{role}@{WIT_VERSION}");
    let meta = format!("nas:plugin/meta@{WIT_VERSION}");
    if !exports.contains(&want) || !exports.contains(&meta) {
        let roles = [PluginKind::Memory, PluginKind::Llm, PluginKind::Dataset, PluginKind::Evaluator];
        for name in &exports {
            let Some((iface, version)) = name.strip_prefix("nas:plugin/").and_then(|r| r.split_once('@')) else {
                continue;
            };
            if version != WIT_VERSION && (iface == role || iface == "meta") {
                return Err(format!(
                    "targets nas:plugin@{version} (it exports `{name}`), and this host speaks {WIT_PACKAGE}: rebuild it against plugin-api/wit of this host"
                ));
            }
            if let Some(other) = roles.iter().find(|k| role_names(**k).0 == iface && **k != kind) {
                return Err(format!(
                    "targets the {} world (it exports `{name}`), but its manifest says kind = \"{}\", whose world is {world}",
                    role_names(*other).1,
                    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
                ));
            }
        }
        return Err(format!(
            "does not target the {world} world: it must export `{meta}` and `{want}`, and it exports {exports:?}"
        ));
    }
    let offered = world_imports(kind);
    for (name, _) in ty.imports(engine) {
        let iface = name.strip_prefix("nas:plugin/").and_then(|r| r.split_once('@'));
        match iface {
            Some((i, v)) if offered.contains(&i) && v == WIT_VERSION => {}
            Some((i, v)) if offered.contains(&i) => {
                return Err(format!("imports `{name}`, but this host offers nas:plugin/{i}@{WIT_VERSION} (not {v})"))
            }
            _ if name.starts_with("wasi:") => {
                return Err(format!(
                    "imports `{name}`: this host gives plugins no WASI; the {world} world offers only {offered:?} (build the guest without file, clock or console I/O; see docs/wasm-plugins.md)"
                ))
            }
            _ => {
                return Err(format!(
                    "imports `{name}`, which the {world} world does not offer (it offers {offered:?}): was it built against another world?"
                ))
            }
        }
    }
    Ok(())
}

fn make_linker(engine: &Engine, kind: PluginKind) -> wasmtime::Result<Linker<GuestState>> {
    use wasmtime::component::HasSelf;
    let mut linker = Linker::new(engine);
    match kind {
        PluginKind::Llm => {
            bindings::llm::LlmBackend::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)?
        }
        PluginKind::Dataset => {
            bindings::dataset::DatasetLoader::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)?
        }
        PluginKind::Evaluator => {
            bindings::eval::Evaluator::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)?
        }
        _ => bindings::memory::MemoryStrategy::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)?,
    }
    Ok(linker)
}

/// Explains a failed call: memory cap, deadline, fuel, trap, or host error.
fn describe_trap(shared: &Shared, store: &Store<GuestState>, e: &wasmtime::Error, what: &str) -> String {
    classify(shared, store, e, what).message
}

fn classify(shared: &Shared, store: &Store<GuestState>, e: &wasmtime::Error, what: &str) -> PluginError {
    let id = &shared.info.id;
    let m = &shared.manifest;
    let data = store.data();
    if let Some(bytes) = data.limiter.refused {
        return PluginError::internal(format!(
            "wasm plugin `{id}` tried to grow its memory to {bytes} bytes in `{what}`, over its manifest's memory_max_bytes = {}; the call was stopped",
            m.memory_max_bytes
        ));
    }
    if data.deadline_hit {
        return PluginError::new(
            ErrorCode::Timeout,
            format!(
                "wasm plugin `{id}` ran past its deadline of {} ms of guest time in `{what}` and was stopped",
                m.deadline_ms.unwrap_or(0)
            ),
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::new(
            ErrorCode::Timeout,
            format!(
                "wasm plugin `{id}` ran out of fuel in `{what}` (fuel_per_call = {}): it was stopped, an endless loop is likely",
                m.fuel_per_call.unwrap_or(u64::MAX)
            ),
        ),
        Some(Trap::Interrupt) => {
            PluginError::new(ErrorCode::Timeout, format!("wasm plugin `{id}` was interrupted in `{what}`"))
        }
        Some(trap) => PluginError::new(ErrorCode::Panic, format!("wasm plugin `{id}` trapped in `{what}`: {trap}")),
        None => PluginError::internal(format!("wasm plugin `{id}` failed in `{what}`: {}", one_line(e))),
    }
}

fn one_line(e: &wasmtime::Error) -> String {
    format!("{e:?}").lines().next().unwrap_or_default().to_string()
}

impl Shared {
    /// A fresh store with the manifest's grants and limits.
    fn new_store(
        &self,
        engine: &Engine,
        ctx: &HostContext,
        api_key: Option<(String, String)>,
    ) -> Result<Store<GuestState>, PluginError> {
        let m = &self.manifest;
        let allowed_hosts = m
            .allowed_hosts
            .iter()
            .map(|h| HostRule::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PluginError::config)?;
        let mut read_dirs = Vec::new();
        for d in &m.allowed_dirs {
            let expanded = match (d.strip_prefix("{data_dir}"), &ctx.data_dir) {
                (Some(rest), Some(data)) => data.join(rest.trim_start_matches('/')),
                (Some(_), None) => continue,
                (None, _) => self.manifest_dir.join(d),
            };
            // A granted directory that does not exist grants nothing.
            if let Ok(real) = expanded.canonicalize() {
                read_dirs.push(real);
            }
        }
        let cap = usize::try_from(m.memory_max_bytes).unwrap_or(usize::MAX);
        let state = GuestState {
            plugin_id: self.info.id.clone(),
            limiter: Limiter { cap, refused: None },
            allowed_hosts,
            allowed_host_names: m.allowed_hosts.clone(),
            base_read_dirs: read_dirs.clone(),
            read_dirs,
            allowed_dir_names: m.allowed_dirs.clone(),
            write_dir: None,
            api_key,
            http: None,
            denials: Vec::new(),
            host_time: Duration::ZERO,
            call_start: Instant::now(),
            deadline: m.deadline_ms.map(Duration::from_millis),
            deadline_hit: false,
            log: Vec::new(),
            log_to_stderr: self.log_to_stderr,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            if let Some(limit) = s.deadline {
                if s.call_start.elapsed().saturating_sub(s.host_time) > limit {
                    s.deadline_hit = true;
                    return Ok(UpdateDeadline::Interrupt);
                }
            }
            Ok(UpdateDeadline::Continue(1))
        });
        Ok(store)
    }

    /// Resets the per-call accounting and refuels before a call.
    fn arm(&self, store: &mut Store<GuestState>) {
        let fuel = self.manifest.fuel_per_call.unwrap_or(u64::MAX);
        // Fuel is enabled on the engine, so this cannot fail.
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(1);
        let s = store.data_mut();
        s.denials.clear();
        s.host_time = Duration::ZERO;
        s.call_start = Instant::now();
        s.deadline_hit = false;
        s.limiter.refused = None;
    }
}

impl WasmLibrary {
    /// The plugin this component offers (exactly one).
    pub fn plugins(&self) -> Vec<PluginInfo> {
        vec![self.shared.info.clone()]
    }

    /// Its manifest.
    pub fn manifest(&self) -> &WasmManifest {
        &self.shared.manifest
    }

    /// The component file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the compiled component came from the cache.
    pub fn from_cache(&self) -> bool {
        self.shared.from_cache
    }

    /// The API version of the plugin.
    pub fn api_version(&self) -> ApiVersion {
        self.shared.info.api_version
    }

    /// A new instance (its own store), configured by `config` (the plugin's
    /// settings table as JSON). For an LLM backend, the host-owned setting
    /// `api_key_env` names the environment variable whose value the host
    /// sends as `Authorization: Bearer ...` on the guest's requests; it is
    /// removed from the settings the guest sees.
    pub fn create(
        &self,
        info: &PluginInfo,
        config: &serde_json::Value,
        ctx: &HostContext,
    ) -> Result<PluginInstance, PluginError> {
        let id = &self.shared.info.id;
        if info.id != *id {
            return Err(PluginError::new(
                ErrorCode::NotFound,
                format!("`{}` offers plugin `{id}`, not `{}`", self.shared.path.display(), info.id),
            ));
        }
        let mut settings = if config.is_null() { serde_json::json!({}) } else { config.clone() };
        let mut api_key = None;
        if self.shared.info.kind == PluginKind::Llm {
            if let Some(obj) = settings.as_object_mut() {
                if obj.contains_key("api_key") {
                    return Err(PluginError::config(format!(
                        "[{id}] settings: `api_key` is not passed to wasm plugins; set `api_key_env` to the name of an environment variable holding the key, and the host adds it to the plugin's requests"
                    )));
                }
                if let Some(var) = obj.remove("api_key_env") {
                    let var = var.as_str().ok_or_else(|| {
                        PluginError::config(format!("[{id}] settings: `api_key_env` must be a string"))
                    })?;
                    let key = std::env::var(var).map_err(|_| {
                        PluginError::config(format!(
                            "[{id}] settings: `api_key_env` names `{var}`, which is not set in the environment"
                        ))
                    })?;
                    api_key = Some(("Authorization".to_string(), format!("Bearer {key}")));
                }
            }
        }
        let settings = settings.to_string();
        let mut inst = Instance { shared: self.shared.clone(), settings, ctx: ctx.clone(), api_key, live: None };
        inst.start()?;
        Ok(match self.shared.info.kind {
            PluginKind::Memory => PluginInstance::Memory(Box::new(WasmMemory(inst))),
            PluginKind::Llm => PluginInstance::Llm(Box::new(WasmLlm(inst))),
            PluginKind::Dataset => PluginInstance::Dataset(Box::new(WasmDataset(inst))),
            PluginKind::Evaluator => PluginInstance::Evaluator(Box::new(WasmEvaluator(inst))),
            PluginKind::Unknown => {
                return Err(PluginError::new(ErrorCode::Incompatible, format!("plugin `{id}` is of an unknown kind")))
            }
        })
    }
}

/// One plugin instance: its own store, remade after a trap.
struct Instance {
    shared: Arc<Shared>,
    settings: String,
    ctx: HostContext,
    api_key: Option<(String, String)>,
    live: Option<(Store<GuestState>, Bound)>,
}

impl Instance {
    /// Instantiates and calls `init`.
    fn start(&mut self) -> Result<(), PluginError> {
        let engine = engine().map_err(PluginError::internal)?;
        let mut store = self.shared.new_store(engine, &self.ctx, self.api_key.clone())?;
        self.shared.arm(&mut store);
        let bound =
            self.shared.pre.instantiate(&mut store).map_err(|e| classify(&self.shared, &store, &e, "instantiation"))?;
        self.shared.arm(&mut store);
        let ctx = convert::ctx(&self.ctx);
        match bound.init(&mut store, &self.settings, &ctx) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(convert::error(e)),
            Err(e) => return Err(classify(&self.shared, &store, &e, "init")),
        }
        self.live = Some((store, bound));
        Ok(())
    }

    /// Calls into the guest with fresh fuel and deadline; a trap throws the
    /// instance away (the next call makes a new one).
    fn call<R>(
        &mut self,
        what: &str,
        extra_read: Option<&Path>,
        write_dir: Option<&Path>,
        f: impl FnOnce(&mut Store<GuestState>, &Bound) -> wasmtime::Result<Result<R, t::PluginError>>,
    ) -> Result<R, PluginError> {
        if self.live.is_none() {
            self.start()?;
        }
        let (mut store, bound) = self.live.take().expect("started above");
        self.shared.arm(&mut store);
        {
            let s = store.data_mut();
            s.read_dirs = s.base_read_dirs.clone();
            if let Some(real) = extra_read.and_then(|d| d.canonicalize().ok()) {
                s.read_dirs.push(real);
            }
            s.write_dir = write_dir.and_then(|d| d.canonicalize().ok());
        }
        let result = f(&mut store, &bound);
        store.data_mut().write_dir = None;
        match result {
            Ok(Ok(r)) => {
                self.live = Some((store, bound));
                Ok(r)
            }
            Ok(Err(e)) => {
                let denials = std::mem::take(&mut store.data_mut().denials);
                self.live = Some((store, bound));
                let e = convert::error(e);
                match denials.first() {
                    Some(d) => Err(PluginError::new(
                        ErrorCode::Unauthorized,
                        format!("{d} (the plugin then failed with: {e})"),
                    )),
                    None => Err(e),
                }
            }
            Err(e) => Err(classify(&self.shared, &store, &e, what)),
        }
    }
}

macro_rules! bound_as {
    ($bound:expr, $variant:ident, $what:expr) => {
        match $bound {
            Bound::$variant(b) => b,
            _ => return Err(wasmtime::Error::msg(concat!("instance is not of the world for ", $what))),
        }
    };
}

struct WasmMemory(Instance);

impl MemoryStrategy for WasmMemory {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        let arg = convert::memory_input(input);
        let out = self.0.call("memory.select", None, None, |store, bound| {
            bound_as!(bound, Memory, "memory").nas_plugin_memory().call_select(store, &arg)
        })?;
        convert::memory_selection(out)
    }
}

struct WasmLlm(Instance);

impl LlmBackend for WasmLlm {
    fn complete(&mut self, request: &nas_plugin_api::ChatRequest) -> Result<nas_plugin_api::ChatResponse, PluginError> {
        let arg = convert::chat_request(request);
        let start = Instant::now();
        let out = self.0.call("llm.complete", None, None, |store, bound| {
            bound_as!(bound, Llm, "llm").nas_plugin_llm().call_complete(store, &arg)
        })?;
        let mut response = convert::chat_response(out);
        // A guest has no clock: the host measures the call when it did not.
        if response.latency_ms == 0 {
            response.latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        Ok(response)
    }
}

struct WasmDataset(Instance);

impl DatasetLoader for WasmDataset {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        let out = self.0.call("dataset.describe", None, None, |store, bound| {
            bound_as!(bound, Dataset, "dataset").nas_plugin_dataset().call_describe(store)
        })?;
        Ok(convert::description(out))
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        let arg = convert::prepare_request(request);
        let out =
            self.0.call("dataset.prepare", Some(&request.cache_dir), Some(&request.cache_dir), |store, bound| {
                bound_as!(bound, Dataset, "dataset").nas_plugin_dataset().call_prepare(store, &arg)
            })?;
        // The guest writes the split files; the host writes manifest.json
        // from what it returned, after checking it.
        let manifest = convert::manifest(out)?;
        manifest.check().map_err(|e| {
            PluginError::new(
                ErrorCode::Corrupt,
                format!("wasm plugin `{}` returned an invalid dataset manifest: {e}", self.0.shared.info.id),
            )
        })?;
        manifest.save(&request.cache_dir)?;
        Ok(manifest)
    }
}

struct WasmEvaluator(Instance);

impl Evaluator for WasmEvaluator {
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        let arg = convert::eval_request(request);
        let out = self.0.call("eval.evaluate", Some(&request.dataset.dir), None, |store, bound| {
            bound_as!(bound, Eval, "evaluator").nas_plugin_eval().call_evaluate(store, &arg)
        })?;
        convert::eval_outcome(out)
    }
}

/// One line of `nas plugins check x.wasm`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    /// The step.
    pub step: WasmLoadStep,
    /// `Some(true)` passed, `Some(false)` failed, `None` not reached.
    pub passed: Option<bool>,
    /// Why it failed (empty otherwise).
    pub detail: String,
}

/// Runs every [`WasmLoadStep`] on `path` and says which passed, for
/// `nas plugins check`; also returns the library when all passed.
pub fn check_component(path: &Path, options: &WasmOptions) -> (Vec<StepResult>, Option<WasmLibrary>) {
    let (failed, lib) = match load_component(path, options) {
        Ok(lib) => (None, Some(lib)),
        Err(e) => (Some(e), None),
    };
    let mut reached = true;
    let steps = WasmLoadStep::ALL
        .iter()
        .map(|&step| {
            let (passed, detail) = match &failed {
                Some(e) if e.step == step => {
                    reached = false;
                    (Some(false), e.message.clone())
                }
                _ if reached => (Some(true), String::new()),
                _ => (None, String::new()),
            };
            StepResult { step, passed, detail }
        })
        .collect();
    (steps, lib)
}
