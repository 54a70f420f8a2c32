//! What the machine was doing during a run, so a figure can be read in context: the disk's
//! `fdatasync` latency (what every durable ack waits for) and Linux pressure stall information
//! (the share of time some task waited for CPU or I/O, i.e. how shared the machine was).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::stats::{new_histogram, record, LatencySummary};

/// Bytes written before each `fdatasync` (about one group commit of 1 KB pushes).
const PROBE_WRITE_BYTES: usize = 32 * 1024;

/// Times `samples` rounds of "overwrite 32 KiB, then `fdatasync`" in a file under `dir`, the
/// pattern of a SQLite WAL commit once the WAL is in steady state.
pub fn fdatasync_latency(dir: &Path, samples: usize) -> std::io::Result<LatencySummary> {
    let path = dir.join("fsync-probe.bin");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0x5a_u8; PROBE_WRITE_BYTES];
    for _ in 0..samples {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let mut histogram = new_histogram();
    for index in 0..samples {
        file.seek(SeekFrom::Start((index * PROBE_WRITE_BYTES) as u64))?;
        file.write_all(&block)?;
        let started = Instant::now();
        file.sync_data()?;
        let micros = started.elapsed().as_micros();
        record(&mut histogram, u64::try_from(micros).unwrap_or(u64::MAX));
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(LatencySummary::of(&histogram))
}

/// Cumulative stall counters of `/proc/pressure/{cpu,io}` (`some` lines), in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    at: Instant,
    cpu_some_us: Option<u64>,
    io_some_us: Option<u64>,
}

/// The stall shares between two [`Pressure`] readings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PressureShare {
    /// Percent of the time at least one task waited for a CPU.
    pub cpu_some_percent: Option<f64>,
    /// Percent of the time at least one task waited for I/O.
    pub io_some_percent: Option<f64>,
}

impl Pressure {
    /// Reads the counters now (`None` fields where the kernel has no PSI).
    pub fn now() -> Self {
        Pressure {
            at: Instant::now(),
            cpu_some_us: some_total("/proc/pressure/cpu"),
            io_some_us: some_total("/proc/pressure/io"),
        }
    }

    /// Returns the shares of the time since `self`.
    pub fn share_since(&self) -> PressureShare {
        let now = Pressure::now();
        let wall_us = now.at.duration_since(self.at).as_micros() as f64;
        let share = |before: Option<u64>, after: Option<u64>| {
            let stalled = after?.checked_sub(before?)? as f64;
            (wall_us > 0.0).then(|| (stalled / wall_us * 1000.0).round() / 10.0)
        };
        PressureShare {
            cpu_some_percent: share(self.cpu_some_us, now.cpu_some_us),
            io_some_percent: share(self.io_some_us, now.io_some_us),
        }
    }
}

fn some_total(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_some_total(&text)
}

fn parse_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))
        .and_then(|total| total.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_some_total() {
        let text = "some avg10=1.00 avg60=2.00 avg300=3.00 total=12345\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n";
        assert_eq!(parse_some_total(text), Some(12345));
        assert_eq!(parse_some_total("full total=1"), None);
    }
}
