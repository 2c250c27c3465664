//! Comparing configurations: the compare file and the plan of runs it
//! makes. The statistics over seeds are in [`crate::report::comparison`].
//!
//! A compare file names a base run config and the arms to compare, each a
//! change to that base in what is being compared only (memory strategy and
//! its settings, LLM backends, ablation switches, prompts):
//!
//! ```toml
//! [compare]
//! base = "run.toml"        # default: the embedded defaults
//! seeds = [1, 2, 3]
//! jobs = 1                 # runs side by side
//!
//! [[arm]]
//! name = "none"
//! memory = { plugin = "memory.none" }
//!
//! [[arm]]
//! name = "no-improver"
//! search = { use_improver = false }
//! ```
//!
//! Every arm runs every seed under the same budget, each a normal run in
//! `<output_dir>/<arm>/seed-<seed>`. The K=5 window is the baseline each
//! arm is compared against; it is added when no arm is it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, LoadedConfig, PluginSection, PromptsSection, RunConfig};
use crate::registry::PluginRef;

/// The name of the baseline arm added when no arm is the K=5 window.
pub const BASELINE_ARM: &str = "window-k5";

/// `[search]` keys that set the budget: the same for every arm.
const BUDGET_KEYS: [&str; 4] = ["max_iterations", "max_wall_time_s", "max_tokens", "target_accuracy"];

/// A compare file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The compare file's syntax or keys.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The values do not make a comparison.
    #[error("{path}: {message}")]
    Invalid {
        /// The compare file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// `[compare]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSection {
    /// The comparison's name (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// The base run config (default: the embedded defaults).
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// Seeds each arm runs with.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Runs side by side.
    #[serde(default = "one")]
    pub jobs: usize,
    /// Where the runs and the report go (default: `runs/compare-<name>`
    /// next to the compare file).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// The arm the others are compared against (default: the K=5 window).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Iterations at which the best so far is tabulated (default: a
    /// quarter, half and all of `max_iterations`).
    #[serde(default)]
    pub checkpoints: Option<Vec<u64>>,
    /// Budget for every arm: overrides the base's `[search] max_iterations`.
    #[serde(default)]
    pub max_iterations: Option<u64>,
    /// Budget for every arm: overrides the base's `[search] max_wall_time_s`.
    #[serde(default)]
    pub max_wall_time_s: Option<f64>,
    /// Budget for every arm: overrides the base's `[search] max_tokens`.
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

impl Default for CompareSection {
    fn default() -> Self {
        CompareSection {
            name: None,
            base: None,
            seeds: default_seeds(),
            jobs: one(),
            output_dir: None,
            baseline: None,
            checkpoints: None,
            max_iterations: None,
            max_wall_time_s: None,
            max_tokens: None,
        }
    }
}

fn default_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}
fn one() -> usize {
    1
}

/// `[[arm]]`: one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    /// Its name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Replaces the base's `[memory]`.
    #[serde(default)]
    pub memory: Option<PluginSection>,
    /// Replaces the base's `[generator]`.
    #[serde(default)]
    pub generator: Option<PluginSection>,
    /// Replaces the base's `[improver]`.
    #[serde(default)]
    pub improver: Option<PluginSection>,
    /// Changes keys of the base's `[search]` (not its budget).
    #[serde(default)]
    pub search: Option<toml::Table>,
    /// Replaces the base's `[prompts]`.
    #[serde(default)]
    pub prompts: Option<PromptsSection>,
    /// Changes keys of the base's `[cycles]` (a fine-tuning cycles arm,
    /// run with `nas cycles`); `cycles` and `candidates` are the budget,
    /// the same for every arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<toml::Table>,
}

impl ArmSpec {
    fn is_plain(&self) -> bool {
        self.generator.is_none()
            && self.improver.is_none()
            && self.search.is_none()
            && self.prompts.is_none()
            && self.cycles.is_none()
    }
}

/// A compare file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareFile {
    /// `[compare]`.
    #[serde(default)]
    pub compare: CompareSection,
    /// `[[arm]]`.
    #[serde(default)]
    pub arm: Vec<ArmSpec>,
}

/// One run of the plan.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Its arm.
    pub arm: String,
    /// Its seed.
    pub seed: u64,
    /// The whole config it runs with (paths absolute).
    pub config: RunConfig,
    /// Its run directory.
    pub dir: PathBuf,
}

