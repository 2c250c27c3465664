//! `nas corpus lemur` and `nas corpus import`: fine-tuning sets from the
//! LEMUR dataset or from JSONL the user has. The work is in
//! [`crate::corpus`]; the format is in docs/fine-tuning.md.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nas_plugin_api::{DatasetDescription, DatasetManifest, PluginInstance, PluginKind};
use serde_json::json;

use crate::cli::{CorpusImportArgs, CorpusLemurArgs};
use crate::commands::{Failure, UsageContext};
use crate::config::GenerationMode;
use crate::corpus::prompt::PromptSetup;
use crate::corpus::wheel::{self, DatasetMatch, LemurWheel, Statistic};
use crate::corpus::{self, DeltaOptions, ImportOptions, LemurOptions};
use crate::registry::PluginRef;
use crate::search::prompts::{self, Prompts};

fn fraction(name: &str, x: f64) -> Result<(), Failure> {
    if x.is_finite() && (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(Failure::Usage(anyhow!("{name} is a fraction between 0 and 1, got {x}")))
    }
}

/// The mode named on the command line.
fn mode(text: &str) -> Result<GenerationMode, Failure> {
    match text {
        "full" => Ok(GenerationMode::Full),
        "delta" => Ok(GenerationMode::Delta),
        other => Err(Failure::Usage(anyhow!("--mode {other}: the mode is `full` (whole files) or `delta` (diffs)"))),
    }
}

/// What the prompts are written from: the prepared dataset's manifest (as
/// in a search) or, when it cannot be prepared here, the loader's
/// description.
fn prompt_manifest(
    loader: &mut dyn nas_plugin_api::DatasetLoader,
    settings: &serde_json::Value,
    description: &DatasetDescription,
) -> Result<(DatasetManifest, String, Option<String>), Failure> {
    let title = |d: &DatasetDescription| if d.title.is_empty() { d.name.clone() } else { d.title.clone() };
    match crate::datasets::prepare(loader, settings, false) {
        Ok(p) => {
            let t = title(&p.description);
            Ok((p.manifest, t, None))
        }
        Err(e) => {
            let (Some(shape), Some(classes)) = (description.input_shape, description.num_classes) else {
                return Err(Failure::Usage(anyhow!(
                    "dataset `{}` cannot be prepared here ({e}) and its loader does not say its shape without it: prepare it first",
                    description.name
                )));
            };
            let manifest: DatasetManifest = serde_json::from_value(json!({
                "format_version": nas_plugin_api::PREPARED_FORMAT_VERSION, "name": description.name,
                "family": description.family, "input_shape": shape, "num_classes": classes,
                "mean": [], "std": [], "splits": {},
            }))
            .usage()?;
            let note = format!(
                "dataset `{}` is not prepared here ({e}); the prompts are written from what its loader says before preparing, without class names, which a search's prompts have: prepare it (`nas data fetch {}`) and build again for prompts identical to the search's",
                description.name, description.name
            );
            Ok((manifest, title(description), Some(note)))
        }
    }
}

