//! The run configuration: a TOML file, parsed strictly.
//!
//! Every key is documented in `docs/config.md`. Unknown keys are rejected;
//! errors name the file, the line and the key. Each plugin's `settings`
//! table is handed to the plugin as it is (the plugin checks it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::PluginRef;
use crate::slurm::SlurmCommands;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{path}:{line}:{column}: {key}{message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `key `x.y`: ` when known.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The values are well-formed but do not make sense together.
    #[error("{path}: {message}")]
    Semantic {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A plugin section: which plugin, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The plugin reference: `builtin:memory.window`, `native:path/lib.so`,
    /// `native:path/lib.so#llm.qwen2.5`, `wasm:path/x.wasm`, or a bare id.
    pub plugin: PluginRef,
    /// The plugin's own settings, handed to it unchanged.
    #[serde(default)]
    pub settings: toml::Table,
    /// `[evaluator]` only: candidates evaluated at once, each in its own
    /// instance of the evaluator (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// `[evaluator]` only: device memory, in MB, that the evaluations in
    /// flight may take together (the GPU's memory less a reserve for the LLM
    /// server); an evaluation is admitted only while the expected peaks fit
    /// (see `search::admission`). Unset: no memory admission control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<u64>,
    /// `[evaluator]` only: the peak, in MB, expected of a candidate before
    /// any has been measured (default: the evaluator's `memory_limit_mb`
    /// setting, else the budget shared evenly between the slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_estimate_mb: Option<u64>,
}

impl PluginSection {
    fn builtin(id: &str) -> Self {
        PluginSection {
            plugin: PluginRef::Builtin(id.to_string()),
            settings: toml::Table::new(),
            slots: None,
            memory_budget_mb: None,
            memory_estimate_mb: None,
        }
    }

    /// The settings as JSON, for the plugin.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.settings).unwrap_or(serde_json::Value::Null)
    }
}

/// `[run]`: naming and placing the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// A name for the run; the run directory is `<output_dir>/<name>-<time>`.
    #[serde(default = "default_run_name")]
    pub name: String,
    /// Where run directories are created (relative to the config file).
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
    /// Seed for everything the host randomises.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_run_name() -> String {
    "run".into()
}
fn default_output_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_seed() -> u64 {
    43
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { name: default_run_name(), output_dir: default_output_dir(), seed: default_seed() }
    }
}

/// How the generator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GenerationMode {
    /// A complete `class Net(nn.Module)` file.
    #[default]
    Full,
    /// A unified diff against a parent architecture.
    Delta,
}

/// One deterministic repair before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// A flatten-size mismatch: the `nn.Linear` whose `in_features` does not
    /// match the measured flattened features gets the measured size, and the
    /// candidate is evaluated again; the record keeps both. Under
    /// `constrained`, a layer that size would break the limits by itself
    /// (further than the budget repair's halvings reach) is left.
    Flatten,
    /// A softmax on the returned value (cross-entropy applies its own) is
    /// taken off before the first evaluation; the record keeps the line.
    Softmax,
    /// A design that names its network anything but `Net` (`class
    /// ResNet(nn.Module)`, nothing else using it) has it renamed `Net`
    /// before the first evaluation; the record keeps each changed line.
    ClassName,
    /// A pooling layer, activation or dropout that `forward` calls and
    /// `__init__` never defines, of a numbered family it does define
    /// (`self.pool3` beside `self.pool1 = nn.MaxPool2d(2)`), before the first
    /// evaluation: a pooling call is taken out, an activation calls its
    /// namesake; the record keeps each changed line.
    MissingLayer,
    /// A convolution or batch norm built for another number of input
    /// channels than it receives (torch names both sizes): the one layer
    /// built for that size (of several, the one the traceback's line of
    /// `forward` calls) gets the received channels, and the candidate is
    /// evaluated again; the record keeps both.
    Channels,
    /// A pooling layer fed a map smaller than its window (`Output size is
    /// too small`, the traceback naming the line in `forward`): that
    /// pooling call and the later ones in `forward` are taken out, and the
    /// candidate is evaluated again; the record keeps each changed line.
    Pooling,
    /// An answer that stops after `__init__` (no `forward`) gets the
    /// `forward` of the design it changes, when its class binds every layer
    /// that `forward` calls; made as the code is taken from the answer (so
    /// the novelty filter sees the whole design, and the generator is not
    /// asked again for it); the record keeps the added lines.
    Forward,
    /// A design the evaluator refuses as over the search's compute budget
    /// (`[search.limits] max_flops`, `max_params`) is made narrower: every
    /// `nn.Conv2d` gets half its channels (the input's kept) and every
    /// `nn.BatchNorm2d` half its features, when a reading of the lines can
    /// halve them all, and the candidate is evaluated again (the head's size
    /// is then the flatten repair's; still over, it is made narrower again);
    /// the record keeps each changed line.
    Budget,
    /// A layer with weights or a training mode that `forward` builds and
    /// calls in one expression (`nn.Dropout(0.3)(x)`: a new module each
    /// call, never trained, never put in eval mode) is bound in `__init__`
    /// and called by name, before the first evaluation, and a functional
    /// dropout with no `training` (`F.dropout(x, p=0.3)`, which drops at
    /// test time too) gets `training=self.training`; the record keeps each
    /// changed line.
    LayerInForward,
    /// A design the generator gives back unchanged on every retry (a
    /// near-duplicate of the best, with fallback changes on): the search
    /// makes one of the common changes itself on the best design, when it
    /// is one a reading of the lines can make exactly (a layer's sizes, a
    /// batch norm or dropout beside a layer `forward` calls), and the
    /// candidate is screened again; the record keeps each changed line and
    /// the change, and the next prompt says it.
    Change,
    /// A `nn.Linear` that `__init__` builds and nothing calls, when the
    /// failed check shows where `forward` skipped it (a batch norm built for
    /// its output fed the flattened maps; rows of another width than the
    /// classes returned, the layer giving the classes): its call is added
    /// there, and the candidate is evaluated again; the record keeps the
    /// added line.
    Uncalled,
    /// A backward pass that fails because `forward` changed in place a
    /// tensor the gradient needs (`out += self.shortcut(x)` on a ReLU's
    /// output): every augmented assignment in a `forward` becomes its
    /// out-of-place form and every `inplace=True` `inplace=False`, and the
    /// candidate is evaluated again; the record keeps each changed line.
    Inplace,
    /// An activation on the logits `forward` returns (`x = self.relu5(x)`
    /// before `return x`, `torch.sigmoid(...)`, an `nn.Sequential` head
    /// closing in `nn.ReLU()`) is taken off before the first evaluation, as
    /// `Softmax` takes a softmax off; the record keeps each changed line.
    Logits,
    /// A batch norm of the other dimensionality than the tensor it receives
    /// (an `nn.BatchNorm2d` called on flattened features, an `nn.BatchNorm1d`
    /// on feature maps): the one the failing line of `forward` calls becomes
    /// the other kind, and the candidate is evaluated again; the record
    /// keeps the changed line.
    NormDim,
    /// A residual block that saves its input (`identity = x`), never reads
    /// it, and calls its shortcut on its own output where the failed check
    /// ends (`x += self.shortcut(x)`): the shortcut takes the saved input,
    /// and the candidate is evaluated again; the record keeps the line.
    Shortcut,
}

