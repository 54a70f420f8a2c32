//! The generators against the real pipeline, without HTTP: every scenario of every dialect is
//! mapped by `callhook_normalizer::map_push` and committed by the real `SqliteSink` into a
//! real SQLite file (with vendor retries and shuffled orders), then the `calls` rows are
//! compared with the expectations the generators derived from the mapping docs, and the
//! verifier is run against that database and a ledger of the same pushes.

use std::collections::BTreeMap;
use std::time::Duration;

use callhook_normalizer::{map_push, RawPush, SourceContext};
use callhook_simulator::flow::{Flow, Scenario, SimDialect};
use callhook_simulator::generate::{scenarios, Generator, GeneratorConfig, VendorMix};
use callhook_simulator::ledger::{CallLine, Ledger, PushLine};
use callhook_simulator::verify::{verify, MismatchKind, VerifyOptions};
use callhook_sinks::sqlite::SqliteSinkSettings;
use callhook_sinks::{SinkBatch, SinkItem, SqliteSink};
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::Connection;

/// The event types each generated push must map to, by the generator's label.
fn expected_types(label: &str) -> &'static [&'static [&'static str]] {
    match label {
        "v7/callStatus/calling" => &[&["call.initiated", "agent.status_changed"]],
        "v7/callStatus/ring" => &[&["call.ringing", "agent.status_changed"]],
        "v7/callStatus/link" => &[&["call.answered", "agent.status_changed"]],
        "v7/callStatus/hangup" => &[&["call.ended", "agent.status_changed"]],
        "v7/callStatus/agent" => &[&["agent.status_changed"]],
        "v7/dialoutRing" | "v7/incoming/ring" => &[&["call.ringing"]],
        "v7/dialoutHangup" | "v7/incoming/hangup" => &[&["call.ended"]],
        "v7/link" => &[&["call.answered"]],
        "v7/cdr" => &[&["call.cdr"]],
        "v7/mediaFailreason" => &[&["call.media_failure"]],
        "v7/login" => &[&["agent.logged_in"]],
        "v7/logout" => &[&["agent.logged_out"]],
        "v2/Ring" => &[&["call.initiated"]],
        "v2/Ringing" => &[&["call.ringing"]],
        "v2/Link" => &[&["call.answered"]],
        "v2/Hangup" | "v2/Unlink" => &[&["call.ended", "call.cdr"]],
        "coocenter/ivr" => &[&["ivr.completed"]],
        "coocenter/dialbegin" => &[&["call.ringing"]],
        "coocenter/dialend" => &[&["call.answered"], &["call.ended"]],
        "coocenter/hangup" => &[&["call.ended"]],
        "coocenter/extensionstatus" => &[&["agent.status_changed"]],
        "coocenter/cdr" | "coocenter/cc_cdr" => &[&["call.cdr"]],
        "uincall/agentDialout/UP" | "uincall/agentDialout/DN" => &[&["call.initiated"]],
        "uincall/callout_process" | "uincall/call_process" | "uincall/incoming" => {
            &[&["call.ringing"]]
        }
        "uincall/call_talking" => &[&["call.answered"]],
        "uincall/call_hangup" => &[&["call.ended"]],
        "uincall/agentstatus" | "uincall/setAgentType" => &[&["agent.status_changed"]],
        other => panic!("no expectation for label `{other}`"),
    }
}

fn generator(seed: u64) -> Generator {
    Generator::new(GeneratorConfig {
        seed,
        epoch: Utc::now() - TimeDelta::hours(1),
        flow_interval: Duration::from_millis(200),
        mix: VendorMix::default(),
    })
}

/// Five flows of every scenario of every dialect.
fn every_scenario(generator: &Generator) -> Vec<Flow> {
    let mut flows = Vec::new();
    let mut index = 0;
    for dialect in SimDialect::ALL {
        for (scenario, _) in scenarios(dialect) {
            for _ in 0..5 {
                flows.push(generator.flow_with(index, dialect, *scenario));
                index += 1;
            }
        }
    }
    flows
}

fn context(dialect: SimDialect) -> SourceContext {
    SourceContext::new(dialect.default_source(), dialect.normalizer_dialect())
}

/// One sending as the receiver would have stored it.
struct Sent {
    flow: usize,
    seq: usize,
    copy: u32,
    received_at: DateTime<Utc>,
}

