//! The faults, and what every embedded-mode fault shares: a data directory with a config, the
//! `callhook serve` process under test, load segments with their ledgers, recovery timing and
//! the final checks.

pub mod disk;
pub mod failpoints;
pub mod kafka;
pub mod sigkill;
pub mod sigterm;
pub mod soak;
pub mod torn;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callhook_simulator::ledger::Ledger;

use crate::checks;
use crate::process::{free_addr, Callhook, Launch};
use crate::sim::{self, Load, LoadPlan, LoadReport};
use crate::table::Row;

/// The suite's settings and shared state.
pub struct Suite {
    /// The `callhook` binary (built with `--features failpoints`).
    pub bin: PathBuf,
    /// Where every fault gets its directory.
    pub work: PathBuf,
    /// Shorter runs and fewer iterations.
    pub quick: bool,
    /// Call flows per second of the load during faults.
    pub flows_per_second: f64,
    /// Random moments.
    pub rng: Rng,
}

impl Suite {
    /// Picks `full` or `quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// A load plan at the suite's rate for `duration`.
    pub fn plan(&mut self, duration: Duration) -> LoadPlan {
        LoadPlan {
            flows_per_second: self.flows_per_second,
            duration,
            connections: 16,
            seed: self.rng.next(),
        }
    }
}

/// SplitMix64: random moments, reproducible from the seed the suite prints.
pub struct Rng(u64);

impl Rng {
    /// Seeds it.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `from..to`.
    pub fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = to.saturating_sub(from).as_millis().max(1) as u64;
        from + Duration::from_millis(self.next() % span)
    }
}

/// The consumer group of the embedded normalizer (the default config).
pub const CONSUMER: &str = "normalizer";

/// The config every embedded fault runs: the three vendor sources and `probe`, the suite's own
/// source for pushes outside the ledger.
pub fn embedded_config(extra: &str) -> String {
    format!(
        r#"[sources.7moor]
dialect = "7moor"

[sources.coocenter]
dialect = "coocenter"

[sources.uincall]
dialect = "uincall"

[sources.probe]
dialect = "7moor"

{extra}
"#
    )
}

/// A probe push (7moor v7 ringing) with a unique id, to source `probe`.
pub fn probe_body(n: u64) -> Vec<u8> {
    format!(
        r#"{{"eventUniqueId":"probe{n:027}","accountId":"1","callUniqueId":"probe-{n}","pushType":"dialoutRing","customerNumber":"17319132391","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001"}}"#
    )
    .into_bytes()
}

/// One `callhook serve` under test, in its own directory, on fixed ports (so the load keeps
/// its target across restarts).
pub struct Rig {
    /// The fault's directory.
    pub dir: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The receiver.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    bin: PathBuf,
    segments: Vec<PathBuf>,
    reports: Vec<LoadReport>,
}

impl Rig {
    /// Creates `<work>/<name>` (emptied) with `data/` (or `data_dir` when given: a mount) and
    /// the config.
    pub fn new(
        suite: &Suite,
        name: &str,
        data_dir: Option<&Path>,
        extra: &str,
    ) -> anyhow::Result<Rig> {
        let dir = suite.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let data = data_dir.map_or_else(|| dir.join("data"), Path::to_path_buf);
        std::fs::create_dir_all(&data)?;
        let config = dir.join("callhook.toml");
        std::fs::write(&config, embedded_config(extra))?;
        Ok(Rig {
            dir,
            data,
            config,
            listen: free_addr(),
            admin: free_addr(),
            bin: suite.bin.clone(),
            segments: Vec::new(),
            reports: Vec::new(),
        })
    }

    /// Starts `callhook serve`, with `FAILPOINTS` when given.
    pub fn start(&self, failpoints: Option<&str>) -> anyhow::Result<Callhook> {
        Callhook::start(&Launch {
            bin: &self.bin,
            command: "serve",
            config: &self.config,
            data_dir: &self.data,
            listen: Some(self.listen),
            admin: self.admin,
            failpoints,
            log: self.dir.join("callhook.log"),
        })
    }

    /// The raw log file.
    pub fn rawlog(&self) -> PathBuf {
        self.data.join("rawlog.db")
    }

    /// The sink file.
    pub fn db(&self) -> PathBuf {
        self.data.join("callhook.db")
    }

    /// Runs a fault-free load for `duration` (its own ledger, verified with the rest) and
    /// returns its report: the "before" figures.
    pub fn baseline(
        &mut self,
        suite: &mut Suite,
        duration: Duration,
    ) -> anyhow::Result<LoadReport> {
        let load = self.load(suite, duration)?;
        let report = self.finish(load)?;
        Ok(report)
    }

    /// Starts a load segment with a fresh ledger.
    pub fn load(&mut self, suite: &mut Suite, duration: Duration) -> anyhow::Result<Load> {
        let ledger = self
            .dir
            .join(format!("ledger-{}.jsonl", self.segments.len()));
        self.segments.push(ledger.clone());
        let plan = suite.plan(duration);
        Load::start(&self.bin, self.listen, &plan, &ledger)
    }