/// The repairs a search makes: `"off"` (none, the paper's method), one name,
/// or a list of names (`["flatten", "softmax"]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repairs(pub Vec<Repair>);

impl Repairs {
    /// Whether `r` is on.
    pub fn has(&self, r: Repair) -> bool {
        self.0.contains(&r)
    }
}

impl Serialize for Repairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [] => s.serialize_str("off"),
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl Repair {
    /// Every repair by its name in `[search] repair`, in the order the
    /// messages list them.
    const NAMED: [(&'static str, Repair); 15] = [
        ("flatten", Repair::Flatten),
        ("softmax", Repair::Softmax),
        ("logits", Repair::Logits),
        ("class_name", Repair::ClassName),
        ("missing_layer", Repair::MissingLayer),
        ("layer_in_forward", Repair::LayerInForward),
        ("uncalled", Repair::Uncalled),
        ("inplace", Repair::Inplace),
        ("norm_dim", Repair::NormDim),
        ("shortcut", Repair::Shortcut),
        ("channels", Repair::Channels),
        ("pooling", Repair::Pooling),
        ("budget", Repair::Budget),
        ("forward", Repair::Forward),
        ("change", Repair::Change),
    ];
}

impl<'de> Deserialize<'de> for Repairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let quoted: Vec<String> = Repair::NAMED.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        let names = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom(format!(
                "`repair` must be \"off\", a repair's name or a list of names ({})",
                quoted.join(", ")
            ))
        })? {
            OneOrMany::One(name) if name == "off" => Vec::new(),
            OneOrMany::One(name) => vec![name],
            OneOrMany::Many(names) => names,
        };
        let mut out = Vec::new();
        for name in names {
            let Some(&(_, r)) = Repair::NAMED.iter().find(|(n, _)| *n == name) else {
                let (last, rest) = quoted.split_last().expect("repairs");
                return Err(serde::de::Error::custom(format!(
                    "unknown repair `{name}`: the repairs are {} and {last} (or \"off\" for none)",
                    rest.join(", ")
                )));
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
        Ok(Repairs(out))
    }
}

/// The order in which the search picks the common changes
/// (`[search] fallback_changes`) it gives the generator or makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FallbackOrder {
    /// Of the changes open on the best design, one picked by the seed and
    /// the iteration, the others after it in the list's order.
    #[default]
    Seeded,
    /// The changes not yet tried in the run first (in the seeded order),
    /// then those tried by their improvement per try over the best before
    /// them, then the closest to the best; those whose every try failed
    /// last ([`crate::search::improver::by_gain`]). A change that does not
    /// pay off on this dataset and recipe (a dropout in a one-epoch proxy)
    /// stops being picked for every new best.
    Gain,
}

/// How the generator's prompt is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// The paper's: the best design, the previous attempt's code and result,
    /// the Improver's suggestions.
    #[default]
    Paper,
    /// For small models: after a failure, the best design, the error in one
    /// line and one change to make; the failed code is not shown.
    Compact,
}

/// What the search optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// First-epoch test accuracy alone (the paper's).
    #[default]
    Accuracy,
    /// Accuracy, among candidates within `[search.limits]`; a candidate over
    /// a limit is a `constraint` failure, fed back like any other.
    Constrained,
    /// Accuracy minus the `[search.weights]` costs.
    Weighted,
}

/// `[search.limits]`: the budget a deployed model must fit (`constrained`;
/// the prompts state them under any objective).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most trainable parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_params: Option<u64>,
    /// Most forward FLOPs per example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flops: Option<u64>,
    /// Longest batch-1 inference latency on the evaluation device, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    /// Most peak memory of the trainee, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<f64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_params.is_some()
            || self.max_flops.is_some()
            || self.max_latency_ms.is_some()
            || self.max_memory_mb.is_some()
    }
}

/// `[search.weights]`: the costs the `weighted` objective subtracts from
/// accuracy (a fraction, 0–1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Per million parameters.
    #[serde(default)]
    pub per_million_params: f64,
    /// Per GFLOP per example.
    #[serde(default)]
    pub per_gflop: f64,
    /// Per millisecond of batch-1 latency.
    #[serde(default)]
    pub per_latency_ms: f64,
    /// Per GiB of peak memory.
    #[serde(default)]
    pub per_memory_gb: f64,
}

