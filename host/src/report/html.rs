//! The report page (self-contained HTML: styles inline, figures as inline
//! SVG, no scripts, nothing fetched) and its Markdown twin.

use std::fmt::Write as _;

use super::figures::Figure;
use super::{Group, ReportOptions, RunData};
use crate::records::{IterationRecord, Outcome};
use crate::report::comparison::Comparison;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map(pct).unwrap_or_else(|| "-".into())
}

/// A table: header and rows of cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn html(&self, class: &str) -> String {
        let mut s = format!("<table class=\"{class}\">\n<thead><tr>");
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", escape(h));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for (i, cell) in row.iter().enumerate() {
                let tag = if i == 0 { "th scope=\"row\"" } else { "td" };
                let close = if i == 0 { "th" } else { "td" };
                let _ = write!(s, "<{tag}>{}</{close}>", escape(cell));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table>\n");
        s
    }

    fn markdown(&self) -> String {
        let cell = |c: &String| c.replace('|', "\\|");
        let mut s = format!("| {} |\n", self.header.iter().map(cell).collect::<Vec<_>>().join(" | "));
        s.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for row in &self.rows {
            s.push_str(&format!("| {} |\n", row.iter().map(cell).collect::<Vec<_>>().join(" | ")));
        }
        s
    }
}

