//! `taskrunner serve`: wiring of the HTTP server. Reads the configuration, builds the store
//! (embedded SQLite under the data directory), the executors, the runtime and the
//! authenticator, mounts `taskrunner_http::router` on the listener and shuts down gracefully
//! on SIGTERM/SIGINT (stop accepting, let in-flight requests finish, end log followers, stop the
//! run drivers without touching run state so every run is recovered at the next start).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use taskrunner_auth::{Authenticator, JwtAlgorithm, JwtAuthenticator, JwtConfig, KeyFile, NoAuth};
use taskrunner_http::HttpConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, JwtKey, JwtSettings, Settings};
use crate::listener::{self, ListenerOptions};
use crate::run;

/// What `serve` needs beyond the configuration.
pub(crate) struct Serve {
    pub(crate) settings: Settings,
    /// `--listen`, overriding the configuration.
    pub(crate) listen: Option<SocketAddr>,
    /// The wiring shared with `run`/`resume` (executors, launcher, data directory, tenant).
    pub(crate) local: run::Local,
}

/// Rule 25: `none` only on loopback.
pub(crate) fn check_auth_on_address(auth: AuthMode, listen: SocketAddr) -> Result<()> {
    if auth == AuthMode::None && !listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {listen} without authentication: auth mode `none` is allowed \
             only on a loopback address (SPEC rule 25). Listen on 127.0.0.1 or [::1], or set \
             [server] auth = \"jwt\" with a [server.jwt] issuer, audience and key (see docs/CONFIG.md)"
        );
    }
    Ok(())
}

fn authenticator(settings: &Settings) -> Result<Arc<dyn Authenticator>> {
    match (settings.server.auth, &settings.server.jwt) {
        (AuthMode::None, _) => Ok(Arc::new(NoAuth)),
        (AuthMode::Jwt, None) => Err(anyhow!("auth = \"jwt\" needs [server.jwt]")),
        (AuthMode::Jwt, Some(jwt)) => Ok(Arc::new(jwt_authenticator(jwt)?)),
    }
}

fn jwt_authenticator(jwt: &JwtSettings) -> Result<JwtAuthenticator> {
    let mut config = JwtConfig::new(jwt.issuer.clone(), jwt.audience.clone());
    config.leeway_seconds = jwt.leeway_seconds;
    if let Some(name) = &jwt.algorithm {
        config.algorithm = Some(
            name.parse::<JwtAlgorithm>()
                .map_err(|e| anyhow!("[server.jwt] algorithm: {e}"))?,
        );
    }
    let file = match &jwt.key {
        JwtKey::Pem(p) => KeyFile::Pem(p.clone()),
        JwtKey::Jwks(p) => KeyFile::Jwks(p.clone()),
        JwtKey::HmacSecret(p) => KeyFile::HmacSecret(p.clone()),
    };
    JwtAuthenticator::from_file(config, &file).map_err(|e| anyhow!("[server.jwt]: {e}"))
}

/// The Ed25519 seed that signs the served spec: 32 raw bytes, or 64 hex digits, or base64 of
/// 32 bytes (surrounding whitespace ignored).
fn signing_key(path: &Path) -> Result<[u8; 32]> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the spec signing key {}", path.display()))?;
    if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(seed);
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.len() == 64 {
        let mut seed = [0u8; 32];
        let ok = (0..32).all(|i| {
            text.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| seed[i] = b)
                .is_some()
        });
        if ok {
            return Ok(seed);
        }
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            anyhow!(
                "{}: expected an Ed25519 seed: 32 raw bytes, 64 hex digits or base64 of 32 bytes",
                path.display()
            )
        })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No signal handling: run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
    }
}

/// Runs the server until SIGTERM/SIGINT.
pub(crate) async fn serve(serve: Serve) -> Result<()> {
    let Serve {
        settings,
        listen,
        local,
    } = serve;
    let listen = listen.unwrap_or(settings.server.listen);
    check_auth_on_address(settings.server.auth, listen)?;
    let authenticator = authenticator(&settings)?;
    let spec_signing_key = settings
        .server
        .spec_signing_key_file
        .as_deref()
        .map(signing_key)
        .transpose()?;
    // A configured evidence key must be readable before anything starts.
    let evidence = match &settings.evidence.signing_key {
        Some(path) => Some(taskrunner_http::EvidenceConfig {
            signer: Arc::from(crate::evidence::read_signer(path)?),
            builder_id: settings.evidence.builder_id.clone(),
        }),
        None => None,
    };
    let body_limit_bytes = usize::try_from(settings.server.body_limit_bytes)
        .context("body_limit_bytes does not fit this platform")?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;

    let runtime = run::start(&local, settings.database.as_ref()).await?;
    let shutdown = CancellationToken::new();
    let mut http = HttpConfig::new(authenticator);
    http.default_tenant = settings.default_tenant.clone();
    http.body_limit_bytes = body_limit_bytes;
    http.build_version = env!("CARGO_PKG_VERSION").to_owned();
    http.spec_signing_key = spec_signing_key;
    http.evidence = evidence;
    http.metrics_render = Some(Arc::new(move || metrics.render()));
    http.shutdown = shutdown.clone();
    let app = taskrunner_http::router(runtime.clone(), http);

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener
        .local_addr()
        .context("the listener has no address")?;
    let auth = match settings.server.auth {
        AuthMode::None => "none (loopback only)",
        AuthMode::Jwt => "jwt",
    };
    println!("taskrunner listening on http://{bound}");
    let store = match &settings.database {
        None => format!("data in {} (embedded SQLite)", local.data_dir.display()),
        Some(db) => format!(
            "replica on PostgreSQL, artifacts in {}, workspaces in {}",
            db.artifact_dir.display(),
            local.workspace_root.display()
        ),
    };
    eprintln!(
        "taskrunner {}: {store}, auth {auth}, default tenant {}",
        env!("CARGO_PKG_VERSION"),
        settings.default_tenant
    );
    let options = ListenerOptions {
        header_read_timeout: Duration::from_secs(settings.server.header_read_timeout_seconds),
        shutdown_grace: Duration::from_secs(settings.server.shutdown_grace_seconds),
    };
    let stop = shutdown.clone();
    let left = listener::serve(listener, app, options, async move {
        termination().await;
        // Followers end their streams now; other in-flight requests finish.
        stop.cancel();
    })
    .await;
    // Drivers stop without touching run state: running attempts are killed and retried as
    // `interrupted` at the next start (SPEC §6.2); a replica hands its runs to the others.
    runtime.shutdown_gracefully().await;
    eprintln!(
        "taskrunner stopped{}",
        if left > 0 {
            format!(" ({left} connection(s) closed after the grace period)")
        } else {
            String::new()
        }
    );
    Ok(())
}