/// `[search]`: the method's settings, budgets and ablations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// Stop after this many iterations.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Stop after this much wall time.
    #[serde(default)]
    pub max_wall_time_s: Option<f64>,
    /// Stop once a candidate reaches this accuracy (0–1).
    #[serde(default)]
    pub target_accuracy: Option<f64>,
    /// Stop once this many LLM tokens (in + out, both roles) are spent.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `full` (whole files) or `delta` (unified diffs against a parent).
    #[serde(default)]
    pub mode: GenerationMode,
    /// A working architecture to start from: shown as the best so far before
    /// any candidate scored, and the parent of delta mode until one does.
    #[serde(default)]
    pub baseline: Option<PathBuf>,
    /// Whether the Prompt Improver runs (ablation: off).
    #[serde(default = "yes")]
    pub use_improver: bool,
    /// Whether the generator sees the best code so far (ablation: off).
    #[serde(default = "yes")]
    pub use_best_reference: bool,
    /// Whether the Improver sees the memory (ablation: off).
    #[serde(default = "yes")]
    pub use_history: bool,
    /// Jaccard similarity at or above which a candidate is a duplicate.
    #[serde(default = "default_novelty")]
    pub novelty_threshold: f64,
    /// Whether the novelty filter runs.
    #[serde(default = "yes")]
    pub novelty_filter: bool,
    /// Deterministic repairs before training: `"off"` (the paper's method),
    /// `"flatten"`, `"softmax"` or a list of them.
    #[serde(default)]
    pub repair: Repairs,
    /// How many times the Improver is asked again when its answer is not a
    /// diagnosis (it copies the answer format or repeats the previous one);
    /// an answer still not a diagnosis is recorded and opens no memory entry.
    #[serde(default = "one_retry")]
    pub diagnosis_retries: u32,
    /// How many times the generator is asked again, within the same
    /// iteration, when its answer has no code, has no `forward`, or is a
    /// near-duplicate of a design already evaluated (0, the paper's method:
    /// the answer is recorded as it is and the iteration ends). The embedded
    /// defaults ask once more: a small model told to change the best design
    /// often gives it back unchanged, or stops after `__init__`.
    #[serde(default)]
    pub generation_retries: u32,
    /// How many times the generator is asked, within the same iteration,
    /// to fix a design that failed before training (the check's dummy
    /// forward pass, the export, or the compute budget), told the error in
    /// one line with the search's plain-words hint; each fixed design is
    /// checked again (0, the paper's method: the failure is recorded and
    /// the iteration ends). A check costs seconds where an iteration costs
    /// minutes, and the failure stays in the record (`regenerated`) and the
    /// conversation. The embedded defaults ask once.
    #[serde(default)]
    pub fix_retries: u32,
    /// The sampling temperature of a call asked again (the Improver's after
    /// an answer that is not a diagnosis, the generator's after one without
    /// code or repeating a design); unset: the backend's own, as for the
    /// first call. The embedded defaults sample retries at
    /// [`EMBEDDED_RETRY_TEMPERATURE`]: asked again at the same temperature,
    /// a small model gives the refused answer again in other words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_temperature: Option<f32>,
    /// When the Improver's answer is still not a diagnosis after its
    /// retries, give the generator one of a few common changes to the best
    /// design instead (one the design lacks, not yet tried on it), and open
    /// its memory entry (off, the paper's method: the generator gets no
    /// change). The embedded defaults turn it on.
    #[serde(default)]
    pub fallback_changes: bool,
    /// In what order the search picks those changes, and the ones it makes
    /// itself on a design trained before (`seeded` or `gain`). The embedded
    /// defaults use `gain`.
    #[serde(default)]
    pub fallback_order: FallbackOrder,
    /// How the generator's prompt is written (`paper` or `compact`).
    #[serde(default)]
    pub prompt_style: PromptStyle,
    /// Chains of the method run side by side, each with its own memory and
    /// best, sharing the novelty archive (1: the paper's single chain).
    #[serde(default = "one_island")]
    pub islands: u32,
    /// Every this many of its own iterations, an island takes the best
    /// design of the island before it in the ring when it is better (0:
    /// never).
    #[serde(default = "default_migration_interval")]
    pub migration_interval: u64,
    /// Most LLM calls in flight at once (default: one per island); a backend
    /// that serves one call at a time (the embedded model) gets one.
    #[serde(default)]
    pub llm_in_flight: Option<u32>,
    /// What the search optimises: `accuracy` (the paper's), `constrained`
    /// or `weighted`.
    #[serde(default)]
    pub objective: Objective,
    /// `[search.limits]`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: Limits,
    /// `[search.weights]`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub weights: Weights,
    /// Stop once the evaluator's device time (GPU-hours on a GPU) reaches
    /// this.
    #[serde(default)]
    pub max_device_hours: Option<f64>,
    /// The evaluator's memory admission settings, taken from `[evaluator]`
    /// when the config is parsed (not a `[search]` key).
    #[serde(skip)]
    pub evaluator_memory: EvaluatorMemory,
}

/// Memory admission control of the evaluations in flight, from
/// `[evaluator] memory_budget_mb` and `memory_estimate_mb`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvaluatorMemory {
    /// The budget, MB (`None`: no admission control).
    pub budget_mb: Option<u64>,
    /// The peak expected before any is measured, MB (`None`: the budget
    /// shared evenly between the slots).
    pub estimate_mb: Option<u64>,
}

