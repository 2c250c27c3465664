//! One module per `nas` command: each a function from its arguments to a
//! [`Failure`] or nothing, over the library modules. Nothing outside this
//! folder and `cli.rs` imports it.

pub mod compare;
pub mod corpus;
pub mod cycles;
pub mod data;
pub mod eval;
pub mod eval_job;
pub mod export;
pub mod fidelity;
pub mod models;
pub mod plugins;
pub mod report;
pub mod run;

/// What a command's failure means for the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Usage, config or plugin error: exit code 2.
    Usage(anyhow::Error),
    /// A run started and failed (broken infrastructure mid-run): exit code 1.
    Run(anyhow::Error),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Run(_) => 1,
        }
    }

    /// The error.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Usage(e) | Failure::Run(e) => e,
        }
    }
}

/// Marks an error as a usage failure (exit 2) or a failed run (exit 1).
pub trait UsageContext<T> {
    /// Marks the error as a usage/config/plugin error.
    fn usage(self) -> Result<T, Failure>;
    /// Marks the error as a failed run.
    fn run_failed(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> UsageContext<T> for Result<T, E> {
    fn usage(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Usage(e.into()))
    }
    fn run_failed(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Run(e.into()))
    }
}

/// An error and its causes as one paragraph.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The registry with the user's libraries, as a usage failure when one
/// cannot be loaded.
pub fn registry(plugins: &[std::path::PathBuf]) -> Result<crate::registry::Registry, Failure> {
    crate::session::registry(plugins).usage()
}

/// Rows as a plain-text table: columns aligned, two spaces apart, no
/// trailing blanks; with `rule`, a line of dashes under the header.
pub fn text_table(header: &[String], rows: &[Vec<String>], rule: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i].saturating_sub(c.chars().count()))))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut lines = vec![line(header)];
    if rule {
        lines.push(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    }
    lines.extend(rows.iter().map(|r| line(r)));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::text_table;

    #[test]
    fn text_tables_align() {
        let header = ["a".to_string(), "bb".to_string()];
        let rows = [vec!["xxx".to_string(), "y".to_string()]];
        assert_eq!(text_table(&header, &rows, true), "a    bb\n---  --\nxxx  y");
        assert_eq!(text_table(&header, &rows, false), "a    bb\nxxx  y");
    }
}
