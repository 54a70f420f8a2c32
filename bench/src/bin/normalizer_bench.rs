//! `normalizer-bench`: normalizer throughput (map + dedupe + SQLite sink) draining a pre-filled
//! raw log — also the time to rebuild the database from the log — and the memory of the
//! dedupe cache at a given number of keys. Prints one JSON object on stdout.
//!
//! 1. Dedupe cache: allocated bytes (counted per thread by this binary's global allocator)
//!    and RSS growth of a [`DedupeCache`] holding `--dedupe-keys` keys, measured first, alone.
//! 2. Pre-fill: `--pushes` records appended to a fresh [`EmbeddedLog`] through its ordinary
//!    append path (group commit, fsync): by default realistic simulated call flows
//!    ([`Workload`]), or the golden fixtures in rounds with unique ids ([`VendorMix`]).
//! 3. Drain: a fresh SQLite sink and [`Normalizer::drain`] with the default `[normalizer]`
//!    settings (or `--batch-records`), timed from `Normalizer::new` to the last commit.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use callhook_bench::fixtures::{default_fixture_dir, VendorMix};
use callhook_bench::procfs::{own_cpu_time, own_memory};
use callhook_bench::workload::Workload;
use callhook_normalizer::dedupe::DedupeCache;
use callhook_normalizer::pipeline::records::map_record;
use callhook_normalizer::{Normalizer, NormalizerConfig, SourceContext};
use callhook_rawlog::embedded::{EmbeddedLog, EmbeddedLogConfig, IntegrityCheck};
use callhook_rawlog::embedded::{LogSnapshot, ReadRecord};
use callhook_rawlog::{LogAppender, RawRecord};
use callhook_sinks::postgres::SslMode;
use callhook_sinks::SinkItem;
use callhook_sinks::{
    PostgresSink, PostgresSinkConfig, ProjectionSettings, ProjectionSinks, SinkBatch, SqliteSink,
    SqliteSinkSettings,
};
use clap::Parser;
use mimalloc::MiMalloc;
use serde_json::json;

/// Counts the bytes allocated, less those freed, by the calling thread: the dedupe-cache
/// figure is measured on one thread. A thread's own counter, not one shared atomic: a shared
/// counter put two atomic read-modify-writes of one cache line, bounced between the mapping
/// and committing threads, on every allocation. That was 30 % of the rebuild's mapping thread,
/// a cost the `callhook` binary (plain mimalloc) does not have.
struct CountingAllocator;

thread_local! {
    static ALLOCATED_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: nothing is counted while the thread's locals are being torn down.
    let _ = ALLOCATED_BYTES.try_with(|bytes| bytes.set(bytes.get().wrapping_add(delta)));
}

fn allocated_bytes() -> isize {
    ALLOCATED_BYTES.try_with(Cell::get).unwrap_or(0)
}

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to mimalloc; only a counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(signed(layout.size()));
        // SAFETY: same layout contract as the caller's.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-signed(layout.size()));
        // SAFETY: `ptr` was allocated by `MiMalloc` with `layout`.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(signed(new_size) - signed(layout.size()));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Pre-fills a raw log with fixture pushes and times the normalizer draining it.
