//! Kafka mode end to end, with the real binary and a real Kafka-protocol broker (tansu, from
//! callhook-testkit): `callhook ingest` receives over HTTP and produces to the raw topic,
//! `callhook normalize` consumes it as a consumer group and writes the SQLite sink and the
//! canonical and dead-letter topics, and an independent consumer reads those topics back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhook_testkit::KafkaBroker;
use common::kafka::{
    create_topics, kafka_config, ringing_push, KafkaProcess, TopicReader, TopicRecord,
};
use common::{fixture_config, fixture_pushes, open_read_only, FixturePush};
use serde_json::Value;

const RAW: &str = "callhook.raw";
const EVENTS: &str = "callhook.events";
const DEAD: &str = "callhook.deadletters";

/// How long a test waits for records to flow through.
const FLOW_TIMEOUT: Duration = Duration::from_secs(40);

fn start_broker(raw_partitions: u32) -> KafkaBroker {
    let broker = KafkaBroker::start();
    create_topics(
        &broker.bootstrap_servers(),
        &[(RAW, raw_partitions), (EVENTS, 3), (DEAD, 1)],
    );
    broker
}

fn post_fixture(ingest: &KafkaProcess, push: &FixturePush) {
    let public = ingest.public.expect("receiver");
    let (status, body) = common::http(
        public,
        &push.method,
        &push.target(),
        push.content_type.as_deref(),
        &push.body,
        &[],
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "200"),
        "{}/{}",
        push.vendor,
        push.case
    );
}

/// True when a golden push's dedupe key embeds its receive time (pushes with no id and no
/// time of their own: the receive second, or its 5-minute bucket): posted now, its events get
/// other ids.
fn receive_time_dependent(push: &FixturePush) -> bool {
    let key = push.expected["dedupe_key"].as_str().unwrap_or_default();
    golden_received_at(push).is_some_and(|seconds| {
        key.contains(&seconds.to_string()) || key.contains(&(seconds / 300 * 300).to_string())
    })
}

fn golden_received_at(push: &FixturePush) -> Option<i64> {
    let request = golden_request(push)?;
    let received_at =
        chrono::DateTime::parse_from_rfc3339(request["received_at"].as_str()?).ok()?;
    Some(received_at.timestamp())
}

fn golden_request(push: &FixturePush) -> Option<Value> {
    let request_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("normalizer/fixtures")
        .join(&push.vendor)
        .join(&push.case);
    serde_json::from_str(&std::fs::read_to_string(request_path).ok()?).ok()
}

/// Source names that fixtures configure with different accounts: `fixture_config` can give
/// such a source only one of them, so its events' `source` and `data.account` may differ from
/// the golden files.
fn sources_with_conflicting_accounts(pushes: &[FixturePush]) -> BTreeSet<String> {
    let mut accounts: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for push in pushes {
        let account = golden_request(push)
            .and_then(|request| request["source"]["account"].as_str().map(str::to_owned));
        accounts
            .entry(push.source.clone())
            .or_default()
            .insert(account);
    }
    accounts
        .into_iter()
        .filter(|(_, accounts)| accounts.len() > 1)
        .map(|(name, _)| name)
        .collect()
}

fn header(record: &TopicRecord, name: &str) -> String {
    record.header(name).unwrap_or_else(|| {
        panic!(
            "record {}:{} lacks `{name}`",
            record.partition, record.offset
        )
    })
}

/// What the golden files say the topics must hold.
#[derive(Default)]
struct Golden {
    /// Events whose id does not depend on the receive time, by id.
    by_id: BTreeMap<String, Value>,
    /// The others, as (type, source name, vendor event).
    by_shape: BTreeSet<(String, String, String)>,
    /// Dead letters: (reason, raw body).
    dead_letters: Vec<(String, Vec<u8>)>,
    /// Sources whose `source` and `data.account` may differ from the golden files.
    ambiguous_sources: BTreeSet<String>,
}

