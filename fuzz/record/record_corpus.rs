//! Records the seed corpora of the fuzz targets from real traffic: the
//! module's token (`hsmlink-core`) talks to the in-process software HSM
//! through a link that writes down every frame, while scripted sessions
//! (those of `pkcs11-tool`-like applications) run.
//!
//! ```sh
//! cd fuzz && cargo +nightly fuzz build record_corpus && \
//!   target/x86_64-unknown-linux-gnu/release/record_corpus corpus
//! ```
//! (`cargo xtask fuzz --record` does the same.)
//!
//! Writes `corpus/<target>/<name>`: request bodies (`wire_request`,
//! `template`), reply bodies (`wire_response`), each session's request
//! frames as one `server` input, and each scripted session as one
//! `token_model` input (the same calls, in that target's format); the
//! `extraction` seeds are the attacks of `tests/tests/attacks.rs`
//! (`hsmlink_fuzz::extraction::attack_seeds`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hsmlink_core::ck::{Rv, cka, ckc, ckk, ckm, cko, cku};
use hsmlink_core::link::{Connector, Link, LinkError};
use hsmlink_core::token::{LoginConfig, SessionSlot, Token};
use hsmlink_core::wire::{Attribute, HEADER_LEN, Request};
use hsmlink_fuzz::calls::{
    self, Call, Data, Mech, Out, Param, Pin, Sig, Tpl, Value, attr_sel, ulong_sel,
};
use hsmlink_fuzz::{records, server, tables};
use hsmlink_hsm::{Connection, Hsm};

/// Frames of one connection: (request body, reply body).
type Log = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

struct RecLink {
    conn: Connection,
    log: Log,
}

impl Link for RecLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        let body = &request[HEADER_LEN..];
        let frame = self.conn.handle_body(body);
        let answer = &frame[HEADER_LEN..];
        if answer.len() > reply.len() {
            return Err(LinkError::FrameTooLong);
        }
        reply[..answer.len()].copy_from_slice(answer);
        if std::env::var_os("HSMLINK_RECORD_TRACE").is_some() {
            let q = hsmlink_core::wire::decode::<Request<'_>>(body);
            let r = hsmlink_core::wire::decode::<hsmlink_core::wire::Response<'_>>(answer);
            eprintln!("{q:?}\n  -> {r:?}");
        }
        self.log
            .lock()
            .unwrap()
            .push((body.to_vec(), answer.to_vec()));
        Ok(answer.len())
    }
}

struct RecConnector {
    hsm: Arc<Hsm>,
    logs: Arc<Mutex<Vec<Log>>>,
}

impl Connector for RecConnector {
    type Link = RecLink;
    fn connect(&self, _host: Option<&str>) -> Result<RecLink, LinkError> {
        let log = Log::default();
        self.logs.lock().unwrap().push(log.clone());
        Ok(RecLink {
            conn: Connection::new(self.hsm.clone()),
            log,
        })
    }
}

const BUF: usize = 16 * 1024 + 1024;
type Slot = SessionSlot<RecLink, spin::Mutex<()>, BUF>;

/// Runs calls against the real token, resolving selectors the way the
/// `token_model` target does (objects: the keys in the fake HSM's order,
/// then the ones made).
struct Exec<'t, 's> {
    t: &'t Token<'s, RecConnector, spin::Mutex<()>, BUF>,
    sessions: Vec<u64>,
    objects: Vec<u64>,
    last: Vec<u8>,
}

fn owned(t: &Tpl) -> Vec<(u64, Vec<u8>)> {
    t.owned()
}

fn attrs(t: &[(u64, Vec<u8>)]) -> Vec<Attribute<'_>> {
    t.iter()
        .map(|(ty, v)| Attribute { ty: *ty, value: v })
        .collect()
}

impl Exec<'_, '_> {
    fn s(&self, s: u8) -> u64 {
        self.sessions
            .get(usize::from(s) % self.sessions.len().max(1))
            .copied()
            .unwrap_or(0)
    }

    fn o(&self, o: u8) -> u64 {
        self.objects[usize::from(o) % self.objects.len()]
    }

