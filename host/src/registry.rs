//! The plugin registry: every plugin the host can create, where it came from,
//! and how a config reference picks one.
//!
//! Built-in plugins are registered through exactly the door third-party
//! libraries use: each built-in crate's `library()` gives the same
//! abi_stable root module a `.so` exports, and the host drives both through
//! [`NativeLibrary`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nas_plugin_api::ffi::{LoadFailure, LoadStep, NativeLibrary};
use nas_plugin_api::{HostContext, PluginError, PluginInfo, PluginInstance, PluginKind};
use serde::{Deserialize, Serialize};

/// How a config names a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginRef {
    /// `builtin:<id>`: a plugin linked into `nas`.
    Builtin(String),
    /// `native:<path>[#<id>]`: a plugin library (`.so`).
    Native {
        /// The library.
        path: PathBuf,
        /// Which of its plugins (needed when it offers several of one kind).
        id: Option<String>,
    },
    /// `wasm:<path>[#<id>]`: a WebAssembly component.
    Wasm {
        /// The component.
        path: PathBuf,
        /// Which of its plugins.
        id: Option<String>,
    },
    /// `<id>`: whichever registered plugin has this id (a library loaded
    /// with `--plugin` takes precedence over the built-in of the same id).
    Id(String),
}

impl FromStr for PluginRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.rsplit_once('#') {
                Some((p, id)) if !id.is_empty() => (PathBuf::from(p), Some(id.to_string())),
                _ => (PathBuf::from(rest), None),
            }
        };
        if let Some(id) = s.strip_prefix("builtin:") {
            if id.is_empty() {
                return Err("`builtin:` needs a plugin id, e.g. `builtin:memory.window`".into());
            }
            return Ok(PluginRef::Builtin(id.to_string()));
        }
        if let Some(rest) = s.strip_prefix("native:") {
            let (path, id) = split(rest);
            if path.as_os_str().is_empty() {
                return Err("`native:` needs a path, e.g. `native:./plugins/libmy_plugin.so`".into());
            }
            return Ok(PluginRef::Native { path, id });
        }
        if let Some(rest) = s.strip_prefix("wasm:") {
            let (path, id) = split(rest);
            if path.as_os_str().is_empty() {
                return Err("`wasm:` needs a path, e.g. `wasm:./plugins/memory.wasm`".into());
            }
            return Ok(PluginRef::Wasm { path, id });
        }
        if let Some((scheme, _)) = s.split_once(':') {
            return Err(format!(
                "unknown plugin scheme `{scheme}:` in `{s}`; use `builtin:<id>`, `native:<path.so>`, `wasm:<path.wasm>` or a bare id"
            ));
        }
        if s.is_empty() || !s.contains('.') {
            return Err(format!(
                "`{s}` is not a plugin reference; plugin ids look like `memory.window` or `llm.qwen2.5`"
            ));
        }
        Ok(PluginRef::Id(s.to_string()))
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_id = |f: &mut fmt::Formatter<'_>, scheme: &str, path: &Path, id: &Option<String>| match id {
            Some(id) => write!(f, "{scheme}:{}#{id}", path.display()),
            None => write!(f, "{scheme}:{}", path.display()),
        };
        match self {
            PluginRef::Builtin(id) => write!(f, "builtin:{id}"),
            PluginRef::Native { path, id } => with_id(f, "native", path, id),
            PluginRef::Wasm { path, id } => with_id(f, "wasm", path, id),
            PluginRef::Id(id) => f.write_str(id),
        }
    }
}

impl Serialize for PluginRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PluginRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl PluginRef {
    /// Resolves relative paths against `dir`.
    pub fn resolved(&self, dir: &Path) -> PluginRef {
        let fix = |p: &PathBuf| if p.is_relative() { dir.join(p) } else { p.clone() };
        match self {
            PluginRef::Native { path, id } => PluginRef::Native { path: fix(path), id: id.clone() },
            PluginRef::Wasm { path, id } => PluginRef::Wasm { path: fix(path), id: id.clone() },
            other => other.clone(),
        }
    }
}

