//! Keys: the [`EvidenceSigner`] port, its Ed25519 implementation, public keys and key ids.
//!
//! Key formats (docs/EVIDENCE.md): a private key is PEM `PRIVATE KEY` holding a PKCS#8
//! `PrivateKeyInfo` for Ed25519 (RFC 8410; what `openssl genpkey -algorithm ed25519` and
//! `taskrunner keygen` write; the v2 form with the public key is accepted too); a public key is
//! PEM `PUBLIC KEY` holding a `SubjectPublicKeyInfo` (RFC 8410; `openssl pkey -pubout`). The
//! key id is the lowercase hex SHA-256 of the SubjectPublicKeyInfo DER bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::EvidenceError;

/// DER prefix of an Ed25519 `PrivateKeyInfo` (v1) before the 32-byte seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 `OneAsymmetricKey` (v2, with the public key) before the seed.
const PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// `[1] IMPLICIT BIT STRING` of 33 bytes (0 unused bits) before the public key in v2.
const PKCS8_V2_PUBLIC: [u8; 3] = [0x81, 0x21, 0x00];
/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` before the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The port the evidence is signed through: a key kept elsewhere (a file today; a KMS or HSM
/// adapter later) signs the DSSE pre-authentication encoding.
pub trait EvidenceSigner: Send + Sync + std::fmt::Debug {
    /// The key id written into each signature (`keyid`).
    fn key_id(&self) -> &str;
    /// The public half, as served by `GET /evidence/keys` and written by `export`.
    fn public_key(&self) -> PublicKey;
    /// The raw signature of `message` (64 bytes for Ed25519).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, EvidenceError>;
}

/// A public key that evidence can be verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    /// From PEM `PUBLIC KEY` text.
    pub fn from_pem(text: &str) -> Result<PublicKey, EvidenceError> {
        let der = pem_body(text, "PUBLIC KEY")?;
        PublicKey::from_spki_der(&der)
    }

    /// From `SubjectPublicKeyInfo` DER bytes.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, EvidenceError> {
        let raw = der
            .strip_prefix(&SPKI_PREFIX)
            .filter(|rest| rest.len() == 32)
            .ok_or_else(|| {
                EvidenceError::Key("not an Ed25519 SubjectPublicKeyInfo (RFC 8410)".into())
            })?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(raw);
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| EvidenceError::Key(format!("invalid Ed25519 public key: {e}")))?;
        Ok(PublicKey::from_verifying_key(key))
    }

    fn from_verifying_key(key: VerifyingKey) -> PublicKey {
        let key_id = key_id_of_spki(&spki_der(&key));
        PublicKey { key, key_id }
    }

    /// `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        "ed25519"
    }

    /// The key id (hex SHA-256 of the SubjectPublicKeyInfo DER).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `SubjectPublicKeyInfo` DER bytes.
    pub fn spki_der(&self) -> Vec<u8> {
        spki_der(&self.key)
    }

    /// PEM `PUBLIC KEY` text.
    pub fn to_pem(&self) -> String {
        to_pem("PUBLIC KEY", &self.spki_der())
    }

    /// Whether `signature` is a valid (strict) signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match ed25519_dalek::Signature::from_slice(signature) {
            Ok(sig) => self.key.verify_strict(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// The key id of a `SubjectPublicKeyInfo`: lowercase hex SHA-256 of its DER bytes.
pub fn key_id_of_spki(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    der
}

/// An Ed25519 key held in memory.
pub struct Ed25519Signer {
    key: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// From a 32-byte seed (the caller supplies the randomness).
    pub fn from_seed(seed: [u8; 32]) -> Ed25519Signer {
        let key = SigningKey::from_bytes(&seed);
        let public = PublicKey::from_verifying_key(key.verifying_key());
        Ed25519Signer { key, public }
    }

    /// From PEM `PRIVATE KEY` text (PKCS#8, RFC 8410).
    pub fn from_pkcs8_pem(text: &str) -> Result<Ed25519Signer, EvidenceError> {
        let der = pem_body(text, "PRIVATE KEY")?;
        let (seed, public) = if let Some(rest) = der.strip_prefix(&PKCS8_V1_PREFIX) {
            (rest, None)
        } else if let Some(rest) = der.strip_prefix(&PKCS8_V2_PREFIX) {
            match rest.len() {
                67 if rest[32..35] == PKCS8_V2_PUBLIC => (&rest[..32], Some(&rest[35..])),
                _ => (rest, Some(&[][..])),
            }
        } else {
            return Err(EvidenceError::Key(
                "not an Ed25519 PKCS#8 private key (RFC 8410); ECDSA and RSA keys are not supported"
                    .into(),
            ));
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| EvidenceError::Key("Ed25519 private key must be 32 bytes".into()))?;
        let signer = Ed25519Signer::from_seed(seed);
        if let Some(public) = public
            && public != signer.public.key.as_bytes()
        {
            return Err(EvidenceError::Key(
                "the public key in the PKCS#8 document does not match its private key".into(),
            ));
        }
        Ok(signer)
    }

    /// PEM `PRIVATE KEY` text (PKCS#8 v1).
    pub fn to_pkcs8_pem(&self) -> String {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(self.key.as_bytes());
        to_pem("PRIVATE KEY", &der)
    }
}

impl EvidenceSigner for Ed25519Signer {
    fn key_id(&self) -> &str {
        &self.public.key_id
    }
    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}

/// The DER bytes of the one PEM block labelled `label` in `text`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, EvidenceError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| {
        let found = text
            .lines()
            .find(|l| l.starts_with("-----BEGIN "))
            .unwrap_or("no PEM block");
        EvidenceError::Key(format!("expected a PEM `{label}` block, found {found:?}"))
    })?;
    let body = &text[start + begin.len()..];
    let stop = body
        .find(&end)
        .ok_or_else(|| EvidenceError::Key(format!("PEM `{label}` block has no END line")))?;
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| EvidenceError::Key(format!("PEM `{label}` body is not base64: {e}")))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8410 §10.3: the example private key and its public key.
    const RFC8410_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";
    const RFC8410_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn reads_the_rfc_8410_example_keys_and_they_match() {
        let signer = Ed25519Signer::from_pkcs8_pem(RFC8410_PRIVATE).expect("private key");
        let public = PublicKey::from_pem(RFC8410_PUBLIC).expect("public key");
        assert_eq!(signer.public_key(), public);
        assert_eq!(public.to_pem(), RFC8410_PUBLIC);
        assert_eq!(signer.to_pkcs8_pem(), RFC8410_PRIVATE);
        assert_eq!(signer.key_id(), key_id_of_spki(&public.spki_der()));
        assert_eq!(signer.key_id().len(), 64);
    }

    #[test]
    fn signatures_verify_and_a_flipped_bit_does_not() {
        let signer = Ed25519Signer::from_seed([7; 32]);
        let sig = signer.sign(b"message").expect("sign");
        let public = signer.public_key();
        assert!(public.verify(b"message", &sig));
        assert!(!public.verify(b"messagE", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!public.verify(b"message", &bad));
        assert!(!public.verify(b"message", &sig[..63]));
    }

    #[test]
    fn refuses_wrong_labels_and_algorithms() {
        let err = Ed25519Signer::from_pkcs8_pem(RFC8410_PUBLIC).expect_err("a public key");
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        let err = PublicKey::from_pem(RFC8410_PRIVATE).expect_err("a private key");
        assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
        // A P-256 SubjectPublicKeyInfo is not an Ed25519 one.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYWz8ngMdcJgP6Ge2cJ5bjtnKQ7S1\nOWVCRDL1Y7tyvUj3+5nZR5J3SNwCoTBY6fh9cK/HK7LFfb0IXwp3XTqBNA==\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_pem(p256).expect_err("p256");
        assert!(err.to_string().contains("Ed25519"), "{err}");
        let err = Ed25519Signer::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
        )
        .expect_err("bad base64");
        assert!(err.to_string().contains("base64"), "{err}");
    }
}
