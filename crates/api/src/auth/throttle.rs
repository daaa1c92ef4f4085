//! Per-client attempt limits on the endpoints worth guessing at: login, registration, password
//! reset. The limit is governor's GCRA (n attempts per minute, bursts of n); its per-client
//! state lives in a fixed-capacity LRU map, so memory is bounded by design however many
//! addresses an attacker uses: the least recently seen clients are forgotten first.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use lru::LruCache;

use crate::ApiError;

/// Clients remembered at most (each costs a few dozen bytes).
const CAPACITY: usize = 65_536;

/// Rate-limiting state per key, in an LRU map of fixed capacity.
struct BoundedStore<K: Hash + Eq> {
    states: Arc<Mutex<LruCache<K, Nanos>>>,
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // One lock for the read and the write, so concurrent attempts are counted one by one.
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let (outcome, next) = f(states.get(key).copied())?;
        states.put(key.clone(), next);
        Ok(outcome)
    }
}

type Key = (IpAddr, &'static str);
type Limiter = RateLimiter<Key, BoundedStore<Key>, DefaultClock, NoOpMiddleware>;

/// Attempts per minute per (client address, scope).
pub struct Throttle {
    limiter: Option<Limiter>,
    /// The limiter's store, shared to tell how many clients it remembers.
    states: Option<Arc<Mutex<LruCache<Key, Nanos>>>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("enabled", &self.limiter.is_some()).finish()
    }
}

impl Throttle {
    /// Allows `per_minute` attempts per client and scope (bursts of as many); 0 disables it.
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, CAPACITY)
    }

    fn with_capacity(per_minute: u32, capacity: usize) -> Self {
        let Some(per_minute) = NonZeroU32::new(per_minute) else {
            return Self { limiter: None, states: None };
        };
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let states = Arc::new(Mutex::new(LruCache::new(capacity)));
        let store = BoundedStore { states: states.clone() };
        let limiter =
            RateLimiter::new(Quota::per_minute(per_minute), store, DefaultClock::default());
        Self { limiter: Some(limiter), states: Some(states) }
    }

    /// How many clients the limiter remembers now (at most its capacity).
    pub fn remembered_clients(&self) -> usize {
        self.states.as_ref().map_or(0, |s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
    }

    /// Counts one attempt; fails with 429 (and when to retry) once the client used up its
    /// allowance.
    pub fn check(&self, client: IpAddr, scope: &'static str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&(client, scope)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::Throttled(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
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
        assert_eq!(throttle.remembered_clients(), 3);
    }

    #[test]
    fn memory_stays_bounded_however_many_clients_come() {
        let throttle = Throttle::with_capacity(1, 100);
        for i in 0..10_000u32 {
            let client = IpAddr::from(i.to_be_bytes());
            assert!(throttle.check(client, "login").is_ok(), "a new client is let in");
        }
        assert_eq!(throttle.remembered_clients(), 100);
        // The most recent clients are still limited.
        assert!(throttle.check(IpAddr::from(9_999u32.to_be_bytes()), "login").is_err());
    }
}