/// Every push once, in shuffled order within every third flow, every fourth push twice.
fn sendings(flows: &[Flow]) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut clock = Utc::now();
    for (flow_index, flow) in flows.iter().enumerate() {
        let mut order: Vec<usize> = (0..flow.pushes.len()).collect();
        if flow_index % 3 == 0 {
            order.reverse();
        }
        for seq in order {
            clock += TimeDelta::milliseconds(3);
            sent.push(Sent {
                flow: flow_index,
                seq,
                copy: 0,
                received_at: clock,
            });
            if seq % 4 == 1 {
                sent.push(Sent {
                    flow: flow_index,
                    seq,
                    copy: 1,
                    received_at: clock + TimeDelta::milliseconds(1),
                });
            }
        }
    }
    sent
}

fn commit(sink: &mut SqliteSink, flows: &[Flow], sent: &[Sent]) {
    for chunk in sent.chunks(50) {
        let mut batch = SinkBatch {
            consumer: "test".to_owned(),
            ..SinkBatch::default()
        };
        for sending in chunk {
            let flow = &flows[sending.flow];
            let push = &flow.pushes[sending.seq];
            let request = &push.request;
            let raw = RawPush {
                method: &request.method,
                content_type: request.content_type.as_deref(),
                query: request.query.as_deref(),
                headers: &[],
                body: request.body.as_bytes(),
                received_at: sending.received_at,
            };
            let mapped = map_push(&raw, &context(flow.dialect)).expect("generated pushes map");
            batch.items.push(SinkItem::Push {
                raw_ref: format!("0:{}", batch.items.len()),
                source: flow.dialect.default_source().to_owned(),
                dedupe_key: mapped.dedupe_key,
                received_at: sending.received_at,
                events: callhook_sinks::SinkEvent::encode_all(mapped.events).unwrap(),
            });
        }
        sink.commit_batch(&batch).expect("commit");
    }
}

#[test]
fn test_every_generated_push_maps_to_its_expected_types_and_call() {
    let flows = every_scenario(&generator(5));
    let mut mapped_pushes = 0;
    for flow in &flows {
        for push in &flow.pushes {
            let request = &push.request;
            let raw = RawPush {
                method: &request.method,
                content_type: request.content_type.as_deref(),
                query: request.query.as_deref(),
                headers: &[],
                body: request.body.as_bytes(),
                received_at: Utc::now(),
            };
            let mapped = map_push(&raw, &context(flow.dialect)).unwrap_or_else(|error| {
                panic!(
                    "{} {:?} {}: {error}\n{}",
                    flow.dialect, flow.scenario, push.label, request.body
                )
            });
            let types: Vec<&str> = mapped
                .events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect();
            assert!(
                expected_types(&push.label).contains(&types.as_slice()),
                "{} {}: {types:?}",
                flow.dialect,
                push.label
            );
            for event in &mapped.events {
                if !event.event_type.is_agent_event() {
                    assert_eq!(event.data.call_id, push.call_id, "{}", push.label);
                }
            }
            mapped_pushes += 1;
        }
    }
    assert!(mapped_pushes > 500, "{mapped_pushes}");
}

#[test]
fn test_calls_rows_match_expectations_in_any_order_with_retries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callhook.db");
    let mut sink = SqliteSink::open(&SqliteSinkSettings::for_path(&path)).unwrap();
    let flows = every_scenario(&generator(6));
    commit(&mut sink, &flows, &sendings(&flows));
    let db = Connection::open(&path).unwrap();
    let mut expected_calls = 0;
    for flow in &flows {
        for call in &flow.calls {
            expected_calls += 1;
            let row: (String, Option<String>, Option<String>) = db
                .query_row(
                    "SELECT direction, disposition, parent_call_id FROM calls WHERE source = ?1 AND call_id = ?2",
                    [flow.dialect.default_source(), call.call_id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .unwrap_or_else(|e| panic!("{} {:?}: no row for {}: {e}", flow.dialect, flow.scenario, call.call_id));
            let expected = (
                call.direction.as_str().to_owned(),
                call.disposition.map(|d| d.as_str().to_owned()),
                call.parent_call_id.clone(),
            );
            assert_eq!(
                row, expected,
                "{} {:?} call {}",
                flow.dialect, flow.scenario, call.call_id
            );
        }
    }
    let rows: i64 = db
        .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, expected_calls, "one calls row per simulated call");
    let dead: i64 = db
        .query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dead, 0);
}

