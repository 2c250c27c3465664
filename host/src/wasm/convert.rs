//! Conversions between the WIT records and `nas-plugin-api`'s serde types.

use std::path::PathBuf;

use nas_plugin_api as api;

use super::bindings::t;

fn path_str(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn json_value(what: &str, s: &str) -> Result<serde_json::Value, api::PluginError> {
    serde_json::from_str(s)
        .map_err(|e| api::PluginError::new(api::ErrorCode::BadResponse, format!("{what} is not JSON: {e}")))
}

pub(crate) fn ctx(c: &api::HostContext) -> t::HostContext {
    t::HostContext {
        host_api_version: c.host_api_version.map(|v| t::ApiVersion { major: v.major, minor: v.minor }),
        data_dir: path_str(&c.data_dir),
        models_dir: path_str(&c.models_dir),
        scratch_dir: path_str(&c.scratch_dir),
        run_dir: path_str(&c.run_dir),
        threads: c.threads.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        config_dir: path_str(&c.config_dir),
    }
}

pub(crate) fn error(e: t::PluginError) -> api::PluginError {
    use api::ErrorCode as C;
    use t::ErrorCode as W;
    let code = match e.code {
        W::InvalidConfig => C::InvalidConfig,
        W::InvalidInput => C::InvalidInput,
        W::NotFound => C::NotFound,
        W::Io => C::Io,
        W::Corrupt => C::Corrupt,
        W::Unreachable => C::Unreachable,
        W::Timeout => C::Timeout,
        W::Unauthorized => C::Unauthorized,
        W::RateLimited => C::RateLimited,
        W::BadResponse => C::BadResponse,
        W::ContextTooLong => C::ContextTooLong,
        W::Unsupported => C::Unsupported,
        W::Panic => C::Panic,
        W::Incompatible => C::Incompatible,
        W::Internal => C::Internal,
    };
    api::PluginError { code, message: e.message, retry_after_s: e.retry_after_s }
}

pub(crate) fn kind(k: t::PluginKind) -> api::PluginKind {
    match k {
        t::PluginKind::Llm => api::PluginKind::Llm,
        t::PluginKind::Dataset => api::PluginKind::Dataset,
        t::PluginKind::Evaluator => api::PluginKind::Evaluator,
        t::PluginKind::Memory => api::PluginKind::Memory,
    }
}

pub(crate) fn info(i: t::PluginInfo) -> api::PluginInfo {
    api::PluginInfo {
        id: i.id,
        kind: kind(i.kind),
        version: i.version,
        api_version: api::ApiVersion { major: i.api_version.major, minor: i.api_version.minor },
        description: i.description,
        concurrency: None,
    }
}

fn role(r: api::ChatRole) -> t::ChatRole {
    match r {
        api::ChatRole::System => t::ChatRole::System,
        api::ChatRole::User => t::ChatRole::User,
        api::ChatRole::Assistant => t::ChatRole::Assistant,
    }
}

fn message(m: &api::ChatMessage) -> t::ChatMessage {
    t::ChatMessage { role: role(m.role), content: m.content.clone() }
}

fn message_back(m: t::ChatMessage) -> api::ChatMessage {
    let role = match m.role {
        t::ChatRole::System => api::ChatRole::System,
        t::ChatRole::User => api::ChatRole::User,
        t::ChatRole::Assistant => api::ChatRole::Assistant,
    };
    api::ChatMessage { role, content: m.content }
}

pub(crate) fn chat_request(r: &api::ChatRequest) -> t::ChatRequest {
    t::ChatRequest {
        messages: r.messages.iter().map(message).collect(),
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        stop: r.stop.clone(),
        seed: r.seed,
        purpose: r.purpose.clone(),
    }
}

pub(crate) fn chat_response(r: t::ChatResponse) -> api::ChatResponse {
    api::ChatResponse {
        content: r.content,
        model: r.model,
        finish_reason: r.finish_reason,
        usage: api::TokenUsage {
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
            estimated: r.usage.estimated,
        },
        latency_ms: r.latency_ms,
        attempts: r.attempts.max(1),
    }
}

fn entry(e: &api::MemoryEntry) -> t::MemoryEntry {
    t::MemoryEntry {
        iteration: e.iteration,
        problem: e.problem.clone(),
        suggestion: e.suggestion.clone(),
        outcome: e.outcome.clone(),
        accuracy: e.accuracy,
        failure_kind: e.failure_kind.clone(),
        best_before: e.best_before,
    }
}

fn entry_back(e: t::MemoryEntry) -> api::MemoryEntry {
    api::MemoryEntry {
        iteration: e.iteration,
        problem: e.problem,
        suggestion: e.suggestion,
        outcome: e.outcome,
        accuracy: e.accuracy,
        failure_kind: e.failure_kind,
        best_before: e.best_before,
    }
}

pub(crate) fn memory_input(i: &api::MemoryInput) -> t::MemoryInput {
    t::MemoryInput {
        entries: i.entries.iter().map(entry).collect(),
        iteration: i.iteration,
        state_json: i.state.as_ref().map(json_text),
        llm_reply: i.llm_reply.clone(),
    }
}

pub(crate) fn memory_selection(s: t::MemorySelection) -> Result<api::MemorySelection, api::PluginError> {
    Ok(api::MemorySelection {
        entries: s.entries.into_iter().map(entry_back).collect(),
        summary: s.summary,
        state: s.state_json.as_deref().map(|j| json_value("the returned memory state", j)).transpose()?,
        llm_task: s.llm_task.map(|m| m.into_iter().map(message_back).collect()),
    })
}

fn shape(s: (u32, u32, u32)) -> [usize; 3] {
    [s.0 as usize, s.1 as usize, s.2 as usize]
}

fn extra(
    what: &str,
    pairs: Vec<(String, String)>,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, api::PluginError> {
    pairs.into_iter().map(|(k, v)| Ok((k.clone(), json_value(&format!("{what} `{k}`"), &v)?))).collect()
}

pub(crate) fn description(d: t::DatasetDescription) -> api::DatasetDescription {
    api::DatasetDescription {
        name: d.name,
        title: d.title,
        family: d.family,
        raw_dir: PathBuf::from(d.raw_dir),
        sources: d
            .sources
            .into_iter()
            .map(|s| api::SourceFile {
                name: s.name,
                urls: s.urls,
                sha256: s.sha256,
                size: s.size,
                required: s.required,
            })
            .collect(),
        input_shape: d.input_shape.map(shape),
        num_classes: d.num_classes.map(|n| n as usize),
        notes: d.notes,
    }
}

pub(crate) fn prepare_request(r: &api::PrepareRequest) -> t::PrepareRequest {
    t::PrepareRequest { cache_dir: r.cache_dir.to_string_lossy().into_owned(), force: r.force }
}

pub(crate) fn manifest(m: t::DatasetManifest) -> Result<api::DatasetManifest, api::PluginError> {
    Ok(api::DatasetManifest {
        format_version: m.format_version,
        name: m.name,
        family: m.family,
        input_shape: shape(m.input_shape),
        num_classes: m.num_classes as usize,
        class_names: m.class_names,
        mean: m.mean,
        std: m.std,
        splits: m
            .splits
            .into_iter()
            .map(|s| (s.name, api::SplitManifest { file: s.file, count: s.count as usize }))
            .collect(),
        sources: m
            .sources
            .into_iter()
            .map(|s| api::SourceChecksum { name: s.name, sha256: s.sha256, size: s.size })
            .collect(),
        extra: extra("manifest extra", m.extra)?,
    })
}

/// The WIT record `eval-request` (package `nas:plugin@1.0.0`) has no
/// `save_model`: it came with plugin API 1.1 and stays native-only, so a
/// wasm evaluator never receives it and writes no model, exactly as the
/// field's contract allows ("others ignore it"). The same holds for 1.2's
/// `budget` and 1.3's `known_networks`: a wasm evaluator trains every
/// candidate it is given, and the host judges the report it returns.
pub(crate) fn eval_request(r: &api::EvalRequest) -> t::EvalRequest {
    t::EvalRequest {
        candidate_id: r.candidate_id.clone(),
        source: r.source.clone(),
        dataset: t::DatasetRef { dir: r.dataset.dir.to_string_lossy().into_owned(), name: r.dataset.name.clone() },
        time_limit_s: r.time_limit_s,
        seed: r.seed,
    }
}

pub(crate) fn eval_outcome(o: t::EvalOutcome) -> Result<api::EvalOutcome, api::PluginError> {
    Ok(match o {
        t::EvalOutcome::Ok(r) => api::EvalOutcome::Ok(api::EvalReport {
            accuracy: r.accuracy,
            train_loss: r.train_loss,
            params: r.params,
            flops: r.flops,
            epoch_seconds: r.epoch_seconds,
            images_per_second: r.images_per_second,
            peak_memory_bytes: r.peak_memory_bytes,
            latency_ms: None,
            batch_latency_ms: None,
            device_seconds: None,
            seed: None,
            device: r.device,
            total_seconds: r.total_seconds,
            extra: extra("report extra", r.extra)?,
        }),
        t::EvalOutcome::Failed(f) => {
            use api::FailureKind as K;
            use t::FailureKind as W;
            let kind = match f.kind {
                W::Extract => K::Extract,
                W::Syntax => K::Syntax,
                W::Contract => K::Contract,
                W::Shape => K::Shape,
                W::Runtime => K::Runtime,
                W::Timeout => K::Timeout,
                W::OutOfMemory => K::OutOfMemory,
                W::NonFinite => K::NonFinite,
                W::Export => K::Export,
                W::Patch => K::Patch,
                W::Sandbox => K::Sandbox,
            };
            api::EvalOutcome::Failed(api::CandidateFailure {
                stage: f.stage,
                kind,
                message: f.message,
                exception: f.exception,
                traceback: f.traceback,
            })
        }
    })
}
