//! The entry point: one raw push in, its dedupe key and canonical events out.

use crate::build::{finish, Mapped};
use crate::error::Result;
use crate::payload::parse_payload;
use crate::push::{Dialect, RawPush, SourceContext};
use crate::vendors;

/// The version of the mapping: raised whenever what some push maps to changes (a fix, a new
/// field), and recorded on every event (`mappingversion`). 1 is the mapping before the
/// attribute existed; 2 adds the parser bounds, exact decimals and declared charsets; 3
/// percent-encodes account ids in `source` (a valid URI-reference whatever they hold) and spells
/// every time with nine fractional digits (`callhook_schemas::time`); 4 fills the model v1.1
/// fields (conversation and leg, queue segment, abandon point, disconnect reason, IVR path).
pub const MAPPING_VERSION: u32 = 4;

/// Returns the mapping version in force: [`MAPPING_VERSION`], or the test-only variant's
/// (see `crate::failpoints::MAPPING_VARIANT`).
pub fn mapping_version() -> u32 {
    match crate::failpoints::mapping_variant() {
        true => MAPPING_VERSION + 1000,
        false => MAPPING_VERSION,
    }
}

/// Maps one raw push to zero or more canonical events. Pure: no I/O, no clock (the receive
/// time comes with the push), never panics; a push it cannot map is a typed [`MapError`]
/// whose [`MapError::reason`] becomes the dead letter's reason.
///
/// [`MapError`]: crate::MapError
/// [`MapError::reason`]: crate::MapError::reason
pub fn map_push(push: &RawPush<'_>, ctx: &SourceContext) -> Result<Mapped> {
    if crate::stale::is_notice(push) {
        return crate::stale::map_notice(push, ctx);
    }
    let mut payload = parse_payload(push, ctx)?;
    let variant = crate::failpoints::mapping_variant();
    if variant {
        variant_payload(&mut payload, ctx);
    }
    let (dedupe_key, mut drafts) = match ctx.dialect {
        Dialect::SevenMoor => vendors::sevenmoor::map(push, payload, ctx)?,
        Dialect::CooCenter => vendors::coocenter::map(push, payload, ctx)?,
        Dialect::UinCall => vendors::uincall::map(push, payload, ctx)?,
    };
    if variant {
        variant_drafts(&mut drafts, ctx);
    }
    Ok(finish(drafts, push, ctx, dedupe_key))
}

/// The test-only variant's input change (see `crate::failpoints::MAPPING_VARIANT`).
fn variant_payload(payload: &mut crate::payload::Payload, ctx: &SourceContext) {
    let push_type = payload
        .fields
        .get("pushType")
        .and_then(|value| value.as_str());
    if ctx.dialect == Dialect::SevenMoor && push_type == Some("variantPush") {
        payload
            .fields
            .insert("pushType".to_owned(), "dialoutRing".into());
    }
}

/// The test-only variant's output change (see `crate::failpoints::MAPPING_VARIANT`).
fn variant_drafts(drafts: &mut [crate::build::Draft], ctx: &SourceContext) {
    use callhook_schemas::{Direction, EventType};
    for draft in drafts
        .iter_mut()
        .filter(|_| ctx.dialect == Dialect::SevenMoor)
    {
        if draft.event_type != EventType::CallInitiated
            && draft.data.direction == Direction::Outbound
        {
            draft.data.direction = Direction::Inbound;
        }
    }
}
