//! `builtin:sleep`: waits `with.seconds` (rule 18), honouring cancellation and the timeout.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::builtin::params;
use crate::error::ExecError;
use crate::executor::Executor;
use crate::request::{ExecOutcome, ExecRequest, OutputLine, reason};

/// The longest `builtin:sleep` (one day).
pub const SLEEP_SECONDS_MAX: f64 = 86_400.0;

/// `builtin:sleep`: `with.seconds` is a non-negative number, fractions allowed, at most
/// [`SLEEP_SECONDS_MAX`]. Succeeds with no outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepExecutor;

fn seconds(with: &Value) -> Result<Duration, ExecError> {
    let map = params::object("builtin:sleep", with, &["seconds"])?;
    let Some(value) = map.and_then(|m| m.get("seconds")) else {
        return Err(ExecError::invalid("builtin:sleep requires `with.seconds`"));
    };
    let Some(seconds) = value.as_f64() else {
        return Err(ExecError::invalid("`with.seconds` must be a number"));
    };
    if !(0.0..=SLEEP_SECONDS_MAX).contains(&seconds) {
        return Err(ExecError::invalid(format!(
            "`with.seconds` must be between 0 and {SLEEP_SECONDS_MAX}, got {value}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl Executor for SleepExecutor {
    fn execute(
        &self,
        request: ExecRequest,
        _output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        Box::pin(async move {
            let duration = match seconds(&request.with) {
                Ok(duration) => duration,
                Err(error) => return error.into(),
            };
            let limit = request.timeout;
            let timed_out = async {
                match limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    ExecOutcome::failed(reason::CANCELLED, "sleep cancelled")
                }
                () = tokio::time::sleep(duration) => ExecOutcome::succeeded(Map::new()),
                () = timed_out => ExecOutcome::failed(
                    reason::TIMEOUT,
                    format!(
                        "attempt exceeded its timeout of {} s",
                        limit.unwrap_or_default().as_secs_f64()
                    ),
                ),
            }
        })
    }
}
