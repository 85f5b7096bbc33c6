//! Verification keys for `jwt` mode: loading a PEM public key, a JWKS document or an HMAC
//! secret into a [`KeySet`] where every key is bound to exactly one [`JwtAlgorithm`], and
//! picking the key a token names.
//!
//! Owns: which key material is accepted (types, curves, sizes), the binding of a key to its
//! algorithm (so a key of one family is never used for another), `kid` selection, and the
//! file-size caps. The binding is what refuses algorithm confusion: a token is verified only
//! with its key's algorithm, so an RSA public key is never fed to HMAC.

use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::crypto::CryptoProvider;
use serde_json::{Map, Value};

use super::{JwtAlgorithm, JwtSetupError, invalid, shown, verification_error};
use crate::AuthError;

/// The largest key file (PEM, JWKS or secret) read or accepted, in bytes.
pub(crate) const KEY_BYTES_MAX: usize = 1024 * 1024;
/// The most keys a JWKS document may hold.
pub(crate) const JWKS_KEYS_MAX: usize = 100;
/// The shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
pub(crate) const HMAC_SECRET_BYTES_MIN: usize = 32;
/// RSA modulus sizes accepted (the `rsa` crate verifies up to 8192 bits).
const RSA_BITS_MIN: usize = 2048;
const RSA_BITS_MAX: usize = 8192;

/// Key material, as bytes. The algorithm follows from the material (and may be restricted by
/// [`super::JwtConfig::algorithm`]).
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An HS256 shared secret (at least 32 bytes).
    HmacSecret(Vec<u8>),
    /// One PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`, RS256), EC P-256 (ES256) or
    /// Ed25519 (EdDSA).
    Pem(Vec<u8>),
    /// A JWKS document (`{"keys": [...]}`); tokens pick a key by `kid`.
    Jwks(Vec<u8>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::HmacSecret(b) => write!(f, "HmacSecret([redacted; {} bytes])", b.len()),
            KeySource::Pem(b) => write!(f, "Pem({} bytes)", b.len()),
            KeySource::Jwks(b) => write!(f, "Jwks({} bytes)", b.len()),
        }
    }
}

/// Where to read a [`KeySource`] from (at most 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    /// A file holding the HS256 secret's bytes; one trailing newline (`\n` or `\r\n`) is not
    /// part of the secret.
    HmacSecret(PathBuf),
    /// A PEM public key file.
    Pem(PathBuf),
    /// A JWKS document.
    Jwks(PathBuf),
}

impl KeyFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            KeyFile::HmacSecret(p) | KeyFile::Pem(p) | KeyFile::Jwks(p) => p,
        }
    }

    /// Reads the file into a [`KeySource`].
    pub fn read(&self) -> Result<KeySource, JwtSetupError> {
        let path = self.path();
        let read_error = |source| JwtSetupError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .map_err(read_error)?
            .take(KEY_BYTES_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() > KEY_BYTES_MAX {
            return Err(JwtSetupError::InvalidKeyFile {
                path: path.to_owned(),
                message: format!("file larger than {KEY_BYTES_MAX} bytes"),
            });
        }
        Ok(match self {
            KeyFile::HmacSecret(_) => {
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                KeySource::HmacSecret(bytes)
            }
            KeyFile::Pem(_) => KeySource::Pem(bytes),
            KeyFile::Jwks(_) => KeySource::Jwks(bytes),
        })
    }
}

/// One verification key and the only algorithm it verifies.
pub(crate) struct BoundKey {
    kid: Option<String>,
    algorithm: JwtAlgorithm,
    key: DecodingKey,
}

impl BoundKey {
    fn new(
        kid: Option<String>,
        algorithm: JwtAlgorithm,
        key: DecodingKey,
    ) -> Result<BoundKey, String> {
        // The verifier parses EC and Ed25519 keys here, so a bad point fails at startup.
        let provider = crypto_provider();
        if (provider.verifier_factory)(&algorithm.to_jsonwebtoken(), &key).is_err() {
            return Err(format!("not a valid {algorithm} public key"));
        }
        Ok(BoundKey {
            kid,
            algorithm,
            key,
        })
    }

