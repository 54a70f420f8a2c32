//! The load generator's push: a realistic 7moor v7 `dialoutHangup` JSON body padded to a fixed
//! size, with a unique `eventUniqueId` and `callUniqueId` per request so the pipeline stores
//! every push instead of dropping them as duplicates.
//!
//! Ids encode the run's nonce and the request's sequence number, so a poller reading the
//! `events` table can tell which request a row came from ([`PushTemplate::sequence_of_call_id`]).

use bytes::Bytes;

/// Digits of the run nonce at the start of every `callUniqueId`.
const CALL_ID_NONCE_DIGITS: usize = 8;
/// Digits of the sequence number after it.
const CALL_ID_SEQUENCE_DIGITS: usize = 12;

/// A fixed-size push body with two id slots, filled per request.
#[derive(Debug, Clone)]
pub struct PushTemplate {
    bytes: Vec<u8>,
    event_id_at: usize,
    call_id_at: usize,
    nonce: u64,
}

impl PushTemplate {
    /// Builds the template: `body_bytes` long (at least the unpadded push, ~560 bytes), ids
    /// derived from `nonce`, `statusTime` = `status_time_epoch`.
    pub fn new(body_bytes: usize, nonce: u64, status_time_epoch: i64) -> Self {
        let event_slot = "E".repeat(32);
        let call_slot = "C".repeat(CALL_ID_NONCE_DIGITS + CALL_ID_SEQUENCE_DIGITS);
        let head = format!(
            "{{\"eventUniqueId\":\"{event_slot}\",\"accountId\":\"N00000048129\",\
             \"callUniqueId\":\"{call_slot}\",\"pushType\":\"dialoutHangup\",\
             \"customerNumber\":\"13912345678\",\"trunkNumber\":\"02566699734\",\
             \"displayNumber\":\"02566699734\",\"statusTime\":\"{status_time_epoch}\",\
             \"callEvent\":\"hangup\",\"callType\":\"dialout\",\"agentNumber\":\"8001\",\
             \"agentName\":\"张晓明\",\"groupIdList\":[\"7c5f5e00-3c1a-11ee-9a2b-6b1f4c0f1a01\"],\
             \"groupNameList\":[\"售后服务组\"],\"extras\":\""
        );
        let tail = "\"}";
        let filler = b"crm.ticket=CS20240620-0042;crm.customer=VIP;note=callback requested;";
        let mut bytes = head.into_bytes();
        let pad = body_bytes.saturating_sub(bytes.len() + tail.len());
        bytes.extend(filler.iter().cycle().take(pad));
        bytes.extend_from_slice(tail.as_bytes());
        let find = |slot: &str| {
            let haystack = String::from_utf8_lossy(&bytes).into_owned();
            haystack.find(slot).expect("slot is in the template")
        };
        let event_id_at = find(&event_slot);
        let call_id_at = find(&call_slot);
        PushTemplate {
            bytes,
            event_id_at,
            call_id_at,
            nonce,
        }
    }

    /// Returns the body length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Returns true when the body is empty (never for a built template).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Returns the body of request `sequence`.
    pub fn body(&self, sequence: u64) -> Bytes {
        let mut bytes = self.bytes.clone();
        let event_id = format!("{:016x}{:016x}", self.nonce, sequence);
        bytes[self.event_id_at..self.event_id_at + 32].copy_from_slice(event_id.as_bytes());
        let call_id = self.call_id(sequence);
        bytes[self.call_id_at..self.call_id_at + call_id.len()].copy_from_slice(call_id.as_bytes());
        Bytes::from(bytes)
    }

    /// Returns the `callUniqueId` of request `sequence`: nonce digits, then the sequence.
    pub fn call_id(&self, sequence: u64) -> String {
        let nonce = self.nonce % 10u64.pow(CALL_ID_NONCE_DIGITS as u32);
        format!(
            "{nonce:0nd$}{sequence:0sd$}",
            nd = CALL_ID_NONCE_DIGITS,
            sd = CALL_ID_SEQUENCE_DIGITS
        )
    }

    /// Returns the sequence number encoded in a `callUniqueId` of this run, or `None` for ids
    /// of another run or shape.
    pub fn sequence_of_call_id(&self, call_id: &str) -> Option<u64> {
        let prefix = &self.call_id(0)[..CALL_ID_NONCE_DIGITS];
        let digits = call_id.strip_prefix(prefix)?;
        if digits.len() != CALL_ID_SEQUENCE_DIGITS {
            return None;
        }
        digits.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_is_fixed_size_json_with_unique_ids() {
        let template = PushTemplate::new(1024, 0xfeed_beef, 1_718_870_400);
        let first = template.body(1);
        let second = template.body(2);
        assert_eq!(first.len(), 1024);
        assert_eq!(second.len(), 1024);
        let a: serde_json::Value = serde_json::from_slice(&first).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&second).unwrap();
        assert_ne!(a["eventUniqueId"], b["eventUniqueId"]);
        assert_eq!(a["eventUniqueId"].as_str().unwrap().len(), 32);
        let call_id = a["callUniqueId"].as_str().unwrap();
        assert_eq!(template.sequence_of_call_id(call_id), Some(1));
        assert_eq!(template.sequence_of_call_id("12345"), None);
    }
}
