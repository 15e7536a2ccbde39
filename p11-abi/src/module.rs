//! The library's global state and everything that needs no pointer: the
//! configuration, the token behind the C functions, conversions between the
//! host's attribute layout and the core's canonical one.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hsmlink_core::attr::{kind, Kind};
use hsmlink_core::ck::{ckr, Rv};
use hsmlink_core::token::{LoginConfig, SessionSlot, Token};
use hsmlink_core::wire::Attribute;
use hsmlink_transport_std::{
    all_loopback, Security, ServerAuth, TcpConnector, TcpLink, Timeouts, DEFAULT_ADDR,
};
use parking_lot::{Mutex, RwLock};

use crate::types::CK_ULONG;

/// The one slot of the profile.
pub const SLOT_ID: u64 = 1;
/// Most sessions open at once.
pub const MAX_SESSIONS: usize = 128;
/// Frame buffer per direction per session (at least
/// [`hsmlink_core::token::MIN_BUF`], checked at compile time). Every slot's
/// buffers (request, reply, and the output kept for an application whose
/// buffer was too small) are allocated (and written) at `C_Initialize`:
/// 128 sessions × 3 × 17 KiB = 6.5 MiB. Streams go in ~17 KiB pieces: 1 GiB of AES-CBC through
/// `C_EncryptUpdate` at ~600–650 MB/s (8 KiB pieces: ~410 MB/s; 33 KiB
/// buffers: ~700 MB/s for twice the memory).
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
    process: ProcessMark,
}

/// Which process (image) a [`Module`] belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ProcessMark {
    pid: u32,
    forks: u32,
}

/// Forks this process image has gone through, counted in the child by a
/// `pthread_atfork` handler (see [`note_fork`]).
static FORKS: AtomicU32 = AtomicU32::new(0);
/// Whether that handler is in place; if not, the process id is asked for
/// on every call instead (a system call).
static FORKS_WATCHED: AtomicBool = AtomicBool::new(false);

/// Called in the child after `fork()` (from the `pthread_atfork` handler).
pub fn note_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The fork handler has been registered.
pub fn forks_watched() {
    FORKS_WATCHED.store(true, Ordering::Relaxed);
}

impl ProcessMark {
    fn now() -> ProcessMark {
        ProcessMark {
            pid: std::process::id(),
            forks: FORKS.load(Ordering::Relaxed),
        }
    }

    /// Whether this is still the process that made the mark.
    fn is_current(&self) -> bool {
        if FORKS_WATCHED.load(Ordering::Relaxed) {
            self.forks == FORKS.load(Ordering::Relaxed)
        } else {
            self.pid == std::process::id()
        }
    }
}

static STATE: RwLock<Option<Arc<Module>>> = RwLock::new(None);
/// The session slots, made at the first `C_Initialize` and kept for the
/// library's life (a `Token` borrows them for `'static`). Given back when
/// the library is unloaded, if no `Module` uses them then
/// ([`slots_for_unload`]).
static SLOTS: Mutex<Option<(ProcessMark, &'static [Slot])>> = Mutex::new(None);
/// `Module`s alive (a call in progress may hold one after `C_Finalize`).
static LIVE_MODULES: AtomicUsize = AtomicUsize::new(0);
/// The first session handle of the next token: each `C_Initialize` goes on
/// from where the last `C_Finalize` left, so a handle is never reused in the
/// process (one kept from before names no session of the new token).
static NEXT_SESSION: AtomicU32 = AtomicU32::new(1);
/// The `C_Finalize` calls under way: the process id (high half) and their
/// number (low half). `C_Initialize` waits for them, so that a finalize
/// waiting for the calls under way is not overtaken; no lock is held
/// meanwhile, and a forked child's copy (its parent's id) is ignored.
static FINALIZING: AtomicU64 = AtomicU64::new(0);

/// Counts a `C_Finalize` of this process in [`FINALIZING`] until dropped.
struct Finalizing;

impl Finalizing {
    fn enter() -> Finalizing {
        let me = u64::from(std::process::id());
        let _ = FINALIZING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(if v >> 32 == me { v + 1 } else { (me << 32) | 1 })
        });
        Finalizing
    }

    /// Whether a `C_Finalize` of this process is under way.
    fn here() -> bool {
        let v = FINALIZING.load(Ordering::Acquire);
        v >> 32 == u64::from(std::process::id()) && v & 0xFFFF_FFFF != 0
    }
}