    pub(crate) fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies `token`'s signature with this key and algorithm, then returns its claims.
    /// Only the signature is `jsonwebtoken`'s: its `decode` also runs its own claim checks
    /// (wall clock, and a claim parser that fails on array- or object-valued claims), while
    /// the claim checks here take `now` as an input.
    pub(crate) fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let malformed = || invalid("malformed token: expected header.payload.signature");
        let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (_, payload) = message.split_once('.').ok_or_else(malformed)?;
        let alg = self.algorithm.to_jsonwebtoken();
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &self.key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(invalid("bad signature")),
            Err(e) => return Err(verification_error(&e)),
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| invalid("malformed token: the payload is not base64url"))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(claims)) => Ok(claims),
            _ => Err(invalid("malformed token: the payload is not a JSON object")),
        }
    }
}

impl fmt::Debug for BoundKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys tokens are checked against.
#[derive(Debug)]
pub(crate) struct KeySet {
    keys: Vec<BoundKey>,
    /// JWKS keys left out, with why (to explain a token that names one).
    skipped: Vec<(Option<String>, String)>,
    /// A PEM key or secret: used whatever `kid` a token names.
    single: bool,
}

impl KeySet {
    pub(crate) fn load(
        source: &KeySource,
        configured: Option<JwtAlgorithm>,
    ) -> Result<KeySet, JwtSetupError> {
        let bytes = match source {
            KeySource::HmacSecret(b) | KeySource::Pem(b) | KeySource::Jwks(b) => b,
        };
        if bytes.len() > KEY_BYTES_MAX {
            return Err(JwtSetupError::InvalidKey(format!(
                "key material larger than {KEY_BYTES_MAX} bytes"
            )));
        }
        let single = |key| KeySet {
            keys: vec![key],
            skipped: Vec::new(),
            single: true,
        };
        match source {
            KeySource::HmacSecret(secret) => Ok(single(
                hmac_key(secret, configured).map_err(JwtSetupError::InvalidKey)?,
            )),
            KeySource::Pem(pem) => Ok(single(
                pem_key(pem, configured).map_err(JwtSetupError::InvalidKey)?,
            )),
            KeySource::Jwks(jwks) => jwks_keys(jwks, configured).map_err(JwtSetupError::InvalidKey),
        }
    }

    /// The key for a token whose header names `kid`.
    pub(crate) fn select(&self, kid: Option<&str>) -> Result<&BoundKey, AuthError> {
        if self.single
            && let Some(key) = self.keys.first()
        {
            return Ok(key);
        }
        let Some(kid) = kid else {
            return match self.keys.as_slice() {
                [only] => Ok(only),
                keys => Err(invalid(format!(
                    "unknown kid: the token names no kid and the key set holds {} keys",
                    keys.len()
                ))),
            };
        };
        if let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            return Ok(key);
        }
        if let Some((_, why)) = self.skipped.iter().find(|(k, _)| k.as_deref() == Some(kid)) {
            return Err(invalid(format!(
                "unknown kid {}: that key is not used for verification ({why})",
                shown(kid)
            )));
        }
        Err(invalid(format!(
            "unknown kid {}: no key in the key set has it",
            shown(kid)
        )))
    }
}

/// The process's `jsonwebtoken` crypto provider: the pure-Rust one unless the process installed
/// another (feature unification could enable a second backend, which disables the automatic
/// choice; installing ours keeps `decode` from panicking then).
fn crypto_provider() -> &'static CryptoProvider {
    if let Some(provider) = CryptoProvider::try_get_default() {
        return provider;
    }
    let ours = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    // Err: another thread installed one first, which `try_get_default` now returns.
    let _ = ours.install_default();
    CryptoProvider::try_get_default().unwrap_or(ours)
}

fn check_configured(found: JwtAlgorithm, configured: Option<JwtAlgorithm>) -> Result<(), String> {
    match configured {
        Some(c) if c != found => Err(format!(
            "the key is for {found}, but the configured algorithm is {c}"
        )),
        _ => Ok(()),
    }
}

fn hmac_key(secret: &[u8], configured: Option<JwtAlgorithm>) -> Result<BoundKey, String> {
    check_configured(JwtAlgorithm::Hs256, configured)?;
    if secret.len() < HMAC_SECRET_BYTES_MIN {
        return Err(format!(
            "HMAC secret of {} bytes is too short, expected at least {HMAC_SECRET_BYTES_MIN}",
            secret.len()
        ));
    }
    let key = DecodingKey::from_secret(secret).map_err(|_| "HMAC secret is unusable".to_owned())?;
    BoundKey::new(None, JwtAlgorithm::Hs256, key)
}

