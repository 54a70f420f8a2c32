//! `callhook replay`: the raw log through the current mapping, into a new database, as a diff
//! against the live one, or applied to it in place.
//!
//! - `--into PATH`: rebuilds `events`, `calls`, `agents`, `dead_letters` (and the dedupe keys
//!   and consumer offsets, so the file can replace the live one) from every record the raw log
//!   holds. The live database is not touched.
//! - `--dry-run`: rebuilds into a scratch file beside the live database, prints what would
//!   change, and changes nothing.
//! - `--in-place`: the same, then applies the change to the live database.
//!
//! Safe beside a running `callhook serve`: the raw log is read through a read-only
//! connection (WAL readers never block the receiver), the replay covers only the records the
//! live normalizer had committed when it started (per partition, up to its stored offset), so
//! it never races the live loop for a record, and the in-place writes are short transactions
//! that bump each rewritten `calls` row's revision, which makes the running normalizer rebuild
//! its in-memory fold of that call instead of overwriting the change.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use callhook_normalizer::replay::{rebuild, RebuildStats, ReplayFilter};
use callhook_normalizer::MAPPING_VERSION;
use callhook_rawlog::embedded::LogSnapshot;
use callhook_sinks::sqlite::replay::{apply, diff, ApplyOutcome, ReplayDiff, ReplayScope};
use chrono::{DateTime, NaiveDateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::Settings;

/// Flags of `callhook replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Config file (TOML). Without one, every default applies.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the raw log and the database (default ./callhook-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Rebuild into this new database file.
    #[arg(long, conflicts_with = "in_place")]
    pub into: Option<PathBuf>,
    /// Apply the replay to the live database.
    #[arg(long)]
    pub in_place: bool,
    /// Print what would change in the live database and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only records of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only records received at or after this time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records received before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only the events of this call id.
    #[arg(long = "call", value_name = "CALL_ID")]
    pub call_id: Option<String>,
    /// Kafka mode: produce the replayed events to this topic (default: the `[sink.kafka]`
    /// events topic).
    #[arg(long, value_name = "TOPIC", conflicts_with_all = ["into", "in_place"])]
    pub to_topic: Option<String>,
}

/// Runs `callhook replay`.
pub fn run(args: ReplayArgs, settings: Settings) -> anyhow::Result<()> {
    let filter = ReplayFilter {
        source: args.source.clone(),
        since: args.since.as_deref().map(parse_time).transpose()?,
        until: args.until.as_deref().map(parse_time).transpose()?,
        call_id: args.call_id.clone(),
    };
    if let Some(kafka) = &settings.kafka {
        return crate::replay_kafka::run(&args, &settings, kafka, &filter);
    }
    if args.to_topic.is_some() {
        bail!("`--to-topic` replays the raw topic of Kafka mode (`[log] kind = \"kafka\"`); with the embedded raw log use `--into`, `--dry-run` or `--in-place`");
    }
    if args.into.is_none() && !args.in_place && !args.dry_run {
        bail!("say what to replay into: `--into PATH`, `--dry-run` or `--in-place`");
    }
    let snapshot = LogSnapshot::open(&settings.log.path)
        .with_context(|| format!("cannot open the raw log `{}`", settings.log.path.display()))?;
    let live = settings.sqlite.path.clone();
    let group = settings.normalizer.consumer_group.clone();
    let mut stops = Vec::new();
    let live_offsets = stored_offsets(&live, &group)?;
    for partition in 0..snapshot.partitions() {
        let (_, next) = snapshot.bounds(partition)?;
        let stop = match args.into {
            // A new database takes everything the log holds now.
            Some(_) => next,
            // Compared with the live one: what the live normalizer had committed.
            None => live_offsets.get(&partition).copied().unwrap_or(0).min(next),
        };
        stops.push(stop);
    }
    let (target, scratch) = match &args.into {
        Some(into) if into.exists() => bail!(
            "`{}` exists; replay --into writes a new file",
            into.display()
        ),
        Some(into) => (into.clone(), false),
        None => (scratch_path(&live), true),
    };
    let progress = progress_bar(args.json);
    let mut report = |done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    };
    let stats = rebuild(
        snapshot,
        stops,
        &target,
        settings.map_sources.clone(),
        &group,
        &filter,
        &mut report,
    )
    .context("the replay failed")?;
    progress.finish_and_clear();
    let result = compare_and_apply(&args, &filter, &stats, &live, &target);
    if scratch {
        let _ = std::fs::remove_file(&target);
    }
    let (diff, applied) = result?;
    print_summary(&args, &stats, &target, diff.as_ref(), applied.as_ref());
    Ok(())
}

