//! Memory strategies: a selection is drawn from the history given, each
//! entry unchanged, the same input gives the same selection, and LLM tasks
//! a strategy asks for are answered.

use nas_plugin_api::{MemoryEntry, MemoryInput, MemorySelection, MemoryStrategy};

use crate::{must, Report};

/// A realistic history of `n` entries: closed ones with accuracies and
/// failures, non-ASCII text, and the last one open.
pub fn sample_history(n: usize) -> Vec<MemoryEntry> {
    (0..n)
        .map(|i| {
            let i64_ = i as u64;
            let failed = i % 4 == 3;
            let accuracy = (!failed).then(|| 0.40 + (i as f64 * 0.037) % 0.5);
            MemoryEntry {
                iteration: i64_ + 1,
                problem: format!("iteration {i}: the network underfits — loss plateaus at 1.{i:02} (µ, 深度)"),
                suggestion: format!(
                    "add a residual block with {} channels and BatchNorm; keep dropout at 0.{}",
                    32 << (i % 3),
                    i % 5
                ),
                outcome: if i + 1 == n {
                    None
                } else if failed {
                    Some(format!("error: RuntimeError: shape mismatch at layer {i}"))
                } else {
                    Some(format!("accuracy: {:.2}%", accuracy.unwrap_or(0.0) * 100.0))
                },
                accuracy: if i + 1 == n { None } else { accuracy },
                failure_kind: (failed && i + 1 != n).then(|| "shape".to_string()),
                best_before: (i > 0).then_some(0.40 + (i as f64 * 0.01)),
            }
        })
        .collect()
}

/// Entries are the same, with floats equal to within 1e-12 (serde_json's
/// default float parsing, on the JSON path of the native door, may be off by
/// one unit in the last place).
fn same_entry(a: &MemoryEntry, b: &MemoryEntry) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12,
        (None, None) => true,
        _ => false,
    };
    a.iteration == b.iteration
        && a.problem == b.problem
        && a.suggestion == b.suggestion
        && a.outcome == b.outcome
        && a.failure_kind == b.failure_kind
        && close(a.accuracy, b.accuracy)
        && close(a.best_before, b.best_before)
}

fn select(s: &mut dyn MemoryStrategy, input: &MemoryInput) -> Result<MemorySelection, String> {
    must("select", || s.select(input))
}

/// Selects, answering any LLM task the strategy asks for with a fixed reply
/// (at most three rounds).
fn select_answering(s: &mut dyn MemoryStrategy, input: &MemoryInput) -> Result<MemorySelection, String> {
    let mut input = input.clone();
    for _ in 0..3 {
        let out = select(s, &input)?;
        if out.llm_task.is_none() {
            return Ok(out);
        }
        input.llm_reply = Some("Summary: residual blocks helped; shape errors came from flattening.".into());
        input.state = out.state.clone();
    }
    Err("still asks for an LLM task after three answered rounds".into())
}

