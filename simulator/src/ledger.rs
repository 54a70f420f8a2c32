//! The ledger: one JSON line per acknowledged push, one per simulated call, one for the run.
//!
//! Guarantee: a `push` line is written only after the receiver answered `200` with body `200`
//! for exactly those bytes, so every `push` line names a push the service promised to keep.
//! A push that was sent but not acknowledged gets an `unacknowledged` line: the service may
//! or may not hold it (a timeout can hide a stored push), so its events are allowed, never
//! required.
//! Each line carries the exact request (method, query, content type, body) and the send and
//! ack times, which is everything `--verify` needs to map the push again and recompute its
//! dedupe key and event ids. A `call` line carries what the call's `calls` row must say and how
//! many distinct pushes the call has (so a call with an unacknowledged push is recognisably
//! incomplete).
//!
//! Lines are written by one dedicated thread fed through a channel: workers never block on the
//! file. A line lost to a crash of the simulator only makes the ledger claim less.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use callhook_schemas::{Direction, DispositionValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::flow::{Flow, Scenario, SimDialect};
use crate::load::{PushObserver, ScheduledPush};

/// The ledger's format version (in the `run` line).
pub const LEDGER_VERSION: u32 = 1;

/// Why a ledger could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be created, written or read.
    #[error("ledger `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line is not a ledger line.
    #[error("ledger `{path}` line {line}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

/// One line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerLine {
    /// The run (first line).
    Run(RunLine),
    /// A simulated call and its expected row.
    Call(CallLine),
    /// An acknowledged push.
    Push(PushLine),
    /// A push that was sent but not acknowledged (the service may or may not hold it).
    Unacknowledged(PushLine),
}

/// The run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLine {
    /// [`LEDGER_VERSION`].
    pub version: u32,
    /// The seed.
    pub seed: u64,
    /// The target URL.
    pub target: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
}

/// A simulated call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLine {
    /// The flow it belongs to.
    pub flow: u64,
    /// The dialect.
    pub dialect: SimDialect,
    /// The source pushed to.
    pub source: String,
    /// What happened in the flow.
    pub scenario: Scenario,
    /// The call id (`calls.call_id`).
    pub call_id: String,
    /// Expected `calls.direction`.
    pub direction: Direction,
    /// Expected `calls.disposition`.
    pub disposition: Option<DispositionValue>,
    /// Expected `calls.parent_call_id`.
    pub parent_call_id: Option<String>,
    /// Distinct pushes that name this call.
    pub pushes: u32,
}

/// An acknowledged push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushLine {
    /// The flow it belongs to.
    pub flow: u64,
    /// Its position in the flow (vendor order).
    pub seq: u32,
    /// 0 for the first sending, 1 for the vendor retry.
    pub copy: u32,
    /// The dialect.
    pub dialect: SimDialect,
    /// The source pushed to.
    pub source: String,
    /// The call it names, if any.
    pub call_id: Option<String>,
    /// `GET` or `POST`.
    pub method: String,
    /// The query string sent, if any.
    pub query: Option<String>,
    /// The `Content-Type` sent, if any.
    pub content_type: Option<String>,
    /// The exact body.
    pub body: String,
    /// When sending started.
    pub sent_at: DateTime<Utc>,
    /// When the answer (or the failure) came.
    pub answered_at: DateTime<Utc>,
    /// Why it was not acknowledged (`unacknowledged` lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl CallLine {
    /// Returns the call lines of a flow.
    pub fn of_flow(flow: &Flow, source: &str) -> Vec<CallLine> {
        flow.calls
            .iter()
            .map(|call| CallLine {
                flow: flow.index,
                dialect: flow.dialect,
                source: source.to_owned(),
                scenario: flow.scenario,
                call_id: call.call_id.clone(),
                direction: call.direction,
                disposition: call.disposition,
                parent_call_id: call.parent_call_id.clone(),
                pushes: flow
                    .pushes
                    .iter()
                    .filter(|push| push.call_id.as_deref() == Some(call.call_id.as_str()))
                    .count() as u32,
            })
            .collect()
    }
}