impl Drop for Finalizing {
    fn drop(&mut self) {
        let me = u64::from(std::process::id());
        let _ = FINALIZING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(if v >> 32 == me && v & 0xFFFF_FFFF != 0 {
                v - 1
            } else {
                v
            })
        });
    }
}

/// The session slots of this process. A forked child makes its own: the
/// parent's copies may hold locks taken by threads that do not exist in
/// the child (a call waiting for the HSM when the parent forked), and are
/// left alone (leaked).
fn slots() -> &'static [Slot] {
    let mut s = SLOTS.lock();
    match *s {
        Some((mark, slots)) if mark.is_current() => slots,
        _ => {
            let v: Vec<Slot> = (0..MAX_SESSIONS).map(|_| Slot::new()).collect();
            let slots: &'static [Slot] = Box::leak(v.into_boxed_slice());
            *s = Some((ProcessMark::now(), slots));
            slots
        }
    }
}

/// At unload: the slots, taken out for freeing, if nothing can use them
/// any more (no `Module` is alive: `C_Finalize` was called, or
/// `C_Initialize` never was). Otherwise they stay (and leak).
pub fn slots_for_unload() -> Option<&'static [Slot]> {
    let mut s = SLOTS.lock();
    if LIVE_MODULES.load(Ordering::Acquire) != 0 || STATE.read().is_some() {
        return None;
    }
    match s.take() {
        Some((mark, slots)) if mark.is_current() => Some(slots),
        _ => None,
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        LIVE_MODULES.fetch_sub(1, Ordering::Release);
    }
}

/// The library, if this process initialized it.
pub fn module() -> Result<Arc<Module>, Rv> {
    match &*STATE.read() {
        Some(m) if m.process.is_current() => Ok(Arc::clone(m)),
        _ => Err(ckr::CRYPTOKI_NOT_INITIALIZED),
    }
}

