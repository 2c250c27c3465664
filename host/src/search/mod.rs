//! The search loop of the method, one iteration at a time:
//!
//! 1. **Code Generator** prompt (task and code contract, best code and its
//!    accuracy, the previous attempt and its accuracy or failure, the
//!    Improver's latest suggestions) → LLM → extract the code (or, in delta
//!    mode, the diff, applied tolerantly to the parent);
//! 2. **novelty filter**: a candidate too similar to an evaluated one is
//!    recorded as a duplicate of its twin and not trained;
//! 3. **evaluate** (sandboxed, one epoch) → accuracy or a typed failure; a
//!    candidate that builds a network its island knows to be trained (the
//!    evaluator's fingerprint, sent as `known_networks`: its own, and the
//!    other islands' as they reach it at migrations) is refused before its
//!    epoch and recorded as a duplicate of the attempt that trained it;
//! 4. **close** the open memory entry with the outcome;
//! 5. **update best** (strictly greater accuracy);
//! 6. **Prompt Improver** prompt (best and current code with results, the
//!    evaluator's feedback, the memory strategy's selection) → LLM → advice;
//! 7. **open** a new memory entry (problem, suggestion cut to 300 chars);
//!
//! and the whole iteration is committed to the run store in one transaction.

pub mod admission;
pub mod change;
pub mod delta;
pub mod extract;
pub mod improver;
pub mod islands;
pub mod novelty;
pub mod objective;
pub mod pool;
pub mod prompts;
pub mod repair;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use admission::Admission;
use islands::{Migrations, OrderedArchive, Screen};
use objective::ObjectiveFn;
use pool::Pool;

use nas_plugin_api::text::truncate_chars;
use nas_plugin_api::{
    CandidateFailure, ChatMessage, ChatRequest, ChatResponse, DatasetManifest, DatasetRef, EvalOutcome, EvalReport,
    EvalRequest, Evaluator, FailureKind, LlmBackend, MemoryEntry, MemoryInput, MemorySelection, MemoryStrategy,
    PluginError,
};
use serde::Serialize;

use crate::config::{FallbackOrder, GenerationMode, PromptStyle, Repair, SearchSection};
use crate::records::{EvalRetry, IterationRecord, LlmCall, LlmRole, MadeOn, Outcome, Regenerated, RoleUsage};
use crate::store::{Store, StoreError};

/// Longest suggestion kept in a memory entry.
pub const SUGGESTION_CHARS: usize = 300;
/// Longest evaluator feedback shown to the Improver.
const FEEDBACK_CHARS: usize = 2000;

/// How many trained designs after the best the search makes a common change
/// on, once every change was tried on the best (`[search] repair`
/// `"change"`).
pub const RUNNER_UPS: usize = 4;

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
    /// `max_device_hours` reached.
    DeviceBudget,
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
            StopReason::DeviceBudget => f.write_str("reached max_device_hours"),
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

/// The plugin instances a search drives. Each list holds the instances
/// that may work at once: LLM calls in flight, evaluation slots.
pub struct Roles {
    /// Scores candidates: one instance per evaluation slot.
    pub evaluators: Vec<Box<dyn Evaluator>>,
    /// The Code Generator's backend, one instance per call in flight.
    pub generators: Vec<Box<dyn LlmBackend>>,
    /// The Prompt Improver's backend (empty: the generator's).
    pub improvers: Vec<Box<dyn LlmBackend>>,
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

/// Receives progress, from every island.
pub trait Progress: Send {
    /// An iteration entered a stage.
    fn stage(&mut self, iteration: u64, stage: Stage);
    /// An iteration was committed; `records` are every committed iteration.
    fn finished(&mut self, record: &IterationRecord, records: &[IterationRecord]);
}

#[derive(Debug, Clone, Serialize)]
struct Best {
    iteration: u64,
    code: String,
    accuracy: Option<f64>,
    /// The objective's value (the accuracy, unless the objective weighs
    /// costs).
    score: Option<f64>,
    /// Its trainable parameters and forward FLOPs per example, as measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flops: Option<u64>,
}

impl Best {
    /// Makes `(iteration, code)` the best when its score is strictly greater
    /// than the best's (or nothing has been measured yet).
    fn offer(best: &mut Option<Best>, iteration: u64, code: &str, report: &EvalReport, score: f64) {
        if best.as_ref().and_then(|b| b.score).is_none_or(|b| score > b) {
            *best = Some(Best {
                iteration,
                code: code.to_string(),
                accuracy: Some(report.accuracy),
                score: Some(score),
                params: report.params,
                flops: report.flops,
            });
        }
    }

    /// Takes a migrant when it is strictly better.
    fn offer_migrant(best: &mut Option<Best>, migrant: Option<&Best>) {
        if let Some(m) = migrant {
            if let (Some(_), Some(score)) = (m.accuracy, m.score) {
                if best.as_ref().and_then(|b| b.score).is_none_or(|b| score > b) {
                    *best = Some(m.clone());
                }
            }
        }
    }

    /// What the prompts say of the best design; `objective` states its
    /// cost against the search's limits.
    fn prompt_context(&self, objective: &ObjectiveFn) -> serde_json::Value {
        serde_json::json!({
            "iteration": self.iteration, "code": self.code,
            "accuracy_pct": self.accuracy.map(pct).unwrap_or_else(|| "not measured yet".into()),
            "note": softmax_note(&self.code),
            "cost": objective.cost_text(self.params, self.flops),
        })
    }
}

/// `received` with the networks `records` trained, each with the first
/// attempt that trained it.
fn known_networks(received: &BTreeMap<String, u64>, records: &[IterationRecord]) -> BTreeMap<String, u64> {
    let mut out = received.clone();
    for r in records {
        if let Some(network) = r.outcome.network() {
            let first = out.entry(network.to_string()).or_insert(r.iteration);
            *first = (*first).min(r.iteration);
        }
    }
    out
}

/// What an island publishes for its neighbour at the end of each epoch:
/// its best, and the networks it knows to be trained (its own and those that
/// reached it from further back along the ring), so a network one island
/// trained is refused before its epoch on the others, an island further
/// with each migration.
#[derive(Debug, Clone)]
struct Published {
    best: Option<Best>,
    networks: BTreeMap<String, u64>,
}

/// The state of one chain of the method (an island): what it has recorded,
/// its memory entries and its best design.
struct Chain {
    island: u64,
    records: Vec<IterationRecord>,
    entries: Vec<MemoryEntry>,
    best: Option<Best>,
    /// The epoch whose migrant this island was waiting for when the run
    /// stopped (its neighbour had not finished that epoch): taken first on
    /// resume, as the live run would have.
    pending_migrant: Option<u64>,
    /// The networks the other islands trained, as they reached this one
    /// along the ring at the migrations it took ([`Published`]).
    received: BTreeMap<String, u64>,
}

impl Chain {
    /// The networks this island knows to be trained, by the evaluator's
    /// fingerprint ([`nas_plugin_api::NETWORK_KEY`]): each with the first
    /// attempt that trained it. Its own records, and the other islands'
    /// networks as they reached it at its migrations: never what depends on
    /// the timing of the others, so a run with islands decides the same
    /// in every run.
    fn networks(&self) -> BTreeMap<String, u64> {
        known_networks(&self.received, &self.records)
    }

    /// What this island publishes at the end of an epoch: its best and the
    /// networks it knows.
    fn published(&self) -> Published {
        Published { best: self.best.clone(), networks: self.networks() }
    }

    /// Takes the neighbour's publication of an epoch: its best when strictly
    /// better, and the networks it knew.
    fn take(&mut self, migrant: Option<Published>) {
        let Some(m) = migrant else { return };
        Best::offer_migrant(&mut self.best, m.best.as_ref());
        for (network, t) in m.networks {
            let first = self.received.entry(network).or_insert(t);
            *first = (*first).min(t);
        }
    }

    /// The design the next attempt changes: its accuracy and code.
    fn best_design(&self) -> Option<(f64, &str)> {
        self.best.as_ref().and_then(|b| Some((b.accuracy?, b.code.as_str())))
    }

    /// The open entry's change becomes `change`, a fallback change given in
    /// its place (`problem` says so): the outcome is that change's.
    fn replace_open_change(&mut self, problem: &str, change: &str) {
        if let Some(open) = self.entries.last_mut().filter(|e| !e.is_closed()) {
            open.problem = problem.to_string();
            open.suggestion = change.to_string();
        }
    }

    /// The trained designs after the best, most accurate first (the earlier
    /// of equals first; the best's own code and repeats left out): the ones
    /// the search makes a common change on when every change was tried on
    /// the best.
    fn runner_ups(&self, best: &str) -> Vec<(u64, f64, &str)> {
        let mut trained: Vec<(u64, f64, &str)> = self
            .records
            .iter()
            .filter_map(|r| Some((r.iteration, r.outcome.accuracy()?, r.code.as_deref()?)))
            .filter(|(_, _, code)| code.trim_end() != best.trim_end())
            .collect();
        trained.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut seen: Vec<&str> = Vec::new();
        trained.retain(|(_, _, code)| {
            let new = !seen.contains(&code.trim_end());
            seen.push(code.trim_end());
            new
        });
        trained.truncate(RUNNER_UPS);
        trained
    }

