//! Plain-text tables for `confab admin`: a header row, then one row per item, columns padded to
//! their widest cell so the output lines up and `awk`/`cut` can still take it apart.

use std::fmt::Write;

/// Rows under a header, written out aligned by [`Table::render`].
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it should have one cell per column.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header and the rows, two spaces between columns, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let mut t = Table::new(&["USER", "ONLINE"]);
        t.row(vec!["alexandra".into(), "yes".into()]);
        t.row(vec!["bo".into(), "".into()]);
        assert_eq!(t.render(), "USER       ONLINE\nalexandra  yes\nbo\n",);
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["USER"]).render(), "USER\n");
    }
}
