//! The spine, driven as a user drives it: the `nas` binary, built-in
//! plugins, the example third-party plugin built from its own crate, and
//! every kind of bad input from the plugin and config doors.

use nas_tests::{assert_usage_error, build_cdylib, build_example_plugin, nas, s, text};

#[test]
fn builtins_are_listed_with_kind_version_api_and_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nas(dir.path(), &["plugins", "list", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let window = rows.iter().find(|r| r["id"] == "memory.window").expect("memory.window is built in");
    assert_eq!(window["kind"], "memory");
    assert_eq!(window["origin"], "builtin");
    assert_eq!(window["api_version"], nas_plugin_api::API_VERSION.to_string());
    assert!(window["version"].as_str().is_some_and(|v| !v.is_empty()));
}

#[test]
fn the_example_third_party_plugin_builds_loads_and_checks() {
    let so = build_example_plugin();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nas(dir.path(), &["--plugin", s(&so), "plugins", "list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let row = stdout.lines().find(|l| l.starts_with("memory.failures-first")).expect("listed");
    assert!(row.contains("memory strategy") && row.contains(&format!("native:{}", so.display())), "{row}");
    let out = nas(dir.path(), &["plugins", "check", s(&so)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("FAIL") && stdout.contains("selects from a sample history"), "{stdout}");
    // Its settings are checked by the plugin and refused with the key named.
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, format!("[memory]\nplugin = \"native:{}\"\n[memory.settings]\nk = 0\n", so.display()))
        .expect("write");
    let out = nas(dir.path(), &["run", "--config", s(&cfg)]);
    assert_usage_error(&out, &["memory.failures-first", "`k` must be at least 1", "[memory]"]);
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes.so");
    std::fs::write(&notes, "just some text").expect("write");
    assert_usage_error(
        &nas(dir.path(), &["--plugin", s(&notes), "plugins", "list"]),
        &["notes.so", "not an ELF shared library"],
    );
    let so = build_cdylib("nas-fixture-not-a-plugin");
    assert_usage_error(
        &nas(dir.path(), &["--plugin", s(&so), "plugins", "list"]),
        &["not a nas plugin", "export_plugins!"],
    );
    let out = nas(dir.path(), &["plugins", "check", s(&so)]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout.contains("[ok  ] file exists") && stdout.contains("[FAIL] exports a nas plugin root module"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_usage_error(
        &nas(dir.path(), &["--plugin", "no/such/lib.so", "plugins", "list"]),
        &["no/such/lib.so", "cannot read plugin file"],
    );
}

#[test]
fn a_plugin_of_an_incompatible_api_version_is_refused_before_any_call() {
    let so = build_cdylib("nas-fixture-api-v99");
    let dir = tempfile::tempdir().expect("tempdir");
    let host = format!("this host speaks plugin API {}", nas_plugin_api::API_VERSION);
    assert_usage_error(&nas(dir.path(), &["--plugin", s(&so), "plugins", "list"]), &["plugin API 99.0", &host]);
    let out = nas(dir.path(), &["plugins", "check", s(&so)]);
    let stdout = text(&out).0;
    assert!(
        stdout.contains("[FAIL] plugin API version is compatible") && stdout.contains("[skip] lists its plugins"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_whose_create_panics_is_an_error_not_a_crash() {
    let so = build_cdylib("nas-fixture-create-panics");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nas(dir.path(), &["plugins", "check", s(&so)]);
    assert_usage_error(&out, &["memory.create-panics", "panicked", "always panics"]);
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, format!("[memory]\nplugin = \"native:{}\"\n", so.display())).expect("write");
    assert_usage_error(&nas(dir.path(), &["run", "--config", s(&cfg)]), &["memory.create-panics", "panicked"]);
}

#[test]
fn a_plugin_whose_call_panics_is_an_error_not_a_crash() {
    let so = build_cdylib("nas-fixture-call-panics");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nas(dir.path(), &["plugins", "check", s(&so)]);
    assert_usage_error(&out, &["memory.call-panics", "panicked", "always panics (8 entries)"]);
}

#[test]
fn two_plugins_with_the_same_id_are_refused() {
    let a = build_cdylib("nas-fixture-twin-a");
    let b = build_cdylib("nas-fixture-twin-b");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nas(dir.path(), &["--plugin", s(&a), "--plugin", s(&b), "plugins", "list"]);
    assert_usage_error(&out, &["two plugins have the id `memory.twin`", "twin_a", "twin_b"]);
}

#[test]
fn a_config_with_an_unknown_key_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[run]\nname = \"x\"\n\n[search]\nmax_iterations = 3\nmax_iteratons = 4\n").expect("write");
    assert_usage_error(&nas(dir.path(), &["run", "--config", s(&cfg)]), &["bad.toml:6:", "max_iteratons"]);
}

#[test]
fn a_config_with_a_type_error_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[search]\nmax_iterations = \"ten\"\n").expect("write");
    assert_usage_error(
        &nas(dir.path(), &["run", "--config", s(&cfg)]),
        &["bad.toml:2:", "search.max_iterations", "invalid type"],
    );
    let missing = dir.path().join("absent.toml");
    assert_usage_error(&nas(dir.path(), &["run", "--config", s(&missing)]), &["absent.toml"]);
}
