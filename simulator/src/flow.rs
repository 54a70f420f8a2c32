//! The simulated world: dialects, call flows, their pushes and what each call must become.
//!
//! A [`Flow`] is one thing that happens at a call center, told the way one vendor tells it: a
//! call (inbound or outbound, answered or not, maybe transferred) or an agent's session. It
//! carries its pushes in the order the vendor would send them and, for every call it creates,
//! the `calls` row the mapper and the SQLite sink must produce ([`ExpectedCall`]).

use std::fmt;
use std::str::FromStr;

use callhook_normalizer::Dialect;
use callhook_schemas::{Direction, DispositionValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A vendor dialect the simulator speaks. 7moor's v7 and v2 shapes are separate dialects here
/// (separately mixable) although one callhook source accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SimDialect {
    /// 7moor v7 JSON pushes.
    #[serde(rename = "7moor")]
    SevenMoorV7,
    /// 7moor legacy v2 GET query strings.
    #[serde(rename = "7moor-v2")]
    SevenMoorV2,
    /// ZYCOO CooCenter JS-object-literal bodies.
    #[serde(rename = "coocenter")]
    CooCenter,
    /// UinCall 云客服 JSON pushes.
    #[serde(rename = "uincall")]
    UinCall,
}

impl SimDialect {
    /// Every dialect, in the order of the default mix.
    pub const ALL: [SimDialect; 4] = [
        SimDialect::SevenMoorV7,
        SimDialect::SevenMoorV2,
        SimDialect::CooCenter,
        SimDialect::UinCall,
    ];

    /// Returns the name used on the command line and in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            SimDialect::SevenMoorV7 => "7moor",
            SimDialect::SevenMoorV2 => "7moor-v2",
            SimDialect::CooCenter => "coocenter",
            SimDialect::UinCall => "uincall",
        }
    }

    /// Returns the normalizer dialect of the source this dialect is pushed to.
    pub fn normalizer_dialect(self) -> Dialect {
        match self {
            SimDialect::SevenMoorV7 | SimDialect::SevenMoorV2 => Dialect::SevenMoor,
            SimDialect::CooCenter => Dialect::CooCenter,
            SimDialect::UinCall => Dialect::UinCall,
        }
    }

    /// Returns the default source name (`/hooks/<name>`): the default config's sources.
    pub fn default_source(self) -> &'static str {
        self.normalizer_dialect().as_str()
    }
}

impl fmt::Display for SimDialect {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for SimDialect {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SimDialect::ALL
            .into_iter()
            .find(|dialect| dialect.as_str() == text)
            .ok_or_else(|| {
                format!("unknown dialect `{text}` (expected 7moor, 7moor-v2, coocenter or uincall)")
            })
    }
}

/// What happens in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// A customer calls in and an agent answers.
    InboundAnswered,
    /// A customer calls in, an agent's phone rings, nobody answers.
    InboundNoAnswer,
    /// A customer calls in and hangs up while waiting in the queue (or the IVR).
    InboundAbandoned,
    /// A customer calls in and is refused (blacklist).
    InboundBlocked,
    /// An inbound call answered by one agent and transferred to another.
    InboundTransferred,
    /// An agent calls a customer who answers.
    OutboundAnswered,
    /// An agent calls a customer who does not answer.
    OutboundNoAnswer,
    /// An agent calls a customer whose line is busy.
    OutboundBusy,
    /// An agent's call fails at the line.
    OutboundFailed,
    /// An agent logs in, changes status, logs out; no call.
    AgentSession,
}

impl Scenario {
    /// Returns the snake_case name (as in the ledger and the report).
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::InboundAnswered => "inbound_answered",
            Scenario::InboundNoAnswer => "inbound_no_answer",
            Scenario::InboundAbandoned => "inbound_abandoned",
            Scenario::InboundBlocked => "inbound_blocked",
            Scenario::InboundTransferred => "inbound_transferred",
            Scenario::OutboundAnswered => "outbound_answered",
            Scenario::OutboundNoAnswer => "outbound_no_answer",
            Scenario::OutboundBusy => "outbound_busy",
            Scenario::OutboundFailed => "outbound_failed",
            Scenario::AgentSession => "agent_session",
        }
    }
}

/// The `calls` row a simulated call must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedCall {
    /// The vendor-scoped call id (`calls.call_id`).
    pub call_id: String,
    /// `calls.direction`.
    pub direction: Direction,
    /// `calls.disposition` (`None`: the vendor never says, and nothing was answered).
    pub disposition: Option<DispositionValue>,
    /// `calls.parent_call_id` (transferred legs).
    pub parent_call_id: Option<String>,
}

/// One HTTP request exactly as the vendor sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The query string (without `?`), if any.
    pub query: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body (every generated body is UTF-8 text).
    pub body: String,
}

impl VendorRequest {
    /// A POST with a body.
    pub fn post(content_type: Option<&str>, body: String) -> Self {
        VendorRequest {
            method: "POST".to_owned(),
            query: None,
            content_type: content_type.map(str::to_owned),
            body,
        }
    }

    /// A GET with a query string.
    pub fn get(query: String) -> Self {
        VendorRequest {
            method: "GET".to_owned(),
            query: Some(query),
            content_type: None,
            body: String::new(),
        }
    }
}

/// One push of a flow, before it is scheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPush {
    /// The call it belongs to (`None`: agent-only pushes such as logins and status changes).
    pub call_id: Option<String>,
    /// The vendor time of the occurrence (orders the flow's pushes).
    pub vendor_time: DateTime<Utc>,
    /// A short label (`v7/callStatus/link`), for reports and tests.
    pub label: String,
    /// The request.
    pub request: VendorRequest,
}

/// One simulated flow: its pushes in vendor order and the calls it must leave behind.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The flow's index in the run (0-based); with the seed, it determines the flow.
    pub index: u64,
    /// The dialect it is told in.
    pub dialect: SimDialect,
    /// What happens.
    pub scenario: Scenario,
    /// The calls it creates, with their expected rows.
    pub calls: Vec<ExpectedCall>,
    /// The pushes, in the order the vendor sends them.
    pub pushes: Vec<FlowPush>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dialect_names_round_trip() {
        for dialect in SimDialect::ALL {
            assert_eq!(dialect.as_str().parse::<SimDialect>().unwrap(), dialect);
            let json = serde_json::to_string(&dialect).unwrap();
            assert_eq!(json, format!("\"{}\"", dialect.as_str()));
        }
        assert!("genesys".parse::<SimDialect>().is_err());
        assert_eq!(SimDialect::SevenMoorV2.default_source(), "7moor");
    }
}
