//! The state shared by every connection: users, the object table (token
//! objects cached from the store, session objects in memory), the handle
//! allocator and the indexes used by searches.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use hsmlink_core::ck::{cka, ckr, Rv};
use hsmlink_core::wire::Attribute;

use crate::object::Object;
use crate::store::{LockRule, ObjectRow, Store, StoreError, Swap, UserRecord};
use crate::users::{self, LoginPolicy};
use crate::vault::{self, Keyring, MasterKey, Unlock};

/// Handles are below 2^31 so that they fit a 32-bit `CK_ULONG`.
pub const HANDLE_LIMIT: u64 = 1 << 31;
/// Locks serializing password checks per user (by a keyed hash of the name).
const VERIFY_STRIPES: usize = 64;
/// Handles reserved in the store at a time.
const HANDLE_BLOCK: u64 = 256;
/// How often a server of a fleet (shared store) checks the records of its
/// logged-in users for a removal, a password change or a lock made through
/// another server.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes counted for an object beyond its attributes (table entry,
/// indexes, parsed key), in the byte quotas.
pub const OBJECT_OVERHEAD: usize = 512;

/// Bytes an object counts for in the byte quotas.
pub fn quota_bytes(o: &Object) -> usize {
    usize::try_from(o.size())
        .unwrap_or(usize::MAX)
        .saturating_add(OBJECT_OVERHEAD)
}

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Simultaneous connections.
    pub max_connections: usize,
    /// Simultaneous connections that have not logged in (yet): past it,
    /// one of them is ended to make room (see [`crate::registry`]).
    pub max_unauthenticated: usize,
    /// Simultaneous connections from one client address.
    pub max_connections_per_address: usize,
    /// Simultaneous connections logged in as one user (claimed at its
    /// login, kept after a logout): past it, a login with the right
    /// password is `CKR_DEVICE_MEMORY`, so that one valid user cannot hold
    /// every slot of [`Limits::max_connections`].
    pub max_connections_per_user: usize,
    /// Milliseconds from a connection's accept to its successful login
    /// (TLS handshake, `Hello`, `Login`).
    pub login_timeout_ms: u64,
    /// Milliseconds from the first byte of a request frame to its last.
    pub frame_timeout_ms: u64,
    /// Session objects one connection may create.
    pub max_session_objects: usize,
    /// Bytes the session objects of one connection may hold together
    /// (as `C_GetObjectSize` counts them, plus [`OBJECT_OVERHEAD`] each).
    pub max_session_bytes: usize,
    /// Bytes the token objects of one user may hold together (same count).
    pub max_user_bytes: usize,
    /// Bytes the connections of one user may hold together: their session
    /// objects (same count), what their running operations buffer and
    /// their search cursors.
    pub max_user_session_bytes: usize,
    /// Objects (token and session) one user may hold on this server: past
    /// it, creating a token object is `CKR_DEVICE_MEMORY`.
    pub max_objects_per_user: usize,
    /// Handles one search keeps.
    pub max_find: usize,
    /// Seconds a connection may stay idle.
    pub idle_secs: u64,
    /// Bytes one connection's running operations may buffer, all together
    /// (each multi-part GCM decryption or RSA/ECDSA input is buffered).
    pub max_inflight_bytes: usize,
    /// Login protection (lockout and rate limits).
    pub login: LoginPolicy,
    /// Microseconds a connection thread looks for its next request before
    /// it sleeps, while the server handles nothing else (0: never).
    pub spin_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_unauthenticated: 64,
            max_connections_per_address: 128,
            max_connections_per_user: 128,
            login_timeout_ms: 5_000,
            frame_timeout_ms: 5_000,
            max_session_objects: 4096,
            max_session_bytes: 4 << 20,
            max_user_bytes: 64 << 20,
            max_user_session_bytes: 64 << 20,
            max_objects_per_user: 100_000,
            max_find: 100_000,
            idle_secs: 300,
            max_inflight_bytes: 2 << 20,
            login: LoginPolicy::default(),
            spin_us: 50,
        }
    }
}

/// Counters for `status`.
pub struct Stats {
    pub started: Instant,
    pub connections_now: AtomicUsize,
    pub connections_total: AtomicU64,
    pub requests: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub lockouts: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            started: Instant::now(),
            connections_now: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            logins_ok: AtomicU64::new(0),
            logins_failed: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
        }
    }
}

#[derive(Default)]
struct Table {
    objects: HashMap<u64, Arc<Object>>,
    /// Handles by owner.
    by_owner: HashMap<String, BTreeSet<u64>>,
    /// Handles by (owner, attribute, value) for the [`INDEXED`] attributes
    /// (an object without the attribute is under the empty value: a
    /// superset of what a search for it must consider).
    by_value: HashMap<IndexKey, BTreeSet<u64>>,
    /// Quota bytes (see [`quota_bytes`]) of the token objects by owner,
    /// and of the session objects by the connection that made them and by
    /// their owner (all its connections together).
    bytes: HashMap<QuotaKey, usize>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum QuotaKey {
    Owner(String),
    Conn(u64),
    Sessions(String),
}

impl QuotaKey {
    /// The counts object `o` is in.
    fn of(o: &Object) -> [Option<QuotaKey>; 2] {
        match &o.session {
            None => [Some(QuotaKey::Owner(o.owner.clone())), None],
            Some(s) => [
                Some(QuotaKey::Conn(s.conn)),
                Some(QuotaKey::Sessions(o.owner.clone())),
            ],
        }
    }
}

/// Attributes searches are indexed by: labels (how most applications name
/// objects) and IDs (how OpenSSL, Java, NSS and EJBCA pair a key with its
/// certificate).
const INDEXED: [u64; 2] = [cka::LABEL, cka::ID];

type IndexKey = (String, u64, Vec<u8>);

impl Table {
    fn index_key(o: &Object, ty: u64) -> IndexKey {
        (o.owner.clone(), ty, o.get(ty).unwrap_or_default().to_vec())
    }

    fn insert(&mut self, o: Arc<Object>) {
        if let Some(old) = self.objects.remove(&o.handle) {
            self.unindex(&old);
        }
        self.by_owner
            .entry(o.owner.clone())
            .or_default()
            .insert(o.handle);
        for ty in INDEXED {
            self.by_value
                .entry(Self::index_key(&o, ty))
                .or_default()
                .insert(o.handle);
        }
        for k in QuotaKey::of(&o).into_iter().flatten() {
            let b = self.bytes.entry(k).or_default();
            *b = b.saturating_add(quota_bytes(&o));
        }
        self.objects.insert(o.handle, o);
    }

