//! The token against a scripted in-memory HSM: call order, round trips,
//! length queries and the operation states of PKCS#11.

use host::sync::atomic::{AtomicUsize, Ordering};
use host::sync::Arc;
use host::vec::Vec;

use super::*;
use crate::ck::{ckk, ckm, cko};
use crate::link::LinkError;
use crate::wire::{decode, encode_frame, HEADER_LEN};

/// A fake HSM answering in memory; counts exchanges.
struct FakeLink {
    exchanges: Arc<AtomicUsize>,
    /// Fail the next exchange with this error (a dropped connection).
    fail_next: Arc<host::sync::Mutex<Option<LinkError>>>,
    identity: &'static str,
    logged_in: bool,
    /// Set by the test: the HSM voids this link's login (its user's
    /// password changed) before the next request.
    revoke: Arc<host::sync::atomic::AtomicBool>,
    op: Option<Op>,
    /// Replies of pipelined requests, in order.
    queue: host::collections::VecDeque<host::vec::Vec<u8>>,
    /// Updates seen by the current operation (a chunk starting with 0xEE
    /// fails).
    updates: usize,
}

const SIG_LEN: usize = 256;

impl Link for FakeLink {
    fn can_pipeline(&self) -> bool {
        true
    }

    fn send(&mut self, request: &[u8]) -> Result<(), LinkError> {
        let mut reply = vec![0u8; 16 * 1024];
        let n = self.exchange(request, &mut reply)?;
        reply.truncate(n);
        self.queue.push_back(reply);
        Ok(())
    }

    fn recv(&mut self, reply: &mut [u8]) -> Result<usize, LinkError> {
        let r = self.queue.pop_front().ok_or(LinkError::Io)?;
        reply[..r.len()].copy_from_slice(&r);
        Ok(r.len())
    }

    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        self.exchanges.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail_next.lock().unwrap().take() {
            return Err(e);
        }
        let req: Request<'_> = decode(&request[HEADER_LEN..]).map_err(|_| LinkError::Io)?;
        let sig = [0xAB; SIG_LEN];
        let handles: heapless::Vec<u64, MAX_FIND> = (1..=MAX_FIND as u64).collect();
        let resp = match req {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                server: self.identity,
            },
            Request::Login { password, .. } if password.0 == b"pw" => {
                self.logged_in = true;
                Response::Ok
            }
            Request::Login { .. } => Response::Error(ckr::PIN_INCORRECT),
            _ if self.logged_in && self.revoke.swap(false, Ordering::SeqCst) => {
                self.logged_in = false;
                Response::Error(ckr::USER_NOT_LOGGED_IN)
            }
            _ if !self.logged_in => Response::Error(ckr::USER_NOT_LOGGED_IN),
            Request::CryptoInit { op, key, mechanism } => {
                if key != 7 {
                    Response::Error(ckr::OBJECT_HANDLE_INVALID)
                } else {
                    self.op = Some(op);
                    self.updates = 0;
                    let aes = (ckm::AES_KEY_GEN..=ckm::AES_CMAC).contains(&mechanism.ty);
                    Response::KeyInfo(KeyInfo {
                        class: if aes {
                            cko::SECRET_KEY
                        } else {
                            cko::PRIVATE_KEY
                        },
                        key_type: if aes { ckk::AES } else { ckk::RSA },
                        bits: if aes { 256 } else { 2048 },
                    })
                }
            }
            Request::CryptoUpdate { data, .. } => {
                self.updates += 1;
                if data.first() == Some(&0xEE) {
                    Response::Error(ckr::DATA_INVALID)
                } else {
                    // "Encrypts" by echoing the chunk.
                    let n = data.len();
                    let mut frame = [0u8; 16 * 1024];
                    let m = encode_frame(&Response::Data(data), &mut frame)
                        .map_err(|_| LinkError::Io)?;
                    reply[..m - HEADER_LEN].copy_from_slice(&frame[HEADER_LEN..m]);
                    let _ = n;
                    return Ok(m - HEADER_LEN);
                }
            }
            Request::CryptoFinal { op, data, .. } => {
                if self.op.take() != Some(op) {
                    Response::Error(ckr::OPERATION_NOT_INITIALIZED)
                } else if data.len() > MAX_CHUNK {
                    Response::Error(ckr::DATA_LEN_RANGE)
                } else {
                    Response::Data(&sig)
                }
            }
            Request::CryptoOneShot { key, data, .. } => {
                if key != 7 {
                    Response::Error(ckr::KEY_HANDLE_INVALID)
                } else if data.len() > MAX_CHUNK {
                    Response::Error(ckr::DATA_LEN_RANGE)
                } else {
                    Response::Data(&sig)
                }
            }
            Request::DestroyObject { .. } => Response::Ok,
            Request::FindObjects { .. } => Response::Objects {
                handles: handles.clone(),
                more: true,
            },
            Request::FindNext { .. } => Response::Objects {
                handles: heapless::Vec::from_slice(&[99]).unwrap(),
                more: false,
            },
            _ => Response::Error(ckr::FUNCTION_NOT_SUPPORTED),
        };
        let mut frame = [0u8; 4096];
        let n = encode_frame(&resp, &mut frame).map_err(|_| LinkError::Io)?;
        let body = &frame[HEADER_LEN..n];
        reply[..body.len()].copy_from_slice(body);
        Ok(body.len())
    }
}

