//! The one error type of the crate.

/// Why evidence could not be built, signed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// A key could not be read (wrong PEM label, wrong algorithm, wrong length).
    #[error("key: {0}")]
    Key(String),
    /// The run's material is not usable (plan does not decode, journal does not replay).
    #[error("run material: {0}")]
    Material(String),
    /// A document could not be encoded or decoded.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The signer failed.
    #[error("signing: {0}")]
    Signing(String),
}