impl Golden {
    fn of(pushes: &[FixturePush]) -> Golden {
        let mut golden = Golden {
            ambiguous_sources: sources_with_conflicting_accounts(pushes),
            ..Golden::default()
        };
        for push in pushes {
            if let Some(error) = push.expected.get("error") {
                let reason = error["reason"].as_str().unwrap().to_owned();
                golden.dead_letters.push((reason, push.body.clone()));
                continue;
            }
            let dependent = receive_time_dependent(push);
            for event in push.expected["events"].as_array().into_iter().flatten() {
                if dependent {
                    golden.by_shape.insert((
                        event["type"].as_str().unwrap().to_owned(),
                        event["data"]["source_name"].as_str().unwrap().to_owned(),
                        event["data"]["vendor_event"].as_str().unwrap().to_owned(),
                    ));
                } else {
                    let id = event["id"].as_str().unwrap().to_owned();
                    golden.by_id.insert(id, event.clone());
                }
            }
        }
        golden
    }

    /// Checks one record of the events topic: CloudEvents binary mode, key = subject, and
    /// the golden event's attributes (and data, when nothing in it depends on the receive
    /// time or on a source's account). Returns true when the data was compared too.
    fn check_event(&self, record: &TopicRecord) -> bool {
        let id = header(record, "ce_id");
        assert_eq!(header(record, "ce_specversion"), "1.0");
        assert_eq!(header(record, "content-type"), "application/json");
        assert_eq!(record.key, header(record, "ce_subject"), "key = subject");
        let data: Value = serde_json::from_slice(&record.value).expect("data is JSON");
        let Some(golden) = self.by_id.get(&id) else {
            let shape = (
                header(record, "ce_type"),
                data["source_name"].as_str().unwrap_or_default().to_owned(),
                data["vendor_event"].as_str().unwrap_or_default().to_owned(),
            );
            assert!(self.by_shape.contains(&shape), "unexpected event {shape:?}");
            return false;
        };
        for (name, field) in [
            ("ce_type", "type"),
            ("ce_subject", "subject"),
            ("ce_dataschema", "dataschema"),
            ("ce_timesource", "timesource"),
        ] {
            assert_eq!(
                header(record, name),
                golden[field].as_str().unwrap(),
                "{id}"
            );
        }
        let vendor_time = golden["timesource"] == "vendor";
        if vendor_time {
            assert_eq!(header(record, "ce_time"), golden["time"].as_str().unwrap());
        }
        let source_name = golden["data"]["source_name"].as_str().unwrap();
        if self.ambiguous_sources.contains(source_name) {
            return false;
        }
        assert_eq!(
            header(record, "ce_source"),
            golden["source"].as_str().unwrap()
        );
        if vendor_time {
            assert_eq!(data, golden["data"], "data of {id}");
        }
        vendor_time
    }
}

#[test]
fn test_every_seed_push_reaches_the_events_topic_as_cloudevents() {
    let broker = start_broker(3);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&brokers, 3, &fixture_config());
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &config,
    );
    let pushes = fixture_pushes();
    assert!(pushes.len() >= 30, "found {} fixtures", pushes.len());
    for push in &pushes {
        post_fixture(&ingest, push);
    }
    let golden = Golden::of(&pushes);
    assert!(
        golden.by_id.len() >= 30,
        "{} deterministic events",
        golden.by_id.len()
    );

    let mut events = TopicReader::new(&brokers, EVENTS);
    events.read_until(FLOW_TIMEOUT, |records| {
        let ids: BTreeSet<String> = records.iter().filter_map(|r| r.header("ce_id")).collect();
        golden.by_id.keys().all(|id| ids.contains(id))
    });
    events.read_for(Duration::from_secs(1));
    let mut seen = BTreeSet::new();
    let mut data_compared = 0;
    for record in &events.records {
        let id = header(record, "ce_id");
        assert!(seen.insert(id.clone()), "event {id} is in the topic twice");
        data_compared += usize::from(golden.check_event(record));
    }
    assert!(
        data_compared >= 30,
        "only {data_compared} events compared in full"
    );

    let mut dead = TopicReader::new(&brokers, DEAD);
    let want = golden.dead_letters.len();
    dead.read_until(FLOW_TIMEOUT, |records| records.len() >= want);
    for (reason, body) in &golden.dead_letters {
        let found = dead
            .records
            .iter()
            .any(|r| r.header("callhook.reason").as_deref() == Some(reason) && &r.value == body);
        assert!(found, "no dead letter with reason {reason}");
    }
    assert_eq!(normalize.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
}

