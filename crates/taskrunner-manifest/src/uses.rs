//! The `uses` syntax (SPEC §1.4): which executor a step runs. The one parser of it; manifest
//! validation, the server's host-executor configuration and anything else that reads a `uses`
//! value call [`parse_uses`] rather than keeping a copy of the rule.

use crate::schema;

/// Longest accepted `uses`, in bytes.
pub const USES_BYTES_MAX: usize = 256;

/// A valid `uses` value, split into its kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uses<'a> {
    /// `builtin:<name>`, with `name` matching `^[a-z0-9][a-z0-9._-]*$` (the name, without the
    /// prefix).
    Builtin(&'a str),
    /// A host executor name matching `^[a-z0-9][a-z0-9._/:-]*$` (the whole value).
    Host(&'a str),
}

/// Why a `uses` value is not valid; the message names the value and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidUses {
    message: String,
}

/// Parses a `uses` value: `builtin:<name>` or a host executor name, at most
/// [`USES_BYTES_MAX`] bytes.
pub fn parse_uses(uses: &str) -> Result<Uses<'_>, InvalidUses> {
    let invalid = |message: String| Err(InvalidUses { message });
    if uses.len() > USES_BYTES_MAX {
        return invalid(format!("uses is longer than {USES_BYTES_MAX} bytes"));
    }
    let name_ok = |s: &str, extra: &[char]| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')
                    || extra.contains(&c)
            })
    };
    if let Some(name) = uses.strip_prefix("builtin:") {
        if name_ok(name, &[]) {
            return Ok(Uses::Builtin(name));
        }
        return invalid(format!(
            "'{}' is not a valid builtin, expected builtin:<name> with name ^[a-z0-9][a-z0-9._-]*$",
            schema::excerpt(uses)
        ));
    }
    if name_ok(uses, &['/', ':']) {
        return Ok(Uses::Host(uses));
    }
    invalid(format!(
        "'{}' is not a valid executor, expected builtin:<name> or a host executor name (^[a-z0-9][a-z0-9._/:-]*$)",
        schema::excerpt(uses)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_split_into_kind_and_name() {
        assert_eq!(parse_uses("builtin:echo"), Ok(Uses::Builtin("echo")));
        assert_eq!(
            parse_uses("builtin:http.get"),
            Ok(Uses::Builtin("http.get"))
        );
        assert_eq!(parse_uses("acme/deploy"), Ok(Uses::Host("acme/deploy")));
        assert_eq!(
            parse_uses("registry:tool/x-1_2"),
            Ok(Uses::Host("registry:tool/x-1_2"))
        );
        let longest = format!("a{}", "b".repeat(USES_BYTES_MAX - 1));
        assert_eq!(parse_uses(&longest), Ok(Uses::Host(&longest)));
    }

    #[test]
    fn invalid_values_say_what_was_expected() {
        let message = |uses: &str| parse_uses(uses).unwrap_err().to_string();
        assert_eq!(
            message("builtin:Echo"),
            "'builtin:Echo' is not a valid builtin, expected builtin:<name> with name ^[a-z0-9][a-z0-9._-]*$"
        );
        for bad in ["builtin:", "builtin:a/b", "builtin:-x"] {
            assert!(message(bad).contains("is not a valid builtin"), "{bad}");
        }
        assert_eq!(
            message("Deploy"),
            "'Deploy' is not a valid executor, expected builtin:<name> or a host executor name (^[a-z0-9][a-z0-9._/:-]*$)"
        );
        for bad in ["", "/x", "a b", "é"] {
            assert!(message(bad).contains("is not a valid executor"), "{bad:?}");
        }
        assert_eq!(
            message(&"a".repeat(USES_BYTES_MAX + 1)),
            "uses is longer than 256 bytes"
        );
    }
}
