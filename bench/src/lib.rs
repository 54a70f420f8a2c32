//! `callhook-bench`: the benchmark harness behind `bench/run.sh` (never part of `cargo test`:
//! speed is measured here, not asserted in tests).
//!
//! Binaries: `bare-hyper` (the ceiling: hyper answering `200`), `loadgen` (the HTTP/1.1 load
//! generator), `kafka-receiver` (the receiver in Kafka mode on an in-process MockCluster),
//! `normalizer-bench` (drain a pre-filled raw log into SQLite; dedupe cache memory),
//! `bench-harness` (runs everything in one go, prints the table, writes the JSON), `abuse`
//! (a well-behaved client's latency beside hostile clients; not part of `bench/run.sh`).
//!
//! Modules: [`abuse`] (the hostile clients), [`body`] (the 1 KB push with unique ids),
//! [`disk`] (bytes on disk per push, raw log compacted or not, and sink),
//! [`load`] (the load engine), [`e2e`] (ack → row latency), [`fixtures`] (the golden fixtures
//! as a vendor mix with unique ids),
//! [`stats`] (HDR histograms), [`procfs`] (peak RSS, CPU time), [`probe`] (disk `fdatasync`
//! latency, CPU / I/O pressure), [`process`] (child processes), [`report`] (table, targets).

pub mod abuse;
pub mod body;
pub mod disk;
pub mod e2e;
pub mod fixtures;
pub mod load;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod workload;
