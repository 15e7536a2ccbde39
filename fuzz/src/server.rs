//! The `server` target's harness: one in-process software HSM per fuzzing
//! process (argon2 hashes the password once), keys made once, and per input
//! a fresh connection that sends the input's frames through
//! [`Connection::handle_body`] exactly as the socket loop does.
//!
//! What stays between inputs is cleaned up after each: the connection is
//! dropped (its session objects die with it) and the token objects the
//! input made are destroyed, so that every input starts from the same
//! state and a crash replays.
//!
//! Two things the harness refuses to forward, because they cost time and
//! prove nothing: a `Login` with a wrong password (argon2, and it would lock
//! the user out under a lockout policy), and more than one RSA key
//! generation per input (or one above 2048 bits).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckc, ckk, ckm, cko};
use hsmlink_core::wire::{
    self, AttrValue, Attribute, HEADER_LEN, MechParam, Mechanism, Op, PROTOCOL_VERSION, Request,
    Response, Secret, Template,
};
use hsmlink_hsm::{Connection, Hsm};

use crate::{calls, rv, tables};

pub const USER: &str = "alice";
pub const PASSWORD: &[u8] = b"fuzz-password";
pub const APP: [u8; 16] = [1; 16];

/// The owner key of [`USER`]'s objects in `hsm` (its name and never-reused
/// id, `hsmlink_hsm::users::owner_key`): read once per process, which makes
/// one in-memory HSM.
pub fn owner(hsm: &Hsm) -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let id = hsm.store().user(USER).ok().flatten().map_or(0, |u| u.id);
        hsmlink_hsm::users::owner_key(USER, id)
    })
}

/// Key material read back from keys the HSM made, to import again.
#[derive(Default)]
pub struct Material {
    pub rsa: Vec<(u64, Vec<u8>)>,
    pub rsa_public: Vec<(u64, Vec<u8>)>,
    pub ec: Vec<(u64, Vec<u8>)>,
    pub ec_public: Vec<(u64, Vec<u8>)>,
}

/// The HSM shared by every input, and what every input starts with.
pub struct World {
    pub hsm: Arc<Hsm>,
    /// Handles of the keys and objects made at setup (never destroyed).
    pub base: Vec<u64>,
    pub material: Material,
}

/// Make the world once per process.
pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(setup)
}

fn ok(r: &Response<'_>) {
    assert!(
        !matches!(r, Response::Error(_)),
        "setup request failed: {r:?}"
    );
}

/// Send one request on `conn`; returns the reply frame's body, checked.
pub fn send(conn: &mut Connection, req: &Request<'_>) -> Vec<u8> {
    let body = postcard::to_allocvec(req).expect("requests encode");
    exchange(conn, &body)
}

/// Hand one frame body to the connection; check the reply frame.
pub fn exchange(conn: &mut Connection, body: &[u8]) -> Vec<u8> {
    let limit = conn.reply_limit();
    let frame = conn.handle_body(body);
    assert!(frame.len() >= HEADER_LEN, "reply frame without header");
    let len = wire::frame_len(frame[..HEADER_LEN].try_into().unwrap(), limit)
        .expect("reply no longer than the client accepts");
    assert_eq!(len + HEADER_LEN, frame.len(), "reply header matches");
    let body = frame[HEADER_LEN..].to_vec();
    match wire::decode::<Response<'_>>(&body) {
        Ok(Response::Error(e)) => assert!(rv::is_error(e), "unknown CKR {e:#x}"),
        Ok(_) => {}
        Err(e) => panic!("reply does not decode: {e:?}"),
    }
    body
}

fn b(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

fn ul(v: u64) -> Vec<u8> {
    attr::ulong(v).to_vec()
}

fn tpl(v: &[(u64, Vec<u8>)]) -> Template<'_> {
    let mut t = Template::new();
    for (ty, value) in v {
        t.push(Attribute { ty: *ty, value })
            .expect("setup templates fit");
    }
    t
}

/// A connection that said hello and logged in.
pub fn logged_in(hsm: &Arc<Hsm>) -> Connection {
    let mut c = Connection::new(hsm.clone());
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        max_frame: 1 << 20,
        app: APP,
    };
    ok(&wire::decode(&send(&mut c, &hello)).unwrap());
    let login = Request::Login {
        user: USER,
        password: Secret(PASSWORD),
    };
    ok(&wire::decode(&send(&mut c, &login)).unwrap());
    c
}