/// The label of the only PEM block in `text`.
fn pem_label(text: &str) -> Result<&str, String> {
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    match labels.as_slice() {
        [label] => Ok(label),
        [] => Err("no PEM block found, expected -----BEGIN PUBLIC KEY-----".to_owned()),
        many => Err(format!(
            "{} PEM blocks found, expected exactly one public key",
            many.len()
        )),
    }
}

fn pem_key(pem: &[u8], configured: Option<JwtAlgorithm>) -> Result<BoundKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "PEM file is not text".to_owned())?;
    match pem_label(text)? {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        "CERTIFICATE" => {
            return Err("a certificate, expected its public key \
                 (openssl x509 -pubkey -noout -in CERT)"
                .to_owned());
        }
        label if label.ends_with("PRIVATE KEY") => {
            return Err(format!(
                "a private key ({label}), expected the public key (openssl pkey -pubout -in KEY)"
            ));
        }
        label => {
            return Err(format!(
                "unsupported PEM block {label:?}, expected PUBLIC KEY or RSA PUBLIC KEY"
            ));
        }
    }
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        let der = key
            .try_get_as_bytes()
            .map_err(|_| "unreadable RSA public key".to_owned())?;
        let (n, e) = (crypto_provider()
            .key_utils
            .rsa_pub_components_from_public_key)(der)
        .map_err(|_| "unreadable RSA public key".to_owned())?;
        check_rsa(&n, &e)?;
        (JwtAlgorithm::Rs256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => (JwtAlgorithm::Es256, key),
            Ok(97) => {
                return Err(
                    "an EC P-384 key (ES384), expected P-256 (ES256) or another accepted type"
                        .to_owned(),
                );
            }
            _ => return Err("an EC key on an unsupported curve, expected P-256".to_owned()),
        }
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err("malformed Ed25519 public key, expected 32 bytes".to_owned());
        }
        (JwtAlgorithm::EdDsa, key)
    } else {
        return Err(
            "not an RSA, EC P-256 or Ed25519 public key (Ed448 and other types are not accepted)"
                .to_owned(),
        );
    };
    check_configured(algorithm, configured)?;
    BoundKey::new(None, algorithm, key)
}

/// Big-endian unsigned integer without leading zero bytes.
fn trimmed(be: &[u8]) -> &[u8] {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    &be[start..]
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = trimmed(n);
    let bits = match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if !(RSA_BITS_MIN..=RSA_BITS_MAX).contains(&bits) {
        return Err(format!(
            "RSA key of {bits} bits, expected {RSA_BITS_MIN} to {RSA_BITS_MAX} bits"
        ));
    }
    if n.last().is_some_and(|last| last % 2 == 0) {
        return Err("RSA modulus is even, expected an RSA public key".to_owned());
    }
    let e = trimmed(e);
    let exponent = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
        return Err("RSA public exponent must be odd and between 3 and 2^33".to_owned());
    }
    Ok(())
}

/// What becomes of one JWK.
enum Jwk {
    Use(JwtAlgorithm, DecodingKey),
    Skip(String),
}

fn jwks_keys(jwks: &[u8], configured: Option<JwtAlgorithm>) -> Result<KeySet, String> {
    let doc: Value =
        serde_json::from_slice(jwks).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("JWKS must be an object with a \"keys\" array".to_owned());
    };
    if entries.len() > JWKS_KEYS_MAX {
        return Err(format!(
            "JWKS holds {} keys, expected at most {JWKS_KEYS_MAX}",
            entries.len()
        ));
    }
    let mut keys: Vec<BoundKey> = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(jwk) = entry.as_object() else {
            return Err(format!("keys[{i}] is not an object"));
        };
        let kid = match jwk.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(format!("keys[{i}].kid is not a string")),
        };
        let name = match &kid {
            Some(kid) => format!("keys[{i}] (kid {kid:?})"),
            None => format!("keys[{i}]"),
        };
        match bind_jwk(jwk, configured).map_err(|e| format!("{name}: {e}"))? {
            Jwk::Skip(why) => skipped.push((kid, why)),
            Jwk::Use(algorithm, key) => {
                if let Some(kid) = &kid
                    && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                {
                    return Err(format!("{name}: kid {kid:?} is used twice"));
                }
                keys.push(BoundKey::new(kid, algorithm, key).map_err(|e| format!("{name}: {e}"))?);
            }
        }
    }
    if keys.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|(kid, why)| format!("{}: {why}", kid.as_deref().unwrap_or("(no kid)")))
            .collect();
        return Err(format!(
            "JWKS holds no usable verification key{}{}",
            if why.is_empty() { "" } else { "; skipped " },
            why.join("; ")
        ));
    }
    Ok(KeySet {
        keys,
        skipped,
        single: false,
    })
}

