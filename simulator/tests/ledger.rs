//! The ledger on disk: written by the writer thread, read back line by line.

use std::sync::Arc;
use std::time::Duration;

use callhook_schemas::{Direction, DispositionValue};
use callhook_simulator::flow::{Scenario, SimDialect};
use callhook_simulator::ledger::{
    CallLine, Ledger, LedgerLine, LedgerWriter, RunLine, LEDGER_VERSION,
};
use callhook_simulator::load::{Push, PushObserver, ScheduledPush};
use callhook_simulator::schedule::PushMeta;
use chrono::DateTime;
#[test]
fn test_ledger_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let writer = LedgerWriter::create(&path).unwrap();
    let handle = writer.handle();
    let started_at = DateTime::from_timestamp(1_718_870_400, 0).unwrap();
    let run = RunLine {
        version: LEDGER_VERSION,
        seed: 9,
        target: "http://127.0.0.1:1".into(),
        started_at,
    };
    handle.write(LedgerLine::Run(run.clone()));
    let call = CallLine {
        flow: 3,
        dialect: SimDialect::SevenMoorV2,
        source: "7moor".into(),
        scenario: Scenario::InboundTransferred,
        call_id: "c-1".into(),
        direction: Direction::Inbound,
        disposition: Some(DispositionValue::Answered),
        parent_call_id: Some("c-0".into()),
        pushes: 3,
    };
    handle.write(LedgerLine::Call(call.clone()));
    let mut push = Push::post(
        "/hooks/7moor?a=%E5%8C%97",
        Some("text/plain"),
        "{x:'北'}".into(),
    )
    .unwrap();
    push.meta = Some(PushMeta {
        flow: 3,
        seq: 1,
        dialect: SimDialect::SevenMoorV2,
        source: Arc::from("7moor"),
        call_id: Some("c-1".into()),
    });
    let scheduled = ScheduledPush {
        at: Duration::ZERO,
        push: Arc::new(push),
        copy: 1,
    };
    let acked_at = started_at + chrono::TimeDelta::milliseconds(3);
    handle.acknowledged(&scheduled, started_at, acked_at);
    handle.failed(&scheduled, started_at, acked_at, "status_503");
    drop(handle);
    assert_eq!(writer.finish().unwrap(), 4);

    let ledger = Ledger::read(&path).unwrap();
    assert_eq!(ledger.run, Some(run));
    assert_eq!(ledger.calls, vec![call]);
    let line = &ledger.pushes[0];
    assert_eq!(line.query.as_deref(), Some("a=%E5%8C%97"));
    assert_eq!(line.content_type.as_deref(), Some("text/plain"));
    assert_eq!(line.body, "{x:'北'}");
    assert_eq!((line.copy, line.seq, line.flow), (1, 1, 3));
    assert_eq!(line.answered_at, acked_at);
    assert_eq!(line.failure, None);
    assert_eq!(ledger.unacknowledged.len(), 1);
    assert_eq!(
        ledger.unacknowledged[0].failure.as_deref(),
        Some("status_503")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("{\"kind\":\"call\""));
}

#[test]
fn test_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    std::fs::write(&path, "{\"kind\":\"run\",\"version\":1,\"seed\":1,\"target\":\"x\",\"started_at\":\"2024-01-01T00:00:00Z\"}\nnot json\n").unwrap();
    let error = Ledger::read(&path).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
}