fn runs_table(groups: &[Group]) -> Table {
    let header = [
        "run",
        "configuration",
        "status",
        "generator",
        "memory",
        "dataset",
        "seed",
        "iterations",
        "valid rate",
        "best (iteration)",
        "mean acc",
        ">=40%",
        "unique archs",
        "duplicates",
        "tokens",
        "eval s",
        "LLM s",
        "wall s",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for g in groups {
        for run in &g.runs {
            let s = &run.summary;
            rows.push(vec![
                run.label.clone(),
                g.name.clone(),
                match &run.stop_reason {
                    Some(r) => format!("{} ({r})", run.status),
                    None => run.status.clone(),
                },
                run.plugin("generator"),
                run.plugin("memory"),
                run.plugin("dataset"),
                run.seed().map_or_else(|| "-".into(), |s| s.to_string()),
                s.iterations.to_string(),
                format!("{} ({}/{})", pct(s.valid_rate), s.valid, s.iterations),
                s.best.map_or_else(|| "-".into(), |(i, a)| format!("{} ({i})", pct(a))),
                opt_pct(s.mean_accuracy),
                pct(s.fraction_at_least_40),
                s.unique_architectures.to_string(),
                s.duplicates.to_string(),
                run.tokens().to_string(),
                format!("{:.1}", s.eval_seconds),
                format!("{:.1}", run.llm_seconds()),
                format!("{:.1}", s.wall_seconds),
            ]);
        }
    }
    // `nas report` makes a group per run: the configuration column would
    // only repeat the run's name.
    if groups.iter().all(|g| g.runs.iter().all(|r| r.label == g.name)) {
        let (mut header, mut rows) = (header, rows);
        header.remove(1);
        for r in &mut rows {
            r.remove(1);
        }
        return Table { header, rows };
    }
    Table { header, rows }
}

fn failures_table(groups: &[Group]) -> Option<Table> {
    let mut kinds: Vec<String> =
        groups.iter().flat_map(|g| &g.runs).flat_map(|r| r.summary.failures.keys().cloned()).collect();
    kinds.sort();
    kinds.dedup();
    let any_dup = groups.iter().flat_map(|g| &g.runs).any(|r| r.summary.duplicates > 0);
    if any_dup {
        kinds.push("duplicate".into());
    }
    if kinds.is_empty() {
        return None;
    }
    let mut header = vec!["run".to_string()];
    header.extend(kinds.iter().cloned());
    let rows = groups
        .iter()
        .flat_map(|g| &g.runs)
        .map(|r| {
            let mut row = vec![r.label.clone()];
            for k in &kinds {
                let n = if k == "duplicate" {
                    r.summary.duplicates
                } else {
                    r.summary.failures.get(k).copied().unwrap_or(0)
                };
                row.push(n.to_string());
            }
            row
        })
        .collect();
    Some(Table { header, rows })
}

/// The machines that trained each run's designs (`extra.machine` of their
/// reports), for the runs whose trained designs name more than one: which
/// iterations each trained. `None` when every run names one or none.
fn machines_table(groups: &[Group]) -> Option<Table> {
    let mut rows = Vec::new();
    for run in groups.iter().flat_map(|g| &g.runs) {
        let mut by: Vec<(String, Vec<u64>)> = Vec::new();
        for r in &run.records {
            let Outcome::Ok { report } = &r.outcome else { continue };
            let Some(machine) = report.machine() else { continue };
            match by.iter_mut().find(|(m, _)| m == machine) {
                Some((_, its)) => its.push(r.iteration),
                None => by.push((machine.to_string(), vec![r.iteration])),
            }
        }
        if by.len() < 2 {
            continue;
        }
        for (machine, its) in by {
            rows.push(vec![run.label.clone(), machine, its.len().to_string(), spans(&its)]);
        }
    }
    (!rows.is_empty())
        .then(|| Table { header: ["run", "machine", "trained", "iterations"].map(String::from).to_vec(), rows })
}

/// Iterations in ascending order as spans: `1–20, 23, 45–50`.
fn spans(its: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < its.len() {
        let mut j = i;
        while j + 1 < its.len() && its[j + 1] == its[j] + 1 {
            j += 1;
        }
        out.push(if j > i { format!("{}–{}", its[i], its[j]) } else { its[i].to_string() });
        i = j + 1;
    }
    out.join(", ")
}

const MACHINES: &str = "These runs trained their designs on more than one machine (a run resumed elsewhere, or \
islands on several nodes). Float32 training gives other last bits on another processor or torch, so the same \
design at the same seed can score a few tenths of a point apart there: compare scores across machines as draws, \
not as repeats.";

/// What the common changes of `[search] fallback_changes` gave in each
/// run, read from its memory entries (those whose suggestion is the change
/// itself: made on the best design; [`ChangeStats`]): how often each was
/// tried, trained and gave a new best, the mean improvement per attempt and
/// the mean accuracy its trained attempts gained over the best before them,
/// in the order `fallback_order = "gain"` gives. `None` when no run tried one.
fn changes_table(groups: &[Group]) -> Option<Table> {
    use crate::search::improver::{ChangeStats, FALLBACK_CHANGES};
    let mut rows = Vec::new();
    for run in groups.iter().flat_map(|g| &g.runs) {
        let mut tried: Vec<(&str, ChangeStats)> =
            FALLBACK_CHANGES.iter().filter_map(|(c, _)| Some((*c, ChangeStats::of(c, &run.memory)?))).collect();
        tried.sort_by(|a, b| ChangeStats::order(&Some(a.1), &Some(b.1)));
        rows.extend(tried.into_iter().map(|(change, s)| stats_row(&run.label, short_change(change), &s)));
    }
    stats_table("change", rows)
}

/// Where each run's changes came from: the Improver's diagnoses against
/// the search's common changes (memory entries opened with the search's
/// problem, [`FALLBACK_PROBLEM`](crate::search::improver::FALLBACK_PROBLEM)
/// or [`RUNNER_UP_PROBLEM`](crate::search::improver::RUNNER_UP_PROBLEM)),
/// with the figures of [`changes_table`]. `None` when no run has both.
fn sources_table(groups: &[Group]) -> Option<Table> {
    use crate::search::improver::{ChangeStats, FALLBACK_PROBLEM, RUNNER_UP_PROBLEM};
    let mut rows = Vec::new();
    for run in groups.iter().flat_map(|g| &g.runs) {
        let searched =
            |e: &&nas_plugin_api::MemoryEntry| [FALLBACK_PROBLEM, RUNNER_UP_PROBLEM].contains(&e.problem.as_str());
        let improver = ChangeStats::over(run.memory.iter().filter(|e| !searched(e)));
        let search = ChangeStats::over(run.memory.iter().filter(searched));
        let (Some(improver), Some(search)) = (improver, search) else { continue };
        rows.push(stats_row(&run.label, "the Improver's diagnoses", &improver));
        rows.push(stats_row(&run.label, "the search's common changes", &search));
    }
    stats_table("changes from", rows)
}

/// A row of the change tables: the run, what the figures are of, and the
/// figures (improvement per try and mean gain in points).
fn stats_row(run: &str, of: &str, s: &crate::search::improver::ChangeStats) -> Vec<String> {
    vec![
        run.to_string(),
        of.to_string(),
        s.tried.to_string(),
        s.trained.to_string(),
        s.new_bests.to_string(),
        format!("{:.3}", s.improvement * 100.0),
        s.mean_gain.map_or("-".into(), |m| format!("{:+.2}", m * 100.0)),
    ]
}

/// The change tables' rows under their header, the second column named
/// `of`; `None` without rows.
fn stats_table(of: &str, rows: Vec<Vec<String>>) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let header = ["run", of, "tried", "trained", "new best", "improvement per try (points)", "mean gain (points)"];
    Some(Table { header: header.iter().map(|h| h.to_string()).collect(), rows })
}

