//! `callhook bench-console` (hidden): server-side render times of the console's pages against
//! a large database, with the same functions the console serves them with. It fills a fresh
//! database with `--calls` calls (three events each, spread over 30 days, the newest 200 still
//! in progress), 1,000 agents and 10,000 dead letters, unless `--db` already holds one, then
//! renders each page `--rounds` times and prints p50 / p99 / max in milliseconds.
//! `bench/run.sh console` runs it on a release build.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{Duration, Utc};
use rusqlite::{params, Connection};

use super::{pages, queries};
use crate::config::{Config, Settings};

/// `callhook bench-console` arguments.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Directory of the benchmark database (`callhook.db`); filled when it has none.
    #[arg(long, default_value = "target/bench-console")]
    data_dir: PathBuf,
    /// Calls to fill it with.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Renders per page.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
}

/// One page render; returns the bytes rendered.
type Render<'a> = Box<dyn Fn() -> anyhow::Result<usize> + 'a>;

const SOURCES: [&str; 3] = ["7moor", "coocenter", "uincall"];
const AGENTS: u64 = 1000;

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = Config {
        data_dir: args.data_dir.clone(),
        ..Config::default()
    };
    let settings = config.validate()?;
    std::fs::create_dir_all(&args.data_dir)?;
    if !settings.sqlite.path.exists() {
        let started = Instant::now();
        fill(&settings, args.calls)?;
        println!(
            "filled {} with {} calls in {:.1} s",
            settings.sqlite.path.display(),
            args.calls,
            started.elapsed().as_secs_f64()
        );
    }
    let connection = queries::open(&settings.sqlite.path)?;
    let calls: i64 = connection.query_row("SELECT COUNT(*) FROM calls", [], |row| row.get(0))?;
    let events: i64 = connection.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))?;
    println!("database: {calls} calls, {events} events");
    let sources: Vec<String> = SOURCES.map(String::from).to_vec();
    // A call in the middle of the range, on source 0 (`7moor`): sources go round-robin.
    let old_call = format!("call-{}", args.calls / 2 / 3 * 3);
    let caller = caller_of(args.calls - 10);
    let before = queries::encode_time(&(Utc::now() - Duration::days(15)));
    let cases: Vec<(&str, Render<'_>)> = vec![
        (
            "live (/api/live)",
            Box::new(|| {
                let live = queries::live_calls(&connection, Utc::now())?;
                Ok(serde_json::to_string(&live)?.len())
            }),
        ),
        (
            "calls, first page",
            Box::new(|| Ok(pages::calls_page(&connection, "", &sources)?.body.len())),
        ),
        (
            "calls, page at day 15",
            Box::new(|| {
                let query = serde_urlencoded::to_string([("before", before.as_str())])?;
                Ok(pages::calls_page(&connection, &query, &sources)?.body.len())
            }),
        ),
        (
            "calls by call id",
            Box::new(|| {
                Ok(
                    pages::calls_page(&connection, &format!("call={old_call}"), &sources)?
                        .body
                        .len(),
                )
            }),
        ),
        (
            "calls by agent",
            Box::new(|| {
                Ok(pages::calls_page(&connection, "agent=a0042", &sources)?
                    .body
                    .len())
            }),
        ),
        (
            "calls by number (6 h)",
            Box::new(|| {
                Ok(
                    pages::calls_page(&connection, &format!("number={caller}"), &sources)?
                        .body
                        .len(),
                )
            }),
        ),
        (
            "call timeline",
            Box::new(|| {
                Ok(
                    pages::call_page(&connection, &format!("source=7moor&id={old_call}"))?
                        .body
                        .len(),
                )
            }),
        ),
        (
            "agents board",
            Box::new(|| Ok(pages::agents_page(&connection, "")?.body.len())),
        ),
        (
            "agent changes",
            Box::new(|| {
                Ok(pages::agents_page(&connection, "source=7moor&agent=a0042")?
                    .body
                    .len())
            }),
        ),
        (
            "dead letters",
            Box::new(|| Ok(pages::dead_letters_page(&settings, "", "csrf")?.len())),
        ),
    ];
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>9}",
        "page", "p50 ms", "p99 ms", "max ms", "bytes"
    );
    for (name, render) in &cases {
        let mut times = Vec::with_capacity(args.rounds);
        let mut bytes = 0;
        for _ in 0..args.rounds {
            let started = Instant::now();
            bytes = render().with_context(|| format!("rendering {name}"))?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:<26} {:>8.2} {:>8.2} {:>8.2} {bytes:>9}",
            at(0.5),
            at(0.99),
            times[times.len() - 1]
        );
    }
    Ok(())
}

