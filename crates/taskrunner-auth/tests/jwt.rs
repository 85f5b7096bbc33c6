#![allow(clippy::unwrap_used)]
//! `JwtAuthenticator` against tokens minted with the test-only keys in `fixtures/auth/`:
//! every algorithm, JWKS selection by kid, each claim check, `alg: none`, algorithm confusion,
//! tampering, malformed headers, and the setup errors of bad key material.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use taskrunner_auth::{
    AuthError, AuthMode, Authenticator, JwtAlgorithm, JwtAuthenticator, JwtConfig, JwtSetupError,
    KeyFile, KeySource, Principal, SCOPE_OPERATOR, SCOPE_VIEWER, TOKEN_BYTES_MAX,
};

/// The "current time" of every check: tokens are minted relative to it, so no test reads the
/// clock.
const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.test";
const AUD: &str = "taskrunner";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/auth")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn config() -> JwtConfig {
    JwtConfig::new(ISS, AUD)
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": ISS,
        "aud": AUD,
        "exp": NOW + 600,
        "iat": NOW,
        "scope": "taskrunner.viewer taskrunner.operator",
    })
}

/// The private key (or secret) signing tokens for `alg`, and the matching public source.
fn signer(alg: Algorithm) -> (EncodingKey, KeySource) {
    match alg {
        Algorithm::HS256 => (
            EncodingKey::from_secret(&fixture("hmac-secret")).unwrap(),
            KeySource::HmacSecret(fixture("hmac-secret")),
        ),
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&fixture("rsa-1-private.pem")).unwrap(),
            KeySource::Pem(fixture("rsa-1-public.pem")),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap(),
            KeySource::Pem(fixture("ec-public.pem")),
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap(),
            KeySource::Pem(fixture("ed25519-public.pem")),
        ),
        other => panic!("no test key for {other:?}"),
    }
}

