//! Checks that the sender holds a key: HMAC body signatures, Standard Webhooks, CooCenter.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Days, NaiveDate, Timelike, Utc};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    AuthFailure, CooCenterAuth, HmacAuth, Result, SignatureEncoding, StandardWebhooksAuth,
};

type HmacSha256 = Hmac<Sha256>;

fn keyed_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long keys are hashed), so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Passes when `header` holds `prefix` + the encoded HMAC-SHA256 of `body` under the secret.
pub(crate) fn check_hmac(auth: &HmacAuth, header: Option<&str>, body: &[u8]) -> Result<()> {
    let header = header.map(str::trim).filter(|value| !value.is_empty());
    let header = header.ok_or(AuthFailure::MissingSignature)?;
    let encoded = match &auth.prefix {
        Some(prefix) => header
            .strip_prefix(prefix.as_str())
            .ok_or(AuthFailure::BadSignature)?,
        None => header,
    };
    let signature = match auth.encoding {
        SignatureEncoding::Hex => hex::decode(encoded).ok(),
        SignatureEncoding::Base64 => BASE64.decode(encoded).ok(),
    }
    .ok_or(AuthFailure::BadSignature)?;
    let mut mac = keyed_mac(auth.secret.expose());
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| AuthFailure::BadSignature)
}

/// Passes when `timestamp` (epoch seconds) is within `tolerance` of `now`, either way.
pub(crate) fn check_timestamp(
    timestamp: &str,
    tolerance: Duration,
    now: DateTime<Utc>,
) -> Result<()> {
    let sent_at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| AuthFailure::BadTimestamp)?;
    let skew_seconds = now.timestamp().abs_diff(sent_at);
    if skew_seconds > tolerance.as_secs() {
        return Err(AuthFailure::StaleTimestamp);
    }
    Ok(())
}

