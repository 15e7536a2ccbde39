//! The token as an application sees it: sessions, login, operations.
//!
//! [`Token`] is the one object the C ABI (or firmware) talks to. It is
//! `Sync`: every method takes `&self`, calls on one session are serialized by
//! that session's lock, and different sessions run in parallel. The lock type
//! is chosen by the caller (`R`: a blocking OS mutex on hosts, a spin or
//! critical-section mutex on firmware).
//!
//! Storage is the caller's: the session slots (each with its request and
//! reply buffers of `BUF` bytes) are handed in as a slice, so the number of
//! sessions and the frame size are the caller's decision.
//!
//! Network use, per call:
//! - `open_session`, `close_session`, session info, digests and every length
//!   query cost no round trip (a session connects on first need).
//! - `login` connects the session (if needed) and authenticates it; other
//!   sessions authenticate lazily, on their next call, with the credential
//!   kept (zeroized on logout and drop).
//! - object functions and `*Init` cost one round trip; single-part `C_Sign`,
//!   `C_Encrypt`, ... one more (the data goes with the final message); data
//!   larger than [`MAX_CHUNK`] is streamed in chunks.
//!
//! Lock order: a session slot's lock, then the shared state's lock; never the
//! other way round. No lock shared between sessions is held across network
//! I/O: the shared state's lock only while the credential is copied, a
//! slot's lock only by calls on that session (and by `C_CloseAllSessions`,
//! `C_Logout` and `C_Finalize`, which wait for each session's call in
//! progress).

use core::sync::atomic::{AtomicU32, Ordering};

use lock_api::{Mutex, RawMutex};

use crate::ck::{ckr, cks, cku, Rv};
use crate::link::{Connector, Link};
use crate::mech::{self, Hash, Hasher, SignPlan, MAX_DIGEST, MAX_DIGEST_INFO};
use crate::wire::{
    self, AttrValue, Attribute, KeyInfo, MechParam, Mechanism, Op, Request, Response, Secret,
    Template, MAX_ATTRS, MAX_CHUNK, MAX_FIND, PROTOCOL_VERSION,
};

/// Longest user name kept for login.
pub const MAX_USER: usize = 64;
/// Longest password kept for login.
pub const MAX_PASSWORD: usize = 128;
/// Longest host override from a special PIN (`user:password@host`).
pub const MAX_HOST: usize = 64;
/// Longest PIN `C_Login` takes: a special PIN `user:password@host` at its
/// longest; a longer one is `CKR_PIN_LEN_RANGE`, unread.
pub const MAX_PIN: usize = MAX_USER + 1 + MAX_PASSWORD + 1 + MAX_HOST;
/// Bytes kept per session for the encoded mechanism of an operation that
/// starts in the same exchange as its data; larger parameters (a long GCM
/// AAD) make the operation start with its own exchange instead.
pub const MECH_BUF: usize = 512;
/// Updates in flight at once when large data is streamed.
const PIPELINE: usize = 4;
/// Connection attempts when an HSM accepts but does not answer `Hello`.
const CONNECT_TRIES: u32 = 2;
/// The smallest frame buffer (`BUF`) a [`SessionSlot`] accepts: one frame
/// of [`wire::MIN_FRAME`] bytes (the least a peer may announce in `Hello`)
/// and its header. Below it the `Hello` would announce a frame the HSM
/// refuses, and data pieces ([`Token::CHUNK`]) would shrink to nothing.
/// Checked at compile time: a smaller `BUF` does not build.
///
/// ```compile_fail
/// # use hsmlink_core::{link::{Link, LinkError}, token::SessionSlot};
/// # struct L;
/// # impl Link for L {
/// #     fn exchange(&mut self, _: &[u8], _: &mut [u8]) -> Result<usize, LinkError> { Ok(0) }
/// # }
/// static SLOT: SessionSlot<L, spin::Mutex<()>, 64> = SessionSlot::new();
/// ```
///
/// ```
/// # use hsmlink_core::{link::{Link, LinkError}, token::{SessionSlot, MIN_BUF}};
/// # struct L;
/// # impl Link for L {
/// #     fn exchange(&mut self, _: &[u8], _: &mut [u8]) -> Result<usize, LinkError> { Ok(0) }
/// # }
/// static SLOT: SessionSlot<L, spin::Mutex<()>, MIN_BUF> = SessionSlot::new();
/// ```
pub const MIN_BUF: usize = wire::MIN_FRAME + wire::HEADER_LEN;
/// Keys whose checks the module remembers (per key and operation), so that
/// `C_SignInit` and the like need no exchange after the first use.
pub const KEY_CACHE: usize = 64;

/// How many bytes of output a call produced, or needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    /// The output was written to the caller's buffer; this many bytes.
    Written(usize),
    /// No buffer was given (length query) or it was too small: this many
    /// bytes are needed. The operation stays active. The C ABI turns this into
    /// `CKR_OK` for a null buffer and `CKR_BUFFER_TOO_SMALL` otherwise.
    Needed(usize),
}

/// What `C_GetSessionInfo` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub state: u64,
    pub flags: u64,
}

/// Where the credential and target of a login come from.
#[derive(Clone, Copy, Debug)]
pub struct LoginConfig<'c> {
    /// The configured HSM user (`HSMLINK_USER`), if any.
    pub user: Option<&'c str>,
    /// With the special-PIN option, the PIN is `user:password@host[:port]`.
    pub special_pin: bool,
}

/// A credential kept for lazy re-login; zeroized when dropped.
struct Credential {
    user: heapless::String<MAX_USER>,
    password: [u8; MAX_PASSWORD],
    password_len: usize,
    host: heapless::String<MAX_HOST>,
}

impl Credential {
    fn password(&self) -> &[u8] {
        self.password.get(..self.password_len).unwrap_or(&[])
    }

    /// A copy, to use without holding the lock the original is kept under
    /// (zeroized when dropped, like the original).
    fn copy(&self) -> Credential {
        Credential {
            user: self.user.clone(),
            password: self.password,
            password_len: self.password_len,
            host: self.host.clone(),
        }
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        self.password_len = 0;
    }
}

/// State shared by all sessions.
struct Shared {
    next_session: u32,
    /// Bumped by every login and logout; a session whose link was
    /// authenticated under another generation authenticates again.
    generation: u32,
    login: Option<(Credential, u64)>,
}

/// The operation active in a session.
// Lives inside the session slot; without `alloc` there is nothing to box into.
#[allow(clippy::large_enum_variant)]
enum Active {
    None,
    Find {
        batch: heapless::Vec<u64, MAX_FIND>,
        pos: usize,
        more: bool,
    },
    Digest(Hasher),
    Crypto(CryptoOp),
}

struct CryptoOp {
    op: Op,
    /// The mechanism the application asked for.
    mechanism: u64,
    /// The key's handle and what the HSM said of it.
    handle: u64,
    key: KeyInfo,
    /// The HSM holds this operation (`CryptoInit` was sent). When false, the
    /// operation was checked locally from the key cache, and the mechanism
    /// sent to the HSM waits in the slot's `mech` buffer: the operation goes
    /// out with its data in one `CryptoOneShot`, or as `CryptoInit` before
    /// the first update.
    remote: bool,
    /// Hash-then-sign: the local hash, and whether its digest is sent as a
    /// PKCS#1 `DigestInfo`.
    prehash: Option<(Hasher, bool)>,
    /// Multi-part (`*Update`) calls were made.
    multipart: bool,
    /// Output already computed by the HSM but not yet taken by the
    /// application (it asked with a buffer too small): the slot's
    /// `pending[..len]`, apart from the reply buffer, so that other calls on
    /// the session (`C_GetAttributeValue`, `C_GenerateRandom`, ...) cannot
    /// change it before it is taken.
    pending: Option<Pending>,
}

/// One open session.
struct Session {
    rw: bool,
    active: Active,
}

struct SlotInner<L, const BUF: usize> {
    session: Option<Session>,
    link: Option<L>,
    /// The login generation `link` is authenticated under (0: none).
    link_generation: u32,
    /// Length of the last reply body in `rx`.
    reply_len: usize,
    /// The link has answered a request after its login.
    link_used: bool,
    /// Why the last link was dropped.
    last_error: Option<crate::link::LinkError>,
    /// Hash of the identity the HSM gave in `Hello`: handles are facts
    /// about one HSM's objects, so the key cache is kept per identity.
    peer: u32,
    /// The identity this session's handles belong to (0: not yet known).
    /// A reconnection that reaches another identity (another HSM with its
    /// own objects, or one that lost them) would give the application's
    /// handles another meaning: the session is closed instead.
    pinned: u32,
    /// The encoded mechanism of a locally initialized operation.
    mech: [u8; MECH_BUF],
    mech_len: usize,
    tx: [u8; BUF],
    rx: [u8; BUF],
    /// Output of the active operation not yet taken by the application
    /// (see [`CryptoOp::pending`]); zeroized once taken or abandoned.
    pending: [u8; BUF],
}

/// Storage for one session: its state, its connection and its three
/// buffers of `BUF` bytes each (request, reply, and output kept for the
/// application after `CKR_BUFFER_TOO_SMALL`). `BUF` bounds every message (at
/// least [`MIN_BUF`], checked at compile time; 16 KiB carries every request of a
/// PKCS#11 application; data is streamed in pieces of [`MAX_CHUNK`] or
/// what the buffer holds; firmware that only signs can use 2 KiB).
pub struct SessionSlot<L, R: RawMutex, const BUF: usize> {
    /// The session handle living in this slot (0: free). Written under the
    /// slot lock and the shared lock, read without either for lookup.
    handle: AtomicU32,
    /// Whether the session in this slot is read/write (1) or not (0),
    /// readable without the slot lock (which a session busy with the HSM
    /// holds), for `C_GetTokenInfo`.
    rw: AtomicU32,
    inner: Mutex<R, SlotInner<L, BUF>>,
}