/// Runs `nas corpus lemur`.
pub fn lemur(plugins: &[PathBuf], args: &CorpusLemurArgs) -> Result<(), Failure> {
    fraction("--min-accuracy", args.min_accuracy)?;
    if !(args.novelty_threshold.is_finite() && args.novelty_threshold > 0.0) {
        return Err(Failure::Usage(anyhow!("--novelty-threshold is a similarity above 0 (1.0 keeps near-duplicates)")));
    }
    if args.config.is_none() && args.dataset.is_none() {
        return Err(Failure::Usage(anyhow!("name the dataset: --dataset NAME (or --config FILE with a [dataset])")));
    }
    let mut loaded = crate::session::load_config(args.config.as_deref()).usage()?;
    if let Some(name) = &args.dataset {
        let id = if name.starts_with("data.") { name.clone() } else { format!("data.{name}") };
        loaded.config.dataset.plugin = PluginRef::Id(id);
        loaded.config.dataset.settings = toml::Table::new();
    }
    let mode = match &args.mode {
        Some(m) => mode(m)?,
        None => loaded.config.search.mode,
    };
    let mut extra = plugins.to_vec();
    extra.extend(loaded.config.plugins.load.iter().map(|p| loaded.resolve(p)));
    let mut registry = crate::commands::registry(&extra)?;
    let ctx = crate::session::host_context(&loaded.dir, None);
    let section = loaded.config.dataset.clone();
    let (_, instance) =
        crate::session::create(&mut registry, &loaded, "dataset", &section, PluginKind::Dataset, &ctx).usage()?;
    let PluginInstance::Dataset(mut loader) = instance else {
        return Err(Failure::Usage(anyhow!("[dataset] is not a dataset loader")));
    };
    let description = loader.describe().usage()?;

    // Which LEMUR statistics rank the models.
    let statistics = match args.statistics_from.as_deref() {
        Some("none") => None,
        Some(name) => Some(name.to_string()),
        None => match wheel::match_dataset(&description.name, &description.family) {
            DatasetMatch::Same { lemur: name, note } => {
                if let Some(note) = note {
                    println!("note: {note}");
                }
                Some(name)
            }
            DatasetMatch::Nearest { lemur: near, why } => {
                return Err(Failure::Usage(anyhow!(
                    "LEMUR has no statistics for `{}`. The nearest dataset it has statistics for is `{near}` ({why}): add `--statistics-from {near}`; or `--statistics-from none` for its models without statistics (drawn at random with --seed, no accuracy filter)",
                    description.name
                )))
            }
            DatasetMatch::None => {
                return Err(Failure::Usage(anyhow!(
                    "LEMUR has no statistics for `{}`: choose a dataset it has with `--statistics-from NAME` (cifar-10, cifar-100, mnist, svhn, imagenette, celeba-gender, places365), or `--statistics-from none` for its models without statistics",
                    description.name
                )))
            }
        },
    };
    let wheel_path = match &args.wheel {
        Some(p) => {
            wheel::verify(p).usage()?;
            p.clone()
        }
        None => {
            let dir = wheel::default_dir();
            eprintln!("LEMUR: {} in {}", wheel::PACKAGE, dir.display());
            wheel::ensure(&dir, &crate::fetch::FetchOptions::default()).usage()?
        }
    };
    let mut lemur = LemurWheel::open(&wheel_path).usage()?;
    let available = lemur.classification_datasets();
    if let Some(name) = statistics.as_deref().filter(|n| !available.contains_key(*n)) {
        let list = available.iter().map(|(d, n)| format!("{d} ({n})")).collect::<Vec<_>>().join(", ");
        return Err(Failure::Usage(anyhow!(
            "LEMUR has no first-epoch statistics under the name `{name}`; it has {list}, or `none`"
        )));
    }
    if statistics.is_none() && args.min_accuracy > 0.0 {
        return Err(Failure::Usage(anyhow!("--min-accuracy needs statistics; `--statistics-from none` has none")));
    }

    // The prompts, as the search writes them for this dataset.
    let (manifest, title, note) = prompt_manifest(loader.as_mut(), &section.settings_json(), &description)?;
    if let Some(note) = &note {
        eprintln!("note: {note}");
    }
    let family = prompts::family_for(&manifest.family, &manifest.name);
    let prompt_dir = loaded.config.prompts.dir.as_deref().map(|d| loaded.resolve(d));
    let setup = PromptSetup::new(Prompts::new(family, prompt_dir), &manifest, &title, &loaded.config.search);

    let statistic: Statistic = args.statistic.parse().map_err(|e: String| anyhow!(e)).usage()?;
    let opts = LemurOptions {
        mode,
        statistics: statistics.clone(),
        statistic,
        min_accuracy: args.min_accuracy,
        top: args.top,
        novelty_threshold: args.novelty_threshold,
        seed: args.seed,
        delta: DeltaOptions { max_diff_lines: args.max_diff_lines, ..DeltaOptions::default() },
    };
    let built = corpus::lemur_corpus(&mut lemur, &setup, &opts).usage()?;
    let c = &built.counts;
    let out = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    let summary = json!({
        "source": "lemur",
        "package": wheel::PACKAGE,
        "wheel_sha256": wheel::WHEEL_SHA256,
        "dataset": description.name,
        "prompts_from": if note.is_some() { "loader description" } else { "prepared dataset" },
        "statistics": statistics,
        "statistic": statistic.as_str(),
        "mode": match mode { GenerationMode::Full => "full", GenerationMode::Delta => "delta" },
        "min_accuracy": args.min_accuracy,
        "top": args.top,
        "novelty_threshold": args.novelty_threshold,
        "seed": args.seed,
        "max_diff_lines": args.max_diff_lines,
        "counts": c,
    });
    corpus::write(&out, &built, &summary).usage()?;

    println!("LEMUR {}: {} model files", wheel::PACKAGE, c.model_files);
    match &statistics {
        Some(d) => println!(
            "statistics: {d}, first epoch, the {} run per model: {} files, {} models with statistics ({} files empty, {} unreadable; {} runs skipped)",
            statistic.as_str(),
            c.statistics_files,
            c.with_statistics,
            c.statistics_empty,
            c.statistics_unreadable,
            c.runs_skipped
        ),
        None => println!("statistics: none; every model, in an order drawn with seed {}", args.seed),
    }
    println!(
        "read: {} rewritten in the search's contract ({} not convertible, {} unreadable)",
        c.with_statistics - c.not_convertible - c.unreadable_models,
        c.not_convertible,
        c.unreadable_models
    );
    println!(
        "left out: {} below {}, {} near-duplicates (similarity >= {}), {} beyond --top{}",
        c.below_min_accuracy,
        args.min_accuracy,
        c.near_duplicates,
        args.novelty_threshold,
        c.beyond_top,
        if mode == GenerationMode::Delta {
            format!(", {} with no baseline near enough", c.no_baseline)
        } else {
            String::new()
        }
    );
    println!(
        "examples: {} ({}) -> {}",
        c.examples,
        match mode {
            GenerationMode::Full => "prompt -> whole file",
            GenerationMode::Delta => "prompt -> diff against a baseline",
        },
        out.join(corpus::TRAIN_FILE).display()
    );
    Ok(())
}

/// Runs `nas corpus import`.
pub fn import(args: &CorpusImportArgs) -> Result<(), Failure> {
    if !(args.novelty_threshold.is_finite() && args.novelty_threshold > 0.0) {
        return Err(Failure::Usage(anyhow!("--novelty-threshold is a similarity above 0 (1.0 keeps near-duplicates)")));
    }
    let opts = ImportOptions { top: args.top, novelty_threshold: args.novelty_threshold };
    let (built, counts) = corpus::import_corpus(&args.files, &opts).usage()?;
    let out = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    let files: Vec<String> = args.files.iter().map(|f| display(f)).collect();
    let summary = json!({
        "source": "import", "files": files, "top": args.top,
        "novelty_threshold": args.novelty_threshold, "counts": counts,
    });
    corpus::write(&out, &built, &summary).usage()?;
    println!(
        "read {} examples from {}; left out {} near-duplicates (similarity >= {}), {} beyond --top",
        counts.read,
        files.join(", "),
        counts.near_duplicates,
        args.novelty_threshold,
        counts.beyond_top
    );
    println!("examples: {} -> {}", counts.examples, out.join(corpus::TRAIN_FILE).display());
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