    /// Waits for a load segment to end; keeps its report. Leaves a pause so the next segment's
    /// window (± the verifier's clock skew) does not overlap this one.
    pub fn finish(&mut self, load: Load) -> anyhow::Result<LoadReport> {
        let report = load.finish()?;
        self.reports.push(report.clone());
        std::thread::sleep(Duration::from_secs(3));
        Ok(report)
    }

    /// Adds a ledger written outside [`Rig::load`] to the ones verified.
    pub fn segments_push(&mut self, ledger: PathBuf) {
        self.segments.push(ledger);
    }

    /// Acknowledged pushes over every segment but the first `skip`.
    pub fn acknowledged(&self, skip: usize) -> u64 {
        self.reports
            .iter()
            .skip(skip)
            .map(|report| report.acknowledged)
            .sum()
    }

    /// The largest ack p99 over every segment but the first `skip`.
    pub fn p99(&self, skip: usize) -> f64 {
        self.reports
            .iter()
            .skip(skip)
            .map(|report| report.p99_ms)
            .fold(0.0, f64::max)
    }

    /// Failure classes of the segments after `skip`.
    pub fn failures_text(&self, skip: usize) -> String {
        let parts: Vec<String> = self
            .reports
            .iter()
            .skip(skip)
            .map(LoadReport::failures_text)
            .filter(|text| !text.is_empty())
            .collect();
        parts.join("; ")
    }

