//! The `jwt` mode adapter (SPEC §6.1, rules 25–26): [`JwtAuthenticator`] checks
//! `Authorization: Bearer <JWT>` header values against keys from a PEM file, a JWKS document or
//! an HMAC secret, and maps the token's claims to a [`Principal`].
//!
//! Owns: bearer header parsing, the token size cap, key selection (`kid` → one key bound to one
//! algorithm), the claim checks (`exp`/`nbf` with leeway, `iss`, `aud`, `sub`) and the
//! claims → principal mapping (`scope`/`scp`, `tenant`). Signature verification is the
//! `jsonwebtoken` crate's (pure-Rust `rust_crypto` backend); key loading lives in `keys`.
//!
//! Time is an input: [`JwtAuthenticator::authenticate_at`] takes `now`; only the
//! [`Authenticator`] impl reads the system clock.

mod keys;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use crate::{AuthError, AuthMode, Authenticator, Principal};

pub use keys::{KeyFile, KeySource};

/// The largest bearer token accepted, in bytes; longer ones are refused before any parsing.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Default clock-skew allowance for `exp` and `nbf`.
pub const LEEWAY_SECONDS_DEFAULT: u64 = 30;
/// The largest leeway a configuration may ask for ("small clock skew", SPEC §6.1).
pub const LEEWAY_SECONDS_MAX: u64 = 300;

/// The signature algorithms `jwt` mode accepts (SPEC §6.1). Every key is bound to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (shared secret of at least 32 bytes).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA key of 2048 to 8192 bits).
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwtAlgorithm {
    /// Every accepted algorithm.
    pub const ALL: [JwtAlgorithm; 4] = [
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Es256,
        JwtAlgorithm::EdDsa,
    ];

    /// The JOSE name (`HS256`, `RS256`, `ES256`, `EdDSA`), as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named exactly `name` (JOSE spelling), if it is accepted.
    pub fn from_name(name: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            JwtAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = JwtSetupError;

    fn from_str(s: &str) -> Result<JwtAlgorithm, JwtSetupError> {
        JwtAlgorithm::from_name(s).ok_or_else(|| {
            JwtSetupError::InvalidSetting(format!(
                "unknown algorithm {s:?}, expected one of HS256, RS256, ES256, EdDSA"
            ))
        })
    }
}

/// The claim checks of `jwt` mode. Build with [`JwtConfig::new`], then adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The required `iss` (exact string match).
    pub issuer: String,
    /// The audience this server is: the token's `aud` (a string, or an array of strings)
    /// must contain it.
    pub audience: String,
    /// Clock-skew allowance for `exp` and `nbf`, at most [`LEEWAY_SECONDS_MAX`].
    pub leeway_seconds: u64,
    /// Restricts the accepted algorithm. `None`: the key decides (PEM key type, JWK
    /// `kty`/`crv`/`alg`, HS256 for a secret). A PEM or secret of another algorithm is a setup
    /// error; JWKS keys of another algorithm are skipped.
    pub algorithm: Option<JwtAlgorithm>,
}

impl JwtConfig {
    /// Settings with the default leeway ([`LEEWAY_SECONDS_DEFAULT`]) and no algorithm restriction.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> JwtConfig {
        JwtConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: LEEWAY_SECONDS_DEFAULT,
            algorithm: None,
        }
    }

    fn check(&self) -> Result<(), JwtSetupError> {
        if self.issuer.is_empty() {
            return Err(JwtSetupError::InvalidSetting(
                "issuer is empty, expected the `iss` tokens must carry".into(),
            ));
        }
        if self.audience.is_empty() {
            return Err(JwtSetupError::InvalidSetting(
                "audience is empty, expected the `aud` value tokens must carry".into(),
            ));
        }
        if self.leeway_seconds > LEEWAY_SECONDS_MAX {
            return Err(JwtSetupError::InvalidSetting(format!(
                "leeway of {} s is too large, expected at most {LEEWAY_SECONDS_MAX} s",
                self.leeway_seconds
            )));
        }
        Ok(())
    }
}