impl PushLine {
    /// Returns the line of a simulator push (`None` for pushes without meta); `failure` is
    /// `None` for an acknowledged one.
    pub fn of(
        scheduled: &ScheduledPush,
        sent_at: DateTime<Utc>,
        answered_at: DateTime<Utc>,
        failure: Option<String>,
    ) -> Option<PushLine> {
        let push = &scheduled.push;
        let meta = push.meta.as_ref()?;
        Some(PushLine {
            flow: meta.flow,
            seq: meta.seq,
            copy: scheduled.copy,
            dialect: meta.dialect,
            source: meta.source.to_string(),
            call_id: meta.call_id.clone(),
            method: push.method.as_str().to_owned(),
            query: push.path_and_query.query().map(str::to_owned),
            content_type: push
                .content_type
                .as_ref()
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            // Generated bodies are UTF-8 text; the conversion is lossless for them.
            body: String::from_utf8_lossy(&push.body).into_owned(),
            sent_at,
            answered_at,
            failure,
        })
    }
}

/// Writes ledger lines on a dedicated thread.
pub struct LedgerWriter {
    sender: mpsc::Sender<LedgerLine>,
    thread: JoinHandle<io::Result<u64>>,
    path: PathBuf,
}

impl LedgerWriter {
    /// Creates (truncates) the file and starts the writer thread.
    pub fn create(path: &Path) -> Result<LedgerWriter, LedgerError> {
        let io_error = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_error)?;
        let (sender, receiver) = mpsc::channel::<LedgerLine>();
        // File writes block: they get their own thread, never a runtime worker.
        let thread = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                let mut lines = 0;
                for line in receiver {
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                    lines += 1;
                }
                out.flush()?;
                out.get_ref().sync_all()?;
                Ok(lines)
            })
            .map_err(io_error)?;
        Ok(LedgerWriter {
            sender,
            thread,
            path: path.to_owned(),
        })
    }

    /// Returns a cheap handle that queues lines.
    pub fn handle(&self) -> LedgerHandle {
        LedgerHandle {
            sender: self.sender.clone(),
        }
    }

    /// Closes the channel, waits for every queued line to be written and synced; returns the
    /// number of lines. Every handle must be dropped first.
    pub fn finish(self) -> Result<u64, LedgerError> {
        drop(self.sender);
        let path = self.path;
        match self.thread.join() {
            Ok(result) => result.map_err(|source| LedgerError::Io { path, source }),
            Err(_) => Err(LedgerError::Io {
                path,
                source: io::Error::other("the ledger thread panicked"),
            }),
        }
    }
}

/// Queues lines for the writer thread.
#[derive(Clone)]
pub struct LedgerHandle {
    sender: mpsc::Sender<LedgerLine>,
}

impl LedgerHandle {
    /// Queues one line (dropped silently if the writer has stopped; `finish` reports why).
    pub fn write(&self, line: LedgerLine) {
        let _ = self.sender.send(line);
    }
}

impl PushObserver for LedgerHandle {
    fn acknowledged(&self, push: &ScheduledPush, sent_at: DateTime<Utc>, acked_at: DateTime<Utc>) {
        if let Some(line) = PushLine::of(push, sent_at, acked_at, None) {
            self.write(LedgerLine::Push(line));
        }
    }

    fn failed(
        &self,
        push: &ScheduledPush,
        sent_at: DateTime<Utc>,
        failed_at: DateTime<Utc>,
        class: &str,
    ) {
        if let Some(line) = PushLine::of(push, sent_at, failed_at, Some(class.to_owned())) {
            self.write(LedgerLine::Unacknowledged(line));
        }
    }
}

/// A ledger read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// The run line, if present.
    pub run: Option<RunLine>,
    /// Every call.
    pub calls: Vec<CallLine>,
    /// Every acknowledged push.
    pub pushes: Vec<PushLine>,
    /// Every push sent but not acknowledged.
    pub unacknowledged: Vec<PushLine>,
}

impl Ledger {
    /// Reads a ledger file.
    pub fn read(path: &Path) -> Result<Ledger, LedgerError> {
        let file = File::open(path).map_err(|source| LedgerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut ledger = Ledger::default();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: LedgerLine =
                serde_json::from_str(&line).map_err(|error| LedgerError::Parse {
                    path: path.to_owned(),
                    line: number + 1,
                    detail: error.to_string(),
                })?;
            match parsed {
                LedgerLine::Run(run) => ledger.run = Some(run),
                LedgerLine::Call(call) => ledger.calls.push(call),
                LedgerLine::Push(push) => ledger.pushes.push(push),
                LedgerLine::Unacknowledged(push) => ledger.unacknowledged.push(push),
            }
        }
        Ok(ledger)
    }
}
