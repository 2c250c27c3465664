//! The search loop of the method, one iteration at a time:
//!
//! 1. **Code Generator** prompt (task and code contract, best code and its
//!    accuracy, the previous attempt and its accuracy or failure, the
//!    Improver's latest suggestions) → LLM → extract the code (or, in delta
//!    mode, the diff, applied tolerantly to the parent);
//! 2. **novelty filter**: a candidate too similar to an evaluated one is
//!    recorded as a duplicate of its twin and not trained;
//! 3. **evaluate** (sandboxed, one epoch) → accuracy or a typed failure;
//! 4. **close** the open memory entry with the outcome;
//! 5. **update best** (strictly greater accuracy);
//! 6. **Prompt Improver** prompt (best and current code with results, the
//!    evaluator's feedback, the memory strategy's selection) → LLM → advice;
//! 7. **open** a new memory entry (problem, suggestion cut to 300 chars);
//!
//! and the whole iteration is committed to the run store in one transaction.

pub mod delta;
pub mod extract;
pub mod improver;
pub mod novelty;
pub mod prompts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nas_plugin_api::text::truncate_chars;
use nas_plugin_api::{
    CandidateFailure, ChatMessage, ChatRequest, ChatResponse, DatasetManifest, DatasetRef, EvalOutcome, EvalRequest,
    Evaluator, FailureKind, LlmBackend, MemoryEntry, MemoryInput, MemorySelection, MemoryStrategy, PluginError,
};
use serde::Serialize;

use crate::config::{GenerationMode, SearchSection};
use crate::records::{IterationRecord, LlmCall, LlmRole, Outcome, RoleUsage};
use crate::store::{Store, StoreError};

/// Longest suggestion kept in a memory entry.
pub const SUGGESTION_CHARS: usize = 300;
/// Longest evaluator feedback shown to the Improver.
const FEEDBACK_CHARS: usize = 2000;

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum StopReason {
    /// `max_iterations` reached.
    MaxIterations,
    /// `max_wall_time_s` reached.
    WallTime,
    /// `target_accuracy` reached.
    TargetAccuracy,
    /// `max_tokens` reached.
    TokenBudget,
    /// Ctrl-C.
    Interrupted,
    /// A recorded run being replayed has no answer for the next call.
    ReplayExhausted(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::MaxIterations => f.write_str("reached max_iterations"),
            StopReason::WallTime => f.write_str("reached max_wall_time_s"),
            StopReason::TargetAccuracy => f.write_str("reached target_accuracy"),
            StopReason::TokenBudget => f.write_str("reached max_tokens"),
            StopReason::Interrupted => f.write_str("interrupted"),
            StopReason::ReplayExhausted(w) => write!(f, "the replayed run has no more answers ({w})"),
        }
    }
}

/// Broken infrastructure: the run stops, resumable.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// An LLM backend failed (after its retries).
    #[error("the {role}'s LLM backend failed: {error}")]
    Llm {
        /// Which role's call failed.
        role: LlmRole,
        /// The backend's error.
        error: PluginError,
    },
    /// The evaluator itself failed (not a bad candidate).
    #[error("the evaluator failed: {0}")]
    Evaluator(PluginError),
    /// The memory strategy failed.
    #[error("the memory strategy failed: {0}")]
    Memory(PluginError),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A prompt template failed.
    #[error(transparent)]
    Prompt(#[from] prompts::PromptError),
}

/// The plugin instances a search drives.
pub struct Roles {
    /// Scores candidates.
    pub evaluator: Box<dyn Evaluator>,
    /// The Code Generator's backend.
    pub generator: Box<dyn LlmBackend>,
    /// The Prompt Improver's backend (`None`: the generator's).
    pub improver: Option<Box<dyn LlmBackend>>,
    /// Chooses what the Improver sees.
    pub memory: Box<dyn MemoryStrategy>,
}

/// What the search is told about the data.
#[derive(Debug, Clone)]
pub struct DatasetContext {
    /// The prepared dataset.
    pub reference: DatasetRef,
    /// Its manifest.
    pub manifest: DatasetManifest,
    /// A human title (`Fashion-MNIST`).
    pub title: String,
}

