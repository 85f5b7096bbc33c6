//! DSSE v1 envelopes (secure-systems-lab/dsse, `envelope.md` and `protocol.md`): the
//! pre-authentication encoding and signing through the [`EvidenceSigner`] port.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::EvidenceError;
use crate::keys::EvidenceSigner;

/// The payload type of an in-toto statement inside DSSE.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII
/// decimal byte counts.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope (JSON form; `payload` and `sig` are standard base64 with padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

impl Envelope {
    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, EvidenceError> {
        STANDARD
            .decode(self.payload.as_bytes())
            .map_err(|e| EvidenceError::Encoding(format!("payload is not base64: {e}")))
    }

    /// The envelope as pretty JSON (what is written to `*.dsse.json`).
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Signs `payload` as `payload_type` with `signer`.
pub fn sign_envelope(
    payload_type: &str,
    payload: &[u8],
    signer: &dyn EvidenceSigner,
) -> Result<Envelope, EvidenceError> {
    let sig = signer.sign(&pae(payload_type, payload))?;
    Ok(Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_owned(),
        signatures: vec![EnvelopeSignature {
            keyid: signer.key_id().to_owned(),
            sig: STANDARD.encode(sig),
        }],
    })
}

/// `mediaType` of a Sigstore bundle v0.3.
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

impl Envelope {
    /// The envelope as a Sigstore bundle v0.3 (protobuf-specs JSON): public-key verification
    /// material (the key id as `hint`), no transparency-log entry, the DSSE envelope.
    pub fn sigstore_bundle(&self) -> serde_json::Value {
        let hint = self
            .signatures
            .first()
            .map(|s| s.keyid.clone())
            .unwrap_or_default();
        serde_json::json!({
            "mediaType": SIGSTORE_BUNDLE_V03,
            "verificationMaterial": {
                "publicKey": {"hint": hint},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": self.payload,
                "payloadType": self.payload_type,
                "signatures": self.signatures.iter().map(|s| serde_json::json!({
                    "sig": s.sig,
                    "keyid": s.keyid,
                })).collect::<Vec<_>>(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_test_vector() {
        // protocol.md, "Test Vectors".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_counts_bytes_not_characters() {
        assert_eq!(pae("t", "é".as_bytes()), b"DSSEv1 1 t 2 \xc3\xa9".to_vec());
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn a_sigstore_bundle_wraps_the_envelope_with_the_key_hint() {
        let signer = crate::Ed25519Signer::from_seed([3; 32]);
        let env = sign_envelope(PAYLOAD_TYPE, b"{}", &signer).expect("sign");
        let bundle = env.sigstore_bundle();
        assert_eq!(bundle["mediaType"], SIGSTORE_BUNDLE_V03);
        assert_eq!(
            bundle["verificationMaterial"]["publicKey"]["hint"],
            signer.key_id()
        );
        assert_eq!(
            bundle["verificationMaterial"]["tlogEntries"],
            serde_json::json!([])
        );
        assert_eq!(bundle["dsseEnvelope"]["payload"], env.payload);
        assert_eq!(
            bundle["dsseEnvelope"]["signatures"][0]["sig"],
            env.signatures[0].sig
        );
    }
}
