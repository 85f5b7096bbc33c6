//! Running one launched process to completion: the shared engine of `builtin:shell` and
//! host-configured commands.
//!
//! It prepares the environment (`with.env`-style variables, a minimal `PATH`, the
//! `TASKRUNNER_*` variables), creates the `$TASKRUNNER_OUTPUT` file outside the workspace,
//! writes stdin, streams stdout/stderr as masked lines with backpressure, enforces the
//! timeout and cancellation by stopping the whole process group, and turns the exit status
//! and the output file into an [`ExecOutcome`].
//!
//! The attempt ends when the group is gone, not when stdout closes: when the main process
//! exits, whatever it left running in its group is stopped too.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Masker;
use crate::error::ExecError;
use crate::launcher::{GroupGuard, Launcher, ProcessSpec};
use crate::lines::LineSplitter;
use crate::request::{ExecOutcome, ExecRequest, OutputLine, OutputStream, reason};

/// The largest `$TASKRUNNER_OUTPUT` file read; a larger one fails the attempt.
pub const OUTPUT_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// `PATH` when `with.env` gives none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Size of one read from stdout/stderr.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// What to run, before the launcher's environment is added.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// Caller-chosen variables (`with.env`); the `TASKRUNNER_*` variables override them.
    pub(crate) env: BTreeMap<String, String>,
    /// Bytes written to stdin, after which stdin is closed; `None` = `/dev/null`.
    pub(crate) stdin: Option<Vec<u8>>,
}

/// How the wait for the main process ended.
enum Trigger {
    Exited(Result<ExitStatus, String>),
    Timeout(Duration),
    Cancelled,
    /// The kill token: stopped with SIGKILL at once.
    Killed,
}

/// The `execute` of every process executor: runs the invocation its parameters produced, or
/// fails the attempt with the parameter error (masked: it may quote parameter values).
pub(crate) fn execute_invocation(
    launcher: Arc<Launcher>,
    invocation: Result<Invocation, ExecError>,
    request: ExecRequest,
    output: Sender<OutputLine>,
    cancel: CancellationToken,
) -> futures::future::BoxFuture<'static, ExecOutcome> {
    Box::pin(async move {
        match invocation {
            Ok(invocation) => run_invocation(launcher, request, invocation, output, cancel).await,
            Err(error) => ExecOutcome::failed(
                error.reason(),
                Masker::new(&request.secrets).mask_str(&error.to_string()),
            ),
        }
    })
}