#[derive(Parser)]
#[command(name = "normalizer-bench")]
struct Args {
    /// Pushes written to the raw log.
    #[arg(long, default_value_t = 1_000_000)]
    pushes: u64,
    /// Keys put in the dedupe cache for its memory figure.
    #[arg(long, default_value_t = 1_000_000)]
    dedupe_keys: usize,
    /// `[normalizer] max_batch_records` (default: the shipped default).
    #[arg(long)]
    batch_records: Option<usize>,
    /// Working directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The golden fixtures (with `--workload fixtures`).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// What the raw log is filled with: `realistic` (simulated call flows, mostly unique 7moor
    /// v7 calls of ring, link, hangup and cdr, the other dialects mixed in, each call's pushes
    /// together), `interleaved` (the same flows overlapping in time as calls do, pushes in
    /// receive-time order) or `fixtures` (the golden fixtures in rounds with unique ids).
    #[arg(long, default_value = "realistic")]
    workload: String,
    /// The phases to run after the pre-fill, comma-separated: `mapping` (mapping alone, no
    /// sink), `rebuild` (`callhook replay --into`), `drain` (the live normalizer loop),
    /// `sinks` (the same mapped batches committed to the SQLite sink, then to the PostgreSQL
    /// sink: the ratio), `drain-both` (the live loop with both sinks on) and, when asked for,
    /// `disk` (bytes per push of the raw log before and after compaction, and of the sink the
    /// drain wrote; run it last). Each runs on a thread of its own name, so a profile tells
    /// them apart.
    #[arg(long, value_delimiter = ',', default_value = "mapping,rebuild,drain")]
    phases: Vec<String>,
    /// The PostgreSQL database of the `sinks` and `drain-both` phases; default: a local
    /// PostgreSQL 18 (the test kit's, `fsync=on`) started for the run. Its tables are dropped
    /// first.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Pushes of the log the `sinks` phase maps and commits (its batches are held in memory).
    #[arg(long, default_value_t = 100_000)]
    sinks_pushes: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dedupe = measure_dedupe_cache(args.dedupe_keys);
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let log = Arc::new(open_log(&dir)?);
    let prefill_started = Instant::now();
    let (sources, fixtures) = match args.workload.as_str() {
        "realistic" | "interleaved" => {
            let mut workload = if args.workload == "realistic" {
                Workload::realistic(7)
            } else {
                Workload::interleaved(7)
            };
            prefill(&log, args.pushes, |_| workload.next_record())?;
            (Workload::sources(), json!(null))
        }
        "fixtures" => {
            let fixture_dir = args.fixtures.clone().unwrap_or_else(default_fixture_dir);
            let mix = VendorMix::load(&fixture_dir)?;
            prefill(&log, args.pushes, |index| fixture_record(&mix, index))?;
            let summary = json!({
                "found": mix.fixtures_found,
                "used": mix.pushes.len(),
                "dead_letter": mix.pushes.iter().filter(|push| push.dead_letter).count(),
                "excluded": mix.fixtures_excluded,
            });
            (mix.sources.clone(), summary)
        }
        other => anyhow::bail!("--workload `{other}`: `realistic`, `interleaved` or `fixtures`"),
    };
    let prefill_seconds = prefill_started.elapsed().as_secs_f64();
    let memory_before_drain = own_memory();
    let memory_before_rebuild = own_memory();
    for phase in &args.phases {
        if !["mapping", "rebuild", "drain", "sinks", "drain-both", "disk"].contains(&phase.as_str())
        {
            anyhow::bail!(
                "--phases: `{phase}` is not one of mapping, rebuild, drain, sinks, drain-both, disk"
            );
        }
    }
    let wanted = |phase: &str| args.phases.iter().any(|wanted| wanted == phase);
    let mapping = on_thread("mapping", wanted("mapping"), || {
        mapping_only(&log, &sources)
    })?;
    let rebuild = on_thread("rebuild", wanted("rebuild"), || {
        rebuild(&log, &dir, &sources)
    })?;
    let drain = on_thread("normalizer", wanted("drain"), || {
        drain(&log, &dir, sources.clone(), args.batch_records)
    })?;
    let local_postgres = (args.postgres_url.is_none() && (wanted("sinks") || wanted("drain-both")))
        .then(callhook_testkit::Postgres::start_durable);
    let postgres_url = args
        .postgres_url
        .clone()
        .or_else(|| local_postgres.as_ref().map(callhook_testkit::Postgres::url));
    let sinks = on_thread("sinks", wanted("sinks"), || {
        let url = postgres_url.as_deref().unwrap_or_default();
        sinks_compared(&log, &dir, &sources, url, args.sinks_pushes)
    })?;
    let drain_both = on_thread("normalizer", wanted("drain-both"), || {
        let url = postgres_url.as_deref().unwrap_or_default();
        drain_both(&log, &dir, sources.clone(), url)
    })?;
    let disk = on_thread("disk", wanted("disk"), || {
        callhook_bench::disk::measure(&log, args.pushes, &dir.join("callhook.db"))
    })?;
    log.close()?;
    let output = json!({
        "pushes": args.pushes,
        "workload": args.workload,
        "fixtures": fixtures,
        "prefill_seconds": prefill_seconds,
        "prefill_appends_per_second": args.pushes as f64 / prefill_seconds,
        "memory_before_drain": memory_before_drain,
        "mapping": mapping,
        "rebuild": rebuild,
        "memory_before_rebuild": memory_before_rebuild,
        "drain": drain,
        "sinks": sinks,
        "drain_both": drain_both,
        "disk": disk,
        "dedupe_cache": dedupe,
        "memory": own_memory(),
    });
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}

