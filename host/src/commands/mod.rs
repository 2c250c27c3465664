//! One module per `nas` command.

pub mod compare;
pub mod data;
pub mod eval;
pub mod export;
pub mod models;
pub mod plugins;
pub mod report;
pub mod run;

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
