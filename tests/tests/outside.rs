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
