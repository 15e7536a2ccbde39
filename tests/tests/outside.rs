//! Attacks on a running server from outside, over real TCP, by clients that
//! speak the wire protocol directly (no module): what a hostile peer holds
//! on the server (memory, connection slots) and whether a legitimate client
//! is still served. Test names start with `quota_`, `slowloris_` or
//! `lockout_` so that the suites of those names select them.

mod hsm_service;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_service::*;
use hsmlink_core::wire::{self, Request, Response, Secret, PROTOCOL_VERSION};
use hsmlink_tests::{token, Hsm, TempDir, PIN, USER};

const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const CKR_DEVICE_MEMORY: u64 = 0x31;

/// A raw protocol client: frames written by hand.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw(s)
    }

    /// The server's answer to `r` (`CKR_OK` as 0), or `None` if it closed
    /// the connection.
    fn ask(&mut self, r: &Request<'_>) -> Option<u64> {
        let mut buf = vec![0u8; 70_000];
        let n = wire::encode_frame(r, &mut buf).expect("encode");
        self.0.write_all(&buf[..n]).ok()?;
        let mut h = [0u8; 4];
        self.0.read_exact(&mut h).ok()?;
        let mut body = vec![0u8; u32::from_le_bytes(h) as usize];
        self.0.read_exact(&mut body).ok()?;
        let rv = match wire::decode::<Response<'_>>(&body).expect("a reply") {
            Response::Ok | Response::Hello { .. } => 0,
            Response::Error(rv) => rv,
            other => panic!("unexpected {other:?}"),
        };
        Some(rv)
    }

    fn hello(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        let rv = r.ask(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 65536,
            app: [5; 16],
        });
        assert_eq!(rv, Some(0), "Hello");
        r
    }

    fn login(&mut self, user: &str, password: &str) -> Option<u64> {
        self.ask(&Request::Login {
            user,
            password: Secret(password.as_bytes()),
        })
    }
}

/// A user name of `len` bytes, distinct for each `n`.
fn long_name(n: usize, len: usize) -> String {
    let mut s = format!("{n:08}-");
    s.extend(std::iter::repeat_n('x', len - s.len()));
    s
}

#[test]
fn quota_login_names_of_60_kib_hold_no_server_memory_and_flood_no_log() {
    // No login delay: the attacker is taken to have many addresses (one
    // address alone is slowed to an attempt every 5 s).
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--login-delay-ms",
        "0",
    ]);
    let addr = hsm.addr().to_string();
    // A first failure of an ordinary name sets up what every failure uses.
    assert_eq!(
        Raw::hello(&addr).login("nobody", "x"),
        Some(CKR_PIN_INCORRECT)
    );
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = hsm.status_field("VmRSS");

    // 4 connections × 100 logins, each as another name of 60,000 bytes:
    // remembered as they are, the failures would hold 2 × 24 MB.
    const LEN: usize = 60_000;
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // The login deadline closes a connection that has not
                // logged in: the attacker opens another.
                let mut r = Raw::hello(&addr);
                for i in 0..100 {
                    let name = long_name(w * 1000 + i, LEN);
                    let rv = match r.login(&name, "guess") {
                        Some(rv) => rv,
                        None => {
                            r = Raw::hello(&addr);
                            r.login(&name, "guess").expect("an answer")
                        }
                    };
                    assert_eq!(rv, CKR_PIN_INCORRECT, "login {i} of worker {w}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let took = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = hsm.status_field("VmRSS");
    let grew_kib = rss_after.saturating_sub(rss_before);
    eprintln!(
        "quota: 400 logins with 60 KB names took {took:?}; server RSS {rss_before} KiB -> \
         {rss_after} KiB (+{grew_kib} KiB)"
    );
    assert!(
        grew_kib < 8 * 1024,
        "400 failed logins with long names grew the server by {grew_kib} KiB"
    );
    // The real user still logs in, and the log holds no name of that size.
    assert_eq!(Raw::hello(&addr).login(USER, PIN), Some(0));
    let log = hsm.stderr();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 1024,
        "a log line of {longest} bytes: the names are logged whole"
    );
    assert!(log.contains("reason=bad_name"), "the refusal is logged");
}

