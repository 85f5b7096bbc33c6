//! The served OpenAPI document (SPEC §6.4–§6.5): the embedded copy of the contract with the
//! extension overlay merged over it additively, rendered as YAML (`/openapi`) and JSON
//! (`/openapi.json`), each with its ETag (quoted lowercase hex SHA-256 of the served bytes),
//! and the signature of the YAML bytes (`sha256:<hex>`, or `ed25519:<base64>` with a key).

use axum::body::Bytes;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

/// The contract, byte for byte as the reference `taskrunner-openapi.yaml` (a test compares them
/// when a reference copy is at hand); the repository's one copy of it.
pub const CONTRACT_YAML: &str = include_str!("../openapi/contract.yaml");
/// The extensions (SPEC §6.5 and the extension fields), merged over the contract.
pub const EXTENSIONS_YAML: &str = include_str!("../openapi/extensions.yaml");

/// The document as served, computed once per router.
#[derive(Debug, Clone)]
pub struct ServedSpec {
    /// The merged document.
    pub document: Value,
    /// `info.version` of the contract.
    pub version: String,
    /// `/openapi` bytes.
    pub yaml: Bytes,
    /// `/openapi.json` bytes.
    pub json: Bytes,
    /// ETag of the YAML bytes (also the `etag` of `/.well-known/openapi`).
    pub yaml_etag: String,
    /// ETag of the JSON bytes.
    pub json_etag: String,
    /// Signature of the YAML bytes.
    pub signature: String,
}

impl ServedSpec {
    /// Merges the overlay over the contract and renders both representations. `build_version`
    /// is reported by `/.well-known/openapi` only; the document keeps the contract's version.
    pub fn build(
        _build_version: &str,
        signing_key: Option<&[u8; 32]>,
    ) -> Result<ServedSpec, String> {
        let document = merged()?;
        let version = document
            .pointer("/info/version")
            .and_then(Value::as_str)
            .ok_or("the contract has no info.version")?
            .to_owned();
        let ordered = TopLevelOrder(&document);
        let json = serde_json::to_vec_pretty(&ordered).map_err(|e| e.to_string())?;
        let yaml = serde_saphyr::to_string(&ordered).map_err(|e| e.to_string())?;
        let yaml = yaml.into_bytes();
        let signature = match signing_key {
            Some(seed) => {
                let key = SigningKey::from_bytes(seed);
                let sig = key.sign(&yaml);
                format!(
                    "ed25519:{}",
                    base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
                )
            }
            None => format!("sha256:{}", taskrunner_store::sha256_hex(&yaml)),
        };
        Ok(ServedSpec {
            version,
            yaml_etag: etag(&yaml),
            json_etag: etag(&json),
            yaml: Bytes::from(yaml),
            json: Bytes::from(json),
            signature,
            document,
        })
    }
}

/// Serialises the document with its top-level keys in the usual OpenAPI order (`openapi`,
/// `info`, …, `components`, `tags`) rather than alphabetically; nested objects keep the order
/// of `serde_json::Map` (sorted), which is deterministic.
struct TopLevelOrder<'a>(&'a Value);

const TOP_LEVEL_ORDER: &[&str] = &[
    "openapi",
    "info",
    "jsonSchemaDialect",
    "servers",
    "security",
    "paths",
    "webhooks",
    "components",
    "tags",
    "externalDocs",
];

impl serde::Serialize for TopLevelOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for key in TOP_LEVEL_ORDER {
            if let Some(value) = map.get(*key) {
                out.serialize_entry(key, value)?;
            }
        }
        for (key, value) in map {
            if !TOP_LEVEL_ORDER.contains(&key.as_str()) {
                out.serialize_entry(key, value)?;
            }
        }
        out.end()
    }
}

/// `"<lowercase hex sha256>"`.
pub(crate) fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", taskrunner_store::sha256_hex(bytes))
}

/// The contract with the extensions merged in.
pub(crate) fn merged() -> Result<Value, String> {
    let mut contract: Value =
        serde_saphyr::from_str(CONTRACT_YAML).map_err(|e| format!("embedded contract: {e}"))?;
    let overlay: Value =
        serde_saphyr::from_str(EXTENSIONS_YAML).map_err(|e| format!("embedded extensions: {e}"))?;
    merge(&mut contract, overlay, "")?;
    Ok(contract)
}

/// Additive merge: objects key by key, lists appended (items already present are skipped);
/// a scalar the base already has must be equal (extensions never change the contract).
pub(crate) fn merge(base: &mut Value, overlay: Value, at: &str) -> Result<(), String> {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (key, value) in o {
                let here = format!("{at}/{key}");
                match b.get_mut(&key) {
                    Some(existing) => merge(existing, value, &here)?,
                    None => {
                        b.insert(key, value);
                    }
                }
            }
            Ok(())
        }
        (Value::Array(b), Value::Array(o)) => {
            for item in o {
                if !b.contains(&item) {
                    b.push(item);
                }
            }
            Ok(())
        }
        (b, o) if *b == o => Ok(()),
        (b, o) => Err(format!(
            "the extensions would change the contract at {at}: {b} → {o}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_additive_and_refuses_changes() {
        let mut base = json!({"a": {"b": 1, "l": [1]}});
        merge(&mut base, json!({"a": {"c": 2, "l": [1, 2]}}), "").unwrap();
        assert_eq!(base, json!({"a": {"b": 1, "c": 2, "l": [1, 2]}}));
        let err = merge(&mut base, json!({"a": {"b": 3}}), "").unwrap_err();
        assert!(err.contains("/a/b"), "{err}");
    }

    #[test]
    fn etag_and_signatures() {
        let plain = ServedSpec::build("1", None).unwrap();
        assert_eq!(plain.yaml_etag, etag(&plain.yaml));
        assert_eq!(
            plain.signature,
            format!("sha256:{}", taskrunner_store::sha256_hex(&plain.yaml))
        );
        let seed = [7u8; 32];
        let signed = ServedSpec::build("1", Some(&seed)).unwrap();
        let b64 = signed.signature.strip_prefix("ed25519:").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&bytes).unwrap();
        let key = SigningKey::from_bytes(&seed).verifying_key();
        assert!(key.verify_strict(&signed.yaml, &sig).is_ok());
        assert!(key.verify_strict(b"other bytes", &sig).is_err());
    }

    #[test]
    fn both_representations_hold_the_same_document() {
        let spec = ServedSpec::build("1", None).unwrap();
        let from_json: Value = serde_json::from_slice(&spec.json).unwrap();
        let text = std::str::from_utf8(&spec.yaml).unwrap();
        let from_yaml: Value = serde_saphyr::from_str(text).unwrap();
        assert_eq!(from_json, spec.document);
        assert_eq!(from_yaml, spec.document);
        assert_eq!(spec.version, "0.1.0-draft");
    }
}
