//! Content addressing of artifact blobs: SHA-256 digests and the `artifacts/sha256/ab/abcdef…`
//! stored-path layout shared by every adapter (so a stored path means the same everywhere).

use sha2::{Digest, Sha256};

/// Largest artifact blob accepted by `put_file`.
pub const ARTIFACT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Prefix of every stored path, relative to the data directory.
pub const STORED_PATH_PREFIX: &str = "artifacts/sha256/";

/// Bare lowercase hex of a SHA-256 digest.
pub fn hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// SHA-256 of `bytes`, as bare lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The stored path of a blob with this digest: `artifacts/sha256/ab/abcdef…`.
pub fn stored_path_for(sha256_hex: &str) -> String {
    let shard = sha256_hex.get(..2).unwrap_or("00");
    format!("{STORED_PATH_PREFIX}{shard}/{sha256_hex}")
}

/// The digest named by a stored path, if `path` is exactly a blob path (no traversal possible).
pub fn digest_of_stored_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(STORED_PATH_PREFIX)?;
    let (shard, digest) = rest.split_once('/')?;
    let ok = crate::validate::is_lower_hex(digest, 64) && digest.get(..2) == Some(shard);
    ok.then_some(digest)
}
