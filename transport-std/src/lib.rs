//! The core's [`Link`] over `std::net::TcpStream`, optionally in TLS 1.3.
//!
//! One TCP connection per PKCS#11 session; connect, read and write are all
//! bounded by timeouts; `TCP_NODELAY` and TCP keepalive are set. Up to
//! [`MAX_ENDPOINTS`] HSMs: sessions are spread over the healthy ones (round
//! robin); an endpoint that fails is marked down and retried after a
//! back-off that doubles up to a limit, while new sessions go elsewhere.
#![forbid(unsafe_code)]

pub mod spin;
pub mod tls;

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use tls::ServerAuth;

use hsmlink_core::link::{Connector, Link, LinkError};
use hsmlink_core::wire::{frame_len, HEADER_LEN};

/// The default HSM address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4433";
/// Bytes of the read buffer of a link (a whole reply of the usual size).
const READ_BUF: usize = 32 * 1024;
/// Most endpoints in one configuration.
pub const MAX_ENDPOINTS: usize = 16;
/// How long a call looks for the HSM's answer before it sleeps, when no
/// other thread of the process is busy with the HSM (see [`spin`]): the
/// default of [`Timeouts::spin`].
pub const SPIN: Duration = Duration::from_micros(50);

/// The module's threads, as parties that may spin (see [`spin`]).
static THREADS: spin::Activity = spin::Activity::new();

/// This thread's party number in [`THREADS`] (from 1).
fn thread_party() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ME.with(|me| *me)
}

/// Longest wait for the HSM to finish a session when it is closed.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Timeouts of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for one TCP connect (and TLS handshake).
    pub connect: Duration,
    /// Longest wait for any read or write; an HSM answer slower than this
    /// fails the call with `CKR_DEVICE_ERROR`.
    pub io: Duration,
    /// TCP keepalive idle time (probes every third of it after that).
    pub keepalive: Duration,
    /// First back-off after an endpoint fails; doubles up to 32 times it.
    pub retry: Duration,
    /// A connection unused for this long is checked (a `Ping` bounded by
    /// `connect`) before its next request: a firewall that dropped it
    /// silently costs a short probe and a reconnection, not a hang.
    pub idle: Duration,
    /// How long a call looks for the answer without sleeping, while it is
    /// the process's only busy call (see [`spin`]; zero: never).
    pub spin: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            retry: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            spin: SPIN,
        }
    }
}

/// Whether links use TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP (asked for explicitly, or loopback by default).
    Plain,
    /// TLS 1.3, the server authenticated as given.
    Tls(ServerAuth),
}

/// Health of one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
}

/// Makes links to one of several HSM endpoints.
pub struct TcpConnector {
    endpoints: Vec<String>,
    timeouts: Timeouts,
    next: AtomicUsize,
    health: Mutex<Vec<Health>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Per-host TLS for hosts named by a special PIN (`user:password@host`):
    /// (`host:port`, lower case, and how that server is verified).
    hosts: Vec<(String, Arc<rustls::ClientConfig>)>,
    /// Request/reply exchanges made by every link of this connector.
    exchanges: Arc<AtomicU64>,
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnector")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Whether every endpoint of `list` names a loopback address (`localhost`,
/// 127.0.0.0/8, ::1): then plain TCP is the default.
pub fn all_loopback(list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|e| {
            let host = match e.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(""),
                None => e.rsplit_once(':').map(|(h, _)| h).unwrap_or(e),
            };
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
}

/// A bad endpoint list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TcpConnector {
    /// `list` is `host:port[,host:port...]` (at most [`MAX_ENDPOINTS`]); a
    /// missing port means 4433.
    pub fn new(list: &str, timeouts: Timeouts) -> Result<Self, ConfigError> {
        Self::with_security(list, timeouts, Security::Plain)
    }

