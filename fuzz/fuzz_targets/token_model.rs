//! The token's session state machine: random sequences of Cryptoki calls
//! (`hsmlink_fuzz::calls`) against the fake HSM of `hsmlink_fuzz::fake`,
//! checked against a simple model after every call:
//!
//! - no panic; every error is a real `CKR_*`; with no fault injected on the
//!   link, never `CKR_DEVICE_ERROR` nor `CKR_GENERAL_ERROR`;
//! - session handles are never 0, never reused, and a handle that is not
//!   open is refused (`CKR_SESSION_HANDLE_INVALID`); the open count and the
//!   login state are the model's;
//! - an operation that finished is gone: the next call continuing it fails;
//!   an operation still active refuses another `*Init`;
//! - outputs: `Written(n)` fits the buffer, `Needed(n)` only when it did
//!   not; digests are right; signatures and AES outputs are the fake HSM's
//!   (so nothing was lost, doubled or mixed up between sessions);
//! - attribute values and search results belong to the object asked for.
#![no_main]

use std::collections::BTreeMap;

use hsmlink_core::ck::{Rv, ckr, cku};
use hsmlink_core::link::LinkError;
use hsmlink_core::mech::{self, Hash, Hasher, MAX_DIGEST, SignPlan};
use hsmlink_core::token::{Len, LoginConfig, SessionSlot, Token};
use hsmlink_core::wire::{Attribute, Op};
use hsmlink_fuzz::calls::{self, Call, Data, FaultKind, Out, Pin, Sig, Tpl};
use hsmlink_fuzz::fake::{self, FakeHsm, Fault, Fnv};
use hsmlink_fuzz::{rv, tables};
use libfuzzer_sys::fuzz_target;

const BUF: usize = 16 * 1024 + 1024;
const SLOTS: usize = 3;
type Slot = SessionSlot<fake::FakeLink, spin::Mutex<()>, BUF>;
type T<'s> = Token<'s, FakeHsm, spin::Mutex<()>, BUF>;

/// What the model knows of a session's active operation.
#[derive(Clone)]
enum Active {
    None,
    Find,
    Digest(Hasher),
    Crypto(CryptoModel),
    /// A fault may have ended it, or not.
    Unknown,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Active::None => f.write_str("None"),
            Active::Find => f.write_str("Find"),
            Active::Digest(_) => f.write_str("Digest"),
            Active::Crypto(c) => write!(f, "Crypto({:?}, {:#x}, key {})", c.op, c.mech, c.key),
            Active::Unknown => f.write_str("Unknown"),
        }
    }
}

#[derive(Clone)]
struct CryptoModel {
    op: Op,
    mech: u64,
    key: u64,
    /// What the data given so far hashes to, as the HSM will see it.
    acc: Acc,
    /// The last call answered `Needed` after the HSM may have computed
    /// output: the next output is not checked against its own input.
    pending: bool,
    /// A fault happened while it ran: outputs are not checked.
    clean: bool,
}

// The model's own state, one per session: the size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Acc {
    Direct(Fnv),
    Prehash(Hasher, bool),
}

impl Acc {
    fn new(mech: u64) -> Acc {
        match mech::sign_plan(&calls::fitting(mech)) {
            SignPlan::Prehash {
                hash, digest_info, ..
            } => Acc::Prehash(Hasher::new(hash), digest_info),
            SignPlan::Direct => Acc::Direct(Fnv::default()),
        }
    }

    fn update(&mut self, d: &[u8]) {
        match self {
            Acc::Direct(f) => f.update(d),
            Acc::Prehash(h, _) => h.update(d),
        }
    }

    /// The FNV hash of what the HSM receives.
    fn hsm_hash(&self) -> u64 {
        match self {
            Acc::Direct(f) => f.0,
            Acc::Prehash(h, digest_info) => {
                let hash = h.hash();
                let mut out = [0u8; MAX_DIGEST];
                let n = h.clone().finish(&mut out);
                let mut f = Fnv::default();
                if *digest_info {
                    f.update(hash.digest_info_prefix());
                }
                f.update(&out[..n]);
                f.0
            }
        }
    }
}

struct SessionModel {
    active: Active,
    /// The size the last `Needed` said (for `Out::AsNeeded`).
    needed: usize,
}

struct Model {
    issued: Vec<u64>,
    open: BTreeMap<u64, SessionModel>,
    logged_in: bool,
    /// A fault was injected at some point: link errors are possible.
    faulty: bool,
    objects: Vec<u64>,
}

