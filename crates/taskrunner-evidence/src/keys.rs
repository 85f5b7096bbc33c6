//! Keys: the [`EvidenceSigner`] port, its Ed25519 implementation, public keys and key ids.
//!
//! Key formats (docs/EVIDENCE.md): a private key is PEM `PRIVATE KEY` holding a PKCS#8
//! `PrivateKeyInfo` for Ed25519 (RFC 8410; what `openssl genpkey -algorithm ed25519` and
//! `taskrunner keygen` write; the v2 form with the public key is accepted too) or for ECDSA
//! P-256 (RFC 5915/5480; `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`); a
//! public key is PEM `PUBLIC KEY` holding a `SubjectPublicKeyInfo` (`openssl pkey -pubout`).
//! The key id is the lowercase hex SHA-256 of the SubjectPublicKeyInfo DER bytes. ECDSA
//! signatures are written DER-encoded (as securesystemslib and cosign expect) and read in DER
//! or as raw `r || s` (the DSSE spec's test vector).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
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

/// A public key that evidence can be verified with (Ed25519 or ECDSA P-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: Verifying,
    key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verifying {
    Ed25519(VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// From PEM `PUBLIC KEY` text.
    pub fn from_pem(text: &str) -> Result<PublicKey, EvidenceError> {
        let der = pem_body(text, "PUBLIC KEY")?;
        PublicKey::from_spki_der(&der)
    }

    /// From `SubjectPublicKeyInfo` DER bytes (Ed25519 or P-256).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, EvidenceError> {
        if let Some(raw) = der.strip_prefix(&SPKI_PREFIX) {
            let bytes: [u8; 32] = raw
                .try_into()
                .map_err(|_| EvidenceError::Key("Ed25519 public key must be 32 bytes".into()))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| EvidenceError::Key(format!("invalid Ed25519 public key: {e}")))?;
            return Ok(PublicKey::new(Verifying::Ed25519(key)));
        }
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| {
            EvidenceError::Key(
                "not an Ed25519 (RFC 8410) or ECDSA P-256 SubjectPublicKeyInfo".into(),
            )
        })?;
        Ok(PublicKey::new(Verifying::P256(key)))
    }

    fn new(key: Verifying) -> PublicKey {
        let key_id = key_id_of_spki(&spki_der(&key));
        PublicKey { key, key_id }
    }

    /// `ed25519` or `ecdsa-p256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Verifying::Ed25519(_) => "ed25519",
            Verifying::P256(_) => "ecdsa-p256",
        }
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

    /// Whether `signature` is a valid signature of `message` (Ed25519: strict; P-256: DER or
    /// raw `r || s`, SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Verifying::Ed25519(key) => match ed25519_dalek::Signature::from_slice(signature) {
                Ok(sig) => key.verify_strict(message, &sig).is_ok(),
                Err(_) => false,
            },
            Verifying::P256(key) => {
                use p256::ecdsa::signature::Verifier as _;
                let sig = if signature.len() == 64 {
                    p256::ecdsa::Signature::from_slice(signature)
                } else {
                    p256::ecdsa::Signature::from_der(signature)
                };
                sig.is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}

/// The key id of a `SubjectPublicKeyInfo`: lowercase hex SHA-256 of its DER bytes.
pub fn key_id_of_spki(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn spki_der(key: &Verifying) -> Vec<u8> {
    match key {
        Verifying::Ed25519(key) => {
            let mut der = SPKI_PREFIX.to_vec();
            der.extend_from_slice(key.as_bytes());
            der
        }
        Verifying::P256(key) => key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default(),
    }
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
        let public = PublicKey::new(Verifying::Ed25519(key.verifying_key()));
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
                "not an Ed25519 (RFC 8410) or ECDSA P-256 PKCS#8 private key".into(),
            ));
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| EvidenceError::Key("Ed25519 private key must be 32 bytes".into()))?;
        let signer = Ed25519Signer::from_seed(seed);
        if let Some(public) = public
            && Some(public) != signer.public_bytes().as_ref().map(|b| b.as_slice())
        {
            return Err(EvidenceError::Key(
                "the public key in the PKCS#8 document does not match its private key".into(),
            ));
        }
        Ok(signer)
    }

    fn public_bytes(&self) -> Option<[u8; 32]> {
        Some(self.key.verifying_key().to_bytes())
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

/// An ECDSA P-256 key held in memory (SHA-256, deterministic RFC 6979 nonces).
pub struct P256Signer {
    key: p256::ecdsa::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for P256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P256Signer")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl P256Signer {
    /// From the 32-byte big-endian scalar (the caller supplies the randomness).
    pub fn from_scalar(bytes: &[u8]) -> Result<P256Signer, EvidenceError> {
        let key = p256::ecdsa::SigningKey::from_slice(bytes)
            .map_err(|_| EvidenceError::Key("not a valid P-256 private scalar".into()))?;
        Ok(P256Signer::new(key))
    }

    /// From PEM `PRIVATE KEY` text (PKCS#8 with the P-256 curve).
    pub fn from_pkcs8_pem(text: &str) -> Result<P256Signer, EvidenceError> {
        let der = pem_body(text, "PRIVATE KEY")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der)
            .map_err(|_| EvidenceError::Key("not an ECDSA P-256 PKCS#8 private key".into()))?;
        Ok(P256Signer::new(key))
    }

    fn new(key: p256::ecdsa::SigningKey) -> P256Signer {
        let public = PublicKey::new(Verifying::P256(*key.verifying_key()));
        P256Signer { key, public }
    }

    /// PEM `PRIVATE KEY` text (PKCS#8).
    pub fn to_pkcs8_pem(&self) -> Result<String, EvidenceError> {
        use p256::pkcs8::EncodePrivateKey as _;
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| EvidenceError::Key(format!("cannot encode the P-256 key: {e}")))?;
        Ok(to_pem("PRIVATE KEY", der.as_bytes()))
    }

    /// The raw `r || s` signature (the DSSE test vector's encoding).
    pub fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        sig.to_bytes().to_vec()
    }
}

