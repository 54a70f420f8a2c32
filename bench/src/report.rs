//! The harness's summary: the table printed at the end of `bench/run.sh` (Markdown, pasted
//! into the README as is) and the targets of issue 5, each judged against this run's figures.

use serde::Serialize;
use serde_json::Value;

/// Durations and sizes of one kind of run (`full`, `--quick`, `--smoke`).
#[derive(Debug)]
pub struct Profile {
    /// Its name.
    pub name: &'static str,
    /// Length of each keep-alive ingest run, warm-up included.
    pub ingest_seconds: f64,
    /// Warm-up of every load run (not measured).
    pub warmup_seconds: f64,
    /// Keep-alive rounds (bare hyper, callhook, callhook at half the ceiling, Kafka mode).
    pub keep_alive_rounds: usize,
    /// Length of each connection-per-push run.
    pub new_connection_seconds: f64,
    /// Connection-per-push rounds.
    pub new_connection_rounds: usize,
    /// Length of the end-to-end run.
    pub e2e_seconds: f64,
    /// Rate of the end-to-end run, pushes per second.
    pub e2e_rate: f64,
    /// Pushes pre-filled for the normalizer drain.
    pub normalizer_pushes: u64,
    /// Keys in the dedupe cache for its memory figure.
    pub dedupe_keys: u64,
    /// `fdatasync` samples of the disk probe.
    pub fsync_samples: usize,
}

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
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect();
    groups.join(",")
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

fn row(measure: String, callhook: String, baseline: String, ratio: String) -> Row {
    Row {
        measure,
        callhook,
        baseline,
        ratio,
    }
}

/// `p50 / p99 / p99.9` in milliseconds from a median block (`{who}_p50_us`, ...).
fn latencies(median: &Value, who: &str) -> String {
    let m = |quantile: &str| millis(number(median, &format!("/{who}_{quantile}")));
    format!("{} / {} / {}", m("p50_us"), m("p99_us"), m("p999_us"))
}

fn ingest_rows(rows: &mut Vec<Row>, label: &str, result: &Value) {
    let median = &result["median"];
    let m = |name: &str| number(median, &format!("/{name}"));
    rows.push(row(
        format!("ingest, {label}: req/s"),
        per_second(m("callhook_per_second")),
        per_second(m("bare_hyper_per_second")),
        format!("{:.2}", m("ratio")),
    ));
    rows.push(row(
        format!("ingest, {label}: ack p50 / p99 / p99.9 ms at saturation"),
        latencies(median, "callhook"),
        latencies(median, "bare_hyper"),
        String::new(),
    ));
    if median.get("half_ceiling_rate").is_some() {
        rows.push(row(
            format!(
                "ingest, {label}, fixed {} req/s (½ ceiling): ack p50 / p99 / p99.9 ms",
                per_second(m("half_ceiling_rate"))
            ),
            latencies(median, "callhook_at_half_ceiling"),
            String::new(),
            String::new(),
        ));
    }
}

fn catch_up_row(rows: &mut Vec<Row>, keep_alive: &Value) {
    let median = &keep_alive["median"];
    if median.get("catch_up_seconds").is_none() {
        return;
    }
    let left = number(median, "/catch_up_lag_left_records");
    rows.push(row(
        "after the first keep-alive burst: backlog worked off by the normalizer (records, s)"
            .to_owned(),
        format!(
            "{} in {:.0} s{}",
            thousands(number(median, "/catch_up_backlog_records") as u64),
            number(median, "/catch_up_seconds"),
            if left > 0.0 {
                format!(" ({} left)", thousands(left as u64))
            } else {
                String::new()
            }
        ),
        String::new(),
        String::new(),
    ));
}

fn kafka_rows(rows: &mut Vec<Row>, keep_alive: &Value) {
    let median = &keep_alive["median"];
    if median.get("kafka_per_second").is_none() {
        rows.push(row(
            "ingest, Kafka mode (MockCluster): req/s".to_owned(),
            "pending (no kafka-receiver binary)".to_owned(),
            String::new(),
            String::new(),
        ));
        return;
    }
    rows.push(row(
        "ingest, Kafka mode (in-process MockCluster), keep-alive, 64 conns: req/s".to_owned(),
        per_second(number(median, "/kafka_per_second")),
        per_second(number(median, "/bare_hyper_per_second")),
        format!("{:.2}", number(median, "/kafka_ratio")),
    ));
    rows.push(row(
        "ingest, Kafka mode: ack p50 / p99 / p99.9 ms at saturation".to_owned(),
        latencies(median, "kafka"),
        latencies(median, "bare_hyper"),
        String::new(),
    ));
}