/// Where a registered plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "path", rename_all = "snake_case")]
pub enum Origin {
    /// Linked into `nas`.
    Builtin,
    /// A native library.
    Native(PathBuf),
    /// A WebAssembly component.
    Wasm(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("builtin"),
            Origin::Native(p) => write!(f, "native:{}", p.display()),
            Origin::Wasm(p) => write!(f, "wasm:{}", p.display()),
        }
    }
}

/// A library of plugins, whichever door it came through.
#[derive(Clone)]
pub enum Library {
    /// Native or linked-in (abi_stable).
    Native(NativeLibrary),
    /// A WebAssembly component.
    Wasm(std::sync::Arc<crate::wasm::WasmLibrary>),
}

impl Library {
    fn create(
        &self,
        info: &PluginInfo,
        settings: &serde_json::Value,
        ctx: &HostContext,
    ) -> Result<PluginInstance, PluginError> {
        match self {
            Library::Native(lib) => lib.create(info, settings, ctx),
            Library::Wasm(lib) => lib.create(info, settings, ctx),
        }
    }
}

/// One plugin the host can create.
#[derive(Clone)]
pub struct Registered {
    /// What it says it is.
    pub info: PluginInfo,
    /// Where it came from.
    pub origin: Origin,
    library: Library,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.info.id, self.origin)
    }
}

/// A registry problem: the message is meant for the user as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// A library failed a load check.
    #[error("{0}")]
    Load(LoadFailure),
    /// A library loaded but its plugin list is unusable.
    #[error("`{path}`: {message}")]
    List {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Two loaded libraries offer the same id.
    #[error("two plugins have the id `{id}`: one from {first}, one from {second}. Load only one of them, or reference one explicitly.")]
    Duplicate {
        /// The id.
        id: String,
        /// Where the first came from.
        first: Origin,
        /// Where the second came from.
        second: Origin,
    },
    /// No plugin matches a reference.
    #[error("no {kind} plugin `{reference}`{hint}")]
    NotFound {
        /// The reference.
        reference: String,
        /// The kind wanted.
        kind: PluginKind,
        /// What exists instead.
        hint: String,
    },
    /// A reference matches a plugin of the wrong kind.
    #[error("`{reference}` is a {actual}, but a {wanted} is needed here")]
    WrongKind {
        /// The reference.
        reference: String,
        /// Its kind.
        actual: PluginKind,
        /// The kind needed.
        wanted: PluginKind,
    },
    /// A library offers several plugins of the kind, and the reference does not say which.
    #[error("`{reference}` offers several {kind} plugins ({ids}); say which with `#<id>`, e.g. `{reference}#{first}`")]
    Ambiguous {
        /// The reference.
        reference: String,
        /// The kind wanted.
        kind: PluginKind,
        /// The candidates.
        ids: String,
        /// The first candidate.
        first: String,
    },
    /// The plugin refused to be created.
    #[error("plugin `{id}` ({origin}) could not be created: {error}")]
    Create {
        /// The plugin.
        id: String,
        /// Where it came from.
        origin: Origin,
        /// The plugin's error.
        error: PluginError,
    },
    /// WebAssembly loading failed.
    #[error("{0}")]
    Wasm(String),
}

