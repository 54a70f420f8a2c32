//! `callhook tap` end to end: the real binary serves on loopback, a second real binary taps its
//! admin listener, and pushes sent over HTTP show up live, as events or as raw pushes, with the
//! filters and the token applied; the tap ends cleanly when the server stops. In Kafka mode
//! the raw pushes are tapped on `callhook ingest` and the events on `callhook normalize`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use callhook_testkit::KafkaBroker;
use common::kafka::{create_topics, kafka_config, KafkaProcess};
use common::Server;
use serde_json::Value;

const TAP_TOKEN: &str = "tap-token-0123456789";

fn config() -> String {
    format!("[admin]\ntap_token = \"{TAP_TOKEN}\"\n")
}

fn ring_push(call: &str, event: &str) -> String {
    format!(
        r#"{{"eventUniqueId":"{event}","accountId":"20000153","callUniqueId":"{call}","pushType":"dialoutRing","customerNumber":"17319132391","displayNumber":"01081400192","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","agentName":"tap-agent","extras":""}}"#
    )
}

/// A running `callhook tap` with its stdout lines arriving on a channel.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tap {
    fn start(server: &Server, args: &[&str]) -> Tap {
        Tap::attach(server.admin, args)
    }

    fn attach(admin: std::net::SocketAddr, args: &[&str]) -> Tap {
        let admin = format!("http://{admin}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["tap", "--admin", &admin])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn callhook tap");
        // The tap says on stderr when it is attached: only then is a push sure to be seen.
        let stderr = child.stderr.take().unwrap();
        let mut stderr = BufReader::new(stderr);
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.contains("attached"), "tap did not attach: {first:?}");
        std::thread::spawn(move || for _ in stderr.lines() {});
        let lines = spawn_reader(child.stdout.take().unwrap());
        Tap { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a tap line within 20 s")
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

#[test]
fn test_tap_prints_events_and_raw_pushes_live_with_filters_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(&config()));

    // Without the token the admin listener refuses, and the command says why.
    let refused = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["tap", "--admin", &format!("http://{}", server.admin)])
        .env_remove("CALLHOOK_TAP_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token"));

    let events = Tap::start(
        &server,
        &["--token", TAP_TOKEN, "--json", "--source", "7moor"],
    );
    let raw = Tap::start(&server, &["--token", TAP_TOKEN, "--raw", "--json"]);
    let compact = Tap::start(
        &server,
        &[
            "--token",
            TAP_TOKEN,
            "--type",
            "call.",
            "--call",
            "tap-call-2",
        ],
    );

    // A push on another source is filtered out of the first tap; the raw tap sees both.
    let uincall = r#"{"tenant_id":"t","session_id":"s-1","type":"event","dir":"DN","agent_num":"8014","command":"call_talking","call_id":"tap-uin","agent_type":0,"calldirection":"call out","dnis":"15991752045","ani":"02863208372","call_result":-1}"#;
    let (status, _) = server.request(
        "POST",
        "/hooks/uincall",
        Some("application/json"),
        uincall.as_bytes(),
    );
    assert_eq!(status, 200);
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        ring_push("tap-call-1", "e1").as_bytes(),
    );
    assert_eq!(status, 200);

    let event: Value = serde_json::from_str(&events.next_line()).unwrap();
    assert_eq!(event["kind"], "event");
    assert_eq!(event["source"], "7moor");
    assert_eq!(event["event"]["data"]["call_id"], "tap-call-1");
    assert!(event["event"]["type"]
        .as_str()
        .unwrap()
        .starts_with("call."));

    let first_raw: Value = serde_json::from_str(&raw.next_line()).unwrap();
    let second_raw: Value = serde_json::from_str(&raw.next_line()).unwrap();
    assert_eq!(first_raw["kind"], "raw");
    assert_eq!(first_raw["source"], "uincall");
    assert_eq!(second_raw["source"], "7moor");
    assert!(second_raw["body"].as_str().unwrap().contains("tap-call-1"));

    // The compact tap filters by call: only the second call's line, on one line.
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        ring_push("tap-call-2", "e2").as_bytes(),
    );
    assert_eq!(status, 200);
    let line = compact.next_line();
    assert!(
        line.contains("7moor") && line.contains("call=tap-call-2"),
        "{line}"
    );
    assert!(line.contains("tap-agent"), "{line}");

    // Stopping the server ends every tap cleanly (and the tap streams do not hold it up).
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    for mut tap in [events, raw, compact] {
        let exit = tap.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
    }
}

#[test]
fn test_tap_in_kafka_mode_raw_on_ingest_and_events_on_normalize() {
    let broker = KafkaBroker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(
        &brokers,
        &[
            ("callhook.raw", 2),
            ("callhook.events", 3),
            ("callhook.dead_letters", 1),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = kafka_config(&brokers, 2, &config());
    let ingest = KafkaProcess::start("ingest", "ingest", &dir.path().join("ingest"), &config);
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &config,
    );
    let raw = Tap::attach(ingest.admin, &["--token", TAP_TOKEN, "--raw", "--json"]);
    let events = Tap::attach(normalize.admin, &["--token", TAP_TOKEN, "--json"]);
    let (status, _) = ingest.post(
        "7moor",
        Some("application/json"),
        ring_push("kafka-call", "k1").as_bytes(),
    );
    assert_eq!(status, 200);
    let pushed: Value = serde_json::from_str(&raw.next_line()).unwrap();
    assert_eq!(pushed["kind"], "raw");
    assert!(pushed["body"].as_str().unwrap().contains("kafka-call"));
    // The normalizer may take a while to join its group and reach the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let line = events
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("an event from the normalizer");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"]["data"]["call_id"] == "kafka-call" {
            assert_eq!(event["kind"], "event");
            break;
        }
        assert!(std::time::Instant::now() < deadline);
    }
    assert_eq!(normalize.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
}
