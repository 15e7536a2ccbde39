//! One connection: the request handler, independent of any socket so that
//! tests and fuzzers drive it in-process.
//!
//! A connection carries one PKCS#11 session: its login, its running
//! operations (one per kind), its search cursor and the session objects it
//! created, which die with it.

use std::collections::BTreeSet;
use std::sync::Arc;

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, ckm, cko, ckr, Rv};
use hsmlink_core::wire::{
    self, AttrValue, Attribute, KeyInfo, Mechanism, Op, Request, Response, HEADER_LEN, MAX_CHUNK,
    MAX_FIND, MAX_FRAME_LIMIT, MIN_FRAME, PROTOCOL_VERSION,
};

use crate::crypto::{self, Running};
use crate::hsm::Hsm;
use crate::keys;
use crate::object::{self, Object, Origin, SessionScope};

/// Largest frame body the server accepts (it announces this in `Hello`).
pub const SERVER_MAX_FRAME: usize = 64 * 1024;

/// The server's name in `Hello`.
pub const SERVER_NAME: &str = concat!("hsmlink-hsm ", env!("CARGO_PKG_VERSION"));

/// What `Hello` says of this server: its name and a random identity of this
/// process. Object handles mean something only within one server process's
/// view of its store, so a client may remember facts about a handle (the
/// module's key cache) per identity; a restarted server is a new identity.
pub fn server_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut r = [0u8; 8];
        // No randomness at all is unthinkable for an HSM; fall back to the
        // time and process id so the identity still differs per process.
        if openssl::rand::rand_bytes(&mut r).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            r = (t ^ u64::from(std::process::id())).to_le_bytes();
        }
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        format!("{SERVER_NAME} instance={hex}")
    })
}

/// An owned reply, turned into a [`Response`] for encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Hello { version: u16, max_frame: u32 },
    Ok,
    Error(Rv),
    Object(u64),
    KeyPair { public: u64, private: u64 },
    Attributes(Vec<OwnedAttr>),
    Size(u64),
    Objects { handles: Vec<u64>, more: bool },
    KeyInfo(KeyInfo),
    Data(Vec<u8>),
}

/// An owned [`AttrValue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedAttr {
    Value(Vec<u8>),
    Sensitive,
    Invalid,
}

impl Reply {
    /// Encode as a frame no longer than `max_body` + header. A reply that
    /// does not fit becomes `Error(CKR_DATA_LEN_RANGE)`.
    pub fn encode(&self, max_body: usize) -> Vec<u8> {
        // The same frame as `wire::encode_frame` (length + postcard body),
        // sized to the message instead of to the peer's maximum, encoded in
        // place after room for the length.
        let capacity = HEADER_LEN
            + 32
            + match self {
                Reply::Data(d) => d.len(),
                _ => 0,
            };
        let frame = |r: &Response<'_>| -> Option<Vec<u8>> {
            let mut out = Vec::with_capacity(capacity);
            out.extend_from_slice(&[0; HEADER_LEN]);
            let mut out = postcard::to_extend(r, out).ok()?;
            let len = out.len() - HEADER_LEN;
            if len > max_body {
                return None;
            }
            out[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
            Some(out)
        };
        self.with_response(frame)
            .or_else(|| frame(&Response::Error(ckr::DATA_LEN_RANGE)))
            .unwrap_or_default()
    }

    fn with_response<T>(&self, f: impl FnOnce(&Response<'_>) -> T) -> T {
        match self {
            Reply::Hello { version, max_frame } => f(&Response::Hello {
                version: *version,
                max_frame: *max_frame,
                server: server_identity(),
            }),
            Reply::Ok => f(&Response::Ok),
            Reply::Error(rv) => f(&Response::Error(*rv)),
            Reply::Object(h) => f(&Response::Object(*h)),
            Reply::KeyPair { public, private } => f(&Response::KeyPair {
                public: *public,
                private: *private,
            }),
            Reply::Attributes(v) => {
                let mut out = heapless::Vec::new();
                for a in v {
                    let x = match a {
                        OwnedAttr::Value(v) => AttrValue::Value(v),
                        OwnedAttr::Sensitive => AttrValue::Sensitive,
                        OwnedAttr::Invalid => AttrValue::Invalid,
                    };
                    if out.push(x).is_err() {
                        return f(&Response::Error(ckr::GENERAL_ERROR));
                    }
                }
                f(&Response::Attributes(out))
            }
            Reply::Size(s) => f(&Response::Size(*s)),
            Reply::Objects { handles, more } => {
                let mut hs = heapless::Vec::new();
                for h in handles.iter().take(MAX_FIND) {
                    let _ = hs.push(*h);
                }
                f(&Response::Objects {
                    handles: hs,
                    more: *more,
                })
            }
            Reply::KeyInfo(k) => f(&Response::KeyInfo(*k)),
            Reply::Data(d) => f(&Response::Data(d)),
        }
    }
}

impl From<Rv> for Reply {
    fn from(rv: Rv) -> Self {
        Reply::Error(rv)
    }
}

fn done(r: Result<Reply, Rv>) -> Reply {
    r.unwrap_or_else(Reply::Error)
}

struct Find {
    handles: Vec<u64>,
    pos: usize,
}

/// The state of one connection.
pub struct Connection {
    hsm: Arc<Hsm>,
    id: u64,
    /// The client's `max_frame` and `app`, once `Hello` is done.
    hello: Option<(usize, [u8; 16])>,
    /// The logged-in user's owner key ([`crate::users::owner_key`], shared
    /// cheaply with each request's context).
    user: Option<Arc<str>>,
    /// The logged-in user's name, and the flag set when its login is
    /// revoked ([`Hsm::revoke_user`]).
    login: Option<(Arc<str>, Arc<std::sync::atomic::AtomicBool>)>,
    ops: [Option<Running>; 4],
    find: Option<Find>,
    /// Session objects this connection created.
    session_objects: BTreeSet<u64>,
    closing: bool,
    /// The client's address (login rate limits, logs).
    peer: Option<std::net::IpAddr>,
    /// Its entry in the server's registry (a login waiting its turn shows
    /// there that it may be ended, and gives up when it is).
    state: Option<Arc<crate::registry::ConnState>>,
    /// What its running operations buffered after the last request, and
    /// for whom (reported to [`Hsm::report_inflight`]).
    inflight: Option<(Arc<str>, usize)>,
}

fn op_index(op: Op) -> usize {
    match op {
        Op::Encrypt => 0,
        Op::Decrypt => 1,
        Op::Sign => 2,
        Op::Verify => 3,
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.login.is_some() {
            self.hsm.end_login(self.id);
        }
        self.hsm.remove_session_objects(&self.session_objects);
        if let Some((o, n)) = self.inflight.take() {
            self.hsm.report_inflight(Some((&o, n)), None);
        }
    }
}

impl Connection {
    pub fn new(hsm: Arc<Hsm>) -> Self {
        let id = hsm.connection_id();
        Self::with_id(hsm, id)
    }

