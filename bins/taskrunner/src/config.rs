//! `--config FILE` (rule 28): the TOML configuration shared by `run`, `resume` and (later)
//! `serve`, merged with `TASKRUNNER_*` environment variables and command-line flags.
//!
//! Precedence, per key: command-line flag > environment variable > config file > default.
//! Every key is optional; unknown keys are errors. Errors read `FILE: line L, column C: message`.
//! Relative paths in the file are relative to the file's directory; relative paths given by a
//! flag or an environment variable are relative to the current directory.
//!
//! `TASKRUNNER_SECRET_<NAME>` variables are secret values (read by the runtime's secret
//! provider), not settings; no setting's variable starts with `TASKRUNNER_SECRET_`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use taskrunner_exec::CommandExecutor;
use taskrunner_runtime::MAX_DRIVERS_MAX;
use toml::Spanned;

/// Default of `data_dir`.
pub(crate) const DATA_DIR_DEFAULT: &str = "./taskrunner-data";
/// Default of `default_tenant`.
pub(crate) const TENANT_DEFAULT: &str = "default";
/// Default of `server.listen`.
pub(crate) const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

/// Environment variables of the settings.
pub(crate) const ENV_DATA_DIR: &str = "TASKRUNNER_DATA_DIR";
pub(crate) const ENV_DATABASE_URL: &str = "TASKRUNNER_DATABASE_URL";
pub(crate) const ENV_ARTIFACT_DIR: &str = "TASKRUNNER_ARTIFACT_DIR";
pub(crate) const ENV_WORKSPACE_ROOT: &str = "TASKRUNNER_WORKSPACE_ROOT";
pub(crate) const ENV_LEASE_TTL_MS: &str = "TASKRUNNER_LEASE_TTL_MS";
pub(crate) const ENV_SECRETS_DIR: &str = "TASKRUNNER_SECRETS_DIR";
pub(crate) const ENV_DEFAULT_TENANT: &str = "TASKRUNNER_DEFAULT_TENANT";
pub(crate) const ENV_LISTEN: &str = "TASKRUNNER_LISTEN";
pub(crate) const ENV_AUTH: &str = "TASKRUNNER_AUTH";
pub(crate) const ENV_BODY_LIMIT_BYTES: &str = "TASKRUNNER_BODY_LIMIT_BYTES";
pub(crate) const ENV_HEADER_READ_TIMEOUT_SECONDS: &str = "TASKRUNNER_HEADER_READ_TIMEOUT_SECONDS";
pub(crate) const ENV_SHUTDOWN_GRACE_SECONDS: &str = "TASKRUNNER_SHUTDOWN_GRACE_SECONDS";
pub(crate) const ENV_MAX_DRIVERS: &str = "TASKRUNNER_MAX_DRIVERS";
pub(crate) const ENV_SPEC_SIGNING_KEY_FILE: &str = "TASKRUNNER_SPEC_SIGNING_KEY_FILE";
/// `[evidence] signing_key`: the PEM private key run evidence is signed with.
pub(crate) const ENV_EVIDENCE_SIGNING_KEY: &str = "TASKRUNNER_EVIDENCE_SIGNING_KEY";
/// `[evidence] builder_id`: `runDetails.builder.id` of the provenance.
pub(crate) const ENV_EVIDENCE_BUILDER_ID: &str = "TASKRUNNER_EVIDENCE_BUILDER_ID";
/// Default of `[evidence] builder_id`.
pub(crate) const EVIDENCE_BUILDER_ID_DEFAULT: &str =
    "https://stellaops.org/taskrunner/builder/local";
pub(crate) const ENV_JWT_ISSUER: &str = "TASKRUNNER_JWT_ISSUER";
pub(crate) const ENV_JWT_AUDIENCE: &str = "TASKRUNNER_JWT_AUDIENCE";
pub(crate) const ENV_JWT_KEY_FILE: &str = "TASKRUNNER_JWT_KEY_FILE";
pub(crate) const ENV_JWT_JWKS_FILE: &str = "TASKRUNNER_JWT_JWKS_FILE";
pub(crate) const ENV_JWT_HMAC_SECRET_FILE: &str = "TASKRUNNER_JWT_HMAC_SECRET_FILE";
pub(crate) const ENV_JWT_ALGORITHM: &str = "TASKRUNNER_JWT_ALGORITHM";
pub(crate) const ENV_JWT_LEEWAY_SECONDS: &str = "TASKRUNNER_JWT_LEEWAY_SECONDS";

/// Default (and largest) `lease_ttl_ms` (SPEC rule 29: a lease lasts at most 10 s).
pub(crate) const LEASE_TTL_MS_DEFAULT: u64 = 10_000;
/// Shortest `lease_ttl_ms`.
pub(crate) const LEASE_TTL_MS_MIN: u64 = 200;