fn caller_of(call: u64) -> String {
    format!("138{:08}", call % 100_000_000)
}

/// Creates the sink's schema (through the sink itself) and bulk-inserts the rows.
fn fill(settings: &Settings, calls: u64) -> anyhow::Result<()> {
    drop(callhook_sinks::SqliteSink::open(&settings.sqlite)?);
    let mut connection = Connection::open(&settings.sqlite.path)?;
    connection.pragma_update(None, "synchronous", "OFF")?;
    let now = Utc::now();
    let span_seconds = 30 * 24 * 3600;
    let transaction = connection.transaction()?;
    {
        let mut call_insert = transaction.prepare(
            "INSERT INTO calls (source, call_id, vendor, direction, caller, callee, agent_number, \
             agent_name, queue, first_event_at, ringing_at, answered_at, ended_at, disposition, \
             talk_seconds, correlation, events_count, last_event_type, last_event_at) \
             VALUES (?1, ?2, ?1, 'inbound', ?3, '4008001234', ?4, ?5, 'support', ?6, ?6, ?7, ?8, \
             ?9, ?10, 'call_id', 3, ?11, ?12)",
        )?;
        let mut event_insert = transaction.prepare(
            "INSERT INTO events (id, type, source, subject, time, timesource, specversion, \
             datacontenttype, dataschema, source_name, call_id, received_at, data) \
             VALUES (?1, ?2, 'callhook/bench', ?3, ?4, 'vendor', '1.0', 'application/json', \
             'callhook/v1', ?5, ?3, ?4, ?6)",
        )?;
        for call in 0..calls {
            let source = SOURCES[(call % 3) as usize];
            let call_id = format!("call-{call}");
            let started =
                now - Duration::seconds(span_seconds - (span_seconds * call as i64) / calls as i64);
            let answered = started + Duration::seconds(8);
            let ended = answered + Duration::seconds(95);
            let in_progress = call + 200 >= calls;
            let agent = format!("a{:04}", call % AGENTS);
            let (ended_at, disposition, talk, last) = match in_progress {
                true => (None, None, None, "call.answered"),
                false => (
                    Some(queries::encode_time(&ended)),
                    Some("answered"),
                    Some(95),
                    "call.ended",
                ),
            };
            let first = queries::encode_time(&started);
            call_insert.execute(params![
                source,
                call_id,
                caller_of(call),
                agent,
                format!("Agent {agent}"),
                first,
                queries::encode_time(&answered),
                ended_at,
                disposition,
                talk,
                last,
                ended_at.clone().unwrap_or_else(|| first.clone()),
            ])?;
            for (ordinal, (event_type, time)) in [
                ("call.ringing", started),
                ("call.answered", answered),
                ("call.ended", ended),
            ]
            .into_iter()
            .enumerate()
            {
                if in_progress && ordinal == 2 {
                    continue;
                }
                let data = format!(
                    "{{\"call_id\":\"{call_id}\",\"source_name\":\"{source}\",\"caller\":{{\"raw\":\"{}\"}}}}",
                    caller_of(call)
                );
                event_insert.execute(params![
                    format!("{call_id}-{ordinal}"),
                    event_type,
                    call_id,
                    queries::encode_time(&time),
                    source,
                    data,
                ])?;
            }
        }
        let mut agent_insert = transaction.prepare(
            "INSERT INTO agents (source, agent_number, status, agent_name, status_at, event_id) \
             VALUES ('7moor', ?1, 'idle', ?2, ?3, ?4)",
        )?;
        for agent in 0..AGENTS {
            let number = format!("a{agent:04}");
            agent_insert.execute(params![
                number,
                format!("Agent {number}"),
                queries::encode_time(&now),
                format!("agent-event-{agent}")
            ])?;
        }
        let mut letter_insert = transaction.prepare(
            "INSERT INTO dead_letters (raw_ref, source, reason, detail, received_at) \
             VALUES (?1, '7moor', 'unknown_event', 'callEvent `x` is not known', ?2)",
        )?;
        for letter in 0..10_000u64 {
            let at = now - Duration::seconds(letter as i64 * 60);
            letter_insert.execute(params![format!("0:{letter}"), queries::encode_time(&at)])?;
        }
    }
    transaction.commit()?;
    // No ANALYZE: the sink never runs one, so the plans measured are the plans served.
    Ok(())
}
