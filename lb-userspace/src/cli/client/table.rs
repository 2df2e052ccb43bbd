//! Aligned text tables: a header row of column names, then rows; every
//! column is as wide as its widest cell and columns are two spaces apart,
//! so a cell may hold single spaces ("3.4 GB", "1.2s ago").

use std::fmt;

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// The gap between columns.
const GAP: &str = "  ";

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The header and the rows, aligned, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header = self.header.iter().map(|h| h.to_string()).collect();
        std::iter::once(&header)
            .chain(&self.rows)
            .map(|row: &Vec<String>| {
                let mut line = String::new();
                for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
                    if column > 0 {
                        line.push_str(GAP);
                    }
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
                line.trim_end().to_string()
            })
            .collect()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$}{value}\n", format!("{key}:"), width = width + 2))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["NAME", "PACKETS", "BYTES"]);
        table.row(vec!["web".into(), "1.2M".into(), "3.4 GB".into()]);
        table.row(vec!["dns-resolvers".into(), "7".into(), "512 B".into()]);
        assert_eq!(
            table.to_string(),
            "NAME           PACKETS  BYTES\n\
             web            1.2M     3.4 GB\n\
             dns-resolvers  7        512 B\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new(&["PRO", "CLIENT"]);
        assert_eq!(table.lines(), vec!["PRO  CLIENT"]);
    }

    #[test]
    fn lines_end_without_spaces() {
        let mut table = Table::new(&["A", "LAST"]);
        table.row(vec!["x".into(), "".into()]);
        table.row(vec!["µs".into(), "y".into()]);
        assert_eq!(table.lines(), vec!["A   LAST", "x", "µs  y"]);
    }

    #[test]
    fn field_values_line_up() {
        assert_eq!(
            fields(&[("mode", "dr".into()), ("scheduler", "maglev".into())]),
            "mode:      dr\nscheduler: maglev\n"
        );
    }
}