    fn unindex(&mut self, o: &Object) {
        for k in QuotaKey::of(o).into_iter().flatten() {
            if let Some(b) = self.bytes.get_mut(&k) {
                *b = b.saturating_sub(quota_bytes(o));
                if *b == 0 {
                    self.bytes.remove(&k);
                }
            }
        }
        if let Some(s) = self.by_owner.get_mut(&o.owner) {
            s.remove(&o.handle);
            if s.is_empty() {
                self.by_owner.remove(&o.owner);
            }
        }
        for ty in INDEXED {
            let k = Self::index_key(o, ty);
            if let Some(s) = self.by_value.get_mut(&k) {
                s.remove(&o.handle);
                if s.is_empty() {
                    self.by_value.remove(&k);
                }
            }
        }
    }

    fn remove(&mut self, h: u64) -> Option<Arc<Object>> {
        let o = self.objects.remove(&h)?;
        self.unindex(&o);
        Some(o)
    }
}

/// Whether a version of an object read earlier is still the current one.
enum Version {
    /// It is; for a token object, with its stored bytes.
    Current(Option<Vec<u8>>),
    /// Another write replaced it.
    Changed,
    /// The object is gone.
    Gone,
}

/// A token object read from a shared store: its stored bytes and the
/// object they decrypt to.
type Cached = (Vec<u8>, Arc<Object>);

/// Tells whether a connection's peer is still there (see [`Hsm::register_probe`]).
pub type Probe = Box<dyn Fn() -> bool + Send + Sync>;

struct Handles {
    next: u64,
    end: u64,
}

/// What a login rests on: the user's id, password hash and login
/// generation ([`UserRecord::generation`]). A change of any (removal,
/// `passwd`, an admin lock) ends the login; an automatic lockout does not.
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    id: u64,
    phc: String,
    generation: u64,
}

impl Stamp {
    fn of(u: &UserRecord) -> Stamp {
        Stamp {
            id: u.id,
            phc: u.phc.clone(),
            generation: u.generation,
        }
    }
}

/// A logged-in connection.
struct Live {
    name: Arc<str>,
    owner: Arc<str>,
    stamp: Stamp,
    revoked: Arc<AtomicBool>,
}

/// A successful login: the owner key of the user's objects, and the flag
/// set when the login is revoked.
pub struct Grant {
    pub owner: Arc<str>,
    pub revoked: Arc<AtomicBool>,
}

/// The software HSM.
///
/// With the embedded store (one server), the object table holds every
/// token object, loaded at start: the server is the only writer. With a
/// shared store (PostgreSQL), the table holds this server's session objects
/// only and token objects are read through to the store at each lookup
/// (decrypted objects are cached by their stored bytes, so an unchanged
/// object is not decrypted or parsed again), so that an object made or
/// destroyed through another server is seen at once.
pub struct Hsm {
    store: Store,
    master: MasterKey,
    /// The keyring protection (for warnings and `status`).
    protection: &'static str,
    shared: bool,
    logins: users::LoginCache,
    throttle: users::Throttle,
    /// Password checks of one user are serialized (striped by name).
    verify_locks: [Mutex<()>; VERIFY_STRIPES],
    stripe_keys: std::collections::hash_map::RandomState,
    phantoms: users::PhantomFailures,
    known: users::KnownAddresses,
    table: RwLock<Table>,
    /// Token objects read from a shared store: handle → (stored bytes, object).
    cache: Mutex<HashMap<u64, Cached>>,
    /// Serializes mutations (store commit + table update).
    writer: Mutex<()>,
    handles: Mutex<Handles>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Liveness probes of the connections served over sockets.
    probes: Mutex<HashMap<u64, Probe>>,
    /// Logged-in connections, by connection id.
    live: Mutex<HashMap<u64, Live>>,
    /// Revocations per user name (bumped before the logins are ended), so
    /// that a login whose password check raced a revocation is not
    /// registered with what was revoked.
    epochs: Mutex<HashMap<String, u64>>,
    /// Owner keys of the users removed through this server: a request of
    /// theirs that was already running when the user was removed cannot
    /// store an object afterwards (checked under `writer`).
    gone: Mutex<std::collections::HashSet<String>>,
    /// Bytes the running operations of each owner's connections buffer, as
    /// the connections last reported them (see [`Hsm::report_inflight`]).
    inflight: Mutex<HashMap<Arc<str>, usize>>,
    /// The live connections of the server serving this HSM.
    pub connections: Arc<crate::registry::Registry>,
    pub limits: Limits,
    pub stats: Stats,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn dev_err(e: StoreError) -> Rv {
    log::error!("event=store_error error={:?}", e.0);
    ckr::DEVICE_ERROR
}

/// Open the master key of `store` with `unlock`, making (and storing) one
/// on first use, and give the store the key of its user records. Refused:
/// a keyring whose protection was removed (an unprotected keyring where a
/// passphrase or key file is given: it would have been planted by whoever
/// can write the database), and a missing keyring in a store that holds
/// sealed records (it was deleted). The start that makes the master key
/// seals the users added before it (`user add` before the first `serve`).
pub fn open_master(store: &Store, unlock: &Unlock) -> Result<(MasterKey, Keyring), String> {
    let (stored, made) = match store.keyring().map_err(|e| e.to_string())? {
        Some(b) => (b, None),
        None => {
            if store.holds_sealed_records().map_err(|e| e.to_string())? {
                return Err(
                    "the store holds sealed records but no keyring: it was deleted from \
                     the database. Refusing to make a new master key; restore the store (or its \
                     keyring) from a backup"
                        .into(),
                );
            }
            let m = MasterKey::generate().map_err(|e| e.to_string())?;
            let ring = Keyring::wrap(&m, unlock).map_err(|e| e.to_string())?;
            let bytes = ring.encode().map_err(|e| e.to_string())?;
            // Another server may have made one at the same time: the stored
            // one wins, and is opened below like any other.
            let stored = store.init_keyring(&bytes).map_err(|e| e.to_string())?;
            let made = stored == bytes;
            (stored, Some(made))
        }
    };
    let ring = Keyring::decode(&stored).map_err(|e| e.to_string())?;
    if ring.protection == vault::Protection::Unprotected && !matches!(unlock, Unlock::Nothing) {
        return Err(format!(
            "the store's master key is unprotected, but {} was given: refusing to start. Whoever \
             can write the database could have replaced the keyring with one of their own. If \
             this store was really first served without protection, protect it with \
             `hsmlink-hsm keyring change --new-passphrase-env VAR` (server stopped), then serve \
             it with that passphrase",
            unlock.describe()
        ));
    }
    let m = ring.unwrap(unlock).map_err(|e| e.to_string())?;
    store.set_record_key(m.record_key().map_err(|e| e.to_string())?);
    if made.is_some() {
        // The first start of this store (or of a fleet's servers started
        // together: sealing the same records twice writes the same bytes).
        let n = store.adopt_pending_users().map_err(|e| e.to_string())?;
        if n > 0 {
            log::info!("event=users_sealed count={n}");
        }
    }
    Ok((m, ring))
}

/// Whether any user record is refused (edited in the database, planted, or
/// of an earlier version): the names and reasons.
pub fn refused_users(store: &Store) -> Result<Vec<String>, String> {
    Ok(store
        .users()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(_, r)| r.err().map(|e| e.0))
        .collect())
}

