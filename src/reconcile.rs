//! `callhook reconcile`: one reconciliation pass of a 7moor source over a span, then a summary.
//!
//! It appends backfilled CDRs to the raw log, which has one writer: run it with `serve`
//! stopped (it refuses while the configured admin listener answers), or use `--dry-run`, which
//! only reads (the API and the sink) and is safe beside a running `serve`. The normalizer maps
//! what it appended at its next start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use callhook_reconcile::Reconciler;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::config::Settings;
use crate::stages::log::RawLog;

/// Flags of `callhook reconcile`.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The 7moor source (it needs a `[sources.<name>.reconcile]` table).
    #[arg(long)]
    pub source: String,
    /// Start of the span (calls started at or after it): RFC 3339 (`2026-12-01T00:00:00Z`),
    /// or `YYYY-MM-DD[ HH:MM:SS]` in the source's `utc_offset`.
    #[arg(long)]
    pub since: String,
    /// End of the span (exclusive), in the same forms. Default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// Query and compare only; append nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Config file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the raw log and the database (default ./callhook-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Runs one pass and prints what it found.
pub fn run(args: ReconcileArgs, settings: Settings) -> anyhow::Result<()> {
    let Some(source) = settings.reconcile.get(&args.source).cloned() else {
        let configured: Vec<&String> = settings.reconcile.keys().collect();
        bail!(
            "source `{}` has no `[sources.{}.reconcile]` (reconciled sources: {configured:?})",
            args.source,
            args.source
        );
    };
    let since = parse_time(&args.since, source.utc_offset).context("in `--since`")?;
    let until = match &args.until {
        Some(text) => parse_time(text, source.utc_offset).context("in `--until`")?,
        None => Utc::now(),
    };
    if until <= since {
        bail!("`--until` ({until}) is not after `--since` ({since})");
    }
    if !args.dry_run {
        refuse_beside_a_running_callhook(&settings)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let log = match args.dry_run {
            true => None,
            false => Some(RawLog::open(&settings).await?),
        };
        let reconciler = Reconciler::new(
            source,
            settings.sqlite.path.clone(),
            log.as_ref().map(RawLog::appender),
        )
        .map_err(anyhow::Error::msg)?;
        let result = reconciler.run_pass(since, until).await;
        if let Some(log) = log {
            log.close().await?;
        }
        let report = result.with_context(|| format!("reconciling `{}`", args.source))?;
        println!(
            "source `{}` from {since} to {until}: {} CDRs checked, {} missing, {} backfilled{}",
            args.source,
            report.checked,
            report.missing,
            report.backfilled,
            if args.dry_run {
                " (dry run: nothing appended)"
            } else {
                ""
            }
        );
        if report.without_call_id > 0 {
            println!(
                "{} CDRs had no call id and were skipped",
                report.without_call_id
            );
        }
        Ok(())
    })
}

/// Refuses when the configured admin listener answers: a running `serve` or `ingest` owns the
/// raw log (the embedded log and the Kafka spool have one writer).
fn refuse_beside_a_running_callhook(settings: &Settings) -> anyhow::Result<()> {
    let connected =
        std::net::TcpStream::connect_timeout(&settings.admin_listen, Duration::from_millis(300));
    if connected.is_ok() {
        bail!(
            "a callhook seems to be running (its admin listener {} answers) and owns the raw log: \
             stop it first, let its own reconciliation (`[sources.<name>.reconcile]`) do the work, \
             or use `--dry-run`",
            settings.admin_listen
        );
    }
    Ok(())
}

/// Parses RFC 3339, or `YYYY-MM-DD[ HH:MM:SS]` in `zone`.
fn parse_time(text: &str, zone: FixedOffset) -> anyhow::Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| anyhow::anyhow!("`{text}` is not RFC 3339 or `YYYY-MM-DD[ HH:MM:SS]`"))?;
    match zone.from_local_datetime(&local).single() {
        Some(time) => Ok(time.with_timezone(&Utc)),
        None => bail!("`{text}` is not a time in {zone}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_time_forms() {
        let china = FixedOffset::east_opt(8 * 3600).unwrap();
        let utc = |text: &str| parse_time(text, china).unwrap().to_rfc3339();
        assert_eq!(utc("2021-03-25T11:54:44Z"), "2021-03-25T11:54:44+00:00");
        assert_eq!(utc("2021-03-25 19:54:44"), "2021-03-25T11:54:44+00:00");
        assert_eq!(utc("2021-03-25"), "2021-03-24T16:00:00+00:00");
        assert!(parse_time("yesterday", china).is_err());
    }
}
