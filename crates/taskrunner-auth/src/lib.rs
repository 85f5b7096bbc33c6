//! Authentication and authorisation (SPEC §6.1, §8.4 rules 25–26): the [`Authenticator`] port
//! turns a request's `Authorization` header into a [`Principal`] (subject, scopes, tenant
//! claim); [`Principal::may`] answers whether it holds the scope an operation needs.
//!
//! Owns: which scope each [`Access`] level needs, what `none` mode grants, how tokens are
//! checked (adapters in this crate). Knows no HTTP framework: callers pass header values in.
//!
//! Adapters: [`NoAuth`] (`none` mode) and [`JwtAuthenticator`] (`jwt` mode).

mod jwt;

use std::collections::BTreeSet;
use std::fmt;

pub use jwt::{
    JwtAlgorithm, JwtAuthenticator, JwtConfig, JwtSetupError, KeyFile, KeySource,
    LEEWAY_SECONDS_DEFAULT, LEEWAY_SECONDS_MAX, TOKEN_BYTES_MAX,
};

/// Read-only access: every `GET` endpoint.
pub const SCOPE_VIEWER: &str = "taskrunner.viewer";
/// Also simulate, create, approve and cancel.
pub const SCOPE_OPERATOR: &str = "taskrunner.operator";
/// Everything.
pub const SCOPE_ADMIN: &str = "taskrunner.admin";

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `GET` endpoints: viewer, operator or admin.
    Read,
    /// Simulate, create, approve, cancel: operator or admin.
    Operate,
    /// Administrative operations: admin only.
    Admin,
}

/// How the server authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: every caller holds every scope and grant (loopback listeners only).
    None,
    /// Bearer JWTs.
    Jwt,
}

/// Who is calling, as established by an [`Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`; `None` in `none` mode (the actor is then the body's `actorId`).
    pub subject: Option<String>,
    /// Scopes from `scope` (space-separated) or `scp` (array).
    pub scopes: BTreeSet<String>,
    /// The token's `tenant` claim, if any (the effective tenant; a differing header is 403).
    pub tenant: Option<String>,
    /// `none` mode: holds every scope and every approval grant.
    pub unrestricted: bool,
}

impl Principal {
    /// The caller of `none` mode and of the CLI: every scope, every grant, no subject.
    pub fn unrestricted() -> Principal {
        Principal {
            subject: None,
            scopes: BTreeSet::new(),
            tenant: None,
            unrestricted: true,
        }
    }

    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.unrestricted || self.scopes.contains(scope)
    }

    /// Whether the caller may perform an operation needing `access`.
    pub fn may(&self, access: Access) -> bool {
        let admin = self.has_scope(SCOPE_ADMIN);
        match access {
            Access::Admin => admin,
            Access::Operate => admin || self.has_scope(SCOPE_OPERATOR),
            Access::Read => admin || self.has_scope(SCOPE_OPERATOR) || self.has_scope(SCOPE_VIEWER),
        }
    }

    /// Whether the caller holds every scope an approval's `grants` lists (SPEC §1.3).
    pub fn holds_grants<'a>(&self, grants: impl IntoIterator<Item = &'a str>) -> bool {
        self.unrestricted || grants.into_iter().all(|g| self.scopes.contains(g))
    }
}

/// Why a caller could not be authenticated (HTTP 401 with `WWW-Authenticate: Bearer`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed, badly signed, expired, not yet valid, or for another
    /// issuer/audience. The message names which, and never echoes the token.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The authentication port: checks a request's credentials.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The mode this authenticator implements.
    fn mode(&self) -> AuthMode;

    /// Authenticates the raw `Authorization` header value (`None` when absent).
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError>;
}

/// `none` mode: everyone is [`Principal::unrestricted`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn mode(&self) -> AuthMode {
        AuthMode::None
    }

    fn authenticate(&self, _authorization: Option<&str>) -> Result<Principal, AuthError> {
        Ok(Principal::unrestricted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(scopes: &[&str]) -> Principal {
        Principal {
            subject: Some("alice".into()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            tenant: None,
            unrestricted: false,
        }
    }

    #[test]
    fn scope_levels_nest() {
        assert!(with(&[SCOPE_VIEWER]).may(Access::Read));
        assert!(!with(&[SCOPE_VIEWER]).may(Access::Operate));
        assert!(with(&[SCOPE_OPERATOR]).may(Access::Read));
        assert!(with(&[SCOPE_OPERATOR]).may(Access::Operate));
        assert!(!with(&[SCOPE_OPERATOR]).may(Access::Admin));
        assert!(with(&[SCOPE_ADMIN]).may(Access::Admin));
        assert!(!with(&["packs.approve"]).may(Access::Read));
        assert!(Principal::unrestricted().may(Access::Admin));
    }

    #[test]
    fn grants_need_every_listed_scope() {
        let p = with(&[SCOPE_OPERATOR, "packs.approve"]);
        assert!(p.holds_grants(["packs.approve"]));
        assert!(p.holds_grants([]));
        assert!(!p.holds_grants(["packs.approve", "security.signoff"]));
        assert!(Principal::unrestricted().holds_grants(["anything"]));
    }

    #[test]
    fn no_auth_is_unrestricted_whatever_the_header() {
        let p = NoAuth.authenticate(Some("Bearer garbage")).unwrap();
        assert!(p.unrestricted);
        assert_eq!(NoAuth.mode(), AuthMode::None);
    }
}
