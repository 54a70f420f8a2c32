//! Kafka-mode helpers of the end-to-end tests: start `callhook ingest`, `normalize` or `serve`
//! against a test broker, create topics, and read topics back with an independent consumer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The config of a Kafka-mode process: the broker, small partition counts, a short session
/// timeout, the Kafka sink on, and `extra` (e.g. sources) appended.
pub fn kafka_config(brokers: &str, raw_partitions: u32, extra: &str) -> String {
    format!(
        r#"[log]
kind = "kafka"

[log.kafka]
brokers = "{brokers}"
raw_topic = "callhook.raw"
raw_topic_partitions = {raw_partitions}
ack_timeout_ms = 2000
forwarder_backoff_max_ms = 500

[normalizer]
consumer_group = "normalizer"
idle_wait_ms = 100

[normalizer.kafka]
session_timeout_ms = 6000

[sink.kafka]
enabled = true
topic_partitions = 3

{extra}
"#
    )
}

/// A running Kafka-mode `callhook` process.
pub struct KafkaProcess {
    pub child: Child,
    pub public: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl KafkaProcess {
    /// Starts `callhook <command>` (`ingest`, `normalize` or `serve`) with `config` (written
    /// next to `data_dir` under `name`) on ephemeral ports.
    pub fn start(command: &str, name: &str, data_dir: &Path, config: &str) -> KafkaProcess {
        let config_path = data_dir.with_file_name(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let mut process = Command::new(env!("CARGO_BIN_EXE_callhook"));
        process.arg(command).arg("--config").arg(&config_path);
        if command != "normalize" {
            process.args(["--listen", "127.0.0.1:0"]);
        }
        process
            .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = process.spawn().expect("spawn callhook");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let mut public = None;
        let mut admin = None;
        for part in line.split_whitespace() {
            if let Some(addr) = part.strip_prefix("public=") {
                public = addr.parse().ok();
            } else if let Some(addr) = part.strip_prefix("admin=") {
                admin = addr.parse().ok();
            }
        }
        let admin = admin.unwrap_or_else(|| panic!("`callhook {command}` printed {line:?}"));
        KafkaProcess {
            child,
            public,
            admin,
        }
    }

    /// Posts one push to the receiver; returns (status, body).
    pub fn post(&self, source: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String) {
        let public = self.public.expect("this process has no receiver");
        super::http(
            public,
            "POST",
            &format!("/hooks/{source}"),
            content_type,
            body,
            &[],
        )
    }

    /// Returns the admin endpoint's (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        super::http(self.admin, "GET", path, None, b"", &[])
    }

    /// Returns a metric's value (summed over its series), if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics");
        super::metric_value(&text, name)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        send_signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill(mut self) {
        send_signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        send_signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Creates the topics (name, partitions) unless they exist.
pub fn create_topics(brokers: &str, topics: &[(&str, u32)]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, partitions) in topics {
        runtime
            .block_on(callhook_rawlog::kafka::ensure_topic(
                brokers,
                name,
                *partitions,
            ))
            .unwrap_or_else(|error| panic!("cannot create topic {name}: {error}"));
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub value: Vec<u8>,
}

impl TopicRecord {
    /// Returns a header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }
}

/// An independent consumer of a whole topic (every partition from its start, no group, read
/// committed), as a downstream service would read it.
pub struct TopicReader {
    consumer: BaseConsumer,
    pub records: Vec<TopicRecord>,
}

impl TopicReader {
    /// Assigns every partition of `topic` from the start.
    pub fn new(brokers: &str, topic: &str) -> TopicReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "e2e-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("reader");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Beginning)
                .expect("partition");
        }
        assert!(assignment.count() > 0, "topic {topic} has no partitions");
        consumer.assign(&assignment).expect("assign");
        TopicReader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done(records)` holds; panics after `timeout`, saying what it has.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[TopicRecord]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) {
            assert!(
                Instant::now() < deadline,
                "gave up after {timeout:?} with {} records",
                self.records.len()
            );
            self.poll(Duration::from_millis(100));
        }
    }

    /// Keeps reading for `quiet` (to see records that should not be there).
    pub fn read_for(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        while Instant::now() < until {
            self.poll(Duration::from_millis(50));
        }
    }

    fn poll(&mut self, timeout: Duration) {
        let Some(result) = self.consumer.poll(timeout) else {
            return;
        };
        let Ok(message) = result else {
            return; // transient (e.g. while the broker restarts)
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        self.records.push(TopicRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            value: message.payload().unwrap_or_default().to_vec(),
        });
    }
}

/// A 7moor v7 `dialoutRing` push for call `n` (one `call.ringing` event), as JSON bytes.
pub fn ringing_push(n: u32) -> Vec<u8> {
    format!(
        r#"{{"eventUniqueId":"{n:032x}","accountId":"20000153","callUniqueId":"e2e-call-{n}","pushType":"dialoutRing","customerNumber":"17319132391","displayNumber":"01081400192","statusTime":"1620455977","callEvent":"ring","callType":"dialout","agentNumber":"20001","agentName":"a"}}"#
    )
    .into_bytes()
}
