//! A fake HSM in memory for the `token_model` target: it speaks the real
//! wire protocol (frames in, frames out) and answers like a well-behaved
//! HSM, with deterministic "cryptography" the model can predict:
//!
//! - encryption and decryption with AES mechanisms XOR every byte with
//!   [`XOR`] (same length, output at once, nothing at the final);
//! - a signature is [`sig_bytes`] of the FNV-1a hash of every data byte the
//!   operation received, as long as the mechanism's real signatures;
//! - `GetAttributes` answers `handle ‖ type` (16 bytes) for each type, so
//!   the model can tell whose value it got; `CKA_VALUE` is sensitive and the
//!   vendor type `CKA_VENDOR_DEFINED | 0x1234` is invalid.
//!
//! A [`Fault`] armed in [`Shared`] replaces the next exchange's answer: a
//! link error, or any bytes as the reply body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, ckm, cko, ckr};
use hsmlink_core::link::{Connector, Link, LinkError};
use hsmlink_core::mech;
use hsmlink_core::wire::{
    self, AttrValue, HEADER_LEN, KeyInfo, MAX_ATTRS, MAX_CHUNK, MAX_FIND, Op, PROTOCOL_VERSION,
    Request, Response,
};

/// The byte AES "encryption" XORs with.
pub const XOR: u8 = 0x5a;
/// The only user and password the fake accepts.
pub const USER: &str = "alice";
pub const PASSWORD: &[u8] = b"pw";
/// Handles of the objects every fake HSM starts with.
pub const RSA_PRIVATE: u64 = 10;
pub const RSA_PUBLIC: u64 = 11;
pub const EC_PRIVATE: u64 = 12;
pub const EC_PUBLIC: u64 = 13;
pub const AES: u64 = 14;
pub const HMAC: u64 = 15;
pub const DATA: u64 = 16;
/// The attribute type the fake does not know.
pub const UNKNOWN_ATTR: u64 = cka::VENDOR_DEFINED | 0x1234;

/// What the next exchange does instead of answering.
#[derive(Clone, Debug)]
pub enum Fault {
    Link(LinkError),
    /// These bytes are the reply body.
    Reply(Vec<u8>),
}

/// An object of the fake HSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obj {
    pub class: u64,
    pub key_type: u64,
    pub bits: u32,
}

/// State shared by every connection of one fake HSM.
pub struct Shared {
    pub objects: BTreeMap<u64, Obj>,
    next_handle: u64,
    /// Armed fault for the next exchange (any connection).
    pub fault: Option<Fault>,
    /// Exchanges answered so far.
    pub exchanges: u64,
    pub connects: u64,
}

impl Shared {
    fn new() -> Self {
        let mut objects = BTreeMap::new();
        let key = |class, key_type, bits| Obj {
            class,
            key_type,
            bits,
        };
        objects.insert(RSA_PRIVATE, key(cko::PRIVATE_KEY, ckk::RSA, 2048));
        objects.insert(RSA_PUBLIC, key(cko::PUBLIC_KEY, ckk::RSA, 2048));
        objects.insert(EC_PRIVATE, key(cko::PRIVATE_KEY, ckk::EC, 256));
        objects.insert(EC_PUBLIC, key(cko::PUBLIC_KEY, ckk::EC, 256));
        objects.insert(AES, key(cko::SECRET_KEY, ckk::AES, 128));
        objects.insert(HMAC, key(cko::SECRET_KEY, ckk::GENERIC_SECRET, 256));
        objects.insert(DATA, key(cko::DATA, u64::MAX, 0));
        Shared {
            objects,
            next_handle: 100,
            fault: None,
            exchanges: 0,
            connects: 0,
        }
    }

    fn add(&mut self, o: Obj) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        self.objects.insert(h, o);
        h
    }
}

/// FNV-1a, the running hash of the data a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// `len` bytes derived from `seed` (splitmix64).
pub fn sig_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Length of the fake's signature with the mechanism the HSM receives.
pub fn sig_len(mech: u64, bits: u32) -> usize {
    let bytes = (bits as usize).div_ceil(8);
    if mech::is_ecdsa(mech) {
        2 * bytes
    } else if mech::is_rsa_sign(mech) {
        bytes
    } else {
        mech::hmac_len(mech).unwrap_or(16)
    }
}

/// Whether the fake "encrypts" with this mechanism by XOR.
pub fn is_xor(mech: u64) -> bool {
    matches!(
        mech,
        ckm::AES_ECB | ckm::AES_CBC | ckm::AES_CBC_PAD | ckm::AES_CTR | ckm::AES_GCM
    )
}

pub fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ XOR).collect()
}

/// The fake HSM: a connector handing out links to one shared state.
#[derive(Clone)]
pub struct FakeHsm {
    pub shared: Arc<Mutex<Shared>>,
}