    /// Waits until `serve` is ready and its normalizer consumed up to `target` (the raw log's
    /// end when recovery started); returns the time since `since`, `None` after `timeout`.
    pub fn wait_recovered(
        &self,
        serve: &Callhook,
        target: u64,
        since: Instant,
        timeout: Duration,
    ) -> Option<Duration> {
        while since.elapsed() < timeout {
            if serve.ready() && checks::sink_consumed(&self.db(), CONSUMER) >= target {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// The final checks with `serve` running: caught up, every ledger verified, the raw log
    /// holds every acknowledged push, `calls` rows are folds; then a clean SIGTERM (exit 0),
    /// `PRAGMA integrity_check` on both files and `callhook log check`.
    pub fn final_checks(&self, suite: &Suite, serve: Callhook, row: &mut Row) {
        let target = checks::raw_end(&self.rawlog()).unwrap_or(0);
        if self
            .wait_recovered(&serve, target, Instant::now(), Duration::from_secs(300))
            .is_none()
        {
            row.fail(format!(
                "the normalizer did not catch up with the raw log (offset {target}) within 300 s"
            ));
        }
        self.check_ledgers(suite, row);
        match serve.terminate(Duration::from_secs(60)) {
            Some(status) if status.success() => {}
            Some(status) => row.fail(format!("`callhook serve` exited with {status} on SIGTERM")),
            None => row.fail("`callhook serve` did not exit within 60 s of SIGTERM"),
        }
        self.check_files(suite, row);
    }

    /// Verifies every ledger against the sink and the raw log, and the calls fold.
    pub fn check_ledgers(&self, suite: &Suite, row: &mut Row) {
        let raw = match checks::embedded_raw_records(&self.rawlog()) {
            Ok(raw) => raw,
            Err(error) => {
                row.fail(format!("cannot read the raw log: {error:#}"));
                Default::default()
            }
        };
        check_segments(&suite.bin, &self.segments, &self.db(), &raw, row);
        check_calls(&self.db(), row);
    }

    /// Integrity of both files and `callhook log check`, with callhook stopped.
    pub fn check_files(&self, suite: &Suite, row: &mut Row) {
        for file in [self.rawlog(), self.db()] {
            let problems = checks::integrity(&file);
            if !problems.is_empty() {
                row.fail(format!(
                    "`{}` integrity_check: {}",
                    file.display(),
                    problems.join("; ")
                ));
            }
        }
        match checks::log_check(&suite.bin, &self.config, &self.data, false) {
            Ok((true, _)) => {}
            Ok((false, report)) => row.fail(format!("`callhook log check` is not clean: {report}")),
            Err(error) => row.fail(format!("{error:#}")),
        }
    }
}

/// Verifies each ledger segment (`callhook simulate --verify`) and the raw log's counts; adds
/// lost and duplicated pushes to the row.
pub fn check_segments(
    bin: &Path,
    segments: &[PathBuf],
    db: &Path,
    raw: &checks::RawRecords,
    row: &mut Row,
) {
    check_segments_with(bin, segments, db, raw, true, row);
}

/// [`check_segments`]; with `raw_trusted` false, pushes missing from the raw log are reported
/// as notes against the broker's storage instead of as losses (used where the test broker's
/// storage is shown to drop records on its own; the events are still checked).
pub fn check_segments_with(
    bin: &Path,
    segments: &[PathBuf],
    db: &Path,
    raw: &checks::RawRecords,
    raw_trusted: bool,
    row: &mut Row,
) {
    for ledger in segments {
        match sim::verify(bin, ledger, db, Duration::from_secs(120)) {
            Ok(verified) => {
                row.lost += verified.lost;
                row.duplicated += verified.duplicated;
                if verified.other > 0 || verified.lost > 0 || verified.duplicated > 0 {
                    row.fail(format!(
                        "{}: {} ({})",
                        ledger.display(),
                        verified.kinds,
                        verified.examples.join(" / ")
                    ));
                }
            }
            Err(error) => row.fail(format!("{error:#}")),
        }
        match Ledger::read(ledger) {
            Ok(ledger_lines) => {
                let raw_check = checks::raw_check(&ledger_lines, raw);
                if raw_check.missing > 0 && !raw_trusted {
                    row.note(format!(
                        "{}: {} acknowledged push(es) not on the raw topic at the end (the test broker's S3 storage overwrites records; which of them the sink lacks, the events check says): {}",
                        ledger.display(),
                        raw_check.missing,
                        raw_check.missing_examples.join(" / ")
                    ));
                } else if raw_check.missing > 0 {
                    row.lost += raw_check.missing;
                    row.fail(format!(
                        "{}: {} acknowledged push(es) missing from the raw log: {}",
                        ledger.display(),
                        raw_check.missing,
                        raw_check.missing_examples.join(" / ")
                    ));
                }
                if raw_check.excess > 0 {
                    row.note(format!(
                        "{}: {} raw record(s) beyond their sendings",
                        ledger.display(),
                        raw_check.excess
                    ));
                }
            }
            Err(error) => row.fail(format!("cannot read {}: {error}", ledger.display())),
        }
    }
}

/// The calls fold check.
pub fn check_calls(db: &Path, row: &mut Row) {
    match checks::calls_check(db) {
        Ok(calls) if calls.mismatches == 0 => {
            row.note(format!(
                "{} `calls` rows equal the fold of their events",
                calls.rows
            ));
        }
        Ok(calls) => row.fail(format!(
            "{} `calls` row(s) differ from the fold: {}",
            calls.mismatches,
            calls.examples.join(" / ")
        )),
        Err(error) => row.fail(format!("calls check: {error:#}")),
    }
}

/// Waits until `serve` answers `/readyz` 200 (or `timeout`).
pub fn wait_ready(serve: &Callhook, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if serve.ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Runs `iterations` injections under continuous load (segments of `segment` each, restarted
/// when one ends): starts `serve`, measures a fault-free baseline, then calls `inject` with the
/// running process, which injects the fault and returns the restarted, recovered process.
/// Returns the last process (still running) for the final checks.
pub fn run_cycles(
    suite: &mut Suite,
    rig: &mut Rig,
    row: &mut Row,
    iterations: u32,
    segment: Duration,
    mut inject: impl FnMut(&mut Suite, &Rig, Callhook, &mut Row, u32) -> anyhow::Result<Callhook>,
) -> anyhow::Result<Callhook> {
    let mut serve = rig.start(None)?;
    if !wait_ready(&serve, Duration::from_secs(30)) {
        anyhow::bail!("`callhook serve` did not become ready");
    }
    let baseline = suite.pick(Duration::from_secs(15), Duration::from_secs(8));
    let before = rig.baseline(suite, baseline)?;
    row.p99_before_ms = before.p99_ms;
    let mut load = rig.load(suite, segment)?;
    for iteration in 0..iterations {
        if !load.running() {
            rig.finish(load)?;
            load = rig.load(suite, segment)?;
        }
        serve = inject(suite, rig, serve, row, iteration)?;
        row.iterations += 1;
        eprint!("\r  {} {}/{iterations}   ", row.fault, iteration + 1);
    }
    eprintln!();
    rig.finish(load)?;
    row.acknowledged = rig.acknowledged(1);
    row.p99_during_ms = rig.p99(1);
    let failures = rig.failures_text(1);
    if !failures.is_empty() {
        row.note(format!(
            "pushes not acknowledged during the faults (the vendor retries them): {failures}"
        ));
    }
    Ok(serve)
}

/// Restarts `serve` after it stopped and records how long recovery took: from the spawn to
/// `/readyz` 200 with the normalizer past the raw log's end at the stop.
pub fn restart_and_recover(rig: &Rig, row: &mut Row) -> anyhow::Result<Callhook> {
    let target = checks::raw_end(&rig.rawlog())?;
    let since = Instant::now();
    let serve = rig.start(None)?;
    match rig.wait_recovered(&serve, target, since, Duration::from_secs(120)) {
        Some(took) => row.recovery.push(took),
        None => row.fail(format!(
            "not recovered within 120 s of a restart (ready: {}, consumed {} of {target})",
            serve.ready(),
            checks::sink_consumed(&rig.db(), CONSUMER)
        )),
    }
    Ok(serve)
}
