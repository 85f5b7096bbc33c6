//! The opaque `list_runs` cursor: the keyset `(created_at_ms, run_id)` of the last run returned.
//!
//! Keyset (not offset) paging keeps pages stable while runs are inserted: a page continues
//! strictly after the last key seen, so nothing is repeated or skipped.

use crate::error::StoreError;

const PREFIX: &str = "c1.";

/// Position after which the next page starts (newest-first order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at_ms` of the last run of the previous page.
    pub created_at_ms: i64,
    /// `run_id` of the last run of the previous page.
    pub run_id: String,
}

impl Cursor {
    /// The cursor string handed to clients.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}", self.created_at_ms, self.run_id)
    }

    /// Parses a cursor string; `Invalid` for anything this module did not produce.
    pub fn decode(text: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Invalid(format!("malformed cursor {text:?}"));
        let rest = text.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (created, run_id) = rest.split_once('.').ok_or_else(bad)?;
        let created_at_ms = created.parse::<i64>().map_err(|_| bad())?;
        crate::validate::run_id(run_id).map_err(|_| bad())?;
        Ok(Cursor {
            created_at_ms,
            run_id: run_id.to_owned(),
        })
    }

    /// Whether a run with this key comes after the cursor in newest-first order.
    pub fn is_before(&self, created_at_ms: i64, run_id: &str) -> bool {
        (created_at_ms, run_id) < (self.created_at_ms, self.run_id.as_str())
    }
}

/// The effective page size: `Invalid` for 0, capped at [`crate::LIST_LIMIT_MAX`].
pub fn page_limit(limit: usize) -> Result<usize, StoreError> {
    if limit == 0 {
        return Err(StoreError::Invalid("page limit is 0".to_owned()));
    }
    Ok(limit.min(crate::ports::LIST_LIMIT_MAX))
}