impl Default for FakeHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHsm {
    pub fn new() -> Self {
        FakeHsm {
            shared: Arc::new(Mutex::new(Shared::new())),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Connector for FakeHsm {
    type Link = FakeLink;
    fn connect(&self, _host: Option<&str>) -> Result<FakeLink, LinkError> {
        self.state().connects += 1;
        Ok(FakeLink {
            shared: self.shared.clone(),
            hello: false,
            logged_in: false,
            ops: Default::default(),
            find: None,
        })
    }
}

struct FakeOp {
    mech: u64,
    bits: u32,
    data: Fnv,
}

/// One connection to the fake HSM.
pub struct FakeLink {
    shared: Arc<Mutex<Shared>>,
    hello: bool,
    logged_in: bool,
    ops: [Option<FakeOp>; 4],
    find: Option<(Vec<u64>, usize)>,
}

fn op_index(op: Op) -> usize {
    match op {
        Op::Encrypt => 0,
        Op::Decrypt => 1,
        Op::Sign => 2,
        Op::Verify => 3,
    }
}

/// An owned answer, borrowed into a [`Response`] for encoding.
enum Answer {
    Hello,
    Ok,
    Error(u64),
    Object(u64),
    KeyPair(u64, u64),
    Attributes(Vec<Option<Option<[u8; 16]>>>),
    Size(u64),
    Objects(Vec<u64>, bool),
    KeyInfo(KeyInfo),
    Data(Vec<u8>),
}

impl Answer {
    fn encode(&self, buf: &mut [u8]) -> Result<usize, wire::WireError> {
        let r = match self {
            Answer::Hello => Response::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 65536,
                server: "fake",
            },
            Answer::Ok => Response::Ok,
            Answer::Error(rv) => Response::Error(*rv),
            Answer::Object(h) => Response::Object(*h),
            Answer::KeyPair(public, private) => Response::KeyPair {
                public: *public,
                private: *private,
            },
            Answer::Attributes(v) => {
                let mut out = heapless::Vec::<AttrValue<'_>, MAX_ATTRS>::new();
                for a in v {
                    let x = match a {
                        Some(Some(bytes)) => AttrValue::Value(bytes),
                        Some(None) => AttrValue::Sensitive,
                        None => AttrValue::Invalid,
                    };
                    let _ = out.push(x);
                }
                Response::Attributes(out)
            }
            Answer::Size(n) => Response::Size(*n),
            Answer::Objects(h, more) => Response::Objects {
                handles: heapless::Vec::from_slice(h).unwrap_or_default(),
                more: *more,
            },
            Answer::KeyInfo(k) => Response::KeyInfo(*k),
            Answer::Data(d) => Response::Data(d),
        };
        wire::encode_frame(&r, buf)
    }
}

impl Link for FakeLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        let fault = {
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            s.exchanges += 1;
            s.fault.take()
        };
        // The frame the module sent must be well formed.
        let head: [u8; HEADER_LEN] = request
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .expect("request frame has a header");
        let len = wire::frame_len(head, usize::MAX).expect("header");
        assert_eq!(len + HEADER_LEN, request.len(), "frame length");
        let req: Request<'_> =
            wire::decode(&request[HEADER_LEN..]).expect("the module sends valid requests");
        match fault {
            Some(Fault::Link(e)) => return Err(e),
            Some(Fault::Reply(bytes)) => {
                if bytes.len() > reply.len() {
                    return Err(LinkError::FrameTooLong);
                }
                reply[..bytes.len()].copy_from_slice(&bytes);
                return Ok(bytes.len());
            }
            None => {}
        }
        let answer = self.answer(req);
        let mut frame = vec![0u8; HEADER_LEN + 70_000];
        let n = answer.encode(&mut frame).expect("fake answers fit");
        let body = &frame[HEADER_LEN..n];
        if body.len() > reply.len() {
            return Err(LinkError::FrameTooLong);
        }
        reply[..body.len()].copy_from_slice(body);
        Ok(body.len())
    }
}

