//! The results: rows, the table, the JSON document.

use serde::Serialize;

/// How a row's figure is judged (informational only: it never changes the exit code).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// ours / baseline ≥ x.
    RatioAtLeast(f64),
    /// ours / baseline ≤ x.
    RatioAtMost(f64),
    /// ours ≤ x (in the row's unit).
    OursBelow(f64),
}

impl Target {
    fn label(self, unit: Unit) -> String {
        match self {
            Target::RatioAtLeast(x) => format!("≥ {x:.2}×"),
            Target::RatioAtMost(x) => format!("≤ {x:.2}×"),
            Target::OursBelow(x) => format!("< {}", unit.fmt(x)),
        }
    }

    fn check(self, ours: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Target::RatioAtMost(x) => ratio.map(|r| r <= x),
            Target::OursBelow(x) => ours.map(|o| o < x),
        }
    }
}

/// The unit of a row's figures.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    MsgPerSec,
    Micros,
    Millis,
    MiB,
    Factor,
    /// A plain count (per message).
    Count,
    /// A whole number (connections).
    Int,
    /// Percent (of one core, for CPU).
    Percent,
    /// Events per second, small rates included (commands/s).
    PerSec,
}

impl Unit {
    pub(crate) fn fmt(self, v: f64) -> String {
        if !v.is_finite() {
            return "n/a".into();
        }
        match self {
            Unit::MsgPerSec => format!("{}/s", thousands(v.round() as u64)),
            Unit::Micros if v >= 100.0 => format!("{v:.0} µs"),
            Unit::Micros => format!("{v:.1} µs"),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::Factor => format!("{v:.2}×"),
            Unit::Count => format!("{v:.3}"),
            Unit::Int if v < 0.0 => format!("-{}", thousands((-v).round() as u64)),
            Unit::Int => thousands(v.round() as u64),
            Unit::Percent => format!("{v:.2} %"),
            Unit::PerSec if v >= 1_000.0 => format!("{}/s", thousands(v.round() as u64)),
            Unit::PerSec => format!("{v:.1}/s"),
        }
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line of the results.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub section: &'static str,
    pub metric: String,
    pub unit: Unit,
    pub ours: Option<f64>,
    pub baseline: Option<f64>,
    /// What the baseline figure is.
    pub baseline_is: String,
    /// ours / baseline.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    /// Whether the target is met (informational).
    pub pass: Option<bool>,
}

impl Row {
    pub(crate) fn new(
        section: &'static str,
        metric: impl Into<String>,
        unit: Unit,
        ours: Option<f64>,
        baseline: Option<f64>,
        baseline_is: impl Into<String>,
    ) -> Row {
        let ratio = match (ours, baseline) {
            (Some(o), Some(b)) if b != 0.0 && o.is_finite() && b.is_finite() => Some(o / b),
            _ => None,
        };
        Row {
            section,
            metric: metric.into(),
            unit,
            ours,
            baseline,
            baseline_is: baseline_is.into(),
            ratio,
            target: None,
            pass: None,
        }
    }

    /// Sets the ratio to `r` (the median of paired per-repeat ratios) instead of the ratio
    /// of the medians. Call before [`Row::target`].
    pub(crate) fn paired_ratio(mut self, r: f64) -> Row {
        if r.is_finite() {
            self.ratio = Some(r);
        }
        self
    }

    pub(crate) fn target(mut self, t: Target) -> Row {
        self.pass = t.check(self.ours, self.ratio);
        self.target = Some(t);
        self
    }
}

/// The machine the run was on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_avg_at_start: String,
    pub redis_version: String,
    pub redis: String,
    pub build_profile: &'static str,
    pub mode: &'static str,
}

/// Everything the run produced.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub machine: Option<Machine>,
    pub rows: Vec<Row>,
    /// Raw measurements, per scenario.
    pub details: serde_json::Map<String, serde_json::Value>,
    pub notes: Vec<String>,
    pub elapsed_s: f64,
}

impl Report {
    pub(crate) fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(crate) fn detail(&mut self, key: &str, v: serde_json::Value) {
        self.details.insert(key.to_owned(), v);
    }

    pub(crate) fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("note: {n}");
        self.notes.push(n);
    }

    /// The human-readable report: machine, a Markdown table, the baselines, notes.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.machine {
            out.push_str(&format!(
                "Machine: {} × {} CPU, {:.1} GiB RAM, Linux {}, load avg at start {}\n\
                 Redis:   {} ({})\n\
                 Build:   {} profile, {} mode; run took {:.0} s\n\n",
                m.cpus,
                m.cpu_model,
                m.memory_gib,
                m.kernel,
                m.load_avg_at_start,
                m.redis_version,
                m.redis,
                m.build_profile,
                m.mode,
                self.elapsed_s
            ));
        }
        let header = ["Metric", "Ours", "Baseline", "Ratio", "Target", ""];
        let mut cells: Vec<[String; 6]> = Vec::new();
        for r in &self.rows {
            cells.push([
                r.metric.clone(),
                r.ours.map(|v| r.unit.fmt(v)).unwrap_or_default(),
                r.baseline.map(|v| r.unit.fmt(v)).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.target.map(|t| t.label(r.unit)).unwrap_or_default(),
                match r.pass {
                    Some(true) => "PASS".into(),
                    Some(false) => "MISS".into(),
                    None => String::new(),
                },
            ]);
        }
        let mut w = header.map(|h| h.chars().count());
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                w[i] = w[i].max(s.chars().count());
            }
        }
        let line = |c: &[String; 6]| {
            let mut s = String::from("|");
            for (i, v) in c.iter().enumerate() {
                let pad = w[i] - v.chars().count();
                if i == 0 {
                    s.push_str(&format!(" {v}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{v} |", " ".repeat(pad)));
                }
            }
            s.push('\n');
            s
        };
        out.push_str(&line(&header.map(String::from)));
        let mut sep = String::from("|");
        for (i, wi) in w.iter().enumerate() {
            if i == 0 {
                sep.push_str(&format!("{}|", "-".repeat(wi + 2)));
            } else {
                sep.push_str(&format!("{}:|", "-".repeat(wi + 1)));
            }
        }
        out.push_str(&sep);
        out.push('\n');
        for c in &cells {
            out.push_str(&line(c));
        }
        out.push_str("\nBaselines (same run, same Redis):\n");
        let mut seen = Vec::new();
        for r in &self.rows {
            if !r.baseline_is.is_empty() && !seen.contains(&r.baseline_is) {
                seen.push(r.baseline_is.clone());
                out.push_str(&format!("  - {}: {}\n", r.section, r.baseline_is));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("  - {n}\n"));
            }
        }
        out
    }
}