struct FakeConnector {
    exchanges: Arc<AtomicUsize>,
    fail_next: Arc<host::sync::Mutex<Option<LinkError>>>,
    connects: Arc<AtomicUsize>,
    /// What `Hello` answers: which HSM (and objects) a new link reaches.
    identity: Arc<host::sync::Mutex<&'static str>>,
    revoke: Arc<host::sync::atomic::AtomicBool>,
}

impl FakeConnector {
    fn new(exchanges: Arc<AtomicUsize>) -> Self {
        FakeConnector {
            exchanges,
            fail_next: Default::default(),
            connects: Default::default(),
            identity: Arc::new(host::sync::Mutex::new("fake-a")),
            revoke: Default::default(),
        }
    }
}

impl Connector for FakeConnector {
    type Link = FakeLink;
    fn connect(&self, _host: Option<&str>) -> Result<FakeLink, LinkError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(FakeLink {
            exchanges: self.exchanges.clone(),
            fail_next: self.fail_next.clone(),
            identity: *self.identity.lock().unwrap(),
            queue: Default::default(),
            updates: 0,
            logged_in: false,
            op: None,
            revoke: self.revoke.clone(),
        })
    }
}

type Slot = SessionSlot<FakeLink, spin::Mutex<()>, 4096>;

fn token(
    slots: &[Slot],
) -> (
    Token<'_, FakeConnector, spin::Mutex<()>, 4096>,
    Arc<AtomicUsize>,
) {
    let exchanges = Arc::new(AtomicUsize::new(0));
    let t = Token::new(
        FakeConnector::new(exchanges.clone()),
        [1; 16],
        slots,
        LoginConfig {
            user: Some("alice"),
            special_pin: false,
        },
    )
    .unwrap();
    (t, exchanges)
}

fn slots() -> Vec<Slot> {
    (0..4).map(|_| Slot::new()).collect()
}

const RSA: Mechanism<'static> = Mechanism::plain(ckm::SHA256_RSA_PKCS);

#[test]
fn opening_sessions_costs_no_round_trip_and_handles_are_not_reused() {
    let s = slots();
    let (t, ex) = token(&s);
    let a = t.open_session(true).unwrap();
    t.close_session(a).unwrap();
    let b = t.open_session(false).unwrap();
    assert_ne!(a, b, "a closed session's handle must not come back");
    assert_eq!(t.close_session(a), Err(ckr::SESSION_HANDLE_INVALID));
    assert_eq!(t.close_session(0), Err(ckr::SESSION_HANDLE_INVALID));
    assert_eq!(ex.load(Ordering::SeqCst), 0);
    for _ in 0..3 {
        t.open_session(true).unwrap();
    }
    assert_eq!(t.open_session(true), Err(ckr::SESSION_COUNT));
}