impl Hsm {
    /// An HSM over `store`, its master key unlocked with `unlock` (made on
    /// first use). A wrong passphrase or key file is an error.
    pub fn open(store: Store, unlock: &Unlock, limits: Limits) -> Result<Hsm, String> {
        let (master, ring) = open_master(&store, unlock)?;
        Hsm::with_master(store, master, ring.protection.describe(), limits)
    }

    fn with_master(
        store: Store,
        master: MasterKey,
        protection: &'static str,
        limits: Limits,
    ) -> Result<Hsm, String> {
        let shared = store.is_shared();
        if store.record_key().is_none() {
            store.set_record_key(master.record_key().map_err(|e| e.to_string())?);
        }
        let legacy = store.legacy_user_count().map_err(|e| e.to_string())?;
        if legacy > 0 {
            return Err(format!(
                "the store holds {legacy} user(s) of an earlier version's unauthenticated table: \
                 run `hsmlink-hsm migrate` (server stopped) first"
            ));
        }
        let refused = refused_users(&store)?;
        if !refused.is_empty() {
            return Err(format!(
                "refusing to start: {}. Remove such a user (`hsmlink-hsm user remove`, with the \
                 passphrase) or restore the store from a backup",
                refused.join("; ")
            ));
        }
        let mut table = Table::default();
        let mut max_handle = 0;
        if !shared {
            for (h, bytes) in store.objects().map_err(|e| e.to_string())? {
                max_handle = max_handle.max(h);
                let rec = match vault::open_object(&master, h, &bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        log::error!("event=object_refused handle={h} reason={:?}", e.0);
                        continue;
                    }
                };
                let o = Object::from_record(h, &rec);
                table.insert(Arc::new(o));
            }
        }
        let throttle = users::Throttle::new(limits.login.clone());
        Ok(Hsm {
            store,
            master,
            protection,
            shared,
            logins: users::LoginCache::new(),
            throttle,
            verify_locks: std::array::from_fn(|_| Mutex::new(())),
            stripe_keys: std::collections::hash_map::RandomState::new(),
            phantoms: users::PhantomFailures::new(),
            known: users::KnownAddresses::new(),
            table: RwLock::new(table),
            cache: Mutex::new(HashMap::new()),
            writer: Mutex::new(()),
            // Force a reservation on first use, above every stored handle.
            handles: Mutex::new(Handles {
                next: max_handle + 1,
                end: max_handle + 1,
            }),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            probes: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
            gone: Mutex::new(std::collections::HashSet::new()),
            inflight: Mutex::new(HashMap::new()),
            connections: Arc::new(crate::registry::Registry::new()),
            limits,
            stats: Stats::new(),
        })
    }

    /// An in-memory HSM with one user (the `dev` command, tests).
    pub fn dev(user: &str, password: &[u8]) -> Result<Hsm, StoreError> {
        let store = Store::in_memory()?;
        let master = MasterKey::generate().map_err(|e| StoreError(e.0))?;
        store.set_record_key(master.record_key().map_err(|e| StoreError(e.0))?);
        let phc = users::hash_password(password).map_err(StoreError)?;
        store.set_password(user, phc)?;
        Hsm::with_master(store, master, "memory", Limits::default()).map_err(StoreError)
    }

    /// The master key (to seal the TLS private key).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// What protects the master key ("a passphrase", ...).
    pub fn protection(&self) -> &'static str {
        self.protection
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Add a user (or replace its password, which also unlocks it): the
    /// user's live logins end.
    pub fn put_user(&self, name: &str, password: &[u8]) -> Result<(), StoreError> {
        users::check_name(name).map_err(StoreError)?;
        let phc = users::hash_password(password).map_err(StoreError)?;
        let existed = self.store.set_password(name, phc)?;
        self.logins.forget(name);
        if existed {
            self.revoke_user(name, "password_changed");
        }
        self.known.forget(name);
        Ok(())
    }

    /// Remove a user and its token objects; whether it existed. Its live
    /// logins end at once.
    pub fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let _w = lock(&self.writer);
        // The owner key of its objects, if its record is trusted (a refused
        // record is removed alone: its id cannot be believed).
        let owner = match self.store.user(name) {
            Ok(Some(u)) => Some(users::owner_key(name, u.id)),
            _ => None,
        };
        let existed = self.store.remove_user(name, owner.as_deref())?;
        self.logins.forget(name);
        self.known.forget(name);
        if let Some(owner) = &owner {
            lock(&self.gone).insert(owner.clone());
            let mut t = write(&self.table);
            let doomed: Vec<u64> = t
                .by_owner
                .get(owner.as_str())
                .into_iter()
                .flatten()
                .filter(|h| t.objects.get(h).is_some_and(|o| o.is_token()))
                .copied()
                .collect();
            for h in doomed {
                t.remove(h);
            }
            lock(&self.cache).retain(|_, (_, o)| o.owner != *owner);
        }
        drop(_w);
        self.revoke_user(name, "removed");
        Ok(existed)
    }

    /// Unlock a user locked by failed logins; whether it exists.
    pub fn unlock_user(&self, name: &str) -> Result<bool, StoreError> {
        let r = self.store.unlock_user(name)?;
        self.throttle.succeeded(name, None);
        Ok(r)
    }

    /// Lock a user (until `unlock` or `passwd`); whether it exists. Its live
    /// logins end at once.
    pub fn lock_user(&self, name: &str) -> Result<bool, StoreError> {
        let r = self.store.lock_user(name)?;
        self.logins.forget(name);
        self.revoke_user(name, "locked");
        Ok(r)
    }

    /// End every live login of user `name` on this server: each of its
    /// connections answers its next request as logged out
    /// (`CKR_USER_NOT_LOGGED_IN`), and their session objects are destroyed
    /// now. Returns how many connections.
    pub fn revoke_user(&self, name: &str, reason: &str) -> usize {
        {
            let mut e = lock(&self.epochs);
            let v = e.entry(name.to_string()).or_insert(0);
            *v = v.wrapping_add(1);
        }
        self.revoke_where(reason, |l| &*l.name == name)
    }

    fn epoch(&self, name: &str) -> u64 {
        lock(&self.epochs).get(name).copied().unwrap_or(0)
    }

    fn revoke_where(&self, reason: &str, pick: impl Fn(&Live) -> bool) -> usize {
        let ended: Vec<(u64, Arc<str>, Arc<str>)> = {
            let mut live = lock(&self.live);
            let ids: Vec<u64> = live
                .iter()
                .filter(|(_, l)| pick(l))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| live.remove(&id).map(|l| (id, l)))
                .map(|(id, l)| {
                    l.revoked.store(true, Ordering::SeqCst);
                    (id, l.name, l.owner)
                })
                .collect()
        };
        if ended.is_empty() {
            return 0;
        }
        {
            let _w = lock(&self.writer);
            let mut t = write(&self.table);
            for (conn, _, owner) in &ended {
                let doomed: Vec<u64> = t
                    .by_owner
                    .get(&**owner)
                    .into_iter()
                    .flatten()
                    .filter(|h| {
                        t.objects
                            .get(h)
                            .is_some_and(|o| o.session.is_some_and(|s| s.conn == *conn))
                    })
                    .copied()
                    .collect();
                for h in doomed {
                    t.remove(h);
                }
            }
        }
        for (conn, name, _) in &ended {
            log::warn!("event=login_revoked conn={conn} user={name:?} reason={reason}");
        }
        ended.len()
    }

    /// Connection `conn` logged out (or closed).
    pub fn end_login(&self, conn: u64) {
        lock(&self.live).remove(&conn);
    }

    /// For a shared store: check every [`REVOCATION_POLL`] the records of
    /// the users logged in here, and end the logins whose user was removed,
    /// changed password or was locked through another server (a background
    /// thread that ends with the last reference to the HSM).
    pub fn watch_revocations(self: &Arc<Self>) -> std::io::Result<()> {
        if !self.shared {
            return Ok(());
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("revocations".into())
            .spawn(move || loop {
                std::thread::sleep(REVOCATION_POLL);
                let Some(hsm) = weak.upgrade() else { return };
                hsm.check_revocations();
            })
            .map(|_| ())
    }

    /// One pass of [`Hsm::watch_revocations`].
    pub fn check_revocations(&self) {
        let names: Vec<String> = lock(&self.live)
            .values()
            .map(|l| l.name.to_string())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        if names.is_empty() {
            return;
        }
        let mut records: HashMap<String, Result<UserRecord, StoreError>> =
            match self.store.users_named(&names) {
                Ok(v) => v.into_iter().collect(),
                // The database is out of reach: nothing is known to have
                // changed (requests that need it fail on their own).
                Err(e) => {
                    log::error!("event=store_error error={:?}", e.0);
                    return;
                }
            };
        for name in names {
            let (now, reason) = match records.remove(&name) {
                Some(Ok(u)) => (
                    Some(Stamp::of(&u)),
                    if u.locked { "locked" } else { "changed" },
                ),
                Some(Err(e)) => {
                    log::error!("event=user_refused user={name:?} reason={:?}", e.0);
                    (None, "refused")
                }
                None => (None, "removed"),
            };
            // A lock by failed logins leaves the stamp as it was: the live
            // logins go on (only new ones are refused).
            self.revoke_where(reason, |l| {
                *l.name == *name && now.as_ref().is_none_or(|st| *st != l.stamp)
            });
        }
    }

    pub fn user_count(&self) -> usize {
        self.store.users().map(|u| u.len()).unwrap_or(0)
    }

    fn verify_stripe(&self, user: &str) -> usize {
        use std::hash::BuildHasher;
        (self.stripe_keys.hash_one(user) as usize) % VERIFY_STRIPES
    }

    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The lock rule of the login policy at `now` (Unix milliseconds).
    fn lock_rule(&self, now: u64) -> LockRule {
        let p = &self.limits.login;
        LockRule {
            max: p.max_failures,
            now,
            base_ms: if p.lock.is_zero() {
                0
            } else {
                (p.lock.as_millis() as u64).max(1)
            },
            max_ms: p.max_lock.as_millis() as u64,
        }
    }

    /// Check a user's password: `CKR_PIN_INCORRECT` for an unknown user or a
    /// wrong password alike, after the same work; `CKR_PIN_LOCKED` for a
    /// user locked by too many consecutive failures (an unknown name locks
    /// too, in memory, so that locking reveals nothing). Failed attempts are
    /// rate-limited per user and per client address `peer`. A name no user
    /// can have ([`users::check_name`]) is `CKR_PIN_INCORRECT` at once,
    /// counted and remembered nowhere.
    ///
    /// A lock lasts [`LoginPolicy::lock`], doubling for each failure after
    /// it lapsed, up to [`LoginPolicy::max_lock`] (or until `user unlock`
    /// when `lock` is zero). While a lock lasts (not a permanent one), an
    /// address the user logged in from lately and that has failed nothing
    /// since is still heard (see [`users::KnownAddresses`]): strangers'
    /// guesses cannot lock the owner out of its usual places.
    pub fn login(&self, user: &str, password: &[u8], peer: Option<IpAddr>) -> Result<(), Rv> {
        self.check_login(user, password, peer, None).map(|_| ())
    }

    /// [`Hsm::login`] for connection `conn` (`state`: its entry in the
    /// server's registry): the login is registered, to be revoked
    /// ([`Hsm::revoke_user`]) when its user is removed, changes password or
    /// is locked by an admin. While the attempt waits its turn (after
    /// failures, it may wait seconds) the connection counts as idle in the
    /// registry, so that it may be ended (to make room, or at its login
    /// deadline); if it is, the attempt is not made and counts nothing.
    pub fn login_session(
        &self,
        user: &str,
        password: &[u8],
        peer: Option<IpAddr>,
        conn: u64,
        state: Option<&crate::registry::ConnState>,
    ) -> Result<Grant, Rv> {
        // A revocation of the user between the password check and the
        // registration (a `passwd` that lands just then): the check is done
        // again on the new record, once.
        for _ in 0..2 {
            let epoch = self.epoch(user);
            let rec = self.check_login(user, password, peer, state)?;
            let grant = Grant {
                owner: Arc::from(users::owner_key(user, rec.id)),
                revoked: Arc::new(AtomicBool::new(false)),
            };
            if let Some(st) = state {
                let cap = self.limits.max_connections_per_user;
                if !self.connections.claim_for(st, &grant.owner, cap) {
                    log::warn!(
                        "event=refused conn={conn} user={user:?} reason=user_connection_limit"
                    );
                    return Err(ckr::DEVICE_MEMORY);
                }
            }
            let prev = lock(&self.live).insert(
                conn,
                Live {
                    name: Arc::from(user),
                    owner: grant.owner.clone(),
                    stamp: Stamp::of(&rec),
                    revoked: grant.revoked.clone(),
                },
            );
            // Registered first, compared second: a revocation bumped after
            // this comparison finds the registration and ends it.
            if self.epoch(user) == epoch {
                return Ok(grant);
            }
            lock(&self.live).remove(&conn);
            // The connection's earlier login (the same user: a login again)
            // was revoked as well, whether or not the revocation saw it.
            if let Some(p) = prev {
                p.revoked.store(true, Ordering::SeqCst);
            }
        }
        Err(ckr::PIN_INCORRECT)
    }

    /// The password check of [`Hsm::login`]: the user's record on success.
    fn check_login(
        &self,
        user: &str,
        password: &[u8],
        peer: Option<IpAddr>,
        conn: Option<&crate::registry::ConnState>,
    ) -> Result<UserRecord, Rv> {
        let peer = peer.map(crate::registry::address_group);
        let peer_s = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        // A name no user can have (up to a frame's 64 KiB from a raw
        // client): refused before anything remembers it (the rate limiter,
        // the unknown names' locks) or logs it, and before the password
        // work; it cannot be anyone's, so nothing is counted.
        if users::check_name(user).is_err() {
            self.stats.logins_failed.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "event=login_failed peer={peer_s} reason=bad_name len={}",
                user.len()
            );
            return Err(ckr::PIN_INCORRECT);
        }
        let policy = &self.limits.login;
        let trusted = !policy.lock.is_zero()
            && peer.is_some_and(|ip| {
                self.known.contains(user, ip) && self.throttle.address_failures(ip) == 0
            });
        let wait = match self.throttle.reserve(user, peer, trusted) {
            Ok(w) => w,
            Err(users::Throttled) => {
                self.stats.logins_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("event=login_throttled user={user:?} peer={peer_s}");
                return Err(ckr::PIN_INCORRECT);
            }
        };
        if !wait.is_zero() {
            // (A logged-in connection logging in again is not under the
            // registry's request bracket: nothing to pause.)
            let conn = conn.filter(|c| !c.is_authenticated());
            let until = std::time::Instant::now() + wait;
            if let Some(c) = conn {
                // It waits because of failures (its user's or its
                // address's): among the first to make room.
                c.login_failed();
                c.pause_request();
            }
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || conn.is_some_and(|c| c.is_evicted()) {
                    break;
                }
                // Parked, so that ending the connection wakes it at once
                // (see `registry::ConnState::end`).
                std::thread::park_timeout(left.min(std::time::Duration::from_millis(50)));
            }
            if conn.is_some_and(|c| !c.begin_request()) {
                return Err(ckr::PIN_INCORRECT);
            }
        }
        // One password check at a time per user: attempts sent in parallel
        // each see the failures counted by the ones before, so no burst gets
        // more than `max_failures` guesses in before the lock.
        let _turn = lock(&self.verify_locks[self.verify_stripe(user)]);
        let rule = self.lock_rule(crate::store::unix_now_ms());
        let mut refused = false;
        let rec = match self.store.user_checked(user).map_err(dev_err)? {
            Some(Ok(r)) => Some(r),
            // An edited, planted or unconverted record: as an unknown user.
            Some(Err(e)) => {
                log::error!("event=user_refused user={user:?} reason={:?}", e.0);
                refused = true;
                None
            }
            None => None,
        };
        let locked = match &rec {
            Some(r) => r.is_locked(rule.now),
            None => self.phantoms.is_locked(user, &rule),
        };
        // A known address is heard through a lock that ends by itself, never
        // through an admin's lock (`user lock`) or a permanent one.
        let heard = trusted && rec.as_ref().is_some_and(|r| r.locked_until != 0);
        if locked && !heard {
            self.stats.logins_failed.fetch_add(1, Ordering::Relaxed);
            self.throttle.failed(user, peer);
            log::warn!("event=login_failed user={user:?} peer={peer_s} reason=locked");
            return Err(ckr::PIN_LOCKED);
        }
        let phc = rec.as_ref().map(|r| r.phc.as_str());
        let ok = phc.is_some_and(|h| self.logins.hit(user, h, password))
            || users::verify_password(phc, password);
        if let (true, Some(h)) = (ok, phc) {
            self.logins.remember(user, h, password);
            self.throttle.succeeded(user, peer);
            if let Some(ip) = peer {
                self.known.remember(user, ip);
            }
            if locked {
                // Heard through its known address: the strangers' lock on
                // the others stays.
                log::info!("event=login_while_locked user={user:?} peer={peer_s}");
            } else if rec.as_ref().is_some_and(|r| r.failures > 0 || r.locked) {
                self.store.login_succeeded(user).map_err(dev_err)?;
            }
            self.stats.logins_ok.fetch_add(1, Ordering::Relaxed);
            return rec.ok_or(ckr::GENERAL_ERROR);
        }
        self.stats.logins_failed.fetch_add(1, Ordering::Relaxed);
        self.throttle.failed(user, peer);
        let counted = if refused {
            None
        } else {
            self.store.login_failed(user, &rule).map_err(dev_err)?
        };
        let (failures, now_locked) = match counted {
            Some(x) => x,
            None => self.phantoms.bump(user, &rule),
        };
        if now_locked {
            // New logins are refused from now on; the user's live logins go
            // on (whoever can send wrong PINs must not be able to end a
            // legitimate user's sessions). An admin's `user lock` ends them.
            self.logins.forget(user);
            self.stats.lockouts.fetch_add(1, Ordering::Relaxed);
        }
        log::warn!(
            "event=login_failed user={user:?} peer={peer_s} reason=bad_password failures={failures} locked={now_locked}"
        );
        Err(ckr::PIN_INCORRECT)
    }

    /// Objects `user` holds in this server's table.
    pub fn object_count(&self, user: &str) -> usize {
        read(&self.table).by_owner.get(user).map_or(0, |s| s.len())
    }

    /// Quota bytes of the token objects `user` holds in this server's table
    /// (see [`quota_bytes`]).
    pub fn token_bytes(&self, user: &str) -> usize {
        let k = QuotaKey::Owner(user.to_string());
        read(&self.table).bytes.get(&k).copied().unwrap_or(0)
    }

    /// Quota bytes of the live session objects connection `conn` made.
    pub fn session_bytes(&self, conn: u64) -> usize {
        read(&self.table)
            .bytes
            .get(&QuotaKey::Conn(conn))
            .copied()
            .unwrap_or(0)
    }

    /// What the connections of `owner` hold together: the quota bytes of
    /// their session objects and the bytes their running operations buffer
    /// (bounded by [`Limits::max_user_session_bytes`]).
    pub fn user_session_bytes(&self, owner: &str) -> usize {
        let objects = read(&self.table)
            .bytes
            .get(&QuotaKey::Sessions(owner.to_string()))
            .copied()
            .unwrap_or(0);
        objects.saturating_add(lock(&self.inflight).get(owner).copied().unwrap_or(0))
    }

    /// A connection's running operations buffer `now` bytes for its owner,
    /// where it last reported `before` (`None`: nothing, or no owner).
    pub fn report_inflight(
        &self,
        before: Option<(&Arc<str>, usize)>,
        now: Option<(&Arc<str>, usize)>,
    ) {
        if before.map(|(o, n)| (&**o, n)) == now.map(|(o, n)| (&**o, n)) {
            return;
        }
        let mut m = lock(&self.inflight);
        if let Some((owner, n)) = before {
            if let Some(v) = m.get_mut(&**owner) {
                *v = v.saturating_sub(n);
                if *v == 0 {
                    m.remove(&**owner);
                }
            }
        }
        if let Some((owner, n)) = now.filter(|(_, n)| *n > 0) {
            let v = m.entry(owner.clone()).or_default();
            *v = v.saturating_add(n);
        }
    }

    /// Whether `o`, new or replacing `old`, fits in the byte quota of its
    /// owner (token object), or of the connection that made it and of all
    /// its owner's connections together (session object); a change that
    /// does not grow it always fits.
    pub fn fits_quota(&self, o: &Object, old: Option<&Object>) -> bool {
        let new = quota_bytes(o);
        let old = old.map_or(0, quota_bytes);
        if new <= old {
            return true;
        }
        let fits = |used: usize, max: usize| used.saturating_sub(old).saturating_add(new) <= max;
        match &o.session {
            None => fits(self.token_bytes(&o.owner), self.limits.max_user_bytes),
            Some(s) => {
                fits(self.session_bytes(s.conn), self.limits.max_session_bytes)
                    && fits(
                        self.user_session_bytes(&o.owner),
                        self.limits.max_user_session_bytes,
                    )
            }
        }
    }

    /// A fresh handle, never handed out before.
    pub fn alloc_handle(&self) -> Result<u64, Rv> {
        let mut h = lock(&self.handles);
        if h.next >= h.end {
            let start = self
                .store
                .reserve_handles(h.next, HANDLE_BLOCK)
                .map_err(dev_err)?;
            h.next = start;
            h.end = start + HANDLE_BLOCK;
        }
        if h.next >= HANDLE_LIMIT {
            return Err(ckr::DEVICE_MEMORY);
        }
        let v = h.next;
        h.next += 1;
        Ok(v)
    }

    /// Register a probe telling whether connection `conn`'s peer is still
    /// there. A client that closes a session drops its connection and may
    /// at once ask, over another connection, for the objects of the closed
    /// one: the server thread of the closed connection may not have seen the
    /// close yet, so lookups probe the owner of a session object first.
    pub fn register_probe(&self, conn: u64, probe: Probe) {
        lock(&self.probes).insert(conn, probe);
    }

    pub fn unregister_probe(&self, conn: u64) {
        lock(&self.probes).remove(&conn);
    }

    /// Whether connection `conn` is known to be gone; its session objects
    /// are then destroyed at once.
    fn reap_if_gone(&self, user: &str, conn: u64) -> bool {
        let gone = lock(&self.probes).get(&conn).is_some_and(|p| !p());
        if gone {
            let _w = lock(&self.writer);
            let mut t = write(&self.table);
            let doomed: Vec<u64> = t
                .by_owner
                .get(user)
                .into_iter()
                .flatten()
                .filter(|h| {
                    t.objects
                        .get(h)
                        .is_some_and(|o| o.session.is_some_and(|s| s.conn == conn))
                })
                .copied()
                .collect();
            for h in doomed {
                t.remove(h);
            }
        }
        gone
    }

    /// Whether `o` is a session object of a connection other than `viewer`
    /// that is gone.
    fn stale(&self, o: &Object, viewer: u64) -> bool {
        match o.session {
            Some(s) if s.conn != viewer => self.reap_if_gone(&o.owner, s.conn),
            _ => false,
        }
    }

    /// The sealed record of token object `o`, as stored.
    fn seal(&self, o: &Object) -> Result<Vec<u8>, Rv> {
        vault::seal_object(&self.master, o.handle, &o.to_record()).map_err(|e| {
            log::error!("event=seal_failed handle={} error={:?}", o.handle, e.0);
            ckr::DEVICE_ERROR
        })
    }

    /// A token object of the shared store, read through (`None`: absent,
    /// or refused by its integrity check).
    fn load_token(&self, handle: u64) -> Option<Arc<Object>> {
        let bytes = match self.store.object(handle) {
            Ok(Some(b)) => b,
            Ok(None) => {
                lock(&self.cache).remove(&handle);
                return None;
            }
            Err(e) => {
                log::error!("event=store_error error={:?}", e.0);
                return None;
            }
        };
        self.decode_token(handle, bytes)
    }

    fn decode_token(&self, handle: u64, bytes: Vec<u8>) -> Option<Arc<Object>> {
        if let Some((b, o)) = lock(&self.cache).get(&handle) {
            if *b == bytes {
                return Some(o.clone());
            }
        }
        let rec = match vault::open_object(&self.master, handle, &bytes) {
            Ok(r) => r,
            Err(e) => {
                log::error!("event=object_refused handle={handle} reason={:?}", e.0);
                return None;
            }
        };
        let o = Arc::new(Object::from_record(handle, &rec));
        let mut c = lock(&self.cache);
        if c.len() >= 100_000 {
            c.clear();
        }
        c.insert(handle, (bytes, o.clone()));
        Some(o)
    }

    /// The object `handle` if `user` in `app` (on connection `viewer`) may
    /// see it.
    pub fn get(&self, user: &str, app: &[u8; 16], viewer: u64, handle: u64) -> Option<Arc<Object>> {
        let local = read(&self.table).objects.get(&handle).cloned();
        let o = match local {
            Some(o) => o,
            None if self.shared => self.load_token(handle)?,
            None => return None,
        };
        if !o.visible(user, app) || self.stale(&o, viewer) {
            None
        } else {
            Some(o)
        }
    }

    /// Insert new objects, all or none; token objects are committed to the
    /// store (one durable transaction) before any of them is visible.
    fn put_all(&self, objs: Vec<Object>) -> Result<Vec<Arc<Object>>, Rv> {
        let _w = lock(&self.writer);
        self.put_all_locked(objs)
    }

    /// [`Hsm::put_all`] with the writer lock held.
    fn put_all_locked(&self, objs: Vec<Object>) -> Result<Vec<Arc<Object>>, Rv> {
        self.owners_not_gone(&objs)?;
        let mut sealed = Vec::new();
        for o in objs.iter().filter(|o| o.is_token()) {
            sealed.push((o.handle, self.seal(o)?));
        }
        if !sealed.is_empty() {
            let rows: Vec<ObjectRow<'_>> = objs
                .iter()
                .filter(|o| o.is_token())
                .zip(&sealed)
                .map(|(o, (_, b))| ObjectRow {
                    handle: o.handle,
                    owner: &o.owner,
                    label: o.get(cka::LABEL).unwrap_or_default(),
                    bytes: b,
                })
                .collect();
            self.store.put_objects(&rows).map_err(dev_err)?;
        }
        let mut out = Vec::new();
        let mut sealed = sealed.into_iter();
        for o in objs {
            let o = Arc::new(o);
            if o.is_token() && self.shared {
                if let Some((h, b)) = sealed.next() {
                    lock(&self.cache).insert(h, (b, o.clone()));
                }
            } else {
                write(&self.table).insert(o.clone());
            }
            out.push(o);
        }
        Ok(out)
    }

    /// `CKR_USER_NOT_LOGGED_IN` if an object's owner was removed (a request
    /// that raced the removal); called under `writer`.
    fn owners_not_gone(&self, objs: &[Object]) -> Result<(), Rv> {
        let gone = lock(&self.gone);
        if objs.iter().any(|o| gone.contains(&o.owner)) {
            return Err(ckr::USER_NOT_LOGGED_IN);
        }
        Ok(())
    }

    /// Insert a new object; token objects are committed to the store first.
    pub fn put(&self, o: Object) -> Result<Arc<Object>, Rv> {
        self.put_all(vec![o])?.pop().ok_or(ckr::GENERAL_ERROR)
    }

    /// Whether `old` is still the current version of its object (the
    /// writer lock held): with, for a token object, the stored bytes that
    /// version has.
    fn version(&self, old: &Arc<Object>) -> Result<Version, Rv> {
        let local = read(&self.table).objects.get(&old.handle).cloned();
        if let Some(cur) = local {
            if !Arc::ptr_eq(&cur, old) {
                return Ok(Version::Changed);
            }
            if !cur.is_token() {
                return Ok(Version::Current(None));
            }
            // The embedded store: this process is its only writer (redb
            // locks the file) and the table mirrors it under the writer
            // lock, so the stored bytes are those of `cur`.
            return Ok(match self.store.object(old.handle).map_err(dev_err)? {
                Some(b) => Version::Current(Some(b)),
                None => Version::Gone,
            });
        }
        if self.shared && old.is_token() {
            let Some(bytes) = self.store.object(old.handle).map_err(dev_err)? else {
                return Ok(Version::Gone);
            };
            return Ok(match self.decode_token(old.handle, bytes.clone()) {
                Some(cur) if Arc::ptr_eq(&cur, old) => Version::Current(Some(bytes)),
                Some(_) => Version::Changed,
                None => Version::Gone,
            });
        }
        Ok(Version::Gone)
    }

    /// Replace object `old` with `o` (same handle) only if `old` is still
    /// its current version: a compare-and-swap, on the table and on the
    /// stored record (redb and PostgreSQL alike). `Ok(None)`: another
    /// write came first and nothing was written; read again and retry.
    /// `C_SetAttributeValue` goes through here, so a change that returned
    /// `CKR_OK` is never undone by another session's write.
    pub fn replace_if(&self, old: &Arc<Object>, o: Object) -> Result<Option<Arc<Object>>, Rv> {
        let _w = lock(&self.writer);
        self.owners_not_gone(std::slice::from_ref(&o))?;
        let expected = match self.version(old)? {
            Version::Gone => return Err(ckr::OBJECT_HANDLE_INVALID),
            Version::Changed => return Ok(None),
            Version::Current(b) => b,
        };
        let mut sealed = None;
        if o.is_token() {
            let expected = expected.ok_or(ckr::GENERAL_ERROR)?;
            let b = self.seal(&o)?;
            let row = ObjectRow {
                handle: o.handle,
                owner: &o.owner,
                label: o.get(cka::LABEL).unwrap_or_default(),
                bytes: &b,
            };
            match self.store.swap_object(&row, &expected).map_err(dev_err)? {
                Swap::Swapped => {}
                Swap::Changed => return Ok(None),
                Swap::Gone => return Err(ckr::OBJECT_HANDLE_INVALID),
            }
            sealed = Some(b);
        }
        let o = Arc::new(o);
        match sealed {
            Some(b) if self.shared => {
                lock(&self.cache).insert(o.handle, (b, o.clone()));
            }
            _ => write(&self.table).insert(o.clone()),
        }
        Ok(Some(o))
    }

    /// Insert `o`, made from the objects `srcs`, only if each is still the
    /// current version of its object (`C_CopyObject`, `C_DeriveKey`: a new
    /// object is never made of a version another session has already
    /// changed). `Ok(None)`: read again.
    pub fn put_if_current(
        &self,
        srcs: &[&Arc<Object>],
        o: Object,
    ) -> Result<Option<Arc<Object>>, Rv> {
        let _w = lock(&self.writer);
        for src in srcs {
            match self.version(src)? {
                Version::Gone => return Err(ckr::OBJECT_HANDLE_INVALID),
                Version::Changed => return Ok(None),
                Version::Current(_) => {}
            }
        }
        Ok(self.put_all_locked(vec![o])?.pop())
    }

    /// Insert two objects (a key pair) at once: both or neither.
    pub fn put_pair(&self, a: Object, b: Object) -> Result<(), Rv> {
        self.put_all(vec![a, b]).map(|_| ())
    }

    /// Remove object `handle` (committed to the store before it returns).
    pub fn remove(&self, handle: u64) -> Result<(), Rv> {
        let _w = lock(&self.writer);
        let token = read(&self.table).objects.get(&handle).map(|o| o.is_token());
        match token {
            Some(true) => {
                self.store.delete_object(handle).map_err(dev_err)?;
            }
            Some(false) => {}
            None if self.shared => {
                self.store.delete_object(handle).map_err(dev_err)?;
                lock(&self.cache).remove(&handle);
            }
            None => {}
        }
        write(&self.table).remove(handle);
        Ok(())
    }

    /// Delete token object `handle` whoever owns it (the admin CLI); whether
    /// it existed.
    pub fn admin_delete(&self, handle: u64) -> Result<bool, StoreError> {
        let _w = lock(&self.writer);
        let existed = self.store.delete_object(handle)?;
        let mut t = write(&self.table);
        if t.objects.get(&handle).is_some_and(|o| o.is_token()) {
            t.remove(handle);
        }
        lock(&self.cache).remove(&handle);
        Ok(existed)
    }

    /// Remove session objects (a connection closing).
    pub fn remove_session_objects(&self, handles: &BTreeSet<u64>) {
        if handles.is_empty() {
            return;
        }
        let _w = lock(&self.writer);
        let mut t = write(&self.table);
        for h in handles {
            if t.objects.get(h).is_some_and(|o| !o.is_token()) {
                t.remove(*h);
            }
        }
    }

    /// Handles of the objects `user` in `app` (on connection `viewer`) sees
    /// that match `template`, ascending, at most `limit`.
    pub fn find(
        &self,
        user: &str,
        app: &[u8; 16],
        viewer: u64,
        template: &[Attribute<'_>],
        limit: usize,
    ) -> Vec<u64> {
        let label = template.iter().find(|a| a.ty == cka::LABEL);
        let mut found: Vec<(u64, Option<u64>)> = {
            let t = read(&self.table);
            let empty = BTreeSet::new();
            // The smallest index set among the template's indexed
            // attributes, or all the user's objects.
            let indexed = template
                .iter()
                .filter(|a| INDEXED.contains(&a.ty))
                .map(|a| {
                    t.by_value
                        .get(&(user.to_string(), a.ty, a.value.to_vec()))
                        .unwrap_or(&empty)
                })
                .min_by_key(|s| s.len());
            let candidates = match indexed {
                Some(s) => s,
                None => t.by_owner.get(user).unwrap_or(&empty),
            };
            candidates
                .iter()
                .filter_map(|h| t.objects.get(h))
                .filter(|o| o.visible(user, app) && o.matches(template))
                .map(|o| (o.handle, o.session.map(|s| s.conn)))
                .take(limit)
                .collect()
        };
        if self.shared {
            match self.store.objects_of(user, label.map(|l| l.value)) {
                Ok(rows) => {
                    for (h, bytes) in rows {
                        if let Some(o) = self.decode_token(h, bytes) {
                            if o.visible(user, app) && o.matches(template) {
                                found.push((h, None));
                            }
                        }
                    }
                    found.sort_unstable();
                    found.truncate(limit);
                }
                Err(e) => log::error!("event=store_error error={:?}", e.0),
            }
        }
        let others: BTreeSet<u64> = found
            .iter()
            .filter_map(|(_, c)| *c)
            .filter(|c| *c != viewer)
            .collect();
        let gone: BTreeSet<u64> = others
            .into_iter()
            .filter(|c| self.reap_if_gone(user, *c))
            .collect();
        found
            .into_iter()
            .filter(|(_, c)| c.is_none_or(|c| !gone.contains(&c)))
            .map(|(h, _)| h)
            .collect()
    }
}