/// `C_Initialize` once the arguments are checked.
pub fn initialize() -> Result<(), Rv> {
    let mut state = loop {
        while Finalizing::here() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let state = STATE.write();
        if !Finalizing::here() {
            break state;
        }
    };
    if let Some(m) = state.as_ref() {
        if m.process.is_current() {
            return Err(ckr::CRYPTOKI_ALREADY_INITIALIZED);
        }
        // A forked child: forget the parent's library without using it.
        log::info!("C_Initialize in a forked child: starting clean");
    }
    // Drop the parent's state (if any) before the slots are reused.
    *state = None;
    let config = Config::from_env(|k| std::env::var(k).ok());
    crate::logger::init(
        config.as_ref().ok().and_then(|c| c.log.as_deref()),
        config.as_ref().ok().and_then(|c| c.log_file.as_deref()),
    );
    let config = config.map_err(|e| {
        log::error!("hsmlink configuration: {e}");
        ckr::GENERAL_ERROR
    })?;
    let connector =
        TcpConnector::with_security(&config.addr, config.timeouts, config.security.clone())
            .map_err(|e| {
                log::error!("hsmlink configuration: {}: {e}", config.addr_key);
                ckr::GENERAL_ERROR
            })?
            .with_hosts(&config.hosts)
            .map_err(|e| {
                log::error!("hsmlink configuration: {e}");
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
    .inspect_err(|_| log::error!("hsmlink configuration: user name too long"))?
    .with_first_session(NEXT_SESSION.load(Ordering::Acquire));
    LIVE_MODULES.fetch_add(1, Ordering::AcqRel);
    *state = Some(Arc::new(Module {
        token,
        process: ProcessMark::now(),
    }));
    Ok(())
}

/// `C_Finalize`: every session is closed.
pub fn finalize() -> Result<(), Rv> {
    let _finalizing = Finalizing::enter();
    let taken = STATE.write().take();
    match taken {
        Some(m) if m.process.is_current() => {
            // No call starts from now on (each finds the library
            // uninitialized); the calls under way hold `m` until they
            // return, each bounded by the I/O timeouts. Wait for them, so
            // that none is still inside the token when its sessions close
            // and the slots go to the next C_Initialize's token.
            while Arc::strong_count(&m) > 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
            m.token.close_all_sessions();
            NEXT_SESSION.store(m.token.next_session(), Ordering::Release);
            let exchanges = m.token.connector().exchanges();
            log::info!("exchanges with the HSM since C_Initialize: {exchanges}");
            // For benchmarks: round trips per operation, counted by the module.
            if let Some(path) = std::env::var_os("HSMLINK_STATS_FILE") {
                use std::io::Write;
                let line = format!("exchanges {exchanges}\n");
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    log::warn!("HSMLINK_STATS_FILE: {e}");
                }
            }
            Ok(())
        }
        _ => Err(ckr::CRYPTOKI_NOT_INITIALIZED),
    }
}

/// One setting: its name in the config file and in the environment (ours,
/// then the vendor's alias).
struct Key {
    file: &'static str,
    env: &'static str,
    alias: Option<&'static str>,
}

const KEYS: &[Key] = &[
    Key {
        file: "addr",
        env: "HSMLINK_ADDR",
        alias: Some("DFENCE_PKCS11_IP"),
    },
    Key {
        file: "user",
        env: "HSMLINK_USER",
        alias: Some("DFENCE_PKCS11_USER"),
    },
    Key {
        file: "special_pin",
        env: "HSMLINK_SPECIAL_PIN",
        alias: Some("DFENCE_PKCS11_SPECIAL_PWD"),
    },
    Key {
        file: "connect_timeout_ms",
        env: "HSMLINK_CONNECT_TIMEOUT_MS",
        alias: None,
    },
    Key {
        file: "timeout_ms",
        env: "HSMLINK_TIMEOUT_MS",
        alias: None,
    },
    Key {
        file: "keepalive_s",
        env: "HSMLINK_KEEPALIVE_S",
        alias: None,
    },
    Key {
        file: "retry_ms",
        env: "HSMLINK_RETRY_MS",
        alias: None,
    },
    Key {
        file: "idle_timeout_ms",
        env: "HSMLINK_IDLE_TIMEOUT_MS",
        alias: None,
    },
    Key {
        file: "spin_us",
        env: "HSMLINK_SPIN_US",
        alias: None,
    },
    Key {
        file: "tls",
        env: "HSMLINK_TLS",
        alias: None,
    },
    Key {
        file: "tls_pin",
        env: "HSMLINK_TLS_PIN",
        alias: None,
    },
    Key {
        file: "tls_ca",
        env: "HSMLINK_TLS_CA",
        alias: None,
    },
    Key {
        file: "log",
        env: "HSMLINK_LOG",
        alias: None,
    },
    Key {
        file: "log_file",
        env: "HSMLINK_LOG_FILE",
        alias: None,
    },
];

/// The settings file read when `HSMLINK_CONFIG` is not set, if it exists
/// (where the Debian package puts it). `HSMLINK_CONFIG=` (empty) reads none.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/hsmlink/hsmlink.toml";

/// The module's settings: from the TOML file named by `HSMLINK_CONFIG` (or
/// [`DEFAULT_CONFIG_FILE`]), each overridden by its environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: String,
    /// Which setting gave `addr` (for error messages).
    pub addr_key: &'static str,
    pub user: Option<String>,
    pub special_pin: bool,
    pub timeouts: Timeouts,
    pub security: Security,
    /// TLS per host a special PIN may name (`[hosts]` in the file).
    pub hosts: Vec<(String, ServerAuth)>,
    pub log: Option<String>,
    pub log_file: Option<String>,
}

