//! Peers that never log in hold nothing for long: silent sockets and
//! sockets dripping a byte at a time do not keep a legitimate client out,
//! are closed at their deadlines, and cost a bounded number of threads.
//! The real server over real TCP; the legitimate client is the real module.

mod hsm_service;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_service::session_at;
use hsmlink_core::wire::{self, Request, Response, Secret, PROTOCOL_VERSION};
use hsmlink_tests::{token, Hsm, PIN, USER};

const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What a dripping socket sends, a byte per tick: the start of a plain
/// frame announcing 64 bytes, or of a TLS ClientHello record.
const DRIP_PLAIN: [u8; 12] = [64, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7];
const DRIP_TLS: [u8; 12] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0,
];

/// An attacker holding `silent` sockets that send nothing and `drip`
/// sockets that send one byte every `tick`, reconnecting whichever the
/// server closes, until dropped; from loopback address `from` if given.
struct Siege {
    stop: Arc<AtomicBool>,
    /// Sockets the server closed (and the attacker opened again).
    closed: Arc<AtomicUsize>,
    /// Sockets connected at least once.
    opened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Siege {
    fn start(addr: &str, from: Option<&str>, silent: usize, drip: usize, tick: Duration) -> Siege {
        let from = from.map(str::to_string);
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let (addr, st, cl, op) = (
            addr.to_string(),
            stop.clone(),
            closed.clone(),
            opened.clone(),
        );
        let thread = std::thread::spawn(move || {
            let connect = |n: usize| -> Option<TcpStream> {
                let s = match &from {
                    Some(f) => connect_from(&addr, f).ok()?,
                    None => TcpStream::connect(&addr).ok()?,
                };
                s.set_nonblocking(true).ok()?;
                op.fetch_add(1, Ordering::SeqCst);
                let _ = n;
                Some(s)
            };
            let mut silent: Vec<Option<TcpStream>> = (0..silent).map(connect).collect();
            let mut drip: Vec<(Option<TcpStream>, usize)> =
                (0..drip).map(|n| (connect(n), 0)).collect();
            while !st.load(Ordering::SeqCst) {
                std::thread::sleep(tick);
                for (n, s) in silent.iter_mut().enumerate() {
                    let mut b = [0u8; 16];
                    let gone = match s {
                        Some(sock) => match sock.read(&mut b) {
                            Ok(_) => true,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        },
                        None => true,
                    };
                    if gone {
                        if s.is_some() {
                            cl.fetch_add(1, Ordering::SeqCst);
                        }
                        *s = connect(n);
                    }
                }
                for (n, (s, pos)) in drip.iter_mut().enumerate() {
                    let script = if n % 2 == 0 { &DRIP_PLAIN } else { &DRIP_TLS };
                    let byte = [script[*pos % script.len()]];
                    let mut b = [0u8; 64];
                    let gone = match s {
                        Some(sock) => {
                            let eof = matches!(sock.read(&mut b), Ok(0))
                                || matches!(sock.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
                            eof || sock.write(&byte).is_err()
                        }
                        None => true,
                    };
                    if gone {
                        if s.is_some() {
                            cl.fetch_add(1, Ordering::SeqCst);
                        }
                        *s = connect(n);
                        *pos = 0;
                    } else {
                        *pos += 1;
                    }
                }
            }
        });
        Siege {
            stop,
            closed,
            opened,
            thread: Some(thread),
        }
    }
}

impl Drop for Siege {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw protocol client (no module): frames written by hand.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    fn send(&mut self, r: &Request<'_>) -> std::io::Result<()> {
        let mut buf = vec![0u8; 4096];
        let n = wire::encode_frame(r, &mut buf).expect("encode");
        self.0.write_all(&buf[..n])
    }

    /// The reply's body, or `None` if the server closed the connection.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 4];
        self.0.read_exact(&mut h).ok()?;
        let mut body = vec![0u8; u32::from_le_bytes(h) as usize];
        self.0.read_exact(&mut body).ok()?;
        Some(body)
    }

    /// Whether `r` was answered with `Ok` (or a Hello).
    fn ask_ok(&mut self, r: &Request<'_>) -> bool {
        if self.send(r).is_err() {
            return false;
        }
        match self.recv() {
            Some(b) => matches!(
                wire::decode::<Response<'_>>(&b),
                Ok(Response::Ok | Response::Hello { .. })
            ),
            None => false,
        }
    }

    fn hello(&mut self) -> bool {
        self.ask_ok(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 65536,
            app: [9; 16],
        })
    }

