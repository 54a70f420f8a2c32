//! Placeholder: the mapper lands next.

use crate::build::Draft;
use crate::error::{MapError, Result};
use crate::payload::Payload;
use crate::push::{RawPush, SourceContext};

/// Maps one push of this dialect.
pub fn map(
    _push: &RawPush<'_>,
    payload: Payload,
    _ctx: &SourceContext,
) -> Result<(String, Vec<Draft>)> {
    Err(MapError::UnknownEvent(format!(
        "{} fields",
        payload.fields.len()
    )))
}
