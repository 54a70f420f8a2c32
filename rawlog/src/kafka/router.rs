//! The route of each append — straight to Kafka, or into the spool — and the buffer that keeps
//! call order when direct sends fail. The reasoning is in the module doc of [`super`].
//!
//! Everything here runs on the async runtime and holds the router lock only for
//! non-blocking work: handing a record to librdkafka (it copies it into its queue) or to the
//! spool (a `try_send` into its writer queue), and bookkeeping. The purge of the direct
//! producer may block briefly, so it runs on the blocking pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer, PurgeConfig};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::producer::{self, classify, SendFailure};
use super::telemetry::{
    AppendRefused, DirectDelivered, DirectFailed, RecordRejected, Spooled, SpoolingEnded,
    SpoolingStarted,
};
use crate::embedded::EmbeddedLog;
use crate::{AppendError, BoxFuture, LogAppender, Position, RawRecord};

/// Where appends go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Straight to Kafka; the spool is empty and nothing is on its way into it.
    Direct,
    /// Into the spool, until the forwarder drained it.
    Spooling,
}

/// One entry of the ordering buffer, keyed by call order.
enum Slot {
    /// A direct send waiting for its delivery report.
    InFlight,
    /// Settled without needing the spool (delivered, or rejected by Kafka).
    Done,
    /// To be handed to the spool once every earlier entry is settled.
    ToSpool(Box<SpoolRequest>),
}

struct SpoolRequest {
    key: String,
    record: RawRecord,
    /// Whether librdkafka's size check already passed for this record.
    size_checked: bool,
    reply: oneshot::Sender<BoxFuture<'static, Result<Position, AppendError>>>,
}

struct RouterState {
    mode: Mode,
    direct: FutureProducer,
    next_ticket: u64,
    /// Direct sends not yet settled and appends waiting behind them, in call order.
    waiting: BTreeMap<u64, Slot>,
    spooling_since: Option<Instant>,
    last_failure: Option<String>,
}

