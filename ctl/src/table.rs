//! Aligned text tables for people (scripts use `--json`).

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders with columns padded to their widest cell; columns of numbers
    /// are right-aligned.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // "1947", "10.4 KiB", "33.3%" are numbers; "198.18.1.254/24" and MACs are not.
        let is_number = |c: &str| {
            c.chars().next().is_some_and(|ch| ch.is_ascii_digit())
                && c.matches('.').count() <= 1
                && !c.contains(':')
                && !c.contains('/')
        };
        // A column whose cells are all numbers is right-aligned, header too.
        let numeric_col: Vec<bool> = (0..n)
            .map(|i| {
                let mut cells = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .filter(|c| !c.is_empty());
                let mut any = false;
                cells.all(|c| {
                    any = true;
                    is_number(c)
                }) && any
            })
            .collect();
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                let numeric = numeric_col[i];
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric {
                    line.push_str(&format!("{c:>w$}"));
                } else {
                    line.push_str(&format!("{c:<w$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["NAME", "PKTS"]);
        t.row(vec!["client".into(), "5".into()]);
        t.row(vec!["b".into(), "12345".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "NAME     PKTS");
        assert_eq!(lines[1], "client      5");
        assert_eq!(lines[2], "b       12345");
    }

    #[test]
    fn addresses_are_not_numbers() {
        let mut t = Table::new(&["ADDRESS", "BYTES"]);
        t.row(vec!["198.18.1.254/24".into(), "10.4 KiB".into()]);
        t.row(vec!["1.2.3.4".into(), "5 B".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "ADDRESS             BYTES");
        assert_eq!(lines[1], "198.18.1.254/24  10.4 KiB");
        assert_eq!(lines[2], "1.2.3.4               5 B");
    }

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
