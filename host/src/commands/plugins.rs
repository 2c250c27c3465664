//! `nas plugins list` and `nas plugins check`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nas_plugin_api::HostContext;

use crate::cli::PluginsCommand;
use crate::commands::{Failure, UsageContext};
use crate::registry::{self, CheckResult};

/// Runs a `nas plugins` command.
pub fn run(plugins: &[PathBuf], cmd: PluginsCommand) -> Result<(), Failure> {
    match cmd {
        PluginsCommand::List { json } => list(plugins, json),
        PluginsCommand::Check { path, json } => check(&path, json),
    }
}

fn list(plugins: &[PathBuf], json: bool) -> Result<(), Failure> {
    let registry = crate::commands::registry(plugins)?;
    if json {
        let rows: Vec<serde_json::Value> = registry
            .plugins()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.info.id, "kind": p.info.kind, "version": p.info.version,
                    "api_version": p.info.api_version.to_string(), "origin": p.origin.to_string(),
                    "description": p.info.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).usage()?);
        return Ok(());
    }
    let overridden = |p: &crate::registry::Registered| {
        p.origin == crate::registry::Origin::Builtin
            && registry.plugins().iter().any(|o| o.info.id == p.info.id && o.origin != crate::registry::Origin::Builtin)
    };
    let rows: Vec<[String; 6]> = registry
        .plugins()
        .iter()
        .map(|p| {
            [
                p.info.id.clone(),
                p.info.kind.to_string(),
                p.info.version.clone(),
                p.info.api_version.to_string(),
                if overridden(p) { format!("{} (overridden)", p.origin) } else { p.origin.to_string() },
                p.info.description.clone(),
            ]
        })
        .collect();
    print_table(&["ID", "KIND", "VERSION", "API", "FROM", "DESCRIPTION"], &rows);
    Ok(())
}

/// Prints rows as an aligned table (the last column unpadded).
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    println!("{}", super::text_table(&header, &rows, false));
}

fn check(path: &Path, json: bool) -> Result<(), Failure> {
    let ctx = HostContext {
        host_api_version: Some(nas_plugin_api::API_VERSION),
        data_dir: Some(crate::paths::data_dir()),
        models_dir: Some(crate::paths::models_dir()),
        threads: Some(crate::paths::threads()),
        ..Default::default()
    };
    let results: Vec<CheckResult> = if path.extension().is_some_and(|e| e == "wasm") {
        let (steps, lib) = crate::wasm::check_component(path, &registry::wasm_options());
        let mut results: Vec<CheckResult> = steps
            .into_iter()
            .map(|s| CheckResult { check: s.step.describe().to_string(), passed: s.passed, detail: s.detail })
            .collect();
        if let Some(lib) = lib {
            for info in lib.plugins() {
                let created = lib.create(&info, &serde_json::json!({}), &ctx);
                results.push(CheckResult {
                    check: format!("creates `{}` with default settings", info.id),
                    passed: Some(created.is_ok()),
                    detail: created.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                });
                if let Ok(nas_plugin_api::PluginInstance::Memory(mut memory)) = created {
                    let r = registry::smoke_memory(memory.as_mut());
                    results.push(CheckResult {
                        check: format!("`{}` selects from a sample history", info.id),
                        passed: Some(r.is_ok()),
                        detail: r.err().unwrap_or_default(),
                    });
                }
            }
        }
        results
    } else {
        registry::check_native(path, &ctx)
    };
    let all_passed = results.iter().all(|r| r.passed == Some(true));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"path": path, "passed": all_passed, "checks": results}))
                .usage()?
        );
    } else {
        println!("{}", path.display());
        for r in &results {
            let mark = match r.passed {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "skip",
            };
            if r.detail.is_empty() {
                println!("  [{mark}] {}", r.check);
            } else {
                println!("  [{mark}] {}: {}", r.check, r.detail);
            }
        }
    }
    if all_passed {
        Ok(())
    } else {
        let first = results.iter().find(|r| r.passed == Some(false));
        Err(Failure::Usage(anyhow!(
            "`{}` failed the check `{}`: {}",
            path.display(),
            first.map_or("?", |r| r.check.as_str()),
            first.map_or("", |r| r.detail.as_str())
        )))
    }
}
