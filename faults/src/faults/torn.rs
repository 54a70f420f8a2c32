//! Fault 6: a torn or corrupted raw-log file. After a SIGKILL under load the suite damages the
//! files, then starts callhook on them:
//!
//! - **torn WAL**: the WAL cut inside its last commit frame (a committed, acknowledged
//!   transaction torn away, as a disk that lied about fsync would leave it);
//! - **flipped bytes**: 16 bytes flipped in a frame a few frames before the end, commits behind
//!   it (SQLite would silently drop them all);
//! - **truncated main file**: `rawlog.db` cut to 60 % after a clean stop.
//!
//! Expected each time: `callhook serve` refuses to start with a message that names
//! `callhook log check`; `callhook log check` exits non-zero and names what is damaged and which
//! records are lost. For the WAL cases `callhook log check --repair` then keeps what is intact
//! and callhook starts; for the main file the operator restores a copy. Every acknowledged push
//! that is gone afterwards must have been named: here "lost" counts losses nobody reported.

use std::time::{Duration, Instant};

use anyhow::bail;
use callhook_rawlog::embedded::check::wal::{self, FRAME_HEADER_BYTES, HEADER_BYTES};
use callhook_rawlog::embedded::check::wal_path;
use callhook_simulator::ledger::Ledger;

use super::{wait_ready, Rig, Suite, CONSUMER};
use crate::checks;
use crate::sim;
use crate::table::Row;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Damage {
    TornWal,
    FlippedBytes,
    TruncatedMain,
}

/// Runs the three variants into one row.
pub fn run(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("torn / corrupt raw log (lost = not reported)");
    let mut before = Vec::new();
    let mut during = Vec::new();
    for damage in [Damage::TornWal, Damage::FlippedBytes, Damage::TruncatedMain] {
        if let Err(error) = variant(suite, damage, &mut row, &mut before, &mut during) {
            row.fail(format!("{damage:?}: {error:#}"));
        }
        row.iterations += 1;
    }
    row.p99_before_ms = before.iter().copied().fold(0.0, f64::max);
    row.p99_during_ms = during.iter().copied().fold(0.0, f64::max);
    Ok(row)
}

