//! The checks behind callhook's fuzz targets, one function per target, free of any fuzzer.
//!
//! Each `check_*` takes the fuzzer's bytes, runs the code under test and asserts its
//! invariants (a failed assertion is a crash to the fuzzer). The AFL binaries in `fuzz/afl/`
//! (a crate outside the workspace, so `cargo test --workspace` and clippy never need AFL) call
//! them, and `tests/corpus.rs` replays every file of `fuzz/corpus/<target>/` through the same
//! function, so a minimized crash input checked in as a regression fails a plain `cargo test`.
//!
//! Modules: [`push`] (`map_push` per dialect), [`scalars`] (time and phone parsers),
//! [`literal`] (the lenient JS-literal parser), [`http`] (the receiver over an in-memory
//! connection). [`TARGETS`] names them all.

pub mod http;
pub mod literal;
pub mod push;
pub mod scalars;

use callhook_normalizer::Dialect;

/// One fuzz target: its name (the AFL binary and the corpus folder) and its check.
#[derive(Clone, Copy)]
pub struct Target {
    /// The binary and `fuzz/corpus/<name>/` folder name.
    pub name: &'static str,
    /// Runs one input; panics when an invariant does not hold.
    pub check: fn(&[u8]),
}

/// Every target, cheapest first.
pub const TARGETS: [Target; 7] = [
    Target {
        name: "phone",
        check: scalars::check_phone,
    },
    Target {
        name: "time",
        check: scalars::check_time,
    },
    Target {
        name: "lenient",
        check: literal::check_lenient,
    },
    Target {
        name: "map_7moor",
        check: check_map_7moor,
    },
    Target {
        name: "map_coocenter",
        check: check_map_coocenter,
    },
    Target {
        name: "map_uincall",
        check: check_map_uincall,
    },
    Target {
        name: "ingest",
        check: http::check_ingest,
    },
];

/// Returns the target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.into_iter().find(|target| target.name == name)
}

/// `map_push` on a 7moor source (v7 JSON and v2 query strings).
pub fn check_map_7moor(data: &[u8]) {
    push::check_map_push(Dialect::SevenMoor, data);
}

/// `map_push` on a CooCenter source.
pub fn check_map_coocenter(data: &[u8]) {
    push::check_map_push(Dialect::CooCenter, data);
}

/// `map_push` on a UinCall source.
pub fn check_map_uincall(data: &[u8]) {
    push::check_map_push(Dialect::UinCall, data);
}
