//! The connection registry of one listener: every open connection, its client address and
//! whether it is waiting for a request; the two connection limits and the choice of which
//! idle connection to close when one is reached.
//!
//! Invariants (checked by `debug_assert!` and the unit tests):
//! - at most `max_connections` connections are registered: [`Registry::admit`] answers
//!   [`Admission::Full`] at the limit, and the caller waits for a close;
//! - a connection whose request head has been arriving for longer than `shed_heads_after` is
//!   chosen to be shed first, the oldest head first (a slowloris: a vendor sends a head in one
//!   packet, and a keep-alive connection of a client that completed requests is worth more);
//! - then a connection *waiting* for a request (none of its bytes received since it was
//!   accepted or since its last response), the longest-waiting first; a new connection is not
//!   waiting until its task has looked at its socket, so a burst of connections admitted
//!   before their tasks ran never sheds one whose request is queued;
//! - a connection whose request the handler has is never chosen;
//! - a connection is chosen at most once (`leaving`), and a chosen one counts against neither
//!   limit, so one admission never sheds more than one connection per limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Orders the moments connections start waiting; a smaller tick waited longer.
static WAIT_TICKS: AtomicU64 = AtomicU64::new(1);

/// The low bits of [`Slot::state`] hold the phase, the high bits the tick it began.
const PHASE_BITS: u32 = 2;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;
/// No byte of a request received since the connection opened or since its last response.
const WAITING: u64 = 0;
/// Bytes of a request head received (since the millisecond in the high bits); the handler
/// does not have it yet.
const RECEIVING: u64 = 1;
/// The handler has the request (reading its body, appending, answering).
const HANDLING: u64 = 2;
/// Admitted; its task has not looked at the socket yet.
const NEW: u64 = 3;

fn waiting_now() -> u64 {
    WAIT_TICKS.fetch_add(1, Ordering::Relaxed) << PHASE_BITS | WAITING
}

/// Milliseconds since the first call: when a head started arriving.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX >> PHASE_BITS)
}

/// What the registry and every slot share: the wake-up of an admission waiting for room.
#[derive(Default)]
struct Signals {
    /// Notified when a connection closes, and, while an admission waits for room, when one
    /// leaves the new phase or starts waiting: any of them may make room.
    changed: Notify,
    /// True while the accept loop is deciding on or waiting for a place.
    admission_pending: AtomicBool,
}

/// What the connection's task and the registry share about one connection.
pub(super) struct Slot {
    /// `tick << PHASE_BITS | phase`; only the connection's own task writes it.
    state: AtomicU64,
    signals: Arc<Signals>,
    /// Told to close: shed by the registry, or the listener shuts down.
    close: Notify,
    /// The close is for a slow head: drop the connection if its head is still incomplete.
    abort_head: AtomicBool,
    /// A response write waited longer than the write timeout (set by the connection's stream).
    write_timed_out: AtomicBool,
}

impl Slot {
    fn new(signals: Arc<Signals>) -> Self {
        Slot {
            state: AtomicU64::new(NEW),
            signals,
            close: Notify::new(),
            abort_head: AtomicBool::new(false),
            write_timed_out: AtomicBool::new(false),
        }
    }

    /// Marks the connection as waiting for a request: it found no bytes on its new socket,
    /// or its response is handed over. Wakes an admission waiting for room, if any.
    pub(super) fn mark_waiting(&self) {
        // SeqCst with `admission_pending`: either this sees the flag, or the admission's scan
        // sees this connection waiting.
        self.state.store(waiting_now(), Ordering::SeqCst);
        if self.signals.admission_pending.load(Ordering::SeqCst) {
            self.signals.changed.notify_waiters();
        }
    }

    /// Marks that bytes of a request arrived, if the connection was new or waiting. A new one
    /// wakes an admission waiting for room: its head may become old enough to shed.
    pub(super) fn mark_receiving(&self) {
        let phase = self.state.load(Ordering::Relaxed) & PHASE_MASK;
        if matches!(phase, WAITING | NEW) {
            let since = now_ms() << PHASE_BITS | RECEIVING;
            self.state.store(since, Ordering::SeqCst);
            if phase == NEW && self.signals.admission_pending.load(Ordering::SeqCst) {
                self.signals.changed.notify_waiters();
            }
        }
    }

