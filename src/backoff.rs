//! Capped exponential backoff with full jitter, shared by every retry loop in the agent
//! (LWA exchanges, SSM reads, Roles Anywhere sessions, SNS publishes).

use std::time::Duration;

/// Retry delays: `base * 2^attempt`, capped at `cap`, then a random point in the upper half
/// of that window. Jitter keeps a fleet of hosts that lost AWS at the same moment from
/// coming back in lockstep; the floor of half the window keeps the backoff meaningful.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The window for the current attempt, before jitter.
    pub fn window(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, advancing the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window();
        self.attempt = self.attempt.saturating_add(1);
        let half = window / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let mut windows = Vec::new();
        for _ in 0..8 {
            windows.push(b.window());
            let d = b.next_delay();
            let w = *windows.last().expect("pushed");
            assert!(d >= w / 2 && d <= w, "{d:?} outside [{:?}, {w:?}]", w / 2);
        }
        assert_eq!(
            windows.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
            vec![500, 1000, 2000, 4000, 8000, 8000, 8000, 8000]
        );
        b.reset();
        assert_eq!(b.window(), Duration::from_millis(500));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
