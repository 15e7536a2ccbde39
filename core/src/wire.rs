//! The wire protocol between the module (client) and the HSM (server).
//!
//! One definition, used by both ends. A *frame* is a 4-byte little-endian
//! length followed by that many bytes of one postcard-encoded message
//! ([`Request`] from client to server, [`Response`] back). Exactly one
//! response answers each request, in order.
//!
//! A connection starts with [`Request::Hello`]; the server answers
//! [`Response::Hello`] with the version it speaks and the largest frame it
//! accepts. Each side never sends a frame longer than the other announced
//! (`max_frame`), and never reads one longer than it announced itself: large
//! data travels in chunks of at most [`MAX_CHUNK`] bytes
//! ([`Request::CryptoUpdate`]).
//!
//! A connection carries one PKCS#11 session: the server's session objects and
//! operation state live and die with the connection.
//!
//! All numbers that are `CK_ULONG` in PKCS#11 are `u64` here; object handles
//! are `u64` but the server only hands out values below 2^31 so that they fit
//! a 32-bit `CK_ULONG` on firmware. Attribute values travel in the canonical
//! form of [`crate::attr`]: `CK_ULONG` as 8 bytes little-endian, `CK_BBOOL` as
//! one byte, everything else as its bytes.

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::ck::Rv;

/// The version of this protocol. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the length prefix of a frame.
pub const HEADER_LEN: usize = 4;
/// The largest frame body any peer may announce (1 MiB).
pub const MAX_FRAME_LIMIT: usize = 1 << 20;
/// The smallest frame body any peer may announce.
pub const MIN_FRAME: usize = 1024;
/// Largest data chunk carried by one request or response.
pub const MAX_CHUNK: usize = 32 * 1024;
/// Most attributes in one template (or one `GetAttributes` request).
pub const MAX_ATTRS: usize = 32;
/// Most object handles returned by one `FindObjects` reply.
pub const MAX_FIND: usize = 64;

/// A borrowed attribute: type and canonical value.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute<'a> {
    pub ty: u64,
    #[serde(borrow, with = "serde_bytes")]
    pub value: &'a [u8],
}

impl fmt::Debug for Attribute<'_> {
    /// Values are not printed: they may be key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attribute({:#x}, {} bytes)", self.ty, self.value.len())
    }
}

/// A template as carried on the wire.
pub type Template<'a> = heapless::Vec<Attribute<'a>, MAX_ATTRS>;

/// A secret (password) on the wire: never printed.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret<'a>(#[serde(borrow, with = "serde_bytes")] pub &'a [u8]);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Parameters of a mechanism, decoded from the application's
/// `CK_MECHANISM.pParameter` by [`crate::mech`] and carried explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MechParam<'a> {
    /// No parameter.
    None,
    /// An initialization vector (CBC, CBC_PAD).
    Iv(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    /// `CK_GCM_PARAMS`.
    Gcm {
        #[serde(borrow, with = "serde_bytes")]
        iv: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        aad: &'a [u8],
        tag_bits: u32,
    },
    /// `CK_AES_CTR_PARAMS`.
    Ctr { counter_bits: u32, block: [u8; 16] },
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss { hash: u64, mgf: u64, salt_len: u64 },
    /// `CK_RSA_PKCS_OAEP_PARAMS` (source always `CKZ_DATA_SPECIFIED`).
    Oaep {
        hash: u64,
        mgf: u64,
        #[serde(borrow, with = "serde_bytes")]
        label: &'a [u8],
    },
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh {
        kdf: u64,
        #[serde(borrow, with = "serde_bytes")]
        shared_data: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        public_data: &'a [u8],
    },
    /// A `CK_ULONG` parameter (e.g. `CK_MAC_GENERAL_PARAMS`).
    Ulong(u64),
    /// Raw bytes (e.g. an AES key-wrap IV).
    Bytes(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    /// `CK_EDDSA_PARAMS`: the pre-hash flag and the context data (absent
    /// parameters are [`MechParam::None`]: pure EdDSA).
    Eddsa {
        prehash: bool,
        #[serde(borrow, with = "serde_bytes")]
        context: &'a [u8],
    },
    /// `CK_AES_CBC_ENCRYPT_DATA_PARAMS` (`CKM_AES_CBC_ENCRYPT_DATA`).
    AesCbcData {
        iv: [u8; 16],
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
    },
}

/// A mechanism with its decoded parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism<'a> {
    pub ty: u64,
    #[serde(borrow)]
    pub param: MechParam<'a>,
}