/// A bad setting: which key and why. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The settings file: (file key -> text value), and the `[hosts]` table.
type FileSettings = (Vec<(String, String)>, Vec<(String, ServerAuth)>);

/// One `[hosts."host:port"]` table: `tls_pin` or `tls_ca`.
fn read_host(path: &str, host: &str, v: &toml::Value) -> Result<ServerAuth, ConfigError> {
    let key = format!("{path}: hosts.{host:?}");
    let t = v
        .as_table()
        .ok_or_else(|| bad(&key, "want a table with tls_pin or tls_ca"))?;
    if let Some(k) = t.keys().find(|k| *k != "tls_pin" && *k != "tls_ca") {
        return Err(bad(
            format!("{key}.{k}"),
            "unknown setting (tls_pin, tls_ca)",
        ));
    }
    let text = |k: &str| -> Result<Option<String>, ConfigError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{key}.{k}"), "want a string")),
        }
    };
    match (text("tls_pin")?, text("tls_ca")?) {
        (Some(pin), None) => Ok(ServerAuth::Pin(
            hsmlink_transport_std::tls::parse_pin(&pin)
                .map_err(|e| bad(format!("{key}.tls_pin"), e.0))?,
        )),
        (None, Some(ca)) => Ok(ServerAuth::CaFile(ca)),
        _ => Err(bad(key, "give tls_pin or tls_ca (one of them)")),
    }
}

/// Read the settings file into (file key -> text value) and its hosts.
fn read_file(path: &str) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("HSMLINK_CONFIG", format!("cannot read {path:?}: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| bad("HSMLINK_CONFIG", format!("{path:?} is not valid TOML: {e}")))?;
    let mut out = Vec::new();
    let mut hosts = Vec::new();
    for (k, v) in table {
        if k == "hosts" {
            let t = v
                .as_table()
                .ok_or_else(|| bad(format!("{path}: hosts"), "want a table of hosts"))?;
            for (host, h) in t {
                hosts.push((host.clone(), read_host(path, host, h)?));
            }
            continue;
        }
        if !KEYS.iter().any(|key| key.file == k) {
            return Err(bad(format!("{path}: {k}"), "unknown setting"));
        }
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) if k == "addr" => a
                .iter()
                .map(|e| e.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad(
                        format!("{path}: {k}"),
                        "want a list of \"host:port\" strings",
                    )
                })?
                .join(","),
            other => {
                return Err(bad(
                    format!("{path}: {k}"),
                    format!("unexpected {} value", other.type_str()),
                ))
            }
        };
        out.push((k, text));
    }
    Ok((out, hosts))
}