    /// Step 4: closes the open memory entry with the outcome.
    fn close_open_entry(&mut self, outcome: &Outcome) -> Option<MemoryEntry> {
        let open = self.entries.last_mut().filter(|e| !e.is_closed())?;
        open.outcome = Some(outcome.memory_text());
        open.accuracy = outcome.accuracy();
        open.failure_kind = outcome.failure_kind();
        Some(open.clone())
    }

    /// Step 5: updates the best (strictly greater score).
    fn offer_best(&mut self, iteration: u64, code: Option<&str>, outcome: &Outcome, objective: &ObjectiveFn) {
        if let (Outcome::Ok { report }, Some(c)) = (outcome, code) {
            Best::offer(&mut self.best, iteration, c, report, objective.score(report));
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
    regenerated: Vec<Regenerated>,
    /// The common change given in place of the Improver's after the
    /// generator gave a design back unchanged on it.
    fallback: Option<String>,
    /// The repairs made as `code` was taken from the answer (a grafted
    /// `forward`), or the lines of the change the search made itself.
    grafted: Vec<repair::RepairNote>,
    /// The common change the search made itself on the best design, which
    /// the generator gave back unchanged.
    made: Option<String>,
    /// The next-best design `made` was made on, when every common change
    /// had been tried on the best.
    made_on: Option<MadeOn>,
    /// The conversation before the last answer (asked again after it).
    messages: Vec<ChatMessage>,
    /// The design an answer without `forward` takes its `forward` from.
    base: Option<String>,
    /// The common change the generator was asked for, when it was one
    /// (the first the search makes on a design given back unchanged).
    asked: Option<String>,
    /// The attempt whose network the generator's design built again, when
    /// the search made its change in its place.
    same_network_as: Option<u64>,
}

/// Steps 2–3's result.
struct Evaluated {
    outcome: Outcome,
    seconds: f64,
    /// The repaired code and what changed, when a repair was made.
    repaired: Option<(String, Vec<repair::RepairNote>)>,
    /// The report of a candidate that trained but broke a limit.
    over_limit: Option<EvalReport>,
    /// Evaluations run again alone after running out of memory beside others.
    retries: Vec<EvalRetry>,
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

/// What a fine-tuning cycle changes in a search: the generator answers with
/// the cycle's adapter, and every candidate is asked as the first attempt of
/// a fresh search (no best, no previous attempt, no suggestions) — the very
/// prompt the training examples were made with — in delta mode against a
/// parent drawn from `parents`.
#[derive(Debug, Clone, Default)]
pub struct CycleContext {
    /// The cycle (1-based), recorded in each iteration's record.
    pub cycle: u64,
    /// The adapter the generator answers with (`None`: the base model).
    pub adapter: Option<nas_plugin_api::AdapterRef>,
    /// Delta mode: the designs a candidate's diff applies to; iteration `t`
    /// gets `parents[(t - 1) % len]` after a seeded shuffle.
    pub parents: Vec<String>,
}

/// Where the run stands: set once by the first island that stops it.
#[derive(Default)]
struct Halt {
    reason: Option<StopReason>,
    error: Option<SearchError>,
}

/// The search: one chain per island, run side by side, sharing the plugin
/// pools, the run store and the novelty archive.
pub struct Search<'a> {
    cfg: SearchSection,
    dataset: DatasetContext,
    prompts: prompts::Prompts,
    baseline: Option<String>,
    interrupt: Arc<AtomicBool>,
    seed: u64,
    evaluators: Pool<Box<dyn Evaluator>>,
    admission: Admission,
    generators: Pool<Box<dyn LlmBackend>>,
    improvers: Option<Pool<Box<dyn LlmBackend>>>,
    memory: Mutex<Box<dyn MemoryStrategy>>,
    store: Mutex<&'a mut Store>,
    replay: Option<Mutex<Store>>,
    archive: OrderedArchive,
    migrations: Migrations<Published>,
    committed: Mutex<Vec<IterationRecord>>,
    halt: Mutex<Halt>,
    cycle: Option<CycleContext>,
    objective: ObjectiveFn,
}

fn pct(acc: f64) -> String {
    format!("{:.2}%", acc * 100.0)
}

fn locked<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'a> Search<'a> {
    /// A search over the given plugins and store; `replay` answers every
    /// LLM call from another run's journal.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: SearchSection,
        roles: Roles,
        dataset: DatasetContext,
        prompts: prompts::Prompts,
        store: &'a mut Store,
        replay: Option<Store>,
        baseline: Option<String>,
        seed: u64,
        interrupt: Arc<AtomicBool>,
    ) -> Self {
        let objective = ObjectiveFn { kind: cfg.objective, limits: cfg.limits, weights: cfg.weights };
        let memory = cfg.evaluator_memory;
        let slots = roles.evaluators.len().max(1) as u64;
        let admission =
            Admission::new(memory.budget_mb, memory.estimate_mb.or(memory.budget_mb.map(|b| b / slots)).unwrap_or(0));
        let islands = u64::from(cfg.islands.max(1));
        Search {
            admission,
            objective,
            cfg,
            dataset,
            prompts,
            baseline,
            interrupt,
            seed,
            evaluators: Pool::new(roles.evaluators),
            generators: Pool::new(roles.generators),
            improvers: (!roles.improvers.is_empty()).then(|| Pool::new(roles.improvers)),
            memory: Mutex::new(roles.memory),
            store: Mutex::new(store),
            replay: replay.map(Mutex::new),
            archive: OrderedArchive::new(islands),
            migrations: Migrations::default(),
            committed: Mutex::new(Vec::new()),
            halt: Mutex::new(Halt::default()),
            cycle: None,
        }
    }

    /// Runs the search as (part of) a fine-tuning cycle.
    pub fn with_cycle(mut self, cycle: CycleContext) -> Self {
        self.cycle = Some(cycle);
        self
    }

    fn islands(&self) -> u64 {
        u64::from(self.cfg.islands.max(1))
    }

    fn dataset_ctx(&self) -> serde_json::Value {
        dataset_context(&self.dataset.manifest, &self.dataset.title)
    }

    /// One LLM call: the journaled answer when resuming, the recorded one
    /// when replaying, else the backend's; journaled as soon as it returns.
    fn llm(&self, iteration: u64, role: LlmRole, seq: u32, messages: Vec<ChatMessage>) -> Step<ChatResponse> {
        if let Some(j) = locked(&self.store).journaled(iteration, role, seq)? {
            if j.request == messages {
                return Ok(Ok(j.response));
            }
        }
        let response = if let Some(replay) = &self.replay {
            match locked(replay).journaled(iteration, role, seq)? {
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
                adapter: match role {
                    LlmRole::Generator => self.cycle.as_ref().and_then(|c| c.adapter.clone()),
                    LlmRole::Improver | LlmRole::Memory => None,
                },
                // A call asked again samples hotter, when set: at the first
                // call's temperature a small model gives the answer it was
                // told was wrong again, in other words.
                temperature: match role {
                    LlmRole::Generator | LlmRole::Improver if seq > 0 => self.cfg.retry_temperature,
                    _ => None,
                },
                ..Default::default()
            };
            let pool = match (role, &self.improvers) {
                (LlmRole::Generator, _) | (LlmRole::Improver | LlmRole::Memory, None) => &self.generators,
                (LlmRole::Improver | LlmRole::Memory, Some(p)) => p,
            };
            pool.with(|backend| backend.complete(&request)).map_err(|error| SearchError::Llm { role, error })?
        };
        locked(&self.store).journal(&LlmCall {
            iteration,
            role,
            seq,
            request: messages,
            response: response.clone(),
        })?;
        Ok(Ok(response))
    }

    /// Whether the run is stopping: Ctrl-C, or another island stopped it.
    fn stopping(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst) || {
            let h = locked(&self.halt);
            h.reason.is_some() || h.error.is_some()
        }
    }

    /// Why the run stops when [`Self::stopping`] turned true.
    fn stop_now(&self) -> StopReason {
        locked(&self.halt).reason.clone().unwrap_or(StopReason::Interrupted)
    }

    /// Stops the run (the first reason or error wins).
    fn halt(&self, outcome: Result<StopReason, SearchError>) {
        let mut h = locked(&self.halt);
        if h.reason.is_some() || h.error.is_some() {
            return;
        }
        match outcome {
            Ok(reason) => h.reason = Some(reason),
            Err(e) => h.error = Some(e),
        }
    }

