//! The mapper's typed error, with a bounded reason code for metrics and dead letters.

/// Why a push could not be mapped. Each becomes a dead letter with [`MapError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The push carried neither a body nor query parameters.
    #[error("push is empty")]
    EmptyPush,
    /// The body is not JSON, a JavaScript object literal, or form encoding.
    #[error("body is not parseable: {0}")]
    UnparseableBody(String),
    /// The payload parsed but has no recognizable event discriminator.
    #[error("payload shape is not recognized: {0}")]
    UnrecognizedShape(String),
    /// The discriminator names an event this dialect does not know.
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    /// A field the event cannot do without is absent or empty.
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    /// The body, or a JSON document inside a field, nests objects and arrays deeper than the
    /// mapper goes ([`crate::limits::MAX_NESTING`]).
    #[error("payload nests deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit that was passed.
        limit: usize,
    },
    /// The body, or the values it holds, are larger than the mapper takes.
    #[error("payload is too large: {0}")]
    TooLarge(String),
    /// A field is present but its value cannot be used.
    #[error("field `{field}` is invalid: {detail}")]
    InvalidField {
        /// The vendor's field name.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl MapError {
    /// Returns the bounded reason code (a metric label and the dead letter's `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            MapError::EmptyPush => "empty_push",
            MapError::UnparseableBody(_) => "unparseable_body",
            MapError::UnrecognizedShape(_) => "unrecognized_shape",
            MapError::UnknownEvent(_) => "unknown_event",
            MapError::MissingField(_) => "missing_field",
            MapError::InvalidField { .. } => "invalid_field",
            MapError::TooDeep { .. } => "too_deep",
            MapError::TooLarge(_) => "too_large",
        }
    }

    /// Every reason code [`MapError::reason`] can return.
    pub const REASONS: [&'static str; 8] = [
        "empty_push",
        "unparseable_body",
        "unrecognized_shape",
        "unknown_event",
        "missing_field",
        "invalid_field",
        "too_deep",
        "too_large",
    ];
}

/// The mapper's result type.
pub type Result<T> = std::result::Result<T, MapError>;