/// Log in through the real module as `user` and sign: the time it took.
fn module_logs_in_and_signs(
    t: &hsmlink_tests::Token,
    addr: &str,
    user: &str,
    pin: &str,
) -> Duration {
    let s = session_at(t, addr, user);
    let start = Instant::now();
    s.login(UserType::User, Some(&AuthPin::new(pin.into())))
        .unwrap_or_else(|e| panic!("C_Login as {user} while another user holds connections: {e}"));
    let (_, key) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec())],
            &[Attribute::Sign(true)],
        )
        .expect("C_GenerateKeyPair");
    let sig = s.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).expect("C_Sign");
    assert_eq!(sig.len(), 64);
    start.elapsed()
}

#[test]
fn slowloris_a_valid_user_holding_every_connection_does_not_keep_another_user_out() {
    let t = token();
    let data = TempDir::new("outside-users");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "mallory", "mallory-pw");
    add_user(&["--data", d], "bob", "bob-pw");
    let hsm = serve(
        data.path(),
        &secrets,
        &[
            "--max-connections",
            "16",
            "--max-unauthenticated",
            "4",
            "--max-connections-per-user",
            "8",
        ],
    );
    let addr = hsm.addr().to_string();

    // Mallory, a valid user, opens connections and logs each in, from
    // addresses of her own, until the server stops granting logins.
    let mut held = Vec::new();
    let mut refused = None;
    for n in 0..24 {
        let from = format!("127.0.0.{}", 2 + n % 8);
        let Ok(s) = connect_from(&addr, &from) else {
            continue;
        };
        let mut r = Raw(s);
        r.0.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        if r.ask(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 65536,
            app: [6; 16],
        }) != Some(0)
        {
            continue;
        }
        match r.login("mallory", "mallory-pw") {
            Some(0) => held.push(r),
            other => {
                refused = other;
                break;
            }
        }
    }
    eprintln!(
        "slowloris: mallory holds {} logged-in connections, then {refused:x?}",
        held.len()
    );
    assert_eq!(held.len(), 8, "the per-user cap");
    assert_eq!(refused, Some(CKR_DEVICE_MEMORY), "a login past the cap");
    // Her connections stay logged in and usable (nothing of hers is ended).
    assert_eq!(held[0].ask(&Request::Logout), Some(0));
    assert_eq!(held[0].login("mallory", "mallory-pw"), Some(0));

    // Bob, from 127.0.0.1, logs in and signs promptly, three times.
    for round in 0..3 {
        let took = module_logs_in_and_signs(&t, &addr, "bob", "bob-pw");
        eprintln!("slowloris: bob's login and sign took {took:?} (round {round})");
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    assert!(hsm.stderr().contains("reason=user_connection_limit"));
    drop(held);

    // Through the module, a session past the cap answers
    // CKR_DEVICE_MEMORY (no hang, no panic), and the ones within it work.
    let first = login_at(&t, &addr, "bob", "bob-pw");
    let sessions: Vec<_> = (0..10)
        .map(|_| t.pkcs11.open_rw_session(t.slot).expect("C_OpenSession"))
        .collect();
    let mut results = Vec::new();
    for s in std::iter::once(&first).chain(&sessions) {
        results.push(
            s.generate_random_vec(16)
                .map(|_| ())
                .map_err(|e| hsmlink_tests::rv_of::<()>(Err(e))),
        );
    }
    eprintln!("slowloris: bob's 11 sessions: {results:?}");
    let mut want = vec![Ok(()); 8];
    want.extend([Err(cryptoki::error::RvError::DeviceMemory); 3]);
    assert_eq!(results, want);
    // Closed sessions give their places back.
    drop(sessions);
    std::thread::sleep(Duration::from_millis(300));
    let again = t.pkcs11.open_rw_session(t.slot).expect("C_OpenSession");
    again
        .generate_random_vec(16)
        .expect("a session within the cap again");
    drop(again);
    drop(first);
    t.reinitialize(&[]).expect("back to the defaults");
}

