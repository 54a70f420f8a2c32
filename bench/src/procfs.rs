//! Process memory from `/proc/<pid>/status` (Linux): peak and current resident set size.

use serde::{Deserialize, Serialize};

/// Resident set sizes of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `VmHWM`: the peak resident set size since the process started.
    pub peak_rss_kib: u64,
    /// `VmRSS`: the resident set size now.
    pub rss_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` of `pid` (`None` when the process or the file is gone).
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(&status))
}

/// Reads this process's memory.
pub fn own_memory() -> Memory {
    memory_of(std::process::id()).unwrap_or_default()
}

/// Returns the CPU time (user + system) this process has used so far.
pub fn own_cpu_time() -> std::time::Duration {
    // SAFETY: `getrusage` only writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| {
        u64::try_from(time.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(time.tv_usec).unwrap_or(0)
    };
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn parse_status(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_status() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t    2345 kB\n";
        assert_eq!(
            parse_status(status),
            Memory {
                peak_rss_kib: 12345,
                rss_kib: 2345
            }
        );
        assert_eq!(parse_status(""), Memory::default());
    }

    #[test]
    fn test_own_memory_is_nonzero() {
        assert!(own_memory().peak_rss_kib > 0);
    }
}