impl<L, R: RawMutex, const BUF: usize> SessionSlot<L, R, BUF> {
    /// `BUF` is at least [`MIN_BUF`] (evaluated, so checked, wherever a
    /// slot is made).
    const BUF_IS_BIG_ENOUGH: () = assert!(
        BUF >= MIN_BUF,
        "SessionSlot: BUF must be at least MIN_BUF (wire::MIN_FRAME + wire::HEADER_LEN)"
    );

    /// An empty slot; `const` so firmware can place slots in a `static`.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::BUF_IS_BIG_ENOUGH;
        SessionSlot {
            handle: AtomicU32::new(0),
            rw: AtomicU32::new(0),
            inner: Mutex::const_new(
                R::INIT,
                SlotInner {
                    session: None,
                    link: None,
                    link_generation: 0,
                    reply_len: 0,
                    link_used: false,
                    last_error: None,
                    peer: 0,
                    pinned: 0,
                    mech: [0; MECH_BUF],
                    mech_len: 0,
                    tx: [0; BUF],
                    rx: [0; BUF],
                    pending: [0; BUF],
                },
            ),
        }
    }
}

impl<L, R: RawMutex, const BUF: usize> Default for SessionSlot<L, R, BUF> {
    fn default() -> Self {
        Self::new()
    }
}

/// The token: sessions over links made by `C`, locks of type `R`.
pub struct Token<'s, C: Connector, R: RawMutex, const BUF: usize> {
    connector: C,
    app: [u8; 16],
    slots: &'s [SessionSlot<C::Link, R, BUF>],
    shared: Mutex<R, Shared>,
    keys: Mutex<R, KeyCache>,
    login_config: LoginSettings,
}

/// What the HSM said of keys already used: (handle, operation, key info).
/// Handles are never reused by the HSM, so an entry can only go stale by the
/// key being destroyed or changed, which the HSM then reports at the first
/// exchange of the operation.
struct KeyCache {
    /// (server identity, handle, operation, what the server said).
    entries: heapless::Deque<(u32, u64, Op, KeyInfo), KEY_CACHE>,
}

impl KeyCache {
    fn get(&self, peer: u32, handle: u64, op: Op) -> Option<KeyInfo> {
        self.entries
            .iter()
            .find(|(p, h, o, _)| *p == peer && *h == handle && *o == op)
            .map(|(_, _, _, k)| *k)
    }

    fn put(&mut self, peer: u32, handle: u64, op: Op, key: KeyInfo) {
        if self.get(peer, handle, op).is_some() {
            return;
        }
        if self.entries.is_full() {
            self.entries.pop_front();
        }
        let _ = self.entries.push_back((peer, handle, op, key));
    }

    fn forget(&mut self, handle: u64) {
        let n = self.entries.len();
        for _ in 0..n {
            if let Some(e) = self.entries.pop_front() {
                if e.1 != handle {
                    let _ = self.entries.push_back(e);
                }
            }
        }
    }
}

/// Owned copy of [`LoginConfig`].
struct LoginSettings {
    user: Option<heapless::String<MAX_USER>>,
    special_pin: bool,
}

impl<'s, C: Connector, R: RawMutex, const BUF: usize> Token<'s, C, R, BUF> {
    /// Data bytes per message: [`MAX_CHUNK`], or less when the frame
    /// buffers are smaller (firmware), leaving room for the message around
    /// the data and for an output one block longer than its input.
    pub const CHUNK: usize = {
        assert!(BUF >= MIN_BUF, "Token: BUF must be at least MIN_BUF");
        let room = BUF.saturating_sub(wire::HEADER_LEN + 64);
        if room < MAX_CHUNK {
            room
        } else {
            MAX_CHUNK
        }
    };

    /// A token over `slots` (one per possible session). `app` identifies this
    /// application instance to the HSM (random per `C_Initialize`): session
    /// objects are shared by its sessions only. Fails with
    /// `CKR_ARGUMENTS_BAD` when the configured user name is too long.
    pub fn new(
        connector: C,
        app: [u8; 16],
        slots: &'s [SessionSlot<C::Link, R, BUF>],
        login: LoginConfig<'_>,
    ) -> Result<Self, Rv> {
        let user = match login.user {
            Some(u) => Some(heapless::String::try_from(u).map_err(|_| ckr::ARGUMENTS_BAD)?),
            None => None,
        };
        for slot in slots {
            // Slots may be reused after a previous token (C_Finalize then
            // C_Initialize): start clean.
            let mut inner = slot.inner.lock();
            set_active(&mut inner, Active::None);
            inner.session = None;
            inner.link = None;
            inner.link_generation = 0;
            slot.handle.store(0, Ordering::Release);
        }
        Ok(Token {
            connector,
            app,
            slots,
            shared: Mutex::new(Shared {
                next_session: 1,
                generation: 1,
                login: None,
            }),
            keys: Mutex::new(KeyCache {
                entries: heapless::Deque::new(),
            }),
            login_config: LoginSettings {
                user,
                special_pin: login.special_pin,
            },
        })
    }

    /// Session handles start at `first` (at least 1) instead of 1: a
    /// library that makes tokens one after another over the same slots
    /// (`C_Finalize` then `C_Initialize`) starts each at the last one's
    /// [`Token::next_session`], so that a handle from before never names a
    /// session of the new token.
    pub fn with_first_session(self, first: u32) -> Self {
        self.shared.lock().next_session = first.max(1);
        self
    }

    /// The handle the next `C_OpenSession` would get.
    pub fn next_session(&self) -> u32 {
        self.shared.lock().next_session
    }

    /// The connector, e.g. to read its statistics.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// Most sessions that can be open at once.
    pub fn max_sessions(&self) -> usize {
        self.slots.len()
    }

    /// Open sessions, and how many of them are read/write.
    pub fn session_count(&self) -> (usize, usize) {
        let mut total = 0;
        let mut rw = 0;
        for slot in self.slots {
            if slot.handle.load(Ordering::Acquire) != 0 {
                total += 1;
                rw += slot.rw.load(Ordering::Acquire) as usize;
            }
        }
        (total, rw)
    }

    /// Whether the application is logged in.
    pub fn logged_in(&self) -> bool {
        self.shared.lock().login.is_some()
    }

    // ----- sessions ---------------------------------------------------------

    /// `C_OpenSession`: no round trip; the session connects on first need.
    pub fn open_session(&self, rw: bool) -> Result<u64, Rv> {
        let mut shared = self.shared.lock();
        let slot = self
            .slots
            .iter()
            .find(|s| s.handle.load(Ordering::Acquire) == 0)
            .ok_or(ckr::SESSION_COUNT)?;
        let handle = shared.next_session;
        shared.next_session = handle.checked_add(1).ok_or(ckr::SESSION_COUNT)?;
        let mut inner = slot.inner.lock();
        inner.session = Some(Session {
            rw,
            active: Active::None,
        });
        inner.link = None;
        inner.link_generation = 0;
        inner.pinned = 0;
        slot.rw.store(u32::from(rw), Ordering::Release);
        slot.handle.store(handle, Ordering::Release);
        Ok(u64::from(handle))
    }

    /// `C_CloseSession`: drops the session's connection, and with it the
    /// session objects it created. Closing the last session logs the
    /// application out (v2.40 §5.6).
    pub fn close_session(&self, session: u64) -> Result<(), Rv> {
        let slot = self.slot(session)?;
        {
            let mut inner = slot.inner.lock();
            if slot.handle.load(Ordering::Acquire) as u64 != session || inner.session.is_none() {
                return Err(ckr::SESSION_HANDLE_INVALID);
            }
            set_active(&mut inner, Active::None);
            inner.session = None;
            drop_link(&mut inner);
            slot.handle.store(0, Ordering::Release);
        }
        if self
            .slots
            .iter()
            .all(|s| s.handle.load(Ordering::Acquire) == 0)
        {
            self.forget_login();
        }
        Ok(())
    }

    /// `C_CloseAllSessions`: closes every session and logs out.
    pub fn close_all_sessions(&self) {
        for slot in self.slots {
            let mut inner = slot.inner.lock();
            set_active(&mut inner, Active::None);
            inner.session = None;
            if let Some(link) = inner.link.as_mut() {
                link.close();
            }
            drop_link(&mut inner);
            slot.handle.store(0, Ordering::Release);
        }
        self.forget_login();
    }

    /// Back to public sessions: the credential is zeroized and forgotten.
    fn forget_login(&self) {
        let mut shared = self.shared.lock();
        if shared.login.take().is_some() {
            shared.generation = shared.generation.wrapping_add(1).max(1);
        }
        drop(shared);
        self.keys.lock().entries.clear();
    }