impl Model {
    fn session(&self, s: u8) -> u64 {
        const JUNK: [u64; 4] = [0, u64::MAX, 1 << 32, 0xffff_ffff];
        if s < 0xf0 && !self.issued.is_empty() {
            self.issued[usize::from(s) % self.issued.len()]
        } else {
            JUNK[usize::from(s) % JUNK.len()]
        }
    }

    fn object(&self, o: u8) -> u64 {
        const JUNK: [u64; 3] = [0, u64::MAX, 99_999];
        if o < 0xf8 {
            self.objects[usize::from(o) % self.objects.len()]
        } else {
            JUNK[usize::from(o) % JUNK.len()]
        }
    }

    /// Any fault may have dropped any link: remote operations are unknown.
    fn fault(&mut self) {
        self.faulty = true;
        for s in self.open.values_mut() {
            match &mut s.active {
                Active::Crypto(_) | Active::Find => s.active = Active::Unknown,
                _ => {}
            }
        }
    }
}

fn tracing() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("HSMLINK_FUZZ_TRACE").is_some())
}

/// Check a result's error code.
fn check<T: std::fmt::Debug>(m: &Model, r: &Result<T, Rv>) {
    if tracing() {
        match r {
            Err(e) => eprintln!("  -> Err({e:#x})"),
            Ok(v) => eprintln!("  -> Ok({v:?})"),
        }
    }
    if let Err(e) = r {
        assert!(rv::is_error(*e), "unknown CKR {e:#x}");
        if !m.faulty {
            assert!(
                *e != ckr::DEVICE_ERROR && *e != ckr::GENERAL_ERROR,
                "{e:#x} from a healthy HSM"
            );
        }
    }
}

/// Check an output length answer against the buffer given.
fn check_len(r: &Result<Len, Rv>, out: Option<usize>) {
    match (r, out) {
        (Ok(Len::Written(n)), Some(o)) => assert!(*n <= o, "wrote {n} into {o}"),
        (Ok(Len::Written(_)), None) => panic!("wrote without a buffer"),
        (Ok(Len::Needed(n)), Some(o)) => assert!(*n > o, "needed {n} but {o} was given"),
        _ => {}
    }
}

fn owned_template(t: &Tpl) -> Vec<(u64, Vec<u8>)> {
    t.owned()
}

fn attrs(t: &[(u64, Vec<u8>)]) -> Vec<Attribute<'_>> {
    t.iter()
        .map(|(ty, v)| Attribute {
            ty: *ty,
            value: v.as_slice(),
        })
        .collect()
}

fn out_buf(m: &Model, s: u64, out: Out) -> Option<Vec<u8>> {
    match out {
        Out::Query => None,
        Out::AsNeeded => Some(vec![0; m.open.get(&s).map_or(0, |x| x.needed)]),
        Out::Len(n) => Some(vec![0; n as usize]),
    }
}

/// The signature the fake HSM makes for a finished sign operation.
fn expected_sig(hsm: &FakeHsm, c: &CryptoModel) -> Option<Vec<u8>> {
    let bits = hsm.state().objects.get(&c.key)?.bits;
    let inner = match mech::sign_plan(&calls::fitting(c.mech)) {
        SignPlan::Prehash { inner, .. } => inner,
        SignPlan::Direct => c.mech,
    };
    Some(fake::sig_bytes(
        c.acc.hsm_hash(),
        fake::sig_len(inner, bits),
    ))
}

fn digest_of(h: &Hasher) -> Vec<u8> {
    let mut out = [0u8; MAX_DIGEST];
    let n = h.clone().finish(&mut out);
    out[..n].to_vec()
}

struct Runner<'t, 's> {
    t: &'t T<'s>,
    hsm: FakeHsm,
    m: Model,
}

impl Runner<'_, '_> {
    fn active(&mut self, s: u64) -> Option<&mut Active> {
        self.m.open.get_mut(&s).map(|x| &mut x.active)
    }

    fn set_active(&mut self, s: u64, a: Active) {
        if let Some(x) = self.m.open.get_mut(&s) {
            x.active = a;
        }
    }

    fn note_needed(&mut self, s: u64, r: &Result<Len, Rv>) {
        if let (Ok(Len::Needed(n)), Some(x)) = (r, self.m.open.get_mut(&s)) {
            x.needed = *n;
        }
    }