    /// Returns true while a request head is arriving and the handler does not have it.
    pub(super) fn is_receiving(&self) -> bool {
        self.state.load(Ordering::Relaxed) & PHASE_MASK == RECEIVING
    }

    /// Returns true when the close asked for is for a slow head ([`Slot::is_receiving`]).
    pub(super) fn abort_head_requested(&self) -> bool {
        self.abort_head.load(Ordering::Relaxed)
    }

    /// Marks that the handler has the request.
    pub(super) fn mark_handling(&self) {
        self.state.store(HANDLING, Ordering::Relaxed);
    }

    /// Returns the tick at which the connection started waiting, if it is waiting.
    fn waiting_since(&self) -> Option<u64> {
        let state = self.state.load(Ordering::SeqCst);
        (state & PHASE_MASK == WAITING).then_some(state >> PHASE_BITS)
    }

    /// Returns the millisecond its request head started arriving, if one is arriving.
    fn head_started_ms(&self) -> Option<u64> {
        let state = self.state.load(Ordering::SeqCst);
        (state & PHASE_MASK == RECEIVING).then_some(state >> PHASE_BITS)
    }

    /// Resolves once the connection is told to close (a signal sent earlier is kept).
    pub(super) async fn close_requested(&self) {
        self.close.notified().await;
    }

    fn request_close(&self) {
        self.close.notify_one();
    }

    /// Records that a response write timed out.
    pub(super) fn set_write_timed_out(&self) {
        self.write_timed_out.store(true, Ordering::Relaxed);
    }

    /// Returns true once a response write timed out.
    pub(super) fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }
}

/// The client address a per-address limit counts: an IPv4 address or an IPv6 /64 (one host
/// usually holds a whole /64, so a /128 limit would not bind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4.into()),
            IpAddr::V6(v6) => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The two limits, and when a slow head may be shed to stay within them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_connections: usize,
    pub(super) max_per_address: usize,
    /// A head arriving for longer than this may be shed when no connection is waiting.
    pub(super) shed_heads_after: Duration,
}

/// The answer to a new connection.
pub(super) enum Admission {
    /// Registered; the registration lasts as long as the connection.
    Admitted(Registration),
    /// Its address is at its limit and none of its connections is waiting for a request.
    Refused,
    /// `max_connections` are open: try again once one closed or started waiting
    /// ([`Registry::changed`]), or after `retry_in`, when a slow head becomes old enough.
    Full {
        /// When the oldest head in progress may be shed, if one is in progress.
        retry_in: Option<Duration>,
    },
}

/// Which kind of connection was told to close to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Victim {
    /// One waiting for a request.
    Idle,
    /// One whose request head has been arriving for too long.
    SlowHead,
}

/// What [`Registry::admit`] decided, and which connections it told to close for it.
pub(super) struct Decision {
    pub(super) admission: Admission,
    /// A connection of the same address was told to close to make room.
    pub(super) shed_for_address: Option<Victim>,
    /// A connection was told to close to make room under `max_connections`.
    pub(super) shed_for_capacity: Option<Victim>,
}

/// Every open connection of one listener.
pub(super) struct Registry {
    limits: Limits,
    open: Mutex<OpenConnections>,
    signals: Arc<Signals>,
}

#[derive(Default)]
struct OpenConnections {
    entries: HashMap<u64, Entry>,
    addresses: HashMap<AddressKey, AddressCount>,
    next_id: u64,
    /// Entries told to close by the registry that have not closed yet.
    leaving: usize,
}

