//! `callhook dead-letters`: list the dead letters, show one with its raw push as received, and
//! redrive them through the current mapping (beside a running `serve`: the raw log is read
//! read-only and the sink is written in short transactions, like the normalizer's own).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use callhook_normalizer::pipeline::records::map_record;
use callhook_rawlog::embedded::{LogSnapshot, ReadRecord};
use callhook_rawlog::{header_value_bytes, Position};
use callhook_sinks::sqlite::dead_letters::{DeadLetterFilter, RedriveOutcome, StoredDeadLetter};
use callhook_sinks::SqliteSink;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::json;

use crate::config::Settings;

/// Dead letters redriven per transaction.
const REDRIVE_CHUNK: usize = 500;

/// `callhook dead-letters ...`.
#[derive(clap::Args)]
pub struct DeadLettersArgs {
    /// Config file (TOML). Without one, every default applies.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Directory of the raw log and the database (default ./callhook-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

/// What to do with the dead letters.
#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Print a table of dead letters (open ones, newest first).
    List(Selection),
    /// Print one dead letter and its raw push as received.
    Show {
        /// The dead letter's raw record, `partition:offset`.
        raw_ref: String,
    },
    /// Map the selected dead letters again with the current mapping: those that map now get
    /// their events and are resolved; the rest stay, with the reason they get now.
    Redrive(Selection),
}

/// Which dead letters.
#[derive(clap::Args)]
pub struct Selection {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this reason code.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those received at or after this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this raw record.
    #[arg(long)]
    pub raw_ref: Option<String>,
    /// Resolved dead letters too (list only).
    #[arg(long)]
    pub all: bool,
    /// At most this many (list only; default 100).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Selection {
    fn filter(&self, list: bool) -> anyhow::Result<DeadLetterFilter> {
        Ok(DeadLetterFilter {
            source: self.source.clone(),
            reason: self.reason.clone(),
            since: self.since.as_deref().map(parse_time).transpose()?,
            raw_ref: self.raw_ref.clone(),
            include_resolved: list && self.all,
            limit: match list {
                true => Some(self.limit.unwrap_or(100)),
                false => None,
            },
        })
    }
}

/// Runs `callhook dead-letters`.
pub fn run(args: DeadLettersArgs, settings: Settings) -> anyhow::Result<()> {
    if !settings.sqlite.path.exists() {
        bail!(
            "there is no database at `{}`",
            settings.sqlite.path.display()
        );
    }
    let mut sink = SqliteSink::open(&settings.sqlite).context("cannot open the database")?;
    match args.command {
        DeadLettersCommand::List(selection) => {
            let letters = sink.dead_letters(&selection.filter(true)?)?;
            match selection.json {
                true => println!("{}", serde_json::to_string(&letters)?),
                false => print!("{}", table(&letters)),
            }
        }
        DeadLettersCommand::Show { raw_ref } => {
            print!("{}", show_text(&settings, &sink, &raw_ref)?);
        }
        DeadLettersCommand::Redrive(selection) => {
            let outcome = redrive(&settings, &mut sink, &selection.filter(false)?)?;
            match selection.json {
                true => println!("{}", json!(outcome)),
                false => println!(
                    "redriven: {} resolved ({} events stored), {} still dead ({} with a new reason), {} without their raw record",
                    outcome.0.resolved,
                    outcome.0.events_inserted,
                    outcome.0.still_dead,
                    outcome.0.reason_changed,
                    outcome.1
                ),
            }
        }
    }
    Ok(())
}

/// Returns one dead letter and its raw push as received, as `show` prints it (the console
/// shows the same text, escaped for HTML on top).
pub(crate) fn show_text(
    settings: &Settings,
    sink: &SqliteSink,
    raw_ref: &str,
) -> anyhow::Result<String> {
    let filter = DeadLetterFilter {
        raw_ref: Some(raw_ref.to_owned()),
        include_resolved: true,
        ..DeadLetterFilter::default()
    };
    let Some(letter) = sink.dead_letters(&filter)?.pop() else {
        bail!("no dead letter with raw_ref `{raw_ref}`");
    };
    let record = read_raw(settings, raw_ref)?;
    Ok(show(&letter, record.as_ref()))
}

/// Redrives the open dead letters `filter` selects; returns the outcome and how many had no
/// raw record left (retention) to map. The console's redrive calls it too.
pub(crate) fn redrive(
    settings: &Settings,
    sink: &mut SqliteSink,
    filter: &DeadLetterFilter,
) -> anyhow::Result<(RedriveOutcome, u64)> {
    let snapshot = open_raw_log(settings)?;
    let letters = sink.dead_letters(filter)?;
    let mut total = RedriveOutcome::default();
    let mut missing = 0;
    for chunk in letters.chunks(REDRIVE_CHUNK) {
        let mut redriven = Vec::new();
        for letter in chunk {
            match snapshot.read_at(parse_raw_ref(&letter.raw_ref)?)? {
                Some(ReadRecord::Decoded(stored)) => {
                    let item = map_record(&settings.map_sources, &stored);
                    redriven.push((letter.raw_ref.clone(), item));
                }
                // Still undecodable: nothing to map.
                Some(ReadRecord::Undecodable(_)) => total.still_dead += 1,
                None => missing += 1,
            }
        }
        let outcome = sink.redrive(&redriven)?;
        total.resolved += outcome.resolved;
        total.events_inserted += outcome.events_inserted;
        total.still_dead += outcome.still_dead;
        total.reason_changed += outcome.reason_changed;
    }
    Ok((total, missing))
}