/// A client socket bound to loopback address `from` (127.0.0.2, ...).
fn connect_from(addr: &str, from: &str) -> std::io::Result<TcpStream> {
    let to: std::net::SocketAddr = addr.parse().expect("address");
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("address");
    sock.bind(&local.into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}

#[test]
fn slowloris_churn_from_199_addresses_does_not_keep_a_client_of_127_0_0_1_out() {
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
    let addr = hsm.addr().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let threads_idle = hsm.status_field("Threads");
    let rss_idle = hsm.status_field("VmRSS");
    // From 127.0.0.2 to 127.0.0.200, two sockets each: one starts a TLS
    // ClientHello and goes silent, the other says Hello (so that it looks
    // active) and goes silent. Whichever the server closes is opened again
    // at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (st, op, a) = (stop.clone(), opened.clone(), addr.clone());
    let attacker = std::thread::spawn(move || {
        let mut hello = vec![0u8; 256];
        let n = wire::encode_frame(
            &Request::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                app: [7; 16],
            },
            &mut hello,
        )
        .unwrap();
        hello.truncate(n);
        // A TLS handshake record announcing 512 bytes, and its first 8.
        let client_hello: &[u8] = &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0,
        ];
        let open = |slot: usize| -> Option<TcpStream> {
            let from = format!("127.0.0.{}", 2 + slot / 2);
            let mut s = connect_from(&a, &from).ok()?;
            let first = if slot.is_multiple_of(2) {
                client_hello
            } else {
                &hello[..]
            };
            s.write_all(first).ok()?;
            s.set_nonblocking(true).ok()?;
            op.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(s)
        };
        let mut socks: Vec<Option<TcpStream>> = (0..398).map(open).collect();
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            for (slot, s) in socks.iter_mut().enumerate() {
                let mut b = [0u8; 512];
                let gone = match s {
                    Some(sock) => loop {
                        match sock.read(&mut b) {
                            Ok(0) => break true,
                            Ok(_) => continue,
                            Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
                        }
                    },
                    None => true,
                };
                if gone {
                    *s = open(slot);
                }
            }
        }
    });
    while opened.load(std::sync::atomic::Ordering::SeqCst) < 398 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..3 {
        let took = module_logs_in_and_signs(&t, &addr, USER, PIN);
        eprintln!(
            "slowloris: churn from 199 addresses: login and sign took {took:?} (round {round})"
        );
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            hsm.status_field("Threads")
        })
        .collect();
    samples.sort_unstable();
    let threads = samples[2];
    let rss = hsm.status_field("VmRSS");
    let opened_total = opened.load(std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    attacker.join().expect("attacker");
    eprintln!(
        "slowloris: churn from 199 addresses: {opened_total} connections opened; server threads \
         {threads_idle} idle, {threads} under attack; RSS {rss_idle} KiB idle, {rss} KiB under attack"
    );
    // --max-connections (256) + 2 × --max-unauthenticated (64).
    assert!(threads <= threads_idle + 256 + 128, "{threads} threads");
    assert!(
        rss.saturating_sub(rss_idle) < 64 * 1024,
        "RSS {rss_idle} KiB -> {rss} KiB"
    );
}

/// In session `s`: a multi-part AES-GCM decryption fed up to `parts` parts
/// of 32 KiB, until the server refuses one: the bytes it took (and keeps
/// buffered, unless refused), and the refusal.
fn buffer_until_refused(
    s: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
    parts: usize,
) -> (usize, Option<cryptoki::error::RvError>) {
    let mut iv = [3u8; 12];
    let gcm = Mechanism::AesGcm(
        cryptoki::mechanism::aead::GcmParams::new(&mut iv, b"", 128.into()).unwrap(),
    );
    s.decrypt_init(&gcm, key).expect("C_DecryptInit");
    let part = vec![0x5au8; 32 * 1024];
    let mut took = 0;
    for _ in 0..parts {
        match s.decrypt_update(&part) {
            Ok(_) => took += part.len(),
            Err(e) => return (took, Some(hsmlink_tests::rv_of::<()>(Err(e)))),
        }
    }
    (took, None)
}

