//! A progress line on stderr for long operations (requeue or purge of many entries): shown
//! only when stderr is a terminal and the output is not JSON, erased when done.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One progress line, or nothing (not a terminal, or `--json`).
pub(crate) struct Progress {
    on: bool,
    shown: bool,
    last: Option<Instant>,
}

impl Progress {
    /// A progress line, shown only if stderr is a terminal and `json` is off.
    pub(crate) fn new(json: bool) -> Progress {
        Progress {
            on: !json && std::io::stderr().is_terminal(),
            shown: false,
            last: None,
        }
    }

    /// Shows `text` (at most every 50 ms, and always the final `done == total`).
    pub(crate) fn show(&mut self, text: &str, done: usize, total: usize) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if done < total
            && self
                .last
                .is_some_and(|t| now - t < Duration::from_millis(50))
        {
            return;
        }
        self.last = Some(now);
        let bar = bar(done, total, 24);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{bar} {text}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line.
    pub(crate) fn finish(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `[#####-----]` for `done` of `total`.
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = done
        .min(total)
        .saturating_mul(width)
        .checked_div(total)
        .unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(bar(0, 10, 10), "[----------]");
        assert_eq!(bar(5, 10, 10), "[#####-----]");
        assert_eq!(bar(12, 10, 10), "[##########]");
        assert_eq!(bar(0, 0, 4), "[####]");
    }
}
