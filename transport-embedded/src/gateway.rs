//! What gateway firmware calls: open a session, log in, find a key, sign.
//!
//! ```text
//! static RESOURCES: Resources<TcpLink<'static, Uart, Polls>, 1, 2048> = Resources::new();
//!
//! let gateway = Gateway::new(&RESOURCES, connector, &Config::new("gateway", app_id))?;
//! let session = gateway.open_session()?;
//! session.login(password)?;
//! let key = session.find_key(cko::PRIVATE_KEY, b"gateway-p256")?.ok_or(...)?;
//! let mut signature = [0u8; 64];
//! let n = session.sign(&Mechanism::plain(ckm::ECDSA_SHA256), key, message, &mut signature)?;
//! ```
//!
//! Memory is the caller's: [`Resources`] holds `SESSIONS` session slots with
//! two frame buffers of `BUF` bytes each, and every output goes to a slice
//! the caller hands in. Every failure is a PKCS#11 `CKR_*` value.
//!
//! Idempotent calls ([`Session::find_key`], [`Session::sign`],
//! [`Session::attribute`]) are tried again, up to [`Config::reconnects`]
//! times, when they failed with `CKR_DEVICE_ERROR` (the link broke): the
//! retry connects a new link and logs in again with the kept credential.
//! Key generation is not retried (a lost answer could mean a key was made).
//!
//! The full PKCS#11 surface stays reachable through [`Gateway::token`].

use hsmlink_core::attr::{bool_byte, ulong};
use hsmlink_core::ck::{cka, ckm, cko, ckr, cku, Rv};
use hsmlink_core::link::Connector;
use hsmlink_core::token::{Len, LoginConfig, SessionSlot, Token};
use hsmlink_core::wire::{AttrValue, Attribute, Mechanism, Op};

use crate::Lock;

/// Storage for `SESSIONS` sessions whose links are of type `L`, each with a
/// request and a reply buffer of `BUF` bytes (at least
/// [`hsmlink_core::wire::MIN_FRAME`] + 4; 2048 suits a gateway that signs).
pub struct Resources<L, const SESSIONS: usize, const BUF: usize> {
    slots: [SessionSlot<L, Lock, BUF>; SESSIONS],
}

impl<L, const SESSIONS: usize, const BUF: usize> Resources<L, SESSIONS, BUF> {
    /// Empty slots; `const` so that they can be placed in a `static`.
    pub const fn new() -> Self {
        Resources {
            slots: [const { SessionSlot::new() }; SESSIONS],
        }
    }

    /// The slots, for a [`Token`] built by hand.
    pub fn slots(&self) -> &[SessionSlot<L, Lock, BUF>] {
        &self.slots
    }
}

impl<L, const SESSIONS: usize, const BUF: usize> Default for Resources<L, SESSIONS, BUF> {
    fn default() -> Self {
        Self::new()
    }
}

/// Who the gateway is to the HSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config<'c> {
    /// The HSM user; its password is the PIN given to [`Session::login`].
    pub user: &'c str,
    /// Identifies this application instance to the HSM: the session objects
    /// of one `app` are shared by its sessions. Make it unique per boot
    /// (a device id and a boot counter, or random bytes).
    pub app: [u8; 16],
    /// How many times an idempotent call reconnects and tries again after
    /// its link broke.
    pub reconnects: u8,
}

impl<'c> Config<'c> {
    /// `user` and `app`, with one reconnection per call.
    pub const fn new(user: &'c str, app: [u8; 16]) -> Self {
        Config {
            user,
            app,
            reconnects: 1,
        }
    }
}

/// The elliptic curves of `CKM_EC_KEY_PAIR_GEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// DER `CKA_EC_PARAMS` (the curve's namedCurve OID).
    pub const fn params(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }

    /// Bytes of an ECDSA signature (`r || s`) on this curve.
    pub const fn signature_len(self) -> usize {
        match self {
            Curve::P256 => 64,
            Curve::P384 => 96,
            Curve::P521 => 132,
        }
    }
}

/// The two halves of a generated key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeyPair {
    pub public: u64,
    pub private: u64,
}

/// Longest signature of any mechanism (RSA-4096).
const MAX_SIGNATURE: usize = 512;

/// A token for firmware: the core's [`Token`] over links made by `C`, with
/// sessions in caller-declared [`Resources`].
pub struct Gateway<'r, C: Connector, const BUF: usize> {
    token: Token<'r, C, Lock, BUF>,
    reconnects: u8,
}

