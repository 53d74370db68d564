//! How output looks: for people (colour only on a terminal) or JSON for scripts.

use std::io::IsTerminal as _;

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON document (or one per line, for streams of messages) instead of text.
    pub json: bool,
    /// ANSI colour and bold: only when standard output is a terminal and `NO_COLOR` is unset.
    pub color: bool,
}

impl Output {
    /// For people, coloured when standard output is a terminal; JSON when `json`.
    pub fn detect(json: bool) -> Self {
        let color = !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { json, color }
    }

    /// `text` in bold.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` in green (what went well).
    pub fn good(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// `text` in red (what went wrong).
    pub fn bad(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `text` dimmed (details).
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Rows as an aligned table, the first row the heading (in bold when colouring).
pub fn table(out: &Output, rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        let line = line.join("  ").trim_end().to_owned();
        text.push_str(&if i == 0 { out.bold(&line) } else { line });
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns() {
        let out = Output {
            json: false,
            color: false,
        };
        let rows = vec![
            vec!["case".to_owned(), "rate".to_owned()],
            vec!["publish".to_owned(), "10".to_owned()],
        ];
        assert_eq!(table(&out, &rows), "case     rate\npublish  10\n");
    }
}
