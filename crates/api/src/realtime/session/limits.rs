//! How many messages a client may send: a token bucket, and strikes for messages over it that
//! fade with time, so a client that overdoes it now and then is answered with errors while one
//! that keeps flooding is closed.

use std::time::Instant;

/// Strikes (over-limit messages, less what has faded) that close the connection.
const MAX_STRIKES: f64 = 50.0;
/// Strikes fade at this many per second.
const STRIKES_FADE_PER_SECOND: f64 = 1.0;

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: answer with an error.
    Refuse,
    /// Over the limit too often: close.
    Close,
}

/// The limit of one connection.
#[derive(Debug)]
pub(super) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    strikes: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` messages per second, bursts of up to `burst`.
    pub(super) fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, strikes: 0.0, at: Instant::now() }
    }

    /// Judges a message arriving now.
    pub(super) fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.strikes = (self.strikes - elapsed * STRIKES_FADE_PER_SECOND).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1.0;
        if self.strikes > MAX_STRIKES { Verdict::Close } else { Verdict::Refuse }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_pass_then_messages_are_refused() {
        let mut limiter = RateLimiter::new(1.0, 3.0);
        let t = Instant::now();
        limiter.at = t;
        assert_eq!(
            [limiter.check_at(t), limiter.check_at(t), limiter.check_at(t)],
            [Verdict::Allow; 3]
        );
        assert_eq!(limiter.check_at(t), Verdict::Refuse);
        assert_eq!(limiter.check_at(t + Duration::from_secs(1)), Verdict::Allow, "refilled");
    }

    #[test]
    fn a_flood_is_closed_but_occasional_excess_fades() {
        let t = Instant::now();
        let mut flood = RateLimiter::new(1.0, 1.0);
        flood.at = t;
        let verdicts: Vec<Verdict> = (0..60).map(|_| flood.check_at(t)).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Close));

        // Ten over-limit messages every ten seconds, for an hour: never closed.
        let mut bursty = RateLimiter::new(1.0, 1.0);
        bursty.at = t;
        for minute in 0..360u64 {
            let at = t + Duration::from_secs(minute * 10);
            for _ in 0..11 {
                assert_ne!(bursty.check_at(at), Verdict::Close, "closed at {minute}");
            }
        }
    }
}
