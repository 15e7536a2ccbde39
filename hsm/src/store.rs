//! The persistent store: users, token objects and the keyring, in one
//! `redb` database in the data folder (one server), or in PostgreSQL
//! (several servers sharing one store, [`crate::pgstore`]).
//!
//! This module and [`crate::pgstore`] are the only ones that touch the disk
//! or the database (besides the TLS identity files of [`crate::tls`]).
//! Every write is one transaction committed with immediate durability
//! (redb: `Durability::Immediate` with two-phase commit; PostgreSQL: a
//! committed transaction): once a method returns `Ok`, the change survives
//! a crash or `kill -9`.
//!
//! Object records reach the store already sealed ([`crate::vault`]): the
//! store never sees a secret in clear. User records hold argon2id hashes and
//! the login-failure state.

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::pgstore::PgStore;

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Key of the handle high-water mark in `META`: every handle below it may
/// have been handed out, and none is ever handed out again.
const NEXT_HANDLE: &str = "next_handle";
/// Key of the keyring in `BLOBS`.
const KEYRING: &str = "keyring";

/// Format tag of records stored in clear (postcard): users, and objects
/// written before encryption at rest.
pub const FORMAT_PLAIN: u8 = 1;
/// Format tag of user records with login-failure state.
const FORMAT_USER2: u8 = 3;

/// Name of the database file inside the data folder.
pub const DB_FILE: &str = "hsmlink.redb";

/// A failure of the store (I/O, corruption, a database held by another process).
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn err<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError(format!("{what}: {e}"))
}

/// A user as stored.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// The password hash as an argon2 PHC string.
    pub phc: String,
    /// Consecutive failed logins.
    pub failures: u32,
    /// Locked after too many failures, until an admin unlocks it.
    pub locked: bool,
}

/// The first user format (a PHC string only).
#[derive(Deserialize)]
struct UserRecordV1 {
    phc: String,
}

/// A token object's content, in clear (it is sealed before it is stored).
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct ObjectRecord {
    /// The user who owns it.
    pub owner: String,
    /// Attributes that are not secret: `(type, canonical value)`.
    pub public: Vec<(u64, Vec<u8>)>,
    /// Secret attributes: sealed at rest.
    pub secret: Vec<(u64, Vec<u8>)>,
}

impl fmt::Debug for ObjectRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ObjectRecord({}, {} public, {} secret)",
            self.owner,
            self.public.len(),
            self.secret.len()
        )
    }
}

impl Drop for ObjectRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in self.secret.iter_mut() {
            v.zeroize();
        }
    }
}

/// Decode an object record of the old clear format.
pub fn decode_plain(bytes: &[u8]) -> Result<ObjectRecord, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_PLAIN, rest)) => postcard::from_bytes(rest).map_err(err("decode")),
        Some((tag, _)) => Err(StoreError(format!("unknown record format {tag}"))),
        None => Err(StoreError("empty record".into())),
    }
}

/// Encode a user record.
pub fn encode_user(u: &UserRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_USER2];
    out.extend(postcard::to_stdvec(u).map_err(err("encode"))?);
    Ok(out)
}

/// Decode a user record (either format).
pub fn decode_user(bytes: &[u8]) -> Result<UserRecord, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_USER2, rest)) => postcard::from_bytes(rest).map_err(err("decode user")),
        Some((&FORMAT_PLAIN, rest)) => {
            let v1: UserRecordV1 = postcard::from_bytes(rest).map_err(err("decode user"))?;
            Ok(UserRecord {
                phc: v1.phc,
                ..UserRecord::default()
            })
        }
        Some((tag, _)) => Err(StoreError(format!("unknown record format {tag}"))),
        None => Err(StoreError("empty record".into())),
    }
}

/// One object to write: handle, owner, label (indexed by PostgreSQL) and
/// the sealed record.
pub struct ObjectRow<'a> {
    pub handle: u64,
    pub owner: &'a str,
    pub label: &'a [u8],
    pub bytes: &'a [u8],
}