    /// `C_GetSessionInfo` (state and flags; the slot is always 1).
    pub fn session_info(&self, session: u64) -> Result<SessionInfo, Rv> {
        let user_type = self.shared.lock().login.as_ref().map(|(_, t)| *t);
        self.with_session(session, |inner| {
            let rw = inner.session.as_ref().is_some_and(|s| s.rw);
            let state = match (user_type, rw) {
                (Some(cku::SO), true) => cks::RW_SO_FUNCTIONS,
                (Some(_), true) => cks::RW_USER_FUNCTIONS,
                (Some(_), false) => cks::RO_USER_FUNCTIONS,
                (None, true) => cks::RW_PUBLIC_SESSION,
                (None, false) => cks::RO_PUBLIC_SESSION,
            };
            let mut flags = crate::ck::ckf::SERIAL_SESSION;
            if rw {
                flags |= crate::ck::ckf::RW_SESSION;
            }
            Ok(SessionInfo { state, flags })
        })
    }

    // ----- login ------------------------------------------------------------

    /// `C_Login`. `CKU_SO` and `CKU_USER` both log in as the configured HSM
    /// user (the profile has one kind of user). The PIN is the password, or,
    /// with the special-PIN option, `user:password@host[:port]`.
    pub fn login(&self, session: u64, user_type: u64, pin: &[u8]) -> Result<(), Rv> {
        match user_type {
            cku::SO | cku::USER => {}
            cku::CONTEXT_SPECIFIC => return Err(ckr::OPERATION_NOT_INITIALIZED),
            _ => return Err(ckr::USER_TYPE_INVALID),
        }
        if let Some((_, t)) = self.shared.lock().login.as_ref() {
            return Err(if *t == user_type {
                ckr::USER_ALREADY_LOGGED_IN
            } else {
                ckr::USER_ANOTHER_ALREADY_LOGGED_IN
            });
        }
        let cred = self.credential(pin)?;
        let slot = self.slot(session)?;
        let mut guard = slot.inner.lock();
        let inner = &mut *guard;
        if slot.handle.load(Ordering::Acquire) as u64 != session || inner.session.is_none() {
            return Err(ckr::SESSION_HANDLE_INVALID);
        }
        // Authenticate this session's connection with the new credential.
        if inner.link.is_some() && inner.link_generation != 0 {
            // Authenticated under an older login (one the HSM voided): start
            // afresh; the operations it held on the HSM end with it.
            inner.link = None;
            if inner
                .session
                .as_ref()
                .is_some_and(|s| matches!(s.active, Active::Crypto(_) | Active::Find { .. }))
            {
                set_active(inner, Active::None);
            }
        }
        let reply = match self.send_login(inner, &cred) {
            Ok(reply) => reply,
            Err(rv) => {
                if rv == ckr::SESSION_CLOSED {
                    set_active(inner, Active::None);
                    inner.session = None;
                    drop_link(inner);
                    slot.handle.store(0, Ordering::Release);
                }
                return Err(rv);
            }
        };
        match reply {
            Ok(true) => {}
            Ok(false) => return Err(self.broken(inner)),
            Err(rv) => return Err(rv),
        }
        let mut shared = self.shared.lock();
        if shared.login.is_some() {
            // Another thread logged in meanwhile.
            return Err(ckr::USER_ALREADY_LOGGED_IN);
        }
        shared.generation = shared.generation.wrapping_add(1).max(1);
        inner.link_generation = shared.generation;
        shared.login = Some((cred, user_type));
        debug!("login ok");
        Ok(())
    }

    /// `C_Logout`: forget the credential and close every session's
    /// connection, which destroys the application's session objects (all
    /// objects are private in this profile, and v2.40 destroys private session
    /// objects at logout).
    pub fn logout(&self, session: u64) -> Result<(), Rv> {
        self.with_session(session, |_| Ok(()))?;
        {
            let mut shared = self.shared.lock();
            if shared.login.take().is_none() {
                return Err(ckr::USER_NOT_LOGGED_IN);
            }
            shared.generation = shared.generation.wrapping_add(1).max(1);
        }
        self.keys.lock().entries.clear();
        for slot in self.slots {
            let mut inner = slot.inner.lock();
            inner.link = None;
            inner.link_generation = 0;
            set_active(&mut inner, Active::None);
        }
        Ok(())
    }

    fn credential(&self, pin: &[u8]) -> Result<Credential, Rv> {
        if pin.len() > MAX_PIN {
            return Err(ckr::PIN_LEN_RANGE);
        }
        let mut cred = Credential {
            user: heapless::String::new(),
            password: [0; MAX_PASSWORD],
            password_len: 0,
            host: heapless::String::new(),
        };
        let password: &[u8] = if self.login_config.special_pin {
            // user:password@host — the password may itself contain ':' but
            // not '@' after the last '@' (the host never has one).
            let text = core::str::from_utf8(pin).map_err(|_| ckr::PIN_INCORRECT)?;
            let (user, rest) = text.split_once(':').ok_or(ckr::PIN_INCORRECT)?;
            let (password, host) = rest.rsplit_once('@').ok_or(ckr::PIN_INCORRECT)?;
            if user.is_empty() || host.is_empty() {
                return Err(ckr::PIN_INCORRECT);
            }
            cred.user.push_str(user).map_err(|_| ckr::PIN_LEN_RANGE)?;
            cred.host.push_str(host).map_err(|_| ckr::PIN_LEN_RANGE)?;
            password.as_bytes()
        } else {
            let user = self
                .login_config
                .user
                .as_ref()
                .ok_or(ckr::USER_PIN_NOT_INITIALIZED)?;
            cred.user.push_str(user).map_err(|_| ckr::PIN_LEN_RANGE)?;
            pin
        };
        let dst = cred
            .password
            .get_mut(..password.len())
            .ok_or(ckr::PIN_LEN_RANGE)?;
        dst.copy_from_slice(password);
        cred.password_len = password.len();
        Ok(cred)
    }

    // ----- objects ----------------------------------------------------------

