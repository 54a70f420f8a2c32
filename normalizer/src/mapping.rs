//! The entry point: one raw push in, its dedupe key and canonical events out.

use crate::build::{finish, Mapped};
use crate::error::Result;
use crate::payload::parse_payload;
use crate::push::{Dialect, RawPush, SourceContext};
use crate::vendors;

/// Maps one raw push to zero or more canonical events. Pure: no I/O, no clock (the receive
/// time comes with the push), never panics; a push it cannot map is a typed [`MapError`]
/// whose [`MapError::reason`] becomes the dead letter's reason.
///
/// [`MapError`]: crate::MapError
/// [`MapError::reason`]: crate::MapError::reason
pub fn map_push(push: &RawPush<'_>, ctx: &SourceContext) -> Result<Mapped> {
    let payload = parse_payload(push, ctx)?;
    let (dedupe_key, drafts) = match ctx.dialect {
        Dialect::SevenMoor => vendors::sevenmoor::map(push, payload, ctx)?,
        Dialect::CooCenter => vendors::coocenter::map(push, payload, ctx)?,
        Dialect::UinCall => vendors::uincall::map(push, payload, ctx)?,
    };
    Ok(finish(drafts, push, ctx, dedupe_key))
}
