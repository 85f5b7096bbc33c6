//! The JMESPath lexer: turns source text into [`Token`]s carrying byte offsets.
//!
//! Lexing is linear and stops at the first malformed token, which becomes a
//! [`Tok::Error`] token so the parser reports errors in source order.

use serde_json::Value;

/// A token kind (with its payload).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Unquoted identifier.
    Ident(String),
    /// Quoted identifier (`"..."`), already unescaped.
    QuotedIdent(String),
    /// Integer (used by index and slice expressions).
    Number(i64),
    /// Backtick JSON literal.
    Literal(Value),
    /// Raw string literal (`'...'`).
    RawString(String),
    Dot,
    Star,
    /// `[]`
    Flatten,
    /// `[?`
    Filter,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Colon,
    Pipe,
    Or,
    And,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    At,
    Ampersand,
    Eof,
    /// A lexing error at this position.
    Error(String),
}

impl Tok {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier '{s}'"),
            Tok::QuotedIdent(s) => format!("quoted identifier \"{s}\""),
            Tok::Number(n) => format!("number {n}"),
            Tok::Literal(_) => "json literal".to_owned(),
            Tok::RawString(_) => "raw string literal".to_owned(),
            Tok::Eof => "end of input".to_owned(),
            Tok::Error(m) => m.clone(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Dot => ".",
            Tok::Star => "*",
            Tok::Flatten => "[]",
            Tok::Filter => "[?",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Pipe => "|",
            Tok::Or => "||",
            Tok::And => "&&",
            Tok::Not => "!",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::At => "@",
            Tok::Ampersand => "&",
            _ => "?",
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
}

/// Lexes the whole source. The last token is always `Eof` or `Error`.
pub(crate) fn tokenize(src: &str) -> Vec<Token> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::with_capacity(src.len() / 3 + 2);
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let simple = |t: Tok, len: usize| (t, len);
        let result: Result<(Tok, usize), String> = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut j = i + 1;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                Ok((Tok::Ident(src[i..j].to_owned()), j - i))
            }
            b'0'..=b'9' | b'-' => lex_number(bytes, i),
            b'"' => lex_quoted(src, i),
            b'\'' => lex_raw(src, i),
            b'`' => lex_literal(src, i),
            b'.' => Ok(simple(Tok::Dot, 1)),
            b'*' => Ok(simple(Tok::Star, 1)),
            b'[' => match bytes.get(i + 1) {
                Some(b']') => Ok(simple(Tok::Flatten, 2)),
                Some(b'?') => Ok(simple(Tok::Filter, 2)),
                _ => Ok(simple(Tok::LBracket, 1)),
            },
            b']' => Ok(simple(Tok::RBracket, 1)),
            b'{' => Ok(simple(Tok::LBrace, 1)),
            b'}' => Ok(simple(Tok::RBrace, 1)),
            b'(' => Ok(simple(Tok::LParen, 1)),
            b')' => Ok(simple(Tok::RParen, 1)),
            b',' => Ok(simple(Tok::Comma, 1)),
            b':' => Ok(simple(Tok::Colon, 1)),
            b'@' => Ok(simple(Tok::At, 1)),
            b'|' => match bytes.get(i + 1) {
                Some(b'|') => Ok(simple(Tok::Or, 2)),
                _ => Ok(simple(Tok::Pipe, 1)),
            },
            b'&' => match bytes.get(i + 1) {
                Some(b'&') => Ok(simple(Tok::And, 2)),
                _ => Ok(simple(Tok::Ampersand, 1)),
            },
            b'!' => match bytes.get(i + 1) {
                Some(b'=') => Ok(simple(Tok::Ne, 2)),
                _ => Ok(simple(Tok::Not, 1)),
            },
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => Ok(simple(Tok::Le, 2)),
                _ => Ok(simple(Tok::Lt, 1)),
            },
            b'>' => match bytes.get(i + 1) {
                Some(b'=') => Ok(simple(Tok::Ge, 2)),
                _ => Ok(simple(Tok::Gt, 1)),
            },
            b'=' => match bytes.get(i + 1) {
                Some(b'=') => Ok(simple(Tok::Eq, 2)),
                _ => Err("unexpected character '=' (did you mean '=='?)".to_owned()),
            },
            _ => {
                let c = src.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                Err(format!("unexpected character {c:?}"))
            }
        };
        match result {
            Ok((tok, len)) => {
                tokens.push(Token { tok, start });
                i += len;
            }
            Err(message) => {
                tokens.push(Token {
                    tok: Tok::Error(message),
                    start,
                });
                return tokens;
            }
        }
    }
    tokens.push(Token {
        tok: Tok::Eof,
        start: bytes.len(),
    });
    tokens
}

