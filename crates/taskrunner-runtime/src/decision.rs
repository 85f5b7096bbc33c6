//! Rule 16 for approval decisions, shared by a run's driver, a decision on a finished run and a
//! decision journaled for a run another replica drives: unknown approval (404), then the
//! approval's `grants` (403), then the engine's own checks, mapped to [`RuntimeError`].

use std::collections::BTreeSet;

use taskrunner_engine::{DecisionCheck, Run};

use crate::api::{DecisionOutcome, DecisionRequest};
use crate::error::RuntimeError;

/// Rule 16: an unknown approval is 404 before anything else; then a caller must hold every scope
/// the approval's `grants` lists (403) before the plan hash or the run's state are looked at.
pub(crate) fn check_grants(
    run: &Run,
    approval_id: &str,
    check: &Result<DecisionCheck, taskrunner_engine::Error>,
    scopes: Option<&BTreeSet<String>>,
) -> Result<(), RuntimeError> {
    if let Err(taskrunner_engine::Error::UnknownApproval(id)) = check {
        return Err(RuntimeError::NotFound(format!("approval {id}")));
    }
    let (Some(scopes), Some(approval)) = (scopes, run.plan().approval(approval_id)) else {
        return Ok(());
    };
    let missing: Vec<&str> = approval
        .grants
        .iter()
        .filter(|g| !scopes.contains(*g))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Forbidden(format!(
            "approval {approval_id} needs the scope(s) {}",
            missing.join(", ")
        )))
    }
}

/// The answer to a decision on a finished run: the engine says which answer or error applies.
pub(crate) fn decision_on_terminal(
    run: &Run,
    approval_id: &str,
    request: &DecisionRequest,
) -> Result<DecisionOutcome, RuntimeError> {
    let check = run.check_decision(
        approval_id,
        request.decision,
        &request.actor,
        &request.plan_hash,
    );
    check_grants(run, approval_id, &check, request.caller_scopes.as_ref())?;
    match check {
        Ok(check) => Ok(DecisionOutcome {
            status: request.decision,
            resumed: check.resume,
        }),
        Err(e) => Err(decision_error(e)),
    }
}

/// The engine's refusal of a decision as the runtime's error.
pub(crate) fn decision_error(e: taskrunner_engine::Error) -> RuntimeError {
    use taskrunner_engine::Error as E;
    match e {
        E::UnknownApproval(id) => RuntimeError::NotFound(format!("approval {id}")),
        E::PlanHashMismatch { expected, .. } => RuntimeError::PlanHashMismatch { expected },
        E::RunTerminal(status) => RuntimeError::RunTerminal(status),
        E::ApprovalAlreadyDecided(id) => RuntimeError::AlreadyDecided(id),
        other => RuntimeError::Internal(other.to_string()),
    }
}