/// What [`Store::swap_object`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The expected version was there and is replaced.
    Swapped,
    /// The object is gone.
    Gone,
    /// The object holds another version: nothing written.
    Changed,
}

/// The database of one HSM (or of a fleet).
pub enum Store {
    Redb(RedbStore),
    Postgres(PgStore),
}

impl Store {
    /// Open (or create) the redb store in folder `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::Redb(RedbStore::open(dir)?))
    }

    /// A store that lives in memory only (the `dev` command, tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Ok(Store::Redb(RedbStore::in_memory()?))
    }

    /// Connect to the PostgreSQL store at `url` (tables made if missing).
    pub fn postgres(url: &str) -> Result<Store, StoreError> {
        Ok(Store::Postgres(PgStore::connect(url)?))
    }

    /// Whether other servers may write the same store (lookups then read
    /// through to it instead of trusting a cache).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// For logs and `status` (never the PostgreSQL URL: it may hold a password).
    pub fn describe(&self) -> String {
        match self {
            Store::Redb(r) => match &r.path {
                Some(p) => format!("redb:{}", p.display()),
                None => "memory".into(),
            },
            Store::Postgres(_) => "postgres".into(),
        }
    }

    pub fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        match self {
            Store::Redb(r) => r.users(),
            Store::Postgres(p) => p.users(),
        }
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        match self {
            Store::Redb(r) => r.user(name),
            Store::Postgres(p) => p.user(name),
        }
    }

    /// Add or replace user `name`.
    pub fn put_user(&self, name: &str, rec: &UserRecord) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.put_user(name, rec),
            Store::Postgres(p) => p.put_user(name, rec),
        }
    }

    /// Remove user `name` and every token object it owns; returns whether the
    /// user existed.
    pub fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Redb(r) => r.remove_user(name),
            Store::Postgres(p) => p.remove_user(name),
        }
    }

    /// Count a failed login of `name`: returns the consecutive failures and
    /// whether the user is now locked (locked when they reach `max`, if `max`
    /// is not 0), or `None` for an unknown user.
    pub fn login_failed(&self, name: &str, max: u32) -> Result<Option<(u32, bool)>, StoreError> {
        match self {
            Store::Redb(r) => r.update_user(name, |u| {
                u.failures = u.failures.saturating_add(1);
                if max > 0 && u.failures >= max {
                    u.locked = true;
                }
                (u.failures, u.locked)
            }),
            Store::Postgres(p) => p.login_failed(name, max),
        }
    }

    /// Reset the failure count of `name` after a successful login.
    pub fn login_succeeded(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.update_user(name, |u| u.failures = 0).map(|_| ()),
            Store::Postgres(p) => p.login_succeeded(name),
        }
    }

    /// Unlock user `name` (and reset its failures); whether it exists.
    pub fn unlock_user(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Store::Redb(r) => r
                .update_user(name, |u| {
                    u.failures = 0;
                    u.locked = false;
                })
                .map(|o| o.is_some()),
            Store::Postgres(p) => p.unlock_user(name),
        }
    }

    /// Every stored object: `(handle, sealed record)`.
    pub fn objects(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        match self {
            Store::Redb(r) => r.objects(),
            Store::Postgres(p) => p.objects(None, None),
        }
    }

    /// The objects of `owner` (with `label`, if given), by handle.
    pub fn objects_of(
        &self,
        owner: &str,
        label: Option<&[u8]>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        match self {
            Store::Redb(r) => {
                let mut v = r.objects()?;
                v.retain(|(_, b)| {
                    crate::vault::peek_object(b).is_ok_and(|so| {
                        so.owner == owner
                            && label.is_none_or(|l| {
                                so.public
                                    .iter()
                                    .find(|(t, _)| *t == hsmlink_core::ck::cka::LABEL)
                                    .map_or(l.is_empty(), |(_, v)| v == l)
                            })
                    })
                });
                Ok(v)
            }
            Store::Postgres(p) => p.objects(Some(owner), label),
        }
    }

    /// The stored object `handle`.
    pub fn object(&self, handle: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redb(r) => r.object(handle),
            Store::Postgres(p) => p.object(handle),
        }
    }

    /// Write objects (new or replaced), all in one transaction.
    pub fn put_objects(&self, rows: &[ObjectRow<'_>]) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.put_objects(rows),
            Store::Postgres(p) => p.put_objects(rows),
        }
    }

    /// Replace an existing object; `false` (nothing written) if it is gone.
    pub fn update_object(&self, row: &ObjectRow<'_>) -> Result<bool, StoreError> {
        match self {
            Store::Redb(r) => r.update_object(row),
            Store::Postgres(p) => p.update_object(row),
        }
    }

    /// Replace object `row.handle` only if its stored bytes are still
    /// `expected` (a compare-and-swap: a change made meanwhile by another
    /// session, or another server of a fleet, is never overwritten).
    pub fn swap_object(&self, row: &ObjectRow<'_>, expected: &[u8]) -> Result<Swap, StoreError> {
        match self {
            Store::Redb(r) => r.swap_object(row, expected),
            Store::Postgres(p) => p.swap_object(row, expected),
        }
    }

    /// Delete object `handle`; whether it existed.
    pub fn delete_object(&self, handle: u64) -> Result<bool, StoreError> {
        match self {
            Store::Redb(r) => r.delete_object(handle),
            Store::Postgres(p) => p.delete_object(handle),
        }
    }

    /// Reserve `count` handles, starting at least at `min`: returns the first
    /// one. The reservation is committed before the handles are used, so a
    /// handle is never handed out twice, across restarts (and, with
    /// PostgreSQL, across servers) included.
    pub fn reserve_handles(&self, min: u64, count: u64) -> Result<u64, StoreError> {
        match self {
            Store::Redb(r) => r.reserve_handles(min, count),
            Store::Postgres(p) => p.reserve_handles(count),
        }
    }

    /// The stored keyring, if any.
    pub fn keyring(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redb(r) => r.blob(KEYRING),
            Store::Postgres(p) => p.meta(KEYRING),
        }
    }

    /// Store `bytes` as the keyring unless one exists; returns the keyring
    /// that is stored (the first writer wins, for servers starting together).
    pub fn init_keyring(&self, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Redb(r) => r.init_blob(KEYRING, bytes),
            Store::Postgres(p) => p.init_meta(KEYRING, bytes),
        }
    }

    /// Replace the keyring (a new passphrase).
    pub fn replace_keyring(&self, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.put_blob(KEYRING, bytes),
            Store::Postgres(p) => p.put_meta(KEYRING, bytes),
        }
    }

    /// A consistent copy of the whole database in a new file `dest`.
    pub fn backup(&self, dest: &Path) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.backup(dest),
            Store::Postgres(_) => Err(StoreError(
                "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump)".into(),
            )),
        }
    }
}

