//! The statements one batch runs inside the sink's transaction, a few per batch rather than
//! one per row: every table is written by one multi-row statement over `unnest` of arrays.
//!
//! Order inside the transaction, and the locks that make concurrent writers (several
//! normalizers on several hosts) safe:
//!
//! 1. an advisory lock per `(consumer, partition)` of the batch, then the stored offsets: a
//!    batch whose offsets are all at or below them is already in (committed before a crash
//!    of the other sink, or by a previous owner of the partition) and writes nothing;
//! 2. the events (`ON CONFLICT (id) DO NOTHING`), after one lookup of which ids are stored: a
//!    push whose first event is stored is a re-send (the same rule as the SQLite sink); before
//!    the lookup, the batch's calls are locked (the lock of step 5, in the same key order) and
//!    each new call event gets its `sequence` from the call's stored maximum (`sequence.rs`);
//! 3. the agents (newest `(time, id)` wins, in the `WHERE` of the upsert);
//! 4. the dead letters (`ON CONFLICT (raw_ref) DO NOTHING`);
//! 5. an advisory lock per touched call, in key order, then each call's stored events are
//!    read back and folded with the shared fold ([`crate::calls_fold`]), and the rows are
//!    upserted: the lock makes the second of two writers of one call read the first one's
//!    events (READ COMMITTED takes a new snapshot per statement), so no fold misses an event;
//! 6. the offsets, moved forward only.

use std::collections::{BTreeMap, HashMap, HashSet};

use callhook_schemas::{CallEventData, EventType, TimeSource};
use chrono::{DateTime, Utc};
use postgres::{GenericClient, Transaction};

use super::error::{PostgresSinkError, Result};
use crate::agents::{agent_update, AgentUpdate, NewestStatuses};
use crate::batch::{CommitOutcome, SinkBatch, SinkItem};
use crate::calls_fold::{fold_call, CallRow, StoredCallEvent};

/// The dead-letter reason of a push whose rows PostgreSQL refuses.
pub const SINK_REJECTED: &str = "sink_rejected";

/// What a batch did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) outcome: CommitOutcome,
    pub(crate) events_by_type: [u64; EventType::ALL.len()],
    pub(crate) dead_letters_by_reason: BTreeMap<String, u64>,
    /// The `calls` rows written: `(row, revision)`.
    pub(crate) calls: Vec<(CallRow, i64)>,
}

/// Writes a batch; `rejected` maps item indices of pushes to dead-letter instead (with the
/// server's reason). Returns `None` when the stored offsets already cover the batch.
pub(crate) fn write_batch(
    transaction: &mut Transaction<'_>,
    batch: &SinkBatch,
    rejected: &HashMap<usize, String>,
) -> Result<Option<Tally>> {
    if covered(transaction, &batch.consumer, &batch.offsets)? {
        return Ok(None);
    }
    let mut tally = Tally::default();
    let new_events = write_events(transaction, batch, rejected, &mut tally)?;
    write_agents(transaction, &new_events, &mut tally)?;
    write_dead_letters(transaction, batch, rejected, &mut tally)?;
    crate::failpoints::crash_at("sink::mid_transaction");
    write_calls(transaction, &new_events, &mut tally)?;
    store_offsets(transaction, &batch.consumer, &batch.offsets)?;
    Ok(Some(tally))
}

/// Locks the batch's partitions of `consumer` and returns true when the stored offsets are
/// at or past every offset of the batch.
fn covered(
    transaction: &mut Transaction<'_>,
    consumer: &str,
    offsets: &[(u32, u64)],
) -> Result<bool> {
    if offsets.is_empty() {
        return Ok(false);
    }
    let mut partitions: Vec<i32> = offsets
        .iter()
        .map(|(partition, _)| i32::try_from(*partition).unwrap_or(i32::MAX))
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    // unnest keeps the array's order, so the locks are taken in partition order.
    transaction.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), p) FROM unnest($2::int4[]) AS p",
        &[&consumer, &partitions],
    )?;
    let stored: HashMap<i32, i64> = transaction
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = $1",
            &[&consumer],
        )?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    Ok(offsets.iter().all(|(partition, next)| {
        let partition = i32::try_from(*partition).unwrap_or(i32::MAX);
        stored
            .get(&partition)
            .is_some_and(|stored| i64::try_from(*next).is_ok_and(|next| next <= *stored))
    }))
}