/// What a compare file asks for, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The compare file.
    pub path: PathBuf,
    /// The comparison's name.
    pub name: String,
    /// Where runs and the report go.
    pub output_dir: PathBuf,
    /// Runs side by side.
    pub jobs: usize,
    /// The arms, in order (the baseline first when it was added).
    pub arms: Vec<String>,
    /// The baseline arm.
    pub baseline: String,
    /// Whether the baseline was added (no arm was the K=5 window).
    pub baseline_added: bool,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Best-so-far checkpoints.
    pub checkpoints: Vec<u64>,
    /// The iteration budget of every run.
    pub max_iterations: u64,
    /// Every run: arms in order, seeds in order.
    pub runs: Vec<PlannedRun>,
}

fn invalid(path: &Path, message: impl Into<String>) -> CompareError {
    CompareError::Invalid { path: path.to_path_buf(), message: message.into() }
}

fn plugin_id(r: &PluginRef) -> Option<&str> {
    match r {
        PluginRef::Builtin(id) | PluginRef::Id(id) => Some(id),
        PluginRef::Native { id, .. } | PluginRef::Wasm { id, .. } => id.as_deref(),
    }
}

/// Whether a memory section is the paper's baseline: the window with K=5.
pub fn is_k5_window(memory: &PluginSection) -> bool {
    let k_is_5 = match memory.settings.get("k") {
        None => true,
        Some(v) => v.as_integer() == Some(5),
    };
    plugin_id(&memory.plugin) == Some("memory.window") && k_is_5 && memory.settings.keys().all(|k| k == "k")
}

/// The default checkpoints for a budget: a quarter, half and all of it.
pub fn default_checkpoints(max_iterations: u64) -> Vec<u64> {
    let set: BTreeSet<u64> =
        [max_iterations / 4, max_iterations / 2, max_iterations].into_iter().filter(|&n| n >= 1).collect();
    set.into_iter().collect()
}

/// Reads a compare file and makes its plan.
pub fn plan(path: &Path) -> Result<Plan, CompareError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let file: CompareFile = config::parse_as(&text, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let c = &file.compare;

    let name = c.name.clone().unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "compare".into())
    });
    check_name(path, "[compare] name", &name)?;
    if c.seeds.is_empty() {
        return Err(invalid(path, "[compare] seeds is empty; give at least one seed"));
    }
    if c.seeds.iter().collect::<BTreeSet<_>>().len() != c.seeds.len() {
        return Err(invalid(path, "[compare] seeds repeats a seed"));
    }
    if c.jobs == 0 {
        return Err(invalid(path, "[compare] jobs must be at least 1"));
    }

    let base: LoadedConfig = match &c.base {
        Some(p) => config::load(&dir.join(p))?,
        None => LoadedConfig { config: RunConfig::embedded(), path: PathBuf::from("(defaults)"), dir: dir.clone() },
    };
    let mut base_config = crate::session::frozen(&base);
    crate::cycles::settle_budget(&base.path, &mut base_config);
    if let Some(n) = c.max_iterations {
        base_config.search.max_iterations = n;
    }
    if c.max_wall_time_s.is_some() {
        base_config.search.max_wall_time_s = c.max_wall_time_s;
    }
    if c.max_tokens.is_some() {
        base_config.search.max_tokens = c.max_tokens;
    }

    let mut arms = file.arm.clone();
    let mut seen = BTreeSet::new();
    for arm in &arms {
        check_name(path, "[[arm]] name", &arm.name)?;
        if !seen.insert(arm.name.clone()) {
            return Err(invalid(path, format!("two arms are named `{}`", arm.name)));
        }
        if let Some(key) =
            arm.cycles.as_ref().and_then(|t| t.keys().find(|k| matches!(k.as_str(), "cycles" | "candidates")))
        {
            return Err(invalid(
                path,
                format!(
                    "arm `{}`: [cycles] {key} is part of the budget, which is the same for every arm; set it in the base config",
                    arm.name
                ),
            ));
        }
        if let Some(search) = &arm.search {
            if let Some(key) = search.keys().find(|k| BUDGET_KEYS.contains(&k.as_str())) {
                return Err(invalid(
                    path,
                    format!(
                        "arm `{}`: [search] {key} is part of the budget, which is the same for every arm; set it in \
                         [compare] or in the base config",
                        arm.name
                    ),
                ));
            }
        }
    }
    let effective_memory = |a: &ArmSpec| a.memory.clone().unwrap_or_else(|| base_config.memory.clone());
    let (baseline, baseline_added) = match &c.baseline {
        Some(b) if arms.iter().any(|a| &a.name == b) => (b.clone(), false),
        Some(b) if b == BASELINE_ARM => (b.clone(), true),
        Some(b) => {
            return Err(invalid(
                path,
                format!("[compare] baseline `{b}` is not an arm (arms: {})", names(&arms).join(", ")),
            ))
        }
        None => match arms.iter().find(|a| a.is_plain() && is_k5_window(&effective_memory(a))) {
            Some(a) => (a.name.clone(), false),
            None => (BASELINE_ARM.to_string(), true),
        },
    };
    if baseline_added {
        if arms.iter().any(|a| a.name == BASELINE_ARM) {
            return Err(invalid(
                path,
                format!("an arm is named `{BASELINE_ARM}` but is not the K=5 window; rename it or name it as [compare] baseline"),
            ));
        }
        let memory = PluginSection {
            plugin: PluginRef::Id("memory.window".into()),
            settings: toml::Table::from_iter([("k".to_string(), toml::Value::Integer(5))]),
            slots: None,
            memory_budget_mb: None,
            memory_estimate_mb: None,
        };
        arms.insert(0, ArmSpec { name: BASELINE_ARM.into(), memory: Some(memory), ..plain_arm() });
    }
    if arms.len() < 2 {
        return Err(invalid(path, "a comparison needs at least one [[arm]] besides the baseline"));
    }

    let output_dir = lexically_normal(&match &c.output_dir {
        Some(p) => dir.join(p),
        None => dir.join("runs").join(format!("compare-{name}")),
    });
    let max_iterations = base_config.search.max_iterations;
    let checkpoints = match &c.checkpoints {
        Some(list) => {
            if let Some(bad) = list.iter().find(|&&n| n == 0 || n > max_iterations) {
                return Err(invalid(
                    path,
                    format!("[compare] checkpoints: {bad} is not an iteration of a {max_iterations}-iteration run"),
                ));
            }
            list.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()
        }
        None => default_checkpoints(max_iterations),
    };

    let mut runs = Vec::new();
    for arm in &arms {
        let config = arm_config(path, &dir, &base_config, arm)?;
        for &seed in &c.seeds {
            let mut config = config.clone();
            config.run.seed = seed;
            config.run.name = arm.name.clone();
            config.run.output_dir = output_dir.join(&arm.name);
            let dir = output_dir.join(&arm.name).join(format!("seed-{seed}"));
            runs.push(PlannedRun { arm: arm.name.clone(), seed, config, dir });
        }
    }
    Ok(Plan {
        path: path.to_path_buf(),
        name,
        output_dir,
        jobs: c.jobs,
        arms: names(&arms),
        baseline,
        baseline_added,
        seeds: c.seeds.clone(),
        checkpoints,
        max_iterations,
        runs,
    })
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn lexically_normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn plain_arm() -> ArmSpec {
    ArmSpec {
        name: String::new(),
        memory: None,
        generator: None,
        improver: None,
        search: None,
        prompts: None,
        cycles: None,
    }
}