    fn login(&mut self, user: &str, password: &str) -> bool {
        self.ask_ok(&Request::Login {
            user,
            password: Secret(password.as_bytes()),
        })
    }

    /// A logged-in connection.
    fn logged_in(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        assert!(r.hello(), "Hello");
        assert!(r.login(USER, PIN), "Login");
        r
    }

    /// How long after `start` the server closed this connection (waiting
    /// at most `max`), reading and discarding what comes.
    fn closed_after(&mut self, start: Instant, max: Duration) -> Option<Duration> {
        self.0.set_read_timeout(Some(max)).unwrap();
        let mut b = [0u8; 256];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(_) => return Some(start.elapsed()),
            }
        }
    }
}

/// Log in through the real module and sign: how long it took.
fn module_logs_in_and_signs(t: &hsmlink_tests::Token, addr: &str) -> Duration {
    let s = session_at(t, addr, USER);
    let start = Instant::now();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("C_Login while the server is under siege");
    let (_, key) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec())],
            &[Attribute::Sign(true)],
        )
        .expect("C_GenerateKeyPair");
    let sig = s
        .sign(&Mechanism::Ecdsa, key, &[7u8; 32])
        .expect("C_Sign while the server is under siege");
    assert_eq!(sig.len(), 64);
    let took = start.elapsed();
    drop(s);
    took
}

