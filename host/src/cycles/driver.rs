//! The cycle driver: seed, then generate → evaluate → select → fine-tune,
//! cycle after cycle, every step recorded so that a killed run resumes
//! where it stood (see the module docs of [`crate::cycles`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nas_plugin_api::{AdapterRef, FineTuner, HostContext, ModelRef, TrainingExample, TuneRequest};

use super::config::{CyclesSection, TrainFrom};
use super::log::{self, CycleState, Phase};
use super::select::{self, Criteria, Known};
use super::shared::SharedRoles;
use super::table::{self, CycleRow};
use super::{cycle_dir_name, io_err, seed, sha256_hex, CycleError, CYCLES_DIR};
use crate::config::{GenerationMode, RunConfig};
use crate::corpus::prompt::PromptSetup;
use crate::records::IterationRecord;
use crate::registry::PluginRef;
use crate::search::prompts::{self, Prompts};
use crate::search::{CycleContext, DatasetContext, Progress, Search, StopReason};
use crate::store::Store;

/// What a cycles run is made of.
pub struct Setup {
    /// The frozen run config (with `[cycles]`).
    pub config: RunConfig,
    /// The directory relative paths of the config resolve against.
    pub config_dir: PathBuf,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The search's plugins, created once and lent to each cycle.
    pub roles: SharedRoles,
    /// The fine-tuner (`None` only when replaying).
    pub tuner: Option<Box<dyn FineTuner>>,
    /// The base model the tuner trains (`None` only when replaying).
    pub base: Option<ModelRef>,
    /// The prepared dataset.
    pub dataset: DatasetContext,
    /// `[search] baseline`, read.
    pub baseline: Option<String>,
    /// A recorded cycles run to replay.
    pub replay: Option<PathBuf>,
    /// Set by Ctrl-C: stop after the current step.
    pub interrupt: Arc<AtomicBool>,
}

/// Receives what the driver does, for the terminal.
pub trait Observer {
    /// Progress of the searches (one line per iteration, ...).
    fn progress(&mut self) -> &mut dyn Progress;
    /// A step starts (`fine-tuning adapter 2 on 57 examples`).
    fn note(&mut self, text: &str);
    /// A cycle is done (fine-tuned), with its row (none for cycle 0). Called
    /// for every cycle passed, those done before a resume included.
    fn cycle(&mut self, state: &CycleState, row: Option<&CycleRow>);
}

/// How a cycles run ended (broken infrastructure is a [`CycleError`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// Every cycle is done.
    pub complete: bool,
    /// Ctrl-C.
    pub interrupted: bool,
    /// Why it stopped, in words.
    pub reason: String,
}

impl Ended {
    fn stopped(reason: StopReason) -> Ended {
        Ended { complete: false, interrupted: reason == StopReason::Interrupted, reason: reason.to_string() }
    }
}

/// The cycle driver.
pub struct Driver {
    s: Setup,
}

fn cycles_of(config: &RunConfig) -> Result<&CyclesSection, CycleError> {
    config.cycles.as_ref().ok_or_else(|| CycleError::Setup("the config has no [cycles] section".into()))
}

/// The base model the tuner trains: `[cycles] base_model` (a catalogue name
/// or a GGUF path), else the `[generator]`'s model when it is `llm.local`.
pub fn base_model(config: &RunConfig, ctx: &HostContext) -> Result<ModelRef, CycleError> {
    let cy = cycles_of(config)?;
    let settings = match &cy.base_model {
        Some(m) => serde_json::json!({ "model": m }),
        None => {
            let local =
                matches!(&config.generator.plugin, PluginRef::Builtin(id) | PluginRef::Id(id) if id == "llm.local");
            if !local {
                return Err(CycleError::Setup(format!(
                    "[cycles] base_model: the generator is `{}`, so name the GGUF file (or catalogue model) the tuner trains; it must be the base the generator serves",
                    config.generator.plugin
                )));
            }
            config.generator.settings_json()
        }
    };
    let mut local: nas_llm_local::LocalSettings = serde_json::from_value(settings.clone())
        .map_err(|e| CycleError::Setup(format!("the base model's settings ({settings}): {e}")))?;
    local.fetch = local.fetch || cy.base_model.is_some();
    let path = local.resolve_model(ctx).map_err(|e| CycleError::Setup(format!("[cycles] base model: {e}")))?;
    let name = nas_llm_local::find_model(&local.model)
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    Ok(ModelRef { name, path, sha256: None })
}