fn setup() -> World {
    let hsm = Arc::new(Hsm::dev(USER, PASSWORD).expect("in-memory HSM"));
    let mut c = logged_in(&hsm);
    let keep = |extra: &[(u64, Vec<u8>)]| {
        let mut t = vec![
            (cka::TOKEN, b(true)),
            (cka::DESTROYABLE, b(false)),
            (cka::MODIFIABLE, b(false)),
        ];
        t.extend_from_slice(extra);
        t
    };
    let mut base = Vec::new();
    let pair = |c: &mut Connection, m: u64, public: &[(u64, Vec<u8>)], private| {
        let r = send(
            c,
            &Request::GenerateKeyPair {
                mechanism: Mechanism::plain(m),
                public: tpl(&keep(public)),
                private: tpl(&keep(private)),
            },
        );
        match wire::decode(&r).unwrap() {
            Response::KeyPair { public, private } => (public, private),
            r => panic!("setup key pair: {r:?}"),
        }
    };
    let exportable = [(cka::EXTRACTABLE, b(true)), (cka::SENSITIVE, b(false))];
    let (rp, rk) = pair(
        &mut c,
        ckm::RSA_PKCS_KEY_PAIR_GEN,
        &[(cka::MODULUS_BITS, ul(1024))],
        &exportable,
    );
    let (rp2, rk2) = pair(
        &mut c,
        ckm::RSA_PKCS_KEY_PAIR_GEN,
        &[(cka::MODULUS_BITS, ul(2048))],
        &[],
    );
    let p256 = tables::CURVES[0].to_vec();
    let (ep, ek) = pair(
        &mut c,
        ckm::EC_KEY_PAIR_GEN,
        &[(cka::EC_PARAMS, p256.clone())],
        &exportable,
    );
    let (ep2, ek2) = pair(
        &mut c,
        ckm::EC_KEY_PAIR_GEN,
        &[(cka::EC_PARAMS, tables::CURVES[2].to_vec())],
        &[],
    );
    base.extend([rp, rk, rp2, rk2, ep, ek, ep2, ek2]);
    let secret = |c: &mut Connection, m: u64, t: &[(u64, Vec<u8>)]| {
        let r = send(
            c,
            &Request::GenerateKey {
                mechanism: Mechanism::plain(m),
                template: tpl(&keep(t)),
            },
        );
        match wire::decode(&r).unwrap() {
            Response::Object(h) => h,
            r => panic!("setup key: {r:?}"),
        }
    };
    base.push(secret(
        &mut c,
        ckm::AES_KEY_GEN,
        &[(cka::VALUE_LEN, ul(32)), (cka::EXTRACTABLE, b(true))],
    ));
    base.push(secret(
        &mut c,
        ckm::AES_KEY_GEN,
        &[(cka::VALUE_LEN, ul(16))],
    ));
    base.push(secret(
        &mut c,
        ckm::GENERIC_SECRET_KEY_GEN,
        &[(cka::VALUE_LEN, ul(32)), (cka::EXTRACTABLE, b(true))],
    ));
    let data = keep(&[
        (cka::CLASS, ul(cko::DATA)),
        (cka::LABEL, b"fuzz-data".to_vec()),
        (cka::VALUE, b"some data".to_vec()),
    ]);
    match wire::decode(&send(
        &mut c,
        &Request::CreateObject {
            template: tpl(&data),
        },
    ))
    .unwrap()
    {
        Response::Object(h) => base.push(h),
        r => panic!("setup data object: {r:?}"),
    }
    let read = |c: &mut Connection, h: u64, types: &[u64]| -> Vec<(u64, Vec<u8>)> {
        let r = send(
            c,
            &Request::GetAttributes {
                object: h,
                types: heapless::Vec::from_slice(types).unwrap(),
            },
        );
        match wire::decode(&r).unwrap() {
            Response::Attributes(v) => types
                .iter()
                .zip(v.iter())
                .filter_map(|(t, v)| match v {
                    AttrValue::Value(v) => Some((*t, v.to_vec())),
                    _ => None,
                })
                .collect(),
            r => panic!("setup read: {r:?}"),
        }
    };
    let material = Material {
        rsa: read(
            &mut c,
            rk,
            &[
                cka::MODULUS,
                cka::PUBLIC_EXPONENT,
                cka::PRIVATE_EXPONENT,
                cka::PRIME_1,
                cka::PRIME_2,
                cka::EXPONENT_1,
                cka::EXPONENT_2,
                cka::COEFFICIENT,
            ],
        ),
        rsa_public: read(&mut c, rp, &[cka::MODULUS, cka::PUBLIC_EXPONENT]),
        ec: read(&mut c, ek, &[cka::EC_PARAMS, cka::VALUE]),
        ec_public: read(&mut c, ep, &[cka::EC_PARAMS, cka::EC_POINT]),
    };
    assert_eq!(material.rsa.len(), 8, "RSA material readable");
    assert_eq!(material.ec.len(), 2, "EC material readable");
    World {
        hsm,
        base,
        material,
    }
}