/// Default of `server.body_limit_bytes` (SPEC §6.3).
pub(crate) const BODY_LIMIT_BYTES_DEFAULT: u64 = 2 * 1024 * 1024;
/// Default of `server.header_read_timeout_seconds`.
pub(crate) const HEADER_READ_TIMEOUT_SECONDS_DEFAULT: u64 = 10;
/// Default of `server.shutdown_grace_seconds`.
pub(crate) const SHUTDOWN_GRACE_SECONDS_DEFAULT: u64 = 30;
/// Default of `server.max_drivers` (the replica default, `ReplicaConfig::new`).
pub(crate) const MAX_DRIVERS_DEFAULT: u64 = 256;

/// Default of `server.jwt.leeway_seconds` (clock skew tolerated on `exp`/`nbf`).
pub(crate) const JWT_LEEWAY_SECONDS_DEFAULT: u64 = 30;

/// Executor names a config file may not take: the in-process and shell built-ins (SPEC §7).
const RESERVED_EXECUTORS: [&str; 5] = [
    "builtin:noop",
    "builtin:echo",
    "builtin:sleep",
    "builtin:shell",
    "builtin:http",
];

/// The file as written: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    secrets_dir: Option<PathBuf>,
    database_url: Option<String>,
    artifact_dir: Option<PathBuf>,
    workspace_root: Option<PathBuf>,
    lease_ttl_ms: Option<Spanned<u64>>,
    default_tenant: Option<Spanned<String>>,
    #[serde(default)]
    executors: BTreeMap<Spanned<String>, ExecutorFile>,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    evidence: EvidenceFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceFile {
    signing_key: Option<PathBuf>,
    builder_id: Option<String>,
}

/// `[evidence]`: signing run evidence (docs/EVIDENCE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvidenceSettings {
    /// PEM PKCS#8 Ed25519 private key; `None`: evidence cannot be signed (a clear error).
    pub(crate) signing_key: Option<PathBuf>,
    /// `runDetails.builder.id`.
    pub(crate) builder_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutorFile {
    command: Spanned<Vec<String>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<Spanned<u64>>,
}

/// A host-configured command executor (`[executors."NAME"]`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostExecutor {
    /// The argv templates.
    pub(crate) command: Vec<String>,
    /// Literal environment variables of the process.
    pub(crate) env: BTreeMap<String, String>,
    /// Wall-time limit of each attempt (the step's own timeout applies when shorter).
    pub(crate) timeout_seconds: Option<u64>,
}

impl HostExecutor {
    /// The executor, starting processes through `launcher`.
    pub(crate) fn build(
        &self,
        launcher: Arc<taskrunner_exec::Launcher>,
    ) -> Result<CommandExecutor, taskrunner_exec::ExecError> {
        Ok(
            CommandExecutor::with_launcher(self.command.clone(), launcher)?
                .with_env(self.env.clone())?
                .with_timeout(self.timeout_seconds.map(std::time::Duration::from_secs)),
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<SocketAddr>,
    auth: Option<AuthMode>,
    body_limit_bytes: Option<Spanned<u64>>,
    header_read_timeout_seconds: Option<Spanned<u64>>,
    shutdown_grace_seconds: Option<Spanned<u64>>,
    spec_signing_key_file: Option<PathBuf>,
    max_drivers: Option<Spanned<u64>>,
    #[serde(default)]
    jwt: JwtFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtFile {
    issuer: Option<String>,
    audience: Option<String>,
    key_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    hmac_secret_file: Option<PathBuf>,
    algorithm: Option<String>,
    leeway_seconds: Option<Spanned<u64>>,
}

/// How the server authenticates callers (rule 25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthMode {
    /// Every caller holds every scope; loopback listeners only.
    #[default]
    None,
    /// Bearer JWTs (`[server.jwt]`).
    Jwt,
}

impl AuthMode {
    fn parse(text: &str) -> Option<AuthMode> {
        match text {
            "none" => Some(AuthMode::None),
            "jwt" => Some(AuthMode::Jwt),
            _ => None,
        }
    }
}

/// Settings given on the command line (`None`: not given).
#[derive(Debug, Default)]
pub(crate) struct Flags {
    pub(crate) config: Option<PathBuf>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) secrets_dir: Option<PathBuf>,
    /// `--database-url` (`serve` only).
    pub(crate) database_url: Option<String>,
}

/// The effective settings.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) secrets_dir: Option<PathBuf>,
    /// `serve` stores runs in this PostgreSQL database, as one of several replicas.
    pub(crate) database: Option<DatabaseSettings>,
    /// Run workspaces: `workspace_root/<tenant>/<run_id>` (default `data_dir/workspaces`).
    pub(crate) workspace_root: PathBuf,
    pub(crate) default_tenant: String,
    /// Host-configured command executors by `uses` name, checked.
    pub(crate) executors: BTreeMap<String, HostExecutor>,
    /// `[server]`, read by `serve`.
    pub(crate) server: ServerSettings,
    /// `[evidence]`, read by `evidence`, `export` and `serve`.
    pub(crate) evidence: EvidenceSettings,
}

