//! `nas data list`, `nas data fetch`, `nas data prepare`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nas_plugin_api::{DatasetDescription, DatasetLoader, PluginInstance, PluginKind, MANIFEST_FILE};

use crate::cli::DataCommand;
use crate::commands::plugins::print_table;
use crate::commands::{Failure, UsageContext};
use crate::registry::{PluginRef, Registry};

fn settings(root: Option<&Path>) -> serde_json::Value {
    match root {
        Some(r) => serde_json::json!({ "root": std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf()) }),
        None => serde_json::json!({}),
    }
}

/// Creates the dataset loader `name` (`fashion-mnist` or `data.fashion-mnist`).
pub fn loader(
    registry: &mut Registry,
    name: &str,
    settings: &serde_json::Value,
) -> Result<Box<dyn DatasetLoader>, Failure> {
    let id = if name.starts_with("data.") { name.to_string() } else { format!("data.{name}") };
    let ctx = crate::session::host_context(Path::new("."), None);
    let (_, instance) = registry.create(&PluginRef::Id(id), PluginKind::Dataset, settings, &ctx).usage()?;
    match instance {
        PluginInstance::Dataset(d) => Ok(d),
        other => Err(Failure::Usage(anyhow!("`{name}` is a {}, not a dataset loader", other.kind()))),
    }
}

fn present(d: &DatasetDescription) -> (usize, usize) {
    let required: Vec<_> = d.sources.iter().filter(|s| s.required).collect();
    let here = required.iter().filter(|s| d.raw_dir.join(&s.name).is_file()).count();
    (here, required.len())
}

/// Runs a `nas data` command.
pub fn run(plugins: &[PathBuf], cmd: DataCommand) -> Result<(), Failure> {
    let mut registry = crate::commands::registry(plugins)?;
    match cmd {
        DataCommand::List => {
            let ids: Vec<String> = registry
                .plugins()
                .iter()
                .filter(|p| p.info.kind == PluginKind::Dataset)
                .map(|p| p.info.id.clone())
                .collect();
            let mut rows: Vec<[String; 4]> = Vec::new();
            for id in ids {
                let mut d = loader(&mut registry, &id, &serde_json::json!({}))?;
                let desc = d.describe().usage()?;
                let (here, all) = present(&desc);
                let prepared =
                    crate::datasets::prepared_dir(&desc, &serde_json::json!({})).join(MANIFEST_FILE).is_file();
                let files = if all == 0 { "user-provided".to_string() } else { format!("{here}/{all} present") };
                rows.push([
                    desc.name.clone(),
                    format!("{files}{}", if prepared { ", prepared" } else { "" }),
                    desc.raw_dir.display().to_string(),
                    desc.title.clone(),
                ]);
            }
            print_table(&["DATASET", "STATUS", "FILES EXPECTED IN", "TITLE"], &rows);
            Ok(())
        }
        DataCommand::Fetch { name, root } => {
            let mut d = loader(&mut registry, &name, &settings(root.as_deref()))?;
            let desc = d.describe().usage()?;
            let opts = crate::fetch::FetchOptions::default();
            let fetched = crate::fetch::fetch_all(&desc.sources, &desc.raw_dir, &opts).run_failed()?;
            for f in &fetched {
                let check = match f.checksum_matches {
                    Some(true) => "sha256 ok",
                    Some(false) => "sha256 differs from the published one",
                    None => "no published sha256",
                };
                println!("{}  {:?}  {check}", f.path.display(), f.status);
            }
            let prepared = crate::datasets::prepare(d.as_mut(), &settings(root.as_deref()), false).run_failed()?;
            println!("prepared: {}", prepared.reference.dir.display());
            Ok(())
        }
        DataCommand::Prepare { name, root, force } => {
            let mut d = loader(&mut registry, &name, &settings(root.as_deref()))?;
            let t0 = std::time::Instant::now();
            let prepared = crate::datasets::prepare(d.as_mut(), &settings(root.as_deref()), force).usage()?;
            let m = &prepared.manifest;
            println!(
                "{}: {:?} images, {} classes, splits {} — {} ({:.1} s)",
                m.name,
                m.input_shape,
                m.num_classes,
                m.splits.iter().map(|(k, v)| format!("{k} {}", v.count)).collect::<Vec<_>>().join(", "),
                prepared.reference.dir.display(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
