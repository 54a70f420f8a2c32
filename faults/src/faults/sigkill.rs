//! Fault 1: `callhook serve` (embedded) killed with SIGKILL at random moments under load, and
//! restarted after each kill.

use std::time::Duration;

use super::{restart_and_recover, run_cycles, Rig, Suite};
use crate::table::Row;

/// Runs the fault.
pub fn run(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("SIGKILL `serve` under load");
    let mut rig = Rig::new(suite, "sigkill", None, "")?;
    let iterations = suite.pick(50, 10);
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
                    .between(Duration::from_millis(300), Duration::from_millis(3000)),
            );
            serve.kill();
            restart_and_recover(rig, row)
        },
    )?;
    rig.final_checks(suite, serve, &mut row);
    Ok(row)
}
