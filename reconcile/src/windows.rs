//! Splitting a reconciliation span into query windows the API accepts.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, Utc};

use crate::config::MAX_QUERY_SPAN;

/// One query window: calls started in `[start, end]`, both inclusive, whole seconds, in the
/// account's local time (the API's `startTime`/`endTime` have no zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryWindow {
    /// The first second.
    pub start: NaiveDateTime,
    /// The last second.
    pub end: NaiveDateTime,
}

impl QueryWindow {
    /// Returns the two halves of the window (for a window holding more records than one query
    /// may return), or `None` when it is one second long.
    pub fn halves(&self) -> Option<(QueryWindow, QueryWindow)> {
        let span = self.end - self.start;
        if span < TimeDelta::seconds(1) {
            return None;
        }
        let middle = self.start + TimeDelta::seconds(span.num_seconds() / 2);
        Some((
            QueryWindow {
                start: self.start,
                end: middle,
            },
            QueryWindow {
                start: middle + TimeDelta::seconds(1),
                end: self.end,
            },
        ))
    }
}

/// Returns the windows covering `[since, until)` in `zone`, each at most
/// [`MAX_QUERY_SPAN`] long, adjacent and not overlapping. Empty when `until <= since`.
pub fn split(since: DateTime<Utc>, until: DateTime<Utc>, zone: FixedOffset) -> Vec<QueryWindow> {
    let local = |time: DateTime<Utc>| {
        let seconds = time.timestamp();
        DateTime::from_timestamp(seconds, 0)
            .unwrap_or(time)
            .with_timezone(&zone)
            .naive_local()
    };
    let first = local(since);
    // `until` is exclusive: the last second queried is the one before it.
    let last = local(until) - TimeDelta::seconds(1);
    let mut windows = Vec::new();
    let mut start = first;
    while start <= last {
        let end = (start + MAX_QUERY_SPAN - TimeDelta::seconds(1)).min(last);
        windows.push(QueryWindow { start, end });
        start = end + TimeDelta::seconds(1);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn china() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    #[test]
    fn test_short_span_is_one_window_in_local_time() {
        let windows = split(
            utc("2021-03-25T00:00:00Z"),
            utc("2021-03-25T02:00:00Z"),
            china(),
        );
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].start.to_string(), "2021-03-25 08:00:00");
        assert_eq!(windows[0].end.to_string(), "2021-03-25 09:59:59");
    }

    #[test]
    fn test_long_span_is_cut_at_seven_days_without_gaps_or_overlaps() {
        let since = utc("2021-03-01T00:00:00Z");
        let until = utc("2021-03-20T12:00:00Z");
        let windows = split(since, until, china());
        assert_eq!(windows.len(), 3);
        for window in &windows {
            assert!(window.end - window.start < MAX_QUERY_SPAN);
            assert!(window.start <= window.end);
        }
        for pair in windows.windows(2) {
            assert_eq!(pair[1].start - pair[0].end, TimeDelta::seconds(1));
        }
        assert_eq!(windows[0].start.to_string(), "2021-03-01 08:00:00");
        assert_eq!(windows[2].end.to_string(), "2021-03-20 19:59:59");
    }

    #[test]
    fn test_empty_and_reversed_spans() {
        let t = utc("2021-03-01T00:00:00Z");
        assert!(split(t, t, china()).is_empty());
        assert!(split(t, t - TimeDelta::hours(1), china()).is_empty());
    }

    #[test]
    fn test_halves_cover_the_window() {
        let windows = split(
            utc("2021-03-01T00:00:00Z"),
            utc("2021-03-01T00:00:10Z"),
            china(),
        );
        let (left, right) = windows[0].halves().unwrap();
        assert_eq!(left.start, windows[0].start);
        assert_eq!(right.end, windows[0].end);
        assert_eq!(right.start - left.end, TimeDelta::seconds(1));
        let one = QueryWindow {
            start: left.start,
            end: left.start,
        };
        assert!(one.halves().is_none());
    }
}
