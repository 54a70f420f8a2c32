//! The harness's summary: the table printed at the end of `bench/run.sh` (Markdown, pasted
//! into the README as is) and the targets of issue 5, each judged against this run's figures.

use serde::Serialize;
use serde_json::Value;

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured.
    pub measure: String,
    /// callhook's figure.
    pub callhook: String,
    /// The same-run baseline, if any.
    pub baseline: String,
    /// callhook / baseline, if meaningful.
    pub ratio: String,
}

/// A target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target as stated.
    pub target: String,
    /// This run's figure.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// Formats requests per second with a thousands separator.
pub fn per_second(value: f64) -> String {
    thousands(value.round() as u64)
}

/// Formats an integer with `,` separators.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Formats microseconds as milliseconds with two decimals.
pub fn millis(micros: f64) -> String {
    format!("{:.2}", micros / 1000.0)
}

/// Formats KiB as MiB with one decimal.
pub fn mebibytes(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// Reads a number at a JSON pointer (0 when absent).
pub fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// Renders the rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from("| measure | callhook | bare hyper (same run) | ratio |\n");
    out.push_str("|---|---:|---:|---:|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.measure, row.callhook, row.baseline, row.ratio
        ));
    }
    out
}

/// Renders the targets as a Markdown table.
pub fn markdown_targets(targets: &[Target]) -> String {
    let mut out = String::from("| target | this run | met |\n|---|---:|:---:|\n");
    for target in targets {
        let met = match target.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "pending",
        };
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            target.target, target.measured, met
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_formatting() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(millis(1234.0), "1.23");
        assert_eq!(mebibytes(2048.0), "2.0 MiB");
        let table = markdown_table(&[Row {
            measure: "m".into(),
            callhook: "1".into(),
            baseline: "2".into(),
            ratio: "0.50".into(),
        }]);
        assert!(table.ends_with("| m | 1 | 2 | 0.50 |\n"), "{table}");
    }
}