/// In session `s`: 16 KiB session objects until the server refuses one:
/// the bytes of those it took.
fn objects_until_refused(
    s: &cryptoki::session::Session,
) -> (usize, Option<cryptoki::error::RvError>) {
    let mut took = 0;
    for _ in 0..4096 {
        let value = vec![0xa5u8; 16 * 1024];
        match s.create_object(&[
            Attribute::Class(cryptoki::object::ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Value(value),
        ]) {
            Ok(_) => took += 16 * 1024,
            Err(e) => return (took, Some(hsmlink_tests::rv_of::<()>(Err(e)))),
        }
    }
    (took, None)
}

#[test]
fn quota_one_user_filling_every_connection_holds_a_bounded_total() {
    const MIB: usize = 1 << 20;
    let t = token();
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
    ]);
    let addr = hsm.addr().to_string();
    let first = login_at(&t, &addr, USER, PIN);
    let key = hsmlink_tests::keys::aes(&first, 16, false);
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = hsm.status_field("VmRSS") as usize;
    // 48 connections (a session each), each filled with session objects
    // and a decryption buffering what the server lets it.
    let start = Instant::now();
    let sessions: Vec<_> = (0..48)
        .map(|_| t.pkcs11.open_rw_session(t.slot).expect("session"))
        .collect();
    let (mut objects, mut buffered) = (0, 0);
    // Half of them first buffer a decryption each (1 MiB at most each),
    // then all of them make session objects.
    for (i, s) in sessions.iter().enumerate().take(24) {
        // 31 parts: under the 1 MiB one decryption may buffer, so the
        // decryption stays running, its bytes buffered.
        let (b, e) = buffer_until_refused(s, key, 31);
        assert_eq!(e, None, "session {i}");
        buffered += b;
    }
    let mut refused = 0;
    for (i, s) in sessions.iter().enumerate() {
        let (o, e) = objects_until_refused(s);
        assert_eq!(
            e,
            Some(cryptoki::error::RvError::DeviceMemory),
            "session {i}"
        );
        objects += o;
        refused += usize::from(o == 0);
    }
    let rss = hsm.status_field("VmRSS") as usize;
    let grew = rss.saturating_sub(rss_before) * 1024;
    eprintln!(
        "quota: one user, 48 connections: {} MiB of session objects and {} MiB buffered taken \
         in {:?}; server RSS {} MiB -> {} MiB (+{} MiB)",
        objects / MIB,
        buffered / MIB,
        start.elapsed(),
        rss_before * 1024 / MIB,
        rss * 1024 / MIB,
        grew / MIB
    );
    // --max-user-session-bytes (64 MiB) for all of the user's connections.
    assert!(
        objects + buffered <= 64 * MIB,
        "{} MiB held by one user",
        (objects + buffered) / MIB
    );
    assert!(grew < 3 * 64 * MIB, "the server grew by {} MiB", grew / MIB);
    assert!(buffered >= 20 * MIB, "{} MiB buffered", buffered / MIB);
    assert!(refused > 0, "every connection made objects: no user cap");
    // The user's connections gone, its bytes are its own again.
    drop(sessions);
    std::thread::sleep(Duration::from_millis(300));
    let again = t.pkcs11.open_rw_session(t.slot).expect("session");
    let (o, e) = objects_until_refused(&again);
    assert_eq!(e, Some(cryptoki::error::RvError::DeviceMemory));
    assert!(
        o >= 3 * MIB,
        "{} MiB of objects on a new connection",
        o / MIB
    );
    drop(again);
    assert!(hsm.stderr().contains("reason=session_bytes"));
    drop(first);
    t.reinitialize(&[]).expect("back to the defaults");
}

/// CPU time (user + system) the process `pid` has used, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Clock ticks of 1/100 s (USER_HZ, fixed at 100 on Linux).
    ticks * 10
}

/// A TLS client (the certificate is not checked: the attacker does not
/// care).
fn tls_client() -> openssl::ssl::SslConnector {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    b.build()
}

/// A TLS handshake with the server at `addr`, completed.
fn tls_handshake(
    c: &openssl::ssl::SslConnector,
    addr: &str,
) -> Option<openssl::ssl::SslStream<TcpStream>> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.connect("localhost", s).ok()
}

