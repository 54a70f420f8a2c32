//! `callhook tap`: the live view of a running process in a terminal, and the feed that puts
//! the normalizer's committed batches on the process's tap.
//!
//! The receiver publishes raw pushes itself ([`callhook_ingest::Receiver::with_tap`]); the
//! normalizer's items reach the same [`TapHub`] through [`install_feed`]. `/tap` on the admin
//! listener streams either to [`client`], so the command works against `serve`, `ingest` and
//! `normalize` alike (embedded or Kafka mode).

pub mod client;

use std::sync::Arc;

use callhook_ingest::{TapHub, TapItem, TapKind};
use callhook_sinks::SinkItem;

/// Installs the normalizer's commit observer that publishes on `hub`. Building the items costs
/// a JSON encoding per event, done only while a tap or the console listens.
pub fn install_feed(hub: &Arc<TapHub>) {
    let hub = Arc::clone(hub);
    let installed = callhook_normalizer::tap::set_commit_observer(Arc::new(move |items| {
        if !hub.wants_events() {
            return;
        }
        for item in items {
            publish(&hub, item);
        }
    }));
    if !installed {
        tracing::warn!("the normalizer's tap feed was already installed");
    }
}

fn publish(hub: &TapHub, item: &SinkItem) {
    match item {
        SinkItem::Push {
            source,
            received_at,
            events,
            ..
        } => {
            for event in events {
                let json = serde_json::json!({
                    "kind": "event",
                    "source": source,
                    "received_at": received_at,
                    "event": &event.event,
                });
                hub.publish(TapItem {
                    kind: TapKind::Event,
                    source: source.clone(),
                    event_type: Some(event.event.event_type.as_str().to_owned()),
                    call_id: event.event.data.call_id.clone(),
                    json: json.to_string(),
                });
            }
        }
        SinkItem::DeadLetter {
            raw_ref,
            source,
            reason,
            detail,
            received_at,
        } => {
            let json = serde_json::json!({
                "kind": "dead_letter",
                "source": source,
                "raw_ref": raw_ref,
                "reason": reason,
                "detail": detail,
                "received_at": received_at,
            });
            hub.publish(TapItem {
                kind: TapKind::DeadLetter,
                source: source.clone(),
                event_type: None,
                call_id: None,
                json: json.to_string(),
            });
        }
    }
}