fn mint_with(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

/// A token for `alg` signed with its fixture key.
fn mint(alg: Algorithm, claims: &Value) -> String {
    mint_with(alg, None, &signer(alg).0, claims)
}

fn rsa_kid(kid: &str, claims: &Value) -> String {
    let private = match kid {
        "rsa-2" => "rsa-2-private.pem",
        _ => "rsa-1-private.pem",
    };
    let key = EncodingKey::from_rsa_pem(&fixture(private)).unwrap();
    mint_with(Algorithm::RS256, Some(kid), &key, claims)
}

fn authenticator(alg: Algorithm) -> JwtAuthenticator {
    JwtAuthenticator::new(config(), &signer(alg).1).unwrap()
}

fn jwks() -> JwtAuthenticator {
    JwtAuthenticator::new(config(), &KeySource::Jwks(fixture("jwks.json"))).unwrap()
}

fn check(auth: &JwtAuthenticator, token: &str) -> Result<Principal, AuthError> {
    auth.authenticate_at(Some(&format!("Bearer {token}")), NOW)
}

/// The message of an `Invalid` refusal; also checks that it does not echo the token.
fn refusal(auth: &JwtAuthenticator, token: &str) -> String {
    match check(auth, token) {
        Err(AuthError::Invalid(message)) => {
            assert!(
                !message.contains(token),
                "message echoes the token: {message}"
            );
            for part in token.split('.').filter(|p| p.len() > 8) {
                assert!(
                    !message.contains(part),
                    "message echoes a token part: {message}"
                );
            }
            message
        }
        other => panic!("expected an invalid-token refusal, got {other:?}"),
    }
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn setup_error(config: JwtConfig, source: &KeySource) -> String {
    match JwtAuthenticator::new(config, source) {
        Err(e) => e.to_string(),
        Ok(a) => panic!("expected a setup error, got {a:?}"),
    }
}

#[test]
fn a_valid_token_of_each_algorithm_yields_its_principal() {
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let auth = authenticator(alg);
        assert_eq!(auth.mode(), AuthMode::Jwt);
        let p = check(&auth, &mint(alg, &claims())).unwrap();
        assert_eq!(p.subject.as_deref(), Some("alice"), "{alg:?}");
        assert_eq!(
            p.scopes.iter().map(String::as_str).collect::<Vec<_>>(),
            [SCOPE_OPERATOR, SCOPE_VIEWER],
            "{alg:?}"
        );
        assert_eq!(p.tenant, None);
        assert!(!p.unrestricted);
        // Claims swapped under the original signature are refused.
        let token = mint(alg, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mallory = with(claims(), "sub", json!("mallory")).to_string();
        let swapped = format!("{}.{}.{}", parts[0], b64(mallory.as_bytes()), parts[2]);
        assert!(
            refusal(&auth, &swapped).starts_with("bad signature"),
            "{alg:?}"
        );
    }
    // The same algorithm with another key is refused.
    let other_secret = EncodingKey::from_secret(&[7u8; 32]).unwrap();
    let other = mint_with(Algorithm::HS256, None, &other_secret, &claims());
    assert!(refusal(&authenticator(Algorithm::HS256), &other).starts_with("bad signature"));
    let other = rsa_kid("rsa-2", &claims());
    assert!(refusal(&authenticator(Algorithm::RS256), &other).starts_with("bad signature"));
}

#[test]
fn scopes_come_from_scope_or_scp_and_the_tenant_claim_is_kept() {
    let auth = authenticator(Algorithm::RS256);
    let scp_array = with(
        without(claims(), "scope"),
        "scp",
        json!(["taskrunner.admin", "packs.approve"]),
    );
    let p = check(&auth, &mint(Algorithm::RS256, &scp_array)).unwrap();
    assert!(p.has_scope("taskrunner.admin") && p.has_scope("packs.approve"));
    assert_eq!(p.scopes.len(), 2);

    let scp_string = with(
        without(claims(), "scope"),
        "scp",
        json!("taskrunner.viewer x.y"),
    );
    let p = check(&auth, &mint(Algorithm::RS256, &scp_string)).unwrap();
    assert_eq!(p.scopes.len(), 2);
    assert!(p.has_scope(SCOPE_VIEWER) && p.has_scope("x.y"));

    let no_scopes = without(claims(), "scope");
    assert!(
        check(&auth, &mint(Algorithm::RS256, &no_scopes))
            .unwrap()
            .scopes
            .is_empty()
    );

    let tenant = with(claims(), "tenant", json!("acme"));
    let p = check(&auth, &mint(Algorithm::RS256, &tenant)).unwrap();
    assert_eq!(p.tenant.as_deref(), Some("acme"));

    for (field, value) in [
        ("scope", json!(["a"])),
        ("scp", json!([1, 2])),
        ("scp", json!(42)),
        ("tenant", json!(7)),
        ("sub", json!(12)),
        ("sub", json!({"id": "alice"})),
        ("iss", json!({"id": ISS})),
    ] {
        let message = refusal(
            &auth,
            &mint(Algorithm::RS256, &with(claims(), field, value)),
        );
        assert!(
            message.contains(&format!("malformed claim '{field}'")),
            "{message}"
        );
    }
}

#[test]
fn a_jwks_selects_the_key_by_kid() {
    let auth = jwks();
    for kid in ["rsa-1", "rsa-2"] {
        let p = check(&auth, &rsa_kid(kid, &claims())).unwrap();
        assert_eq!(p.subject.as_deref(), Some("alice"), "{kid}");
    }
    let ec = EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap();
    check(
        &auth,
        &mint_with(Algorithm::ES256, Some("ec-1"), &ec, &claims()),
    )
    .unwrap();
    let ed = EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap();
    check(
        &auth,
        &mint_with(Algorithm::EdDSA, Some("ed-1"), &ed, &claims()),
    )
    .unwrap();

    // Signed by rsa-2 but naming rsa-1: verified with rsa-1, so the signature fails.
    let key2 = EncodingKey::from_rsa_pem(&fixture("rsa-2-private.pem")).unwrap();
    let lying = mint_with(Algorithm::RS256, Some("rsa-1"), &key2, &claims());
    assert!(refusal(&auth, &lying).contains("bad signature"));
}

#[test]
fn unknown_kids_are_refused() {
    let auth = jwks();
    let message = refusal(&auth, &rsa_kid("rsa-9", &claims()));
    assert!(message.contains("unknown kid 'rsa-9'"), "{message}");
    // A key the JWKS holds for encryption is never used to verify.
    let message = refusal(&auth, &rsa_kid("rsa-enc", &claims()));
    assert!(
        message.contains("unknown kid") && message.contains("\"enc\""),
        "{message}"
    );
    // No kid, several keys: ambiguous.
    let message = refusal(&auth, &mint(Algorithm::RS256, &claims()));
    assert!(
        message.contains("unknown kid") && message.contains("4 keys"),
        "{message}"
    );
    // A kid that could forge a log line is not shown.
    let message = refusal(&auth, &rsa_kid("x\nERROR forged", &claims()));
    assert!(message.contains("unknown kid (not shown)"), "{message}");

    // A single-key source ignores the kid.
    let pem = authenticator(Algorithm::RS256);
    check(&pem, &rsa_kid("whatever", &claims())).unwrap();
}

#[test]
fn exp_is_required_and_checked_with_leeway() {
    let auth = authenticator(Algorithm::HS256);
    let token = |exp: Value| mint(Algorithm::HS256, &with(claims(), "exp", exp));

    let message = refusal(&auth, &token(json!(NOW - 100)));
    assert!(message.starts_with("expired"), "{message}");
    // Within the default 30 s leeway.
    check(&auth, &token(json!(NOW - 10))).unwrap();
    assert!(refusal(&auth, &token(json!(NOW - 30))).starts_with("expired"));
    check(&auth, &token(json!(NOW - 29))).unwrap();
    // Fractional NumericDates are accepted.
    check(&auth, &token(json!(NOW as f64 + 0.5))).unwrap();

    let strict = JwtAuthenticator::new(
        JwtConfig {
            leeway_seconds: 0,
            ..config()
        },
        &signer(Algorithm::HS256).1,
    )
    .unwrap();
    assert!(refusal(&strict, &token(json!(NOW - 10))).starts_with("expired"));
    assert!(refusal(&strict, &token(json!(NOW))).starts_with("expired"));
    check(&strict, &token(json!(NOW + 1))).unwrap();

    for bad in [
        json!("tomorrow"),
        json!(-5),
        json!(true),
        json!({"at": NOW}),
        json!([NOW]),
    ] {
        let message = refusal(&auth, &token(bad.clone()));
        assert!(
            message.contains("malformed claim 'exp'"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn nbf_is_checked_when_present() {
    let auth = authenticator(Algorithm::ES256);
    let token = |nbf: u64| mint(Algorithm::ES256, &with(claims(), "nbf", json!(nbf)));
    let message = refusal(&auth, &token(NOW + 100));
    assert!(message.starts_with("not yet valid"), "{message}");
    check(&auth, &token(NOW + 10)).unwrap();
    check(&auth, &token(NOW - 100)).unwrap();
    let message = refusal(
        &auth,
        &mint(Algorithm::ES256, &with(claims(), "nbf", json!("now"))),
    );
    assert!(message.contains("malformed claim 'nbf'"), "{message}");
}

#[test]
fn exp_iss_aud_and_sub_are_required() {
    let auth = authenticator(Algorithm::EdDSA);
    for claim in ["exp", "iss", "aud", "sub"] {
        let message = refusal(&auth, &mint(Algorithm::EdDSA, &without(claims(), claim)));
        assert_eq!(message, format!("missing required claim '{claim}'"));
        // `null` is absence.
        let message = refusal(
            &auth,
            &mint(Algorithm::EdDSA, &with(claims(), claim, Value::Null)),
        );
        assert_eq!(message, format!("missing required claim '{claim}'"));
    }
    let message = refusal(
        &auth,
        &mint(Algorithm::EdDSA, &with(claims(), "sub", json!(""))),
    );
    assert!(message.contains("malformed claim 'sub'"), "{message}");
}

#[test]
fn issuer_and_audience_must_match() {
    let auth = authenticator(Algorithm::RS256);
    let token = |field: &str, value: Value| mint(Algorithm::RS256, &with(claims(), field, value));

    let message = refusal(&auth, &token("iss", json!("https://evil.example")));
    assert!(
        message.starts_with("wrong issuer") && message.contains(ISS),
        "{message}"
    );
    let message = refusal(&auth, &token("iss", json!([ISS])));
    assert!(message.contains("malformed claim 'iss'"), "{message}");

    let message = refusal(&auth, &token("aud", json!("another-service")));
    assert!(
        message.starts_with("wrong audience") && message.contains(AUD),
        "{message}"
    );
    check(&auth, &token("aud", json!(["another-service", AUD]))).unwrap();
    let message = refusal(&auth, &token("aud", json!(["another-service", "x"])));
    assert!(message.starts_with("wrong audience"), "{message}");
    let message = refusal(&auth, &token("aud", json!([])));
    assert!(message.starts_with("wrong audience"), "{message}");
    let message = refusal(&auth, &token("aud", json!({"a": AUD})));
    assert!(message.contains("malformed claim 'aud'"), "{message}");
}

/// A token with an arbitrary header, the fixture claims and the given signature part.
fn hand_built(header: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    )
}

#[test]
fn alg_none_is_refused() {
    for auth in [authenticator(Algorithm::HS256), jwks()] {
        for alg in ["none", "None", "NONE"] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
            for signature in ["", "c2lnbmF0dXJl"] {
                let message = refusal(&auth, &hand_built(&header, signature));
                assert!(message.starts_with("algorithm not allowed"), "{message}");
            }
        }
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // The classic attack: HS256 "signed" with the RSA public key's PEM bytes as secret.
    let public_pem = fixture("rsa-1-public.pem");
    let secret = EncodingKey::from_secret(&public_pem).unwrap();
    let forged = mint_with(Algorithm::HS256, None, &secret, &claims());
    let message = refusal(&authenticator(Algorithm::RS256), &forged);
    assert!(message.starts_with("algorithm not allowed"), "{message}");
    assert!(
        message.contains("HS256") && message.contains("RS256"),
        "{message}"
    );

    let forged = mint_with(Algorithm::HS256, Some("rsa-1"), &secret, &claims());
    assert!(refusal(&jwks(), &forged).starts_with("algorithm not allowed"));

    // A key of one family is never used for another: an ES256 token naming an RSA kid, an
    // RS256 token against an EdDSA key, an RS384 token against an RS256 key.
    let ec = EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap();
    let es_as_rsa = mint_with(Algorithm::ES256, Some("rsa-1"), &ec, &claims());
    assert!(refusal(&jwks(), &es_as_rsa).starts_with("algorithm not allowed"));
    let rs = mint(Algorithm::RS256, &claims());
    assert!(refusal(&authenticator(Algorithm::EdDSA), &rs).starts_with("algorithm not allowed"));
    let rsa = EncodingKey::from_rsa_pem(&fixture("rsa-1-private.pem")).unwrap();
    let rs384 = mint_with(Algorithm::RS384, None, &rsa, &claims());
    assert!(refusal(&authenticator(Algorithm::RS256), &rs384).starts_with("algorithm not allowed"));
}

#[test]
fn a_tampered_token_is_refused() {
    let auth = authenticator(Algorithm::RS256);
    let token = mint(Algorithm::RS256, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let escalated = with(claims(), "scope", json!("taskrunner.admin"));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(escalated.to_string().as_bytes()),
        parts[2]
    );
    assert!(refusal(&auth, &tampered).starts_with("bad signature"));

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert!(refusal(&auth, &flipped).starts_with("bad signature"));

    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert!(refusal(&auth, &stripped).starts_with("bad signature"));
}

#[test]
fn headers_that_are_not_bearer_tokens_are_refused() {
    let auth = authenticator(Algorithm::HS256);
    let token = mint(Algorithm::HS256, &claims());
    let at = |h: Option<&str>| auth.authenticate_at(h, NOW);

    for header in [
        None,
        Some(""),
        Some("   "),
        Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        Some(token.as_str()),
    ] {
        assert_eq!(at(header), Err(AuthError::Missing), "{header:?}");
    }
    for scheme in ["bearer", "BEARER", "Bearer", "  Bearer"] {
        at(Some(&format!("{scheme}  {token} "))).unwrap();
    }
    at(Some(&format!("Bearer\t{token}"))).unwrap();

    let invalid = |header: String, expect: &str| match at(Some(&header)) {
        Err(AuthError::Invalid(m)) => assert!(m.contains(expect), "{header:?}: {m}"),
        other => panic!("{header:?}: expected Invalid, got {other:?}"),
    };
    invalid("Bearer".into(), "empty bearer token");
    invalid("Bearer    ".into(), "empty bearer token");
    invalid("Bearer abc".into(), "three");
    invalid("Bearer a.b.c.d.e".into(), "three");
    invalid("Bearer a.b.c".into(), "header is not base64url");
    invalid(
        format!("Bearer {}.e30.e30", b64(b"not json")),
        "not a JSON object",
    );
    invalid(
        format!("Bearer {}.e30.e30", b64(b"[1]")),
        "not a JSON object",
    );
    invalid(
        format!("Bearer {}.e30.e30", b64(br#"{"typ":"JWT"}"#)),
        "no 'alg'",
    );
    invalid(
        format!("Bearer {}.e30.e30", b64(br#"{"alg":5}"#)),
        "'alg' is not a string",
    );
    invalid(format!("Bearer {token} extra"), "compact JWS");
    invalid(format!("Bearer {token}=="), "compact JWS");
    invalid("Bearer ä.b.c".into(), "compact JWS");
    invalid(
        format!("Bearer {}", "a".repeat(TOKEN_BYTES_MAX + 1)),
        "larger than 8192 bytes",
    );
    invalid(
        format!("Bearer {}", "a".repeat(1 << 20)),
        "larger than 8192 bytes",
    );
    // A well-formed, signed payload that is not an object.
    let secret = EncodingKey::from_secret(&fixture("hmac-secret")).unwrap();
    let array = mint_with(Algorithm::HS256, None, &secret, &json!([1, 2]));
    invalid(format!("Bearer {array}"), "not a JSON object");
    // Unknown critical header parameters.
    let crit = hand_built(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}), "e30");
    invalid(format!("Bearer {crit}"), "crit");
}

#[test]
fn a_restricted_algorithm_narrows_a_jwks() {
    let auth = JwtAuthenticator::new(
        JwtConfig {
            algorithm: Some(JwtAlgorithm::EdDsa),
            ..config()
        },
        &KeySource::Jwks(fixture("jwks.json")),
    )
    .unwrap();
    let ed = EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap();
    check(
        &auth,
        &mint_with(Algorithm::EdDSA, Some("ed-1"), &ed, &claims()),
    )
    .unwrap();
    // The only usable key: a token without kid selects it.
    check(&auth, &mint_with(Algorithm::EdDSA, None, &ed, &claims())).unwrap();
    let message = refusal(&auth, &rsa_kid("rsa-1", &claims()));
    assert!(
        message.contains("unknown kid 'rsa-1'") && message.contains("EdDSA"),
        "{message}"
    );
}

#[test]
fn key_files_are_read() {
    let pem = JwtAuthenticator::from_file(config(), &KeyFile::Pem(fixture_path("ec-public.pem")))
        .unwrap();
    check(&pem, &mint(Algorithm::ES256, &claims())).unwrap();
    let set =
        JwtAuthenticator::from_file(config(), &KeyFile::Jwks(fixture_path("jwks.json"))).unwrap();
    check(&set, &rsa_kid("rsa-2", &claims())).unwrap();

    // One trailing newline is not part of the secret.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let mut bytes = fixture("hmac-secret");
    bytes.extend_from_slice(b"\r\n");
    std::fs::write(&path, bytes).unwrap();
    let hmac = JwtAuthenticator::from_file(config(), &KeyFile::HmacSecret(path.clone())).unwrap();
    check(&hmac, &mint(Algorithm::HS256, &claims())).unwrap();

    let missing = JwtAuthenticator::from_file(config(), &KeyFile::Pem(dir.path().join("nope")));
    assert!(
        matches!(missing, Err(JwtSetupError::Read { .. })),
        "{missing:?}"
    );

    std::fs::write(&path, b"short\n").unwrap();
    let err = JwtAuthenticator::from_file(config(), &KeyFile::HmacSecret(path.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret") && err.contains("5 bytes is too short"),
        "{err}"
    );
    assert!(err.starts_with(&path.display().to_string()), "{err}");
}

#[test]
fn unusable_key_material_is_a_setup_error() {
    let pem = |name: &str| KeySource::Pem(fixture(name));
    let err = setup_error(config(), &pem("rsa-1-private.pem"));
    assert!(
        err.contains("private key") && err.contains("-pubout"),
        "{err}"
    );
    let err = setup_error(config(), &pem("ec-p384-public.pem"));
    assert!(err.contains("P-384"), "{err}");
    let err = setup_error(config(), &KeySource::Pem(b"not a pem".to_vec()));
    assert!(err.contains("no PEM block"), "{err}");
    let mut two = fixture("rsa-1-public.pem");
    two.extend(fixture("rsa-2-public.pem"));
    assert!(setup_error(config(), &KeySource::Pem(two)).contains("2 PEM blocks"));

    let restricted = JwtConfig {
        algorithm: Some(JwtAlgorithm::Es256),
        ..config()
    };
    let err = setup_error(restricted.clone(), &pem("rsa-1-public.pem"));
    assert!(err.contains("RS256") && err.contains("ES256"), "{err}");
    let err = setup_error(restricted, &KeySource::HmacSecret(fixture("hmac-secret")));
    assert!(err.contains("HS256"), "{err}");

    let err = setup_error(config(), &KeySource::HmacSecret(b"0123456789".to_vec()));
    assert!(err.contains("too short"), "{err}");
    assert!(setup_error(config(), &KeySource::HmacSecret(Vec::new())).contains("too short"));

    let err = setup_error(JwtConfig::new("", AUD), &pem("rsa-1-public.pem"));
    assert!(err.contains("issuer"), "{err}");
    let err = setup_error(JwtConfig::new(ISS, ""), &pem("rsa-1-public.pem"));
    assert!(err.contains("audience"), "{err}");
    let lax = JwtConfig {
        leeway_seconds: 3600,
        ..config()
    };
    assert!(setup_error(lax, &pem("rsa-1-public.pem")).contains("at most 300 s"));
    assert!("HS512".parse::<JwtAlgorithm>().is_err());
    assert_eq!(
        "EdDSA".parse::<JwtAlgorithm>().unwrap(),
        JwtAlgorithm::EdDsa
    );
}

#[test]
fn a_broken_jwks_is_a_setup_error() {
    let jwks = |doc: Value| KeySource::Jwks(doc.to_string().into_bytes());
    let rsa_1 = || {
        let doc: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        doc["keys"][0].clone()
    };
    let cases = [
        (json!([]), "\"keys\" array"),
        (json!({"keys": []}), "no usable verification key"),
        (json!({"keys": [1]}), "keys[0] is not an object"),
        (json!({"keys": [{"kid": "a"}]}), "missing \"kty\""),
        (
            json!({"keys": [{"kty": "OKP", "crv": "X25519", "x": "AA"}]}),
            "X25519",
        ),
        (json!({"keys": [rsa_1(), rsa_1()]}), "used twice"),
        (
            json!({"keys": [with(rsa_1(), "alg", json!("HS256"))]}),
            "does not fit key type",
        ),
        (json!({"keys": [with(rsa_1(), "n", json!("AQAB"))]}), "bits"),
        (
            json!({"keys": [with(rsa_1(), "n", json!("*"))]}),
            "not base64url",
        ),
        (
            json!({"keys": [{"kty": "oct", "k": b64(b"short")}]}),
            "too short",
        ),
        (
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}]}),
            "not a valid ES256 public key",
        ),
        (
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 31])}]}),
            "32 bytes",
        ),
    ];
    for (doc, expect) in cases {
        let err = setup_error(config(), &jwks(doc.clone()));
        assert!(err.contains(expect), "{doc}: {err}");
    }
    assert!(setup_error(config(), &KeySource::Jwks(b"{".to_vec())).contains("not valid JSON"));

    // An oct key in a JWKS verifies HS256 only.
    let secret = fixture("hmac-secret");
    let auth = JwtAuthenticator::new(
        config(),
        &jwks(json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(&secret)}, rsa_1()]})),
    )
    .unwrap();
    let key = EncodingKey::from_secret(&secret).unwrap();
    check(
        &auth,
        &mint_with(Algorithm::HS256, Some("h"), &key, &claims()),
    )
    .unwrap();
    let forged = mint_with(Algorithm::HS256, Some("rsa-1"), &key, &claims());
    assert!(refusal(&auth, &forged).starts_with("algorithm not allowed"));
}