    /// Every island's chain as recorded (nothing on a new run): records and
    /// memory entries by island, the archive, and each island's best with
    /// the migrations of every epoch it completed, published again for its
    /// neighbour.
    fn restore(&self) -> Result<Vec<Chain>, SearchError> {
        let (records, entries) = {
            let st = locked(&self.store);
            (st.iterations()?, st.memory()?)
        };
        let n = self.islands();
        let baseline = self.baseline.as_ref().map(|code| Best {
            iteration: 0,
            code: code.clone(),
            accuracy: None,
            score: None,
            params: None,
            flops: None,
        });
        let mut chains: Vec<Chain> = (0..n)
            .map(|island| Chain {
                island,
                records: Vec::new(),
                entries: Vec::new(),
                best: baseline.clone(),
                pending_migrant: None,
                received: BTreeMap::new(),
            })
            .collect();
        for r in &records {
            let (evaluated, trained) = match (&r.code, &r.outcome) {
                (Some(code), Outcome::Ok { .. } | Outcome::Failed { .. }) => {
                    let screened = repair::screened(&r.repair, code);
                    let trained = (screened != *code).then(|| novelty::signature(code));
                    (Some(novelty::signature(&screened)), trained)
                }
                _ => (None, None),
            };
            self.archive.restore(r.iteration, evaluated, trained);
            if let Some(peak) = peak_of(&r.outcome) {
                self.admission.observe(peak);
            }
            chains[islands::locate(r.iteration, n).0 as usize].records.push(r.clone());
        }
        for e in entries {
            chains[islands::locate(e.iteration, n).0 as usize].entries.push(e);
        }
        let interval = self.cfg.migration_interval;
        let migrating = n > 1 && interval > 0;
        // Bests epoch by epoch, as the live run computed them: each island's
        // own records of the epoch, then its neighbour's best of the same
        // epoch before that neighbour took its own migrant.
        let mut done = vec![0usize; n as usize];
        let mut epoch = 1u64;
        loop {
            let mut pre = Vec::new();
            for c in chains.iter_mut() {
                let upto = if migrating { (epoch * interval) as usize } else { c.records.len() };
                let end = upto.min(c.records.len());
                for r in &c.records[done[c.island as usize]..end] {
                    if let (Outcome::Ok { report }, Some(code)) = (&r.outcome, r.code.as_deref()) {
                        Best::offer(&mut c.best, r.iteration, code, report, self.objective.score(report));
                    }
                }
                done[c.island as usize] = end;
                // What it published: its best and the networks of its
                // records so far with those it had received.
                pre.push((c.records.len() >= upto).then(|| Published {
                    best: c.best.clone(),
                    networks: known_networks(&c.received, &c.records[..end]),
                }));
            }
            if !migrating || pre.iter().all(Option::is_none) {
                break;
            }
            for (i, c) in chains.iter_mut().enumerate() {
                if pre[i].is_none() {
                    continue;
                }
                self.migrations.publish(epoch, i as u64, pre[i].clone());
                let from = (i + n as usize - 1) % n as usize;
                match &pre[from] {
                    Some(theirs) => c.take(Some(theirs.clone())),
                    None => c.pending_migrant = Some(epoch),
                }
            }
            epoch += 1;
        }
        *locked(&self.committed) = records;
        Ok(chains)
    }

    /// Runs until a stop condition; returns why it stopped.
    pub fn run(&mut self, progress: &mut dyn Progress) -> Result<StopReason, SearchError> {
        let chains = self.restore()?;
        if let Some(reason) = self.budget_reason(&locked(&self.committed)) {
            return Ok(reason);
        }
        let progress = Mutex::new(progress);
        let this = &*self;
        std::thread::scope(|s| {
            for chain in chains {
                let progress = &progress;
                s.spawn(move || {
                    let island = chain.island;
                    let outcome = this.island(chain, progress);
                    this.finish_island(island);
                    if let Err(e) = outcome {
                        this.halt(Err(e));
                    }
                });
            }
        });
        let mut h = locked(&self.halt);
        match (h.error.take(), h.reason.take()) {
            (Some(e), _) => Err(e),
            (None, Some(reason)) => Ok(reason),
            (None, None) if self.interrupt.load(Ordering::SeqCst) => Ok(StopReason::Interrupted),
            (None, None) => Ok(StopReason::MaxIterations),
        }
    }

    /// An island stopped: it runs no more iterations, so nothing waits for
    /// them.
    fn finish_island(&self, island: u64) {
        let n = self.islands();
        let count =
            locked(&self.committed).iter().filter(|r| islands::locate(r.iteration, n).0 == island).count() as u64;
        let interval = self.cfg.migration_interval.max(1);
        self.migrations.stop(island, count / interval);
        let mut k = count + 1;
        loop {
            let t = islands::iteration(island, k, n);
            if t > self.cfg.max_iterations {
                break;
            }
            self.archive.skip(t);
            k += 1;
        }
    }

    /// One island's chain, iteration after iteration, until the run stops.
    fn island(&self, mut chain: Chain, progress: &Mutex<&mut dyn Progress>) -> Result<(), SearchError> {
        let n = self.islands();
        if let Some(epoch) = chain.pending_migrant.take() {
            let from = (chain.island + n - 1) % n;
            let migrant = self.migrations.take(epoch, from, &|| self.stopping());
            chain.take(migrant);
        }
        loop {
            let k = chain.records.len() as u64 + 1;
            let t = islands::iteration(chain.island, k, n);
            if t > self.cfg.max_iterations {
                return Ok(());
            }
            let t0 = Instant::now();
            macro_rules! step {
                ($e:expr) => {
                    match $e? {
                        Ok(v) => v,
                        Err(stop) => {
                            self.halt(Ok(stop));
                            return Ok(());
                        }
                    }
                };
            }
            macro_rules! checkpoint {
                () => {
                    if self.stopping() {
                        self.halt(Ok(self.stop_now()));
                        return Ok(());
                    }
                };
            }
            checkpoint!();
            locked(progress).stage(t, Stage::Generating);
            let known = chain.networks();
            let mut generated = step!(self.generate(&chain, t));
            checkpoint!();
            let mut evaluated = step!(self.evaluate(t, &generated.code, &generated.grafted, &known, progress));
            checkpoint!();
            for _ in 0..self.cfg.fix_retries {
                let Some(failure) = fixable(&evaluated.outcome).filter(|_| generated.made.is_none()) else { break };
                locked(progress).stage(t, Stage::Generating);
                let checked = evaluated.repaired.as_ref().map(|(c, _)| c.clone()).or(generated.code.clone().ok());
                step!(self.fix(&chain, t, &mut generated, &failure, checked.as_deref()));
                checkpoint!();
                let mut fixed = step!(self.evaluate(t, &generated.code, &generated.grafted, &known, progress));
                checkpoint!();
                fixed.seconds += evaluated.seconds;
                evaluated.retries.append(&mut fixed.retries);
                fixed.retries = evaluated.retries;
                evaluated = fixed;
            }
            // The generator's design builds a network already trained: the
            // search makes its change in its place, as for a design given
            // back unchanged.
            if let Outcome::Duplicate { of, network: true, .. } = evaluated.outcome {
                if generated.made.is_none() {
                    step!(self.change_on_duplicate(&chain, t, &mut generated, true));
                    if generated.made.is_some() {
                        generated.same_network_as = Some(of);
                        let mut changed =
                            step!(self.evaluate(t, &generated.code, &generated.grafted, &known, progress));
                        checkpoint!();
                        changed.seconds += evaluated.seconds;
                        evaluated.retries.append(&mut changed.retries);
                        changed.retries = evaluated.retries;
                        evaluated = changed;
                    }
                }
            }
            if let Some(change) = &generated.fallback {
                let problem =
                    if generated.made_on.is_some() { improver::RUNNER_UP_PROBLEM } else { improver::FALLBACK_PROBLEM };
                chain.replace_open_change(problem, change);
            }
            let closed = chain.close_open_entry(&evaluated.outcome);
            let code = evaluated.repaired.as_ref().map(|(c, _)| c.as_str()).or(generated.code.as_deref().ok());
            chain.offer_best(t, code, &evaluated.outcome, &self.objective);
            let diagnosis = step!(self.diagnose(&chain, t, code, &evaluated.outcome, progress));
            checkpoint!();
            let mut record = assemble(t, chain.island, generated, evaluated, &diagnosis, &chain, t0);
            record.cycle = self.cycle.as_ref().map_or(0, |c| c.cycle);
            record.score = match (&record.outcome, self.cfg.objective) {
                (Outcome::Ok { report }, crate::config::Objective::Weighted) => Some(self.objective.score(report)),
                _ => None,
            };
            self.commit(&mut chain, record, closed, diagnosis.opened, progress)?;
            let interval = self.cfg.migration_interval;
            if n > 1 && interval > 0 && k.is_multiple_of(interval) {
                let epoch = k / interval;
                self.migrations.publish(epoch, chain.island, Some(chain.published()));
                let from = (chain.island + n - 1) % n;
                let migrant = self.migrations.take(epoch, from, &|| self.stopping());
                chain.take(migrant);
            }
        }
    }