fn names(arms: &[ArmSpec]) -> Vec<String> {
    arms.iter().map(|a| a.name.clone()).collect()
}

fn check_name(path: &Path, what: &str, name: &str) -> Result<(), CompareError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(path, format!("{what} `{name}` must be letters, digits, `.`, `_` and `-` (it names a directory)")))
    }
}

/// The base config changed as the arm says; checked as a run config.
fn arm_config(path: &Path, dir: &Path, base: &RunConfig, arm: &ArmSpec) -> Result<RunConfig, CompareError> {
    let mut c = base.clone();
    let fix = |s: &PluginSection| PluginSection { plugin: s.plugin.resolved(dir), ..s.clone() };
    if let Some(m) = &arm.memory {
        c.memory = fix(m);
    }
    if let Some(g) = &arm.generator {
        c.generator = fix(g);
    }
    if let Some(i) = &arm.improver {
        c.improver = Some(fix(i));
    }
    if let Some(p) = &arm.prompts {
        c.prompts = PromptsSection { dir: p.dir.as_ref().map(|d| dir.join(d)) };
    }
    if let Some(changes) = &arm.search {
        let mut table = toml::Table::try_from(&c.search)
            .map_err(|e| invalid(path, format!("arm `{}`: [search]: {e}", arm.name)))?;
        for (k, v) in changes {
            table.insert(k.clone(), v.clone());
        }
        if let Some(b) = changes.get("baseline").and_then(|b| b.as_str()) {
            table.insert("baseline".into(), toml::Value::String(dir.join(b).to_string_lossy().into_owned()));
        }
        let mut doc = toml::Table::new();
        doc.insert("search".into(), toml::Value::Table(table));
        let text = toml::to_string(&doc).map_err(|e| invalid(path, format!("arm `{}`: {e}", arm.name)))?;
        let parsed = config::parse(&text, Path::new("arm"))
            .map_err(|e| invalid(path, format!("arm `{}`: {}", arm.name, e.to_string().trim_start_matches("arm:"))))?;
        c.search = parsed.search;
    }
    if let Some(changes) = &arm.cycles {
        let mut table = match &c.cycles {
            Some(cy) => {
                toml::Table::try_from(cy).map_err(|e| invalid(path, format!("arm `{}`: [cycles]: {e}", arm.name)))?
            }
            None => toml::Table::new(),
        };
        for (k, v) in changes {
            table.insert(k.clone(), v.clone());
        }
        let mut doc = toml::Table::new();
        doc.insert("cycles".into(), toml::Value::Table(table));
        let text = toml::to_string(&doc).map_err(|e| invalid(path, format!("arm `{}`: {e}", arm.name)))?;
        let parsed = config::parse(&text, Path::new("arm"))
            .map_err(|e| invalid(path, format!("arm `{}`: {}", arm.name, e.to_string().trim_start_matches("arm:"))))?;
        c.cycles = parsed.cycles;
    }
    // The whole config must be one `nas run` (or `nas cycles`) accepts.
    let text = toml::to_string(&c).map_err(|e| invalid(path, format!("arm `{}`: {e}", arm.name)))?;
    config::parse(&text, Path::new("arm"))
        .map_err(|e| invalid(path, format!("arm `{}`: {}", arm.name, e.to_string().trim_start_matches("arm:"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn the_k5_window_is_added_as_baseline_when_no_arm_is_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "mem.toml",
            "[compare]\nseeds = [7, 8]\nmax_iterations = 8\n\n[[arm]]\nname = \"none\"\nmemory = { plugin = \"memory.none\" }\n",
        );
        let plan = plan(&p).expect("plan");
        assert_eq!(plan.arms, vec!["window-k5", "none"]);
        assert!(plan.baseline_added);
        assert_eq!(plan.runs.len(), 4);
        assert_eq!(plan.checkpoints, vec![2, 4, 8]);
        let r = &plan.runs[3];
        assert_eq!((r.arm.as_str(), r.seed), ("none", 8));
        assert_eq!(r.config.run.seed, 8);
        assert_eq!(r.config.search.max_iterations, 8);
        assert!(r.dir.ends_with("runs/compare-mem/none/seed-8"), "{}", r.dir.display());
        assert!(is_k5_window(&plan.runs[0].config.memory));
    }

    #[test]
    fn an_arm_that_is_the_k5_window_is_the_baseline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "c.toml",
            "[compare]\nseeds = [1]\n[[arm]]\nname = \"k5\"\nmemory = { plugin = \"builtin:memory.window\", settings = { k = 5 } }\n[[arm]]\nname = \"k10\"\nmemory = { plugin = \"memory.window\", settings = { k = 10 } }\n",
        );
        let plan = plan(&p).expect("plan");
        assert_eq!((plan.baseline.as_str(), plan.baseline_added), ("k5", false));
        assert_eq!(plan.arms, vec!["k5", "k10"]);
    }

    #[test]
    fn arms_may_not_change_the_budget_and_errors_name_the_arm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "c.toml", "[[arm]]\nname = \"long\"\nsearch = { max_iterations = 100 }\n");
        let e = plan(&p).expect_err("budget").to_string();
        assert!(e.contains("arm `long`") && e.contains("max_iterations") && e.contains("budget"), "{e}");
        let p = write(dir.path(), "d.toml", "[[arm]]\nname = \"x\"\nsearch = { use_improver = \"no\" }\n");
        let e = plan(&p).expect_err("type").to_string();
        assert!(e.contains("arm `x`") && e.contains("use_improver"), "{e}");
        let p = write(dir.path(), "e.toml", "[[arm]]\nname = \"a b\"\n");
        assert!(plan(&p).expect_err("name").to_string().contains("letters"));
        let p = write(dir.path(), "f.toml", "[compare]\nseed = [1]\n");
        let e = plan(&p).expect_err("unknown key").to_string();
        assert!(e.starts_with(&format!("{}:2:", p.display())) && e.contains("seed"), "{e}");
    }

    #[test]
    fn ablation_switches_reach_the_run_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "c.toml", "[[arm]]\nname = \"no-history\"\nsearch = { use_history = false }\n");
        let plan = plan(&p).expect("plan");
        let run = plan.runs.iter().find(|r| r.arm == "no-history").expect("arm");
        assert!(!run.config.search.use_history);
        assert!(run.config.search.use_improver);
        let base = plan.runs.iter().find(|r| r.arm == BASELINE_ARM).expect("baseline");
        assert!(base.config.search.use_history);
    }
}