/// Runs `phase` on a thread named `name` if `wanted`; `null` if not.
fn on_thread(
    name: &str,
    wanted: bool,
    phase: impl FnOnce() -> anyhow::Result<serde_json::Value> + Send,
) -> anyhow::Result<serde_json::Value> {
    if !wanted {
        return Ok(json!(null));
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, phase)?
            .join()
            .map_err(|_| anyhow::anyhow!("the {name} phase panicked"))?
    })
}

fn measure_dedupe_cache(keys: usize) -> serde_json::Value {
    let Some(capacity) = NonZeroUsize::new(keys) else {
        return json!(null);
    };
    let allocated_before = allocated_bytes();
    let rss_before = own_memory().rss_kib;
    let mut cache = DedupeCache::new(capacity);
    for index in 0..keys {
        let key = format!("7moor.v7:eid:{index:032x}:3a813cd46f926891");
        cache.remember("7moor", &key);
    }
    let allocated =
        usize::try_from(allocated_bytes().saturating_sub(allocated_before)).unwrap_or(0);
    let rss_growth_kib = own_memory().rss_kib.saturating_sub(rss_before);
    let held = cache.len();
    drop(cache);
    json!({
        "keys": held,
        "allocated_bytes": allocated,
        "allocated_bytes_per_key": allocated as f64 / held.max(1) as f64,
        "rss_growth_kib": rss_growth_kib,
    })
}

fn open_log(dir: &Path) -> anyhow::Result<EmbeddedLog> {
    let config = EmbeddedLogConfig {
        max_pending_appends: 20_000,
        max_unconsumed_records: 100_000_000,
        integrity_check: IntegrityCheck::Off,
        // No periodic retention or compaction pass in the middle of a timed phase (the
        // workload's receive times are months old): the `disk` phase compacts on demand.
        retention_days: Some(0),
        retention_check_interval_ms: 24 * 3_600_000,
        ..EmbeddedLogConfig::default()
    };
    Ok(EmbeddedLog::open(config.validate(dir)?)?)
}

/// Returns fixture push `index` as a raw record.
fn fixture_record(mix: &VendorMix, index: u64) -> (String, RawRecord) {
    let (push, query, body) = mix.nth(index);
    let record = RawRecord {
        source: push.source.clone(),
        received_at: push.received_at,
        method: push.method.clone(),
        content_type: push.content_type.clone(),
        query,
        remote_addr: Some("127.0.0.1:40000".to_owned()),
        request_id: format!("bench-{index:016x}"),
        headers: push.headers.clone(),
        body: Bytes::from(body),
    };
    (push.source.clone(), record)
}

/// Appends `pushes` records (`record(index)` gives each with its partition key) through the
/// ordinary append path, 10,000 queued at a time.
fn prefill(
    log: &Arc<EmbeddedLog>,
    pushes: u64,
    mut record: impl FnMut(u64) -> (String, RawRecord),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    const CHUNK: u64 = 10_000;
    let mut next = 0;
    while next < pushes {
        let end = (next + CHUNK).min(pushes);
        // `append` queues at call time; awaiting in order collects the answers.
        let answers: Vec<_> = (next..end)
            .map(|index| {
                let (key, record) = record(index);
                log.append(key, record)
            })
            .collect();
        runtime.block_on(async {
            for answer in answers {
                answer.await?;
            }
            Ok::<_, callhook_rawlog::AppendError>(())
        })?;
        next = end;
    }
    Ok(())
}