#[test]
fn object_functions_need_login_and_wrong_pin_is_reported() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    assert_eq!(
        t.crypto_init(h, Op::Sign, &RSA, 7),
        Err(ckr::USER_NOT_LOGGED_IN)
    );
    assert_eq!(t.find_init(h, &[]), Err(ckr::USER_NOT_LOGGED_IN));
    assert_eq!(ex.load(Ordering::SeqCst), 0, "refused locally");
    assert_eq!(t.login(h, cku::USER, b"bad"), Err(ckr::PIN_INCORRECT));
    assert!(!t.logged_in());
    t.login(h, cku::USER, b"pw").unwrap();
    assert_eq!(
        t.login(h, cku::USER, b"pw"),
        Err(ckr::USER_ALREADY_LOGGED_IN)
    );
    assert_eq!(
        t.login(h, cku::SO, b"pw"),
        Err(ckr::USER_ANOTHER_ALREADY_LOGGED_IN)
    );
    assert_eq!(t.session_info(h).unwrap().state, cks::RW_USER_FUNCTIONS);
    t.logout(h).unwrap();
    assert_eq!(t.logout(h), Err(ckr::USER_NOT_LOGGED_IN));
}

#[test]
fn a_login_the_hsm_voids_is_forgotten_for_every_session() {
    let s = slots();
    let (t, _) = token(&s);
    let a = t.open_session(true).unwrap();
    let b = t.open_session(true).unwrap();
    t.login(a, cku::USER, b"pw").unwrap();
    t.find_init(b, &[]).unwrap();
    t.connector.revoke.store(true, Ordering::SeqCst);
    assert_eq!(t.find_init(a, &[]), Err(ckr::USER_NOT_LOGGED_IN));
    assert!(!t.logged_in(), "the void login is forgotten");
    assert_eq!(t.session_info(b).unwrap().state, cks::RW_PUBLIC_SESSION);
    assert_eq!(t.find_init(b, &[]), Err(ckr::USER_NOT_LOGGED_IN));
    assert_eq!(t.logout(a), Err(ckr::USER_NOT_LOGGED_IN));
    // C_Login works again, without C_Logout, from either session; both
    // sessions work under it (b's link, authenticated under the void login,
    // is replaced).
    t.login(b, cku::USER, b"pw").unwrap();
    t.find_init(a, &[]).unwrap();
    t.find_init(b, &[]).unwrap();
}

#[test]
fn sign_costs_init_plus_one_exchange_and_length_queries_none() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    let before = ex.load(Ordering::SeqCst);
    assert_eq!(
        t.crypto(h, Op::Sign, b"msg", None),
        Ok(Len::Needed(SIG_LEN))
    );
    let mut short = [0u8; 10];
    assert_eq!(
        t.crypto(h, Op::Sign, b"msg", Some(&mut short)),
        Ok(Len::Needed(SIG_LEN))
    );
    assert_eq!(ex.load(Ordering::SeqCst), before, "size known locally");
    let mut sig = [0u8; SIG_LEN];
    assert_eq!(
        t.crypto(h, Op::Sign, b"msg", Some(&mut sig)),
        Ok(Len::Written(SIG_LEN))
    );
    assert_eq!(sig, [0xAB; SIG_LEN]);
    assert_eq!(ex.load(Ordering::SeqCst), before + 1);
    // The operation is over.
    assert_eq!(
        t.crypto(h, Op::Sign, b"msg", Some(&mut sig)),
        Err(ckr::OPERATION_NOT_INITIALIZED)
    );
}