/// Passes when one `v1,<base64>` entry of `signatures` (space-separated) is the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under one of the secrets. Other versions (`v1a`, ...) are skipped.
/// The timestamp's freshness is checked separately by [`check_timestamp`].
pub(crate) fn check_standard_webhooks(
    auth: &StandardWebhooksAuth,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
) -> Result<()> {
    let candidates: Vec<Vec<u8>> = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .collect();
    if candidates.is_empty() {
        return Err(AuthFailure::MissingSignature);
    }
    for secret in &auth.secrets {
        let mut mac = keyed_mac(secret.expose());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` consumes the MAC; cloning the state avoids re-hashing the body.
        if candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(AuthFailure::BadSignature)
}

/// Returns the CooCenter key for `date`: lowercase hex `md5(webkey + "YYYY-MM-DD")`.
pub(crate) fn coocenter_key(webkey: &[u8], date: NaiveDate) -> String {
    let mut md5 = Md5::new();
    md5.update(webkey);
    md5.update(date.format("%Y-%m-%d").to_string().as_bytes());
    hex::encode(md5.finalize())
}

/// Passes when `header` holds the CooCenter key of the PBX's local date, or of the
/// neighbouring date while local time is within the grace period of midnight (the PBX clock
/// may be a little behind or ahead of ours). Hex case is ignored.
pub(crate) fn check_coocenter(
    auth: &CooCenterAuth,
    header: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let presented = header
        .map(|value| value.trim().to_ascii_lowercase())
        .filter(|value| !value.is_empty())
        .ok_or(AuthFailure::MissingSignature)?;
    let local = now.with_timezone(&auth.utc_offset);
    let today = local.date_naive();
    let since_midnight = u64::from(local.num_seconds_from_midnight());
    let grace = auth.grace.as_secs();
    let mut dates = vec![today];
    if since_midnight < grace {
        dates.extend(today.checked_sub_days(Days::new(1)));
    }
    if 86_400 - since_midnight <= grace {
        dates.extend(today.checked_add_days(Days::new(1)));
    }
    let mut matched = subtle::Choice::from(0);
    for date in dates {
        let expected = coocenter_key(auth.webkey.expose(), date);
        matched |= expected.as_bytes().ct_eq(presented.as_bytes());
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(AuthFailure::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use chrono::{FixedOffset, TimeZone};

    fn hmac_auth(encoding: SignatureEncoding, prefix: Option<&str>) -> HmacAuth {
        HmacAuth {
            secret: Secret::from("It's a Secret to Everybody"),
            header: http::HeaderName::from_static("x-signature"),
            encoding,
            prefix: prefix.map(str::to_owned),
        }
    }

    #[test]
    fn test_hmac_known_vector() {
        // GitHub's documented example for X-Hub-Signature-256.
        let auth = hmac_auth(SignatureEncoding::Hex, Some("sha256="));
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(check_hmac(&auth, Some(good), b"Hello, World!"), Ok(()));
        let upper = good.to_ascii_uppercase().replace("SHA256=", "sha256=");
        assert_eq!(check_hmac(&auth, Some(&upper), b"Hello, World!"), Ok(()));
        assert_eq!(
            check_hmac(&auth, Some(good), b"Hello, World?"),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            check_hmac(&auth, Some(&good[7..]), b"Hello, World!"),
            Err(AuthFailure::BadSignature),
            "prefix is required when configured"
        );
        assert_eq!(
            check_hmac(&auth, None, b"x"),
            Err(AuthFailure::MissingSignature)
        );
    }

    #[test]
    fn test_hmac_base64() {
        let auth = hmac_auth(SignatureEncoding::Base64, None);
        let sig = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=";
        assert_eq!(check_hmac(&auth, Some(sig), b"Hello, World!"), Ok(()));
        assert_eq!(
            check_hmac(&auth, Some("not base64!"), b"Hello, World!"),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn test_standard_webhooks_spec_vector() {
        // The example from the Standard Webhooks reference libraries.
        let auth = StandardWebhooksAuth {
            secrets: vec![
                Secret::from(b"other-key".to_vec()),
                Secret::from(BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
            ],
            tolerance: Duration::from_secs(300),
        };
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = "1614265330";
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let header = format!("v1a,AAAA v1,bm90IGl0 {good}");
        assert_eq!(
            check_standard_webhooks(&auth, id, timestamp, &header, body),
            Ok(())
        );
        assert_eq!(
            check_standard_webhooks(&auth, id, "1614265331", good, body),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            check_standard_webhooks(&auth, id, timestamp, "v1a,AAAA", body),
            Err(AuthFailure::MissingSignature)
        );
    }

    #[test]
    fn test_timestamp_tolerance_both_ways() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let five_minutes = Duration::from_secs(300);
        assert_eq!(check_timestamp("1700000300", five_minutes, now), Ok(()));
        assert_eq!(check_timestamp("1699999700", five_minutes, now), Ok(()));
        assert_eq!(
            check_timestamp("1700000301", five_minutes, now),
            Err(AuthFailure::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp("1699999699", five_minutes, now),
            Err(AuthFailure::StaleTimestamp)
        );
        assert_eq!(
            check_timestamp("17e8", five_minutes, now),
            Err(AuthFailure::BadTimestamp)
        );
    }

    fn coocenter() -> CooCenterAuth {
        CooCenterAuth {
            webkey: Secret::from("webkey123"),
            utc_offset: FixedOffset::east_opt(8 * 3600).unwrap(),
            grace: Duration::from_secs(300),
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn test_coocenter_key_is_md5_of_key_and_date() {
        // md5("webkey1232024-03-01"), computed independently with `md5sum`.
        assert_eq!(
            coocenter_key(b"webkey123", date(2024, 3, 1)),
            "9d8c096a52f6155682b6f73f32f2e6e8"
        );
    }

    #[test]
    fn test_coocenter_uses_local_date_and_grace() {
        let auth = coocenter();
        // 2024-03-01 16:02:00 UTC is 2024-03-02 00:02:00 at +08:00: inside the grace period.
        let after_midnight = Utc.with_ymd_and_hms(2024, 3, 1, 16, 2, 0).unwrap();
        let today = coocenter_key(b"webkey123", date(2024, 3, 2));
        let yesterday = coocenter_key(b"webkey123", date(2024, 3, 1));
        assert_eq!(check_coocenter(&auth, Some(&today), after_midnight), Ok(()));
        assert_eq!(
            check_coocenter(&auth, Some(&yesterday), after_midnight),
            Ok(())
        );
        let upper = yesterday.to_ascii_uppercase();
        assert_eq!(check_coocenter(&auth, Some(&upper), after_midnight), Ok(()));
        // 00:06 local: the grace period is over.
        let later = Utc.with_ymd_and_hms(2024, 3, 1, 16, 6, 0).unwrap();
        assert_eq!(
            check_coocenter(&auth, Some(&yesterday), later),
            Err(AuthFailure::BadSignature)
        );
        // 23:58 local on 03-01: the PBX may already be on 03-02.
        let before_midnight = Utc.with_ymd_and_hms(2024, 3, 1, 15, 58, 0).unwrap();
        assert_eq!(
            check_coocenter(&auth, Some(&today), before_midnight),
            Ok(())
        );
        assert_eq!(
            check_coocenter(&auth, None, later),
            Err(AuthFailure::MissingSignature)
        );
    }
}
