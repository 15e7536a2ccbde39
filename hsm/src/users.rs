//! Users: password hashing (argon2id, PHC strings) and a cache of recent
//! successful logins so that a module opening many connections does not pay
//! the memory-hard hash on each.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

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

    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = match Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        m.update(&(user.len() as u64).to_le_bytes());
        m.update(user.as_bytes());
        m.update(password);
        m.finalize().into_bytes().into()
    }

    pub fn hit(&self, user: &str, password: &[u8]) -> bool {
        let t = self.tag(user, password);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user)
            .is_some_and(|v| openssl::memcmp::eq(v.as_slice(), t.as_slice()))
    }

    pub fn remember(&self, user: &str, password: &[u8]) {
        let t = self.tag(user, password);
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
    fn cache() {
        let c = LoginCache::new();
        assert!(!c.hit("u", b"p"));
        c.remember("u", b"p");
        assert!(c.hit("u", b"p"));
        assert!(!c.hit("u", b"q"));
        c.forget("u");
        assert!(!c.hit("u", b"p"));
    }
}
