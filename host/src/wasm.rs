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

mod adapters;
mod bindings;
mod convert;
mod imports;
pub mod manifest;
mod runtime;
mod world;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nas_plugin_api::{
    ApiVersion, ErrorCode, HostContext, PluginError, PluginInfo, PluginInstance, PluginKind, API_VERSION,
};
use serde::Serialize;
use sha2::Digest;
use wasmtime::component::Component;
use wasmtime::Engine;

pub use manifest::WasmManifest;
use runtime::{describe_trap, engine, Instance, Shared};
use world::{check_world, make_linker, world_of, Pre};

/// The WIT package version this host speaks (its `major.minor` is the plugin
/// API version).
pub const WIT_VERSION: &str = "1.0.0";

/// The WIT package this host speaks.
pub const WIT_PACKAGE: &str = "nas:plugin@1.0.0";

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
        fail(
            WasmLoadStep::World,
            format!(
                "`{shown}` does not fit the {} world: {e}",
                world_of(manifest.kind).map(|w| w.world).unwrap_or_default()
            ),
        )
    })?;
    let pre = Pre::new(manifest.kind, instance_pre).map_err(|e| {
        fail(
            WasmLoadStep::World,
            format!(
                "`{shown}` does not export the {} world: {e}",
                world_of(manifest.kind).map(|w| w.world).unwrap_or_default()
            ),
        )
    })?;

    let info = PluginInfo {
        id: manifest.id.clone(),
        kind: manifest.kind,
        version: manifest.version.clone(),
        api_version: api,
        description: manifest.description.clone(),
        concurrency: None,
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
        adapters::role_instance(self.shared.info.kind, inst)
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