/// Stage names shown while an iteration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The Code Generator is writing.
    Generating,
    /// The evaluator is checking and training.
    Evaluating,
    /// The memory strategy and the Prompt Improver are working.
    Diagnosing,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Generating => "generating",
            Stage::Evaluating => "evaluating",
            Stage::Diagnosing => "diagnosing",
        })
    }
}

/// Receives progress.
pub trait Progress {
    /// An iteration entered a stage.
    fn stage(&mut self, iteration: u64, stage: Stage);
    /// An iteration was committed.
    fn finished(&mut self, record: &IterationRecord, records: &[IterationRecord]);
}

#[derive(Debug, Clone, Serialize)]
struct Best {
    iteration: u64,
    code: String,
    accuracy: Option<f64>,
}

impl Best {
    /// Makes `(iteration, code, accuracy)` the best when its accuracy is
    /// strictly greater than the best's (or nothing has been measured yet).
    fn offer(best: &mut Option<Best>, iteration: u64, code: &str, accuracy: f64) {
        if best.as_ref().and_then(|b| b.accuracy).is_none_or(|b| accuracy > b) {
            *best = Some(Best { iteration, code: code.to_string(), accuracy: Some(accuracy) });
        }
    }

    fn prompt_context(&self) -> serde_json::Value {
        serde_json::json!({
            "iteration": self.iteration, "code": self.code,
            "accuracy_pct": self.accuracy.map(pct).unwrap_or_else(|| "not measured yet".into()),
        })
    }
}

/// The state of one chain of the method: what it has recorded, its memory
/// entries and its best design.
struct Chain {
    records: Vec<IterationRecord>,
    entries: Vec<MemoryEntry>,
    best: Option<Best>,
}

impl Chain {
    /// The next iteration's number.
    fn next_iteration(&self) -> u64 {
        self.records.last().map_or(1, |r| r.iteration + 1)
    }

    /// Step 4: closes the open memory entry with the outcome.
    fn close_open_entry(&mut self, outcome: &Outcome) -> Option<MemoryEntry> {
        let open = self.entries.last_mut().filter(|e| !e.is_closed())?;
        open.outcome = Some(outcome.memory_text());
        open.accuracy = outcome.accuracy();
        open.failure_kind = outcome.failure_kind();
        Some(open.clone())
    }

    /// Step 5: updates the best (strictly greater).
    fn offer_best(&mut self, iteration: u64, code: Option<&str>, outcome: &Outcome) {
        if let (Some(acc), Some(c)) = (outcome.accuracy(), code) {
            Best::offer(&mut self.best, iteration, c, acc);
        }
    }
}

/// The parent of a delta-mode candidate.
#[derive(Debug, Clone)]
struct Parent {
    iteration: u64,
    code: String,
    accuracy: Option<f64>,
}

/// Step 1's result: what the Code Generator was asked and wrote, and the
/// candidate's code (or why there is none).
struct Generated {
    prompt: Vec<ChatMessage>,
    response: ChatResponse,
    usage: RoleUsage,
    parent: Option<Parent>,
    code: Result<String, CandidateFailure>,
    diff: Option<String>,
}

/// Steps 2–3's result.
struct Evaluated {
    outcome: Outcome,
    seconds: f64,
}

/// Step 6–7's result: what the memory strategy chose, the Improver's advice
/// and the memory entry it opens.
#[derive(Default)]
struct Diagnosis {
    prompt: Option<Vec<ChatMessage>>,
    response: Option<ChatResponse>,
    advice: Option<improver::Advice>,
    opened: Option<MemoryEntry>,
    selection: MemorySelection,
    memory_state: Option<serde_json::Value>,
    usage: RoleUsage,
}

/// A step's value, or the reason the run stops before it finishes (Ctrl-C,
/// a replay with no more answers); broken infrastructure is the outer error.
type Step<T> = Result<Result<T, StopReason>, SearchError>;

/// The search.
pub struct Search<'a> {
    cfg: SearchSection,
    roles: Roles,
    dataset: DatasetContext,
    prompts: prompts::Prompts,
    store: &'a mut Store,
    replay: Option<&'a Store>,
    baseline: Option<String>,
    interrupt: Arc<AtomicBool>,
    seed: u64,
}

fn pct(acc: f64) -> String {
    format!("{:.2}%", acc * 100.0)
}