/// A common change's words up to its first clause: `Double the
/// out_channels of the last nn.Conv2d` of the whole instruction.
fn short_change(change: &str) -> &str {
    let end = [", ", ": ", " ("].iter().filter_map(|sep| change.find(sep)).min().unwrap_or(change.len());
    change[..end].trim_end_matches('.')
}

/// Every trained candidate, best first.
fn ranked(groups: &[Group]) -> Vec<(&RunData, &IterationRecord, f64)> {
    let mut all: Vec<(&RunData, &IterationRecord, f64)> = groups
        .iter()
        .flat_map(|g| &g.runs)
        .flat_map(|run| run.records.iter().filter_map(move |r| r.outcome.accuracy().map(|a| (run, r, a))))
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.iteration.cmp(&b.1.iteration)));
    all
}

fn top_table(groups: &[Group], n: usize) -> Option<Table> {
    let ranked = ranked(groups);
    if ranked.is_empty() {
        return None;
    }
    let header = ["run", "iteration", "accuracy", "parameters", "FLOPs", "epoch s", "device s", "mode"]
        .map(String::from)
        .to_vec();
    let rows = ranked
        .iter()
        .take(n)
        .map(|(run, r, a)| {
            let report = match &r.outcome {
                Outcome::Ok { report } => Some(report),
                _ => None,
            };
            vec![
                run.label.clone(),
                r.iteration.to_string(),
                pct(*a),
                report.and_then(|x| x.params).map_or_else(|| "-".into(), |p| super::figures::si(p as f64)),
                report.and_then(|x| x.flops).map_or_else(|| "-".into(), |p| super::figures::si(p as f64)),
                report.and_then(|x| x.epoch_seconds).map_or_else(|| "-".into(), |s| format!("{s:.1}")),
                format!("{:.1}", r.device_seconds()),
                r.mode.clone(),
            ]
        })
        .collect();
    Some(Table { header, rows })
}

