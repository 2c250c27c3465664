//! Docs that cannot rot: every ```` ```toml ```` block in `README.md`,
//! `docs/*.md` and `docs/**/*.md` is parsed by the strict parser it belongs
//! to, and so is every `examples/*.toml`.
//!
//! A block says what it is in its fence's info string, after `toml`:
//!
//! | fence | what it is | checked by |
//! |---|---|---|
//! | ```` ```toml run ```` | a run config (whole or in part) | `nas_host::config::parse`, then each built-in plugin it names is created with its settings |
//! | ```` ```toml compare ```` | a compare file | `nas_host::compare::plan`, beside copies of `examples/*.toml` (a `base` may name one) |
//! | ```` ```toml wasm-manifest ```` | a wasm plugin's manifest | `nas_host::wasm::WasmManifest::load` |
//! | ```` ```toml settings <id> ```` | a built-in plugin's settings table | the plugin's `create` |
//! | ```` ```toml cargo ```` | a plugin crate's `Cargo.toml` | `cargo read-manifest`, and it must build a `cdylib` |
//!
//! A plugin's settings pass when `create` does not refuse them as
//! `invalid_config`; what the machine lacks (a model file, a dataset) is
//! another error code and not the snippet's fault. `llm.local` is created
//! with `fetch = false`, so that no check downloads a model.

use std::path::{Path, PathBuf};

use nas_host::registry::{Origin, PluginRef, Registry};
use nas_plugin_api::{ErrorCode, HostContext};
use nas_tests::workspace_root;
use serde_json::Value;

/// One fenced block.
struct Block {
    /// The Markdown file, relative to the repository root.
    file: PathBuf,
    /// The line of the opening fence.
    line: usize,
    /// The info string after `toml` (`run`, `settings memory.window`, ...).
    kind: String,
    /// The contents, the fence's indentation removed.
    text: String,
}

/// Every ```toml block of a Markdown text.
fn toml_blocks(file: &Path, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String, Vec<&str>)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    let language = words.next().unwrap_or_default().to_string();
                    let rest = words.collect::<Vec<_>>().join(" ");
                    open =
                        Some((i + 1, indent, if language == "toml" { rest } else { format!("\0{language}") }, vec![]));
                }
            }
            Some((start, indent, kind, lines)) => {
                if trimmed == "```" {
                    if !kind.starts_with('\0') {
                        let text = lines.iter().map(|l| l.get(*indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>();
                        blocks.push(Block {
                            file: file.to_path_buf(),
                            line: *start,
                            kind: kind.clone(),
                            text: text.join("\n") + "\n",
                        });
                    }
                    open = None;
                } else {
                    lines.push(line);
                }
            }
        }
    }
    blocks
}

/// The Markdown files whose snippets are checked: README.md and everything
/// under docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).expect("read docs").filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files);
    files
}

/// A scratch directory for one check, with what a plugin may look for.
fn context(dir: &Path) -> HostContext {
    HostContext {
        host_api_version: Some(nas_plugin_api::API_VERSION),
        data_dir: Some(dir.join("data")),
        models_dir: Some(dir.join("models")),
        scratch_dir: Some(dir.join("scratch")),
        run_dir: None,
        threads: Some(2),
        config_dir: Some(dir.to_path_buf()),
    }
}