/// The PostgreSQL store of a replica (`database_url` is set).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DatabaseSettings {
    /// libpq-style URL; may hold a password, so it is never printed.
    pub(crate) url: String,
    /// The artifact directory every replica shares (default `data_dir`).
    pub(crate) artifact_dir: PathBuf,
    /// Lease time-to-live in ms (renewed every third of it, at most every 3 s).
    pub(crate) lease_ttl_ms: u64,
    /// `[server] max_drivers`: most runs this replica drives at once
    /// (1..=[`MAX_DRIVERS_MAX`]; the rest wait `Pending` for a replica with room).
    pub(crate) max_drivers: usize,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"<redacted>")
            .field("artifact_dir", &self.artifact_dir)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("max_drivers", &self.max_drivers)
            .finish()
    }
}

/// `[server]`: the settings of `serve`.
#[derive(Debug)]
pub(crate) struct ServerSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) auth: AuthMode,
    /// Largest request body (SPEC §6.3: 2 MiB by default → 413).
    pub(crate) body_limit_bytes: u64,
    /// Longest wait for a request's header, and for the next request on an idle connection.
    pub(crate) header_read_timeout_seconds: u64,
    /// Longest wait for in-flight requests at shutdown.
    pub(crate) shutdown_grace_seconds: u64,
    /// An Ed25519 key (32-byte seed, raw or base64) that signs the served spec.
    pub(crate) spec_signing_key_file: Option<PathBuf>,
    /// `[server.jwt]`, required when `auth = "jwt"`.
    pub(crate) jwt: Option<JwtSettings>,
}

/// `[server.jwt]`: how bearer tokens are checked.
#[derive(Debug, Clone)]
pub(crate) struct JwtSettings {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) key: JwtKey,
    /// `RS256`, `ES256`, `EdDSA` for a PEM key (inferred from the key when absent).
    pub(crate) algorithm: Option<String>,
    pub(crate) leeway_seconds: u64,
}

/// Where the token-checking key comes from (exactly one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwtKey {
    /// A PEM public key.
    Pem(PathBuf),
    /// A JWKS document (keys selected by `kid`).
    Jwks(PathBuf),
    /// An HS256 shared secret (the file's bytes, a trailing newline removed).
    HmacSecret(PathBuf),
}

/// Reads the config file named by `flags` (if any) and merges it with the process environment
/// and the flags.
pub(crate) fn load(flags: Flags) -> Result<Settings> {
    resolve(flags, |name| std::env::var_os(name))
}