/// Every plugin the host can create.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: Vec<Registered>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.plugins).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry holding the built-in plugins.
    pub fn with_builtins() -> Result<Self, RegistryError> {
        let mut r = Registry::empty();
        for lib in crate::builtins::libraries() {
            r.add(Library::Native(NativeLibrary::from_ref(lib)), Origin::Builtin)?;
        }
        Ok(r)
    }

    /// The registered plugins, in registration order.
    pub fn plugins(&self) -> &[Registered] {
        &self.plugins
    }

    /// Loads a plugin library by path: `.wasm` as a WebAssembly component,
    /// anything else as a native library. Returns the ids it added.
    pub fn load_path(&mut self, path: &Path) -> Result<Vec<String>, RegistryError> {
        if path.extension().is_some_and(|e| e == "wasm") {
            let lib = crate::wasm::load_component(path, &wasm_options()).map_err(|e| RegistryError::Wasm(e.message))?;
            self.add(Library::Wasm(std::sync::Arc::new(lib)), Origin::Wasm(path.to_path_buf()))
        } else {
            let lib = NativeLibrary::load(path).map_err(RegistryError::Load)?;
            self.add(Library::Native(lib), Origin::Native(path.to_path_buf()))
        }
    }

    fn add(&mut self, library: Library, origin: Origin) -> Result<Vec<String>, RegistryError> {
        let infos = match &library {
            Library::Native(lib) => lib.plugins(),
            Library::Wasm(lib) => Ok(lib.plugins()),
        };
        let path = match &origin {
            Origin::Builtin => PathBuf::from("(builtin)"),
            Origin::Native(p) | Origin::Wasm(p) => p.clone(),
        };
        let infos = infos.map_err(|e| RegistryError::List { path: path.clone(), message: e.message })?;
        if infos.is_empty() {
            return Err(RegistryError::List { path, message: "the library offers no plugins".into() });
        }
        let mut ids = Vec::new();
        for info in &infos {
            if let Some(dup) = infos.iter().filter(|i| i.id == info.id).nth(1) {
                return Err(RegistryError::Duplicate {
                    id: dup.id.clone(),
                    first: origin.clone(),
                    second: origin.clone(),
                });
            }
            // A loaded library may override a built-in of the same id; two
            // loaded libraries with the same id are an error.
            if let Some(existing) = self.plugins.iter().find(|p| p.info.id == info.id && p.origin != Origin::Builtin) {
                return Err(RegistryError::Duplicate {
                    id: info.id.clone(),
                    first: existing.origin.clone(),
                    second: origin.clone(),
                });
            }
            ids.push(info.id.clone());
        }
        for info in infos {
            self.plugins.push(Registered { info, origin: origin.clone(), library: library.clone() });
        }
        Ok(ids)
    }

    /// Finds the plugin a reference names, checking its kind. Libraries named
    /// by path are loaded (once) if they are not yet registered.
    pub fn resolve(&mut self, reference: &PluginRef, kind: PluginKind) -> Result<Registered, RegistryError> {
        let shown = reference.to_string();
        let candidates: Vec<&Registered> = match reference {
            PluginRef::Builtin(id) => {
                self.plugins.iter().filter(|p| p.origin == Origin::Builtin && &p.info.id == id).collect()
            }
            PluginRef::Id(id) => {
                let matching: Vec<&Registered> = self.plugins.iter().filter(|p| &p.info.id == id).collect();
                // A loaded library overrides a built-in of the same id.
                match matching.iter().find(|p| p.origin != Origin::Builtin) {
                    Some(p) => vec![*p],
                    None => matching,
                }
            }
            PluginRef::Native { path, id } | PluginRef::Wasm { path, id } => {
                let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                let loaded = |p: &Registered| match &p.origin {
                    Origin::Native(o) | Origin::Wasm(o) => {
                        std::fs::canonicalize(o).unwrap_or_else(|_| o.clone()) == canonical
                    }
                    Origin::Builtin => false,
                };
                if !self.plugins.iter().any(loaded) {
                    self.load_path(path)?;
                }
                self.plugins
                    .iter()
                    .filter(|p| loaded(p))
                    .filter(|p| id.as_ref().is_none_or(|id| &p.info.id == id))
                    .filter(|p| id.is_some() || p.info.kind == kind)
                    .collect()
            }
        };
        match candidates.as_slice() {
            [] => {
                let same_kind: Vec<String> =
                    self.plugins.iter().filter(|p| p.info.kind == kind).map(|p| p.info.id.clone()).collect();
                let hint =
                    if same_kind.is_empty() { String::new() } else { format!("; available: {}", same_kind.join(", ")) };
                Err(RegistryError::NotFound { reference: shown, kind, hint })
            }
            [one] => {
                if one.info.kind != kind {
                    return Err(RegistryError::WrongKind { reference: shown, actual: one.info.kind, wanted: kind });
                }
                Ok((*one).clone())
            }
            many => Err(RegistryError::Ambiguous {
                reference: shown,
                kind,
                ids: many.iter().map(|p| p.info.id.as_str()).collect::<Vec<_>>().join(", "),
                first: many[0].info.id.clone(),
            }),
        }
    }

    /// Resolves and creates a plugin instance.
    pub fn create(
        &mut self,
        reference: &PluginRef,
        kind: PluginKind,
        settings: &serde_json::Value,
        ctx: &HostContext,
    ) -> Result<(Registered, PluginInstance), RegistryError> {
        let registered = self.resolve(reference, kind)?;
        let instance = registered.create(settings, ctx)?;
        Ok((registered, instance))
    }
}

