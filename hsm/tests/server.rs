//! The server over real TCP, and the command line.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hsmlink_core::ck::{cka, ckm, cko, ckr};
use hsmlink_core::wire::{self, Mechanism, Op, Request, Response, HEADER_LEN, PROTOCOL_VERSION};
use hsmlink_hsm::conn::Reply;
use hsmlink_hsm::Server;

/// A client speaking frames over TCP.
struct Tcp {
    s: TcpStream,
}

impl Tcp {
    fn connect(addr: SocketAddr) -> Tcp {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Tcp { s }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn read_reply(&mut self) -> Option<Reply> {
        let mut h = [0u8; HEADER_LEN];
        self.s.read_exact(&mut h).ok()?;
        let len = wire::frame_len(h, 1 << 20).unwrap();
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        Some(owned(wire::decode::<Response<'_>>(&body).unwrap()))
    }

    fn req(&mut self, r: &Request<'_>) -> Reply {
        let mut buf = vec![0u8; 1 << 16];
        let n = wire::encode_frame(r, &mut buf).unwrap();
        self.send_raw(&buf[..n]);
        self.read_reply().expect("a reply")
    }

    fn start(addr: SocketAddr, user: &str, pw: &[u8]) -> Tcp {
        let mut t = Tcp::connect(addr);
        assert!(matches!(
            t.req(&Request::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                app: APP
            }),
            Reply::Hello {
                version: PROTOCOL_VERSION,
                ..
            }
        ));
        assert_eq!(
            t.req(&Request::Login {
                user,
                password: wire::Secret(pw)
            }),
            Reply::Ok
        );
        t
    }

    /// Whether the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

fn in_process_server() -> SocketAddr {
    Server::bind(hsm(), "127.0.0.1:0").unwrap().spawn().unwrap()
}

#[test]
fn tcp_session_sign_and_verify() {
    let addr = in_process_server();
    let mut t = Tcp::start(addr, "alice", b"alice-pw");
    let (pubk, privk) = match t.req(&Request::GenerateKeyPair {
        mechanism: Mechanism::plain(ckm::EC_KEY_PAIR_GEN),
        public: tpl(&[(cka::EC_PARAMS, P256.to_vec())]),
        private: tpl(&[]),
    }) {
        Reply::KeyPair { public, private } => (public, private),
        r => panic!("{r:?}"),
    };
    let digest = [3u8; 32];
    let sig = match t.req(&Request::CryptoOneShot {
        op: Op::Sign,
        mechanism: Mechanism::plain(ckm::ECDSA),
        key: privk,
        data: &digest,
        signature: &[],
    }) {
        Reply::Data(d) => d,
        r => panic!("{r:?}"),
    };
    assert_eq!(sig.len(), 64);
    assert_eq!(
        t.req(&Request::CryptoOneShot {
            op: Op::Verify,
            mechanism: Mechanism::plain(ckm::ECDSA),
            key: pubk,
            data: &digest,
            signature: &sig,
        }),
        Reply::Ok
    );
    // Bob over another connection sees nothing of it.
    let mut b = Tcp::start(addr, "bob", b"bob-pw");
    assert_eq!(
        b.req(&Request::GetObjectSize { object: privk }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    // A malformed body gets an error and the connection lives on.
    t.send_raw(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    assert!(matches!(t.read_reply(), Some(Reply::Error(_))));
    assert_eq!(t.req(&Request::Ping), Reply::Ok);
    // A frame longer than announced closes the connection.
    t.send_raw(&(10u32 << 20).to_le_bytes());
    assert!(t.read_reply().is_none());
}

#[test]
fn tcp_garbage_before_hello_closes() {
    let addr = in_process_server();
    let mut t = Tcp::connect(addr);
    t.send_raw(&[2, 0, 0, 0, 0x7f, 0x7f]);
    assert!(matches!(t.read_reply(), Some(Reply::Error(_))));
    assert!(t.closed());
    // Random streams: error or close, and the server lives on.
    let mut seed = 99u64;
    for _ in 0..50 {
        let mut t = Tcp::connect(addr);
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 33) as u8
            })
            .collect();
        let _ = t.s.write_all(&bytes);
        let _ = t.s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = t.s.read_to_end(&mut sink);
    }
    let mut ok = Tcp::start(addr, "alice", b"alice-pw");
    assert_eq!(ok.req(&Request::Ping), Reply::Ok);
}

#[test]
fn connection_close_destroys_session_objects() {
    let addr = in_process_server();
    for graceful in [true, false] {
        for _ in 0..10 {
            close_then_look(addr, graceful);
        }
    }
}

/// A session object dies with its connection. A graceful close (shutdown
/// of the write side, then EOF from the server) returns only once the
/// server has destroyed the connection's session objects; after an abrupt
/// close another connection normally finds them gone at once too (the
/// server probes the owner's socket), but the network gives no ordering
/// guarantee between two connections, hence the bounded wait.
fn close_then_look(addr: SocketAddr, graceful: bool) {
    let mut a = Tcp::start(addr, "alice", b"alice-pw");
    let mut keep = Tcp::start(addr, "alice", b"alice-pw");
    let h = match a.req(&Request::CreateObject {
        template: tpl(&data_object("tcp-session")),
    }) {
        Reply::Object(h) => h,
        r => panic!("{r:?}"),
    };
    assert!(matches!(
        keep.req(&Request::GetObjectSize { object: h }),
        Reply::Size(_)
    ));
    if graceful {
        a.s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(a.closed(), "the server closes after the client");
        assert_eq!(
            keep.req(&Request::GetObjectSize { object: h }),
            Reply::Error(ckr::OBJECT_HANDLE_INVALID)
        );
    } else {
        drop(a);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while keep.req(&Request::GetObjectSize { object: h })
            != Reply::Error(ckr::OBJECT_HANDLE_INVALID)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "session object outlived its connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    match keep.req(&Request::FindObjects {
        template: tpl(&[(cka::LABEL, b"tcp-session".to_vec())]),
        max: 10,
    }) {
        Reply::Objects { handles, .. } => assert!(handles.is_empty()),
        r => panic!("{r:?}"),
    }
}

// ---- the binary ----

const BIN: &str = env!("CARGO_BIN_EXE_hsmlink-hsm");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary and wait for its "listening on ADDR" line.
fn start(args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Proc(child), addr)
}

fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments may exit before reading its
    // input: the write then fails (broken pipe), which is no test failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn dev_command_prints_its_address_and_serves() {
    let (_p, addr) = start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        "demo",
        "--password",
        "demo-pw",
    ]);
    assert_ne!(addr.port(), 0);
    let mut t = Tcp::start(addr, "demo", b"demo-pw");
    assert_eq!(t.req(&Request::Ping), Reply::Ok);
    let mut w = Tcp::connect(addr);
    w.req(&Request::Hello {
        version: PROTOCOL_VERSION,
        max_frame: 4096,
        app: APP,
    });
    assert_eq!(
        w.req(&Request::Login {
            user: "demo",
            password: wire::Secret(b"nope")
        }),
        Reply::Error(ckr::PIN_INCORRECT)
    );
}

