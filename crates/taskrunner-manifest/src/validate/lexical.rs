//! Lexical rules on single strings: names and ids, semantic versions, durations, hosts,
//! `uses`, output paths, range lengths.

use taskrunner_expr::{Template, TemplatePart};

use crate::schema;

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `^[a-z0-9][a-z0-9._-]*$`
pub(super) fn is_lower_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]*$`
pub(super) fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Semantic Versioning 2.0.0.
pub(crate) fn is_semver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|id| ident(id) && (!id.bytes().all(|c| c.is_ascii_digit()) || numeric(id)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

/// `<n>s|m|h|d` with n ≥ 1 → seconds.
pub(crate) fn parse_duration(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let seconds = n.checked_mul(factor)?;
    (n > 0 && i128::from(seconds) <= schema::INTEGER_ABS_MAX).then_some(seconds)
}

/// `host` or `host:port`; host is a DNS name (optionally `*.`-prefixed) or an IPv4 address.
pub(super) fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        match p.parse::<u32>() {
            Ok(n) if (1..=65_535).contains(&n) && p.bytes().all(|c| c.is_ascii_digit()) => {}
            _ => {
                return Err(format!(
                    "port '{}' is not a number between 1 and 65535",
                    schema::excerpt(p)
                ));
            }
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err("host must be 1 to 253 characters".to_owned());
    }
    for label in name.split('.') {
        let b = label.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b.first() != Some(&b'-')
            && b.last() != Some(&b'-');
        if !valid {
            return Err(format!(
                "label '{}' is not 1 to 63 letters, digits or inner hyphens",
                schema::excerpt(label)
            ));
        }
    }
    Ok(())
}

/// `builtin:<name>` or a host executor name ([`crate::parse_uses`] owns the rule).
pub(super) fn check_uses(uses: &str) -> Result<(), String> {
    crate::uses::parse_uses(uses)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A file output path must stay inside the workspace.
pub(super) fn check_output_path(t: &Template) -> Result<(), String> {
    let absolute =
        |s: &str| s.starts_with('/') || s.starts_with('\\') || s.as_bytes().get(1) == Some(&b':');
    if t.is_literal() {
        let s = t.source();
        if absolute(s) {
            return Err(format!(
                "path '{}' is absolute, expected a path relative to the run workspace",
                schema::excerpt(s)
            ));
        }
        if s.split(['/', '\\']).any(|seg| seg == "..") {
            return Err(format!(
                "path '{}' contains '..', expected a path inside the run workspace",
                schema::excerpt(s)
            ));
        }
        if s.is_empty() {
            return Err("expected a non-empty path".to_owned());
        }
    } else if let Some(TemplatePart::Literal(first)) = t.parts().first()
        && absolute(first)
    {
        return Err(format!(
            "path '{}' is absolute, expected a path relative to the run workspace",
            schema::excerpt(t.source())
        ));
    }
    Ok(())
}

/// Items of `[start, end)` stepping by `step` (never 0).
pub(super) fn range_len(start: i64, end: i64, step: i64) -> u128 {
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let span = if step > 0 { end - start } else { start - end };
    if span <= 0 {
        return 0;
    }
    let step = step.unsigned_abs();
    let span = span.unsigned_abs();
    span.div_ceil(step)
}