#[test]
fn test_dead_letters_reach_their_topic_with_the_reason_header() {
    let broker = start_broker(1);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let sources =
        "[sources.coocenter]\ndialect = \"coocenter\"\n[sources.7moor]\ndialect = \"7moor\"\n";
    let config = kafka_config(&brokers, 1, sources);
    let serve = KafkaProcess::start("serve", "serve", &dir.path().join("serve"), &config);
    let garbage = b"\x00\x01 not a push \xff".to_vec();
    assert_eq!(serve.post("coocenter", None, &garbage).0, 200);
    assert_eq!(
        serve
            .post("7moor", Some("application/json"), &ringing_push(1))
            .0,
        200
    );

    let mut dead = TopicReader::new(&brokers, DEAD);
    dead.read_until(FLOW_TIMEOUT, |records| !records.is_empty());
    let letter = &dead.records[0];
    let reason = header(letter, "callhook.reason");
    assert!(
        !reason.is_empty() && reason != "unknown_source",
        "reason {reason}"
    );
    assert_eq!(letter.value, garbage, "the value is the push's exact bytes");
    assert_eq!(header(letter, "callhook.source"), "coocenter");
    assert!(header(letter, "callhook.raw_ref").starts_with("callhook.raw:0:"));
    assert!(letter.headers.contains_key("callhook.request_id"));
    assert!(letter.headers.contains_key("callhook.received_at_ms"));

    // The same dead letter is in the SQLite sink (committed after Kafka confirmed), with the
    // same reason and raw_ref.
    let db_path = dir.path().join("serve").join("callhook.db");
    wait_for("the dead letter in SQLite", FLOW_TIMEOUT, || {
        count(&db_path, "SELECT COUNT(*) FROM dead_letters") == 1
    });
    let db = open_read_only(&db_path);
    let (stored_reason, raw_ref): (String, String) = db
        .query_row("SELECT reason, raw_ref FROM dead_letters", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(stored_reason, reason);
    assert_eq!(raw_ref, header(letter, "callhook.raw_ref"));

    let mut events = TopicReader::new(&brokers, EVENTS);
    events.read_until(FLOW_TIMEOUT, |records| !records.is_empty());
    assert_eq!(header(&events.records[0], "ce_type"), "call.ringing");
    assert_eq!(events.records[0].key, "e2e-call-1");
    assert_eq!(serve.terminate().code(), Some(0));
}

/// Posts ringing pushes `from..` one after another until `stop`; counts those answered 200.
fn post_continuously(
    ingest: &KafkaProcess,
    from: u32,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU32>,
) -> std::thread::JoinHandle<Vec<u32>> {
    let public = ingest.public.expect("receiver");
    std::thread::spawn(move || {
        let mut acked_ids = Vec::new();
        let mut n = from;
        while !stop.load(Ordering::Acquire) {
            let (status, _) = common::http(
                public,
                "POST",
                "/hooks/7moor",
                Some("application/json"),
                &ringing_push(n),
                &[],
            );
            assert_eq!(status, 200, "push {n}");
            acked_ids.push(n);
            acked.fetch_add(1, Ordering::AcqRel);
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        acked_ids
    })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    open_read_only(db)
        .query_row(sql, [], |row| row.get(0))
        .unwrap_or(0)
}

const SOURCES_7MOOR: &str = "[sources.7moor]\ndialect = \"7moor\"\n";

#[test]
fn test_two_normalizers_share_partitions_and_a_sigkill_loses_and_duplicates_nothing() {
    let broker = start_broker(4);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&brokers, 4, SOURCES_7MOOR);
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    // Both normalizers write one SQLite file (WAL), as the compose stack's two services do.
    let sink_dir = dir.path().join("sink");
    let first = KafkaProcess::start("normalize", "normalize-1", &sink_dir, &config);
    let second = KafkaProcess::start("normalize", "normalize-2", &sink_dir, &config);
    wait_for("both normalizers to own partitions", FLOW_TIMEOUT, || {
        let owned = |p: &KafkaProcess| p.metric("callhook_normalizer_assigned_partitions");
        matches!((owned(&first), owned(&second)), (Some(a), Some(b)) if a >= 1.0 && b >= 1.0 && a + b == 4.0)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU32::new(0));
    let poster = post_continuously(&ingest, 0, Arc::clone(&stop), Arc::clone(&acked));
    let db = sink_dir.join("callhook.db");
    wait_for("the first events", FLOW_TIMEOUT, || {
        count(&db, "SELECT COUNT(*) FROM events") >= 50
    });
    first.kill(); // mid-stream, mid-batch perhaps
    wait_for("the survivor to own every partition", FLOW_TIMEOUT, || {
        second.metric("callhook_normalizer_assigned_partitions") == Some(4.0)
    });
    let at_kill = acked.load(Ordering::Acquire);
    wait_for("more pushes after the take-over", FLOW_TIMEOUT, || {
        acked.load(Ordering::Acquire) >= at_kill + 50
    });
    stop.store(true, Ordering::Release);
    let posted = poster.join().unwrap();
    let expected = posted.len() as i64;

    // Every acknowledged push is in SQLite exactly once: one event each, and the stored
    // offsets cover the whole raw topic.
    wait_for("every push in SQLite", FLOW_TIMEOUT, || {
        count(&db, "SELECT COUNT(*) FROM events") == expected
            && count(&db, "SELECT COALESCE(SUM(next_offset), 0) FROM consumer_offsets WHERE consumer = 'normalizer@callhook.raw'") >= expected
    });
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT id) FROM events"),
        expected
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), 0);
    assert_eq!(
        count(&db, "SELECT COUNT(DISTINCT call_id) FROM events"),
        expected
    );
    let calls = count(&db, "SELECT COUNT(*) FROM calls");
    assert_eq!(calls, expected, "one calls row per call");

    // The topic has every event at least once (without transactions a killed member's last
    // batch may be produced again, with the same ce_id).
    let mut events = TopicReader::new(&brokers, EVENTS);
    events.read_until(FLOW_TIMEOUT, |records| {
        records
            .iter()
            .map(|r| r.key.clone())
            .collect::<BTreeSet<_>>()
            .len() as i64
            == expected
    });
    assert_eq!(second.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
}

