//! Which side of a dial is a PBX extension and which the outside world, read from Asterisk
//! channel names (`SIP/886-00000065`, `DAHDI/i1/18782985586-51`) and, failing that, numbers.
//!
//! CooCenter's dial events carry no call type, so their `direction` and agent extension are
//! inferred here. The rules, in order, for each side:
//! 1. `SIP/`, `PJSIP/`, `IAX2/`, `IAX/` channels: the peer name (before the `-<hex>` channel
//!    sequence) is an extension when it is 2–6 digits, a trunk otherwise (`SIP/provider-0001`).
//! 2. `DAHDI/` and `ZAP/` channels dialed by group or span (`i1/`, `g0/`, `r1/`): a trunk.
//!    Plain `DAHDI/1-1` may be an analog extension (FXS) or line (FXO), so it says nothing.
//! 3. `Local/` channels: a dialplan target on the PBX (a queue, an IVR, a ring group), not a
//!    phone, so never an agent extension even when its number looks like one (`630`).
//! 4. Any other channel, or none: the number decides; 2–6 digits is an extension, 7 or more
//!    is an outside number, anything else says nothing.
//!
//! Direction: outside → extension or dialplan is inbound, extension → outside outbound,
//! extension → extension or dialplan internal; anything else (a `Local/` leg dialing an
//! agent, trunk to trunk) is unknown.

use callhook_schemas::Direction;

/// What one side of a call looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Side {
    /// A PBX extension, with its number.
    Extension(String),
    /// A dialplan target on the PBX (`Local/…`): a queue, IVR or ring group.
    Dialplan,
    /// A trunk or an outside number.
    External,
    /// Nothing conclusive.
    Unknown,
}

/// Classifies one side from its channel name (preferred) and its number.
pub(super) fn classify(channel: Option<&str>, number: Option<&str>) -> Side {
    match channel.map(classify_channel) {
        Some(side @ (Side::Extension(_) | Side::Dialplan | Side::External)) => side,
        _ => number.map_or(Side::Unknown, classify_number),
    }
}

/// Returns the call's direction from its two sides.
pub(super) fn direction(caller: &Side, callee: &Side) -> Direction {
    match (caller, callee) {
        (Side::External, Side::Extension(_) | Side::Dialplan) => Direction::Inbound,
        (Side::Extension(_), Side::External) => Direction::Outbound,
        (Side::Extension(_), Side::Extension(_) | Side::Dialplan) => Direction::Internal,
        _ => Direction::Unknown,
    }
}

/// Returns the extension on the call center's side: the dialed one if it is an extension
/// (the phone that rings), else the calling one (an agent dialing out).
pub(super) fn agent_extension(caller: Side, callee: Side) -> Option<String> {
    match (caller, callee) {
        (_, Side::Extension(extension)) | (Side::Extension(extension), _) => Some(extension),
        _ => None,
    }
}

/// Returns true for a 2–6 digit number, the extension plan of a CooCenter PBX.
pub(super) fn is_extension_number(number: &str) -> bool {
    (2..=6).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit())
}

fn classify_channel(channel: &str) -> Side {
    let Some((tech, rest)) = channel.trim().split_once('/') else {
        return Side::Unknown;
    };
    match tech.to_ascii_uppercase().as_str() {
        "SIP" | "PJSIP" | "IAX2" | "IAX" => {
            // `SIP/trunk/13800138000` (a dial string through a trunk): the peer comes first.
            let peer = strip_sequence(rest.split('/').next().unwrap_or(rest));
            if !peer.starts_with(|c: char| c.is_alphanumeric()) {
                Side::Unknown
            } else if is_extension_number(peer) {
                Side::Extension(peer.to_owned())
            } else {
                Side::External
            }
        }
        "DAHDI" | "ZAP" if is_group_dial(rest) => Side::External,
        "LOCAL" if !rest.is_empty() => Side::Dialplan,
        _ => Side::Unknown,
    }
}