/// Why a [`JwtAuthenticator`] could not be built (at startup; never a request's 401, which is
/// [`AuthError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSetupError {
    /// A key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The key material is unusable (wrong type, too weak, malformed, …).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The key material read from `path` is unusable.
    #[error("{}: invalid key: {message}", path.display())]
    InvalidKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A setting (issuer, audience, leeway, algorithm) is invalid.
    #[error("invalid jwt setting: {0}")]
    InvalidSetting(String),
}

/// The `jwt` mode [`Authenticator`]: bearer JWTs signed with HS256, RS256, ES256 or EdDSA.
///
/// A token is accepted only if: the header is `Bearer <token>` (scheme case-insensitive), the
/// token is at most [`TOKEN_BYTES_MAX`] bytes, its `alg` is the algorithm bound to the key
/// selected by its `kid` (`none` is never accepted), the signature verifies, `exp` is present and
/// not past, `nbf` (if present) is not in the future (both within the leeway), `iss` equals the
/// configured issuer, `aud` contains the configured audience and `sub` is a non-empty string.
pub struct JwtAuthenticator {
    keys: keys::KeySet,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl JwtAuthenticator {
    /// An authenticator checking tokens against `source`'s keys with `config`'s claims.
    pub fn new(config: JwtConfig, source: &KeySource) -> Result<JwtAuthenticator, JwtSetupError> {
        config.check()?;
        let keys = keys::KeySet::load(source, config.algorithm)?;
        Ok(JwtAuthenticator {
            keys,
            issuer: config.issuer,
            audience: config.audience,
            leeway_seconds: config.leeway_seconds,
        })
    }

    /// Like [`JwtAuthenticator::new`], reading the key material from `file`.
    pub fn from_file(config: JwtConfig, file: &KeyFile) -> Result<JwtAuthenticator, JwtSetupError> {
        config.check()?;
        let source = file.read()?;
        JwtAuthenticator::new(config, &source).map_err(|e| match e {
            JwtSetupError::InvalidKey(message) => JwtSetupError::InvalidKeyFile {
                path: file.path().to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Authenticates the raw `Authorization` header value at `now_unix_seconds` (the time
    /// `exp` and `nbf` are checked against).
    pub fn authenticate_at(
        &self,
        authorization: Option<&str>,
        now_unix_seconds: u64,
    ) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization)?;
        let header = TokenHeader::parse(token)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(invalid(
                "algorithm not allowed: 'none' (unsigned tokens are refused)",
            ));
        }
        let key = self.keys.select(header.kid.as_deref())?;
        if header.alg != key.algorithm().as_str() {
            return Err(invalid(format!(
                "algorithm not allowed: the token's alg is {}, the key it names accepts only {}",
                shown(&header.alg),
                key.algorithm()
            )));
        }
        let claims = key.verify(token)?;
        self.principal(&claims, now_unix_seconds)
    }

    fn principal(
        &self,
        claims: &Map<String, Value>,
        now_unix_seconds: u64,
    ) -> Result<Principal, AuthError> {
        let leeway = self.leeway_seconds;
        let exp = numeric_date(claims, "exp")?.ok_or_else(|| missing("exp"))?;
        if now_unix_seconds >= exp.saturating_add(leeway) {
            return Err(invalid(format!(
                "expired: exp is {exp}, now is {now_unix_seconds} (leeway {leeway} s)"
            )));
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && nbf > now_unix_seconds.saturating_add(leeway)
        {
            return Err(invalid(format!(
                "not yet valid: nbf is {nbf}, now is {now_unix_seconds} (leeway {leeway} s)"
            )));
        }
        let iss = string_claim(claims, "iss")?.ok_or_else(|| missing("iss"))?;
        if iss != self.issuer {
            return Err(invalid(format!(
                "wrong issuer: expected iss {:?}",
                self.issuer
            )));
        }
        let aud = strings_claim(claims, "aud")?.ok_or_else(|| missing("aud"))?;
        if !aud.contains(&self.audience.as_str()) {
            return Err(invalid(format!(
                "wrong audience: expected aud to contain {:?}",
                self.audience
            )));
        }
        let sub = string_claim(claims, "sub")?.ok_or_else(|| missing("sub"))?;
        if sub.is_empty() {
            return Err(invalid(
                "malformed claim 'sub': empty, expected the caller's id",
            ));
        }
        let mut scopes = BTreeSet::new();
        if let Some(scope) = string_claim(claims, "scope")? {
            scopes.extend(scope.split_ascii_whitespace().map(str::to_owned));
        }
        if let Some(scp) = strings_claim(claims, "scp")? {
            for s in scp {
                scopes.extend(s.split_ascii_whitespace().map(str::to_owned));
            }
        }
        let tenant = string_claim(claims, "tenant")?.map(str::to_owned);
        Ok(Principal {
            subject: Some(sub.to_owned()),
            scopes,
            tenant,
            unrestricted: false,
        })
    }
}

impl Authenticator for JwtAuthenticator {
    fn mode(&self) -> AuthMode {
        AuthMode::Jwt
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        // A clock before 1970 is broken; 0 then makes every `exp` lie in the future and every
        // `nbf` fail, which the signature and issuer checks still bound.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.authenticate_at(authorization, now)
    }
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid(message.into())
}

fn missing(claim: &str) -> AuthError {
    invalid(format!("missing required claim '{claim}'"))
}

/// A token-supplied string shown in a message only if it is short and plain (no control
/// characters, nothing that could forge log lines); never the token itself.
fn shown(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b));
    if plain {
        format!("'{s}'")
    } else {
        "(not shown)".to_owned()
    }
}

/// The token of a `Bearer <token>` header value. No header, or another scheme, is
/// [`AuthError::Missing`]; a bearer header without a well-formed compact token is invalid.
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    if value.len() > TOKEN_BYTES_MAX + 64 {
        return Err(invalid(format!(
            "token larger than {TOKEN_BYTES_MAX} bytes"
        )));
    }
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    if value.is_empty() || !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(invalid(
            "malformed authorization header: empty bearer token",
        ));
    }
    if token.len() > TOKEN_BYTES_MAX {
        return Err(invalid(format!(
            "token larger than {TOKEN_BYTES_MAX} bytes"
        )));
    }
    let compact = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !compact {
        return Err(invalid(
            "malformed token: expected a compact JWS (base64url parts joined by '.')",
        ));
    }
    Ok(token)
}

