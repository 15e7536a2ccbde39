//! The state shared by every connection: users, the object table (token
//! objects cached from the store, session objects in memory), the handle
//! allocator and the indexes used by searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hsmlink_core::ck::{cka, ckr, Rv};
use hsmlink_core::wire::Attribute;

use crate::object::Object;
use crate::store::{Store, StoreError, UserRecord};
use crate::users;

/// Handles are below 2^31 so that they fit a 32-bit `CK_ULONG`.
pub const HANDLE_LIMIT: u64 = 1 << 31;
/// Handles reserved in the store at a time.
const HANDLE_BLOCK: u64 = 256;

/// Limits of the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Simultaneous connections.
    pub max_connections: usize,
    /// Session objects one connection may create.
    pub max_session_objects: usize,
    /// Handles one search keeps.
    pub max_find: usize,
    /// Seconds a connection may stay idle.
    pub idle_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_session_objects: 4096,
            max_find: 100_000,
            idle_secs: 300,
        }
    }
}

#[derive(Default)]
struct Table {
    objects: HashMap<u64, Arc<Object>>,
    /// Handles by owner.
    by_owner: HashMap<String, BTreeSet<u64>>,
    /// Handles by (owner, label).
    by_label: HashMap<(String, Vec<u8>), BTreeSet<u64>>,
}

impl Table {
    fn label_key(o: &Object) -> (String, Vec<u8>) {
        (
            o.owner.clone(),
            o.get(cka::LABEL).unwrap_or_default().to_vec(),
        )
    }

    fn insert(&mut self, o: Arc<Object>) {
        if let Some(old) = self.objects.remove(&o.handle) {
            self.unindex(&old);
        }
        self.by_owner
            .entry(o.owner.clone())
            .or_default()
            .insert(o.handle);
        self.by_label
            .entry(Self::label_key(&o))
            .or_default()
            .insert(o.handle);
        self.objects.insert(o.handle, o);
    }

    fn unindex(&mut self, o: &Object) {
        if let Some(s) = self.by_owner.get_mut(&o.owner) {
            s.remove(&o.handle);
            if s.is_empty() {
                self.by_owner.remove(&o.owner);
            }
        }
        let k = Self::label_key(o);
        if let Some(s) = self.by_label.get_mut(&k) {
            s.remove(&o.handle);
            if s.is_empty() {
                self.by_label.remove(&k);
            }
        }
    }

    fn remove(&mut self, h: u64) -> Option<Arc<Object>> {
        let o = self.objects.remove(&h)?;
        self.unindex(&o);
        Some(o)
    }
}

/// Tells whether a connection's peer is still there (see [`Hsm::register_probe`]).
pub type Probe = Box<dyn Fn() -> bool + Send + Sync>;

struct Handles {
    next: u64,
    end: u64,
}

/// The software HSM.
pub struct Hsm {
    store: Store,
    users: RwLock<HashMap<String, String>>,
    logins: users::LoginCache,
    table: RwLock<Table>,
    /// Serializes mutations (store commit + table update).
    writer: Mutex<()>,
    handles: Mutex<Handles>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Liveness probes of the connections served over sockets.
    probes: Mutex<HashMap<u64, Probe>>,
    pub limits: Limits,
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
    log::error!("store: {e}");
    ckr::DEVICE_ERROR
}

impl Hsm {
    /// An HSM over `store`, loading its users and token objects.
    pub fn new(store: Store, limits: Limits) -> Result<Hsm, StoreError> {
        let mut table = Table::default();
        let mut max_handle = 0;
        for (h, rec) in store.objects()? {
            max_handle = max_handle.max(h);
            table.insert(Arc::new(Object::from_record(h, &rec)));
        }
        let users = store
            .users()?
            .into_iter()
            .map(|(n, r)| (n, r.phc))
            .collect();
        Ok(Hsm {
            store,
            users: RwLock::new(users),
            logins: users::LoginCache::new(),
            table: RwLock::new(table),
            writer: Mutex::new(()),
            // Force a reservation on first use, above every stored handle.
            handles: Mutex::new(Handles {
                next: max_handle + 1,
                end: max_handle + 1,
            }),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            probes: Mutex::new(HashMap::new()),
            limits,
        })
    }

    /// An in-memory HSM with one user (the `dev` command, tests).
    pub fn dev(user: &str, password: &[u8]) -> Result<Hsm, StoreError> {
        let store = Store::in_memory()?;
        let phc = users::hash_password(password).map_err(StoreError)?;
        store.put_user(user, &UserRecord { phc })?;
        Hsm::new(store, Limits::default())
    }

