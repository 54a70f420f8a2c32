//! The `[sources.<name>.auth]` table and its validation into [`SourceAuth`].

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::FixedOffset;
use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

use super::{
    CooCenterAuth, HmacAuth, IpAllowlist, Secret, SignatureEncoding, SourceAuth,
    StandardWebhooksAuth, TokenAuth,
};
use crate::config::{ConfigError, Result};

/// Shortest accepted path/query token: a shorter secret is guessable.
const MIN_TOKEN_CHARS: usize = 16;

/// Per-source authentication, all checks off by default. Every configured check must pass.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceAuthConfig {
    /// Secret token the sender must present, as the last path segment
    /// (`/hooks/{source}/{token}`) or in the query parameter `token_query_param`. At least 16
    /// characters of `[A-Za-z0-9._~-]` (URL-safe, so it is compared as raw text). Unset: no check.
    pub token: Option<Secret>,
    /// Name of the query parameter that may carry `token`. The parameter is removed from the
    /// stored query string so the secret never reaches the log. Default `token`.
    pub token_query_param: String,
    /// Client addresses allowed to push, as IPs or CIDRs (`10.0.0.0/8`, `203.0.113.7`).
    /// Empty: any address.
    pub ip_allowlist: Vec<String>,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` is trusted to name the client for
    /// `ip_allowlist`. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// HMAC-SHA256 signature of the body in a header. Unset: no check.
    pub hmac: Option<HmacConfig>,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`). Unset: no check.
    pub standard_webhooks: Option<StandardWebhooksConfig>,
    /// ZYCOO CooCenter `Authorization: md5(WEBKEY + "YYYY-MM-DD")`. Unset: no check.
    pub coocenter_webkey: Option<CooCenterWebkeyConfig>,
}

impl Default for SourceAuthConfig {
    fn default() -> Self {
        Self {
            token: None,
            token_query_param: "token".to_owned(),
            ip_allowlist: Vec::new(),
            trusted_proxies: Vec::new(),
            hmac: None,
            standard_webhooks: None,
            coocenter_webkey: None,
        }
    }
}

/// HMAC-SHA256 over the exact body bytes, carried in a header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The shared secret, used as raw UTF-8 bytes for the HMAC key.
    pub secret: Secret,
    /// The header carrying the signature. Default `x-signature`.
    #[serde(default = "default_hmac_header")]
    pub header: String,
    /// How the signature is written: `hex` (either case) or `base64` (standard alphabet).
    /// Default `hex`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// A prefix before the encoded signature, e.g. `sha256=`. Default none.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_hmac_header() -> String {
    "x-signature".to_owned()
}

/// Standard Webhooks verification (<https://www.standardwebhooks.com>).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooksConfig {
    /// Accepted signing secrets, each `whsec_<base64>` (the prefix is optional). Several are
    /// allowed for key rotation; a push signed by any of them passes.
    pub secrets: Vec<Secret>,
    /// Largest allowed difference, in seconds, between `webhook-timestamp` and our clock, in
    /// either direction. Default 300.
    #[serde(default = "default_tolerance_seconds")]
    pub tolerance_seconds: u64,
}

fn default_tolerance_seconds() -> u64 {
    300
}

/// ZYCOO CooCenter daily key: `Authorization` (or `Authentication`) =
/// lowercase hex `md5(WEBKEY + "YYYY-MM-DD")`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooCenterWebkeyConfig {
    /// The PBX's `WEBKEY` from api.conf.
    pub webkey: Secret,
    /// The PBX's UTC offset, which decides the date in the hash, as `+HH:MM`. Default `+08:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Seconds around local midnight during which the neighbouring day's key is also accepted
    /// (covers clock skew between the PBX and us). Default 300.
    #[serde(default = "default_grace_seconds")]
    pub grace_seconds: u64,
}

fn default_utc_offset() -> String {
    "+08:00".to_owned()
}

fn default_grace_seconds() -> u64 {
    300
}

fn auth_error(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Auth {
        field,
        problem: problem.into(),
    }
}

impl SourceAuthConfig {
    /// Checks every field and returns the runtime auth of one source.
    pub fn validate(&self) -> Result<SourceAuth> {
        Ok(SourceAuth {
            token: self.validate_token()?,
            ip: self.validate_ip()?,
            hmac: self.hmac.as_ref().map(HmacConfig::validate).transpose()?,
            standard_webhooks: self
                .standard_webhooks
                .as_ref()
                .map(StandardWebhooksConfig::validate)
                .transpose()?,
            coocenter: self
                .coocenter_webkey
                .as_ref()
                .map(CooCenterWebkeyConfig::validate)
                .transpose()?,
        })
    }

    fn validate_token(&self) -> Result<Option<TokenAuth>> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let url_safe = token
            .expose()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if token.expose().len() < MIN_TOKEN_CHARS || !url_safe {
            return Err(auth_error(
                "token",
                "must be at least 16 characters of [A-Za-z0-9._~-]",
            ));
        }
        let param = self.token_query_param.as_str();
        if param.is_empty() || param.contains(['&', '=', '#', ' ']) {
            return Err(auth_error("token_query_param", "must be a plain name"));
        }
        Ok(Some(TokenAuth {
            token: token.clone(),
            query_param: param.to_owned(),
        }))
    }

    fn validate_ip(&self) -> Result<Option<IpAllowlist>> {
        if self.ip_allowlist.is_empty() {
            if !self.trusted_proxies.is_empty() {
                return Err(auth_error("trusted_proxies", "needs `ip_allowlist`"));
            }
            return Ok(None);
        }
        Ok(Some(IpAllowlist {
            allowed: parse_nets("ip_allowlist", &self.ip_allowlist)?,
            trusted_proxies: parse_nets("trusted_proxies", &self.trusted_proxies)?,
        }))
    }
}

