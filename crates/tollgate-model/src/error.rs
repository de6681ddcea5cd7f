use thiserror::Error;

/// Why a value could not become part of the model. Every variant names the
/// offending field or kind of value, so API layers can pass the message on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    #[error("{kind} must be 1..={max} bytes, got {len}")]
    Length {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{kind} must start with a letter or digit and contain only [A-Za-z0-9._:@-], got {value:?}"
    )]
    Charset { kind: &'static str, value: String },
    #[error("{kind} {value:?} is not a valid code: {expected}")]
    Code {
        kind: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{field} holds {len} entries, at most {max} are allowed")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{collection} {id}: {source}")]
    Item {
        collection: &'static str,
        id: String,
        source: Box<ModelError>,
    },
}
