//! The worlds: which bindings a component of each role is linked and
//! instantiated through, and the check that a component targets its world.

use nas_plugin_api::{PluginKind, WasmWorld};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};

use super::bindings::{self, t};
use super::runtime::GuestState;
use super::{WIT_PACKAGE, WIT_VERSION};

/// The WebAssembly world of a kind, or why it has none.
pub(super) fn world_of(kind: PluginKind) -> Result<WasmWorld, String> {
    match kind.role() {
        Some(role) => role.wasm.ok_or_else(|| {
            format!(
                "the {} role has no WebAssembly world: {} plugins are native libraries (`.so`)",
                role.noun, role.noun
            )
        }),
        None => Err("its kind is not one this host knows".into()),
    }
}

/// Pre-instantiated bindings of each world.
#[derive(Clone)]
pub(super) enum Pre {
    Memory(bindings::memory::MemoryStrategyPre<GuestState>),
    Llm(bindings::llm::LlmBackendPre<GuestState>),
    Dataset(bindings::dataset::DatasetLoaderPre<GuestState>),
    Eval(bindings::eval::EvaluatorPre<GuestState>),
}

/// A live instance of one world.
pub(super) enum Bound {
    Memory(bindings::memory::MemoryStrategy),
    Llm(bindings::llm::LlmBackend),
    Dataset(bindings::dataset::DatasetLoader),
    Eval(bindings::eval::Evaluator),
}

impl Pre {
    pub(super) fn new(kind: PluginKind, pre: InstancePre<GuestState>) -> wasmtime::Result<Pre> {
        Ok(match kind {
            PluginKind::Llm => Pre::Llm(bindings::llm::LlmBackendPre::new(pre)?),
            PluginKind::Dataset => Pre::Dataset(bindings::dataset::DatasetLoaderPre::new(pre)?),
            PluginKind::Evaluator => Pre::Eval(bindings::eval::EvaluatorPre::new(pre)?),
            PluginKind::Memory => Pre::Memory(bindings::memory::MemoryStrategyPre::new(pre)?),
            PluginKind::Tune | PluginKind::Unknown => {
                return Err(wasmtime::Error::msg(world_of(kind).err().unwrap_or_default()))
            }
        })
    }

    pub(super) fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::Memory(p) => Bound::Memory(p.instantiate(store)?),
            Pre::Llm(p) => Bound::Llm(p.instantiate(store)?),
            Pre::Dataset(p) => Bound::Dataset(p.instantiate(store)?),
            Pre::Eval(p) => Bound::Eval(p.instantiate(store)?),
        })
    }
}

impl Bound {
    pub(super) fn info(&self, store: &mut Store<GuestState>) -> wasmtime::Result<t::PluginInfo> {
        match self {
            Bound::Memory(b) => b.nas_plugin_meta().call_info(store),
            Bound::Llm(b) => b.nas_plugin_meta().call_info(store),
            Bound::Dataset(b) => b.nas_plugin_meta().call_info(store),
            Bound::Eval(b) => b.nas_plugin_meta().call_info(store),
        }
    }

    pub(super) fn init(
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

/// Checks a component's exports and imports against the world of `kind`,
/// naming the world or version it targets instead.
pub(super) fn check_world(engine: &Engine, component: &Component, kind: PluginKind) -> Result<(), String> {
    let w = world_of(kind)?;
    let (role, world) = (w.interface, w.world);
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let want = format!("nas:plugin/{role}@{WIT_VERSION}");
    let meta = format!("nas:plugin/meta@{WIT_VERSION}");
    if !exports.contains(&want) || !exports.contains(&meta) {
        for name in &exports {
            let Some((iface, version)) = name.strip_prefix("nas:plugin/").and_then(|r| r.split_once('@')) else {
                continue;
            };
            if version != WIT_VERSION && (iface == role || iface == "meta") {
                return Err(format!(
                    "targets nas:plugin@{version} (it exports `{name}`), and this host speaks {WIT_PACKAGE}: rebuild it against plugin-api/wit of this host"
                ));
            }
            let other = PluginKind::ALL
                .into_iter()
                .filter(|k| *k != kind)
                .find_map(|k| world_of(k).ok().filter(|o| o.interface == iface));
            if let Some(other) = other {
                return Err(format!(
                    "targets the {} world (it exports `{name}`), but its manifest says kind = \"{}\", whose world is {world}",
                    other.world,
                    kind.as_str()
                ));
            }
        }
        return Err(format!(
            "does not target the {world} world: it must export `{meta}` and `{want}`, and it exports {exports:?}"
        ));
    }
    let offered = w.imports;
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

pub(super) fn make_linker(engine: &Engine, kind: PluginKind) -> wasmtime::Result<Linker<GuestState>> {
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
        PluginKind::Memory => {
            bindings::memory::MemoryStrategy::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)?
        }
        PluginKind::Tune | PluginKind::Unknown => {
            return Err(wasmtime::Error::msg(world_of(kind).err().unwrap_or_default()))
        }
    }
    Ok(linker)
}
