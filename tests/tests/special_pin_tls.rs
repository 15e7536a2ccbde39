//! Security is decided per dialled host, also for the host inside a special
//! PIN (`user:password@host`): with the default (loopback, plain) address,
//! a special PIN naming another machine must not log in over plain TCP. A
//! listener on this machine's non-loopback address records every byte it
//! receives: without a pin or CA for that host it must see no connection at
//! all (and never the password); with a per-host pin in the configuration
//! file the login works, over TLS, and the password is still never seen.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::{hsm_binary, rv_of, token, Hsm, TempDir, PIN, USER};

/// The module's log, set before the harness first initializes the module
/// (the logger is installed once per process).
fn log_file() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let p = std::env::temp_dir().join(format!(
            "hsmlink-special-pin-tls-{}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        let p = p.to_str().expect("utf-8 temp path").to_string();
        std::env::set_var("HSMLINK_LOG_FILE", &p);
        p
    })
}

fn log_text() -> String {
    std::fs::read_to_string(log_file()).unwrap_or_default()
}

/// This machine's address on its network (not loopback).
fn machine_ip() -> IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind UDP");
    // A UDP "connection" sends nothing; it picks the outgoing interface.
    socket
        .connect("192.0.2.1:9")
        .or_else(|_| socket.connect("10.255.255.255:9"))
        .expect("this test needs a non-loopback network interface");
    let ip = socket.local_addr().expect("local addr").ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "this test needs a non-loopback address, got {ip}"
    );
    ip
}

/// A relay on this machine's network address that records every byte it
/// receives from the module, and forwards both ways to `upstream`.
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