impl Registered {
    /// Creates an instance with the given settings.
    pub fn create(&self, settings: &serde_json::Value, ctx: &HostContext) -> Result<PluginInstance, RegistryError> {
        self.library.create(&self.info, settings, ctx).map_err(|error| RegistryError::Create {
            id: self.info.id.clone(),
            origin: self.origin.clone(),
            error,
        })
    }
}

/// How the host loads WebAssembly components: compiled components are cached
/// under `$NAS_HOME/cache/wasm`.
pub fn wasm_options() -> crate::wasm::WasmOptions {
    crate::wasm::WasmOptions { cache_dir: Some(crate::paths::cache_dir().join("wasm")), log_to_stderr: false }
}

/// The outcome of one load check, for `nas plugins check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked.
    pub check: String,
    /// Whether it passed; `None` when it did not run because an earlier one failed.
    pub passed: Option<bool>,
    /// Details (the error, or what was found).
    pub detail: String,
}

/// Runs every load check on a native library and then creates each of its
/// plugins with empty settings.
pub fn check_native(path: &Path, ctx: &HostContext) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let lib = NativeLibrary::load(path);
    let failed_step = lib.as_ref().err().map(|f| f.step);
    for step in LoadStep::ALL.iter().filter(|s| **s != LoadStep::ListPlugins) {
        let passed = match failed_step {
            None => Some(true),
            Some(f) if f == *step => Some(false),
            Some(f) if (f as u8) > (*step as u8) => Some(true),
            Some(_) => None,
        };
        let detail = match (&lib, failed_step) {
            (Err(e), Some(f)) if f == *step => e.message.clone(),
            (Ok(lib), _) if *step == LoadStep::ApiVersion => {
                format!("plugin API {} (host {})", lib.api_version(), nas_plugin_api::API_VERSION)
            }
            _ => String::new(),
        };
        results.push(CheckResult { check: step.describe().to_string(), passed, detail });
    }
    let Ok(lib) = lib else {
        results.push(CheckResult {
            check: LoadStep::ListPlugins.describe().into(),
            passed: None,
            detail: String::new(),
        });
        return results;
    };
    let infos = match lib.plugins() {
        Ok(i) if !i.is_empty() => {
            let list = i.iter().map(|p| format!("{} ({}, {})", p.id, p.kind, p.version)).collect::<Vec<_>>().join(", ");
            results.push(CheckResult {
                check: LoadStep::ListPlugins.describe().into(),
                passed: Some(true),
                detail: list,
            });
            i
        }
        Ok(_) => {
            results.push(CheckResult {
                check: LoadStep::ListPlugins.describe().into(),
                passed: Some(false),
                detail: "the library offers no plugins".into(),
            });
            return results;
        }
        Err(e) => {
            results.push(CheckResult {
                check: LoadStep::ListPlugins.describe().into(),
                passed: Some(false),
                detail: e.message,
            });
            return results;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for info in &infos {
        if !seen.insert(info.id.clone()) {
            results.push(CheckResult {
                check: format!("plugin ids are unique ({})", info.id),
                passed: Some(false),
                detail: format!("the library offers `{}` twice", info.id),
            });
        }
    }
    for info in &infos {
        let created = lib.create(info, &serde_json::json!({}), ctx);
        results.push(CheckResult {
            check: format!("creates `{}` with default settings", info.id),
            passed: Some(created.is_ok()),
            detail: created.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
        });
        if let Ok(PluginInstance::Memory(mut memory)) = created {
            let r = smoke_memory(memory.as_mut());
            results.push(CheckResult {
                check: format!("`{}` selects from a sample history", info.id),
                passed: Some(r.is_ok()),
                detail: r.err().unwrap_or_default(),
            });
        }
    }
    results
}

/// One call on a sample history: the selection must be made of entries
/// from the input.
pub fn smoke_memory(memory: &mut dyn nas_plugin_api::MemoryStrategy) -> Result<(), String> {
    use nas_plugin_api::{MemoryEntry, MemoryInput};
    let entries: Vec<MemoryEntry> = (1..=8)
        .map(|i| MemoryEntry {
            iteration: i,
            problem: format!("problem {i}"),
            suggestion: format!("suggestion {i}"),
            outcome: Some(if i % 3 == 0 {
                "error: shape mismatch".into()
            } else {
                format!("accuracy: {}.00%", 60 + i)
            }),
            accuracy: (i % 3 != 0).then(|| (60 + i) as f64 / 100.0),
            failure_kind: (i % 3 == 0).then(|| "shape".to_string()),
            best_before: Some(0.6),
        })
        .collect();
    let input = MemoryInput { entries: entries.clone(), iteration: 9, ..Default::default() };
    let selection = memory.select(&input).map_err(|e| e.to_string())?;
    if let Some(stray) = selection.entries.iter().find(|e| !entries.contains(e)) {
        return Err(format!("selected an entry that is not in the history (iteration {})", stray.iteration));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_their_schemes() {
        assert_eq!("builtin:memory.window".parse::<PluginRef>(), Ok(PluginRef::Builtin("memory.window".into())));
        assert_eq!(
            "native:./x/libq.so#llm.qwen2.5".parse::<PluginRef>(),
            Ok(PluginRef::Native { path: "./x/libq.so".into(), id: Some("llm.qwen2.5".into()) })
        );
        assert_eq!("wasm:m.wasm".parse::<PluginRef>(), Ok(PluginRef::Wasm { path: "m.wasm".into(), id: None }));
        assert_eq!("memory.full".parse::<PluginRef>(), Ok(PluginRef::Id("memory.full".into())));
        assert!("http:x".parse::<PluginRef>().expect_err("bad").contains("unknown plugin scheme"));
        assert!("window".parse::<PluginRef>().is_err());
        for s in ["builtin:memory.window", "native:a/b.so#llm.x", "wasm:m.wasm"] {
            assert_eq!(s.parse::<PluginRef>().expect("parses").to_string(), s);
        }
    }

    #[test]
    fn builtins_resolve_by_reference_and_check_kind() {
        let mut r = Registry::with_builtins().expect("builtins register");
        let p = r.resolve(&PluginRef::Builtin("memory.window".into()), PluginKind::Memory).expect("found");
        assert_eq!(p.origin, Origin::Builtin);
        let err = r.resolve(&PluginRef::Id("memory.window".into()), PluginKind::Llm).expect_err("wrong kind");
        assert!(matches!(err, RegistryError::WrongKind { .. }), "{err}");
        let err = r.resolve(&PluginRef::Id("memory.nothing".into()), PluginKind::Memory).expect_err("missing");
        assert!(err.to_string().contains("memory.window"), "lists what exists: {err}");
    }
}