/// The header fields needed to pick a key, parsed before (and independently of) verification.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid(
                "malformed token: expected three '.'-separated parts (header.payload.signature)",
            ));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| invalid("malformed token: the header is not base64url"))?;
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(invalid("malformed token: the header is not a JSON object"));
        };
        let alg = match fields.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            Some(_) => return Err(invalid("malformed token: header 'alg' is not a string")),
            None => return Err(invalid("malformed token: header has no 'alg'")),
        };
        if fields.contains_key("crit") {
            // RFC 7515 §4.1.11: a token whose critical extensions are not understood (we
            // understand none) must be refused.
            return Err(invalid(
                "malformed token: critical header parameters (crit) are not supported",
            ));
        }
        let kid = match fields.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(invalid("malformed token: header 'kid' is not a string")),
        };
        Ok(TokenHeader { alg, kid })
    }
}

/// Maps a `jsonwebtoken` signature-check failure to a message naming what failed. The
/// library's own messages are never passed on.
fn verification_error(error: &jsonwebtoken::errors::Error) -> AuthError {
    let message = match error.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::Base64(_) => "malformed token: the signature is not base64url",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => "algorithm not allowed",
        _ => "bad signature: the token could not be verified with the selected key",
    };
    invalid(message)
}

fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match claims.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// A NumericDate claim (seconds since the epoch; fractions are truncated).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    let Some(value) = claim(claims, name) else {
        return Ok(None);
    };
    let malformed = || {
        invalid(format!(
            "malformed claim '{name}': expected a NumericDate (non-negative seconds since the epoch)"
        ))
    };
    let Value::Number(n) = value else {
        return Err(malformed());
    };
    if let Some(seconds) = n.as_u64() {
        return Ok(Some(seconds));
    }
    match n.as_f64() {
        // `as` saturates; the range check keeps it exact enough for seconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
        _ => Err(malformed()),
    }
}

fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    match claim(claims, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!(
            "malformed claim '{name}': expected a string"
        ))),
    }
}

/// A claim that may be a string or an array of strings (`aud`, `scp`).
fn strings_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<&'a str>>, AuthError> {
    let malformed = || {
        invalid(format!(
            "malformed claim '{name}': expected a string or an array of strings"
        ))
    };
    match claim(claims, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(malformed))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(malformed()),
    }
}
