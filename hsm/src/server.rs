//! The TCP server: one thread per connection, framed requests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hsmlink_core::wire::{frame_len, HEADER_LEN};
use hsmlink_transport_std::spin::{Activity, SpinHistory};

use crate::conn::{Connection, SERVER_MAX_FRAME};
use crate::hsm::Hsm;
use crate::registry::{ConnState, Watched};

/// How connections are secured.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS identity; `None` serves plain TCP only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Accept plain TCP from peers that are not on loopback.
    pub allow_plain: bool,
}

/// A bound server, not yet accepting.
pub struct Server {
    hsm: Arc<Hsm>,
    listener: TcpListener,
    active: Arc<AtomicUsize>,
    security: Security,
}

impl Server {
    /// A plain-TCP server (tests, embedded use on loopback).
    pub fn bind(hsm: Arc<Hsm>, addr: &str) -> io::Result<Server> {
        Self::bind_secure(
            hsm,
            addr,
            Security {
                tls: None,
                allow_plain: true,
            },
        )
    }

    /// A server with TLS (and plain TCP as `security` allows).
    pub fn bind_secure(hsm: Arc<Hsm>, addr: &str, security: Security) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        Ok(Server {
            hsm,
            listener,
            active: Arc::new(AtomicUsize::new(0)),
            security,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections forever.
    ///
    /// Each connection gets a thread; the registry ([`crate::registry`])
    /// bounds them (a peer that has not logged in holds one only until its
    /// login deadline, or until a newer connection needs its place) and
    /// ends the ones past a deadline.
    pub fn run(self) -> io::Result<()> {
        let registry = self.hsm.connections.clone();
        registry.start_reaper(self.hsm.limits.clone());
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) => {
                    log::warn!("event=accept_failed error={:?}", e.to_string());
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let id = self.hsm.connection_id();
            let state = match registry.admit(id, peer.ip(), &stream, &self.hsm.limits) {
                Ok(s) => s,
                Err(why) => {
                    log::warn!("event=refused peer={peer} reason={why:?}");
                    drop(stream);
                    continue;
                }
            };
            self.active.fetch_add(1, Ordering::SeqCst);
            let hsm = self.hsm.clone();
            let active = self.active.clone();
            let security = self.security.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("conn {peer}"))
                .spawn(move || {
                    let stats = &hsm.stats;
                    stats.connections_now.fetch_add(1, Ordering::SeqCst);
                    stats.connections_total.fetch_add(1, Ordering::Relaxed);
                    let started = std::time::Instant::now();
                    log::info!("event=connected peer={peer} conn={id}");
                    let h = hsm.clone();
                    let st = state.clone();
                    state.served_by(std::thread::current());
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        serve_secured(h, stream, peer, &security, st)
                    }));
                    let ms = started.elapsed().as_millis();
                    match r {
                        Ok(_) if state.is_evicted() => {
                            log::info!("event=closed peer={peer} ms={ms} reason=ended")
                        }
                        Ok(Ok(())) => log::info!("event=closed peer={peer} ms={ms}"),
                        Ok(Err(e))
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::TimedOut =>
                        {
                            log::info!("event=closed peer={peer} ms={ms} reason=idle")
                        }
                        Ok(Err(e)) => {
                            log::info!(
                                "event=closed peer={peer} ms={ms} reason={:?}",
                                e.to_string()
                            )
                        }
                        Err(_) => log::error!("event=closed peer={peer} ms={ms} reason=panic"),
                    }
                    hsm.connections.remove(id);
                    hsm.stats.connections_now.fetch_sub(1, Ordering::SeqCst);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                log::error!("event=spawn_failed error={:?}", e.to_string());
                registry.remove(id);
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Run on a background thread; returns the bound address.
    pub fn spawn(self) -> io::Result<SocketAddr> {
        let addr = self.local_addr()?;
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || {
                let _ = self.run();
            })?;
        Ok(addr)
    }
}

/// Serve one connection in TLS or plain TCP, as its first bytes say and the
/// security settings allow.
fn serve_secured(
    hsm: Arc<Hsm>,
    stream: TcpStream,
    peer: SocketAddr,
    security: &Security,
    state: Arc<ConnState>,
) -> io::Result<()> {
    let idle = Duration::from_secs(hsm.limits.idle_secs.max(1));
    stream.set_read_timeout(Some(idle))?;
    let is_tls = crate::tls::starts_with_tls_unless(&stream, &|| state.is_evicted())?;
    match (&security.tls, is_tls) {
        (Some(config), true) => {
            let conn = rustls::ServerConnection::new(config.clone())
                .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
            let probe_socket = stream.try_clone()?;
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            let sock = Watched {
                sock: stream,
                state: state.clone(),
            };
            let mut tls = rustls::StreamOwned::new(conn, sock);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            state.frame_done();
            log::info!("event=tls peer={peer} version=1.3");
            serve_stream(hsm, &probe_socket, &mut tls, Some(peer), state)
        }
        (None, true) => Err(io::Error::other(
            "TLS asked for, but this server has no certificate",
        )),
        (_, false) if crate::tls::plain_allowed(peer.ip(), security.allow_plain) => {
            serve_plain(hsm, stream, Some(peer), state)
        }
        (_, false) => {
            log::warn!("event=refused peer={peer} reason=plain_tcp_from_network");
            Err(io::Error::other("plain TCP refused"))
        }
    }
}