/// Strips Asterisk's per-channel sequence suffix: `886-00000065` → `886`.
fn strip_sequence(peer: &str) -> &str {
    match peer.rsplit_once('-') {
        Some((name, sequence))
            if !name.is_empty()
                && !sequence.is_empty()
                && sequence.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            name
        }
        _ => peer,
    }
}

/// `i1/…`, `g0/…`, `G1/…`, `r2/…`: a DAHDI span or group, i.e. a trunk line.
fn is_group_dial(rest: &str) -> bool {
    let Some((group, _)) = rest.split_once('/') else {
        return false;
    };
    let mut chars = group.chars();
    matches!(chars.next(), Some('i' | 'g' | 'G' | 'r' | 'R'))
        && !chars.as_str().is_empty()
        && chars.all(|c| c.is_ascii_digit())
}

fn classify_number(number: &str) -> Side {
    let digits = number.trim().strip_prefix('+').unwrap_or(number.trim());
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Side::Unknown;
    }
    if is_extension_number(digits) {
        Side::Extension(digits.to_owned())
    } else if digits.len() >= 7 {
        Side::External
    } else {
        Side::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(number: &str) -> Side {
        Side::Extension(number.to_owned())
    }

    #[test]
    fn test_channels() {
        assert_eq!(classify(Some("SIP/886-00000065"), None), ext("886"));
        assert_eq!(classify(Some("PJSIP/8001-0000001a"), None), ext("8001"));
        assert_eq!(classify(Some("SIP/886"), None), ext("886"));
        assert_eq!(classify(Some("IAX2/812-4821"), None), ext("812"));
        assert_eq!(classify(Some("SIP/provider-0000012"), None), Side::External);
        assert_eq!(
            classify(Some("SIP/trunk/13800138000"), None),
            Side::External
        );
        assert_eq!(
            classify(Some("DAHDI/i1/18782985586-51"), None),
            Side::External
        );
        assert_eq!(classify(Some("DAHDI/g0/13800138000"), None), Side::External);
    }

    #[test]
    fn test_inconclusive_channels_fall_back_to_the_number() {
        assert_eq!(classify(Some("DAHDI/1-1"), Some("801")), ext("801"));
        assert_eq!(
            classify(Some("Local/630@from-queue-0000001;1"), Some("630")),
            Side::Dialplan
        );
        assert_eq!(classify(None, Some("85322361")), Side::External);
        assert_eq!(classify(None, Some("s")), Side::Unknown);
        assert_eq!(classify(None, Some("1")), Side::Unknown);
        assert_eq!(classify(None, None), Side::Unknown);
        assert_eq!(classify(Some(""), Some("808")), ext("808"));
        assert_eq!(classify(Some("SIP/-0001"), Some("808")), ext("808"));
    }

    #[test]
    fn test_direction_table() {
        assert_eq!(direction(&Side::External, &ext("886")), Direction::Inbound);
        assert_eq!(direction(&ext("808"), &Side::External), Direction::Outbound);
        assert_eq!(direction(&ext("808"), &ext("809")), Direction::Internal);
        assert_eq!(
            direction(&Side::External, &Side::External),
            Direction::Unknown
        );
        assert_eq!(direction(&Side::Unknown, &ext("809")), Direction::Unknown);
        assert_eq!(
            direction(&Side::External, &Side::Dialplan),
            Direction::Inbound
        );
        assert_eq!(direction(&ext("808"), &Side::Dialplan), Direction::Internal);
        assert_eq!(direction(&Side::Dialplan, &ext("8001")), Direction::Unknown);
    }

    #[test]
    fn test_agent_extension_prefers_the_dialed_side() {
        assert_eq!(
            agent_extension(ext("808"), ext("809")).as_deref(),
            Some("809")
        );
        assert_eq!(
            agent_extension(ext("808"), Side::External).as_deref(),
            Some("808")
        );
        assert_eq!(agent_extension(Side::External, Side::Unknown), None);
        assert_eq!(agent_extension(Side::External, Side::Dialplan), None);
        assert_eq!(
            agent_extension(Side::Dialplan, ext("8001")).as_deref(),
            Some("8001")
        );
    }
}