impl<'r, C: Connector, const BUF: usize> Gateway<'r, C, BUF> {
    /// A gateway whose sessions live in `resources` and connect through
    /// `connector`. No network use until the first login. Fails with
    /// `CKR_ARGUMENTS_BAD` if the user name is too long.
    pub fn new<const SESSIONS: usize>(
        resources: &'r Resources<C::Link, SESSIONS, BUF>,
        connector: C,
        config: &Config<'_>,
    ) -> Result<Self, Rv> {
        let login = LoginConfig {
            user: Some(config.user),
            special_pin: false,
        };
        let token = Token::new(connector, config.app, resources.slots(), login)?;
        Ok(Gateway {
            token,
            reconnects: config.reconnects,
        })
    }

    /// The whole PKCS#11 token, for what this API does not cover.
    pub fn token(&self) -> &Token<'r, C, Lock, BUF> {
        &self.token
    }

    /// Open a session (no round trip); it closes when dropped.
    /// `CKR_SESSION_COUNT` when every slot is in use.
    pub fn open_session(&self) -> Result<Session<'_, 'r, C, BUF>, Rv> {
        let handle = self.token.open_session(true)?;
        Ok(Session {
            gateway: self,
            handle,
        })
    }

    /// Whether the gateway is logged in.
    pub fn logged_in(&self) -> bool {
        self.token.logged_in()
    }

    /// Run `f`, and again after a reconnection while it fails with
    /// `CKR_DEVICE_ERROR`, up to `reconnects` more times.
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T, Rv>) -> Result<T, Rv> {
        let mut left = self.reconnects;
        loop {
            match f() {
                Err(ckr::DEVICE_ERROR) if left > 0 => {
                    left -= 1;
                    debug!("link lost; reconnecting");
                }
                result => return result,
            }
        }
    }
}

/// An open session; closed (with its session objects) when dropped.
pub struct Session<'g, 'r, C: Connector, const BUF: usize> {
    gateway: &'g Gateway<'r, C, BUF>,
    handle: u64,
}

impl<C: Connector, const BUF: usize> Session<'_, '_, C, BUF> {
    /// The PKCS#11 session handle, for calls through [`Gateway::token`].
    pub fn handle(&self) -> u64 {
        self.handle
    }

