//! What a load run measured: counts, failures by class, ack latency percentiles (HDR
//! histogram), throughput.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency the histogram holds exactly, in microseconds (an hour); longer ones are
/// recorded as this value.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// Latency percentiles of acknowledged pushes, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            samples: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// The result of a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requests attempted.
    pub sent: u64,
    /// Requests answered `200` with the body `200`.
    pub acknowledged: u64,
    /// Requests not acknowledged (`sent - acknowledged`).
    pub failed: u64,
    /// Failures by class: `status_<code>`, `unexpected_body`, `connect`, `timeout`, `io`.
    pub failures: BTreeMap<String, u64>,
    /// Wall time from the first dispatch to the last answer, in seconds.
    pub elapsed_seconds: f64,
    /// Acknowledged pushes per second of `elapsed_seconds`.
    pub acknowledged_per_second: f64,
    /// Ack latency: from starting a push (a connect included when one was needed) to the whole
    /// response read.
    pub latency: LatencySummary,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// How late, at worst, a push started against its schedule, in milliseconds (0 when
    /// unthrottled). A large value means the connections could not keep up with the rate.
    pub max_schedule_lag_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pushes       sent {}  acknowledged {}  failed {}",
            self.sent, self.acknowledged, self.failed
        )?;
        if !self.failures.is_empty() {
            let classes: Vec<String> = self
                .failures
                .iter()
                .map(|(class, count)| format!("{class}: {count}"))
                .collect();
            write!(f, " ({})", classes.join(", "))?;
        }
        let l = &self.latency;
        writeln!(f)?;
        writeln!(
            f,
            "ack latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
        )?;
        write!(
            f,
            "throughput   {:.0} acknowledged/s over {:.2} s; {} connections opened; max schedule lag {:.1} ms",
            self.acknowledged_per_second,
            self.elapsed_seconds,
            self.connections_opened,
            self.max_schedule_lag_ms
        )
    }
}

/// One worker's tally; merged into a [`Report`] at the end (no shared lock on the hot path).
pub(crate) struct Recorder {
    histogram: Histogram<u64>,
    sent: u64,
    acknowledged: u64,
    failures: BTreeMap<String, u64>,
    connections_opened: u64,
    max_schedule_lag: Duration,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
                .expect("static histogram bounds are valid"),
            sent: 0,
            acknowledged: 0,
            failures: BTreeMap::new(),
            connections_opened: 0,
            max_schedule_lag: Duration::ZERO,
        }
    }

    pub(crate) fn acknowledged(&mut self, latency: Duration) {
        self.sent += 1;
        self.acknowledged += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    pub(crate) fn failed(&mut self, class: String) {
        self.sent += 1;
        *self.failures.entry(class).or_insert(0) += 1;
    }

    pub(crate) fn connection_opened(&mut self) {
        self.connections_opened += 1;
    }

    pub(crate) fn schedule_lag(&mut self, lag: Duration) {
        self.max_schedule_lag = self.max_schedule_lag.max(lag);
    }

    /// Merges every worker's tally into the run's report.
    pub(crate) fn into_report(recorders: Vec<Recorder>, elapsed: Duration) -> Report {
        let mut total = Recorder::new();
        for recorder in recorders {
            // Same bounds on both sides: adding cannot fail.
            let _ = total.histogram.add(&recorder.histogram);
            total.sent += recorder.sent;
            total.acknowledged += recorder.acknowledged;
            total.connections_opened += recorder.connections_opened;
            total.max_schedule_lag = total.max_schedule_lag.max(recorder.max_schedule_lag);
            for (class, count) in recorder.failures {
                *total.failures.entry(class).or_insert(0) += count;
            }
        }
        let seconds = elapsed.as_secs_f64();
        Report {
            sent: total.sent,
            acknowledged: total.acknowledged,
            failed: total.sent - total.acknowledged,
            failures: total.failures,
            elapsed_seconds: seconds,
            acknowledged_per_second: if seconds > 0.0 {
                total.acknowledged as f64 / seconds
            } else {
                0.0
            },
            latency: LatencySummary::of(&total.histogram),
            connections_opened: total.connections_opened,
            max_schedule_lag_ms: total.max_schedule_lag.as_secs_f64() * 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_report_merges_workers_and_computes_percentiles() {
        let mut first = Recorder::new();
        let mut second = Recorder::new();
        // 1..=1000 ms spread over two workers: p50 = 500, p90 = 900, p99 = 990, max 1000.
        for ms in 1..=1000u64 {
            let target = if ms % 2 == 0 { &mut first } else { &mut second };
            target.acknowledged(Duration::from_millis(ms));
        }
        second.failed("status_503".to_owned());
        second.failed("status_503".to_owned());
        first.failed("timeout".to_owned());
        first.connection_opened();
        second.schedule_lag(Duration::from_millis(7));
        let report = Recorder::into_report(vec![first, second], Duration::from_secs(2));
        assert_eq!(report.sent, 1003);
        assert_eq!(report.acknowledged, 1000);
        assert_eq!(report.failed, 3);
        assert_eq!(report.failures["status_503"], 2);
        assert_eq!(report.failures["timeout"], 1);
        assert_eq!(report.acknowledged_per_second, 500.0);
        assert_eq!(report.connections_opened, 1);
        assert_eq!(report.max_schedule_lag_ms, 7.0);
        let within = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.002;
        let l = &report.latency;
        assert_eq!(l.samples, 1000);
        assert!(within(l.p50_ms, 500.0), "{l:?}");
        assert!(within(l.p90_ms, 900.0), "{l:?}");
        assert!(within(l.p99_ms, 990.0), "{l:?}");
        assert!(within(l.p999_ms, 999.0), "{l:?}");
        assert!(within(l.max_ms, 1000.0), "{l:?}");
        assert!(within(l.mean_ms, 500.5), "{l:?}");
        let text = report.to_string();
        assert!(text.contains("status_503: 2"), "{text}");
    }

    #[test]
    fn test_empty_report_has_no_nan() {
        let report = Recorder::into_report(vec![], Duration::ZERO);
        assert_eq!(report.latency, LatencySummary::default());
        assert_eq!(report.acknowledged_per_second, 0.0);
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
    }
}
