//! The module's exported C functions, called the way a buggy or hostile
//! application would: huge and zero counts, counts and lengths whose size
//! in bytes overflows, NULL and misaligned pointers, output buffers one
//! byte short (and the retry), and calls on one session from two threads
//! at once. The module is linked in (so AddressSanitizer watches every
//! access it makes) and talks to a real in-process HSM over loopback TCP.
//!
//! Properties, after every call:
//! - only `CKR_*` codes the call may give in a healthy setting (never
//!   `CKR_GENERAL_ERROR`, which a caught panic gives, nor
//!   `CKR_DEVICE_ERROR`); `CKR_ARGUMENTS_BAD` for every NULL or misaligned
//!   required pointer and every count whose byte size overflows;
//! - nothing written outside the real buffers (guard tails; ASan);
//! - no wrong bytes: every `CKR_OK` output equals a reference computation
//!   (OpenSSL's AES-256-ECB and SHA-256, the attribute values the objects
//!   were made with, the mechanism list, the handles of the objects that
//!   match), also when the output was kept after `CKR_BUFFER_TOO_SMALL`
//!   while other calls ran on the session.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use hsmlink_core::ck::{cka, ckk, ckm, cko, ckr};
use hsmlink_pkcs11::ffi::hostile::{self as h, Output, Ptr, Spec};
use libfuzzer_sys::fuzz_target;

const USER: &str = "fuzz-abi";
const PASSWORD: &[u8] = b"fuzz-abi-password";
const LABEL: &[u8] = b"fuzz-abi-data";
const KEY: [u8; 32] = *b"fuzz-abi-aes-key-0123456789abcde";
const UNAVAILABLE: u64 = u64::MAX;

struct World {
    /// The session every input runs on (kept open: a session per input
    /// would make the in-process server start and end a thread per input,
    /// whose exit races LeakSanitizer's check).
    session: u64,
    key: u64,
    /// (handle, value) of the data objects labelled `LABEL`.
    data: Vec<(u64, Vec<u8>)>,
    /// Every object of the token.
    all: Vec<u64>,
    mechanisms: Vec<u64>,
}

fn ulong(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn check(rv: u64, want: u64, what: &str) {
    assert_eq!(rv, want, "{what}: rv {rv:#x}, want {want:#x}");
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let hsm = std::sync::Arc::new(hsmlink_hsm::Hsm::dev(USER, PASSWORD).expect("dev HSM"));
        let server = hsmlink_hsm::Server::bind(hsm, "127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr").to_string();
        std::thread::spawn(move || server.run());
        // Edition 2024: set_var is unsafe; this runs once, before any
        // other thread of this process reads the environment.
        unsafe {
            std::env::set_var("HSMLINK_ADDR", &addr);
            std::env::set_var("HSMLINK_USER", USER);
            std::env::set_var("HSMLINK_CONFIG", "");
            std::env::set_var("HSMLINK_LOG", "off");
            std::env::set_var("HSMLINK_TIMEOUT_MS", "20000");
        }
        check(h::initialize(), ckr::OK, "C_Initialize");
        let (rv, anchor) = h::open_session();
        check(rv, ckr::OK, "C_OpenSession");
        // The anchor session stays open and logged in for the process.
        check(
            h::login(anchor, Some(PASSWORD), PASSWORD.len() as u64),
            ckr::OK,
            "C_Login",
        );
        let bool_true = vec![1u8];
        let (rv, key) = h::create_object(
            anchor,
            &[
                (cka::CLASS, ulong(cko::SECRET_KEY)),
                (cka::KEY_TYPE, ulong(ckk::AES)),
                (cka::TOKEN, bool_true.clone()),
                (cka::VALUE, KEY.to_vec()),
                (cka::ENCRYPT, bool_true.clone()),
                (cka::EXTRACTABLE, bool_true.clone()),
                (cka::SENSITIVE, vec![0]),
                (cka::LABEL, b"fuzz-abi-key".to_vec()),
            ],
        );
        check(rv, ckr::OK, "C_CreateObject(key)");
        let mut data = Vec::new();
        for n in [5usize, 300, 2000] {
            let value: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
            let (rv, o) = h::create_object(
                anchor,
                &[
                    (cka::CLASS, ulong(cko::DATA)),
                    (cka::TOKEN, bool_true.clone()),
                    (cka::LABEL, LABEL.to_vec()),
                    (cka::VALUE, value.clone()),
                ],
            );
            check(rv, ckr::OK, "C_CreateObject(data)");
            data.push((o, value));
        }
        let mut all = vec![key];
        all.extend(data.iter().map(|(o, _)| *o));
        let q = h::list(
            false,
            Spec {
                ptr: Ptr::Null,
                real: 0,
                claimed: 0,
            },
            Ptr::Buf,
        );
        check(q.rv, ckr::OK, "C_GetMechanismList query");
        let n = q.len as usize;
        let l = h::list(false, Spec::exact(n), Ptr::Buf);
        check(l.rv, ckr::OK, "C_GetMechanismList");
        let (rv, session) = h::open_session();
        check(rv, ckr::OK, "C_OpenSession");
        World {
            session,
            key,
            data,
            all,
            mechanisms: l.data.iter().map(|&m| m as u64).collect(),
        }
    })
}

