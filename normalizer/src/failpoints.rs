//! The normalizer's crash points for the fault tests (see `callhook_sinks::failpoints`): the
//! named points of a batch, and `normalizer::poison`, which aborts the process while mapping
//! any record whose body contains the point's argument (`normalizer::poison=return(POISON)`),
//! so a test can send a record that kills the process every time it is mapped.

use callhook_rawlog::RawRecord;
pub use callhook_sinks::failpoints::{crash_at, panic_at, setup, Scenario, POINTS};

/// The point that makes a marked record fatal to map.
pub const POISON: &str = "normalizer::poison";

/// Aborts the process if `normalizer::poison` is armed and the record's body contains its
/// argument.
#[inline]
pub fn crash_if_record_matches(record: &RawRecord) {
    let Some(marker) = callhook_sinks::failpoints::armed(POISON) else {
        return;
    };
    let body = record.body.as_ref();
    if !marker.is_empty()
        && body
            .windows(marker.len())
            .any(|window| window == marker.as_bytes())
    {
        tracing::error!("failpoint: a poison record is being mapped; aborting the process");
        std::process::abort();
    }
}
