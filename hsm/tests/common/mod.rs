//! Test helpers: drive a connection in-process through real frames.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, ckm, cko, Rv};
use hsmlink_core::wire::{
    self, AttrValue, Attribute, Mechanism, Request, Response, Template, HEADER_LEN,
    PROTOCOL_VERSION,
};
use hsmlink_hsm::conn::{OwnedAttr, Reply};
use hsmlink_hsm::{Connection, Hsm};

pub const APP: [u8; 16] = [1; 16];

/// One shared in-memory HSM with users alice and bob (argon2 is slow in
/// debug builds: hash once).
pub fn hsm() -> Arc<Hsm> {
    static H: OnceLock<Arc<Hsm>> = OnceLock::new();
    H.get_or_init(|| {
        let h = Hsm::dev("alice", b"alice-pw").unwrap();
        h.put_user("bob", b"bob-pw").unwrap();
        Arc::new(h)
    })
    .clone()
}

/// The owned form of a decoded response.
pub fn owned(r: Response<'_>) -> Reply {
    match r {
        Response::Hello {
            version, max_frame, ..
        } => Reply::Hello { version, max_frame },
        Response::Ok => Reply::Ok,
        Response::Error(e) => Reply::Error(e),
        Response::Object(h) => Reply::Object(h),
        Response::KeyPair { public, private } => Reply::KeyPair { public, private },
        Response::Attributes(v) => Reply::Attributes(
            v.iter()
                .map(|a| match a {
                    AttrValue::Value(v) => OwnedAttr::Value(v.to_vec()),
                    AttrValue::Sensitive => OwnedAttr::Sensitive,
                    AttrValue::Invalid => OwnedAttr::Invalid,
                })
                .collect(),
        ),
        Response::Size(s) => Reply::Size(s),
        Response::Objects { handles, more } => Reply::Objects {
            handles: handles.to_vec(),
            more,
        },
        Response::KeyInfo(k) => Reply::KeyInfo(k),
        Response::Data(d) => Reply::Data(d.to_vec()),
    }
}

pub struct Client {
    pub conn: Connection,
}