/// Runs the memory-strategy checks against `strategy`.
///
/// Checks: `empty_history`, `only_given_entries`, `no_duplicates`,
/// `text_round_trips`, `accepts_open_entry`, `deterministic`,
/// `state_round_trips`, `llm_task_answered`, `many_calls`.
pub fn check_memory(strategy: &mut dyn MemoryStrategy) -> Report {
    let mut r = Report::default();
    let history = sample_history(50);
    let input = MemoryInput { entries: history.clone(), iteration: 51, state: None, llm_reply: None };

    r.record(
        "empty_history",
        select_answering(strategy, &MemoryInput::default()).and_then(|o| {
            if o.entries.is_empty() {
                Ok(())
            } else {
                Err(format!("{} entries selected from an empty history", o.entries.len()))
            }
        }),
    );

    let first = select_answering(strategy, &input);
    r.record(
        "only_given_entries",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            match o.entries.iter().find(|e| !history.iter().any(|h| h.iteration == e.iteration)) {
                Some(e) => Err(format!("selected entry of iteration {} is not in the history", e.iteration)),
                None if o.entries.len() > history.len() => Err("more entries than the history has".into()),
                None => Ok(()),
            }
        }),
    );
    r.record(
        "no_duplicates",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            let mut seen: Vec<u64> = o.entries.iter().map(|e| e.iteration).collect();
            seen.sort_unstable();
            let before = seen.len();
            seen.dedup();
            if seen.len() == before {
                Ok(())
            } else {
                Err("an entry was selected twice".into())
            }
        }),
    );
    r.record(
        "text_round_trips",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            for e in &o.entries {
                if let Some(h) = history.iter().find(|h| h.iteration == e.iteration) {
                    if !same_entry(h, e) {
                        return Err(format!("entry of iteration {} changed on the way: {e:?} vs {h:?}", e.iteration));
                    }
                }
            }
            Ok(())
        }),
    );
    r.record(
        "accepts_open_entry",
        first.as_ref().map_err(Clone::clone).map(|_| ()).and_then(|_| {
            if history.last().is_some_and(|e| e.outcome.is_none()) {
                Ok(())
            } else {
                Err("the sample history should end open".into())
            }
        }),
    );
    r.record(
        "deterministic",
        first.as_ref().map_err(Clone::clone).and_then(|a| {
            let b = select_answering(strategy, &input)?;
            if a.entries.len() == b.entries.len()
                && a.entries.iter().zip(&b.entries).all(|(x, y)| same_entry(x, y))
                && a.summary == b.summary
            {
                Ok(())
            } else {
                Err("the same input gave a different selection".into())
            }
        }),
    );
    r.record(
        "state_round_trips",
        first.as_ref().map_err(Clone::clone).and_then(|o| {
            let next =
                MemoryInput { entries: sample_history(51), iteration: 52, state: o.state.clone(), llm_reply: None };
            select_answering(strategy, &next).map(|_| ())
        }),
    );
    r.record(
        "llm_task_answered",
        (|| {
            let out = select(strategy, &input)?;
            match out.llm_task {
                None => Ok(()),
                Some(task) if task.is_empty() => Err("asked for an LLM task with no messages".into()),
                Some(_) => select_answering(strategy, &input).map(|_| ()),
            }
        })(),
    );
    r.record(
        "many_calls",
        (|| {
            for n in 0..60 {
                let inp =
                    MemoryInput { entries: sample_history(n), iteration: n as u64 + 1, state: None, llm_reply: None };
                select_answering(strategy, &inp).map_err(|e| format!("history of {n}: {e}"))?;
            }
            Ok(())
        })(),
    );
    r
}

/// Checks that two strategies choose the same on histories of every length
/// from 0 to `max_len` (e.g. a native and a wasm build of one strategy).
pub fn check_memory_equivalent(a: &mut dyn MemoryStrategy, b: &mut dyn MemoryStrategy, max_len: usize) -> Report {
    let mut r = Report::default();
    r.record(
        "same_selection",
        (|| {
            for n in 0..=max_len {
                let input =
                    MemoryInput { entries: sample_history(n), iteration: n as u64 + 1, state: None, llm_reply: None };
                let x = select_answering(a, &input)?;
                let y = select_answering(b, &input)?;
                if x.summary != y.summary {
                    return Err(format!("history of {n}: summary {:?} vs {:?}", x.summary, y.summary));
                }
                if x.entries.len() != y.entries.len() {
                    return Err(format!(
                        "history of {n}: {:?} vs {:?}",
                        x.entries.iter().map(|e| e.iteration).collect::<Vec<_>>(),
                        y.entries.iter().map(|e| e.iteration).collect::<Vec<_>>()
                    ));
                }
                if let Some((a, b)) = x.entries.iter().zip(&y.entries).find(|(a, b)| !same_entry(a, b)) {
                    return Err(format!("history of {n}: entry {a:?} vs {b:?}"));
                }
            }
            Ok(())
        })(),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_plugin_api::PluginError;

    struct Window(usize);
    impl MemoryStrategy for Window {
        fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
            let start = input.entries.len().saturating_sub(self.0);
            Ok(MemorySelection { entries: input.entries[start..].to_vec(), ..Default::default() })
        }
    }

    struct Inventor;
    impl MemoryStrategy for Inventor {
        fn select(&mut self, _input: &MemoryInput) -> Result<MemorySelection, PluginError> {
            Ok(MemorySelection {
                entries: vec![MemoryEntry { iteration: 999, ..Default::default() }],
                ..Default::default()
            })
        }
    }

    #[test]
    fn a_window_passes_and_an_inventor_fails() {
        let r = check_memory(&mut Window(5));
        assert!(r.all_passed(), "{r}");
        let r = check_memory(&mut Inventor);
        let failed: Vec<_> = r.failures().iter().map(|c| c.name).collect();
        assert!(failed.contains(&"empty_history") && failed.contains(&"only_given_entries"), "{r}");
    }

    #[test]
    fn equivalence_spots_a_different_window() {
        assert!(check_memory_equivalent(&mut Window(5), &mut Window(5), 20).all_passed());
        assert!(!check_memory_equivalent(&mut Window(5), &mut Window(4), 20).all_passed());
    }
}
