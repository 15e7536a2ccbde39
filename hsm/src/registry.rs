//! The live connections of a server: who they come from, whether they have
//! logged in, and a handle on their socket to end them.
//!
//! It enforces what a peer that never logs in may hold (see
//! [`Registry::admit`]) and the deadlines (see [`Registry::reap`]): the TLS
//! handshake, `Hello` and `Login` within [`Limits::login_timeout_ms`] of
//! the connection; each frame complete within [`Limits::frame_timeout_ms`]
//! of its first byte. A connection is ended by shutting its socket down,
//! which wakes its thread from any read; that thread then cleans up
//! (session objects, the entry) as for any closed connection.
//!
//! [`Limits::login_timeout_ms`]: crate::hsm::Limits::login_timeout_ms
//! [`Limits::frame_timeout_ms`]: crate::hsm::Limits::frame_timeout_ms

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::hsm::Limits;

/// How often deadlines are checked (and the coarse clock ticks).
pub const TICK: Duration = Duration::from_millis(100);

/// One live connection, shared by its thread and the registry.
pub struct ConnState {
    id: u64,
    peer: Option<IpAddr>,
    /// Milliseconds of the registry's clock when it was accepted.
    since: u64,
    /// A handle on the socket, to shut it down (`None`: not a socket).
    socket: Option<TcpStream>,
    clock: Arc<AtomicU64>,
    /// Logged in at least once: no longer under the login deadline and
    /// never evicted to make room.
    authenticated: AtomicBool,
    /// Handling a request (a login may take its throttle delay).
    busy: AtomicBool,
    /// Ended by the registry; its thread is on its way out.
    evicted: AtomicBool,
    /// A login failed on it, or waits its turn behind failures: the first
    /// to go when room is needed.
    failed_login: AtomicBool,
    /// Clock when the last request was completed (or the connection made).
    progress: AtomicU64,
    /// Clock when the first byte of the frame being read came (0: none).
    frame_started: AtomicU64,
    /// The thread serving it, woken when the connection is ended (a login
    /// waiting its turn parks).
    thread: Mutex<Option<std::thread::Thread>>,
    /// The user last logged in on it (claimed at the login, see
    /// [`Registry::claim_for`]; kept after a logout: the connection was
    /// that user's, and counts in its cap of connections).
    user: Mutex<Option<Arc<str>>>,
}