/// What the synchronous part of an append decided.
enum Route {
    Direct(Box<PendingDirect>, DeliveryFuture),
    Spool(BoxFuture<'static, Result<Position, AppendError>>),
    Wait(oneshot::Receiver<BoxFuture<'static, Result<Position, AppendError>>>),
    Rejected(String),
}

/// Shared by every append and by the forwarder.
pub(crate) struct Router {
    state: Mutex<RouterState>,
    /// Appends handed to the spool whose answer has not arrived yet. Raised under the state
    /// lock (so never while the forwarder checks for a drained spool), lowered without it
    /// (after the spool answered, when the record already counts as unconsumed).
    spool_appends_in_progress: Arc<AtomicU64>,
    /// Set when the direct path fails (the switch to spooling), taken by the forwarder: Kafka
    /// may have been fine when it last looked.
    direct_failed: AtomicBool,
    spool: Arc<EmbeddedLog>,
    topic: String,
    ack_timeout: Duration,
    message_max_bytes: usize,
    runtime: Handle,
}

fn lock(mutex: &Mutex<RouterState>) -> MutexGuard<'_, RouterState> {
    // The state is plain bookkeeping that stays consistent between statements; refusing all
    // appends after an unrelated panic would be worse.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings of the router.
pub(crate) struct RouterOptions {
    pub(crate) topic: String,
    pub(crate) ack_timeout: Duration,
    pub(crate) message_max_bytes: usize,
    pub(crate) runtime: Handle,
}

impl Router {
    /// Starts spooling when the spool still holds records (a previous run's), else direct.
    pub(crate) fn new(
        direct: FutureProducer,
        spool: Arc<EmbeddedLog>,
        options: RouterOptions,
    ) -> Self {
        let spooling = spool.unconsumed_records() > 0;
        let state = RouterState {
            mode: if spooling {
                Mode::Spooling
            } else {
                Mode::Direct
            },
            direct,
            next_ticket: 0,
            waiting: BTreeMap::new(),
            spooling_since: spooling.then(Instant::now),
            last_failure: spooling.then(|| "the spool held records at start".to_owned()),
        };
        Self {
            state: Mutex::new(state),
            spool_appends_in_progress: Arc::new(AtomicU64::new(0)),
            direct_failed: AtomicBool::new(false),
            spool,
            topic: options.topic,
            ack_timeout: options.ack_timeout,
            message_max_bytes: options.message_max_bytes,
            runtime: options.runtime,
        }
    }

    /// Appends one record; the work runs on its own task so that a dropped answer does not
    /// abandon it (and the ordering buffer never waits on an abandoned entry).
    pub(crate) fn append(
        self: &Arc<Self>,
        key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        let body_bytes = record.body.len();
        let task = match self.route(key, record) {
            Route::Direct(pending, delivery) => {
                let router = Arc::clone(self);
                self.runtime
                    .spawn(async move { router.finish_direct(pending, delivery).await })
            }
            Route::Spool(answer) => self.runtime.spawn(answer),
            Route::Wait(answer) => self.runtime.spawn(async move {
                match answer.await {
                    Ok(spooled) => spooled.await,
                    Err(_) => Err(AppendError::Unavailable(
                        "kafka raw log dropped a pending append".to_owned(),
                    )),
                }
            }),
            Route::Rejected(reason) => {
                RecordRejected {
                    body_bytes,
                    reason: &reason,
                }
                .emit();
                return Box::pin(std::future::ready(Err(AppendError::Unavailable(format!(
                    "kafka refuses the record: {reason}"
                )))));
            }
        };
        Box::pin(async move {
            task.await.unwrap_or_else(|_| {
                Err(AppendError::Unavailable(
                    "kafka raw log append task failed".to_owned(),
                ))
            })
        })
    }

    /// Decides the route under the lock, so routes are taken in call order.
    fn route(self: &Arc<Self>, key: String, record: RawRecord) -> Route {
        let mut state = lock(&self.state);
        if state.mode == Mode::Spooling {
            return self.spool_or_wait(&mut state, key, record, false);
        }
        match producer::send(&state.direct, &self.topic, &key, &record) {
            Ok(delivery) => {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiting.insert(ticket, Slot::InFlight);
                let pending = PendingDirect {
                    ticket,
                    sent_at: Instant::now(),
                    key,
                    record,
                };
                Route::Direct(Box::new(pending), delivery)
            }
            Err(error) => match classify(&error) {
                SendFailure::Rejected(reason) => Route::Rejected(reason),
                SendFailure::Unavailable(reason) => {
                    DirectFailed { timed_out: false }.emit();
                    self.start_spooling(&mut state, &reason);
                    // librdkafka's size check runs before its queue checks, so it passed.
                    self.spool_or_wait(&mut state, key, record, true)
                }
            },
        }
    }

    /// Hands the record to the spool now when nothing earlier is pending, else queues it
    /// behind the pending entries.
    fn spool_or_wait(
        self: &Arc<Self>,
        state: &mut RouterState,
        key: String,
        record: RawRecord,
        size_checked: bool,
    ) -> Route {
        if state.waiting.is_empty() {
            return Route::Spool(self.enqueue_spool(state, key, record, size_checked));
        }
        let (reply, answer) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let request = SpoolRequest {
            key,
            record,
            size_checked,
            reply,
        };
        state
            .waiting
            .insert(ticket, Slot::ToSpool(Box::new(request)));
        Route::Wait(answer)
    }

    /// Hands one record to the spool (queued at once) and returns its answer. Takes the locked
    /// state to show it runs under the lock: spool order must follow call order.
    fn enqueue_spool(
        &self,
        _locked: &mut RouterState,
        key: String,
        record: RawRecord,
        size_checked: bool,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        let estimated = producer::estimated_message_bytes(&key, &record);
        if !size_checked && estimated > self.message_max_bytes {
            let reason = format!(
                "about {estimated} bytes with headers, over message.max.bytes {}",
                self.message_max_bytes
            );
            RecordRejected {
                body_bytes: record.body.len(),
                reason: &reason,
            }
            .emit();
            return Box::pin(std::future::ready(Err(AppendError::Unavailable(format!(
                "kafka refuses the record: {reason}"
            )))));
        }
        self.spool_appends_in_progress
            .fetch_add(1, Ordering::SeqCst);
        let answer = self.spool.append(key, record);
        let guard = InProgressGuard {
            in_progress: Arc::clone(&self.spool_appends_in_progress),
        };
        let spool = Arc::clone(&self.spool);
        Box::pin(async move {
            let outcome = answer.await;
            // Dropped after the spool answered, so the forwarder never sees "nothing in
            // progress" while a record is about to become visible in the spool.
            drop(guard);
            match &outcome {
                Ok(_) => Spooled.emit(spool.unconsumed_records()),
                Err(_) => AppendRefused.emit(),
            }
            outcome.map_err(|error| match error {
                AppendError::Overloaded(what) => AppendError::Overloaded(what),
                AppendError::Unavailable(reason) => AppendError::Unavailable(format!(
                    "kafka did not confirm and the spool cannot take writes: {reason}"
                )),
            })
        })
    }

    /// Waits for a direct send's delivery report within the ack bound; on failure, the record
    /// goes to the spool in call order.
    async fn finish_direct(
        self: Arc<Self>,
        pending: Box<PendingDirect>,
        delivery: DeliveryFuture,
    ) -> Result<Position, AppendError> {
        let (timed_out, reason) = match tokio::time::timeout(self.ack_timeout, delivery).await {
            Ok(Ok(Ok(delivered))) => {
                DirectDelivered {
                    sent_at: pending.sent_at,
                }
                .emit();
                self.settle(pending.ticket, Slot::Done);
                return Ok(Position {
                    partition: u32::try_from(delivered.partition).unwrap_or(0),
                    offset: u64::try_from(delivered.offset).unwrap_or(0),
                });
            }
            Ok(Ok(Err((error, _message)))) => {
                if let SendFailure::Rejected(reason) = classify(&error) {
                    self.settle(pending.ticket, Slot::Done);
                    RecordRejected {
                        body_bytes: pending.record.body.len(),
                        reason: &reason,
                    }
                    .emit();
                    return Err(AppendError::Unavailable(format!(
                        "kafka refuses the record: {reason}"
                    )));
                }
                let timed_out =
                    error == KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
                (timed_out, error.to_string())
            }
            Ok(Err(_canceled)) => (false, "the producer dropped the delivery report".to_owned()),
            Err(_elapsed) => (
                true,
                format!(
                    "no delivery report within {} ms",
                    self.ack_timeout.as_millis()
                ),
            ),
        };
        DirectFailed { timed_out }.emit();
        let answer = self.settle_failed(pending, &reason);
        match answer.await {
            Ok(spooled) => spooled.await,
            Err(_) => Err(AppendError::Unavailable(
                "kafka raw log dropped a pending append".to_owned(),
            )),
        }
    }

    /// Switches to spooling and queues a failed direct send for the spool at its place.
    fn settle_failed(
        self: &Arc<Self>,
        pending: Box<PendingDirect>,
        reason: &str,
    ) -> oneshot::Receiver<BoxFuture<'static, Result<Position, AppendError>>> {
        let (reply, answer) = oneshot::channel();
        let request = SpoolRequest {
            key: pending.key,
            record: pending.record,
            size_checked: true,
            reply,
        };
        let mut state = lock(&self.state);
        self.start_spooling(&mut state, reason);
        debug_assert!(
            matches!(state.waiting.get(&pending.ticket), Some(Slot::InFlight)),
            "only a pending direct send settles"
        );
        state
            .waiting
            .insert(pending.ticket, Slot::ToSpool(Box::new(request)));
        self.flush(&mut state);
        answer
    }

    /// Records how entry `ticket` settled and hands every settled prefix entry to the spool.
    fn settle(self: &Arc<Self>, ticket: u64, slot: Slot) {
        let mut state = lock(&self.state);
        debug_assert!(
            matches!(state.waiting.get(&ticket), Some(Slot::InFlight)),
            "only a pending direct send settles"
        );
        state.waiting.insert(ticket, slot);
        self.flush(&mut state);
    }

    fn flush(self: &Arc<Self>, state: &mut RouterState) {
        while let Some((_, first)) = state.waiting.first_key_value() {
            if matches!(first, Slot::InFlight) {
                break;
            }
            if let Some((_, Slot::ToSpool(request))) = state.waiting.pop_first() {
                let answer =
                    self.enqueue_spool(state, request.key, request.record, request.size_checked);
                // The waiter may be gone (its task was cancelled at shutdown); the record is
                // queued in the spool all the same.
                let _ = request.reply.send(answer);
            }
        }
    }

    /// Returns whether the direct path failed since the last call.
    pub(crate) fn take_direct_failure(&self) -> bool {
        self.direct_failed.swap(false, Ordering::SeqCst)
    }

    /// Returns whether appends go to the spool now.
    pub(crate) fn is_spooling(&self) -> bool {
        lock(&self.state).mode == Mode::Spooling
    }

    /// Returns, while spooling, for how long and the Kafka failure that started it.
    pub(crate) fn spooling(&self) -> Option<(Duration, String)> {
        let state = lock(&self.state);
        if state.mode == Mode::Direct {
            return None;
        }
        let since = state
            .spooling_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        Some((since, state.last_failure.clone().unwrap_or_default()))
    }

    /// Returns whether the log spools with nothing pending and the spool drained.
    pub(crate) fn is_drained(&self) -> bool {
        let state = lock(&self.state);
        state.mode == Mode::Spooling && self.drained(&state)
    }

    fn drained(&self, state: &RouterState) -> bool {
        // In-progress first: once it reads 0, every answered record is already counted in
        // the spool's unconsumed records read next.
        state.waiting.is_empty()
            && self.spool_appends_in_progress.load(Ordering::SeqCst) == 0
            && self.spool.unconsumed_records() == 0
    }

    /// Goes back to direct sends through `fresh` when the log spools with nothing pending and
    /// the spool drained; returns the replaced producer (`Ok`) or `fresh` unused (`Err`).
    /// Called by the forwarder once Kafka answered. Either producer is dropped by the caller,
    /// off the runtime: destroying a producer may block.
    pub(crate) fn try_resume_direct(
        &self,
        fresh: FutureProducer,
    ) -> Result<FutureProducer, FutureProducer> {
        let mut state = lock(&self.state);
        if state.mode == Mode::Direct || !self.drained(&state) {
            return Err(fresh);
        }
        state.mode = Mode::Direct;
        let spooling_for = state
            .spooling_since
            .take()
            .map_or(Duration::ZERO, |since| since.elapsed());
        state.last_failure = None;
        SpoolingEnded { spooling_for }.emit();
        Ok(std::mem::replace(&mut state.direct, fresh))
    }

    /// Returns the direct producer (to flush it at close).
    pub(crate) fn direct_producer(&self) -> FutureProducer {
        lock(&self.state).direct.clone()
    }

    /// Switches to spooling (once) and purges the direct producer so that every pending
    /// direct send fails now rather than expiring one by one.
    fn start_spooling(&self, state: &mut RouterState, reason: &str) {
        if state.mode == Mode::Spooling {
            return;
        }
        state.mode = Mode::Spooling;
        self.direct_failed.store(true, Ordering::SeqCst);
        state.spooling_since = Some(Instant::now());
        state.last_failure = Some(reason.to_owned());
        SpoolingStarted { reason }.emit();
        let direct = state.direct.clone();
        // `purge` may block while librdkafka's queues are purged: not on the runtime.
        self.runtime.spawn_blocking(move || {
            direct.purge(PurgeConfig::default().queue().inflight());
        });
    }
}

/// A direct send waiting for its delivery report.
struct PendingDirect {
    ticket: u64,
    sent_at: Instant,
    key: String,
    record: RawRecord,
}

/// Counts an append on its way into the spool until it is answered (or abandoned).
struct InProgressGuard {
    in_progress: Arc<AtomicU64>,
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        self.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}