impl FakeLink {
    fn state(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&mut self, req: Request<'_>) -> Answer {
        match req {
            Request::Hello { version, .. } => {
                if version != PROTOCOL_VERSION || self.hello {
                    return Answer::Error(ckr::DEVICE_ERROR);
                }
                self.hello = true;
                return Answer::Hello;
            }
            _ if !self.hello => return Answer::Error(ckr::DEVICE_ERROR),
            Request::Login { user, password } => {
                if user == USER && password.0 == PASSWORD {
                    self.logged_in = true;
                    return Answer::Ok;
                }
                return Answer::Error(ckr::PIN_INCORRECT);
            }
            Request::Ping => return Answer::Ok,
            _ if !self.logged_in => return Answer::Error(ckr::USER_NOT_LOGGED_IN),
            _ => {}
        }
        match req {
            Request::Logout => {
                self.logged_in = false;
                self.ops = Default::default();
                Answer::Ok
            }
            Request::CreateObject { template } => {
                let class = attr::find_ulong(&template, cka::CLASS)
                    .ok()
                    .flatten()
                    .unwrap_or(cko::DATA);
                let key_type = attr::find_ulong(&template, cka::KEY_TYPE)
                    .ok()
                    .flatten()
                    .unwrap_or(ckk::AES);
                let h = self.state().add(Obj {
                    class,
                    key_type,
                    bits: 128,
                });
                Answer::Object(h)
            }
            Request::CopyObject { object, .. } => {
                let mut s = self.state();
                match s.objects.get(&object).copied() {
                    Some(o) => Answer::Object(s.add(o)),
                    None => Answer::Error(ckr::OBJECT_HANDLE_INVALID),
                }
            }
            Request::DestroyObject { object } => match self.state().objects.remove(&object) {
                Some(_) => Answer::Ok,
                None => Answer::Error(ckr::OBJECT_HANDLE_INVALID),
            },
            Request::GetAttributes { object, types } => {
                if !self.state().objects.contains_key(&object) {
                    return Answer::Error(ckr::OBJECT_HANDLE_INVALID);
                }
                Answer::Attributes(
                    types
                        .iter()
                        .map(|ty| match *ty {
                            UNKNOWN_ATTR => None,
                            cka::VALUE => Some(None),
                            ty => Some(Some(attr_value(object, ty))),
                        })
                        .collect(),
                )
            }
            Request::SetAttributes { object, .. } | Request::GetObjectSize { object } => {
                match (self.state().objects.contains_key(&object), req) {
                    (false, _) => Answer::Error(ckr::OBJECT_HANDLE_INVALID),
                    (true, Request::GetObjectSize { .. }) => Answer::Size(object * 3),
                    (true, _) => Answer::Ok,
                }
            }
            Request::FindObjects { max, .. } => {
                let all: Vec<u64> = self.state().objects.keys().copied().collect();
                self.find = Some((all, 0));
                self.find_next(max)
            }
            Request::FindNext { max } => self.find_next(max),
            Request::GenerateKey { mechanism, .. } => {
                let kt = match mechanism.ty {
                    ckm::AES_KEY_GEN => ckk::AES,
                    ckm::GENERIC_SECRET_KEY_GEN => ckk::GENERIC_SECRET,
                    _ => return Answer::Error(ckr::MECHANISM_INVALID),
                };
                Answer::Object(self.state().add(Obj {
                    class: cko::SECRET_KEY,
                    key_type: kt,
                    bits: 256,
                }))
            }
            Request::GenerateKeyPair { mechanism, .. } => {
                let (kt, bits) = match mechanism.ty {
                    ckm::RSA_PKCS_KEY_PAIR_GEN => (ckk::RSA, 1024),
                    ckm::EC_KEY_PAIR_GEN => (ckk::EC, 384),
                    _ => return Answer::Error(ckr::MECHANISM_INVALID),
                };
                let mut s = self.state();
                let p = s.add(Obj {
                    class: cko::PUBLIC_KEY,
                    key_type: kt,
                    bits,
                });
                let k = s.add(Obj {
                    class: cko::PRIVATE_KEY,
                    key_type: kt,
                    bits,
                });
                Answer::KeyPair(p, k)
            }
            Request::CryptoInit { op, mechanism, key } => match self.key(key) {
                Some(o) => {
                    self.ops[op_index(op)] = Some(FakeOp {
                        mech: mechanism.ty,
                        bits: o.bits,
                        data: Fnv::default(),
                    });
                    Answer::KeyInfo(KeyInfo {
                        class: o.class,
                        key_type: o.key_type,
                        bits: o.bits,
                    })
                }
                None => Answer::Error(ckr::KEY_HANDLE_INVALID),
            },
            Request::CryptoUpdate { op, data } => {
                if data.len() > MAX_CHUNK {
                    return Answer::Error(ckr::DATA_LEN_RANGE);
                }
                let Some(o) = self.ops[op_index(op)].as_mut() else {
                    return Answer::Error(ckr::OPERATION_NOT_INITIALIZED);
                };
                match op {
                    Op::Sign | Op::Verify => {
                        o.data.update(data);
                        Answer::Data(Vec::new())
                    }
                    Op::Encrypt | Op::Decrypt => Answer::Data(xor(data)),
                }
            }
            Request::CryptoFinal {
                op,
                data,
                signature,
            } => match self.ops[op_index(op)].take() {
                Some(o) => finish(op, o, data, signature),
                None => Answer::Error(ckr::OPERATION_NOT_INITIALIZED),
            },
            Request::CryptoOneShot {
                op,
                mechanism,
                key,
                data,
                signature,
            } => {
                self.ops[op_index(op)] = None;
                match self.key(key) {
                    Some(o) => finish(
                        op,
                        FakeOp {
                            mech: mechanism.ty,
                            bits: o.bits,
                            data: Fnv::default(),
                        },
                        data,
                        signature,
                    ),
                    None => Answer::Error(ckr::KEY_HANDLE_INVALID),
                }
            }
            Request::CryptoCancel { op } => {
                self.ops[op_index(op)] = None;
                Answer::Ok
            }
            Request::GenerateRandom { len } => {
                let len = len as usize;
                if len > MAX_CHUNK {
                    Answer::Error(ckr::DATA_LEN_RANGE)
                } else {
                    Answer::Data((0..len).map(|i| i as u8).collect())
                }
            }
            Request::SeedRandom { seed } => {
                if seed.len() > MAX_CHUNK {
                    Answer::Error(ckr::DATA_LEN_RANGE)
                } else {
                    Answer::Ok
                }
            }
            Request::WrapKey {
                wrapping_key, key, ..
            } => {
                let s = self.state();
                if !s.objects.contains_key(&wrapping_key) {
                    Answer::Error(ckr::WRAPPING_KEY_HANDLE_INVALID)
                } else if !s.objects.contains_key(&key) {
                    Answer::Error(ckr::KEY_HANDLE_INVALID)
                } else {
                    Answer::Data(sig_bytes(key, 40))
                }
            }
            Request::UnwrapKey { unwrapping_key, .. } => {
                let mut s = self.state();
                if !s.objects.contains_key(&unwrapping_key) {
                    Answer::Error(ckr::UNWRAPPING_KEY_HANDLE_INVALID)
                } else {
                    Answer::Object(s.add(Obj {
                        class: cko::SECRET_KEY,
                        key_type: ckk::AES,
                        bits: 256,
                    }))
                }
            }
            Request::DeriveKey { .. } => Answer::Error(ckr::MECHANISM_INVALID),
            Request::DigestKey { key, .. } => match self.state().objects.get(&key) {
                Some(o) if o.class == cko::SECRET_KEY => Answer::Data(key_value(key)),
                Some(_) => Answer::Error(ckr::KEY_INDIGESTIBLE),
                None => Answer::Error(ckr::OBJECT_HANDLE_INVALID),
            },
            Request::Hello { .. } | Request::Login { .. } | Request::Ping => {
                Answer::Error(ckr::GENERAL_ERROR)
            }
        }
    }