    /// Like [`TcpConnector::new`], with TLS when `security` says so.
    pub fn with_security(
        list: &str,
        timeouts: Timeouts,
        security: Security,
    ) -> Result<Self, ConfigError> {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(with_default_port)
            .collect();
        if endpoints.is_empty() {
            return Err(ConfigError("no HSM address given".into()));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(ConfigError(format!(
                "{} HSM addresses given; at most {MAX_ENDPOINTS}",
                endpoints.len()
            )));
        }
        for e in &endpoints {
            if e.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError(format!(
                    "bad HSM address {e:?}: want host:port"
                )));
            }
        }
        let tls = match &security {
            Security::Plain => None,
            Security::Tls(auth) => Some(tls::client_config(auth)?),
        };
        Ok(TcpConnector {
            health: Mutex::new(vec![Health::default(); endpoints.len()]),
            endpoints,
            timeouts,
            next: AtomicUsize::new(0),
            tls,
            hosts: Vec::new(),
            exchanges: Arc::new(AtomicU64::new(0)),
        })
    }

    /// TLS settings per host, for the hosts a special PIN may name
    /// (`host[:port]`, the port 4433 by default): such a host is dialled
    /// with TLS verified by its own pin or CA file.
    pub fn with_hosts(mut self, hosts: &[(String, ServerAuth)]) -> Result<Self, ConfigError> {
        for (host, auth) in hosts {
            let endpoint = with_default_port(host.trim()).to_ascii_lowercase();
            if endpoint
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError(format!(
                    "bad host {host:?} in [hosts]: want host[:port]"
                )));
            }
            let config = tls::client_config(auth)
                .map_err(|e| ConfigError(format!("[hosts.{host:?}]: {e}")))?;
            self.hosts.push((endpoint, config));
        }
        Ok(self)
    }

    /// How a host named by a special PIN is dialled: `Ok(None)` plain,
    /// `Ok(Some(tls))` with TLS, `Err` not at all. Security is decided per
    /// host: its own `[hosts]` entry; else, for one of the configured
    /// endpoints, their setting; else, for a loopback host, the global
    /// setting; else (another machine) TLS verified by the global pin or
    /// CA, or, with none configured, refused before any byte is sent (the
    /// password would travel to an unverified peer, maybe in clear).
    fn security_for(&self, endpoint: &str) -> Result<Option<Arc<rustls::ClientConfig>>, LinkError> {
        let key = endpoint.to_ascii_lowercase();
        if let Some((_, config)) = self.hosts.iter().find(|(h, _)| *h == key) {
            return Ok(Some(config.clone()));
        }
        if self
            .endpoints
            .iter()
            .any(|e| e.eq_ignore_ascii_case(endpoint))
            || all_loopback(endpoint)
        {
            return Ok(self.tls.clone());
        }
        match &self.tls {
            Some(config) => Ok(Some(config.clone())),
            None => {
                log::error!(
                    "login refused: the special PIN names {endpoint}, which is not this machine, \
                     and no TLS pin or CA is configured for it; the password was not sent. Add \
                     [hosts.\"{endpoint}\"] with tls_pin (or tls_ca) to the configuration file \
                     (HSMLINK_CONFIG), or set HSMLINK_TLS_PIN / HSMLINK_TLS_CA"
                );
                Err(LinkError::Connect)
            }
        }
    }

    /// Exchanges (round trips) made so far by all links of this connector.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// Whether links use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn mark(&self, index: usize, ok: bool) {
        let Ok(mut health) = self.health.lock() else {
            return;
        };
        let Some(h) = health.get_mut(index) else {
            return;
        };
        if ok {
            *h = Health::default();
        } else {
            h.failures = h.failures.saturating_add(1);
            let factor = 1u32 << h.failures.min(6).saturating_sub(1);
            h.down_until = Some(Instant::now() + self.timeouts.retry * factor);
        }
    }

    /// Endpoint indexes in the order to try: healthy ones round robin, then
    /// those still in back-off (so a call fails only when none answers).
    fn order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let health = self
            .health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| vec![Health::default(); n]);
        let (mut up, down): (Vec<usize>, Vec<usize>) =
            (0..n).map(|i| (start + i) % n).partition(|&i| {
                health
                    .get(i)
                    .and_then(|h| h.down_until)
                    .is_none_or(|t| t <= now)
            });
        up.extend(down);
        up
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn dial(
        &self,
        endpoint: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<TcpLink, LinkError> {
        let addrs: Vec<SocketAddr> = endpoint
            .to_socket_addrs()
            .map_err(|_| LinkError::Connect)?
            .collect();
        let mut last = LinkError::Connect;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeouts.connect) {
                Ok(stream) => {
                    let mut link = self.wrap(stream, endpoint, tls)?;
                    link.counter = Some(self.exchanges.clone());
                    link.liveness = Some(self.timeouts);
                    return Ok(link);
                }
                Err(e) => {
                    log::debug!("connect to {addr} failed: {e}");
                    last = LinkError::Connect;
                }
            }
        }
        Err(last)
    }

    fn wrap(
        &self,
        stream: TcpStream,
        endpoint: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<TcpLink, LinkError> {
        let t = self.timeouts;
        stream.set_nodelay(true).map_err(|_| LinkError::Io)?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(t.keepalive)
            .with_interval((t.keepalive / 3).max(Duration::from_secs(1)))
            .with_retries(3);
        // Keepalive is best effort: some platforms lack the knobs.
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let Some(config) = tls else {
            return TcpLink::new(stream, t.io);
        };
        // The handshake is bounded by the connect timeout.
        stream
            .set_read_timeout(Some(t.connect))
            .map_err(|_| LinkError::Io)?;
        stream
            .set_write_timeout(Some(t.connect))
            .map_err(|_| LinkError::Io)?;
        let host = match endpoint.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => endpoint
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(endpoint),
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| LinkError::Connect)?;
        let conn =
            rustls::ClientConnection::new(config.clone(), name).map_err(|_| LinkError::Connect)?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                log::error!("TLS handshake with {endpoint} failed: {e}");
                return Err(LinkError::Connect);
            }
        }
        tls.sock
            .set_read_timeout(Some(t.io))
            .map_err(|_| LinkError::Io)?;
        tls.sock
            .set_write_timeout(Some(t.io))
            .map_err(|_| LinkError::Io)?;
        Ok(TcpLink {
            stream: BufReader::with_capacity(READ_BUF, Stream::Tls(Box::new(tls))),
            counter: None,
            spins: spin::SpinHistory::default(),
            liveness: Some(t),
            last_used: Instant::now(),
        })
    }
}