    /// `C_CreateObject`.
    pub fn create_object(&self, session: u64, template: &[Attribute<'_>]) -> Result<u64, Rv> {
        let template = to_template(template)?;
        self.object_call(session, &Request::CreateObject { template })
    }

    /// `C_CopyObject`.
    pub fn copy_object(
        &self,
        session: u64,
        object: u64,
        template: &[Attribute<'_>],
    ) -> Result<u64, Rv> {
        let template = to_template(template)?;
        self.object_call(session, &Request::CopyObject { object, template })
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(&self, session: u64, object: u64) -> Result<(), Rv> {
        self.keys.lock().forget(object);
        self.with_login(session, |t, inner| {
            t.expect_ok(inner, &Request::DestroyObject { object })
        })
    }

    /// `C_GetObjectSize`.
    pub fn object_size(&self, session: u64, object: u64) -> Result<u64, Rv> {
        self.with_login(session, |t, inner| {
            t.ask(inner, &Request::GetObjectSize { object }, |r| match r {
                Response::Size(n) => Some(n),
                _ => None,
            })
        })
    }

    /// `C_GetAttributeValue`: one round trip; `each(i, value)` is called for
    /// every requested type, in order. The caller applies the PKCS#11 buffer
    /// rules (it knows the host's layout of each value).
    pub fn get_attributes(
        &self,
        session: u64,
        object: u64,
        types: &[u64],
        mut each: impl FnMut(usize, AttrValue<'_>),
    ) -> Result<(), Rv> {
        let types: heapless::Vec<u64, MAX_ATTRS> =
            heapless::Vec::from_slice(types).map_err(|_| ckr::ARGUMENTS_BAD)?;
        let n = types.len();
        self.with_login(session, |t, inner| {
            let ok = match t.exchange(inner, &Request::GetAttributes { object, types })? {
                Response::Attributes(v) if v.len() == n => {
                    for (i, v) in v.into_iter().enumerate() {
                        each(i, v);
                    }
                    true
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(t.broken(inner))
            }
        })
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(
        &self,
        session: u64,
        object: u64,
        template: &[Attribute<'_>],
    ) -> Result<(), Rv> {
        let template = to_template(template)?;
        self.keys.lock().forget(object);
        self.with_login(session, |t, inner| {
            t.expect_ok(inner, &Request::SetAttributes { object, template })
        })
    }

    /// `C_FindObjectsInit`: one round trip that also fetches the first batch.
    pub fn find_init(&self, session: u64, template: &[Attribute<'_>]) -> Result<(), Rv> {
        let template = to_template(template)?;
        self.with_login(session, |t, inner| {
            idle(inner)?;
            let request = Request::FindObjects {
                template,
                max: MAX_FIND as u32,
            };
            let (batch, more) = t.ask(inner, &request, |r| match r {
                Response::Objects { handles, more } => Some((handles, more)),
                _ => None,
            })?;
            set_active(
                inner,
                Active::Find {
                    batch,
                    pos: 0,
                    more,
                },
            );
            Ok(())
        })
    }

    /// `C_FindObjects`: fills `out` with up to `out.len()` handles and returns
    /// how many. A round trip only when the local batch runs out.
    pub fn find(&self, session: u64, out: &mut [u64]) -> Result<usize, Rv> {
        self.with_login(session, |t, inner| {
            // Even with no room for a handle, there must be a search.
            if !matches!(
                inner.session.as_ref().map(|s| &s.active),
                Some(Active::Find { .. })
            ) {
                return Err(ckr::OPERATION_NOT_INITIALIZED);
            }
            let mut n = 0;
            while n < out.len() {
                let Some(Session {
                    active: Active::Find { batch, pos, more },
                    ..
                }) = inner.session.as_mut()
                else {
                    return Err(ckr::OPERATION_NOT_INITIALIZED);
                };
                if let Some(h) = batch.get(*pos) {
                    if let Some(slot) = out.get_mut(n) {
                        *slot = *h;
                    }
                    *pos += 1;
                    n += 1;
                    continue;
                }
                if !*more {
                    break;
                }
                let (next, next_more) = t.ask(
                    inner,
                    &Request::FindNext {
                        max: MAX_FIND as u32,
                    },
                    |r| match r {
                        Response::Objects { handles, more } => Some((handles, more)),
                        _ => None,
                    },
                )?;
                set_active(
                    inner,
                    Active::Find {
                        batch: next,
                        pos: 0,
                        more: next_more,
                    },
                );
            }
            Ok(n)
        })
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, session: u64) -> Result<(), Rv> {
        self.with_login(session, |_, inner| match inner.session.as_mut() {
            Some(s) if matches!(s.active, Active::Find { .. }) => {
                s.active = Active::None;
                Ok(())
            }
            _ => Err(ckr::OPERATION_NOT_INITIALIZED),
        })
    }

    // ----- keys -------------------------------------------------------------

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        template: &[Attribute<'_>],
    ) -> Result<u64, Rv> {
        let template = to_template(template)?;
        self.object_call(
            session,
            &Request::GenerateKey {
                mechanism: *mechanism,
                template,
            },
        )
    }

    /// `C_GenerateKeyPair`: returns (public, private).
    pub fn generate_key_pair(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        public: &[Attribute<'_>],
        private: &[Attribute<'_>],
    ) -> Result<(u64, u64), Rv> {
        let public = to_template(public)?;
        let private = to_template(private)?;
        self.with_login(session, |t, inner| {
            let request = Request::GenerateKeyPair {
                mechanism: *mechanism,
                public,
                private,
            };
            t.ask(inner, &request, |r| match r {
                Response::KeyPair { public, private } => Some((public, private)),
                _ => None,
            })
        })
    }

    /// `C_WrapKey`.
    pub fn wrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        out: Option<&mut [u8]>,
    ) -> Result<Len, Rv> {
        self.with_login(session, |t, inner| {
            let request = Request::WrapKey {
                mechanism: *mechanism,
                wrapping_key,
                key,
            };
            let n = t.data_call(inner, &request)?;
            match out {
                Some(o) if o.len() >= n => {
                    copy_out(o, inner.rx.get(..n))?;
                    Ok(Len::Written(n))
                }
                _ => Ok(Len::Needed(n)),
            }
        })
    }

    /// `C_UnwrapKey`.
    pub fn unwrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attribute<'_>],
    ) -> Result<u64, Rv> {
        let template = to_template(template)?;
        self.object_call(
            session,
            &Request::UnwrapKey {
                mechanism: *mechanism,
                unwrapping_key,
                wrapped,
                template,
            },
        )
    }

    /// `C_DeriveKey`.
    pub fn derive_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        base_key: u64,
        template: &[Attribute<'_>],
    ) -> Result<u64, Rv> {
        let template = to_template(template)?;
        self.object_call(
            session,
            &Request::DeriveKey {
                mechanism: *mechanism,
                base_key,
                template,
            },
        )
    }

    /// `C_GenerateRandom`, in chunks of at most [`MAX_CHUNK`] bytes.
    /// Works in public sessions too, as v2.40 allows: before login the
    /// session's connection is opened unauthenticated (the HSM's generator
    /// needs no user).
    pub fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<(), Rv> {
        self.with_link(session, |t, inner| {
            for chunk in out.chunks_mut(Self::CHUNK) {
                let request = Request::GenerateRandom {
                    len: chunk.len() as u32,
                };
                let n = t.data_call(inner, &request)?;
                let got = inner.rx.get(..n).ok_or(ckr::DEVICE_ERROR)?;
                if got.len() != chunk.len() {
                    return Err(t.broken(inner));
                }
                chunk.copy_from_slice(got);
            }
            Ok(())
        })
    }

    /// `C_SeedRandom`.
    /// Works in public sessions too, like `generate_random`.
    pub fn seed_random(&self, session: u64, seed: &[u8]) -> Result<(), Rv> {
        self.with_link(session, |t, inner| {
            for chunk in seed.chunks(Self::CHUNK) {
                t.expect_ok(inner, &Request::SeedRandom { seed: chunk })?;
            }
            Ok(())
        })
    }

    // ----- digests (local) --------------------------------------------------

    /// `C_DigestInit`: local, no round trip.
    pub fn digest_init(&self, session: u64, mechanism: &Mechanism<'_>) -> Result<(), Rv> {
        let hash = Hash::from_mechanism(mechanism.ty).ok_or(ckr::MECHANISM_INVALID)?;
        if mechanism.param != MechParam::None {
            return Err(ckr::MECHANISM_PARAM_INVALID);
        }
        self.with_session(session, |inner| {
            idle(inner)?;
            set_active(inner, Active::Digest(Hasher::new(hash)));
            Ok(())
        })
    }

    /// `C_Digest`. A length query keeps the operation; anything else ends it.
    pub fn digest(&self, session: u64, data: &[u8], out: Option<&mut [u8]>) -> Result<Len, Rv> {
        self.with_session(session, |inner| {
            let Some(Session {
                active: Active::Digest(h),
                ..
            }) = inner.session.as_ref()
            else {
                return Err(ckr::OPERATION_NOT_INITIALIZED);
            };
            let need = h.hash().size();
            match out {
                Some(out) if out.len() >= need => {
                    let mut h = h.clone();
                    h.update(data);
                    let mut d = [0u8; MAX_DIGEST];
                    let n = h.finish(&mut d);
                    copy_out(out, d.get(..n))?;
                    set_active(inner, Active::None);
                    Ok(Len::Written(n))
                }
                _ => Ok(Len::Needed(need)),
            }
        })
    }

    /// `C_DigestUpdate`.
    pub fn digest_update(&self, session: u64, data: &[u8]) -> Result<(), Rv> {
        self.with_session(session, |inner| {
            match inner.session.as_mut().map(|s| &mut s.active) {
                Some(Active::Digest(h)) => {
                    h.update(data);
                    Ok(())
                }
                _ => Err(ckr::OPERATION_NOT_INITIALIZED),
            }
        })
    }

    /// `C_DigestFinal`.
    pub fn digest_final(&self, session: u64, out: Option<&mut [u8]>) -> Result<Len, Rv> {
        self.digest(session, &[], out)
    }

    /// `C_DigestKey`: the running digest is local, so the value of the key
    /// must come here to be mixed in. The HSM hands it over only for an
    /// exportable secret key (the profile's rule: such a key may leave the
    /// HSM anyway); any other key is `CKR_KEY_INDIGESTIBLE` and its value
    /// never leaves the HSM. The copy in the reply buffer is zeroized at once.
    /// One round trip; an error other than a bad handle ends the operation.
    pub fn digest_key(&self, session: u64, key: u64) -> Result<(), Rv> {
        self.with_login(session, |t, inner| {
            let hash = match inner.session.as_ref().map(|s| &s.active) {
                Some(Active::Digest(h)) => h.hash(),
                _ => return Err(ckr::OPERATION_NOT_INITIALIZED),
            };
            let request = Request::DigestKey {
                mechanism: hash.mechanism(),
                key,
            };
            let n = match t.data_call(inner, &request) {
                Ok(n) => n,
                Err(ckr::OBJECT_HANDLE_INVALID | ckr::KEY_HANDLE_INVALID) => {
                    return Err(ckr::KEY_HANDLE_INVALID)
                }
                Err(rv) => {
                    set_active(inner, Active::None);
                    return Err(rv);
                }
            };
            let SlotInner { session, rx, .. } = inner;
            let value = rx.get_mut(..n).ok_or(ckr::DEVICE_ERROR)?;
            if let Some(Session {
                active: Active::Digest(h),
                ..
            }) = session.as_mut()
            {
                h.update(value);
            }
            zeroize::Zeroize::zeroize(value);
            Ok(())
        })
    }

    // ----- sign, verify, encrypt, decrypt -----------------------------------

    /// `C_SignInit`, `C_VerifyInit`, `C_EncryptInit`, `C_DecryptInit`: one
    /// round trip, in which the HSM checks the key and returns what the module
    /// needs to size outputs. Hash-then-sign mechanisms are sent as their raw
    /// counterpart; the data is hashed here.
    pub fn crypto_init(
        &self,
        session: u64,
        op: Op,
        mechanism: &Mechanism<'_>,
        key: u64,
    ) -> Result<(), Rv> {
        let info = mech::info(mechanism.ty).ok_or(ckr::MECHANISM_INVALID)?;
        let wanted = match op {
            Op::Sign => crate::ck::ckf::SIGN,
            Op::Verify => crate::ck::ckf::VERIFY,
            Op::Encrypt => crate::ck::ckf::ENCRYPT,
            Op::Decrypt => crate::ck::ckf::DECRYPT,
        };
        if info.flags & wanted == 0 {
            return Err(ckr::MECHANISM_INVALID);
        }
        mech::check_params(mechanism)?;
        let (sent, prehash) = match (op, mech::sign_plan(mechanism)) {
            (
                Op::Sign | Op::Verify,
                SignPlan::Prehash {
                    hash,
                    inner,
                    digest_info,
                },
            ) => (
                Mechanism {
                    ty: inner,
                    param: mechanism.param,
                },
                Some((Hasher::new(hash), digest_info)),
            ),
            _ => (*mechanism, None),
        };
        self.with_login(session, |t, inner| {
            idle(inner)?;
            let cached = t.keys.lock().get(inner.peer, key, op);
            // Keep the mechanism to send it with the data, if it fits.
            let kept = match (cached, wire::encode_frame(&sent, &mut inner.mech)) {
                (Some(k), Ok(n)) => Some((k, n)),
                _ => None,
            };
            let (key_info, remote) = match kept {
                Some((k, n)) => {
                    inner.mech_len = n;
                    (k, false)
                }
                None => {
                    let request = Request::CryptoInit {
                        op,
                        mechanism: sent,
                        key,
                    };
                    let k = t
                        .ask(inner, &request, |r| match r {
                            Response::KeyInfo(k) => Some(k),
                            _ => None,
                        })
                        .map_err(|rv| match rv {
                            ckr::OBJECT_HANDLE_INVALID => ckr::KEY_HANDLE_INVALID,
                            rv => rv,
                        })?;
                    (k, true)
                }
            };
            if let Some(wanted) = info.key_type {
                if !mech::key_type_fits(wanted, key_info.key_type) {
                    if remote {
                        let _ = t.exchange(inner, &Request::CryptoCancel { op });
                    }
                    return Err(ckr::KEY_TYPE_INCONSISTENT);
                }
            }
            if let Err(rv) = mech::check_for_key(mechanism, &key_info) {
                if remote {
                    let _ = t.exchange(inner, &Request::CryptoCancel { op });
                }
                return Err(rv);
            }
            if remote {
                t.keys.lock().put(inner.peer, key, op, key_info);
            }
            set_active(
                inner,
                Active::Crypto(CryptoOp {
                    op,
                    mechanism: mechanism.ty,
                    handle: key,
                    key: key_info,
                    remote,
                    prehash,
                    multipart: false,
                    pending: None,
                }),
            );
            Ok(())
        })
    }

    /// Start a locally initialized operation on the HSM (before its first
    /// update): send the kept mechanism as `CryptoInit`.
    fn go_remote(&self, inner: &mut SlotInner<C::Link, BUF>, op: Op) -> Result<(), Rv> {
        let c = crypto_op(inner, op)?;
        if c.remote {
            return Ok(());
        }
        let key = c.handle;
        let mut kept = [0u8; MECH_BUF];
        let mechanism = kept_mechanism(inner, &mut kept)?;
        let request = Request::CryptoInit { op, mechanism, key };
        let r = self.ask(inner, &request, |r| match r {
            Response::KeyInfo(_) => Some(()),
            _ => None,
        });
        self.check_key(key, r)?;
        if let Ok(c) = crypto_op(inner, op) {
            c.remote = true;
        }
        Ok(())
    }

    /// Forget a cached key the HSM refused.
    fn check_key<T>(&self, key: u64, r: Result<T, Rv>) -> Result<T, Rv> {
        match r {
            Err(
                rv @ (ckr::KEY_HANDLE_INVALID
                | ckr::OBJECT_HANDLE_INVALID
                | ckr::KEY_FUNCTION_NOT_PERMITTED
                | ckr::KEY_TYPE_INCONSISTENT),
            ) => {
                self.keys.lock().forget(key);
                Err(if rv == ckr::OBJECT_HANDLE_INVALID {
                    ckr::KEY_HANDLE_INVALID
                } else {
                    rv
                })
            }
            r => r,
        }
    }

    /// End the session's active operation of kind `op` (`None`: a digest)
    /// without a result, as PKCS#11 v2.40 says of a single-part, update or
    /// final call that fails: for a call refused before it reaches the token
    /// (a bad pointer, say). Another kind of operation, or none, is left
    /// alone; the HSM's side, if any, is replaced by the next `CryptoInit`.
    pub fn abandon(&self, session: u64, op: Option<Op>) {
        let _ = self.with_session(session, |inner| {
            let ends = match (inner.session.as_ref().map(|s| &s.active), op) {
                (Some(Active::Crypto(c)), Some(op)) => c.op == op,
                (Some(Active::Digest(_)), None) => true,
                _ => false,
            };
            if ends {
                set_active(inner, Active::None);
            }
            Ok(())
        });
    }

    /// Single-part `C_Sign`, `C_Encrypt`, `C_Decrypt`. A null `out` asks for
    /// the size (no round trip where the size is known locally; the operation
    /// stays); a short `out` gets [`Len::Needed`] and the operation stays;
    /// otherwise the operation ends, whether it succeeded or failed.
    pub fn crypto(
        &self,
        session: u64,
        op: Op,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<Len, Rv> {
        self.with_login(session, |t, inner| {
            let c = crypto_op(inner, op)?;
            if c.multipart {
                return Err(ckr::OPERATION_ACTIVE);
            }
            if let Some(p) = c.pending {
                return deliver_pending(inner, p, out);
            }
            let bound = mech::output_len(op, c.mechanism, &c.key, data.len());
            let streamed = c.prehash.is_none() && data.len() > Self::CHUNK;
            let out = match (out, bound) {
                (None, Some(b)) => return Ok(Len::Needed(b)),
                // Signature sizes are exact: a short buffer is answered here.
                (Some(o), Some(b)) if (streamed || op == Op::Sign) && o.len() < b => {
                    return Ok(Len::Needed(b))
                }
                (None, None) if streamed => return Err(ckr::DATA_LEN_RANGE),
                (o, _) => o,
            };
            let result = match out {
                Some(o) if streamed => t.stream_all(inner, op, data, &[], o).map(Len::Written),
                o => t
                    .finish(inner, op, data, &[])
                    .map(|n| (n, o))
                    .and_then(|(n, o)| deliver(inner, Pending { len: n, ends: true }, o)),
            };
            if !matches!(result, Ok(Len::Needed(_))) {
                set_active(inner, Active::None);
            }
            result
        })
    }

    /// `C_SignUpdate`, `C_VerifyUpdate`: hashed here for hash-then-sign
    /// mechanisms, streamed to the HSM otherwise.
    pub fn crypto_update_no_output(&self, session: u64, op: Op, data: &[u8]) -> Result<(), Rv> {
        self.with_login(session, |t, inner| {
            let c = crypto_op(inner, op)?;
            if c.pending.is_some() {
                return Err(ckr::OPERATION_ACTIVE);
            }
            c.multipart = true;
            if let Some((h, _)) = c.prehash.as_mut() {
                h.update(data);
                return Ok(());
            }
            let mut sink = [0u8; 0];
            let r = t.stream_updates(inner, op, data, &mut sink);
            if r.is_err() {
                set_active(inner, Active::None);
            }
            r.map(|_| ())
        })
    }

    /// `C_EncryptUpdate`, `C_DecryptUpdate`: streamed to the HSM; the output
    /// ready so far is returned.
    pub fn crypto_update(
        &self,
        session: u64,
        op: Op,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<Len, Rv> {
        self.with_login(session, |t, inner| {
            let c = crypto_op(inner, op)?;
            match c.pending {
                // The final output waits for `C_*Final` again.
                Some(p) if p.ends => return Err(ckr::OPERATION_ACTIVE),
                Some(p) => return deliver_pending(inner, p, out),
                None => {}
            }
            c.multipart = true;
            // Output of an update is at most the input plus one block.
            let bound = data.len() + 16;
            let out = match out {
                None => return Ok(Len::Needed(bound)),
                Some(o) if o.len() < bound && data.len() > Self::CHUNK => {
                    return Ok(Len::Needed(bound))
                }
                Some(o) => o,
            };
            let result = if data.len() <= Self::CHUNK {
                t.go_remote(inner, op)
                    .and_then(|_| t.data_call(inner, &Request::CryptoUpdate { op, data }))
                    .and_then(|n| {
                        deliver(
                            inner,
                            Pending {
                                len: n,
                                ends: false,
                            },
                            Some(out),
                        )
                    })
            } else {
                t.stream_updates(inner, op, data, out).map(Len::Written)
            };
            if result.is_err() {
                set_active(inner, Active::None);
            }
            result
        })
    }

    /// `C_SignFinal`, `C_EncryptFinal`, `C_DecryptFinal`.
    pub fn crypto_final(&self, session: u64, op: Op, out: Option<&mut [u8]>) -> Result<Len, Rv> {
        self.with_login(session, |t, inner| {
            let c = crypto_op(inner, op)?;
            match c.pending {
                Some(p) if p.ends => return deliver_pending(inner, p, out),
                Some(p) => return t.final_after_update(inner, op, p, out),
                None => {}
            }
            let bound = match op {
                Op::Sign => mech::output_len(op, c.mechanism, &c.key, 0),
                // What remains buffered is at most one block (GCM: the
                // whole message on decryption, the tag on encryption).
                Op::Encrypt | Op::Decrypt => match c.mechanism {
                    crate::ck::ckm::AES_GCM => None,
                    _ => Some(16),
                },
                Op::Verify => return Err(ckr::OPERATION_NOT_INITIALIZED),
            };
            if let (None, Some(b)) = (&out, bound) {
                return Ok(Len::Needed(b));
            }
            let result = t
                .finish(inner, op, &[], &[])
                .and_then(|n| deliver(inner, Pending { len: n, ends: true }, out));
            if !matches!(result, Ok(Len::Needed(_))) {
                set_active(inner, Active::None);
            }
            result
        })
    }

    /// `C_*Final` while an update's output waits (the application asked
    /// for it with a buffer too small, then called the final instead of the
    /// update again): that output comes first, then what the end of the
    /// operation gives (at most one block), in one final output.
    fn final_after_update(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        p: Pending,
        out: Option<&mut [u8]>,
    ) -> Result<Len, Rv> {
        let need = p.len + 16;
        let o = match out {
            Some(o) if o.len() >= need => o,
            _ => return Ok(Len::Needed(need)),
        };
        let (head, tail) = o.split_at_mut(p.len);
        copy_out(head, inner.pending.get(..p.len))?;
        let result = self
            .finish(inner, op, &[], &[])
            .and_then(|n| copy_out(tail, inner.rx.get(..n)).map(|()| Len::Written(p.len + n)));
        set_active(inner, Active::None);
        result
    }

    /// `C_Verify`: the operation ends whatever the result.
    pub fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<(), Rv> {
        self.with_login(session, |t, inner| {
            let c = crypto_op(inner, Op::Verify)?;
            if c.multipart {
                return Err(ckr::OPERATION_ACTIVE);
            }
            let r = if c.prehash.is_none() && data.len() > Self::CHUNK {
                t.stream_all(inner, Op::Verify, data, signature, &mut [])
            } else {
                t.finish(inner, Op::Verify, data, signature)
            };
            set_active(inner, Active::None);
            r.map(|_| ())
        })
    }

    /// `C_VerifyFinal`: the operation ends whatever the result.
    pub fn verify_final(&self, session: u64, signature: &[u8]) -> Result<(), Rv> {
        self.with_login(session, |t, inner| {
            crypto_op(inner, Op::Verify)?;
            let r = t.finish(inner, Op::Verify, &[], signature);
            set_active(inner, Active::None);
            r.map(|_| ())
        })
    }

    // ----- plumbing ---------------------------------------------------------

    /// Finish the active operation on the HSM with its last data (at most
    /// [`MAX_CHUNK`] bytes, or any size for hash-then-sign mechanisms, which
    /// are hashed here); the output (if any) is left in `rx[..n]`.
    fn finish(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        data: &[u8],
        signature: &[u8],
    ) -> Result<usize, Rv> {
        let c = crypto_op(inner, op)?;
        let Some((mut h, digest_info)) = c.prehash.take() else {
            return self.final_call(inner, op, data, signature);
        };
        h.update(data);
        let hash = h.hash();
        let mut digest = [0u8; MAX_DIGEST];
        let n = h.finish(&mut digest);
        let digest = digest.get(..n).ok_or(ckr::GENERAL_ERROR)?;
        let mut msg = [0u8; MAX_DIGEST_INFO];
        let mut len = 0;
        if digest_info {
            let prefix = hash.digest_info_prefix();
            copy_out(&mut msg, Some(prefix))?;
            len = prefix.len();
        }
        copy_out(msg.get_mut(len..).ok_or(ckr::GENERAL_ERROR)?, Some(digest))?;
        len += n;
        let data = msg.get(..len).ok_or(ckr::GENERAL_ERROR)?;
        self.final_call(inner, op, data, signature)
    }

    fn final_call(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        data: &[u8],
        signature: &[u8],
    ) -> Result<usize, Rv> {
        let c = crypto_op(inner, op)?;
        let (remote, key) = (c.remote, c.handle);
        let mut kept = [0u8; MECH_BUF];
        let request = if remote {
            Request::CryptoFinal {
                op,
                data,
                signature,
            }
        } else {
            let mechanism = kept_mechanism(inner, &mut kept)?;
            Request::CryptoOneShot {
                op,
                mechanism,
                key,
                data,
                signature,
            }
        };
        let n = self.ask(inner, &request, |r| match r {
            Response::Data(d) => Some(Some(d.len())),
            Response::Ok if op == Op::Verify => Some(None),
            _ => None,
        });
        let n = if remote { n } else { self.check_key(key, n) }?;
        match n {
            Some(n) => move_data_to_front(inner, n),
            None => Ok(0),
        }
    }

    /// Stream `data` as updates, appending their output to `out`; returns
    /// the bytes written.
    fn stream_updates(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Rv> {
        self.go_remote(inner, op)?;
        if data.len() > Self::CHUNK && inner.link.as_ref().is_some_and(|l| l.can_pipeline()) {
            return self.stream_pipelined(inner, op, data, out);
        }
        let mut written = 0;
        for chunk in data.chunks(Self::CHUNK) {
            let n = self.data_call(inner, &Request::CryptoUpdate { op, data: chunk })?;
            append_rx(inner, n, out, &mut written)?;
        }
        Ok(written)
    }

    /// [`Self::stream_updates`] with up to [`PIPELINE`] updates in flight:
    /// the HSM works on one chunk while the next travels. Replies come in
    /// order; after a failure the rest in flight is read and dropped, so the
    /// connection stays in step.
    fn stream_pipelined(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Rv> {
        let mut chunks = data.chunks(Self::CHUNK);
        let (mut sent, mut received, mut written) = (0usize, 0usize, 0usize);
        let mut failure: Option<Rv> = None;
        loop {
            while failure.is_none() && sent - received < PIPELINE {
                let Some(chunk) = chunks.next() else { break };
                let n =
                    wire::encode_frame(&Request::CryptoUpdate { op, data: chunk }, &mut inner.tx)
                        .map_err(|e| e.rv())?;
                let frame = inner.tx.get(..n).ok_or(ckr::GENERAL_ERROR)?;
                let link = inner.link.as_mut().ok_or(ckr::DEVICE_ERROR)?;
                if let Err(e) = link.send(frame) {
                    drop_link(inner);
                    inner.last_error = Some(e);
                    return Err(e.rv());
                }
                sent += 1;
            }
            if received == sent {
                break;
            }
            let link = inner.link.as_mut().ok_or(ckr::DEVICE_ERROR)?;
            let got = match link.recv(&mut inner.rx) {
                Ok(got) => got,
                Err(e) => {
                    drop_link(inner);
                    inner.last_error = Some(e);
                    return Err(e.rv());
                }
            };
            received += 1;
            let body = inner.rx.get(..got).ok_or(ckr::DEVICE_ERROR)?;
            let in_protocol = match wire::decode::<Response<'_>>(body) {
                Ok(Response::Data(d)) => {
                    if failure.is_none() {
                        match out.get_mut(written..written + d.len()) {
                            Some(dst) => {
                                dst.copy_from_slice(d);
                                written += d.len();
                            }
                            None => failure = Some(ckr::BUFFER_TOO_SMALL),
                        }
                    }
                    true
                }
                Ok(Response::Error(rv)) => {
                    failure = failure.or(Some(rv));
                    true
                }
                _ => false,
            };
            if !in_protocol {
                return Err(self.broken(inner));
            }
        }
        match failure {
            Some(rv) => Err(rv),
            None => Ok(written),
        }
    }

    /// A whole single-part operation on data larger than one chunk: updates,
    /// then the final message with the last chunk; all output goes to `out`.
    fn stream_all(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        op: Op,
        data: &[u8],
        signature: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Rv> {
        let split = data.len() - (data.len() - 1) % Self::CHUNK - 1;
        let (head, last) = data.split_at(split);
        let mut written = self.stream_updates(inner, op, head, out)?;
        let n = self.final_call(inner, op, last, signature)?;
        append_rx(inner, n, out, &mut written)?;
        Ok(written)
    }

    /// A request answered with `Data`: the data is moved to `rx[..n]`.
    fn data_call(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        request: &Request<'_>,
    ) -> Result<usize, Rv> {
        let n = self.ask(inner, request, |r| match r {
            Response::Data(d) => Some(d.len()),
            _ => None,
        })?;
        move_data_to_front(inner, n)
    }

    fn expect_ok(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        request: &Request<'_>,
    ) -> Result<(), Rv> {
        if matches!(self.exchange(inner, request)?, Response::Ok) {
            Ok(())
        } else {
            Err(self.broken(inner))
        }
    }

    fn object_call(&self, session: u64, request: &Request<'_>) -> Result<u64, Rv> {
        self.with_login(session, |t, inner| {
            t.ask(inner, request, |r| match r {
                Response::Object(h) => Some(h),
                _ => None,
            })
        })
    }

    /// One exchange whose reply `pick` turns into a value; a reply it does not
    /// accept (`None`) is out of protocol and drops the connection.
    ///
    /// A connection that worked before and then broke (the HSM restarted, a
    /// firewall dropped it) is replaced once, transparently, for requests
    /// that hold no state of the old connection; a timeout is never retried
    /// (its bound is the application's).
    fn ask<T>(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        request: &Request<'_>,
        pick: impl Fn(Response<'_>) -> Option<T>,
    ) -> Result<T, Rv> {
        let was_used = inner.link_used;
        let first = call(inner, request).map(&pick);
        let picked =
            match first {
                Err(rv)
                    if was_used
                        && inner.link.is_none()
                        && inner.last_error == Some(crate::link::LinkError::Io)
                        && retryable(request) =>
                {
                    warn!("connection to the HSM lost; reconnecting once");
                    inner.link_generation = 0;
                    self.authenticate(inner).map_err(|e| {
                        if e == ckr::SESSION_CLOSED {
                            e
                        } else {
                            rv
                        }
                    })?;
                    call(inner, request).map(&pick)?
                }
                r => r?,
            };
        picked.ok_or_else(|| self.broken(inner))
    }

    /// The HSM answered out of protocol: drop the connection.
    fn broken(&self, inner: &mut SlotInner<C::Link, BUF>) -> Rv {
        warn!("unexpected reply from the HSM; dropping the connection");
        drop_link(inner);
        ckr::DEVICE_ERROR
    }

    /// One exchange on an authenticated (or, before login, plain) link.
    fn exchange<'b>(
        &self,
        inner: &'b mut SlotInner<C::Link, BUF>,
        request: &Request<'_>,
    ) -> Result<Response<'b>, Rv> {
        call(inner, request)
    }

    /// Connect the slot's link if it has none, and say hello.
    /// Connect the slot's link if need be and send `Login` with `cred`:
    /// `Ok` with the HSM's answer (whether it accepted), `Err` when no
    /// login could be sent: connecting failed, or the link may not carry
    /// the password (plain TCP off loopback: `CKR_DEVICE_ERROR`, nothing
    /// sent). The HSM closes a connection that has not logged in within its
    /// login deadline: one kept from an earlier call (a failed login, say)
    /// may be gone, and is then replaced once. The HSM never handles a
    /// request on a connection it ended, so the attempt counts once.
    fn send_login(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        cred: &Credential,
    ) -> Result<Result<bool, Rv>, Rv> {
        let request = Request::Login {
            user: &cred.user,
            password: Secret(cred.password()),
        };
        let mut tries = if inner.link.is_some() { 2 } else { 1 };
        loop {
            tries -= 1;
            self.ensure_connected(inner, host_of(cred))?;
            if !password_safe(inner) {
                return Err(ckr::DEVICE_ERROR);
            }
            let reply = call(inner, &request).map(|r| matches!(r, Response::Ok));
            let lost = inner.link.is_none() && inner.last_error == Some(crate::link::LinkError::Io);
            if reply.is_ok() || !lost || tries == 0 {
                return Ok(reply);
            }
            warn!("the HSM closed the connection before login; reconnecting once");
        }
    }

    fn ensure_connected(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        host: Option<&str>,
    ) -> Result<(), Rv> {
        // An HSM that accepts the connection but dies before answering
        // Hello (killed a moment ago) costs one more try, which the
        // connector sends to another endpoint if it has one.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.connect_once(inner, host) {
                Err(ckr::DEVICE_ERROR) if tries < CONNECT_TRIES && host.is_none() => continue,
                r => return r,
            }
        }
    }

    fn connect_once(
        &self,
        inner: &mut SlotInner<C::Link, BUF>,
        host: Option<&str>,
    ) -> Result<(), Rv> {
        if inner.link.is_some() {
            return Ok(());
        }
        let link = self.connector.connect(host).map_err(|e| e.rv())?;
        inner.link = Some(link);
        inner.link_generation = 0;
        inner.link_used = false;
        inner.last_error = None;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            max_frame: (BUF - wire::HEADER_LEN) as u32,
            app: self.app,
        };
        let answer = call(inner, &hello).map(|r| match r {
            Response::Hello {
                version, server, ..
            } if version == PROTOCOL_VERSION => Some(fnv1a(server.as_bytes())),
            _ => None,
        });
        match answer {
            Ok(Some(peer)) if inner.pinned != 0 && inner.pinned != peer => {
                warn!("reconnected to another HSM: the session's handles are void; closing it");
                drop_link(inner);
                Err(ckr::SESSION_CLOSED)
            }
            Ok(Some(peer)) => {
                inner.peer = peer;
                inner.pinned = peer;
                Ok(())
            }
            Ok(None) => Err(self.broken(inner)),
            Err(rv) => {
                drop_link(inner);
                Err(rv)
            }
        }
    }

    /// Make sure the slot's link is connected and authenticated under the
    /// current login; fails with `CKR_USER_NOT_LOGGED_IN` before login.
    ///
    /// The shared lock is held only to copy the credential (zeroized when
    /// the copy drops): connecting, the TLS handshake and the `Login` round
    /// trip run under this session's own lock alone, so a session whose HSM
    /// is slow or unreachable never stalls the others.
    fn authenticate(&self, inner: &mut SlotInner<C::Link, BUF>) -> Result<(), Rv> {
        // A logout or new login while this one was under way: start again
        // with the credential of the moment (bounded: each round is one
        // login by another thread).
        for _ in 0..4 {
            let (cred, generation) = {
                let shared = self.shared.lock();
                let Some((cred, _)) = shared.login.as_ref() else {
                    return Err(ckr::USER_NOT_LOGGED_IN);
                };
                if inner.link.is_some() && inner.link_generation == shared.generation {
                    return Ok(());
                }
                (cred.copy(), shared.generation)
            };
            if inner.link_generation != 0 {
                drop_link(inner);
            }
            match self.send_login(inner, &cred)? {
                Ok(true) => {}
                Ok(false) => return Err(self.broken(inner)),
                Err(ckr::PIN_INCORRECT | ckr::PIN_LOCKED) => {
                    // The password changed or the user was locked since login.
                    drop_link(inner);
                    self.login_void(generation);
                    return Err(ckr::USER_NOT_LOGGED_IN);
                }
                Err(rv) => {
                    drop_link(inner);
                    return Err(rv);
                }
            }
            if self.shared.lock().generation == generation {
                inner.link_generation = generation;
                return Ok(());
            }
            // Logged in under a login that ended meanwhile: not this one's.
            drop_link(inner);
        }
        Err(ckr::USER_NOT_LOGGED_IN)
    }

    /// The HSM said the login of `generation` is void: forget it (the
    /// credential is zeroized), unless the application has logged in again
    /// since. All sessions share the login, so all are public from now on
    /// and `C_Login` works again without `C_Logout`; their links, stale,
    /// are replaced at their next call.
    fn login_void(&self, generation: u32) {
        {
            let mut shared = self.shared.lock();
            if shared.generation != generation || shared.login.is_none() {
                return;
            }
            shared.login = None;
            shared.generation = shared.generation.wrapping_add(1).max(1);
        }
        self.keys.lock().entries.clear();
        warn!("the HSM ended this application's login (user removed, password changed or locked); log in again");
    }

    fn slot(&self, session: u64) -> Result<&SessionSlot<C::Link, R, BUF>, Rv> {
        let handle = u32::try_from(session).map_err(|_| ckr::SESSION_HANDLE_INVALID)?;
        if handle == 0 {
            return Err(ckr::SESSION_HANDLE_INVALID);
        }
        self.slots
            .iter()
            .find(|s| s.handle.load(Ordering::Acquire) == handle)
            .ok_or(ckr::SESSION_HANDLE_INVALID)
    }

    /// Run `f` on an open session, without network.
    fn with_session<T>(
        &self,
        session: u64,
        f: impl FnOnce(&mut SlotInner<C::Link, BUF>) -> Result<T, Rv>,
    ) -> Result<T, Rv> {
        let slot = self.slot(session)?;
        let mut guard = slot.inner.lock();
        if slot.handle.load(Ordering::Acquire) as u64 != session || guard.session.is_none() {
            return Err(ckr::SESSION_HANDLE_INVALID);
        }
        f(&mut guard)
    }

    /// Run `f` on an open session with a link: authenticated when the
    /// application is logged in, plain otherwise (for the functions v2.40
    /// allows in public sessions: random numbers).
    fn with_link<T>(
        &self,
        session: u64,
        f: impl FnOnce(&Self, &mut SlotInner<C::Link, BUF>) -> Result<T, Rv>,
    ) -> Result<T, Rv> {
        if self.logged_in() {
            return self.with_login(session, f);
        }
        let slot = self.slot(session)?;
        let mut guard = slot.inner.lock();
        let inner = &mut *guard;
        if slot.handle.load(Ordering::Acquire) as u64 != session || inner.session.is_none() {
            return Err(ckr::SESSION_HANDLE_INVALID);
        }
        if inner.link.is_some() && inner.link_generation != 0 {
            // Authenticated under a login that has ended since.
            drop_link(inner);
        }
        let result = self
            .ensure_connected(inner, None)
            .and_then(|()| f(self, inner));
        if result.as_ref().err() == Some(&ckr::SESSION_CLOSED) {
            // As in `with_login`: its HSM is gone, the handle is void.
            set_active(inner, Active::None);
            inner.session = None;
            drop_link(inner);
            slot.handle.store(0, Ordering::Release);
        }
        result
    }

    /// Run `f` on an open session whose link is authenticated.
    fn with_login<T>(
        &self,
        session: u64,
        f: impl FnOnce(&Self, &mut SlotInner<C::Link, BUF>) -> Result<T, Rv>,
    ) -> Result<T, Rv> {
        let slot = self.slot(session)?;
        let mut guard = slot.inner.lock();
        let inner = &mut *guard;
        if slot.handle.load(Ordering::Acquire) as u64 != session || inner.session.is_none() {
            return Err(ckr::SESSION_HANDLE_INVALID);
        }
        if let Some(link) = inner.link.as_mut() {
            if !link.check_alive() {
                drop_link(inner);
            }
        }
        // A link authenticated under an earlier login (one the HSM voided)
        // is replaced by `authenticate`: its operations are gone with it.
        let had_link = inner.link.is_some() && {
            let current = self.shared.lock().generation;
            inner.link_generation == 0 || inner.link_generation == current
        };
        let mut generation = 0;
        let result =
            self.authenticate(inner).and_then(|()| {
                generation = inner.link_generation;
                if !had_link {
                    // A new connection has no operation state on the HSM.
                    if inner.session.as_ref().is_some_and(|s| {
                        matches!(s.active, Active::Crypto(_) | Active::Find { .. })
                    }) {
                        set_active(inner, Active::None);
                    }
                }
                f(self, inner)
            });
        if result.as_ref().err() == Some(&ckr::USER_NOT_LOGGED_IN) && generation != 0 {
            // The HSM says the login this authenticated link rested on is
            // void (its user removed, its password changed, locked).
            self.login_void(generation);
        }
        if result.as_ref().err() == Some(&ckr::SESSION_CLOSED) {
            // Its HSM is gone for good: the handle is void from now on.
            set_active(inner, Active::None);
            inner.session = None;
            drop_link(inner);
            slot.handle.store(0, Ordering::Release);
        }
        result
    }
}

/// FNV-1a, 32 bits: a small, stable hash for the HSM's identity.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Requests that depend on no state of the connection they were sent on,
/// and do the same when sent twice: safe to resend on a new connection.
fn retryable(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::GetAttributes { .. }
            | Request::SetAttributes { .. }
            | Request::GetObjectSize { .. }
            | Request::FindObjects { .. }
            | Request::CryptoInit { .. }
            | Request::CryptoOneShot { .. }
            | Request::GenerateRandom { .. }
            | Request::SeedRandom { .. }
            | Request::WrapKey { .. }
            | Request::DigestKey { .. }
            | Request::Ping
    )
}

fn host_of(cred: &Credential) -> Option<&str> {
    if cred.host.is_empty() {
        None
    } else {
        Some(cred.host.as_str())
    }
}

fn to_template<'a>(attrs: &[Attribute<'a>]) -> Result<Template<'a>, Rv> {
    for a in attrs {
        crate::attr::check_value(a.ty, a.value)?;
    }
    Template::from_slice(attrs).map_err(|_| ckr::ARGUMENTS_BAD)
}

/// Whether the slot's link may carry the password (see
/// [`Link::may_carry_password`]): the credential is never sent in clear to
/// another machine, whatever the configuration says.
fn password_safe<L: Link, const BUF: usize>(inner: &SlotInner<L, BUF>) -> bool {
    let safe = inner.link.as_ref().is_some_and(|l| l.may_carry_password());
    if !safe {
        warn!("login refused: the link to the HSM may not carry the password");
    }
    safe
}

fn drop_link<L, const BUF: usize>(inner: &mut SlotInner<L, BUF>) {
    inner.link = None;
    inner.link_generation = 0;
    inner.link_used = false;
    inner.last_error = None;
}

fn set_active<L, const BUF: usize>(inner: &mut SlotInner<L, BUF>, active: Active) {
    if let Some(s) = inner.session.as_mut() {
        let old = core::mem::replace(&mut s.active, active);
        if let Active::Crypto(CryptoOp {
            pending: Some(p), ..
        }) = old
        {
            forget_pending(inner, p);
        }
    }
}

/// Zeroize pending output (it may be plaintext) once taken or abandoned.
fn forget_pending<L, const BUF: usize>(inner: &mut SlotInner<L, BUF>, p: Pending) {
    if let Some(b) = inner.pending.get_mut(..p.len) {
        zeroize::Zeroize::zeroize(b);
    }
}

/// No operation may be active (`CKR_OPERATION_ACTIVE` otherwise).
fn idle<L, const BUF: usize>(inner: &SlotInner<L, BUF>) -> Result<(), Rv> {
    match inner.session.as_ref().map(|s| &s.active) {
        Some(Active::None) => Ok(()),
        Some(_) => Err(ckr::OPERATION_ACTIVE),
        None => Err(ckr::SESSION_HANDLE_INVALID),
    }
}

fn crypto_op<L, const BUF: usize>(
    inner: &mut SlotInner<L, BUF>,
    op: Op,
) -> Result<&mut CryptoOp, Rv> {
    match inner.session.as_mut().map(|s| &mut s.active) {
        Some(Active::Crypto(c)) if c.op == op => Ok(c),
        Some(_) => Err(ckr::OPERATION_NOT_INITIALIZED),
        None => Err(ckr::SESSION_HANDLE_INVALID),
    }
}

/// Encode `request`, exchange it, decode the reply (borrowing `rx`).
/// `Response::Error` becomes `Err`; a broken link is dropped.
fn call<'b, L: Link, const BUF: usize>(
    inner: &'b mut SlotInner<L, BUF>,
    request: &Request<'_>,
) -> Result<Response<'b>, Rv> {
    let n = wire::encode_frame(request, &mut inner.tx).map_err(|e| e.rv())?;
    let link = inner.link.as_mut().ok_or(ckr::DEVICE_ERROR)?;
    let frame = inner.tx.get(..n).ok_or(ckr::GENERAL_ERROR)?;
    let got = match link.exchange(frame, &mut inner.rx) {
        Ok(got) => got,
        Err(e) => {
            warn!("link to the HSM failed");
            drop_link(inner);
            inner.last_error = Some(e);
            return Err(e.rv());
        }
    };
    inner.reply_len = got;
    if got > inner.rx.len() {
        drop_link(inner);
        return Err(ckr::DEVICE_ERROR);
    }
    let body = inner.rx.get(..got).unwrap_or(&[]);
    let logged_in = inner.link_generation != 0;
    match wire::decode::<Response<'_>>(body) {
        Ok(Response::Error(rv)) if ckr::is_error(rv) => {
            inner.link_used = logged_in;
            Err(rv)
        }
        Ok(Response::Error(_)) => {
            // Not an error code (CKR_OK, say): handing it on would make a
            // failed call look successful. The HSM is broken.
            warn!("the HSM answered an error that is no CKR_* error");
            inner.link = None;
            inner.link_generation = 0;
            Err(ckr::DEVICE_ERROR)
        }
        Ok(r) => {
            inner.link_used = logged_in;
            Ok(r)
        }
        Err(_) => {
            inner.link = None;
            inner.link_generation = 0;
            Err(ckr::DEVICE_ERROR)
        }
    }
}

/// After a `Data` reply of `n` bytes, move those bytes to the start of `rx`.
/// `Data` is the last field of its message, so its bytes end the body.
fn move_data_to_front<L, const BUF: usize>(
    inner: &mut SlotInner<L, BUF>,
    n: usize,
) -> Result<usize, Rv> {
    let end = inner.reply_len;
    let start = end.checked_sub(n).ok_or(ckr::DEVICE_ERROR)?;
    if end > inner.rx.len() {
        return Err(ckr::DEVICE_ERROR);
    }
    inner.rx.copy_within(start..end, 0);
    Ok(n)
}

/// The mechanism of a locally initialized operation, decoded from a copy
/// of the slot's `mech` buffer (the copy frees the slot for the exchange).
fn kept_mechanism<'k, L, const BUF: usize>(
    inner: &SlotInner<L, BUF>,
    kept: &'k mut [u8; MECH_BUF],
) -> Result<Mechanism<'k>, Rv> {
    let n = inner.mech_len.min(MECH_BUF);
    kept[..n].copy_from_slice(&inner.mech[..n]);
    let body = kept.get(wire::HEADER_LEN..n).ok_or(ckr::GENERAL_ERROR)?;
    wire::decode(body).map_err(|_| ckr::GENERAL_ERROR)
}