    /// A call on a session that is not open must fail, and (for calls
    /// whose first check is the session) with `CKR_SESSION_HANDLE_INVALID`.
    /// A session the token closed itself (its HSM changed identity: only a
    /// fault can do that here) is gone from the model too.
    fn closed_session<T: std::fmt::Debug>(
        &mut self,
        s: u64,
        r: &Result<T, Rv>,
        exact: bool,
    ) -> bool {
        if r.as_ref().err() == Some(&ckr::SESSION_CLOSED) {
            assert!(self.m.faulty, "CKR_SESSION_CLOSED from a healthy HSM");
            self.m.open.remove(&s);
            return true;
        }
        if self.m.open.contains_key(&s) {
            return false;
        }
        assert!(r.is_err(), "session {s:#x} is not open, yet {r:?}");
        if exact {
            assert_eq!(
                r.as_ref().err(),
                Some(&ckr::SESSION_HANDLE_INVALID),
                "session {s:#x}"
            );
        }
        true
    }

    /// A continuation of an operation: checks that a finished one is gone.
    fn continuation<T: std::fmt::Debug>(
        &self,
        s: u64,
        r: &Result<T, Rv>,
        is_it: impl Fn(&Active) -> bool,
    ) {
        let Some(x) = self.m.open.get(&s) else { return };
        if matches!(x.active, Active::Unknown) {
            return;
        }
        if !is_it(&x.active) {
            assert!(
                r.is_err(),
                "no such operation in session {s:#x} ({:?}), yet {r:?}",
                x.active
            );
        }
    }

    /// A `*Init` while another operation is active must fail.
    fn init<T: std::fmt::Debug>(&self, s: u64, r: &Result<T, Rv>) {
        let Some(x) = self.m.open.get(&s) else { return };
        if !matches!(x.active, Active::None | Active::Unknown) {
            assert!(r.is_err(), "init over {:?} succeeded", x.active);
        }
    }

    fn crypto_state(&mut self, s: u64, op: Op) -> Option<CryptoModel> {
        match self.m.open.get(&s).map(|x| &x.active) {
            Some(Active::Crypto(c)) if c.op == op => Some(c.clone()),
            _ => None,
        }
    }

    /// After a call on operation `op` that ends it unless it was refused
    /// early (`kept`); an operation of another kind is not touched.
    fn ended_unless_refused<T>(&mut self, s: u64, op: Op, r: &Result<T, Rv>, kept: &[Rv]) {
        let Some(a) = self.active(s) else { return };
        match a {
            Active::Crypto(c) if c.op == op => {}
            _ => return,
        }
        match r {
            Err(e) if kept.contains(e) => {}
            Err(ckr::USER_NOT_LOGGED_IN | ckr::DEVICE_ERROR) => *a = Active::Unknown,
            _ => *a = Active::None,
        }
    }

    /// An operation in an unknown state just ended (`ended`): known again.
    fn resolved(&mut self, s: u64, ended: bool) {
        if let Some(a @ Active::Unknown) = self.active(s)
            && ended
        {
            *a = Active::None;
        }
    }

    fn step(&mut self, call: &Call) {
        let armed = self.hsm.state().fault.is_some();
        self.call(call);
        if armed && self.hsm.state().fault.is_none() {
            // The fault struck during this call: any link may be gone.
            self.m.fault();
        }
    }

