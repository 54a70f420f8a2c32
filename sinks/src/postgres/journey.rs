//! The model v1.1 columns of the `calls` upsert (conversation and leg, queue segment, abandon
//! point, disconnect reason, IVR path), as the arrays `writes::upsert_calls` binds.

use chrono::{DateTime, Utc};

use super::error::{PostgresSinkError, Result};
use crate::calls_fold::CallRow;

/// The model v1.1 columns of a batch of `calls` rows, as the arrays `upsert_calls` binds.
pub(crate) struct JourneyColumns {
    pub(crate) conversation_ids: Vec<Option<String>>,
    pub(crate) legs: Vec<Option<&'static str>>,
    pub(crate) queue_joined: Vec<Option<DateTime<Utc>>>,
    pub(crate) queue_left: Vec<Option<DateTime<Utc>>>,
    pub(crate) queue_seconds: Vec<Option<i64>>,
    pub(crate) abandon_points: Vec<Option<&'static str>>,
    pub(crate) disconnect_reasons: Vec<Option<&'static str>>,
    pub(crate) disconnect_reasons_raw: Vec<Option<String>>,
    pub(crate) ivr_paths: Vec<serde_json::Value>,
}

impl JourneyColumns {
    pub(crate) fn of(rows: &[CallRow]) -> Result<Self> {
        let journeys = || rows.iter().map(|row| &row.journey);
        let ivr_paths = journeys()
            .map(|journey| serde_json::to_value(&journey.ivr_path))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|error| PostgresSinkError::CorruptRow {
                table: "calls",
                detail: format!("ivr_path does not encode: {error}"),
            })?;
        Ok(JourneyColumns {
            conversation_ids: journeys().map(|j| j.conversation_id.clone()).collect(),
            legs: journeys().map(|j| j.leg.map(|leg| leg.as_str())).collect(),
            queue_joined: journeys().map(|j| j.queue_joined_at).collect(),
            queue_left: journeys().map(|j| j.queue_left_at).collect(),
            queue_seconds: journeys()
                .map(|j| {
                    j.queue_seconds
                        .map(|s| i64::try_from(s).unwrap_or(i64::MAX))
                })
                .collect(),
            abandon_points: journeys()
                .map(|j| j.abandon_point.map(|point| point.as_str()))
                .collect(),
            disconnect_reasons: journeys()
                .map(|j| j.disconnect_reason.map(|reason| reason.as_str()))
                .collect(),
            disconnect_reasons_raw: journeys()
                .map(|j| j.disconnect_reason_raw.clone())
                .collect(),
            ivr_paths,
        })
    }
}