impl Config {
    /// Read the settings (`get` reads the environment).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Unit tests never see the machine's installed file.
        let default_file = if cfg!(test) {
            "/nonexistent/hsmlink-unit-test.toml"
        } else {
            DEFAULT_CONFIG_FILE
        };
        Config::from_env_or_file(get, default_file)
    }

    /// [`Config::from_env`] with `default_file` read when `HSMLINK_CONFIG`
    /// is unset (and only if it exists).
    fn from_env_or_file(
        get: impl Fn(&str) -> Option<String>,
        default_file: &str,
    ) -> Result<Config, ConfigError> {
        let (file, hosts) = match get("HSMLINK_CONFIG") {
            Some(path) if !path.is_empty() => read_file(&path)?,
            Some(_) => Default::default(),
            None if std::path::Path::new(default_file).exists() => read_file(default_file)?,
            None => Default::default(),
        };
        // (name to report, value) of a setting, environment first.
        let value = |file_key: &str| -> Option<(String, String)> {
            let key = KEYS.iter().find(|k| k.file == file_key)?;
            if let Some(v) = get(key.env) {
                return Some((key.env.to_string(), v));
            }
            if let Some(v) = key.alias.and_then(&get) {
                return Some((key.alias.unwrap_or(key.env).to_string(), v));
            }
            file.iter()
                .find(|(k, _)| k == file_key)
                .map(|(k, v)| (format!("config file: {k}"), v.clone()))
        };
        let (addr_key, addr) = match value("addr") {
            Some((k, v)) => (
                if k == "DFENCE_PKCS11_IP" {
                    "DFENCE_PKCS11_IP"
                } else {
                    "HSMLINK_ADDR"
                },
                v,
            ),
            None => ("HSMLINK_ADDR", DEFAULT_ADDR.to_string()),
        };
        if addr.trim().is_empty() {
            return Err(bad(addr_key, "empty; want host:port"));
        }
        let user = value("user").map(|(_, v)| v);
        if let Some(u) = &user {
            if u.is_empty() || u.len() > hsmlink_core::token::MAX_USER {
                return Err(bad(
                    "HSMLINK_USER",
                    format!(
                        "user name must be 1 to {} bytes",
                        hsmlink_core::token::MAX_USER
                    ),
                ));
            }
        }
        let special_pin = match value("special_pin") {
            None => false,
            Some((key, v)) => parse_bool(&v).ok_or_else(|| {
                bad(
                    key,
                    format!("{v:?} is not a boolean (use 1/0, true/false, yes/no)"),
                )
            })?,
        };
        let mut timeouts = Timeouts::default();
        let ms = |k: &str, max: u64| -> Result<Option<Duration>, ConfigError> {
            value(k).map(|(key, v)| parse_ms(key, &v, max)).transpose()
        };
        if let Some(d) = ms("connect_timeout_ms", 600_000)? {
            timeouts.connect = d;
        }
        if let Some(d) = ms("timeout_ms", 3_600_000)? {
            timeouts.io = d;
        }
        if let Some(d) = ms("retry_ms", 3_600_000)? {
            timeouts.retry = d;
        }
        if let Some(d) = ms("idle_timeout_ms", 86_400_000)? {
            timeouts.idle = d;
        }
        if let Some((key, v)) = value("spin_us") {
            timeouts.spin = Duration::from_micros(parse_in(key, &v, 0, 1000)?);
        }
        if let Some((key, v)) = value("keepalive_s") {
            timeouts.keepalive = Duration::from_secs(parse_in(key, &v, 1, 86_400)?);
        }
        let tls = value("tls").map(|(k, v)| (k, v.to_ascii_lowercase()));
        let auth = match (value("tls_pin"), value("tls_ca")) {
            (Some(_), Some(_)) => {
                return Err(bad("HSMLINK_TLS_PIN", "give a pin or a CA file, not both"))
            }
            (Some((key, pin)), None) => Some(ServerAuth::Pin(
                hsmlink_transport_std::tls::parse_pin(&pin).map_err(|e| bad(key, e.0))?,
            )),
            (None, Some((_, ca))) => Some(ServerAuth::CaFile(ca)),
            (None, None) => None,
        };
        let want_tls = match tls.as_ref().map(|(k, v)| (k.clone(), v.as_str())) {
            None | Some((_, "auto")) => !all_loopback(&addr) || auth.is_some(),
            Some((_, "on" | "1" | "true" | "yes")) => true,
            Some((_, "off" | "0" | "false" | "no")) => false,
            Some((key, v)) => return Err(bad(key, format!("{v:?}: want auto, on or off"))),
        };
        let security = match (want_tls, auth) {
            (false, _) => Security::Plain,
            (true, Some(auth)) => Security::Tls(auth),
            (true, None) => {
                return Err(bad(
                    "HSMLINK_TLS_PIN",
                    format!(
                        "TLS is on for {addr} but the server cannot be verified: set \
                         HSMLINK_TLS_PIN to the fingerprint the server printed, or \
                         HSMLINK_TLS_CA to a CA file (plain TCP, HSMLINK_TLS=off, never carries the password off this machine)"
                    ),
                ))
            }
        };
        Ok(Config {
            addr,
            addr_key,
            user,
            special_pin,
            timeouts,
            security,
            hosts,
            log: value("log").map(|(_, v)| v),
            log_file: value("log_file").map(|(_, v)| v),
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

/// A whole number in 1..=max, as milliseconds.
fn parse_ms(key: String, v: &str, max: u64) -> Result<Duration, ConfigError> {
    parse_in(key, v, 1, max).map(Duration::from_millis)
}

fn parse_in(key: String, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            key,
            format!("{v:?} is not a whole number in {min}..={max}"),
        )),
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
            ("HSMLINK_TLS", "off"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "10.0.0.1:4433");
        assert_eq!(c.user.as_deref(), Some("op"));
        assert!(c.special_pin);
        let c = Config::from_env(env(&[
            ("HSMLINK_ADDR", "a:1"),
            ("DFENCE_PKCS11_IP", "b:2"),
            ("HSMLINK_TLS", "off"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "a:1", "our variable wins over the vendor alias");
        let e = Config::from_env(env(&[("HSMLINK_SPECIAL_PIN", "maybe")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_SPECIAL_PIN");
        let e = Config::from_env(env(&[("HSMLINK_TIMEOUT_MS", "-3")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_TIMEOUT_MS");
        // Spinning: 50 µs unless set; 0 turns it off; at most 1,000 µs.
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!(c.timeouts.spin, Duration::from_micros(50));
        let c = Config::from_env(env(&[("HSMLINK_SPIN_US", "0")])).unwrap();
        assert_eq!(c.timeouts.spin, Duration::ZERO);
        let c = Config::from_env(env(&[("HSMLINK_SPIN_US", "200")])).unwrap();
        assert_eq!(c.timeouts.spin, Duration::from_micros(200));
        let e = Config::from_env(env(&[("HSMLINK_SPIN_US", "5000")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_SPIN_US");
    }

    #[test]
    fn tls_is_on_by_default_off_loopback_and_needs_a_way_to_verify() {
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!(
            c.security,
            Security::Plain,
            "loopback defaults to plain TCP"
        );
        let e = Config::from_env(env(&[("HSMLINK_ADDR", "hsm.example:4433")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_TLS_PIN");
        let pin = "AB".repeat(32);
        let c = Config::from_env(env(&[
            ("HSMLINK_ADDR", "hsm.example:4433"),
            ("HSMLINK_TLS_PIN", &pin),
        ]))
        .unwrap();
        assert_eq!(c.security, Security::Tls(ServerAuth::Pin([0xAB; 32])));
        let c = Config::from_env(env(&[
            ("HSMLINK_ADDR", "hsm.example:4433"),
            ("HSMLINK_TLS", "off"),
        ]))
        .unwrap();
        assert_eq!(c.security, Security::Plain, "plain only when asked for");
        let e = Config::from_env(env(&[("HSMLINK_TLS", "sometimes")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_TLS");
    }

    /// The packaged configuration file documents every setting there is.
    #[test]
    fn the_packaged_file_names_every_setting() {
        let packaged = include_str!("../../packaging/hsmlink.toml");
        for k in KEYS {
            assert!(
                packaged.contains(&format!("{} =", k.file)),
                "packaging/hsmlink.toml lacks {}",
                k.file
            );
            assert!(
                packaged.contains(k.env),
                "packaging/hsmlink.toml does not name {}",
                k.env
            );
        }
    }

    #[test]
    fn config_file_with_environment_winning() {
        let dir = std::env::temp_dir().join(format!("hsmlink-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hsmlink.toml");
        std::fs::write(
            &path,
            "addr = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nuser = \"filer\"\ntimeout_ms = 500\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::from_env(env(&[("HSMLINK_CONFIG", p), ("HSMLINK_USER", "envy")])).unwrap();
        assert_eq!(c.addr, "127.0.0.1:1,127.0.0.1:2");
        assert_eq!(c.user.as_deref(), Some("envy"));
        assert_eq!(c.timeouts.io, Duration::from_millis(500));
        std::fs::write(&path, "adress = \"x:1\"\n").unwrap();
        let e = Config::from_env(env(&[("HSMLINK_CONFIG", p)])).unwrap_err();
        assert!(e.key.ends_with("adress"), "{e}");
        std::fs::write(&path, "timeout_ms = \"soon\"\n").unwrap();
        let e = Config::from_env(env(&[("HSMLINK_CONFIG", p)])).unwrap_err();
        assert!(e.key.contains("timeout_ms"), "{e}");
        let e = Config::from_env(env(&[("HSMLINK_CONFIG", "/nonexistent/x.toml")])).unwrap_err();
        assert_eq!(e.key, "HSMLINK_CONFIG");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn special_pin_tls_hosts_table_in_the_config_file() {
        let dir = std::env::temp_dir().join(format!("hsmlink-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hsmlink.toml");
        let p = path.to_str().unwrap();
        let pin = "AB".repeat(32);
        std::fs::write(
            &path,
            format!(
                "addr = \"127.0.0.1:1\"\n[hosts.\"hsm-b.example:4433\"]\ntls_pin = \"{pin}\"\n\
                 [hosts.\"10.0.0.9\"]\ntls_ca = \"/etc/ca.pem\"\n"
            ),
        )
        .unwrap();
        let c = Config::from_env(env(&[("HSMLINK_CONFIG", p)])).unwrap();
        assert_eq!(c.addr, "127.0.0.1:1");
        assert_eq!(
            c.hosts,
            vec![
                (
                    "10.0.0.9".to_string(),
                    ServerAuth::CaFile("/etc/ca.pem".into())
                ),
                (
                    "hsm-b.example:4433".to_string(),
                    ServerAuth::Pin([0xAB; 32])
                ),
            ]
        );
        for (bad_table, key) in [
            ("[hosts.\"h\"]\n", "hosts.\"h\""),
            ("[hosts.\"h\"]\ntls_pin = \"xyz\"\n", "tls_pin"),
            ("[hosts.\"h\"]\ntls_pn = \"x\"\n", "tls_pn"),
            (
                &format!("[hosts.\"h\"]\ntls_pin = \"{pin}\"\ntls_ca = \"c\"\n"),
                "hosts",
            ),
            ("hosts = 3\n", "hosts"),
        ] {
            std::fs::write(&path, bad_table).unwrap();
            let e = Config::from_env(env(&[("HSMLINK_CONFIG", p)])).unwrap_err();
            assert!(e.key.contains(key), "{bad_table:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_config_file_when_hsmlink_config_is_unset() {
        let dir = std::env::temp_dir().join(format!("hsmlink-default-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hsmlink.toml");
        std::fs::write(&path, "addr = \"127.0.0.1:7\"\nuser = \"filer\"\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::from_env_or_file(env(&[]), p).unwrap();
        assert_eq!(
            (c.addr.as_str(), c.user.as_deref()),
            ("127.0.0.1:7", Some("filer"))
        );
        let c = Config::from_env_or_file(env(&[("HSMLINK_USER", "envy")]), p).unwrap();
        assert_eq!(c.user.as_deref(), Some("envy"), "the environment wins");
        let c = Config::from_env_or_file(env(&[("HSMLINK_CONFIG", "")]), p).unwrap();
        assert_eq!(
            (c.addr.as_str(), c.user),
            (DEFAULT_ADDR, None),
            "empty: no file"
        );
        let other = dir.join("other.toml");
        std::fs::write(&other, "user = \"other\"\n").unwrap();
        let named = env(&[("HSMLINK_CONFIG", other.to_str().unwrap())]);
        let c = Config::from_env_or_file(named, p).unwrap();
        assert_eq!(
            c.user.as_deref(),
            Some("other"),
            "HSMLINK_CONFIG replaces it"
        );
        let c = Config::from_env_or_file(env(&[]), "/nonexistent/hsmlink.toml").unwrap();
        assert_eq!(
            (c.addr.as_str(), c.user),
            (DEFAULT_ADDR, None),
            "missing: defaults"
        );
        std::fs::write(&path, "adress = \"x:1\"\n").unwrap();
        let e = Config::from_env_or_file(env(&[]), p).unwrap_err();
        assert!(
            e.key.ends_with("adress"),
            "a bad default file is an error: {e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
