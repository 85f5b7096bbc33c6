//! TLS to PostgreSQL, configured in the URL like libpq: `sslmode` and `sslrootcert`, over
//! rustls (ring). The driver itself only knows `disable | prefer | require`, so both parameters
//! are taken off the URL here and turned into the driver's mode plus a rustls configuration:
//!
//! | `sslmode` | TLS | checks the certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | if the server offers it | no (as `require`) |
//! | `require` | always | no; with an explicit `sslrootcert`, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | chain up to a root of `sslrootcert` |
//! | `verify-full` | always | chain, and the host name (or IP address) in the URL |
//!
//! `sslrootcert` is a PEM file of trusted roots; without it `verify-*` read
//! `~/.postgresql/root.crt` as libpq does, and fail to start when that file is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use taskrunner_store::{StoreError, StoreResult};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector every connection of the adapter uses.
pub(crate) type Tls = MakeRustlsConnect;

/// libpq's `sslmode` values this adapter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> StoreResult<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Invalid(format!(
                    "database url: sslmode={other:?} is not supported (disable, prefer, require, \
                     verify-ca or verify-full)"
                )));
            }
        })
    }
}

/// The driver configuration (without the TLS parameters) and the TLS connector for `url`.
pub(crate) fn configure(url: &str) -> StoreResult<(tokio_postgres::Config, Tls, SslMode)> {
    let (rest, mode, root_cert) = split_tls_params(url)?;
    let mode = mode
        .as_deref()
        .map_or(Ok(SslMode::Prefer), SslMode::parse)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        StoreError::Invalid(format!(
            "database url is not a PostgreSQL connection string: {e}"
        ))
    })?;
    config.ssl_mode(match mode {
        SslMode::Disable => DriverMode::Disable,
        SslMode::Prefer => DriverMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
    });
    let root_cert = root_cert.map(PathBuf::from);
    let verify = match (mode, &root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
        (SslMode::Require | SslMode::VerifyCa, _) => Verify::Chain,
        (SslMode::VerifyFull, _) => Verify::ChainAndName,
    };
    let client = client_config(verify, root_cert.as_deref(), mode)?;
    Ok((config, MakeRustlsConnect::new(client), mode))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    verify: Verify,
    root_cert: Option<&Path>,
    mode: SslMode,
) -> StoreResult<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(NoCheck(provider.clone())),
        Verify::Chain | Verify::ChainAndName => {
            let roots = load_roots(root_cert, mode)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| StoreError::Invalid(format!("database url: sslrootcert: {e}")))?;
            if verify == Verify::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The trusted roots: `sslrootcert`, else `~/.postgresql/root.crt` (libpq's default).
fn load_roots(root_cert: Option<&Path>, mode: SslMode) -> StoreResult<RootCertStore> {
    let path = match root_cert {
        Some(p) => p.to_owned(),
        None => {
            let default = std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| p.is_file());
            default.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "database url: sslmode={} needs sslrootcert=<PEM file of trusted roots> \
                     (~/.postgresql/root.crt does not exist)",
                    match mode {
                        SslMode::VerifyFull => "verify-full",
                        _ => "verify-ca",
                    }
                ))
            })?
        }
    };
    let unreadable = |e: &dyn std::fmt::Display| {
        StoreError::Invalid(format!("sslrootcert {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(roots)
}

/// `prefer`/`require` without roots: encrypted, the server's certificate not checked (libpq
/// does the same); handshake signatures are still verified.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `url` without its `sslmode` and `sslrootcert` parameters, and their values. Both libpq
/// forms: a URL (`postgres://…?sslmode=verify-full&sslrootcert=/ca.pem`, values
/// percent-decoded) and key/value (`host=db sslmode=require`, values optionally single-quoted
/// with `\` escapes).
fn split_tls_params(url: &str) -> StoreResult<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for piece in query.split('&') {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            match key {
                "sslmode" => mode = Some(percent_decode(value)?),
                "sslrootcert" => root = Some(percent_decode(value)?),
                _ => kept.push(piece),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), mode, root))
}

fn percent_decode(text: &str) -> StoreResult<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    StoreError::Invalid(format!("database url: bad percent-encoding in {text:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StoreError::Invalid(format!("database url: {text:?} is not UTF-8")))
}

/// The pairs of a libpq key/value connection string.
fn key_values(text: &str) -> StoreResult<Vec<(String, String)>> {
    let bad = |why: &str| StoreError::Invalid(format!("database url: {why}"));
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("{key:?} has no '=' value")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad("an unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("a trailing '\\'"))?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| bad("a trailing '\\'"))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_off_both_url_forms() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u@db:5432/tr?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/tr?connect_timeout=5");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca x.pem"));
        let (rest, mode, root) = split_tls_params("postgres://u@db/tr?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root),
            ("postgres://u@db/tr", Some("require"), None)
        );
        let (rest, mode, root) =
            split_tls_params("host=db  user = u sslmode=verify-ca sslrootcert='/a b/c\\'d.pem'")
                .unwrap();
        assert_eq!(rest, "host='db' user='u'");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/a b/c'd.pem"));
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());
    }

    #[test]
    fn bad_parameters_are_refused_clearly() {
        let err = |url: &str| {
            configure(url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("postgres://u@db/tr?sslmode=allow").contains("sslmode=\"allow\" is not supported")
        );
        assert!(err("postgres://u@db/tr?sslmode=verify-full&sslrootcert=%zz").contains("percent"));
        assert!(err("host=db sslrootcert='open").contains("unterminated"));
        assert!(
            err("postgres://u@db/tr?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .contains("/nonexistent/ca.pem")
        );
        assert!(err("postgres://u@db/tr?sslmode=require&nonsense=1").contains("not a PostgreSQL"));
        // Modes without a root need no file.
        for mode in ["disable", "prefer", "require"] {
            let (_, _, parsed) = configure(&format!("postgres://u@db/tr?sslmode={mode}")).unwrap();
            assert_eq!(parsed, SslMode::parse(mode).unwrap());
        }
        assert_eq!(configure("postgres://u@db/tr").unwrap().2, SslMode::Prefer);
    }
}