/// The designs on the Pareto front of each chosen axis.
fn pareto_table(groups: &[Group]) -> Option<Table> {
    let mut rows = Vec::new();
    for axis in super::figures::chosen_axes(groups) {
        for (_, run, iteration, cost, accuracy) in super::figures::pareto_designs(groups, &axis) {
            rows.push(vec![
                axis.what.to_string(),
                run.to_string(),
                iteration.to_string(),
                pct(accuracy),
                (axis.show)(cost),
            ]);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let header = ["axis", "run", "iteration", "accuracy", "cost"].map(String::from).to_vec();
    Some(Table { header, rows })
}

/// The best candidate over all runs.
pub fn best(groups: &[Group]) -> Option<(&RunData, &IterationRecord, f64)> {
    ranked(groups).into_iter().next()
}

fn comparison_table(c: &Comparison) -> Table {
    let (header, rows) = c.table();
    Table { header, rows }
}

const CIS: &str = "Intervals are 95%: Wilson score intervals for rates pooled over seeds (valid rate, >=40%), \
percentile bootstrap over seeds (10,000 resamples, fixed seed) for the rest. Differences against the baseline are \
in percentage points: Newcombe's hybrid score interval for the valid rate, a two-sample bootstrap for the best \
accuracy; `*` marks a difference whose interval excludes zero. A run where nothing trained counts 0 as its best. \
Device time is evaluator plus LLM seconds.";

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 2rem auto; max-width: 1280px;
       padding: 0 1.5rem; color: #1d2330; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.8rem; margin-bottom: 0.2rem; border-bottom: 3px solid #4e79a7; padding-bottom: 0.4rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; color: #2f4b7c; }
.meta { color: #5a6270; font-size: 0.92rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.86rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d5d9e0; padding: 0.3rem 0.55rem; text-align: right; white-space: nowrap; }
thead th { background: #eef2f8; text-align: center; }
tbody th { text-align: left; background: #f8f9fb; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1.2rem 0 2rem; border: 1px solid #e2e6ec; border-radius: 6px; padding: 0.8rem; background: #fff; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.9rem; color: #3b4350; margin-top: 0.5rem; }
pre { background: #f6f8fa; border: 1px solid #e2e6ec; border-radius: 6px; padding: 1rem; overflow-x: auto;
      font-size: 0.85rem; line-height: 1.35; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.note { font-size: 0.88rem; color: #4a5260; max-width: 70rem; }
"#;

/// The HTML page.
pub fn page(groups: &[Group], figures: &[Figure], options: &ReportOptions, comparison: Option<&Comparison>) -> String {
    let runs: usize = groups.iter().map(|g| g.runs.len()).sum();
    let iterations: u64 = groups.iter().flat_map(|g| &g.runs).map(|r| r.summary.iterations).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <p class=\"meta\">{runs} run(s), {iterations} iterations. Made by nas {version} on {when} UTC.</p>\n",
        title = escape(&options.title),
        version = env!("CARGO_PKG_VERSION"),
        when = crate::time::timestamp(),
    );
    if let Some(c) = comparison {
        let _ = write!(
            s,
            "<h2 id=\"comparison\">Comparison against {}</h2>\n<p class=\"note\">Seeds: {}. {}</p>\n{}",
            escape(&c.baseline),
            c.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            escape(CIS),
            comparison_table(c).html("comparison")
        );
    }
    let _ = write!(s, "<h2 id=\"runs\">Runs</h2>\n{}", runs_table(groups).html("runs"));
    s.push_str(&super::cycles::html(groups));
    s.push_str(&super::fidelity::html(groups));
    s.push_str("<h2 id=\"figures\">Figures</h2>\n");
    for f in figures {
        let _ = write!(
            s,
            "<figure id=\"fig-{name}\">\n{svg}\n<figcaption><b>{title}.</b> {caption} \
             <a href=\"figures/{name}.png\">PNG</a> · <a href=\"figures/{name}.svg\">SVG</a></figcaption>\n</figure>\n",
            name = f.name,
            svg = strip_xml_declaration(&f.svg),
            title = escape(&f.title),
            caption = escape(&f.caption),
        );
    }
    if let Some(t) = failures_table(groups) {
        let _ = write!(s, "<h2 id=\"failures\">Failures by kind</h2>\n{}", t.html("failures"));
    }
    if let Some(t) = machines_table(groups) {
        let _ = write!(
            s,
            "<h2 id=\"machines\">Machines</h2>\n<p class=\"note\">{}</p>\n{}",
            escape(MACHINES),
            t.html("machines")
        );
    }
    if let Some(t) = changes_table(groups) {
        let _ = write!(
            s,
            "<h2 id=\"changes\">Common changes</h2>\n<p class=\"note\">{}</p>\n{}",
            escape(&CHANGES.replace('`', "")),
            t.html("changes")
        );
    }
    if let Some(t) = sources_table(groups) {
        let _ = write!(s, "<p class=\"note\">{}</p>\n{}", escape(SOURCES), t.html("sources"));
    }
    if let Some(t) = top_table(groups, 10) {
        let _ = write!(s, "<h2 id=\"top\">Top candidates</h2>\n{}", t.html("top"));
    }
    if let Some(t) = pareto_table(groups) {
        let _ = write!(
            s,
            "<h2 id=\"pareto\">Pareto front</h2>\n<p class=\"note\">The designs no other trained candidate beats on \
             both accuracy and the axis's cost, by axis (the objective's limits and weights choose the axes; \
             parameters and FLOPs by default).</p>\n{}",
            t.html("pareto")
        );
    }
    s.push_str("<h2 id=\"best\">Best architecture</h2>\n");
    match best(groups) {
        Some((run, r, a)) => {
            let report = match &r.outcome {
                Outcome::Ok { report } => Some(report),
                _ => None,
            };
            let _ = write!(
                s,
                "<p>{} from <b>{}</b>, iteration {}{}{}.</p>\n<pre><code class=\"language-python\">{}</code></pre>\n",
                pct(a),
                escape(&run.label),
                r.iteration,
                report
                    .and_then(|x| x.params)
                    .map_or(String::new(), |p| format!(", {} parameters", super::figures::si(p as f64))),
                report
                    .and_then(|x| x.flops)
                    .map_or(String::new(), |p| format!(", {} FLOPs", super::figures::si(p as f64))),
                escape(r.code.as_deref().unwrap_or("(code not recorded)")),
            );
            if let Some(note) = super::fidelity::best_note(run, r.iteration) {
                let _ = writeln!(s, "<p class=\"note\" id=\"best-noise\">{}</p>", escape(&note));
            }
        }
        None => s.push_str("<p>No candidate trained.</p>\n"),
    }
    s.push_str(
        "<h2 id=\"files\">Files</h2>\n<p class=\"note\">Next to this page: <code>summary.md</code>, \
         <code>records.csv</code> and <code>records.json</code> (one row per iteration), \
         <code>records-full.jsonl</code> (every record whole), <code>summary.json</code>, \
         and each figure as PNG and SVG under <code>figures/</code>.</p>\n</body>\n</html>\n",
    );
    s
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// What the common-changes table shows.
const CHANGES: &str = "The common changes the search gave the generator or made itself on the best design \
     (`[search] fallback_changes`), by run: how often each was tried, how many of those trained and gave a new \
     best, the improvement per try (what a try gained over the best before it where it beat it, 0 where it did \
     not or failed, averaged over the tries) and the mean accuracy the trained ones gained over the best before \
     them; in the order `fallback_order = \"gain\"` gives them (most improvement per try first, then the \
     closest to the best).";

/// What the sources table shows.
const SOURCES: &str = "Where the changes came from: the Improver's own diagnoses, and the search's common changes \
     given in place of an answer that was not a diagnosis (or made on a design the generator gave back), the same \
     figures over each.";

/// The Markdown summary.
pub fn markdown(
    groups: &[Group],
    figures: &[Figure],
    options: &ReportOptions,
    comparison: Option<&Comparison>,
) -> String {
    let mut s = format!("# {}\n\n", options.title);
    if let Some(c) = comparison {
        let _ = write!(
            s,
            "## Comparison against {}\n\nSeeds: {}.\n\n{}\n{}\n",
            c.baseline,
            c.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            comparison_table(c).markdown(),
            CIS
        );
    }
    let _ = write!(s, "\n## Runs\n\n{}\n", runs_table(groups).markdown());
    s.push_str("Each iteration in a row (outcome, what the loop did, size, cost): [iterations.md](iterations.md).\n\n");
    s.push_str(&super::cycles::markdown(groups));
    s.push_str(&super::fidelity::markdown(groups));
    s.push_str("## Figures\n\n");
    for f in figures {
        let _ = write!(s, "![{t}](figures/{n}.png)\n\n*{t}.* {c}\n\n", t = f.title, n = f.name, c = f.caption);
    }
    if let Some(t) = failures_table(groups) {
        let _ = write!(s, "## Failures by kind\n\n{}\n", t.markdown());
    }
    if let Some(t) = machines_table(groups) {
        let _ = write!(s, "## Machines\n\n{MACHINES}\n\n{}\n", t.markdown());
    }
    if let Some(t) = changes_table(groups) {
        let _ = write!(s, "## Common changes\n\n{CHANGES}\n\n{}\n", t.markdown());
    }
    if let Some(t) = sources_table(groups) {
        let _ = write!(s, "{SOURCES}\n\n{}\n", t.markdown());
    }
    if let Some(t) = top_table(groups, 10) {
        let _ = write!(s, "## Top candidates\n\n{}\n", t.markdown());
    }
    if let Some(t) = pareto_table(groups) {
        let _ = write!(s, "## Pareto front\n\n{}\n", t.markdown());
    }
    s.push_str("## Best architecture\n\n");
    match best(groups) {
        Some((run, r, a)) => {
            let _ = write!(s, "{} from `{}`, iteration {}.\n\n", pct(a), run.label, r.iteration);
            if let Some(note) = super::fidelity::best_note(run, r.iteration) {
                let _ = write!(s, "{note}\n\n");
            }
            let _ = write!(s, "```python\n{}\n```\n", r.code.as_deref().unwrap_or("(code not recorded)").trim_end());
        }
        None => s.push_str("No candidate trained.\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn the_common_changes_table_counts_each_changes_attempts_in_the_order_the_search_picks_them() {
        use crate::search::improver::{FALLBACK_CHANGES, FALLBACK_PROBLEM};
        use nas_plugin_api::MemoryEntry;
        let entry = |i: usize, accuracy: Option<f64>, best_before: f64| MemoryEntry {
            iteration: 3,
            problem: FALLBACK_PROBLEM.into(),
            suggestion: FALLBACK_CHANGES[i].0.into(),
            outcome: Some("accuracy or error".into()),
            accuracy,
            failure_kind: None,
            best_before: Some(best_before),
        };
        let mut memory = vec![
            entry(1, Some(0.8903), 0.8930),
            entry(1, Some(0.8975), 0.9018),
            entry(3, Some(0.9018), 0.8994),
            entry(3, None, 0.9018),
            entry(8, None, 0.9030),
            // Open, an Improver's own words, a change on a next-best design: not counted.
            MemoryEntry { outcome: None, accuracy: None, ..entry(4, None, 0.9) },
            MemoryEntry { suggestion: "Add dropout.".into(), ..entry(1, Some(0.95), 0.9) },
            MemoryEntry {
                suggestion: format!("On the design of attempt 2 (89.00 %), not the best: {}", FALLBACK_CHANGES[1].0),
                ..entry(1, Some(0.95), 0.9)
            },
        ];
        // The Improver's own diagnosis, which a new best followed.
        memory.push(MemoryEntry {
            problem: "The head is too narrow.".into(),
            suggestion: "Widen fc1 to 512.".into(),
            ..entry(1, Some(0.9100), 0.9030)
        });
        let run = RunData::of(Vec::new(), memory);
        let groups = [Group { name: "r".into(), runs: vec![run] }];
        let t = changes_table(&groups).expect("a table");
        let rows: Vec<Vec<&str>> = t.rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        assert_eq!(
            rows,
            [
                ["r", "Add one more nn.Conv2d", "2", "1", "1", "0.120", "+0.24"],
                ["r", "Add nn.Dropout(0.3) right before the first nn.Linear", "2", "2", "0", "0.000", "-0.35"],
                ["r", "Add a hidden layer before the last nn.Linear", "1", "0", "0", "0.000", "-"],
            ]
        );
        let summary = markdown(&groups, &[], &ReportOptions::default(), None);
        assert!(summary.contains("## Common changes") && summary.contains("| changes from |"), "{summary}");
        let sources = sources_table(&groups).expect("both sources");
        let rows: Vec<Vec<&str>> = sources.rows.iter().map(|r| r[1..5].iter().map(String::as_str).collect()).collect();
        assert_eq!(rows, [["the Improver's diagnoses", "1", "1", "1"], ["the search's common changes", "7", "5", "3"]]);
        assert_eq!(sources.rows[0][5..], ["0.700", "+0.70"]);
        let none =
            [Group { name: "r".into(), runs: vec![RunData { memory: Vec::new(), ..groups[0].runs[0].clone() }] }];
        assert!(changes_table(&none).is_none());
    }

    #[test]
    fn a_run_trained_on_two_machines_says_which_trained_what() {
        use crate::cycles::select::tests::record;
        use nas_plugin_api::{CandidateFailure, EvalReport, FailureKind};
        let on = |t: u64, machine: Option<&str>| {
            let mut report = EvalReport { accuracy: 0.9, ..Default::default() };
            if let Some(m) = machine {
                report.extra.insert("machine".into(), serde_json::json!(m));
            }
            record(t, "class Net: pass", Outcome::Ok { report })
        };
        let (a, b) =
            ("AMD EPYC (AVX2) with torch 2.11.0", "Intel(R) Xeon(R) Platinum 8481C (AVX512) with torch 2.11.0");
        let failed = record(
            4,
            "x",
            Outcome::Failed { failure: CandidateFailure::new("check", FailureKind::Runtime, "boom".to_string()) },
        );
        let records =
            vec![on(1, Some(a)), on(2, Some(a)), on(3, Some(a)), failed, on(5, Some(b)), on(6, None), on(7, Some(a))];
        let groups = [Group { name: "g".into(), runs: vec![RunData::of(records, Vec::new())] }];
        let t = machines_table(&groups).expect("two machines");
        assert_eq!(t.rows, [["r", a, "4", "1–3, 7"], ["r", b, "1", "5"]].map(|r| r.map(String::from).to_vec()));
        let summary = markdown(&groups, &[], &ReportOptions::default(), None);
        assert!(summary.contains("## Machines") && summary.contains("compare scores across machines as draws"));
        // One machine, or none named (runs before reports named it): nothing to say.
        let one = [Group { name: "g".into(), runs: vec![RunData::of(vec![on(1, Some(a)), on(2, None)], Vec::new())] }];
        assert!(machines_table(&one).is_none());
        assert!(!markdown(&one, &[], &ReportOptions::default(), None).contains("## Machines"));
    }

    #[test]
    fn markdown_cells_escape_pipes() {
        let t = Table { header: vec!["a|b".into()], rows: vec![vec!["x|y".into()]] };
        assert_eq!(t.markdown(), "| a\\|b |\n|---|\n| x\\|y |\n");
    }
}
