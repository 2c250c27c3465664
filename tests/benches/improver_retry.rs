//! How often the Prompt Improver's second answer is taken, asked the way the
//! search asks now against the way the kept target runs asked it, on the
//! answers those runs refused.
//!
//! The kept target runs (`docs/results/embedded-run/target-run-{3,4,5}`,
//! `NAS_RETRY_STORES` for others, space-separated store directories, relative
//! to the workspace's root) asked
//! a refused Improver again by continuing the conversation: the refused
//! answer as the model's own turn, then the refusal. Each such iteration is
//! asked again here the way the search asks now: a fresh turn, the first
//! prompt with the refusal shown above its instruction (`improver_retry.md`
//! as `improver.md` includes it), never the refused answer; on the embedded
//! model (`llm.local`, Qwen2.5-Coder-1.5B), with the seed and temperature
//! the run's retry had. Each answer is checked as the search checks it
//! (`improver::rejection`, against the run's previous answer, memory and
//! designs as they were at that iteration), and compared with the refused
//! answer. The continued conversation is asked again too, as the run asked
//! it, side by side (`NAS_RETRY_CONTINUED=0` leaves it to the run's record):
//! a sampled answer is not the recorded one again (the run's kept context
//! read the refused answer token by token as it wrote it, a new context reads
//! it as a prompt in batches, and at temperature 1.0 the last bits move the
//! draws), so both ways are compared as sampled now.
//!
//! `NAS_RETRY_CASES=N` stops after N cases. Writes
//! `docs/results/improver-retry-bench.md` (`NAS_RETRY_OUT` to write
//! elsewhere).
//!
//! ```sh
//! cargo bench -p nas-tests --bench improver_retry
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use nas_host::records::IterationRecord;
use nas_host::search::improver::{self, Checked};
use nas_host::search::prompts::Prompts;
use nas_host::store::Store;
use nas_llm_local::{default_models_dir, find_model, LocalBackend, LocalSettings, DEFAULT_MODEL};
use nas_plugin_api::{ChatMessage, ChatRequest, LlmBackend, MemoryEntry};
use nas_tests::workspace_root;

/// The retry message the kept runs sent, around its reason.
const OLD_RETRY_HEAD: &str = "That answer is not a diagnosis: ";
const OLD_RETRY_TAIL: &str = ". Look again";

/// One refused answer asked again.
struct Case {
    run: String,
    iteration: u64,
    why: String,
    /// The run's second answer: taken, the first word for word.
    old_taken: bool,
    old_verbatim: bool,
    /// The continued conversation asked now: taken, word for word.
    continued: Option<(bool, bool)>,
    /// Asked in a fresh turn.
    new_taken: bool,
    new_verbatim: bool,
    new_why: Option<String>,
    new_seconds: f64,
}

