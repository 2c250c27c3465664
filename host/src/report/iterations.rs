//! `iterations.md`: each run's iterations one row each, in words: the
//! outcome (the accuracy, or the failure's kind and first line), what the
//! loop did on the way (answers asked for again, repairs, refused
//! diagnoses, fallback changes, a change the search made itself), the
//! candidate's size and cost, and the best so far.

use std::fmt::Write as _;

use super::Group;
use crate::records::{IterationRecord, Outcome, Regenerated};

/// The most characters of a failure's message shown in a row.
const MESSAGE_CHARS: usize = 160;

/// The outcome in words: `trained: 88.95%`, `failed (runtime): mat1 and
/// mat2 ...`, `duplicate of 3 (similarity 0.97)`.
pub fn outcome(r: &IterationRecord) -> String {
    match &r.outcome {
        Outcome::Ok { report } => format!("trained: {:.2}%", report.accuracy * 100.0),
        Outcome::Failed { failure } => {
            let first = failure.message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
            format!("failed ({}): {}", failure.kind, nas_plugin_api::text::truncate_chars(first, MESSAGE_CHARS))
        }
        Outcome::Duplicate { of, network: true, .. } => format!("duplicate of {of} (the same network)"),
        Outcome::Duplicate { of, similarity, .. } => format!("duplicate of {of} (similarity {similarity:.2})"),
    }
}

fn asked_again(g: &Regenerated) -> String {
    let mut s = match (&g.of, &g.failed) {
        (Some(of), _) => format!("asked again: repeated {of}"),
        (None, Some(f)) => format!("asked to fix: {}", f.kind),
        (None, None) => "asked again: no usable code".to_string(),
    };
    if let Some(change) = &g.fallback {
        let _ = write!(s, " (given a fallback change instead: {change})");
    }
    s
}

/// What the loop did within the iteration, in order, `; `-separated (empty
/// when the generator's first answer went straight to training).
pub fn actions(r: &IterationRecord) -> String {
    let mut done: Vec<String> = r.regenerated.iter().map(asked_again).collect();
    if let Some(of) = r.same_network_as {
        done.push(format!("the generator's design built attempt {of}'s network again (not trained)"));
    }
    match (&r.made_change, &r.made_on) {
        (Some(change), Some(on)) => done.push(format!(
            "the search made the change on attempt {}'s design ({:.2} %): {change}",
            on.iteration,
            on.accuracy * 100.0
        )),
        (Some(change), None) => done.push(format!("the search made the change: {change}")),
        (None, _) => {}
    }
    // One repair may change several lines of a kind (a softmax call and its
    // module): each kind once, with its first line.
    let mut repairs: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for n in r.repair.iter().filter(|n| n.kind != "change") {
        if !seen.contains(&n.kind.as_str()) {
            seen.push(&n.kind);
            repairs.push(format!("{}, line {}", n.kind, n.line));
        }
    }
    if !repairs.is_empty() {
        done.push(format!("repaired ({})", repairs.join("; ")));
    }
    if let Some(a) = &r.advice {
        if let Some(why) = &a.rejected {
            done.push(format!("diagnosis refused: {why}"));
        }
        if let Some(change) = &a.fallback {
            done.push(format!("fallback change given: {change}"));
        }
    }
    done.join("; ")
}