impl Client {
    /// A connection that said hello (not logged in).
    pub fn hello(hsm: &Arc<Hsm>, app: [u8; 16]) -> Client {
        let mut c = Client {
            conn: Connection::new(hsm.clone()),
        };
        let r = c.req(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 1 << 20,
            app,
        });
        assert!(matches!(r, Reply::Hello { .. }), "{r:?}");
        c
    }

    pub fn login(hsm: &Arc<Hsm>, user: &str, pw: &[u8]) -> Client {
        let mut c = Client::hello(hsm, APP);
        assert_eq!(
            c.req(&Request::Login {
                user,
                password: wire::Secret(pw)
            }),
            Reply::Ok
        );
        c
    }

    pub fn alice() -> Client {
        Client::login(&hsm(), "alice", b"alice-pw")
    }

    pub fn bob() -> Client {
        Client::login(&hsm(), "bob", b"bob-pw")
    }

    /// Encode, handle, decode: the full frame path.
    pub fn req(&mut self, r: &Request<'_>) -> Reply {
        let mut buf = vec![0u8; 1 << 20];
        let n = wire::encode_frame(r, &mut buf).unwrap();
        let out = self.conn.handle_body(&buf[HEADER_LEN..n]);
        let len = wire::frame_len(out[..4].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(len + HEADER_LEN, out.len());
        owned(wire::decode::<Response<'_>>(&out[HEADER_LEN..]).unwrap())
    }

    pub fn create(&mut self, t: &[(u64, Vec<u8>)]) -> Result<u64, Rv> {
        let t = tpl(t);
        match self.req(&Request::CreateObject { template: t }) {
            Reply::Object(h) => Ok(h),
            Reply::Error(e) => Err(e),
            r => panic!("{r:?}"),
        }
    }

    pub fn attrs(&mut self, h: u64, types: &[u64]) -> Result<Vec<OwnedAttr>, Rv> {
        let mut v = heapless::Vec::new();
        for t in types {
            v.push(*t).unwrap();
        }
        match self.req(&Request::GetAttributes {
            object: h,
            types: v,
        }) {
            Reply::Attributes(a) => Ok(a),
            Reply::Error(e) => Err(e),
            r => panic!("{r:?}"),
        }
    }

    pub fn value(&mut self, h: u64, ty: u64) -> Vec<u8> {
        match self.attrs(h, &[ty]).unwrap().remove(0) {
            OwnedAttr::Value(v) => v,
            a => panic!("attribute {ty:#x}: {a:?}"),
        }
    }

    pub fn find(&mut self, t: &[(u64, Vec<u8>)]) -> Vec<u64> {
        let mut all = Vec::new();
        let mut r = self.req(&Request::FindObjects {
            template: tpl(t),
            max: 64,
        });
        loop {
            match r {
                Reply::Objects { handles, more } => {
                    all.extend(handles);
                    if !more {
                        return all;
                    }
                }
                r => panic!("{r:?}"),
            }
            r = self.req(&Request::FindNext { max: 64 });
        }
    }

    pub fn gen_key(&mut self, mech: u64, t: &[(u64, Vec<u8>)]) -> Result<u64, Rv> {
        match self.req(&Request::GenerateKey {
            mechanism: Mechanism::plain(mech),
            template: tpl(t),
        }) {
            Reply::Object(h) => Ok(h),
            Reply::Error(e) => Err(e),
            r => panic!("{r:?}"),
        }
    }

    pub fn gen_pair(
        &mut self,
        mech: u64,
        public: &[(u64, Vec<u8>)],
        private: &[(u64, Vec<u8>)],
    ) -> Result<(u64, u64), Rv> {
        match self.req(&Request::GenerateKeyPair {
            mechanism: Mechanism::plain(mech),
            public: tpl(public),
            private: tpl(private),
        }) {
            Reply::KeyPair { public, private } => Ok((public, private)),
            Reply::Error(e) => Err(e),
            r => panic!("{r:?}"),
        }
    }

    pub fn rsa(&mut self, bits: u64, private: &[(u64, Vec<u8>)]) -> (u64, u64) {
        self.gen_pair(
            ckm::RSA_PKCS_KEY_PAIR_GEN,
            &[(cka::MODULUS_BITS, ul(bits))],
            private,
        )
        .unwrap()
    }

    pub fn ec(&mut self, params: &[u8]) -> (u64, u64) {
        self.gen_pair(
            ckm::EC_KEY_PAIR_GEN,
            &[(cka::EC_PARAMS, params.to_vec())],
            &[],
        )
        .unwrap()
    }

    pub fn aes(&mut self, len: u64, extra: &[(u64, Vec<u8>)]) -> u64 {
        let mut t = vec![(cka::VALUE_LEN, ul(len))];
        t.extend_from_slice(extra);
        self.gen_key(ckm::AES_KEY_GEN, &t).unwrap()
    }

    /// One-shot operation: Ok(data) / Err(rv); verify success is Ok(empty).
    pub fn one_shot(
        &mut self,
        op: wire::Op,
        mech: Mechanism<'_>,
        key: u64,
        data: &[u8],
        sig: &[u8],
    ) -> Result<Vec<u8>, Rv> {
        match self.req(&Request::CryptoOneShot {
            op,
            mechanism: mech,
            key,
            data,
            signature: sig,
        }) {
            Reply::Data(d) => Ok(d),
            Reply::Ok => Ok(Vec::new()),
            Reply::Error(e) => Err(e),
            r => panic!("{r:?}"),
        }
    }
}

/// A template as owned pairs.
pub type Tpl = Vec<(u64, Vec<u8>)>;

pub fn ul(v: u64) -> Vec<u8> {
    attr::ulong(v).to_vec()
}

pub fn b(v: bool) -> Vec<u8> {
    vec![v as u8]
}

pub fn tpl(t: &[(u64, Vec<u8>)]) -> Template<'_> {
    let mut out = Template::new();
    for (ty, v) in t {
        out.push(Attribute { ty: *ty, value: v }).unwrap();
    }
    out
}

pub fn data_object(label: &str) -> Vec<(u64, Vec<u8>)> {
    vec![
        (cka::CLASS, ul(cko::DATA)),
        (cka::LABEL, label.as_bytes().to_vec()),
        (cka::VALUE, b"payload".to_vec()),
    ]
}

pub fn aes_object(value: &[u8], extra: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut t = vec![
        (cka::CLASS, ul(cko::SECRET_KEY)),
        (cka::KEY_TYPE, ul(ckk::AES)),
        (cka::VALUE, value.to_vec()),
    ];
    t.extend_from_slice(extra);
    t
}

pub const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
pub const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