/// An event the batch stores.
pub(crate) struct NewEvent<'a> {
    pub(crate) event: &'a callhook_schemas::CloudEvent,
}

/// Inserts the batch's new events; returns them (in batch order).
fn write_events<'a>(
    transaction: &mut Transaction<'_>,
    batch: &'a SinkBatch,
    rejected: &HashMap<usize, String>,
    tally: &mut Tally,
) -> Result<Vec<NewEvent<'a>>> {
    let mut numbering = super::sequence::lock_and_start(
        transaction,
        pushes(batch, rejected).flat_map(|(_, _, events)| events.iter()),
    )?;
    let ids: Vec<&str> = pushes(batch, rejected)
        .flat_map(|(_, _, events)| events.iter().map(|e| e.event.id.as_str()))
        .collect();
    let mut stored: HashSet<String> = transaction
        .query("SELECT id FROM events WHERE id = ANY($1)", &[&ids])?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut rows = EventColumns::default();
    let mut new_events = Vec::new();
    for (_, received_at, events) in pushes(batch, rejected) {
        for (ordinal, sink_event) in events.iter().enumerate() {
            let event = &sink_event.event;
            if !stored.insert(event.id.clone()) {
                // Stored before, or earlier in this batch: the first event stands for the push.
                if ordinal == 0 {
                    tally.outcome.duplicates_skipped += 1;
                    break;
                }
                tally.outcome.events_already_stored += 1;
                continue;
            }
            let sequence = numbering.number_for(event, || Ok::<_, PostgresSinkError>(0))?;
            numbering.stored(event, sequence);
            rows.push(sink_event, received_at, sequence);
            new_events.push(NewEvent { event });
        }
    }
    if !new_events.is_empty() {
        let inserted: HashSet<String> = transaction
            .query(
                "INSERT INTO events (id, type, source, subject, time, timesource, specversion, \
                 datacontenttype, dataschema, source_name, call_id, received_at, data, mapping_version, \
                 sequence) \
                 SELECT id, type, source, subject, time, timesource, specversion, datacontenttype, \
                 dataschema, source_name, call_id, received_at, data::jsonb, mapping_version, sequence \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::timestamptz[], $13::text[], $14::int4[], $15::int8[]) \
                 AS t(id, type, source, subject, time, timesource, specversion, datacontenttype, \
                 dataschema, source_name, call_id, received_at, data, mapping_version, sequence) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[
                    &rows.id,
                    &rows.event_type,
                    &rows.source,
                    &rows.subject,
                    &rows.time,
                    &rows.timesource,
                    &rows.specversion,
                    &rows.datacontenttype,
                    &rows.dataschema,
                    &rows.source_name,
                    &rows.call_id,
                    &rows.received_at,
                    &rows.data,
                    &rows.mapping_version,
                    &rows.sequence,
                ],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        // Another writer may have stored some of them since the lookup: those count as
        // already stored, and only the rest are new here.
        new_events.retain(|new| inserted.contains(&new.event.id));
        tally.outcome.events_already_stored += (rows.id.len() - new_events.len()) as u64;
    }
    for new in &new_events {
        tally.outcome.events_inserted += 1;
        tally.events_by_type[new.event.event_type as usize] += 1;
    }
    Ok(new_events)
}

/// The pushes of a batch that are not rejected: `(index, received_at, events)`.
fn pushes<'a: 'r, 'r>(
    batch: &'a SinkBatch,
    rejected: &'r HashMap<usize, String>,
) -> impl Iterator<Item = (usize, &'a DateTime<Utc>, &'a [crate::SinkEvent])> + 'r {
    batch
        .items
        .iter()
        .enumerate()
        .filter(|(index, _)| !rejected.contains_key(index))
        .filter_map(|(index, item)| match item {
            SinkItem::Push {
                received_at,
                events,
                ..
            } => Some((index, received_at, events.as_slice())),
            SinkItem::DeadLetter { .. } => None,
        })
}

/// The `events` columns as arrays.
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<&'a str>,
    event_type: Vec<&'static str>,
    source: Vec<&'a str>,
    subject: Vec<&'a str>,
    time: Vec<DateTime<Utc>>,
    timesource: Vec<&'static str>,
    specversion: Vec<&'a str>,
    datacontenttype: Vec<&'a str>,
    dataschema: Vec<&'a str>,
    source_name: Vec<&'a str>,
    call_id: Vec<Option<&'a str>>,
    received_at: Vec<DateTime<Utc>>,
    data: Vec<&'a str>,
    mapping_version: Vec<Option<i32>>,
    sequence: Vec<Option<i64>>,
}