    fn call(&mut self, call: &Call) {
        let t = self.t;
        match call {
            Call::OpenSession { rw } => {
                let r = t.open_session(*rw);
                check(&self.m, &r);
                match r {
                    Ok(h) => {
                        assert!(h != 0 && h <= u64::from(u32::MAX));
                        assert!(!self.m.issued.contains(&h), "handle {h} reused");
                        assert!(self.m.open.len() < SLOTS);
                        self.m.issued.push(h);
                        self.m.open.insert(
                            h,
                            SessionModel {
                                active: Active::None,
                                needed: 0,
                            },
                        );
                    }
                    Err(e) => {
                        assert_eq!(e, ckr::SESSION_COUNT);
                        assert_eq!(self.m.open.len(), SLOTS, "free slot refused");
                    }
                }
            }
            Call::CloseSession { s } => {
                let s = self.m.session(*s);
                let r = t.close_session(s);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    assert!(r.is_ok(), "{r:?}");
                    self.m.open.remove(&s);
                    if self.m.open.is_empty() {
                        self.m.logged_in = false;
                    }
                }
            }
            Call::CloseAll => {
                t.close_all_sessions();
                self.m.open.clear();
                self.m.logged_in = false;
            }
            Call::SessionInfo { s } => {
                let s = self.m.session(*s);
                let r = t.session_info(s);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    assert!(r.is_ok());
                }
            }
            Call::Login { s, user_type, pin } => {
                let s = self.m.session(*s);
                let ut = match user_type % 4 {
                    0 => cku::USER,
                    1 => cku::SO,
                    2 => cku::CONTEXT_SPECIFIC,
                    _ => u64::from(*user_type),
                };
                let long = vec![b'x'; 200];
                let p: &[u8] = match pin {
                    Pin::Right => fake::PASSWORD,
                    Pin::Wrong => b"wrong",
                    Pin::Empty => b"",
                    Pin::Long => &long,
                };
                let r = t.login(s, ut, p);
                check(&self.m, &r);
                let valid = self.m.open.contains_key(&s);
                if r == Err(ckr::SESSION_CLOSED) {
                    self.closed_session(s, &r, false);
                } else if r.is_ok() {
                    assert!(valid, "login on a closed session");
                    assert!(!self.m.logged_in, "logged in twice");
                    assert!(*pin == Pin::Right, "wrong PIN accepted");
                    self.m.logged_in = true;
                } else if !valid {
                    self.closed_session(s, &r, false);
                }
            }
            Call::Logout { s } => {
                let s = self.m.session(*s);
                let r = t.logout(s);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    match r {
                        Ok(()) => {
                            assert!(self.m.logged_in);
                            self.m.logged_in = false;
                            for x in self.m.open.values_mut() {
                                x.active = Active::None;
                            }
                        }
                        Err(e) => {
                            assert_eq!(e, ckr::USER_NOT_LOGGED_IN);
                            assert!(!self.m.logged_in);
                        }
                    }
                }
            }
            Call::CreateObject { s, t: tpl } => {
                let s = self.m.session(*s);
                let owned = owned_template(tpl);
                let r = t.create_object(s, &attrs(&owned));
                self.object_made(s, r);
            }
            Call::CopyObject { s, o, t: tpl } => {
                let s = self.m.session(*s);
                let owned = owned_template(tpl);
                let r = t.copy_object(s, self.m.object(*o), &attrs(&owned));
                self.object_made(s, r);
            }
            Call::DestroyObject { s, o } => {
                let s = self.m.session(*s);
                let r = t.destroy_object(s, self.m.object(*o));
                check(&self.m, &r);
                self.closed_session(s, &r, true);
            }
            Call::GetAttributes { s, o, types } => {
                let s = self.m.session(*s);
                let h = self.m.object(*o);
                let types: Vec<u64> = types
                    .iter()
                    .map(|t| {
                        if *t == 0xff {
                            fake::UNKNOWN_ATTR
                        } else {
                            tables::pick(tables::ATTRS, *t)
                        }
                    })
                    .collect();
                let mut seen = Vec::new();
                let r = t.get_attributes(s, h, &types, |i, v| {
                    seen.push((i, v_bytes(v)));
                });
                check(&self.m, &r);
                if !self.closed_session(s, &r, false) && r.is_ok() && !self.m.faulty {
                    assert_eq!(seen.len(), types.len());
                    for (k, (i, v)) in seen.iter().enumerate() {
                        assert_eq!(*i, k, "attributes in order");
                        if let Some(v) = v {
                            assert_eq!(v, &fake::attr_value(h, types[k]), "value of another");
                        }
                    }
                }
            }
            Call::SetAttributes { s, o, t: tpl } => {
                let s = self.m.session(*s);
                let owned = owned_template(tpl);
                let r = t.set_attributes(s, self.m.object(*o), &attrs(&owned));
                check(&self.m, &r);
                self.closed_session(s, &r, false);
            }
            Call::ObjectSize { s, o } => {
                let s = self.m.session(*s);
                let h = self.m.object(*o);
                let r = t.object_size(s, h);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true)
                    && !self.m.faulty
                    && let Ok(n) = r
                {
                    assert_eq!(n, h * 3, "size of another object");
                }
            }
            Call::FindInit { s, t: tpl } => {
                let s = self.m.session(*s);
                let owned = owned_template(tpl);
                let r = t.find_init(s, &attrs(&owned));
                check(&self.m, &r);
                if !self.closed_session(s, &r, false) {
                    self.init(s, &r);
                    if r.is_ok() {
                        self.set_active(s, Active::Find);
                    }
                }
            }
            Call::Find { s, n } => {
                let s = self.m.session(*s);
                let mut out = vec![0u64; usize::from(*n)];
                let r = t.find(s, &mut out);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    self.continuation(s, &r, |a| matches!(a, Active::Find));
                    if let Ok(k) = r {
                        assert!(k <= out.len());
                        if !self.m.faulty {
                            // The fake finds every object it holds, ascending.
                            assert!(out[..k].windows(2).all(|w| w[0] < w[1]), "{out:?}");
                        }
                    }
                    let was_find = matches!(self.active(s), Some(Active::Find));
                    if r == Err(ckr::OPERATION_NOT_INITIALIZED) && was_find {
                        self.set_active(s, Active::None);
                    }
                }
            }
            Call::FindFinal { s } => {
                let s = self.m.session(*s);
                let r = t.find_final(s);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    self.continuation(s, &r, |a| matches!(a, Active::Find));
                    let was_find = matches!(self.active(s), Some(Active::Find));
                    if r.is_ok() || (r == Err(ckr::OPERATION_NOT_INITIALIZED) && was_find) {
                        self.set_active(s, Active::None);
                    }
                }
            }
            Call::GenerateKey { s, m, t: tpl } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let owned = owned_template(tpl);
                let r = t.generate_key(s, &mb.mechanism(), &attrs(&owned));
                self.object_made(s, r);
            }
            Call::GenerateKeyPair {
                s,
                m,
                public,
                private,
            } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let a = owned_template(public);
                let b = owned_template(private);
                let r = t.generate_key_pair(s, &mb.mechanism(), &attrs(&a), &attrs(&b));
                check(&self.m, &r);
                if !self.closed_session(s, &r, false)
                    && let Ok((p, k)) = r
                {
                    assert_ne!(p, k);
                    self.m.objects.extend([p, k]);
                }
            }
            Call::WrapKey {
                s,
                m,
                wrapping,
                o,
                out,
            } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let mut buf = out_buf(&self.m, s, *out);
                let given = buf.as_ref().map(Vec::len);
                let r = t.wrap_key(
                    s,
                    &mb.mechanism(),
                    self.m.object(*wrapping),
                    self.m.object(*o),
                    buf.as_deref_mut(),
                );
                check(&self.m, &r);
                check_len(&r, given);
                self.note_needed(s, &r);
                self.closed_session(s, &r, false);
            }
            Call::UnwrapKey {
                s,
                m,
                unwrapping,
                wrapped,
                t: tpl,
            } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let owned = owned_template(tpl);
                let r = t.unwrap_key(
                    s,
                    &mb.mechanism(),
                    self.m.object(*unwrapping),
                    &wrapped.bytes(),
                    &attrs(&owned),
                );
                self.object_made(s, r);
            }
            Call::DeriveKey { s, m, o, t: tpl } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let owned = owned_template(tpl);
                let r = t.derive_key(s, &mb.mechanism(), self.m.object(*o), &attrs(&owned));
                self.object_made(s, r);
            }
            Call::GenerateRandom { s, len } => {
                let s = self.m.session(*s);
                let mut buf = vec![0u8; usize::from(*len)];
                let r = t.generate_random(s, &mut buf);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) && r.is_ok() && !self.m.faulty {
                    // The fake's random chunks count up from 0.
                    for chunk in buf.chunks(T::CHUNK) {
                        for (i, b) in chunk.iter().enumerate() {
                            assert_eq!(*b, i as u8, "random bytes mixed up");
                        }
                    }
                }
            }
            Call::SeedRandom { s, seed } => {
                let s = self.m.session(*s);
                let r = t.seed_random(s, &seed.bytes());
                check(&self.m, &r);
                self.closed_session(s, &r, true);
            }
            Call::DigestInit { s, m } => {
                let s = self.m.session(*s);
                let mb = m.bytes();
                let mech = mb.mechanism();
                let r = t.digest_init(s, &mech);
                check(&self.m, &r);
                if !self.closed_session(s, &r, false) {
                    self.init(s, &r);
                    if r.is_ok() {
                        let hash = Hash::from_mechanism(mech.ty).expect("a digest mechanism");
                        self.set_active(s, Active::Digest(Hasher::new(hash)));
                    }
                }
            }
            Call::Digest { s, data, out } => {
                let s = self.m.session(*s);
                self.digest(s, Some(&data.bytes()), *out);
            }
            Call::DigestUpdate { s, data } => {
                let s = self.m.session(*s);
                let d = data.bytes();
                let r = t.digest_update(s, &d);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    match self.active(s) {
                        Some(Active::Digest(h)) => {
                            assert!(r.is_ok(), "{r:?}");
                            h.update(&d);
                        }
                        Some(Active::Unknown) => {}
                        _ => assert_eq!(r, Err(ckr::OPERATION_NOT_INITIALIZED)),
                    }
                }
            }
            Call::DigestFinal { s, out } => {
                let s = self.m.session(*s);
                self.digest(s, None, *out);
            }
            Call::DigestKey { s, o } => {
                let s = self.m.session(*s);
                let key = self.m.object(*o);
                let r = t.digest_key(s, key);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    self.continuation(s, &r, |a| matches!(a, Active::Digest(_)));
                    if let Some(a @ Active::Digest(_)) = self.active(s) {
                        match r {
                            Ok(()) => {
                                if let Active::Digest(h) = a {
                                    h.update(&fake::key_value(key));
                                }
                            }
                            Err(ckr::KEY_HANDLE_INVALID | ckr::USER_NOT_LOGGED_IN) => {}
                            Err(ckr::DEVICE_ERROR) => *a = Active::Unknown,
                            Err(_) => *a = Active::None,
                        }
                    }
                }
            }
            Call::CryptoInit { s, op, m, o } => {
                let s = self.m.session(*s);
                let op = calls::op_of(*op);
                let mb = m.bytes();
                let mech = mb.mechanism();
                let key = self.m.object(*o);
                let r = t.crypto_init(s, op, &mech, key);
                check(&self.m, &r);
                if !self.closed_session(s, &r, false) {
                    self.init(s, &r);
                    if r.is_ok() {
                        self.set_active(
                            s,
                            Active::Crypto(CryptoModel {
                                op,
                                mech: mech.ty,
                                key,
                                acc: Acc::new(mech.ty),
                                pending: false,
                                clean: true,
                            }),
                        );
                    }
                }
            }
            Call::Crypto { s, op, data, out } => {
                let s = self.m.session(*s);
                // `C_Encrypt`, `C_Decrypt`, `C_Sign`.
                self.crypto(s, calls::op_of(*op % 3), data, *out);
            }
            Call::CryptoUpdate { s, op, data, out } => {
                let s = self.m.session(*s);
                // `C_EncryptUpdate`, `C_DecryptUpdate`.
                self.crypto_update(s, calls::op_of(*op % 2), data, *out);
            }
            Call::CryptoUpdateNoOutput { s, op, data } => {
                let s = self.m.session(*s);
                // `C_SignUpdate`, `C_VerifyUpdate`.
                let op = calls::op_of(2 + *op % 2);
                let d = data.bytes();
                let before = self.crypto_state(s, op);
                let r = t.crypto_update_no_output(s, op, &d);
                check(&self.m, &r);
                if !self.closed_session(s, &r, true) {
                    self.continuation(s, &r, |a| matches!(a, Active::Crypto(c) if c.op == op));
                    match (&r, before) {
                        (Ok(()), Some(mut c)) => {
                            c.acc.update(&d);
                            self.set_active(s, Active::Crypto(c));
                        }
                        _ => self.ended_unless_refused(
                            s,
                            op,
                            &r,
                            &[ckr::OPERATION_ACTIVE, ckr::OPERATION_NOT_INITIALIZED],
                        ),
                    }
                }
            }
            Call::CryptoFinal { s, op, out } => {
                let s = self.m.session(*s);
                // `C_EncryptFinal`, `C_DecryptFinal`, `C_SignFinal`.
                self.crypto_final(s, calls::op_of(*op % 3), *out);
            }
            Call::Verify { s, data, sig } => {
                let s = self.m.session(*s);
                let d = data.bytes();
                let before = self.crypto_state(s, Op::Verify);
                let signature = match (sig, &before) {
                    (Sig::Valid, Some(c)) => {
                        let mut c = c.clone();
                        c.acc.update(&d);
                        expected_sig(&self.hsm, &c).unwrap_or_default()
                    }
                    (Sig::Valid, None) => Vec::new(),
                    (Sig::Bytes(b), _) => b.bytes(),
                };
                let r = t.verify(s, &d, &signature);
                self.verified(s, r, before, *sig == Sig::Valid, &[ckr::OPERATION_ACTIVE]);
            }
            Call::VerifyFinal { s, sig } => {
                let s = self.m.session(*s);
                let before = self.crypto_state(s, Op::Verify);
                let signature = match (sig, &before) {
                    (Sig::Valid, Some(c)) => expected_sig(&self.hsm, c).unwrap_or_default(),
                    (Sig::Valid, None) => Vec::new(),
                    (Sig::Bytes(b), _) => b.bytes(),
                };
                let r = t.verify_final(s, &signature);
                self.verified(s, r, before, *sig == Sig::Valid, &[]);
            }
            Call::Fault { kind } => {
                let f = match kind {
                    FaultKind::Io => Fault::Link(LinkError::Io),
                    FaultKind::Timeout => Fault::Link(LinkError::Timeout),
                    FaultKind::FrameTooLong => Fault::Link(LinkError::FrameTooLong),
                    FaultKind::Reply(d) => Fault::Reply(d.bytes()),
                };
                self.hsm.state().fault = Some(f);
                self.m.fault();
            }
        }
        // Invariants after every call.
        assert_eq!(
            t.logged_in(),
            self.m.logged_in,
            "login state after {call:?}"
        );
        assert_eq!(t.session_count().0, self.m.open.len(), "open sessions");
    }

    fn object_made(&mut self, s: u64, r: Result<u64, Rv>) {
        check(&self.m, &r);
        if !self.closed_session(s, &r, false)
            && let Ok(h) = r
        {
            if !self.m.faulty {
                assert!(
                    self.hsm.state().objects.contains_key(&h),
                    "handle {h} unknown"
                );
            }
            self.m.objects.push(h);
        }
    }

    fn digest(&mut self, s: u64, data: Option<&[u8]>, out: Out) {
        let mut buf = out_buf(&self.m, s, out);
        let given = buf.as_ref().map(Vec::len);
        let r = match data {
            Some(d) => self.t.digest(s, d, buf.as_deref_mut()),
            None => self.t.digest_final(s, buf.as_deref_mut()),
        };
        check(&self.m, &r);
        check_len(&r, given);
        self.note_needed(s, &r);
        if self.closed_session(s, &r, true) {
            return;
        }
        match self.active(s).cloned() {
            Some(Active::Digest(mut h)) => {
                let size = h.hash().size();
                match r {
                    Ok(Len::Written(n)) => {
                        assert_eq!(n, size);
                        if let Some(d) = data {
                            h.update(d);
                        }
                        assert_eq!(&buf.unwrap()[..n], digest_of(&h).as_slice(), "digest");
                        self.set_active(s, Active::None);
                    }
                    Ok(Len::Needed(n)) => assert_eq!(n, size),
                    Err(e) => panic!("digest failed: {e:#x}"),
                }
            }
            Some(Active::Unknown) => {
                // Only a finished digest says what the session holds now.
                if let Ok(Len::Written(_)) = r {
                    self.set_active(s, Active::None);
                }
            }
            _ => assert_eq!(r, Err(ckr::OPERATION_NOT_INITIALIZED)),
        }
    }

    fn crypto(&mut self, s: u64, op: Op, data: &Data, out: Out) {
        let d = data.bytes();
        let mut buf = out_buf(&self.m, s, out);
        let given = buf.as_ref().map(Vec::len);
        let before = self.crypto_state(s, op);
        let r = self.t.crypto(s, op, &d, buf.as_deref_mut());
        check(&self.m, &r);
        check_len(&r, given);
        self.note_needed(s, &r);
        if self.closed_session(s, &r, true) {
            return;
        }
        self.continuation(s, &r, |a| matches!(a, Active::Crypto(c) if c.op == op));
        let Some(mut c) = before else {
            self.resolved(s, matches!(r, Ok(Len::Written(_))));
            return;
        };
        match r {
            Ok(Len::Needed(_)) => {
                c.pending |= given.is_some();
                self.set_active(s, Active::Crypto(c));
            }
            Ok(Len::Written(n)) => {
                let got = &buf.as_ref().unwrap()[..n];
                if c.clean && !self.m.faulty && !c.pending {
                    if op == Op::Sign {
                        c.acc.update(&d);
                        if let Some(want) = expected_sig(&self.hsm, &c) {
                            assert_eq!(got, want.as_slice(), "signature");
                        }
                    } else if fake::is_xor(c.mech) {
                        assert_eq!(got, fake::xor(&d).as_slice(), "AES output");
                    }
                }
                self.set_active(s, Active::None);
            }
            Err(_) => self.ended_unless_refused(s, op, &r, &[ckr::OPERATION_ACTIVE]),
        }
    }

    fn crypto_update(&mut self, s: u64, op: Op, data: &Data, out: Out) {
        let d = data.bytes();
        let mut buf = out_buf(&self.m, s, out);
        let given = buf.as_ref().map(Vec::len);
        let before = self.crypto_state(s, op);
        let r = self.t.crypto_update(s, op, &d, buf.as_deref_mut());
        check(&self.m, &r);
        check_len(&r, given);
        self.note_needed(s, &r);
        if self.closed_session(s, &r, true) {
            return;
        }
        self.continuation(s, &r, |a| matches!(a, Active::Crypto(c) if c.op == op));
        let Some(mut c) = before else {
            return;
        };
        match r {
            Ok(Len::Needed(_)) => {
                c.pending |= given.is_some();
                self.set_active(s, Active::Crypto(c));
            }
            Ok(Len::Written(n)) => {
                let got = &buf.as_ref().unwrap()[..n];
                if c.clean
                    && !self.m.faulty
                    && !c.pending
                    && fake::is_xor(c.mech)
                    && matches!(op, Op::Encrypt | Op::Decrypt)
                {
                    assert_eq!(got, fake::xor(&d).as_slice(), "AES update output");
                }
                c.pending = false;
                self.set_active(s, Active::Crypto(c));
            }
            // A final's output still waits: the update is refused.
            Err(_) => self.ended_unless_refused(s, op, &r, &[ckr::OPERATION_ACTIVE]),
        }
    }

    fn crypto_final(&mut self, s: u64, op: Op, out: Out) {
        let mut buf = out_buf(&self.m, s, out);
        let given = buf.as_ref().map(Vec::len);
        let before = self.crypto_state(s, op);
        let r = self.t.crypto_final(s, op, buf.as_deref_mut());
        check(&self.m, &r);
        check_len(&r, given);
        self.note_needed(s, &r);
        if self.closed_session(s, &r, true) {
            return;
        }
        self.continuation(s, &r, |a| matches!(a, Active::Crypto(c) if c.op == op));
        let Some(mut c) = before else {
            self.resolved(s, matches!(r, Ok(Len::Written(_))));
            return;
        };
        match r {
            Ok(Len::Needed(_)) => {
                c.pending |= given.is_some();
                self.set_active(s, Active::Crypto(c));
            }
            Ok(Len::Written(n)) => {
                let got = &buf.as_ref().unwrap()[..n];
                if c.clean && !self.m.faulty && !c.pending {
                    if op == Op::Sign {
                        if let Some(want) = expected_sig(&self.hsm, &c) {
                            assert_eq!(got, want.as_slice(), "multi-part signature");
                        }
                    } else if fake::is_xor(c.mech) {
                        assert_eq!(n, 0, "AES final output");
                    }
                }
                self.set_active(s, Active::None);
            }
            Err(_) => self.ended_unless_refused(s, op, &r, &[]),
        }
    }

    fn verified(
        &mut self,
        s: u64,
        r: Result<(), Rv>,
        before: Option<CryptoModel>,
        valid: bool,
        kept: &[Rv],
    ) {
        check(&self.m, &r);
        if self.closed_session(s, &r, true) {
            return;
        }
        self.continuation(
            s,
            &r,
            |a| matches!(a, Active::Crypto(c) if c.op == Op::Verify),
        );
        if let Some(c) = &before {
            let known_key = self.hsm.state().objects.contains_key(&c.key);
            if c.clean && !self.m.faulty && known_key && !kept.iter().any(|k| r == Err(*k)) {
                if valid {
                    assert_eq!(r, Ok(()), "a valid signature refused");
                } else {
                    assert!(r.is_err() || r == Ok(()), "{r:?}");
                }
            }
        }
        if before.is_none() {
            self.resolved(s, r.is_ok());
        }
        self.ended_unless_refused(s, Op::Verify, &r, kept);
    }
}