/// Runs `invocation` for `request` and reports the outcome. Never panics, never hangs on a
/// dropped output receiver.
pub(crate) async fn run_invocation(
    launcher: Arc<Launcher>,
    request: ExecRequest,
    invocation: Invocation,
    output: Sender<OutputLine>,
    cancel: CancellationToken,
) -> ExecOutcome {
    if cancel.is_cancelled() || request.kill.is_cancelled() {
        return ExecOutcome::failed(reason::CANCELLED, "attempt cancelled before it started");
    }
    let masker = Masker::new(&request.secrets);
    let output_dir = launcher
        .config()
        .output_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let output_file = match tempfile::Builder::new()
        .prefix("taskrunner-output-")
        .tempfile_in(&output_dir)
    {
        Ok(file) => file,
        Err(source) => {
            return ExecError::Io {
                context: "creating the output file",
                source,
            }
            .into();
        }
    };

    let mut env = invocation.env;
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    env.insert(
        "TASKRUNNER_OUTPUT".to_owned(),
        output_file.path().to_string_lossy().into_owned(),
    );
    env.insert(
        "TASKRUNNER_WORKSPACE".to_owned(),
        request.workspace.to_string_lossy().into_owned(),
    );
    env.insert("TASKRUNNER_RUN_ID".to_owned(), request.run_id.clone());
    env.insert("TASKRUNNER_TENANT".to_owned(), request.tenant.clone());
    // At-least-once execution (SPEC §6.2): the key lets a step recognise a repeated attempt.
    env.insert(
        "TASKRUNNER_IDEMPOTENCY_KEY".to_owned(),
        request.idempotency_key.clone(),
    );
    env.insert("TASKRUNNER_STEP_ID".to_owned(), request.step_id.clone());
    env.insert("TASKRUNNER_ATTEMPT".to_owned(), request.attempt.to_string());

    let spec = ProcessSpec {
        program: invocation.program,
        args: invocation.args,
        env,
        cwd: request.workspace.clone(),
        stdin_piped: invocation.stdin.is_some(),
        writable_files: vec![output_file.path().to_path_buf()],
    };
    let launched = match launcher.launch(spec, &request.sandbox) {
        Ok(launched) => launched,
        Err(error) => {
            return ExecOutcome::failed(error.reason(), masker.mask_str(&error.to_string()));
        }
    };
    report_confinement(&launched.confinement, &output).await;
    let confinement = launched.confinement;
    let pgid = launched.pgid;
    let mut guard = GroupGuard::new(pgid);
    let mut child = launched.child;

    // Ends the helper tasks below however this function is left.
    let attempt_over = CancellationToken::new();
    let _attempt_over_guard = attempt_over.clone().drop_guard();

    if let (Some(mut stdin), Some(bytes)) = (launched.stdin, invocation.stdin) {
        // Detached: a process that exits without reading everything makes the write fail
        // with EPIPE, which is fine; one that left the group and holds stdin without
        // reading is given up on when the attempt is over. Dropping `stdin` closes it.
        tokio::spawn(async move {
            tokio::select! {
                _ = stdin.write_all(&bytes) => {}
                () = attempt_over.cancelled() => {}
            }
        });
    }

    let abandon = CancellationToken::new();
    let stdout_pump = tokio::spawn(pump(
        launched.stdout,
        LineSplitter::new(OutputStream::Stdout, masker.clone()),
        output.clone(),
        abandon.clone(),
    ));
    let stderr_pump = tokio::spawn(pump(
        launched.stderr,
        LineSplitter::new(OutputStream::Stderr, masker.clone()),
        output,
        abandon.clone(),
    ));
    let mut wait: JoinHandle<std::io::Result<ExitStatus>> =
        tokio::spawn(async move { child.wait().await });

    let timeout = request.timeout;
    let kill = request.kill.clone();
    let trigger = tokio::select! {
        biased;
        joined = &mut wait => Trigger::Exited(flatten(joined)),
        () = kill.cancelled() => Trigger::Killed,
        () = cancel.cancelled() => Trigger::Cancelled,
        () = sleep_or_forever(timeout) => Trigger::Timeout(timeout.unwrap_or_default()),
    };

    // Stop the group in every case: on exit this removes what the main process left behind.
    // The kill token skips (or cuts short) the SIGTERM grace.
    let stopped = tokio::select! {
        biased;
        () = kill.cancelled() => launcher.kill(pgid, &confinement).await,
        stopped = launcher.stop(pgid, &confinement) => stopped,
    };
    if stopped {
        guard.disarm();
        launcher.forget_group(pgid);
    }
    let status = match &trigger {
        Trigger::Exited(status) => Some(status.clone()),
        Trigger::Timeout(_) | Trigger::Cancelled | Trigger::Killed => {
            // The group is gone, so the main process has exited; its reaping is immediate.
            // Bounded anyway: stopping may have given up on a process stuck in the kernel.
            match tokio::time::timeout(launcher.config().drain_grace, &mut wait).await {
                Ok(joined) => Some(flatten(joined)),
                Err(_) => None,
            }
        }
    };

    // Drain the pipes; give up on end-of-file held back by a process outside the group.
    let mut pumps = futures::future::join(stdout_pump, stderr_pump);
    tokio::select! {
        _ = &mut pumps => {}
        () = tokio::time::sleep(launcher.config().drain_grace) => {
            abandon.cancel();
            let _ = pumps.await;
        }
    }

    let mut outputs = Map::new();
    let file_result = read_output_file(&output_file, &masker).await;
    if let Err(error) = output_file.close() {
        tracing::warn!(%error, "removing the output file failed");
    }
    let file_error = match file_result {
        Ok(entries) => {
            outputs = entries;
            None
        }
        Err(error) => Some(error),
    };

    match trigger {
        Trigger::Killed => {
            add_exit_code(&mut outputs, status.as_ref());
            ExecOutcome::Failed {
                reason: reason::CANCELLED.to_owned(),
                message: "attempt killed: its processes were stopped with SIGKILL".to_owned(),
                outputs,
            }
        }
        Trigger::Cancelled => {
            add_exit_code(&mut outputs, status.as_ref());
            ExecOutcome::Failed {
                reason: reason::CANCELLED.to_owned(),
                message: "attempt cancelled; its processes were stopped".to_owned(),
                outputs,
            }
        }
        Trigger::Timeout(limit) => {
            add_exit_code(&mut outputs, status.as_ref());
            let pids_note = if confinement.pids_limit_hit() {
                " (it had reached its process limit)"
            } else {
                ""
            };
            ExecOutcome::Failed {
                reason: reason::TIMEOUT.to_owned(),
                message: format!(
                    "attempt exceeded its timeout of {} s; its processes were stopped{pids_note}",
                    limit.as_secs_f64()
                ),
                outputs,
            }
        }
        Trigger::Exited(Err(message)) => {
            ExecOutcome::failed(reason::EXECUTOR_ERROR, format!("waiting failed: {message}"))
        }
        Trigger::Exited(Ok(status)) => {
            let (code, mut message) = describe_exit(status);
            outputs.insert("exitCode".to_owned(), Value::from(code));
            if code != 0 && confinement.memory_limit_hit() {
                ExecOutcome::Failed {
                    reason: reason::MEMORY_LIMIT.to_owned(),
                    message: format!(
                        "the attempt exceeded its memory limit of {} MiB and was killed ({message})",
                        request.sandbox.memory_limit_mib.unwrap_or_default()
                    ),
                    outputs,
                }
            } else if code != 0 {
                if confinement.pids_limit_hit() {
                    message
                        .push_str("; the attempt reached its process limit (a fork was refused)");
                }
                ExecOutcome::Failed {
                    reason: reason::EXIT_CODE.to_owned(),
                    message,
                    outputs,
                }
            } else if let Some(error) = file_error {
                ExecOutcome::Failed {
                    reason: error.reason().to_owned(),
                    message: error.to_string(),
                    outputs,
                }
            } else {
                ExecOutcome::Succeeded { outputs }
            }
        }
    }
}

