//! The role adapters: each role's trait implemented over a wasm instance,
//! converting between the API's types and the WIT bindings'.

use std::time::Instant;

use nas_plugin_api::{
    DatasetDescription, DatasetLoader, DatasetManifest, ErrorCode, EvalOutcome, EvalRequest, Evaluator, LlmBackend,
    MemoryInput, MemorySelection, MemoryStrategy, Method, PluginError, PluginInstance, PluginKind, PrepareRequest,
};

use super::convert;
use super::runtime::Instance;
use super::world::{world_of, Bound};

/// The instance as the role of its kind.
pub(super) fn role_instance(kind: PluginKind, inst: Instance) -> Result<PluginInstance, PluginError> {
    Ok(match kind {
        PluginKind::Memory => PluginInstance::Memory(Box::new(WasmMemory(inst))),
        PluginKind::Llm => PluginInstance::Llm(Box::new(WasmLlm(inst))),
        PluginKind::Dataset => PluginInstance::Dataset(Box::new(WasmDataset(inst))),
        PluginKind::Evaluator => PluginInstance::Evaluator(Box::new(WasmEvaluator(inst))),
        PluginKind::Tune | PluginKind::Unknown => {
            return Err(PluginError::new(ErrorCode::Incompatible, world_of(kind).err().unwrap_or_default()))
        }
    })
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
        let out = self.0.call(Method::MemorySelect.as_str(), None, None, |store, bound| {
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
        let out = self.0.call(Method::LlmComplete.as_str(), None, None, |store, bound| {
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
        let out = self.0.call(Method::DatasetDescribe.as_str(), None, None, |store, bound| {
            bound_as!(bound, Dataset, "dataset").nas_plugin_dataset().call_describe(store)
        })?;
        Ok(convert::description(out))
    }

    fn prepare(&mut self, request: &PrepareRequest) -> Result<DatasetManifest, PluginError> {
        let arg = convert::prepare_request(request);
        let out = self.0.call(
            Method::DatasetPrepare.as_str(),
            Some(&request.cache_dir),
            Some(&request.cache_dir),
            |store, bound| bound_as!(bound, Dataset, "dataset").nas_plugin_dataset().call_prepare(store, &arg),
        )?;
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
        let out = self.0.call(Method::EvalEvaluate.as_str(), Some(&request.dataset.dir), None, |store, bound| {
            bound_as!(bound, Eval, "evaluator").nas_plugin_eval().call_evaluate(store, &arg)
        })?;
        convert::eval_outcome(out)
    }
}
