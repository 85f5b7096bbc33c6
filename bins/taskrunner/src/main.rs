//! The `taskrunner` command line: wiring only. Validation, planning, simulation and rendering
//! live in the library crates; this file reads files and arguments and prints results.
//!
//! Exit codes: 0 ok, 2 invalid pack or inputs, 1 anything else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use taskrunner_manifest::{Diagnostic, Diagnostics, Manifest};
use taskrunner_plan::{Plan, PlanError};

mod approvals;
mod backup;
mod config;
mod diff;
mod evidence;
mod listener;
mod run;
mod serve;
mod wiring;

#[derive(Debug, Parser)]
#[command(
    name = "taskrunner",
    version,
    about = "Validate, plan, simulate and run task packs; serve the TaskRunner HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate packs; prints every problem as `FILE: PATH: message`.
    Validate {
        #[arg(required = true, value_name = "PACK.yaml")]
        packs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Print the canonical plan of a pack (or only its hash).
    Plan {
        #[arg(value_name = "PACK.yaml")]
        pack: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Print only the plan hash.
        #[arg(long)]
        hash: bool,
        #[arg(long, value_enum, default_value_t = PlanFormat::Json)]
        format: PlanFormat,
    },
    /// The semantic diff of two plans, each a pack (with --old-input/--new-input …) or a plan
    /// JSON document. Exit: 0 no change, 1 changes, 2 invalid input.
    Diff(diff::DiffArgs),
    /// Simulate a pack: which steps would run, skip, iterate, branch or wait.
    Simulate {
        #[arg(value_name = "PACK.yaml")]
        pack: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        #[arg(long, value_enum, default_value_t = SimulateFormat::Json)]
        format: SimulateFormat,
    },
    /// Run a pack locally on the embedded store. Exit: 0 succeeded, 1 failed, 2 invalid pack
    /// or inputs, 4 cancelled (Ctrl-C), 5 waiting for approval.
    Run {
        #[arg(value_name = "PACK.yaml")]
        pack: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Approve this approval id in advance (repeatable).
        #[arg(long, value_name = "APPROVAL_ID")]
        approve: Vec<String>,
        /// Use this run id instead of a generated one.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Run the HTTP server (the StellaOps TaskRunner API) on the embedded SQLite store, or as
    /// one of several replicas on PostgreSQL (`--database-url`). Stops gracefully on
    /// SIGTERM/SIGINT; runs continue at the next start (or on another replica).
    Serve {
        /// The listener address [env: TASKRUNNER_LISTEN] [default: 127.0.0.1:8080]. Without
        /// authentication only a loopback address is accepted.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// A TOML configuration file (see docs/CONFIG.md); flags and `TASKRUNNER_*`
        /// environment variables override its keys.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where runs are stored (SQLite database, workspaces, artifacts)
        /// [env: TASKRUNNER_DATA_DIR] [default: ./taskrunner-data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// A directory of secret files [env: TASKRUNNER_SECRETS_DIR]; `TASKRUNNER_SECRET_<NAME>`
        /// environment variables are used too.
        #[arg(long, value_name = "DIR")]
        secrets_dir: Option<PathBuf>,
        /// Store runs in this PostgreSQL database (`postgres://user@host:5432/db`), shared by
        /// every replica [env: TASKRUNNER_DATABASE_URL]. Artifacts then go to `artifact_dir`
        /// [env: TASKRUNNER_ARTIFACT_DIR], a directory every replica mounts.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// DEVELOPMENT ONLY: run process steps even where this host cannot enforce the
        /// isolation their pack asks for. Logged loudly at start and at every run.
        #[arg(long)]
        unsandboxed: bool,
    },
    /// The approval ledger of the embedded store: every gate reached, what it requires and
    /// every decision, newest run first (the same entries as `GET /v1/task-runner/approvals`).
    Approvals {
        /// `pending` (waiting now) or `decided` (no longer waiting).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only runs of this pack name.
        #[arg(long, value_name = "NAME")]
        pack: Option<String>,
        /// Only runs created at or after this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// `text` (one line per gate) or `ndjson` (one JSON object per gate, for export).
        #[arg(long, value_enum, default_value_t = ApprovalsFormat::Text)]
        format: ApprovalsFormat,
        #[command(flatten)]
        store: DataDirArgs,
    },
    /// Copy the embedded store (database and artifact blobs) into one backup file, while
    /// `serve` keeps running and writing.
    Backup {
        /// The backup file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        store: DataDirArgs,
    },
    /// Restore a backup into a new data directory; `serve` on it continues every run that was
    /// in flight when the backup was taken.
    Restore {
        /// The backup file written by `taskrunner backup`.
        #[arg(value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        store: DataDirArgs,
    },
    /// Continue a run waiting for approval: decide its gates and follow it.
    Resume {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// Approve this approval id (repeatable).
        #[arg(long, value_name = "APPROVAL_ID")]
        approve: Vec<String>,
        /// Reject this approval id (repeatable).
        #[arg(long, value_name = "APPROVAL_ID")]
        reject: Vec<String>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Print the signed evidence of a finished run (in-toto statements in DSSE envelopes and
    /// Sigstore bundles, docs/EVIDENCE.md) as JSON.
    Evidence {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a finished run's audit folder: plan.json, journal.ndjson, logs.ndjson, the signed
    /// evidence, the artifacts and their digests, the public key.
    Export {
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// The folder to write (created if missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Verify evidence offline: an audit folder or one evidence/envelope/bundle file. Exit 0
    /// verified, 1 with every failure named.
    VerifyEvidence {
        #[arg(value_name = "DIR|FILE")]
        target: PathBuf,
        /// The public key (PEM `PUBLIC KEY`).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// An artifact file to compare with the subject of the same name (repeatable).
        #[arg(long, value_name = "FILE")]
        artifact: Vec<PathBuf>,
    },
    /// Write a new evidence signing key to FILE (PKCS#8 PEM, mode 0600) and its public key to
    /// FILE.pub; prints the key id.
    Keygen {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// `ed25519` (default) or `p256` (ECDSA P-256).
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::Ed25519)]
        algorithm: KeyAlgorithm,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// A TOML configuration file (see docs/CONFIG.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where runs are stored [env: TASKRUNNER_DATA_DIR] [default: ./taskrunner-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A directory of secret files, for masking [env: TASKRUNNER_SECRETS_DIR].
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// The evidence signing key (PKCS#8 PEM) instead of `[evidence] signing_key`
    /// [env: TASKRUNNER_EVIDENCE_SIGNING_KEY].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// Where the embedded store is (backup and restore).
#[derive(Debug, Args)]
struct DataDirArgs {
    /// A TOML configuration file (see docs/CONFIG.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory [env: TASKRUNNER_DATA_DIR] [default: ./taskrunner-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    /// The settings these flags, the environment and the configuration file give.
    fn settings(self) -> Result<config::Settings> {
        config::load(config::Flags {
            config: self.config,
            data_dir: self.data_dir,
            secrets_dir: None,
            database_url: None,
        })
    }

    /// The data directory of the embedded store; refuses a PostgreSQL configuration.
    fn data_dir(self) -> Result<PathBuf> {
        let settings = self.settings()?;
        if settings.database.is_some() {
            anyhow::bail!(
                "backup and restore cover the embedded store; on PostgreSQL use pg_dump/pg_restore and copy the artifact directory (docs/DEPLOYMENT.md)"
            );
        }
        Ok(settings.data_dir)
    }
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// A TOML configuration file (see docs/CONFIG.md); flags and `TASKRUNNER_*` environment
    /// variables override its keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where runs are stored (SQLite database, workspaces, artifacts)
    /// [env: TASKRUNNER_DATA_DIR] [default: ./taskrunner-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A directory of secret files (the file named like the secret holds its value)
    /// [env: TASKRUNNER_SECRETS_DIR]; `TASKRUNNER_SECRET_<NAME>` environment variables are
    /// used too.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// `text` (human, default) or `ndjson` (exactly the log entries GET …/logs returns).
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,
    /// Who gives the decisions of `--approve`/`--reject` and Ctrl-C (SPEC rule 25: the caller
    /// holds every grant; distinct actors count separately towards `requiredApprovals`).
    #[arg(long, value_name = "NAME", default_value = "anonymous")]
    actor: String,
    /// DEVELOPMENT ONLY: run process steps even where this host cannot enforce the isolation
    /// their pack asks for (network namespace, cgroup limits) instead of failing them with
    /// `sandbox-unavailable`. Logged loudly at start, at every run and in each affected step.
    #[arg(long)]
    unsandboxed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyAlgorithm {
    Ed25519,
    P256,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ApprovalsFormat {
    Text,
    Ndjson,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RunFormat {
    Text,
    Ndjson,
}

#[derive(Debug, Args)]
struct InputArgs {
    /// An input value; VALUE is coerced to the input's declared type (JSON when it parses).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    input: Vec<String>,
    /// A JSON or YAML file with an object of input values (--input wins over it).
    #[arg(long = "inputs", value_name = "FILE")]
    inputs_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanFormat {
    Json,
    Tree,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SimulateFormat {
    Json,
    Table,
}

/// A failure with its exit code.
enum Failure {
    /// Invalid pack or inputs (exit 2): already printed.
    Invalid,
    /// A finished local run's own exit code (0, 1, 4, 5).
    Exit(u8),
    /// Anything else (exit 1).
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid) => ExitCode::from(2),
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Validate { packs, format } => validate(&packs, format),
        Command::Diff(args) => diff::diff(args),
        Command::Plan {
            pack,
            inputs,
            hash,
            format,
        } => {
            let plan = plan_pack(&pack, &inputs)?;
            let text = if hash {
                format!("{}\n", plan.hash())
            } else {
                match format {
                    PlanFormat::Json => plan.to_pretty_json(),
                    PlanFormat::Tree => taskrunner_plan::plan_tree(&plan),
                }
            };
            write_stdout(&text)
        }
        Command::Run {
            pack,
            inputs,
            approve,
            run_id,
            local,
        } => {
            let manifest_text = match read_text(&pack)? {
                Ok(text) => text,
                Err(d) => {
                    print_diagnostics(&pack, &d);
                    return Err(Failure::Invalid);
                }
            };
            let manifest = match taskrunner_manifest::parse(&manifest_text) {
                Ok(m) => m,
                Err(d) => {
                    print_diagnostics(&pack, &d);
                    return Err(Failure::Invalid);
                }
            };
            let inputs = collect_inputs(&manifest, &inputs)?;
            let (output, local) = split_local(local)?;
            let ending = block_on(run::run(
                local,
                &pack,
                manifest_text,
                inputs,
                run_id,
                approve,
                output,
            ))?;
            exit_with(ending.code())
        }
        Command::Approvals {
            status,
            pack,
            since,
            format,
            store,
        } => {
            let settings = store.settings()?;
            let format = match format {
                ApprovalsFormat::Text => approvals::LedgerFormat::Text,
                ApprovalsFormat::Ndjson => approvals::LedgerFormat::Ndjson,
            };
            let text = block_on(approvals::approvals(
                &settings,
                status.as_deref(),
                pack,
                since.as_deref(),
                format,
            ))?;
            write_stdout(&text)
        }
        Command::Backup { to, store } => {
            let data_dir = store.data_dir()?;
            let done = backup::backup(&data_dir, &to)?;
            eprintln!(
                "backed up {} runs ({} in flight) and {} artifact blobs from {} to {} ({} bytes)",
                done.runs,
                done.active_runs,
                done.blobs,
                data_dir.display(),
                to.display(),
                done.bytes
            );
            Ok(())
        }
        Command::Restore { from, store } => {
            let data_dir = store.data_dir()?;
            let done = backup::restore(&from, &data_dir)?;
            eprintln!(
                "restored {} runs ({} in flight, every journal verified) and {} artifact blobs into {}",
                done.runs,
                done.active_runs,
                done.blobs,
                data_dir.display()
            );
            Ok(())
        }
        Command::Resume {
            run_id,
            approve,
            reject,
            local,
        } => {
            let (output, local) = split_local(local)?;
            let ending = block_on(run::resume(local, &run_id, approve, reject, output))?;
            exit_with(ending.code())
        }
        Command::Serve {
            listen,
            config,
            data_dir,
            secrets_dir,
            database_url,
            unsandboxed,
        } => {
            init_tracing();
            let settings = config::load(config::Flags {
                config,
                data_dir,
                secrets_dir,
                database_url,
            })?;
            let executors = wiring::executors(&settings, unsandboxed)?;
            executors.log_capabilities();
            let local = run::Local {
                executors,
                data_dir: settings.data_dir.clone(),
                workspace_root: settings.workspace_root.clone(),
                secrets_dir: settings.secrets_dir.clone(),
                tenant: settings.default_tenant.clone(),
            };
            block_on(serve::serve(serve::Serve {
                settings,
                listen,
                local,
            }))
        }
        Command::Evidence { run_id, store } => {
            let settings = evidence::settings(store.config, store.data_dir, store.secrets_dir)?;
            let text = block_on(evidence::evidence(settings, store.key, &run_id))?;
            write_stdout(&text)
        }
        Command::Export { run_id, to, store } => {
            let settings = evidence::settings(store.config, store.data_dir, store.secrets_dir)?;
            block_on(evidence::export(settings, store.key, &run_id, &to))
        }
        Command::VerifyEvidence {
            target,
            key,
            artifact,
        } => {
            if evidence::verify(&target, &key, &artifact)? {
                Ok(())
            } else {
                Err(Failure::Exit(1))
            }
        }
        Command::Keygen { file, algorithm } => {
            Ok(evidence::keygen(&file, algorithm == KeyAlgorithm::P256)?)
        }
        Command::Simulate {
            pack,
            inputs,
            format,
        } => {
            let plan = plan_pack(&pack, &inputs)?;
            let sim = taskrunner_plan::simulate(&plan);
            let text = match format {
                SimulateFormat::Json => {
                    let mut s =
                        serde_json::to_string_pretty(&sim).context("encoding the simulation")?;
                    s.push('\n');
                    s
                }
                SimulateFormat::Table => taskrunner_plan::simulation_table(&sim),
            };
            write_stdout(&text)
        }
    }
}

/// The output settings and the effective configuration (flags > environment > file > defaults).
fn split_local(args: LocalArgs) -> Result<(run::Output, run::Local)> {
    let settings = config::load(config::Flags {
        database_url: None,
        config: args.config,
        data_dir: args.data_dir,
        secrets_dir: args.secrets_dir,
    })?;
    let executors = wiring::executors(&settings, args.unsandboxed)?;
    executors.log_capabilities();
    Ok((
        run::Output {
            ndjson: matches!(args.format, RunFormat::Ndjson),
            actor: args.actor,
        },
        run::Local {
            executors,
            data_dir: settings.data_dir,
            workspace_root: settings.workspace_root,
            secrets_dir: settings.secrets_dir,
            tenant: settings.default_tenant,
        },
    ))
}

/// Server logs on stderr; `RUST_LOG` filters them (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(future).map_err(Failure::Other)
}

fn exit_with(code: u8) -> Result<(), Failure> {
    match code {
        0 => Ok(()),
        2 => Err(Failure::Invalid),
        other => Err(Failure::Exit(other)),
    }
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout").into()),
    }
}

/// A pack or inputs file: unreadable is exit 1 (`Err`); not UTF-8 is an invalid pack (`Ok(Err)`),
/// reported like any other diagnostic.
fn read_text(path: &Path) -> Result<Result<String, Diagnostics>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8(bytes).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            code: "TR-M0001",
            path: String::new(),
            message: format!(
                "the file is not UTF-8 text (invalid byte at offset {}), expected a UTF-8 YAML document",
                e.utf8_error().valid_up_to()
            ),
            line: None,
            column: None,
        }])
    }))
}