impl<'a> Search<'a> {
    /// A search over the given plugins and store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: SearchSection,
        roles: Roles,
        dataset: DatasetContext,
        prompts: prompts::Prompts,
        store: &'a mut Store,
        replay: Option<&'a Store>,
        baseline: Option<String>,
        seed: u64,
        interrupt: Arc<AtomicBool>,
    ) -> Self {
        Search { cfg, roles, dataset, prompts, store, replay, baseline, interrupt, seed }
    }

    fn dataset_ctx(&self) -> serde_json::Value {
        let m = &self.dataset.manifest;
        let [c, h, w] = m.input_shape;
        serde_json::json!({
            "name": m.name, "title": self.dataset.title, "family": m.family,
            "channels": c, "height": h, "width": w, "num_classes": m.num_classes,
            "class_names": m.class_names, "augment": c == 3 && h == 32 && w == 32,
            "train_size": m.splits.get("train").map(|s| s.count),
        })
    }

    /// One LLM call: the journaled answer when resuming, the recorded one
    /// when replaying, else the backend's; journaled as soon as it returns.
    fn llm(&mut self, iteration: u64, role: LlmRole, seq: u32, messages: Vec<ChatMessage>) -> Step<ChatResponse> {
        if let Some(j) = self.store.journaled(iteration, role, seq)? {
            if j.request == messages {
                return Ok(Ok(j.response));
            }
        }
        let response = if let Some(replay) = self.replay {
            match replay.journaled(iteration, role, seq)? {
                Some(c) => c.response,
                None => {
                    return Ok(Err(StopReason::ReplayExhausted(format!("iteration {iteration}, {role} call {seq}"))))
                }
            }
        } else {
            let request = ChatRequest {
                messages: messages.clone(),
                seed: Some(self.seed.wrapping_add(iteration * 16 + u64::from(seq))),
                purpose: Some(role.to_string()),
                ..Default::default()
            };
            let backend = match (role, self.roles.improver.as_mut()) {
                (LlmRole::Generator, _) | (LlmRole::Improver | LlmRole::Memory, None) => self.roles.generator.as_mut(),
                (LlmRole::Improver | LlmRole::Memory, Some(b)) => b.as_mut(),
            };
            backend.complete(&request).map_err(|error| SearchError::Llm { role, error })?
        };
        self.store.journal(&LlmCall { iteration, role, seq, request: messages, response: response.clone() })?;
        Ok(Ok(response))
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// The chain as recorded (nothing on a new run), and the novelty archive
    /// of every candidate evaluated.
    fn restore(&self) -> Result<(Chain, novelty::Archive), SearchError> {
        let records = self.store.iterations()?;
        let entries = self.store.memory()?;
        let mut archive = novelty::Archive::default();
        let mut best: Option<Best> =
            self.baseline.as_ref().map(|code| Best { iteration: 0, code: code.clone(), accuracy: None });
        for r in &records {
            if let (Some(code), Outcome::Ok { .. } | Outcome::Failed { .. }) = (&r.code, &r.outcome) {
                archive.add(r.iteration, novelty::signature(code));
            }
            if let (Some(acc), Some(code)) = (r.outcome.accuracy(), &r.code) {
                Best::offer(&mut best, r.iteration, code, acc);
            }
        }
        Ok((Chain { records, entries, best }, archive))
    }

    /// Runs until a stop condition; returns why it stopped.
    pub fn run(&mut self, progress: &mut dyn Progress) -> Result<StopReason, SearchError> {
        let (mut chain, mut archive) = self.restore()?;
        if let Some(reason) = self.stop_reason(&chain) {
            return Ok(reason);
        }
        loop {
            let t = chain.next_iteration();
            let t0 = Instant::now();
            macro_rules! step {
                ($e:expr) => {
                    match $e? {
                        Ok(v) => v,
                        Err(stop) => return Ok(stop),
                    }
                };
            }
            macro_rules! checkpoint {
                () => {
                    if self.interrupted() {
                        return Ok(StopReason::Interrupted);
                    }
                };
            }
            checkpoint!();
            progress.stage(t, Stage::Generating);
            let generated = step!(self.generate(&chain, t));
            checkpoint!();
            let evaluated = self.evaluate(&mut archive, t, &generated.code, progress)?;
            checkpoint!();
            let closed = chain.close_open_entry(&evaluated.outcome);
            chain.offer_best(t, generated.code.as_deref().ok(), &evaluated.outcome);
            let diagnosis = step!(self.diagnose(&chain, t, &generated, &evaluated.outcome, progress));
            checkpoint!();
            let record = assemble(t, generated, evaluated, &diagnosis, &chain, t0);
            self.commit(&mut chain, record, closed, diagnosis.opened)?;
            progress.finished(chain.records.last().expect("just committed"), &chain.records);
            if let Some(reason) = self.stop_reason(&chain) {
                return Ok(reason);
            }
        }
    }

    /// Step 1: the Code Generator's prompt and answer, and the code taken
    /// from it (the diff applied to the parent in delta mode).
    fn generate(&mut self, chain: &Chain, t: u64) -> Step<Generated> {
        let previous = chain.records.last();
        let advice = previous.and_then(|r| r.advice.clone());
        let suggestions = advice.as_ref().map(|a| a.suggestions.clone()).filter(|s| !s.trim().is_empty());
        let parent = match self.cfg.mode {
            GenerationMode::Delta => chain.best.as_ref().map(|b| Parent {
                iteration: b.iteration,
                code: b.code.clone(),
                accuracy: b.accuracy,
            }),
            GenerationMode::Full => None,
        };
        let prev_ctx = previous.map(|r| {
            serde_json::json!({
                "iteration": r.iteration,
                "status": match r.outcome { Outcome::Ok { .. } => "ok", _ => "failed" },
                "accuracy_pct": r.outcome.accuracy().map(pct),
                "error": r.outcome.memory_text().trim_start_matches("error: ").to_string(),
                "code": r.code,
            })
        });
        let best_ctx = chain.best.as_ref().filter(|_| self.cfg.use_best_reference).map(Best::prompt_context);
        let ctx = serde_json::json!({
            "dataset": self.dataset_ctx(),
            "attempt": t,
            "best": best_ctx,
            "previous": prev_ctx,
            "suggestions": suggestions,
            "parent": parent.as_ref().map(|p| serde_json::json!({"iteration": p.iteration, "code": p.code, "accuracy_pct": p.accuracy.map(pct)})),
        });
        let template = if parent.is_some() { "generator_delta.md" } else { "generator.md" };
        let prompt = vec![
            ChatMessage::system(self.prompts.render("system_generator.md", &ctx)?),
            ChatMessage::user(self.prompts.render(template, &ctx)?),
        ];
        let response = match self.llm(t, LlmRole::Generator, 0, prompt.clone())? {
            Ok(r) => r,
            Err(stop) => return Ok(Err(stop)),
        };
        let mut usage = RoleUsage::default();
        usage.add(&response);
        let (code, diff) = take_code(&response.content, parent.as_ref());
        Ok(Ok(Generated { prompt, response, usage, parent, code, diff }))
    }

    /// Steps 2–3: the novelty filter, then the evaluator (its journaled
    /// outcome when resuming).
    fn evaluate(
        &mut self,
        archive: &mut novelty::Archive,
        t: u64,
        code: &Result<String, CandidateFailure>,
        progress: &mut dyn Progress,
    ) -> Result<Evaluated, SearchError> {
        let code = match code {
            Err(failure) => return Ok(Evaluated { outcome: Outcome::Failed { failure: failure.clone() }, seconds: 0.0 }),
            Ok(code) => code,
        };
        let sig = novelty::signature(code);
        let twin = if self.cfg.novelty_filter { archive.twin(&sig, self.cfg.novelty_threshold) } else { None };
        if let Some((of, similarity)) = twin {
            return Ok(Evaluated { outcome: Outcome::Duplicate { of, similarity }, seconds: 0.0 });
        }
        progress.stage(t, Stage::Evaluating);
        archive.add(t, sig);
        if let Some((outcome, seconds)) = self.store.journaled_evaluation(t, code)? {
            return Ok(Evaluated { outcome, seconds });
        }
        let e0 = Instant::now();
        let result = self
            .roles
            .evaluator
            .evaluate(&EvalRequest {
                candidate_id: format!("iteration-{t}"),
                source: code.clone(),
                dataset: self.dataset.reference.clone(),
                time_limit_s: None,
                seed: None,
                save_model: None,
            })
            .map_err(SearchError::Evaluator)?;
        let seconds = e0.elapsed().as_secs_f64();
        let outcome = match result {
            EvalOutcome::Ok(report) => Outcome::Ok { report },
            EvalOutcome::Failed(failure) => Outcome::Failed { failure },
        };
        self.store.journal_evaluation(t, code, &outcome, seconds)?;
        Ok(Evaluated { outcome, seconds })
    }

    /// Steps 6–7: the memory strategy's selection, the Prompt Improver's
    /// advice, and the memory entry it opens.
    fn diagnose(
        &mut self,
        chain: &Chain,
        t: u64,
        generated: &Generated,
        outcome: &Outcome,
        progress: &mut dyn Progress,
    ) -> Step<Diagnosis> {
        let mut d =
            Diagnosis { memory_state: chain.records.last().and_then(|r| r.memory_state.clone()), ..Default::default() };
        if !self.cfg.use_improver {
            return Ok(Ok(d));
        }
        progress.stage(t, Stage::Diagnosing);
        if self.cfg.use_history {
            let mut input = MemoryInput {
                entries: chain.entries.clone(),
                iteration: t,
                state: d.memory_state.clone(),
                llm_reply: None,
            };
            d.selection = self.roles.memory.select(&input).map_err(SearchError::Memory)?;
            if let Some(task) = d.selection.llm_task.take() {
                let reply = match self.llm(t, LlmRole::Memory, 0, task)? {
                    Ok(r) => r,
                    Err(stop) => return Ok(Err(stop)),
                };
                d.usage.add(&reply);
                input.state = d.selection.state.clone();
                input.llm_reply = Some(reply.content);
                d.selection = self.roles.memory.select(&input).map_err(SearchError::Memory)?;
                d.selection.llm_task = None;
            }
            d.memory_state = d.selection.state.clone();
        }
        let (result, feedback) = describe_outcome(outcome);
        let code = generated.code.as_ref().ok();
        let ctx = serde_json::json!({
            "dataset": self.dataset_ctx(),
            "best": chain.best.as_ref().filter(|b| b.accuracy.is_some() || self.cfg.use_best_reference).map(Best::prompt_context),
            "current": {"iteration": t, "code": code, "result": result, "feedback": feedback},
            "memory": d.selection.entries,
            "memory_summary": d.selection.summary,
        });
        let prompt = vec![
            ChatMessage::system(self.prompts.render("system_improver.md", &ctx)?),
            ChatMessage::user(self.prompts.render("improver.md", &ctx)?),
        ];
        let response = match self.llm(t, LlmRole::Improver, 0, prompt.clone())? {
            Ok(r) => r,
            Err(stop) => return Ok(Err(stop)),
        };
        d.usage.add(&response);
        let advice = improver::parse(&response.content);
        d.opened = Some(MemoryEntry {
            iteration: t,
            problem: advice.problem.clone(),
            suggestion: truncate_chars(&advice.suggestions, SUGGESTION_CHARS).to_string(),
            outcome: None,
            accuracy: None,
            failure_kind: None,
            best_before: chain.best.as_ref().and_then(|b| b.accuracy),
        });
        d.prompt = Some(prompt);
        d.response = Some(response);
        d.advice = Some(advice);
        Ok(Ok(d))
    }

    /// Commits the iteration: its record, the entry it closes and the one it
    /// opens, in one transaction; then the chain moves on.
    fn commit(
        &mut self,
        chain: &mut Chain,
        record: IterationRecord,
        closed: Option<MemoryEntry>,
        opened: Option<MemoryEntry>,
    ) -> Result<(), SearchError> {
        self.store.commit_iteration(&record, closed.as_ref(), opened.as_ref())?;
        chain.entries.extend(opened);
        chain.records.push(record);
        Ok(())
    }

    fn stop_reason(&self, chain: &Chain) -> Option<StopReason> {
        let records = &chain.records;
        let done = records.last().map_or(0, |r| r.iteration);
        if done >= self.cfg.max_iterations {
            return Some(StopReason::MaxIterations);
        }
        if let (Some(target), Some(acc)) = (self.cfg.target_accuracy, chain.best.as_ref().and_then(|b| b.accuracy)) {
            if acc >= target {
                return Some(StopReason::TargetAccuracy);
            }
        }
        if let Some(max) = self.cfg.max_tokens {
            let used: u64 = records.iter().map(IterationRecord::tokens).sum();
            if used >= max {
                return Some(StopReason::TokenBudget);
            }
        }
        if let Some(max) = self.cfg.max_wall_time_s {
            let wall: f64 = records.iter().map(|r| r.wall_seconds).sum();
            if wall >= max {
                return Some(StopReason::WallTime);
            }
        }
        None
    }
}