#[test]
fn operation_states_follow_pkcs11() {
    let s = slots();
    let (t, _) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    assert_eq!(
        t.crypto_init(h, Op::Sign, &RSA, 8),
        Err(ckr::KEY_HANDLE_INVALID)
    );
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(
        t.crypto_init(h, Op::Sign, &RSA, 7),
        Err(ckr::OPERATION_ACTIVE)
    );
    assert_eq!(
        t.digest_init(h, &Mechanism::plain(ckm::SHA256)),
        Err(ckr::OPERATION_ACTIVE)
    );
    assert_eq!(t.find_init(h, &[]), Err(ckr::OPERATION_ACTIVE));
    // Multi-part then single-part is refused.
    t.crypto_update_no_output(h, Op::Sign, b"part").unwrap();
    let mut sig = [0u8; SIG_LEN];
    assert_eq!(
        t.crypto(h, Op::Sign, b"x", Some(&mut sig)),
        Err(ckr::OPERATION_ACTIVE)
    );
    assert_eq!(
        t.crypto_final(h, Op::Sign, Some(&mut sig)),
        Ok(Len::Written(SIG_LEN))
    );
    assert_eq!(t.find_final(h), Err(ckr::OPERATION_NOT_INITIALIZED));
    // Unknown mechanism, mechanism that cannot sign.
    assert_eq!(
        t.crypto_init(h, Op::Sign, &Mechanism::plain(0x9999), 7),
        Err(ckr::MECHANISM_INVALID)
    );
    assert_eq!(
        t.crypto_init(h, Op::Sign, &Mechanism::plain(ckm::AES_ECB), 7),
        Err(ckr::MECHANISM_INVALID)
    );
}

#[test]
fn digest_is_local_and_keeps_the_operation_on_a_length_query() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    t.digest_init(h, &Mechanism::plain(ckm::SHA256)).unwrap();
    assert_eq!(t.digest(h, b"abc", None), Ok(Len::Needed(32)));
    let mut d = [0u8; 32];
    t.digest_update(h, b"a").unwrap();
    t.digest_update(h, b"bc").unwrap();
    assert_eq!(t.digest_final(h, Some(&mut d)), Ok(Len::Written(32)));
    assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
    assert_eq!(ex.load(Ordering::SeqCst), 0);
    assert_eq!(
        t.digest_final(h, Some(&mut d)),
        Err(ckr::OPERATION_NOT_INITIALIZED)
    );
}

#[test]
fn find_fetches_batches_lazily() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    t.find_init(h, &[]).unwrap();
    let after_init = ex.load(Ordering::SeqCst);
    let mut out = [0u64; 10];
    assert_eq!(t.find(h, &mut out), Ok(10));
    assert_eq!(out[0], 1);
    assert_eq!(
        ex.load(Ordering::SeqCst),
        after_init,
        "served from the first batch"
    );
    let mut rest = [0u64; 100];
    assert_eq!(t.find(h, &mut rest), Ok(MAX_FIND - 10 + 1));
    assert_eq!(rest[MAX_FIND - 10], 99);
    assert_eq!(t.find(h, &mut rest), Ok(0));
    t.find_final(h).unwrap();
}

#[test]
fn special_pin_parses_user_password_and_host() {
    let s = slots();
    let t = Token::new(
        FakeConnector::new(Arc::new(AtomicUsize::new(0))),
        [1; 16],
        &s[..],
        LoginConfig {
            user: None,
            special_pin: true,
        },
    )
    .unwrap();
    let h = t.open_session(true).unwrap();
    assert_eq!(
        t.login(h, cku::USER, b"no-at-sign"),
        Err(ckr::PIN_INCORRECT)
    );
    assert_eq!(
        t.login(h, cku::USER, b"alice:wrong@h:1"),
        Err(ckr::PIN_INCORRECT)
    );
    t.login(h, cku::USER, b"alice:pw@127.0.0.1:4433").unwrap();
    assert!(t.logged_in());
}

#[test]
fn a_key_used_once_signs_in_one_exchange_per_signature() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let mut sig = [0u8; SIG_LEN];
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    t.crypto(h, Op::Sign, b"one", Some(&mut sig)).unwrap();
    for _ in 0..3 {
        let before = ex.load(Ordering::SeqCst);
        t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
        assert_eq!(
            ex.load(Ordering::SeqCst),
            before,
            "init checked from the cache"
        );
        assert_eq!(
            t.crypto(h, Op::Sign, b"msg", None),
            Ok(Len::Needed(SIG_LEN))
        );
        assert_eq!(
            t.crypto(h, Op::Sign, b"msg", Some(&mut sig)),
            Ok(Len::Written(SIG_LEN))
        );
        assert_eq!(
            ex.load(Ordering::SeqCst),
            before + 1,
            "one exchange per signature"
        );
    }
    // A multi-part operation that needs the HSM starts it before the update.
    t.crypto_init(h, Op::Sign, &Mechanism::plain(ckm::RSA_PKCS), 7)
        .unwrap();
    t.crypto_final(h, Op::Sign, Some(&mut sig)).unwrap();
    // A destroyed key is forgotten: the next init asks the HSM again.
    t.destroy_object(h, 7).unwrap();
    let before = ex.load(Ordering::SeqCst);
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(ex.load(Ordering::SeqCst), before + 1);
}

