//! The `calls.status` column (since v1.1): how complete a call's record is.
//!
//! A function of the **set** of event types folded into the row, so it keeps the fold's order
//! independence ([`crate::calls_fold`]):
//!
//! | status | when |
//! |---|---|
//! | `final` | a `call.cdr` is stored: the vendor's final word is in |
//! | `ended` | no `call.cdr`, but a `call.ended` (the hangup) is |
//! | `stale` | neither, but callhook declared the call stale (`call.stale`, see `normalizer/src/stale.rs`) |
//! | `in_progress` | none of these |
//!
//! A terminal event that arrives after `call.stale` moves the row on to `ended` or `final`; a
//! non-terminal one leaves it `stale`. What can still change a `final` row is written in
//! `schemas/README.md` (a re-sent or corrected CDR, a reconciliation backfill, a replay through a
//! new mapping).

use callhook_schemas::EventType;

/// How complete a call's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallStatus {
    /// No terminal event and not declared stale.
    InProgress,
    /// A hangup (`call.ended`) but no CDR.
    Ended,
    /// The vendor's CDR (`call.cdr`) is in.
    Final,
    /// No terminal event within the source's `stale_after`: a `call.stale` is stored.
    Stale,
}

impl CallStatus {
    /// Every status, in declaration order.
    pub const ALL: [CallStatus; 4] = [
        CallStatus::InProgress,
        CallStatus::Ended,
        CallStatus::Final,
        CallStatus::Stale,
    ];

    /// Returns the column value, e.g. `in_progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::InProgress => "in_progress",
            CallStatus::Ended => "ended",
            CallStatus::Final => "final",
            CallStatus::Stale => "stale",
        }
    }

    /// Parses a column value.
    pub fn from_name(name: &str) -> Option<CallStatus> {
        CallStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// Which of the status-deciding event types a call has; adding is commutative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusFold {
    cdr: bool,
    ended: bool,
    stale: bool,
}

impl StatusFold {
    /// Adds one folded event's type.
    pub fn add(&mut self, event_type: EventType) {
        match event_type {
            EventType::CallCdr => self.cdr = true,
            EventType::CallEnded => self.ended = true,
            EventType::CallStale => self.stale = true,
            _ => {}
        }
    }

    /// Returns the status of the types added so far.
    pub fn status(&self) -> CallStatus {
        if self.cdr {
            CallStatus::Final
        } else if self.ended {
            CallStatus::Ended
        } else if self.stale {
            CallStatus::Stale
        } else {
            CallStatus::InProgress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(types: &[EventType]) -> CallStatus {
        let mut fold = StatusFold::default();
        for event_type in types {
            fold.add(*event_type);
        }
        fold.status()
    }

    #[test]
    fn test_status_rules() {
        use EventType::*;
        assert_eq!(status_of(&[]), CallStatus::InProgress);
        assert_eq!(
            status_of(&[CallInitiated, CallRinging, CallAnswered]),
            CallStatus::InProgress
        );
        assert_eq!(status_of(&[CallRinging, CallEnded]), CallStatus::Ended);
        assert_eq!(status_of(&[CallRinging, CallStale]), CallStatus::Stale);
        assert_eq!(status_of(&[CallStale, CallRinging]), CallStatus::Stale);
        assert_eq!(status_of(&[CallStale, CallEnded]), CallStatus::Ended);
        assert_eq!(status_of(&[CallCdr, CallStale]), CallStatus::Final);
        assert_eq!(status_of(&[CallCdr]), CallStatus::Final);
        assert_eq!(status_of(&[CallEnded, CallCdr]), CallStatus::Final);
    }

    #[test]
    fn test_status_is_order_independent() {
        use EventType::*;
        let types = [CallInitiated, CallStale, CallEnded, CallCdr, CallRinging];
        let expected = status_of(&types);
        let mut reversed = types;
        reversed.reverse();
        assert_eq!(status_of(&reversed), expected);
        for (index, _) in types.iter().enumerate() {
            let mut rotated = types;
            rotated.rotate_left(index);
            assert_eq!(status_of(&rotated), expected);
        }
    }

    #[test]
    fn test_names_round_trip() {
        for status in CallStatus::ALL {
            assert_eq!(CallStatus::from_name(status.as_str()), Some(status));
        }
    }
}
