//! `cargo xtask`: the single entry point for project checks (`ci`, `tidy`, `bench`, `fuzz`).
//!
//! The library half exists so the tidy checks run as ordinary tests (`cargo test -p xtask`);
//! the binary in `main.rs` only parses arguments and shells out to cargo.

pub mod tidy;

use std::path::{Path, PathBuf};

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // xtask/ always sits directly under the workspace root (see the root Cargo.toml members).
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The cargo binary to call: the one running us (`$CARGO`) if set, else `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
