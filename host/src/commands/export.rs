//! `nas export RUN_DIR...`: the best model (re-trained for its weights),
//! every valid architecture in LEMUR's contract, and a fine-tuning corpus.
//! The files and their formats: `docs/exports.md`; the work is in
//! [`crate::export`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nas_plugin_api::{EvalOutcome, EvalReport, EvalRequest, PluginInstance, PluginKind};
use serde_json::{json, Value};

use crate::cli::ExportArgs;
use crate::commands::{Failure, UsageContext};
use crate::export::{self, Candidate, CorpusOptions, ExportError, Run};

/// What re-training the best candidate gave.
struct Retrained {
    /// The evaluator's id.
    evaluator: Option<String>,
    /// Its report, when the candidate trained again.
    report: Option<EvalReport>,
    /// Whether `best/model.pt` exists.
    model_written: bool,
    /// The prepared dataset's manifest facts, when it was prepared.
    dataset: Option<Value>,
    /// Why there is no model, when there is none.
    note: Option<String>,
}

/// Runs `nas export`.
pub fn run(plugins: &[PathBuf], args: &ExportArgs) -> Result<(), Failure> {
    if !(args.min_accuracy.is_finite() && (0.0..=1.0).contains(&args.min_accuracy)) {
        return Err(Failure::Usage(anyhow!(
            "--min-accuracy is a fraction between 0 and 1 (e.g. 0.4 for 40%), got {}",
            args.min_accuracy
        )));
    }
    let runs: Vec<Run> = args.run_dirs.iter().map(|d| Run::open(d)).collect::<Result<_, _>>().usage()?;
    let candidates = export::valid_candidates(&runs);
    let best = export::best(&candidates)
        .ok_or_else(|| ExportError::NoValidCandidate { runs: args.run_dirs.clone() })
        .usage()?;
    let out = match &args.out {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => runs[0].dir.join("export"),
    };
    export::prepare_out_dir(&out).usage()?;

    // LEMUR files and the corpus.
    let lemur = export::write_lemur(&out.join("lemur"), &runs, &candidates).usage()?;
    let novelty_threshold = runs.iter().map(|r| r.config.config.search.novelty_threshold).fold(f64::INFINITY, f64::min);
    let options = CorpusOptions { top: args.top, min_accuracy: args.min_accuracy, novelty_threshold };
    let selection = export::select_corpus(&candidates, &options);
    export::write_corpus(&out.join("corpus"), &runs, &selection.chosen).usage()?;

    // The best model: its source, then (unless --no-model) its weights.
    let best_dir = out.join("best");
    export::write_text(&best_dir.join("model.py"), best.code).usage()?;
    let model_path = best_dir.join("model.pt");
    let retrained = if args.no_model {
        Retrained {
            evaluator: None,
            report: None,
            model_written: false,
            dataset: None,
            note: Some("skipped (--no-model)".into()),
        }
    } else {
        retrain(plugins, &runs[best.run], &best, &model_path)
    };
    export::write_json(&best_dir.join("info.json"), &info(&runs[best.run], &best, &retrained)).usage()?;

    // What was written where.
    let run = &runs[best.run];
    let contract = export::lemur::detect(best.code, best.recorded_contract());
    println!("exported to {}", out.display());
    println!(
        "  best/model.py       run {}, iteration {}, accuracy {:.2}% ({} contract)",
        run.name,
        best.record.iteration,
        best.report.accuracy * 100.0,
        contract.as_str()
    );
    match (&retrained.report, retrained.model_written) {
        (Some(r), true) => println!(
            "  best/model.pt       TorchScript with the weights of one more proxy training by {} (accuracy {:.2}%)",
            retrained.evaluator.as_deref().unwrap_or("the evaluator"),
            r.accuracy * 100.0
        ),
        _ => println!("  best/model.pt       not written: {}", retrained.note.as_deref().unwrap_or("no model")),
    }
    if retrained.model_written {
        let extra = retrained.report.as_ref().map(|r| &r.extra);
        match (extra.and_then(|e| e.get("onnx")), extra.and_then(|e| e.get("onnx_error"))) {
            (Some(o), _) if best_dir.join("model.onnx").is_file() => println!(
                "  best/model.onnx     ONNX (opset {}), outputs checked with {} (largest difference {})",
                o["opset"],
                o["checked_with"].as_str().unwrap_or("?"),
                o["max_abs_diff"]
            ),
            (_, Some(e)) => println!("  best/model.onnx     not written: {}", e.as_str().unwrap_or_default()),
            _ => println!("  best/model.onnx     not written: the evaluator does not export ONNX"),
        }
    }
    println!("  best/info.json      run, iteration, accuracy, params, FLOPs, dataset, evaluator settings");
    let wrapped = lemur.iter().filter(|f| f.contract == export::lemur::Contract::Paper).count();
    println!(
        "  lemur/              {} architectures ({wrapped} wrapped from the paper's contract, {} as written) + index.csv",
        lemur.len(),
        lemur.len() - wrapped
    );
    println!(
        "  corpus/train.jsonl  {} examples of {} valid ({} below {:.2}%, {} near-duplicates at similarity >= {:.2}, {} beyond --top {}) + index.csv",
        selection.chosen.len(),
        candidates.len(),
        selection.below_min,
        args.min_accuracy * 100.0,
        selection.near_duplicates,
        novelty_threshold,
        selection.beyond_top,
        args.top
    );
    Ok(())
}

