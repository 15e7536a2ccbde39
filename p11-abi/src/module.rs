//! The library's global state and everything that needs no pointer: the
//! configuration, the token behind the C functions, conversions between the
//! host's attribute layout and the core's canonical one.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hsmlink_core::attr::{kind, Kind};
use hsmlink_core::ck::{ckr, Rv};
use hsmlink_core::token::{LoginConfig, SessionSlot, Token};
use hsmlink_core::wire::Attribute;
use hsmlink_transport_std::{TcpConnector, TcpLink, Timeouts, DEFAULT_ADDR};
use parking_lot::RwLock;

use crate::types::CK_ULONG;

/// The one slot of the profile.
pub const SLOT_ID: u64 = 1;
/// Most sessions open at once.
pub const MAX_SESSIONS: usize = 128;
/// Frame buffer per direction per session.
pub const BUF: usize = 16 * 1024 + 1024;
/// Fixed token label of the profile.
pub const TOKEN_LABEL: &str = "Dinamo HSM";

pub type Slot = SessionSlot<TcpLink, parking_lot::RawMutex, BUF>;
pub type HostToken = Token<'static, TcpConnector, parking_lot::RawMutex, BUF>;

/// The initialized library.
pub struct Module {
    pub token: HostToken,
    /// The process that called `C_Initialize`: a forked child must call it
    /// again and never touches the parent's connections.
    pid: u32,
}

static STATE: RwLock<Option<Arc<Module>>> = RwLock::new(None);
static SLOTS: OnceLock<&'static [Slot]> = OnceLock::new();

fn slots() -> &'static [Slot] {
    SLOTS.get_or_init(|| {
        let v: Vec<Slot> = (0..MAX_SESSIONS).map(|_| Slot::new()).collect();
        Box::leak(v.into_boxed_slice())
    })
}

/// The library, if this process initialized it.
pub fn module() -> Result<Arc<Module>, Rv> {
    match &*STATE.read() {
        Some(m) if m.pid == std::process::id() => Ok(Arc::clone(m)),
        _ => Err(ckr::CRYPTOKI_NOT_INITIALIZED),
    }
}

/// `C_Initialize` once the arguments are checked.
pub fn initialize() -> Result<(), Rv> {
    crate::logger::init();
    let mut state = STATE.write();
    if let Some(m) = state.as_ref() {
        if m.pid == std::process::id() {
            return Err(ckr::CRYPTOKI_ALREADY_INITIALIZED);
        }
        // A forked child: forget the parent's library without using it.
        log::info!("C_Initialize in a forked child: starting clean");
    }
    // Drop the parent's state (if any) before the slots are reused.
    *state = None;
    let config = Config::from_env(|k| std::env::var(k).ok()).map_err(|e| {
        log::error!("hsmlink configuration: {e}");
        ckr::GENERAL_ERROR
    })?;
    let connector = TcpConnector::new(&config.addr, config.timeouts).map_err(|e| {
        log::error!("hsmlink configuration: {}: {e}", config.addr_key);
        ckr::GENERAL_ERROR
    })?;
    let mut app = [0u8; 16];
    getrandom::fill(&mut app).map_err(|_| ckr::GENERAL_ERROR)?;
    let token = Token::new(
        connector,
        app,
        slots(),
        LoginConfig {
            user: config.user.as_deref(),
            special_pin: config.special_pin,
        },
    )
    .inspect_err(|_| log::error!("hsmlink configuration: user name too long"))?;
    *state = Some(Arc::new(Module {
        token,
        pid: std::process::id(),
    }));
    Ok(())
}

/// `C_Finalize`: every session is closed.
pub fn finalize() -> Result<(), Rv> {
    let mut state = STATE.write();
    match state.take() {
        Some(m) if m.pid == std::process::id() => {
            m.token.close_all_sessions();
            Ok(())
        }
        _ => Err(ckr::CRYPTOKI_NOT_INITIALIZED),
    }
}

/// The module's settings, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: String,
    /// Which variable gave `addr` (for error messages).
    pub addr_key: &'static str,
    pub user: Option<String>,
    pub special_pin: bool,
    pub timeouts: Timeouts,
}

/// A bad setting: which key and why. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl Config {
    /// Read the settings; each has the vendor's name as an alias so existing
    /// deployments move over unchanged (ours wins when both are set).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let pick = |ours: &'static str, theirs: &'static str| {
            get(ours)
                .map(|v| (ours, v))
                .or_else(|| get(theirs).map(|v| (theirs, v)))
        };
        let (addr_key, addr) = pick("HSMLINK_ADDR", "DFENCE_PKCS11_IP")
            .unwrap_or(("HSMLINK_ADDR", DEFAULT_ADDR.into()));
        if addr.trim().is_empty() {
            return Err(ConfigError {
                key: addr_key,
                problem: "empty; want host:port".into(),
            });
        }
        let user = pick("HSMLINK_USER", "DFENCE_PKCS11_USER").map(|(_, v)| v);
        if let Some(u) = &user {
            if u.is_empty() || u.len() > hsmlink_core::token::MAX_USER {
                return Err(ConfigError {
                    key: "HSMLINK_USER",
                    problem: format!(
                        "user name must be 1 to {} bytes",
                        hsmlink_core::token::MAX_USER
                    ),
                });
            }
        }
        let special_pin = match pick("HSMLINK_SPECIAL_PIN", "DFENCE_PKCS11_SPECIAL_PWD") {
            None => false,
            Some((key, v)) => parse_bool(&v).ok_or_else(|| ConfigError {
                key,
                problem: format!("{v:?} is not a boolean (use 1/0, true/false, yes/no)"),
            })?,
        };
        let mut timeouts = Timeouts::default();
        if let Some(v) = get("HSMLINK_CONNECT_TIMEOUT_MS") {
            timeouts.connect = parse_ms("HSMLINK_CONNECT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("HSMLINK_TIMEOUT_MS") {
            timeouts.io = parse_ms("HSMLINK_TIMEOUT_MS", &v)?;
        }
        Ok(Config {
            addr,
            addr_key,
            user,
            special_pin,
            timeouts,
        })
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn parse_ms(key: &'static str, v: &str) -> Result<Duration, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(ms) if ms > 0 && ms <= 3_600_000 => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError {
            key,
            problem: format!("{v:?} is not a number of milliseconds in 1..=3600000"),
        }),
    }
}

