//! The input format of the `token_model` target: a sequence of Cryptoki
//! calls, read with `arbitrary::Unstructured` one byte at a time so that the
//! format is simple enough to write by hand ([`Call::encode`]), which the
//! seed recorder does from a real session.
//!
//! Every call starts with an opcode byte (taken modulo the number of calls);
//! its operands follow. Byte strings are a length byte then the bytes, or
//! `0xff`, a 16-bit little-endian length and one fill byte (large data, to
//! reach the chunked paths). Sessions and objects are named by selectors:
//! small numbers index the handles seen so far, others are junk handles.

use arbitrary::Unstructured;
use hsmlink_core::ck::{ckg, ckm};
use hsmlink_core::wire::{MechParam, Mechanism, Op};

use crate::tables;

/// Reads the format; past the end every byte reads as 0.
pub struct Reader<'a, 'b> {
    u: &'b mut Unstructured<'a>,
}

impl<'a, 'b> Reader<'a, 'b> {
    pub fn new(u: &'b mut Unstructured<'a>) -> Self {
        Reader { u }
    }

    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        self.u.arbitrary::<u8>().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A byte string: length byte and bytes, or `0xff`, u16 length, fill.
    pub fn data(&mut self) -> Data {
        match self.u8() {
            0xff => {
                let len = self.u16();
                Data::Fill(len, self.u8())
            }
            n => {
                let want = usize::from(n);
                let got = self.u.bytes(want.min(self.u.len())).unwrap_or(&[]);
                Data::Bytes(got.to_vec())
            }
        }
    }
}

/// Writes the format.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn data(&mut self, d: &Data) {
        match d {
            Data::Bytes(b) if b.len() < 0xff => {
                self.u8(b.len() as u8);
                self.out.extend_from_slice(b);
            }
            Data::Bytes(b) => {
                // Long strings are written as fill: the recorder only needs
                // their length.
                self.u8(0xff);
                self.u16(b.len().min(0xffff) as u16);
                self.u8(b.first().copied().unwrap_or(0));
            }
            Data::Fill(len, byte) => {
                self.u8(0xff);
                self.u16(*len);
                self.u8(*byte);
            }
        }
    }
}

/// Data given to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Bytes(Vec<u8>),
    /// `len` copies of a byte.
    Fill(u16, u8),
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Data::Bytes(b) => b.clone(),
            Data::Fill(len, b) => vec![*b; usize::from(*len)],
        }
    }
}

/// An output buffer: absent (a length query) or of some size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Query,
    /// The size the last `Needed` answer of this session said.
    AsNeeded,
    Len(u32),
}

impl Out {
    fn read(r: &mut Reader<'_, '_>) -> Out {
        match r.u8() {
            0 => Out::Query,
            1 => Out::AsNeeded,
            2 => Out::Len(0),
            3 => Out::Len(16),
            4 => Out::Len(64),
            5 => Out::Len(256),
            6 => Out::Len(70_000),
            n => Out::Len(u32::from(n) * 3),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Out::Query => w.u8(0),
            Out::AsNeeded => w.u8(1),
            Out::Len(0) => w.u8(2),
            Out::Len(16) => w.u8(3),
            Out::Len(64) => w.u8(4),
            Out::Len(256) => w.u8(5),
            Out::Len(_) => w.u8(6),
        }
    }
}

/// One attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Bool(u8),
    /// An interesting `CK_ULONG` ([`tables::ULONGS`]).
    Ulong(u8),
    RawUlong(u64),
    Bytes(Data),
    Curve(u8),
}