#[test]
fn test_ingest_acknowledges_through_a_broker_outage_and_every_acked_push_arrives() {
    let mut broker = start_broker(2);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&brokers, 2, SOURCES_7MOOR);
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &config,
    );

    // Before the outage: pushes flow through to the events topic.
    for n in 0..20 {
        assert_eq!(
            ingest
                .post("7moor", Some("application/json"), &ringing_push(n))
                .0,
            200
        );
    }
    let mut events = TopicReader::new(&brokers, EVENTS);
    events.read_until(FLOW_TIMEOUT, |records| records.len() >= 20);
    // No consumer of this test reads across the restart: librdkafka 2.12 can crash on the
    // leader hints tansu returns for a partition that vanished with the broker.
    drop(events);
    normalize.kill();

    // The broker stops while the client keeps posting: every push is still acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU32::new(0));
    let poster = post_continuously(&ingest, 1_000, Arc::clone(&stop), Arc::clone(&acked));
    wait_for("pushes before the outage", FLOW_TIMEOUT, || {
        acked.load(Ordering::Acquire) >= 10
    });
    broker.stop();
    let at_stop = acked.load(Ordering::Acquire);
    wait_for("pushes during the outage", FLOW_TIMEOUT, || {
        acked.load(Ordering::Acquire) >= at_stop + 30
    });
    stop.store(true, Ordering::Release);
    let posted = poster.join().unwrap();
    let (status, readiness) = ingest.admin_get("/readyz");
    assert_eq!(status, 200, "{readiness}");
    assert!(readiness.contains("spool"), "{readiness}");
    assert_eq!(ingest.metric("callhook_rawlog_spool_in_use"), Some(1.0));
    assert!(
        ingest
            .metric("callhook_rawlog_spool_records")
            .unwrap_or(0.0)
            >= 1.0,
        "{readiness}"
    );

    // tansu keeps its data in memory: the restarted broker is empty, and so is the topic the
    // first normalizer's consumer group had read (its offsets are gone with it). A real Kafka
    // keeps both; here a fresh normalizer (new database) reads the re-created raw topic, which
    // holds what the spool forwards: every push acknowledged while Kafka could not take it
    // (pushes acknowledged directly just before the outage were lost with the broker's memory).
    broker.restart();
    create_topics(&brokers, &[(RAW, 2), (EVENTS, 3), (DEAD, 1)]);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize-2"),
        &config,
    );
    let spooled: BTreeSet<String> = posted
        .iter()
        .skip(at_stop as usize + 1) // the one in flight at the stop may have reached the old broker
        .map(|n| format!("e2e-call-{n}"))
        .collect();
    let mut events = TopicReader::new(&brokers, EVENTS);
    events.read_until(FLOW_TIMEOUT, |records| {
        let keys: BTreeSet<String> = records.iter().map(|r| r.key.clone()).collect();
        spooled.iter().all(|key| keys.contains(key))
    });
    wait_for("the spool to drain", FLOW_TIMEOUT, || {
        ingest.admin_get("/readyz").1 == "ready"
    });
    assert_eq!(normalize.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
}

