//! Fault 5: SIGTERM under load. In-flight requests are acknowledged or refused, nothing
//! acknowledged is lost, and the process exits 0; restarted after each stop.

use std::time::{Duration, Instant};

use super::{restart_and_recover, run_cycles, Rig, Suite};
use crate::table::Row;

/// Runs the fault.
pub fn run(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("SIGTERM `serve` under load");
    let mut rig = Rig::new(suite, "sigterm", None, "")?;
    let iterations = suite.pick(10, 3);
    let mut stop_times = Vec::new();
    let serve = run_cycles(
        suite,
        &mut rig,
        &mut row,
        iterations,
        Duration::from_secs(60),
        |suite, rig, serve, row, _| {
            std::thread::sleep(
                suite
                    .rng
                    .between(Duration::from_millis(1000), Duration::from_millis(4000)),
            );
            let asked = Instant::now();
            match serve.terminate(Duration::from_secs(30)) {
                Some(status) if status.success() => stop_times.push(asked.elapsed()),
                Some(status) => row.fail(format!("exit status {status} on SIGTERM under load")),
                None => row.fail("no exit within 30 s of SIGTERM under load"),
            }
            restart_and_recover(rig, row)
        },
    )?;
    if let Some(longest) = stop_times.iter().max() {
        row.note(format!(
            "{} SIGTERM stops exited 0, the longest after {:.2} s",
            stop_times.len(),
            longest.as_secs_f64()
        ));
    }
    rig.final_checks(suite, serve, &mut row);
    Ok(row)
}