/// Records how the attempt is confined as a `sandbox` line (its metadata names each
/// mechanism), and each unenforced control as a loud warning line.
async fn report_confinement(
    confinement: &crate::launcher::Confinement,
    output: &Sender<OutputLine>,
) {
    if confinement.mechanisms.is_empty() && confinement.warnings.is_empty() {
        return;
    }
    let mut line = OutputLine::new(
        OutputStream::Sandbox,
        format!(
            "sandbox: {}",
            crate::sandbox::mechanisms_summary(&confinement.mechanisms)
        ),
    );
    line.metadata = confinement
        .mechanisms
        .iter()
        .map(|(k, v)| (format!("sandbox.{k}"), v.clone()))
        .collect();
    let _ = output.send(line).await;
    for warning in &confinement.warnings {
        let mut line = OutputLine::new(OutputStream::Sandbox, warning.clone());
        line.metadata
            .insert("unsandboxed".to_owned(), "true".to_owned());
        let _ = output.send(line).await;
    }
}

fn flatten(
    joined: Result<std::io::Result<ExitStatus>, tokio::task::JoinError>,
) -> Result<ExitStatus, String> {
    match joined {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

async fn sleep_or_forever(timeout: Option<Duration>) {
    match timeout {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// The exit code to report (128 + signal for a signal death) and a message.
fn describe_exit(status: ExitStatus) -> (i64, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (i64::from(code), format!("process exited with code {code}")),
        (None, Some(signal)) => (
            128 + i64::from(signal),
            format!("process was killed by signal {signal}"),
        ),
        (None, None) => (-1, "process ended without an exit code".to_owned()),
    }
}

fn add_exit_code(outputs: &mut Map<String, Value>, status: Option<&Result<ExitStatus, String>>) {
    if let Some(Ok(status)) = status
        && let Some(code) = status.code()
    {
        outputs.insert("exitCode".to_owned(), Value::from(code));
    }
}

/// Reads one stream into lines and delivers them. Backpressure: awaits a full channel. A
/// dropped receiver: keeps reading (so the process never blocks on a full pipe) and drops
/// the lines. `abandon`: stops waiting for more bytes (data already readable is still read
/// first).
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    mut splitter: LineSplitter,
    sender: Sender<OutputLine>,
    abandon: CancellationToken,
) {
    let mut receiver_gone = false;
    let mut buf = vec![0_u8; READ_CHUNK_BYTES];
    loop {
        let read = tokio::select! {
            biased;
            read = reader.read(&mut buf) => read,
            () = abandon.cancelled() => break,
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(%error, "reading step output failed");
                break;
            }
        };
        for line in splitter.push(&buf[..n]) {
            deliver(&sender, line, &mut receiver_gone).await;
        }
    }
    for line in splitter.finish() {
        deliver(&sender, line, &mut receiver_gone).await;
    }
}

async fn deliver(sender: &Sender<OutputLine>, line: OutputLine, receiver_gone: &mut bool) {
    if !*receiver_gone && sender.send(line).await.is_err() {
        *receiver_gone = true;
    }
}

/// Reads `key=value` lines through the handle created before the process started (so
/// replacing the path with a symlink does not redirect the read).
async fn read_output_file(
    file: &tempfile::NamedTempFile,
    masker: &Masker,
) -> Result<Map<String, Value>, ExecError> {
    let io = |context: &'static str| move |source| ExecError::Io { context, source };
    let handle = file
        .as_file()
        .try_clone()
        .map_err(io("opening the output file"))?;
    let mut handle = tokio::fs::File::from_std(handle);
    handle
        .seek(SeekFrom::Start(0))
        .await
        .map_err(io("reading the output file"))?;
    let mut bytes = Vec::new();
    (&mut handle)
        .take(OUTPUT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(io("reading the output file"))?;
    if bytes.len() as u64 > OUTPUT_FILE_BYTES_MAX {
        return Err(ExecError::Internal(format!(
            "the $TASKRUNNER_OUTPUT file is larger than {OUTPUT_FILE_BYTES_MAX} bytes"
        )));
    }
    Ok(parse_output_lines(&bytes, masker))
}

/// `key=value` lines: values are strings, later keys win, lines without `=` (or with an
/// empty key) are ignored, a trailing `\r` is dropped, keys and values are masked.
pub(crate) fn parse_output_lines(bytes: &[u8], masker: &Masker) -> Map<String, Value> {
    let text = String::from_utf8_lossy(bytes);
    let mut outputs = Map::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        outputs.insert(masker.mask_str(key), Value::String(masker.mask_str(value)));
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_later_keys_win_and_are_masked() {
        let masker = Masker::new(["topsecret"]);
        let parsed = parse_output_lines(
            b"a=1\nnoequals\n=x\nb=x=y\r\na=2\ntoken=topsecret\n",
            &masker,
        );
        assert_eq!(
            Value::Object(parsed),
            serde_json::json!({"a": "2", "b": "x=y", "token": "***"})
        );
    }
}
