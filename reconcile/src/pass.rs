//! One reconciliation pass over a span of time.
//!
//! Guarantee: every CDR the API returns for the span whose call has no `call.cdr` event in
//! the sink is appended to the raw log, and a pass reports success only when every query and
//! every append succeeded. A pass that fails part way appends nothing twice that matters: what
//! it appended is mapped by the normal path, and the next pass finds it in the sink (or, if the
//! normalizer has not reached it yet, appends it again and the dedupe key drops the copy).
//!
//! A reconciler remembers the calls it backfilled for [`REMEMBER_BACKFILLED`] (in memory, at
//! most [`MAX_REMEMBERED`]) and does not append them again while they are not in the sink:
//! a backfill waiting behind the normalizer's lag, or one the mapper dead-letters (it stays a
//! dead letter, `callhook dead-letters`), would otherwise be appended and counted as missing
//! again at every pass. After a restart such a call is appended once more.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use callhook_rawlog::{AppendError, LogAppender};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::backfill::{call_id, now_millis, push_body, raw_record};
use crate::client::{ApiError, CdrClient, CdrPage};
use crate::config::{ReconcileSettings, MAX_PAGE_SIZE};
use crate::known::{self, KnownError};
use crate::rate::{bucket_for, TokenBucket};
use crate::telemetry::{ApiRequestFailed, PassCompleted, SourceMetrics};
use crate::windows::{split, QueryWindow};