    fn out(&self, out: Out) -> Option<Vec<u8>> {
        match out {
            Out::Query => None,
            Out::AsNeeded => Some(vec![0; 4096]),
            Out::Len(n) => Some(vec![0; n as usize]),
        }
    }

    fn keep(&mut self, r: Result<u64, Rv>) {
        if let Ok(h) = r {
            self.objects.push(h);
        }
    }

    fn run(&mut self, call: &Call) {
        let t = self.t;
        match call {
            Call::OpenSession { rw } => {
                if let Ok(h) = t.open_session(*rw) {
                    self.sessions.push(h);
                }
            }
            Call::CloseSession { s } => {
                let _ = t.close_session(self.s(*s));
            }
            Call::CloseAll => t.close_all_sessions(),
            Call::SessionInfo { s } => {
                let _ = t.session_info(self.s(*s));
            }
            Call::Login { s, user_type, pin } => {
                let ut =
                    [cku::USER, cku::SO, cku::CONTEXT_SPECIFIC, 77][usize::from(*user_type % 4)];
                let p: &[u8] = match pin {
                    Pin::Right => server::PASSWORD,
                    Pin::Wrong => b"wrong",
                    Pin::Empty => b"",
                    Pin::Long => &[b'x'; 200],
                };
                let _ = t.login(self.s(*s), ut, p);
            }
            Call::Logout { s } => {
                let _ = t.logout(self.s(*s));
            }
            Call::CreateObject { s, t: tpl } => {
                let o = owned(tpl);
                let r = t.create_object(self.s(*s), &attrs(&o));
                self.keep(r);
            }
            Call::CopyObject { s, o, t: tpl } => {
                let a = owned(tpl);
                let r = t.copy_object(self.s(*s), self.o(*o), &attrs(&a));
                self.keep(r);
            }
            Call::DestroyObject { s, o } => {
                let _ = t.destroy_object(self.s(*s), self.o(*o));
            }
            Call::GetAttributes { s, o, types } => {
                let types: Vec<u64> = types
                    .iter()
                    .map(|t| tables::pick(tables::ATTRS, *t))
                    .collect();
                let _ = t.get_attributes(self.s(*s), self.o(*o), &types, |_, _| {});
            }
            Call::SetAttributes { s, o, t: tpl } => {
                let a = owned(tpl);
                let _ = t.set_attributes(self.s(*s), self.o(*o), &attrs(&a));
            }
            Call::ObjectSize { s, o } => {
                let _ = t.object_size(self.s(*s), self.o(*o));
            }
            Call::FindInit { s, t: tpl } => {
                let a = owned(tpl);
                let _ = t.find_init(self.s(*s), &attrs(&a));
            }
            Call::Find { s, n } => {
                let mut out = vec![0; usize::from(*n)];
                let _ = t.find(self.s(*s), &mut out);
            }
            Call::FindFinal { s } => {
                let _ = t.find_final(self.s(*s));
            }
            Call::GenerateKey { s, m, t: tpl } => {
                let mb = m.bytes();
                let a = owned(tpl);
                let r = t.generate_key(self.s(*s), &mb.mechanism(), &attrs(&a));
                self.keep(r);
            }
            Call::GenerateKeyPair {
                s,
                m,
                public,
                private,
            } => {
                let mb = m.bytes();
                let a = owned(public);
                let b = owned(private);
                if let Ok((p, k)) =
                    t.generate_key_pair(self.s(*s), &mb.mechanism(), &attrs(&a), &attrs(&b))
                {
                    self.objects.extend([p, k]);
                }
            }
            Call::WrapKey {
                s,
                m,
                wrapping,
                o,
                out,
            } => {
                let mb = m.bytes();
                let mut buf = self.out(*out);
                let r = t.wrap_key(
                    self.s(*s),
                    &mb.mechanism(),
                    self.o(*wrapping),
                    self.o(*o),
                    buf.as_deref_mut(),
                );
                if let (Ok(hsmlink_core::token::Len::Written(n)), Some(b)) = (r, buf) {
                    self.last = b[..n].to_vec();
                }
            }
            Call::UnwrapKey {
                s,
                m,
                unwrapping,
                wrapped,
                t: tpl,
            } => {
                let mb = m.bytes();
                let a = owned(tpl);
                // Empty wrapped data stands for the last wrapped key.
                let w = match wrapped.bytes() {
                    b if b.is_empty() => self.last.clone(),
                    b => b,
                };
                let r = t.unwrap_key(
                    self.s(*s),
                    &mb.mechanism(),
                    self.o(*unwrapping),
                    &w,
                    &attrs(&a),
                );
                self.keep(r);
            }
            Call::DeriveKey { s, m, o, t: tpl } => {
                let mb = m.bytes();
                let a = owned(tpl);
                let r = t.derive_key(self.s(*s), &mb.mechanism(), self.o(*o), &attrs(&a));
                self.keep(r);
            }
            Call::GenerateRandom { s, len } => {
                let mut b = vec![0; usize::from(*len)];
                let _ = t.generate_random(self.s(*s), &mut b);
            }
            Call::SeedRandom { s, seed } => {
                let _ = t.seed_random(self.s(*s), &seed.bytes());
            }
            Call::DigestInit { s, m } => {
                let mb = m.bytes();
                let _ = t.digest_init(self.s(*s), &mb.mechanism());
            }
            Call::Digest { s, data, out } => {
                let mut b = self.out(*out);
                let _ = t.digest(self.s(*s), &data.bytes(), b.as_deref_mut());
            }
            Call::DigestUpdate { s, data } => {
                let _ = t.digest_update(self.s(*s), &data.bytes());
            }
            Call::DigestFinal { s, out } => {
                let mut b = self.out(*out);
                let _ = t.digest_final(self.s(*s), b.as_deref_mut());
            }
            Call::DigestKey { s, o } => {
                let _ = t.digest_key(self.s(*s), self.o(*o));
            }
            Call::CryptoInit { s, op, m, o } => {
                let mb = m.bytes();
                let _ = t.crypto_init(self.s(*s), calls::op_of(*op), &mb.mechanism(), self.o(*o));
            }
            Call::Crypto { s, op, data, out } => {
                let mut b = self.out(*out);
                let r = t.crypto(
                    self.s(*s),
                    calls::op_of(*op % 3),
                    &data.bytes(),
                    b.as_deref_mut(),
                );
                if let (Ok(hsmlink_core::token::Len::Written(n)), Some(b)) = (r, b) {
                    self.last = b[..n].to_vec();
                }
            }
            Call::CryptoUpdate { s, op, data, out } => {
                let mut b = self.out(*out);
                let _ = t.crypto_update(
                    self.s(*s),
                    calls::op_of(*op % 2),
                    &data.bytes(),
                    b.as_deref_mut(),
                );
            }
            Call::CryptoUpdateNoOutput { s, op, data } => {
                let _ =
                    t.crypto_update_no_output(self.s(*s), calls::op_of(2 + *op % 2), &data.bytes());
            }
            Call::CryptoFinal { s, op, out } => {
                let mut b = self.out(*out);
                let r = t.crypto_final(self.s(*s), calls::op_of(*op % 3), b.as_deref_mut());
                if let (Ok(hsmlink_core::token::Len::Written(n)), Some(b)) = (r, b)
                    && n > 0
                {
                    self.last = b[..n].to_vec();
                }
            }
            Call::Verify { s, data, sig } => {
                let sig = match sig {
                    Sig::Valid => self.last.clone(),
                    Sig::Bytes(b) => b.bytes(),
                };
                let _ = t.verify(self.s(*s), &data.bytes(), &sig);
            }
            Call::VerifyFinal { s, sig } => {
                let sig = match sig {
                    Sig::Valid => self.last.clone(),
                    Sig::Bytes(b) => b.bytes(),
                };
                let _ = t.verify_final(self.s(*s), &sig);
            }
            Call::Fault { .. } => {}
        }
    }
}