fn with_default_port(s: &str) -> String {
    let has_port = if let Some(rest) = s.strip_prefix('[') {
        rest.contains("]:")
    } else {
        s.matches(':').count() == 1
    };
    if has_port {
        s.to_string()
    } else if s.contains(':') && !s.starts_with('[') {
        format!("[{s}]:4433")
    } else {
        format!("{s}:4433")
    }
}

impl Connector for TcpConnector {
    type Link = TcpLink;

    fn connect(&self, host: Option<&str>) -> Result<TcpLink, LinkError> {
        if let Some(h) = host {
            let endpoint = with_default_port(h);
            let tls = self.security_for(&endpoint)?;
            return self.dial(&endpoint, tls.as_ref());
        }
        let mut last = LinkError::Connect;
        for i in self.order() {
            let Some(endpoint) = self.endpoints.get(i) else {
                continue;
            };
            match self.dial(endpoint, self.tls.as_ref()) {
                Ok(link) => {
                    self.mark(i, true);
                    return Ok(link);
                }
                Err(e) => {
                    log::warn!("HSM {endpoint} unreachable; trying the next one");
                    self.mark(i, false);
                    last = e;
                }
            }
        }
        Err(last)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// One connection to the HSM.
pub struct TcpLink {
    /// Reads are buffered: a reply's header and body usually arrive in one
    /// segment, read with one system call.
    stream: BufReader<Stream>,
    counter: Option<Arc<AtomicU64>>,
    /// The timeouts, when idle connections are checked before use.
    liveness: Option<Timeouts>,
    last_used: Instant,
    /// How looking for replies without sleeping went on this link.
    spins: spin::SpinHistory,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.stream.get_ref() {
            Stream::Plain(_) => "TcpLink(plain)",
            Stream::Tls(_) => "TcpLink(tls)",
        })
    }
}

impl Stream {
    /// The TCP socket beneath.
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl TcpLink {
    /// Send one request frame (counted).
    fn write_request(&mut self, request: &[u8]) -> Result<(), LinkError> {
        if let Some(c) = &self.counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let w = self.stream.get_mut();
        w.write_all(request).map_err(io_error)?;
        w.flush().map_err(io_error)
    }

    /// The TCP socket beneath (plain or TLS).
    fn socket(&self) -> &TcpStream {
        self.stream.get_ref().socket()
    }

    /// Wrap a connected plain stream: sets `TCP_NODELAY` and the I/O timeout.
    pub fn new(stream: TcpStream, io_timeout: Duration) -> Result<Self, LinkError> {
        stream.set_nodelay(true).map_err(|_| LinkError::Io)?;
        stream
            .set_read_timeout(Some(io_timeout))
            .map_err(|_| LinkError::Io)?;
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(|_| LinkError::Io)?;
        Ok(TcpLink {
            stream: BufReader::with_capacity(READ_BUF, Stream::Plain(stream)),
            counter: None,
            spins: spin::SpinHistory::default(),
            liveness: None,
            last_used: Instant::now(),
        })
    }
}

fn io_error(e: std::io::Error) -> LinkError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            log::error!("the HSM did not answer in time");
            LinkError::Timeout
        }
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
            log::warn!(
                "the HSM closed the connection ({e}); if it is not on this machine and TLS \
                 is off, it refuses plain TCP: set HSMLINK_TLS_PIN (or HSMLINK_TLS_CA)"
            );
            LinkError::Io
        }
        _ => {
            log::warn!("connection to the HSM failed: {e}");
            LinkError::Io
        }
    }
}

