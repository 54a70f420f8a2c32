//! The 7moor v7 open-API request signature (`normalizer/docs/7moor-reconcile.md`).
//!
//! `m7-sign = Base64(HMAC-SHA256(key = secret, message = appkey + timestamp + nonce))`: the
//! three header values concatenated with no separator, the raw 32-byte MAC in standard Base64
//! (with `+`, `/`, `=`). The body is not signed. `m7-timestamp` is epoch seconds (10 digits; the
//! server refuses a skew over 5 minutes), `m7-nonce` is 6 digits, new for every request (the
//! server refuses a sign + nonce it saw in the last 5 minutes).

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The four signing headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `m7-appkey`.
    pub appkey: String,
    /// `m7-timestamp`, epoch seconds.
    pub timestamp: String,
    /// `m7-nonce`, 6 digits.
    pub nonce: String,
    /// `m7-sign`.
    pub sign: String,
}

/// Returns `m7-sign` for these values.
pub fn sign(secret: &[u8], appkey: &str, timestamp: &str, nonce: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(appkey.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(nonce.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Returns the headers of a request sent at `epoch_seconds`, with a fresh nonce.
pub fn signed_headers(secret: &[u8], appkey: &str, epoch_seconds: i64) -> SignedHeaders {
    let timestamp = epoch_seconds.to_string();
    let nonce = next_nonce();
    SignedHeaders {
        sign: sign(secret, appkey, &timestamp, &nonce),
        appkey: appkey.to_owned(),
        timestamp,
        nonce,
    }
}

/// Returns a 6-digit nonce. The server only needs it unique per sign within 5 minutes: a hash
/// of the clock, the process id and a counter is (no two calls of one process share one
/// unless a 1-in-a-million collision, which the next request's new timestamp also avoids).
fn next_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(count.to_le_bytes());
    let digest = hasher.finalize();
    let value = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]) % 1_000_000;
    format!("{value:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sign_is_base64_hmac_sha256_over_the_concatenation() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?", split as
        // appkey + timestamp + nonce to show that the parts are concatenated with nothing
        // between them.
        let sign = sign(b"Jefe", "what do ya", " want for ", "nothing?");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let bytes = BASE64.decode(&sign).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_eq!(sign.len(), 44);
    }

    #[test]
    fn test_the_doc_message_example() {
        // The doc's message string is `20001031608119594123221` = appkey `2000103` +
        // timestamp `1608119594` + nonce `123221`; its secret is not published, so the sign
        // can only be checked for shape and for equality with the one-string form.
        let parts = sign(b"sk", "2000103", "1608119594", "123221");
        let whole = sign(b"sk", "20001031608119594123221", "", "");
        assert_eq!(parts, whole);
    }

    #[test]
    fn test_headers_have_the_documented_shape() {
        let headers = signed_headers(b"sk", "2000144", 1_616_674_605);
        assert_eq!(headers.timestamp, "1616674605");
        assert_eq!(headers.nonce.len(), 6);
        assert!(headers.nonce.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(
            headers.sign,
            sign(b"sk", "2000144", "1616674605", &headers.nonce)
        );
        let nonces: std::collections::HashSet<String> = (0..50)
            .map(|_| signed_headers(b"sk", "1", 1).nonce)
            .collect();
        assert!(nonces.len() > 45, "nonces repeat: {}", nonces.len());
    }
}