impl Value {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Bool(b) => vec![*b],
            Value::Ulong(i) => tables::pick(tables::ULONGS, *i).to_le_bytes().to_vec(),
            Value::RawUlong(v) => v.to_le_bytes().to_vec(),
            Value::Bytes(d) => d.bytes(),
            Value::Curve(i) => tables::pick(tables::CURVES, *i).to_vec(),
        }
    }

    fn read(r: &mut Reader<'_, '_>) -> Value {
        match r.u8() % 5 {
            0 => Value::Bool(r.u8()),
            1 => Value::Ulong(r.u8()),
            2 => Value::RawUlong(r.u64()),
            3 => Value::Bytes(r.data()),
            _ => Value::Curve(r.u8()),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Value::Bool(b) => {
                w.u8(0);
                w.u8(*b);
            }
            Value::Ulong(i) => {
                w.u8(1);
                w.u8(*i);
            }
            Value::RawUlong(v) => {
                w.u8(2);
                w.u64(*v);
            }
            Value::Bytes(d) => {
                w.u8(3);
                w.data(d);
            }
            Value::Curve(i) => {
                w.u8(4);
                w.u8(*i);
            }
        }
    }
}

/// A template: (attribute type selector, value) pairs. Up to 40 entries
/// (more than a wire template holds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tpl(pub Vec<(u8, Value)>);

impl Tpl {
    pub fn owned(&self) -> Vec<(u64, Vec<u8>)> {
        self.0
            .iter()
            .map(|(t, v)| (tables::pick(tables::ATTRS, *t), v.bytes()))
            .collect()
    }

    fn read(r: &mut Reader<'_, '_>) -> Tpl {
        let n = r.u8() % 41;
        Tpl((0..n).map(|_| (r.u8(), Value::read(r))).collect())
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.0.len() as u8);
        for (t, v) in &self.0 {
            w.u8(*t);
            v.write(w);
        }
    }
}

/// A mechanism: type selector and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mech {
    pub ty: u8,
    pub param: Param,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// The parameters the mechanism wants (IV, GCM, CTR, PSS, OAEP...).
    Fitting,
    None,
    Iv(Data),
    Gcm {
        iv: Data,
        aad: Data,
        tag_bits: u8,
    },
    Ctr {
        counter_bits: u8,
        block: u8,
    },
    Pss {
        hash: u8,
        mgf: u8,
        salt: u8,
    },
    Oaep {
        hash: u8,
        mgf: u8,
        label: Data,
    },
    Ulong(u64),
    Bytes(Data),
}

/// Owned bytes a [`Mechanism`] borrows from.
pub struct MechBytes {
    pub ty: u64,
    a: Vec<u8>,
    b: Vec<u8>,
    param: Param,
}

impl MechBytes {
    pub fn mechanism(&self) -> Mechanism<'_> {
        let param = match &self.param {
            Param::Fitting => return fitting(self.ty),
            Param::None => MechParam::None,
            Param::Iv(_) => MechParam::Iv(&self.a),
            Param::Gcm { tag_bits, .. } => MechParam::Gcm {
                iv: &self.a,
                aad: &self.b,
                tag_bits: [96, 128, 104, 0, 64, 129, 120, 112][usize::from(*tag_bits % 8)],
            },
            Param::Ctr {
                counter_bits,
                block,
            } => MechParam::Ctr {
                counter_bits: u32::from(*counter_bits),
                block: [*block; 16],
            },
            Param::Pss { hash, mgf, salt } => MechParam::Pss {
                hash: tables::pick(tables::MECHS, *hash),
                mgf: u64::from(*mgf % 7),
                salt_len: u64::from(*salt),
            },
            Param::Oaep { hash, mgf, .. } => MechParam::Oaep {
                hash: tables::pick(tables::MECHS, *hash),
                mgf: u64::from(*mgf % 7),
                label: &self.a,
            },
            Param::Ulong(v) => MechParam::Ulong(*v),
            Param::Bytes(_) => MechParam::Bytes(&self.a),
        };
        Mechanism { ty: self.ty, param }
    }
}