fn pg_count(pg: &callhook_testkit::Postgres, sql: &str) -> i64 {
    pg.psql(sql).trim().parse().unwrap_or(0)
}

/// Two normalizers on two "hosts" (data directories of their own, SQLite off) share one
/// PostgreSQL: one is SIGKILLed under load; every acknowledged push is in PostgreSQL exactly
/// once and every `calls` row is the fold of its call's events.
#[test]
fn test_two_normalizers_on_two_hosts_share_one_postgres_exactly_once() {
    let pg = callhook_testkit::Postgres::start();
    let broker = start_broker(4);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let postgres = format!(
        "{SOURCES_7MOOR}\n[sink.sqlite]\nenabled = false\n[sink.postgres]\nurl = \"{}\"\nsslmode = \"disable\"\n",
        pg.url()
    );
    let config = kafka_config(&brokers, 4, &postgres);
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    let first = KafkaProcess::start("normalize", "host-1", &dir.path().join("host-1"), &config);
    let second = KafkaProcess::start("normalize", "host-2", &dir.path().join("host-2"), &config);
    wait_for("both normalizers to own partitions", FLOW_TIMEOUT, || {
        let owned = |p: &KafkaProcess| p.metric("callhook_normalizer_assigned_partitions");
        matches!((owned(&first), owned(&second)), (Some(a), Some(b)) if a >= 1.0 && b >= 1.0 && a + b == 4.0)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU32::new(0));
    let poster = post_continuously(&ingest, 0, Arc::clone(&stop), Arc::clone(&acked));
    wait_for("the first events", FLOW_TIMEOUT, || {
        pg_count(&pg, "SELECT count(*) FROM events") >= 50
    });
    first.kill();
    wait_for("the survivor to own every partition", FLOW_TIMEOUT, || {
        second.metric("callhook_normalizer_assigned_partitions") == Some(4.0)
    });
    let at_kill = acked.load(Ordering::Acquire);
    wait_for("more pushes after the take-over", FLOW_TIMEOUT, || {
        acked.load(Ordering::Acquire) >= at_kill + 50
    });
    stop.store(true, Ordering::Release);
    let expected = poster.join().unwrap().len() as i64;
    wait_for("every push in PostgreSQL", FLOW_TIMEOUT, || {
        pg_count(&pg, "SELECT count(*) FROM events") == expected
            && pg_count(&pg, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer = 'normalizer@callhook.raw'") >= expected
    });
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT call_id) FROM events"),
        expected
    );
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM calls"), expected);
    assert_eq!(
        pg_count(
            &pg,
            "SELECT count(*) FROM calls c WHERE events_count = (SELECT count(*) FROM events e \
             WHERE e.source_name = c.source AND e.call_id = c.call_id) \
             AND last_event_type = 'call.ringing'"
        ),
        expected,
        "a calls row is not the fold of its events"
    );
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM dead_letters"), 0);
    // The compacted calls topic has every call's row, as a `callhook.call.updated` CloudEvent
    // keyed by source and call id, version 1 (one event folded).
    let mut calls = TopicReader::new(&brokers, "callhook.calls");
    calls.read_until(FLOW_TIMEOUT, |records| {
        records
            .iter()
            .map(|r| r.key.clone())
            .collect::<BTreeSet<_>>()
            .len() as i64
            == expected
    });
    for record in &calls.records {
        assert!(record.key.starts_with("7moor/"), "{}", record.key);
        assert_eq!(
            record.header("ce_type").as_deref(),
            Some("callhook.call.updated")
        );
        assert_eq!(record.header("callhook.version").as_deref(), Some("1"));
        let row: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(row["events_count"], 1);
        assert_eq!(
            format!("7moor/{}", row["call_id"].as_str().unwrap()),
            record.key
        );
    }
    assert!(
        !dir.path().join("host-2").join("callhook.db").exists(),
        "the disabled SQLite sink wrote a database"
    );
    assert_eq!(second.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
}

/// The offsets a consumer group committed on `topic` (partition -> offset; none: absent).
fn committed_offsets(brokers: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        list.add_partition(topic, partition.id());
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            rdkafka::Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect()
}

#[test]
fn test_replay_to_topic_re_produces_the_live_events_and_leaves_the_group_alone() {
    const REPLAYED: &str = "callhook.replayed";
    let broker = start_broker(2);
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&brokers, 2, &fixture_config());
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &config,
    );
    let pushes = fixture_pushes();
    for push in &pushes {
        post_fixture(&ingest, push);
    }
    let golden = Golden::of(&pushes);
    let mut live = TopicReader::new(&brokers, EVENTS);
    live.read_until(FLOW_TIMEOUT, |records| {
        let ids: BTreeSet<String> = records.iter().filter_map(|r| r.header("ce_id")).collect();
        golden.by_id.keys().all(|id| ids.contains(id))
    });
    live.read_for(Duration::from_secs(2));
    assert_eq!(normalize.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
    let group_before = committed_offsets(&brokers, "normalizer", RAW);
    assert!(!group_before.is_empty(), "the live group committed");

    let config_path = dir.path().join("replay.toml");
    std::fs::write(&config_path, &config).unwrap();
    let replay = |extra: &[&str]| -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["replay", "--json", "--config"])
            .arg(&config_path)
            // The live normalizer's database: the replayed events carry its `ce_sequence`s.
            .arg("--data-dir")
            .arg(dir.path().join("normalize"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run callhook replay");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("replay --json prints JSON")
    };
    let dry = replay(&["--dry-run"]);
    assert_eq!(dry["kafka"]["records_read"], pushes.len(), "{dry}");
    assert_eq!(dry["kafka"]["topic"], Value::Null, "{dry}");
    let summary = replay(&["--to-topic", REPLAYED]);
    let produced = summary["kafka"]["events"].as_u64().unwrap();
    assert_eq!(
        produced,
        dry["kafka"]["events"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(produced as usize, live.records.len(), "{summary}");

    let mut replayed = TopicReader::new(&brokers, REPLAYED);
    replayed.read_until(FLOW_TIMEOUT, |records| records.len() >= live.records.len());
    replayed.read_for(Duration::from_secs(1));
    assert_eq!(replayed.records.len(), live.records.len());
    let by_id: BTreeMap<String, &TopicRecord> = live
        .records
        .iter()
        .map(|record| (header(record, "ce_id"), record))
        .collect();
    let mut compared = 0;
    for record in &replayed.records {
        let id = header(record, "ce_id");
        let original = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("replayed event {id} is not in the live topic"));
        assert_eq!(record.key, original.key, "{id}");
        if header(record, "ce_timesource") == "received" {
            // A vendor's re-send has the same id; which of the two a loop keeps depends on
            // how partitions interleave, and its receive time is the event's time.
            for name in ["ce_type", "ce_subject", "ce_source", "ce_mappingversion"] {
                assert_eq!(header(record, name), header(original, name), "{id}");
            }
            continue;
        }
        assert_eq!(record.headers, original.headers, "{id}");
        assert_eq!(record.value, original.value, "{id}");
        compared += 1;
    }
    assert!(compared > 10, "only {compared} events compared in full");
    assert_eq!(
        committed_offsets(&brokers, "normalizer", RAW),
        group_before,
        "the live group's offsets are not touched"
    );
}
