//! Crash points for the fault tests, compiled in only with the `failpoints` feature (which only
//! test builds enable); without it every function here is an empty inline call.
//!
//! A point is armed through the `FAILPOINTS` environment variable read by [`setup`] at process
//! start, in the `fail` crate's syntax: `FAILPOINTS='normalizer::after_map=1*return'` aborts the
//! process the first time the loop passes that point. Aborting (not panicking) is the point:
//! these stand for the crashes no `catch_unwind` sees (an abort, a stack overflow, an OOM
//! kill). The names are listed in [`POINTS`]; `normalizer::step` panics instead of aborting
//! (a panic outside any record, which the supervisor restarts the loop after).

/// Every crash point, in the order a batch passes them.
pub const POINTS: [&str; 4] = [
    "normalizer::after_read",
    "normalizer::after_map",
    "sink::mid_transaction",
    "normalizer::after_commit",
];

/// Holds the armed scenario for the life of the process.
pub struct Scenario {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

/// Arms the points named in `FAILPOINTS`; keep the value for the life of the process.
pub fn setup() -> Scenario {
    Scenario {
        #[cfg(feature = "failpoints")]
        _scenario: fail::FailScenario::setup(),
    }
}

/// Aborts the process if the point `name` is armed.
#[inline]
pub fn crash_at(name: &str) {
    if armed(name).is_some() {
        tracing::error!(point = name, "failpoint: aborting the process");
        std::process::abort();
    }
}

/// Panics if the point `name` is armed (a panic the loop's own code did not expect: its
/// supervisor catches it and restarts the loop).
#[inline]
pub fn panic_at(name: &str) {
    if armed(name).is_some() {
        panic!("failpoint `{name}`");
    }
}

/// Returns the argument of the point `name` when it is armed (`return(ARG)`; `Some("")`
/// without an argument), `None` otherwise.
#[inline]
pub fn armed(name: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |argument| argument.unwrap_or_default())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}