/// Builds the table and judges the targets.
pub fn summarize(results: &Value, profile: &Profile) -> (Vec<Row>, Vec<Target>) {
    let mut rows = Vec::new();
    ingest_rows(
        &mut rows,
        "keep-alive, 64 conns, 1 KB",
        &results["ingest_keep_alive"],
    );
    ingest_rows(
        &mut rows,
        "new connection per push, 64 conns",
        &results["ingest_new_connection"],
    );
    catch_up_row(&mut rows, &results["ingest_keep_alive"]);
    kafka_rows(&mut rows, &results["ingest_keep_alive"]);
    normalizer_rows(&mut rows, &results["normalizer"], profile);
    let e2e = &results["end_to_end"]["report"]["e2e"];
    rows.push(row(
        format!(
            "end-to-end, ack → row in `events`, at {} pushes/s: p50 / p99 ms",
            per_second(profile.e2e_rate)
        ),
        format!(
            "{} / {}",
            millis(number(e2e, "/ack_to_row/p50_us")),
            millis(number(e2e, "/ack_to_row/p99_us"))
        ),
        String::new(),
        String::new(),
    ));
    memory_rows(&mut rows, results);
    let disk = &results["disk_fdatasync"];
    let worst_p50_us = number(disk, "/before/p50_us").max(number(disk, "/after/p50_us"));
    rows.push(row(
        "disk: fdatasync of 32 KiB, p50 / p99 ms at start ; at end (→ durable-ack cap of 64 \
         conns: 64 / slower p50)"
            .to_owned(),
        format!(
            "{} / {} ; {} / {} (→ {} req/s)",
            millis(number(disk, "/before/p50_us")),
            millis(number(disk, "/before/p99_us")),
            millis(number(disk, "/after/p50_us")),
            millis(number(disk, "/after/p99_us")),
            per_second(64.0 / (worst_p50_us.max(1.0) / 1_000_000.0))
        ),
        String::new(),
        String::new(),
    ));
    (rows, targets(results, profile))
}

/// The normalizer's three figures on the same realistic raw log: mapping alone, the rebuild
/// (`callhook replay --into`) and the live loop's drain.
fn normalizer_rows(rows: &mut Vec<Row>, normalizer: &Value, profile: &Profile) {
    let pushes = thousands(profile.normalizer_pushes);
    rows.push(row(
        format!(
            "normalizer, realistic pushes (mean body {:.0} B): mapping alone, pushes/s (events per CPU-second)",
            number(normalizer, "/mapping/mean_body_bytes")
        ),
        format!(
            "{} ({})",
            per_second(number(normalizer, "/mapping/records_per_second")),
            per_second(number(normalizer, "/mapping/events_per_cpu_second"))
        ),
        String::new(),
        String::new(),
    ));
    rows.push(row(
        format!(
            "rebuild the database from the log ({pushes} pushes): pushes/s, seconds (CPU-seconds)"
        ),
        format!(
            "{}, {:.1} s ({:.1})",
            per_second(number(normalizer, "/rebuild/records_per_second")),
            number(normalizer, "/rebuild/seconds"),
            number(normalizer, "/rebuild/cpu_seconds")
        ),
        String::new(),
        String::new(),
    ));
    rows.push(row(
        format!("live normalizer: drain {pushes} pushes into SQLite, pushes/s (events/s)"),
        format!(
            "{} ({})",
            per_second(number(normalizer, "/drain/records_per_second")),
            per_second(number(normalizer, "/drain/events_per_second"))
        ),
        String::new(),
        String::new(),
    ));
    if !normalizer["sinks"].is_null() {
        rows.push(row(
            format!(
                "PostgreSQL sink (local, fsync on) vs SQLite sink: the same {} mapped pushes committed, events/s",
                thousands(number(normalizer, "/sinks/pushes") as u64)
            ),
            per_second(number(normalizer, "/sinks/postgres/events_per_second")),
            format!(
                "{} (SQLite)",
                per_second(number(normalizer, "/sinks/sqlite/events_per_second"))
            ),
            format!("{:.2}", number(normalizer, "/sinks/postgres_to_sqlite")),
        ));
    }
}