#[test]
fn a_dropped_connection_is_replaced_once_but_a_timeout_is_not_retried() {
    let s = slots();
    let (t, _) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let mut sig = [0u8; SIG_LEN];
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    t.crypto(h, Op::Sign, b"warm", Some(&mut sig)).unwrap();
    let c = t.connector();
    let connects = c.connects.load(Ordering::SeqCst);
    // The HSM restarted: the next exchange fails; the module reconnects,
    // logs in again with the kept credential and the signature succeeds.
    *c.fail_next.lock().unwrap() = Some(LinkError::Io);
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(
        t.crypto(h, Op::Sign, b"m", Some(&mut sig)),
        Ok(Len::Written(SIG_LEN))
    );
    assert_eq!(c.connects.load(Ordering::SeqCst), connects + 1);
    // A stalled HSM: the call fails after its timeout and is not resent.
    *c.fail_next.lock().unwrap() = Some(LinkError::Timeout);
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(
        t.crypto(h, Op::Sign, b"m", Some(&mut sig)),
        Err(ckr::DEVICE_ERROR)
    );
    assert_eq!(c.connects.load(Ordering::SeqCst), connects + 1);
    // The next call connects afresh.
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(
        t.crypto(h, Op::Sign, b"m", Some(&mut sig)),
        Ok(Len::Written(SIG_LEN))
    );
}

#[test]
fn closing_the_last_session_logs_the_application_out() {
    let s = slots();
    let (t, _) = token(&s);
    let a = t.open_session(true).unwrap();
    let b = t.open_session(true).unwrap();
    t.login(a, cku::USER, b"pw").unwrap();
    t.close_session(a).unwrap();
    assert!(t.logged_in(), "another session is still open");
    assert_eq!(t.session_info(b).unwrap().state, cks::RW_USER_FUNCTIONS);
    t.close_session(b).unwrap();
    assert!(!t.logged_in());
    let c = t.open_session(true).unwrap();
    assert_eq!(t.session_info(c).unwrap().state, cks::RW_PUBLIC_SESSION);
    t.login(c, cku::USER, b"pw").unwrap();
    t.close_all_sessions();
    assert!(!t.logged_in());
}

#[test]
fn find_with_no_room_still_needs_a_search() {
    // Found by the token_model fuzz target: `C_FindObjects` with a count of
    // 0 answered CKR_OK with no search active.
    let s = slots();
    let (t, _) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    assert_eq!(t.find(h, &mut []), Err(ckr::OPERATION_NOT_INITIALIZED));
    t.find_init(h, &[]).unwrap();
    assert_eq!(t.find(h, &mut []), Ok(0));
    t.find_final(h).unwrap();
    assert_eq!(t.find(h, &mut []), Err(ckr::OPERATION_NOT_INITIALIZED));
}

#[test]
fn a_session_never_follows_its_handles_to_another_hsm() {
    let s = slots();
    let (t, _) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let mut sig = [0u8; SIG_LEN];
    t.crypto_init(h, Op::Sign, &RSA, 7).unwrap();
    t.crypto(h, Op::Sign, b"warm", Some(&mut sig)).unwrap();
    // The HSM dies; the only one left is another HSM, whose handle 7 is
    // some other object: the session must not sign with it.
    *t.connector().identity.lock().unwrap() = "fake-b";
    *t.connector().fail_next.lock().unwrap() = Some(LinkError::Io);
    assert_eq!(
        t.crypto_init(h, Op::Sign, &RSA, 7),
        Ok(()),
        "checked from the cache"
    );
    assert_eq!(
        t.crypto(h, Op::Sign, b"m", Some(&mut sig)),
        Err(ckr::SESSION_CLOSED)
    );
    assert_eq!(t.session_info(h), Err(ckr::SESSION_HANDLE_INVALID));
    // A new session works with the HSM that is there; the key cache of the
    // old one does not apply to it.
    let n = t.open_session(true).unwrap();
    let before = t.connector().connects.load(Ordering::SeqCst);
    t.crypto_init(n, Op::Sign, &RSA, 7).unwrap();
    assert_eq!(t.connector().connects.load(Ordering::SeqCst), before + 1);
}

