//! The table of plugin roles: every kind, its id prefix, its methods and its
//! WebAssembly world, in one place.
//!
//! Everything that differs between roles is read from here or matched
//! exhaustively over [`PluginKind`] and [`Method`], so that adding a role is
//! a compile error at every place that must handle it (see "Adding a role"
//! in `docs/architecture.md`).

use crate::PluginKind;

/// A method a plugin instance answers, named on the wire by
/// [`Method::as_str`] (the native door's `call(method, json)` and the wasm
/// adapters' logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// [`LlmBackend::complete`](crate::LlmBackend::complete).
    LlmComplete,
    /// [`DatasetLoader::describe`](crate::DatasetLoader::describe).
    DatasetDescribe,
    /// [`DatasetLoader::prepare`](crate::DatasetLoader::prepare).
    DatasetPrepare,
    /// [`Evaluator::evaluate`](crate::Evaluator::evaluate).
    EvalEvaluate,
    /// [`MemoryStrategy::select`](crate::MemoryStrategy::select).
    MemorySelect,
    /// [`FineTuner::tune`](crate::FineTuner::tune).
    TuneTune,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] = [
        Method::LlmComplete,
        Method::DatasetDescribe,
        Method::DatasetPrepare,
        Method::EvalEvaluate,
        Method::MemorySelect,
        Method::TuneTune,
    ];

    /// The wire name: `<role interface>.<function>`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::LlmComplete => "llm.complete",
            Method::DatasetDescribe => "dataset.describe",
            Method::DatasetPrepare => "dataset.prepare",
            Method::EvalEvaluate => "eval.evaluate",
            Method::MemorySelect => "memory.select",
            Method::TuneTune => "tune.tune",
        }
    }

    /// The role that answers this method.
    pub const fn kind(self) -> PluginKind {
        match self {
            Method::LlmComplete => PluginKind::Llm,
            Method::DatasetDescribe | Method::DatasetPrepare => PluginKind::Dataset,
            Method::EvalEvaluate => PluginKind::Evaluator,
            Method::MemorySelect => PluginKind::Memory,
            Method::TuneTune => PluginKind::Tune,
        }
    }

    /// The method with this wire name.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a role is offered to WebAssembly components (`plugin-api/wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmWorld {
    /// The world a component of this role targets (`memory-strategy`).
    pub world: &'static str,
    /// The role's interface, exported by the component (`memory`).
    pub interface: &'static str,
    /// The `nas:plugin` interfaces the world lets a component import.
    pub imports: &'static [&'static str],
}

/// What the host and the loaders know about one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// The kind.
    pub kind: PluginKind,
    /// The id prefix (`llm` in `llm.qwen2.5`).
    pub prefix: &'static str,
    /// What a plugin of this role is called in messages (`llm backend`).
    pub noun: &'static str,
    /// The methods an instance answers.
    pub methods: &'static [Method],
    /// Its WebAssembly world, or `None` when the role is native only.
    pub wasm: Option<WasmWorld>,
}

const LLM: Role = Role {
    kind: PluginKind::Llm,
    prefix: "llm",
    noun: "llm backend",
    methods: &[Method::LlmComplete],
    wasm: Some(WasmWorld { world: "llm-backend", interface: "llm", imports: &["types", "host", "http"] }),
};
const DATASET: Role = Role {
    kind: PluginKind::Dataset,
    prefix: "data",
    noun: "dataset loader",
    methods: &[Method::DatasetDescribe, Method::DatasetPrepare],
    wasm: Some(WasmWorld { world: "dataset-loader", interface: "dataset", imports: &["types", "host", "files"] }),
};
const EVALUATOR: Role = Role {
    kind: PluginKind::Evaluator,
    prefix: "eval",
    noun: "evaluator",
    methods: &[Method::EvalEvaluate],
    wasm: Some(WasmWorld { world: "evaluator", interface: "eval", imports: &["types", "host", "files"] }),
};
const MEMORY: Role = Role {
    kind: PluginKind::Memory,
    prefix: "memory",
    noun: "memory strategy",
    methods: &[Method::MemorySelect],
    wasm: Some(WasmWorld { world: "memory-strategy", interface: "memory", imports: &["types", "host"] }),
};
// A fine-tuner drives a trainer process on the machine's accelerator and
// files; a component has neither, so the role is native only.
const TUNE: Role =
    Role { kind: PluginKind::Tune, prefix: "tune", noun: "fine-tuner", methods: &[Method::TuneTune], wasm: None };

impl PluginKind {
    /// Every kind this host knows, in the order lists show them.
    pub const ALL: [PluginKind; 5] =
        [PluginKind::Llm, PluginKind::Dataset, PluginKind::Evaluator, PluginKind::Memory, PluginKind::Tune];

    /// The role table entry, or `None` for [`PluginKind::Unknown`].
    pub const fn role(self) -> Option<&'static Role> {
        match self {
            PluginKind::Llm => Some(&LLM),
            PluginKind::Dataset => Some(&DATASET),
            PluginKind::Evaluator => Some(&EVALUATOR),
            PluginKind::Memory => Some(&MEMORY),
            PluginKind::Tune => Some(&TUNE),
            PluginKind::Unknown => None,
        }
    }

    /// The id prefix for this kind (`llm`, `data`, `eval`, `memory`, `tune`).
    pub fn prefix(self) -> &'static str {
        self.role().map_or("unknown", |r| r.prefix)
    }

    /// The kind whose id prefix starts `id` (`llm.qwen2.5` → `Llm`).
    pub fn from_id(id: &str) -> Option<PluginKind> {
        let prefix = id.split('.').next()?;
        PluginKind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }

    /// The snake_case name used in manifests and JSON (`llm`, `evaluator`).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Llm => "llm",
            PluginKind::Dataset => "dataset",
            PluginKind::Evaluator => "evaluator",
            PluginKind::Memory => "memory",
            PluginKind::Tune => "tune",
            PluginKind::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        for kind in PluginKind::ALL {
            let role = kind.role().expect("every listed kind has a role");
            assert_eq!(role.kind, kind);
            assert_eq!(PluginKind::from_id(&format!("{}.x", role.prefix)), Some(kind));
            for m in role.methods {
                assert_eq!(m.kind(), kind, "{m} is listed under {kind}");
                assert!(m.as_str().starts_with(&format!("{}.", role.wasm.map_or(role.prefix, |w| w.interface))));
            }
            let json = serde_json::to_value(kind).expect("serialises");
            assert_eq!(json.as_str(), Some(kind.as_str()));
        }
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
            assert!(m.kind().role().expect("known").methods.contains(&m), "{m} missing from its role");
        }
        assert_eq!(PluginKind::Unknown.role(), None);
        assert_eq!(PluginKind::from_id("nope.x"), None);
    }
}