pub(crate) fn print_diagnostics(file: &Path, diagnostics: &Diagnostics) {
    let mut err = std::io::stderr().lock();
    for d in diagnostics.iter() {
        let path = if d.path.is_empty() {
            "<document>"
        } else {
            &d.path
        };
        let position = match (d.line, d.column) {
            (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
            _ => String::new(),
        };
        let _ = writeln!(
            err,
            "{}: {path}: {}{position} [{}]",
            file.display(),
            d.message,
            d.code
        );
    }
}

fn validate(packs: &[PathBuf], format: ValidateFormat) -> Result<(), Failure> {
    let mut invalid = false;
    for file in packs {
        let result = read_text(file)?.and_then(|text| taskrunner_manifest::parse(&text));
        match format {
            ValidateFormat::Text => match &result {
                Ok(_) => println!("{}: valid", file.display()),
                Err(d) => print_diagnostics(file, d),
            },
            ValidateFormat::Json => {
                let response = match &result {
                    Ok(_) => serde_json::json!({"errors": []}),
                    Err(d) => PlanError(d.clone()).to_response(),
                };
                write_stdout(&format!("{response}\n"))?;
            }
        }
        invalid |= result.is_err();
    }
    if invalid {
        Err(Failure::Invalid)
    } else {
        Ok(())
    }
}

fn plan_pack(file: &Path, args: &InputArgs) -> Result<Plan, Failure> {
    let manifest = match read_text(file)?.and_then(|text| taskrunner_manifest::parse(&text)) {
        Ok(m) => m,
        Err(d) => {
            print_diagnostics(file, &d);
            return Err(Failure::Invalid);
        }
    };
    let inputs = collect_inputs(&manifest, args)?;
    taskrunner_plan::plan(&manifest, &inputs).map_err(|e| {
        print_diagnostics(file, e.diagnostics());
        Failure::Invalid
    })
}

fn collect_inputs(manifest: &Manifest, args: &InputArgs) -> Result<Map<String, Value>, Failure> {
    let mut inputs = Map::new();
    if let Some(path) = &args.inputs_file {
        let value = read_text(path)?.and_then(|text| taskrunner_manifest::parse_value(&text));
        match value {
            Ok(Value::Object(map)) => inputs.extend(map),
            Ok(_) => {
                eprintln!(
                    "{}: inputs: expected an object of input values",
                    path.display()
                );
                return Err(Failure::Invalid);
            }
            Err(d) => {
                print_diagnostics(path, &d);
                return Err(Failure::Invalid);
            }
        }
    }
    for raw in &args.input {
        let (name, value) = match raw.split_once('=') {
            Some((name, value)) if !name.is_empty() => (name, value),
            _ => {
                eprintln!("--input {raw:?}: expected NAME=VALUE with a non-empty NAME");
                return Err(Failure::Invalid);
            }
        };
        inputs.insert(
            name.to_owned(),
            taskrunner_manifest::coerce_cli_input(manifest, name, value),
        );
    }
    Ok(inputs)
}