fn records_of(records: &[IterationRecord], c: u64) -> Vec<&IterationRecord> {
    records.iter().filter(|r| r.cycle == c).collect()
}

fn jsonl(examples: &[TrainingExample]) -> Result<Vec<u8>, CycleError> {
    let mut out = Vec::new();
    for e in examples {
        let line =
            serde_json::to_string(e).map_err(|e| CycleError::Inconsistent(format!("a training example: {e}")))?;
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CycleError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn read_examples(path: &Path) -> Result<Vec<TrainingExample>, CycleError> {
    Ok(crate::corpus::import::read_jsonl(path)?.into_iter().map(|(e, _)| e).collect())
}

impl Driver {
    /// A driver over a run's setup.
    pub fn new(s: Setup) -> Result<Driver, CycleError> {
        cycles_of(&s.config)?;
        if s.replay.is_none() && (s.tuner.is_none() || s.base.is_none()) {
            return Err(CycleError::Setup("a cycles run needs a [tuner] and a base model".into()));
        }
        Ok(Driver { s })
    }

    fn cy(&self) -> &CyclesSection {
        self.s.config.cycles.as_ref().expect("checked in Driver::new")
    }

    fn prompts(&self) -> Prompts {
        let m = &self.s.dataset.manifest;
        Prompts::new(prompts::family_for(&m.family, &m.name), self.s.config.prompts.dir.clone())
    }

    fn cycle_dir(&self, c: u64) -> PathBuf {
        self.s.run_dir.join(CYCLES_DIR).join(cycle_dir_name(c))
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.s.run_dir).unwrap_or(p).to_string_lossy().into_owned()
    }

    fn stopping(&self) -> bool {
        self.s.interrupt.load(Ordering::SeqCst)
    }

    /// Runs (or continues) every cycle.
    pub fn run(mut self, st: &mut Store, obs: &mut dyn Observer) -> Result<Ended, CycleError> {
        let cy = self.cy().clone();
        let seed_state = self.seed(st, obs)?;
        let seed_examples = read_examples(&self.s.run_dir.join(&seed_state.train_file))?;
        let designs: Vec<String> = seed_examples.iter().filter_map(seed::design).collect();
        let parents = match self.s.config.search.mode {
            GenerationMode::Full => Vec::new(),
            GenerationMode::Delta => {
                let p = seed::draw_parents(&designs, cy.parents, self.s.config.run.seed);
                if p.is_empty() {
                    return Err(CycleError::Seed(
                        "delta mode diffs against designs of the seed corpus, and it has none (no example's answer is a whole file or a diff that applies to its prompt's parent)".into(),
                    ));
                }
                p
            }
        };
        let mut known = Known::new(&designs);
        let criteria = Criteria { min_accuracy: cy.min_accuracy, novelty_threshold: cy.novelty_threshold };
        let mut states = vec![seed_state];
        for c in 0..=cy.cycles {
            let mut state = match c {
                0 => states[0].clone(),
                _ => log::read(st, c)?.unwrap_or_else(|| CycleState {
                    cycle: c,
                    iterations: ((c - 1) * cy.candidates + 1, c * cy.candidates),
                    ..CycleState::default()
                }),
            };
            if c >= 1 {
                if state.phase < Phase::Generated {
                    if let Some(stop) = self.stop_before(st, &states, true)? {
                        return Ok(stop);
                    }
                    log::write(st, &state)?;
                    let prev = &states[c as usize - 1];
                    if let Some(stop) = self.generate(st, c, prev, &parents, &states, obs)? {
                        return Ok(Ended::stopped(stop));
                    }
                    state.phase = Phase::Generated;
                    log::write(st, &state)?;
                }
                let records = st.iterations()?;
                let selected = select::select(&records_of(&records, c), &mut known, criteria);
                if state.phase >= Phase::Selected && state.selected != selected {
                    return Err(CycleError::Inconsistent(format!(
                        "cycle {c}: the records select iterations {selected:?}, but {:?} were recorded",
                        state.selected
                    )));
                }
                self.write_train_set(st, &mut state, &states[c as usize - 1], &records, selected)?;
            }
            if state.phase < Phase::Tuned {
                if let Some(stop) = self.stop_before(st, &states, false)? {
                    return Ok(stop);
                }
                let prev = (c >= 1).then(|| states[c as usize - 1].clone());
                if let Some(stop) = self.tune(st, &mut state, prev.as_ref(), obs)? {
                    return Ok(Ended::stopped(stop));
                }
            }
            let row = (c >= 1).then(|| {
                let records = st.iterations().unwrap_or_default();
                table::rows(&records, &[states.as_slice(), std::slice::from_ref(&state)].concat())
                    .into_iter()
                    .find(|r| r.cycle == c)
            });
            obs.cycle(&state, row.flatten().as_ref());
            if c == 0 {
                states[0] = state;
            } else {
                states.push(state);
            }
        }
        Ok(Ended { complete: true, interrupted: false, reason: format!("completed {} cycles", cy.cycles) })
    }

    /// Cycle 0: the seed corpus, written once (a replay copies the replayed
    /// run's); a recorded one is checked against its sha256 and made again
    /// when its file is gone.
    fn seed(&mut self, st: &mut Store, obs: &mut dyn Observer) -> Result<CycleState, CycleError> {
        let file = self.cycle_dir(0).join(crate::corpus::TRAIN_FILE);
        let recorded = log::read(st, 0)?;
        if let Some(s) = &recorded {
            if let Ok(bytes) = std::fs::read(&file) {
                if sha256_hex(&bytes) == s.train_sha256 {
                    return Ok(s.clone());
                }
            }
        }
        let (bytes, summary) = match &self.s.replay {
            Some(dir) => {
                let other = Store::open(dir)?;
                let theirs = log::read(&other, 0)?.ok_or_else(|| {
                    CycleError::Setup(format!(
                        "--replay {}: not a cycles run with a seed (no cycle 0 recorded)",
                        dir.display()
                    ))
                })?;
                let path = dir.join(&theirs.train_file);
                let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
                if sha256_hex(&bytes) != theirs.train_sha256 {
                    return Err(CycleError::Inconsistent(format!(
                        "{}: not the seed recorded in the replayed run",
                        path.display()
                    )));
                }
                (bytes, serde_json::json!({"source": "replay", "file": path}))
            }
            None => {
                obs.note("building the seed corpus");
                let m = &self.s.dataset.manifest;
                let setup = PromptSetup::new(self.prompts(), m, &self.s.dataset.title, &self.s.config.search);
                let cy = self.cy();
                let built = seed::build(
                    &cy.seed,
                    &self.s.config_dir,
                    self.s.config.search.mode,
                    &setup,
                    m,
                    self.s.config.run.seed,
                )?;
                (jsonl(&built.examples)?, built.summary)
            }
        };
        let sha = sha256_hex(&bytes);
        if let Some(s) = &recorded {
            if s.train_sha256 != sha {
                return Err(CycleError::Inconsistent(format!(
                    "{}: the seed corpus made again differs from the one recorded (sha256 {} then, {sha} now): the wheel, the file or the prompts changed",
                    file.display(),
                    s.train_sha256
                )));
            }
        }
        write_atomic(&file, &bytes)?;
        let summary_path = self.cycle_dir(0).join("seed.json");
        write_atomic(&summary_path, serde_json::to_string_pretty(&summary).unwrap_or_default().as_bytes())?;
        let state = match recorded {
            Some(s) => s,
            None => {
                let n = bytes.iter().filter(|b| **b == b'\n').count() as u64;
                let s = CycleState {
                    cycle: 0,
                    phase: Phase::Selected,
                    train_file: self.rel(&file),
                    train_examples: n,
                    train_sha256: sha,
                    ..CycleState::default()
                };
                log::write(st, &s)?;
                obs.note(&format!("seed corpus: {n} examples -> {}", file.display()));
                s
            }
        };
        Ok(state)
    }

    /// The budget that stops everything (tokens, wall time with the
    /// fine-tunes, the target accuracy) and, before a generation, the
    /// iteration cap and Ctrl-C.
    fn stop_before(&self, st: &Store, states: &[CycleState], generating: bool) -> Result<Option<Ended>, CycleError> {
        if self.stopping() {
            return Ok(Some(Ended::stopped(StopReason::Interrupted)));
        }
        let records = st.iterations()?;
        let search = &self.s.config.search;
        if generating && records.len() as u64 >= search.max_iterations {
            return Ok(Some(Ended::stopped(StopReason::MaxIterations)));
        }
        if let Some(target) = search.target_accuracy {
            if records.iter().filter_map(|r| r.outcome.accuracy()).any(|a| a >= target) {
                return Ok(Some(Ended::stopped(StopReason::TargetAccuracy)));
            }
        }
        if let Some(max) = search.max_tokens {
            if records.iter().map(IterationRecord::tokens).sum::<u64>() >= max {
                return Ok(Some(Ended::stopped(StopReason::TokenBudget)));
            }
        }
        if let Some(max) = search.max_wall_time_s {
            let wall: f64 = records.iter().map(|r| r.wall_seconds).sum::<f64>() + tune_seconds(states);
            if wall >= max {
                return Ok(Some(Ended::stopped(StopReason::WallTime)));
            }
        }
        Ok(None)
    }

    /// The adapter cycle `c`'s generator answers with: the previous cycle's.
    fn adapter_ref(&self, prev: &CycleState) -> Option<AdapterRef> {
        let a = prev.adapter.as_ref()?;
        let run = self.s.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Some(AdapterRef {
            name: format!("{run}-cycle-{}", prev.cycle),
            gguf: a.gguf.clone(),
            peft_dir: a.peft_dir.clone(),
            scale: None,
        })
    }

    /// Generates and evaluates cycle `c`'s candidates; `Some` when the run
    /// stops before they are all committed.
    fn generate(
        &mut self,
        st: &mut Store,
        c: u64,
        prev: &CycleState,
        parents: &[String],
        states: &[CycleState],
        obs: &mut dyn Observer,
    ) -> Result<Option<StopReason>, CycleError> {
        let cy = self.cy().clone();
        let end = c * cy.candidates;
        let mut cfg = self.s.config.search.clone();
        cfg.max_iterations = end.min(cfg.max_iterations);
        cfg.use_improver = false;
        if let Some(w) = cfg.max_wall_time_s {
            let left = w - tune_seconds(states);
            if left <= 0.0 {
                return Ok(Some(StopReason::WallTime));
            }
            cfg.max_wall_time_s = Some(left);
        }
        let replay = match &self.s.replay {
            Some(d) => Some(Store::open(d)?),
            None => None,
        };
        let done = st.iterations()?.iter().filter(|r| r.cycle == c).count() as u64;
        obs.note(&format!(
            "cycle {c}: generating {} candidates ({} done) with {}",
            cy.candidates,
            done,
            match &prev.adapter {
                Some(_) => format!("adapter {}", prev.cycle),
                None => "the base model".into(),
            }
        ));
        let context = CycleContext { cycle: c, adapter: self.adapter_ref(prev), parents: parents.to_vec() };
        let reason = {
            let mut search = Search::new(
                cfg,
                self.s.roles.lend(),
                self.s.dataset.clone(),
                self.prompts(),
                st,
                replay,
                self.s.baseline.clone(),
                self.s.config.run.seed,
                self.s.interrupt.clone(),
            )
            .with_cycle(context);
            search.run(obs.progress())?
        };
        let committed = st.iterations()?.iter().filter(|r| r.cycle == c).count() as u64;
        Ok((committed < cy.candidates).then_some(reason))
    }

    /// Writes cycle `c`'s training set (the previous set and the selected
    /// examples) unless it is recorded and intact.
    fn write_train_set(
        &self,
        st: &Store,
        state: &mut CycleState,
        prev: &CycleState,
        records: &[IterationRecord],
        selected: Vec<u64>,
    ) -> Result<(), CycleError> {
        let dir = self.cycle_dir(state.cycle);
        let file = dir.join(crate::corpus::TRAIN_FILE);
        if state.phase >= Phase::Selected {
            if let Ok(bytes) = std::fs::read(&file) {
                if sha256_hex(&bytes) == state.train_sha256 {
                    return Ok(());
                }
            }
        }
        let prev_path = self.s.run_dir.join(&prev.train_file);
        let mut bytes = std::fs::read(&prev_path).map_err(|e| io_err(&prev_path, e))?;
        if sha256_hex(&bytes) != prev.train_sha256 {
            return Err(CycleError::Inconsistent(format!(
                "{}: the training set of cycle {} was changed after it was recorded",
                prev_path.display(),
                prev.cycle
            )));
        }
        let examples: Vec<TrainingExample> = selected
            .iter()
            .filter_map(|t| records.iter().find(|r| r.iteration == *t))
            .filter_map(select::example)
            .collect();
        let added = jsonl(&examples)?;
        bytes.extend_from_slice(&added);
        let sha = sha256_hex(&bytes);
        if state.phase >= Phase::Selected && sha != state.train_sha256 {
            return Err(CycleError::Inconsistent(format!(
                "{}: the training set made again from the records differs from the one recorded",
                file.display()
            )));
        }
        write_atomic(&dir.join("selected.jsonl"), &added)?;
        write_atomic(&file, &bytes)?;
        if state.phase < Phase::Selected {
            state.selected = selected;
            state.train_file = self.rel(&file);
            state.train_examples = prev.train_examples + examples.len() as u64;
            state.train_sha256 = sha;
            state.phase = Phase::Selected;
            log::write(st, state)?;
        }
        Ok(())
    }

    /// Fine-tunes the cycle's adapter (or takes it as it is: unchanged
    /// training set, replay); `Some` when the run stops first.
    fn tune(
        &mut self,
        st: &mut Store,
        state: &mut CycleState,
        prev: Option<&CycleState>,
        obs: &mut dyn Observer,
    ) -> Result<Option<StopReason>, CycleError> {
        let c = state.cycle;
        let cy = self.cy().clone();
        if let Some(dir) = self.s.replay.clone() {
            let other = Store::open(&dir)?;
            let Some(adapter) = log::read(&other, c)?.and_then(|s| s.adapter) else {
                return Ok(Some(StopReason::ReplayExhausted(format!("cycle {c} has no adapter recorded"))));
            };
            state.adapter = Some(adapter);
            state.adapter_from = Some(format!("replayed from {}", dir.display()));
            state.phase = Phase::Tuned;
            log::write(st, state)?;
            return Ok(None);
        }
        if let Some(p) = prev.filter(|p| cy.train_from == TrainFrom::Base && p.train_sha256 == state.train_sha256) {
            if p.adapter.is_some() {
                obs.note(&format!("cycle {c}: nothing new selected; adapter {} stands", p.cycle));
                state.adapter = p.adapter.clone();
                state.adapter_from = Some(format!("unchanged since cycle {}", p.cycle));
                state.phase = Phase::Tuned;
                log::write(st, state)?;
                return Ok(None);
            }
        }
        let init_adapter = match (cy.train_from, prev) {
            (TrainFrom::Previous, Some(p)) => {
                let a = p
                    .adapter
                    .as_ref()
                    .ok_or_else(|| CycleError::Inconsistent(format!("cycle {}: no adapter", p.cycle)))?;
                Some(a.peft_dir.clone().ok_or_else(|| {
                    CycleError::Setup(
                        "train_from = \"previous\" needs the tuner's PEFT adapter, and it wrote none".into(),
                    )
                })?)
            }
            _ => None,
        };
        let request = TuneRequest {
            job_id: format!("cycle-{c}"),
            base: self.s.base.clone().ok_or_else(|| CycleError::Setup("no base model".into()))?,
            train_set: self.s.run_dir.join(&state.train_file),
            out_dir: self.cycle_dir(c).join("adapter"),
            settings: cy.tune.settings(self.s.config.run.seed),
            init_adapter,
            time_limit_s: None,
        };
        state.phase = Phase::Tuning;
        state.tune_attempts += 1;
        log::write(st, state)?;
        obs.note(&format!(
            "cycle {c}: fine-tuning adapter {c} on {} examples{}",
            state.train_examples,
            if state.tune_attempts > 1 {
                format!(" (attempt {}, from its last checkpoint)", state.tune_attempts)
            } else {
                String::new()
            }
        ));
        let tuner = self.s.tuner.as_mut().ok_or_else(|| CycleError::Setup("no [tuner]".into()))?;
        let t0 = Instant::now();
        let adapter = tuner.tune(&request).map_err(|error| CycleError::Tune { cycle: c, error })?;
        state.tune_seconds += t0.elapsed().as_secs_f64();
        state.adapter = Some(adapter);
        state.phase = Phase::Tuned;
        log::write(st, state)?;
        Ok(None)
    }
}

fn tune_seconds(states: &[CycleState]) -> f64 {
    states.iter().map(|s| s.tune_seconds).sum()
}