/// `hsmlink-hsm migrate`: convert, once, a store written by an earlier
/// version (the server stopped): the master key is made if the store has
/// none; user records of earlier formats are authenticated and get an id;
/// object records in clear are sealed, and objects owned by a bare user
/// name move to that user's owner key. A record that opens under neither
/// format is reported and left alone.
pub fn migrate(store: &Store, unlock: &Unlock) -> Result<String, String> {
    let e = |x: StoreError| x.to_string();
    if store.keyring().map_err(e)?.is_none() {
        let m = MasterKey::generate().map_err(|x| x.to_string())?;
        let ring = Keyring::wrap(&m, unlock).map_err(|x| x.to_string())?;
        store
            .init_keyring(&ring.encode().map_err(|x| x.to_string())?)
            .map_err(e)?;
    }
    let (master, _) = open_master(store, unlock)?;
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut users_done = 0;
    for (name, mut u) in store.unsealed_users().map_err(e)? {
        if u.id == 0 {
            u.id = store.new_user_id().map_err(e)?;
        }
        store.put_user(&name, &u).map_err(e)?;
        owners.insert(name.clone(), users::owner_key(&name, u.id));
        users_done += 1;
    }
    store.drop_legacy_users().map_err(e)?;
    for (name, u) in store.users().map_err(e)? {
        if let Ok(u) = u {
            owners
                .entry(name.clone())
                .or_insert_with(|| users::owner_key(&name, u.id));
        }
    }
    let (mut sealed, mut moved, mut bad) = (0, 0, Vec::new());
    for (h, bytes) in store.objects().map_err(e)? {
        let mut rec = match vault::open_legacy_object(&master, h, &bytes) {
            Ok(r) => r,
            Err(x) => {
                bad.push(format!("{h}: {}", x.0));
                continue;
            }
        };
        let plain = vault::is_plain(&bytes);
        let new_owner = owners.get(&rec.owner).cloned();
        let owner_moves = new_owner.as_ref().is_some_and(|o| *o != rec.owner);
        if !(plain || owner_moves) {
            continue;
        }
        if let Some(o) = new_owner {
            rec.owner = o;
        }
        let o = Object::from_record(h, &rec);
        let b = vault::seal_object(&master, h, &o.to_record()).map_err(|x| x.to_string())?;
        store
            .update_object(&ObjectRow {
                handle: h,
                owner: &o.owner,
                label: o.get(cka::LABEL).unwrap_or_default(),
                bytes: &b,
            })
            .map_err(e)?;
        sealed += usize::from(plain);
        moved += usize::from(owner_moves);
    }
    let mut out = format!(
        "migrated: {users_done} user records authenticated, {sealed} clear object records sealed, \
         {moved} objects moved to their owner's id\n"
    );
    for b in bad {
        out.push_str(&format!("object {b} (left as is)\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::SessionScope;

    fn data(label: &[u8], token: bool) -> crate::object::Attrs {
        let class = hsmlink_core::attr::ulong(hsmlink_core::ck::cko::DATA);
        crate::object::build(
            &[
                Attribute {
                    ty: cka::CLASS,
                    value: &class,
                },
                Attribute {
                    ty: cka::TOKEN,
                    value: &[u8::from(token)],
                },
                Attribute {
                    ty: cka::LABEL,
                    value: label,
                },
            ],
            crate::object::Origin::Create,
        )
        .unwrap()
    }

    /// `replace_if` and `put_if_current` are a compare-and-swap: a write
    /// based on a version another write has replaced changes nothing.
    #[test]
    fn changes_swap_only_the_version_they_read() {
        let hsm = Hsm::dev("alice", b"pw").unwrap();
        let app = [3u8; 16];
        for session in [None, Some(SessionScope { app, conn: 1 })] {
            let token = session.is_none();
            let obj = |h, label: &[u8]| Object::new(h, "alice".into(), session, data(label, token));
            let h = hsm.alloc_handle().unwrap();
            let v0 = hsm.put(obj(h, b"v0")).unwrap();
            let v1 = hsm
                .replace_if(&v0, obj(h, b"v1"))
                .unwrap()
                .expect("v0 is current");
            // A writer that read v0 loses, and so does a copy of v0.
            assert!(hsm.replace_if(&v0, obj(h, b"late")).unwrap().is_none());
            let c = hsm.alloc_handle().unwrap();
            assert!(hsm
                .put_if_current(&[&v0], obj(c, b"copy"))
                .unwrap()
                .is_none());
            assert!(hsm.get("alice", &app, 1, c).is_none());
            let now = hsm.get("alice", &app, 1, h).unwrap();
            assert_eq!(now.get(cka::LABEL), Some(&b"v1"[..]));
            if token {
                // The stored record is v1's too.
                let stored = hsm.store.object(h).unwrap().unwrap();
                let rec = vault::open_object(&hsm.master, h, &stored).unwrap();
                let o = Object::from_record(h, &rec);
                assert_eq!(o.get(cka::LABEL), Some(&b"v1"[..]));
            }
            assert!(hsm
                .put_if_current(&[&v1], obj(c, b"copy"))
                .unwrap()
                .is_some());
            hsm.remove(h).unwrap();
            assert_eq!(
                hsm.replace_if(&v1, obj(h, b"gone")).err(),
                Some(ckr::OBJECT_HANDLE_INVALID)
            );
        }
    }
}
