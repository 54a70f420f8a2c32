//! `callhook simulate`: realistic vendor traffic with a known outcome for every call, and a
//! verifier that holds the database to it.
//!
//! Modules:
//! - [`flow`]: the simulated world: dialects, scenarios, flows, their pushes and the
//!   [`flow::ExpectedCall`] row each call must produce.
//! - [`generate`]: one generator per dialect (`sevenmoor_v7`, `sevenmoor_v2`, `coocenter`,
//!   `uincall`), producing the shapes the mappers' golden fixtures show, deterministically
//!   from a seed.
//! - [`schedule`]: flows → a lazily generated, time-ordered stream of pushes, with vendor
//!   retries (duplicates) and reordering.
//! - [`load`]: the load engine, reusable on its own ([`load::run_load`]): hyper HTTP/1.1 over an
//!   exact number of connections, keep-alive or not, on schedule or unthrottled; counts,
//!   failure classes, HDR-histogram ack latency, a live progress line on a terminal.
//! - [`ledger`]: one JSON line per acknowledged push and per call, written off the runtime.
//! - [`verify`]: the database against a ledger: every acknowledged push accounted for (its
//!   dedupe key and event ids recomputed with the real mapper), no duplicate or stray events,
//!   one `calls` row per call with the expected direction, disposition and parent.
//!
//! Guarantees: a ledger `push` line exists only for a push the receiver acknowledged;
//! verification never writes to the database.

pub mod args;
mod cli;
pub mod flow;
pub mod generate;
pub mod ledger;
pub mod load;
pub mod schedule;
pub mod verify;

pub use args::SimulateArgs;
pub use cli::{run, SimulateError, SimulationReport};