struct Entry {
    slot: Arc<Slot>,
    address: AddressKey,
    leaving: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct AddressCount {
    open: usize,
    leaving: usize,
}

impl Registry {
    pub(super) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            limits,
            open: Mutex::new(OpenConnections::default()),
            signals: Arc::default(),
        })
    }

    /// Decides on a new connection from `peer`: registers it, refuses it, or says the listener
    /// is full. To make room it tells a connection to close ([`OpenConnections::shed_one`]):
    /// one of the same address when that address is at its limit, any when `max_connections`
    /// are open.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Decision {
        let address = AddressKey::of(peer);
        let mut open = self.lock();
        let mut decision = Decision {
            admission: Admission::Full { retry_in: None },
            shed_for_address: None,
            shed_for_capacity: None,
        };
        let count = open.addresses.get(&address).copied().unwrap_or_default();
        if count.open - count.leaving >= self.limits.max_per_address {
            match open.shed_one(Some(address), self.limits.shed_heads_after) {
                Ok(victim) => decision.shed_for_address = Some(victim),
                Err(_) => {
                    decision.admission = Admission::Refused;
                    return decision;
                }
            }
        }
        let total = open.entries.len();
        if total >= self.limits.max_connections {
            // Ask one more connection to leave only when those already leaving will not bring
            // the count under the limit.
            if total - open.leaving >= self.limits.max_connections {
                match open.shed_one(None, self.limits.shed_heads_after) {
                    Ok(victim) => decision.shed_for_capacity = Some(victim),
                    Err(retry_in) => decision.admission = Admission::Full { retry_in },
                }
            }
            return decision;
        }
        let slot = Arc::new(Slot::new(Arc::clone(&self.signals)));
        let id = open.next_id;
        open.next_id += 1;
        open.entries.insert(
            id,
            Entry {
                slot: Arc::clone(&slot),
                address,
                leaving: false,
            },
        );
        open.addresses.entry(address).or_default().open += 1;
        debug_assert!(open.entries.len() <= self.limits.max_connections);
        decision.admission = Admission::Admitted(Registration {
            registry: Arc::clone(self),
            id,
            slot,
        });
        decision
    }

    /// Returns a future that resolves at the next close (or, during an admission, the next
    /// connection to start waiting); create it and `enable` it before checking the state it
    /// waits on, so no change is missed in between.
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.signals.changed.notified()
    }

    /// Marks an admission in progress until the returned guard is dropped, so that
    /// connections starting to wait wake it.
    pub(super) fn admission_pending(&self) -> AdmissionPending<'_> {
        self.signals.admission_pending.store(true, Ordering::SeqCst);
        AdmissionPending(&self.signals)
    }

    /// Tells every open connection to close (after its request in progress, if any).
    pub(super) fn close_all(&self) {
        for entry in self.lock().entries.values() {
            entry.slot.request_close();
        }
    }

    /// Resolves once no connection is open.
    pub(super) async fn all_closed(&self) {
        loop {
            let changed = self.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lock().entries.is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// Returns the number of open connections.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> MutexGuard<'_, OpenConnections> {
        // Nothing panics while holding the lock; recover the data rather than propagate.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deregister(&self, id: u64) {
        let mut open = self.lock();
        if let Some(entry) = open.entries.remove(&id) {
            if entry.leaving {
                open.leaving -= 1;
            }
            if let Some(count) = open.addresses.get_mut(&entry.address) {
                count.open -= 1;
                count.leaving -= usize::from(entry.leaving);
                if count.open == 0 {
                    open.addresses.remove(&entry.address);
                }
            }
        }
        drop(open);
        self.signals.changed.notify_waiters();
    }
}

/// An admission in progress ([`Registry::admission_pending`]).
pub(super) struct AdmissionPending<'a>(&'a Signals);

impl Drop for AdmissionPending<'_> {
    fn drop(&mut self) {
        self.0.admission_pending.store(false, Ordering::SeqCst);
    }
}

