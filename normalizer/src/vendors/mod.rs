//! One module per dialect. Each exposes `map(push, payload, ctx) -> Result<(dedupe key, drafts)>`.

pub mod coocenter;
pub mod journey;
pub mod sevenmoor;
pub mod uincall;