    /// Step 1: the Code Generator's prompt and answer, and the code taken
    /// from it (the diff applied to the parent in delta mode).
    fn generate(&self, chain: &Chain, t: u64) -> Step<Generated> {
        let cycle = self.cycle.as_ref();
        let previous = chain.records.last().filter(|_| cycle.is_none());
        // The Improver's change, or the search's in its place.
        let advice = previous.and_then(|r| r.advice.as_ref());
        let suggestions = advice
            .and_then(|a| if a.rejected.is_none() { Some(a.suggestions.clone()) } else { a.fallback.clone() })
            .filter(|s| !s.trim().is_empty());
        let improvers_change = suggestions.is_some() && advice.is_some_and(|a| a.rejected.is_none());
        let parent = match (self.cfg.mode, cycle) {
            (GenerationMode::Delta, Some(c)) => self.cycle_parent(c, t),
            (GenerationMode::Delta, None) => chain.best.as_ref().map(|b| Parent {
                iteration: b.iteration,
                code: b.code.clone(),
                accuracy: b.accuracy,
            }),
            (GenerationMode::Full, _) => None,
        };
        let prev_ctx = previous.map(|r| {
            serde_json::json!({
                "iteration": r.iteration,
                "status": match r.outcome { Outcome::Ok { .. } => "ok", _ => "failed" },
                "accuracy_pct": r.outcome.accuracy().map(pct),
                "error": r.outcome.memory_text().trim_start_matches("error: ").to_string(),
                "hint": failure_hint(&r.outcome),
                "made_change": r.made_change,
                "made_on": r.made_on.map(|on| serde_json::json!({"iteration": on.iteration, "accuracy_pct": pct(on.accuracy)})),
                "repaired": r.repair.iter().filter(|n| n.kind != change::CHANGE).map(|n| serde_json::json!({"kind": n.kind, "line": n.line, "before": n.before.trim(), "after": n.after.trim()})).collect::<Vec<_>>(),
                "code": r.code,
            })
        });
        let best_ctx = match (cycle, &parent) {
            (None, _) => {
                chain.best.as_ref().filter(|_| self.cfg.use_best_reference).map(|b| b.prompt_context(&self.objective))
            }
            (Some(_), None) => None,
            (Some(_), Some(p)) => self
                .cfg
                .use_best_reference
                .then(|| serde_json::json!({"iteration": 0, "code": p.code, "accuracy_pct": "not measured yet"})),
        };
        let ctx = serde_json::json!({
            "dataset": self.dataset_ctx(),
            "limits": self.objective.limits_text(),
            "compact": self.cfg.prompt_style == PromptStyle::Compact,
            "attempt": if cycle.is_some() { 1 } else { t },
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
        let mut messages = prompt.clone();
        let mut response = match self.llm(t, LlmRole::Generator, 0, prompt.clone())? {
            Ok(r) => r,
            Err(stop) => return Ok(Err(stop)),
        };
        let mut usage = RoleUsage::default();
        usage.add(&response);
        // The design an answer without `forward` takes its `forward` from:
        // the one it was asked to change.
        let base = parent.as_ref().map(|p| p.code.clone()).or_else(|| {
            chain.best.as_ref().filter(|_| self.cfg.use_best_reference && cycle.is_none()).map(|b| b.code.clone())
        });
        let take = |content: &str| self.take_answer(content, parent.as_ref(), base.as_deref());
        let (mut code, mut diff, mut grafted) = take(&response.content);
        let mut regenerated: Vec<Regenerated> = Vec::new();
        let mut fallback = None;
        while (regenerated.len() as u32) < self.cfg.generation_retries {
            let (of, similarity) = match &code {
                Ok(c) if !defines_forward(c) => (None, None),
                Ok(c) if self.cfg.novelty_filter => {
                    match self.archive.probe(t, &novelty::signature(c), self.cfg.novelty_threshold, &|| self.stopping())
                    {
                        Screen::Stopped => return Ok(Err(self.stop_now())),
                        Screen::Novel => break,
                        Screen::Duplicate(of, similarity) => (Some(of), Some(similarity)),
                    }
                }
                Ok(_) => break,
                Err(_) => (None, None),
            };
            // A design given back unchanged on the Improver's change: a
            // small generator does the same when asked again, so with
            // fallback changes on, it gets a concrete one instead.
            let instead = (of.is_some() && improvers_change && fallback.is_none() && self.cfg.fallback_changes)
                .then(|| {
                    let best = chain.best_design();
                    self.fallback_changes(chain, &chain.entries, best, t).into_iter().next()
                })
                .flatten();
            fallback = fallback.or(instead.map(str::to_string));
            let retry = self.prompts.render(
                "generator_retry.md",
                &serde_json::json!({
                    "of": of,
                    "similarity_pct": similarity.map(|s| format!("{:.0}%", s * 100.0)),
                    "failure": code.as_ref().err().map(|f| f.message.clone()),
                    "suggestions": fallback.as_ref().map_or(ctx["suggestions"].clone(), |f| serde_json::json!(f)),
                    "instead": instead.is_some(),
                    "delta": parent.is_some(),
                }),
            )?;
            messages.push(ChatMessage::assistant(response.content.clone()));
            messages.push(ChatMessage::user(retry.clone()));
            regenerated.push(Regenerated {
                of,
                similarity,
                answer: response.content.clone(),
                retry,
                fallback: instead.map(str::to_string),
                failed: None,
            });
            response = match self.llm(t, LlmRole::Generator, regenerated.len() as u32, messages.clone())? {
                Ok(r) => r,
                Err(stop) => return Ok(Err(stop)),
            };
            usage.add(&response);
            (code, diff, grafted) = take(&response.content);
        }
        // Given back unchanged after every retry: the search makes a change
        // itself on the best design, the one it asked for first.
        let asked = fallback.clone().or_else(|| suggestions.clone().filter(|_| !improvers_change));
        let mut generated = Generated {
            prompt,
            response,
            usage,
            parent,
            code,
            diff,
            regenerated,
            fallback,
            grafted,
            made: None,
            made_on: None,
            same_network_as: None,
            messages,
            base,
            asked,
        };
        if let Err(stop) = self.change_on_duplicate(chain, t, &mut generated, false)? {
            return Ok(Err(stop));
        }
        Ok(Ok(generated))
    }

    /// The code taken from a generator's answer (the diff applied to the
    /// parent in delta mode), with the `forward` of `base` grafted on when
    /// the answer has none (`"forward"` in `[search] repair`): the code, the
    /// diff, the notes of the graft.
    fn take_answer(
        &self,
        content: &str,
        parent: Option<&Parent>,
        base: Option<&str>,
    ) -> (Result<String, CandidateFailure>, Option<String>, Vec<repair::RepairNote>) {
        let (code, diff) = take_code(content, parent);
        match (&code, base) {
            (Ok(c), Some(base)) if self.cfg.repair.has(Repair::Forward) => match repair::repair_forward(c, base) {
                Some((grafted, notes)) => (Ok(grafted), diff, notes),
                None => (code, diff, Vec::new()),
            },
            _ => (code, diff, Vec::new()),
        }
    }

    /// With `[search] fix_retries`: the generator, told in one line how the
    /// design of its last answer failed before training (and the search's
    /// hint, when it has one), is asked in the same conversation to fix it;
    /// its answer replaces the code, and the failed one is kept in
    /// `regenerated` with its failure. Not asked after a change the search
    /// made itself (the answer it would fix is not the code that failed).
    /// `checked`: the code that failed (after the repairs), whose line of
    /// `forward` the traceback names is quoted.
    fn fix(
        &self,
        chain: &Chain,
        t: u64,
        generated: &mut Generated,
        failure: &CandidateFailure,
        checked: Option<&str>,
    ) -> Step<()> {
        let error: String = failure.message.lines().next().unwrap_or_default().chars().take(400).collect();
        let at = checked.and_then(|code| {
            let n = repair::failing_forward_line(failure, code)?;
            code.split('\n').nth(n - 1).map(|l| l.trim().to_string())
        });
        let text = self.prompts.render(
            "generator_fix.md",
            &serde_json::json!({
                "error": error,
                "at": at,
                "hint": failure_hint(&Outcome::Failed { failure: failure.clone() }),
                "delta": generated.parent.is_some(),
            }),
        )?;
        let mut messages = generated.messages.clone();
        messages.push(ChatMessage::assistant(generated.response.content.clone()));
        messages.push(ChatMessage::user(text.clone()));
        let seq = generated.regenerated.len() as u32 + 1;
        let response = match self.llm(t, LlmRole::Generator, seq, messages.clone())? {
            Ok(r) => r,
            Err(stop) => return Ok(Err(stop)),
        };
        generated.usage.add(&response);
        generated.regenerated.push(Regenerated {
            of: None,
            similarity: None,
            answer: std::mem::replace(&mut generated.response, response).content,
            retry: text,
            fallback: None,
            failed: Some(failure.clone()),
        });
        generated.messages = messages;
        (generated.code, generated.diff, generated.grafted) =
            self.take_answer(&generated.response.content, generated.parent.as_ref(), generated.base.as_deref());
        self.change_on_duplicate(chain, t, generated, false)
    }

    /// The common changes open on `best` (those it lacks and, by
    /// `earlier`, has not tried), in the order `[search] fallback_order`
    /// says: the seeded one, or by what each gained in the chain's memory.
    fn fallback_changes(
        &self,
        chain: &Chain,
        earlier: &[MemoryEntry],
        best: Option<(f64, &str)>,
        t: u64,
    ) -> Vec<&'static str> {
        let open = improver::open_fallback_changes(earlier, best, self.seed, t);
        match self.cfg.fallback_order {
            FallbackOrder::Seeded => open,
            FallbackOrder::Gain => improver::by_gain(open, &chain.entries),
        }
    }

    /// With `"change"` in `[search] repair` (and fallback changes and the
    /// novelty filter on, outside a cycle): when the generated code is a
    /// near-duplicate of an evaluated design, the first of the common
    /// changes (the one the generator was asked for, then the others the
    /// best design lacks and has not tried, in the order of
    /// [`Search::fallback_changes`]) that
    /// [`change::make`] can make on the best design and that gives a novel
    /// design replaces it, with the change's notes; `made` and `fallback`
    /// name the change. When every change was tried on the best (or none
    /// can be made on it), the same on the next-best trained designs
    /// ([`RUNNER_UPS`] of them, most accurate first), with `made_on` naming
    /// the design: a small generator that writes the best back would
    /// otherwise end each of its later iterations as a duplicate.
    /// `network`: the evaluator found the design builds a network already
    /// trained (the text may be novel), so a change is made without asking
    /// the novelty filter first.
    fn change_on_duplicate(&self, chain: &Chain, t: u64, generated: &mut Generated, network: bool) -> Step<()> {
        let on = self.cfg.repair.has(Repair::Change) && self.cfg.fallback_changes && self.cfg.novelty_filter;
        let Some(best) = chain.best_design().filter(|_| on && self.cycle.is_none()) else { return Ok(Ok(())) };
        let Ok(code) = &generated.code else { return Ok(Ok(())) };
        let probe =
            |c: &str| self.archive.probe(t, &novelty::signature(c), self.cfg.novelty_threshold, &|| self.stopping());
        match probe(code) {
            Screen::Stopped => return Ok(Err(self.stop_now())),
            Screen::Novel if !network => return Ok(Ok(())),
            Screen::Novel | Screen::Duplicate(..) => {}
        }
        let in_shape = self.dataset.manifest.input_shape.map(|d| d as u64);
        let open = self.fallback_changes(chain, &chain.entries, Some(best), t);
        let asked = improver::FALLBACK_CHANGES.iter().map(|(c, _)| *c).find(|c| generated.asked.as_deref() == Some(*c));
        let on_best =
            asked.into_iter().chain(open.into_iter().filter(|c| Some(*c) != asked)).map(|c| (None, best.1, c));
        // On a next-best design the archive alone says what was tried: the
        // memory's entries name the best each change was tried on.
        let on_runner_ups = chain.runner_ups(best.1).into_iter().flat_map(|(iteration, accuracy, code)| {
            self.fallback_changes(chain, &[], Some((accuracy, code)), t)
                .into_iter()
                .map(move |c| (Some(MadeOn { iteration, accuracy }), code, c))
        });
        for (made_on, design, change) in on_best.chain(on_runner_ups) {
            let Some((edited, notes)) = change::make(change, design, in_shape) else { continue };
            match probe(&edited) {
                Screen::Stopped => return Ok(Err(self.stop_now())),
                Screen::Novel => {
                    (generated.code, generated.diff, generated.grafted) = (Ok(edited), None, notes);
                    generated.fallback = Some(match made_on {
                        None => change.to_string(),
                        Some(on) => format!(
                            "On the design of attempt {} ({}), not the best: {change}",
                            on.iteration,
                            pct(on.accuracy)
                        ),
                    });
                    generated.made = Some(change.to_string());
                    generated.made_on = made_on;
                    return Ok(Ok(()));
                }
                Screen::Duplicate(..) => {}
            }
        }
        Ok(Ok(()))
    }

    /// The parent a cycle's candidate `t` is asked to change: a seeded
    /// shuffle of the cycle's parents, taken in turn.
    fn cycle_parent(&self, cycle: &CycleContext, t: u64) -> Option<Parent> {
        if cycle.parents.is_empty() {
            return None;
        }
        let n = cycle.parents.len() as u64;
        let round = (t - 1) / n;
        let mut order: Vec<u64> = (0..n).collect();
        let mut x = self.seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
        }
        let code = cycle.parents[order[((t - 1) % n) as usize] as usize].clone();
        Some(Parent { iteration: 0, code, accuracy: None })
    }