/// A ledger of `sent`, as the simulator would have written it.
fn ledger_of(flows: &[Flow], sent: &[Sent]) -> Ledger {
    let mut ledger = Ledger::default();
    for flow in flows {
        ledger
            .calls
            .extend(CallLine::of_flow(flow, flow.dialect.default_source()));
    }
    for sending in sent {
        let flow = &flows[sending.flow];
        let push = &flow.pushes[sending.seq];
        ledger.pushes.push(PushLine {
            flow: flow.index,
            seq: sending.seq as u32,
            copy: sending.copy,
            dialect: flow.dialect,
            source: flow.dialect.default_source().to_owned(),
            call_id: push.call_id.clone(),
            method: push.request.method.clone(),
            query: push.request.query.clone(),
            content_type: push.request.content_type.clone(),
            body: push.request.body.clone(),
            sent_at: sending.received_at,
            answered_at: sending.received_at,
            failure: None,
        });
    }
    ledger
}

#[test]
fn test_verify_passes_on_the_real_sink_and_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callhook.db");
    let mut sink = SqliteSink::open(&SqliteSinkSettings::for_path(&path)).unwrap();
    let flows = every_scenario(&generator(7));
    let sent = sendings(&flows);
    commit(&mut sink, &flows, &sent);
    drop(sink);
    let ledger = ledger_of(&flows, &sent);
    let options = VerifyOptions {
        db: path.clone(),
        wait: Duration::ZERO,
        clock_skew: Duration::from_secs(2),
    };
    let report = verify(&ledger, &options).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.pushes_accounted, report.distinct_pushes);
    assert!(report.retries_absorbed > 0, "{report}");
    assert_eq!(report.calls_checked, report.calls);

    // Remove one call event and one call's row: both are named. (The event is the second of
    // its push, a 7moor v2 Hangup's call.cdr: without its first event a push counts as not
    // stored at all, which is a push_missing.)
    let db = Connection::open(&path).unwrap();
    let (id, call_id): (String, String) = db
        .query_row(
            "SELECT id, call_id FROM events WHERE type = 'call.cdr' \
             AND json_extract(data, '$.dialect') = '7moor.v2' ORDER BY seq LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    db.execute("DELETE FROM events WHERE id = ?1", [&id])
        .unwrap();
    let other: String = db
        .query_row(
            "SELECT call_id FROM calls WHERE call_id != ?1 LIMIT 1",
            [&call_id],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE calls SET disposition = 'voicemail' WHERE call_id = ?1",
        [&other],
    )
    .unwrap();
    drop(db);
    let report = verify(&ledger, &options).unwrap();
    assert!(!report.passed());
    let kinds: BTreeMap<MismatchKind, u64> = report.mismatches_by_kind.clone();
    assert_eq!(
        kinds.get(&MismatchKind::EventsMissing),
        Some(&1),
        "{report}"
    );
    assert_eq!(
        kinds.get(&MismatchKind::CallDisposition),
        Some(&1),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains(&other), "{text}");
}

#[test]
fn test_verify_flags_an_event_no_push_explains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callhook.db");
    let mut sink = SqliteSink::open(&SqliteSinkSettings::for_path(&path)).unwrap();
    let generator = generator(8);
    let flows: Vec<Flow> = (0..4)
        .map(|i| generator.flow_with(i, SimDialect::SevenMoorV2, Scenario::InboundAnswered))
        .collect();
    let sent = sendings(&flows);
    commit(&mut sink, &flows, &sent);
    // The ledger forgets the last flow: its events and its call are strays.
    let ledger = ledger_of(
        &flows[..3],
        &sent
            .iter()
            .filter(|s| s.flow < 3)
            .map(|s| Sent { ..*s })
            .collect::<Vec<_>>(),
    );
    let report = verify(
        &ledger,
        &VerifyOptions {
            db: path,
            wait: Duration::ZERO,
            clock_skew: Duration::from_secs(1),
        },
    )
    .unwrap();
    assert!(
        report
            .mismatches_by_kind
            .get(&MismatchKind::UnexpectedEvent)
            .copied()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
    assert_eq!(
        report.mismatches_by_kind.get(&MismatchKind::UnexpectedCall),
        Some(&1),
        "{report}"
    );
}