    /// Add a user (or replace its password).
    pub fn put_user(&self, name: &str, password: &[u8]) -> Result<(), StoreError> {
        users::check_name(name).map_err(StoreError)?;
        let phc = users::hash_password(password).map_err(StoreError)?;
        self.store
            .put_user(name, &UserRecord { phc: phc.clone() })?;
        write(&self.users).insert(name.to_string(), phc);
        self.logins.forget(name);
        Ok(())
    }

    pub fn user_count(&self) -> usize {
        read(&self.users).len()
    }

    /// A new connection id.
    pub fn connection_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Check a user's password: `CKR_PIN_INCORRECT` for an unknown user or a
    /// wrong password alike, after the same work.
    pub fn login(&self, user: &str, password: &[u8]) -> Result<(), Rv> {
        let phc = read(&self.users).get(user).cloned();
        if self.logins.hit(user, password) && phc.is_some() {
            return Ok(());
        }
        let ok = users::verify_password(phc.as_deref(), password);
        if ok {
            self.logins.remember(user, password);
            Ok(())
        } else {
            Err(ckr::PIN_INCORRECT)
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

    /// The object `handle` if `user` in `app` (on connection `viewer`) may
    /// see it.
    pub fn get(&self, user: &str, app: &[u8; 16], viewer: u64, handle: u64) -> Option<Arc<Object>> {
        let o = read(&self.table)
            .objects
            .get(&handle)
            .filter(|o| o.visible(user, app))
            .cloned()?;
        if self.stale(&o, viewer) {
            None
        } else {
            Some(o)
        }
    }

    /// Insert a new object; token objects are committed to the store first.
    pub fn put(&self, o: Object) -> Result<Arc<Object>, Rv> {
        let _w = lock(&self.writer);
        if o.is_token() {
            self.store
                .put_object(o.handle, &o.to_record())
                .map_err(dev_err)?;
        }
        let o = Arc::new(o);
        write(&self.table).insert(o.clone());
        Ok(o)
    }

    /// Replace an existing object (same handle) with a new version; an
    /// object destroyed meanwhile stays destroyed.
    pub fn replace(&self, o: Object) -> Result<Arc<Object>, Rv> {
        let _w = lock(&self.writer);
        if !read(&self.table).objects.contains_key(&o.handle) {
            return Err(ckr::OBJECT_HANDLE_INVALID);
        }
        if o.is_token() {
            self.store
                .put_object(o.handle, &o.to_record())
                .map_err(dev_err)?;
        }
        let o = Arc::new(o);
        write(&self.table).insert(o.clone());
        Ok(o)
    }

    /// Insert two objects (a key pair) at once.
    pub fn put_pair(&self, a: Object, b: Object) -> Result<(), Rv> {
        let h = a.handle;
        self.put(a)?;
        if let Err(e) = self.put(b) {
            let _ = self.remove(h);
            return Err(e);
        }
        Ok(())
    }

    /// Remove object `handle`.
    pub fn remove(&self, handle: u64) -> Result<(), Rv> {
        let _w = lock(&self.writer);
        let token = read(&self.table).objects.get(&handle).map(|o| o.is_token());
        if token == Some(true) {
            self.store.delete_object(handle).map_err(dev_err)?;
        }
        write(&self.table).remove(handle);
        Ok(())
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
        let found: Vec<(u64, Option<u64>)> = {
            let t = read(&self.table);
            let label = template.iter().find(|a| a.ty == cka::LABEL);
            let candidates: Box<dyn Iterator<Item = &u64>> = match label {
                Some(l) => match t.by_label.get(&(user.to_string(), l.value.to_vec())) {
                    Some(s) => Box::new(s.iter()),
                    None => Box::new(std::iter::empty()),
                },
                None => match t.by_owner.get(user) {
                    Some(s) => Box::new(s.iter()),
                    None => Box::new(std::iter::empty()),
                },
            };
            candidates
                .filter_map(|h| t.objects.get(h))
                .filter(|o| o.visible(user, app) && o.matches(template))
                .map(|o| (o.handle, o.session.map(|s| s.conn)))
                .take(limit)
                .collect()
        };
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

    /// Every token object (the admin CLI).
    pub fn token_objects(&self) -> Vec<Arc<Object>> {
        let t = read(&self.table);
        let mut v: Vec<_> = t
            .objects
            .values()
            .filter(|o| o.is_token())
            .cloned()
            .collect();
        v.sort_by_key(|o| o.handle);
        v
    }
}