    fn key(&self, h: u64) -> Option<Obj> {
        self.state()
            .objects
            .get(&h)
            .copied()
            .filter(|o| o.class != cko::DATA)
    }

    fn find_next(&mut self, max: u32) -> Answer {
        let Some((all, pos)) = self.find.as_mut() else {
            return Answer::Error(ckr::OPERATION_NOT_INITIALIZED);
        };
        let n = (max as usize).min(MAX_FIND);
        let end = (*pos + n).min(all.len());
        let batch = all[*pos..end].to_vec();
        *pos = end;
        Answer::Objects(batch, end < all.len())
    }
}

/// The value the fake gives attribute `ty` of object `h`.
pub fn attr_value(h: u64, ty: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&h.to_le_bytes());
    v[8..].copy_from_slice(&ty.to_le_bytes());
    v
}

/// The value of secret key `h` (what `DigestKey` hands out).
pub fn key_value(h: u64) -> Vec<u8> {
    sig_bytes(h ^ 0x006b_6579, 32)
}

fn finish(op: Op, mut o: FakeOp, data: &[u8], signature: &[u8]) -> Answer {
    if data.len() > MAX_CHUNK {
        return Answer::Error(ckr::DATA_LEN_RANGE);
    }
    match op {
        Op::Encrypt | Op::Decrypt if is_xor(o.mech) => Answer::Data(xor(data)),
        Op::Encrypt => {
            let mut h = Fnv::default();
            h.update(data);
            Answer::Data(sig_bytes(h.0, (o.bits as usize).div_ceil(8)))
        }
        Op::Decrypt => {
            let mut out = xor(data);
            out.truncate(200);
            Answer::Data(out)
        }
        Op::Sign => {
            o.data.update(data);
            Answer::Data(sig_bytes(o.data.0, sig_len(o.mech, o.bits)))
        }
        Op::Verify => {
            o.data.update(data);
            let want = sig_bytes(o.data.0, sig_len(o.mech, o.bits));
            if signature.len() != want.len() {
                Answer::Error(ckr::SIGNATURE_LEN_RANGE)
            } else if signature != want.as_slice() {
                Answer::Error(ckr::SIGNATURE_INVALID)
            } else {
                Answer::Ok
            }
        }
    }
}