// ----- scripted sessions ----------------------------------------------------

// Object selectors, in the fake HSM's order (see `Exec`).
const RSA_PRIV: u8 = 0;
const RSA_PUB: u8 = 1;
const EC_PRIV: u8 = 2;
const EC_PUB: u8 = 3;
const AES: u8 = 4;
const HMAC: u8 = 5;
const DATA: u8 = 6;
/// The first object a session makes.
const MADE: u8 = 7;

fn ul(ty: u64, v: u64) -> (u8, Value) {
    (attr_sel(ty), Value::Ulong(ulong_sel(v)))
}

fn yes(ty: u64) -> (u8, Value) {
    (attr_sel(ty), Value::Bool(1))
}

fn no(ty: u64) -> (u8, Value) {
    (attr_sel(ty), Value::Bool(0))
}

fn bytes(ty: u64, v: &[u8]) -> (u8, Value) {
    (attr_sel(ty), Value::Bytes(Data::Bytes(v.to_vec())))
}

fn fill(len: u16, b: u8) -> Data {
    Data::Fill(len, b)
}

fn text(s: &str) -> Data {
    Data::Bytes(s.as_bytes().to_vec())
}

fn mech(ty: u64) -> Mech {
    Mech::of(ty)
}

fn start() -> Vec<Call> {
    vec![
        Call::OpenSession { rw: true },
        Call::Login {
            s: 0,
            user_type: 0,
            pin: Pin::Right,
        },
    ]
}