/// The parameters mechanism `ty` wants, with fixed values.
pub fn fitting(ty: u64) -> Mechanism<'static> {
    const IV: &[u8] = &[7; 16];
    let hash_of = |m| match m {
        ckm::SHA1_RSA_PKCS_PSS => (ckm::SHA_1, ckg::MGF1_SHA1, 20),
        ckm::SHA224_RSA_PKCS_PSS => (ckm::SHA224, ckg::MGF1_SHA224, 28),
        ckm::SHA384_RSA_PKCS_PSS => (ckm::SHA384, ckg::MGF1_SHA384, 48),
        ckm::SHA512_RSA_PKCS_PSS => (ckm::SHA512, ckg::MGF1_SHA512, 64),
        _ => (ckm::SHA256, ckg::MGF1_SHA256, 32),
    };
    let param = match ty {
        ckm::AES_CBC | ckm::AES_CBC_PAD => MechParam::Iv(IV),
        ckm::AES_GCM => MechParam::Gcm {
            iv: &IV[..12],
            aad: b"aad",
            tag_bits: 128,
        },
        ckm::AES_CTR => MechParam::Ctr {
            counter_bits: 32,
            block: [1; 16],
        },
        ckm::RSA_PKCS_PSS
        | ckm::SHA1_RSA_PKCS_PSS
        | ckm::SHA224_RSA_PKCS_PSS
        | ckm::SHA256_RSA_PKCS_PSS
        | ckm::SHA384_RSA_PKCS_PSS
        | ckm::SHA512_RSA_PKCS_PSS => {
            let (hash, mgf, salt_len) = hash_of(ty);
            MechParam::Pss {
                hash,
                mgf,
                salt_len,
            }
        }
        ckm::RSA_PKCS_OAEP => MechParam::Oaep {
            hash: ckm::SHA256,
            mgf: ckg::MGF1_SHA256,
            label: &[],
        },
        _ => MechParam::None,
    };
    Mechanism { ty, param }
}

impl Mech {
    pub fn bytes(&self) -> MechBytes {
        let (a, b) = match &self.param {
            Param::Iv(d) | Param::Bytes(d) => (d.bytes(), Vec::new()),
            Param::Gcm { iv, aad, .. } => (iv.bytes(), aad.bytes()),
            Param::Oaep { label, .. } => (label.bytes(), Vec::new()),
            _ => (Vec::new(), Vec::new()),
        };
        MechBytes {
            ty: tables::pick(tables::MECHS, self.ty),
            a,
            b,
            param: self.param.clone(),
        }
    }

    fn read(r: &mut Reader<'_, '_>) -> Mech {
        let ty = r.u8();
        let param = match r.u8() % 12 {
            // Most of the time the parameters fit.
            0..=3 => Param::Fitting,
            4 => Param::None,
            5 => Param::Iv(r.data()),
            6 => Param::Gcm {
                iv: r.data(),
                aad: r.data(),
                tag_bits: r.u8(),
            },
            7 => Param::Ctr {
                counter_bits: r.u8(),
                block: r.u8(),
            },
            8 => Param::Pss {
                hash: r.u8(),
                mgf: r.u8(),
                salt: r.u8(),
            },
            9 => Param::Oaep {
                hash: r.u8(),
                mgf: r.u8(),
                label: r.data(),
            },
            10 => Param::Ulong(r.u64()),
            _ => Param::Bytes(r.data()),
        };
        Mech { ty, param }
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.ty);
        match &self.param {
            Param::Fitting => w.u8(0),
            Param::None => w.u8(4),
            Param::Iv(d) => {
                w.u8(5);
                w.data(d);
            }
            Param::Gcm { iv, aad, tag_bits } => {
                w.u8(6);
                w.data(iv);
                w.data(aad);
                w.u8(*tag_bits);
            }
            Param::Ctr {
                counter_bits,
                block,
            } => {
                w.u8(7);
                w.u8(*counter_bits);
                w.u8(*block);
            }
            Param::Pss { hash, mgf, salt } => {
                w.u8(8);
                w.u8(*hash);
                w.u8(*mgf);
                w.u8(*salt);
            }
            Param::Oaep { hash, mgf, label } => {
                w.u8(9);
                w.u8(*hash);
                w.u8(*mgf);
                w.data(label);
            }
            Param::Ulong(v) => {
                w.u8(10);
                w.u64(*v);
            }
            Param::Bytes(d) => {
                w.u8(11);
                w.data(d);
            }
        }
    }

    /// The selector of mechanism `ty` (which must be in [`tables::MECHS`]).
    pub fn of(ty: u64) -> Mech {
        let i = tables::MECHS.iter().position(|m| *m == ty).unwrap_or(0);
        Mech {
            ty: i as u8,
            param: Param::Fitting,
        }
    }
}