impl Mechanism<'_> {
    /// A mechanism without parameters.
    pub const fn plain(ty: u64) -> Self {
        Mechanism {
            ty,
            param: MechParam::None,
        }
    }
}

/// The cryptographic operation a `Crypto*` request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
}

/// A request from the module to the HSM.
// Messages live briefly on the stack and cannot be boxed without `alloc`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// First message on a connection. `app` identifies the application (one
    /// loaded module): session objects are visible to every connection of the
    /// same user and `app`, and die with the connection that made them.
    Hello {
        version: u16,
        max_frame: u32,
        app: [u8; 16],
    },
    /// Authenticate this connection as `user`.
    Login {
        user: &'a str,
        password: Secret<'a>,
    },
    /// Drop authentication and destroy this connection's session objects.
    Logout,
    CreateObject {
        #[serde(borrow)]
        template: Template<'a>,
    },
    CopyObject {
        object: u64,
        #[serde(borrow)]
        template: Template<'a>,
    },
    DestroyObject {
        object: u64,
    },
    /// Read attributes; the answer is [`Response::Attributes`], one
    /// [`AttrValue`] per requested type, in order.
    GetAttributes {
        object: u64,
        types: heapless::Vec<u64, MAX_ATTRS>,
    },
    SetAttributes {
        object: u64,
        #[serde(borrow)]
        template: Template<'a>,
    },
    GetObjectSize {
        object: u64,
    },
    /// Start a search and return its first batch of at most `max` handles.
    FindObjects {
        #[serde(borrow)]
        template: Template<'a>,
        max: u32,
    },
    /// Next batch of the current search.
    FindNext {
        max: u32,
    },
    GenerateKey {
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        #[serde(borrow)]
        template: Template<'a>,
    },
    GenerateKeyPair {
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        #[serde(borrow)]
        public: Template<'a>,
        #[serde(borrow)]
        private: Template<'a>,
    },
    /// Start a (multi-part) operation on the server. The answer is
    /// [`Response::KeyInfo`] for the key, so the module computes output
    /// sizes locally. Any earlier operation of the same kind is replaced.
    CryptoInit {
        op: Op,
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        key: u64,
    },
    /// Feed data to the operation of kind `op`; the answer is
    /// [`Response::Data`] with whatever output is ready.
    CryptoUpdate {
        op: Op,
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
    },
    /// Feed the last data and finish; for `Verify`, `signature` is checked
    /// ([`Response::Ok`] or `Error(CKR_SIGNATURE_INVALID)`), otherwise the
    /// answer is [`Response::Data`]. The operation ends either way.
    CryptoFinal {
        op: Op,
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        signature: &'a [u8],
    },
    /// Init + final in one exchange: a single-part operation in one round trip.
    CryptoOneShot {
        op: Op,
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        key: u64,
        #[serde(borrow, with = "serde_bytes")]
        data: &'a [u8],
        #[serde(borrow, with = "serde_bytes")]
        signature: &'a [u8],
    },
    /// Abandon the operation of kind `op`, if any.
    CryptoCancel {
        op: Op,
    },
    GenerateRandom {
        len: u32,
    },
    SeedRandom {
        #[serde(borrow, with = "serde_bytes")]
        seed: &'a [u8],
    },
    WrapKey {
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        wrapping_key: u64,
        key: u64,
    },
    UnwrapKey {
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        unwrapping_key: u64,
        #[serde(borrow, with = "serde_bytes")]
        wrapped: &'a [u8],
        #[serde(borrow)]
        template: Template<'a>,
    },
    DeriveKey {
        #[serde(borrow)]
        mechanism: Mechanism<'a>,
        base_key: u64,
        #[serde(borrow)]
        template: Template<'a>,
    },
    /// For `C_DigestKey`: the value of an *exportable* secret key, answered
    /// as [`Response::Data`] for the module to mix into its running hash; any
    /// other key is `CKR_KEY_INDIGESTIBLE` and its value never leaves the HSM.
    DigestKey {
        mechanism: u64,
        key: u64,
    },
    /// Liveness check; answered with [`Response::Ok`].
    Ping,
}

