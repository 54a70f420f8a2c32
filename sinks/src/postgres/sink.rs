//! [`PostgresSink`]: commits [`SinkBatch`]es to PostgreSQL, exactly once (see the module docs
//! of [`super`] for the guarantee and how it is kept).

use std::collections::HashMap;
use std::time::Instant;

use postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresSinkSettings;
use super::error::{FailureKind, PostgresSinkError, Result};
use super::metrics::PostgresSinkMetrics;
use super::schema;
use super::writes::{self, Tally};
use crate::batch::{CommitOutcome, SinkBatch, SinkItem};
use crate::metrics::{BatchCommitted, SinkMetrics};

/// The `sink` label of this sink's metrics.
pub const METRIC_LABEL: &str = "postgres";

/// How many times a batch is written again after a data error, each time with one more
/// record dead-lettered at most; past that the error is returned (and the batch retried).
const MAX_DATA_ERROR_ROUNDS: usize = 8;

/// The PostgreSQL sink. Owns one connection (re-established when it is lost); every method
/// blocks on the network, so it runs on the normalizer's own thread, never on the runtime.
pub struct PostgresSink {
    settings: PostgresSinkSettings,
    tls: MakeRustlsConnect,
    client: Option<Client>,
    metrics: PostgresSinkMetrics,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("database", &self.settings.display)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl PostgresSink {
    /// Connects and migrates the schema to the latest version (safe when several processes
    /// start at once: the migrations hold an advisory lock).
    pub fn open(settings: &PostgresSinkSettings) -> Result<PostgresSink> {
        let tls = super::tls::connector(settings.ca_file.as_deref())?;
        let mut sink = PostgresSink {
            settings: settings.clone(),
            tls,
            client: None,
            metrics: PostgresSinkMetrics::new(METRIC_LABEL),
        };
        let found = {
            let client = sink.client()?;
            schema::migrate(client)
        };
        let found = sink.observe(found)?;
        tracing::info!(
            database = %settings.display,
            schema_version_found = found,
            schema_version = schema::SCHEMA_VERSION,
            "postgres sink opened"
        );
        Ok(sink)
    }

    /// Returns the connection, connecting first when there is none or it was lost.
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = self.settings.connection.connect(self.tls.clone())?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| PostgresSinkError::InvalidConfig("no connection".to_owned()))
    }

    /// Counts a failure and drops a connection it broke.
    pub(super) fn observe<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            let kind = error.kind();
            self.metrics.failure(kind);
            if kind == FailureKind::Connection {
                self.client = None;
            }
        }
        result
    }

    /// Returns the handles of this sink's `callhook_sink_*` series.
    pub fn metrics(&self) -> &SinkMetrics {
        self.metrics.sink()
    }

    /// Commits a whole batch in one transaction and returns what it did: the events, the
    /// agents and `calls` rows they change, the dead letters and the consumer's offsets.
    /// A batch whose offsets are stored already writes nothing. A push PostgreSQL refuses
    /// (a NUL in its text, a time out of range, or any other data error the server reports)
    /// is stored as a `sink_rejected` dead letter instead, and the rest of the batch commits.
    /// On error nothing is written and the same batch may be retried.
    pub fn commit_batch(&mut self, batch: &SinkBatch) -> Result<CommitOutcome> {
        let started = Instant::now();
        let mut rejected: HashMap<usize, String> = batch
            .items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| Some((index, writes::refusal(item)?)))
            .collect();
        let mut rounds = 0;
        let tally = loop {
            let attempt = self.write(batch, &rejected);
            match attempt {
                Err(error)
                    if error.kind() == FailureKind::Data && rounds < MAX_DATA_ERROR_ROUNDS =>
                {
                    self.metrics.failure(FailureKind::Data);
                    rounds += 1;
                    let found = self.find_refused(batch, &rejected);
                    let found = self.observe(found)?;
                    if found.is_empty() {
                        return Err(error);
                    }
                    tracing::warn!(pushes = found.len(), error = %error, "postgres refused pushes of a batch; they are dead-lettered");
                    rejected.extend(found);
                }
                other => break self.observe(other)?,
            }
        };
        let Some(tally) = tally else {
            return Ok(CommitOutcome::default());
        };
        let dead_letters_by_reason = tally
            .dead_letters_by_reason
            .iter()
            .map(|(reason, count)| (reason.as_str(), *count))
            .collect();
        let committed = BatchCommitted {
            outcome: tally.outcome,
            elapsed: started.elapsed(),
            events_by_type: tally.events_by_type,
            dead_letters_by_reason,
        };
        committed.emit(self.metrics.sink());
        self.metrics.rows(&tally);
        Ok(committed.outcome)
    }

    /// One attempt at the batch's transaction.
    fn write(
        &mut self,
        batch: &SinkBatch,
        rejected: &HashMap<usize, String>,
    ) -> Result<Option<Tally>> {
        let client = self.client()?;
        let mut transaction = client.transaction()?;
        let tally = writes::write_batch(&mut transaction, batch, rejected)?;
        match tally {
            Some(tally) => {
                transaction.commit()?;
                Ok(Some(tally))
            }
            None => Ok(None),
        }
    }

    /// Finds the pushes PostgreSQL refuses, each tried alone inside a savepoint of a
    /// transaction that is rolled back: `(item index, the server's message)`.
    fn find_refused(
        &mut self,
        batch: &SinkBatch,
        rejected: &HashMap<usize, String>,
    ) -> Result<HashMap<usize, String>> {
        let client = self.client()?;
        let mut transaction = client.transaction()?;
        let mut found = HashMap::new();
        for (index, item) in batch.items.iter().enumerate() {
            if rejected.contains_key(&index) || !matches!(item, SinkItem::Push { .. }) {
                continue;
            }
            let alone = SinkBatch {
                consumer: batch.consumer.clone(),
                offsets: Vec::new(),
                items: vec![item.clone()],
            };
            let mut savepoint = transaction.savepoint("push")?;
            match writes::write_batch(&mut savepoint, &alone, &HashMap::new()) {
                Ok(_) => savepoint.rollback()?,
                Err(error) if error.kind() == FailureKind::Data => {
                    savepoint.rollback()?;
                    found.insert(index, format!("postgres refused its rows: {error}"));
                }
                Err(error) => return Err(error),
            }
        }
        transaction.rollback()?;
        Ok(found)
    }

    /// Returns `(partition, next_offset)` for every partition `consumer` has committed.
    pub fn stored_offsets(&mut self, consumer: &str) -> Result<Vec<(u32, u64)>> {
        let result = self.client().and_then(|client| {
            Ok(client.query(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = $1 \
                 ORDER BY partition",
                &[&consumer],
            )?)
        });
        let rows = self.observe(result)?;
        rows.iter()
            .map(|row| {
                let partition: i32 = row.get(0);
                let next: i64 = row.get(1);
                match (u32::try_from(partition), u64::try_from(next)) {
                    (Ok(partition), Ok(next)) => Ok((partition, next)),
                    _ => Err(PostgresSinkError::CorruptRow {
                        table: "consumer_offsets",
                        detail: format!("partition {partition} offset {next}"),
                    }),
                }
            })
            .collect()
    }

    /// Returns the stored events of each call `(source, call_id)` of `calls`, by call.
    pub fn call_events(
        &mut self,
        calls: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Vec<crate::calls_fold::StoredCallEvent>>> {
        let sources: Vec<&str> = calls.iter().map(|(source, _)| *source).collect();
        let call_ids: Vec<&str> = calls.iter().map(|(_, call_id)| *call_id).collect();
        let result = self
            .client()
            .and_then(|client| writes::load_call_events(client, &sources, &call_ids));
        self.observe(result)
    }

    /// Returns which of the event `ids` are stored (one statement).
    pub fn stored_events(&mut self, ids: &[&str]) -> Result<std::collections::HashSet<String>> {
        let result = self.client().and_then(|client| {
            Ok(client
                .query("SELECT id FROM events WHERE id = ANY($1)", &[&ids])?
                .iter()
                .map(|row| row.get(0))
                .collect())
        });
        self.observe(result)
    }

    /// Returns the `sequence` of each of the event `ids` that is stored (one statement).
    pub fn stored_sequences(&mut self, ids: &[&str]) -> Result<HashMap<String, Option<u64>>> {
        let result = self.client().and_then(|client| {
            Ok(client
                .query(
                    "SELECT id, sequence FROM events WHERE id = ANY($1)",
                    &[&ids],
                )?
                .iter()
                .map(|row| {
                    let sequence: Option<i64> = row.get(1);
                    (row.get(0), sequence.and_then(|n| u64::try_from(n).ok()))
                })
                .collect())
        });
        self.observe(result)
    }

    /// Returns the greatest stored `sequence` of each call `(source, call_id)` of `calls`
    /// (0 when none; one statement).
    pub fn max_sequences(
        &mut self,
        calls: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), u64>> {
        let sources: Vec<&str> = calls.iter().map(|(source, _)| *source).collect();
        let call_ids: Vec<&str> = calls.iter().map(|(_, call_id)| *call_id).collect();
        let result = self
            .client()
            .and_then(|client| super::sequence::stored_maxima(client, &sources, &call_ids));
        self.observe(result)
    }

    /// Returns whether the event `id` is stored.
    pub fn contains_event(&mut self, id: &str) -> Result<bool> {
        let result = self.client().and_then(|client| {
            Ok(client
                .query_opt("SELECT 1 FROM events WHERE id = $1", &[&id])?
                .is_some())
        });
        self.observe(result)
    }

    /// Exports the dead letters held by state and reason (`callhook_sink_dead_letters_held`).
    pub fn refresh_dead_letters_held(&mut self) -> Result<()> {
        let result = self.client().and_then(|client| {
            Ok(client.query(
                "SELECT resolved_at IS NULL, reason, count(*) FROM dead_letters GROUP BY 1, 2",
                &[],
            )?)
        });
        let rows = self.observe(result)?;
        let counts: Vec<(&str, String, u64)> = rows
            .iter()
            .map(|row| {
                let state = if row.get::<_, bool>(0) {
                    "open"
                } else {
                    "resolved"
                };
                (state, row.get(1), row.get::<_, i64>(2).max(0) as u64)
            })
            .collect();
        self.metrics.sink().set_dead_letters_held(&counts);
        Ok(())
    }
}