impl Link for TcpLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        self.write_request(request)?;
        if !self.stream.buffer().is_empty() {
            self.last_used = Instant::now();
            return self.recv(reply);
        }
        // Not `self.socket()`: `self.spins` is borrowed mutably beside it.
        let socket = self.stream.get_ref().socket();
        let spin = self.liveness.map_or(SPIN, |t| t.spin);
        let wait = self
            .spins
            .await_readable(socket, spin, &THREADS, thread_party());
        self.last_used = wait.started();
        let n = self.recv(reply)?;
        self.spins.done(wait, spin);
        Ok(n)
    }

    fn can_pipeline(&self) -> bool {
        true
    }

    /// TLS (always with a verified server: a pin or a CA), or plain TCP
    /// whose peer is a loopback address (resolved, so a name or a setting
    /// cannot make another machine look local).
    fn may_carry_password(&self) -> bool {
        let socket = match self.stream.get_ref() {
            Stream::Tls(_) => return true,
            Stream::Plain(s) => s,
        };
        match socket.peer_addr() {
            Ok(peer) if peer.ip().to_canonical().is_loopback() => true,
            Ok(peer) => {
                log::error!(
                    "login refused: the HSM at {peer} is not this machine and the connection \
                     is plain TCP; a password never travels without TLS: the password was not \
                     sent. Set HSMLINK_TLS_PIN (the server's fingerprint) or HSMLINK_TLS_CA, \
                     and HSMLINK_TLS=auto or on"
                );
                false
            }
            Err(e) => {
                log::error!(
                    "login refused: the HSM's address is unknown ({e}); the password was not sent"
                );
                false
            }
        }
    }

    fn check_alive(&mut self) -> bool {
        let Some(t) = self.liveness else {
            return true;
        };
        if self.last_used.elapsed() < t.idle {
            return true;
        }
        let mut frame = [0u8; 16];
        let Ok(n) =
            hsmlink_core::wire::encode_frame(&hsmlink_core::wire::Request::Ping, &mut frame)
        else {
            return true;
        };
        let probe = t.connect.max(Duration::from_millis(100));
        let _ = self.socket().set_read_timeout(Some(probe));
        let mut reply = [0u8; 64];
        let alive = self.exchange(&frame[..n], &mut reply).is_ok();
        let _ = self.socket().set_read_timeout(Some(t.io));
        if !alive {
            log::warn!(
                "an idle connection to the HSM no longer answers (idle {:?}); reconnecting",
                t.idle
            );
        }
        alive
    }

    fn send(&mut self, request: &[u8]) -> Result<(), LinkError> {
        self.write_request(request)?;
        self.last_used = Instant::now();
        Ok(())
    }

    fn recv(&mut self, reply: &mut [u8]) -> Result<usize, LinkError> {
        let mut header = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut header).map_err(io_error)?;
        let len = frame_len(header, reply.len()).map_err(|_| LinkError::FrameTooLong)?;
        let body = reply.get_mut(..len).ok_or(LinkError::FrameTooLong)?;
        self.stream.read_exact(body).map_err(io_error)?;
        Ok(len)
    }

    /// Half-close, then wait (at most [`CLOSE_WAIT`]) for the HSM's end of
    /// stream, which it sends after destroying the session's objects.
    fn close(&mut self) {
        let sock = match self.stream.get_mut() {
            Stream::Plain(s) => s,
            Stream::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.conn.complete_io(&mut t.sock);
                &mut t.sock
            }
        };
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let _ = sock.set_read_timeout(Some(CLOSE_WAIT));
        let deadline = Instant::now() + CLOSE_WAIT;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists() {
        let t = Timeouts::default();
        let c = TcpConnector::new("a:1, b ,[::1]:5", t).unwrap();
        assert_eq!(c.endpoints(), ["a:1", "b:4433", "[::1]:5"]);
        assert!(TcpConnector::new("", t).is_err());
        assert!(TcpConnector::new("a:notaport", t).is_err());
        let many = vec!["h:1"; 17].join(",");
        assert!(TcpConnector::new(&many, t).is_err());
    }

    #[test]
    fn special_pin_tls_is_decided_per_dialled_host() {
        let t = Timeouts::default();
        let pin = ServerAuth::Pin([7; 32]);
        // Default: loopback, plain.
        let plain = TcpConnector::new("127.0.0.1:4433", t).unwrap();
        assert!(matches!(plain.security_for("127.0.0.1:9"), Ok(None)));
        assert!(matches!(plain.security_for("localhost:9"), Ok(None)));
        assert!(matches!(plain.security_for("[::1]:9"), Ok(None)));
        // Another machine with nothing to verify it: refused, not plain.
        for host in [
            "10.0.0.7:4433",
            "hsm.example:4433",
            "[fd00::2]:4433",
            "127.0.0.1.example:1",
        ] {
            assert_eq!(
                plain.security_for(host).err(),
                Some(LinkError::Connect),
                "{host}"
            );
        }
        // Refused before any connection: nothing listens there, and the
        // error comes at once (no connect attempt to wait for).
        let started = Instant::now();
        assert_eq!(
            plain.connect(Some("192.0.2.77:4433")).err(),
            Some(LinkError::Connect)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // Its own [hosts] entry: TLS with that pin (names match in any case,
        // the port defaults to 4433).
        let per_host = TcpConnector::new("127.0.0.1:4433", t)
            .unwrap()
            .with_hosts(&[("HSM.example".into(), pin.clone())])
            .unwrap();
        assert!(matches!(
            per_host.security_for("hsm.example:4433"),
            Ok(Some(_))
        ));
        assert!(per_host.security_for("hsm.example:4434").is_err());
        assert!(per_host.security_for("other.example:4433").is_err());
        // A global pin or CA verifies any other host.
        let global = TcpConnector::with_security("127.0.0.1:4433", t, Security::Tls(pin)).unwrap();
        assert!(matches!(global.security_for("10.0.0.7:4433"), Ok(Some(_))));
        assert!(matches!(global.security_for("127.0.0.1:5"), Ok(Some(_))));
        // A configured endpoint keeps the operator's explicit choice.
        let explicit = TcpConnector::new("10.0.0.1:4433", t).unwrap();
        assert!(matches!(explicit.security_for("10.0.0.1:4433"), Ok(None)));
        assert!(explicit.security_for("10.0.0.2:4433").is_err());
        // Bad [hosts] keys are configuration errors.
        assert!(TcpConnector::new("127.0.0.1:1", t)
            .unwrap()
            .with_hosts(&[("h:notaport".into(), ServerAuth::Pin([1; 32]))])
            .is_err());
    }

    #[test]
    fn loopback_detection() {
        assert!(all_loopback("127.0.0.1:1,localhost:2,[::1]:3"));
        assert!(!all_loopback("127.0.0.1:1,10.0.0.1:2"));
        assert!(!all_loopback("hsm.example:4433"));
    }

    #[test]
    fn failed_endpoint_is_skipped_while_in_back_off() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpConnector::new(
            &format!("{dead},{}", live.local_addr().unwrap()),
            Timeouts {
                retry: Duration::from_secs(60),
                ..Timeouts::default()
            },
        )
        .unwrap();
        for _ in 0..4 {
            c.connect(None).unwrap();
        }
        // The dead one failed once and is now last in every order.
        assert_eq!(c.order().last(), Some(&0));
        assert_eq!(c.health.lock().unwrap()[0].failures, 1);
    }

    #[test]
    fn unreachable_endpoint_is_a_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = TcpConnector::new(&format!("127.0.0.1:{port}"), Timeouts::default()).unwrap();
        assert_eq!(c.connect(None).err(), Some(LinkError::Connect));
    }

    #[test]
    fn oversized_reply_frame_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).unwrap();
            s.write_all(&(1_000_000u32).to_le_bytes()).unwrap();
        });
        let c = TcpConnector::new(&addr.to_string(), Timeouts::default()).unwrap();
        let mut link = c.connect(None).unwrap();
        let mut reply = [0u8; 64];
        let r = link.exchange(&[1, 0, 0, 0, 9], &mut reply);
        assert_eq!(r, Err(LinkError::FrameTooLong));
        server.join().unwrap();
    }
}
