//! `nas eval FILE.py --dataset NAME`: score one candidate.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nas_plugin_api::{Budget, EvalOutcome, EvalRequest, PluginInstance, PluginKind};

use crate::cli::EvalArgs;
use crate::commands::{Failure, UsageContext};
use crate::registry::PluginRef;

/// Runs `nas eval`. Exit code 0 when the candidate trained, 1 when it
/// failed (the failure is printed), 2 for usage errors.
pub fn run(plugins: &[PathBuf], args: &EvalArgs) -> Result<(), Failure> {
    let source =
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display())).usage()?;
    let mut registry = crate::commands::registry(plugins)?;
    let mut dataset = crate::commands::data::loader(&mut registry, &args.dataset, &serde_json::json!({}))?;
    let prepared = crate::datasets::prepare(dataset.as_mut(), &serde_json::json!({}), false)
        .map_err(|e| anyhow!("dataset `{}`: {e}", args.dataset))
        .usage()?;
    let mut settings = serde_json::Map::new();
    if let Some(d) = &args.device {
        settings.insert("device".into(), d.clone().into());
    }
    if let Some(n) = args.max_train_examples {
        settings.insert("max_train_examples".into(), n.into());
    }
    for (key, value) in &args.settings {
        settings.insert(key.clone(), value.clone());
    }
    let ctx = crate::session::host_context(Path::new("."), None);
    let reference: PluginRef = args.evaluator.parse().map_err(|e: String| anyhow!(e)).usage()?;
    let (_, instance) =
        registry.create(&reference, PluginKind::Evaluator, &serde_json::Value::Object(settings), &ctx).usage()?;
    let PluginInstance::Evaluator(mut evaluator) = instance else {
        return Err(Failure::Usage(anyhow!("`{}` is not an evaluator", args.evaluator)));
    };
    let candidate_id =
        args.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "candidate".into());
    let outcome = evaluator
        .evaluate(&EvalRequest {
            candidate_id,
            source,
            dataset: prepared.reference,
            time_limit_s: args.time_limit,
            seed: args.seed,
            save_model: None,
            budget: Budget { max_params: args.max_params, max_flops: args.max_flops },
            known_networks: Vec::new(),
        })
        .run_failed()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome).usage()?);
    } else {
        match &outcome {
            EvalOutcome::Ok(r) => {
                println!("accuracy      {:.2}%", r.accuracy * 100.0);
                if let Some(l) = r.train_loss {
                    println!("train loss    {l:.4}");
                }
                if let Some(p) = r.params {
                    println!("parameters    {p}");
                }
                if let Some(f) = r.flops {
                    println!("FLOPs/image   {f}");
                }
                if let (Some(s), Some(ips)) = (r.epoch_seconds, r.images_per_second) {
                    println!("epoch         {s:.1} s ({ips:.0} images/s)");
                }
                if let Some(m) = r.peak_memory_bytes {
                    println!("peak memory   {:.0} MB", m as f64 / 1e6);
                }
                println!("device        {}", r.device);
                if let Some(m) = r.machine() {
                    println!("machine       {m}");
                }
            }
            EvalOutcome::Failed(f) => {
                println!("failed        {} (stage {})", f.kind, f.stage);
                println!("{}", f.message);
                if !f.traceback.is_empty() {
                    println!("{}", f.traceback);
                }
            }
        }
    }
    match outcome {
        EvalOutcome::Ok(_) => Ok(()),
        EvalOutcome::Failed(f) => Err(Failure::Run(anyhow!("the candidate failed: {} at stage {}", f.kind, f.stage))),
    }
}