/// The answer for one requested attribute.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue<'a> {
    /// The canonical value.
    Value(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    /// `CKR_ATTRIBUTE_SENSITIVE` for this one.
    Sensitive,
    /// `CKR_ATTRIBUTE_TYPE_INVALID` for this one.
    Invalid,
}

impl fmt::Debug for AttrValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Value(v) => write!(f, "Value({} bytes)", v.len()),
            AttrValue::Sensitive => f.write_str("Sensitive"),
            AttrValue::Invalid => f.write_str("Invalid"),
        }
    }
}

/// What the module needs to know of a key to check an operation and size its
/// output without asking again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub class: u64,
    pub key_type: u64,
    /// Modulus bits (RSA), field bits (EC), value bits (secret keys).
    pub bits: u32,
}

/// A reply from the HSM.
// Messages live briefly on the stack and cannot be boxed without `alloc`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    Hello {
        version: u16,
        max_frame: u32,
        #[serde(borrow)]
        server: &'a str,
    },
    Ok,
    /// The request failed with this `CKR_*`.
    Error(Rv),
    Object(u64),
    KeyPair {
        public: u64,
        private: u64,
    },
    #[serde(borrow)]
    Attributes(heapless::Vec<AttrValue<'a>, MAX_ATTRS>),
    Size(u64),
    Objects {
        handles: heapless::Vec<u64, MAX_FIND>,
        more: bool,
    },
    KeyInfo(KeyInfo),
    Data(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
}

impl fmt::Debug for Response<'_> {
    /// Data and values are not printed: they may be secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Hello {
                version,
                max_frame,
                server,
            } => write!(f, "Hello(v{version}, {max_frame}, {server})"),
            Response::Ok => f.write_str("Ok"),
            Response::Error(rv) => write!(f, "Error({rv:#x})"),
            Response::Object(h) => write!(f, "Object({h})"),
            Response::KeyPair { public, private } => write!(f, "KeyPair({public}, {private})"),
            Response::Attributes(a) => write!(f, "Attributes({a:?})"),
            Response::Size(s) => write!(f, "Size({s})"),
            Response::Objects { handles, more } => write!(f, "Objects({handles:?}, more={more})"),
            Response::KeyInfo(k) => write!(f, "{k:?}"),
            Response::Data(d) => write!(f, "Data({} bytes)", d.len()),
        }
    }
}

/// Errors of framing and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The output buffer cannot hold the message.
    TooLarge,
    /// The bytes are not a valid message.
    Malformed,
    /// The frame header announces more than the allowed size.
    FrameTooLong,
}

impl WireError {
    /// The `CKR_*` a PKCS#11 caller sees for this error.
    pub const fn rv(self) -> Rv {
        match self {
            WireError::TooLarge => crate::ck::ckr::DATA_LEN_RANGE,
            WireError::Malformed | WireError::FrameTooLong => crate::ck::ckr::DEVICE_ERROR,
        }
    }
}

/// Encode `msg` as a complete frame (header + body) into `buf`; returns the
/// frame's length. `buf` is left with unspecified content on error.
pub fn encode_frame<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::TooLarge);
    }
    let (head, body) = buf.split_at_mut(HEADER_LEN);
    let used = postcard::to_slice(msg, body)
        .map_err(|_| WireError::TooLarge)?
        .len();
    let len = u32::try_from(used).map_err(|_| WireError::TooLarge)?;
    head.copy_from_slice(&len.to_le_bytes());
    Ok(HEADER_LEN + used)
}