    /// The most repairs made after failed evaluations of one candidate
    /// (each is one more check, about a second). A design over the budget
    /// needs a flatten repair after each halving; that flatten comes with
    /// its halving and is not counted (the third target run's iteration 43
    /// ran out of four repairs, and the fifth's iteration 21 out of six,
    /// each with a design one flatten repair short of training: 6,652
    /// MFLOPs against 200, halved three times).
    const MAX_REPAIRS_AFTER_FAILURE: usize = 6;

    /// Steps 2–3: the novelty filter, then the evaluator (its journaled
    /// outcome when resuming). `grafted`: the repairs made as the code was
    /// taken from the answer.
    fn evaluate(
        &self,
        t: u64,
        code: &Result<String, CandidateFailure>,
        grafted: &[repair::RepairNote],
        known: &BTreeMap<String, u64>,
        progress: &Mutex<&mut dyn Progress>,
    ) -> Step<Evaluated> {
        let sig = code.as_ref().ok().map(|c| novelty::signature(c));
        let screen =
            self.archive.screen(t, sig, self.cfg.novelty_threshold, self.cfg.novelty_filter, &|| self.stopping());
        let code = match (code, screen) {
            (_, Screen::Stopped) => return Ok(Err(self.stop_now())),
            (Err(failure), _) => {
                return Ok(Ok(Evaluated {
                    outcome: Outcome::Failed { failure: failure.clone() },
                    seconds: 0.0,
                    repaired: None,
                    over_limit: None,
                    retries: Vec::new(),
                }))
            }
            (Ok(code), Screen::Duplicate(of, similarity)) => {
                return Ok(Ok(Evaluated {
                    outcome: Outcome::Duplicate { of, similarity, network: false },
                    seconds: 0.0,
                    repaired: (!grafted.is_empty()).then(|| (code.clone(), grafted.to_vec())),
                    over_limit: None,
                    retries: Vec::new(),
                }))
            }
            (Ok(code), Screen::Novel) => code,
        };
        locked(progress).stage(t, Stage::Evaluating);
        // The repairs made before any evaluation, in order.
        let mut notes = grafted.to_vec();
        let mut softened = code.clone();
        let before_training: [(Repair, repair::BeforeTraining); 5] = [
            (Repair::ClassName, repair::repair_class_name),
            (Repair::MissingLayer, repair::repair_missing_layer),
            (Repair::LayerInForward, repair::repair_layer_in_forward),
            (Repair::Softmax, repair::repair_softmax),
            (Repair::Logits, repair::repair_logits),
        ];
        for (kind, repair) in before_training {
            if let Some((fixed, made)) = self.cfg.repair.has(kind).then(|| repair(&softened)).flatten() {
                notes.extend(made);
                softened = fixed;
            }
        }
        let (mut outcome, mut seconds, mut retries) = self.evaluate_code(t, &softened, known)?;
        // The repairs of a failure the check reported, each followed by
        // another evaluation (a channel fixed, a pooling taken out, a
        // skipped layer called or a design made narrower can reveal a
        // flatten size).
        let in_shape = self.dataset.manifest.input_shape.map(|d| d as u64);
        let classes = self.dataset.manifest.num_classes as u64;
        let budget = self.objective.budget();
        // Each of the budget repair's halvings halves the features a head
        // takes; a head more than three halvings over the budget by itself
        // is left to its failure, not built (fewer than the repair may
        // make, so nothing near the fourth run's 3,211,264 x 512 is tried).
        let slack = if self.cfg.repair.has(Repair::Budget) { 1 << 3 } else { 1 };
        let mut counted = 0;
        while let Outcome::Failed { failure } = &outcome {
            // A layer that the features reaching it would put over the
            // budget by itself, further than the budget repair's halvings
            // could bring it, is left to the failure, which names both sizes
            // (a 224x224 upsampling of a 28x28 image: the fourth target
            // run's iteration 33, whose head became 3,211,264 x 512, and
            // the check ran out of memory building it).
            let affordable = |m: &repair::FlattenMismatch| {
                let weights = m.features.saturating_mul(m.out_features) / slack;
                budget.broken_by(Some(weights), Some(weights.saturating_mul(2))).is_empty()
            };
            let flattened = || match repair::flatten_mismatch(failure) {
                Some(m) if !affordable(&m) => None,
                Some(m) => repair::repair_flatten(&softened, &m, in_shape, failure).map(|(c, n)| (c, vec![n])),
                None => repair::repair_unflattened(&softened, failure),
            };
            let channelled = || {
                let m = repair::channel_mismatch(&failure.message)?;
                repair::repair_channels(&softened, &m, in_shape, failure).map(|(c, n)| (c, vec![n]))
            };
            let pooled = || {
                let line = repair::pooled_too_small_at(failure, &softened)?;
                repair::repair_pooling(&softened, line, failure)
            };
            let narrowed = || change::narrower(&softened, in_shape, classes, failure);
            let called = || repair::repair_uncalled(&softened, failure, in_shape, classes);
            let out_of_place = || repair::repair_inplace(&softened, failure);
            let norm_dim = || repair::repair_norm_dim(&softened, failure);
            let shortcut = || repair::repair_shortcut(&softened, failure);
            let on = |r: Repair| self.cfg.repair.has(r);
            // A layer forward skipped before a size fixed to fit its absence.
            let fixed = on(Repair::Flatten)
                .then(flattened)
                .flatten()
                .or_else(|| on(Repair::Uncalled).then(called).flatten())
                .or_else(|| on(Repair::Inplace).then(out_of_place).flatten())
                .or_else(|| on(Repair::NormDim).then(norm_dim).flatten())
                .or_else(|| on(Repair::Shortcut).then(shortcut).flatten())
                .or_else(|| on(Repair::Channels).then(channelled).flatten())
                .or_else(|| on(Repair::Pooling).then(pooled).flatten())
                .or_else(|| on(Repair::Budget).then(narrowed).flatten());
            let Some((fixed, made)) = fixed else { break };
            // The head's size after a halving goes with the halving.
            let sizes_halving = made.first().is_some_and(|n| n.kind == repair::FLATTEN)
                && notes.last().is_some_and(|n| n.kind == change::BUDGET);
            if !sizes_halving {
                if counted == Self::MAX_REPAIRS_AFTER_FAILURE {
                    break;
                }
                counted += 1;
            }
            notes.extend(made);
            softened = fixed;
            let (next, more, more_retries) = self.evaluate_code(t, &softened, known)?;
            (outcome, seconds) = (next, seconds + more);
            retries.extend(more_retries);
        }
        let (outcome, over_limit) = self.objective.judge(outcome);
        if softened != *code {
            self.archive.trained(t, novelty::signature(&softened));
        }
        let repaired = (!notes.is_empty()).then_some((softened, notes));
        Ok(Ok(Evaluated { outcome, seconds, repaired, over_limit, retries }))
    }