fn optional_str<'a>(jwk: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{field}\" is not a string")),
    }
}

fn base64_field(jwk: &Map<String, Value>, field: &str) -> Result<Vec<u8>, String> {
    let text = optional_str(jwk, field)?.ok_or_else(|| format!("missing \"{field}\""))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("\"{field}\" is not base64url (without padding)"))
}

/// Binds one JWK to its algorithm. `Err`: the JWKS is broken (a setup error); `Skip`: a key
/// this server does not verify with (encryption key, other algorithm or curve).
fn bind_jwk(jwk: &Map<String, Value>, configured: Option<JwtAlgorithm>) -> Result<Jwk, String> {
    let kty = optional_str(jwk, "kty")?.ok_or("missing \"kty\"")?;
    if let Some(usage) = optional_str(jwk, "use")?
        && usage != "sig"
    {
        return Ok(Jwk::Skip(format!("\"use\" is {usage:?}, not \"sig\"")));
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|op| op.as_str() == Some("verify"))
    {
        return Ok(Jwk::Skip(
            "\"key_ops\" does not include \"verify\"".to_owned(),
        ));
    }
    let alg = optional_str(jwk, "alg")?;
    let (algorithm, key) = match kty {
        "RSA" => {
            let n = base64_field(jwk, "n")?;
            let e = base64_field(jwk, "e")?;
            check_rsa(&n, &e)?;
            (
                JwtAlgorithm::Rs256,
                DecodingKey::from_rsa_raw_components(trimmed(&n), trimmed(&e)),
            )
        }
        "EC" => {
            let crv = optional_str(jwk, "crv")?.ok_or("missing \"crv\"")?;
            if crv != "P-256" {
                return Ok(Jwk::Skip(format!(
                    "curve {crv:?} is not accepted, only P-256 (ES256)"
                )));
            }
            let x = base64_field(jwk, "x")?;
            let y = base64_field(jwk, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".to_owned());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (JwtAlgorithm::Es256, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let crv = optional_str(jwk, "crv")?.ok_or("missing \"crv\"")?;
            if crv != "Ed25519" {
                return Ok(Jwk::Skip(format!(
                    "curve {crv:?} is not accepted, only Ed25519 (EdDSA)"
                )));
            }
            let x = base64_field(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 \"x\" must be 32 bytes".to_owned());
            }
            (JwtAlgorithm::EdDsa, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            let k = base64_field(jwk, "k")?;
            if k.len() < HMAC_SECRET_BYTES_MIN {
                return Err(format!(
                    "HMAC key of {} bytes is too short, expected at least {HMAC_SECRET_BYTES_MIN}",
                    k.len()
                ));
            }
            let key = DecodingKey::from_secret(&k).map_err(|_| "unusable HMAC key".to_owned())?;
            (JwtAlgorithm::Hs256, key)
        }
        other => {
            return Ok(Jwk::Skip(format!("key type {other:?} is not supported")));
        }
    };
    if let Some(alg) = alg {
        // RFC 9864's fully-specified name for EdDSA over Ed25519.
        let named = if alg == "Ed25519" {
            Some(JwtAlgorithm::EdDsa)
        } else {
            JwtAlgorithm::from_name(alg)
        };
        match named {
            Some(named) if named == algorithm => {}
            Some(named) => {
                return Err(format!(
                    "\"alg\" {named} does not fit key type {kty:?} (which verifies {algorithm})"
                ));
            }
            None => {
                return Ok(Jwk::Skip(format!(
                    "algorithm {alg:?} is not accepted (HS256, RS256, ES256, EdDSA are)"
                )));
            }
        }
    }
    if let Some(c) = configured
        && c != algorithm
    {
        return Ok(Jwk::Skip(format!(
            "a {algorithm} key, but the configured algorithm is {c}"
        )));
    }
    Ok(Jwk::Use(algorithm, key))
}
