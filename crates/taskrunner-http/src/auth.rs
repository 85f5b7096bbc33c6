//! Who is calling and in which tenant (SPEC §6.1, rules 25–26): the `Authorization` header
//! goes through the [`Authenticator`](taskrunner_auth::Authenticator) port (401 on failure);
//! the effective tenant is the token's `tenant` claim, else `X-StellaOps-Tenant`, else the
//! default tenant (a header differing from the claim is 403, a malformed tenant 400).

use axum::http::{HeaderMap, header};
use taskrunner_auth::{Access, Principal};

use crate::AppState;
use crate::error::ApiError;

/// The tenant header.
pub(crate) const TENANT_HEADER: &str = "x-stellaops-tenant";

/// An authenticated caller and its effective tenant.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) tenant: String,
}

impl Caller {
    /// 403 unless the caller may perform an operation needing `access`.
    pub(crate) fn require(&self, access: Access) -> Result<(), ApiError> {
        if self.principal.may(access) {
            Ok(())
        } else {
            let needed = match access {
                Access::Read => "taskrunner.viewer",
                Access::Operate => "taskrunner.operator",
                Access::Admin => "taskrunner.admin",
            };
            Err(ApiError::Forbidden(format!(
                "this operation needs the scope {needed} (or a higher one)"
            )))
        }
    }

    /// The scopes to check an approval's `grants` against (`None`: every grant).
    pub(crate) fn grant_scopes(&self) -> Option<std::collections::BTreeSet<String>> {
        (!self.principal.unrestricted).then(|| self.principal.scopes.clone())
    }
}

/// Authenticates the request (401) and settles its tenant (403 / 400).
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not visible ASCII".into())
        })?),
    };
    let principal = state
        .config
        .authenticator
        .authenticate(authorization)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let header_tenant = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request(
                "header.X-StellaOps-Tenant",
                "X-StellaOps-Tenant is not visible ASCII, expected a tenant slug",
            )
        })?),
    };
    let tenant = match (&principal.tenant, header_tenant) {
        (Some(claim), Some(header)) if header != claim => {
            return Err(ApiError::Forbidden(format!(
                "X-StellaOps-Tenant '{header}' differs from the token's tenant"
            )));
        }
        (Some(claim), _) => claim.clone(),
        (None, Some(header)) => header.to_owned(),
        (None, None) => state.config.default_tenant.clone(),
    };
    taskrunner_store::validate::tenant(&tenant)
        .map_err(|e| ApiError::bad_request("header.X-StellaOps-Tenant", e.to_string()))?;
    Ok(Caller { principal, tenant })
}

/// 400 unless `run_id` is a run id (rule 26, owned by the store's validator).
pub(crate) fn check_run_id(run_id: &str, path: &str) -> Result<(), ApiError> {
    taskrunner_store::validate::run_id(run_id)
        .map_err(|e| ApiError::bad_request(path, e.to_string()))
}