fn sign_and_verify(op_key: u8, verify_key: u8, m: u64, data: Data) -> Vec<Call> {
    vec![
        Call::CryptoInit {
            s: 0,
            op: 2,
            m: mech(m),
            o: op_key,
        },
        Call::Crypto {
            s: 0,
            op: 2,
            data: data.clone(),
            out: Out::Query,
        },
        Call::Crypto {
            s: 0,
            op: 2,
            data: data.clone(),
            out: Out::AsNeeded,
        },
        Call::CryptoInit {
            s: 0,
            op: 3,
            m: mech(m),
            o: verify_key,
        },
        Call::Verify {
            s: 0,
            data,
            sig: Sig::Valid,
        },
    ]
}

fn scenarios() -> Vec<(&'static str, Vec<Call>)> {
    let mut out = Vec::new();

    // pkcs11-tool --list-objects, --sign, --read-object.
    let mut c = start();
    c.extend([
        Call::FindInit {
            s: 0,
            t: Tpl(vec![ul(cka::CLASS, cko::PRIVATE_KEY)]),
        },
        Call::Find { s: 0, n: 10 },
        Call::Find { s: 0, n: 10 },
        Call::FindFinal { s: 0 },
        Call::GetAttributes {
            s: 0,
            o: EC_PRIV,
            types: vec![
                attr_sel(cka::CLASS),
                attr_sel(cka::KEY_TYPE),
                attr_sel(cka::ID),
                attr_sel(cka::LABEL),
                attr_sel(cka::EC_PARAMS),
                attr_sel(cka::VALUE),
            ],
        },
        Call::ObjectSize { s: 0, o: EC_PRIV },
    ]);
    c.extend(sign_and_verify(
        EC_PRIV,
        EC_PUB,
        ckm::ECDSA_SHA256,
        text("hsmlink demo"),
    ));
    c.extend(sign_and_verify(
        RSA_PRIV,
        RSA_PUB,
        ckm::SHA256_RSA_PKCS,
        text("hsmlink demo"),
    ));
    c.extend([Call::Logout { s: 0 }, Call::CloseSession { s: 0 }]);
    out.push(("sign", c));

    // RSA mechanisms: PKCS, PSS, X.509, OAEP; multi-part signing.
    let mut c = start();
    for m in [
        ckm::RSA_PKCS,
        ckm::SHA1_RSA_PKCS_PSS,
        ckm::SHA384_RSA_PKCS_PSS,
        ckm::SHA512_RSA_PKCS,
    ] {
        c.extend(sign_and_verify(
            RSA_PRIV,
            RSA_PUB,
            m,
            text("0123456789abcdef0123456789abcdef"),
        ));
    }
    c.extend([
        Call::CryptoInit {
            s: 0,
            op: 2,
            m: mech(ckm::SHA256_RSA_PKCS_PSS),
            o: RSA_PRIV,
        },
        Call::CryptoUpdateNoOutput {
            s: 0,
            op: 0,
            data: text("part one"),
        },
        Call::CryptoUpdateNoOutput {
            s: 0,
            op: 0,
            data: fill(20_000, 3),
        },
        Call::CryptoFinal {
            s: 0,
            op: 2,
            out: Out::Len(256),
        },
        Call::CryptoInit {
            s: 0,
            op: 0,
            m: mech(ckm::RSA_PKCS_OAEP),
            o: RSA_PUB,
        },
        Call::Crypto {
            s: 0,
            op: 0,
            data: text("a secret"),
            out: Out::Len(256),
        },
        Call::CryptoInit {
            s: 0,
            op: 1,
            m: mech(ckm::RSA_PKCS_OAEP),
            o: RSA_PRIV,
        },
        Call::Crypto {
            s: 0,
            op: 1,
            data: text("not a ciphertext"),
            out: Out::Len(256),
        },
    ]);
    out.push(("rsa", c));

    // AES: generated key, CBC_PAD in parts, GCM, CTR, ECB; HMAC.
    let mut c = start();
    c.push(Call::GenerateKey {
        s: 0,
        m: mech(ckm::AES_KEY_GEN),
        t: Tpl(vec![
            ul(cka::VALUE_LEN, 32),
            yes(cka::ENCRYPT),
            yes(cka::DECRYPT),
            no(cka::TOKEN),
            bytes(cka::LABEL, b"aes"),
        ]),
    });
    for m in [ckm::AES_CBC_PAD, ckm::AES_GCM] {
        for op in [0u8, 1] {
            c.extend([
                Call::CryptoInit {
                    s: 0,
                    op,
                    m: mech(m),
                    o: MADE,
                },
                Call::CryptoUpdate {
                    s: 0,
                    op,
                    data: text("sixteen bytes!!!and more"),
                    out: Out::Len(64),
                },
                Call::CryptoUpdate {
                    s: 0,
                    op,
                    data: fill(9000, 0x41),
                    out: Out::Len(10_000 / 3 * 3),
                },
                Call::CryptoFinal {
                    s: 0,
                    op,
                    out: Out::Len(64),
                },
            ]);
        }
    }
    for m in [ckm::AES_CTR, ckm::AES_ECB, ckm::AES_CBC] {
        c.extend([
            Call::CryptoInit {
                s: 0,
                op: 0,
                m: mech(m),
                o: AES,
            },
            Call::Crypto {
                s: 0,
                op: 0,
                data: fill(32, 7),
                out: Out::Query,
            },
            Call::Crypto {
                s: 0,
                op: 0,
                data: fill(32, 7),
                out: Out::Len(64),
            },
        ]);
    }
    c.extend(sign_and_verify(
        HMAC,
        HMAC,
        ckm::SHA256_HMAC,
        fill(10_000, 9),
    ));
    c.extend(sign_and_verify(HMAC, HMAC, ckm::SHA_1_HMAC, text("mac me")));
    out.push(("aes-hmac", c));

    // Key generation, wrapping, objects of every class.
    let mut c = start();
    c.extend([
        Call::GenerateKeyPair {
            s: 0,
            m: mech(ckm::EC_KEY_PAIR_GEN),
            public: Tpl(vec![
                (attr_sel(cka::EC_PARAMS), Value::Curve(0)),
                bytes(cka::ID, &[1]),
            ]),
            private: Tpl(vec![yes(cka::SIGN), yes(cka::TOKEN), bytes(cka::ID, &[1])]),
        },
        Call::GenerateKeyPair {
            s: 0,
            m: mech(ckm::RSA_PKCS_KEY_PAIR_GEN),
            public: Tpl(vec![ul(cka::MODULUS_BITS, 1024)]),
            private: Tpl(vec![yes(cka::SIGN), yes(cka::EXTRACTABLE)]),
        },
        Call::GenerateKey {
            s: 0,
            m: mech(ckm::GENERIC_SECRET_KEY_GEN),
            t: Tpl(vec![ul(cka::VALUE_LEN, 32), yes(cka::EXTRACTABLE)]),
        },
        Call::WrapKey {
            s: 0,
            m: mech(ckm::AES_KEY_WRAP),
            wrapping: AES,
            o: MADE + 4,
            out: Out::Query,
        },
        Call::WrapKey {
            s: 0,
            m: mech(ckm::AES_KEY_WRAP),
            wrapping: AES,
            o: MADE + 4,
            out: Out::Len(256),
        },
        Call::UnwrapKey {
            s: 0,
            m: mech(ckm::AES_KEY_WRAP),
            unwrapping: AES,
            wrapped: Data::Bytes(Vec::new()),
            t: Tpl(vec![ul(cka::KEY_TYPE, ckk::GENERIC_SECRET), yes(cka::SIGN)]),
        },
        Call::CreateObject {
            s: 0,
            t: Tpl(vec![
                ul(cka::CLASS, cko::DATA),
                bytes(cka::LABEL, b"my data"),
                bytes(cka::VALUE, b"hello"),
                bytes(cka::APPLICATION, b"app"),
            ]),
        },
        Call::CreateObject {
            s: 0,
            t: Tpl(vec![
                ul(cka::CLASS, cko::CERTIFICATE),
                (attr_sel(cka::CERTIFICATE_TYPE), Value::RawUlong(ckc::X_509)),
                bytes(cka::SUBJECT, b"0\x00"),
                bytes(cka::VALUE, b"0\x03\x02\x01\x00"),
                bytes(cka::ID, &[1]),
            ]),
        },
        Call::CreateObject {
            s: 0,
            t: Tpl(vec![
                ul(cka::CLASS, cko::SECRET_KEY),
                ul(cka::KEY_TYPE, ckk::AES),
                bytes(cka::VALUE, &[5; 16]),
            ]),
        },
        Call::CopyObject {
            s: 0,
            o: MADE + 6,
            t: Tpl(vec![bytes(cka::LABEL, b"copy"), yes(cka::TOKEN)]),
        },
        Call::SetAttributes {
            s: 0,
            o: MADE + 6,
            t: Tpl(vec![bytes(cka::LABEL, b"renamed"), bytes(cka::ID, &[9, 9])]),
        },
        Call::FindInit {
            s: 0,
            t: Tpl(vec![bytes(cka::LABEL, b"renamed")]),
        },
        Call::Find { s: 0, n: 5 },
        Call::FindFinal { s: 0 },
        Call::GetAttributes {
            s: 0,
            o: MADE + 7,
            types: vec![
                attr_sel(cka::VALUE),
                attr_sel(cka::SUBJECT),
                attr_sel(cka::CERTIFICATE_TYPE),
            ],
        },
        Call::DestroyObject { s: 0, o: MADE + 6 },
        Call::DestroyObject { s: 0, o: MADE + 9 },
        Call::DestroyObject { s: 0, o: MADE },
        Call::DestroyObject { s: 0, o: MADE + 1 },
        Call::GenerateRandom { s: 0, len: 100 },
        Call::GenerateRandom { s: 0, len: 20_000 },
        Call::SeedRandom {
            s: 0,
            seed: text("seed"),
        },
        Call::CloseAll,
    ]);
    out.push(("objects", c));

    // Digests (local), digesting a key, several sessions, errors.
    let mut c = vec![
        Call::OpenSession { rw: false },
        Call::OpenSession { rw: true },
        Call::Login {
            s: 0,
            user_type: 0,
            pin: Pin::Wrong,
        },
        Call::CryptoInit {
            s: 0,
            op: 2,
            m: mech(ckm::ECDSA),
            o: EC_PRIV,
        },
        Call::Login {
            s: 1,
            user_type: 1,
            pin: Pin::Right,
        },
        Call::SessionInfo { s: 0 },
        Call::DigestInit {
            s: 0,
            m: mech(ckm::SHA256),
        },
        Call::DigestUpdate {
            s: 0,
            data: text("abc"),
        },
        Call::DigestKey { s: 0, o: AES },
        Call::DigestFinal {
            s: 0,
            out: Out::Len(64),
        },
        Call::DigestInit {
            s: 1,
            m: mech(ckm::SHA512),
        },
        Call::Digest {
            s: 1,
            data: fill(5000, 1),
            out: Out::Query,
        },
        Call::Digest {
            s: 1,
            data: fill(5000, 1),
            out: Out::Len(64),
        },
        Call::CryptoInit {
            s: 1,
            op: 2,
            m: Mech {
                ty: calls::Mech::of(ckm::RSA_PKCS_PSS).ty,
                param: Param::Pss {
                    hash: 0,
                    mgf: 9,
                    salt: 1,
                },
            },
            o: RSA_PRIV,
        },
        Call::CryptoInit {
            s: 1,
            op: 2,
            m: mech(ckm::AES_GCM),
            o: DATA,
        },
        Call::Crypto {
            s: 1,
            op: 2,
            data: text("no operation"),
            out: Out::Len(16),
        },
        Call::FindInit {
            s: 0,
            t: Tpl(Vec::new()),
        },
        Call::Find { s: 0, n: 200 },
        Call::Logout { s: 1 },
        Call::CloseSession { s: 0 },
        Call::CloseSession { s: 1 },
    ];
    c.push(Call::OpenSession { rw: true });
    out.push(("digest-errors", c));
    out
}