/// Re-trains the best candidate with its run's dataset and evaluator (same
/// settings, same seed), asking the evaluator to save the trained model.
/// Problems become a note (and a warning), never an error: the rest of the
/// export stands without the weights.
fn retrain(plugins: &[PathBuf], run: &Run, best: &Candidate<'_>, model_path: &Path) -> Retrained {
    let mut retrained = Retrained { evaluator: None, report: None, model_written: false, dataset: None, note: None };
    let evaluator_name = run.config.config.evaluator.plugin.to_string();
    let result = (|| -> anyhow::Result<()> {
        let c = &run.config.config;
        let mut extra: Vec<PathBuf> = plugins.to_vec();
        extra.extend(c.plugins.load.iter().cloned());
        let mut registry = crate::commands::registry(&extra).map_err(|f| match f {
            Failure::Usage(e) | Failure::Run(e) => e,
        })?;
        let ctx = crate::session::host_context(&run.config.dir, None);
        let dataset_ref = c.dataset.plugin.resolved(&run.config.dir);
        let (_, instance) = registry
            .create(&dataset_ref, PluginKind::Dataset, &c.dataset.settings_json(), &ctx)
            .with_context(|| format!("[dataset] {dataset_ref}"))?;
        let PluginInstance::Dataset(mut loader) = instance else {
            return Err(anyhow!("[dataset] {dataset_ref} is not a dataset loader"));
        };
        eprintln!("preparing dataset ...");
        let prepared = crate::datasets::prepare(loader.as_mut(), &c.dataset.settings_json(), false)
            .map_err(|e| anyhow!("[dataset] {dataset_ref}: {e}"))?;
        let m = &prepared.manifest;
        retrained.dataset = Some(json!({
            "name": m.name, "input_shape": m.input_shape, "num_classes": m.num_classes,
            "class_names": m.class_names, "mean": m.mean, "std": m.std,
        }));
        let evaluator_ref = c.evaluator.plugin.resolved(&run.config.dir);
        let (registered, instance) = registry
            .create(&evaluator_ref, PluginKind::Evaluator, &c.evaluator.settings_json(), &ctx)
            .with_context(|| format!("[evaluator] {evaluator_ref}"))?;
        let id = registered.info.id.clone();
        retrained.evaluator = Some(id.clone());
        let PluginInstance::Evaluator(mut evaluator) = instance else {
            return Err(anyhow!("[evaluator] {evaluator_ref} is not an evaluator"));
        };
        eprintln!(
            "re-training the best candidate (run {}, iteration {}) with {id} to save its weights ...",
            run.name, best.record.iteration
        );
        let request = EvalRequest {
            candidate_id: format!("export-{}", best.record.iteration),
            source: best.code.to_string(),
            dataset: prepared.reference.clone(),
            time_limit_s: None,
            seed: None,
            save_model: Some(model_path.to_path_buf()),
            budget: Default::default(),
            known_networks: Vec::new(),
        };
        match evaluator.evaluate(&request).map_err(|e| anyhow!("{id}: {e}"))? {
            EvalOutcome::Ok(report) => {
                retrained.report = Some(report);
                retrained.model_written = model_path.is_file();
                if !retrained.model_written {
                    retrained.note = Some(format!(
                        "the evaluator {id} did not write it (it does not support `save_model`; eval.tch-one-epoch does)"
                    ));
                }
            }
            EvalOutcome::Failed(f) => {
                let _ = std::fs::remove_file(model_path);
                retrained.note = Some(format!(
                    "re-training with {id} failed this time: {} at stage {}: {}",
                    f.kind, f.stage, f.message
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        retrained.note = Some(format!(
            "cannot re-train the best candidate with {}: {}",
            retrained.evaluator.as_deref().unwrap_or(&evaluator_name),
            crate::commands::render_error(&e)
        ));
    }
    if let Some(note) = &retrained.note {
        eprintln!("warning: best/model.pt was not written: {note}; the rest of the export is complete");
    }
    retrained
}

/// `best/info.json`.
fn info(run: &Run, best: &Candidate<'_>, retrained: &Retrained) -> Value {
    let c = &run.config.config;
    let recorded_plugins: Vec<crate::run_dir::PluginRecord> =
        std::fs::read_to_string(run.dir.join(crate::run_dir::PLUGINS_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let recorded = |section: &str| recorded_plugins.iter().find(|p| p.section == section).map(|p| json!(p));
    let contract = export::lemur::detect(best.code, best.recorded_contract());
    let mut dataset = json!({
        "plugin": c.dataset.plugin.to_string(),
        "settings": c.dataset.settings_json(),
        "recorded_plugin": recorded("dataset"),
    });
    if let (Some(obj), Some(Value::Object(facts))) = (dataset.as_object_mut(), &retrained.dataset) {
        obj.extend(facts.clone());
    }
    let model = if retrained.model_written {
        let input = match &retrained.dataset {
            Some(d) => json!({
                "shape": ["N", d["input_shape"][0], d["input_shape"][1], d["input_shape"][2]],
                "dtype": "float32",
                "normalisation": "pixels / 255, then (x - mean) / std per channel",
                "mean": d["mean"], "std": d["std"],
            }),
            None => Value::Null,
        };
        json!({
            "file": "model.pt",
            "format": "TorchScript (torch.jit.load), CPU tensors, eval mode; forward(x) returns logits [N, num_classes]",
            "input": input,
        })
    } else {
        Value::Null
    };
    let extra = retrained.report.as_ref().map(|r| &r.extra);
    let onnx = extra.and_then(|e| e.get("onnx")).filter(|_| retrained.model_written).map(|o| {
        let mut o = o.clone();
        o["file"] = json!("model.onnx");
        o["format"] = json!(
            "ONNX: input `input` float [N, C, H, W] normalised as for model.pt, output `logits` [N, num_classes]"
        );
        o
    });
    json!({
        "run": run.dir,
        "run_name": run.name,
        "iteration": best.record.iteration,
        "mode": best.record.mode,
        "contract": contract.as_str(),
        "accuracy": best.report.accuracy,
        "params": best.report.params,
        "flops": best.report.flops,
        "recorded": best.report,
        "reevaluated_accuracy": retrained.report.as_ref().map(|r| r.accuracy),
        "reevaluated": retrained.report,
        "model": model,
        "model_note": retrained.note,
        "onnx": onnx,
        "onnx_note": extra.and_then(|e| e.get("onnx_error")),
        "dataset": dataset,
        "evaluator": {
            "plugin": c.evaluator.plugin.to_string(),
            "settings": c.evaluator.settings_json(),
            "recorded_plugin": recorded("evaluator"),
            "reevaluated_with": retrained.evaluator,
        },
        "seed": c.run.seed,
    })
}