// ----- structured requests --------------------------------------------------

/// An attribute value.
#[derive(Arbitrary, Debug, Clone)]
pub enum ValSpec {
    Bool(bool),
    /// From [`tables::ULONGS`].
    Ulong(u8),
    Raw(u64),
    Bytes(Vec<u8>),
    Curve(u8),
}

/// A template: a base that makes sense (or none), plus extra attributes.
#[derive(Arbitrary, Debug, Clone)]
pub struct TplSpec {
    pub base: u8,
    pub extra: Vec<(u8, ValSpec)>,
}

/// A mechanism: its type from [`tables::MECHS`] and its parameters.
#[derive(Arbitrary, Debug, Clone)]
pub enum ParamSpec {
    Fitting,
    None,
    Iv(Vec<u8>),
    Gcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: u32,
    },
    Ctr {
        counter_bits: u32,
        block: [u8; 16],
    },
    Pss {
        hash: u8,
        mgf: u64,
        salt_len: u64,
    },
    Oaep {
        hash: u8,
        mgf: u64,
        label: Vec<u8>,
    },
    Ulong(u64),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct MechSpec {
    pub ty: u8,
    pub param: ParamSpec,
}

/// Data for an operation.
#[derive(Arbitrary, Debug, Clone)]
pub enum DataSpec {
    Bytes(Vec<u8>),
    /// `len` copies of a byte (more than an input holds).
    Fill(u16, u8),
    /// The data of the last `Data` reply (a signature, a ciphertext, a
    /// wrapped key), to verify, decrypt or unwrap.
    Last,
}

/// A request, with objects named by index into the handles known so far.
#[derive(Arbitrary, Debug, Clone)]
pub enum ReqSpec {
    Ping,
    Login { right: bool },
    Logout,
    Hello { version: u16, max_frame: u32 },
    Create(TplSpec),
    Copy(u8, TplSpec),
    Destroy(u8),
    GetAttributes(u8, Vec<u8>),
    SetAttributes(u8, TplSpec),
    Size(u8),
    Find(TplSpec, u32),
    FindNext(u32),
    GenerateKey(MechSpec, TplSpec),
    GenerateKeyPair(MechSpec, TplSpec, TplSpec),
    Init(u8, MechSpec, u8),
    Update(u8, DataSpec),
    Final(u8, DataSpec, DataSpec),
    OneShot(u8, MechSpec, u8, DataSpec, DataSpec),
    Cancel(u8),
    Random(u32),
    Seed(Vec<u8>),
    Wrap(MechSpec, u8, u8),
    Unwrap(MechSpec, u8, DataSpec, TplSpec),
    Derive(MechSpec, u8, TplSpec),
    DigestKey(u8, u8),
}

/// State of one input's run: handles seen, last data, budgets.
pub struct Run<'w> {
    pub world: &'w World,
    pub handles: Vec<u64>,
    pub last_data: Vec<u8>,
    rsa_generations: u32,
}

impl<'w> Run<'w> {
    pub fn new(world: &'w World) -> Self {
        let mut handles = world.base.clone();
        handles.extend([0, 1, u64::MAX, 1 << 31]);
        Run {
            world,
            handles,
            last_data: Vec::new(),
            rsa_generations: 0,
        }
    }

    fn handle(&self, i: u8) -> u64 {
        self.handles[usize::from(i) % self.handles.len()]
    }