    /// One evaluation of `code` at iteration `t`: the journaled outcome when
    /// resuming, else the evaluator's, journaled as soon as it returns. An
    /// evaluation that ran out of memory while others were in flight is run
    /// again alone (see [`admission`]); the attempt with company is
    /// journaled first, under [`crowded_key`], so a resumed run records the
    /// same retry.
    fn evaluate_code(
        &self,
        t: u64,
        code: &str,
        known: &BTreeMap<String, u64>,
    ) -> Result<(Outcome, f64, Vec<EvalRetry>), SearchError> {
        let journaled_retry = |st: &Store| -> Result<Vec<EvalRetry>, SearchError> {
            Ok(match st.journaled_evaluation(t, &crowded_key(code))? {
                Some((Outcome::Failed { failure }, seconds)) => vec![EvalRetry { failure, seconds }],
                _ => Vec::new(),
            })
        };
        // The store's guard is dropped before the body locks it again.
        let journaled = locked(&self.store).journaled_evaluation(t, code)?;
        if let Some((outcome, seconds)) = journaled {
            self.observe(&outcome);
            let retries = journaled_retry(&locked(&self.store))?;
            return Ok((outcome, seconds, retries));
        }
        let request = EvalRequest {
            candidate_id: format!("iteration-{t}"),
            source: code.to_string(),
            dataset: self.dataset.reference.clone(),
            time_limit_s: None,
            seed: Some(self.seed),
            save_model: None,
            budget: self.objective.budget(),
            known_networks: known.keys().cloned().collect(),
        };
        let mut retries = journaled_retry(&locked(&self.store))?;
        let (outcome, seconds) = if retries.is_empty() {
            let e0 = Instant::now();
            let ticket = self.admission.admit();
            let result = self.evaluators.with(|e| e.evaluate(&request)).map_err(SearchError::Evaluator)?;
            let crowded = ticket.crowded();
            drop(ticket);
            let seconds = e0.elapsed().as_secs_f64();
            match result {
                EvalOutcome::Failed(failure) if crowded && failure.kind == FailureKind::OutOfMemory => {
                    let first = Outcome::Failed { failure: failure.clone() };
                    locked(&self.store).journal_evaluation(t, &crowded_key(code), &first, seconds)?;
                    retries.push(EvalRetry { failure, seconds });
                    self.evaluate_alone(&request, known)?
                }
                other => (outcome_of(other, known), seconds),
            }
        } else {
            // Killed after the attempt with company: run it alone now.
            self.evaluate_alone(&request, known)?
        };
        self.observe(&outcome);
        locked(&self.store).journal_evaluation(t, code, &outcome, seconds)?;
        Ok((outcome, seconds, retries))
    }

    /// An evaluation with no other in flight.
    fn evaluate_alone(
        &self,
        request: &EvalRequest,
        known: &BTreeMap<String, u64>,
    ) -> Result<(Outcome, f64), SearchError> {
        let e0 = Instant::now();
        let _alone = self.admission.alone();
        let result = self.evaluators.with(|e| e.evaluate(request)).map_err(SearchError::Evaluator)?;
        Ok((outcome_of(result, known), e0.elapsed().as_secs_f64()))
    }

    /// Takes a measured peak into the admission's expectation.
    fn observe(&self, outcome: &Outcome) {
        if let Some(peak) = peak_of(outcome) {
            self.admission.observe(peak);
        }
    }

    /// Steps 6–7: the memory strategy's selection, the Prompt Improver's
    /// advice, and the memory entry it opens.
    fn diagnose(
        &self,
        chain: &Chain,
        t: u64,
        code: Option<&str>,
        outcome: &Outcome,
        progress: &Mutex<&mut dyn Progress>,
    ) -> Step<Diagnosis> {
        let mut d =
            Diagnosis { memory_state: chain.records.last().and_then(|r| r.memory_state.clone()), ..Default::default() };
        if !self.cfg.use_improver {
            return Ok(Ok(d));
        }
        locked(progress).stage(t, Stage::Diagnosing);
        if self.cfg.use_history {
            let mut input = MemoryInput {
                entries: chain.entries.clone(),
                iteration: t,
                state: d.memory_state.clone(),
                llm_reply: None,
            };
            d.selection = locked(&self.memory).select(&input).map_err(SearchError::Memory)?;
            if let Some(task) = d.selection.llm_task.take() {
                let reply = match self.llm(t, LlmRole::Memory, 0, task)? {
                    Ok(r) => r,
                    Err(stop) => return Ok(Err(stop)),
                };
                d.usage.add(&reply);
                input.state = d.selection.state.clone();
                input.llm_reply = Some(reply.content);
                d.selection = locked(&self.memory).select(&input).map_err(SearchError::Memory)?;
                d.selection.llm_task = None;
            }
            d.memory_state = d.selection.state.clone();
        }
        let (result, mut feedback) = describe_outcome(outcome);
        if let (Some(note), Outcome::Ok { .. }) = (code.and_then(softmax_note), outcome) {
            feedback = Some(feedback.map_or_else(|| note.to_string(), |f| format!("{f}\n{note}")));
        }
        let ctx = serde_json::json!({
            "dataset": self.dataset_ctx(),
            "best": chain
                .best
                .as_ref()
                .filter(|b| b.accuracy.is_some() || self.cfg.use_best_reference)
                .map(|b| b.prompt_context(&self.objective)),
            "current": {"iteration": t, "code": code, "result": result, "feedback": feedback},
            "memory": d.selection.entries,
            "memory_summary": d.selection.summary,
            "answer_keys": improver::ANSWER_KEYS,
            "limits": self.objective.limits_text(),
        });
        let prompt = vec![
            ChatMessage::system(self.prompts.render("system_improver.md", &ctx)?),
            ChatMessage::user(self.prompts.render("improver.md", &ctx)?),
        ];
        let previous = chain.records.last().and_then(|r| r.advice.as_ref());
        // What a suggestion may ask to replace or remove: this design's code
        // and the best design's (the one a compact prompt asks to change).
        let designs = code.map(|c| match &chain.best {
            Some(b) => format!("{}\n{}", improver::effective(c), improver::effective(&b.code)),
            None => improver::effective(c),
        });
        let best = chain.best_design();
        let mut messages = prompt.clone();
        let mut seq = 0;
        let mut refused: Vec<String> = Vec::new();
        let (response, mut advice) = loop {
            let response = match self.llm(t, LlmRole::Improver, seq, messages.clone())? {
                Ok(r) => r,
                Err(stop) => return Ok(Err(stop)),
            };
            d.usage.add(&response);
            let mut advice = improver::parse(&response.content);
            advice.rejected = improver::rejection(
                &advice,
                &improver::Checked {
                    previous,
                    earlier: &chain.entries,
                    code: designs.as_deref(),
                    best: best.map(|(accuracy, _)| accuracy),
                },
            );
            match &advice.rejected {
                Some(why) if seq < self.cfg.diagnosis_retries => {
                    // Asked again in a fresh turn: the same prompt with what
                    // was refused and why, never the refused answer itself.
                    // Shown its answer as its own turn, a small model gives
                    // it back: in three kept target runs, 20 of 72 second
                    // answers were the refused one word for word.
                    refused.push(why.clone());
                    let mut again = ctx.clone();
                    again["refused"] = serde_json::json!(refused);
                    // The latest reason alone, as a user's `improver_retry.md`
                    // written for the earlier retry reads it.
                    again["why"] = serde_json::json!(why);
                    let mut user = self.prompts.render("improver.md", &again)?;
                    let note = self.prompts.render("improver_retry.md", &again)?;
                    // A user's `improver.md` that does not show the refusals
                    // gets them at its end.
                    if !user.contains(note.trim()) {
                        user = format!("{}\n\n{}", user.trim_end(), note.trim());
                    }
                    messages = vec![prompt[0].clone(), ChatMessage::user(user)];
                    seq += 1;
                }
                _ => break (response, advice),
            }
        };
        d.prompt = Some(messages);
        d.response = Some(response);
        let fallback = if advice.rejected.is_some() && self.cfg.fallback_changes {
            self.fallback_changes(chain, &chain.entries, best, t).into_iter().next()
        } else {
            None
        };
        advice.fallback = fallback.map(str::to_string);
        let (problem, suggestion) = match (&advice.rejected, fallback) {
            (None, _) => (advice.problem.clone(), truncate_chars(&advice.suggestions, SUGGESTION_CHARS).to_string()),
            (Some(_), Some(change)) => (improver::FALLBACK_PROBLEM.to_string(), change.to_string()),
            (Some(_), None) => {
                d.advice = Some(advice);
                return Ok(Ok(d));
            }
        };
        d.opened = Some(MemoryEntry {
            iteration: t,
            problem,
            suggestion,
            outcome: None,
            accuracy: None,
            failure_kind: None,
            best_before: chain.best.as_ref().and_then(|b| b.accuracy),
        });
        d.advice = Some(advice);
        Ok(Ok(d))
    }

