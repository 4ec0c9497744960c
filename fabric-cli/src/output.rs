//! Human output: aligned tables, durations, short payload previews.

use std::io::Write;

use crate::error::{Error, Result};

/// A plain text table: a header row and left-aligned columns separated by two spaces.
/// Cells may hold several lines (extra lines continue under the same column).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column names; columns whose name is listed in `numeric` are right-aligned.
    pub fn new(header: &[&str], numeric: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            right: header.iter().map(|h| numeric.contains(h)).collect(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table, each line without trailing spaces.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                for line in c.lines() {
                    widths[i] = widths[i].max(line.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut emit = |cells: &[Vec<&str>]| {
            let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
            for l in 0..height {
                let mut line = String::new();
                for (i, c) in cells.iter().enumerate() {
                    let text = c.get(l).copied().unwrap_or("");
                    let pad = widths[i].saturating_sub(text.chars().count());
                    if i > 0 {
                        line.push_str("  ");
                    }
                    if self.right[i] {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(text);
                    } else {
                        line.push_str(text);
                        line.push_str(&" ".repeat(pad));
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        };
        let header: Vec<Vec<&str>> = self.header.iter().map(|h| vec![h.as_str()]).collect();
        emit(&header);
        for r in &self.rows {
            let cells: Vec<Vec<&str>> = (0..n)
                .map(|i| {
                    r.get(i)
                        .map(|c| c.lines().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect();
            emit(&cells);
        }
        out
    }
}

/// Now, ms since the epoch (ages and liveness are computed against it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// `-` for `None`.
pub fn opt_duration_ms(ms: Option<u64>) -> String {
    ms.map(duration_ms).unwrap_or_else(|| "-".into())
}

/// At most `max` characters of `s`, with `…` when cut, on one line.
pub fn preview(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` made safe for a terminal: control characters other than newline and tab (ANSI
/// escapes, carriage returns, backspaces, bells, C1 controls) become visible escapes such
/// as `\x1b`, so that a field any sender controls cannot rewrite the operator's screen.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            let n = u32::from(c);
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes `text` to stdout (made [`terminal_safe`]); a closed pipe (`fabric … | head`) is
/// not an error.
pub fn print(text: &str) -> Result<()> {
    let text = terminal_safe(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("cannot write to stdout", e)),
    }
}

/// Writes one line to stdout.
pub fn println(text: &str) -> Result<()> {
    let mut s = String::with_capacity(text.len() + 1);
    s.push_str(text);
    s.push('\n');
    print(&s)
}

/// Pretty JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Server(format!("cannot encode JSON output: {e}")))?;
    println(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_345), "12.3s");
        assert_eq!(duration_ms(245_000), "4m05s");
        assert_eq!(duration_ms(7_380_000), "2h03m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(opt_duration_ms(None), "-");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["AGENT", "DEPTH", "CONSUMERS"], &["DEPTH"]);
        t.row(vec![
            "percy".into(),
            "12".into(),
            "a (idle 1s)\nb (idle 2s)".into(),
        ]);
        t.row(vec!["coder-agent".into(), "3".into()]);
        assert_eq!(
            t.render(),
            "AGENT        DEPTH  CONSUMERS\n\
             percy           12  a (idle 1s)\n\
             \x20                   b (idle 2s)\n\
             coder-agent      3\n"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(terminal_safe("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            terminal_safe("a\x1b[2Jb\rc\x07\u{9b}d"),
            "a\\x1b[2Jb\\x0dc\\x07\\x9bd"
        );
    }

    #[test]
    fn previews() {
        assert_eq!(preview("abc", 5), "abc");
        assert_eq!(preview("abcdef", 4), "abc…");
        assert_eq!(preview("a\nb", 5), "a b");
    }
}