/// Serve one plain connection until the peer closes, errs, idles out or
/// sends a frame that ends it (no deadlines or caps: those are the
/// accepting [`Server`]'s).
pub fn serve_connection(hsm: Arc<Hsm>, stream: TcpStream) -> io::Result<()> {
    let peer = stream.peer_addr().ok();
    let state = ConnState::detached(hsm.connection_id());
    serve_plain(hsm, stream, peer, state)
}

fn serve_plain(
    hsm: Arc<Hsm>,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    state: Arc<ConnState>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let idle = Duration::from_secs(hsm.limits.idle_secs.max(1));
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let probe_socket = stream.try_clone()?;
    let mut stream = Watched {
        sock: stream,
        state: state.clone(),
    };
    serve_stream(hsm, &probe_socket, &mut stream, peer, state)
}

/// A byte stream the server reads frames from, which may hold bytes of its
/// own beyond what the socket has (TLS keeps decrypted records).
trait FrameStream: Read + Write {
    /// Whether bytes are ready without reading the socket.
    fn has_buffered(&mut self) -> bool;
}

impl FrameStream for Watched {
    fn has_buffered(&mut self) -> bool {
        false
    }
}

impl FrameStream for rustls::StreamOwned<rustls::ServerConnection, Watched> {
    fn has_buffered(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }
}

/// Serve frames over `stream` (plain or TLS); `socket` is the TCP socket
/// beneath, watched for the peer's end.
fn serve_stream<S: FrameStream>(
    hsm: Arc<Hsm>,
    socket: &TcpStream,
    stream: &mut S,
    peer: Option<SocketAddr>,
    state: Arc<ConnState>,
) -> io::Result<()> {
    let mut conn = Connection::with_id(hsm.clone(), state.id());
    if let Some(p) = peer {
        conn.set_peer(p.ip());
    }
    conn.set_state(state.clone());
    let probe = ProbeGuard::new(&hsm, conn.id(), socket);
    let r = serve_frames(&mut conn, socket, stream, &state);
    // Session objects go before the probe does: another connection asking
    // in between must not see them.
    drop(conn);
    drop(probe);
    r
}

fn serve_frames<S: FrameStream>(
    conn: &mut Connection,
    socket: &TcpStream,
    stream: &mut S,
    state: &ConnState,
) -> io::Result<()> {
    let mut input = FrameReader::default();
    let spin = Duration::from_micros(conn.hsm().limits.spin_us);
    let mut spins = SpinHistory::default();
    // Connection ids start at 1; a party is never 0.
    let who = conn.id().max(1);
    let mut last_user: Option<Arc<str>> = None;
    loop {
        let wait = (!input.has_unread() && !stream.has_buffered())
            .then(|| spins.await_readable(socket, spin, &CONNECTIONS, who));
        let Some(body) = input.next(stream)? else {
            return Ok(());
        };
        if let Some(w) = wait {
            spins.done(w, spin);
        }
        state.frame_done();
        conn_requests(conn).fetch_add(1, Ordering::Relaxed);
        let reply = if state.is_authenticated() {
            let reply = conn.handle_body(body);
            // Logged out and in again as someone else: the registry follows.
            if let Some(u) = conn.user() {
                if !last_user.as_ref().is_some_and(|l| Arc::ptr_eq(l, u)) {
                    state.logged_in(u.clone());
                    last_user = Some(u.clone());
                }
            }
            reply
        } else {
            // Before login the registry may end the connection at any time;
            // a request it ended is not handled at all (a login attempt is
            // counted once, or not).
            if !state.begin_request() {
                input.wipe_frame();
                return Err(io::Error::other("connection ended"));
            }
            let reply = conn.handle_body(body);
            if let Some(u) = conn.user() {
                state.logged_in(u.clone());
                last_user = Some(u.clone());
            }
            state.end_request();
            reply
        };
        input.wipe_frame();
        stream.write_all(&reply)?;
        stream.flush()?;
        if conn.closing() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "protocol error before hello",
            ));
        }
    }
}