#[test]
fn slowloris_tls_handshakes_then_silence_and_a_huge_client_hello_hold_nothing_for_long() {
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
        "1000",
    ]);
    let addr = hsm.addr().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let threads_idle = hsm.status_field("Threads");
    let rss_idle = hsm.status_field("VmRSS");

    // 400 full TLS handshakes, each then silent: the server's CPU per
    // handshake, and what the silent ones hold.
    let cpu_before = cpu_ms(hsm.pid());
    let start = Instant::now();
    let mut silent = Vec::new();
    let client = tls_client();
    for _ in 0..400 {
        if let Some(s) = tls_handshake(&client, &addr) {
            silent.push(s);
        }
    }
    let took = start.elapsed();
    let cpu = cpu_ms(hsm.pid()) - cpu_before;
    let threads = hsm.status_field("Threads");
    let rss = hsm.status_field("VmRSS");
    eprintln!(
        "slowloris: {} TLS handshakes in {took:?}, server CPU {cpu} ms ({} us each); \
         {threads} threads (idle {threads_idle}), RSS {rss_idle} -> {rss} KiB",
        silent.len(),
        cpu * 1000 / silent.len().max(1) as u64
    );
    assert!(silent.len() >= 300, "{} handshakes done", silent.len());
    // Past --max-unauthenticated (64), the least active goes: the threads
    // stay bounded by --max-connections + 2 x --max-unauthenticated.
    assert!(threads <= threads_idle + 256 + 128, "{threads} threads");
    // The module still gets in and signs.
    let took = module_logs_in_and_signs(&t, &addr, USER, PIN);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The login deadline (1 s here) closes the silent ones, TLS done or not.
    std::thread::sleep(Duration::from_millis(1800));
    let open = silent
        .iter_mut()
        .filter_map(|s| {
            s.get_ref().set_nonblocking(true).unwrap();
            // (Session tickets the server sent may still be unread.)
            let mut b = [0u8; 4096];
            loop {
                match s.get_mut().read(&mut b) {
                    Ok(0) => return None,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(()),
                    Err(_) => return None,
                }
            }
        })
        .count();
    assert_eq!(
        open, 0,
        "silent TLS connections still open past the login deadline"
    );
    drop(silent);

    // A ClientHello record announcing a 16 MiB handshake message, then
    // records of 16 KiB as fast as the server takes them.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut first = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
    first.resize(5 + 0x4000, 0x41);
    let mut sent = 0usize;
    let mut ended = s.write_all(&first).is_err();
    let record: Vec<u8> = [&[0x16u8, 0x03, 0x03, 0x40, 0x00][..], &[0x41; 0x4000]].concat();
    while !ended && sent < 64 << 20 && start.elapsed() < Duration::from_secs(10) {
        ended = s.write_all(&record).is_err();
        sent += record.len();
    }
    let took = start.elapsed();
    let rss_after = hsm.status_field("VmRSS");
    eprintln!(
        "slowloris: a 16 MiB ClientHello: {} KiB sent before the server closed, after {took:?}; \
         RSS {rss_after} KiB",
        sent / 1024
    );
    assert!(ended, "the server kept reading a 16 MiB ClientHello");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        rss_after.saturating_sub(rss_idle) < 64 * 1024,
        "RSS {rss_idle} -> {rss_after} KiB"
    );
}

#[test]
fn quota_search_cursors_count_in_the_users_bytes() {
    let t = token();
    let hsm = Hsm::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        USER,
        "--password",
        PIN,
        "--max-user-session-bytes",
        "262144",
    ]);
    let addr = hsm.addr().to_string();
    let first = login_at(&t, &addr, USER, PIN);
    // 4,000 token objects: a search for all of them keeps a cursor of
    // 4,000 handles (32 KB or more) on the server for C_FindObjects.
    let label = Attribute::Label(b"many".to_vec());
    for n in 0..4000u32 {
        first
            .create_object(&[
                Attribute::Class(cryptoki::object::ObjectClass::DATA),
                Attribute::Token(true),
                label.clone(),
                Attribute::Value(n.to_le_bytes().to_vec()),
            ])
            .expect("a small token object");
    }
    // 16 connections each start that search and keep it open.
    let sessions: Vec<_> = (0..16)
        .map(|_| t.pkcs11.open_rw_session(t.slot).expect("session"))
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for s in &sessions {
        let r = s
            .iter_objects(std::slice::from_ref(&label))
            .and_then(|mut it| it.next().transpose().map(|first| (it, first)));
        match r {
            Ok((it, Some(_))) => open.push(it),
            Ok((_, None)) => panic!("the search found nothing"),
            Err(e) => {
                assert_eq!(
                    hsmlink_tests::rv_of::<()>(Err(e)),
                    cryptoki::error::RvError::DeviceMemory
                );
                refused += 1;
            }
        }
    }
    eprintln!(
        "quota: 16 searches of 4,000 objects: {} kept open, {refused} refused",
        open.len()
    );
    // 256 KiB for the user: at most 8 cursors of 4,000 handles.
    assert!(
        refused >= 8,
        "{refused} refused: the cursors are not counted"
    );
    assert!(!open.is_empty());
    // A search run to its end keeps nothing; the ones closed give back.
    drop(open);
    for s in &sessions {
        assert_eq!(
            s.find_objects(std::slice::from_ref(&label))
                .expect("find")
                .len(),
            4000
        );
    }
    drop(sessions);
    drop(first);
    assert!(hsm.stderr().contains("what=find"));
    t.reinitialize(&[]).expect("back to the defaults");
}