impl OpenConnections {
    /// Tells one connection (of `address`, if given) to close to make room: the one whose head
    /// has been arriving longest if for more than `heads_after`, else the one that has waited
    /// longest for a request. Otherwise returns when the oldest head arriving will be old
    /// enough, if one is arriving. A linear scan: it runs only at a limit, over at most
    /// `max_connections` entries.
    fn shed_one(
        &mut self,
        address: Option<AddressKey>,
        heads_after: Duration,
    ) -> Result<Victim, Option<Duration>> {
        let candidates = || {
            self.entries.iter().filter(move |(_, entry)| {
                !entry.leaving && address.is_none_or(|key| entry.address == key)
            })
        };
        let oldest_head = candidates()
            .filter_map(|(id, entry)| entry.slot.head_started_ms().map(|ms| (ms, *id)))
            .min();
        let head_age = oldest_head.map(|(started_ms, id)| {
            (
                Duration::from_millis(now_ms().saturating_sub(started_ms)),
                id,
            )
        });
        if let Some((age, id)) = head_age {
            if age >= heads_after {
                self.mark_leaving(id, true);
                return Ok(Victim::SlowHead);
            }
        }
        let waiting = candidates()
            .filter_map(|(id, entry)| entry.slot.waiting_since().map(|tick| (tick, *id)))
            .min();
        if let Some((_, id)) = waiting {
            self.mark_leaving(id, false);
            return Ok(Victim::Idle);
        }
        Err(head_age.map(|(age, _)| heads_after - age))
    }

    fn mark_leaving(&mut self, id: u64, abort_head: bool) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        debug_assert!(!entry.leaving);
        entry.leaving = true;
        entry.slot.abort_head.store(abort_head, Ordering::Relaxed);
        entry.slot.request_close();
        let address = entry.address;
        self.leaving += 1;
        if let Some(count) = self.addresses.get_mut(&address) {
            count.leaving += 1;
        }
    }
}

/// A registered connection; dropping it (when the connection's task ends) frees its place.
pub(super) struct Registration {
    registry: Arc<Registry>,
    id: u64,
    slot: Arc<Slot>,
}

impl Registration {
    pub(super) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.deregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow heads are never old enough here, unless a test says otherwise.
    const HOUR: Duration = Duration::from_secs(3600);

    fn registry(max_connections: usize, max_per_address: usize) -> Arc<Registry> {
        registry_shedding_heads_after(max_connections, max_per_address, HOUR)
    }