/// The iteration tables of every run, one section per run.
pub fn markdown(groups: &[Group], title: &str) -> String {
    let mut s = format!("# {title}: iterations\n\n");
    s.push_str(
        "Each iteration of each run: its outcome, what the loop did on the way to it (answers of the \
         generator asked for again, deterministic repairs before training, Improver answers refused as \
         diagnoses and the changes given instead), the candidate's size and cost as the evaluator measured \
         them, and the best accuracy after it.\n\n",
    );
    for g in groups {
        for run in &g.runs {
            let islands = run.records.iter().any(|r| r.island != 0);
            let cycles = run.records.iter().any(|r| r.cycle != 0);
            let _ = write!(s, "## {}\n\n", run.label);
            let trained = run.records.iter().filter(|r| matches!(r.outcome, Outcome::Ok { .. })).count();
            let _ = write!(s, "{} of {} trained", trained, run.records.len());
            if let Some((it, acc)) = run.summary.best {
                let _ = write!(s, "; best {:.2}% (iteration {it})", acc * 100.0);
            }
            s.push_str(".\n\n");
            if run.records.is_empty() {
                continue;
            }
            let mut header = vec!["iteration"];
            if islands {
                header.push("island");
            }
            if cycles {
                header.push("cycle");
            }
            header.extend(["outcome", "what the loop did", "params", "MFLOPs per example", "epoch", "best so far"]);
            let _ = writeln!(s, "| {} |", header.join(" | "));
            let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
            for (r, best) in run.records.iter().zip(&run.summary.best_so_far) {
                let measured = match &r.outcome {
                    Outcome::Ok { report } => Some(report),
                    _ => r.over_limit.as_ref(),
                };
                let mut cells = vec![r.iteration.to_string()];
                if islands {
                    cells.push(r.island.to_string());
                }
                if cycles {
                    cells.push(r.cycle.to_string());
                }
                cells.push(outcome(r));
                cells.push(actions(r));
                cells.push(
                    measured.and_then(|m| m.params).map(|p| format!("{:.2} M", p as f64 / 1e6)).unwrap_or_default(),
                );
                cells
                    .push(measured.and_then(|m| m.flops).map(|f| format!("{:.0}", f as f64 / 1e6)).unwrap_or_default());
                cells.push(measured.and_then(|m| m.epoch_seconds).map(|e| format!("{e:.0} s")).unwrap_or_default());
                cells.push(best.map(|b| format!("{:.2}%", b * 100.0)).unwrap_or_else(|| "-".into()));
                let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|").replace('\n', " ")).collect();
                let _ = writeln!(s, "| {} |", cells.join(" | "));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Advice;
    use crate::search::repair::RepairNote;
    use nas_plugin_api::{CandidateFailure, EvalReport, FailureKind};

    /// A record of a plain search (the helper's records are of cycle 1).
    fn rec(t: u64, outcome: Outcome) -> IterationRecord {
        let mut r = crate::cycles::select::tests::record(t, "class Net:\n    pass\n", outcome);
        r.cycle = 0;
        r
    }

    fn note(kind: &str, line: usize) -> RepairNote {
        RepairNote { kind: kind.into(), line, before: "a".into(), after: "b".into(), failure: None }
    }

    #[test]
    fn a_row_says_what_happened_and_what_the_loop_did() {
        let report = EvalReport {
            accuracy: 0.8895,
            params: Some(421_642),
            flops: Some(8_512_000),
            epoch_seconds: Some(43.9),
            ..Default::default()
        };
        let mut ok = rec(4, Outcome::Ok { report });
        ok.repair = vec![note("softmax", 30), note("softmax", 12), note("flatten", 22)];
        ok.regenerated = vec![
            Regenerated {
                of: Some(1),
                similarity: Some(0.99),
                answer: String::new(),
                retry: String::new(),
                fallback: Some("Add nn.Dropout(0.3).".into()),
                failed: None,
            },
            Regenerated {
                of: None,
                similarity: None,
                answer: String::new(),
                retry: String::new(),
                fallback: None,
                failed: Some(CandidateFailure::new("check", FailureKind::Shape, "x")),
            },
        ];
        ok.advice = Some(Advice {
            rejected: Some("it repeats the change of attempt 3".into()),
            fallback: Some("Double the out_channels of the last nn.Conv2d.".into()),
            ..Default::default()
        });
        assert_eq!(outcome(&ok), "trained: 88.95%");
        assert_eq!(
            actions(&ok),
            "asked again: repeated 1 (given a fallback change instead: Add nn.Dropout(0.3).); asked to fix: shape; \
             repaired (softmax, line 30; flatten, line 22); diagnosis refused: it repeats the change of attempt 3; \
             fallback change given: Double the out_channels of the last nn.Conv2d."
        );

        let long = format!(
            "mat1 and mat2 shapes cannot be multiplied (2x2304 and 12544x512) {}\nsecond line",
            "x".repeat(300)
        );
        let failed = rec(5, Outcome::Failed { failure: CandidateFailure::new("train", FailureKind::Runtime, long) });
        let o = outcome(&failed);
        assert!(
            o.starts_with("failed (runtime): mat1 and mat2 shapes cannot be multiplied (2x2304 and 12544x512)"),
            "{o}"
        );
        assert!(!o.contains("second line") && o.chars().count() < 200, "{o}");
        assert_eq!(actions(&failed), "");
        assert_eq!(
            outcome(&rec(6, Outcome::Duplicate { of: 2, similarity: 0.987, network: false })),
            "duplicate of 2 (similarity 0.99)"
        );
        // A change the search made, on the best and on a next-best design.
        let mut made = rec(7, Outcome::Ok { report: EvalReport { accuracy: 0.89, ..Default::default() } });
        made.made_change = Some("Use kernel_size=5 and padding=2 in the first nn.Conv2d.".into());
        assert_eq!(
            actions(&made),
            "the search made the change: Use kernel_size=5 and padding=2 in the first nn.Conv2d."
        );
        made.made_on = Some(crate::records::MadeOn { iteration: 25, accuracy: 0.8956 });
        assert_eq!(
            actions(&made),
            "the search made the change on attempt 25's design (89.56 %): Use kernel_size=5 and padding=2 in the first nn.Conv2d."
        );
        // The same network as an earlier attempt's, written otherwise.
        assert_eq!(
            outcome(&rec(8, Outcome::Duplicate { of: 3, similarity: 1.0, network: true })),
            "duplicate of 3 (the same network)"
        );
        made.made_on = None;
        made.same_network_as = Some(3);
        assert!(
            actions(&made).starts_with(
                "the generator's design built attempt 3's network again (not trained); the search made the change: "
            ),
            "{}",
            actions(&made)
        );
    }

    fn run_of(records: Vec<IterationRecord>) -> super::super::RunData {
        super::super::RunData::of(records, Vec::new())
    }

    #[test]
    fn the_table_has_a_row_per_iteration_with_the_best_so_far() {
        let ok = |t, a| rec(t, Outcome::Ok { report: EvalReport { accuracy: a, ..Default::default() } });
        let failed = rec(2, Outcome::Failed { failure: CandidateFailure::new("train", FailureKind::Runtime, "a | b") });
        let run = run_of(vec![ok(1, 0.80), failed, ok(3, 0.85)]);
        let md = markdown(&[Group { name: "r".into(), runs: vec![run] }], "nas report");
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| iteration")).collect();
        assert_eq!(rows.len(), 3, "{md}");
        assert!(md.contains("2 of 3 trained; best 85.00% (iteration 3)"), "{md}");
        assert!(
            rows[1].starts_with("| 2 | failed (runtime): a \\| b |"),
            "a pipe in a message is escaped: {}",
            rows[1]
        );
        assert!(rows[1].ends_with("| 80.00% |"), "{}", rows[1]);
        assert!(rows[2].ends_with("| 85.00% |"), "{}", rows[2]);
        assert!(!md.contains("| island |") && !md.contains("| cycle |"), "no island or cycle column in a plain run");
        // A cycle's records say their cycle.
        let mut run = run_of(vec![ok(1, 0.80)]);
        run.records[0].cycle = 2;
        let md = markdown(&[Group { name: "r".into(), runs: vec![run] }], "nas report");
        assert!(md.contains("| iteration | cycle | outcome |") && md.contains("| 1 | 2 | trained: 80.00% |"), "{md}");
    }
}