    /// Whether the harness forwards `req` (see the module docs).
    pub fn allowed(&mut self, req: &Request<'_>) -> bool {
        match req {
            Request::Login { user, password } => *user == USER && password.0 == PASSWORD,
            Request::GenerateKeyPair {
                mechanism, public, ..
            } if mechanism.ty == ckm::RSA_PKCS_KEY_PAIR_GEN => {
                let bits = attr::find(public, cka::MODULUS_BITS)
                    .and_then(|v| attr::read_ulong(v).ok())
                    .unwrap_or(0);
                // Refused sizes cost nothing.
                if !(1024..=4096).contains(&bits) {
                    return true;
                }
                self.rsa_generations += 1;
                bits <= 2048 && self.rsa_generations <= 1
            }
            _ => true,
        }
    }

    /// Learn from a reply: new handles, the last data.
    pub fn learn(&mut self, reply: &[u8]) {
        match wire::decode::<Response<'_>>(reply) {
            Ok(Response::Object(h)) => self.handles.push(h),
            Ok(Response::KeyPair { public, private }) => self.handles.extend([public, private]),
            Ok(Response::Objects { handles, .. }) => {
                for h in handles {
                    if !self.handles.contains(&h) {
                        self.handles.push(h);
                    }
                }
            }
            Ok(Response::Data(d)) => self.last_data = d.to_vec(),
            _ => {}
        }
    }

    fn value(&self, v: &ValSpec) -> Vec<u8> {
        match v {
            ValSpec::Bool(b) => vec![u8::from(*b)],
            ValSpec::Ulong(i) => ul(tables::pick(tables::ULONGS, *i)),
            ValSpec::Raw(v) => ul(*v),
            ValSpec::Bytes(b) => b.clone(),
            ValSpec::Curve(i) => tables::pick(tables::CURVES, *i).to_vec(),
        }
    }

    /// The owned attributes of a template spec.
    pub fn template(&self, t: &TplSpec) -> Vec<(u64, Vec<u8>)> {
        let m = &self.world.material;
        let mut out: Vec<(u64, Vec<u8>)> = match t.base % 12 {
            0 => vec![
                (cka::CLASS, ul(cko::PRIVATE_KEY)),
                (cka::KEY_TYPE, ul(ckk::RSA)),
            ]
            .into_iter()
            .chain(m.rsa.iter().cloned())
            .collect(),
            1 => vec![
                (cka::CLASS, ul(cko::PUBLIC_KEY)),
                (cka::KEY_TYPE, ul(ckk::RSA)),
            ]
            .into_iter()
            .chain(m.rsa_public.iter().cloned())
            .collect(),
            2 => vec![
                (cka::CLASS, ul(cko::PRIVATE_KEY)),
                (cka::KEY_TYPE, ul(ckk::EC)),
            ]
            .into_iter()
            .chain(m.ec.iter().cloned())
            .collect(),
            3 => vec![
                (cka::CLASS, ul(cko::PUBLIC_KEY)),
                (cka::KEY_TYPE, ul(ckk::EC)),
            ]
            .into_iter()
            .chain(m.ec_public.iter().cloned())
            .collect(),
            4 => vec![
                (cka::CLASS, ul(cko::SECRET_KEY)),
                (cka::KEY_TYPE, ul(ckk::AES)),
                (cka::VALUE, vec![3; 16]),
            ],
            5 => vec![
                (cka::CLASS, ul(cko::SECRET_KEY)),
                (cka::KEY_TYPE, ul(ckk::GENERIC_SECRET)),
                (cka::VALUE, vec![4; 40]),
            ],
            6 => vec![
                (cka::CLASS, ul(cko::DATA)),
                (cka::LABEL, b"d".to_vec()),
                (cka::VALUE, vec![5; 10]),
            ],
            7 => vec![
                (cka::CLASS, ul(cko::CERTIFICATE)),
                (cka::CERTIFICATE_TYPE, ul(ckc::X_509)),
                (cka::SUBJECT, b"0\x00".to_vec()),
                (cka::VALUE, b"0\x03\x02\x01\x00".to_vec()),
            ],
            8 => vec![(cka::VALUE_LEN, ul(32)), (cka::MODULUS_BITS, ul(1024))],
            9 => vec![(cka::EC_PARAMS, tables::CURVES[0].to_vec())],
            _ => Vec::new(),
        };
        for (ty, v) in &t.extra {
            out.push((tables::pick(tables::ATTRS, *ty), self.value(v)));
        }
        out
    }

    fn data(&self, d: &DataSpec) -> Vec<u8> {
        match d {
            DataSpec::Bytes(b) => b.clone(),
            DataSpec::Fill(n, b) => vec![*b; usize::from(*n)],
            DataSpec::Last => self.last_data.clone(),
        }
    }

    /// Encode a structured request as a frame body.
    pub fn body(&self, spec: &ReqSpec) -> Vec<u8> {
        let op = |b: &u8| calls::op_of(*b);
        // Owned pieces the request borrows.
        let mech_bytes = |m: &MechSpec| -> (u64, ParamSpec) {
            (tables::pick(tables::MECHS, m.ty), m.param.clone())
        };
        match spec {
            ReqSpec::Ping => enc(&Request::Ping),
            ReqSpec::Login { right } => enc(&Request::Login {
                user: USER,
                password: Secret(if *right { PASSWORD } else { b"wrong" }),
            }),
            ReqSpec::Logout => enc(&Request::Logout),
            ReqSpec::Hello { version, max_frame } => enc(&Request::Hello {
                version: *version,
                max_frame: *max_frame,
                app: APP,
            }),
            ReqSpec::Create(t) => {
                let t = self.template(t);
                enc(&Request::CreateObject {
                    template: wire_template(&t),
                })
            }
            ReqSpec::Copy(o, t) => {
                let t = self.template(t);
                enc(&Request::CopyObject {
                    object: self.handle(*o),
                    template: wire_template(&t),
                })
            }
            ReqSpec::Destroy(o) => enc(&Request::DestroyObject {
                object: self.handle(*o),
            }),
            ReqSpec::GetAttributes(o, types) => {
                let mut v = heapless::Vec::new();
                for t in types {
                    let _ = v.push(tables::pick(tables::ATTRS, *t));
                }
                enc(&Request::GetAttributes {
                    object: self.handle(*o),
                    types: v,
                })
            }
            ReqSpec::SetAttributes(o, t) => {
                let t = self.template(t);
                enc(&Request::SetAttributes {
                    object: self.handle(*o),
                    template: wire_template(&t),
                })
            }
            ReqSpec::Size(o) => enc(&Request::GetObjectSize {
                object: self.handle(*o),
            }),
            ReqSpec::Find(t, max) => {
                let t = self.template(t);
                enc(&Request::FindObjects {
                    template: wire_template(&t),
                    max: *max,
                })
            }
            ReqSpec::FindNext(max) => enc(&Request::FindNext { max: *max }),
            ReqSpec::GenerateKey(m, t) => {
                let (ty, p) = mech_bytes(m);
                let t = self.template(t);
                enc(&Request::GenerateKey {
                    mechanism: mechanism(ty, &p),
                    template: wire_template(&t),
                })
            }
            ReqSpec::GenerateKeyPair(m, a, b) => {
                let (ty, p) = mech_bytes(m);
                let a = self.template(a);
                let b = self.template(b);
                enc(&Request::GenerateKeyPair {
                    mechanism: mechanism(ty, &p),
                    public: wire_template(&a),
                    private: wire_template(&b),
                })
            }
            ReqSpec::Init(o, m, k) => {
                let (ty, p) = mech_bytes(m);
                enc(&Request::CryptoInit {
                    op: op(o),
                    mechanism: mechanism(ty, &p),
                    key: self.handle(*k),
                })
            }
            ReqSpec::Update(o, d) => enc(&Request::CryptoUpdate {
                op: op(o),
                data: &self.data(d),
            }),
            ReqSpec::Final(o, d, s) => enc(&Request::CryptoFinal {
                op: op(o),
                data: &self.data(d),
                signature: &self.data(s),
            }),
            ReqSpec::OneShot(o, m, k, d, s) => {
                let (ty, p) = mech_bytes(m);
                enc(&Request::CryptoOneShot {
                    op: op(o),
                    mechanism: mechanism(ty, &p),
                    key: self.handle(*k),
                    data: &self.data(d),
                    signature: &self.data(s),
                })
            }
            ReqSpec::Cancel(o) => enc(&Request::CryptoCancel { op: op(o) }),
            ReqSpec::Random(len) => enc(&Request::GenerateRandom { len: *len }),
            ReqSpec::Seed(s) => enc(&Request::SeedRandom { seed: s }),
            ReqSpec::Wrap(m, w, k) => {
                let (ty, p) = mech_bytes(m);
                enc(&Request::WrapKey {
                    mechanism: mechanism(ty, &p),
                    wrapping_key: self.handle(*w),
                    key: self.handle(*k),
                })
            }
            ReqSpec::Unwrap(m, k, d, t) => {
                let (ty, p) = mech_bytes(m);
                let t = self.template(t);
                enc(&Request::UnwrapKey {
                    mechanism: mechanism(ty, &p),
                    unwrapping_key: self.handle(*k),
                    wrapped: &self.data(d),
                    template: wire_template(&t),
                })
            }
            ReqSpec::Derive(m, k, t) => {
                let (ty, p) = mech_bytes(m);
                let t = self.template(t);
                enc(&Request::DeriveKey {
                    mechanism: mechanism(ty, &p),
                    base_key: self.handle(*k),
                    template: wire_template(&t),
                })
            }
            ReqSpec::DigestKey(m, k) => enc(&Request::DigestKey {
                mechanism: tables::pick(tables::MECHS, *m),
                key: self.handle(*k),
            }),
        }
    }
}