/// [`load`] with an explicit environment (tests).
pub(crate) fn resolve(flags: Flags, env: impl Fn(&str) -> Option<OsString>) -> Result<Settings> {
    // An empty variable counts as unset.
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let env_text = |name: &str| -> Result<Option<String>> {
        env(name)
            .map(|v| {
                v.into_string()
                    .map_err(|_| anyhow!("{name}: the value is not UTF-8 text"))
            })
            .transpose()
    };

    let (file, text, base) = match &flags.config {
        Some(path) => {
            let (file, text) = read_file(path)?;
            (file, text, path.parent().map(Path::to_path_buf))
        }
        None => (ConfigFile::default(), String::new(), None),
    };
    // Spans only come from a file's text, so `flags.config` is set whenever this is called.
    let at = |span: std::ops::Range<usize>, message: String| -> anyhow::Error {
        let path = flags.config.as_deref().unwrap_or(Path::new("<config>"));
        anyhow!(
            "{}: {}",
            path.display(),
            with_position(&text, span, &message)
        )
    };
    let in_file = |p: PathBuf| match &base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    };

    let data_dir = flags
        .data_dir
        .or_else(|| env(ENV_DATA_DIR).map(PathBuf::from))
        .or_else(|| file.data_dir.map(in_file))
        .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
    let secrets_dir = flags
        .secrets_dir
        .or_else(|| env(ENV_SECRETS_DIR).map(PathBuf::from))
        .or_else(|| file.secrets_dir.map(in_file));

    let database_url = match flags.database_url.filter(|u| !u.is_empty()) {
        Some(url) => Some(url),
        None => match env_text(ENV_DATABASE_URL)? {
            Some(url) => Some(url),
            None => file.database_url.filter(|u| !u.is_empty()),
        },
    };
    let artifact_dir = env(ENV_ARTIFACT_DIR)
        .map(PathBuf::from)
        .or_else(|| file.artifact_dir.map(in_file))
        .unwrap_or_else(|| data_dir.clone());
    let workspace_root = env(ENV_WORKSPACE_ROOT)
        .map(PathBuf::from)
        .or_else(|| file.workspace_root.map(in_file))
        .unwrap_or_else(|| data_dir.join("workspaces"));
    let ttl_range = LEASE_TTL_MS_MIN..=LEASE_TTL_MS_DEFAULT;
    let lease_ttl_ms = match env_text(ENV_LEASE_TTL_MS)? {
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|ms| ttl_range.contains(ms))
            .ok_or_else(|| {
                anyhow!(
                    "{ENV_LEASE_TTL_MS}: {text:?} is not a number of milliseconds from \
                     {LEASE_TTL_MS_MIN} to {LEASE_TTL_MS_DEFAULT}"
                )
            })?,
        None => match file.lease_ttl_ms {
            Some(ms) if !ttl_range.contains(ms.get_ref()) => {
                return Err(at(
                    ms.span(),
                    format!(
                        "lease_ttl_ms must be from {LEASE_TTL_MS_MIN} to {LEASE_TTL_MS_DEFAULT} \
                         (SPEC rule 29: a lease lasts at most 10 s)"
                    ),
                ));
            }
            Some(ms) => ms.into_inner(),
            None => LEASE_TTL_MS_DEFAULT,
        },
    };

    let default_tenant = match env_text(ENV_DEFAULT_TENANT)? {
        Some(t) => {
            check_tenant(&t).map_err(|m| anyhow!("{ENV_DEFAULT_TENANT}: {m}"))?;
            t
        }
        None => match file.default_tenant {
            Some(t) => {
                check_tenant(t.get_ref()).map_err(|m| at(t.span(), m))?;
                t.into_inner()
            }
            None => TENANT_DEFAULT.to_owned(),
        },
    };

    let listen = match env_text(ENV_LISTEN)? {
        Some(text) => text.parse::<SocketAddr>().map_err(|e| {
            anyhow!("{ENV_LISTEN}: {e}: {text:?}, expected an address such as {LISTEN_DEFAULT}")
        })?,
        None => match file.server.listen {
            Some(addr) => addr,
            None => LISTEN_DEFAULT
                .parse()
                .map_err(|e| anyhow!("default listen address: {e}"))?,
        },
    };
    let auth = match env_text(ENV_AUTH)? {
        Some(text) => AuthMode::parse(&text).ok_or_else(|| {
            anyhow!("{ENV_AUTH}: unknown auth mode {text:?}, expected `none` or `jwt`")
        })?,
        None => file.server.auth.unwrap_or_default(),
    };

    // A positive integer: variable > file > default.
    let number = |var: &str, from_file: Option<Spanned<u64>>, default: u64| -> Result<u64> {
        let value = match env_text(var)? {
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| anyhow!("{var}: {text:?} is not a positive integer"))?,
            None => match from_file {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(at(
                        n.span(),
                        "expected a positive integer, got 0".to_owned(),
                    ));
                }
                Some(n) => n.into_inner(),
                None => default,
            },
        };
        Ok(value)
    };
    let path = |var: &str, from_file: Option<PathBuf>| -> Option<PathBuf> {
        env(var)
            .map(PathBuf::from)
            .or_else(|| from_file.map(in_file))
    };
    let evidence = EvidenceSettings {
        signing_key: path(ENV_EVIDENCE_SIGNING_KEY, file.evidence.signing_key),
        builder_id: match env_text(ENV_EVIDENCE_BUILDER_ID)? {
            Some(id) => id,
            None => file
                .evidence
                .builder_id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| EVIDENCE_BUILDER_ID_DEFAULT.to_owned()),
        },
    };
    let server_file = file.server;
    let body_limit_bytes = number(
        ENV_BODY_LIMIT_BYTES,
        server_file.body_limit_bytes,
        BODY_LIMIT_BYTES_DEFAULT,
    )?;
    let header_read_timeout_seconds = number(
        ENV_HEADER_READ_TIMEOUT_SECONDS,
        server_file.header_read_timeout_seconds,
        HEADER_READ_TIMEOUT_SECONDS_DEFAULT,
    )?;
    let shutdown_grace_seconds = number(
        ENV_SHUTDOWN_GRACE_SECONDS,
        server_file.shutdown_grace_seconds,
        SHUTDOWN_GRACE_SECONDS_DEFAULT,
    )?;
    let spec_signing_key_file = path(ENV_SPEC_SIGNING_KEY_FILE, server_file.spec_signing_key_file);
    let max_drivers = number(
        ENV_MAX_DRIVERS,
        server_file.max_drivers.clone(),
        MAX_DRIVERS_DEFAULT,
    )?;
    let max_drivers = match usize::try_from(max_drivers) {
        Ok(n) if n <= MAX_DRIVERS_MAX => n,
        _ => {
            let message = format!("max_drivers must be from 1 to {MAX_DRIVERS_MAX}");
            return Err(
                match (env_text(ENV_MAX_DRIVERS)?, server_file.max_drivers) {
                    (None, Some(n)) => at(n.span(), message),
                    _ => anyhow!("{ENV_MAX_DRIVERS}: {message}"),
                },
            );
        }
    };
    let database = database_url.map(|url| DatabaseSettings {
        url,
        artifact_dir,
        lease_ttl_ms,
        max_drivers,
    });
    let jwt_file = server_file.jwt;
    let issuer = env_text(ENV_JWT_ISSUER)?.or(jwt_file.issuer);
    let audience = env_text(ENV_JWT_AUDIENCE)?.or(jwt_file.audience);
    let algorithm = env_text(ENV_JWT_ALGORITHM)?.or(jwt_file.algorithm);
    let leeway_seconds = match env_text(ENV_JWT_LEEWAY_SECONDS)? {
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            anyhow!("{ENV_JWT_LEEWAY_SECONDS}: {text:?} is not a whole number of seconds")
        })?,
        None => jwt_file
            .leeway_seconds
            .map_or(JWT_LEEWAY_SECONDS_DEFAULT, Spanned::into_inner),
    };
    let keys: Vec<JwtKey> = [
        path(ENV_JWT_KEY_FILE, jwt_file.key_file).map(JwtKey::Pem),
        path(ENV_JWT_JWKS_FILE, jwt_file.jwks_file).map(JwtKey::Jwks),
        path(ENV_JWT_HMAC_SECRET_FILE, jwt_file.hmac_secret_file).map(JwtKey::HmacSecret),
    ]
    .into_iter()
    .flatten()
    .collect();
    let jwt = match auth {
        AuthMode::None => None,
        AuthMode::Jwt => {
            let missing = |what: &str, var: &str| {
                anyhow!("auth = \"jwt\" needs [server.jwt] {what} (or {var})")
            };
            let issuer = issuer.ok_or_else(|| missing("issuer", ENV_JWT_ISSUER))?;
            let audience = audience.ok_or_else(|| missing("audience", ENV_JWT_AUDIENCE))?;
            let mut keys = keys.into_iter();
            let key = match (keys.next(), keys.next()) {
                (Some(key), None) => key,
                (None, _) => {
                    return Err(anyhow!(
                        "auth = \"jwt\" needs one key: [server.jwt] key_file, jwks_file or hmac_secret_file ({ENV_JWT_KEY_FILE}, {ENV_JWT_JWKS_FILE}, {ENV_JWT_HMAC_SECRET_FILE})"
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(anyhow!(
                        "[server.jwt]: give exactly one of key_file, jwks_file and hmac_secret_file"
                    ));
                }
            };
            Some(JwtSettings {
                issuer,
                audience,
                key,
                algorithm,
                leeway_seconds,
            })
        }
    };

    let mut executors = BTreeMap::new();
    for (name, entry) in file.executors {
        let span = name.span();
        let name = name.into_inner();
        check_executor_name(&name).map_err(|m| at(span.clone(), m))?;
        let command_span = entry.command.span();
        let command = entry.command.into_inner();
        CommandExecutor::with_launcher(command.clone(), Default::default())
            .map_err(|e| at(command_span, format!("executor {name:?}: {e}")))?;
        let env = match entry.env {
            Some(env) => {
                let span = env.span();
                let env = env.into_inner();
                CommandExecutor::with_launcher(command.clone(), Default::default())
                    .and_then(|e| e.with_env(env.clone()))
                    .map_err(|e| at(span, format!("executor {name:?}: `env`: {e}")))?;
                env
            }
            None => BTreeMap::new(),
        };
        let timeout_seconds = match entry.timeout_seconds {
            Some(t) if *t.get_ref() == 0 => {
                return Err(at(
                    t.span(),
                    format!("executor {name:?}: `timeoutSeconds` must be a positive integer"),
                ));
            }
            Some(t) => Some(t.into_inner()),
            None => None,
        };
        executors.insert(
            name,
            HostExecutor {
                command,
                env,
                timeout_seconds,
            },
        );
    }

    Ok(Settings {
        data_dir,
        secrets_dir,
        database,
        workspace_root,
        default_tenant,
        executors,
        server: ServerSettings {
            listen,
            auth,
            body_limit_bytes,
            header_read_timeout_seconds,
            shutdown_grace_seconds,
            spec_signing_key_file,
            jwt,
        },
        evidence,
    })
}

fn read_file(path: &Path) -> Result<(ConfigFile, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: cannot read the config file: {e}", path.display()))?;
    let file = toml::from_str(&text).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        match e.span() {
            Some(span) => anyhow!(
                "{}: {}",
                path.display(),
                with_position(&text, span, &message)
            ),
            None => anyhow!("{}: {message}", path.display()),
        }
    })?;
    Ok((file, text))
}