/// The selector of attribute type `ty` (which must be in [`tables::ATTRS`]).
pub fn attr_sel(ty: u64) -> u8 {
    tables::ATTRS.iter().position(|a| *a == ty).unwrap_or(0) as u8
}

/// The selector of `CK_ULONG` value `v` (which must be in [`tables::ULONGS`]).
pub fn ulong_sel(v: u64) -> u8 {
    tables::ULONGS.iter().position(|a| *a == v).unwrap_or(0) as u8
}

/// A signature given to `C_Verify`/`C_VerifyFinal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sig {
    /// The signature the fake HSM makes over the data: the model computes it.
    Valid,
    Bytes(Data),
}

impl Sig {
    fn read(r: &mut Reader<'_, '_>) -> Sig {
        match r.u8() % 3 {
            0 | 1 => Sig::Valid,
            _ => Sig::Bytes(r.data()),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Sig::Valid => w.u8(0),
            Sig::Bytes(d) => {
                w.u8(2);
                w.data(d);
            }
        }
    }
}

pub fn op_of(b: u8) -> Op {
    match b % 4 {
        0 => Op::Encrypt,
        1 => Op::Decrypt,
        2 => Op::Sign,
        _ => Op::Verify,
    }
}

pub fn op_sel(op: Op) -> u8 {
    match op {
        Op::Encrypt => 0,
        Op::Decrypt => 1,
        Op::Sign => 2,
        Op::Verify => 3,
    }
}

/// A PIN given to `C_Login`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    Right,
    Wrong,
    Empty,
    /// Longer than the token keeps.
    Long,
}

/// What the next exchange with the fake HSM does instead of answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Io,
    Timeout,
    FrameTooLong,
    /// These bytes come back as the reply body.
    Reply(Data),
}

/// One Cryptoki call (or a fault of the link). `s` names a session and `o`
/// an object, by selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    OpenSession {
        rw: bool,
    },
    CloseSession {
        s: u8,
    },
    CloseAll,
    SessionInfo {
        s: u8,
    },
    Login {
        s: u8,
        user_type: u8,
        pin: Pin,
    },
    Logout {
        s: u8,
    },
    CreateObject {
        s: u8,
        t: Tpl,
    },
    CopyObject {
        s: u8,
        o: u8,
        t: Tpl,
    },
    DestroyObject {
        s: u8,
        o: u8,
    },
    GetAttributes {
        s: u8,
        o: u8,
        types: Vec<u8>,
    },
    SetAttributes {
        s: u8,
        o: u8,
        t: Tpl,
    },
    ObjectSize {
        s: u8,
        o: u8,
    },
    FindInit {
        s: u8,
        t: Tpl,
    },
    Find {
        s: u8,
        n: u8,
    },
    FindFinal {
        s: u8,
    },
    GenerateKey {
        s: u8,
        m: Mech,
        t: Tpl,
    },
    GenerateKeyPair {
        s: u8,
        m: Mech,
        public: Tpl,
        private: Tpl,
    },
    WrapKey {
        s: u8,
        m: Mech,
        wrapping: u8,
        o: u8,
        out: Out,
    },
    UnwrapKey {
        s: u8,
        m: Mech,
        unwrapping: u8,
        wrapped: Data,
        t: Tpl,
    },
    DeriveKey {
        s: u8,
        m: Mech,
        o: u8,
        t: Tpl,
    },
    GenerateRandom {
        s: u8,
        len: u16,
    },
    SeedRandom {
        s: u8,
        seed: Data,
    },
    DigestInit {
        s: u8,
        m: Mech,
    },
    Digest {
        s: u8,
        data: Data,
        out: Out,
    },
    DigestUpdate {
        s: u8,
        data: Data,
    },
    DigestFinal {
        s: u8,
        out: Out,
    },
    DigestKey {
        s: u8,
        o: u8,
    },
    CryptoInit {
        s: u8,
        op: u8,
        m: Mech,
        o: u8,
    },
    Crypto {
        s: u8,
        op: u8,
        data: Data,
        out: Out,
    },
    CryptoUpdate {
        s: u8,
        op: u8,
        data: Data,
        out: Out,
    },
    CryptoUpdateNoOutput {
        s: u8,
        op: u8,
        data: Data,
    },
    CryptoFinal {
        s: u8,
        op: u8,
        out: Out,
    },
    Verify {
        s: u8,
        data: Data,
        sig: Sig,
    },
    VerifyFinal {
        s: u8,
        sig: Sig,
    },
    Fault {
        kind: FaultKind,
    },
}