impl EvaluatorMemory {
    /// The settings of an `[evaluator]` section: its keys, else the
    /// evaluator's own `memory_limit_mb` setting as the estimate.
    pub fn of(section: &PluginSection) -> EvaluatorMemory {
        let limit = section.settings.get("memory_limit_mb").and_then(toml::Value::as_integer);
        EvaluatorMemory {
            budget_mb: section.memory_budget_mb,
            estimate_mb: section.memory_estimate_mb.or_else(|| limit.and_then(|l| u64::try_from(l).ok())),
        }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn one_island() -> u32 {
    1
}
fn default_migration_interval() -> u64 {
    10
}

fn one_retry() -> u32 {
    1
}

fn default_max_iterations() -> u64 {
    20
}
fn default_novelty() -> f64 {
    0.90
}

/// The novelty threshold of the embedded defaults. Their compact prompt asks
/// for one change to the best design, and one change to a net of a few dozen
/// lines (a softmax removed, a width doubled, a dropout added) leaves 0.90 to
/// 0.95 of its shingles in common: at the default 0.90 the filter took the
/// very edits the prompt asks for as duplicates of the best (a generator
/// that removed the softmax it was told to remove was not trained). At 0.98
/// a design given back unchanged (1.0) is still a duplicate.
pub const COMPACT_NOVELTY: f64 = 0.98;
fn yes() -> bool {
    true
}

impl Default for SearchSection {
    fn default() -> Self {
        SearchSection {
            max_iterations: default_max_iterations(),
            max_wall_time_s: None,
            target_accuracy: None,
            max_tokens: None,
            mode: GenerationMode::Full,
            baseline: None,
            use_improver: true,
            use_best_reference: true,
            use_history: true,
            novelty_threshold: default_novelty(),
            novelty_filter: true,
            repair: Repairs::default(),
            diagnosis_retries: one_retry(),
            generation_retries: 0,
            fix_retries: 0,
            retry_temperature: None,
            fallback_changes: false,
            fallback_order: FallbackOrder::Seeded,
            prompt_style: PromptStyle::Paper,
            islands: one_island(),
            migration_interval: default_migration_interval(),
            llm_in_flight: None,
            objective: Objective::Accuracy,
            limits: Limits::default(),
            weights: Weights::default(),
            max_device_hours: None,
            evaluator_memory: EvaluatorMemory::default(),
        }
    }
}

/// `[prompts]`: where the prompt templates come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsSection {
    /// A directory of templates replacing the built-in set for the
    /// dataset's family (same file names).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `[plugins]`: extra plugin libraries to load, as `--plugin` does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Paths of `.so` or `.wasm` plugin libraries (relative to the config file).
    #[serde(default)]
    pub load: Vec<PathBuf>,
}

/// Where candidate evaluations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// In this process, through the `[evaluator]` instances (`slots`).
    #[default]
    Local,
    /// Each evaluation a Slurm job that runs the `[evaluator]` on a node
    /// (`docs/slurm.md`).
    Slurm,
}

/// `[executor]`: where candidate evaluations run. Every key but `kind` is
/// for `kind = "slurm"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSection {
    /// `local` (default) or `slurm`.
    #[serde(default)]
    pub kind: ExecutorKind,
    /// Jobs in flight at most (default: `[search] islands`, or `[evaluator]
    /// slots` when larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
    /// `sbatch --partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `sbatch --account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `sbatch --qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Each job's time limit (default: the evaluator's `time_limit_s`, else
    /// 1800 s, plus 300 s for the job's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<f64>,
    /// `sbatch --gres`, e.g. `gpu:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// `sbatch --mem`, in megabytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    /// `sbatch --cpus-per-task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    /// More `sbatch` options, passed last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
    /// Where the jobs' files go, on storage the nodes share (default:
    /// `<run dir>/jobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<PathBuf>,
    /// Attempts per evaluation in one `nas run`/`nas resume` before the run
    /// stops (resumable).
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// Seconds between two looks at the queue (one `squeue` for every job
    /// in flight).
    #[serde(default = "five")]
    pub poll_interval_s: f64,
    /// Seconds before a failed attempt is submitted again.
    #[serde(default = "ten")]
    pub retry_delay_s: f64,
    /// Whether Slurm may requeue a job itself (node failure, preemption)
    /// instead of ending it; either way the evaluation goes on.
    #[serde(default)]
    pub requeue: bool,
    /// The `nas` binary the nodes run (default: this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nas_command: Option<PathBuf>,
    /// `SLURM_CONF` for Slurm's commands (default: theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_conf: Option<PathBuf>,
    /// Whether a probe job checks at start that the nodes read the run
    /// directory and the dataset and can create the evaluator.
    #[serde(default = "yes")]
    pub probe: bool,
    /// How long the probe job may wait in the queue and run.
    #[serde(default = "ten_minutes")]
    pub probe_timeout_s: f64,
    /// How long a job that ended well may take to show its result on the
    /// shared storage.
    #[serde(default = "half_a_minute")]
    pub result_wait_s: f64,
    /// How long Slurm's controller may stay unreachable before the run
    /// stops (resumable; the jobs go on).
    #[serde(default = "ten_minutes")]
    pub controller_timeout_s: f64,
    /// Paths of Slurm's commands (default: their names on `PATH`).
    #[serde(default, skip_serializing_if = "is_default_commands")]
    pub commands: SlurmCommands,
}

fn three() -> u32 {
    3
}
fn five() -> f64 {
    5.0
}
fn ten() -> f64 {
    10.0
}
fn ten_minutes() -> f64 {
    600.0
}
fn half_a_minute() -> f64 {
    30.0
}
fn is_default_commands(c: &SlurmCommands) -> bool {
    c == &SlurmCommands::default()
}

impl ExecutorSection {
    /// Whether evaluations run in this process (the default).
    pub fn is_local(&self) -> bool {
        self.kind == ExecutorKind::Local
    }

    fn is_default(&self) -> bool {
        self == &ExecutorSection::default()
    }
}

/// A whole run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `[run]`.
    #[serde(default)]
    pub run: RunSection,
    /// `[search]`.
    #[serde(default)]
    pub search: SearchSection,
    /// `[dataset]`.
    #[serde(default = "default_dataset")]
    pub dataset: PluginSection,
    /// `[evaluator]`.
    #[serde(default = "default_evaluator")]
    pub evaluator: PluginSection,
    /// `[generator]`: the Code Generator's LLM backend.
    #[serde(default = "default_generator")]
    pub generator: PluginSection,
    /// `[improver]`: the Prompt Improver's LLM backend (default: the
    /// generator's).
    #[serde(default)]
    pub improver: Option<PluginSection>,
    /// `[memory]`.
    #[serde(default = "default_memory")]
    pub memory: PluginSection,
    /// `[tuner]`: the fine-tuner of `nas cycles` (none for `nas run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuner: Option<PluginSection>,
    /// `[cycles]`: the fine-tuning cycles of `nas cycles` (ignored by `nas run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<crate::cycles::config::CyclesSection>,
    /// `[prompts]`.
    #[serde(default)]
    pub prompts: PromptsSection,
    /// `[plugins]`.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// `[executor]`: where evaluations run (default: here).
    #[serde(default, skip_serializing_if = "ExecutorSection::is_default")]
    pub executor: ExecutorSection,
    /// `[fidelity]`: retraining after the search (`nas fidelity`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub fidelity: FidelitySection,
}