/// An HSM that says hello, then answers every request with `Error(rv)`.
struct ErrorLink(u64);

impl Link for ErrorLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        let req: Request<'_> = decode(&request[HEADER_LEN..]).map_err(|_| LinkError::Io)?;
        let resp = match req {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                server: "errors",
            },
            _ => Response::Error(self.0),
        };
        let mut frame = [0u8; 256];
        let n = encode_frame(&resp, &mut frame).map_err(|_| LinkError::Io)?;
        reply[..n - HEADER_LEN].copy_from_slice(&frame[HEADER_LEN..n]);
        Ok(n - HEADER_LEN)
    }
}

struct ErrorConnector(u64);

impl Connector for ErrorConnector {
    type Link = ErrorLink;
    fn connect(&self, _host: Option<&str>) -> Result<ErrorLink, LinkError> {
        Ok(ErrorLink(self.0))
    }
}

#[test]
fn an_error_answer_that_is_no_error_code_is_a_device_error() {
    // Found by the token_model fuzz target: the HSM's error code was handed
    // on as it came, so `Error(CKR_OK)` made a failed C_Login return CKR_OK.
    for (sent, seen) in [
        (ckr::OK, ckr::DEVICE_ERROR),
        (0x7e, ckr::DEVICE_ERROR),
        (ckr::VENDOR_DEFINED, ckr::DEVICE_ERROR),
        (ckr::PIN_INCORRECT, ckr::PIN_INCORRECT),
    ] {
        let s: Vec<SessionSlot<ErrorLink, spin::Mutex<()>, 4096>> =
            (0..1).map(|_| SessionSlot::new()).collect();
        let t = Token::new(
            ErrorConnector(sent),
            [1; 16],
            &s,
            LoginConfig {
                user: Some("alice"),
                special_pin: false,
            },
        )
        .unwrap();
        let h = t.open_session(true).unwrap();
        assert_eq!(
            t.login(h, cku::USER, b"pw"),
            Err(seen),
            "HSM sent {sent:#x}"
        );
        assert!(!t.logged_in());
    }
}

/// An HSM whose identity (its name in Hello) is that of the connection's
/// number, and whose links can be made to fail once.
struct IdentityLink {
    id: usize,
    fail: Arc<host::sync::atomic::AtomicBool>,
}

impl Link for IdentityLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err(LinkError::Io);
        }
        let req: Request<'_> = decode(&request[HEADER_LEN..]).map_err(|_| LinkError::Io)?;
        let random = [7u8; 64];
        let names = ["hsm-a", "hsm-b"];
        let resp = match req {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                server: names[self.id.min(1)],
            },
            Request::GenerateRandom { len } if len as usize <= random.len() => {
                Response::Data(&random[..len as usize])
            }
            _ => Response::Error(ckr::FUNCTION_NOT_SUPPORTED),
        };
        let mut frame = [0u8; 256];
        let n = encode_frame(&resp, &mut frame).map_err(|_| LinkError::Io)?;
        reply[..n - HEADER_LEN].copy_from_slice(&frame[HEADER_LEN..n]);
        Ok(n - HEADER_LEN)
    }
}

#[derive(Default)]
struct IdentityConnector {
    connects: AtomicUsize,
    fail: Arc<host::sync::atomic::AtomicBool>,
}

impl Connector for IdentityConnector {
    type Link = IdentityLink;
    fn connect(&self, _host: Option<&str>) -> Result<IdentityLink, LinkError> {
        Ok(IdentityLink {
            id: self.connects.fetch_add(1, Ordering::SeqCst),
            fail: self.fail.clone(),
        })
    }
}