impl<'a> EventColumns<'a> {
    fn push(
        &mut self,
        sink_event: &'a crate::SinkEvent,
        received_at: &DateTime<Utc>,
        sequence: Option<u64>,
    ) {
        let event = &sink_event.event;
        self.id.push(&event.id);
        self.event_type.push(event.event_type.as_str());
        self.source.push(&event.source);
        self.subject.push(&event.subject);
        self.time.push(event.time);
        self.timesource.push(match event.timesource {
            TimeSource::Vendor => "vendor",
            TimeSource::Received => "received",
        });
        self.specversion.push(&event.specversion);
        self.datacontenttype.push(&event.datacontenttype);
        self.dataschema.push(&event.dataschema);
        self.source_name.push(&event.data.source_name);
        self.call_id.push(event.data.call_id.as_deref());
        self.received_at.push(*received_at);
        self.data.push(&sink_event.data_json);
        self.mapping_version
            .push(event.mappingversion.and_then(|v| i32::try_from(v).ok()));
        self.sequence
            .push(sequence.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
    }
}

/// Applies the newest status per agent among the new events, if newer than the stored one.
fn write_agents(
    transaction: &mut Transaction<'_>,
    new_events: &[NewEvent<'_>],
    tally: &mut Tally,
) -> Result<()> {
    // One row per agent (an upsert may not touch a row twice): the greatest (time, id), which
    // is also what the row would end up as if they were applied one by one.
    let mut newest = NewestStatuses::default();
    for update in new_events.iter().filter_map(|new| agent_update(new.event)) {
        newest.keep(update);
    }
    if newest.is_empty() {
        return Ok(());
    }
    let updates: Vec<&AgentUpdate<'_>> = newest.updates().collect();
    let sources: Vec<&str> = updates.iter().map(|u| u.source).collect();
    let numbers: Vec<&str> = updates.iter().map(|u| u.agent_number).collect();
    let statuses: Vec<&str> = updates.iter().map(|u| u.status.as_str()).collect();
    let raw_codes: Vec<Option<&str>> = updates.iter().map(|u| u.raw_code).collect();
    let raw_labels: Vec<Option<&str>> = updates.iter().map(|u| u.raw_label).collect();
    let names: Vec<Option<&str>> = updates.iter().map(|u| u.agent_name).collect();
    let times: Vec<DateTime<Utc>> = updates.iter().map(|u| u.status_at).collect();
    let event_ids: Vec<&str> = updates.iter().map(|u| u.event_id).collect();
    let changed = transaction.execute(
        "INSERT INTO agents (source, agent_number, status, raw_code, raw_label, agent_name, status_at, event_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::timestamptz[], $8::text[]) \
         ON CONFLICT (source, agent_number) DO UPDATE SET \
         status = excluded.status, raw_code = excluded.raw_code, raw_label = excluded.raw_label, \
         agent_name = excluded.agent_name, status_at = excluded.status_at, event_id = excluded.event_id \
         WHERE (excluded.status_at, excluded.event_id) > (agents.status_at, agents.event_id)",
        &[
            &sources, &numbers, &statuses, &raw_codes, &raw_labels, &names, &times, &event_ids,
        ],
    )?;
    tally.outcome.agents_updated += changed;
    Ok(())
}

/// Inserts the batch's dead letters and those of rejected pushes, unless their `raw_ref` is
/// stored.
fn write_dead_letters(
    transaction: &mut Transaction<'_>,
    batch: &SinkBatch,
    rejected: &HashMap<usize, String>,
    tally: &mut Tally,
) -> Result<()> {
    let mut raw_refs = Vec::new();
    let mut sources = Vec::new();
    let mut reasons = Vec::new();
    let mut details = Vec::new();
    let mut received = Vec::new();
    for (index, item) in batch.items.iter().enumerate() {
        let (raw_ref, source, reason, detail, received_at) = match item {
            SinkItem::DeadLetter {
                raw_ref,
                source,
                reason,
                detail,
                received_at,
            } => (
                raw_ref,
                source,
                reason.as_str(),
                detail.clone(),
                received_at,
            ),
            SinkItem::Push {
                raw_ref,
                source,
                received_at,
                ..
            } => match rejected.get(&index) {
                Some(why) => (raw_ref, source, SINK_REJECTED, why.clone(), received_at),
                None => continue,
            },
        };
        // Text columns cannot hold NUL; a dead letter is stored whatever its detail says.
        raw_refs.push(without_nul(raw_ref));
        sources.push(without_nul(source));
        reasons.push(without_nul(reason));
        details.push(without_nul(&detail));
        received.push(*received_at);
    }
    if raw_refs.is_empty() {
        return Ok(());
    }
    let written = transaction.query(
        "INSERT INTO dead_letters (raw_ref, source, reason, detail, received_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         ON CONFLICT (raw_ref) DO NOTHING RETURNING reason",
        &[&raw_refs, &sources, &reasons, &details, &received],
    )?;
    tally.outcome.dead_letters_written += written.len() as u64;
    tally.outcome.dead_letters_already_stored += (raw_refs.len() - written.len()) as u64;
    for row in written {
        *tally
            .dead_letters_by_reason
            .entry(row.get::<_, String>(0))
            .or_default() += 1;
    }
    Ok(())
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Recomputes and upserts the `calls` row of every call that got a new event.
fn write_calls(
    transaction: &mut Transaction<'_>,
    new_events: &[NewEvent<'_>],
    tally: &mut Tally,
) -> Result<()> {
    let mut touched: Vec<(&str, &str)> = new_events
        .iter()
        .filter(|new| !new.event.event_type.is_agent_event())
        .filter_map(|new| {
            let call_id = new.event.data.call_id.as_deref()?;
            (!call_id.is_empty()).then_some((new.event.data.source_name.as_str(), call_id))
        })
        .collect();
    touched.sort_unstable();
    touched.dedup();
    tally.outcome.calls_touched = touched.len() as u64;
    if touched.is_empty() {
        return Ok(());
    }
    let sources: Vec<&str> = touched.iter().map(|(source, _)| *source).collect();
    let call_ids: Vec<&str> = touched.iter().map(|(_, call_id)| *call_id).collect();
    super::sequence::lock_calls(transaction, &sources, &call_ids)?;
    let mut events = load_call_events(transaction, &sources, &call_ids)?;
    let folded: Vec<CallRow> = touched
        .iter()
        .filter_map(|(source, call_id)| {
            let stored = events.remove(&((*source).to_owned(), (*call_id).to_owned()))?;
            fold_call(source, call_id, stored)
        })
        .collect();
    let revisions = upsert_calls(transaction, &folded)?;
    tally.calls = folded.into_iter().zip(revisions).collect();
    Ok(())
}

/// The stored call events of the calls `(sources[i], call_ids[i])`, by call.
pub(crate) fn load_call_events(
    client: &mut impl GenericClient,
    sources: &[&str],
    call_ids: &[&str],
) -> Result<HashMap<(String, String), Vec<StoredCallEvent>>> {
    let rows = client.query(
        "SELECT e.source_name, e.call_id, e.id, e.type, e.time, e.data::text \
         FROM unnest($1::text[], $2::text[]) AS t(s, c) \
         JOIN events e ON e.source_name = t.s AND e.call_id = t.c AND e.subject = t.c",
        &[&sources, &call_ids],
    )?;
    let mut events: HashMap<(String, String), Vec<StoredCallEvent>> = HashMap::new();
    for row in rows {
        let id: String = row.get(2);
        let type_name: &str = row.get(3);
        let event_type = EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == type_name)
            .ok_or_else(|| PostgresSinkError::CorruptRow {
                table: "events",
                detail: format!("unknown event type `{type_name}`"),
            })?;
        let data: CallEventData = serde_json::from_str(row.get::<_, &str>(5)).map_err(|error| {
            PostgresSinkError::CorruptRow {
                table: "events",
                detail: format!("data of `{id}`: {error}"),
            }
        })?;
        events
            .entry((row.get(0), row.get(1)))
            .or_default()
            .push(StoredCallEvent {
                id,
                event_type,
                time: row.get(4),
                data,
            });
    }
    Ok(events)
}

/// Upserts `rows` (one statement); returns each row's new revision, in order.
fn upsert_calls(transaction: &mut Transaction<'_>, rows: &[CallRow]) -> Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let text =
        |f: fn(&CallRow) -> Option<&str>| -> Vec<Option<&str>> { rows.iter().map(f).collect() };
    let time = |f: fn(&CallRow) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        rows.iter().map(f).collect()
    };
    let sources = text(|r| Some(&r.source));
    let call_ids = text(|r| Some(&r.call_id));
    let vendors = text(|r| Some(&r.vendor));
    let directions = text(|r| Some(r.direction.as_str()));
    let callers = text(|r| r.caller.as_ref().map(|n| n.raw.as_str()));
    let callers_e164 = text(|r| r.caller.as_ref().and_then(|n| n.e164.as_deref()));
    let callees = text(|r| r.callee.as_ref().map(|n| n.raw.as_str()));
    let callees_e164 = text(|r| r.callee.as_ref().and_then(|n| n.e164.as_deref()));
    let agent_numbers = text(|r| r.agent_number.as_deref());
    let agent_names = text(|r| r.agent_name.as_deref());
    let queues = text(|r| r.queue.as_deref());
    let queue_names = text(|r| r.queue_name.as_deref());
    let parents = text(|r| r.parent_call_id.as_deref());
    let first = time(|r| Some(r.first_event_at));
    let started = time(|r| r.started_at);
    let ringing = time(|r| r.ringing_at);
    let answered = time(|r| r.answered_at);
    let ended = time(|r| r.ended_at);
    let dispositions = text(|r| r.disposition.map(|d| d.as_str()));
    let dispositions_raw = text(|r| r.disposition_raw.as_deref());
    let talk: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.talk_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
        .collect();
    let recordings = text(|r| r.recording_url.as_deref());
    let correlations: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::Value::Object(r.correlation.clone().into_iter().collect()))
        .collect();
    let counts = rows
        .iter()
        .map(|r| {
            i64::try_from(r.events_count).map_err(|_| PostgresSinkError::OutOfRange {
                field: "events_count",
                value: r.events_count,
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    let last_types = text(|r| Some(r.last_event_type.as_str()));
    let last = time(|r| Some(r.last_event_at));
    let journey = super::journey::JourneyColumns::of(rows)?;
    let statuses = text(|r| Some(r.status.as_str()));
    let written = transaction.query(
        "INSERT INTO calls (source, call_id, vendor, direction, caller, caller_e164, callee, \
         callee_e164, agent_number, agent_name, queue, queue_name, parent_call_id, first_event_at, \
         started_at, ringing_at, answered_at, ended_at, disposition, disposition_raw, talk_seconds, \
         recording_url, correlation, events_count, last_event_type, last_event_at, \
         conversation_id, leg, queue_joined_at, queue_left_at, queue_seconds, abandon_point, \
         disconnect_reason, disconnect_reason_raw, ivr_path, status) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], \
         $17::timestamptz[], $18::timestamptz[], $19::text[], $20::text[], $21::int8[], \
         $22::text[], $23::jsonb[], $24::int8[], $25::text[], $26::timestamptz[], \
         $27::text[], $28::text[], $29::timestamptz[], $30::timestamptz[], $31::int8[], \
         $32::text[], $33::text[], $34::text[], $35::jsonb[], $36::text[]) \
         ON CONFLICT (source, call_id) DO UPDATE SET vendor = excluded.vendor, \
         direction = excluded.direction, caller = excluded.caller, caller_e164 = excluded.caller_e164, \
         callee = excluded.callee, callee_e164 = excluded.callee_e164, \
         agent_number = excluded.agent_number, agent_name = excluded.agent_name, \
         queue = excluded.queue, queue_name = excluded.queue_name, \
         parent_call_id = excluded.parent_call_id, first_event_at = excluded.first_event_at, \
         started_at = excluded.started_at, ringing_at = excluded.ringing_at, \
         answered_at = excluded.answered_at, ended_at = excluded.ended_at, \
         disposition = excluded.disposition, disposition_raw = excluded.disposition_raw, \
         talk_seconds = excluded.talk_seconds, recording_url = excluded.recording_url, \
         correlation = excluded.correlation, events_count = excluded.events_count, \
         last_event_type = excluded.last_event_type, last_event_at = excluded.last_event_at, \
         conversation_id = excluded.conversation_id, leg = excluded.leg, \
         queue_joined_at = excluded.queue_joined_at, queue_left_at = excluded.queue_left_at, \
         queue_seconds = excluded.queue_seconds, abandon_point = excluded.abandon_point, \
         disconnect_reason = excluded.disconnect_reason, \
         disconnect_reason_raw = excluded.disconnect_reason_raw, ivr_path = excluded.ivr_path, \
         status = excluded.status, \
         revision = calls.revision + 1 \
         RETURNING source, call_id, revision",
        &[
            &sources, &call_ids, &vendors, &directions, &callers, &callers_e164, &callees,
            &callees_e164, &agent_numbers, &agent_names, &queues, &queue_names, &parents, &first,
            &started, &ringing, &answered, &ended, &dispositions, &dispositions_raw, &talk,
            &recordings, &correlations, &counts, &last_types, &last,
            &journey.conversation_ids, &journey.legs, &journey.queue_joined, &journey.queue_left,
            &journey.queue_seconds, &journey.abandon_points, &journey.disconnect_reasons,
            &journey.disconnect_reasons_raw, &journey.ivr_paths, &statuses,
        ],
    )?;
    let revisions: HashMap<(String, String), i64> = written
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    Ok(rows
        .iter()
        .map(|row| {
            revisions
                .get(&(row.source.clone(), row.call_id.clone()))
                .copied()
                .unwrap_or(1)
        })
        .collect())
}

/// Moves the consumer's offsets forward (never back).
pub(crate) fn store_offsets(
    transaction: &mut Transaction<'_>,
    consumer: &str,
    offsets: &[(u32, u64)],
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = offsets
        .iter()
        .map(|(partition, _)| i32::try_from(*partition).unwrap_or(i32::MAX))
        .collect();
    let next = offsets
        .iter()
        .map(|(_, next)| {
            i64::try_from(*next).map_err(|_| PostgresSinkError::OutOfRange {
                field: "next_offset",
                value: *next,
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    transaction.execute(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) \
         SELECT $1, p, n FROM unnest($2::int4[], $3::int8[]) AS t(p, n) \
         ON CONFLICT (consumer, partition) DO UPDATE SET \
         next_offset = greatest(consumer_offsets.next_offset, excluded.next_offset)",
        &[&consumer, &partitions, &next],
    )?;
    Ok(())
}

/// Returns why PostgreSQL would refuse a push's rows, checked before writing: a NUL in any
/// text (`text` and `jsonb` cannot hold one), or a time before 4713 BC (`timestamptz`'s
/// range; chrono's is wider). `None`: it fits.
pub(crate) fn refusal(item: &SinkItem) -> Option<String> {
    let SinkItem::Push {
        received_at,
        events,
        ..
    } = item
    else {
        return None;
    };
    let fits = |time: &DateTime<Utc>| chrono::Datelike::year(time) > -4713;
    if !fits(received_at) {
        return Some("the receive time is outside PostgreSQL's timestamp range".to_owned());
    }
    for sink_event in events {
        let event = &sink_event.event;
        let texts = [
            event.id.as_str(),
            &event.source,
            &event.subject,
            &event.specversion,
            &event.datacontenttype,
            &event.dataschema,
        ];
        // serde_json writes a NUL as `\u0000`; the cheap test finds candidates, the parse
        // tells an escaped NUL from an escaped backslash followed by `u0000`.
        if texts.iter().any(|text| text.contains('\0'))
            || (sink_event.data_json.contains("\\u0000") && has_nul(&sink_event.data_json))
        {
            return Some(format!(
                "event `{}` holds a NUL character, which PostgreSQL text and jsonb cannot store",
                event.event_type.as_str()
            ));
        }
        let data = &event.data;
        let times = [
            Some(&event.time),
            data.started_at.as_ref(),
            data.ringing_at.as_ref(),
            data.answered_at.as_ref(),
            data.ended_at.as_ref(),
        ];
        if times.into_iter().flatten().any(|time| !fits(time)) {
            return Some(format!(
                "event `{}` has a time outside PostgreSQL's timestamp range",
                event.event_type.as_str()
            ));
        }
    }
    None
}

fn has_nul(json: &str) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || walk(value)),
            _ => false,
        }
    }
    serde_json::from_str::<serde_json::Value>(json).is_ok_and(|value| walk(&value))
}