fn enc(r: &Request<'_>) -> Vec<u8> {
    postcard::to_allocvec(r).expect("requests encode")
}

/// A wire template of at most `MAX_ATTRS` attributes (the rest dropped).
pub fn wire_template(t: &[(u64, Vec<u8>)]) -> Template<'_> {
    let mut out = Template::new();
    for (ty, v) in t {
        if out.push(Attribute { ty: *ty, value: v }).is_err() {
            break;
        }
    }
    out
}

fn mechanism(ty: u64, p: &ParamSpec) -> Mechanism<'_> {
    let param = match p {
        ParamSpec::Fitting => return calls::fitting(ty),
        ParamSpec::None => MechParam::None,
        ParamSpec::Iv(v) => MechParam::Iv(v),
        ParamSpec::Gcm { iv, aad, tag_bits } => MechParam::Gcm {
            iv,
            aad,
            tag_bits: *tag_bits,
        },
        ParamSpec::Ctr {
            counter_bits,
            block,
        } => MechParam::Ctr {
            counter_bits: *counter_bits,
            block: *block,
        },
        ParamSpec::Pss {
            hash,
            mgf,
            salt_len,
        } => MechParam::Pss {
            hash: tables::pick(tables::MECHS, *hash),
            mgf: *mgf,
            salt_len: *salt_len,
        },
        ParamSpec::Oaep { hash, mgf, label } => MechParam::Oaep {
            hash: tables::pick(tables::MECHS, *hash),
            mgf: *mgf,
            label,
        },
        ParamSpec::Ulong(v) => MechParam::Ulong(*v),
        ParamSpec::Bytes(v) => MechParam::Bytes(v),
    };
    Mechanism { ty, param }
}