/// `[fidelity]`: how far the one-epoch score can be trusted. `nas fidelity`
/// reads these as its defaults; with `enabled`, `nas run` runs it when the
/// search ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FidelitySection {
    /// Run the studies when the search ends.
    #[serde(default)]
    pub enabled: bool,
    /// Epochs of the longer training (the evaluator's `epochs` setting).
    #[serde(default = "default_fidelity_epochs")]
    pub epochs: u32,
    /// The best candidates retrained.
    #[serde(default = "default_fidelity_top")]
    pub top: usize,
    /// Candidates of the rest retrained, one per accuracy stratum.
    #[serde(default = "default_fidelity_sample")]
    pub sample: usize,
    /// Seeds each of the best `seed_top` candidates is retrained under at
    /// one epoch (0: no repeatability study).
    #[serde(default)]
    pub seeds: u32,
    /// The best candidates retrained under `seeds` seeds.
    #[serde(default = "default_seed_top")]
    pub seed_top: usize,
}

fn default_fidelity_epochs() -> u32 {
    5
}
fn default_fidelity_top() -> usize {
    5
}
fn default_fidelity_sample() -> usize {
    10
}
fn default_seed_top() -> usize {
    3
}

impl Default for FidelitySection {
    fn default() -> Self {
        FidelitySection {
            enabled: false,
            epochs: default_fidelity_epochs(),
            top: default_fidelity_top(),
            sample: default_fidelity_sample(),
            seeds: 0,
            seed_top: default_seed_top(),
        }
    }
}

fn default_dataset() -> PluginSection {
    PluginSection::builtin("data.fashion-mnist")
}
fn default_evaluator() -> PluginSection {
    PluginSection::builtin("eval.tch-one-epoch")
}
fn default_generator() -> PluginSection {
    PluginSection::builtin("llm.local")
}
fn default_memory() -> PluginSection {
    PluginSection::builtin("memory.window")
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            run: RunSection::default(),
            search: SearchSection::default(),
            dataset: default_dataset(),
            evaluator: default_evaluator(),
            generator: default_generator(),
            improver: None,
            memory: default_memory(),
            tuner: None,
            cycles: None,
            prompts: PromptsSection::default(),
            plugins: PluginsSection::default(),
            executor: ExecutorSection::default(),
            fidelity: FidelitySection::default(),
        }
    }
}

/// The embedded defaults' FLOP budget per example: 200 MFLOPs. The
/// hand-written one-epoch references on Fashion-MNIST (VGG-style, 90.5 to
/// 90.7 %) cost 38 to 149 MFLOPs; at 200 an epoch on two CPU cores stays
/// within minutes (a 1.1-GFLOP design took 28), and on a GPU within seconds.
pub const EMBEDDED_MAX_FLOPS: u64 = 200_000_000;

/// The temperature of the embedded defaults' retries (first calls sample at
/// the backend's 0.7). In a 19-iteration embedded run at 0.7 the Improver,
/// asked again after a refused answer, gave the same change reworded 12
/// times of 12.
pub const EMBEDDED_RETRY_TEMPERATURE: f32 = 1.0;

impl RunConfig {
    /// The embedded defaults of `nas run` without a config file: the
    /// defaults of every key, with the settings that make a small local model
    /// productive (`[search] repair = ["flatten", "softmax", "logits", "class_name",
    /// "missing_layer", "layer_in_forward", "uncalled", "inplace", "norm_dim", "shortcut", "channels", "pooling", "budget", "forward", "change"]`,
    /// `prompt_style = "compact"`,
    /// `novelty_threshold` [`COMPACT_NOVELTY`], `generation_retries = 2`,
    /// `fix_retries = 1`,
    /// `retry_temperature` [`EMBEDDED_RETRY_TEMPERATURE`],
    /// `fallback_changes = true`, `fallback_order = "gain"`),
    /// and a compute budget checked before training (`objective =
    /// "constrained"`, `[search.limits] max_flops` [`EMBEDDED_MAX_FLOPS`]).
    /// `docs/config.md` lists them.
    pub fn embedded() -> RunConfig {
        let mut c = RunConfig::default();
        c.search.objective = Objective::Constrained;
        c.search.limits.max_flops = Some(EMBEDDED_MAX_FLOPS);
        c.search.repair = Repairs(vec![
            Repair::Flatten,
            Repair::Softmax,
            Repair::Logits,
            Repair::ClassName,
            Repair::MissingLayer,
            Repair::LayerInForward,
            Repair::Uncalled,
            Repair::Inplace,
            Repair::NormDim,
            Repair::Shortcut,
            Repair::Channels,
            Repair::Pooling,
            Repair::Budget,
            Repair::Forward,
            Repair::Change,
        ]);
        c.search.prompt_style = PromptStyle::Compact;
        c.search.novelty_threshold = COMPACT_NOVELTY;
        c.search.generation_retries = 2;
        c.search.fix_retries = 1;
        c.search.retry_temperature = Some(EMBEDDED_RETRY_TEMPERATURE);
        c.search.fallback_changes = true;
        c.search.fallback_order = FallbackOrder::Gain;
        c
    }

    /// Every plugin section that is present, with its name.
    pub fn plugin_sections(&self) -> Vec<(&'static str, &PluginSection)> {
        let mut v = vec![
            ("memory", &self.memory),
            ("dataset", &self.dataset),
            ("evaluator", &self.evaluator),
            ("generator", &self.generator),
        ];
        v.extend(self.improver.as_ref().map(|s| ("improver", s)));
        v.extend(self.tuner.as_ref().map(|s| ("tuner", s)));
        v
    }

    /// Every plugin section that is present, mutably.
    pub fn plugin_sections_mut(&mut self) -> Vec<&mut PluginSection> {
        let mut v = vec![&mut self.memory, &mut self.dataset, &mut self.evaluator, &mut self.generator];
        v.extend(self.improver.as_mut());
        v.extend(self.tuner.as_mut());
        v
    }
}