/// The server's connections, as parties that may spin (see
/// [`hsmlink_transport_std::spin`]): a connection thread looks for its
/// client's next request without sleeping for [`Limits::spin_us`] while
/// no other connection has been busy lately.
///
/// [`Limits::spin_us`]: crate::hsm::Limits::spin_us
static CONNECTIONS: Activity = Activity::new();

/// Reads frames with as few system calls as the data allows: a request's
/// header and body (and a pipelined next request) usually come in one read.
/// Bounded: it never holds more than one frame of the largest size the
/// server accepts, plus one read's worth.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The frame last handed out: `buf[frame.0..frame.1]`.
    frame: (usize, usize),
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    /// Whether bytes of a next frame are already buffered.
    fn has_unread(&self) -> bool {
        self.start.max(self.frame.1) < self.end
    }

    /// The next frame's body, or `None` at a clean end of stream.
    fn next<S: Read>(&mut self, stream: &mut S) -> io::Result<Option<&[u8]>> {
        // Drop the frame handed out last time.
        self.start = self.start.max(self.frame.1);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if !self.fill(stream, HEADER_LEN)? {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let len = frame_len(header, SERVER_MAX_FRAME).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "frame longer than announced")
        })?;
        if !self.fill(stream, HEADER_LEN + len)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let body = self.start + HEADER_LEN;
        self.frame = (body, body + len);
        Ok(Some(&self.buf[body..body + len]))
    }

    /// Make `need` unread bytes available; false at end of stream before
    /// any byte of them came (true end), error if it ends in the middle.
    fn fill<S: Read>(&mut self, stream: &mut S, need: usize) -> io::Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.frame = (0, 0);
            self.start = 0;
        }
        while self.end < need {
            let want = (need - self.end).max(READ_CHUNK);
            if self.buf.len() < self.end + want {
                self.buf.resize(self.end + want, 0);
            }
            let n = match stream.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return if self.end == 0 {
                    Ok(false)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.end += n;
        }
        Ok(true)
    }

    /// Zero the frame just handled (it may hold a password or key bytes).
    fn wipe_frame(&mut self) {
        let (a, b) = self.frame;
        if let Some(f) = self.buf.get_mut(a.saturating_sub(HEADER_LEN)..b) {
            zeroize::Zeroize::zeroize(f);
        }
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

fn conn_requests(conn: &Connection) -> &std::sync::atomic::AtomicU64 {
    &conn.hsm().stats.requests
}

/// Registers a liveness probe for a connection's socket, removed on drop.
struct ProbeGuard {
    hsm: Arc<Hsm>,
    id: u64,
}

impl ProbeGuard {
    fn new(hsm: &Arc<Hsm>, id: u64, stream: &TcpStream) -> Option<ProbeGuard> {
        let peer = stream.try_clone().ok()?;
        hsm.register_probe(id, Box::new(move || peer_alive(&peer)));
        Some(ProbeGuard {
            hsm: hsm.clone(),
            id,
        })
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.hsm.unregister_probe(self.id);
    }
}

/// Whether the peer of `s` has not closed its side: a non-blocking peek
/// that consumes nothing (`MSG_PEEK | MSG_DONTWAIT`, so the socket's own
/// blocking reads in its thread are unaffected).
fn peer_alive(s: &TcpStream) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(s).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

#[cfg(test)]
mod frame_reader_tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn frames_come_out_whole_whatever_the_reads() {
        let mut wire = frame(b"first");
        wire.extend(frame(&[7u8; 40_000]));
        wire.extend(frame(b""));
        wire.extend(frame(b"last"));
        for step in [1, 3, 4, 5, 1000, 1 << 20] {
            let mut r = FrameReader::default();
            let mut s = Trickle { data: &wire, step };
            assert_eq!(r.next(&mut s).unwrap(), Some(&b"first"[..]));
            r.wipe_frame();
            assert_eq!(r.next(&mut s).unwrap().map(<[u8]>::len), Some(40_000));
            assert_eq!(r.next(&mut s).unwrap(), Some(&b""[..]));
            assert_eq!(r.next(&mut s).unwrap(), Some(&b"last"[..]));
            assert_eq!(r.next(&mut s).unwrap(), None, "clean end, step {step}");
        }
    }

    #[test]
    fn a_cut_frame_or_a_long_header_is_an_error() {
        let wire = frame(b"abcdef");
        let mut r = FrameReader::default();
        let mut s = Trickle {
            data: &wire[..7],
            step: 3,
        };
        assert!(r.next(&mut s).is_err());
        let long = (SERVER_MAX_FRAME as u32 + 1).to_le_bytes();
        let mut r = FrameReader::default();
        let mut s = Trickle {
            data: &long,
            step: 4,
        };
        assert!(r.next(&mut s).is_err());
    }
}