/// A count, from the edges that matter.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Count {
    Zero,
    One,
    Exact,
    Short,
    Small(u8),
    Huge40,
    Huge59,
    HalfMax,
    Overflow60,
    Overflow61,
    Max,
    Any(u64),
}

impl Count {
    fn value(self, exact: usize) -> u64 {
        match self {
            Count::Zero => 0,
            Count::One => 1,
            Count::Exact => exact as u64,
            Count::Short => exact.saturating_sub(1) as u64,
            Count::Small(n) => n as u64,
            Count::Huge40 => 1 << 40,
            Count::Huge59 => 1 << 59,
            Count::HalfMax => isize::MAX as u64 / 8,
            Count::Overflow60 => 1 << 60,
            Count::Overflow61 => 1 << 61,
            Count::Max => u64::MAX,
            Count::Any(n) => n,
        }
    }
}

/// Whether `n` elements of `size` bytes overflow `isize`.
fn overflows(n: u64, size: u64) -> bool {
    n.checked_mul(size).is_none_or(|b| b > isize::MAX as u64)
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum P {
    Null,
    Misaligned,
    Buf,
}

impl P {
    fn ptr(self) -> Ptr {
        match self {
            P::Null => Ptr::Null,
            P::Misaligned => Ptr::Misaligned,
            P::Buf => Ptr::Buf,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Attr {
    Label,
    Value,
    Class,
    Token,
    Invalid,
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    FindInit {
        all: bool,
        hostile: Option<Count>,
    },
    Find {
        buf: P,
        count: Count,
        count_ptr: P,
    },
    FindFinal,
    GetAttrs {
        object: u8,
        attrs: Vec<(Attr, P, Count)>,
        overflow: Option<Count>,
    },
    EncryptInit,
    Encrypt {
        blocks: u8,
        extra: bool,
        out: P,
        room: Count,
        len_ptr: P,
        overflow: Option<Count>,
    },
    DigestInit,
    Digest {
        len: u16,
        out: P,
        room: Count,
        len_ptr: P,
        overflow: Option<Count>,
    },
    Random {
        len: u16,
        out: P,
        overflow: Option<Count>,
    },
    List {
        slots: bool,
        buf: P,
        count: Count,
        count_ptr: P,
    },
    LoginNull {
        len: Count,
    },
    LoginAgain,
    SessionInfo,
}

impl Op {
    /// Calls whose result depends on no operation of the session: safe
    /// to run from a second thread at the same time.
    fn stateless(&self) -> bool {
        matches!(
            self,
            Op::GetAttrs { .. }
                | Op::Random { .. }
                | Op::List { .. }
                | Op::LoginNull { .. }
                | Op::LoginAgain
                | Op::SessionInfo
        )
    }
}

/// What the single-threaded part remembers of the session.
#[derive(Default)]
struct State {
    /// Input of an encryption whose output waits (after BUFFER_TOO_SMALL):
    /// the retry must give the same input (PKCS#11's rule).
    encrypt_pending: Option<Vec<u8>>,
}

fn allowed(rv: u64, what: &str, extra: &[u64]) {
    let ok = [
        ckr::OK,
        ckr::ARGUMENTS_BAD,
        ckr::BUFFER_TOO_SMALL,
        ckr::OPERATION_ACTIVE,
        ckr::OPERATION_NOT_INITIALIZED,
    ];
    assert!(
        ok.contains(&rv) || extra.contains(&rv),
        "{what}: unexpected rv {rv:#x} (GENERAL_ERROR is a caught panic)"
    );
}

fn no_overrun<T>(o: &Output<T>, what: &str) {
    assert!(
        !o.overrun,
        "{what}: the module wrote outside the buffer it was given"
    );
}

fn aes_ecb(data: &[u8]) -> Vec<u8> {
    let mut c = openssl::symm::Crypter::new(
        openssl::symm::Cipher::aes_256_ecb(),
        openssl::symm::Mode::Encrypt,
        &KEY,
        None,
    )
    .expect("crypter");
    c.pad(false);
    let mut out = vec![0u8; data.len() + 32];
    let mut n = c.update(data, &mut out).expect("update");
    n += c.finalize(&mut out[n..]).expect("finalize");
    out.truncate(n);
    out
}

fn run(w: &World, s: u64, op: &Op, st: &mut State) {
    match op {
        Op::FindInit { all, hostile } => {
            let (ty, value): (u64, &[u8]) = if *all { (0, &[]) } else { (cka::LABEL, LABEL) };
            let claimed = match hostile {
                None if *all => 0,
                None => 1,
                Some(c) => c.value(1).max(2),
            };
            let rv = h::find_init(s, ty, value, claimed);
            if claimed > 1 {
                check(
                    rv,
                    ckr::ARGUMENTS_BAD,
                    "C_FindObjectsInit with a hostile count",
                );
            } else {
                allowed(rv, "C_FindObjectsInit", &[]);
            }
        }
        Op::Find {
            buf,
            count,
            count_ptr,
        } => {
            let claimed = count.value(w.all.len());
            // The real buffer holds every object the token has whenever
            // more is claimed than is really there.
            let real = if claimed as usize <= w.all.len() {
                claimed as usize
            } else {
                w.all.len() + 1
            };
            let spec = Spec {
                ptr: buf.ptr(),
                real,
                claimed,
            };
            let o = h::find(s, spec, count_ptr.ptr());
            no_overrun(&o, "C_FindObjects");
            let bad_ptr = matches!(count_ptr, P::Null | P::Misaligned)
                || (claimed > 0 && matches!(buf, P::Null | P::Misaligned));
            if bad_ptr || overflows(claimed, 8) {
                check(
                    o.rv,
                    ckr::ARGUMENTS_BAD,
                    "C_FindObjects with a bad pointer or count",
                );
                return;
            }
            allowed(o.rv, "C_FindObjects", &[]);
            if o.rv == ckr::OK {
                assert!(
                    o.len <= claimed && o.len as usize <= w.all.len(),
                    "count {}",
                    o.len
                );
                for handle in &o.data[..o.len as usize] {
                    assert!(
                        w.all.contains(&(*handle as u64)),
                        "C_FindObjects gave {handle:#x}"
                    );
                }
            }
        }
        Op::FindFinal => allowed(h::find_final(s), "C_FindObjectsFinal", &[]),
        Op::GetAttrs {
            object,
            attrs,
            overflow,
        } => {
            let (handle, value, class): (u64, &[u8], u64) = match object % 4 {
                0 => (w.key, &KEY, cko::SECRET_KEY),
                i => {
                    let (o, v) = &w.data[(i - 1) as usize];
                    (*o, v, cko::DATA)
                }
            };
            let label: &[u8] = if handle == w.key {
                b"fuzz-abi-key"
            } else {
                LABEL
            };
            let attrs: Vec<_> = attrs.iter().take(40).collect();
            let expected = |a: Attr| -> Option<Vec<u8>> {
                match a {
                    Attr::Label => Some(label.to_vec()),
                    Attr::Value => Some(value.to_vec()),
                    Attr::Class => Some(ulong(class)),
                    Attr::Token => Some(vec![1]),
                    Attr::Invalid => None,
                }
            };
            let specs: Vec<(u64, Spec)> = attrs
                .iter()
                .map(|(a, p, room)| {
                    let ty = match a {
                        Attr::Label => cka::LABEL,
                        Attr::Value => cka::VALUE,
                        Attr::Class => cka::CLASS,
                        Attr::Token => cka::TOKEN,
                        Attr::Invalid => 0xdead_0000,
                    };
                    let exact = expected(*a).map_or(4, |v| v.len());
                    let claimed = room.value(exact);
                    let real = (claimed as usize).min(exact + 8);
                    (
                        ty,
                        Spec {
                            ptr: p.ptr(),
                            real,
                            claimed,
                        },
                    )
                })
                .collect();
            let count = match overflow {
                Some(c) => c.value(0).max(1 << 60),
                None => specs.len() as u64,
            };
            let (rv, out) = h::get_attributes(s, handle, &specs, count);
            for (i, (_, _, overrun)) in out.iter().enumerate() {
                assert!(
                    !overrun,
                    "C_GetAttributeValue wrote outside attribute {i}'s buffer"
                );
            }
            if overflow.is_some() || specs.len() as u64 != count {
                check(
                    rv,
                    ckr::ARGUMENTS_BAD,
                    "C_GetAttributeValue with an overflowing count",
                );
                return;
            }
            allowed(
                rv,
                "C_GetAttributeValue",
                &[ckr::ATTRIBUTE_TYPE_INVALID, ckr::ATTRIBUTE_SENSITIVE],
            );
            if rv == ckr::ARGUMENTS_BAD || rv == ckr::OPERATION_ACTIVE {
                return;
            }
            for ((a, p, _), ((_, spec), (len, bytes, _))) in
                attrs.iter().zip(specs.iter().zip(&out))
            {
                let Some(want) = expected(*a) else {
                    assert_eq!(*len, UNAVAILABLE, "an invalid attribute's length");
                    continue;
                };
                match p {
                    P::Null => assert_eq!(*len, want.len() as u64, "{a:?}: length query"),
                    _ if spec.claimed > spec.real as u64 => {}
                    _ if spec.claimed < want.len() as u64 => {
                        assert_eq!(*len, UNAVAILABLE, "{a:?}: short buffer")
                    }
                    _ => {
                        assert_eq!(*len, want.len() as u64, "{a:?}: length");
                        assert!(
                            bytes[..want.len()] == want[..],
                            "{a:?}: wrong bytes with its length"
                        );
                    }
                }
            }
            if attrs.iter().all(|(a, _, _)| !matches!(a, Attr::Invalid))
                && specs.iter().zip(&attrs).all(|((_, sp), (a, p, _))| {
                    matches!(p, P::Null)
                        || (sp.claimed >= expected(*a).map_or(0, |v| v.len()) as u64
                            && sp.claimed <= sp.real as u64)
                })
            {
                check(rv, ckr::OK, "C_GetAttributeValue with room for every value");
            }
        }
        Op::EncryptInit => {
            let rv = h::encrypt_init(s, ckm::AES_ECB, None, w.key);
            allowed(rv, "C_EncryptInit", &[]);
            if rv == ckr::OK {
                st.encrypt_pending = None;
            }
        }
        Op::Encrypt {
            blocks,
            extra,
            out,
            room,
            len_ptr,
            overflow,
        } => {
            let data: Vec<u8> = match &st.encrypt_pending {
                Some(d) => d.clone(),
                None => {
                    let n = (*blocks as usize % 64) * 16 + usize::from(*extra) * 7;
                    (0..n)
                        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(*blocks))
                        .collect()
                }
            };
            let need = data.len();
            let claimed = room.value(need);
            let real = (claimed as usize).min(need + 32);
            let data_claimed = match overflow {
                Some(c) => c.value(0).max(isize::MAX as u64 + 1),
                None => data.len() as u64,
            };
            let o = h::encrypt(
                s,
                &data,
                data_claimed,
                Spec {
                    ptr: out.ptr(),
                    real,
                    claimed,
                },
                len_ptr.ptr(),
            );
            no_overrun(&o, "C_Encrypt");
            // A claimed room past the real buffer is given as an
            // overflowing length (see `hostile::safe_claim`).
            let bad = matches!(len_ptr, P::Null | P::Misaligned)
                || overflow.is_some()
                || (!matches!(out, P::Null) && claimed > real as u64);
            if bad {
                check(
                    o.rv,
                    ckr::ARGUMENTS_BAD,
                    "C_Encrypt with a bad pointer or length",
                );
                return;
            }
            allowed(o.rv, "C_Encrypt", &[ckr::DATA_LEN_RANGE]);
            match o.rv {
                ckr::OK if !matches!(out, P::Null) => {
                    let want = aes_ecb(&data);
                    assert_eq!(o.len, want.len() as u64, "C_Encrypt length");
                    assert!(
                        o.data[..want.len()] == want[..],
                        "C_Encrypt: wrong bytes with CKR_OK"
                    );
                    st.encrypt_pending = None;
                }
                ckr::BUFFER_TOO_SMALL => {
                    assert!(
                        o.len >= need as u64,
                        "BUFFER_TOO_SMALL with length {}",
                        o.len
                    );
                    st.encrypt_pending = Some(data);
                }
                ckr::DATA_LEN_RANGE => st.encrypt_pending = None,
                _ => {}
            }
        }
        Op::DigestInit => allowed(h::digest_init_sha256(s), "C_DigestInit", &[]),
        Op::Digest {
            len,
            out,
            room,
            len_ptr,
            overflow,
        } => {
            let data: Vec<u8> = (0..(*len as usize % 40_000))
                .map(|i| (i * 7) as u8)
                .collect();
            let claimed = room.value(32);
            let real = (claimed as usize).min(64);
            let data_claimed = match overflow {
                Some(c) => c.value(0).max(isize::MAX as u64 + 1),
                None => data.len() as u64,
            };
            let o = h::digest(
                s,
                &data,
                data_claimed,
                Spec {
                    ptr: out.ptr(),
                    real,
                    claimed,
                },
                len_ptr.ptr(),
            );
            no_overrun(&o, "C_Digest");
            if matches!(len_ptr, P::Null | P::Misaligned)
                || overflow.is_some()
                || (!matches!(out, P::Null) && claimed > real as u64)
            {
                check(
                    o.rv,
                    ckr::ARGUMENTS_BAD,
                    "C_Digest with a bad pointer or length",
                );
                return;
            }
            allowed(o.rv, "C_Digest", &[]);
            if o.rv == ckr::OK && !matches!(out, P::Null) {
                let want = openssl::sha::sha256(&data);
                assert_eq!(o.len, 32);
                assert!(
                    o.data[..32] == want[..],
                    "C_Digest: wrong bytes with CKR_OK"
                );
            }
        }
        Op::Random { len, out, overflow } => {
            let n = *len as usize % 40_000;
            let claimed = match overflow {
                Some(c) => c.value(0).max(isize::MAX as u64 + 1),
                None => n as u64,
            };
            let o = h::generate_random(
                s,
                Spec {
                    ptr: out.ptr(),
                    real: n,
                    claimed,
                },
            );
            no_overrun(&o, "C_GenerateRandom");
            if overflow.is_some() || (n > 0 && matches!(out, P::Null)) {
                check(
                    o.rv,
                    ckr::ARGUMENTS_BAD,
                    "C_GenerateRandom with a bad buffer",
                );
                return;
            }
            check(o.rv, ckr::OK, "C_GenerateRandom");
            if n >= 64 {
                assert!(
                    o.data.iter().any(|&b| b != 0xA5),
                    "C_GenerateRandom wrote nothing"
                );
            }
        }
        Op::List {
            slots,
            buf,
            count,
            count_ptr,
        } => {
            let exact = if *slots { 1 } else { w.mechanisms.len() };
            let claimed = count.value(exact);
            let real = if claimed as usize <= exact {
                claimed as usize
            } else {
                exact + 1
            };
            let o = h::list(
                *slots,
                Spec {
                    ptr: buf.ptr(),
                    real,
                    claimed,
                },
                count_ptr.ptr(),
            );
            no_overrun(&o, "the list");
            if matches!(count_ptr, P::Null | P::Misaligned) {
                check(o.rv, ckr::ARGUMENTS_BAD, "a list with a bad count pointer");
                return;
            }
            if matches!(buf, P::Null) {
                check(o.rv, ckr::OK, "a list length query");
                assert_eq!(o.len as usize, exact);
                return;
            }
            if (matches!(buf, P::Misaligned) && claimed > 0) || overflows(claimed, 8) {
                check(
                    o.rv,
                    ckr::ARGUMENTS_BAD,
                    "a list with a bad buffer or count",
                );
                return;
            }
            if (claimed as usize) < exact {
                check(o.rv, ckr::BUFFER_TOO_SMALL, "a short list");
                assert_eq!(o.len as usize, exact);
                return;
            }
            check(o.rv, ckr::OK, "a list");
            assert_eq!(o.len as usize, exact);
            let want: Vec<u64> = if *slots {
                vec![1]
            } else {
                w.mechanisms.clone()
            };
            let got: Vec<u64> = o.data[..exact].iter().map(|&m| m as u64).collect();
            assert!(got == want, "wrong list with CKR_OK");
        }
        Op::LoginNull { len } => {
            check(
                h::login(s, None, len.value(8)),
                ckr::ARGUMENTS_BAD,
                "C_Login(NULL PIN)",
            );
        }
        Op::LoginAgain => {
            let rv = h::login(s, Some(PASSWORD), PASSWORD.len() as u64);
            check(rv, ckr::USER_ALREADY_LOGGED_IN, "C_Login while logged in");
        }
        Op::SessionInfo => {
            let (rv, state) = h::session_state(s);
            check(rv, ckr::OK, "C_GetSessionInfo");
            assert_eq!(state, 3, "an R/W user session");
        }
    }
}

/// The second thread, kept for the process (a thread per input would end
/// while LeakSanitizer looks, and be reported). It runs the calls it is
/// sent on the world's session and says when it is done; a failed check
/// there aborts the process like one here (libFuzzer's panic hook).
struct Helper {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Vec<Op>>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

fn helper() -> &'static Helper {
    static H: OnceLock<Helper> = OnceLock::new();
    H.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Op>>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ops in rx {
                let w = world();
                let mut st = State::default();
                for op in &ops {
                    run(w, w.session, op, &mut st);
                }
                drop(ops);
                let _ = done_tx.send(());
            }
        });
        Helper {
            tx: std::sync::Mutex::new(tx),
            done: std::sync::Mutex::new(done),
        }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let w = world();
    let mut u = Unstructured::new(bytes);
    let Ok(two_threads) = bool::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while ops.len() < 24 {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let s = w.session;
    // Start from no operation, whatever the last input left.
    for rv in h::end_operations(s) {
        allowed(
            rv,
            "ending the last input's operations",
            &[ckr::DATA_LEN_RANGE],
        );
    }
    if two_threads {
        // The session's stateful calls on this thread, the rest on another,
        // at the same time.
        let (mine, theirs): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|o| !o.stateless());
        let other = helper();
        other
            .tx
            .lock()
            .unwrap()
            .send(theirs)
            .expect("helper thread");
        let mut st = State::default();
        for op in &mine {
            run(w, s, op, &mut st);
        }
        other.done.lock().unwrap().recv().expect("helper thread");
    } else {
        let mut st = State::default();
        for op in &ops {
            run(w, s, op, &mut st);
        }
    }
});