const CALLS: u8 = 35;

impl Call {
    /// The next call, or `None` at the end of the input.
    pub fn read(r: &mut Reader<'_, '_>) -> Option<Call> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % CALLS {
            0 => Call::OpenSession {
                rw: r.u8() & 1 == 1,
            },
            1 => Call::CloseSession { s: r.u8() },
            2 => Call::CloseAll,
            3 => Call::SessionInfo { s: r.u8() },
            4 => Call::Login {
                s: r.u8(),
                user_type: r.u8(),
                pin: match r.u8() % 8 {
                    0..=4 => Pin::Right,
                    5 => Pin::Wrong,
                    6 => Pin::Empty,
                    _ => Pin::Long,
                },
            },
            5 => Call::Logout { s: r.u8() },
            6 => Call::CreateObject {
                s: r.u8(),
                t: Tpl::read(r),
            },
            7 => Call::CopyObject {
                s: r.u8(),
                o: r.u8(),
                t: Tpl::read(r),
            },
            8 => Call::DestroyObject {
                s: r.u8(),
                o: r.u8(),
            },
            9 => {
                let s = r.u8();
                let o = r.u8();
                let n = r.u8() % 40;
                Call::GetAttributes {
                    s,
                    o,
                    types: (0..n).map(|_| r.u8()).collect(),
                }
            }
            10 => Call::SetAttributes {
                s: r.u8(),
                o: r.u8(),
                t: Tpl::read(r),
            },
            11 => Call::ObjectSize {
                s: r.u8(),
                o: r.u8(),
            },
            12 => Call::FindInit {
                s: r.u8(),
                t: Tpl::read(r),
            },
            13 => Call::Find {
                s: r.u8(),
                n: r.u8(),
            },
            14 => Call::FindFinal { s: r.u8() },
            15 => Call::GenerateKey {
                s: r.u8(),
                m: Mech::read(r),
                t: Tpl::read(r),
            },
            16 => Call::GenerateKeyPair {
                s: r.u8(),
                m: Mech::read(r),
                public: Tpl::read(r),
                private: Tpl::read(r),
            },
            17 => Call::WrapKey {
                s: r.u8(),
                m: Mech::read(r),
                wrapping: r.u8(),
                o: r.u8(),
                out: Out::read(r),
            },
            18 => Call::UnwrapKey {
                s: r.u8(),
                m: Mech::read(r),
                unwrapping: r.u8(),
                wrapped: r.data(),
                t: Tpl::read(r),
            },
            19 => Call::DeriveKey {
                s: r.u8(),
                m: Mech::read(r),
                o: r.u8(),
                t: Tpl::read(r),
            },
            20 => Call::GenerateRandom {
                s: r.u8(),
                len: r.u16(),
            },
            21 => Call::SeedRandom {
                s: r.u8(),
                seed: r.data(),
            },
            22 => Call::DigestInit {
                s: r.u8(),
                m: Mech::read(r),
            },
            23 => Call::Digest {
                s: r.u8(),
                data: r.data(),
                out: Out::read(r),
            },
            24 => Call::DigestUpdate {
                s: r.u8(),
                data: r.data(),
            },
            25 => Call::DigestFinal {
                s: r.u8(),
                out: Out::read(r),
            },
            26 => Call::DigestKey {
                s: r.u8(),
                o: r.u8(),
            },
            27 => Call::CryptoInit {
                s: r.u8(),
                op: r.u8(),
                m: Mech::read(r),
                o: r.u8(),
            },
            28 => Call::Crypto {
                s: r.u8(),
                op: r.u8(),
                data: r.data(),
                out: Out::read(r),
            },
            29 => Call::CryptoUpdate {
                s: r.u8(),
                op: r.u8(),
                data: r.data(),
                out: Out::read(r),
            },
            30 => Call::CryptoUpdateNoOutput {
                s: r.u8(),
                op: r.u8(),
                data: r.data(),
            },
            31 => Call::CryptoFinal {
                s: r.u8(),
                op: r.u8(),
                out: Out::read(r),
            },
            32 => Call::Verify {
                s: r.u8(),
                data: r.data(),
                sig: Sig::read(r),
            },
            33 => Call::VerifyFinal {
                s: r.u8(),
                sig: Sig::read(r),
            },
            _ => Call::Fault {
                kind: match r.u8() % 4 {
                    0 => FaultKind::Io,
                    1 => FaultKind::Timeout,
                    2 => FaultKind::FrameTooLong,
                    _ => FaultKind::Reply(r.data()),
                },
            },
        })
    }

    /// Append this call in the format [`Call::read`] reads.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Call::OpenSession { rw } => {
                w.u8(0);
                w.u8(u8::from(*rw));
            }
            Call::CloseSession { s } => {
                w.u8(1);
                w.u8(*s);
            }
            Call::CloseAll => w.u8(2),
            Call::SessionInfo { s } => {
                w.u8(3);
                w.u8(*s);
            }
            Call::Login { s, user_type, pin } => {
                w.u8(4);
                w.u8(*s);
                w.u8(*user_type);
                w.u8(match pin {
                    Pin::Right => 0,
                    Pin::Wrong => 5,
                    Pin::Empty => 6,
                    Pin::Long => 7,
                });
            }
            Call::Logout { s } => {
                w.u8(5);
                w.u8(*s);
            }
            Call::CreateObject { s, t } => {
                w.u8(6);
                w.u8(*s);
                t.write(w);
            }
            Call::CopyObject { s, o, t } => {
                w.u8(7);
                w.u8(*s);
                w.u8(*o);
                t.write(w);
            }
            Call::DestroyObject { s, o } => {
                w.u8(8);
                w.u8(*s);
                w.u8(*o);
            }
            Call::GetAttributes { s, o, types } => {
                w.u8(9);
                w.u8(*s);
                w.u8(*o);
                w.u8(types.len() as u8);
                for t in types {
                    w.u8(*t);
                }
            }
            Call::SetAttributes { s, o, t } => {
                w.u8(10);
                w.u8(*s);
                w.u8(*o);
                t.write(w);
            }
            Call::ObjectSize { s, o } => {
                w.u8(11);
                w.u8(*s);
                w.u8(*o);
            }
            Call::FindInit { s, t } => {
                w.u8(12);
                w.u8(*s);
                t.write(w);
            }
            Call::Find { s, n } => {
                w.u8(13);
                w.u8(*s);
                w.u8(*n);
            }
            Call::FindFinal { s } => {
                w.u8(14);
                w.u8(*s);
            }
            Call::GenerateKey { s, m, t } => {
                w.u8(15);
                w.u8(*s);
                m.write(w);
                t.write(w);
            }
            Call::GenerateKeyPair {
                s,
                m,
                public,
                private,
            } => {
                w.u8(16);
                w.u8(*s);
                m.write(w);
                public.write(w);
                private.write(w);
            }
            Call::WrapKey {
                s,
                m,
                wrapping,
                o,
                out,
            } => {
                w.u8(17);
                w.u8(*s);
                m.write(w);
                w.u8(*wrapping);
                w.u8(*o);
                out.write(w);
            }
            Call::UnwrapKey {
                s,
                m,
                unwrapping,
                wrapped,
                t,
            } => {
                w.u8(18);
                w.u8(*s);
                m.write(w);
                w.u8(*unwrapping);
                w.data(wrapped);
                t.write(w);
            }
            Call::DeriveKey { s, m, o, t } => {
                w.u8(19);
                w.u8(*s);
                m.write(w);
                w.u8(*o);
                t.write(w);
            }
            Call::GenerateRandom { s, len } => {
                w.u8(20);
                w.u8(*s);
                w.u16(*len);
            }
            Call::SeedRandom { s, seed } => {
                w.u8(21);
                w.u8(*s);
                w.data(seed);
            }
            Call::DigestInit { s, m } => {
                w.u8(22);
                w.u8(*s);
                m.write(w);
            }
            Call::Digest { s, data, out } => {
                w.u8(23);
                w.u8(*s);
                w.data(data);
                out.write(w);
            }
            Call::DigestUpdate { s, data } => {
                w.u8(24);
                w.u8(*s);
                w.data(data);
            }
            Call::DigestFinal { s, out } => {
                w.u8(25);
                w.u8(*s);
                out.write(w);
            }
            Call::DigestKey { s, o } => {
                w.u8(26);
                w.u8(*s);
                w.u8(*o);
            }
            Call::CryptoInit { s, op, m, o } => {
                w.u8(27);
                w.u8(*s);
                w.u8(*op);
                m.write(w);
                w.u8(*o);
            }
            Call::Crypto { s, op, data, out } => {
                w.u8(28);
                w.u8(*s);
                w.u8(*op);
                w.data(data);
                out.write(w);
            }
            Call::CryptoUpdate { s, op, data, out } => {
                w.u8(29);
                w.u8(*s);
                w.u8(*op);
                w.data(data);
                out.write(w);
            }
            Call::CryptoUpdateNoOutput { s, op, data } => {
                w.u8(30);
                w.u8(*s);
                w.u8(*op);
                w.data(data);
            }
            Call::CryptoFinal { s, op, out } => {
                w.u8(31);
                w.u8(*s);
                w.u8(*op);
                out.write(w);
            }
            Call::Verify { s, data, sig } => {
                w.u8(32);
                w.u8(*s);
                w.data(data);
                sig.write(w);
            }
            Call::VerifyFinal { s, sig } => {
                w.u8(33);
                w.u8(*s);
                sig.write(w);
            }
            Call::Fault { kind } => {
                w.u8(34);
                match kind {
                    FaultKind::Io => w.u8(0),
                    FaultKind::Timeout => w.u8(1),
                    FaultKind::FrameTooLong => w.u8(2),
                    FaultKind::Reply(d) => {
                        w.u8(3);
                        w.data(d);
                    }
                }
            }
        }
    }
}

