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
use taskrunner_manifest::{Diagnostics, Manifest};
use taskrunner_plan::{Plan, PlanError};

#[derive(Debug, Parser)]
#[command(
    name = "taskrunner",
    version,
    about = "Validate, plan and simulate task packs"
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
    /// Simulate a pack: which steps would run, skip, iterate, branch or wait.
    Simulate {
        #[arg(value_name = "PACK.yaml")]
        pack: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        #[arg(long, value_enum, default_value_t = SimulateFormat::Json)]
        format: SimulateFormat,
    },
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
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Validate { packs, format } => validate(&packs, format),
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

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout").into()),
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn print_diagnostics(file: &Path, diagnostics: &Diagnostics) {
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
        let text = read_text(file)?;
        let result = taskrunner_manifest::parse(&text);
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
    let text = read_text(file)?;
    let manifest = match taskrunner_manifest::parse(&text) {
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
        let text = read_text(path)?;
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is neither JSON nor YAML", path.display()))?,
        };
        match value {
            Value::Object(map) => inputs.extend(map),
            _ => {
                eprintln!(
                    "{}: inputs: expected an object of input values",
                    path.display()
                );
                return Err(Failure::Invalid);
            }
        }
    }
    for raw in &args.input {
        let Some((name, value)) = raw.split_once('=') else {
            return Err(anyhow::anyhow!("--input {raw:?}: expected NAME=VALUE").into());
        };
        if name.is_empty() {
            return Err(anyhow::anyhow!("--input {raw:?}: the input name is empty").into());
        }
        inputs.insert(
            name.to_owned(),
            taskrunner_manifest::coerce_cli_input(manifest, name, value),
        );
    }
    Ok(inputs)
}