#[test]
fn slowloris_64_silent_and_64_dripping_sockets_do_not_keep_a_client_out() {
    let t = token();
    // The default limits.
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let threads_idle = hsm.status_field("Threads");
    let siege = Siege::start(hsm.addr(), None, 64, 64, Duration::from_millis(100));
    // Let every attacking socket connect and start dripping.
    while siege.opened.load(Ordering::SeqCst) < 128 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));

    for round in 0..3 {
        let took = module_logs_in_and_signs(&t, hsm.addr());
        eprintln!("slowloris: round {round}: login and sign under siege took {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: login and sign took {took:?} with 128 hostile sockets"
        );
    }
    // Threads: one per connection at most, and connections before login
    // are capped (64 by default) whatever the attacker opens. (Sampled: a
    // connection ended a moment ago may still be finishing its thread.)
    let mut samples: Vec<u64> = (0..11)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            hsm.status_field("Threads")
        })
        .collect();
    samples.sort_unstable();
    let threads = samples[5];
    eprintln!(
        "slowloris: server threads {threads_idle} idle, {threads} under siege; \
         {} attacking sockets opened, {} closed by the server",
        siege.opened.load(Ordering::SeqCst),
        siege.closed.load(Ordering::SeqCst)
    );
    assert!(
        threads <= threads_idle + 64 + 16,
        "{threads} threads (median; idle: {threads_idle}, samples {samples:?}): more than \
         the 64 unauthenticated connections allowed"
    );
    assert!(
        siege.closed.load(Ordering::SeqCst) >= 64,
        "the server kept more than 64 unauthenticated connections"
    );
    drop(siege);
    let log = hsm.stderr();
    assert!(log.contains("reason=connection_limit"), "{log}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn slowloris_deadlines_close_silent_dripping_and_never_logged_in_peers() {
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--login-timeout-ms",
        "1000",
        "--frame-timeout-ms",
        "1000",
        "--idle-timeout",
        "30",
    ]);
    let addr = hsm.addr().to_string();
    let window = |d: Option<Duration>, what: &str| {
        let d = d.unwrap_or_else(|| panic!("{what}: still open after the wait"));
        assert!(
            d >= Duration::from_millis(700) && d < Duration::from_millis(2500),
            "{what}: closed after {d:?}, the deadline is 1 s"
        );
    };

    // A silent socket (plain or TLS is not even known yet).
    let silent_start = Instant::now();
    let mut silent = Raw::connect(&addr);
    // One dripping a TLS record, one dripping a frame, a byte per 100 ms.
    let drippers: Vec<_> = [DRIP_TLS, DRIP_PLAIN]
        .into_iter()
        .map(|script| {
            let start = Instant::now();
            let mut r = Raw::connect(&addr);
            let mut w = r.0.try_clone().unwrap();
            std::thread::spawn(move || {
                for b in script.iter().cycle().take(60) {
                    if w.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::spawn(move || r.closed_after(start, Duration::from_secs(5)))
        })
        .collect();
    // One that says Hello and keeps pinging, but never logs in.
    let mut chatty = Raw::connect(&addr);
    assert!(chatty.hello());
    let chatty_start = Instant::now();
    let mut pings = 0;
    while chatty.ask_ok(&Request::Ping) {
        pings += 1;
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            chatty_start.elapsed() < Duration::from_secs(5),
            "never closed"
        );
    }
    window(Some(chatty_start.elapsed()), "Hello and pings, no login");
    assert!(pings >= 5, "{pings} pings answered before the deadline");
    window(
        silent.closed_after(silent_start, Duration::from_secs(5)),
        "silent socket",
    );
    for (i, d) in drippers.into_iter().enumerate() {
        window(d.join().unwrap(), &format!("dripping socket {i}"));
    }

    // Logged in: no login deadline (idle for 2 s, then it still answers),
    // but a frame must still come whole within its deadline.
    let mut user = Raw::logged_in(&addr);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        user.ask_ok(&Request::Ping),
        "a logged-in idle connection is kept"
    );
    let mut w = user.0.try_clone().unwrap();
    let drip_start = Instant::now();
    std::thread::spawn(move || {
        for b in DRIP_PLAIN.iter().cycle().take(60) {
            if w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    window(
        user.closed_after(drip_start, Duration::from_secs(5)),
        "a logged-in connection dripping a frame",
    );
    for reason in ["reason=login_timeout", "reason=frame_timeout"] {
        let until = Instant::now() + Duration::from_secs(2);
        while !hsm.stderr().contains(reason) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(hsm.stderr().contains(reason), "{reason}:\n{}", hsm.stderr());
    }
}

#[test]
fn slowloris_caps_per_address_and_on_threads_hold_with_a_client_still_served() {
    let t = token();
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--max-connections",
        "16",
        "--max-unauthenticated",
        "8",
        "--max-connections-per-address",
        "12",
        // One user holds the address's 12 (its cap defaults to 8 here).
        "--max-connections-per-user",
        "16",
    ]);
    let addr = hsm.addr().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let threads_idle = hsm.status_field("Threads");
    // Ten logged-in connections of a legitimate application.
    let mut users: Vec<Raw> = (0..10).map(|_| Raw::logged_in(&addr)).collect();
    // Then a hundred silent sockets from another address: they take turns
    // in 8 places (--max-unauthenticated), never in the first address's.
    let siege = Siege::start(&addr, Some("127.0.0.2"), 100, 0, Duration::from_millis(50));
    while siege.opened.load(Ordering::SeqCst) < 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            hsm.status_field("Threads")
        })
        .collect();
    samples.sort_unstable();
    // (The median: a thread whose connection just closed may still be
    // finishing.)
    let threads = samples[2];
    assert!(
        threads <= threads_idle + 16 + 2 * 8,
        "{threads} threads (idle {threads_idle}) for 16 connections + 8 unauthenticated"
    );
    // The logged-in ones are never the ones closed to make room.
    for (i, u) in users.iter_mut().enumerate() {
        assert!(
            u.ask_ok(&Request::Ping),
            "logged-in connection {i} was closed"
        );
    }
    // A client of the first address still gets in.
    let took = module_logs_in_and_signs(&t, &addr);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(siege);
    // Two more logged-in connections: the address holds its 12, all
    // logged in; a thirteenth is refused at once.
    std::thread::sleep(Duration::from_millis(200));
    users.push(Raw::logged_in(&addr));
    users.push(Raw::logged_in(&addr));
    let extra_start = Instant::now();
    let mut extra = Raw::connect(&addr);
    let closed = extra.closed_after(extra_start, Duration::from_secs(3));
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "a 13th connection from an address holding 12 logged-in ones: {closed:?}"
    );
    // Closing one makes room again.
    drop(users.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = Raw::connect(&addr);
    assert!(again.hello() && again.login(USER, PIN));
    t.reinitialize(&[]).expect("back to the defaults");
}