impl ConnState {
    /// A connection outside any registry (in-process use): no deadlines.
    pub fn detached(id: u64) -> Arc<ConnState> {
        Arc::new(ConnState {
            id,
            peer: None,
            since: 1,
            socket: None,
            clock: Arc::new(AtomicU64::new(1)),
            authenticated: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            failed_login: AtomicBool::new(false),
            progress: AtomicU64::new(1),
            frame_started: AtomicU64::new(0),
            thread: Mutex::new(None),
            user: Mutex::new(None),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// Record the thread serving this connection (woken when it is ended).
    pub fn served_by(&self, t: std::thread::Thread) {
        *lock(&self.thread) = Some(t);
    }

    fn wake(&self) {
        if let Some(t) = lock(&self.thread).as_ref() {
            t.unpark();
        }
    }

    /// The user logged in on this connection, if any.
    pub fn user(&self) -> Option<Arc<str>> {
        lock(&self.user).clone()
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Record that `user` logged in on this connection.
    pub fn logged_in(&self, user: Arc<str>) {
        *lock(&self.user) = Some(user);
        self.authenticated.store(true, Ordering::SeqCst);
    }

    /// A request is about to be handled; `false` if the connection was
    /// ended meanwhile (the request must then not be handled).
    pub fn begin_request(&self) -> bool {
        self.busy.store(true, Ordering::SeqCst);
        !self.evicted.load(Ordering::SeqCst)
    }

    /// A login failed on this connection (or waits behind failures).
    pub fn login_failed(&self) {
        self.failed_login.store(true, Ordering::Relaxed);
    }

    /// The request waits (a login waiting its turn): meanwhile the
    /// connection may be ended as if idle; [`ConnState::begin_request`]
    /// resumes it (or says it was ended).
    pub fn pause_request(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }

    /// The request is answered.
    pub fn end_request(&self) {
        self.progress
            .store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// A frame was handed out whole: its deadline is over.
    pub fn frame_done(&self) {
        if self.frame_started.load(Ordering::Relaxed) != 0 {
            self.frame_started.store(0, Ordering::Relaxed);
        }
    }

    /// Bytes came from the peer: a frame's deadline starts with the first.
    fn bytes_came(&self) {
        if self.frame_started.load(Ordering::Relaxed) == 0 {
            self.frame_started
                .store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Whether the registry ended this connection.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// End the connection: its socket is shut down, its thread wakes up
    /// and closes it. Ends it even while a request is being handled (the
    /// reply is then lost).
    pub fn end(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        if let Some(s) = &self.socket {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.wake();
    }

    /// End the connection unless a request is being handled (then it is
    /// left alone, and `false`): a request is never half done.
    fn end_if_idle(&self) -> bool {
        self.evicted.store(true, Ordering::SeqCst);
        if self.busy.load(Ordering::SeqCst) {
            self.evicted.store(false, Ordering::SeqCst);
            return false;
        }
        if let Some(s) = &self.socket {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.wake();
        true
    }
}

/// Why a connection is refused or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot is held by logged-in connections (or by ones
    /// still closing).
    ConnectionLimit,
    /// This address holds its share, all logged in.
    AddressLimit,
}

/// The registry of live connections.
pub struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one, so that 0 means "none"),
    /// advanced every [`TICK`] by the reaper.
    clock: Arc<AtomicU64>,
    reaper: std::sync::Once,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            conns: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            clock: Arc::new(AtomicU64::new(1)),
            reaper: std::sync::Once::new(),
        }
    }

    fn now(&self) -> u64 {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.clock.store(ms, Ordering::Relaxed);
        ms
    }

    /// Live connections (those ended but not yet closed included).
    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live connection (to end some of them, say).
    pub fn connections(&self) -> Vec<Arc<ConnState>> {
        lock(&self.conns).values().cloned().collect()
    }

    /// Admit a new connection from `peer` (counted under its
    /// [`address_group`]) under `limits`, making room if it must by ending
    /// a connection that has not logged in:
    /// - at most `max_connections + max_unauthenticated` entries at all
    ///   (the threads: ended connections still closing count), or twice
    ///   `max_unauthenticated` over for an address with no ended
    ///   connection still closing (so that one churning address cannot
    ///   keep the others out);
    /// - at most `max_connections_per_address` live ones from one address:
    ///   past it, the address's own least active unauthenticated one goes;
    /// - at most `max_unauthenticated` live unauthenticated ones and
    ///   `max_connections` live ones: past either, the least active
    ///   unauthenticated one of the addresses holding the most goes.
    ///
    /// "Least active": one where a login failed (or waits its turn behind
    /// failures) first, idle before busy
    /// (handling a request; a login waiting its turn is idle), then the
    /// oldest last progress (a completed request), then the oldest
    /// connection, so that a client going through its handshake briskly is
    /// not the one ended for a silent socket or a guesser.
    pub fn admit(
        &self,
        id: u64,
        peer: IpAddr,
        socket: &TcpStream,
        limits: &Limits,
    ) -> Result<Arc<ConnState>, Refusal> {
        let now = self.now();
        let max_conn = limits.max_connections.max(1);
        let max_pending = limits.max_unauthenticated.clamp(1, max_conn);
        let per_addr = limits.max_connections_per_address.max(1);
        let peer = address_group(peer);
        let mut conns = lock(&self.conns);
        if conns.len() >= max_conn + max_pending {
            // Connections ended a moment ago still hold their threads: the
            // last `max_pending` places are for addresses with none of
            // those (not the one churning).
            let churning = conns
                .values()
                .any(|c| c.peer == Some(peer) && c.is_evicted());
            if churning || conns.len() >= max_conn + 2 * max_pending {
                return Err(Refusal::ConnectionLimit);
            }
        }
        let live: Vec<&Arc<ConnState>> = conns.values().filter(|c| !c.is_evicted()).collect();
        let from_peer = live.iter().filter(|c| c.peer == Some(peer)).count();
        if from_peer >= per_addr {
            let victim = pick_victim(live.iter().filter(|c| c.peer == Some(peer)).copied());
            match victim {
                Some(v) => {
                    log::warn!(
                        "event=evicted conn={} peer={peer} reason=address_limit",
                        v.id
                    );
                    v.end();
                }
                None => return Err(Refusal::AddressLimit),
            }
        }
        let live: Vec<&Arc<ConnState>> = conns.values().filter(|c| !c.is_evicted()).collect();
        let pending = live.iter().filter(|c| !c.is_authenticated()).count();
        if pending >= max_pending || live.len() >= max_conn {
            // An address with the most unauthenticated connections gives
            // one; among addresses holding as many, the least active
            // connection goes.
            let mut per: HashMap<Option<IpAddr>, usize> = HashMap::new();
            for c in live.iter().filter(|c| !c.is_authenticated()) {
                *per.entry(c.peer).or_default() += 1;
            }
            let most = per.values().copied().max().unwrap_or(0);
            let victim = pick_victim(
                live.iter()
                    .filter(|c| per.get(&c.peer) == Some(&most))
                    .copied(),
            );
            match victim {
                Some(v) => {
                    log::warn!(
                        "event=evicted conn={} peer={} reason=connection_limit",
                        v.id,
                        v.peer.map(|p| p.to_string()).unwrap_or_default()
                    );
                    v.end();
                }
                None => return Err(Refusal::ConnectionLimit),
            }
        }
        let socket = socket.try_clone().ok();
        let state = Arc::new(ConnState {
            id,
            peer: Some(peer),
            since: now,
            socket,
            clock: self.clock.clone(),
            authenticated: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            failed_login: AtomicBool::new(false),
            progress: AtomicU64::new(now),
            frame_started: AtomicU64::new(0),
            thread: Mutex::new(None),
            user: Mutex::new(None),
        });
        conns.insert(id, state.clone());
        Ok(state)
    }

    /// Claim connection `state` for the user `owner` at its login, unless
    /// `owner` already holds `cap` other live connections (claimed or
    /// logged in as it, logged out since included): `false` then, and the
    /// connection is left as it was. Counted and claimed under the
    /// registry's lock, so that logins racing each other cannot pass the
    /// cap together.
    pub fn claim_for(&self, state: &ConnState, owner: &Arc<str>, cap: usize) -> bool {
        let conns = lock(&self.conns);
        let held = conns
            .values()
            .filter(|c| c.id != state.id && !c.is_evicted())
            .filter(|c| lock(&c.user).as_deref() == Some(&**owner))
            .count();
        if held >= cap.max(1) {
            return false;
        }
        *lock(&state.user) = Some(owner.clone());
        true
    }

    /// Forget a closed connection.
    pub fn remove(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// End the connections past a deadline; returns how many.
    pub fn reap(&self, limits: &Limits) -> usize {
        let now = self.now();
        let login = limits.login_timeout_ms.max(1);
        let frame = limits.frame_timeout_ms.max(1);
        let conns = lock(&self.conns);
        let mut n = 0;
        for c in conns.values().filter(|c| !c.is_evicted()) {
            let started = c.frame_started.load(Ordering::Relaxed);
            let reason = if !c.is_authenticated() && now.saturating_sub(c.since) > login {
                "login_timeout"
            } else if started != 0 && now.saturating_sub(started) > frame {
                "frame_timeout"
            } else {
                continue;
            };
            if c.end_if_idle() {
                n += 1;
                log::warn!(
                    "event=evicted conn={} peer={} reason={reason}",
                    c.id,
                    c.peer.map(|p| p.to_string()).unwrap_or_default()
                );
            }
        }
        n
    }

    /// Start the thread that enforces the deadlines (once).
    pub fn start_reaper(self: &Arc<Self>, limits: Limits) {
        let me = self.clone();
        self.reaper.call_once(move || {
            let spawned =
                std::thread::Builder::new()
                    .name("deadlines".into())
                    .spawn(move || loop {
                        std::thread::sleep(TICK);
                        me.reap(&limits);
                    });
            if let Err(e) = spawned {
                log::error!(
                    "event=spawn_failed what=deadlines error={:?}",
                    e.to_string()
                );
            }
        });
    }
}

/// The address a client is counted under: an IPv4 address (also when
/// IPv4-mapped), or the /64 network of an IPv6 address (one host usually
/// holds a whole /64).
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The unauthenticated connection to end first among `cands`.
fn pick_victim<'a>(cands: impl Iterator<Item = &'a Arc<ConnState>>) -> Option<&'a Arc<ConnState>> {
    cands.filter(|c| !c.is_authenticated()).min_by_key(|c| {
        (
            !c.failed_login.load(Ordering::Relaxed),
            c.busy.load(Ordering::Relaxed),
            c.progress.load(Ordering::Relaxed),
            c.id,
        )
    })
}

/// A socket whose reads start the deadline of the frame they bring.
pub struct Watched {
    pub sock: TcpStream,
    pub state: Arc<ConnState>,
}

impl Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        if n > 0 {
            self.state.bytes_came();
        }
        Ok(n)
    }
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn limits(conns: usize, pending: usize, per_addr: usize) -> Limits {
        Limits {
            max_connections: conns,
            max_unauthenticated: pending,
            max_connections_per_address: per_addr,
            ..Limits::default()
        }
    }

    #[test]
    fn room_is_made_by_the_least_active_unauthenticated_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Registry::new();
        let lim = limits(4, 2, 4);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut keep = Vec::new();
        let mut admit = |id, ip| {
            let (c, s) = pair(&l);
            let st = r.admit(id, ip, &s, &lim);
            keep.push((c, s));
            st
        };
        let first = admit(1, a).unwrap();
        let second = admit(2, a).unwrap();
        // The first one made progress later than the second was accepted.
        std::thread::sleep(Duration::from_millis(5));
        r.now();
        first.end_request();
        // A third unauthenticated one: the second (least active) goes.
        let third = admit(3, b).unwrap();
        assert!(second.is_evicted() && !first.is_evicted() && !third.is_evicted());
        // Logged-in connections are never ended to make room.
        first.logged_in(Arc::from("u"));
        third.logged_in(Arc::from("u"));
        let fourth = admit(4, a).unwrap();
        let fifth = admit(5, a).unwrap();
        assert!(!fifth.is_evicted());
        // Four live (first, third, fourth, fifth): the cap of 4 is reached;
        // a new one ends an unauthenticated one (fourth, the older).
        let sixth = admit(6, b).unwrap();
        assert!(fourth.is_evicted() && !sixth.is_evicted());
        fifth.logged_in(Arc::from("u"));
        sixth.logged_in(Arc::from("u"));
        // All live ones logged in: refused.
        assert_eq!(admit(7, a).err(), Some(Refusal::ConnectionLimit));
        // Ended ones still count against the thread bound until removed.
        assert_eq!(r.len(), 6);
        r.remove(2);
        r.remove(4);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn an_address_at_its_cap_gives_up_its_own_connection_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Registry::new();
        let lim = limits(10, 10, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut keep = Vec::new();
        let mut admit = |id, ip| {
            let (c, s) = pair(&l);
            let st = r.admit(id, ip, &s, &lim);
            keep.push((c, s));
            st
        };
        let other = admit(1, b).unwrap();
        let a1 = admit(2, a).unwrap();
        let a2 = admit(3, a).unwrap();
        let a3 = admit(4, a).unwrap();
        assert!(a1.is_evicted() && !a2.is_evicted() && !a3.is_evicted());
        assert!(!other.is_evicted());
        a2.logged_in(Arc::from("u"));
        a3.logged_in(Arc::from("u"));
        assert_eq!(admit(5, a).err(), Some(Refusal::AddressLimit));
    }

    #[test]
    fn a_user_claims_at_most_its_cap_of_connections() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Registry::new();
        let lim = limits(10, 10, 10);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mut keep = Vec::new();
        let mut states = Vec::new();
        for id in 1..=4 {
            let (c, s) = pair(&l);
            states.push(r.admit(id, a, &s, &lim).unwrap());
            keep.push((c, s));
        }
        let (u, v): (Arc<str>, Arc<str>) = (Arc::from("u#1"), Arc::from("v#2"));
        assert!(r.claim_for(&states[0], &u, 2));
        assert!(r.claim_for(&states[1], &u, 2));
        // A third one for u is refused and left unclaimed; v is not held back.
        assert!(!r.claim_for(&states[2], &u, 2));
        assert_eq!(states[2].user(), None);
        assert!(r.claim_for(&states[2], &v, 2));
        // A connection logging in again counts itself once.
        assert!(r.claim_for(&states[1], &u, 2));
        // An ended one no longer counts.
        states[0].end();
        assert!(r.claim_for(&states[3], &u, 2));
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let g = |s: &str| address_group(s.parse().unwrap()).to_string();
        assert_eq!(g("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(g("2001:db8:1:2:bbbb::7"), "2001:db8:1:2::");
        assert_eq!(g("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(g("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn deadlines_end_idle_connections_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Registry::new();
        let lim = Limits {
            login_timeout_ms: 30,
            frame_timeout_ms: 30,
            ..Limits::default()
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let (_c1, s1) = pair(&l);
        let (_c2, s2) = pair(&l);
        let (_c3, s3) = pair(&l);
        let silent = r.admit(1, a, &s1, &lim).unwrap();
        let busy = r.admit(2, a, &s2, &lim).unwrap();
        let user = r.admit(3, a, &s3, &lim).unwrap();
        user.logged_in(Arc::from("u"));
        assert!(busy.begin_request());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.reap(&lim), 1);
        assert!(silent.is_evicted() && !busy.is_evicted() && !user.is_evicted());
        // Done with its request, the busy one goes at the next check.
        busy.end_request();
        assert_eq!(r.reap(&lim), 1);
        assert!(busy.is_evicted());
        // A logged-in connection goes only with a frame begun too long ago.
        user.bytes_came();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.reap(&lim), 1);
        assert!(user.is_evicted());
        // A request arriving on an ended connection is not handled.
        assert!(!user.begin_request());
    }
}