fn recorder(upstream: String) -> Recorder {
    let listener = TcpListener::bind((machine_ip(), 0)).expect("bind on the machine's address");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (record, count) = (seen.clone(), connections.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let record = record.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Recorder {
        addr,
        seen,
        connections,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn special(password: &str, host: &str) -> AuthPin {
    AuthPin::new(format!("{USER}:{password}@{host}").into())
}

#[test]
fn special_pin_tls_another_host_without_pin_or_ca_never_gets_the_password() {
    log_file();
    let t = token();
    // The plain dev server behind the recorder: over plain TCP the login
    // would work (the recorder connects to it from loopback).
    let rec = recorder(t.addr().to_string());
    for tls in [None, Some("off"), Some("auto")] {
        t.reinitialize(&[
            ("HSMLINK_ADDR", None),
            ("HSMLINK_USER", None),
            ("HSMLINK_SPECIAL_PIN", Some("1")),
            ("HSMLINK_TLS", tls),
        ])
        .expect("C_Initialize with HSMLINK_SPECIAL_PIN=1 and the default address");
        let session = t.rw_session();
        let rv = rv_of(session.login(UserType::User, Some(&special(PIN, &rec.addr))));
        assert_eq!(
            rv,
            RvError::DeviceError,
            "HSMLINK_TLS={tls:?}: C_Login naming {} without a pin or CA",
            rec.addr
        );
        session
            .get_session_info()
            .expect("the session stays usable");
        drop(session);
    }
    assert_eq!(
        rec.connections.load(Ordering::SeqCst),
        0,
        "the module connected to {} (not loopback) without TLS",
        rec.addr
    );
    assert!(!contains(&rec.seen.lock().unwrap(), PIN.as_bytes()));
    let log = log_text();
    assert!(
        log.contains("login refused")
            && log.contains(&rec.addr)
            && log.contains("password was not sent"),
        "a clear log line names the host and the reason:\n{log}"
    );
    assert!(!log.contains(PIN), "the password is in the log");
    t.reinitialize(&[]).expect("back to the defaults");
}

fn hsm_cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(hsm_binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run hsmlink-hsm");
    assert!(
        out.status.success(),
        "hsmlink-hsm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn special_pin_tls_per_host_pin_in_the_config_file_logs_in_over_tls() {
    log_file();
    let t = token();
    // A second HSM, with TLS, holding the same user.
    let dir = TempDir::new("special-pin-tls");
    let data = dir.path().to_str().expect("utf-8 path");
    hsm_cli(
        &["user", "add", "--data", data, "--password-env", "PW", USER],
        &[("PW", PIN)],
    );
    let pin = hsm_cli(&["fingerprint", "--data", data], &[]);
    let other = Hsm::start_serve(dir.path());
    let rec = recorder(other.addr().to_string());
    let config = dir.path().join("hsmlink.toml");
    let wrong = "00:".repeat(31) + "00";

    for (entry, works) in [(pin.as_str(), true), (wrong.as_str(), false)] {
        std::fs::write(
            &config,
            format!("[hosts.\"{}\"]\ntls_pin = \"{entry}\"\n", rec.addr),
        )
        .expect("write config");
        t.reinitialize(&[
            ("HSMLINK_ADDR", None),
            ("HSMLINK_USER", None),
            ("HSMLINK_SPECIAL_PIN", Some("1")),
            ("HSMLINK_CONFIG", Some(config.to_str().unwrap())),
        ])
        .expect("C_Initialize with a [hosts] table");
        let session = t.rw_session();
        let result = session.login(UserType::User, Some(&special(PIN, &rec.addr)));
        if works {
            result.expect("C_Login through the per-host pin");
            let object = session
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(false),
                    Attribute::Value(b"over TLS".to_vec()),
                ])
                .expect("C_CreateObject on the special PIN's HSM");
            session.destroy_object(object).expect("C_DestroyObject");
        } else {
            assert_eq!(rv_of(result), RvError::DeviceError, "a wrong per-host pin");
        }
        drop(session);
    }
    assert!(
        rec.connections.load(Ordering::SeqCst) >= 2,
        "both logins went to the special PIN's host"
    );
    let seen = rec.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        !contains(&seen, PIN.as_bytes()),
        "the password crossed the wire in clear"
    );

    // Without a [hosts] entry, the global pin verifies the host too.
    t.reinitialize(&[
        ("HSMLINK_ADDR", None),
        ("HSMLINK_USER", None),
        ("HSMLINK_SPECIAL_PIN", Some("1")),
        ("HSMLINK_TLS_PIN", Some(&pin)),
    ])
    .expect("C_Initialize with a global pin");
    let session = t.rw_session();
    session
        .login(UserType::User, Some(&special(PIN, &rec.addr)))
        .expect("C_Login through the global pin");
    drop(session);
    assert!(!contains(&rec.seen.lock().unwrap(), PIN.as_bytes()));
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn special_pin_tls_plain_tcp_to_a_non_loopback_address_never_carries_the_password() {
    log_file();
    let t = token();
    let rec = recorder(t.addr().to_string());
    // HSMLINK_TLS=off asks for plain TCP; the configured address is this
    // machine's network address, not loopback: whatever the setting, the
    // password must not cross it in clear.
    t.reinitialize(&[
        ("HSMLINK_ADDR", Some(&rec.addr)),
        ("HSMLINK_TLS", Some("off")),
    ])
    .expect("C_Initialize with HSMLINK_TLS=off and a non-loopback address");
    let session = t.rw_session();
    // Public functions carry no secret: they still work over plain TCP.
    session
        .generate_random_vec(16)
        .expect("C_GenerateRandom in a public session");
    let rv = rv_of(session.login(UserType::User, Some(&AuthPin::new(PIN.into()))));
    assert_eq!(
        rv,
        RvError::DeviceError,
        "C_Login over plain TCP to {}",
        rec.addr
    );
    assert_eq!(
        session
            .get_session_info()
            .expect("C_GetSessionInfo")
            .session_state(),
        cryptoki::session::SessionState::RwPublic,
        "the refused login left the session public"
    );
    drop(session);

    // The same with a special PIN naming that (configured) endpoint.
    t.reinitialize(&[
        ("HSMLINK_ADDR", Some(&rec.addr)),
        ("HSMLINK_USER", None),
        ("HSMLINK_SPECIAL_PIN", Some("1")),
        ("HSMLINK_TLS", Some("off")),
    ])
    .expect("C_Initialize with a special PIN, HSMLINK_TLS=off, a non-loopback address");
    let session = t.rw_session();
    let rv = rv_of(session.login(UserType::User, Some(&special(PIN, &rec.addr))));
    assert_eq!(rv, RvError::DeviceError, "special PIN naming {}", rec.addr);
    drop(session);

    let seen = rec.seen.lock().unwrap().clone();
    assert!(
        rec.connections.load(Ordering::SeqCst) >= 1 && !seen.is_empty(),
        "the relay saw the public traffic (so it would have seen a login)"
    );
    assert!(
        !contains(&seen, PIN.as_bytes()),
        "the password crossed a non-loopback link in clear"
    );
    let log = log_text();
    assert!(
        log.contains("login refused")
            && log.contains(&rec.addr)
            && log.contains("without TLS")
            && log.contains("password was not sent"),
        "a clear log line names the host and the reason:\n{log}"
    );
    assert!(!log.contains(PIN), "the password is in the log");
    t.reinitialize(&[]).expect("back to the defaults");
}