/// Creates the built-in plugin `id` with `settings`: an error unless the
/// plugin accepted them (see the module docs).
fn check_settings(id: &str, mut settings: Value, dir: &Path) -> Result<(), String> {
    let registry = Registry::with_builtins().map_err(|e| e.to_string())?;
    let Some(plugin) = registry.plugins().iter().find(|p| p.origin == Origin::Builtin && p.info.id == id) else {
        return Err(format!("`{id}` is not a built-in plugin"));
    };
    if id == "llm.local" {
        if let Some(table) = settings.as_object_mut() {
            table.insert("fetch".into(), Value::Bool(false));
        }
    }
    match plugin.create(&settings, &context(dir)) {
        Ok(_) => Ok(()),
        Err(nas_host::registry::RegistryError::Create { error, .. }) if error.code != ErrorCode::InvalidConfig => {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a run config and checks the settings of every built-in plugin its
/// sections name.
fn check_run(text: &str, path: &Path, dir: &Path) -> Result<(), String> {
    let config = nas_host::config::parse(text, path).map_err(|e| e.to_string())?;
    let written: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let registry = Registry::with_builtins().map_err(|e| e.to_string())?;
    for (section, plugin) in config.plugin_sections() {
        if !written.contains_key(section) {
            continue;
        }
        let id = match &plugin.plugin {
            PluginRef::Builtin(id) => id,
            PluginRef::Id(id) if registry.plugins().iter().any(|p| &p.info.id == id) => id,
            // A library of the user's: its settings are its own business.
            PluginRef::Id(_) | PluginRef::Native { .. } | PluginRef::Wasm { .. } => continue,
        };
        check_settings(id, plugin.settings_json(), dir).map_err(|e| format!("[{section}]: {e}"))?;
    }
    Ok(())
}

/// Plans a compare file written beside copies of the example configs.
fn check_compare(text: &str, dir: &Path) -> Result<(), String> {
    for example in examples() {
        std::fs::copy(&example, dir.join(example.file_name().expect("a name"))).map_err(|e| e.to_string())?;
    }
    let path = dir.join("block-compare.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    nas_host::compare::plan(&path).map(|_| ()).map_err(|e| e.to_string())
}

fn check_wasm_manifest(text: &str, dir: &Path) -> Result<(), String> {
    let path = dir.join("block-manifest.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    nas_host::wasm::WasmManifest::load(&path).map(|_| ())
}

/// Reads a plugin crate's manifest with cargo itself; the crate must build
/// a `cdylib` nas can load.
fn check_cargo(text: &str, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/lib.rs"), "").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("Cargo.toml"), text).map_err(|e| e.to_string())?;
    let out = nas_tests::cargo_command()
        .args(["read-manifest", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let manifest: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let cdylib = manifest["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["crate_types"].as_array().is_some_and(|c| c.iter().any(|c| c == "cdylib")));
    if cdylib {
        Ok(())
    } else {
        Err("the crate builds no cdylib, which `nas --plugin` needs".into())
    }
}

/// Checks one block by its kind, in a fresh scratch directory.
fn check_block(kind: &str, text: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let mut words = kind.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("run"), None, None) => check_run(text, Path::new("block.toml"), dir),
        (Some("compare"), None, None) => check_compare(text, dir),
        (Some("wasm-manifest"), None, None) => check_wasm_manifest(text, dir),
        (Some("cargo"), None, None) => check_cargo(text, dir),
        (Some("settings"), Some(id), None) => {
            let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
            check_settings(id, serde_json::to_value(table).map_err(|e| e.to_string())?, dir)
        }
        _ => Err(format!(
            "the fence does not say what the block is (```toml {kind}): write ```toml run, compare, wasm-manifest, \
             cargo or settings <plugin id>"
        )),
    }
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_toml_snippet_in_the_docs_parses_with_its_strict_parser() {
    let root = workspace_root();
    let mut blocks = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read markdown");
        blocks.extend(toml_blocks(file.strip_prefix(&root).unwrap_or(&file), &text));
    }
    let mut failures = Vec::new();
    for b in &blocks {
        if let Err(e) = check_block(&b.kind, &b.text) {
            failures.push(format!("{}:{}: ```toml {}: {e}", b.file.display(), b.line, b.kind));
        }
    }
    assert!(failures.is_empty(), "doc snippets that do not parse:\n{}", failures.join("\n"));
    let kinds: Vec<&str> = blocks.iter().filter_map(|b| b.kind.split_whitespace().next()).collect();
    for kind in ["run", "compare", "wasm-manifest", "cargo"] {
        assert!(kinds.contains(&kind), "no ```toml {kind} block found in {} blocks", blocks.len());
    }
    assert!(blocks.len() >= 8, "{} blocks", blocks.len());
}

#[test]
fn every_example_config_parses() {
    let files = examples();
    assert!(files.len() >= 3, "{files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read example");
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let result = if table.contains_key("compare") {
            nas_host::compare::plan(path).map(|_| ()).map_err(|e| e.to_string())
        } else {
            check_run(&text, path, tmp.path())
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "examples that do not parse:\n{}", failures.join("\n"));
}

#[test]
fn a_block_that_does_not_parse_or_says_not_what_it_is_is_refused() {
    let e = check_block("run", "[llm]\nplugin = \"llm.local\"\n").expect_err("`[llm]` is no section");
    assert!(e.contains("llm"), "{e}");
    let e = check_block("run", "[memory]\nplugin = \"builtin:memory.window\"\n[memory.settings]\nk = 0\n")
        .expect_err("the plugin refuses k = 0");
    assert!(e.contains("[memory]") && e.contains("`k` must be at least 1"), "{e}");
    let e = check_block("settings llm.local", "modle = \"x\"\n").expect_err("a typo");
    assert!(e.contains("modle"), "{e}");
    let e = check_block("compare", "[compare]\nseeds = []\n").expect_err("no seeds");
    assert!(e.contains("seeds"), "{e}");
    let e = check_block(
        "wasm-manifest",
        "id = \"memory.x\"\nkind = \"memory\"\nversion = \"0.1.0\"\napi_version = \"1.0\"\nsha256 = \"5117fee2...\"\n",
    )
    .expect_err("a cut hash");
    assert!(e.contains("sha256"), "{e}");
    let cargo = |edition: &str, lib: &str| {
        check_block(
            "cargo",
            &format!("[package]\nname = \"p\"\nversion = \"0.1.0\"\nedition = \"{edition}\"\n[lib]\n{lib}\n"),
        )
    };
    let e = cargo("2077", "crate-type = [\"cdylib\"]").expect_err("no such edition");
    assert!(e.contains("2077"), "{e}");
    let e = cargo("2021", "crate-typo = [\"cdylib\"]").expect_err("a typo leaves a plain rlib");
    assert!(e.contains("no cdylib"), "{e}");
    cargo("2021", "crate-type = [\"cdylib\", \"rlib\"]").expect("a plugin crate");
    let e = check_block("", "[memory]\nplugin = \"memory.none\"\n").expect_err("unmarked");
    assert!(e.contains("does not say what the block is"), "{e}");
    check_block("settings memory.window", "k = 3\n").expect("a valid table");

    let blocks = toml_blocks(
        Path::new("x.md"),
        "text\n\n  ```toml run\n  [search]\n  max_iterations = 2\n  ```\n```sh\nls\n```\n",
    );
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (blocks[0].line, blocks[0].kind.as_str(), blocks[0].text.as_str()),
        (3, "run", "[search]\nmax_iterations = 2\n")
    );
}