/// Maps every record of the log on one thread, with no sink: the mapping's own rate.
fn mapping_only(
    log: &EmbeddedLog,
    sources: &HashMap<String, SourceContext>,
) -> anyhow::Result<serde_json::Value> {
    let snapshot = LogSnapshot::open(&log.settings().path)?;
    let started = Instant::now();
    let cpu_started = own_cpu_time();
    let (mut records, mut events, mut bytes) = (0u64, 0u64, 0u64);
    for partition in 0..snapshot.partitions() {
        let (mut next, end) = snapshot.bounds(partition)?;
        while next < end {
            let chunk = snapshot.read_each(partition, next, 5_000)?;
            let Some(last) = chunk.last() else { break };
            next = last.position().offset + 1;
            for record in &chunk {
                if let ReadRecord::Decoded(stored) = record {
                    bytes += stored.record.body.len() as u64;
                    if let SinkItem::Push { events: list, .. } = map_record(sources, stored) {
                        events += list.len() as u64;
                    }
                }
                records += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (own_cpu_time() - cpu_started).as_secs_f64();
    Ok(json!({
        "records": records,
        "events": events,
        "mean_body_bytes": bytes as f64 / records.max(1) as f64,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "records_per_second": records as f64 / seconds,
        "events_per_cpu_second": events as f64 / cpu_seconds,
    }))
}

/// Rebuilds a new database from the whole log, as `callhook replay --into` does.
fn rebuild(
    log: &EmbeddedLog,
    dir: &Path,
    sources: &HashMap<String, SourceContext>,
) -> anyhow::Result<serde_json::Value> {
    let snapshot = LogSnapshot::open(&log.settings().path)?;
    let stops = (0..snapshot.partitions())
        .map(|partition| snapshot.bounds(partition).map(|(_, next)| next))
        .collect::<Result<Vec<_>, _>>()?;
    let into = dir.join("rebuilt.db");
    let _ = std::fs::remove_file(&into);
    let cpu_started = own_cpu_time();
    let stats = callhook_normalizer::replay::rebuild(
        snapshot,
        stops,
        &into,
        sources.clone(),
        "normalizer",
        &callhook_normalizer::replay::ReplayFilter::default(),
        &mut |_, _| {},
    )?;
    let cpu_seconds = (own_cpu_time() - cpu_started).as_secs_f64();
    let bytes = std::fs::metadata(&into).map(|meta| meta.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&into);
    Ok(json!({
        "records": stats.records_read,
        "events": stats.events,
        "seconds": stats.seconds,
        "cpu_seconds": cpu_seconds,
        "records_per_second": stats.records_read as f64 / stats.seconds,
        "database_bytes": bytes,
    }))
}

fn drain(
    log: &Arc<EmbeddedLog>,
    dir: &Path,
    sources: HashMap<String, SourceContext>,
    batch_records: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    let db_path = dir.join("callhook.db");
    let mut config = NormalizerConfig::default();
    if let Some(batch) = batch_records {
        config.max_batch_records = batch;
    }
    let settings = config.validate().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let cpu_started = own_cpu_time();
    let sink = SqliteSink::open(&SqliteSinkSettings::for_path(&db_path))?;
    let mut normalizer = Normalizer::new(
        Arc::clone(log),
        sink,
        sources,
        settings,
        &dir.join("attempts"),
    )?;
    let records = normalizer.drain()?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (own_cpu_time() - cpu_started).as_secs_f64();
    drop(normalizer);
    let db = rusqlite::Connection::open(&db_path)?;
    let count = |table: &str| -> anyhow::Result<i64> {
        Ok(
            db.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })?,
        )
    };
    let events = count("events")?;
    Ok(json!({
        "records": records,
        "seconds": seconds,
        "events": events,
        "dead_letters": count("dead_letters")?,
        "calls": count("calls")?,
        "cpu_seconds": cpu_seconds,
        "events_per_second": events as f64 / seconds,
        "events_per_cpu_second": events as f64 / cpu_seconds,
        "records_per_second": records as f64 / seconds,
        "database_bytes": std::fs::metadata(&db_path)?.len(),
    }))
}

/// A clean PostgreSQL sink at `url`: the sink's tables dropped, then migrated again.
fn fresh_postgres(url: &str) -> anyhow::Result<PostgresSink> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(
        "DROP TABLE IF EXISTS events, calls, agents, dead_letters, consumer_offsets, \
         callhook_schema_migrations",
    )?;
    let settings = PostgresSinkConfig {
        url: Some(url.to_owned()),
        sslmode: SslMode::Disable,
        ..PostgresSinkConfig::default()
    }
    .validate()?
    .ok_or_else(|| anyhow::anyhow!("no url"))?;
    Ok(PostgresSink::open(&settings)?)
}