/// Token objects of the user that are not in `base`: what an input left.
pub fn leftovers(world: &World) -> Vec<u64> {
    let base: BTreeSet<u64> = world.base.iter().copied().collect();
    let token = [1u8];
    let t = [Attribute {
        ty: cka::TOKEN,
        value: &token,
    }];
    world
        .hsm
        .find(owner(&world.hsm), &APP, u64::MAX, &t, usize::MAX)
        .into_iter()
        .filter(|h| !base.contains(h))
        .collect()
}

/// Destroy what an input left, and check nothing else remains: no session
/// object of a dropped connection, no token object beyond the base.
pub fn clean_up(world: &World, apps: &BTreeSet<[u8; 16]>) {
    for h in leftovers(world) {
        world.hsm.remove(h).expect("remove a leftover token object");
    }
    let base: BTreeSet<u64> = world.base.iter().copied().collect();
    for app in apps.iter().chain([&APP]) {
        let seen: BTreeSet<u64> = world
            .hsm
            .find(owner(&world.hsm), app, u64::MAX, &[], usize::MAX)
            .into_iter()
            .collect();
        assert_eq!(seen, base, "objects outlive their input (app {app:?})");
    }
}

/// The `Op` a selector byte names (re-exported for the target).
pub fn op(b: u8) -> Op {
    calls::op_of(b)
}