fn main() {
    let root = workspace_root();
    let stores: Vec<PathBuf> = match std::env::var("NAS_RETRY_STORES") {
        Ok(s) => s.split_whitespace().map(|p| root.join(p)).collect(),
        Err(_) => ["target-run-3", "target-run-4", "target-run-5"]
            .iter()
            .map(|r| root.join("docs/results/embedded-run").join(r).join("store"))
            .collect(),
    };
    let limit: usize = std::env::var("NAS_RETRY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    let continued = std::env::var("NAS_RETRY_CONTINUED").map_or(true, |v| v != "0");
    let out = std::env::var("NAS_RETRY_OUT")
        .map(|p| root.join(p))
        .unwrap_or_else(|_| root.join("docs/results/improver-retry-bench.md"));

    let model =
        default_models_dir().join(find_model(DEFAULT_MODEL).expect("the default model is in the catalogue").file);
    assert!(model.is_file(), "{} is missing: run `nas models fetch {DEFAULT_MODEL}`", model.display());
    let settings: LocalSettings = serde_json::from_value(serde_json::json!({})).expect("default settings");
    let mut backend = LocalBackend::load(&model, settings, None).expect("load the embedded model");
    let prompts = Prompts::new("mnist", None);

    let mut cases = Vec::new();
    let mut unmatched = Vec::new();
    let started = Instant::now();
    'stores: for store_dir in &stores {
        let run =
            store_dir.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let config: toml::Value = toml::from_str(
            &std::fs::read_to_string(store_dir.join("config.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}", store_dir.join("config.toml").display())),
        )
        .expect("the run's config parses");
        let seed = config["run"]["seed"].as_integer().unwrap_or(43) as u64;
        let temperature = config["search"].get("retry_temperature").and_then(toml::Value::as_float).map(|t| t as f32);
        // A copy: opening a store may write to it.
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(store_dir.join("run.sqlite"), copy.path().join("run.sqlite")).expect("copy the store");
        let store = Store::open(copy.path()).expect("open the store");
        let records = store.iterations().expect("records");
        let memory = store.memory().expect("memory");
        for (i, rec) in records.iter().enumerate() {
            let Some(asked) = rec.improver_prompt.as_ref().filter(|p| p.len() == 4) else { continue };
            if cases.len() >= limit {
                break 'stores;
            }
            let why = asked[3]
                .content
                .strip_prefix(OLD_RETRY_HEAD)
                .and_then(|s| s.split(OLD_RETRY_TAIL).next())
                .expect("the kept runs' retry message")
                .to_string();
            let earlier: Vec<MemoryEntry> = memory.iter().filter(|e| e.iteration < rec.iteration).cloned().collect();
            let designs = designs(rec, &records);
            let checked = Checked {
                previous: i.checked_sub(1).and_then(|p| records[p].advice.as_ref()),
                earlier: &earlier,
                code: designs.as_deref(),
                best: rec.best.map(|(_, a)| a),
            };
            // The refusal found again from what is rebuilt here: else the
            // rebuilt state is not the run's, and the case is left out.
            let first = &asked[2].content;
            if improver::rejection(&improver::parse(first), &checked).as_deref() != Some(why.as_str()) {
                unmatched.push(format!("{run} {}", rec.iteration));
                continue;
            }
            let second = rec.improver_response.as_ref().map(|r| r.content.clone()).unwrap_or_default();
            let old_taken = rec.advice.as_ref().is_some_and(|a| a.rejected.is_none());
            let request = |messages: Vec<ChatMessage>| ChatRequest {
                messages,
                seed: Some(seed.wrapping_add(rec.iteration * 16 + 1)),
                purpose: Some("improver".into()),
                temperature,
                ..Default::default()
            };
            let continued = continued.then(|| {
                let again = backend.complete(&request(asked.clone())).expect("the embedded model answers");
                let taken = improver::rejection(&improver::parse(&again.content), &checked).is_none();
                (taken, again.content.trim() == first.trim())
            });
            let messages = fresh_turn(&prompts, asked, &why, rec.iteration);
            let t0 = Instant::now();
            let answer = backend.complete(&request(messages)).expect("the embedded model answers");
            let new_why = improver::rejection(&improver::parse(&answer.content), &checked);
            let case = Case {
                run: run.clone(),
                iteration: rec.iteration,
                why,
                old_taken,
                old_verbatim: second.trim() == first.trim(),
                continued,
                new_taken: new_why.is_none(),
                new_verbatim: answer.content.trim() == first.trim(),
                new_why,
                new_seconds: t0.elapsed().as_secs_f64(),
            };
            eprintln!(
                "{run} {:>2}: run's retry {} / continued now {} / fresh turn {} ({:.0} s)",
                case.iteration,
                verdict(case.old_taken, case.old_verbatim),
                case.continued.map_or("-", |(t, v)| verdict(t, v)),
                verdict(case.new_taken, case.new_verbatim),
                case.new_seconds
            );
            cases.push(case);
        }
    }
    let report = write_report(&cases, &unmatched, started.elapsed().as_secs_f64());
    std::fs::write(&out, report).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    eprintln!("wrote {}", out.display());
}

