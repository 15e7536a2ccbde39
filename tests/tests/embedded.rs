//! The firmware path on the host: `hsmlink-transport-embedded` over a std
//! implementation of embedded-nal (`std-embedded-nal`), against the real
//! `hsmlink-hsm dev` server. No PKCS#11 module here: the gateway API drives
//! the core directly, as firmware does. OpenSSL checks every signature.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use embedded_nal::{nb, TcpClientStack, TcpErrorKind};
use hsmlink_core::ck::{ckm, cko, ckr};
use hsmlink_core::wire::Mechanism;
use hsmlink_tests::verify::{ecdsa_verifies, unwrap_ec_point};
use hsmlink_tests::{Hsm, PIN, USER};
use hsmlink_transport_embedded::gateway::{Config, Curve, Gateway, Resources, Session};
use hsmlink_transport_embedded::tcp::{TcpConnector, TcpLink};
use hsmlink_transport_embedded::{Clock, Connector, Policy, SharedStack};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};

/// Milliseconds since creation; waits sleep a little.
struct StdClock(Instant);

impl Clock for StdClock {
    fn now(&self) -> u32 {
        self.0.elapsed().as_millis() as u32
    }
    fn wait(&self) {
        thread::sleep(Duration::from_micros(100));
    }
}

/// std-embedded-nal's stack, with a switch that severs every socket open so
/// far (each send or receive on them fails from then on), as a gateway sees
/// a connection die.
#[derive(Default)]
struct Severable {
    inner: std_embedded_nal::Stack,
    generation: u32,
}

type InnerError = <std_embedded_nal::Stack as TcpClientStack>::Error;

struct SeverableSocket {
    inner: <std_embedded_nal::Stack as TcpClientStack>::TcpSocket,
    generation: u32,
}

#[derive(Debug)]
enum SeverableError {
    Inner(InnerError),
    Severed,
}

impl embedded_nal::TcpError for SeverableError {
    fn kind(&self) -> TcpErrorKind {
        match self {
            SeverableError::Inner(e) => e.kind(),
            SeverableError::Severed => TcpErrorKind::PipeClosed,
        }
    }
}

impl Severable {
    fn sever_all(&mut self) {
        self.generation += 1;
    }

    fn check(&self, socket: &SeverableSocket) -> nb::Result<(), SeverableError> {
        if socket.generation == self.generation {
            Ok(())
        } else {
            Err(nb::Error::Other(SeverableError::Severed))
        }
    }
}

fn inner<T>(r: nb::Result<T, InnerError>) -> nb::Result<T, SeverableError> {
    r.map_err(|e| e.map(SeverableError::Inner))
}

impl TcpClientStack for Severable {
    type TcpSocket = SeverableSocket;
    type Error = SeverableError;

    fn socket(&mut self) -> Result<SeverableSocket, SeverableError> {
        Ok(SeverableSocket {
            inner: self.inner.socket().map_err(SeverableError::Inner)?,
            generation: self.generation,
        })
    }

    fn connect(
        &mut self,
        socket: &mut SeverableSocket,
        remote: SocketAddr,
    ) -> nb::Result<(), SeverableError> {
        inner(self.inner.connect(&mut socket.inner, remote))
    }

    fn send(
        &mut self,
        socket: &mut SeverableSocket,
        data: &[u8],
    ) -> nb::Result<usize, SeverableError> {
        self.check(socket)?;
        inner(self.inner.send(&mut socket.inner, data))
    }

    fn receive(
        &mut self,
        socket: &mut SeverableSocket,
        buf: &mut [u8],
    ) -> nb::Result<usize, SeverableError> {
        self.check(socket)?;
        inner(self.inner.receive(&mut socket.inner, buf))
    }

    fn close(&mut self, socket: SeverableSocket) -> Result<(), SeverableError> {
        self.inner
            .close(socket.inner)
            .map_err(SeverableError::Inner)
    }
}

type HostLink<'a> = TcpLink<'a, Severable, StdClock>;
type HostSession<'g, 'r, 'a> = Session<'g, 'r, TcpConnector<'a, Severable, StdClock>, 2048>;

const POLICY: Policy = Policy {
    connect_attempts: 3,
    connect_timeout: 5_000,
    retry_pause: 100,
    io_timeout: 30_000,
};

/// The public key of `public_key` as OpenSSL sees it (P-256).
fn p256_public_key(session: &HostSession<'_, '_, '_>, public_key: u64) -> PKey<Public> {
    let mut der = [0u8; 80];
    let n = session
        .ec_point(public_key, &mut der)
        .expect("CKA_EC_POINT");
    let point = unwrap_ec_point(&der[..n]);
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = EcPoint::from_bytes(&group, &point, &mut ctx).expect("a point on P-256");
    let key = EcKey::from_public_key(&group, &point).unwrap();
    key.check_key().expect("a valid public key");
    PKey::from_ec_key(key).unwrap()
}