fn variant(
    suite: &mut Suite,
    damage: Damage,
    row: &mut Row,
    before: &mut Vec<f64>,
    during: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let name = format!("torn-{damage:?}").to_lowercase();
    let mut rig = Rig::new(suite, &name, None, "")?;
    let serve = rig.start(None)?;
    if !wait_ready(&serve, Duration::from_secs(30)) {
        bail!("`callhook serve` did not become ready");
    }
    before.push(rig.baseline(suite, Duration::from_secs(5))?.p99_ms);
    let load = rig.load(suite, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(7));
    match damage {
        Damage::TruncatedMain => {
            rig.finish(load)?;
            if serve
                .terminate(Duration::from_secs(60))
                .is_none_or(|status| !status.success())
            {
                row.fail("a clean stop before truncating the main file failed");
            }
        }
        Damage::TornWal | Damage::FlippedBytes => {
            // Killed while the load runs: the WAL holds the newest commits.
            serve.kill();
            rig.finish(load)?;
        }
    }
    during.push(rig.p99(1));
    row.acknowledged += rig.acknowledged(1);
    let backup = rig.dir.join("rawlog.db.copy");
    let done = corrupt(&rig, damage, &backup)?;
    // callhook must refuse, naming the fsck.
    match rig.start(None) {
        Ok(serve) => {
            row.fail(format!(
                "{damage:?}: `callhook serve` started on a damaged raw log ({done})"
            ));
            serve.kill();
        }
        Err(error) => {
            let text = format!("{error:#}");
            if !text.contains("callhook log check") {
                row.fail(format!(
                    "{damage:?}: the refusal does not name `callhook log check`: {text}"
                ));
            }
        }
    }
    let (clean, report) = checks::log_check(&suite.bin, &rig.config, &rig.data, false)?;
    if clean {
        row.fail(format!(
            "{damage:?}: `callhook log check` finds the damaged log clean: {report}"
        ));
    }
    let reported = reported_lost(&report);
    let finding = report
        .lines()
        .find(|line| line.contains("DAMAGE"))
        .unwrap_or("")
        .trim()
        .to_owned();
    row.note(format!("{damage:?} ({done}): refused to start; `log check` exit 1: {finding}; names {reported} lost record(s)"));
    let since = Instant::now();
    match damage {
        Damage::TruncatedMain => {
            std::fs::copy(&backup, rig.rawlog())?;
        }
        Damage::TornWal | Damage::FlippedBytes => {
            let (_, repaired) = checks::log_check(&suite.bin, &rig.config, &rig.data, true)?;
            if !repaired.contains("repaired") {
                row.fail(format!(
                    "{damage:?}: `log check --repair` repaired nothing: {repaired}"
                ));
            }
        }
    }
    let target = checks::raw_end(&rig.rawlog())?;
    let serve = rig.start(None)?;
    match rig.wait_recovered(&serve, target, since, Duration::from_secs(120)) {
        Some(took) => row.recovery.push(took),
        None => row.fail(format!("{damage:?}: no recovery after the repair")),
    }
    // What is really gone, against what was reported.
    let raw = checks::embedded_raw_records(&rig.rawlog())?;
    let mut raw_missing = 0;
    let mut events_missing = 0;
    for (index, ledger) in ["ledger-0.jsonl", "ledger-1.jsonl"].iter().enumerate() {
        let path = rig.dir.join(ledger);
        raw_missing += checks::raw_check(&Ledger::read(&path)?, &raw).missing;
        let verified = sim::verify(&suite.bin, &path, &rig.db(), Duration::from_secs(60))?;
        events_missing += verified.lost;
        row.duplicated += verified.duplicated;
        if verified.other > 0 && index == 0 {
            row.fail(format!("{damage:?}: {}", verified.kinds));
        }
    }
    let unreported = raw_missing.max(events_missing).saturating_sub(reported);
    row.lost += unreported;
    row.note(format!(
        "{damage:?}: after the repair {raw_missing} acknowledged push(es) are missing from the raw log and {events_missing} from `events`; {reported} were named"
    ));
    if unreported > 0 {
        row.fail(format!(
            "{damage:?}: {unreported} acknowledged push(es) lost without being named"
        ));
    }
    let _ = checks::sink_consumed(&rig.db(), CONSUMER);
    super::check_calls(&rig.db(), row);
    match serve.terminate(Duration::from_secs(60)) {
        Some(status) if status.success() => {}
        other => row.fail(format!("{damage:?}: SIGTERM after the repair: {other:?}")),
    }
    rig.check_files(suite, row);
    Ok(())
}

/// Damages the files; returns what was done.
fn corrupt(rig: &Rig, damage: Damage, backup: &std::path::Path) -> anyhow::Result<String> {
    let path = rig.rawlog();
    let wal_file = wal_path(&path);
    match damage {
        Damage::TruncatedMain => {
            std::fs::copy(&path, backup)?;
            let length = std::fs::metadata(&path)?.len();
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(length * 6 / 10)?;
            Ok(format!(
                "main file cut from {length} to {} bytes",
                length * 6 / 10
            ))
        }
        Damage::TornWal | Damage::FlippedBytes => {
            let scan = wal::scan(&wal_file)?;
            if scan.replayed_frames < 8 {
                bail!(
                    "the WAL holds only {} replayed frames",
                    scan.replayed_frames
                );
            }
            let frame = (FRAME_HEADER_BYTES + scan.page_size as usize) as u64;
            let last_commit = scan.replayed_frames;
            if damage == Damage::TornWal {
                let keep = HEADER_BYTES as u64
                    + (last_commit - 1) * frame
                    + FRAME_HEADER_BYTES as u64
                    + 512;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&wal_file)?
                    .set_len(keep)?;
                Ok(format!(
                    "wal cut inside its last commit frame {last_commit}"
                ))
            } else {
                let target = last_commit - 6;
                let mut bytes = std::fs::read(&wal_file)?;
                let at = (HEADER_BYTES as u64 + target * frame + FRAME_HEADER_BYTES as u64 + 2048)
                    as usize;
                for byte in &mut bytes[at..at + 16] {
                    *byte ^= 0xa5;
                }
                std::fs::write(&wal_file, bytes)?;
                Ok(format!(
                    "16 bytes flipped in wal frame {} of {last_commit}",
                    target + 1
                ))
            }
        }
    }
}

/// Reads "N acknowledged record(s) lost" from a `callhook log check` report.
fn reported_lost(report: &str) -> u64 {
    report
        .lines()
        .filter_map(|line| line.split_once("NOT CLEAN: "))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .filter_map(|number| number.parse::<u64>().ok())
        .sum()
}
