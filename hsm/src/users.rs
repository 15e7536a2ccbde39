//! Users: password hashing (argon2id, PHC strings) and a cache of recent
//! successful logins so that a module opening many connections does not pay
//! the memory-hard hash on each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Hash a password into a PHC string.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| format!("random: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hash: {e}"))
}

/// A hash of a random password, verified against when the user is unknown
/// so that both failures cost the same.
fn dummy_phc() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 32];
        let _ = openssl::rand::rand_bytes(&mut pw);
        hash_password(&pw).unwrap_or_default()
    })
}

/// Verify `password` against `phc` (`None`: unknown user, still does the work).
pub fn verify_password(phc: Option<&str>, password: &[u8]) -> bool {
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| dummy_phc());
    let ok = match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    };
    ok && known
}

/// Allowed user names: 1 to 64 of `[A-Za-z0-9._-]` (no `:` or `@`, which
/// the special-PIN form `user:password@host` uses).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// The owner of user `name`'s objects: the name and the user's id, which
/// is never reused (a name holds no `#`), so that a new user of an old name
/// owns nothing of the old one's. Id 0 (records of earlier versions, before
/// `hsmlink-hsm migrate`) owns by name.
pub fn owner_key(name: &str, id: u64) -> String {
    if id == 0 {
        name.to_string()
    } else {
        format!("{name}#{id}")
    }
}

/// Recent successful logins: user → keyed hash of the password (the key is
/// random per process, so the cache is useless outside it).
pub struct LoginCache {
    key: [u8; 32],
    map: Mutex<HashMap<String, [u8; 32]>>,
}

const CACHE_MAX: usize = 1024;