fn lex_number(bytes: &[u8], start: usize) -> Result<(Tok, usize), String> {
    let mut j = start;
    if bytes.get(j) == Some(&b'-') {
        j += 1;
    }
    let digits_start = j;
    while j < bytes.len() && bytes[j].is_ascii_digit() {
        j += 1;
    }
    if j == digits_start {
        return Err("unexpected character '-' (expected a number)".to_owned());
    }
    let text = std::str::from_utf8(&bytes[start..j]).map_err(|_| "invalid number".to_owned())?;
    match text.parse::<i64>() {
        Ok(n) => Ok((Tok::Number(n), j - start)),
        Err(_) => Err(format!("number out of range: {text}")),
    }
}

/// Finds the closing `delim` starting after `start`, honouring backslash escapes.
/// Returns the byte index of the closing delimiter.
fn find_close(bytes: &[u8], start: usize, delim: u8) -> Option<usize> {
    let mut j = start + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            c if c == delim => return Some(j),
            _ => j += 1,
        }
    }
    None
}

fn lex_quoted(src: &str, start: usize) -> Result<(Tok, usize), String> {
    let bytes = src.as_bytes();
    let end = find_close(bytes, start, b'"')
        .ok_or_else(|| "unterminated quoted identifier".to_owned())?;
    let raw = &src[start..=end];
    let inner = &src[start + 1..end];
    let value = if !inner.bytes().any(|b| b == b'\\' || b < 0x20) {
        inner.to_owned()
    } else {
        serde_json::from_str::<String>(raw).map_err(|e| {
            if inner.bytes().any(|b| b < 0x20) {
                "control character in quoted identifier (escape it)".to_owned()
            } else {
                format!(
                    "invalid escape sequence in quoted identifier: {}",
                    json_error_text(&e)
                )
            }
        })?
    };
    Ok((Tok::QuotedIdent(value), end + 1 - start))
}

/// Collects the text between delimiters: a backslash before the delimiter yields the delimiter,
/// any other backslash is kept along with the character after it.
fn unescape_delimited(src: &str, start: usize, end: usize, delim: char) -> String {
    let inner = &src[start + 1..end];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == delim => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lex_raw(src: &str, start: usize) -> Result<(Tok, usize), String> {
    let end = find_close(src.as_bytes(), start, b'\'')
        .ok_or_else(|| "unterminated raw string literal".to_owned())?;
    Ok((
        Tok::RawString(unescape_delimited(src, start, end, '\'')),
        end + 1 - start,
    ))
}

fn lex_literal(src: &str, start: usize) -> Result<(Tok, usize), String> {
    let end = find_close(src.as_bytes(), start, b'`')
        .ok_or_else(|| "unterminated json literal".to_owned())?;
    let text = unescape_delimited(src, start, end, '`');
    let trimmed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    if trimmed.is_empty() {
        return Err("empty json literal".to_owned());
    }
    let value = match serde_json::from_str::<Value>(trimmed) {
        Ok(v) => v,
        Err(e) => {
            // Legacy (pre JEP-12) form: an unquoted word such as `foo` is a string. Only
            // plain words qualify, so malformed JSON (`{a: 1}`) is still an error.
            let word = trimmed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '));
            if word {
                Value::String(trimmed.to_owned())
            } else {
                return Err(format!("invalid json literal: {}", json_error_text(&e)));
            }
        }
    };
    Ok((Tok::Literal(value), end + 1 - start))
}

fn json_error_text(e: &serde_json::Error) -> String {
    // serde_json messages carry " at line X column Y"; keep only the description.
    let s = e.to_string();
    match s.find(" at line ") {
        Some(p) => s[..p].to_owned(),
        None => s,
    }
}