/// Maps the whole log into batches of the default size (as the loop cuts them), then commits
/// the same batches to a fresh SQLite sink and to a fresh PostgreSQL sink, each timed alone:
/// the sinks' own rates on the same traffic, and their ratio.
fn sinks_compared(
    log: &EmbeddedLog,
    dir: &Path,
    sources: &HashMap<String, SourceContext>,
    url: &str,
    pushes: usize,
) -> anyhow::Result<serde_json::Value> {
    let batch_records = NormalizerConfig::default().max_batch_records;
    let mut taken = 0;
    let snapshot = LogSnapshot::open(&log.settings().path)?;
    let mut batches = Vec::new();
    let mut events = 0u64;
    for partition in 0..snapshot.partitions() {
        let (mut next, end) = snapshot.bounds(partition)?;
        while next < end && taken < pushes {
            let chunk = snapshot.read_each(partition, next, batch_records)?;
            let Some(last) = chunk.last() else { break };
            next = last.position().offset + 1;
            taken += chunk.len();
            let mut items = Vec::with_capacity(chunk.len());
            for record in &chunk {
                if let ReadRecord::Decoded(stored) = record {
                    let item = map_record(sources, stored);
                    if let SinkItem::Push { events: list, .. } = &item {
                        events += list.len() as u64;
                    }
                    items.push(item);
                }
            }
            batches.push(SinkBatch {
                consumer: "normalizer".to_owned(),
                offsets: vec![(partition, next)],
                items,
            });
        }
    }
    let timed = |commit: &mut dyn FnMut(&SinkBatch) -> anyhow::Result<()>| -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let cpu_started = own_cpu_time();
        for batch in &batches {
            commit(batch)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(json!({
            "seconds": seconds,
            "cpu_seconds": (own_cpu_time() - cpu_started).as_secs_f64(),
            "events_per_second": events as f64 / seconds,
        }))
    };
    let db_path = dir.join("sinks-compared.db");
    let _ = std::fs::remove_file(&db_path);
    let mut sqlite = SqliteSink::open(&SqliteSinkSettings::for_path(&db_path))?;
    let sqlite_figures = timed(&mut |batch| Ok(sqlite.commit_batch(batch).map(|_| ())?))?;
    drop(sqlite);
    let mut postgres = fresh_postgres(url)?;
    let postgres_figures = timed(&mut |batch| Ok(postgres.commit_batch(batch).map(|_| ())?))?;
    let ratio = postgres_figures["events_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / sqlite_figures["events_per_second"].as_f64().unwrap_or(1.0);
    Ok(json!({
        "pushes": taken,
        "batches": batches.len(),
        "events": events,
        "sqlite": sqlite_figures,
        "postgres": postgres_figures,
        "postgres_to_sqlite": ratio,
    }))
}

/// The live loop draining the log into both sinks (SQLite and PostgreSQL), from empty.
fn drain_both(
    log: &Arc<EmbeddedLog>,
    dir: &Path,
    sources: HashMap<String, SourceContext>,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    let db_path = dir.join("drain-both.db");
    let _ = std::fs::remove_file(&db_path);
    let postgres = fresh_postgres(url)?;
    drop(postgres);
    let settings = NormalizerConfig::default()
        .validate()
        .map_err(anyhow::Error::msg)?;
    let projections = ProjectionSettings {
        sqlite: Some(SqliteSinkSettings::for_path(&db_path)),
        postgres: PostgresSinkConfig {
            url: Some(url.to_owned()),
            sslmode: SslMode::Disable,
            ..PostgresSinkConfig::default()
        }
        .validate()?,
    };
    let started = Instant::now();
    let cpu_started = own_cpu_time();
    let sinks = ProjectionSinks::open(&projections)?;
    let mut normalizer = Normalizer::new(
        Arc::clone(log),
        sinks,
        sources,
        settings,
        &dir.join("attempts-both"),
    )?;
    let records = normalizer.drain()?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (own_cpu_time() - cpu_started).as_secs_f64();
    drop(normalizer);
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let events: i64 = client.query_one("SELECT count(*) FROM events", &[])?.get(0);
    Ok(json!({
        "records": records,
        "events": events,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "events_per_second": events as f64 / seconds,
        "memory": own_memory(),
    }))
}