/// A parsed config with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: RunConfig,
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
}

impl LoadedConfig {
    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    /// The Prompt Improver's section (the generator's when not given).
    pub fn improver(&self) -> &PluginSection {
        self.config.improver.as_ref().unwrap_or(&self.config.generator)
    }
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let config = parse(&text, path)?;
    let dir = path.parent().map(Path::to_path_buf).filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    Ok(LoadedConfig { config, path: path.to_path_buf(), dir })
}

/// Parses config text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<RunConfig, ConfigError> {
    let mut config: RunConfig = parse_as(text, path)?;
    check(&config).map_err(|message| ConfigError::Semantic { path: path.to_path_buf(), message })?;
    config.search.evaluator_memory = EvaluatorMemory::of(&config.evaluator);
    Ok(config)
}

/// Parses TOML text into any strict type, with errors naming the file, line,
/// column and key path; `path` is only used in messages.
pub fn parse_as<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key_path = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        let key = if key_path.is_empty() || key_path == "." { String::new() } else { format!("key `{key_path}`: ") };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message: inner.message().trim().to_string(),
        }
    })
}

/// The most calls asked again of the generator in one iteration
/// (`generation_retries` and `fix_retries` together): each call of an
/// iteration samples with its own seed, 16 to an iteration.
pub const MAX_ASKED_AGAIN: u32 = 8;

fn check(c: &RunConfig) -> Result<(), String> {
    let s = &c.search;
    if s.max_iterations == 0 {
        return Err("[search] max_iterations must be at least 1".into());
    }
    if let Some(t) = s.target_accuracy {
        if !(0.0..=1.0).contains(&t) {
            return Err(format!("[search] target_accuracy is {t}; it is a fraction between 0 and 1"));
        }
    }
    if s.generation_retries.saturating_add(s.fix_retries) > MAX_ASKED_AGAIN {
        return Err(format!(
            "[search] generation_retries ({}) and fix_retries ({}) ask the generator again {} times an iteration; at most {MAX_ASKED_AGAIN}",
            s.generation_retries,
            s.fix_retries,
            s.generation_retries.saturating_add(s.fix_retries)
        ));
    }
    if let Some(t) = s.retry_temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(format!("[search] retry_temperature is {t}; it must be between 0 and 2"));
    }
    if !(0.0..=1.0).contains(&s.novelty_threshold) || s.novelty_threshold == 0.0 {
        return Err(format!("[search] novelty_threshold is {}; it must be in (0, 1]", s.novelty_threshold));
    }
    if s.objective == Objective::Constrained && !s.limits.any() {
        return Err("[search] objective = \"constrained\" needs at least one limit in [search.limits]".into());
    }
    let w = &s.weights;
    if s.objective == Objective::Weighted && w == &Weights::default() {
        return Err("[search] objective = \"weighted\" needs at least one weight in [search.weights]".into());
    }
    if [w.per_million_params, w.per_gflop, w.per_latency_ms, w.per_memory_gb].iter().any(|x| !x.is_finite() || *x < 0.0)
    {
        return Err("[search.weights] must be finite and not negative".into());
    }
    if let Some(h) = s.max_device_hours {
        if !(h.is_finite() && h > 0.0) {
            return Err("[search] max_device_hours must be positive".into());
        }
    }
    if s.islands == 0 {
        return Err("[search] islands must be at least 1".into());
    }
    if s.islands > 256 {
        return Err(format!("[search] islands is {}; at most 256 chains run side by side", s.islands));
    }
    if s.llm_in_flight == Some(0) {
        return Err("[search] llm_in_flight must be at least 1".into());
    }
    for (name, section) in c.plugin_sections() {
        if let Some(slots) = section.slots {
            if name != "evaluator" {
                return Err(format!("[{name}] slots: only the evaluator has slots"));
            }
            if slots == 0 || slots > 64 {
                return Err(format!("[evaluator] slots is {slots}; it must be between 1 and 64"));
            }
        }
        for (key, value) in
            [("memory_budget_mb", section.memory_budget_mb), ("memory_estimate_mb", section.memory_estimate_mb)]
        {
            match value {
                Some(_) if name != "evaluator" => return Err(format!("[{name}] {key}: only the evaluator has it")),
                Some(0) => return Err(format!("[evaluator] {key} must be at least 1")),
                _ => {}
            }
        }
    }
    if let Some(w) = s.max_wall_time_s {
        if !(w.is_finite() && w > 0.0) {
            return Err("[search] max_wall_time_s must be positive".into());
        }
    }
    if let Some(cycles) = &c.cycles {
        cycles.check()?;
    }
    let f = &c.fidelity;
    if f.epochs == 0 {
        return Err("[fidelity] epochs must be at least 1".into());
    }
    if f.enabled && f.top + f.sample == 0 && f.seeds == 0 {
        return Err("[fidelity] retrains nothing: set top, sample or seeds".into());
    }
    if f.seeds > 0 && f.seed_top == 0 {
        return Err("[fidelity] seed_top must be at least 1 when seeds is set".into());
    }
    check_executor(&c.executor)
}

