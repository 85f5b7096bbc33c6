//! [`ManualClock`]: a [`Clock`] for runtime tests, on tokio's (pausable) clock with manual
//! offsets on top.
//!
//! Its monotonic time is tokio's time since the clock was made plus whatever [`advance`]
//! added; its wall time is a fixed start ([`T0`] unless told otherwise) plus that monotonic
//! time plus whatever [`shift_wall`] added. Under `#[tokio::test(start_paused = true)]` tokio's
//! clock is virtual: it stands still while anything runs and jumps to the next timer when every
//! task waits on one, so retries, backoff, approval expiries and lease renewals happen in
//! order, in no real time, whatever the machine's load. Timestamps written by the runtime are
//! then reproducible from [`T0`].
//!
//! [`advance`] moves one clock ahead of the others at once (a replica whose clock runs fast, or
//! one that wakes up after a stall): its sleepers whose time came are woken. [`shift_wall`]
//! moves only the wall time, backwards too (an NTP step): monotonic time never goes back.
//!
//! Make the clock inside the test's tokio runtime: its origin is tokio's "now" there.
//!
//! Caveat: tokio's paused clock jumps ahead whenever every task waits, including while they
//! wait on a socket or a child process, so tests with real I/O to a database server or real
//! processes should keep tokio's clock running (this clock still gives them a fixed wall start
//! and manual jumps).
//!
//! [`advance`]: ManualClock::advance
//! [`shift_wall`]: ManualClock::shift_wall

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use taskrunner_engine::Timestamp;
use taskrunner_runtime::{Clock, SleepFuture};
use tokio::sync::watch;

use crate::T0;

/// A clock for tests: tokio's (pausable) time plus manual offsets. Clones share the clock.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// tokio's time when the clock was made: monotonic zero.
    origin: tokio::time::Instant,
    /// Wall time at monotonic zero.
    wall_start: Timestamp,
    offsets: Mutex<Offsets>,
    /// Bumped on every [`ManualClock::advance`]: sleepers recheck their deadline.
    advanced: watch::Sender<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Offsets {
    /// Added to monotonic (and so wall) time by `advance`.
    ahead: Duration,
    /// Added to wall time only by `shift_wall`.
    wall_ms: i64,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock whose wall time starts at [`T0`].
    pub fn new() -> ManualClock {
        ManualClock::starting_at(T0)
    }

    /// A clock whose wall time starts at `wall_start`.
    pub fn starting_at(wall_start: Timestamp) -> ManualClock {
        let (advanced, _) = watch::channel(0);
        ManualClock {
            inner: Arc::new(Inner {
                origin: tokio::time::Instant::now(),
                wall_start,
                offsets: Mutex::new(Offsets::default()),
                advanced,
            }),
        }
    }

    /// The same clock as an `Arc<dyn Clock>`, for `Runtime::new`.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    /// Moves this clock's monotonic and wall time `by` ahead at once (tokio's clock and other
    /// clocks stay where they are) and wakes its sleepers whose time came.
    pub fn advance(&self, by: Duration) {
        self.inner
            .with_offsets(|o| o.ahead = o.ahead.saturating_add(by));
        self.inner.advanced.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Moves the wall time only, by `by_ms` (negative: backwards). Monotonic time and sleepers
    /// are not affected.
    pub fn shift_wall(&self, by_ms: i64) {
        self.inner
            .with_offsets(|o| o.wall_ms = o.wall_ms.saturating_add(by_ms));
    }
}

impl Inner {
    fn with_offsets<T>(&self, f: impl FnOnce(&mut Offsets) -> T) -> T {
        let mut offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut offsets)
    }

    fn monotonic(&self) -> Duration {
        let ahead = self.with_offsets(|o| o.ahead);
        self.origin.elapsed().saturating_add(ahead)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let wall_ms = self.inner.with_offsets(|o| o.wall_ms);
        let elapsed = i64::try_from(self.inner.monotonic().as_millis()).unwrap_or(i64::MAX);
        Timestamp(
            self.inner
                .wall_start
                .millis()
                .saturating_add(elapsed)
                .saturating_add(wall_ms),
        )
    }

    fn monotonic(&self) -> Duration {
        self.inner.monotonic()
    }

    fn sleep(&self, duration: Duration) -> SleepFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Subscribed before the deadline is checked: no advance is missed.
            let mut advanced = inner.advanced.subscribe();
            let deadline = inner.monotonic().saturating_add(duration);
            loop {
                let left = deadline.saturating_sub(inner.monotonic());
                if left.is_zero() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    _ = advanced.changed() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_virtual_time_from_t0() {
        let clock = ManualClock::new();
        assert_eq!(clock.now(), T0);
        assert_eq!(clock.monotonic(), Duration::ZERO);
        let before = std::time::Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert!(
            before.elapsed() < Duration::from_secs(5),
            "slept in real time"
        );
        assert_eq!(clock.monotonic(), Duration::from_secs(3600));
        assert_eq!(clock.now(), Timestamp(T0.millis() + 3_600_000));
    }

    #[tokio::test(start_paused = true)]
    async fn advance_wakes_sleepers_whose_time_came() {
        let clock = ManualClock::starting_at(Timestamp(1_000));
        let short = tokio::spawn(clock.sleep(Duration::from_secs(10)));
        let long = tokio::spawn(clock.sleep(Duration::from_secs(100)));
        tokio::task::yield_now().await;
        let tokio_before = tokio::time::Instant::now();
        clock.advance(Duration::from_secs(10));
        short.await.unwrap();
        // Woken by the advance, not by tokio's clock reaching the deadline.
        assert_eq!(tokio::time::Instant::now(), tokio_before);
        assert!(!long.is_finished());
        assert_eq!(clock.now(), Timestamp(11_000));
        // The rest of the long sleep passes on tokio's clock.
        long.await.unwrap();
        assert_eq!(tokio_before.elapsed(), Duration::from_secs(90));
        assert_eq!(clock.monotonic(), Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wall_shifts_never_move_monotonic_time() {
        let clock = ManualClock::starting_at(Timestamp(50_000));
        clock.shift_wall(-20_000);
        assert_eq!(clock.now(), Timestamp(30_000));
        assert_eq!(clock.monotonic(), Duration::ZERO);
        let other = clock.clone();
        other.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), Timestamp(30_005), "clones share the clock");
        assert_eq!(clock.monotonic(), Duration::from_millis(5));
    }
}
