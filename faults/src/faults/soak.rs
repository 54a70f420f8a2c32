//! Fault 7 (no fault at all): a soak at half the measured capacity. RSS, open file descriptors
//! (`/proc/PID/fd`) and the normalizer's lag (`callhook_normalizer_lag_records`) must stay flat:
//! the mean over the last window within 10 % of the mean over the first window after warm-up
//! (the lag also passes when it stays under one second of load, where 10 % of almost nothing
//! is noise). Warm-up is the first window of a soak at least four windows long: the dedupe
//! LRU, the call fold cache and SQLite's page caches fill to their bounds then, which is growth
//! to a ceiling, not a leak; a shorter soak compares from its start.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{wait_ready, Rig, Suite};
use crate::checks;
use crate::sim::LoadPlan;
use crate::table::Row;

/// How the soak is run.
pub struct SoakSettings {
    /// Its length.
    pub duration: Duration,
    /// The window compared at each end.
    pub window: Duration,
    /// Flows per second; `None`: half the capacity measured first.
    pub flows_per_second: Option<f64>,
}

/// One sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    lag: f64,
}

/// Runs the soak.
pub fn run(suite: &mut Suite, settings: &SoakSettings) -> anyhow::Result<Row> {
    let minutes = settings.duration.as_secs_f64() / 60.0;
    let mut row = Row::new(&format!("soak {minutes:.0} min at ½ capacity"));
    let mut rig = Rig::new(suite, "soak", None, "")?;
    let serve = rig.start(None)?;
    if !wait_ready(&serve, Duration::from_secs(30)) {
        bail!("`callhook serve` did not become ready");
    }
    let rate = match settings.flows_per_second {
        Some(rate) => rate,
        None => {
            // Capacity: flows as fast as 32 connections go, then until the normalizer has
            // worked the burst off. The pipeline's capacity is the lower of the two rates:
            // half the receiver's rate alone would outrun the normalizer and its lag could
            // only grow.
            let plan = LoadPlan {
                flows_per_second: 0.0,
                duration: Duration::from_secs(suite.pick(6000, 2000)),
                connections: 32,
                seed: suite.rng.next(),
            };
            let ledger = rig.dir.join("ledger-capacity.jsonl");
            let burst_started = Instant::now();
            let report =
                crate::sim::Load::start(&suite.bin, rig.listen, &plan, &ledger)?.finish()?;
            rig.segments_push(ledger);
            let ingest = report.flows as f64 / report.elapsed_seconds.max(0.001);
            let target = checks::raw_end(&rig.rawlog())?;
            if rig
                .wait_recovered(&serve, target, Instant::now(), Duration::from_secs(900))
                .is_none()
            {
                row.fail("the normalizer did not work off the capacity burst within 15 min");
            }
            let end_to_end_seconds = burst_started.elapsed().as_secs_f64();
            let records_per_flow = target as f64 / report.flows.max(1) as f64;
            let end_to_end = report.flows as f64 / end_to_end_seconds;
            row.note(format!(
                "capacity: the receiver took {} flows ({target} records) in {:.1} s = {ingest:.0} flows/s (ack p99 {:.1} ms); the normalizer had them all in the sink after {end_to_end_seconds:.1} s = {end_to_end:.0} flows/s ({:.0} records/s) end to end",
                report.flows,
                report.elapsed_seconds,
                report.p99_ms,
                end_to_end * records_per_flow
            ));
            std::thread::sleep(Duration::from_secs(3));
            ingest.min(end_to_end) / 2.0
        }
    };
    row.p99_before_ms = rig.baseline(suite, Duration::from_secs(10))?.p99_ms;
    let plan = LoadPlan {
        flows_per_second: rate,
        duration: settings.duration,
        connections: 32,
        seed: suite.rng.next(),
    };
    let ledger = rig.dir.join("ledger-soak.jsonl");
    let mut load = crate::sim::Load::start(&suite.bin, rig.listen, &plan, &ledger)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut csv = std::fs::File::create(rig.dir.join("soak.csv"))?;
    writeln!(csv, "seconds,rss_kib,fds,lag_records")?;
    while load.running() {
        let (rss_kib, fds) = serve.resources();
        let lag = serve
            .metric("callhook_normalizer_lag_records")
            .unwrap_or(0.0);
        let sample = Sample {
            at: started.elapsed(),
            rss_kib,
            fds,
            lag,
        };
        writeln!(csv, "{:.0},{rss_kib},{fds},{lag}", sample.at.as_secs_f64())?;
        samples.push(sample);
        eprint!(
            "\r  soak {:.0}/{:.0} s: rss {} MiB, fds {fds}, lag {lag:.0}   ",
            sample.at.as_secs_f64(),
            settings.duration.as_secs_f64(),
            rss_kib / 1024
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    eprintln!();
    let report = load.finish()?;
    row.iterations = 1;
    row.acknowledged = report.acknowledged;
    row.p99_during_ms = report.p99_ms;
    judge_flat(&mut row, &samples, settings, report.per_second);
    row.note(format!(
        "soak at {rate:.1} flows/s: {:.0} acknowledged pushes/s, ack p50 {:.2} ms; samples in {}",
        report.per_second,
        report.p50_ms,
        rig.dir.join("soak.csv").display()
    ));
    rig.segments_push(ledger);
    rig.final_checks(suite, serve, &mut row);
    Ok(row)
}

/// A measure's name, how it is read from a sample, and the floor under which it counts as flat.
type Measure = (&'static str, fn(&Sample) -> f64, f64);

fn judge_flat(row: &mut Row, samples: &[Sample], settings: &SoakSettings, pushes_per_second: f64) {
    let end = samples.last().map_or(Duration::ZERO, |sample| sample.at);
    let warm_up = match end >= settings.window * 4 {
        true => settings.window,
        false => Duration::ZERO,
    };
    let first: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= warm_up && s.at < warm_up + settings.window)
        .collect();
    let last: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at + settings.window > end)
        .collect();
    if first.is_empty() || last.is_empty() {
        row.fail("too few samples to compare");
        return;
    }
    let mean = |set: &[&Sample], value: fn(&Sample) -> f64| {
        set.iter().map(|sample| value(sample)).sum::<f64>() / set.len() as f64
    };
    let measures: [Measure; 3] = [
        ("RSS (MiB)", |s| s.rss_kib as f64 / 1024.0, 0.0),
        ("open fds", |s| s.fds as f64, 0.0),
        ("normalizer lag (records)", |s| s.lag, pushes_per_second),
    ];
    for (name, value, floor) in measures {
        let (start, finish) = (mean(&first, value), mean(&last, value));
        let change = if start > 0.0 {
            (finish - start) / start
        } else {
            0.0
        };
        let flat = finish <= start * 1.10 && finish >= start * 0.90 || finish.max(start) <= floor;
        let text = format!(
            "{name}: {:.0}–{:.0} min {start:.1}, last {:.0} min {finish:.1} ({:+.1} %)",
            warm_up.as_secs_f64() / 60.0,
            (warm_up + settings.window).as_secs_f64() / 60.0,
            settings.window.as_secs_f64() / 60.0,
            change * 100.0
        );
        match flat {
            true => row.note(text),
            false => row.fail(format!("not flat within 10 %: {text}")),
        }
    }
}
