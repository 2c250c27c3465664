//! Cargo started from inside a test, to build a plugin library the test
//! loads.

use std::process::Command;

/// A command running the cargo that runs the tests (`CARGO`, else `cargo`),
/// without the variables cargo sets for the test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …). Some build scripts (ring's)
/// rerun when one of those changes, and cargo compares them against its own
/// environment: with them left in, a cargo started by a test rebuilds ring
/// and every crate above it (rustls, reqwest, the LLM clients, the host), and
/// the next plain `cargo` rebuilds them all back.
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CFG_", "CARGO_BIN_", "CARGO_CRATE_"]
            .iter()
            .any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"]
                .contains(&name.as_ref());
        if set_for_tests {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// `cargo build --release` of `targets` of the workspace as
/// `cargo test --workspace` builds them: the whole workspace selected, with
/// the tests' dev-dependencies (the host's own `cli` test asks for them).
/// Cargo resolves features per selection, so a `-p` build would compile the
/// host and the crates under it a second time with other features; this one
/// is no build at all after `cargo test --workspace --no-run` (what
/// `scripts/setup.sh --tests` runs), and a single shared one otherwise.
pub fn build_as_the_tests_do(targets: &[&str]) -> Command {
    let mut cmd = cargo_command();
    cmd.args(["build", "--release", "--workspace"]).args(targets).args(["--test", "cli"]);
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_variables_cargo_sets_for_a_test_are_left_out_and_the_users_kept() {
        // Cargo sets CARGO_PKG_NAME and CARGO_MANIFEST_DIR for this test.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some() && std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let cmd = super::cargo_command();
        let removed: Vec<String> =
            cmd.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert!(removed.iter().any(|k| k == "CARGO_PKG_NAME"), "{removed:?}");
        assert!(removed.iter().any(|k| k == "CARGO_MANIFEST_DIR"), "{removed:?}");
        assert!(removed.iter().all(|k| k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" && k != "PATH"), "{removed:?}");
    }
}