    /// A connection with an id from [`Hsm::connection_id`] taken already.
    pub fn with_id(hsm: Arc<Hsm>, id: u64) -> Self {
        Connection {
            hsm,
            id,
            hello: None,
            user: None,
            login: None,
            ops: [None, None, None, None],
            find: None,
            session_objects: BTreeSet::new(),
            closing: false,
            peer: None,
            state: None,
            inflight: None,
        }
    }

    /// Its entry in the server's registry.
    pub fn set_state(&mut self, state: Arc<crate::registry::ConnState>) {
        self.state = Some(state);
    }

    /// Set the client's address (failed logins are rate-limited per address).
    pub fn set_peer(&mut self, peer: std::net::IpAddr) {
        self.peer = Some(peer);
    }

    /// The HSM this connection serves.
    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }

    /// This connection's id (for [`Hsm::register_probe`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The user logged in, if any.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// Whether the connection must be closed after the last reply.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// The largest reply body the client accepts.
    pub fn reply_limit(&self) -> usize {
        self.hello.map_or(MIN_FRAME, |(m, _)| m)
    }

    /// Handle one frame body; returns the complete reply frame.
    pub fn handle_body(&mut self, body: &[u8]) -> Vec<u8> {
        let reply = match wire::decode::<Request<'_>>(body) {
            Ok(req) => self.handle(req),
            Err(e) => {
                if self.hello.is_none() {
                    self.closing = true;
                }
                Reply::Error(e.rv())
            }
        };
        reply.encode(self.reply_limit())
    }

    /// Handle one request.
    pub fn handle(&mut self, req: Request<'_>) -> Reply {
        let reply = self.serve(req);
        self.report_inflight();
        reply
    }

    /// What the running operations buffer now, for the user logged in
    /// (counted in its [`Limits::max_user_session_bytes`]).
    ///
    /// [`Limits::max_user_session_bytes`]: crate::hsm::Limits::max_user_session_bytes
    fn report_inflight(&mut self) {
        let now = self.user.as_ref().map(|u| (u.clone(), self.held()));
        if now != self.inflight {
            let before = self.inflight.take();
            self.hsm.report_inflight(
                before.as_ref().map(|(o, n)| (o, *n)),
                now.as_ref().map(|(o, n)| (o, *n)),
            );
            self.inflight = now;
        }
    }

    /// What this connection holds besides its session objects: its running
    /// operations' buffers and its search cursor.
    fn held(&self) -> usize {
        let ops: usize = self.ops.iter().flatten().map(Running::buffered).sum();
        let find = self
            .find
            .as_ref()
            .map_or(0, |f| f.handles.capacity().saturating_mul(8));
        ops.saturating_add(find)
    }

    /// Whether `owner`'s connections may hold `more` bytes on this one (see
    /// [`Limits::max_user_session_bytes`]).
    ///
    /// [`Limits::max_user_session_bytes`]: crate::hsm::Limits::max_user_session_bytes
    fn user_has_room(&self, owner: &str, more: usize) -> bool {
        // What the user's connections hold, this one's as last reported
        // taken out and as it is now put in.
        let others = self
            .hsm
            .user_session_bytes(owner)
            .saturating_sub(self.inflight.as_ref().map_or(0, |(_, n)| *n));
        others.saturating_add(self.held()).saturating_add(more)
            <= self.hsm.limits.max_user_session_bytes
    }

    fn serve(&mut self, req: Request<'_>) -> Reply {
        if let Request::Hello {
            version,
            max_frame,
            app,
        } = req
        {
            if self.hello.is_some() {
                return Reply::Error(ckr::FUNCTION_FAILED);
            }
            if version != PROTOCOL_VERSION || (max_frame as usize) < MIN_FRAME {
                self.closing = true;
                return Reply::Error(ckr::DEVICE_ERROR);
            }
            let max = (max_frame as usize).min(MAX_FRAME_LIMIT);
            self.hello = Some((max, app));
            return Reply::Hello {
                version: PROTOCOL_VERSION,
                max_frame: SERVER_MAX_FRAME as u32,
            };
        }
        let Some((_, app)) = self.hello else {
            self.closing = true;
            return Reply::Error(ckr::DEVICE_ERROR);
        };
        // A login revoked meanwhile (user removed, password changed,
        // locked): the connection is logged out, so whatever needs a login
        // is CKR_USER_NOT_LOGGED_IN.
        if self
            .login
            .as_ref()
            .is_some_and(|(_, r)| r.load(std::sync::atomic::Ordering::SeqCst))
        {
            self.logout();
        }
        match req {
            Request::Ping => return Reply::Ok,
            Request::Login { user, password } => return self.login(user, password.0),
            Request::Logout => {
                self.logout();
                return Reply::Ok;
            }
            Request::GenerateRandom { len } => {
                let len = len as usize;
                if len > MAX_CHUNK {
                    return Reply::Error(ckr::DATA_LEN_RANGE);
                }
                let mut v = vec![0u8; len];
                return match openssl::rand::rand_bytes(&mut v) {
                    Ok(()) => Reply::Data(v),
                    Err(_) => Reply::Error(ckr::RANDOM_NO_RNG),
                };
            }
            // The OpenSSL generator seeds itself from the OS; an
            // application's seed is accepted and deliberately not mixed in.
            Request::SeedRandom { .. } => return Reply::Ok,
            _ => {}
        }
        let Some(user) = self.user.clone() else {
            return Reply::Error(ckr::USER_NOT_LOGGED_IN);
        };
        let hsm = self.hsm.clone();
        let s = Ctx {
            hsm: &hsm,
            user: &user,
            app,
            conn: self.id,
        };
        match req {
            Request::CreateObject { template } => done(self.create(&s, &template)),
            Request::CopyObject { object, template } => done(self.copy(&s, object, &template)),
            Request::DestroyObject { object } => done(self.destroy(&s, object)),
            Request::GetAttributes { object, types } => done(get_attributes(&s, object, &types)),
            Request::SetAttributes { object, template } => {
                done(set_attributes(&s, object, &template))
            }
            Request::GetObjectSize { object } => match s.object(object) {
                Ok(o) => Reply::Size(o.size()),
                Err(e) => Reply::Error(e),
            },
            Request::FindObjects { template, max } => {
                self.find = None;
                let mut handles =
                    s.hsm
                        .find(&user, &app, self.id, &template, self.hsm.limits.max_find);
                handles.shrink_to_fit();
                // A cursor kept for FindNext counts in the user's bytes.
                let kept = if handles.len() > (max as usize).min(MAX_FIND) {
                    handles.capacity().saturating_mul(8)
                } else {
                    0
                };
                if kept > 0 && !self.user_has_room(s.user, kept) {
                    log::warn!(
                        "event=quota user={:?} conn={} reason=user_session_bytes what=find",
                        s.user,
                        self.id
                    );
                    return Reply::Error(ckr::DEVICE_MEMORY);
                }
                self.find = Some(Find { handles, pos: 0 });
                self.find_next(&s, max)
            }
            Request::FindNext { max } => self.find_next(&s, max),
            Request::GenerateKey {
                mechanism,
                template,
            } => done(self.generate_key(&s, &mechanism, &template)),
            Request::GenerateKeyPair {
                mechanism,
                public,
                private,
            } => done(self.generate_pair(&s, &mechanism, &public, &private)),
            Request::CryptoInit { op, mechanism, key } => {
                let i = op_index(op);
                self.ops[i] = None;
                match s.key(key).and_then(|k| crypto::init(op, &mechanism, k)) {
                    Ok((r, info)) => {
                        self.ops[i] = Some(r);
                        Reply::KeyInfo(info)
                    }
                    Err(e) => Reply::Error(e),
                }
            }
            Request::CryptoUpdate { op, data } => {
                let i = op_index(op);
                let buffered: usize = self.ops.iter().flatten().map(Running::buffered).sum();
                if self.ops[i].is_none() {
                    return Reply::Error(ckr::OPERATION_NOT_INITIALIZED);
                }
                if buffered.saturating_add(data.len()) > self.hsm.limits.max_inflight_bytes
                    || !self.user_has_room(s.user, data.len())
                {
                    // The connection's cap on buffered bytes, across its
                    // running operations, and its user's across all its
                    // connections (session objects included).
                    self.ops[i] = None;
                    return Reply::Error(ckr::DEVICE_MEMORY);
                }
                let Some(r) = self.ops[i].as_mut() else {
                    return Reply::Error(ckr::OPERATION_NOT_INITIALIZED);
                };
                match r.update(data) {
                    Ok(out) => Reply::Data(out),
                    Err(e) => {
                        // An error ends the operation, as in PKCS#11.
                        self.ops[i] = None;
                        Reply::Error(e)
                    }
                }
            }
            Request::CryptoFinal {
                op,
                data,
                signature,
            } => {
                let Some(r) = self.ops[op_index(op)].take() else {
                    return Reply::Error(ckr::OPERATION_NOT_INITIALIZED);
                };
                finish_reply(op, r.finish(data, signature))
            }
            Request::CryptoOneShot {
                op,
                mechanism,
                key,
                data,
                signature,
            } => {
                self.ops[op_index(op)] = None;
                match s.key(key).and_then(|k| crypto::init(op, &mechanism, k)) {
                    Ok((r, _)) => finish_reply(op, r.finish(data, signature)),
                    Err(e) => Reply::Error(e),
                }
            }
            Request::CryptoCancel { op } => {
                self.ops[op_index(op)] = None;
                Reply::Ok
            }
            Request::WrapKey {
                mechanism,
                wrapping_key,
                key,
            } => done(wrap_key(&s, &mechanism, wrapping_key, key)),
            Request::UnwrapKey {
                mechanism,
                unwrapping_key,
                wrapped,
                template,
            } => done(self.unwrap_key(&s, &mechanism, unwrapping_key, wrapped, &template)),
            Request::DeriveKey {
                mechanism,
                base_key,
                template,
            } => done(self.derive_key(&s, &mechanism, base_key, &template)),
            Request::DigestKey { mechanism, key } => done(digest_key(&s, mechanism, key)),
            // Handled above.
            Request::Hello { .. }
            | Request::Ping
            | Request::Login { .. }
            | Request::Logout
            | Request::GenerateRandom { .. }
            | Request::SeedRandom { .. } => Reply::Error(ckr::GENERAL_ERROR),
        }
    }

    fn login(&mut self, user: &str, password: &[u8]) -> Reply {
        if let Some((cur, _)) = &self.login {
            if **cur != *user {
                return Reply::Error(ckr::USER_ANOTHER_ALREADY_LOGGED_IN);
            }
        }
        match self
            .hsm
            .login_session(user, password, self.peer, self.id, self.state.as_deref())
        {
            Ok(grant) => {
                if self.user.is_none() {
                    log::info!("event=login conn={} user={user:?}", self.id);
                }
                if self.user.as_ref().is_some_and(|u| *u != grant.owner) {
                    // Same name, another user (removed and added again):
                    // nothing of the old login carries over (its live
                    // entry is already the new one's).
                    self.login = None;
                    self.logout();
                }
                self.user = Some(grant.owner);
                self.login = Some((Arc::from(user), grant.revoked));
                Reply::Ok
            }
            // The failure is logged (with the reason) by `Hsm::login`.
            Err(e) => {
                if let Some(s) = &self.state {
                    s.login_failed();
                }
                Reply::Error(e)
            }
        }
    }

    fn logout(&mut self) {
        self.user = None;
        if self.login.take().is_some() {
            self.hsm.end_login(self.id);
        }
        self.ops = [None, None, None, None];
        self.find = None;
        let objs = std::mem::take(&mut self.session_objects);
        self.hsm.remove_session_objects(&objs);
    }

    fn find_next(&mut self, _s: &Ctx<'_>, max: u32) -> Reply {
        let Some(f) = self.find.as_mut() else {
            return Reply::Error(ckr::OPERATION_NOT_INITIALIZED);
        };
        let n = (max as usize).min(MAX_FIND);
        let end = (f.pos + n).min(f.handles.len());
        let handles = f.handles.get(f.pos..end).unwrap_or(&[]).to_vec();
        f.pos = end;
        let more = f.pos < f.handles.len();
        if !more {
            // Done: nothing kept (a FindNext now finds nothing more).
            *f = Find {
                handles: Vec::new(),
                pos: 0,
            };
        }
        Reply::Objects { handles, more }
    }

    /// Make a new object from attributes; session objects are tied to this
    /// connection.
    fn insert(&mut self, s: &Ctx<'_>, attrs: object::Attrs) -> Result<Arc<Object>, Rv> {
        self.insert_if_current(s, &[], attrs)?
            .ok_or(ckr::GENERAL_ERROR)
    }

    /// A new object made of `srcs`, inserted only if each is still the
    /// current version of its object ([`Hsm::put_if_current`]); `Ok(None)`:
    /// another session's write came first, read again.
    fn insert_if_current(
        &mut self,
        s: &Ctx<'_>,
        srcs: &[&Arc<Object>],
        attrs: object::Attrs,
    ) -> Result<Option<Arc<Object>>, Rv> {
        let o = self.new_object(s, attrs)?;
        let session = !o.is_token();
        let Some(o) = self.hsm.put_if_current(srcs, o)? else {
            return Ok(None);
        };
        if session {
            self.session_objects.insert(o.handle);
        }
        Ok(Some(o))
    }

    fn new_object(&mut self, s: &Ctx<'_>, attrs: object::Attrs) -> Result<Object, Rv> {
        let token = attrs
            .get(&cka::TOKEN)
            .and_then(|v| attr::read_bool(v).ok())
            .unwrap_or(false);
        let session = if token {
            if self.hsm.object_count(s.user) >= self.hsm.limits.max_objects_per_user {
                log::warn!("event=quota user={:?} reason=objects_per_user", s.user);
                return Err(ckr::DEVICE_MEMORY);
            }
            None
        } else {
            self.session_objects
                .retain(|h| self.hsm.get(s.user, &s.app, s.conn, *h).is_some());
            if self.session_objects.len() >= self.hsm.limits.max_session_objects {
                return Err(ckr::DEVICE_MEMORY);
            }
            Some(SessionScope {
                app: s.app,
                conn: self.id,
            })
        };
        let mut o = Object::new(0, s.user.to_string(), session, attrs);
        if !self.hsm.fits_quota(&o, None) {
            log::warn!(
                "event=quota user={:?} conn={} reason={}",
                s.user,
                self.id,
                if token { "user_bytes" } else { "session_bytes" }
            );
            return Err(ckr::DEVICE_MEMORY);
        }
        o.handle = self.hsm.alloc_handle()?;
        Ok(o)
    }

    fn create(&mut self, s: &Ctx<'_>, t: &[Attribute<'_>]) -> Result<Reply, Rv> {
        let attrs = object::build(t, Origin::Create)?;
        let o = self.insert(s, attrs)?;
        // Parse the material once now: a key that cannot be used is refused.
        if let Err(e) = o.material() {
            let _ = self.hsm.remove(o.handle);
            return Err(e);
        }
        Ok(Reply::Object(o.handle))
    }

    /// `C_CopyObject`: the copy is made of the version read and inserted
    /// only if that version is still the current one (as
    /// [`set_attributes`]), so no copy is of a version another session has
    /// already changed (made sensitive, say).
    fn copy(&mut self, s: &Ctx<'_>, h: u64, t: &[Attribute<'_>]) -> Result<Reply, Rv> {
        for _ in 0..CAS_TRIES {
            let src = s.object(h)?;
            if !src.flag(cka::COPYABLE) {
                return Err(ckr::ACTION_PROHIBITED);
            }
            let attrs = object::apply(&src.attrs, t, true)?;
            if let Some(o) = self.insert_if_current(s, &[&src], attrs)? {
                return Ok(Reply::Object(o.handle));
            }
        }
        Err(ckr::FUNCTION_FAILED)
    }

    fn destroy(&mut self, s: &Ctx<'_>, h: u64) -> Result<Reply, Rv> {
        let o = s.object(h)?;
        if !o.flag(cka::DESTROYABLE) {
            return Err(ckr::ACTION_PROHIBITED);
        }
        self.hsm.remove(h)?;
        self.session_objects.remove(&h);
        Ok(Reply::Ok)
    }

    fn generate_key(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        t: &[Attribute<'_>],
    ) -> Result<Reply, Rv> {
        let key_type = match m.ty {
            ckm::AES_KEY_GEN => ckk::AES,
            ckm::GENERIC_SECRET_KEY_GEN => ckk::GENERIC_SECRET,
            ckm::SHA_1_KEY_GEN => ckk::SHA_1_HMAC,
            ckm::SHA224_KEY_GEN => ckk::SHA224_HMAC,
            ckm::SHA256_KEY_GEN => ckk::SHA256_HMAC,
            ckm::SHA384_KEY_GEN => ckk::SHA384_HMAC,
            ckm::SHA512_KEY_GEN => ckk::SHA512_HMAC,
            _ => return Err(ckr::MECHANISM_INVALID),
        };
        if !matches!(m.param, wire::MechParam::None) {
            return Err(ckr::MECHANISM_PARAM_INVALID);
        }
        let mut a = object::build(
            t,
            Origin::Generate {
                class: cko::SECRET_KEY,
                key_type,
                mech: m.ty,
            },
        )?;
        keys::generate_secret(m.ty, &mut a, t)?;
        object::finish_generated(&mut a);
        let o = self.insert(s, a)?;
        Ok(Reply::Object(o.handle))
    }

    fn generate_pair(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        pub_t: &[Attribute<'_>],
        priv_t: &[Attribute<'_>],
    ) -> Result<Reply, Rv> {
        let key_type = match m.ty {
            ckm::RSA_PKCS_KEY_PAIR_GEN => ckk::RSA,
            ckm::EC_KEY_PAIR_GEN => ckk::EC,
            ckm::EC_EDWARDS_KEY_PAIR_GEN => ckk::EC_EDWARDS,
            _ => return Err(ckr::MECHANISM_INVALID),
        };
        if !matches!(m.param, wire::MechParam::None) {
            return Err(ckr::MECHANISM_PARAM_INVALID);
        }
        let origin = |class| Origin::Generate {
            class,
            key_type,
            mech: m.ty,
        };
        let mut pa = object::build(pub_t, origin(cko::PUBLIC_KEY))?;
        let mut ka = object::build(priv_t, origin(cko::PRIVATE_KEY))?;
        keys::generate_pair(m.ty, &mut pa, &mut ka, pub_t, priv_t)?;
        object::finish_generated(&mut ka);
        let po = self.new_object(s, pa)?;
        let ko = self.new_object(s, ka)?;
        let (ph, kh) = (po.handle, ko.handle);
        let sessions = [(!po.is_token(), ph), (!ko.is_token(), kh)];
        self.hsm.put_pair(po, ko)?;
        for (session, h) in sessions {
            if session {
                self.session_objects.insert(h);
            }
        }
        Ok(Reply::KeyPair {
            public: ph,
            private: kh,
        })
    }

    fn unwrap_key(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        t: &[Attribute<'_>],
    ) -> Result<Reply, Rv> {
        let k = s
            .object(unwrapping_key)
            .map_err(|_| ckr::UNWRAPPING_KEY_HANDLE_INVALID)?;
        let value = match m.ty {
            ckm::AES_KEY_WRAP | ckm::AES_KEY_WRAP_PAD => {
                let kek = aes_wrap_key(m, &k, cka::UNWRAP, ckr::UNWRAPPING_KEY_TYPE_INCONSISTENT)?;
                crate::wrap::unwrap_iv(m.ty, &kek, wrapped, wrap_iv(m))?
            }
            ckm::RSA_PKCS | ckm::RSA_PKCS_OAEP => {
                if k.class() != Some(cko::PRIVATE_KEY) || k.key_type() != Some(ckk::RSA) {
                    return Err(ckr::UNWRAPPING_KEY_TYPE_INCONSISTENT);
                }
                let r = crypto::init_wrap(Op::Decrypt, m, k.clone()).map_err(|e| match e {
                    ckr::KEY_TYPE_INCONSISTENT => ckr::UNWRAPPING_KEY_TYPE_INCONSISTENT,
                    e => e,
                })?;
                zeroize::Zeroizing::new(r.finish(wrapped, &[]).map_err(|e| match e {
                    ckr::ENCRYPTED_DATA_LEN_RANGE => ckr::WRAPPED_KEY_LEN_RANGE,
                    ckr::ENCRYPTED_DATA_INVALID => ckr::WRAPPED_KEY_INVALID,
                    e => e,
                })?)
            }
            _ => return Err(ckr::MECHANISM_INVALID),
        };
        k.check_mechanism(m.ty)?;
        let class = attr::find_ulong(t, cka::CLASS)?.unwrap_or(cko::SECRET_KEY);
        // The template, less what the unwrapped material decides.
        let mut full: Vec<Attribute<'_>> = t
            .iter()
            .filter(|a| !is_material(a.ty) && a.ty != cka::VALUE_LEN)
            .copied()
            .collect();
        let class_bytes = attr::ulong(class);
        if attr::find(t, cka::CLASS).is_none() {
            full.push(Attribute {
                ty: cka::CLASS,
                value: &class_bytes,
            });
        }
        let material: Vec<(u64, zeroize::Zeroizing<Vec<u8>>)>;
        let kt_bytes;
        match class {
            cko::SECRET_KEY => {
                if let Some(len) = attr::find_ulong(t, cka::VALUE_LEN)? {
                    if len != value.len() as u64 {
                        return Err(ckr::TEMPLATE_INCONSISTENT);
                    }
                }
                material = vec![(cka::VALUE, value)];
            }
            cko::PRIVATE_KEY => {
                if m.ty != ckm::AES_KEY_WRAP && m.ty != ckm::AES_KEY_WRAP_PAD {
                    // RSA encryption cannot hold a private key.
                    return Err(ckr::TEMPLATE_INCONSISTENT);
                }
                let (kt, parts) = keys::private_from_pkcs8(&value)?;
                match attr::find_ulong(t, cka::KEY_TYPE)? {
                    Some(given) if given != kt => return Err(ckr::TEMPLATE_INCONSISTENT),
                    Some(_) => {}
                    None => {
                        kt_bytes = attr::ulong(kt);
                        full.push(Attribute {
                            ty: cka::KEY_TYPE,
                            value: &kt_bytes,
                        });
                    }
                }
                material = parts;
            }
            _ => return Err(ckr::TEMPLATE_INCONSISTENT),
        }
        for (ty, v) in &material {
            full.push(Attribute { ty: *ty, value: v });
        }
        let mut attrs = object::build(&full, Origin::Create)?;
        // Unwrapped: not made here, and it has been outside the token.
        object::set_bool(&mut attrs, cka::LOCAL, false);
        object::set_bool(&mut attrs, cka::ALWAYS_SENSITIVE, false);
        object::set_bool(&mut attrs, cka::NEVER_EXTRACTABLE, false);
        let o = self.insert(s, attrs)?;
        if let Err(e) = o.material() {
            let _ = self.hsm.remove(o.handle);
            return Err(e);
        }
        Ok(Reply::Object(o.handle))
    }

    /// `C_DeriveKey`.
    fn derive_key(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        base: u64,
        t: &[Attribute<'_>],
    ) -> Result<Reply, Rv> {
        match m.ty {
            ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE => self.derive_ecdh(s, m, base, t),
            ckm::CONCATENATE_BASE_AND_KEY
            | ckm::CONCATENATE_BASE_AND_DATA
            | ckm::CONCATENATE_DATA_AND_BASE
            | ckm::XOR_BASE_AND_DATA
            | ckm::EXTRACT_KEY_FROM_KEY
            | ckm::AES_ECB_ENCRYPT_DATA
            | ckm::AES_CBC_ENCRYPT_DATA => {
                // As `copy`: the new key is inserted only if the base keys
                // are still the versions it was made from.
                for _ in 0..CAS_TRIES {
                    if let Some(r) = self.derive_secret(s, m, base, t)? {
                        return Ok(r);
                    }
                }
                Err(ckr::FUNCTION_FAILED)
            }
            _ => Err(ckr::MECHANISM_INVALID),
        }
    }

    /// The simple derivations from a secret key: concatenation, XOR,
    /// extraction (v2.40 §2.x, "Miscellaneous simple key derivation
    /// mechanisms") and AES encryption of data (ECB, CBC). Where the new
    /// value shows bits of a base key, the new key is sensitive if a base
    /// key is and not extractable if a base key is not, as v2.40 says, so
    /// that no derivation exports what the profile keeps in.
    fn derive_secret(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        base: u64,
        t: &[Attribute<'_>],
    ) -> Result<Option<Reply>, Rv> {
        use wire::MechParam;
        let b = s.key(base)?;
        if b.class() != Some(cko::SECRET_KEY) {
            return Err(ckr::KEY_TYPE_INCONSISTENT);
        }
        if !b.flag(cka::DERIVE) {
            return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
        }
        b.check_mechanism(m.ty)?;
        let keys::KeyMaterial::Secret(base_value) = b.material()? else {
            return Err(ckr::KEY_TYPE_INCONSISTENT);
        };
        let bad = ckr::MECHANISM_PARAM_INVALID;
        let mut other: Option<Arc<Object>> = None;
        let template_len = attr::find_ulong(t, cka::VALUE_LEN)?
            .map(|l| usize::try_from(l).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID))
            .transpose()?;
        let aes = |data: &[u8], iv: Option<&[u8; 16]>| -> Result<Vec<u8>, Rv> {
            if b.key_type() != Some(ckk::AES) {
                return Err(ckr::KEY_TYPE_INCONSISTENT);
            }
            if data.is_empty() || !data.len().is_multiple_of(16) {
                return Err(bad);
            }
            let cipher = match (base_value.len(), iv.is_some()) {
                (16, false) => openssl::symm::Cipher::aes_128_ecb(),
                (24, false) => openssl::symm::Cipher::aes_192_ecb(),
                (32, false) => openssl::symm::Cipher::aes_256_ecb(),
                (16, true) => openssl::symm::Cipher::aes_128_cbc(),
                (24, true) => openssl::symm::Cipher::aes_192_cbc(),
                (32, true) => openssl::symm::Cipher::aes_256_cbc(),
                _ => return Err(ckr::KEY_SIZE_RANGE),
            };
            let e = |_| ckr::FUNCTION_FAILED;
            let mut c = openssl::symm::Crypter::new(
                cipher,
                openssl::symm::Mode::Encrypt,
                base_value,
                iv.map(|v| &v[..]),
            )
            .map_err(e)?;
            c.pad(false);
            let mut out = vec![0u8; data.len() + 16];
            let n = c.update(data, &mut out).map_err(e)?;
            let f = c.finalize(&mut out[n..]).map_err(e)?;
            out.truncate(n + f);
            Ok(out)
        };
        // The key policy (docs/security.md): the derivations whose result
        // shows a base key's bits (all of them, or a part: concatenation,
        // XOR, extraction) never take a key that does not leave the token.
        // Cut short they reveal it a few bits at a time, whole they make a
        // twin of it with the attributes the caller chooses.
        let shows_bits = matches!(
            m.ty,
            ckm::CONCATENATE_BASE_AND_KEY
                | ckm::CONCATENATE_BASE_AND_DATA
                | ckm::CONCATENATE_DATA_AND_BASE
                | ckm::XOR_BASE_AND_DATA
                | ckm::EXTRACT_KEY_FROM_KEY
        );
        if shows_bits && !b.exportable() {
            return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
        }
        let (value, shows_base): (zeroize::Zeroizing<Vec<u8>>, bool) = match (m.ty, m.param) {
            (ckm::CONCATENATE_BASE_AND_KEY, MechParam::Ulong(h)) => {
                let o = s.key(h)?;
                if o.class() != Some(cko::SECRET_KEY) {
                    return Err(ckr::KEY_TYPE_INCONSISTENT);
                }
                if !o.exportable() {
                    return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
                }
                let keys::KeyMaterial::Secret(v) = o.material()? else {
                    return Err(ckr::KEY_TYPE_INCONSISTENT);
                };
                let mut out = base_value.to_vec();
                out.extend_from_slice(v);
                other = Some(o.clone());
                (zeroize::Zeroizing::new(out), true)
            }
            (ckm::CONCATENATE_BASE_AND_DATA, MechParam::Bytes(d)) => {
                let mut out = base_value.to_vec();
                out.extend_from_slice(d);
                (zeroize::Zeroizing::new(out), true)
            }
            (ckm::CONCATENATE_DATA_AND_BASE, MechParam::Bytes(d)) => {
                let mut out = d.to_vec();
                out.extend_from_slice(base_value);
                (zeroize::Zeroizing::new(out), true)
            }
            (ckm::XOR_BASE_AND_DATA, MechParam::Bytes(d)) if !d.is_empty() => {
                let out: Vec<u8> = base_value.iter().zip(d).map(|(a, b)| a ^ b).collect();
                (zeroize::Zeroizing::new(out), true)
            }
            (ckm::EXTRACT_KEY_FROM_KEY, MechParam::Ulong(bit)) => {
                // The bits from `bit` on (most significant bit of the first
                // byte is bit 0), wrapping around the base value.
                let len = template_len.ok_or(ckr::TEMPLATE_INCOMPLETE)?;
                let total = base_value.len() * 8;
                if total == 0 || len == 0 || len > keys::MAX_SECRET {
                    return Err(ckr::TEMPLATE_INCONSISTENT);
                }
                let start = usize::try_from(bit).map_err(|_| bad)? % total;
                let mut out = vec![0u8; len];
                for i in 0..len * 8 {
                    let src = (start + i) % total;
                    let on = base_value[src / 8] >> (7 - src % 8) & 1;
                    out[i / 8] |= on << (7 - i % 8);
                }
                (zeroize::Zeroizing::new(out), true)
            }
            (ckm::AES_ECB_ENCRYPT_DATA, MechParam::Bytes(d)) => {
                (zeroize::Zeroizing::new(aes(d, None)?), false)
            }
            (ckm::AES_CBC_ENCRYPT_DATA, MechParam::AesCbcData { iv, data }) => {
                (zeroize::Zeroizing::new(aes(data, Some(&iv))?), false)
            }
            _ => return Err(bad),
        };
        match attr::find_ulong(t, cka::CLASS)? {
            None | Some(cko::SECRET_KEY) => {}
            Some(_) => return Err(ckr::TEMPLATE_INCONSISTENT),
        }
        if t.iter().any(|a| is_material(a.ty)) {
            return Err(ckr::TEMPLATE_INCONSISTENT);
        }
        let value = match template_len {
            Some(l) if l > value.len() => return Err(ckr::TEMPLATE_INCONSISTENT),
            Some(l) => zeroize::Zeroizing::new(value[..l].to_vec()),
            None => value,
        };
        let kt = attr::find_ulong(t, cka::KEY_TYPE)?.unwrap_or(ckk::GENERIC_SECRET);
        let bases: Vec<&Object> = std::iter::once(&*b).chain(other.as_deref()).collect();
        // The key policy (docs/security.md): a key derived from a key that
        // never leaves the token never leaves it either, and holds no fewer
        // bits than that key.
        let sealed = bases.iter().any(|k| !k.exportable());
        if sealed && value.len() < base_value.len() {
            return Err(ckr::KEY_SIZE_RANGE);
        }
        let sensitive = sealed
            || attr::find_bool(t, cka::SENSITIVE)?.unwrap_or(false)
            || (shows_base && bases.iter().any(|k| k.flag(cka::SENSITIVE)));
        let extractable = !sealed
            && attr::find_bool(t, cka::EXTRACTABLE)?.unwrap_or(false)
            && !(shows_base && bases.iter().any(|k| !k.flag(cka::EXTRACTABLE)));
        let class_bytes = attr::ulong(cko::SECRET_KEY);
        let kt_bytes = attr::ulong(kt);
        let sensitive_byte = attr::bool_byte(sensitive);
        let extractable_byte = attr::bool_byte(extractable);
        let mut full: Vec<Attribute<'_>> = t
            .iter()
            .filter(|a| {
                !matches!(
                    a.ty,
                    cka::VALUE_LEN | cka::CLASS | cka::KEY_TYPE | cka::SENSITIVE | cka::EXTRACTABLE
                )
            })
            .copied()
            .collect();
        for (ty, value) in [
            (cka::CLASS, &class_bytes[..]),
            (cka::KEY_TYPE, &kt_bytes[..]),
            (cka::SENSITIVE, &sensitive_byte[..]),
            (cka::EXTRACTABLE, &extractable_byte[..]),
            (cka::VALUE, &value[..]),
        ] {
            full.push(Attribute { ty, value });
        }
        let mut attrs = object::build(&full, Origin::Create)?;
        let always_sensitive = sensitive && bases.iter().all(|k| k.flag(cka::ALWAYS_SENSITIVE));
        let never_extractable =
            !extractable && bases.iter().all(|k| k.flag(cka::NEVER_EXTRACTABLE));
        object::set_bool(&mut attrs, cka::LOCAL, false);
        object::set_bool(&mut attrs, cka::ALWAYS_SENSITIVE, always_sensitive);
        object::set_bool(&mut attrs, cka::NEVER_EXTRACTABLE, never_extractable);
        let srcs: Vec<&Arc<Object>> = std::iter::once(&b).chain(other.as_ref()).collect();
        Ok(self
            .insert_if_current(s, &srcs, attrs)?
            .map(|o| Reply::Object(o.handle)))
    }

    /// `C_DeriveKey` with `CKM_ECDH1_DERIVE` (and the cofactor variant,
    /// the same on every curve offered: their cofactor is 1).
    fn derive_ecdh(
        &mut self,
        s: &Ctx<'_>,
        m: &Mechanism<'_>,
        base: u64,
        t: &[Attribute<'_>],
    ) -> Result<Reply, Rv> {
        if !matches!(m.ty, ckm::ECDH1_DERIVE | ckm::ECDH1_COFACTOR_DERIVE) {
            return Err(ckr::MECHANISM_INVALID);
        }
        let wire::MechParam::Ecdh {
            kdf,
            shared_data,
            public_data,
        } = m.param
        else {
            return Err(ckr::MECHANISM_PARAM_INVALID);
        };
        hsmlink_core::mech::check_params(m)?;
        let b = s.key(base)?;
        if b.class() != Some(cko::PRIVATE_KEY) || b.key_type() != Some(ckk::EC) {
            return Err(ckr::KEY_TYPE_INCONSISTENT);
        }
        if !b.flag(cka::DERIVE) {
            return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
        }
        b.check_mechanism(m.ty)?;
        let keys::KeyMaterial::EcPrivate { key, curve } = b.material()? else {
            return Err(ckr::KEY_TYPE_INCONSISTENT);
        };
        let peer = keys::ec_peer_key(*curve, public_data)?;
        let e = |_| ckr::FUNCTION_FAILED;
        let own = openssl::pkey::PKey::from_ec_key(key.clone()).map_err(e)?;
        let mut deriver = openssl::derive::Deriver::new(&own).map_err(e)?;
        deriver
            .set_peer(&peer)
            .map_err(|_| ckr::MECHANISM_PARAM_INVALID)?;
        let z = zeroize::Zeroizing::new(deriver.derive_to_vec().map_err(e)?);

        match attr::find_ulong(t, cka::CLASS)? {
            None | Some(cko::SECRET_KEY) => {}
            Some(_) => return Err(ckr::TEMPLATE_INCONSISTENT),
        }
        if t.iter().any(|a| is_material(a.ty)) {
            return Err(ckr::TEMPLATE_INCONSISTENT);
        }
        let kt = attr::find_ulong(t, cka::KEY_TYPE)?.unwrap_or(ckk::GENERIC_SECRET);
        let len = match (attr::find_ulong(t, cka::VALUE_LEN)?, kt) {
            (Some(l), _) => usize::try_from(l).map_err(|_| ckr::ATTRIBUTE_VALUE_INVALID)?,
            (None, ckk::AES) => return Err(ckr::TEMPLATE_INCOMPLETE),
            (None, _) => z.len(),
        };
        let value = match hsmlink_core::mech::ecdh_kdf_hash(kdf) {
            // CKD_NULL: the shared secret itself; a shorter key keeps its
            // trailing bytes (as SoftHSM does).
            None => {
                let start = z.len().checked_sub(len).ok_or(ckr::KEY_SIZE_RANGE)?;
                zeroize::Zeroizing::new(z[start..].to_vec())
            }
            Some(h) => x963_kdf(h, &z, shared_data, len)?,
        };
        let class_bytes = attr::ulong(cko::SECRET_KEY);
        let kt_bytes = attr::ulong(kt);
        let mut full: Vec<Attribute<'_>> = t
            .iter()
            .filter(|a| !matches!(a.ty, cka::VALUE_LEN | cka::CLASS | cka::KEY_TYPE))
            .copied()
            .collect();
        full.push(Attribute {
            ty: cka::CLASS,
            value: &class_bytes,
        });
        full.push(Attribute {
            ty: cka::KEY_TYPE,
            value: &kt_bytes,
        });
        full.push(Attribute {
            ty: cka::VALUE,
            value: &value,
        });
        let mut attrs = object::build(&full, Origin::Create)?;
        // v2.40 C_DeriveKey: derived keys are not local; they have always
        // been sensitive / never extractable only if the base key has too.
        let flag = |a: &object::Attrs, ty| {
            a.get(&ty)
                .and_then(|v| attr::read_bool(v).ok())
                .unwrap_or(false)
        };
        let always_sensitive = b.flag(cka::ALWAYS_SENSITIVE) && flag(&attrs, cka::SENSITIVE);
        let never_extractable = b.flag(cka::NEVER_EXTRACTABLE) && !flag(&attrs, cka::EXTRACTABLE);
        object::set_bool(&mut attrs, cka::LOCAL, false);
        object::set_bool(&mut attrs, cka::ALWAYS_SENSITIVE, always_sensitive);
        object::set_bool(&mut attrs, cka::NEVER_EXTRACTABLE, never_extractable);
        let o = self.insert(s, attrs)?;
        Ok(Reply::Object(o.handle))
    }
}

/// ANSI X9.63 KDF: `H(Z || counter || SharedInfo)` for counter = 1, 2, ...
/// (32-bit big-endian), concatenated and cut to `len` bytes.
fn x963_kdf(
    h: hsmlink_core::mech::Hash,
    z: &[u8],
    shared: &[u8],
    len: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Rv> {
    use hsmlink_core::mech::{Hasher, MAX_DIGEST};
    if len > keys::MAX_SECRET {
        return Err(ckr::KEY_SIZE_RANGE);
    }
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(len + MAX_DIGEST));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut hasher = Hasher::new(h);
        hasher.update(z);
        hasher.update(&counter.to_be_bytes());
        hasher.update(shared);
        let mut d = zeroize::Zeroizing::new([0u8; MAX_DIGEST]);
        let n = hasher.finish(&mut d);
        out.extend_from_slice(&d[..n]);
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// Key material attributes: never taken from an unwrap or derive template.
fn is_material(ty: u64) -> bool {
    matches!(
        ty,
        cka::VALUE
            | cka::MODULUS
            | cka::PUBLIC_EXPONENT
            | cka::PRIVATE_EXPONENT
            | cka::PRIME_1
            | cka::PRIME_2
            | cka::EXPONENT_1
            | cka::EXPONENT_2
            | cka::COEFFICIENT
            | cka::EC_PARAMS
            | cka::EC_POINT
    )
}

/// The initial value of an AES key wrap, if the application gave one.
fn wrap_iv<'a>(m: &Mechanism<'a>) -> Option<&'a [u8]> {
    match m.param {
        wire::MechParam::Bytes(iv) => Some(iv),
        _ => None,
    }
}

fn finish_reply(op: Op, r: Result<Vec<u8>, Rv>) -> Reply {
    match (op, r) {
        (Op::Verify, Ok(_)) => Reply::Ok,
        (_, Ok(d)) => Reply::Data(d),
        (_, Err(e)) => Reply::Error(e),
    }
}

/// What a request runs as.
struct Ctx<'a> {
    hsm: &'a Hsm,
    user: &'a str,
    app: [u8; 16],
    conn: u64,
}

impl Ctx<'_> {
    fn object(&self, h: u64) -> Result<Arc<Object>, Rv> {
        self.hsm
            .get(self.user, &self.app, self.conn, h)
            .ok_or(ckr::OBJECT_HANDLE_INVALID)
    }

    fn key(&self, h: u64) -> Result<Arc<Object>, Rv> {
        let o = self
            .hsm
            .get(self.user, &self.app, self.conn, h)
            .ok_or(ckr::KEY_HANDLE_INVALID)?;
        match o.class() {
            Some(cko::PUBLIC_KEY | cko::PRIVATE_KEY | cko::SECRET_KEY) => Ok(o),
            _ => Err(ckr::KEY_HANDLE_INVALID),
        }
    }
}

fn get_attributes(s: &Ctx<'_>, h: u64, types: &[u64]) -> Result<Reply, Rv> {
    let o = s.object(h)?;
    let v = types
        .iter()
        .map(|ty| {
            if o.hides(*ty) {
                OwnedAttr::Sensitive
            } else {
                match o.get(*ty) {
                    Some(v) => OwnedAttr::Value(v.to_vec()),
                    None => OwnedAttr::Invalid,
                }
            }
        })
        .collect();
    Ok(Reply::Attributes(v))
}

/// How many times a change (or copy) is read and tried again when another
/// session's write came first, before `CKR_FUNCTION_FAILED`.
const CAS_TRIES: usize = 1000;

/// `C_SetAttributeValue`: the template is applied to the version read and
/// swapped in only if that version is still the current one; otherwise it
/// is read and checked again (the rules apply to what is there now).
fn set_attributes(s: &Ctx<'_>, h: u64, t: &[Attribute<'_>]) -> Result<Reply, Rv> {
    for _ in 0..CAS_TRIES {
        let o = s.object(h)?;
        let attrs = object::apply(&o.attrs, t, false)?;
        let n = Object::new(o.handle, o.owner.clone(), o.session, attrs);
        if !s.hsm.fits_quota(&n, Some(&o)) {
            log::warn!("event=quota user={:?} reason=object_grows", s.user);
            return Err(ckr::DEVICE_MEMORY);
        }
        if s.hsm.replace_if(&o, n)?.is_some() {
            return Ok(Reply::Ok);
        }
    }
    Err(ckr::FUNCTION_FAILED)
}

/// The AES key of a wrap/unwrap operation, checked.
fn aes_wrap_key(
    m: &Mechanism<'_>,
    k: &Object,
    usage: u64,
    inconsistent: Rv,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Rv> {
    if !matches!(m.ty, ckm::AES_KEY_WRAP | ckm::AES_KEY_WRAP_PAD) {
        return Err(ckr::MECHANISM_INVALID);
    }
    match m.param {
        wire::MechParam::None => {}
        wire::MechParam::Bytes(iv) if iv.len() == if m.ty == ckm::AES_KEY_WRAP { 8 } else { 4 } => {
        }
        _ => return Err(ckr::MECHANISM_PARAM_INVALID),
    }
    if k.class() != Some(cko::SECRET_KEY) || k.key_type() != Some(ckk::AES) {
        return Err(inconsistent);
    }
    if !k.flag(usage) {
        return Err(ckr::KEY_FUNCTION_NOT_PERMITTED);
    }
    k.check_mechanism(m.ty)?;
    match k.material()? {
        keys::KeyMaterial::Secret(v) => Ok(v.clone()),
        _ => Err(inconsistent),
    }
}

fn wrap_key(s: &Ctx<'_>, m: &Mechanism<'_>, wrapping: u64, key: u64) -> Result<Reply, Rv> {
    let w = s
        .object(wrapping)
        .map_err(|_| ckr::WRAPPING_KEY_HANDLE_INVALID)?;
    let k = s.key(key)?;
    // The profile: a non-exportable key leaves the token in no form.
    if !matches!(k.class(), Some(cko::SECRET_KEY | cko::PRIVATE_KEY)) {
        return Err(ckr::KEY_NOT_WRAPPABLE);
    }
    if !k.exportable() {
        return Err(ckr::KEY_UNEXTRACTABLE);
    }
    if k.flag(cka::WRAP_WITH_TRUSTED) && !w.flag(cka::TRUSTED) {
        return Err(ckr::KEY_NOT_WRAPPABLE);
    }
    // A secret key travels as its value, a private key as PKCS#8.
    let plain = match k.material()? {
        keys::KeyMaterial::Secret(v) => v.clone(),
        other => keys::private_to_pkcs8(other)?,
    };
    match m.ty {
        ckm::AES_KEY_WRAP | ckm::AES_KEY_WRAP_PAD => {
            let kek = aes_wrap_key(m, &w, cka::WRAP, ckr::WRAPPING_KEY_TYPE_INCONSISTENT)?;
            Ok(Reply::Data(crate::wrap::wrap_iv(
                m.ty,
                &kek,
                &plain,
                wrap_iv(m),
            )?))
        }
        ckm::RSA_PKCS | ckm::RSA_PKCS_OAEP => {
            if w.class() != Some(cko::PUBLIC_KEY) || w.key_type() != Some(ckk::RSA) {
                return Err(ckr::WRAPPING_KEY_TYPE_INCONSISTENT);
            }
            w.check_mechanism(m.ty)?;
            if k.class() != Some(cko::SECRET_KEY) {
                // A private key is longer than one RSA block.
                return Err(ckr::KEY_NOT_WRAPPABLE);
            }
            let r = crypto::init_wrap(Op::Encrypt, m, w.clone()).map_err(|e| match e {
                ckr::KEY_TYPE_INCONSISTENT => ckr::WRAPPING_KEY_TYPE_INCONSISTENT,
                e => e,
            })?;
            let c = r.finish(&plain, &[]).map_err(|e| match e {
                ckr::DATA_LEN_RANGE => ckr::KEY_SIZE_RANGE,
                e => e,
            })?;
            Ok(Reply::Data(c))
        }
        _ => Err(ckr::MECHANISM_INVALID),
    }
}

/// `DigestKey`: the value of an exportable secret key (the module feeds it
/// to its running digest). A non-exportable key is `CKR_KEY_INDIGESTIBLE`:
/// its value never leaves the server.
fn digest_key(s: &Ctx<'_>, mech: u64, key: u64) -> Result<Reply, Rv> {
    if hsmlink_core::mech::Hash::from_mechanism(mech).is_none() {
        return Err(ckr::MECHANISM_INVALID);
    }
    let k = s.key(key)?;
    if k.class() != Some(cko::SECRET_KEY) || !k.exportable() {
        return Err(ckr::KEY_INDIGESTIBLE);
    }
    match k.material()? {
        keys::KeyMaterial::Secret(v) => Ok(Reply::Data(v.to_vec())),
        _ => Err(ckr::KEY_INDIGESTIBLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_frames_are_the_wire_frames() {
        let replies = [
            Reply::Ok,
            Reply::Error(ckr::PIN_INCORRECT),
            Reply::Data(vec![7; 300]),
            Reply::Objects {
                handles: vec![1, 2, 3],
                more: true,
            },
            Reply::Attributes(vec![
                OwnedAttr::Value(vec![1]),
                OwnedAttr::Sensitive,
                OwnedAttr::Invalid,
            ]),
        ];
        for r in replies {
            let mine = r.encode(MAX_FRAME_LIMIT);
            let mut buf = vec![0u8; 4096];
            let n = r.with_response(|resp| wire::encode_frame(resp, &mut buf).unwrap());
            assert_eq!(mine, buf[..n], "{r:?}");
        }
        // Too long for the peer: an error instead.
        let big = Reply::Data(vec![0; 2000]).encode(MIN_FRAME);
        let back: Response<'_> = wire::decode(&big[HEADER_LEN..]).unwrap();
        assert_eq!(back, Response::Error(ckr::DATA_LEN_RANGE));
    }
}
