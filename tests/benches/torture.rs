//! The long form of the crash torture: `nas run` killed with SIGKILL 50
//! times (`NAS_TORTURE_KILLS` to change, `NAS_TORTURE_SEED` for the moments)
//! at seeded moments, resumed after each kill, compared with an
//! uninterrupted run; writes the "Kills" section of
//! `docs/results/reliability.md`.
//!
//! ```sh
//! cargo bench -p nas-tests --bench torture
//! ```

use std::path::Path;

use nas_tests::torture::{torture, KillMoment, TortureConfig};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Replaces the section `## {title}` of a Markdown file (up to the next
/// `## ` heading) with `section`, or appends it.
fn replace_section(path: &Path, title: &str, section: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let heading = format!("## {title}\n");
    let out = match text.find(&heading) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest.find("\n## ").map_or(text.len(), |i| start + heading.len() + i + 1);
            format!("{}{section}{}", &text[..start], &text[end..])
        }
        None => format!("{}\n{section}", text.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(path, out)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let kills: usize = env_or("NAS_TORTURE_KILLS", 50);
    let seed: u64 = env_or("NAS_TORTURE_SEED", 0x5eed_0017);
    let cfg = TortureConfig::for_kills(kills, seed);
    eprintln!("torture: {kills} kills over {} iterations, seed {seed:#x}", cfg.iterations);
    let r = torture(&cfg);
    eprintln!("{r:#?}");

    let list = |v: &[u64]| if v.is_empty() { "0".to_string() } else { format!("{} ({v:?})", v.len()) };
    let mut rows = String::new();
    for moment in [KillMoment::LlmCall, KillMoment::Evaluation, KillMoment::AfterCommit, KillMoment::Random] {
        rows.push_str(&format!(
            "| {} | {} | {} |\n",
            moment.name(),
            r.kills.get(&moment).copied().unwrap_or(0),
            r.confirmed.get(&moment).copied().unwrap_or(0)
        ));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let section = format!(
        r#"## Kills

`nas run` killed with SIGKILL at seeded moments and resumed with
`nas resume` after each kill until it finished, then its run store compared
with an uninterrupted run of the same config (`tests/src/torture.rs`): the
instant fixture evaluator ({eval} ms per evaluation), `llm.openai` against a
loopback server answering each call after {llm} ms, memory window 3, a
scripted mix of valid candidates and `runtime`/`shape` failures. Compared per
iteration: number, code, outcome, accuracy, the Improver's advice and both
roles' prompts; and the memory table.

```sh
cargo bench -p nas-tests --bench torture    # NAS_TORTURE_KILLS={kills} NAS_TORTURE_SEED={seed:#x}
```

| kill aimed | kills | landed there (checked at the kill) |
|---|---|---|
{rows}
"Landed there": for an LLM call, the kill came before the server's delay for
the aimed request was over (no answer sent); for an evaluation, the
evaluator had not yet logged the candidate and no later LLM request had come;
kills aimed after a commit or at random count as aimed.

| figure | value |
|---|---|
| kills survived | {total} of {total} |
| processes started (`nas run` once, then `nas resume`) | {starts} |
| iterations (uninterrupted run) | {iters} |
| iterations lost | {lost} |
| iterations duplicated | {dup} |
| iterations that differ from the uninterrupted run | {diff} |
| memory table equal | {mem} |
| LLM calls made again (killed before the answer was journaled) | {calls} |
| wall time: uninterrupted / killed and resumed | {ref_s:.1} s / {tor_s:.1} s |

{cores} cores. The short form (5 kills) runs in CI as the test
`crash::killed_at_seeded_moments_and_resumed_the_records_equal_an_uninterrupted_run`;
the same test takes `NAS_TORTURE_KILLS`. Other faults of the run store
(the `crash::` tests, `cargo test --release -p nas-tests --test integration crash::`):
the disk filling up during a commit (a 256 KiB tmpfs as output directory:
the error names the store, every commit before it is intact, the run resumes
once the space is freed), a corrupted or truncated `run.sqlite` (`nas resume`
and `nas report` name the file and say it is damaged; its bytes are
unchanged), two `nas resume` of one run (the second refused at once, naming
the run and the holder's pid: `run.lock`), and `nas report` reading a run
while it is written (no error, no lock; counts only grow).
"#,
        eval = cfg.eval_ms,
        llm = cfg.llm_ms,
        total = r.total_kills(),
        starts = r.starts,
        iters = r.reference_iterations,
        lost = list(&r.lost),
        dup = list(&r.duplicated),
        diff = list(&r.differing),
        mem = if r.memory_equal { "yes" } else { "**no**" },
        calls = r.llm_calls_redone,
        ref_s = r.reference_seconds,
        tor_s = r.torture_seconds,
    );
    let doc = nas_tests::workspace_root().join("docs/results/reliability.md");
    if let Err(e) = replace_section(&doc, "Kills", &section) {
        eprintln!("cannot write {}: {e}", doc.display());
        std::process::exit(1);
    }
    println!("{section}");
    let ok = r.lost.is_empty() && r.duplicated.is_empty() && r.differing.is_empty() && r.memory_equal;
    if !ok {
        eprintln!("torture: records differ from the uninterrupted run");
        std::process::exit(1);
    }
}