// ----- writing --------------------------------------------------------------

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus folder");
    std::fs::write(d.join(name), bytes).expect("corpus file");
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus"));
    let world = server::world();
    let base = &world.base;
    // The keys in the fake HSM's order: RSA private/public, EC
    // private/public, AES (wrapping), HMAC, data.
    let fake_order = vec![
        base[1], base[0], base[5], base[4], base[8], base[10], base[11],
    ];
    let mut requests = BTreeSet::new();
    let mut replies = BTreeSet::new();
    for (name, script) in scenarios() {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let slots: Vec<Slot> = (0..4).map(|_| Slot::new()).collect();
        let token = Token::new(
            RecConnector {
                hsm: world.hsm.clone(),
                logs: logs.clone(),
            },
            server::APP,
            &slots,
            LoginConfig {
                user: Some(server::USER),
                special_pin: false,
            },
        )
        .expect("token");
        let mut exec = Exec {
            t: &token,
            sessions: Vec::new(),
            objects: fake_order.clone(),
            last: Vec::new(),
        };
        for call in &script {
            exec.run(call);
        }
        token.close_all_sessions();
        drop(token);
        write(&dir, "token_model", name, &calls::write_all(&script));
        for (i, log) in logs.lock().unwrap().iter().enumerate() {
            let log = log.lock().unwrap();
            let bodies: Vec<Vec<u8>> = log.iter().map(|(q, _)| q.clone()).collect();
            if bodies.len() > 2 {
                write(
                    &dir,
                    "server",
                    &format!("{name}-{i}"),
                    &records::write_raw(records::NO_HELLO | records::NO_LOGIN, &bodies),
                );
            }
            for (q, r) in log.iter() {
                requests.insert(q.clone());
                replies.insert(r.clone());
            }
        }
        server::clean_up(world, &BTreeSet::new());
    }
    let mut templates = 0;
    for (i, q) in requests.iter().enumerate() {
        write(&dir, "wire_request", &format!("{i:03}"), q);
        let carries = matches!(
            hsmlink_core::wire::decode::<Request<'_>>(q),
            Ok(Request::CreateObject { .. }
                | Request::CopyObject { .. }
                | Request::SetAttributes { .. }
                | Request::FindObjects { .. }
                | Request::GenerateKey { .. }
                | Request::GenerateKeyPair { .. }
                | Request::CryptoInit { .. }
                | Request::CryptoOneShot { .. }
                | Request::WrapKey { .. }
                | Request::UnwrapKey { .. }
                | Request::DeriveKey { .. })
        );
        if carries {
            write(&dir, "template", &format!("{i:03}"), q);
            templates += 1;
        }
    }
    for (i, r) in replies.iter().enumerate() {
        write(&dir, "wire_response", &format!("{i:03}"), r);
    }
    // The `extraction` target: the attacks of tests/tests/attacks.rs.
    let attacks = hsmlink_fuzz::extraction::attack_seeds();
    for (name, input) in &attacks {
        write(&dir, "extraction", name, input);
    }
    println!("{} attack scripts into {}", attacks.len(), dir.display());
    println!(
        "recorded {} requests ({templates} with templates or mechanisms), {} replies, {} scripted sessions into {}",
        requests.len(),
        replies.len(),
        scenarios().len(),
        dir.display()
    );
}
