//! The mapper's input: one raw push and the configuration of the source it arrived on.

use chrono::{DateTime, FixedOffset, Utc};

/// One vendor push as the receiver stored it, borrowed for mapping.
#[derive(Debug, Clone, Copy)]
pub struct RawPush<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// Selected request headers (lowercase names).
    pub headers: &'a [(String, String)],
    /// The exact body bytes.
    pub body: &'a [u8],
    /// When the receiver had the whole push.
    pub received_at: DateTime<Utc>,
}

/// The dialect a source speaks; a closed set dispatched in one `match` ([`crate::map_push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// 7moor: v7 JSON pushes and legacy v2 query-string pushes on one source.
    SevenMoor,
    /// ZYCOO CooCenter (Asterisk-based PBX).
    CooCenter,
    /// UinCall 云客服.
    UinCall,
}

impl Dialect {
    /// Parses a dialect name as written in the config (`7moor`, `coocenter`, `uincall`).
    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "7moor" => Some(Dialect::SevenMoor),
            "coocenter" => Some(Dialect::CooCenter),
            "uincall" => Some(Dialect::UinCall),
            _ => None,
        }
    }

    /// Returns the config / vendor name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::SevenMoor => "7moor",
            Dialect::CooCenter => "coocenter",
            Dialect::UinCall => "uincall",
        }
    }
}

/// What a mapper needs to know about the source a push arrived on.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The configured source name (`/hooks/{name}`).
    pub name: String,
    /// The dialect it speaks.
    pub dialect: Dialect,
    /// The account to report when the push carries none.
    pub account: Option<String>,
    /// The zone of the vendor's zone-less local times (default +08:00, China).
    pub utc_offset: FixedOffset,
    /// Query parameters never mapped into events (auth tokens carried in the URL).
    pub redact_params: Vec<String>,
}

impl SourceContext {
    /// Returns a context with the default zone (+08:00) and no configured account.
    pub fn new(name: &str, dialect: Dialect) -> Self {
        SourceContext {
            name: name.to_owned(),
            dialect,
            account: None,
            utc_offset: china_offset(),
            redact_params: Vec::new(),
        }
    }
}

/// Returns UTC+08:00, the zone of every vendor here unless configured otherwise.
pub fn china_offset() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}