impl Default for LoginCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginCache {
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        let _ = openssl::rand::rand_bytes(&mut key);
        LoginCache {
            key,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The tag binds the user, its current hash (so that a password changed
    /// elsewhere, e.g. through another server of a fleet, invalidates the
    /// entry) and the password.
    fn tag(&self, user: &str, phc: &str, password: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = match Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        m.update(&(user.len() as u64).to_le_bytes());
        m.update(user.as_bytes());
        m.update(&(phc.len() as u64).to_le_bytes());
        m.update(phc.as_bytes());
        m.update(password);
        m.finalize().into_bytes().into()
    }

    pub fn hit(&self, user: &str, phc: &str, password: &[u8]) -> bool {
        let t = self.tag(user, phc, password);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user)
            .is_some_and(|v| openssl::memcmp::eq(v.as_slice(), t.as_slice()))
    }

    pub fn remember(&self, user: &str, phc: &str, password: &[u8]) {
        let t = self.tag(user, phc, password);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX && !map.contains_key(user) {
            map.clear();
        }
        map.insert(user.to_string(), t);
    }

    pub fn forget(&self, user: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(user);
    }
}

/// Login protection settings.
#[derive(Clone, Debug)]
pub struct LoginPolicy {
    /// Consecutive failures that lock a user (0: never lock).
    pub max_failures: u32,
    /// Failures (per user, per client address) answered without delay.
    pub free_failures: u32,
    /// Delay after the first failure past the free ones; doubles with each
    /// further failure, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// An attempt that would have to wait longer than this is refused at
    /// once (`CKR_PIN_INCORRECT`, the password not even checked).
    pub max_wait: Duration,
    /// Failures older than this are forgotten by the rate limiter.
    pub forget_after: Duration,
    /// How long the first lock lasts; each failure after a lock lapsed
    /// locks again for twice as long, up to `max_lock`. Zero: a lock lasts
    /// until an admin unlocks the user.
    pub lock: Duration,
    pub max_lock: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            max_failures: 5,
            free_failures: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            max_wait: Duration::from_secs(10),
            forget_after: Duration::from_secs(15 * 60),
            lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    failures: u32,
    next: Instant,
    last: Instant,
}

/// Most keys the rate limiter tracks before it forgets the oldest.
const THROTTLE_MAX: usize = 65_536;

/// Rate limiting of failed logins, per user and per client address: after
/// `free_failures` failures, each attempt is spaced from the previous one by
/// an exponentially growing delay (attempts queue for their turn), so a
/// brute-force attack runs at a few attempts a minute at most, whatever
/// number of connections it opens. A success clears the counters of its
/// user and address.
pub struct Throttle {
    policy: LoginPolicy,
    slots: Mutex<HashMap<ThrottleKey, Slot>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    User(String),
    Addr(IpAddr),
}

/// The refusal of an attempt that would wait too long.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled;

impl Throttle {
    pub fn new(policy: LoginPolicy) -> Self {
        Throttle {
            policy,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &LoginPolicy {
        &self.policy
    }

    fn keys(user: &str, peer: Option<IpAddr>) -> Vec<ThrottleKey> {
        let mut k = vec![ThrottleKey::User(user.to_string())];
        if let Some(ip) = peer {
            k.push(ThrottleKey::Addr(ip));
        }
        k
    }

    /// Recent failures counted against address `ip`.
    pub fn address_failures(&self, ip: IpAddr) -> u32 {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(&ThrottleKey::Addr(ip)).map_or(0, |s| {
            if s.last.elapsed() > self.policy.forget_after {
                0
            } else {
                s.failures
            }
        })
    }

    fn delay(&self, failures: u32) -> Duration {
        if failures < self.policy.free_failures.max(1) {
            return Duration::ZERO;
        }
        let n = (failures - self.policy.free_failures.max(1)).min(16);
        (self.policy.base_delay * (1u32 << n)).min(self.policy.max_delay)
    }

    /// Take a turn for an attempt: how long to wait before checking the
    /// password, or [`Throttled`]. An attempt from an address the user
    /// logged in from lately (`trusted`, see [`KnownAddresses`]) queues
    /// behind its address only, not behind the user's other attempts.
    pub fn reserve(
        &self,
        user: &str,
        peer: Option<IpAddr>,
        trusted: bool,
    ) -> Result<Duration, Throttled> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = now;
        let mut keys = Self::keys(user, peer);
        if trusted && peer.is_some() {
            keys.remove(0);
        }
        for k in &keys {
            if let Some(s) = slots.get(k) {
                if now.duration_since(s.last) > self.policy.forget_after {
                    slots.remove(k);
                } else if s.failures >= self.policy.free_failures.max(1) {
                    at = at.max(s.next);
                }
            }
        }
        let wait = at.duration_since(now);
        if wait > self.policy.max_wait {
            return Err(Throttled);
        }
        // Queue: the next attempt on the same keys comes after this one.
        for k in &keys {
            if let Some(s) = slots.get_mut(k) {
                if s.failures >= self.policy.free_failures.max(1) {
                    s.next = at + self.delay(s.failures);
                }
            }
        }
        Ok(wait)
    }

    /// Record a failed attempt.
    pub fn failed(&self, user: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= THROTTLE_MAX {
            let forget = self.policy.forget_after;
            slots.retain(|_, s| now.duration_since(s.last) < forget);
            if slots.len() >= THROTTLE_MAX {
                slots.clear();
            }
        }
        for k in Self::keys(user, peer) {
            let s = slots.entry(k).or_insert(Slot {
                failures: 0,
                next: now,
                last: now,
            });
            s.failures = s.failures.saturating_add(1);
            s.last = now;
            s.next = s.next.max(now + self.delay(s.failures));
        }
    }

    /// Record a success: the user's and the address's counters are cleared.
    pub fn succeeded(&self, user: &str, peer: Option<IpAddr>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for k in Self::keys(user, peer) {
            slots.remove(&k);
        }
    }
}

/// Addresses each user logged in from lately (in memory, per server): a
/// correct password from one of them, which has failed nothing since, is
/// checked even while the user is locked by failures from elsewhere, so
/// that strangers guessing a name cannot lock its owner out. Guesses from
/// such an address still count, and the first one ends its privilege.
pub struct KnownAddresses {
    map: Mutex<HashMap<String, Vec<IpAddr>>>,
}

/// Addresses kept per user (the most recent).
const KNOWN_PER_USER: usize = 16;

impl Default for KnownAddresses {
    fn default() -> Self {
        Self::new()
    }
}

impl KnownAddresses {
    pub fn new() -> Self {
        KnownAddresses {
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn contains(&self, user: &str, ip: IpAddr) -> bool {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(user).is_some_and(|v| v.contains(&ip))
    }

    pub fn remember(&self, user: &str, ip: IpAddr) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= THROTTLE_MAX && !m.contains_key(user) {
            m.clear();
        }
        let v = m.entry(user.to_string()).or_default();
        v.retain(|a| *a != ip);
        if v.len() >= KNOWN_PER_USER {
            v.remove(0);
        }
        v.push(ip);
    }

    /// Forget a user's addresses (its password changed, it was removed).
    pub fn forget(&self, user: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(user);
    }
}

/// Failed logins of *unknown* user names, counted in memory so that an
/// unknown name locks like a real one (lock length included) and a lockout
/// reveals nothing about which names exist.
pub struct PhantomFailures {
    /// Name → (consecutive failures, end of the lock as in
    /// [`crate::store::UserRecord::locked_until`]).
    map: Mutex<HashMap<String, (u32, u64)>>,
}

impl Default for PhantomFailures {
    fn default() -> Self {
        Self::new()
    }
}

impl PhantomFailures {
    pub fn new() -> Self {
        PhantomFailures {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the unknown name `user` is locked under `rule`.
    pub fn is_locked(&self, user: &str, rule: &crate::store::LockRule) -> bool {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(user).is_some_and(|(n, until)| {
            rule.max > 0 && *n >= rule.max && (*until == 0 || rule.now < *until)
        })
    }

    /// Count a failure as [`crate::store::Store::login_failed`] does.
    pub fn bump(&self, user: &str, rule: &crate::store::LockRule) -> (u32, bool) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= THROTTLE_MAX && !m.contains_key(user) {
            // Full: the names short of a lock go first. Flushed, a lock
            // would tell an unknown name (unlocked again) from a real user
            // (locked in its record): a spray of names must now take
            // `max` failures each, not one.
            let max = rule.max.max(1);
            m.retain(|_, (n, _)| *n >= max);
            if m.len() >= THROTTLE_MAX {
                m.clear();
            }
        }
        let (n, until) = m.entry(user.to_string()).or_insert((0, 0));
        *n = n.saturating_add(1);
        let locked = rule.max > 0 && *n >= rule.max;
        if locked {
            *until = rule.until(*n);
        }
        (*n, locked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password(b"secret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(&h), b"secret"));
        assert!(!verify_password(Some(&h), b"Secret"));
        assert!(!verify_password(None, b"secret"));
        assert!(!verify_password(Some("garbage"), b"secret"));
    }

    #[test]
    fn names() {
        assert!(check_name("alice.b-1_x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("a@b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn throttle_spaces_attempts_after_free_failures() {
        let t = Throttle::new(LoginPolicy {
            free_failures: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_wait: Duration::from_millis(1000),
            ..LoginPolicy::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.reserve("u", Some(ip), false), Ok(Duration::ZERO));
        t.failed("u", Some(ip));
        assert_eq!(t.reserve("u", Some(ip), false), Ok(Duration::ZERO));
        t.failed("u", Some(ip));
        // Two failures: the next attempt waits, and attempts queue.
        let w1 = t.reserve("u", Some(ip), false).unwrap();
        assert!(w1 > Duration::from_millis(50), "{w1:?}");
        let w2 = t.reserve("v", Some(ip), false).unwrap();
        assert!(
            w2 > w1,
            "{w1:?} {w2:?}: the address is throttled for other users too"
        );
        // Another address and another user are not slowed.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.reserve("w", Some(other), false), Ok(Duration::ZERO));
        // The user is throttled from another address too, unless it logged
        // in from there lately.
        assert!(t.reserve("u", Some(other), false).unwrap() > Duration::ZERO);
        assert_eq!(t.reserve("u", Some(other), true), Ok(Duration::ZERO));
        // Enough queued attempts: refused outright.
        let mut refused = false;
        for _ in 0..20 {
            if t.reserve("x", Some(ip), false).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        t.succeeded("u", Some(ip));
        assert_eq!(t.reserve("u", Some(ip), false), Ok(Duration::ZERO));
    }

    #[test]
    fn a_spray_of_names_does_not_flush_the_locks_of_unknown_names() {
        let p = PhantomFailures::new();
        let rule = crate::store::LockRule {
            max: 5,
            now: 1_000,
            base_ms: 60_000,
            max_ms: 3_600_000,
        };
        for _ in 0..5 {
            p.bump("ghost", &rule);
        }
        assert!(p.is_locked("ghost", &rule));
        // More names, one failure each, than the table holds.
        for i in 0..THROTTLE_MAX + 10 {
            p.bump(&format!("spray{i}"), &rule);
        }
        assert!(p.is_locked("ghost", &rule), "the lock was flushed");
        let len = p.map.lock().unwrap().len();
        assert!(len <= THROTTLE_MAX, "{len} entries");
    }

    #[test]
    fn cache() {
        let c = LoginCache::new();
        assert!(!c.hit("u", "h", b"p"));
        c.remember("u", "h", b"p");
        assert!(c.hit("u", "h", b"p"));
        assert!(!c.hit("u", "h", b"q"));
        assert!(!c.hit("u", "h2", b"p"), "the password changed elsewhere");
        c.forget("u");
        assert!(!c.hit("u", "h", b"p"));
    }
}