/// Attempts of one request that the API refused for the rate limit.
const RATE_LIMIT_ATTEMPTS: u32 = 5;
/// The first wait after a rate-limit answer; doubled per attempt, at most a minute.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(5);
/// How long a backfilled call is not appended again.
pub const REMEMBER_BACKFILLED: Duration = Duration::from_secs(24 * 3600);
/// The most backfilled calls remembered (about 100 bytes each).
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A query failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The sink could not be read.
    #[error(transparent)]
    Sink(#[from] KnownError),
    /// The raw log refused a backfilled record.
    #[error("cannot append a backfilled CDR: {0}")]
    Append(#[from] AppendError),
    /// The blocking sink read panicked or was cancelled.
    #[error("the sink read did not complete: {0}")]
    Join(String),
}

impl PassError {
    /// Returns true when the error is a configuration problem that retrying soon cannot fix.
    pub fn is_config(&self) -> bool {
        matches!(self, PassError::Api(error) if !error.is_transient())
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Records the API returned (each call counted once per pass).
    pub checked: u64,
    /// Records with no `call.cdr` event in the sink.
    pub missing: u64,
    /// Missing records appended to the raw log (0 in a dry run).
    pub backfilled: u64,
    /// Records still not in the sink that this reconciler backfilled before (not appended or
    /// counted as missing again).
    pub awaiting: u64,
    /// Records with no call id (neither `callUniqueId` nor `_id`): not checkable, skipped.
    pub without_call_id: u64,
    /// API requests sent (pages).
    pub requests: u64,
}

/// Reconciliation of one source.
pub struct Reconciler {
    settings: ReconcileSettings,
    client: CdrClient,
    bucket: Arc<TokenBucket>,
    sink_path: PathBuf,
    appender: Option<Arc<dyn LogAppender>>,
    metrics: SourceMetrics,
    backfilled: Mutex<HashMap<String, Instant>>,
}

impl Reconciler {
    /// Returns the reconciler of a source, reading `sink_path` and appending to `appender`
    /// (`None`: a dry run, which appends nothing). Fails only on a TLS set-up error.
    pub fn new(
        settings: ReconcileSettings,
        sink_path: PathBuf,
        appender: Option<Arc<dyn LogAppender>>,
    ) -> Result<Reconciler, String> {
        Ok(Reconciler {
            client: CdrClient::new(&settings)?,
            bucket: bucket_for(&settings.appkey, settings.requests_per_minute.get()),
            metrics: SourceMetrics::for_source(&settings.source),
            settings,
            sink_path,
            appender,
            backfilled: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the settings.
    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    /// Checks the calls started in `[since, until)` and backfills the missing CDRs.
    pub async fn run_pass(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<PassReport, PassError> {
        let mut report = PassReport::default();
        let mut seen = HashSet::new();
        self.lock_backfilled()
            .retain(|_, at| at.elapsed() < REMEMBER_BACKFILLED);
        let mut windows: VecDeque<QueryWindow> =
            split(since, until, self.settings.utc_offset).into();
        let page_size = self.settings.page_size.get();
        while let Some(window) = windows.pop_front() {
            let mut page = 1u32;
            loop {
                let result = self.fetch(window, page, &mut report).await?;
                if page == 1 && result.count > u64::from(MAX_PAGE_SIZE) {
                    // One query returns at most 10 000 records (error 6734): ask for halves.
                    if let Some((left, right)) = window.halves() {
                        windows.push_front(right);
                        windows.push_front(left);
                        break;
                    }
                }
                let received = result.records.len() as u64;
                self.check(result.records, &mut seen, &mut report).await?;
                if received == 0 || u64::from(page) * u64::from(page_size) >= result.count {
                    break;
                }
                page += 1;
            }
        }
        Ok(report)
    }

    /// One page, within the account's rate; a rate-limit answer drains the bucket and waits.
    async fn fetch(
        &self,
        window: QueryWindow,
        page: u32,
        report: &mut PassReport,
    ) -> Result<CdrPage, PassError> {
        let mut backoff = RATE_LIMIT_BACKOFF;
        let mut attempt = 1;
        loop {
            self.bucket.acquire().await;
            report.requests += 1;
            let result = self
                .client
                .page(
                    window.start,
                    window.end,
                    page,
                    self.settings.page_size.get(),
                )
                .await;
            match result {
                Ok(page) => return Ok(page),
                Err(error) => {
                    ApiRequestFailed {
                        metrics: &self.metrics,
                        error: &error,
                    }
                    .emit();
                    let limited = matches!(error, ApiError::RateLimited(_));
                    if !limited || attempt >= RATE_LIMIT_ATTEMPTS {
                        return Err(error.into());
                    }
                    self.bucket.drain();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
            }
        }
    }

    /// Checks one page's records against the sink and appends the missing ones.
    async fn check(
        &self,
        records: Vec<Map<String, Value>>,
        seen: &mut HashSet<String>,
        report: &mut PassReport,
    ) -> Result<(), PassError> {
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            let Some(id) = call_id(&record) else {
                report.without_call_id += 1;
                tracing::warn!(source = %self.settings.source, "a CDR of the query has no `callUniqueId` or `_id`: skipped");
                continue;
            };
            if seen.insert(id.clone()) {
                fresh.push((id, record));
            }
        }
        report.checked += fresh.len() as u64;
        self.metrics.checked.inc_by(fresh.len() as u64);
        let ids: Vec<String> = fresh.iter().map(|(id, _)| id.clone()).collect();
        let path = self.sink_path.clone();
        let source = self.settings.source.clone();
        // SQLite reads block: off the runtime's workers.
        let missing = tokio::task::spawn_blocking(move || known::missing(&path, &source, &ids))
            .await
            .map_err(|error| PassError::Join(error.to_string()))??;
        for ((id, record), is_missing) in fresh.into_iter().zip(missing) {
            if !is_missing {
                continue;
            }
            if self.lock_backfilled().contains_key(&id) {
                report.awaiting += 1;
                continue;
            }
            report.missing += 1;
            self.metrics.missing.inc();
            let Some(appender) = &self.appender else {
                continue;
            };
            let body = push_body(record, &id);
            let raw = raw_record(&self.settings.source, &body, now_millis());
            appender.append(id.clone(), raw).await?;
            report.backfilled += 1;
            self.metrics.backfilled.inc();
            let mut remembered = self.lock_backfilled();
            if remembered.len() < MAX_REMEMBERED {
                remembered.insert(id, Instant::now());
            }
        }
        Ok(())
    }

    fn lock_backfilled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.backfilled
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records a complete periodic pass (metrics and log).
    pub fn pass_completed(&self, report: &PassReport) {
        PassCompleted {
            metrics: &self.metrics,
            report,
        }
        .emit();
    }
}