/// The candidate's code from the generator's answer: the first python block,
/// or in delta mode the diff applied to the parent (a whole file instead of
/// a diff is accepted as it is). Returns the code and the diff.
fn take_code(answer: &str, parent: Option<&Parent>) -> (Result<String, CandidateFailure>, Option<String>) {
    match parent {
        Some(parent) => match extract::extract_diff(answer) {
            Some(d) => {
                let code = delta::apply(&parent.code, &d)
                    .map(|(code, _)| code)
                    .map_err(|e| CandidateFailure::new("patch", FailureKind::Patch, e.0));
                (code, Some(d))
            }
            None => (
                extract::extract_code(answer).ok_or_else(|| {
                    CandidateFailure::new(
                        "extract",
                        FailureKind::Extract,
                        "the answer has neither a diff nor a python code block",
                    )
                }),
                None,
            ),
        },
        None => (
            extract::extract_code(answer).ok_or_else(|| {
                CandidateFailure::new("extract", FailureKind::Extract, "the answer has no python code block")
            }),
            None,
        ),
    }
}

/// The iteration's record, from its steps' results.
fn assemble(
    t: u64,
    generated: Generated,
    evaluated: Evaluated,
    diagnosis: &Diagnosis,
    chain: &Chain,
    t0: Instant,
) -> IterationRecord {
    IterationRecord {
        iteration: t,
        mode: if generated.parent.is_some() { "delta".into() } else { "full".into() },
        generator_prompt: generated.prompt,
        generator_response: generated.response,
        code: generated.code.ok(),
        diff: generated.diff,
        parent: generated.parent.map(|p| p.iteration),
        outcome: evaluated.outcome,
        improver_prompt: diagnosis.prompt.clone(),
        improver_response: diagnosis.response.clone(),
        advice: diagnosis.advice.clone(),
        memory_shown: diagnosis.selection.entries.clone(),
        memory_summary: diagnosis.selection.summary.clone(),
        memory_state: diagnosis.memory_state.clone(),
        best: chain.best.as_ref().and_then(|b| b.accuracy.map(|a| (b.iteration, a))),
        generator_usage: generated.usage,
        improver_usage: diagnosis.usage,
        eval_seconds: evaluated.seconds,
        wall_seconds: t0.elapsed().as_secs_f64(),
        finished_at: crate::time::now_s(),
    }
}

