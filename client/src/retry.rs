//! One retry policy for every role: which failures are retried, and how long to wait.

use std::time::Duration;

/// Exponential backoff for recoverable failures ([`Error::recoverable`](crate::Error::recoverable):
/// transport errors, 429 and 5xx). A `Retry-After` the coordinator sends is honoured, up to
/// [`RetryPolicy::max_delay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: never retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub initial_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries over about 7.5 s (0.5 s, 1 s, 2 s, 4 s): enough to ride out a coordinator restart
    /// without hiding an outage from the caller's own, slower loop.
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// Never retry: the first failure is returned.
    pub const NONE: Self = Self {
        attempts: 1,
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The wait before retry number `retry` (0-based): `initial · 2^retry`, at most `max_delay`;
    /// a server's `Retry-After` replaces it when given (still capped).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.min(31)));
        retry_after.unwrap_or(exp).min(self.max_delay)
    }
}

/// An unbounded backoff for a role's own loop (lease, work): doubles from `initial` up to `max`
/// and is reset after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` (at least 10 ms, so a loop never spins), never waits longer than
    /// `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(10));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The wait to use now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
        };
        let got: Vec<u128> = (0..5).map(|i| p.delay(i, None).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 700, 700]);
        assert_eq!(
            p.delay(0, Some(Duration::from_millis(300))).as_millis(),
            300
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(60))).as_millis(), 700);
        assert_eq!(p.delay(u32::MAX, None).as_millis(), 700);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay().as_millis(), 10);
    }
}