/// A connection from loopback address `from` (127.0.0.2, ...).
fn connect_from(addr: &str, from: &str) -> std::io::Result<TcpStream> {
    let to: std::net::SocketAddr = addr.parse().expect("address");
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("address");
    sock.bind(&local.into())?;
    sock.connect(&to.into())?;
    Ok(sock.into())
}

#[test]
fn slowloris_login_attempts_waiting_their_turn_do_not_hold_threads() {
    let t = token();
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--max-connections",
        "32",
        "--max-unauthenticated",
        "16",
    ]);
    let addr = hsm.addr().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let threads_idle = hsm.status_field("Threads");
    // From 127.0.0.2 to 127.0.0.17: connections that say Hello and try a
    // wrong password, as fast as they can, never reading the answer. Past a few failures
    // each attempt waits its turn (seconds): a thread held per attempt,
    // unless the server lets go of the ones it ends.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (st, n, a) = (stop.clone(), sent.clone(), addr.clone());
    let attacker = std::thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        let mut frames = vec![0u8; 512];
        let h = wire::encode_frame(
            &Request::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                app: [1; 16],
            },
            &mut frames,
        )
        .unwrap();
        let mut i = 0u32;
        while !st.load(Ordering::SeqCst) {
            i += 1;
            let user = format!("nobody{i}");
            let mut f = frames[..h].to_vec();
            let mut login = vec![0u8; 256];
            let l = wire::encode_frame(
                &Request::Login {
                    user: &user,
                    password: Secret(b"wrong"),
                },
                &mut login,
            )
            .unwrap();
            f.extend_from_slice(&login[..l]);
            let from = format!("127.0.0.{}", 2 + i % 16);
            if let Ok(mut s) = connect_from(&a, &from) {
                if s.write_all(&f).is_ok() {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                held.push_back(s);
                if held.len() > 100 {
                    held.pop_front();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_millis(2500));
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            hsm.status_field("Threads")
        })
        .collect();
    samples.sort_unstable();
    let took = module_logs_in_and_signs(&t, &addr);
    stop.store(true, Ordering::SeqCst);
    attacker.join().unwrap();
    eprintln!(
        "slowloris: {} login attempts sent; server threads {samples:?} (idle {threads_idle}); \
         login and sign took {took:?}",
        sent.load(Ordering::SeqCst)
    );
    assert!(sent.load(Ordering::SeqCst) > 100);
    assert!(
        samples[2] <= threads_idle + 32 + 2 * 16,
        "threads {samples:?}: more than --max-connections + 2 x --max-unauthenticated"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn slowloris_a_session_used_before_login_still_works_after_the_login_deadline() {
    let t = token();
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--login-timeout-ms",
        "500",
    ]);
    let b = session_at(&t, hsm.addr(), USER);
    // A call before login connects session B (random numbers need no login).
    b.generate_random_vec(16)
        .expect("C_GenerateRandom before login");
    let a = t.pkcs11.open_rw_session(t.slot).expect("session A");
    // B's connection has not logged in: the server closes it at 500 ms.
    std::thread::sleep(Duration::from_millis(1000));
    a.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("C_Login on session A");
    // B logs in on its next call, over a new connection.
    let (_, key) = b
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec())],
            &[Attribute::Sign(true)],
        )
        .expect("session B after its first connection was closed");
    b.sign(&Mechanism::Ecdsa, key, &[1u8; 32]).expect("sign");
    assert!(hsm.stderr().contains("reason=login_timeout"));
    drop((a, b));
    t.reinitialize(&[]).expect("back to the defaults");
}