/// The designs a suggestion may name, as the search gives them to the check:
/// the diagnosed design's and the best one's.
fn designs(rec: &IterationRecord, records: &[IterationRecord]) -> Option<String> {
    let code = rec.code.as_deref()?;
    let best = rec.best.and_then(|(at, _)| records.iter().find(|r| r.iteration == at)).and_then(|r| r.code.as_deref());
    Some(match best {
        Some(b) => format!("{}\n{}", improver::effective(code), improver::effective(b)),
        None => improver::effective(code),
    })
}

/// The search's retry now: the first prompt, with `improver_retry.md` above
/// its instruction where `improver.md` includes it.
fn fresh_turn(prompts: &Prompts, asked: &[ChatMessage], why: &str, iteration: u64) -> Vec<ChatMessage> {
    let note = prompts
        .render("improver_retry.md", &serde_json::json!({"refused": [why], "current": {"iteration": iteration}}))
        .expect("improver_retry.md renders");
    let first = &asked[1].content;
    let at = first.rfind("\nDiagnose attempt ").expect("the instruction line of improver.md") + 1;
    let user = format!("{}{}\n{}", &first[..at], note.trim_end(), &first[at..]);
    vec![asked[0].clone(), ChatMessage::user(user)]
}

fn verdict(taken: bool, verbatim: bool) -> &'static str {
    match (taken, verbatim) {
        (true, _) => "taken",
        (false, true) => "the refused answer again",
        (false, false) => "refused",
    }
}

fn write_report(cases: &[Case], unmatched: &[String], seconds: f64) -> String {
    let n = cases.len();
    let count = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let pct = |k: usize| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    let figures = |taken: usize, verbatim: usize| {
        format!(
            "taken {taken} times ({:.0} %), the refused answer word for word {verbatim} times ({:.0} %)",
            pct(taken),
            pct(verbatim)
        )
    };
    let mean_s = cases.iter().map(|c| c.new_seconds).sum::<f64>() / n.max(1) as f64;
    let mut s = String::from("# The Prompt Improver asked again: a fresh turn against the continued conversation\n\n");
    s.push_str(
        "Written by `cargo bench -p nas-tests --bench improver_retry` (see its header). Each case is an \
         iteration of a kept target run whose first Improver answer was refused. It is asked again on the \
         embedded model with the run's seed and retry temperature, both ways side by side: as the run asked \
         it (the refused answer shown back as the model's own turn, then the refusal), and in a fresh turn \
         that shows the refusal but not the refused answer (the search's retry now). Each answer is checked \
         as the search checks it. The run's own record of its retry is the third column.\n\n",
    );
    let live = cases.iter().all(|c| c.continued.is_some());
    s.push_str(&format!(
        "**{n} refused answers asked again. A fresh turn's second answer was {}.**",
        figures(count(&|c| c.new_taken), count(&|c| c.new_verbatim))
    ));
    if live && n > 0 {
        s.push_str(&format!(
            " **The continued conversation's, asked now: {}.**",
            figures(count(&|c| c.continued.is_some_and(|(t, _)| t)), count(&|c| c.continued.is_some_and(|(_, v)| v)))
        ));
    }
    s.push_str(&format!(
        " In the runs themselves: {}. A fresh turn's answer took {mean_s:.0} s on average here ({seconds:.0} s \
         for the whole bench).\n\n",
        figures(count(&|c| c.old_taken), count(&|c| c.old_verbatim))
    ));
    if !unmatched.is_empty() {
        s.push_str(&format!(
            "Left out ({}): iterations whose refusal the state rebuilt here does not give again: {}.\n\n",
            unmatched.len(),
            unmatched.join(", ")
        ));
    }
    s.push_str(
        "| run | iteration | refused because | in the run | continued, now | fresh turn | fresh turn refused because |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in cases {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            c.run,
            c.iteration,
            c.why.replace('|', "\\|"),
            verdict(c.old_taken, c.old_verbatim),
            c.continued.map_or("-", |(t, v)| verdict(t, v)),
            verdict(c.new_taken, c.new_verbatim),
            c.new_why.as_deref().unwrap_or("").replace('|', "\\|")
        ));
    }
    s
}
