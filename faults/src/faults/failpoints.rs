//! Fault 2: the normalizer aborts the process at a named point inside a batch
//! (`normalizer::after_read`, `normalizer::after_map`, `sink::mid_transaction`,
//! `normalizer::after_commit`), armed through `FAILPOINTS` in a binary built with
//! `--features failpoints`; the process is restarted without it. The attempt journal must then
//! commit the interrupted batch record by record: nothing lost, nothing duplicated, no record
//! dead-lettered for it.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::{restart_and_recover, run_cycles, Rig, Suite};
use crate::table::Row;

/// The crash points, in the order a batch passes them.
pub const POINTS: [&str; 4] = [
    "normalizer::after_read",
    "normalizer::after_map",
    "sink::mid_transaction",
    "normalizer::after_commit",
];

/// Runs the fault.
pub fn run(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("normalizer abort at a crash point");
    let mut rig = Rig::new(suite, "failpoints", None, "")?;
    let rounds = suite.pick(3, 1);
    let iterations = rounds * POINTS.len() as u32;
    let log = rig.dir.join("callhook.log");
    let serve = run_cycles(
        suite,
        &mut rig,
        &mut row,
        iterations,
        Duration::from_secs(60),
        |suite, rig, serve, row, iteration| {
            let point = POINTS[iteration as usize % POINTS.len()];
            if serve
                .terminate(Duration::from_secs(30))
                .is_none_or(|status| !status.success())
            {
                row.fail("a clean stop before arming a crash point failed");
            }
            let skip = 1 + suite.rng.next() % 12;
            let armed = format!("{point}={skip}*off->1*return");
            let mut crashing = rig.start(Some(&armed))?;
            match crashing.wait_exit(Duration::from_secs(120)) {
                Some(status) if status.signal() == Some(libc::SIGABRT) => {}
                Some(status) => row.fail(format!("`{armed}`: exited with {status}, not an abort")),
                None => {
                    row.fail(format!("`{armed}`: the point was not reached within 120 s"));
                    crashing.kill();
                }
            }
            restart_and_recover(rig, row)
        },
    )?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let isolated = text.matches("attempted one by one").count();
    row.note(format!(
        "{iterations} aborts ({rounds} at each point); the attempt journal isolated an interrupted batch {isolated} time(s)"
    ));
    if isolated == 0 {
        row.fail("no restart found a batch in flight in the attempt journal");
    }
    rig.final_checks(suite, serve, &mut row);
    Ok(row)
}