#[test]
fn a_public_session_whose_hsm_changed_is_closed() {
    // Found by the token_model fuzz target: C_GenerateRandom in a public
    // session answered CKR_SESSION_CLOSED but left the session open.
    let s: Vec<SessionSlot<IdentityLink, spin::Mutex<()>, 4096>> =
        (0..2).map(|_| SessionSlot::new()).collect();
    let t = Token::new(
        IdentityConnector::default(),
        [1; 16],
        &s,
        LoginConfig {
            user: Some("alice"),
            special_pin: false,
        },
    )
    .unwrap();
    let h = t.open_session(false).unwrap();
    let mut r = [0u8; 16];
    t.generate_random(h, &mut r).unwrap();
    t.connector().fail.store(true, Ordering::SeqCst);
    assert_eq!(t.generate_random(h, &mut r), Err(ckr::DEVICE_ERROR));
    // The next connection reaches another HSM: the session is over.
    assert_eq!(t.generate_random(h, &mut r), Err(ckr::SESSION_CLOSED));
    assert_eq!(t.session_count().0, 0);
    assert_eq!(
        t.generate_random(h, &mut r),
        Err(ckr::SESSION_HANDLE_INVALID)
    );
}

#[test]
fn large_updates_are_pipelined_and_a_failure_keeps_the_link_in_step() {
    let s = slots();
    let (t, ex) = token(&s);
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let aes = Mechanism::plain(ckm::AES_ECB);
    t.crypto_init(h, Op::Encrypt, &aes, 7).unwrap();
    let data: host::vec::Vec<u8> = (0..5 * MAX_CHUNK + 100).map(|i| (i % 251) as u8).collect();
    let mut out = vec![0u8; data.len() + 16];
    let before = ex.load(Ordering::SeqCst);
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut out)),
        Ok(Len::Written(data.len()))
    );
    assert_eq!(
        &out[..data.len()],
        &data[..],
        "every chunk's output, in order"
    );
    let chunk = Token::<FakeConnector, spin::Mutex<()>, 4096>::CHUNK;
    assert!(chunk < MAX_CHUNK, "a 4 KiB buffer gets smaller chunks");
    assert_eq!(
        ex.load(Ordering::SeqCst),
        before + data.len().div_ceil(chunk),
        "one request per chunk"
    );
    // The third chunk fails: the error is reported, the replies still in
    // flight are read, and the next request gets its own answer.
    let mut bad = data.clone();
    bad[2 * chunk] = 0xEE;
    let h2 = t.open_session(true).unwrap();
    t.crypto_init(h2, Op::Encrypt, &aes, 7).unwrap();
    assert_eq!(
        t.crypto_update(h2, Op::Encrypt, &bad, Some(&mut out)),
        Err(ckr::DATA_INVALID)
    );
    t.find_init(h2, &[]).unwrap();
    let mut found = [0u64; 1];
    assert_eq!(t.find(h2, &mut found), Ok(1));
    assert_eq!(
        found[0], 1,
        "the find got the find's answer, not a stale update's"
    );
}

/// An HSM whose AES "encryption" echoes each update and ends with 5 bytes.
struct EchoLink;

impl Link for EchoLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        let req: Request<'_> = decode(&request[HEADER_LEN..]).map_err(|_| LinkError::Io)?;
        let tail = [0xEE; 5];
        let resp = match req {
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                server: "echo",
            },
            Request::Login { .. } => Response::Ok,
            Request::CryptoInit { .. } => Response::KeyInfo(KeyInfo {
                class: cko::SECRET_KEY,
                key_type: ckk::AES,
                bits: 128,
            }),
            Request::CryptoUpdate { data, .. } => Response::Data(data),
            Request::CryptoFinal { .. } | Request::CryptoOneShot { .. } => Response::Data(&tail),
            _ => Response::Error(ckr::FUNCTION_NOT_SUPPORTED),
        };
        let mut frame = [0u8; 1024];
        let n = encode_frame(&resp, &mut frame).map_err(|_| LinkError::Io)?;
        reply[..n - HEADER_LEN].copy_from_slice(&frame[HEADER_LEN..n]);
        Ok(n - HEADER_LEN)
    }
}

struct EchoConnector;

