//! The result table: one row per fault.

use std::fmt::Write as _;
use std::time::Duration;

/// One fault's figures and verdict.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The fault.
    pub fault: String,
    /// How many times it was injected.
    pub iterations: u32,
    /// Pushes acknowledged while it ran (every load segment of the fault).
    pub acknowledged: u64,
    /// Acknowledged pushes missing from the raw log or from `events`.
    pub lost: u64,
    /// Pushes stored more than once in `events` (or events no push explains).
    pub duplicated: u64,
    /// Recovery times, one per injection that has one.
    pub recovery: Vec<Duration>,
    /// Ack p99 of a fault-free run just before, ms.
    pub p99_before_ms: f64,
    /// Ack p99 of the load spanning the faults, ms.
    pub p99_during_ms: f64,
    /// Failed checks: any makes the suite fail.
    pub failures: Vec<String>,
    /// What else was seen.
    pub notes: Vec<String>,
}

impl Row {
    /// A row for `fault`.
    pub fn new(fault: &str) -> Row {
        Row {
            fault: fault.to_owned(),
            ..Row::default()
        }
    }

    /// Records a failed check.
    pub fn fail(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("  FAIL {}: {text}", self.fault);
        self.failures.push(text);
    }

    /// Records a note.
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("  note {}: {text}", self.fault);
        self.notes.push(text);
    }

    /// Returns true when nothing was lost or duplicated and every check passed.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.failures.is_empty()
    }

    fn percentile(&self, quantile: f64) -> Option<Duration> {
        let mut sorted = self.recovery.clone();
        sorted.sort();
        let last = sorted.len().checked_sub(1)?;
        let index = ((last as f64) * quantile).round() as usize;
        sorted.get(index).copied()
    }
}

/// Renders the table (Markdown) and the notes under it.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| fault | iterations | acknowledged | lost | duplicated | recovery p50 / p99 (s) | ack p99 before → during (ms) | result |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|:---:|\n");
    for row in rows {
        let recovery = match (row.percentile(0.5), row.percentile(0.99)) {
            (Some(p50), Some(p99)) => {
                format!("{:.2} / {:.2}", p50.as_secs_f64(), p99.as_secs_f64())
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} → {:.1} | {} |",
            row.fault,
            row.iterations,
            thousands(row.acknowledged),
            row.lost,
            row.duplicated,
            recovery,
            row.p99_before_ms,
            row.p99_during_ms,
            if row.passed() { "pass" } else { "FAIL" }
        );
    }
    for row in rows {
        for failure in &row.failures {
            let _ = writeln!(out, "- FAIL {}: {failure}", row.fault);
        }
        for note in &row.notes {
            let _ = writeln!(out, "- {}: {note}", row.fault);
        }
    }
    out
}

/// `12345` → `12,345`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_table_renders_percentiles_and_verdicts() {
        let mut row = Row::new("sigkill");
        row.iterations = 3;
        row.acknowledged = 12_345;
        row.recovery = vec![
            Duration::from_secs(1),
            Duration::from_secs(3),
            Duration::from_secs(2),
        ];
        let mut failing = Row::new("disk full");
        failing.lost = 2;
        let text = render(&[row, failing]);
        assert!(
            text.contains("| sigkill | 3 | 12,345 | 0 | 0 | 2.00 / 3.00 |"),
            "{text}"
        );
        assert!(text.contains("| disk full | 0 | 0 | 2 | 0 | – |"), "{text}");
        assert!(text.contains("FAIL"), "{text}");
    }
}