impl EvidenceSigner for P256Signer {
    fn key_id(&self) -> &str {
        &self.public.key_id
    }
    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }
    /// DER-encoded, as securesystemslib and cosign expect.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// A signer from PEM `PRIVATE KEY` text: Ed25519, else ECDSA P-256.
pub fn signer_from_pem(text: &str) -> Result<Box<dyn EvidenceSigner>, EvidenceError> {
    match Ed25519Signer::from_pkcs8_pem(text) {
        Ok(signer) => Ok(Box::new(signer)),
        Err(ed25519) => match P256Signer::from_pkcs8_pem(text) {
            Ok(signer) => Ok(Box::new(signer)),
            Err(_) => Err(ed25519),
        },
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
        let p256 = OPENSSL_P256_PUBLIC;
        let key = PublicKey::from_pem(p256).expect("a P-256 key is accepted");
        assert_eq!(key.algorithm(), "ecdsa-p256");
        assert_eq!(key.key_id(), OPENSSL_P256_KEY_ID);
        // An RSA key is not.
        let rsa = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMvIVVLzR1oaYbkvyTBcmqTSFufJzfJ+\nqZJ6PZnc0bM0YP/Ul53yDfvx7OQWgLvAFWmoJPWDdKIXTQrn8ZQ9Rj8CAwEAAQ==\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_pem(rsa).expect_err("rsa");
        assert!(err.to_string().contains("Ed25519"), "{err}");
        let err = Ed25519Signer::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
        )
        .expect_err("bad base64");
        assert!(err.to_string().contains("base64"), "{err}");
    }

    // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` and `openssl pkey
    // -pubout`; the key id from `openssl pkey -pubin -outform DER | sha256sum`.
    const OPENSSL_P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\n\
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLkDuE+fRDoydR9Wt\n\
        9/RIM5+Kf4iKAz/n8F4PZye1OnihRANCAAQTik+bhavT6Is2i/uCm1Ss55bGNO6Y\n\
        3baQrDX8ckc3OLvRXc1pnPEjbwpo5pGv4jy4jizTevvdzyzvwxMl+9Oq\n\
        -----END PRIVATE KEY-----\n";
    const OPENSSL_P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEE4pPm4Wr0+iLNov7gptUrOeWxjTu\n\
        mN22kKw1/HJHNzi70V3NaZzxI28KaOaRr+I8uI4s03r73c8s78MTJfvTqg==\n\
        -----END PUBLIC KEY-----\n";
    const OPENSSL_P256_KEY_ID: &str =
        "37ab8a73cd58f80067f0dc64d6a4f024ab1e54c03e8ee988c7d683bfd622f95d";

    // DSSE protocol.md, "Test Vectors": ECDSA P-256, SHA-256, RFC 6979, raw r || s.
    const DSSE_D: &str = "d73ec437fd6346e3619c5ebfdfff0f6916804955ad32ac9ac492b0ede1f6ffb7";
    const DSSE_SIG: &str =
        "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn p256_reproduces_the_dsse_spec_signature_vector() {
        let signer = P256Signer::from_scalar(&unhex(DSSE_D)).expect("scalar");
        let pae = crate::dsse::pae("http://example.com/HelloWorld", b"hello world");
        assert_eq!(STANDARD.encode(signer.sign_raw(&pae)), DSSE_SIG);
        let public = signer.public_key();
        let vector = STANDARD.decode(DSSE_SIG).expect("b64");
        assert!(public.verify(&pae, &vector), "raw r || s");
        let der = signer.sign(&pae).expect("sign");
        assert!(der.len() > 64 && der[0] == 0x30, "DER");
        assert!(public.verify(&pae, &der), "DER");
        assert!(!public.verify(
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello worle",
            &der
        ));
        // The PEM round trip keeps the key id.
        let again = PublicKey::from_pem(&public.to_pem()).expect("pem");
        assert_eq!(again.key_id(), signer.key_id());
    }

    #[test]
    fn signer_from_pem_reads_both_algorithms() {
        let ed = signer_from_pem(RFC8410_PRIVATE).expect("ed25519");
        assert_eq!(ed.public_key().algorithm(), "ed25519");
        let p256 = OPENSSL_P256_PRIVATE;
        let key = signer_from_pem(p256).expect("p256");
        assert_eq!(key.public_key().algorithm(), "ecdsa-p256");
        assert_eq!(key.key_id(), OPENSSL_P256_KEY_ID);
        assert_eq!(key.public_key().to_pem(), OPENSSL_P256_PUBLIC);
        let reread = P256Signer::from_pkcs8_pem(
            &P256Signer::from_pkcs8_pem(p256)
                .expect("p256")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("round trip");
        assert_eq!(reread.key_id(), OPENSSL_P256_KEY_ID);
        let sig = key.sign(b"m").expect("sign");
        assert!(key.public_key().verify(b"m", &sig));
        let err = signer_from_pem("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
            .expect_err("garbage");
        assert!(err.to_string().contains("P-256"), "{err}");
    }
}
