//! The `nas` binary as `cargo test` builds it. This target also makes
//! `cargo test --workspace` build the plain binary with the tests' features,
//! so the workspace's tests (`nas_tests::nas_bin`) run that build instead of
//! compiling the host a second time with other features.

use std::process::Command;

fn nas(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_nas"))
        .args(args)
        .current_dir(dir.path())
        .env("NAS_HOME", dir.path().join(".nas-home"))
        .output()
        .expect("nas runs")
}

#[test]
fn version_and_help_work_on_every_command() {
    let out = nas(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("nas {}", env!("CARGO_PKG_VERSION")));
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["resume", "--help"],
        vec!["plugins", "--help"],
        vec!["plugins", "list", "--help"],
        vec!["plugins", "check", "--help"],
    ] {
        let out = nas(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{args:?}");
    }
    let out = nas(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
