//! Every wire message, generated from structure: owned mirrors of
//! [`Request`] and [`Response`] with `Arbitrary`, turned into the borrowed
//! messages, so that the round trip `decode(encode(m)) == m` is checked for
//! every variant and every field whatever bytes the fuzzer starts from.

use arbitrary::Arbitrary;
use hsmlink_core::wire::{
    AttrValue, Attribute, KeyInfo, MAX_ATTRS, MAX_FIND, MechParam, Mechanism, Op, Request,
    Response, Secret, Template,
};

#[derive(Arbitrary, Debug)]
pub enum AOp {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
}

impl AOp {
    fn op(&self) -> Op {
        match self {
            AOp::Encrypt => Op::Encrypt,
            AOp::Decrypt => Op::Decrypt,
            AOp::Sign => Op::Sign,
            AOp::Verify => Op::Verify,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum AParam {
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
        hash: u64,
        mgf: u64,
        salt_len: u64,
    },
    Oaep {
        hash: u64,
        mgf: u64,
        label: Vec<u8>,
    },
    Ecdh {
        kdf: u64,
        shared_data: Vec<u8>,
        public_data: Vec<u8>,
    },
    Ulong(u64),
    Bytes(Vec<u8>),
    Eddsa {
        prehash: bool,
        context: Vec<u8>,
    },
    AesCbcData {
        iv: [u8; 16],
        data: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
pub struct AMech {
    ty: u64,
    param: AParam,
}

impl AMech {
    fn mech(&self) -> Mechanism<'_> {
        let param = match &self.param {
            AParam::None => MechParam::None,
            AParam::Iv(v) => MechParam::Iv(v),
            AParam::Gcm { iv, aad, tag_bits } => MechParam::Gcm {
                iv,
                aad,
                tag_bits: *tag_bits,
            },
            AParam::Ctr {
                counter_bits,
                block,
            } => MechParam::Ctr {
                counter_bits: *counter_bits,
                block: *block,
            },
            AParam::Pss {
                hash,
                mgf,
                salt_len,
            } => MechParam::Pss {
                hash: *hash,
                mgf: *mgf,
                salt_len: *salt_len,
            },
            AParam::Oaep { hash, mgf, label } => MechParam::Oaep {
                hash: *hash,
                mgf: *mgf,
                label,
            },
            AParam::Ecdh {
                kdf,
                shared_data,
                public_data,
            } => MechParam::Ecdh {
                kdf: *kdf,
                shared_data,
                public_data,
            },
            AParam::Ulong(v) => MechParam::Ulong(*v),
            AParam::Bytes(v) => MechParam::Bytes(v),
            AParam::Eddsa { prehash, context } => MechParam::Eddsa {
                prehash: *prehash,
                context,
            },
            AParam::AesCbcData { iv, data } => MechParam::AesCbcData { iv: *iv, data },
        };
        Mechanism { ty: self.ty, param }
    }
}

pub type ATemplate = Vec<(u64, Vec<u8>)>;

fn template(t: &ATemplate) -> Template<'_> {
    let mut out = Template::new();
    for (ty, value) in t.iter().take(MAX_ATTRS) {
        let _ = out.push(Attribute { ty: *ty, value });
    }
    out
}

fn ulongs<const N: usize>(v: &[u64]) -> heapless::Vec<u64, N> {
    v.iter().take(N).copied().collect()
}

/// An owned request of any kind.
#[derive(Arbitrary, Debug)]
pub enum ARequest {
    Hello {
        version: u16,
        max_frame: u32,
        app: [u8; 16],
    },
    Login {
        user: String,
        password: Vec<u8>,
    },
    Logout,
    CreateObject(ATemplate),
    CopyObject(u64, ATemplate),
    DestroyObject(u64),
    GetAttributes(u64, Vec<u64>),
    SetAttributes(u64, ATemplate),
    GetObjectSize(u64),
    FindObjects(ATemplate, u32),
    FindNext(u32),
    GenerateKey(AMech, ATemplate),
    GenerateKeyPair(AMech, ATemplate, ATemplate),
    CryptoInit(AOp, AMech, u64),
    CryptoUpdate(AOp, Vec<u8>),
    CryptoFinal(AOp, Vec<u8>, Vec<u8>),
    CryptoOneShot(AOp, AMech, u64, Vec<u8>, Vec<u8>),
    CryptoCancel(AOp),
    GenerateRandom(u32),
    SeedRandom(Vec<u8>),
    WrapKey(AMech, u64, u64),
    UnwrapKey(AMech, u64, Vec<u8>, ATemplate),
    DeriveKey(AMech, u64, ATemplate),
    DigestKey(u64, u64),
    Ping,
}

impl ARequest {
    /// Call `f` with the borrowed request.
    pub fn with<T>(&self, f: impl FnOnce(&Request<'_>) -> T) -> T {
        let r = match self {
            ARequest::Hello {
                version,
                max_frame,
                app,
            } => Request::Hello {
                version: *version,
                max_frame: *max_frame,
                app: *app,
            },
            ARequest::Login { user, password } => Request::Login {
                user,
                password: Secret(password),
            },
            ARequest::Logout => Request::Logout,
            ARequest::CreateObject(t) => Request::CreateObject {
                template: template(t),
            },
            ARequest::CopyObject(o, t) => Request::CopyObject {
                object: *o,
                template: template(t),
            },
            ARequest::DestroyObject(o) => Request::DestroyObject { object: *o },
            ARequest::GetAttributes(o, types) => Request::GetAttributes {
                object: *o,
                types: ulongs(types),
            },
            ARequest::SetAttributes(o, t) => Request::SetAttributes {
                object: *o,
                template: template(t),
            },
            ARequest::GetObjectSize(o) => Request::GetObjectSize { object: *o },
            ARequest::FindObjects(t, max) => Request::FindObjects {
                template: template(t),
                max: *max,
            },
            ARequest::FindNext(max) => Request::FindNext { max: *max },
            ARequest::GenerateKey(m, t) => Request::GenerateKey {
                mechanism: m.mech(),
                template: template(t),
            },
            ARequest::GenerateKeyPair(m, a, b) => Request::GenerateKeyPair {
                mechanism: m.mech(),
                public: template(a),
                private: template(b),
            },
            ARequest::CryptoInit(op, m, key) => Request::CryptoInit {
                op: op.op(),
                mechanism: m.mech(),
                key: *key,
            },
            ARequest::CryptoUpdate(op, data) => Request::CryptoUpdate { op: op.op(), data },
            ARequest::CryptoFinal(op, data, signature) => Request::CryptoFinal {
                op: op.op(),
                data,
                signature,
            },
            ARequest::CryptoOneShot(op, m, key, data, signature) => Request::CryptoOneShot {
                op: op.op(),
                mechanism: m.mech(),
                key: *key,
                data,
                signature,
            },
            ARequest::CryptoCancel(op) => Request::CryptoCancel { op: op.op() },
            ARequest::GenerateRandom(len) => Request::GenerateRandom { len: *len },
            ARequest::SeedRandom(seed) => Request::SeedRandom { seed },
            ARequest::WrapKey(m, w, k) => Request::WrapKey {
                mechanism: m.mech(),
                wrapping_key: *w,
                key: *k,
            },
            ARequest::UnwrapKey(m, k, wrapped, t) => Request::UnwrapKey {
                mechanism: m.mech(),
                unwrapping_key: *k,
                wrapped,
                template: template(t),
            },
            ARequest::DeriveKey(m, k, t) => Request::DeriveKey {
                mechanism: m.mech(),
                base_key: *k,
                template: template(t),
            },
            ARequest::DigestKey(m, k) => Request::DigestKey {
                mechanism: *m,
                key: *k,
            },
            ARequest::Ping => Request::Ping,
        };
        f(&r)
    }
}

#[derive(Arbitrary, Debug)]
pub enum AAttrValue {
    Value(Vec<u8>),
    Sensitive,
    Invalid,
}

/// An owned response of any kind.
#[derive(Arbitrary, Debug)]
pub enum AResponse {
    Hello {
        version: u16,
        max_frame: u32,
        server: String,
    },
    Ok,
    Error(u64),
    Object(u64),
    KeyPair(u64, u64),
    Attributes(Vec<AAttrValue>),
    Size(u64),
    Objects(Vec<u64>, bool),
    KeyInfo(u64, u64, u32),
    Data(Vec<u8>),
}

impl AResponse {
    /// Call `f` with the borrowed response.
    pub fn with<T>(&self, f: impl FnOnce(&Response<'_>) -> T) -> T {
        let r = match self {
            AResponse::Hello {
                version,
                max_frame,
                server,
            } => Response::Hello {
                version: *version,
                max_frame: *max_frame,
                server,
            },
            AResponse::Ok => Response::Ok,
            AResponse::Error(rv) => Response::Error(*rv),
            AResponse::Object(h) => Response::Object(*h),
            AResponse::KeyPair(public, private) => Response::KeyPair {
                public: *public,
                private: *private,
            },
            AResponse::Attributes(v) => Response::Attributes(
                v.iter()
                    .take(MAX_ATTRS)
                    .map(|a| match a {
                        AAttrValue::Value(v) => AttrValue::Value(v),
                        AAttrValue::Sensitive => AttrValue::Sensitive,
                        AAttrValue::Invalid => AttrValue::Invalid,
                    })
                    .collect(),
            ),
            AResponse::Size(s) => Response::Size(*s),
            AResponse::Objects(h, more) => Response::Objects {
                handles: ulongs::<MAX_FIND>(h),
                more: *more,
            },
            AResponse::KeyInfo(class, key_type, bits) => Response::KeyInfo(KeyInfo {
                class: *class,
                key_type: *key_type,
                bits: *bits,
            }),
            AResponse::Data(d) => Response::Data(d),
        };
        f(&r)
    }
}
