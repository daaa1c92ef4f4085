//! Per-client attempt limits on the endpoints worth guessing at: login, registration, password
//! reset.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ApiError;

const WINDOW: Duration = Duration::from_secs(60);

/// Attempts by one client on one scope: when its window started and how many so far.
type Windows = HashMap<(IpAddr, &'static str), (Instant, u32)>;

/// Fixed one-minute windows per (client address, scope).
#[derive(Debug)]
pub struct Throttle {
    per_minute: u32,
    windows: Mutex<Windows>,
}

impl Throttle {
    /// Allows `per_minute` attempts per client and scope; 0 disables the limit.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt; fails with 429 once the client used up its minute.
    pub fn check(&self, client: IpAddr, scope: &'static str) -> Result<(), ApiError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry((client, scope)).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            let wait = WINDOW.saturating_sub(now.duration_since(*start)).as_secs().max(1);
            return Err(ApiError::Throttled(wait));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_client_and_scope_separately() {
        let throttle = Throttle::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(throttle.check(a, "login").is_ok());
        assert!(throttle.check(a, "login").is_ok());
        assert!(
            matches!(throttle.check(a, "login"), Err(ApiError::Throttled(s)) if (1..=60).contains(&s))
        );
        assert!(throttle.check(a, "register").is_ok());
        assert!(throttle.check(b, "login").is_ok());
        assert!(Throttle::new(0).check(a, "login").is_ok());
    }
}
