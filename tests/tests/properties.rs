//! Property tests of the host's parsers of untrusted text: the generator's
//! diffs, the Prompt Improver's answers, run configurations and wasm plugin
//! manifests. None panics on any input, and each gives back what a
//! well-formed input says. (Coverage-guided fuzz targets for the same
//! parsers live in `host/fuzz/`.)

use std::path::Path;

use nas_host::config::{parse as parse_config, ConfigError, GenerationMode, RunConfig};
use nas_host::search::delta::{apply, Applied};
use nas_host::search::improver::parse as parse_advice;
use nas_host::wasm::manifest::WasmManifest;
use proptest::prelude::*;

/// Python-ish lines from a small vocabulary, so that two files share lines
/// and their diffs have context, several hunks, and repeated lines.
fn source() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("import torch.nn as nn"),
        Just("class Net(nn.Module):"),
        Just("    def __init__(self):"),
        Just("        super().__init__()"),
        Just("        self.conv = nn.Conv2d(1, 16, 3)"),
        Just("        self.fc = nn.Linear(16, 10)"),
        Just(""),
        Just("    def forward(self, x):"),
        Just("        x = self.conv(x).relu()"),
        Just("        return self.fc(x)"),
        Just("--- not a header"),
        Just("+++ nor this"),
        Just("@@ nor this @@"),
        Just("\\ backslash"),
        Just("    # é€"),
    ];
    (proptest::collection::vec(line, 0..30), any::<bool>()).prop_map(|(lines, newline)| {
        let mut s = lines.join("\n");
        if newline && !s.is_empty() {
            s.push('\n');
        }
        s
    })
}

/// Diff-shaped text: headers, hunk headers with any numbers, context,
/// deletions, additions, and noise.
fn diff_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("--- a/net.py".to_string()),
        Just("+++ b/net.py".to_string()),
        (0usize..40, 0usize..5, 0usize..40, 0usize..5).prop_map(|(a, b, c, d)| format!("@@ -{a},{b} +{c},{d} @@")),
        Just("@@ -1 +1 @@".to_string()),
        Just("@@".to_string()),
        Just(" class Net(nn.Module):".to_string()),
        Just("     def forward(self, x):".to_string()),
        Just("-        x = self.conv(x).relu()".to_string()),
        Just("+        x = self.conv(x).gelu()".to_string()),
        Just(" ".to_string()),
        Just("".to_string()),
        Just("\\ No newline at end of file".to_string()),
        "[ +-]?\\PC{0,20}",
    ];
    proptest::collection::vec(line, 0..25).prop_map(|l| l.join("\n"))
}

