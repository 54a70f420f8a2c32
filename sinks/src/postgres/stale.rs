//! The stale sweep's read of the PostgreSQL sink (the same question as `sqlite/stale.rs`):
//! calls still `in_progress` whose newest event was received before a cut-off, through the
//! partial index `calls_status_in_progress`.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::sink::PostgresSink;
use crate::sqlite::stale::StaleCandidate;

impl PostgresSink {
    /// Returns the calls of `source` with status `in_progress` whose newest event was received
    /// before `received_before`, oldest first, at most `limit`.
    pub fn stale_candidates(
        &mut self,
        source: &str,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<StaleCandidate>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = self.client().and_then(|client| {
            let rows = client.query(
                "SELECT c.call_id, c.vendor, c.last_event_type, last.received_at, \
                 coalesce(last.data->>'dialect', c.vendor), last.data->>'account' \
                 FROM calls c CROSS JOIN LATERAL ( \
                     SELECT e.received_at, e.data FROM events e \
                     WHERE e.source_name = c.source AND e.subject = c.call_id AND e.call_id = c.call_id \
                     ORDER BY e.received_at DESC, e.seq DESC LIMIT 1) AS last \
                 WHERE c.status = 'in_progress' AND c.source = $1 AND last.received_at < $2 \
                 ORDER BY last.received_at LIMIT $3",
                &[&source, &received_before, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|row| StaleCandidate {
                    source: source.to_owned(),
                    call_id: row.get(0),
                    vendor: row.get(1),
                    last_event_type: row.get(2),
                    last_received_at: row.get(3),
                    dialect: row.get(4),
                    account: row.get(5),
                })
                .collect())
        });
        self.observe(result)
    }
}