/// Append `rx[..n]` to `out` at `*written`.
fn append_rx<L, const BUF: usize>(
    inner: &SlotInner<L, BUF>,
    n: usize,
    out: &mut [u8],
    written: &mut usize,
) -> Result<(), Rv> {
    let dst = out
        .get_mut(*written..*written + n)
        .ok_or(ckr::BUFFER_TOO_SMALL)?;
    dst.copy_from_slice(inner.rx.get(..n).ok_or(ckr::DEVICE_ERROR)?);
    *written += n;
    Ok(())
}

fn copy_out(out: &mut [u8], src: Option<&[u8]>) -> Result<(), Rv> {
    let src = src.ok_or(ckr::GENERAL_ERROR)?;
    out.get_mut(..src.len())
        .ok_or(ckr::BUFFER_TOO_SMALL)?
        .copy_from_slice(src);
    Ok(())
}

/// Output computed by the HSM and kept in the slot's `pending[..len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    len: usize,
    /// Delivering it ends the operation (a final or single-part call).
    ends: bool,
}

/// Hand over output now in `rx`: written if `out` holds it; otherwise
/// copied apart and kept pending for the next call (the same call again
/// with a larger buffer).
fn deliver<L, const BUF: usize>(
    inner: &mut SlotInner<L, BUF>,
    p: Pending,
    out: Option<&mut [u8]>,
) -> Result<Len, Rv> {
    match out {
        Some(o) if o.len() >= p.len => {
            copy_out(o, inner.rx.get(..p.len))?;
            Ok(Len::Written(p.len))
        }
        _ => {
            let src = inner.rx.get(..p.len).ok_or(ckr::DEVICE_ERROR)?;
            copy_out(&mut inner.pending, Some(src))?;
            if let Some(Session {
                active: Active::Crypto(c),
                ..
            }) = inner.session.as_mut()
            {
                c.pending = Some(p);
            }
            Ok(Len::Needed(p.len))
        }
    }
}

/// Deliver output computed by an earlier call; ends the operation if that
/// call was final.
fn deliver_pending<L, const BUF: usize>(
    inner: &mut SlotInner<L, BUF>,
    p: Pending,
    out: Option<&mut [u8]>,
) -> Result<Len, Rv> {
    match out {
        Some(o) if o.len() >= p.len => {
            copy_out(o, inner.pending.get(..p.len))?;
            if p.ends {
                set_active(inner, Active::None);
            } else if let Some(Session {
                active: Active::Crypto(c),
                ..
            }) = inner.session.as_mut()
            {
                c.pending = None;
                forget_pending(inner, p);
            }
            Ok(Len::Written(p.len))
        }
        _ => Ok(Len::Needed(p.len)),
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