fn v_bytes(v: hsmlink_core::wire::AttrValue<'_>) -> Option<Vec<u8>> {
    match v {
        hsmlink_core::wire::AttrValue::Value(b) => Some(b.to_vec()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let calls = calls::read_all(data);
    let slots: Vec<Slot> = (0..SLOTS).map(|_| Slot::new()).collect();
    let hsm = FakeHsm::new();
    let token = Token::new(
        hsm.clone(),
        [3; 16],
        &slots,
        LoginConfig {
            user: Some(fake::USER),
            special_pin: false,
        },
    )
    .expect("token");
    let objects = vec![
        fake::RSA_PRIVATE,
        fake::RSA_PUBLIC,
        fake::EC_PRIVATE,
        fake::EC_PUBLIC,
        fake::AES,
        fake::HMAC,
        fake::DATA,
    ];
    let mut r = Runner {
        t: &token,
        hsm,
        m: Model {
            issued: Vec::new(),
            open: BTreeMap::new(),
            logged_in: false,
            faulty: false,
            objects,
        },
    };
    let trace = std::env::var_os("HSMLINK_FUZZ_TRACE").is_some();
    for c in calls.iter().take(200) {
        if trace {
            eprintln!(
                "  [sessions {:?}, logged in {}, exchanges {}]\n{c:?}",
                r.t.session_count(),
                r.t.logged_in(),
                r.hsm.state().exchanges
            );
        }
        r.step(c);
    }
});
