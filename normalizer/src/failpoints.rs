//! The normalizer's crash points for the fault tests (see `callhook_sinks::failpoints`): the
//! named points of a batch, and `normalizer::poison`, which aborts the process while mapping
//! any record whose body contains the point's argument (`normalizer::poison=return(POISON)`),
//! so a test can send a record that kills the process every time it is mapped.

use callhook_rawlog::RawRecord;
pub use callhook_sinks::failpoints::{crash_at, panic_at, setup, Scenario, POINTS};

/// The point that switches the mapping to its test-only variant, version
/// `MAPPING_VERSION + 1000` (`normalizer::mapping_variant=return`): 7moor's outbound events
/// other than `call.initiated` say `inbound` (so calls change direction), and the otherwise
/// unknown 7moor push type `variantPush` maps as `dialoutRing`. The replay and redrive tests use it as "a fixed mapping".
pub const MAPPING_VARIANT: &str = "normalizer::mapping_variant";

/// Returns true when the test-only mapping variant is armed.
#[inline]
pub fn mapping_variant() -> bool {
    callhook_sinks::failpoints::armed(MAPPING_VARIANT).is_some()
}

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