/// The body length announced by a frame header, checked against `max`.
pub fn frame_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        Err(WireError::FrameTooLong)
    } else {
        Ok(len)
    }
}

/// Decode one message from a frame *body* (without header). Trailing bytes
/// are an error: a frame holds exactly one message.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|_| WireError::Malformed)?;
    if rest.is_empty() {
        Ok(msg)
    } else {
        Err(WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_req(r: &Request<'_>) {
        let mut buf = [0u8; 4096];
        let n = encode_frame(r, &mut buf).unwrap();
        let len = frame_len(buf[..4].try_into().unwrap(), 4096).unwrap();
        assert_eq!(len + HEADER_LEN, n);
        let back: Request<'_> = decode(&buf[HEADER_LEN..n]).unwrap();
        assert_eq!(&back, r);
    }

    /// The bytes on the wire, written out by hand from docs/wire-protocol.md:
    /// modules and servers of different builds must keep agreeing on them.
    #[test]
    fn byte_strings_are_a_length_then_the_bytes() {
        let mut buf = [0u8; 64];
        let n = encode_frame(
            &Request::CryptoOneShot {
                op: Op::Sign,
                mechanism: Mechanism::plain(crate::ck::ckm::ECDSA),
                key: 5,
                data: &[0xaa, 0xbb],
                signature: &[],
            },
            &mut buf,
        )
        .unwrap();
        // Index 16, op 2, 0x1041 as a varint, MechParam::None, key 5,
        // data (length 2), signature (length 0).
        let body = [0x10, 0x02, 0xc1, 0x20, 0x00, 0x05, 0x02, 0xaa, 0xbb, 0x00];
        assert_eq!(&buf[..HEADER_LEN], &(body.len() as u32).to_le_bytes());
        assert_eq!(&buf[HEADER_LEN..n], &body);
        let n = encode_frame(&Response::Data(&[1, 2, 3]), &mut buf).unwrap();
        assert_eq!(&buf[HEADER_LEN..n], &[0x09, 0x03, 1, 2, 3]);
    }

    #[test]
    fn requests_roundtrip() {
        let mut t = Template::new();
        t.push(Attribute {
            ty: crate::ck::cka::LABEL,
            value: b"k",
        })
        .unwrap();
        roundtrip_req(&Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 65536,
            app: [7; 16],
        });
        roundtrip_req(&Request::Login {
            user: "alice",
            password: Secret(b"pw"),
        });
        roundtrip_req(&Request::CreateObject {
            template: t.clone(),
        });
        roundtrip_req(&Request::CryptoOneShot {
            op: Op::Sign,
            mechanism: Mechanism {
                ty: crate::ck::ckm::RSA_PKCS_PSS,
                param: MechParam::Pss {
                    hash: 1,
                    mgf: 2,
                    salt_len: 32,
                },
            },
            key: 5,
            data: &[1, 2, 3],
            signature: &[],
        });
    }

    #[test]
    fn trailing_bytes_and_garbage_are_rejected() {
        let mut buf = [0u8; 64];
        let n = encode_frame(&Request::Ping, &mut buf).unwrap();
        assert!(decode::<Request<'_>>(&buf[HEADER_LEN..n]).is_ok());
        assert_eq!(
            decode::<Request<'_>>(&buf[HEADER_LEN..n + 1]),
            Err(WireError::Malformed)
        );
        assert_eq!(decode::<Request<'_>>(&[0xff; 8]), Err(WireError::Malformed));
        assert_eq!(
            frame_len([0xff, 0xff, 0xff, 0x7f], 4096),
            Err(WireError::FrameTooLong)
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        extern crate std;
        let r = Request::Login {
            user: "u",
            password: Secret(b"hunter2"),
        };
        let s = format!("{r:?}");
        assert!(!s.contains("hunter2"));
        let a = Attribute {
            ty: 0x11,
            value: b"topsecret",
        };
        assert!(!format!("{a:?}").contains("topsecret"));
    }
}
