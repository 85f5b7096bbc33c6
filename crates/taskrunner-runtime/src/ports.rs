//! The runtime's own ports: the clock and the secret provider. Stores and executors are the
//! ports of `taskrunner-store` and `taskrunner-exec`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskrunner_engine::Timestamp;

/// A future that completes after a clock's sleep.
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where time comes from. The engine never reads a clock; the runtime asks this port, and only
/// this port: every timer, deadline and timestamp of the runtime goes through it (tidy checks
/// that no other file of the runtime reads a clock or sleeps), so a test can run the runtime on
/// a virtual clock.
pub trait Clock: Send + Sync + Debug {
    /// Wall-clock time: what timestamps, approval expiries and due timers are measured in.
    fn now(&self) -> Timestamp;
    /// Monotonic time since an arbitrary origin fixed for this clock; never goes back.
    /// Deadlines and elapsed times are measured in it.
    fn monotonic(&self) -> Duration;
    /// Completes after `duration` of this clock's monotonic time.
    fn sleep(&self, duration: Duration) -> SleepFuture;
}

/// The system clock: wall time from [`SystemTime`], monotonic time and sleeps from tokio's
/// clock ([`tokio::time::Instant`], [`tokio::time::sleep`]), so a test that pauses tokio's
/// clock (`#[tokio::test(start_paused = true)]`) runs the runtime's timers in virtual time.
///
/// Its monotonic origin is shared by the whole process: a day before the first read (so a
/// paused test runtime started a little before that read still reads a time past the origin).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The monotonic origin of [`SystemClock`].
fn system_origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    const MARGIN: Duration = Duration::from_secs(86_400);
    *ORIGIN.get_or_init(|| {
        let now = tokio::time::Instant::from_std(std::time::Instant::now());
        now.checked_sub(MARGIN).unwrap_or(now)
    })
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    fn monotonic(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(system_origin())
    }

    fn sleep(&self, duration: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(duration))
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