/// The embedded redb database.
pub struct RedbStore {
    db: Database,
    path: Option<PathBuf>,
}

fn begin_write(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut tx = db.begin_write().map_err(err("begin"))?;
    tx.set_durability(Durability::Immediate)
        .map_err(err("durability"))?;
    // Two-phase commit and the allocator state saved with each commit: a
    // crash leaves a database that opens at once, without a long repair.
    tx.set_quick_repair(true);
    Ok(tx)
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another process (is a server running on this data folder?)",
                path.display()
            )),
            e => StoreError(format!("open {}: {e}", path.display())),
        })?;
        owner_only(&path)?;
        Self::init(db, Some(path))
    }

    /// Open an existing database file read-only in spirit (for restore checks).
    pub fn open_file(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::open(path)
            .map_err(|e| StoreError(format!("open {}: {e}", path.display())))?;
        Self::init(db, Some(path.to_path_buf()))
    }

    pub fn in_memory() -> Result<RedbStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err("in-memory database"))?;
        Self::init(db, None)
    }

    fn init(db: Database, path: Option<PathBuf>) -> Result<RedbStore, StoreError> {
        let tx = begin_write(&db)?;
        {
            tx.open_table(USERS).map_err(err("users table"))?;
            tx.open_table(OBJECTS).map_err(err("objects table"))?;
            tx.open_table(META).map_err(err("meta table"))?;
            tx.open_table(BLOBS).map_err(err("blobs table"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(RedbStore { db, path })
    }

    fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(USERS).map_err(err("users table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err("read users"))? {
            let (k, v) = row.map_err(err("read users"))?;
            out.push((k.value().to_string(), decode_user(v.value())?));
        }
        Ok(out)
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(USERS).map_err(err("users table"))?;
        let v = t.get(name).map_err(err("read user"))?;
        v.map(|g| decode_user(g.value())).transpose()
    }

    fn put_user(&self, name: &str, rec: &UserRecord) -> Result<(), StoreError> {
        let bytes = encode_user(rec)?;
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            t.insert(name, bytes.as_slice())
                .map_err(err("write user"))?;
        }
        tx.commit().map_err(err("commit"))
    }

    /// Read-modify-write of one user in one transaction.
    fn update_user<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut UserRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        let tx = begin_write(&self.db)?;
        let out;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            let cur = t
                .get(name)
                .map_err(err("read user"))?
                .map(|g| decode_user(g.value()))
                .transpose()?;
            let Some(mut u) = cur else {
                return Ok(None);
            };
            out = f(&mut u);
            let bytes = encode_user(&u)?;
            t.insert(name, bytes.as_slice())
                .map_err(err("write user"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(Some(out))
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let owned: Vec<u64> = self
            .objects()?
            .into_iter()
            .filter(|(_, b)| crate::vault::peek_object(b).is_ok_and(|so| so.owner == name))
            .map(|(h, _)| h)
            .collect();
        let tx = begin_write(&self.db)?;
        let existed;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            existed = t.remove(name).map_err(err("remove user"))?.is_some();
            let mut o = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            for h in owned {
                o.remove(h).map_err(err("remove object"))?;
            }
        }
        tx.commit().map_err(err("commit"))?;
        Ok(existed)
    }

    fn objects(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err("read objects"))? {
            let (k, v) = row.map_err(err("read objects"))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn object(&self, handle: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
        let v = t.get(handle).map_err(err("read object"))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn put_objects(&self, rows: &[ObjectRow<'_>]) -> Result<(), StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            for r in rows {
                t.insert(r.handle, r.bytes).map_err(err("write object"))?;
            }
        }
        tx.commit().map_err(err("commit"))
    }

    fn update_object(&self, row: &ObjectRow<'_>) -> Result<bool, StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            if t.get(row.handle).map_err(err("read object"))?.is_none() {
                return Ok(false);
            }
            t.insert(row.handle, row.bytes)
                .map_err(err("write object"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(true)
    }

    fn swap_object(&self, row: &ObjectRow<'_>, expected: &[u8]) -> Result<Swap, StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            let same = match t.get(row.handle).map_err(err("read object"))? {
                None => return Ok(Swap::Gone),
                Some(cur) => cur.value() == expected,
            };
            if !same {
                return Ok(Swap::Changed);
            }
            t.insert(row.handle, row.bytes)
                .map_err(err("write object"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(Swap::Swapped)
    }

    fn delete_object(&self, handle: u64) -> Result<bool, StoreError> {
        let tx = begin_write(&self.db)?;
        let existed;
        {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            existed = t.remove(handle).map_err(err("delete object"))?.is_some();
        }
        tx.commit().map_err(err("commit"))?;
        Ok(existed)
    }

    fn reserve_handles(&self, min: u64, count: u64) -> Result<u64, StoreError> {
        let tx = begin_write(&self.db)?;
        let start;
        {
            let mut t = tx.open_table(META).map_err(err("meta table"))?;
            let cur = t
                .get(NEXT_HANDLE)
                .map_err(err("read meta"))?
                .map(|g| g.value())
                .unwrap_or(1);
            start = cur.max(min).max(1);
            let next = start
                .checked_add(count)
                .ok_or_else(|| StoreError("handle space exhausted".into()))?;
            t.insert(NEXT_HANDLE, next).map_err(err("write meta"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(start)
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(BLOBS).map_err(err("blobs table"))?;
        let v = t.get(key).map_err(err("read blob"))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn init_blob(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        let tx = begin_write(&self.db)?;
        let out;
        {
            let mut t = tx.open_table(BLOBS).map_err(err("blobs table"))?;
            let cur = t
                .get(key)
                .map_err(err("read blob"))?
                .map(|g| g.value().to_vec());
            out = match cur {
                Some(v) => v,
                None => {
                    t.insert(key, bytes).map_err(err("write blob"))?;
                    bytes.to_vec()
                }
            };
        }
        tx.commit().map_err(err("commit"))?;
        Ok(out)
    }

    fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(BLOBS).map_err(err("blobs table"))?;
            t.insert(key, bytes).map_err(err("write blob"))?;
        }
        tx.commit().map_err(err("commit"))
    }

    /// Copy every table, as of one read transaction (a consistent snapshot
    /// while writers go on), into a new database file `dest`.
    fn backup(&self, dest: &Path) -> Result<(), StoreError> {
        if dest.exists() {
            return Err(StoreError(format!("{} already exists", dest.display())));
        }
        let out = Database::create(dest)
            .map_err(|e| StoreError(format!("create {}: {e}", dest.display())))?;
        let rx = self.db.begin_read().map_err(err("begin"))?;
        let tx = begin_write(&out)?;
        {
            let src = rx.open_table(USERS).map_err(err("users table"))?;
            let mut dst = tx.open_table(USERS).map_err(err("users table"))?;
            for row in src.iter().map_err(err("read"))? {
                let (k, v) = row.map_err(err("read"))?;
                dst.insert(k.value(), v.value()).map_err(err("write"))?;
            }
            let src = rx.open_table(OBJECTS).map_err(err("objects table"))?;
            let mut dst = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            for row in src.iter().map_err(err("read"))? {
                let (k, v) = row.map_err(err("read"))?;
                dst.insert(k.value(), v.value()).map_err(err("write"))?;
            }
            let src = rx.open_table(META).map_err(err("meta table"))?;
            let mut dst = tx.open_table(META).map_err(err("meta table"))?;
            for row in src.iter().map_err(err("read"))? {
                let (k, v) = row.map_err(err("read"))?;
                dst.insert(k.value(), v.value()).map_err(err("write"))?;
            }
            let src = rx.open_table(BLOBS).map_err(err("blobs table"))?;
            let mut dst = tx.open_table(BLOBS).map_err(err("blobs table"))?;
            for row in src.iter().map_err(err("read"))? {
                let (k, v) = row.map_err(err("read"))?;
                dst.insert(k.value(), v.value()).map_err(err("write"))?;
            }
        }
        tx.commit().map_err(err("commit"))?;
        drop(out);
        owner_only(dest)?;
        std::fs::File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(err("sync backup"))?;
        Ok(())
    }
}

/// Make a file readable and writable by its owner only.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError(format!("chmod {}: {e}", path.display())))
}

/// Create `dir` (and parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError(format!("create data folder {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(handle: u64, bytes: &'a [u8]) -> ObjectRow<'a> {
        ObjectRow {
            handle,
            owner: "alice",
            label: b"",
            bytes,
        }
    }

    #[test]
    fn records_roundtrip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_user(
                "alice",
                &UserRecord {
                    phc: "x".into(),
                    ..UserRecord::default()
                },
            )
            .unwrap();
            s.put_objects(&[row(7, b"\x02abc")]).unwrap();
            assert_eq!(s.reserve_handles(0, 10).unwrap(), 1);
            assert_eq!(s.reserve_handles(0, 10).unwrap(), 11);
            assert_eq!(s.init_keyring(b"k1").unwrap(), b"k1");
            assert_eq!(s.init_keyring(b"k2").unwrap(), b"k1");
        }
        let s = Store::open(dir.path()).unwrap();
        let objs = s.objects().unwrap();
        assert_eq!(objs, vec![(7, b"\x02abc".to_vec())]);
        assert_eq!(s.users().unwrap()[0].0, "alice");
        assert_eq!(s.reserve_handles(0, 1).unwrap(), 21);
        assert_eq!(s.keyring().unwrap().unwrap(), b"k1");
        assert!(!s.update_object(&row(8, b"x")).unwrap());
        assert!(s.update_object(&row(7, b"y")).unwrap());
        assert_eq!(s.object(7).unwrap().unwrap(), b"y");
        // Compare-and-swap: only over the version the writer read.
        assert_eq!(s.swap_object(&row(7, b"z"), b"x").unwrap(), Swap::Changed);
        assert_eq!(s.object(7).unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(s.swap_object(&row(7, b"z"), b"y").unwrap(), Swap::Swapped);
        assert_eq!(s.object(7).unwrap().as_deref(), Some(&b"z"[..]));
        assert_eq!(s.swap_object(&row(8, b"z"), b"y").unwrap(), Swap::Gone);
        assert!(s.remove_user("alice").unwrap());
        assert!(!s.remove_user("alice").unwrap());
    }

    #[test]
    fn login_failures_lock_and_unlock() {
        let s = Store::in_memory().unwrap();
        s.put_user("u", &UserRecord::default()).unwrap();
        assert_eq!(s.login_failed("u", 3).unwrap(), Some((1, false)));
        assert_eq!(s.login_failed("u", 3).unwrap(), Some((2, false)));
        s.login_succeeded("u").unwrap();
        assert_eq!(s.login_failed("u", 3).unwrap(), Some((1, false)));
        assert_eq!(s.login_failed("u", 3).unwrap(), Some((2, false)));
        assert_eq!(s.login_failed("u", 3).unwrap(), Some((3, true)));
        assert!(s.user("u").unwrap().unwrap().locked);
        assert!(s.unlock_user("u").unwrap());
        assert_eq!(s.user("u").unwrap().unwrap(), UserRecord::default());
        assert_eq!(s.login_failed("nobody", 3).unwrap(), None);
        assert!(!s.unlock_user("nobody").unwrap());
    }

    #[test]
    fn old_user_records_still_read() {
        let mut v1 = vec![FORMAT_PLAIN];
        v1.extend(postcard::to_stdvec(&("phc-string",)).unwrap());
        assert_eq!(decode_user(&v1).unwrap().phc, "phc-string");
    }

    #[test]
    fn backup_is_a_complete_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a")).unwrap();
        s.put_user("bob", &UserRecord::default()).unwrap();
        s.put_objects(&[row(3, b"\x02zz")]).unwrap();
        s.init_keyring(b"ring").unwrap();
        let dest = dir.path().join("copy.redb");
        s.backup(&dest).unwrap();
        assert!(s.backup(&dest).is_err(), "never overwrites");
        let c = Store::Redb(RedbStore::open_file(&dest).unwrap());
        assert_eq!(c.users().unwrap().len(), 1);
        assert_eq!(c.objects().unwrap().len(), 1);
        assert_eq!(c.keyring().unwrap().unwrap(), b"ring");
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        assert!(e.0.contains("in use"), "{e}");
    }

    #[test]
    fn garbage_records_are_errors() {
        assert!(decode_user(&[]).is_err());
        assert!(decode_user(&[9, 1]).is_err());
        assert!(decode_user(&[1, 0xff, 0xff]).is_err());
        assert!(decode_plain(&[]).is_err());
    }
}
