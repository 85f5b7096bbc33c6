//! The runtime's own ports: the clock and the secret provider. Stores and executors are the
//! ports of `taskrunner-store` and `taskrunner-exec`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use taskrunner_engine::Timestamp;

/// Where "now" comes from. The engine never reads a clock; the runtime asks this port.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
    }
}

/// Supplies secret values by name at run time (SPEC §1.2). Values never reach the store.
pub trait SecretProvider: Send + Sync + Debug {
    /// The value of `name`, if the host has it.
    fn secret(&self, name: &str) -> Option<String>;
}

/// Secrets from `TASKRUNNER_SECRET_<NAME>` (NAME upper-cased; the exact-case name is also
/// accepted), per SPEC §8.4 rule 28.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretProvider for EnvSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        std::env::var(format!("TASKRUNNER_SECRET_{}", name.to_uppercase()))
            .or_else(|_| std::env::var(format!("TASKRUNNER_SECRET_{name}")))
            .ok()
    }
}

/// Secrets from files in a directory: the file named like the secret holds its value (a
/// trailing newline is dropped).
#[derive(Debug, Clone)]
pub struct DirSecrets {
    dir: PathBuf,
}

impl DirSecrets {
    /// Reads secrets from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DirSecrets {
        DirSecrets { dir: dir.into() }
    }
}

impl SecretProvider for DirSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        // Only plain names: a secret name can never walk out of the directory.
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
    }
}

/// Secrets given by the embedding application.
#[derive(Debug, Clone, Default)]
pub struct StaticSecrets {
    values: BTreeMap<String, String>,
}

impl StaticSecrets {
    /// An empty set.
    pub fn new() -> StaticSecrets {
        StaticSecrets::default()
    }
    /// Adds a secret.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> StaticSecrets {
        self.values.insert(name.into(), value.into());
        self
    }
}

impl SecretProvider for StaticSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
}

/// The first provider that has the secret wins.
#[derive(Debug, Default)]
pub struct ChainedSecrets {
    providers: Vec<Box<dyn SecretProvider>>,
}

impl ChainedSecrets {
    /// No providers yet.
    pub fn new() -> ChainedSecrets {
        ChainedSecrets::default()
    }
    /// Adds a provider after the existing ones.
    pub fn push(mut self, provider: impl SecretProvider + 'static) -> ChainedSecrets {
        self.providers.push(Box::new(provider));
        self
    }
}

impl SecretProvider for ChainedSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        self.providers.iter().find_map(|p| p.secret(name))
    }
}