/// The largest callhook peak RSS over the ingest and end-to-end runs, in KiB.
fn callhook_peak_rss(results: &Value) -> f64 {
    [
        number(
            &results["ingest_keep_alive"],
            "/median/callhook_peak_rss_kib",
        ),
        number(
            &results["ingest_keep_alive"],
            "/median/callhook_at_half_ceiling_peak_rss_kib",
        ),
        number(
            &results["ingest_new_connection"],
            "/median/callhook_peak_rss_kib",
        ),
        number(&results["end_to_end"], "/callhook_memory/peak_rss_kib"),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

fn memory_rows(rows: &mut Vec<Row>, results: &Value) {
    let keep_alive = &results["ingest_keep_alive"]["median"];
    rows.push(row(
        "peak RSS: callhook serve under load / incl. the catch-up / kafka-receiver / loadgen"
            .to_owned(),
        format!(
            "{} / {} / {} / {}",
            mebibytes(callhook_peak_rss(results)),
            mebibytes(number(keep_alive, "/callhook_peak_rss_after_catch_up_kib")),
            mebibytes(number(keep_alive, "/kafka_peak_rss_kib")),
            mebibytes(number(keep_alive, "/loadgen_peak_rss_kib"))
        ),
        mebibytes(number(keep_alive, "/bare_hyper_peak_rss_kib")),
        String::new(),
    ));
    let normalizer = &results["normalizer"];
    rows.push(row(
        "peak RSS: normalizer-bench (pre-fill, mapping, rebuild with its 1 GiB page cache, drain)"
            .to_owned(),
        mebibytes(number(normalizer, "/memory/peak_rss_kib")),
        String::new(),
        String::new(),
    ));
    let cache = &normalizer["dedupe_cache"];
    rows.push(row(
        format!(
            "dedupe cache holding {} keys: allocated (RSS growth)",
            thousands(number(cache, "/keys") as u64)
        ),
        format!(
            "{} ({:.0} B/key) ({})",
            mebibytes(number(cache, "/allocated_bytes") / 1024.0),
            number(cache, "/allocated_bytes_per_key"),
            mebibytes(number(cache, "/rss_growth_kib"))
        ),
        String::new(),
        String::new(),
    ));
}

fn targets(results: &Value, profile: &Profile) -> Vec<Target> {
    let keep_alive = &results["ingest_keep_alive"]["median"];
    let ratio = number(keep_alive, "/ratio");
    let p99_half = number(keep_alive, "/callhook_at_half_ceiling_p99_us");
    let p99_saturated = number(keep_alive, "/callhook_p99_us");
    let normalizer = &results["normalizer"];
    let rebuild_rate = number(normalizer, "/rebuild/records_per_second");
    let rebuild_seconds = number(normalizer, "/rebuild/seconds");
    let drain_rate = number(normalizer, "/drain/records_per_second");
    let ingest_rate = number(keep_alive, "/callhook_per_second");
    let mapping_rate = number(normalizer, "/mapping/events_per_cpu_second");
    let e2e_p99 = number(&results["end_to_end"], "/report/e2e/ack_to_row/p99_us");
    let e2e_missing = number(&results["end_to_end"], "/report/e2e/rows_missing");
    let rss = callhook_peak_rss(results);
    vec![
        Target {
            target: "durable embedded ingest ≥ 50% of the bare-hyper ceiling (64 keep-alive conns)"
                .to_owned(),
            measured: format!("{:.0}%", ratio * 100.0),
            met: Some(ratio >= 0.5),
        },
        Target {
            target: "p99 ack ≤ 5 ms at 64 conns, at ½ the ceiling's rate (at saturation)"
                .to_owned(),
            measured: format!("{} ms ({} ms)", millis(p99_half), millis(p99_saturated)),
            met: Some(p99_half > 0.0 && p99_half <= 5000.0),
        },
        Target {
            target: "rebuild from the raw log ≥ 50,000 pushes/s (realistic pushes)".to_owned(),
            measured: per_second(rebuild_rate),
            met: Some(rebuild_rate >= 50_000.0),
        },
        Target {
            target: "a 1,000,000-push rebuild ≤ 20 s".to_owned(),
            measured: if profile.normalizer_pushes == 1_000_000 {
                format!("{rebuild_seconds:.1} s")
            } else {
                format!(
                    "not run by this profile ({} pushes in {rebuild_seconds:.1} s)",
                    thousands(profile.normalizer_pushes)
                )
            },
            met: (profile.normalizer_pushes == 1_000_000).then_some(rebuild_seconds <= 20.0),
        },
        Target {
            target: "the live normalizer drains at least the rate ingest takes (keep-alive)"
                .to_owned(),
            measured: format!(
                "{} vs {} pushes/s",
                per_second(drain_rate),
                per_second(ingest_rate)
            ),
            met: Some(drain_rate >= ingest_rate && drain_rate > 0.0),
        },
        Target {
            target: "mapping ≥ 150,000 events/s per core, here with the log read back and each \
                     event's data serialized (the target's own measure is the criterion bench: \
                     README, Performance)"
                .to_owned(),
            measured: per_second(mapping_rate),
            met: Some(mapping_rate >= 150_000.0),
        },
        Target {
            target: format!(
                "end-to-end p99 ≤ 50 ms at {} pushes/s",
                per_second(profile.e2e_rate)
            ),
            measured: format!("{} ms, {} rows missing", millis(e2e_p99), e2e_missing),
            met: Some(e2e_p99 > 0.0 && e2e_p99 <= 50_000.0 && e2e_missing == 0.0),
        },
        Target {
            target: "ingest RSS ≤ 64 MB under load (callhook serve, peak)".to_owned(),
            measured: mebibytes(rss),
            met: Some(rss > 0.0 && rss <= 64.0 * 1000.0 * 1000.0 / 1024.0),
        },
    ]
}

/// One line on how busy the machine was (pressure stall information of the whole run).
pub fn pressure_note(document: &Value) -> String {
    let share = |pointer: &str| {
        document
            .pointer(pointer)
            .and_then(Value::as_f64)
            .map_or_else(|| "n/a".to_owned(), |value| format!("{value:.0}%"))
    };
    format!(
        "Machine load during the run (Linux PSI, share of time some task waited): CPU {}, I/O {} \
         (keep-alive ingest phase: CPU {}, I/O {}).\n",
        share("/pressure/cpu_some_percent"),
        share("/pressure/io_some_percent"),
        share("/results/ingest_keep_alive/pressure/cpu_some_percent"),
        share("/results/ingest_keep_alive/pressure/io_some_percent"),
    )
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