impl Connector for EchoConnector {
    type Link = EchoLink;
    fn connect(&self, _host: Option<&str>) -> Result<EchoLink, LinkError> {
        Ok(EchoLink)
    }
}

#[test]
fn a_final_after_an_untaken_update_output_delivers_both_and_ends() {
    // Found by the token_model fuzz target: C_EncryptUpdate answered
    // CKR_BUFFER_TOO_SMALL, then C_EncryptFinal returned the update's
    // output as its own, CKR_OK, and left the operation active.
    let s: Vec<SessionSlot<EchoLink, spin::Mutex<()>, 4096>> =
        (0..1).map(|_| SessionSlot::new()).collect();
    let t = Token::new(
        EchoConnector,
        [1; 16],
        &s,
        LoginConfig {
            user: Some("alice"),
            special_pin: false,
        },
    )
    .unwrap();
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let cbc = Mechanism {
        ty: ckm::AES_CBC_PAD,
        param: MechParam::Iv(&[0; 16]),
    };
    t.crypto_init(h, Op::Encrypt, &cbc, 7).unwrap();
    let data = [1u8; 24];
    let mut small = [0u8; 10];
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut small)),
        Ok(Len::Needed(24))
    );
    let mut out = [0u8; 30];
    assert_eq!(
        t.crypto_final(h, Op::Encrypt, Some(&mut out)),
        Ok(Len::Needed(40)),
        "room for the update's output and a last block"
    );
    let mut out = [0u8; 64];
    assert_eq!(
        t.crypto_final(h, Op::Encrypt, Some(&mut out)),
        Ok(Len::Written(29))
    );
    assert_eq!(out[..24], data);
    assert_eq!(out[24..29], [0xEE; 5]);
    assert_eq!(
        t.crypto_final(h, Op::Encrypt, Some(&mut out)),
        Err(ckr::OPERATION_NOT_INITIALIZED),
        "the final ended the operation"
    );
    // A final's output not taken waits for the final, not for an update.
    t.crypto_init(h, Op::Encrypt, &cbc, 7).unwrap();
    assert_eq!(
        t.crypto_final(h, Op::Encrypt, Some(&mut small[..2])),
        Ok(Len::Needed(5))
    );
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut out)),
        Err(ckr::OPERATION_ACTIVE)
    );
    assert_eq!(
        t.crypto_final(h, Op::Encrypt, Some(&mut out)),
        Ok(Len::Written(5))
    );
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut out)),
        Err(ckr::OPERATION_NOT_INITIALIZED)
    );
}

#[test]
fn pending_output_is_kept_apart_from_other_calls_replies() {
    // An update's output kept after CKR_BUFFER_TOO_SMALL; calls between
    // that use the reply buffer (random numbers, attributes) must not
    // change what the retry returns.
    let s: Vec<SessionSlot<EchoLink, spin::Mutex<()>, 4096>> =
        (0..1).map(|_| SessionSlot::new()).collect();
    let t = Token::new(
        EchoConnector,
        [1; 16],
        &s,
        LoginConfig {
            user: Some("alice"),
            special_pin: false,
        },
    )
    .unwrap();
    let h = t.open_session(true).unwrap();
    t.login(h, cku::USER, b"pw").unwrap();
    let ecb = Mechanism::plain(ckm::AES_ECB);
    t.crypto_init(h, Op::Encrypt, &ecb, 7).unwrap();
    let data: Vec<u8> = (0..48u8).collect();
    let mut small = [0u8; 10];
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut small)),
        Ok(Len::Needed(48))
    );
    let mut r = [0u8; 32];
    assert_eq!(
        t.generate_random(h, &mut r),
        Err(ckr::FUNCTION_NOT_SUPPORTED)
    );
    assert_eq!(
        t.get_attributes(h, 7, &[crate::ck::cka::LABEL], |_, _| {}),
        Err(ckr::FUNCTION_NOT_SUPPORTED)
    );
    let mut out = [0u8; 64];
    assert_eq!(
        t.crypto_update(h, Op::Encrypt, &data, Some(&mut out)),
        Ok(Len::Written(48))
    );
    assert_eq!(out[..48], data[..], "the kept output, not another reply");
}