fn check_executor(e: &ExecutorSection) -> Result<(), String> {
    if e.is_local() {
        let local = ExecutorSection { kind: ExecutorKind::Local, ..ExecutorSection::default() };
        if e != &local {
            return Err(
                "[executor]: only `kind` applies to local evaluation; the other keys are for kind = \"slurm\"".into()
            );
        }
        return Ok(());
    }
    if e.jobs == Some(0) || e.jobs.is_some_and(|j| j > 4096) {
        return Err(format!("[executor] jobs is {}; it must be between 1 and 4096", e.jobs.unwrap_or(0)));
    }
    if e.max_attempts == 0 {
        return Err("[executor] max_attempts must be at least 1".into());
    }
    let positive = [
        ("time_limit_s", e.time_limit_s.unwrap_or(1.0)),
        ("poll_interval_s", e.poll_interval_s),
        ("probe_timeout_s", e.probe_timeout_s),
        ("controller_timeout_s", e.controller_timeout_s),
    ];
    for (key, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("[executor] {key} is {value}; it must be a positive number of seconds"));
        }
    }
    for (key, value) in [("retry_delay_s", e.retry_delay_s), ("result_wait_s", e.result_wait_s)] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("[executor] {key} is {value}; it must be a number of seconds, 0 or more"));
        }
    }
    if e.mem_mb == Some(0) || e.cpus_per_task == Some(0) {
        return Err("[executor] mem_mb and cpus_per_task must be at least 1 when given".into());
    }
    for (key, value) in [("partition", &e.partition), ("account", &e.account), ("qos", &e.qos), ("gres", &e.gres)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty() || v.contains(char::is_whitespace)) {
            return Err(format!("[executor] {key} {value:?}: a Slurm name has no spaces"));
        }
    }
    Ok(())
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("run.toml")).expect_err("should fail").to_string()
    }

    /// The design of an embedded run's first iteration, and the edit its
    /// generator made next (the softmax removed, as the feedback said).
    const FIRST: &str = "import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super(Net, self).__init__()\n        C, H, W = in_shape\n        self.conv1 = nn.Conv2d(C, 32, kernel_size=3, padding=1)\n        self.bn1 = nn.BatchNorm2d(32)\n        self.relu1 = nn.ReLU()\n        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)\n        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)\n        self.bn2 = nn.BatchNorm2d(64)\n        self.relu2 = nn.ReLU()\n        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)\n        self.fc1 = nn.Linear(64 * 7 * 7, 128)\n        self.relu3 = nn.ReLU()\n        self.fc2 = nn.Linear(128, num_classes)\n        self.softmax = nn.Softmax(dim=1)\n\n    def forward(self, x):\n        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))\n        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))\n        x = x.view(x.size(0), -1)\n        x = self.relu3(self.fc1(x))\n        x = self.fc2(x)\n        x = self.softmax(x)\n        return x\n";

    #[test]
    fn the_embedded_defaults_train_one_change_to_the_best_design_and_not_the_same_design_again() {
        use crate::search::novelty::Archive;
        let c = RunConfig::embedded();
        assert!((c.search.novelty_threshold - COMPACT_NOVELTY).abs() < 1e-12);
        let mut archive = Archive::default();
        archive.add(1, crate::search::novelty::signature(FIRST));
        let edits = [
            FIRST
                .replace("        self.softmax = nn.Softmax(dim=1)\n", "")
                .replace("        x = self.softmax(x)\n", ""),
            FIRST
                .replace("nn.Conv2d(32, 64", "nn.Conv2d(32, 128")
                .replace("BatchNorm2d(64)", "BatchNorm2d(128)")
                .replace("64 * 7", "128 * 7"),
            FIRST.replace("kernel_size=3, padding=1", "kernel_size=5, padding=2"),
        ];
        for edit in &edits {
            let sig = crate::search::novelty::signature(edit);
            assert!(archive.twin(&sig, c.search.novelty_threshold).is_none(), "one change is trained:\n{edit}");
        }
        // The same design again, laid out differently, is a duplicate.
        let again = FIRST.replace("    ", "  ") + "\n# unchanged\n";
        let sig = crate::search::novelty::signature(&again);
        assert!(archive.twin(&sig, c.search.novelty_threshold).is_some(), "the same design again is a duplicate");
    }

    #[test]
    fn an_empty_config_takes_the_embedded_defaults() {
        let c = parse("", Path::new("x.toml")).expect("parses");
        assert_eq!(c.memory.plugin, PluginRef::Builtin("memory.window".into()));
        assert_eq!(c.search.max_iterations, 20);
        assert!((c.search.novelty_threshold - 0.9).abs() < 1e-12);
        assert_eq!(c.search.generation_retries, 0, "the paper's method records a duplicate and moves on");
        assert_eq!(RunConfig::embedded().search.generation_retries, 2);
        assert_eq!(c.search.fix_retries, 0, "the paper's method records a failed check and moves on");
        assert_eq!(RunConfig::embedded().search.fix_retries, 1);
        // A retry samples as the first call did, except in the embedded defaults.
        assert_eq!(c.search.retry_temperature, None);
        assert_eq!(RunConfig::embedded().search.retry_temperature, Some(EMBEDDED_RETRY_TEMPERATURE));
        assert!(!c.search.fallback_changes && RunConfig::embedded().search.fallback_changes);
        assert_eq!(
            (c.search.fallback_order, RunConfig::embedded().search.fallback_order),
            (FallbackOrder::Seeded, FallbackOrder::Gain)
        );
        let gain = parse("[search]\nfallback_order = \"gain\"\n", Path::new("x")).expect("parses");
        assert_eq!(gain.search.fallback_order, FallbackOrder::Gain);
        // The paper's objective has no budget; the embedded defaults check
        // one before training, and a run directory's config keeps it.
        assert_eq!((c.search.objective, c.search.limits), (Objective::Accuracy, Limits::default()));
        let e = RunConfig::embedded();
        assert_eq!((e.search.objective, e.search.limits.max_flops), (Objective::Constrained, Some(EMBEDDED_MAX_FLOPS)));
        let back = parse(&toml::to_string(&e).expect("serialize"), Path::new("x")).expect("reads back");
        assert_eq!((back.search.objective, back.search.limits), (e.search.objective, e.search.limits));
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let msg = err("[search]\nmax_iterations = 3\nmax_iteration = 4\n");
        assert!(msg.starts_with("run.toml:3:"), "{msg}");
        assert!(msg.contains("max_iteration"), "{msg}");
    }

    #[test]
    fn type_errors_name_file_line_and_key_path() {
        let msg = err("[run]\nname = \"x\"\n\n[search]\nmax_iterations = \"many\"\n");
        assert!(msg.starts_with("run.toml:5:"), "{msg}");
        assert!(msg.contains("search.max_iterations"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn repairs_are_off_one_name_or_a_list_and_an_unknown_one_is_named() {
        let repairs = |v: &str| parse(&format!("[search]\nrepair = {v}\n"), Path::new("x")).map(|c| c.search.repair);
        assert_eq!(repairs("\"off\"").expect("off"), Repairs::default());
        assert_eq!(repairs("\"flatten\"").expect("one"), Repairs(vec![Repair::Flatten]));
        assert_eq!(
            repairs("[\"softmax\", \"flatten\", \"softmax\"]").expect("a list"),
            Repairs(vec![Repair::Softmax, Repair::Flatten])
        );
        assert_eq!(
            RunConfig::embedded().search.repair,
            Repairs(vec![
                Repair::Flatten,
                Repair::Softmax,
                Repair::Logits,
                Repair::ClassName,
                Repair::MissingLayer,
                Repair::LayerInForward,
                Repair::Uncalled,
                Repair::Inplace,
                Repair::NormDim,
                Repair::Shortcut,
                Repair::Channels,
                Repair::Pooling,
                Repair::Budget,
                Repair::Forward,
                Repair::Change
            ])
        );
        let msg = err("[search]\nrepair = [\"flatten\", \"dropout\"]\n");
        assert!(msg.starts_with("run.toml:2:") && msg.contains("unknown repair `dropout`"), "{msg}");
        assert!(
            msg.contains(
                "the repairs are \"flatten\", \"softmax\", \"logits\", \"class_name\", \"missing_layer\", \"layer_in_forward\", \"uncalled\", \"inplace\", \"norm_dim\", \"shortcut\", \"channels\", \"pooling\", \"budget\", \"forward\" and \"change\" (or \"off\" for none)"
            ),
            "{msg}"
        );
        let msg = err("[search]\nrepair = 3\n");
        assert!(msg.starts_with("run.toml:2:") && msg.contains("a list of names"), "{msg}");
        assert!(
            msg.contains(
                "a list of names (\"flatten\", \"softmax\", \"logits\", \"class_name\", \"missing_layer\", \"layer_in_forward\", \"uncalled\", \"inplace\", \"norm_dim\", \"shortcut\", \"channels\", \"pooling\", \"budget\", \"forward\", \"change\")"
            ),
            "{msg}"
        );
        // Written back (a run directory's config.toml), the list reads the same.
        let text = toml::to_string(&RunConfig::embedded()).expect("serialize");
        assert!(
            text.contains(
                "repair = [\"flatten\", \"softmax\", \"logits\", \"class_name\", \"missing_layer\", \"layer_in_forward\", \"uncalled\", \"inplace\", \"norm_dim\", \"shortcut\", \"channels\", \"pooling\", \"budget\", \"forward\", \"change\"]"
            ),
            "{text}"
        );
        assert_eq!(
            parse(&text, Path::new("x")).expect("reads back").search.repair,
            RunConfig::embedded().search.repair
        );
    }

    #[test]
    fn plugin_settings_are_opaque_tables() {
        let c = parse(
            "[memory]\nplugin = \"builtin:memory.window\"\n[memory.settings]\nk = 7\nanything = [1, 2]\n",
            Path::new("x"),
        )
        .expect("parses");
        assert_eq!(c.memory.settings_json(), serde_json::json!({"k": 7, "anything": [1, 2]}));
    }

    #[test]
    fn bad_plugin_references_are_rejected_with_the_line() {
        let msg = err("[memory]\nplugin = \"ftp:thing\"\n");
        assert!(msg.starts_with("run.toml:2:"), "{msg}");
        assert!(msg.contains("ftp"), "{msg}");
    }

    #[test]
    fn the_executor_is_local_unless_slurm_is_named_and_its_keys_are_checked() {
        let c = parse("", Path::new("x")).expect("parses");
        assert!(c.executor.is_local());
        let written = toml::to_string(&c).expect("serializes");
        assert!(!written.contains("executor"), "a local run's frozen config has no [executor]: {written}");
        let c = parse(
            "[executor]\nkind = \"slurm\"\npartition = \"gpu\"\ngres = \"gpu:1\"\nmem_mb = 16000\n\
             sbatch_args = [\"--constraint=a100\"]\n[executor.commands]\nsbatch = \"/opt/slurm/bin/sbatch\"\n",
            Path::new("x"),
        )
        .expect("parses");
        assert_eq!(c.executor.kind, ExecutorKind::Slurm);
        assert_eq!((c.executor.max_attempts, c.executor.poll_interval_s), (3, 5.0));
        assert_eq!(c.executor.commands.sbatch, PathBuf::from("/opt/slurm/bin/sbatch"));
        assert_eq!(c.executor.commands.squeue, PathBuf::from("squeue"));
        let again = parse(&toml::to_string(&c).expect("serializes"), Path::new("x")).expect("reparses");
        assert_eq!(again.executor, c.executor);
        assert!(err("[executor]\nkind = \"lsf\"\n").contains("executor.kind"));
        assert!(err("[executor]\npartition = \"gpu\"\n").contains("kind = \"slurm\""));
        assert!(err("[executor]\nkind = \"slurm\"\nmax_attempts = 0\n").contains("max_attempts"));
        assert!(err("[executor]\nkind = \"slurm\"\npoll_interval_s = 0\n").contains("poll_interval_s"));
        assert!(err("[executor]\nkind = \"slurm\"\npartition = \"a b\"\n").contains("partition"));
        assert!(err("[executor]\nkind = \"slurm\"\nsbatch = \"x\"\n").contains("sbatch"));
    }

    #[test]
    fn nonsense_values_are_rejected() {
        assert!(err("[search]\ntarget_accuracy = 93.0\n").contains("fraction"));
        assert!(err("[search]\nmax_iterations = 0\n").contains("at least 1"));
        let e = err("[search]\ngeneration_retries = 4\nfix_retries = 5\n");
        assert!(e.contains("fix_retries (5)") && e.contains("at most 8"), "{e}");
        let e = err("[search]\nretry_temperature = 3.5\n");
        assert!(e.contains("retry_temperature is 3.5") && e.contains("between 0 and 2"), "{e}");
        let c = parse("[search]\nretry_temperature = 1.2\n", Path::new("x.toml")).expect("parses");
        assert_eq!(c.search.retry_temperature, Some(1.2));
    }
}
