//! The native door: a tiny abi_stable surface with JSON payloads inside.
//!
//! A plugin library (a `cdylib`) exports one root module, [`PluginLib`]:
//!
//! - `api_version` — the [`crate::API_VERSION`] it was built against, read
//!   and checked by the host before the first call;
//! - `plugins()` — a JSON array of [`PluginInfo`];
//! - `create(id, settings, context)` — a new instance behind [`FfiPlugin`],
//!   whose single method `call(method, json)` carries every role's requests.
//!
//! Fields are only ever appended (abi_stable prefix types), so a host keeps
//! loading plugins built against an older minor version. Every export
//! catches panics and turns them into [`ErrorCode::Panic`] errors; an
//! instance that panicked refuses further calls. Libraries are never
//! unloaded.
//!
//! Plugin authors use two macros and nothing else from here:
//! [`export_plugins!`](crate::export_plugins) in a `cdylib`, or
//! [`plugin_library!`](crate::plugin_library) +
//! [`export_root_module!`](crate::export_root_module) when the same code is
//! also linked into a host as an `rlib`.

#![allow(non_local_definitions)] // emitted by abi_stable's `#[sabi_trait]` expansion

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RErr, ROk, RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    Adapter, ApiVersion, ChatRequest, ChatResponse, DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode,
    EvalOutcome, EvalRequest, Evaluator, FineTuner, HostContext, LlmBackend, MemoryInput, MemorySelection,
    MemoryStrategy, Method, PluginError, PluginFactory, PluginInfo, PluginInstance, PluginKind, PrepareRequest,
    TuneRequest, API_VERSION,
};

/// [`ApiVersion`] in its FFI form.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfiApiVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl From<FfiApiVersion> for ApiVersion {
    fn from(v: FfiApiVersion) -> Self {
        ApiVersion { major: v.major, minor: v.minor }
    }
}

impl FfiApiVersion {
    /// This crate's [`API_VERSION`].
    pub const CURRENT: FfiApiVersion = FfiApiVersion { major: API_VERSION.major, minor: API_VERSION.minor };
}

/// One plugin instance across the boundary: JSON in, JSON out.
///
/// `Err` carries a JSON [`PluginError`].
#[sabi_trait]
pub trait FfiPlugin: Send {
    /// Calls `method` (a [`Method`]'s wire name) with a JSON request.
    fn call(&mut self, method: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString>;
}

/// An owned [`FfiPlugin`] trait object.
pub type FfiPluginBox = FfiPlugin_TO<'static, RBox<()>>;

/// The root module of a plugin library. Fields are append-only.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLib {
    /// The API version the library was built against.
    pub api_version: FfiApiVersion,
    /// A JSON array of [`PluginInfo`].
    pub plugins: extern "C" fn() -> RResult<RString, RString>,
    /// Creates an instance: plugin id, settings (JSON object), [`HostContext`]
    /// (JSON object).
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<FfiPluginBox, RString>,
}

impl RootModule for PluginLibRef {
    declare_root_module_statics! {PluginLibRef}
    const BASE_NAME: &'static str = "nas_plugin";
    const NAME: &'static str = "nas_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

// ---------------------------------------------------------------------------
// Plugin side.

thread_local! {
    static IN_PLUGIN_CALL: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}
static PANIC_HOOK: Once = Once::new();

/// Installs (once) a panic hook that, inside a plugin call, records the
/// panic's message and location instead of printing it; elsewhere it defers
/// to the previous hook. A `cdylib` has its own copy of std, so this only
/// touches the plugin's own panics; a linked built-in shares the host's std,
/// where the previous hook keeps serving the host.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_PLUGIN_CALL.with(Cell::get) {
                let payload = info.payload();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic payload".to_string());
                let msg = match info.location() {
                    Some(loc) => format!("{msg} (at {}:{})", loc.file(), loc.line()),
                    None => msg,
                };
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into a [`PluginError`] with code
/// [`ErrorCode::Panic`].
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    install_panic_hook();
    let was = IN_PLUGIN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_PLUGIN_CALL.with(|c| c.set(was));
    match result {
        Ok(r) => r,
        Err(_) => {
            let msg = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "unknown panic".into());
            Err(PluginError::new(ErrorCode::Panic, format!("{what} panicked: {msg}")))
        }
    }
}