    fn registry_shedding_heads_after(
        max_connections: usize,
        max_per_address: usize,
        shed_heads_after: Duration,
    ) -> Arc<Registry> {
        Registry::new(Limits {
            max_connections,
            max_per_address,
            shed_heads_after,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Admits, and marks the connection waiting as its task does when it finds no bytes.
    fn admitted(decision: Decision) -> Registration {
        match decision.admission {
            Admission::Admitted(registration) => {
                registration.slot().mark_waiting();
                registration
            }
            Admission::Refused => panic!("refused"),
            Admission::Full { .. } => panic!("full"),
        }
    }

    fn close_was_requested(slot: &Slot) -> bool {
        // `notify_one` stores a permit: a pending close resolves at once.
        let notified = slot.close.notified();
        tokio::pin!(notified);
        notified.as_mut().enable()
    }

    #[test]
    fn test_address_keys() {
        assert_eq!(
            AddressKey::of(ip("10.0.0.1")),
            AddressKey::of(ip("::ffff:10.0.0.1"))
        );
        assert_ne!(
            AddressKey::of(ip("10.0.0.1")),
            AddressKey::of(ip("10.0.0.2"))
        );
        assert_eq!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn test_full_sheds_the_longest_waiting_then_admits_after_the_close() {
        let registry = registry(2, 10);
        let older = admitted(registry.admit(ip("10.0.0.1")));
        let newer = admitted(registry.admit(ip("10.0.0.2")));
        let decision = registry.admit(ip("10.0.0.3"));
        assert!(matches!(decision.admission, Admission::Full { .. }));
        assert_eq!(decision.shed_for_capacity, Some(Victim::Idle));
        assert_eq!(decision.shed_for_address, None);
        assert!(close_was_requested(older.slot()));
        assert!(!close_was_requested(newer.slot()));
        // The one already leaving brings the count under the limit: no second victim.
        let again = registry.admit(ip("10.0.0.3"));
        assert!(matches!(again.admission, Admission::Full { .. }));
        assert_eq!(again.shed_for_capacity, None);
        assert!(!close_was_requested(newer.slot()));
        drop(older);
        let third = admitted(registry.admit(ip("10.0.0.3")));
        assert_eq!(registry.len(), 2);
        drop((newer, third));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn test_busy_connections_are_never_shed() {
        let registry = registry(2, 10);
        let receiving = admitted(registry.admit(ip("10.0.0.1")));
        receiving.slot().mark_receiving();
        let handling = admitted(registry.admit(ip("10.0.0.1")));
        handling.slot().mark_handling();
        let decision = registry.admit(ip("10.0.0.2"));
        assert!(matches!(
            decision.admission,
            Admission::Full { retry_in: Some(_) }
        ));
        assert_eq!(decision.shed_for_capacity, None);
        assert!(!close_was_requested(receiving.slot()));
        assert!(!close_was_requested(handling.slot()));
        // Back to waiting after its response: now it may go.
        handling.slot().mark_waiting();
        assert_eq!(
            registry.admit(ip("10.0.0.2")).shed_for_capacity,
            Some(Victim::Idle)
        );
        assert!(close_was_requested(handling.slot()));
    }

    #[test]
    fn test_the_longest_waiting_goes_first_by_time_of_waiting() {
        let registry = registry(2, 10);
        let first = admitted(registry.admit(ip("10.0.0.1")));
        let second = admitted(registry.admit(ip("10.0.0.1")));
        // The first served a request since: it now waited less than the second.
        first.slot().mark_handling();
        first.slot().mark_waiting();
        assert_eq!(
            registry.admit(ip("10.0.0.2")).shed_for_capacity,
            Some(Victim::Idle)
        );
        assert!(close_was_requested(second.slot()));
        assert!(!close_was_requested(first.slot()));
    }

    #[test]
    fn test_address_limit_sheds_its_own_idle_or_refuses() {
        let registry = registry(10, 2);
        let other = admitted(registry.admit(ip("10.0.0.9")));
        let idle = admitted(registry.admit(ip("10.0.0.1")));
        let busy = admitted(registry.admit(ip("10.0.0.1")));
        busy.slot().mark_handling();
        // At its limit: its idle connection makes room, the other address's is untouched.
        let decision = registry.admit(ip("10.0.0.1"));
        assert_eq!(decision.shed_for_address, Some(Victim::Idle));
        assert_eq!(decision.shed_for_capacity, None);
        let newcomer = admitted(decision);
        assert!(close_was_requested(idle.slot()));
        assert!(!close_was_requested(other.slot()));
        // Now every one of its connections is busy (or leaving): refused.
        newcomer.slot().mark_receiving();
        let refused = registry.admit(ip("10.0.0.1"));
        assert!(matches!(refused.admission, Admission::Refused));
        assert_eq!(refused.shed_for_address, None);
        assert_eq!(registry.len(), 4);
        // The shed one closing changes nothing: it no longer counted against the limit.
        drop(idle);
        assert!(matches!(
            registry.admit(ip("10.0.0.1")).admission,
            Admission::Refused
        ));
        drop(busy);
        let _after_a_close = admitted(registry.admit(ip("10.0.0.1")));
    }

    #[test]
    fn test_slow_heads_are_shed_when_none_waits_but_never_the_handlers_requests() {
        let registry = registry_shedding_heads_after(2, 2, Duration::ZERO);
        let handling = admitted(registry.admit(ip("10.0.0.1")));
        handling.slot().mark_receiving();
        handling.slot().mark_handling();
        let slow_head = admitted(registry.admit(ip("10.0.0.1")));
        slow_head.slot().mark_receiving();
        // Per address first: its own slow head makes room.
        let decision = registry.admit(ip("10.0.0.1"));
        assert_eq!(decision.shed_for_address, Some(Victim::SlowHead));
        assert!(close_was_requested(slow_head.slot()));
        assert!(slow_head.slot().abort_head_requested());
        assert!(!close_was_requested(handling.slot()));
        // Then at capacity, with only the handler's request left: nothing to shed.
        let full = registry.admit(ip("10.0.0.2"));
        assert!(matches!(full.admission, Admission::Full { retry_in: None }));
        assert_eq!(full.shed_for_capacity, None);
        assert!(!handling.slot().abort_head_requested());
    }

    #[test]
    fn test_slow_heads_go_before_waiting_connections() {
        let registry = registry_shedding_heads_after(2, 10, Duration::ZERO);
        let idle = admitted(registry.admit(ip("10.0.0.1")));
        let slow_head = admitted(registry.admit(ip("10.0.0.2")));
        slow_head.slot().mark_receiving();
        assert_eq!(
            registry.admit(ip("10.0.0.3")).shed_for_capacity,
            Some(Victim::SlowHead)
        );
        assert!(close_was_requested(slow_head.slot()));
        assert!(!close_was_requested(idle.slot()));
    }

    #[test]
    fn test_heads_younger_than_the_limit_are_not_shed_but_timed() {
        let registry = registry(2, 10);
        let idle = admitted(registry.admit(ip("10.0.0.1")));
        let young_head = admitted(registry.admit(ip("10.0.0.2")));
        young_head.slot().mark_receiving();
        // The idle one goes; the young head stays.
        assert_eq!(
            registry.admit(ip("10.0.0.3")).shed_for_capacity,
            Some(Victim::Idle)
        );
        assert!(close_was_requested(idle.slot()));
        drop(idle);
        let third = admitted(registry.admit(ip("10.0.0.3")));
        third.slot().mark_handling();
        // Now only the young head could go, once it is old enough.
        let full = registry.admit(ip("10.0.0.4"));
        assert!(matches!(full.admission, Admission::Full { retry_in: Some(wait) } if wait <= HOUR));
        assert!(!close_was_requested(young_head.slot()));
    }

    #[test]
    fn test_new_connections_are_not_shed_before_their_task_looked() {
        let registry = registry(1, 1);
        let new = match registry.admit(ip("10.0.0.1")).admission {
            Admission::Admitted(registration) => registration,
            _ => panic!("not admitted"),
        };
        let refused = registry.admit(ip("10.0.0.1"));
        assert!(matches!(refused.admission, Admission::Refused));
        let full = registry.admit(ip("10.0.0.2"));
        assert!(matches!(full.admission, Admission::Full { .. }));
        assert_eq!(full.shed_for_capacity, None);
        assert!(!close_was_requested(new.slot()));
    }

    #[test]
    fn test_a_connection_starting_to_wait_wakes_a_pending_admission() {
        let registry = registry(1, 1);
        let registration = match registry.admit(ip("10.0.0.1")).admission {
            Admission::Admitted(registration) => registration,
            _ => panic!("not admitted"),
        };
        let changed = registry.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // Outside an admission nobody is woken (no cost per request).
        registration.slot().mark_waiting();
        assert!(!changed.as_mut().enable());
        let pending = registry.admission_pending();
        registration.slot().mark_handling();
        registration.slot().mark_waiting();
        assert!(changed.as_mut().enable());
        drop(pending);
    }

    #[test]
    fn test_a_new_connection_starting_its_head_wakes_a_pending_admission() {
        let registry = registry(1, 1);
        let registration = match registry.admit(ip("10.0.0.1")).admission {
            Admission::Admitted(registration) => registration,
            _ => panic!("not admitted"),
        };
        let _pending = registry.admission_pending();
        let changed = registry.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // Decided while the connection was new: nothing to shed, nothing to time.
        let full = registry.admit(ip("10.0.0.2"));
        assert!(matches!(full.admission, Admission::Full { retry_in: None }));
        registration.slot().mark_receiving();
        assert!(changed.as_mut().enable(), "woken to decide again");
        let again = registry.admit(ip("10.0.0.2"));
        assert!(matches!(
            again.admission,
            Admission::Full { retry_in: Some(_) }
        ));
    }

    #[test]
    fn test_close_all_reaches_every_connection() {
        let registry = registry(4, 4);
        let a = admitted(registry.admit(ip("10.0.0.1")));
        let b = admitted(registry.admit(ip("10.0.0.2")));
        b.slot().mark_handling();
        registry.close_all();
        assert!(close_was_requested(a.slot()));
        assert!(close_was_requested(b.slot()));
    }
}