// ----- attribute layout -----------------------------------------------------

/// One attribute in canonical form: borrowed when no conversion was needed.
pub type Canonical<'a> = (u64, Cow<'a, [u8]>);

const ULONG: usize = std::mem::size_of::<CK_ULONG>();

/// Turn attributes given in the host's layout (type, value bytes) into the
/// core's canonical form. `CK_ULONG` values must be exactly
/// `sizeof(CK_ULONG)` and `CK_BBOOL` one byte (`CKR_ATTRIBUTE_VALUE_INVALID`).
pub fn canonical_template<'a>(raw: &[(u64, &'a [u8])]) -> Result<Vec<Canonical<'a>>, Rv> {
    raw.iter()
        .map(|&(ty, v)| {
            let value = match kind(ty) {
                Kind::Ulong => Cow::Owned(ulong_from_host(v)?.to_le_bytes().to_vec()),
                Kind::UlongArray => {
                    if v.len() % ULONG != 0 {
                        return Err(ckr::ATTRIBUTE_VALUE_INVALID);
                    }
                    let mut out = Vec::with_capacity(v.len() / ULONG * 8);
                    for c in v.chunks_exact(ULONG) {
                        out.extend_from_slice(&ulong_from_host(c)?.to_le_bytes());
                    }
                    Cow::Owned(out)
                }
                Kind::Bool if v.len() != 1 => return Err(ckr::ATTRIBUTE_VALUE_INVALID),
                Kind::AttributeArray => return Err(ckr::ATTRIBUTE_TYPE_INVALID),
                _ => Cow::Borrowed(v),
            };
            Ok((ty, value))
        })
        .collect()
}

/// Borrow a converted template as the core wants it.
pub fn as_attributes<'a>(t: &'a [(u64, Cow<'_, [u8]>)]) -> Vec<Attribute<'a>> {
    t.iter()
        .map(|(ty, v)| Attribute {
            ty: *ty,
            value: v.as_ref(),
        })
        .collect()
}

fn ulong_from_host(v: &[u8]) -> Result<u64, Rv> {
    let b: [u8; ULONG] = v.try_into().map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?;
    Ok(CK_ULONG::from_ne_bytes(b) as u64)
}

/// A canonical value in the host's layout.
pub fn host_value(ty: u64, v: &[u8]) -> Cow<'_, [u8]> {
    match kind(ty) {
        Kind::Ulong => match <[u8; 8]>::try_from(v) {
            Ok(b) => Cow::Owned((u64::from_le_bytes(b) as CK_ULONG).to_ne_bytes().to_vec()),
            Err(_) => Cow::Borrowed(v),
        },
        Kind::UlongArray => Cow::Owned(
            v.chunks_exact(8)
                .flat_map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    (u64::from_le_bytes(b) as CK_ULONG).to_ne_bytes()
                })
                .collect(),
        ),
        _ => Cow::Borrowed(v),
    }
}

/// Blank-pad `s` into a fixed PKCS#11 text field.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmlink_core::ck::cka;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn config_defaults_aliases_and_errors() {
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert!(!c.special_pin);
        let c = Config::from_env(env(&[
            ("DFENCE_PKCS11_IP", "10.0.0.1:4433"),
            ("DFENCE_PKCS11_USER", "op"),
            ("DFENCE_PKCS11_SPECIAL_PWD", "1"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "10.0.0.1:4433");
        assert_eq!(c.user.as_deref(), Some("op"));
        assert!(c.special_pin);
        let c =
            Config::from_env(env(&[("HSMLINK_ADDR", "a:1"), ("DFENCE_PKCS11_IP", "b:2")])).unwrap();
        assert_eq!(c.addr, "a:1", "our variable wins over the vendor alias");
        let e = Config::from_env(env(&[("HSMLINK_SPECIAL_PIN", "maybe")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_SPECIAL_PIN");
        let e = Config::from_env(env(&[("HSMLINK_TIMEOUT_MS", "-3")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_TIMEOUT_MS");
    }

    #[test]
    fn host_layout_round_trip() {
        let class = (3 as CK_ULONG).to_ne_bytes();
        let t = canonical_template(&[(cka::CLASS, &class), (cka::TOKEN, &[1]), (cka::LABEL, b"x")])
            .unwrap();
        assert_eq!(t[0].1.as_ref(), &3u64.to_le_bytes());
        assert_eq!(host_value(cka::CLASS, &t[0].1).as_ref(), &class);
        assert_eq!(
            canonical_template(&[(cka::CLASS, &[1, 2])]).unwrap_err(),
            ckr::ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            canonical_template(&[(cka::TOKEN, &[1, 0])]).unwrap_err(),
            ckr::ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(padded::<32>("Dinamo HSM")[..11], *b"Dinamo HSM ");
    }
}
