//! The embedded transport on the host: std-embedded-nal's stack against
//! scripted TCP peers — timeouts, closed sockets, oversized frames,
//! connection retries, and a gateway that reconnects after its socket broke.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hsmlink_core::ck::{ckk, ckm, cko, ckr};
use hsmlink_core::wire::{
    decode, encode_frame, KeyInfo, Mechanism, Request, Response, HEADER_LEN, PROTOCOL_VERSION,
};
use hsmlink_transport_embedded::gateway::{Config, Gateway, Resources};
use hsmlink_transport_embedded::tcp::{TcpConnector, TcpLink};
use hsmlink_transport_embedded::{Clock, Connector, Link, LinkError, Policy, SharedStack};
use std_embedded_nal::Stack;

/// Milliseconds since creation; waits sleep a little.
struct StdClock(Instant);

impl StdClock {
    fn new() -> Self {
        StdClock(Instant::now())
    }
}

impl Clock for StdClock {
    fn now(&self) -> u32 {
        self.0.elapsed().as_millis() as u32
    }
    fn wait(&self) {
        thread::sleep(Duration::from_micros(200));
    }
}

const FAST: Policy = Policy {
    connect_attempts: 2,
    connect_timeout: 2_000,
    retry_pause: 50,
    io_timeout: 300,
};

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn write_response(s: &mut TcpStream, r: &Response<'_>) -> std::io::Result<()> {
    let mut frame = [0u8; 4096];
    let n = encode_frame(r, &mut frame).unwrap();
    s.write_all(&frame[..n])
}

#[test]
fn exchange_carries_one_frame_each_way() {
    let (l, addr) = listener();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let body = read_frame(&mut s).unwrap();
        assert_eq!(body, b"ping");
        // Answer in two pieces: the link must reassemble them.
        s.write_all(&[5, 0]).unwrap();
        thread::sleep(Duration::from_millis(20));
        s.write_all(&[0, 0, b'h', b'e', b'l', b'l', b'o']).unwrap();
        read_frame(&mut s)
    });
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, addr, FAST);
    let mut link = connector.connect(None).unwrap();
    let mut reply = [0u8; 64];
    let n = link.exchange(b"\x04\0\0\0ping", &mut reply).unwrap();
    assert_eq!(&reply[..n], b"hello");
    assert!(link.is_open());
    drop(link);
    // Dropping the link closed the socket: the server sees the end.
    assert_eq!(server.join().unwrap(), None);
}

#[test]
fn silent_peer_times_out_and_closes_the_link() {
    let (l, addr) = listener();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_frame(&mut s);
        // Never answer; wait until the client gives up and closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, addr, FAST);
    let mut link = connector.connect(None).unwrap();
    let mut reply = [0u8; 64];
    let start = Instant::now();
    assert_eq!(
        link.exchange(b"\x01\0\0\0x", &mut reply),
        Err(LinkError::Timeout)
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "waited {waited:?} for a 300 ms I/O timeout"
    );
    assert!(!link.is_open());
    assert_eq!(
        link.exchange(b"\x01\0\0\0x", &mut reply),
        Err(LinkError::Io)
    );
    server.join().unwrap();
}

#[test]
fn peer_closing_midway_is_an_io_error() {
    let (l, addr) = listener();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_frame(&mut s);
        // Half a header, then goodbye.
        s.write_all(&[9, 0]).unwrap();
    });
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, addr, FAST);
    let mut link = connector.connect(None).unwrap();
    let mut reply = [0u8; 64];
    assert_eq!(
        link.exchange(b"\x01\0\0\0x", &mut reply),
        Err(LinkError::Io)
    );
    assert!(!link.is_open());
    server.join().unwrap();
}

#[test]
fn oversized_reply_is_refused() {
    let (l, addr) = listener();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_frame(&mut s);
        s.write_all(&1_000_000u32.to_le_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, addr, FAST);
    let mut link = connector.connect(None).unwrap();
    let mut reply = [0u8; 64];
    assert_eq!(
        link.exchange(b"\x01\0\0\0x", &mut reply),
        Err(LinkError::FrameTooLong)
    );
    assert!(!link.is_open());
    drop(link);
    server.join().unwrap();
}

#[test]
fn refused_connections_are_retried_then_reported() {
    // A port nobody listens on.
    let (l, addr) = listener();
    drop(l);
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let policy = Policy {
        connect_attempts: 3,
        retry_pause: 100,
        ..FAST
    };
    let connector = TcpConnector::new(&stack, &clock, addr, policy);
    let start = Instant::now();
    assert_eq!(connector.connect(None).err(), Some(LinkError::Connect));
    // Three attempts, two pauses between them.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    // A host override that is not an address fails without trying.
    assert_eq!(
        connector.connect(Some("hsm.example")).err(),
        Some(LinkError::Connect)
    );
}

/// A scripted HSM: answers Hello, Login, FindObjects and signatures (in one
/// or two round trips); drops its first connection at its first signature.
/// Counts connections and logins.
struct FakeHsm {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    logins: Arc<AtomicUsize>,
}