fn open_raw_log(settings: &Settings) -> anyhow::Result<LogSnapshot> {
    if settings.kafka.is_some() {
        bail!("in Kafka mode the raw records are on the raw topic; read them with a consumer of that topic (the dead letter topic holds each one's raw bytes)");
    }
    LogSnapshot::open(&settings.log.path)
        .with_context(|| format!("cannot open the raw log `{}`", settings.log.path.display()))
}

fn read_raw(settings: &Settings, raw_ref: &str) -> anyhow::Result<Option<ReadRecord>> {
    Ok(open_raw_log(settings)?.read_at(parse_raw_ref(raw_ref)?)?)
}

/// Parses an embedded raw log's `partition:offset`.
fn parse_raw_ref(raw_ref: &str) -> anyhow::Result<Position> {
    let parsed = raw_ref.split_once(':').and_then(|(partition, offset)| {
        Some(Position {
            partition: partition.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    });
    parsed.with_context(|| {
        format!("`{raw_ref}` is not a raw_ref of the embedded raw log (partition:offset)")
    })
}

fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map(|naive| naive.and_utc())
        .with_context(|| {
            format!("`{text}` is not a time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC)")
        })
}

/// The table `list` prints.
fn table(letters: &[StoredDeadLetter]) -> String {
    let mut out = format!(
        "{:<14} {:<12} {:<20} {:<24} {:<9} detail\n",
        "raw_ref", "source", "reason", "received_at", "state"
    );
    for letter in letters {
        let state = letter
            .resolution
            .as_deref()
            .map_or("open".to_owned(), |how| format!("resolved ({how})"));
        let detail: String = letter.detail.chars().take(60).collect();
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:<20} {:<24} {:<9} {}",
            letter.raw_ref,
            letter.source,
            letter.reason,
            letter.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            state,
            escape(detail.as_bytes())
        );
    }
    if letters.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// One dead letter and its raw push as received, every byte shown safely.
fn show(letter: &StoredDeadLetter, record: Option<&ReadRecord>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "raw_ref      {}", letter.raw_ref);
    let _ = writeln!(out, "source       {}", letter.source);
    let _ = writeln!(out, "reason       {}", letter.reason);
    let _ = writeln!(out, "detail       {}", escape(letter.detail.as_bytes()));
    let _ = writeln!(
        out,
        "received_at  {}",
        callhook_schemas::canonical_time(&letter.received_at)
    );
    match (&letter.resolved_at, &letter.resolution) {
        (Some(at), Some(how)) => {
            let _ = writeln!(
                out,
                "state        resolved by {how} at {}",
                callhook_schemas::canonical_time(at)
            );
        }
        _ => out.push_str("state        open\n"),
    }
    match record {
        Some(ReadRecord::Decoded(stored)) => {
            let raw = &stored.record;
            let query = raw
                .query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\n{} /hooks/{}{}",
                raw.method,
                raw.source,
                escape(query.as_bytes())
            );
            let stored_content_type = raw.headers.iter().any(|(name, _)| name == "content-type");
            if let Some(content_type) = raw.content_type.as_ref().filter(|_| !stored_content_type) {
                let _ = writeln!(
                    out,
                    "content-type: {}",
                    escape(&header_value_bytes(content_type))
                );
            }
            for (name, value) in &raw.headers {
                let _ = writeln!(
                    out,
                    "{}: {}",
                    escape(name.as_bytes()),
                    escape(&header_value_bytes(value))
                );
            }
            let _ = writeln!(
                out,
                "remote {} request {}\n\nbody ({} bytes):\n{}",
                raw.remote_addr.as_deref().unwrap_or("-"),
                raw.request_id,
                raw.body.len(),
                escape(&raw.body)
            );
        }
        Some(ReadRecord::Undecodable(kept)) => {
            let _ = writeln!(
                out,
                "\nthe raw record's metadata does not decode ({}); body ({} bytes):\n{}",
                kept.detail,
                kept.body.len(),
                escape(&kept.body)
            );
        }
        None => out.push_str("\nthe raw log no longer holds this record (retention)\n"),
    }
    out
}

/// Shows bytes as text: UTF-8 as is, except control characters (a pushed escape sequence must
/// not reach the terminal), and every other byte as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\n' | '\t' => out.push(ch),
                '\\' => out.push_str("\\\\"),
                ch if ch.is_control() => {
                    let _ = write!(out, "\\u{{{:04x}}}", ch as u32);
                }
                ch => out.push(ch),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape_shows_invalid_bytes_and_control_characters_safely() {
        assert_eq!(escape("张三 ok\n".as_bytes()), "张三 ok\n");
        assert_eq!(escape(b"a\xff\xfeb"), "a\\xFF\\xFEb");
        assert_eq!(escape(b"\x1b[31mred"), "\\u{001b}[31mred");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn test_raw_refs_of_the_embedded_log() {
        assert_eq!(
            parse_raw_ref("3:42").unwrap(),
            Position {
                partition: 3,
                offset: 42
            }
        );
        assert!(parse_raw_ref("callhook.raw:3:42").is_err());
        assert!(parse_raw_ref("x").is_err());
    }
}