    /// Commits the iteration: its record, the entry it closes and the one it
    /// opens, in one transaction; then the chain moves on.
    /// Then the run's budgets are checked against every island's records.
    fn commit(
        &self,
        chain: &mut Chain,
        record: IterationRecord,
        closed: Option<MemoryEntry>,
        opened: Option<MemoryEntry>,
        progress: &Mutex<&mut dyn Progress>,
    ) -> Result<(), SearchError> {
        locked(&self.store).commit_iteration(&record, closed.as_ref(), opened.as_ref())?;
        chain.entries.extend(opened);
        let mut all = locked(&self.committed);
        let at = all.partition_point(|r| r.iteration < record.iteration);
        all.insert(at, record.clone());
        locked(progress).finished(&record, &all);
        if let Some(reason) = self.budget_reason(&all) {
            self.halt(Ok(reason));
        }
        drop(all);
        chain.records.push(record);
        Ok(())
    }

    /// Whether a budget or the target stops the run, from every committed
    /// record (`max_iterations` is each island's own end).
    fn budget_reason(&self, records: &[IterationRecord]) -> Option<StopReason> {
        if records.len() as u64 >= self.cfg.max_iterations {
            return Some(StopReason::MaxIterations);
        }
        if let Some(target) = self.cfg.target_accuracy {
            if records.iter().filter_map(|r| r.outcome.accuracy()).any(|a| a >= target) {
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
        if let Some(hours) = self.cfg.max_device_hours {
            let used: f64 = records.iter().map(IterationRecord::device_seconds).sum();
            if used >= hours * 3600.0 {
                return Some(StopReason::DeviceBudget);
            }
        }
        None
    }
}

/// The search's outcome of an evaluator's.
/// The record's outcome of an evaluator's answer: a network the evaluator
/// refused as already trained is a duplicate of the attempt that trained it
/// (`known`: the fingerprints the request carried, the message names one).
fn outcome_of(result: EvalOutcome, known: &BTreeMap<String, u64>) -> Outcome {
    match result {
        EvalOutcome::Ok(report) => Outcome::Ok { report },
        EvalOutcome::Failed(failure) if failure.kind == FailureKind::Duplicate => {
            match known.iter().find(|(network, _)| failure.message.contains(network.as_str())) {
                Some((_, &of)) => Outcome::Duplicate { of, similarity: 1.0, network: true },
                None => Outcome::Failed { failure },
            }
        }
        EvalOutcome::Failed(failure) => Outcome::Failed { failure },
    }
}

/// The peak memory a trained candidate's report measured.
fn peak_of(outcome: &Outcome) -> Option<u64> {
    match outcome {
        Outcome::Ok { report } => report.peak_memory_bytes,
        Outcome::Failed { .. } | Outcome::Duplicate { .. } => None,
    }
}

/// The journal key of an evaluation's attempt that ran out of memory beside
/// others (a text no candidate's code equals: the code behind a header).
fn crowded_key(code: &str) -> String {
    format!("# attempt with company, out of memory\n{code}")
}

/// The dataset as the generator's and the Improver's templates see it
/// (also what fine-tuning examples are rendered with).
pub fn dataset_context(m: &DatasetManifest, title: &str) -> serde_json::Value {
    let [c, h, w] = m.input_shape;
    serde_json::json!({
        "name": m.name, "title": title, "family": m.family,
        "channels": c, "height": h, "width": w, "num_classes": m.num_classes,
        "class_names": m.class_names, "augment": c == 3 && h == 32 && w == 32,
        "train_size": m.splits.get("train").map(|s| s.count),
    })
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

/// Whether `code` defines a `forward` method: a small model asked to remove
/// the last layer sometimes stops after `__init__`.
/// The failure of a design that failed before training (the check, the
/// export, the compute budget), which the generator can be asked to fix;
/// not a sandbox refusal, nor a failure of training.
fn fixable(outcome: &Outcome) -> Option<CandidateFailure> {
    match outcome {
        Outcome::Failed { failure }
            if matches!(failure.stage.as_str(), "check" | "export" | nas_plugin_api::BUDGET_STAGE)
                && failure.kind != FailureKind::Sandbox =>
        {
            Some(failure.clone())
        }
        _ => None,
    }
}

fn defines_forward(code: &str) -> bool {
    code.lines().any(|l| l.trim_start().starts_with("def forward"))
}

/// The iteration's record, from its steps' results.
fn assemble(
    t: u64,
    island: u64,
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
        code: match &evaluated.repaired {
            Some((fixed, _)) => Some(fixed.clone()),
            None => generated.code.ok(),
        },
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
        repair: evaluated.repaired.map(|(_, notes)| notes).unwrap_or_default(),
        island,
        cycle: 0,
        over_limit: evaluated.over_limit,
        score: None,
        eval_retries: evaluated.retries,
        regenerated: generated.regenerated,
        made_change: generated.made,
        made_on: generated.made_on,
        same_network_as: generated.same_network_as,
    }
}

/// A one-line hint for a failure the search can read more plainly than the
/// raw error (today: a flatten-size mismatch, with both sizes).
fn failure_hint(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed { failure } if failure.stage == nas_plugin_api::BUDGET_STAGE => Some(
            "That design costs more than the search allows, so it was not trained. Make it cheaper: fewer channels, fewer layers at full resolution, or pool earlier."
                .to_string(),
        ),
        Outcome::Failed { failure } if failure.exception.as_deref() == Some("ModuleNotFoundError") => {
            let module = failure.message.split("No module named ").nth(1).map(|m| m.trim().trim_matches('\''));
            Some(format!(
                "Only torch and the Python standard library are available{}: write the layers with torch.nn instead.",
                module.map(|m| format!(", not `{m}`")).unwrap_or_default()
            ))
        }
        Outcome::Failed { failure } => repair::flatten_mismatch(failure)
            .map(|m| repair::plain_words(&m))
            .or_else(|| repair::unflattened_linear(failure))
            .or_else(|| channel_mismatch(&failure.message))
            .or_else(|| shrunk_to_nothing(&failure.message))
            .or_else(|| unflattened(&failure.message)),
        Outcome::Duplicate { of, network: true, .. } => Some(format!(
            "That answer built attempt {of}'s network again, only written otherwise, so it was not trained. This time the network itself must differ: make the change below."
        )),
        // Small models answer "make this change" with the design unchanged.
        Outcome::Duplicate { of, .. } => Some(format!(
            "That answer was attempt {of}'s design again, so it was not trained. This time the code must differ from it: make the change below."
        )),
        Outcome::Ok { .. } => None,
    }
}

/// A layer that receives another number of channels than it was built
/// for ([`repair::channel_mismatch`]), said in plain words.
fn channel_mismatch(message: &str) -> Option<String> {
    let m = repair::channel_mismatch(message)?;
    let layer = match m.layer {
        repair::ChannelLayer::Conv2d => "A convolution",
        repair::ChannelLayer::BatchNorm => "A batch norm",
    };
    Some(format!(
        "{layer} was built for {} input channels but receives {}: each layer's input channels must equal the output channels of the layer before it (trace the channel counts through __init__ and forward, block by block).",
        m.built_for, m.receives
    ))
}

/// A pooling or convolution whose input is already smaller than its window
/// (torch: "Given input size: (256x2x2). Calculated output size: (256x0x0).
/// Output size is too small"): the input was downsampled too many times, as
/// when a 3x3/2 pooling follows each of four blocks on a 28x28 image.
fn shrunk_to_nothing(message: &str) -> Option<String> {
    if !message.contains("Output size is too small") {
        return None;
    }
    let size = message
        .split("Given input size: (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|dims| dims.split_once('x').map(|(_, hw)| hw.to_string()));
    Some(format!(
        "A layer's input{} is smaller than its window: the image was downsampled too many times. Use fewer poolings or strided layers (each 2x2 pooling halves the size: 28 -> 14 -> 7 -> 3), or global average pooling before the classifier.",
        size.map(|s| format!(" ({s})")).unwrap_or_default()
    ))
}

/// A layer for flattened features (a batch norm over features, which torch
/// reports as "expected 2D or 3D input (got 4D input)") fed a feature map:
/// the flatten, or the `nn.Linear` before it, was skipped in `forward`.
fn unflattened(message: &str) -> Option<String> {
    message.contains("expected 2D or 3D input (got 4D input)").then(|| {
        "A layer for flattened features (nn.BatchNorm1d) receives a 4D feature map: flatten it first (x = x.flatten(1)) and call the nn.Linear it follows, in the order __init__ builds them.".to_string()
    })
}

/// A design that ends in a softmax feeds probabilities to a loss that
/// expects logits (cross-entropy applies its own log-softmax): it trains, but
/// slowly. Said in the feedback because small models rarely notice it.
/// Read on the design's effective code: a softmax commented out (as the
/// softmax repair leaves it) or defined but never called is not one.
fn softmax_note(code: &str) -> Option<&'static str> {
    let code = improver::effective(code);
    let forward = code.split("def forward").nth(1)?;
    let ends_in_softmax = code.contains("nn.Softmax(") && forward.contains("softmax")
        || ["F.softmax(", "torch.softmax(", ".softmax(dim"].iter().any(|p| forward.contains(p));
    ends_in_softmax.then_some(
        "The network applies a softmax to its output, but the training loss (cross-entropy) expects raw logits and applies its own: remove the softmax from forward.",
    )
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
            let mut text = String::new();
            if let Some(hint) = failure_hint(outcome) {
                text.push_str(&hint);
                text.push('\n');
            }
            text.push_str(&format!("{} failure at stage `{}`: {}", failure.kind, failure.stage, failure.message));
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
        Outcome::Duplicate { of, network: true, .. } => (
            format!("not trained: the same network as attempt {of}"),
            Some(format!(
                "The design builds the same network as attempt {of}, which was already trained, only written otherwise. Propose a change that makes a different network."
            )),
        ),
        Outcome::Duplicate { of, similarity, .. } => (
            format!("not trained: a near-duplicate of attempt {of}"),
            Some(format!(
                "The design is {:.0}% similar to attempt {of}, which was already evaluated. Propose a substantially different change.",
                similarity * 100.0
            )),
        ),
    }
}

#[cfg(test)]
mod feedback_tests {
    use super::*;