/// The result line and the evaluator feedback the Improver reads.
fn describe_outcome(outcome: &Outcome) -> (String, Option<String>) {
    match outcome {
        Outcome::Ok { report } => {
            let mut parts = vec![format!("test accuracy {} after one epoch", pct(report.accuracy))];
            if let Some(l) = report.train_loss {
                parts.push(format!("mean train loss {l:.4}"));
            }
            if let Some(p) = report.params {
                parts.push(format!("{p} parameters"));
            }
            if let Some(f) = report.flops {
                parts.push(format!("{:.1} MFLOPs per image", f as f64 / 1e6));
            }
            if let Some(s) = report.epoch_seconds {
                parts.push(format!("epoch {s:.1} s"));
            }
            (format!("trained: {}", pct(report.accuracy)), Some(parts.join(", ")))
        }
        Outcome::Failed { failure } => {
            let mut text = format!("{} failure at stage `{}`: {}", failure.kind, failure.stage, failure.message);
            if let Some(e) = &failure.exception {
                text.push_str(&format!(" ({e})"));
            }
            if !failure.traceback.is_empty() {
                text.push('\n');
                text.push_str(&failure.traceback);
            }
            let chars = text.chars().count();
            let tail: String = if chars > FEEDBACK_CHARS { text.chars().skip(chars - FEEDBACK_CHARS).collect() } else { text };
            (format!("failed ({})", failure.kind), Some(tail))
        }
        Outcome::Duplicate { of, similarity } => (
            format!("not trained: a near-duplicate of attempt {of}"),
            Some(format!(
                "The design is {:.0}% similar to attempt {of}, which was already evaluated. Propose a substantially different change.",
                similarity * 100.0
            )),
        ),
    }
}
