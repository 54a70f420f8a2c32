//! Per-source ingest figures of the Live page, from this process's own Prometheus registry:
//! a sample every [`SAMPLE_EVERY`] of `callhook_ingest_requests_total{status="200"}` and the
//! `callhook_ingest_ack_seconds` buckets, kept for [`WINDOW`]. Rates and p99 are differences
//! between the newest and the oldest sample, so the hot path pays nothing for the console.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the registry is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// The window of the rates.
const WINDOW: Duration = Duration::from_secs(60);

/// One source's counters at one sample.
#[derive(Debug, Clone, Default)]
struct SourceSample {
    acked: f64,
    /// `(upper bound, cumulative count)` of the ack histogram.
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    sources: BTreeMap<String, SourceSample>,
    lag_records: Option<f64>,
}

/// What the Live page shows per source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFigures {
    pub source: String,
    pub pushes_per_second: f64,
    /// p99 of the ack time over the window, in milliseconds (a bucket's upper bound).
    pub ack_p99_ms: Option<f64>,
    /// Seconds since this process last acknowledged a push of the source (as sampled).
    pub seconds_since_last_push: Option<u64>,
    /// No push for longer than `[console] quiet_after_seconds`.
    pub quiet: bool,
}

/// The sampler's state.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    samples: VecDeque<Sample>,
    /// When each source's acked counter last moved.
    last_push: BTreeMap<String, Instant>,
}

impl Stats {
    /// Takes one sample of the registry.
    pub fn sample(&self) {
        let sample = read_registry(Instant::now());
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = inner.samples.back() {
            let moved: Vec<String> = sample
                .sources
                .iter()
                .filter(|(name, now)| {
                    previous
                        .sources
                        .get(*name)
                        .is_none_or(|before| now.acked > before.acked)
                        && now.acked > 0.0
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in moved {
                inner.last_push.insert(name, sample.at);
            }
        }
        inner.samples.push_back(sample);
        while inner
            .samples
            .front()
            .is_some_and(|oldest| oldest.at.elapsed() > WINDOW)
        {
            inner.samples.pop_front();
        }
    }

    /// Returns the figures of every source, and the normalizer's lag.
    pub fn figures(&self, quiet_after: Duration) -> (Vec<SourceFigures>, Option<f64>) {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (Some(oldest), Some(newest)) = (inner.samples.front(), inner.samples.back()) else {
            return (Vec::new(), None);
        };
        let seconds = newest.at.duration_since(oldest.at).as_secs_f64();
        let figures = newest
            .sources
            .iter()
            .map(|(name, now)| {
                let before = oldest.sources.get(name).cloned().unwrap_or_default();
                let since_last = inner.last_push.get(name).map(Instant::elapsed);
                SourceFigures {
                    source: name.clone(),
                    pushes_per_second: match seconds > 0.0 {
                        true => (now.acked - before.acked).max(0.0) / seconds,
                        false => 0.0,
                    },
                    ack_p99_ms: p99(&before.buckets, &now.buckets).map(|s| s * 1000.0),
                    seconds_since_last_push: since_last.map(|elapsed| elapsed.as_secs()),
                    quiet: since_last.is_none_or(|elapsed| elapsed > quiet_after),
                }
            })
            .collect();
        (figures, newest.lag_records)
    }
}

/// The upper bound of the bucket holding the 99th percentile of the observations between two
/// cumulative bucket sets; `None` without observations (or above the last finite bucket).
fn p99(before: &[(f64, u64)], now: &[(f64, u64)]) -> Option<f64> {
    let count_at = |buckets: &[(f64, u64)], index: usize| buckets.get(index).map_or(0, |b| b.1);
    let total = now
        .last()?
        .1
        .saturating_sub(before.last().map_or(0, |b| b.1));
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * 0.99).ceil() as u64;
    now.iter().enumerate().find_map(|(index, (bound, count))| {
        (count.saturating_sub(count_at(before, index)) >= wanted).then_some(*bound)
    })
}

fn read_registry(at: Instant) -> Sample {
    let mut sources: BTreeMap<String, SourceSample> = BTreeMap::new();
    let mut lag_records = None;
    for family in prometheus::gather() {
        match family.name() {
            "callhook_ingest_requests_total" => {
                for metric in family.get_metric() {
                    let label = |name: &str| {
                        metric
                            .get_label()
                            .iter()
                            .find(|pair| pair.name() == name)
                            .map(|pair| pair.value().to_owned())
                    };
                    if let (Some(source), Some("200")) =
                        (label("source"), label("status").as_deref())
                    {
                        sources.entry(source).or_default().acked +=
                            metric.get_counter().get_value();
                    }
                }
            }
            "callhook_ingest_ack_seconds" => {
                for metric in family.get_metric() {
                    let Some(source) = metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == "source")
                        .map(|pair| pair.value().to_owned())
                    else {
                        continue;
                    };
                    let histogram = metric.get_histogram();
                    let mut buckets: Vec<(f64, u64)> = histogram
                        .get_bucket()
                        .iter()
                        .map(|bucket| (bucket.upper_bound(), bucket.cumulative_count()))
                        .collect();
                    buckets.push((f64::INFINITY, histogram.get_sample_count()));
                    sources.entry(source).or_default().buckets = buckets;
                }
            }
            "callhook_normalizer_lag_records" => {
                lag_records = family
                    .get_metric()
                    .first()
                    .map(|metric| metric.get_gauge().get_value());
            }
            _ => {}
        }
    }
    sources.remove("_unknown");
    Sample {
        at,
        sources,
        lag_records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_p99_of_the_window() {
        let before = [(0.001, 10), (0.01, 10), (f64::INFINITY, 10)];
        let now = [(0.001, 100), (0.01, 110), (f64::INFINITY, 110)];
        // 100 new observations: 90 under 1 ms, 10 under 10 ms -> p99 in the 10 ms bucket.
        assert_eq!(p99(&before, &now), Some(0.01));
        assert_eq!(p99(&now, &now), None);
    }
}
