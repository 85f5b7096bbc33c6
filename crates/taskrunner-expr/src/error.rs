//! Error types: [`ParseError`] (syntax, with byte offsets) and [`EvalError`] (evaluation).

/// A syntax error, with the byte offset (into the parsed text) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at offset {offset})")]
pub struct ParseError {
    /// Byte offset into the parsed text where the problem starts.
    pub offset: usize,
    /// Lowercase description without a trailing period.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            offset,
            message: message.into(),
        }
    }
}

/// An evaluation failure. Evaluation is total over data (a missing field is `null`); these
/// are type errors in function calls and exhausted limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("invalid type: {0}")]
    InvalidType(String),
    #[error("invalid arity: {0}")]
    InvalidArity(String),
    #[error("invalid value: {0}")]
    InvalidValue(String),
    #[error("unknown function: {0}")]
    UnknownFunction(String),
    #[error("evaluation budget exhausted (fuel {0})")]
    FuelExhausted(u64),
    #[error("evaluation nested deeper than {0}")]
    TooDeep(usize),
    #[error("result larger than {0} bytes")]
    ResultTooLarge(usize),
}