    fn token(&self) -> &Token<'_, C, Lock, BUF> {
        &self.gateway.token
    }

    /// Log the gateway in (every session) with `password`, connecting this
    /// session. Logging in again while logged in is not an error. The
    /// password is kept, zeroized on logout, for reconnections.
    pub fn login(&self, password: &[u8]) -> Result<(), Rv> {
        match self.token().login(self.handle, cku::USER, password) {
            Ok(()) | Err(ckr::USER_ALREADY_LOGGED_IN) => Ok(()),
            Err(rv) => Err(rv),
        }
    }

    /// Log out: every session's connection closes, and the password is
    /// forgotten.
    pub fn logout(&self) -> Result<(), Rv> {
        self.token().logout(self.handle)
    }

    /// The first object of class `class` (`CKO_PRIVATE_KEY`, ...) labelled
    /// `label`, if any. One round trip.
    pub fn find_key(&self, class: u64, label: &[u8]) -> Result<Option<u64>, Rv> {
        let class = ulong(class);
        let template = [
            Attribute {
                ty: cka::CLASS,
                value: &class,
            },
            Attribute {
                ty: cka::LABEL,
                value: label,
            },
        ];
        self.gateway.retrying(|| {
            let token = self.token();
            token.find_init(self.handle, &template)?;
            let mut found = [0u64; 1];
            let n = token.find(self.handle, &mut found);
            let end = token.find_final(self.handle);
            let n = n?;
            end?;
            Ok(found.get(..n).and_then(|f| f.first()).copied())
        })
    }

    /// Generate an EC key pair on `curve`, both halves labelled `label`; a
    /// `persistent` pair is a token object (it outlives the session), the
    /// private half is sensitive and not extractable. Not retried.
    pub fn generate_ec_key_pair(
        &self,
        curve: Curve,
        label: &[u8],
        persistent: bool,
    ) -> Result<KeyPair, Rv> {
        let yes = bool_byte(true);
        let no = bool_byte(false);
        let token = bool_byte(persistent);
        let public = [
            Attribute {
                ty: cka::TOKEN,
                value: &token,
            },
            Attribute {
                ty: cka::LABEL,
                value: label,
            },
            Attribute {
                ty: cka::EC_PARAMS,
                value: curve.params(),
            },
            Attribute {
                ty: cka::VERIFY,
                value: &yes,
            },
        ];
        let private = [
            Attribute {
                ty: cka::TOKEN,
                value: &token,
            },
            Attribute {
                ty: cka::LABEL,
                value: label,
            },
            Attribute {
                ty: cka::SIGN,
                value: &yes,
            },
            Attribute {
                ty: cka::SENSITIVE,
                value: &yes,
            },
            Attribute {
                ty: cka::EXTRACTABLE,
                value: &no,
            },
        ];
        let (public, private) = self.token().generate_key_pair(
            self.handle,
            &Mechanism::plain(ckm::EC_KEY_PAIR_GEN),
            &public,
            &private,
        )?;
        Ok(KeyPair { public, private })
    }

    /// Sign `data` with `key`; the signature goes to `signature` and its
    /// length is returned. Hash-then-sign mechanisms (`CKM_ECDSA_SHA256`,
    /// `CKM_SHA256_RSA_PKCS`, ...) hash here, so only the digest travels.
    /// One round trip once the core knows the key (init and data travel
    /// together), two the first time. A `signature` too short gets
    /// `CKR_BUFFER_TOO_SMALL`, and no operation is left active.
    pub fn sign(
        &self,
        mechanism: &Mechanism<'_>,
        key: u64,
        data: &[u8],
        signature: &mut [u8],
    ) -> Result<usize, Rv> {
        self.gateway.retrying(|| {
            let token = self.token();
            token.crypto_init(self.handle, Op::Sign, mechanism, key)?;
            match token.crypto(self.handle, Op::Sign, data, Some(&mut *signature))? {
                Len::Written(n) => Ok(n),
                Len::Needed(_) => {
                    self.abandon_sign(data);
                    Err(ckr::BUFFER_TOO_SMALL)
                }
            }
        })
    }

    /// End a sign operation left active by a too-short buffer (PKCS#11 v2.40
    /// has no cancel: the signature is made and thrown away).
    #[cold]
    #[inline(never)]
    fn abandon_sign(&self, data: &[u8]) {
        let mut scratch = [0u8; MAX_SIGNATURE];
        // Success or failure, the operation is over.
        let _ = self
            .token()
            .crypto(self.handle, Op::Sign, data, Some(&mut scratch));
    }

    /// The value of attribute `ty` of `object`, written to `out`; returns
    /// its length. `CKR_BUFFER_TOO_SMALL` if it does not fit,
    /// `CKR_ATTRIBUTE_SENSITIVE` / `CKR_ATTRIBUTE_TYPE_INVALID` as the
    /// HSM says.
    pub fn attribute(&self, object: u64, ty: u64, out: &mut [u8]) -> Result<usize, Rv> {
        self.gateway.retrying(|| {
            let mut result = Err(ckr::GENERAL_ERROR);
            self.token()
                .get_attributes(self.handle, object, &[ty], |_, value| {
                    result = match value {
                        AttrValue::Value(v) => match out.get_mut(..v.len()) {
                            Some(dst) => {
                                dst.copy_from_slice(v);
                                Ok(v.len())
                            }
                            None => Err(ckr::BUFFER_TOO_SMALL),
                        },
                        AttrValue::Sensitive => Err(ckr::ATTRIBUTE_SENSITIVE),
                        AttrValue::Invalid => Err(ckr::ATTRIBUTE_TYPE_INVALID),
                    };
                })?;
            result
        })
    }

    /// The DER `CKA_EC_POINT` (an OCTET STRING holding the uncompressed
    /// point) of an EC public key.
    pub fn ec_point(&self, public_key: u64, out: &mut [u8]) -> Result<usize, Rv> {
        self.attribute(public_key, cka::EC_POINT, out)
    }

    /// The private key labelled `label`, generated (persistent, on `curve`)
    /// if there is none yet.
    pub fn find_or_generate_ec_key(&self, curve: Curve, label: &[u8]) -> Result<u64, Rv> {
        match self.find_key(cko::PRIVATE_KEY, label)? {
            Some(key) => Ok(key),
            None => self
                .generate_ec_key_pair(curve, label, true)
                .map(|pair| pair.private),
        }
    }
}

impl<C: Connector, const BUF: usize> Drop for Session<'_, '_, C, BUF> {
    fn drop(&mut self) {
        let _ = self.gateway.token.close_session(self.handle);
    }
}