fn error_json(e: &PluginError) -> RString {
    serde_json::to_string(e).unwrap_or_else(|_| format!(r#"{{"code":"internal","message":{:?}}}"#, e.message)).into()
}

fn to_ffi<T: Serialize>(r: Result<T, PluginError>) -> RResult<RString, RString> {
    match r.and_then(|v| serde_json::to_string(&v).map_err(|e| PluginError::internal(e.to_string()))) {
        Ok(s) => ROk(s.into()),
        Err(e) => RErr(error_json(&e)),
    }
}

fn parse<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, PluginError> {
    serde_json::from_str(json).map_err(|e| PluginError::input(format!("{what}: {e}")))
}

/// The plugin-side object behind [`FfiPlugin`].
struct PluginServer {
    id: String,
    instance: PluginInstance,
    poisoned: Option<String>,
}

impl PluginServer {
    fn dispatch(&mut self, name: &str, input: &str) -> Result<RString, PluginError> {
        fn reply<T: Serialize>(v: T) -> Result<RString, PluginError> {
            serde_json::to_string(&v).map(RString::from).map_err(|e| PluginError::internal(e.to_string()))
        }
        let kind = self.instance.kind();
        let unsupported = || PluginError::unsupported(format!("plugin `{}` ({kind}) has no method `{name}`", self.id));
        let method = Method::parse(name).ok_or_else(unsupported)?;
        if method.kind() != kind {
            return Err(unsupported());
        }
        let n = method.as_str();
        match (&mut self.instance, method) {
            (PluginInstance::Llm(p), Method::LlmComplete) => reply(p.complete(&parse::<ChatRequest>(n, input)?)?),
            (PluginInstance::Dataset(p), Method::DatasetDescribe) => reply(p.describe()?),
            (PluginInstance::Dataset(p), Method::DatasetPrepare) => {
                reply(p.prepare(&parse::<PrepareRequest>(n, input)?)?)
            }
            (PluginInstance::Evaluator(p), Method::EvalEvaluate) => {
                reply(p.evaluate(&parse::<EvalRequest>(n, input)?)?)
            }
            (PluginInstance::Memory(p), Method::MemorySelect) => reply(p.select(&parse::<MemoryInput>(n, input)?)?),
            (PluginInstance::Tune(p), Method::TuneTune) => reply(p.tune(&parse::<TuneRequest>(n, input)?)?),
            // Checked above: a method reaches here only with an instance of
            // its own role.
            (
                PluginInstance::Llm(_)
                | PluginInstance::Dataset(_)
                | PluginInstance::Evaluator(_)
                | PluginInstance::Memory(_)
                | PluginInstance::Tune(_),
                _,
            ) => Err(unsupported()),
        }
    }
}

impl FfiPlugin for PluginServer {
    fn call(&mut self, method: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString> {
        if let Some(why) = &self.poisoned {
            return RErr(error_json(&PluginError::new(
                ErrorCode::Panic,
                format!("plugin `{}` panicked earlier and refuses further calls ({why})", self.id),
            )));
        }
        let what = format!("plugin `{}` in `{}`", self.id, method.as_str());
        let result = guarded(&what, || self.dispatch(method.as_str(), input.as_str()));
        if let Err(e) = &result {
            if e.code == ErrorCode::Panic {
                self.poisoned = Some(e.message.clone());
            }
        }
        match result {
            Ok(s) => ROk(s),
            Err(e) => RErr(error_json(&e)),
        }
    }
}

/// Implementation details of the export macros. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
    pub use abi_stable::prefix_type::WithMetadata;
    pub use abi_stable::std_types::{RResult, RStr, RString};

    use super::*;

    /// The symbol abi_stable 0.11 looks up; checked by a test against
    /// `abi_stable::library::ROOT_MODULE_LOADER_NAME`.
    pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

    pub fn call_root_module_loader(f: fn() -> PluginLibRef) -> RootModuleResult {
        abi_stable::library::__call_root_module_loader(f)
    }

    pub fn plugins_json(factories: &[&dyn PluginFactory]) -> RResult<RString, RString> {
        to_ffi(guarded("plugin library `plugins()`", || Ok(factories.iter().map(|f| f.info()).collect::<Vec<_>>())))
    }

    pub fn create(
        factories: &[&dyn PluginFactory],
        id: RStr<'_>,
        config: RStr<'_>,
        ctx: RStr<'_>,
    ) -> RResult<FfiPluginBox, RString> {
        let id = id.as_str().to_string();
        let result = guarded(&format!("plugin `{id}` in `create`"), || {
            let factory = factories
                .iter()
                .find(|f| f.info().id == id)
                .ok_or_else(|| PluginError::new(ErrorCode::NotFound, format!("this library has no plugin `{id}`")))?;
            let config: serde_json::Value = parse("settings", config.as_str())?;
            let ctx: HostContext = parse("host context", ctx.as_str())?;
            let instance = factory.create(&config, &ctx)?;
            let expected = factory.info().kind;
            if instance.kind() != expected {
                return Err(PluginError::internal(format!(
                    "plugin `{id}` says it is a {expected} but created a {}",
                    instance.kind()
                )));
            }
            Ok(PluginServer { id: id.clone(), instance, poisoned: None })
        });
        match result {
            Ok(server) => ROk(FfiPlugin_TO::from_value(server, abi_stable::sabi_trait::TD_Opaque)),
            Err(e) => RErr(error_json(&e)),
        }
    }
}

/// Declares a plugin library: a function returning its [`PluginLibRef`].
///
/// Use this in a crate that is linked into a host as an `rlib`; pair it with
/// [`export_root_module!`](crate::export_root_module) in the `cdylib` that
/// exports it. Most third-party plugins want
/// [`export_plugins!`](crate::export_plugins), which does both.
///
/// ```
/// # use nas_plugin_api::*;
/// # struct F;
/// # impl PluginFactory for F {
/// #   fn info(&self) -> PluginInfo { PluginInfo::new("memory.f", PluginKind::Memory, "0.1.0", "") }
/// #   fn create(&self, _: &serde_json::Value, _: &HostContext) -> Result<PluginInstance, PluginError> { unimplemented!() }
/// # }
/// nas_plugin_api::plugin_library!(pub fn library = [F]);
/// let lib = nas_plugin_api::ffi::NativeLibrary::from_ref(library());
/// assert_eq!(lib.plugins().unwrap()[0].id, "memory.f");
/// ```
#[macro_export]
macro_rules! plugin_library {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = [$($factory:expr),+ $(,)?]) => {
        $crate::plugin_library!(@api ($crate::ffi::FfiApiVersion::CURRENT) $(#[$meta])* $vis fn $name = [$($factory),+]);
    };
    (@api ($api:expr) $(#[$meta:meta])* $vis:vis fn $name:ident = [$($factory:expr),+ $(,)?]) => {
        $(#[$meta])*
        $vis fn $name() -> $crate::ffi::PluginLibRef {
            static FACTORIES: &[&dyn $crate::PluginFactory] = &[$(&$factory),+];
            extern "C" fn plugins() -> $crate::ffi::__private::RResult<
                $crate::ffi::__private::RString,
                $crate::ffi::__private::RString,
            > {
                $crate::ffi::__private::plugins_json(FACTORIES)
            }
            extern "C" fn create(
                id: $crate::ffi::__private::RStr<'_>,
                config: $crate::ffi::__private::RStr<'_>,
                ctx: $crate::ffi::__private::RStr<'_>,
            ) -> $crate::ffi::__private::RResult<$crate::ffi::FfiPluginBox, $crate::ffi::__private::RString> {
                $crate::ffi::__private::create(FACTORIES, id, config, ctx)
            }
            static MODULE: $crate::ffi::__private::WithMetadata<$crate::ffi::PluginLib> =
                $crate::ffi::__private::WithMetadata::new($crate::ffi::PluginLib {
                    api_version: $api,
                    plugins,
                    create,
                });
            $crate::ffi::PluginLibRef(MODULE.static_as_prefix())
        }
    };
}

/// Exports a library declared with [`plugin_library!`](crate::plugin_library)
/// as the root module of this `cdylib`. Use once per `cdylib`.
#[macro_export]
macro_rules! export_root_module {
    ($library:path) => {
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __NAS_PLUGIN_ROOT_MODULE: $crate::ffi::__private::LibHeader = {
            extern "C" fn erased_loader() -> $crate::ffi::__private::RootModuleResult {
                $crate::ffi::__private::call_root_module_loader($library)
            }
            // SAFETY: `erased_loader` returns the module made by `$library`, whose
            // type is `PluginLibRef`, the type named here; the layout is checked by
            // the loader (CheckTypeLayout::Yes).
            unsafe {
                $crate::ffi::__private::LibHeader::from_constructor::<$crate::ffi::PluginLibRef>(
                    erased_loader,
                    $crate::ffi::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// Makes this `cdylib` a plugin library offering the given factories, loadable
/// with `nas --plugin path/to/lib.so`. Use once per `cdylib`.
///
/// ```ignore
/// nas_plugin_api::export_plugins!(MyBackendFactory, MyMemoryFactory);
/// ```
#[macro_export]
macro_rules! export_plugins {
    ($($factory:expr),+ $(,)?) => {
        $crate::plugin_library!(
            /// This library's plugins.
            pub fn nas_plugin_library = [$($factory),+]
        );
        $crate::export_root_module!(nas_plugin_library);
    };
}

// ---------------------------------------------------------------------------
// Host side.

/// A check the native loader performs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStep {
    /// The file exists and can be read.
    FileExists,
    /// It is a shared library that the dynamic linker loads.
    SharedLibrary,
    /// It exports a nas plugin root module.
    RootModule,
    /// Its abi_stable version and type layout match the host's.
    Layout,
    /// Its plugin API version is one this host drives.
    ApiVersion,
    /// It lists its plugins, with valid ids and known kinds.
    ListPlugins,
}

impl LoadStep {
    /// Every step, in order.
    pub const ALL: [LoadStep; 6] = [
        LoadStep::FileExists,
        LoadStep::SharedLibrary,
        LoadStep::RootModule,
        LoadStep::Layout,
        LoadStep::ApiVersion,
        LoadStep::ListPlugins,
    ];

    /// What the step checks, for `nas plugins check`.
    pub fn describe(self) -> &'static str {
        match self {
            LoadStep::FileExists => "file exists",
            LoadStep::SharedLibrary => "loads as a shared library",
            LoadStep::RootModule => "exports a nas plugin root module",
            LoadStep::Layout => "abi_stable version and type layout match",
            LoadStep::ApiVersion => "plugin API version is compatible",
            LoadStep::ListPlugins => "lists its plugins",
        }
    }
}

/// Why a native library could not be loaded: the step that failed and a
/// message for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LoadFailure {
    /// The step that failed; the ones before it passed.
    pub step: LoadStep,
    /// A one-paragraph message naming the file and what to do.
    pub message: String,
}

/// A loaded plugin library, native or linked in: the host's handle on a
/// [`PluginLibRef`].
#[derive(Clone, Copy)]
pub struct NativeLibrary {
    lib: PluginLibRef,
}

impl std::fmt::Debug for NativeLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NativeLibrary(api {})", self.api_version())
    }
}

impl NativeLibrary {
    /// Wraps a library linked into the host (a built-in).
    pub fn from_ref(lib: PluginLibRef) -> Self {
        NativeLibrary { lib }
    }

    /// Loads a `cdylib` from `path`, running every [`LoadStep`] but the last.
    /// The library is never unloaded.
    pub fn load(path: &Path) -> Result<NativeLibrary, LoadFailure> {
        let shown = path.display();
        let fail = |step, message: String| LoadFailure { step, message };
        let mut file = std::fs::File::open(path).map_err(|e| {
            fail(
                LoadStep::FileExists,
                format!("cannot read plugin file `{shown}`: {e}. Check the path given to --plugin or in the config."),
            )
        })?;
        let mut magic = [0u8; 4];
        let is_elf = std::io::Read::read_exact(&mut file, &mut magic).is_ok() && magic == *b"\x7fELF";
        if !is_elf && cfg!(target_os = "linux") {
            return Err(fail(
                LoadStep::SharedLibrary,
                format!("`{shown}` is not a plugin: it is not an ELF shared library. A native plugin is the `.so` file that `cargo build` writes for a crate with `crate-type = [\"cdylib\"]`."),
            ));
        }
        let header = lib_header_from_path(path).map_err(|e| match e {
            LibraryError::OpenError { .. } => fail(
                LoadStep::SharedLibrary,
                format!("`{shown}` could not be loaded as a shared library: {}", one_line(&e.to_string())),
            ),
            LibraryError::GetSymbolError { .. } => fail(
                LoadStep::RootModule,
                format!("`{shown}` is a shared library but not a nas plugin: it exports no nas plugin root module. Plugins export one with `nas_plugin_api::export_plugins!(...)`."),
            ),
            other => fail(LoadStep::Layout, format!("`{shown}`: {}", one_line(&other.to_string()))),
        })?;
        let lib = header.init_root_module::<PluginLibRef>().map_err(|e| {
            let msg = match &e {
                LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
                    "`{shown}` was built against nas-plugin-api {actual_version}, which is not compatible with this host's {expected_version}. Rebuild the plugin against a compatible nas-plugin-api."
                ),
                LibraryError::AbiInstability(_) => format!(
                    "`{shown}` has a root module whose type layout differs from this host's, so it was built against an incompatible nas-plugin-api. Rebuild the plugin against this host's nas-plugin-api. Details: {}",
                    one_line(&e.to_string())
                ),
                _ => format!("`{shown}`: {}", one_line(&e.to_string())),
            };
            fail(LoadStep::Layout, msg)
        })?;
        let lib = NativeLibrary { lib };
        let api = lib.api_version();
        if !API_VERSION.can_host(api) {
            return Err(fail(
                LoadStep::ApiVersion,
                format!("`{shown}` was built against plugin API {api}, and this host speaks plugin API {API_VERSION}: a host drives plugins of the same major version and an equal or lower minor version. Rebuild the plugin against nas-plugin-api {API_VERSION}."),
            ));
        }
        Ok(lib)
    }

    /// The API version the library was built against.
    pub fn api_version(&self) -> ApiVersion {
        self.lib.api_version().into()
    }

    /// The plugins the library offers.
    pub fn plugins(&self) -> Result<Vec<PluginInfo>, PluginError> {
        let json = into_result((self.lib.plugins())())?;
        let infos: Vec<PluginInfo> = serde_json::from_str(&json)
            .map_err(|e| PluginError::new(ErrorCode::Incompatible, format!("the plugin list is not valid: {e}")))?;
        for info in &infos {
            if info.kind == PluginKind::Unknown {
                return Err(PluginError::new(
                    ErrorCode::Incompatible,
                    format!("plugin `{}` is of a kind this host does not know", info.id),
                ));
            }
            info.validate().map_err(|e| PluginError::new(ErrorCode::Incompatible, e))?;
        }
        Ok(infos)
    }

    /// Creates an instance of the plugin `info` (one of [`Self::plugins`]).
    pub fn create(
        &self,
        info: &PluginInfo,
        config: &serde_json::Value,
        ctx: &HostContext,
    ) -> Result<PluginInstance, PluginError> {
        let config = serde_json::to_string(config).map_err(|e| PluginError::internal(e.to_string()))?;
        let ctx = serde_json::to_string(ctx).map_err(|e| PluginError::internal(e.to_string()))?;
        let plugin = match (self.lib.create())(info.id.as_str().into(), config.as_str().into(), ctx.as_str().into()) {
            ROk(p) => p,
            RErr(e) => return Err(parse_error(&e)),
        };
        let remote = Remote { id: info.id.clone(), plugin };
        Ok(match info.kind {
            PluginKind::Llm => PluginInstance::Llm(Box::new(remote)),
            PluginKind::Dataset => PluginInstance::Dataset(Box::new(remote)),
            PluginKind::Evaluator => PluginInstance::Evaluator(Box::new(remote)),
            PluginKind::Memory => PluginInstance::Memory(Box::new(remote)),
            PluginKind::Tune => PluginInstance::Tune(Box::new(remote)),
            PluginKind::Unknown => {
                return Err(PluginError::new(
                    ErrorCode::Incompatible,
                    format!("plugin `{}` is of an unknown kind", info.id),
                ))
            }
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_error(json: &str) -> PluginError {
    serde_json::from_str(json).unwrap_or_else(|_| {
        PluginError::new(ErrorCode::Unknown, format!("unreadable plugin error: {}", one_line(json)))
    })
}

fn into_result(r: RResult<RString, RString>) -> Result<String, PluginError> {
    match r {
        ROk(s) => Ok(s.into_string()),
        RErr(e) => Err(parse_error(&e)),
    }
}

/// The host-side object for a plugin instance behind the boundary.
struct Remote {
    id: String,
    plugin: FfiPluginBox,
}

impl Remote {
    fn call<I: Serialize, O: DeserializeOwned>(&mut self, method: Method, input: &I) -> Result<O, PluginError> {
        let input = serde_json::to_string(input).map_err(|e| PluginError::internal(e.to_string()))?;
        let json = into_result(self.plugin.call(method.as_str().into(), input.as_str().into()))?;
        serde_json::from_str(&json).map_err(|e| {
            PluginError::new(
                ErrorCode::Incompatible,
                format!("plugin `{}` answered `{method}` with something that is not a valid reply: {e}", self.id),
            )
        })
    }
}

impl LlmBackend for Remote {
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        self.call(Method::LlmComplete, request)
    }
}

impl DatasetLoader for Remote {
    fn describe(&mut self) -> Result<DatasetDescription, PluginError> {
        self.call(Method::DatasetDescribe, &())
    }
    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        self.call(Method::DatasetPrepare, request)
    }
}

impl Evaluator for Remote {
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        self.call(Method::EvalEvaluate, request)
    }
}

impl MemoryStrategy for Remote {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        self.call(Method::MemorySelect, input)
    }
}

impl FineTuner for Remote {
    fn tune(&mut self, request: &TuneRequest) -> Result<Adapter, PluginError> {
        self.call(Method::TuneTune, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryEntry, PluginInfo};

    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(__private::ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }

    struct Echo;
    impl MemoryStrategy for Echo {
        fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
            if input.iteration == 13 {
                panic!("unlucky iteration");
            }
            Ok(MemorySelection { entries: input.entries.clone(), ..Default::default() })
        }
    }
    struct EchoFactory;
    impl PluginFactory for EchoFactory {
        fn info(&self) -> PluginInfo {
            PluginInfo::new("memory.echo", PluginKind::Memory, "0.1.0", "echoes")
        }
        fn create(&self, config: &serde_json::Value, _: &HostContext) -> Result<PluginInstance, PluginError> {
            if config.get("explode").is_some() {
                panic!("asked to explode");
            }
            Ok(PluginInstance::Memory(Box::new(Echo)))
        }
    }
    crate::plugin_library!(fn echo_library = [EchoFactory]);

    fn echo() -> (NativeLibrary, PluginInfo) {
        let lib = NativeLibrary::from_ref(echo_library());
        let info = lib.plugins().expect("lists").remove(0);
        (lib, info)
    }

    #[test]
    fn a_linked_library_goes_through_the_same_json_door() {
        let (lib, info) = echo();
        assert_eq!(lib.api_version(), API_VERSION);
        let PluginInstance::Memory(mut m) =
            lib.create(&info, &serde_json::json!({}), &HostContext::default()).expect("creates")
        else {
            panic!("wrong kind")
        };
        let entry = MemoryEntry { iteration: 1, problem: "p".into(), suggestion: "s".into(), ..Default::default() };
        let out = m.select(&MemoryInput { entries: vec![entry.clone()], ..Default::default() }).expect("selects");
        assert_eq!(out.entries, vec![entry]);
    }

    #[test]
    fn a_panic_in_create_is_an_error_not_an_abort() {
        let (lib, info) = echo();
        let err =
            lib.create(&info, &serde_json::json!({"explode": true}), &HostContext::default()).expect_err("panics");
        assert_eq!(err.code, ErrorCode::Panic);
        assert!(err.message.contains("asked to explode"), "{}", err.message);
        assert!(err.message.contains("memory.echo"), "{}", err.message);
    }

    #[test]
    fn a_panic_in_a_call_poisons_the_instance() {
        let (lib, info) = echo();
        let PluginInstance::Memory(mut m) =
            lib.create(&info, &serde_json::json!({}), &HostContext::default()).expect("creates")
        else {
            panic!("wrong kind")
        };
        let err = m.select(&MemoryInput { iteration: 13, ..Default::default() }).expect_err("panics");
        assert_eq!(err.code, ErrorCode::Panic);
        assert!(err.message.contains("unlucky iteration"), "{}", err.message);
        let again = m.select(&MemoryInput::default()).expect_err("poisoned");
        assert!(again.message.contains("refuses further calls"), "{}", again.message);
    }

    #[test]
    fn unknown_plugin_ids_are_not_found() {
        let (lib, mut info) = echo();
        info.id = "memory.nope".into();
        let err = lib.create(&info, &serde_json::json!({}), &HostContext::default()).expect_err("unknown");
        assert_eq!(err.code, ErrorCode::NotFound);
    }
}