    #[test]
    fn a_design_ending_in_softmax_is_named_and_one_without_is_not() {
        let with = "class Net(nn.Module):\n    def __init__(self):\n        self.softmax = nn.Softmax(dim=1)\n    def forward(self, x):\n        return self.softmax(self.fc(x))\n";
        let functional =
            "class Net(nn.Module):\n    def forward(self, x):\n        return F.softmax(self.fc(x), dim=1)\n";
        let without = "class Net(nn.Module):\n    def forward(self, x):\n        return self.fc(x)\n";
        assert!(softmax_note(with).is_some() && softmax_note(functional).is_some());
        assert_eq!(softmax_note(without), None);
        // Repaired, it has none: the line is a comment and the module unused.
        let module = "class Net(nn.Module):\n    def __init__(self):\n        self.softmax = nn.Softmax(dim=1)\n    def forward(self, x):\n        x = self.fc(x)\n        x = self.softmax(x)\n        return x\n";
        let (repaired, _) = repair::repair_softmax(module).expect("repaired");
        assert!(softmax_note(module).is_some());
        assert_eq!(softmax_note(&repaired), None, "{repaired}");
    }

    #[test]
    fn runner_ups_are_the_trained_designs_after_the_best_most_accurate_first_without_repeats() {
        use crate::cycles::select::tests::record;
        let ok = |a: f64| Outcome::Ok { report: nas_plugin_api::EvalReport { accuracy: a, ..Default::default() } };
        let failed = Outcome::Failed { failure: CandidateFailure::new("check", FailureKind::Runtime, "boom") };
        let records = vec![
            record(1, "a", ok(0.80)),
            record(2, "best", ok(0.90)),
            record(3, "c", ok(0.85)),
            record(4, "d", failed),
            record(5, "c\n", ok(0.86)), // c again, trained once more
            record(6, "e", ok(0.85)),
            record(7, "f", ok(0.70)),
            record(8, "g", ok(0.60)),
            record(9, "best", ok(0.90)),
        ];
        let chain = Chain {
            island: 0,
            records,
            entries: Vec::new(),
            best: None,
            pending_migrant: None,
            received: BTreeMap::new(),
        };
        let ups: Vec<(u64, f64)> = chain.runner_ups("best").into_iter().map(|(t, a, _)| (t, a)).collect();
        // 5 (c at 0.86), then 6 (e; 3 is c again), 1, 7: four of them.
        assert_eq!(ups, [(5, 0.86), (6, 0.85), (1, 0.80), (7, 0.70)]);
        assert_eq!(ups.len(), RUNNER_UPS);
    }

    #[test]
    fn a_duplicate_tells_the_generator_to_change_the_code() {
        let hint = failure_hint(&Outcome::Duplicate { of: 3, similarity: 1.0, network: false }).expect("a hint");
        assert!(hint.contains("attempt 3") && hint.contains("must differ"), "{hint}");
    }

    #[test]
    fn a_missing_package_and_a_broken_budget_say_what_to_do_instead() {
        // Recorded: `from torchvision.models import resnet18`.
        let mut failure = CandidateFailure::new(
            "check",
            FailureKind::Runtime,
            "importing the code raised ModuleNotFoundError: No module named 'torchvision'",
        );
        failure.exception = Some("ModuleNotFoundError".into());
        let hint = failure_hint(&Outcome::Failed { failure }).expect("a hint");
        assert!(hint.contains("not `torchvision`") && hint.contains("torch.nn"), "{hint}");
        let over = CandidateFailure::new("budget", FailureKind::Constraint, "it breaks the search's limits");
        let hint = failure_hint(&Outcome::Failed { failure: over }).expect("a hint");
        assert!(hint.contains("not trained") && hint.contains("cheaper"), "{hint}");
        let after = CandidateFailure::new("objective", FailureKind::Constraint, "it trained to 90% but");
        assert_eq!(failure_hint(&Outcome::Failed { failure: after }), None, "judged after its epoch: no budget hint");
    }

    #[test]
    fn a_layer_fed_the_wrong_number_of_channels_is_said_with_both_counts() {
        let conv = CandidateFailure::new(
            "check",
            FailureKind::Runtime,
            "the forward pass raised RuntimeError: Given groups=1, weight of size [64, 32, 3, 3], expected input[2, 64, 14, 14] to have 32 channels, but got 64 channels instead",
        );
        let hint = failure_hint(&Outcome::Failed { failure: conv }).expect("a hint");
        assert!(hint.starts_with("A convolution was built for 32 input channels but receives 64"), "{hint}");
        let norm = CandidateFailure::new(
            "check",
            FailureKind::Runtime,
            "the forward pass raised RuntimeError: running_mean should contain 64 elements not 128",
        );
        let hint = failure_hint(&Outcome::Failed { failure: norm }).expect("a hint");
        // torch names the input's channels first: nn.BatchNorm2d(128) fed 64.
        assert!(hint.starts_with("A batch norm was built for 128 input channels but receives 64"), "{hint}");
        let shrunk = CandidateFailure::new(
            "check",
            FailureKind::Runtime,
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised RuntimeError: Given input size: (256x2x2). Calculated output size: (256x0x0). Output size is too small",
        );
        let hint = failure_hint(&Outcome::Failed { failure: shrunk }).expect("a hint");
        assert!(hint.starts_with("A layer's input (2x2) is smaller than its window"), "{hint}");
        let unflat = CandidateFailure::new(
            "check",
            FailureKind::Runtime,
            "the forward pass on a dummy batch of shape [2, 1, 28, 28] raised ValueError: expected 2D or 3D input (got 4D input)",
        );
        let hint = failure_hint(&Outcome::Failed { failure: unflat }).expect("a hint");
        assert!(hint.contains("receives a 4D feature map: flatten it first"), "{hint}");
        let other = CandidateFailure::new("check", FailureKind::Runtime, "the forward pass raised RuntimeError: boom");
        assert_eq!(failure_hint(&Outcome::Failed { failure: other }), None);
    }
}
