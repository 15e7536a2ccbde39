//! Helpers shared by the service tests (crash, lockout, isolation,
//! postgres, at_rest): the `hsmlink-hsm` command line, a persistent server
//! with a passphrase, the module pointed at it as one user, and a raw login
//! from another loopback address.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsmlink_core::wire::{self, Request, Response, Secret, PROTOCOL_VERSION};
use hsmlink_tests::{hsm_binary, Hsm, TempDir, Token};

/// The operator passphrase of the test stores.
pub const PASSPHRASE: &str = "a long operator passphrase for tests";

/// Runs `hsmlink-hsm ARGS` with extra environment variables.
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(hsm_binary());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("HSMLINK_PASSPHRASE");
    c.output().expect("run hsmlink-hsm")
}

/// Runs `hsmlink-hsm ARGS`, which must succeed; returns its stdout.
#[track_caller]
pub fn cli_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = cli(args, env);
    assert!(
        out.status.success(),
        "hsmlink-hsm {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `hsmlink-hsm ARGS`, which must fail; returns its stderr.
#[track_caller]
pub fn cli_err(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = cli(args, env);
    assert!(
        !out.status.success(),
        "hsmlink-hsm {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `user add` on a data folder (or `--postgres URL`: pass `["--postgres", url]`).
pub fn add_user(store: &[&str], name: &str, password: &str) {
    let mut args = vec!["user", "add"];
    args.extend_from_slice(store);
    args.extend_from_slice(&["--password-env", "HSMLINK_TEST_NEW_PASSWORD", name]);
    cli_ok(&args, &[("HSMLINK_TEST_NEW_PASSWORD", password)]);
}

/// A passphrase file outside the data folder.
pub struct Secrets {
    dir: TempDir,
}

impl Secrets {
    pub fn new() -> Secrets {
        let dir = TempDir::new("secrets");
        std::fs::write(dir.path().join("passphrase"), format!("{PASSPHRASE}\n"))
            .expect("write passphrase file");
        std::fs::write(dir.path().join("wrong"), "not the passphrase\n").expect("write");
        Secrets { dir }
    }

    pub fn passphrase_file(&self) -> PathBuf {
        self.dir.path().join("passphrase")
    }

    pub fn wrong_file(&self) -> PathBuf {
        self.dir.path().join("wrong")
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts `hsmlink-hsm serve --data DATA --listen 127.0.0.1:0
/// --passphrase-file FILE EXTRA...`.
pub fn serve(data: &Path, secrets: &Secrets, extra: &[&str]) -> Hsm {
    let file = secrets.passphrase_file();
    let mut args = vec![
        "serve",
        "--data",
        path_str(data),
        "--listen",
        "127.0.0.1:0",
        "--passphrase-file",
        path_str(&file),
    ];
    args.extend_from_slice(extra);
    Hsm::start(&args)
}

/// Points the module at `addr` as `user` and opens a read/write session
/// (not logged in).
pub fn session_at(t: &Token, addr: &str, user: &str) -> Session {
    t.reinitialize(&[("HSMLINK_ADDR", Some(addr)), ("HSMLINK_USER", Some(user))])
        .expect("C_Initialize");
    t.rw_session()
}

/// Points the module at `addr` as `user` and logs in with `password`.
#[track_caller]
pub fn login_at(t: &Token, addr: &str, user: &str, password: &str) -> Session {
    let s = session_at(t, addr, user);
    s.login(UserType::User, Some(&AuthPin::new(password.into())))
        .unwrap_or_else(|e| panic!("C_Login as {user}: {e}"));
    s
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, read.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

/// One login over a raw plain-TCP connection of the wire protocol (another
/// client than this process's module), from 127.0.0.1: `None` for success,
/// else the CKR.
pub fn raw_login(addr: &str, user: &str, password: &str) -> Option<u64> {
    match login_from(addr, "127.0.0.1", user, password) {
        CKR_OK => None,
        rv => Some(rv),
    }
}

/// A login from loopback address `from` (127.0.0.2, ...), speaking the wire
/// protocol directly: the server's answer (`CKR_OK` as 0).
pub fn login_from(addr: &str, from: &str, user: &str, password: &str) -> u64 {
    let to: SocketAddr = addr.parse().expect("address");
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).expect("bind a loopback address");
    sock.connect(&to.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut ask = |r: &Request<'_>| -> u64 {
        let mut buf = vec![0u8; 1024];
        let n = wire::encode_frame(r, &mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        let mut h = [0u8; 4];
        s.read_exact(&mut h).expect("a reply");
        let mut body = vec![0u8; u32::from_le_bytes(h) as usize];
        s.read_exact(&mut body).unwrap();
        let rv = match wire::decode::<Response<'_>>(&body).unwrap() {
            Response::Ok | Response::Hello { .. } => 0,
            Response::Error(rv) => rv,
            other => panic!("unexpected {other:?}"),
        };
        rv
    };
    assert_eq!(
        ask(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 65536,
            app: [3; 16],
        }),
        0
    );
    ask(&Request::Login {
        user,
        password: Secret(password.as_bytes()),
    })
}

pub const CKR_OK: u64 = 0;
pub const CKR_PIN_INCORRECT: u64 = 0xa0;
pub const CKR_PIN_LOCKED: u64 = 0xa4;