#[test]
fn gateway_signs_through_the_real_hsm_and_openssl_verifies() {
    let hsm = Hsm::start_dev(USER, PIN);
    let addr: SocketAddr = hsm.addr().parse().expect("a socket address");

    let stack = SharedStack::new(Severable::default());
    let clock = StdClock(Instant::now());
    let connector = TcpConnector::new(&stack, &clock, addr, POLICY);
    let resources: Resources<HostLink<'_>, 2, 2048> = Resources::new();
    let gateway = Gateway::new(
        &resources,
        connector,
        &Config::new(USER, *b"embedded-e2e-app"),
    )
    .unwrap();
    let session = gateway.open_session().unwrap();

    // Log in: a wrong password is refused, the right one accepted.
    assert_eq!(session.login(b"not the password"), Err(ckr::PIN_INCORRECT));
    assert!(!gateway.logged_in());
    session
        .login(PIN.as_bytes())
        .expect("login with the user's password");
    assert!(gateway.logged_in());

    // No key yet; generate a persistent P-256 pair, then find it by label.
    let label = b"gateway-e2e-p256";
    assert_eq!(session.find_key(cko::PRIVATE_KEY, label), Ok(None));
    let pair = session
        .generate_ec_key_pair(Curve::P256, label, true)
        .expect("EC P-256 key pair");
    assert_eq!(
        session.find_key(cko::PRIVATE_KEY, label),
        Ok(Some(pair.private))
    );
    assert_eq!(
        session.find_key(cko::PUBLIC_KEY, label),
        Ok(Some(pair.public))
    );
    assert_eq!(
        session.find_or_generate_ec_key(Curve::P256, label),
        Ok(pair.private)
    );
    let public = p256_public_key(&session, pair.public);

    // Hash-then-sign, hashed in the core: OpenSSL verifies, and refuses the
    // signature for other data.
    let message = b"temperature=21.5C;door=closed;seq=1842";
    let mut signature = [0u8; 64];
    let n = session
        .sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            pair.private,
            message,
            &mut signature,
        )
        .expect("CKM_ECDSA_SHA256");
    assert_eq!(n, 64);
    assert!(ecdsa_verifies(
        &public,
        Some(MessageDigest::sha256()),
        message,
        &signature
    ));
    assert!(!ecdsa_verifies(
        &public,
        Some(MessageDigest::sha256()),
        b"tampered",
        &signature
    ));

    // Raw ECDSA over a digest made on the host.
    let digest = openssl::sha::sha256(message);
    let n = session
        .sign(
            &Mechanism::plain(ckm::ECDSA),
            pair.private,
            &digest,
            &mut signature,
        )
        .expect("CKM_ECDSA");
    assert!(ecdsa_verifies(&public, None, &digest, &signature[..n]));

    // A buffer too short is refused without leaving an operation behind.
    let mut short = [0u8; 63];
    assert_eq!(
        session.sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            pair.private,
            message,
            &mut short
        ),
        Err(ckr::BUFFER_TOO_SMALL)
    );
    // The private key's secret never leaves the HSM.
    let mut value = [0u8; 64];
    assert_eq!(
        session.attribute(pair.private, hsmlink_core::ck::cka::VALUE, &mut value),
        Err(ckr::ATTRIBUTE_SENSITIVE)
    );

    // The connection dies: the next signature reconnects, logs in again with
    // the kept password and still verifies (the key is a token object).
    stack.with(Severable::sever_all).unwrap();
    let n = session
        .sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            pair.private,
            message,
            &mut signature,
        )
        .expect("a signature after the socket was severed");
    assert!(ecdsa_verifies(
        &public,
        Some(MessageDigest::sha256()),
        message,
        &signature[..n]
    ));

    // A session key dies with its connection.
    let ephemeral = session
        .generate_ec_key_pair(Curve::P256, b"gateway-e2e-ephemeral", false)
        .expect("session key pair");
    session
        .sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            ephemeral.private,
            message,
            &mut signature,
        )
        .expect("signature with a session key");
    stack.with(Severable::sever_all).unwrap();
    assert_eq!(
        session.sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            ephemeral.private,
            message,
            &mut signature
        ),
        Err(ckr::KEY_HANDLE_INVALID)
    );
    assert_eq!(
        session.find_key(cko::PRIVATE_KEY, b"gateway-e2e-ephemeral"),
        Ok(None)
    );

    // Logging out forgets the password: no more signatures.
    session.logout().unwrap();
    assert!(!gateway.logged_in());
    assert_eq!(
        session.sign(
            &Mechanism::plain(ckm::ECDSA_SHA256),
            pair.private,
            message,
            &mut signature
        ),
        Err(ckr::USER_NOT_LOGGED_IN)
    );
}

#[test]
fn unreachable_hsm_is_a_device_error_within_the_policy() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stack = SharedStack::new(Severable::default());
    let clock = StdClock(Instant::now());
    let connector = TcpConnector::new(&stack, &clock, addr, POLICY);
    assert!(connector.connect(None).is_err());
    let resources: Resources<HostLink<'_>, 1, 2048> = Resources::new();
    let gateway = Gateway::new(&resources, connector, &Config::new(USER, [9; 16])).unwrap();
    let session = gateway.open_session().unwrap();
    let start = Instant::now();
    assert_eq!(session.login(PIN.as_bytes()), Err(ckr::DEVICE_ERROR));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!gateway.logged_in());
}