#[test]
fn debug_output_never_shows_secrets() {
    let secret = fixture("hmac-secret");
    let source = KeySource::HmacSecret(secret.clone());
    let text = String::from_utf8(secret).unwrap();
    assert!(!format!("{source:?}").contains(&text));
    let auth = JwtAuthenticator::new(config(), &source).unwrap();
    let debug = format!("{auth:?}");
    assert!(!debug.contains(&text) && debug.contains("Hs256"), "{debug}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// No header value makes the authenticator panic or accept.
    #[test]
    fn arbitrary_headers_are_refused_without_panicking(header in ".{0,300}") {
        let auth = jwks();
        proptest::prop_assert!(auth.authenticate_at(Some(&header), NOW).is_err());
    }

    /// Random compact-looking tokens (valid alphabet, three parts) are refused too.
    #[test]
    fn arbitrary_compact_tokens_are_refused(
        header in proptest::sample::select(vec![
            r#"{"alg":"RS256","kid":"rsa-1"}"#, r#"{"alg":"ES256","kid":"ec-1"}"#,
            r#"{"alg":"EdDSA","kid":"ed-1"}"#, r#"{"alg":"RS256"}"#, r#"{"alg":"none"}"#,
        ]),
        payload in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        signature in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
    ) {
        let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(&payload), b64(&signature));
        let auth = jwks();
        proptest::prop_assert!(check(&auth, &token).is_err());
    }
}