fn parse_nets(field: &'static str, entries: &[String]) -> Result<Vec<IpNet>> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| auth_error(field, format!("`{entry}` is not an IP or CIDR")))
        })
        .collect()
}

impl HmacConfig {
    fn validate(&self) -> Result<HmacAuth> {
        if self.secret.expose().is_empty() {
            return Err(auth_error("hmac.secret", "must not be empty"));
        }
        let header = HeaderName::from_bytes(self.header.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| auth_error("hmac.header", "is not a valid header name"))?;
        Ok(HmacAuth {
            secret: self.secret.clone(),
            header,
            encoding: self.encoding,
            prefix: self.prefix.clone().filter(|prefix| !prefix.is_empty()),
        })
    }
}

impl StandardWebhooksConfig {
    fn validate(&self) -> Result<StandardWebhooksAuth> {
        if self.secrets.is_empty() {
            return Err(auth_error("standard_webhooks.secrets", "needs one secret"));
        }
        let secrets = self
            .secrets
            .iter()
            .map(|secret| {
                let text = std::str::from_utf8(secret.expose()).unwrap_or_default();
                let encoded = text.strip_prefix("whsec_").unwrap_or(text);
                match BASE64.decode(encoded) {
                    Ok(key) if !key.is_empty() => Ok(Secret::from(key)),
                    _ => Err(auth_error(
                        "standard_webhooks.secrets",
                        "each must be `whsec_` followed by non-empty base64",
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if self.tolerance_seconds == 0 || self.tolerance_seconds > 86_400 {
            return Err(auth_error(
                "standard_webhooks.tolerance_seconds",
                "must be between 1 and 86400",
            ));
        }
        Ok(StandardWebhooksAuth {
            secrets,
            tolerance: Duration::from_secs(self.tolerance_seconds),
        })
    }
}

impl CooCenterWebkeyConfig {
    fn validate(&self) -> Result<CooCenterAuth> {
        if self.webkey.expose().is_empty() {
            return Err(auth_error("coocenter_webkey.webkey", "must not be empty"));
        }
        let utc_offset = self
            .utc_offset
            .parse::<FixedOffset>()
            .map_err(|_| auth_error("coocenter_webkey.utc_offset", "must look like `+08:00`"))?;
        if self.grace_seconds > 3_600 {
            return Err(auth_error(
                "coocenter_webkey.grace_seconds",
                "must be at most 3600",
            ));
        }
        Ok(CooCenterAuth {
            webkey: self.webkey.clone(),
            utc_offset,
            grace: Duration::from_secs(self.grace_seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SourceAuthConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn test_default_is_open() {
        let auth = SourceAuthConfig::default().validate().unwrap();
        assert!(auth.is_open());
    }

    #[test]
    fn test_full_toml_validates() {
        let config = parse(
            r#"
            token = "abcdefghijklmnop"
            ip_allowlist = ["10.0.0.0/8", "203.0.113.7"]
            trusted_proxies = ["127.0.0.1"]
            [hmac]
            secret = "s3cret"
            header = "X-Hub-Signature-256"
            encoding = "base64"
            prefix = "sha256="
            [standard_webhooks]
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            [coocenter_webkey]
            webkey = "k"
            "#,
        );
        assert_eq!(config.token_query_param, "token");
        let auth = config.validate().unwrap();
        assert!(!auth.is_open());
        let hmac = auth.hmac.as_ref().unwrap();
        assert_eq!(hmac.header.as_str(), "x-hub-signature-256");
        assert_eq!(hmac.encoding, SignatureEncoding::Base64);
        let cc = auth.coocenter.as_ref().unwrap();
        assert_eq!(cc.utc_offset.local_minus_utc(), 8 * 3600);
        assert_eq!(cc.grace, Duration::from_secs(300));
        assert_eq!(auth.ip.as_ref().unwrap().allowed.len(), 2);
    }

    #[test]
    fn test_secrets_are_redacted_in_debug() {
        let config = parse("token = \"abcdefghijklmnopq\"");
        assert!(!format!("{config:?}").contains("abcdefghijklmnopq"));
        assert!(!format!("{:?}", config.validate().unwrap()).contains("abcdefghijklmnopq"));
    }

    #[test]
    fn test_rejects_bad_values() {
        for text in [
            "token = \"short\"",
            "token = \"has a space in it..\"",
            "ip_allowlist = [\"10.0.0.0/33\"]",
            "trusted_proxies = [\"10.0.0.1\"]",
            "[hmac]\nsecret = \"\"",
            "[standard_webhooks]\nsecrets = [\"whsec_!!!\"]",
            "[standard_webhooks]\nsecrets = []",
            "[coocenter_webkey]\nwebkey = \"k\"\nutc_offset = \"8\"",
        ] {
            assert!(parse(text).validate().is_err(), "{text}");
        }
        assert!(toml::from_str::<SourceAuthConfig>("tokn = \"x\"").is_err());
        assert!(toml::from_str::<SourceAuthConfig>("[hmac]\nsecret=\"a\"\nalgo=\"x\"").is_err());
    }
}