fn fake_hsm() -> FakeHsm {
    let (l, addr) = listener();
    let connections = Arc::new(AtomicUsize::new(0));
    let logins = Arc::new(AtomicUsize::new(0));
    let (c, g) = (connections.clone(), logins.clone());
    thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { break };
            let nth = c.fetch_add(1, Ordering::SeqCst);
            let logins = g.clone();
            thread::spawn(move || serve(&mut s, nth, &logins));
        }
    });
    FakeHsm {
        addr,
        connections,
        logins,
    }
}

fn serve(s: &mut TcpStream, nth: usize, logins: &AtomicUsize) {
    let sig = [0x5a; 64];
    while let Some(body) = read_frame(s) {
        let request: Request<'_> = decode(&body).unwrap();
        let response = match request {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 4096,
                server: "fake",
            },
            Request::Login { user, password } => {
                assert_eq!(user, "gw");
                if password.0 == b"pw" {
                    logins.fetch_add(1, Ordering::SeqCst);
                    Response::Ok
                } else {
                    Response::Error(ckr::PIN_INCORRECT)
                }
            }
            Request::FindObjects { .. } => Response::Objects {
                handles: heapless::Vec::from_slice(&[42]).unwrap(),
                more: false,
            },
            // The first connection dies at its first signature.
            Request::CryptoInit { .. } | Request::CryptoOneShot { .. } if nth == 0 => return,
            Request::CryptoInit { key: 42, .. } => Response::KeyInfo(KeyInfo {
                class: cko::PRIVATE_KEY,
                key_type: ckk::EC,
                bits: 256,
            }),
            Request::CryptoOneShot { key: 42, data, .. } | Request::CryptoFinal { data, .. } => {
                // ECDSA_SHA256 is hashed in the module: a 32-byte digest.
                assert_eq!(data.len(), 32);
                Response::Data(&sig)
            }
            other => {
                eprintln!("fake HSM: unexpected {other:?}");
                Response::Error(ckr::FUNCTION_NOT_SUPPORTED)
            }
        };
        if write_response(s, &response).is_err() {
            return;
        }
    }
}

type StdLink<'a> = TcpLink<'a, Stack, StdClock>;

#[test]
fn gateway_reconnects_and_logs_in_again_after_a_dropped_socket() {
    let hsm = fake_hsm();
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, hsm.addr, FAST);
    let resources: Resources<StdLink<'_>, 2, 2048> = Resources::new();
    let gateway = Gateway::new(&resources, connector, &Config::new("gw", [1; 16])).unwrap();
    let session = gateway.open_session().unwrap();

    assert_eq!(session.login(b"wrong"), Err(ckr::PIN_INCORRECT));
    session.login(b"pw").unwrap();
    assert!(gateway.logged_in());
    let key = session.find_key(cko::PRIVATE_KEY, b"k").unwrap();
    assert_eq!(key, Some(42));

    // The HSM drops the socket at the first sign; the gateway reconnects,
    // logs in again and signs.
    let mut signature = [0u8; 64];
    let n = session
        .sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            42,
            b"hello",
            &mut signature,
        )
        .unwrap();
    assert_eq!(&signature[..n], &[0x5a; 64]);
    assert_eq!(hsm.connections.load(Ordering::SeqCst), 2);
    assert_eq!(hsm.logins.load(Ordering::SeqCst), 2);

    // A buffer too short is answered locally and leaves no operation active.
    let mut short = [0u8; 10];
    assert_eq!(
        session.sign(&Mechanism::plain(ckm::ECDSA_SHA256), 42, b"x", &mut short),
        Err(ckr::BUFFER_TOO_SMALL)
    );
    let n = session
        .sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            42,
            b"again",
            &mut signature,
        )
        .unwrap();
    assert_eq!(n, 64);

    // Sessions are bounded by the resources, and closed when dropped.
    let second = gateway.open_session().unwrap();
    assert_eq!(gateway.open_session().err(), Some(ckr::SESSION_COUNT));
    drop(second);
    drop(gateway.open_session().unwrap());
}

#[test]
fn without_reconnects_a_dropped_socket_is_a_device_error() {
    let hsm = fake_hsm();
    let stack = SharedStack::new(Stack);
    let clock = StdClock::new();
    let connector = TcpConnector::new(&stack, &clock, hsm.addr, FAST);
    let resources: Resources<StdLink<'_>, 1, 2048> = Resources::new();
    let config = Config {
        reconnects: 0,
        ..Config::new("gw", [2; 16])
    };
    let gateway = Gateway::new(&resources, connector, &config).unwrap();
    let session = gateway.open_session().unwrap();
    session.login(b"pw").unwrap();
    let mut signature = [0u8; 64];
    let mechanism = Mechanism::plain(ckm::ECDSA_SHA256);
    assert_eq!(
        session.sign(&mechanism, 42, b"hello", &mut signature),
        Err(ckr::DEVICE_ERROR)
    );
    // The next call reconnects by itself.
    assert_eq!(
        session.sign(&mechanism, 42, b"hello", &mut signature),
        Ok(64)
    );
    assert_eq!(hsm.connections.load(Ordering::SeqCst), 2);
}