#[test]
fn serve_persists_token_objects_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, out, err) = cli(&["user", "add", "--data", data, "carol"], "carol-pw\n");
    assert!(ok, "{err}");
    assert!(out.contains("carol"));
    let (ok, _, err) = cli(&["user", "add", "--data", data, "carol"], "x\n");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(&["user", "add", "--data", data, "bad:name"], "x\n");
    assert!(!ok && err.contains("invalid user name"), "{err}");
    let (ok, out, _) = cli(&["user", "list", "--data", data], "");
    assert!(
        ok && out.lines().any(|l| l.starts_with("carol\tactive")),
        "{out}"
    );
    // A database file, and no password in clear in it.
    let db = std::fs::read(dir.path().join(hsmlink_hsm::store::DB_FILE)).unwrap();
    assert!(!db.windows(8).any(|w| w == b"carol-pw"));

    let (token_obj, privk, pubk, session_obj);
    {
        let (_p, addr) = start(&["serve", "--data", data, "--listen", "127.0.0.1:0"]);
        // The data folder is locked while the server runs: admin commands
        // go through its admin socket, and a second server is refused.
        let (ok, out, err) = cli(&["user", "list", "--data", data], "");
        assert!(ok && out.contains("carol"), "{err}");
        let (ok, out, err) = cli(&["status", "--data", data], "");
        assert!(ok && out.contains("uptime_secs="), "{err}");
        let (ok, _, err) = cli(&["serve", "--data", data, "--listen", "127.0.0.1:0"], "");
        assert!(!ok && err.contains("in use"), "{err}");
        let mut t = Tcp::start(addr, "carol", b"carol-pw");
        let mut tt = data_object("persist-me");
        tt.push((cka::TOKEN, b(true)));
        token_obj = match t.req(&Request::CreateObject { template: tpl(&tt) }) {
            Reply::Object(h) => h,
            r => panic!("{r:?}"),
        };
        session_obj = match t.req(&Request::CreateObject {
            template: tpl(&data_object("forget-me")),
        }) {
            Reply::Object(h) => h,
            r => panic!("{r:?}"),
        };
        (pubk, privk) = match t.req(&Request::GenerateKeyPair {
            mechanism: Mechanism::plain(ckm::RSA_PKCS_KEY_PAIR_GEN),
            public: tpl(&[(cka::MODULUS_BITS, ul(1024)), (cka::TOKEN, b(true))]),
            private: tpl(&[(cka::TOKEN, b(true)), (cka::LABEL, b"rsa-key".to_vec())]),
        }) {
            Reply::KeyPair { public, private } => (public, private),
            r => panic!("{r:?}"),
        };
        // Killed without warning (Proc drop sends SIGKILL).
    }
    let (_p, addr) = start(&["serve", "--data", data, "--listen", "127.0.0.1:0"]);
    let mut t = Tcp::start(addr, "carol", b"carol-pw");
    let found = |t: &mut Tcp, label: &[u8]| match t.req(&Request::FindObjects {
        template: tpl(&[(cka::LABEL, label.to_vec())]),
        max: 10,
    }) {
        Reply::Objects { handles, .. } => handles.to_vec(),
        r => panic!("{r:?}"),
    };
    assert_eq!(found(&mut t, b"persist-me"), vec![token_obj]);
    assert!(found(&mut t, b"forget-me").is_empty());
    assert_eq!(found(&mut t, b"rsa-key"), vec![privk]);
    assert_eq!(
        t.req(&Request::GetObjectSize {
            object: session_obj
        }),
        Reply::Error(ckr::OBJECT_HANDLE_INVALID)
    );
    let sig = match t.req(&Request::CryptoOneShot {
        op: Op::Sign,
        mechanism: Mechanism::plain(ckm::RSA_PKCS),
        key: privk,
        data: b"after restart",
        signature: &[],
    }) {
        Reply::Data(d) => d,
        r => panic!("{r:?}"),
    };
    assert_eq!(
        t.req(&Request::CryptoOneShot {
            op: Op::Verify,
            mechanism: Mechanism::plain(ckm::RSA_PKCS),
            key: pubk,
            data: b"after restart",
            signature: &sig,
        }),
        Reply::Ok
    );
    // New handles never collide with old ones, session handles included.
    let h = match t.req(&Request::CreateObject {
        template: tpl(&[(cka::CLASS, ul(cko::DATA))]),
    }) {
        Reply::Object(h) => h,
        r => panic!("{r:?}"),
    };
    assert!(h > session_obj.max(privk).max(pubk), "{h}");
    // An admin deletes a token object while the server runs (through its
    // admin socket): gone at once for the client too.
    let (ok, out, err) = cli(
        &["objects", "delete", "--data", data, &token_obj.to_string()],
        "",
    );
    assert!(ok && out.contains("deleted"), "{err}");
    assert!(found(&mut t, b"persist-me").is_empty());
    let (ok, _, err) = cli(
        &["objects", "delete", "--data", data, &token_obj.to_string()],
        "",
    );
    assert!(!ok && err.contains("no token object"), "{err}");
    drop(t);
    drop(_p);
    let (ok, out, _) = cli(&["objects", "list", "--data", data], "");
    assert!(ok);
    assert!(
        out.contains("rsa-key") && out.contains("private-key") && !out.contains("persist-me"),
        "{out}"
    );
    let (ok, _, _) = cli(&["user", "remove", "--data", data, "carol"], "");
    assert!(ok);
    let (ok, out, _) = cli(&["objects", "list", "--data", data], "");
    assert!(ok && !out.contains("rsa-key"), "{out}");
}

#[test]
fn help_everywhere_with_examples() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["dev", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "list", "--help"],
        &["user", "remove", "--help"],
        &["objects", "--help"],
        &["objects", "list", "--help"],
        &["objects", "delete", "--help"],
        &["user", "passwd", "--help"],
        &["user", "unlock", "--help"],
        &["backup", "--help"],
        &["restore", "--help"],
        &["status", "--help"],
        &["fingerprint", "--help"],
        &["keyring", "--help"],
        &["keyring", "change", "--help"],
        &["keyring", "show", "--help"],
    ] {
        let (ok, out, err) = cli(args, "");
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains("Example"), "{args:?} has no example:\n{out}");
    }
    let _ = Arc::new(());
}
