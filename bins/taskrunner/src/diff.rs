//! `taskrunner diff OLD NEW`: the semantic diff of two plans (`taskrunner_plan::diff`). Each
//! side is a pack (planned with that side's inputs) or a plan JSON document as printed by
//! `taskrunner plan`. Exit: 0 no change, 1 changes, 2 invalid input (a side that cannot be
//! read, parsed or planned).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use taskrunner_plan::Plan;

use crate::{Failure, InputArgs, collect_inputs, print_diagnostics, read_text, write_stdout};

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The old side: a pack (YAML) or a plan JSON document (`taskrunner plan` output).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The new side: a pack (YAML) or a plan JSON document.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// An input of the old pack; VALUE is coerced to the input's declared type.
    #[arg(long = "old-input", value_name = "NAME=VALUE")]
    old_input: Vec<String>,
    /// A JSON or YAML file with the old pack's inputs (--old-input wins over it).
    #[arg(long = "old-inputs", value_name = "FILE")]
    old_inputs: Option<PathBuf>,
    /// An input of the new pack; VALUE is coerced to the input's declared type.
    #[arg(long = "new-input", value_name = "NAME=VALUE")]
    new_input: Vec<String>,
    /// A JSON or YAML file with the new pack's inputs (--new-input wins over it).
    #[arg(long = "new-inputs", value_name = "FILE")]
    new_inputs: Option<PathBuf>,
    /// `text` (one line per change, `no change` when the hashes are equal) or `json`
    /// (`taskrunner.plan-diff/v1`, see docs/PLAN_DIFF.md).
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    format: DiffFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiffFormat {
    Text,
    Json,
}

pub(crate) fn diff(args: DiffArgs) -> Result<(), Failure> {
    let old_inputs = InputArgs {
        input: args.old_input,
        inputs_file: args.old_inputs,
    };
    let new_inputs = InputArgs {
        input: args.new_input,
        inputs_file: args.new_inputs,
    };
    let old = side(&args.old, &old_inputs, "old")?;
    let new = side(&args.new, &new_inputs, "new")?;
    let d = taskrunner_plan::diff(&old, &new);
    let text = match args.format {
        DiffFormat::Text => d.to_text(),
        DiffFormat::Json => format!("{}\n", taskrunner_plan::jcs::to_pretty(&d.to_json())),
    };
    write_stdout(&text)?;
    if d.is_empty() {
        Ok(())
    } else {
        Err(Failure::Exit(1))
    }
}

/// One side as a plan; every problem is printed and is exit 2.
fn side(path: &Path, inputs: &InputArgs, which: &str) -> Result<Plan, Failure> {
    let invalid = |message: String| {
        eprintln!("{}: {message}", path.display());
        Failure::Invalid
    };
    let text = match read_text(path) {
        Ok(Ok(text)) => text,
        Ok(Err(d)) => {
            print_diagnostics(path, &d);
            return Err(Failure::Invalid);
        }
        Err(e) => return Err(invalid(format!("{e:#}"))),
    };
    if looks_like_plan(&text) {
        if !inputs.input.is_empty() || inputs.inputs_file.is_some() {
            return Err(invalid(format!(
                "is a plan document: its inputs are already resolved, drop --{which}-input/--{which}-inputs"
            )));
        }
        return Plan::from_canonical_json(&text, None)
            .map_err(|e| invalid(format!("not a valid taskrunner.plan/v1 document: {e}")));
    }
    let manifest = taskrunner_manifest::parse(&text).map_err(|d| {
        print_diagnostics(path, &d);
        Failure::Invalid
    })?;
    let values = match collect_inputs(&manifest, inputs) {
        Ok(v) => v,
        Err(Failure::Other(e)) => return Err(invalid(format!("{e:#}"))),
        Err(other) => return Err(other),
    };
    taskrunner_plan::plan(&manifest, &values).map_err(|e| {
        print_diagnostics(path, e.diagnostics());
        Failure::Invalid
    })
}

/// A JSON object with a `schema` member is a plan document; anything else is read as a pack.
fn looks_like_plan(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("schema").is_some())
}
