//! Signed run evidence (issue 12 item 4): what an auditor needs to prove, offline, what ran.
//!
//! For a finished run this crate builds two in-toto Statements v1 — one with a SLSA Provenance
//! v1 predicate, one with our gate-verdicts predicate — wraps each in a DSSE envelope signed
//! through the [`EvidenceSigner`] port (Ed25519 or ECDSA P-256), and verifies such evidence against an audit folder's
//! contents (plan, journal, artifacts). The format is documented in `docs/EVIDENCE.md`.
//!
//! Pure: no file, socket or clock. The run's rows come in as [`RunMaterial`] (times are values
//! in it), keys come in as bytes or PEM text, and verification takes file contents, not paths.
//! The journal hash chain is the engine's (`taskrunner_engine::record_hash`), the plan hash the
//! plan crate's (`taskrunner_plan::hash_bytes`): they are recomputed here, never redefined.

mod dsse;
mod error;
mod keys;
mod statement;
mod verify;

pub use dsse::{
    Envelope, EnvelopeSignature, PAYLOAD_TYPE, SIGSTORE_BUNDLE_V03, pae, sign_envelope,
};
pub use error::EvidenceError;
pub use keys::{
    Ed25519Signer, EvidenceSigner, P256Signer, PublicKey, key_id_of_spki, signer_from_pem,
};
pub use statement::sha256_hex;
pub use statement::{
    ArtifactDigest, BUILD_TYPE, Evidence, GATES_PREDICATE_TYPE, PLAN_SUBJECT, RunMaterial,
    SLSA_PROVENANCE_V1, STATEMENT_V1, build_statements, journal_ndjson, sign_evidence,
};
pub use verify::{AuditFolder, Failure, Verified, verify_envelope, verify_folder};
