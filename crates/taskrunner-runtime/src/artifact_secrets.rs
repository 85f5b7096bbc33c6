//! File artifacts that hold a secret are refused, not published (rule 19, rule 20;
//! `docs/DECISIONS.md`, "Secrets").
//!
//! A file output is scanned with the one masker ([`Masker::scanner`]) before it is copied into
//! the artifact store: a secret value anywhere in it (across read boundaries too) makes the
//! artifact `failed` with a `secret-in-artifact` note, and the file never reaches the data
//! directory. Masking the file instead would silently corrupt binary
//! artifacts and change their digest.

use std::io::Read as _;
use std::path::Path;

use taskrunner_engine::Masker;

/// The reason (and the start of the note) of an artifact refused for holding a secret.
pub(crate) const SECRET_IN_ARTIFACT: &str = "secret-in-artifact";

/// Bytes read at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// `Err(note)` when the file holds a secret value or cannot be read whole.
pub(crate) async fn refuse_if_secret(masker: &Masker, file: &Path) -> Result<(), String> {
    if masker.is_empty() {
        return Ok(());
    }
    let mut scanner = masker.scanner();
    let file = file.to_owned();
    let scanned = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        let mut reader = std::fs::File::open(&file)?;
        let mut chunk = vec![0u8; SCAN_CHUNK_BYTES];
        loop {
            let read = match reader.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if scanner.push(chunk.get(..read).unwrap_or_default()) {
                return Ok(true);
            }
        }
    })
    .await;
    match scanned {
        Ok(Ok(false)) => Ok(()),
        Ok(Ok(true)) => Err(format!(
            "{SECRET_IN_ARTIFACT}: the file contains the value of a secret and was not \
             published (keep secrets out of file outputs)"
        )),
        Ok(Err(e)) => Err(format!("could not read the file: {e}")),
        Err(e) => Err(format!("could not scan the file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secret_anywhere_in_the_file_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let masker = Masker::new(["s3cr3t-value"]);
        let clean = dir.path().join("clean");
        std::fs::write(&clean, vec![b'x'; 3 * SCAN_CHUNK_BYTES]).unwrap();
        assert_eq!(refuse_if_secret(&masker, &clean).await, Ok(()));

        // Straddling the first read boundary.
        let mut bytes = vec![0u8; SCAN_CHUNK_BYTES - 4];
        bytes.extend_from_slice(b"s3cr3t-value");
        bytes.extend_from_slice(&[0xff; 100]);
        let leaky = dir.path().join("leaky.bin");
        std::fs::write(&leaky, bytes).unwrap();
        let note = refuse_if_secret(&masker, &leaky).await.unwrap_err();
        assert!(note.starts_with("secret-in-artifact: "), "{note}");
        assert!(!note.contains("s3cr3t"), "{note}");

        assert_eq!(refuse_if_secret(&Masker::default(), &leaky).await, Ok(()));
        let missing = refuse_if_secret(&masker, &dir.path().join("gone")).await;
        assert!(
            missing
                .unwrap_err()
                .starts_with("could not read the file: "),
            "an unreadable file is refused too"
        );
    }
}