/// Found by the `delta` fuzz target (input `"\0@@\n\n@@\n-"`): a hunk of
/// context lines only that matched nothing made the fuzzy search slice its
/// old lines past their end and panic.
#[test]
fn a_context_only_hunk_that_matches_nothing_is_a_failure_not_a_panic() {
    let e = apply("", "@@\n\n@@\n-").expect_err("nothing to match");
    assert!(e.0.contains("hunk 1"), "{e}");
    let e = apply("a\n", "@@ -1 +1 @@\n nomatch\n@@ -1 +1 @@\n-a\n+b\n").expect_err("hunk 1 matches nothing");
    assert!(e.0.contains("hunk 1") && e.0.contains("nomatch"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn a_diff_made_by_diffy_from_a_to_b_applies_to_a_giving_b(a in source(), b in source()) {
        prop_assume!(a != b);
        let patch = diffy::create_patch(&a, &b).to_string();
        let (out, how) = apply(&a, &patch).map_err(|e| TestCaseError::fail(format!("{e}\n{patch}")))?;
        prop_assert_eq!(out, b, "{}", patch);
        prop_assert_eq!(how, Applied::Exact);
    }

    #[test]
    fn applying_any_diff_never_panics(parent in source(), diff in diff_text()) {
        if let Ok((out, _)) = apply(&parent, &diff) {
            prop_assert!(out.len() <= parent.len() + diff.len() + 1);
        }
    }

    #[test]
    fn the_improver_reader_never_panics_on_arbitrary_text(answer in "\\PC{0,400}") {
        let advice = parse_advice(&answer);
        prop_assert!(["json_fence", "bare_object", "lenient", "raw"].contains(&advice.parsed_as.as_str()));
    }

    #[test]
    fn the_improver_reader_never_panics_on_near_json(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("\""), Just("\\"), Just(","), Just(":"), Just("["), Just("]"),
                Just("```json\n"), Just("```\n"), Just("reason"), Just("improvement_suggestions"),
                Just("analysis"), Just("inspiration"), Just(" = "), Just("\n"), Just("é"), Just("null"),
            ],
            0..60,
        )
    ) {
        let answer = pieces.concat();
        let advice = parse_advice(&answer);
        if advice.parsed_as == "raw" {
            prop_assert_eq!(advice.suggestions, answer.trim());
        }
    }

    #[test]
    fn the_papers_json_comes_back_from_a_fence_or_from_prose(
        reason in "\\PC{0,80}", inspiration in "\\PC{0,40}", suggestions in "\\PC{1,80}", fenced in any::<bool>(),
    ) {
        prop_assume!(!suggestions.trim().is_empty());
        let json = serde_json::json!({
            "reason": reason, "inspiration": inspiration, "improvement_suggestions": suggestions,
        });
        let answer = if fenced { format!("Here it is:\n```json\n{json:#}\n```\n") } else { format!("Answer: {json} done") };
        let advice = parse_advice(&answer);
        prop_assert_eq!(advice.parsed_as.as_str(), if fenced { "json_fence" } else { "bare_object" });
        prop_assert_eq!(advice.problem, reason.trim());
        prop_assert_eq!(advice.inspiration, inspiration.trim());
        prop_assert_eq!(advice.suggestions, suggestions.trim());
    }

    #[test]
    fn parsing_a_config_never_panics_and_errors_name_a_real_line(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[run]".to_string()), Just("[search]".to_string()), Just("[memory]".to_string()),
                Just("[memory.settings]".to_string()), Just("[generator]".to_string()),
                Just("plugin = \"builtin:memory.window\"".to_string()),
                Just("plugin = \"ftp:x\"".to_string()),
                Just("max_iterations = 3".to_string()), Just("novelty_threshold = 2.5".to_string()),
                Just("mode = \"delta\"".to_string()), Just("name = \"x\"".to_string()),
                Just("k = nan".to_string()), Just("x = [1, \"a\"]".to_string()),
                "\\PC{0,30}",
            ],
            0..15,
        )
    ) {
        let text = lines.join("\n");
        match parse_config(&text, Path::new("run.toml")) {
            Ok(config) => {
                let again = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = parse_config(&again, Path::new("again.toml"))
                    .map_err(|e| TestCaseError::fail(format!("{e}\n{again}")))?;
                prop_assert_eq!(toml::to_string(&back).map_err(|e| TestCaseError::fail(e.to_string()))?, again);
            }
            Err(ConfigError::Invalid { line, column, .. }) => {
                prop_assert!(line >= 1 && column >= 1);
                prop_assert!(line <= text.matches('\n').count() + 1, "line {} of {:?}", line, text);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn a_config_written_out_parses_back_equal(
        // TOML integers are i64: a seed above i64::MAX cannot be written to a config file.
        name in "[a-z][a-z0-9-]{0,12}", seed in 0..=i64::MAX as u64, iterations in 1u64..10_000,
        novelty in 0.01f64..=1.0, delta in any::<bool>(), k in 1i64..50,
    ) {
        let mut config = RunConfig::default();
        config.run.name = name;
        config.run.seed = seed;
        config.search.max_iterations = iterations;
        config.search.novelty_threshold = novelty;
        config.search.mode = if delta { GenerationMode::Delta } else { GenerationMode::Full };
        config.memory.settings.insert("k".into(), toml::Value::Integer(k));
        let text = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = parse_config(&text, Path::new("run.toml")).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, config);
    }

    #[test]
    fn reading_a_wasm_manifest_never_panics(text in "\\PC{0,200}") {
        if let Ok(m) = toml::from_str::<WasmManifest>(&text) {
            let _ = m.check();
        }
    }

    #[test]
    fn a_well_formed_wasm_manifest_passes_its_checks(
        name in "[a-z][a-z0-9_.-]{0,15}", sha in "[0-9a-f]{64}", major in 0u32..5, minor in 0u32..20,
        hosts in proptest::collection::vec("[a-z]{1,8}(\\.[a-z]{2,5})?(:[0-9]{2,5})?", 0..3),
        memory in (64u64 * 1024)..(1 << 32),
    ) {
        let text = format!(
            "id = \"llm.{name}\"\nkind = \"llm\"\nversion = \"0.1.0\"\napi_version = \"{major}.{minor}\"\n\
             sha256 = \"{sha}\"\nallowed_hosts = {hosts:?}\nmemory_max_bytes = {memory}\n"
        );
        let m: WasmManifest = toml::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        m.check().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let api = m.api().map_err(TestCaseError::fail)?;
        prop_assert_eq!((api.major, api.minor), (major as _, minor as _));
    }
}