/// The diff (dry run, in place) and what applying it wrote (in place).
fn compare_and_apply(
    args: &ReplayArgs,
    filter: &ReplayFilter,
    stats: &RebuildStats,
    live: &Path,
    rebuilt: &Path,
) -> anyhow::Result<(Option<ReplayDiff>, Option<ApplyOutcome>)> {
    if args.into.is_some() {
        return Ok((None, None));
    }
    if !live.exists() {
        bail!(
            "there is no live database at `{}` to compare with",
            live.display()
        );
    }
    let scope = ReplayScope {
        source: filter.source.clone(),
        call_id: filter.call_id.clone(),
        received_from: filter
            .since
            .or(stats.received_from)
            .unwrap_or(DateTime::UNIX_EPOCH),
        received_to: filter
            .until
            .map(|until| until - chrono::TimeDelta::nanoseconds(1))
            .or(stats.received_to)
            .unwrap_or(DateTime::UNIX_EPOCH),
    };
    let diff = diff(live, rebuilt, &scope).context("cannot compare with the live database")?;
    let applied = match args.in_place && !args.dry_run {
        true => Some(apply(live, rebuilt, &scope).context("applying the replay failed")?),
        false => None,
    };
    Ok((Some(diff), applied))
}

/// The live normalizer's stored offsets (none when there is no live database).
fn stored_offsets(live: &Path, group: &str) -> anyhow::Result<HashMap<u32, u64>> {
    if !live.exists() {
        return Ok(HashMap::new());
    }
    let connection = rusqlite::Connection::open_with_flags(
        live,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut statement = connection
        .prepare("SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ?1")?;
    let offsets = statement
        .query_map([group], |row| {
            Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?))
        })?
        .map(|row| row.map(|(partition, next)| (partition, u64::try_from(next).unwrap_or(0))))
        .collect::<rusqlite::Result<_>>()?;
    Ok(offsets)
}

/// A scratch file beside the live database (same file system, removed afterwards).
fn scratch_path(live: &Path) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(format!(".replay-{}", std::process::id()));
    PathBuf::from(name)
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

/// A progress bar with rate and ETA on a terminal; hidden otherwise or with `--json`.
pub fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("replay {bar:40} {pos}/{len} records  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn print_summary(
    args: &ReplayArgs,
    stats: &RebuildStats,
    target: &Path,
    diff: Option<&ReplayDiff>,
    applied: Option<&ApplyOutcome>,
) {
    if args.json {
        let summary = json!({
            "mapping_version": MAPPING_VERSION,
            "into": args.into.as_ref().map(|_| target.display().to_string()),
            "rebuild": stats,
            "diff": diff,
            "applied": applied,
        });
        println!("{summary}");
        return;
    }
    println!(
        "replayed {} of {} records through mapping version {} in {:.1} s: {} events, {} duplicates, {} dead letters",
        stats.records_replayed,
        stats.records_read,
        callhook_normalizer::mapping_version(),
        stats.seconds,
        stats.events,
        stats.duplicates,
        stats.dead_letters
    );
    if args.into.is_some() {
        println!("new database: {}", target.display());
    }
    if let Some(diff) = diff {
        print!("{}", render_diff(diff));
    }
    if let Some(applied) = applied {
        println!(
            "applied: {} events added, {} updated, {} removed; {} calls rewritten; {} agents recomputed; {} dead letters resolved, {} written",
            applied.events_added,
            applied.events_updated,
            applied.events_removed,
            applied.calls_rewritten,
            applied.agents_recomputed,
            applied.dead_letters_resolved,
            applied.dead_letters_written
        );
    }
}

/// The human form of a diff.
pub fn render_diff(diff: &ReplayDiff) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if diff.is_empty() {
        out.push_str("no change\n");
        return out;
    }
    if !diff.events.is_empty() {
        let _ = writeln!(
            out,
            "events         {:>24} {:>12} {:>8} {:>8} {:>8}",
            "type", "source", "added", "removed", "changed"
        );
        for counts in &diff.events {
            let _ = writeln!(
                out,
                "               {:>24} {:>12} {:>8} {:>8} {:>8}",
                counts.event_type, counts.source, counts.added, counts.removed, counts.changed
            );
        }
    }
    for (before, after, events) in &diff.mapping_versions {
        if before != after {
            let show = |version: &Option<i64>| version.map_or("none".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "mapping version {} -> {}: {events} events",
                show(before),
                show(after)
            );
        }
    }
    let columns: Vec<String> = diff
        .call_columns_changed
        .iter()
        .map(|(column, count)| format!("{column} {count}"))
        .collect();
    let _ = writeln!(
        out,
        "calls: {} changed ({}), {} added, {} removed",
        diff.calls_changed,
        columns.join(", "),
        diff.calls_added,
        diff.calls_removed
    );
    for example in &diff.call_examples {
        let changes: Vec<String> = example
            .changes
            .iter()
            .map(|change| {
                let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
                format!(
                    "{} {} -> {}",
                    change.column,
                    show(&change.before),
                    show(&change.after)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  e.g. {}/{}: {}",
            example.source,
            example.call_id,
            changes.join("; ")
        );
    }
    let now_mapping: u64 = diff.dead_letters_now_mapping.values().sum();
    let new: u64 = diff.dead_letters_new.values().sum();
    let _ = writeln!(
        out,
        "dead letters: {now_mapping} would now map {:?}; {new} new {:?}; {} change reason",
        diff.dead_letters_now_mapping, diff.dead_letters_new, diff.dead_letters_reason_changed
    );
    out
}