/// Read every call of an input.
pub fn read_all(data: &[u8]) -> Vec<Call> {
    let mut u = Unstructured::new(data);
    let mut r = Reader::new(&mut u);
    let mut calls = Vec::new();
    while let Some(c) = Call::read(&mut r) {
        calls.push(c);
    }
    calls
}

/// Write calls as one input.
pub fn write_all(calls: &[Call]) -> Vec<u8> {
    let mut w = Writer::default();
    for c in calls {
        c.encode(&mut w);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_through_the_format() {
        let calls = vec![
            Call::OpenSession { rw: true },
            Call::Login {
                s: 0,
                user_type: 1,
                pin: Pin::Right,
            },
            Call::CryptoInit {
                s: 0,
                op: 2,
                m: Mech::of(ckm::SHA256_RSA_PKCS),
                o: 3,
            },
            Call::Crypto {
                s: 0,
                op: 2,
                data: Data::Fill(20_000, 9),
                out: Out::Query,
            },
            Call::CreateObject {
                s: 0,
                t: Tpl(vec![
                    (attr_sel(hsmlink_core::ck::cka::CLASS), Value::Ulong(2)),
                    (3, Value::Bytes(Data::Bytes(b"label".to_vec()))),
                ]),
            },
            Call::Fault {
                kind: FaultKind::Reply(Data::Bytes(vec![1, 2, 3])),
            },
        ];
        assert_eq!(read_all(&write_all(&calls)), calls);
    }
}