/// `line L, column C: message` for the start of `span` (1-based; columns count characters).
fn with_position(text: &str, span: std::ops::Range<usize>, message: &str) -> String {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// Rule 26, as the store's validator (its one owner) checks it.
fn check_tenant(tenant: &str) -> Result<(), String> {
    taskrunner_store::validate::tenant(tenant).map_err(|_| {
        format!(
            "default_tenant {tenant:?} does not match {}",
            taskrunner_store::validate::TENANT_PATTERN
        )
    })
}

/// A name a pack can put in `uses` (`builtin:<name>` or a host executor name, as the
/// manifest's parser reads it), and not a built-in's.
fn check_executor_name(name: &str) -> Result<(), String> {
    if RESERVED_EXECUTORS.contains(&name) {
        return Err(format!(
            "executor {name:?} is built in and cannot be replaced by a host command"
        ));
    }
    taskrunner_manifest::parse_uses(name)
        .map(|_| ())
        .map_err(|e| format!("executor name {name:?} is not a valid `uses` value: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("taskrunner-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn defaults_without_file_or_environment() {
        let s = resolve(Flags::default(), env_of(&[])).unwrap();
        assert_eq!(s.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
        assert_eq!(s.secrets_dir, None);
        assert_eq!(s.default_tenant, "default");
        assert!(s.executors.is_empty());
        assert_eq!(s.server.listen.to_string(), LISTEN_DEFAULT);
        assert_eq!(s.server.auth, AuthMode::None);
        let wiring = crate::wiring::executors(&s, false).unwrap();
        assert!(wiring.registry.contains("builtin:shell"));
        assert!(wiring.registry.contains("builtin:http"));
    }

    #[test]
    fn evidence_settings_from_file_and_environment() {
        let s = resolve(Flags::default(), env_of(&[])).unwrap();
        assert_eq!(s.evidence.signing_key, None);
        assert_eq!(s.evidence.builder_id, EVIDENCE_BUILDER_ID_DEFAULT);
        let path = file(
            "evidence.toml",
            "[evidence]\nsigning_key = \"keys/ev.pem\"\nbuilder_id = \"https://ci.example/b\"\n",
        );
        let flags = || Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let s = resolve(flags(), env_of(&[])).unwrap();
        let dir = path.parent().unwrap();
        assert_eq!(
            s.evidence.signing_key,
            Some(dir.join("keys/ev.pem")),
            "relative to the file"
        );
        assert_eq!(s.evidence.builder_id, "https://ci.example/b");
        let s = resolve(
            flags(),
            env_of(&[
                ("TASKRUNNER_EVIDENCE_SIGNING_KEY", "/etc/tr/key.pem"),
                ("TASKRUNNER_EVIDENCE_BUILDER_ID", "https://env.example/b"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.evidence.signing_key,
            Some(PathBuf::from("/etc/tr/key.pem"))
        );
        assert_eq!(s.evidence.builder_id, "https://env.example/b");
        let bad = file("evidence-bad.toml", "[evidence]\nsigning_keys = \"x\"\n");
        let err = resolve(
            Flags {
                config: Some(bad),
                ..Flags::default()
            },
            env_of(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("signing_keys"), "{err}");
    }

    #[test]
    fn max_drivers_from_environment_and_file_checked() {
        let flags = |path: &PathBuf| Flags {
            config: Some(path.clone()),
            database_url: Some("postgres://x@db/tr".into()),
            ..Flags::default()
        };
        let url_only = Flags {
            database_url: Some("postgres://x@db/tr".into()),
            ..Flags::default()
        };
        let default = resolve(url_only, env_of(&[])).unwrap().database.unwrap();
        assert_eq!(default.max_drivers, 256);
        let path = file("drivers.toml", "[server]\nmax_drivers = 40\n");
        let db = resolve(flags(&path), env_of(&[]))
            .unwrap()
            .database
            .unwrap();
        assert_eq!(db.max_drivers, 40);
        let db = resolve(flags(&path), env_of(&[("TASKRUNNER_MAX_DRIVERS", "7")]))
            .unwrap()
            .database
            .unwrap();
        assert_eq!(db.max_drivers, 7, "the variable beats the file");
        for bad in ["0", "-3", "many", "100001"] {
            let env =
                move |name: &str| (name == "TASKRUNNER_MAX_DRIVERS").then(|| OsString::from(bad));
            let e = resolve(flags(&path), env).unwrap_err().to_string();
            assert!(e.starts_with("TASKRUNNER_MAX_DRIVERS: "), "{bad}: {e}");
        }
        for (name, text, want) in [
            (
                "zero.toml",
                "[server]\nmax_drivers = 0\n",
                "expected a positive integer",
            ),
            (
                "huge.toml",
                "[server]\nmax_drivers = 100001\n",
                "max_drivers must be from 1 to 100000",
            ),
        ] {
            let path = file(name, text);
            let e = resolve(flags(&path), env_of(&[])).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("line 2"), "{e}");
        }
    }

    #[test]
    fn database_settings_from_flag_environment_and_file() {
        let none = resolve(Flags::default(), env_of(&[])).unwrap();
        assert!(
            none.database.is_none(),
            "SQLite unless a database url is given"
        );
        assert_eq!(
            none.workspace_root,
            PathBuf::from(DATA_DIR_DEFAULT).join("workspaces")
        );
        let path = file(
            "db.toml",
            "data_dir = \"/d\"\ndatabase_url = \"postgres://file@db/tr\"\nartifact_dir = \"shared\"\nworkspace_root = \"/ws\"\nlease_ttl_ms = 4000\n",
        );
        let flags = |url: Option<&str>| Flags {
            config: Some(path.clone()),
            database_url: url.map(str::to_owned),
            ..Flags::default()
        };
        let from_file = resolve(flags(None), env_of(&[])).unwrap();
        let db = from_file.database.clone().unwrap();
        assert_eq!(db.url, "postgres://file@db/tr");
        assert_eq!(db.artifact_dir, path.parent().unwrap().join("shared"));
        assert_eq!(db.lease_ttl_ms, 4000);
        assert_eq!(from_file.workspace_root, PathBuf::from("/ws"));
        assert!(
            !format!("{db:?}").contains("file@db"),
            "the url is never printed"
        );
        let from_env = resolve(
            flags(None),
            env_of(&[
                ("TASKRUNNER_DATABASE_URL", "postgres://env@db/tr"),
                ("TASKRUNNER_ARTIFACT_DIR", "/env/artifacts"),
                ("TASKRUNNER_LEASE_TTL_MS", "2000"),
            ]),
        )
        .unwrap()
        .database
        .unwrap();
        assert_eq!(from_env.url, "postgres://env@db/tr");
        assert_eq!(from_env.artifact_dir, PathBuf::from("/env/artifacts"));
        assert_eq!(from_env.lease_ttl_ms, 2000);
        let from_flag = resolve(
            flags(Some("postgres://flag@db/tr")),
            env_of(&[("TASKRUNNER_DATABASE_URL", "postgres://env@db/tr")]),
        )
        .unwrap();
        assert_eq!(from_flag.database.unwrap().url, "postgres://flag@db/tr");
        // Artifacts default to the data directory.
        let defaulted = resolve(
            Flags {
                database_url: Some("postgres://x@db/tr".into()),
                ..Flags::default()
            },
            env_of(&[]),
        )
        .unwrap();
        assert_eq!(
            defaulted.database.unwrap().artifact_dir,
            PathBuf::from(DATA_DIR_DEFAULT)
        );
        // Rule 29: a lease lasts at most 10 s.
        let e = resolve(
            Flags::default(),
            env_of(&[("TASKRUNNER_LEASE_TTL_MS", "10001")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("TASKRUNNER_LEASE_TTL_MS"), "{e}");
        let bad = file("ttl.toml", "lease_ttl_ms = 50\n");
        let e = resolve(
            Flags {
                config: Some(bad),
                ..Flags::default()
            },
            env_of(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lease_ttl_ms must be from 200 to 10000"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn flag_beats_environment_beats_file() {
        let path = file(
            "all.toml",
            "data_dir = \"/file/data\"\nsecrets_dir = \"secrets\"\ndefault_tenant = \"acme\"\n[server]\nlisten = \"127.0.0.1:9000\"\nauth = \"none\"\n",
        );
        let flags = |data_dir: Option<&str>| Flags {
            config: Some(path.clone()),
            data_dir: data_dir.map(PathBuf::from),
            secrets_dir: None,
            database_url: None,
        };
        let from_file = resolve(flags(None), env_of(&[])).unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/file/data"));
        // Relative paths in the file are relative to the file's directory.
        assert_eq!(
            from_file.secrets_dir,
            Some(path.parent().unwrap().join("secrets"))
        );
        assert_eq!(from_file.default_tenant, "acme");
        assert_eq!(from_file.server.listen.to_string(), "127.0.0.1:9000");

        let env = env_of(&[
            ("TASKRUNNER_DATA_DIR", "/env/data"),
            ("TASKRUNNER_SECRETS_DIR", "env-secrets"),
            ("TASKRUNNER_DEFAULT_TENANT", "team-b"),
            ("TASKRUNNER_LISTEN", "[::1]:7000"),
            ("TASKRUNNER_AUTH", "none"),
            ("TASKRUNNER_SECRET_DATA_DIR", "/not/a/setting"),
        ]);
        let from_env = resolve(flags(None), &env).unwrap();
        assert_eq!(from_env.data_dir, PathBuf::from("/env/data"));
        assert_eq!(from_env.secrets_dir, Some(PathBuf::from("env-secrets")));
        assert_eq!(from_env.default_tenant, "team-b");
        assert_eq!(from_env.server.listen.to_string(), "[::1]:7000");

        let from_flag = resolve(flags(Some("/flag/data")), &env).unwrap();
        assert_eq!(from_flag.data_dir, PathBuf::from("/flag/data"));

        // An empty variable counts as unset.
        let empty = resolve(flags(None), env_of(&[("TASKRUNNER_DATA_DIR", "")])).unwrap();
        assert_eq!(empty.data_dir, PathBuf::from("/file/data"));
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = |flags: Flags, env: &'static [(&'static str, &'static str)]| {
            format!("{:#}", resolve(flags, env_of(env)).unwrap_err())
        };
        let e = err(Flags::default(), &[("TASKRUNNER_LISTEN", "localhost")]);
        assert!(e.starts_with("TASKRUNNER_LISTEN: "), "{e}");
        let e = err(Flags::default(), &[("TASKRUNNER_AUTH", "kerberos")]);
        assert!(e.starts_with("TASKRUNNER_AUTH: "), "{e}");

        let path = file("tenant.toml", "\ndefault_tenant = \"Acme\"\n");
        let e = err(
            Flags {
                config: Some(path.clone()),
                ..Flags::default()
            },
            &[],
        );
        assert_eq!(
            e,
            format!(
                "{}: line 2, column 18: default_tenant \"Acme\" does not match ^[a-z0-9][a-z0-9._-]{{0,62}}$",
                path.display()
            )
        );

        for (name, text, needle) in [
            (
                "listen.toml",
                "[server]\nlisten = \"nowhere\"\n",
                "line 2, column 10",
            ),
            (
                "auth.toml",
                "[server]\nauth = \"saml\"\n",
                "line 2, column 8",
            ),
            (
                "empty-argv.toml",
                "[executors.\"builtin:x\"]\ncommand = []\n",
                "line 2, column 11: executor \"builtin:x\": invalid executor definition",
            ),
            (
                "template-argv0.toml",
                "[executors.\"builtin:x\"]\ncommand = [\"{{ with.p }}\"]\n",
                "line 2, column 11",
            ),
            (
                "bad-name.toml",
                "[executors.\"builtin:Bad\"]\ncommand = [\"/bin/true\"]\n",
                "line 1, column 12: executor name \"builtin:Bad\"",
            ),
            (
                "http.toml",
                "[executors.\"builtin:http\"]\ncommand = [\"/bin/true\"]\n",
                "is built in",
            ),
            (
                "no-command.toml",
                "[executors.\"builtin:x\"]\nargv = [\"/bin/true\"]\n",
                "line 2, column 1: unknown field `argv`",
            ),
            ("syntax.toml", "data_dir = \n", "line 1"),
        ] {
            let path = file(name, text);
            let e = err(
                Flags {
                    config: Some(path),
                    ..Flags::default()
                },
                &[],
            );
            assert!(e.contains(needle), "{name}: {e}");
        }
    }

    #[test]
    fn server_settings_from_file_and_environment() {
        let s = resolve(Flags::default(), env_of(&[])).unwrap();
        assert_eq!(s.server.body_limit_bytes, 2 * 1024 * 1024);
        assert_eq!(s.server.header_read_timeout_seconds, 10);
        assert!(s.server.jwt.is_none());

        let path = file(
            "jwt.toml",
            "[server]\nauth = \"jwt\"\nbody_limit_bytes = 1000\n[server.jwt]\nissuer = \"https://idp\"\naudience = \"taskrunner\"\njwks_file = \"keys.json\"\n",
        );
        let flags = || Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let s = resolve(flags(), env_of(&[])).unwrap();
        assert_eq!(s.server.auth, AuthMode::Jwt);
        assert_eq!(s.server.body_limit_bytes, 1000);
        let jwt = s.server.jwt.unwrap();
        assert_eq!(jwt.issuer, "https://idp");
        assert_eq!(jwt.audience, "taskrunner");
        assert_eq!(jwt.leeway_seconds, 30);
        assert_eq!(
            jwt.key,
            JwtKey::Jwks(path.parent().unwrap().join("keys.json"))
        );

        let s = resolve(
            flags(),
            env_of(&[
                ("TASKRUNNER_JWT_ISSUER", "https://other"),
                ("TASKRUNNER_BODY_LIMIT_BYTES", "42"),
                ("TASKRUNNER_JWT_LEEWAY_SECONDS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.body_limit_bytes, 42);
        let jwt = s.server.jwt.unwrap();
        assert_eq!(jwt.issuer, "https://other");
        assert_eq!(jwt.leeway_seconds, 0);

        // Two key sources are ambiguous.
        let e = resolve(flags(), env_of(&[("TASKRUNNER_JWT_KEY_FILE", "/k.pem")])).unwrap_err();
        assert!(format!("{e}").contains("exactly one"), "{e}");
        // jwt without an issuer, or without any key.
        let e = resolve(
            Flags::default(),
            env_of(&[("TASKRUNNER_AUTH", "jwt"), ("TASKRUNNER_JWT_AUDIENCE", "a")]),
        )
        .unwrap_err();
        assert!(format!("{e}").contains("issuer"), "{e}");
        let e = resolve(
            Flags::default(),
            env_of(&[
                ("TASKRUNNER_AUTH", "jwt"),
                ("TASKRUNNER_JWT_AUDIENCE", "a"),
                ("TASKRUNNER_JWT_ISSUER", "i"),
            ]),
        )
        .unwrap_err();
        assert!(format!("{e}").contains("needs one key"), "{e}");
        // Numbers are positive.
        let e = resolve(
            Flags::default(),
            env_of(&[("TASKRUNNER_BODY_LIMIT_BYTES", "0")]),
        )
        .unwrap_err();
        assert!(
            format!("{e}").starts_with("TASKRUNNER_BODY_LIMIT_BYTES: "),
            "{e}"
        );
        let zero = file("zero.toml", "[server]\nheader_read_timeout_seconds = 0\n");
        let e = resolve(
            Flags {
                config: Some(zero),
                ..Flags::default()
            },
            env_of(&[]),
        )
        .unwrap_err();
        assert!(format!("{e}").contains("line 2, column 31"), "{e}");
    }

    #[test]
    fn host_executors_join_the_builtins() {
        let path = file(
            "exec.toml",
            "[executors.\"builtin:greet\"]\ncommand = [\"/bin/echo\", \"hello {{ with.name }}\"]\n[executors.\"acme/scan\"]\ncommand = [\"scanner\"]\n",
        );
        let s = resolve(
            Flags {
                config: Some(path),
                ..Flags::default()
            },
            env_of(&[]),
        )
        .unwrap();
        let registry = crate::wiring::executors(&s, false).unwrap().registry;
        for name in [
            "builtin:greet",
            "acme/scan",
            "builtin:noop",
            "builtin:shell",
        ] {
            assert!(registry.contains(name), "{name}");
        }
        let argv: Vec<&str> = s.executors["builtin:greet"]
            .command
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(argv, ["/bin/echo", "hello {{ with.name }}"]);
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(with_position("ab\ncé=1", 7..8, "m"), "line 2, column 4: m");
        assert_eq!(with_position("x", 0..1, "m"), "line 1, column 1: m");
    }
}
