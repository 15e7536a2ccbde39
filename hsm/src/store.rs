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
//! store never sees a secret in clear. User records hold argon2id hashes,
//! the login-failure state and the user's id; each is authenticated (HMAC)
//! with a key derived from the master key ([`crate::vault::RecordKey`]),
//! bound to the user's name, so that whoever can write the database cannot
//! reset a password, clear a lock or move an id without the server
//! refusing the record.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::pgstore::PgStore;
use crate::vault::{RecordKey, RECORD_TAG_LEN};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// Key of the handle high-water mark in `META`: every handle below it may
/// have been handed out, and none is ever handed out again.
const NEXT_HANDLE: &str = "next_handle";
/// Key of the keyring in `BLOBS`.
const KEYRING: &str = "keyring";
/// Key of the user id counter in `META`: ids are never reused.
const NEXT_USER_ID: &str = "next_user_id";

/// Format tag of records stored in clear (postcard): users, and objects
/// written before encryption at rest.
pub const FORMAT_PLAIN: u8 = 1;
/// Format tag of user records with login-failure state, unauthenticated
/// (read only by `hsmlink-hsm migrate`).
const FORMAT_USER2: u8 = 3;
/// Format tag of authenticated user records without a login generation:
/// tag ‖ postcard(UserRecordV3) (read as generation 0, rewritten in the
/// current format on their next change).
const FORMAT_USER_SEALED: u8 = 4;
/// Format tag of authenticated user records: tag ‖ postcard(UserRecord).
/// Each authenticated format is decoded strictly (no trailing bytes), so
/// that a record's tag byte cannot be swapped for the other's.
const FORMAT_USER_SEALED2: u8 = 6;
/// Format tag of user records written before the store had a master key
/// (`user add` before the first `serve`): unauthenticated, adopted (sealed)
/// only by the start that makes the master key, refused afterwards.
const FORMAT_USER_PENDING: u8 = 5;

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
    /// The user's id, never reused: its objects belong to the id (through
    /// [`crate::users::owner_key`]), so a new user of an old name inherits
    /// nothing. 0 only in records of earlier versions (before `migrate`).
    pub id: u64,
    /// The password hash as an argon2 PHC string.
    pub phc: String,
    /// Consecutive failed logins.
    pub failures: u32,
    /// Locked: after too many failures (until `locked_until` passes, or an
    /// admin unlocks it), or by an admin (`user lock`: until `unlock`).
    pub locked: bool,
    /// Login generation: bumped by a password change and by an admin lock.
    /// A login rests on the id, password hash and generation it was granted
    /// with, and ends when any changes (a fleet server sees it in the
    /// record). An automatic lockout (failed logins) leaves it alone: it
    /// refuses new logins but ends no live session, so that whoever can
    /// send wrong PINs cannot kick a logged-in user out.
    pub generation: u64,
    /// When a lock ends by itself (milliseconds since the Unix epoch); 0:
    /// only an admin's `unlock` (or `passwd`) ends it.
    pub locked_until: u64,
}

/// The authenticated user format before the login generation.
#[derive(Deserialize)]
struct UserRecordV3 {
    id: u64,
    phc: String,
    failures: u32,
    locked: bool,
}

impl From<UserRecordV3> for UserRecord {
    /// Read as login generation 0, with no end to a lock.
    fn from(v3: UserRecordV3) -> UserRecord {
        UserRecord {
            id: v3.id,
            phc: v3.phc,
            failures: v3.failures,
            locked: v3.locked,
            generation: 0,
            locked_until: 0,
        }
    }
}

impl UserRecord {
    /// Whether the user is locked at `now` (milliseconds since the Unix
    /// epoch).
    pub fn is_locked(&self, now: u64) -> bool {
        self.locked && (self.locked_until == 0 || now < self.locked_until)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a failed login locks: after `max` consecutive failures (0: never),
/// until [`LockRule::until`] (milliseconds since the Unix epoch).
#[derive(Clone, Copy)]
pub struct LockRule {
    pub max: u32,
    pub now: u64,
    /// Lock length (ms) for the first lock; doubled for each failure past
    /// `max` (a failure once a lock has lapsed locks again, for twice as
    /// long), up to `max_ms`. 0: permanent.
    pub base_ms: u64,
    pub max_ms: u64,
}

impl LockRule {
    /// When a lock after `failures` consecutive failures ends (0: never).
    pub fn until(&self, failures: u32) -> u64 {
        if self.base_ms == 0 {
            return 0;
        }
        let n = failures.saturating_sub(self.max).min(30);
        let ms = self
            .base_ms
            .saturating_mul(1u64 << n)
            .min(self.max_ms.max(self.base_ms));
        self.now.saturating_add(ms)
    }
}

/// The first user format (a PHC string only).
#[derive(Deserialize)]
struct UserRecordV1 {
    phc: String,
}

/// The second user format (no id, no authentication).
#[derive(Deserialize)]
struct UserRecordV2 {
    phc: String,
    failures: u32,
    locked: bool,
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

/// Encode an object record in the clear format of earlier versions (what
/// `hsmlink-hsm migrate` converts; tests plant such records to check that
/// a server refuses them).
pub fn encode_plain(rec: &ObjectRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_PLAIN];
    out.extend(postcard::to_stdvec(rec).map_err(err("encode"))?);
    Ok(out)
}

/// Encode user `name`'s record: authenticated with `key`, or, with no key
/// (a store that has no master key yet), pending.
pub fn encode_user(
    name: &str,
    u: &UserRecord,
    key: Option<&RecordKey>,
) -> Result<Vec<u8>, StoreError> {
    let body = postcard::to_stdvec(u).map_err(err("encode"))?;
    let mut out = Vec::with_capacity(1 + RECORD_TAG_LEN + body.len());
    match key {
        Some(k) => {
            out.push(FORMAT_USER_SEALED2);
            out.extend_from_slice(&k.tag(name, &body).map_err(|e| StoreError(e.0))?);
        }
        None => out.push(FORMAT_USER_PENDING),
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// A user record as read, before any check: whether it is authenticated
/// (and its tag verified against `key`, when given).
pub enum UserBytes {
    /// Authenticated, and the tag verifies (or no key was given to check it).
    Sealed(UserRecord),
    /// Authenticated format, but the tag does not verify.
    Forged,
    /// Unauthenticated: pending (written before the master key existed) or
    /// of an earlier version.
    Unsealed(UserRecord),
}

/// Decode user `name`'s record, whatever its format, checking its tag when
/// `key` is given.
pub fn read_user(
    name: &str,
    bytes: &[u8],
    key: Option<&RecordKey>,
) -> Result<UserBytes, StoreError> {
    match bytes.split_first() {
        Some((&f @ (FORMAT_USER_SEALED | FORMAT_USER_SEALED2), rest)) => {
            if rest.len() < RECORD_TAG_LEN {
                return Ok(UserBytes::Forged);
            }
            let (tag, body) = rest.split_at(RECORD_TAG_LEN);
            if key.is_some_and(|k| !k.verify(name, body, tag)) {
                return Ok(UserBytes::Forged);
            }
            let decoded = if f == FORMAT_USER_SEALED2 {
                strict::<UserRecord>(body)
            } else {
                strict::<UserRecordV3>(body).map(UserRecord::from)
            };
            match decoded {
                Ok(u) => Ok(UserBytes::Sealed(u)),
                Err(_) if key.is_some() => Ok(UserBytes::Forged),
                Err(e) => Err(e),
            }
        }
        Some((&FORMAT_USER_PENDING, rest)) => Ok(UserBytes::Unsealed(
            // Pending records written before the login generation: read
            // as generation 0.
            strict::<UserRecord>(rest)
                .or_else(|_| strict::<UserRecordV3>(rest).map(UserRecord::from))?,
        )),
        Some((&FORMAT_USER2, rest)) => {
            let v2: UserRecordV2 = postcard::from_bytes(rest).map_err(err("decode user"))?;
            Ok(UserBytes::Unsealed(UserRecord {
                id: 0,
                phc: v2.phc,
                failures: v2.failures,
                locked: v2.locked,
                generation: 0,
                locked_until: 0,
            }))
        }
        Some((&FORMAT_PLAIN, rest)) => {
            let v1: UserRecordV1 = postcard::from_bytes(rest).map_err(err("decode user"))?;
            Ok(UserBytes::Unsealed(UserRecord {
                phc: v1.phc,
                ..UserRecord::default()
            }))
        }
        Some((tag, _)) => Err(StoreError(format!("unknown record format {tag}"))),
        None => Err(StoreError("empty record".into())),
    }
}

/// Decode `body` as a whole: trailing bytes are an error.
fn strict<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(StoreError("decode user: trailing bytes".into())),
        Err(e) => Err(err("decode user")(e)),
    }
}

/// Decode user `name`'s record. With `key` (a server, or an admin command
/// given the passphrase), only an authenticated record whose tag verifies
/// is accepted; without (listings of a store whose key is not at hand),
/// any format is read as is.
pub fn decode_user(
    name: &str,
    bytes: &[u8],
    key: Option<&RecordKey>,
) -> Result<UserRecord, StoreError> {
    match read_user(name, bytes, key)? {
        UserBytes::Sealed(u) => Ok(u),
        UserBytes::Unsealed(u) if key.is_none() => Ok(u),
        UserBytes::Forged => Err(StoreError(format!(
            "the record of user {name} fails its integrity check (edited in the database, or \
             the keyring was replaced): refused"
        ))),
        UserBytes::Unsealed(_) => Err(StoreError(format!(
            "the record of user {name} is not authenticated (planted in the database, or written \
             by an earlier version: `hsmlink-hsm migrate` converts those): refused"
        ))),
    }
}

/// Every user, each record checked: a refused record is an `Err` in its place.
pub type UserList = Vec<(String, Result<UserRecord, StoreError>)>;

/// The read of one user: the outer `Err` is a failure to read the store,
/// `None` an unknown user, the inner `Err` a refused record.
pub type UserChecked = Option<Result<UserRecord, StoreError>>;

/// The rewrite of one stored user record, inside its transaction.
pub type Rewrite<'a> = &'a mut dyn FnMut(&[u8]) -> Result<Vec<u8>, StoreError>;

/// The refusal of a new object whose handle is already stored.
pub(crate) fn handle_taken(handle: u64) -> StoreError {
    StoreError(format!(
        "object handle {handle} is already stored: refusing to overwrite it (was the handle \
         counter of the store set back?)"
    ))
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
    pub fn postgres(url: &str, tls: &crate::pgstore::PgTls) -> Result<Store, StoreError> {
        Ok(Store::Postgres(PgStore::connect(url, tls)?))
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

    /// Set the key that authenticates user records (once the master key
    /// is open). Without it, records are read as is (listings) and written
    /// pending (a store that has no master key yet).
    pub fn set_record_key(&self, key: RecordKey) {
        let cell = match self {
            Store::Redb(r) => &r.record_key,
            Store::Postgres(p) => &p.record_key,
        };
        let _ = cell.set(key);
    }

    /// The key that authenticates user records, if set.
    pub fn record_key(&self) -> Option<&RecordKey> {
        match self {
            Store::Redb(r) => r.record_key.get(),
            Store::Postgres(p) => p.record_key.get(),
        }
    }

    fn user_rows(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Store::Redb(r) => r.user_rows(),
            Store::Postgres(p) => p.user_rows(),
        }
    }

    /// Every user, each record checked (see [`decode_user`]): a refused
    /// record is an `Err` in its place.
    pub fn users(&self) -> Result<UserList, StoreError> {
        Ok(self
            .user_rows()?
            .into_iter()
            .map(|(n, b)| {
                let r = decode_user(&n, &b, self.record_key());
                (n, r)
            })
            .collect())
    }

    /// User `name`'s record; an `Err` if it is refused (see [`decode_user`]).
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.user_checked(name)?.transpose()
    }

    /// User `name`'s record: the outer `Err` is a failure to read the
    /// store, the inner one a refused record.
    pub fn user_checked(&self, name: &str) -> Result<UserChecked, StoreError> {
        let row = match self {
            Store::Redb(r) => r.user_row(name)?,
            Store::Postgres(p) => p.user_row(name)?,
        };
        Ok(row.map(|b| decode_user(name, &b, self.record_key())))
    }

    /// The records of users `names` (absent ones left out), each checked,
    /// in one read.
    pub fn users_named(&self, names: &[String]) -> Result<UserList, StoreError> {
        let rows = match self {
            Store::Redb(r) => {
                let mut out = Vec::new();
                for n in names {
                    if let Some(b) = r.user_row(n)? {
                        out.push((n.clone(), b));
                    }
                }
                out
            }
            Store::Postgres(p) => p.user_rows_named(names)?,
        };
        Ok(rows
            .into_iter()
            .map(|(n, b)| {
                let r = decode_user(&n, &b, self.record_key());
                (n, r)
            })
            .collect())
    }

    /// How many users the unauthenticated PostgreSQL table of earlier
    /// versions still holds (`hsmlink-hsm migrate` moves them).
    pub fn legacy_user_count(&self) -> Result<usize, StoreError> {
        match self {
            Store::Redb(_) => Ok(0),
            Store::Postgres(p) => Ok(p.legacy_users()?.len()),
        }
    }

    /// Set user `name`'s password hash (and unlock it): a new user gets a
    /// new id, an existing one keeps its own (a record that is refused is
    /// replaced, with a new id). Returns whether a record existed.
    pub fn set_password(&self, name: &str, phc: String) -> Result<bool, StoreError> {
        let existing = self.user_checked(name)?;
        let (id, generation) = match &existing {
            Some(Ok(u)) if u.id != 0 => (u.id, u.generation.wrapping_add(1)),
            _ => (self.new_user_id()?, 0),
        };
        self.put_user(
            name,
            &UserRecord {
                id,
                phc,
                generation,
                ..UserRecord::default()
            },
        )?;
        Ok(existing.is_some())
    }

    /// Add or replace user `name`.
    pub fn put_user(&self, name: &str, rec: &UserRecord) -> Result<(), StoreError> {
        let bytes = encode_user(name, rec, self.record_key())?;
        match self {
            Store::Redb(r) => r.put_user_row(name, &bytes),
            Store::Postgres(p) => p.put_user_row(name, &bytes),
        }
    }

    /// User `name`'s record as stored, unchecked (tests plant edited
    /// records with [`Store::put_raw_user`] to check they are refused).
    pub fn raw_user(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redb(r) => r.user_row(name),
            Store::Postgres(p) => p.user_row(name),
        }
    }

    /// Store `bytes` as user `name`'s record, as is.
    pub fn put_raw_user(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Redb(r) => r.put_user_row(name, bytes),
            Store::Postgres(p) => p.put_user_row(name, bytes),
        }
    }

    /// A new user id, never handed out before.
    pub fn new_user_id(&self) -> Result<u64, StoreError> {
        match self {
            Store::Redb(r) => r.reserve_counter(NEXT_USER_ID, 1, 1),
            Store::Postgres(p) => p.new_user_id(),
        }
    }

    /// Remove user `name` and every token object of `owner` (its owner
    /// key, when known); returns whether the user existed.
    pub fn remove_user(&self, name: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        match self {
            Store::Redb(r) => r.remove_user(name, owner),
            Store::Postgres(p) => p.remove_user(name, owner),
        }
    }

    /// Read-modify-write of user `name`'s record in one transaction (the
    /// record checked, and authenticated again when written); `None` for an
    /// unknown user.
    pub fn update_user<T>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut UserRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        let key = self.record_key();
        let mut out = None;
        let mut g = |bytes: &[u8]| -> Result<Vec<u8>, StoreError> {
            let mut u = decode_user(name, bytes, key)?;
            out = Some(f(&mut u));
            encode_user(name, &u, key)
        };
        let found = match self {
            Store::Redb(r) => r.update_user_row(name, &mut g)?,
            Store::Postgres(p) => p.update_user_row(name, &mut g)?,
        };
        Ok(if found { out } else { None })
    }

    /// Count a failed login of `name`: returns the consecutive failures and
    /// whether the user is now locked (locked when they reach `rule.max`,
    /// if not 0, until `rule.until(failures)`), or `None` for an unknown
    /// user.
    pub fn login_failed(
        &self,
        name: &str,
        rule: &LockRule,
    ) -> Result<Option<(u32, bool)>, StoreError> {
        self.update_user(name, |u| {
            u.failures = u.failures.saturating_add(1);
            // An admin's lock (no end) stays as it is.
            if rule.max > 0 && u.failures >= rule.max && !(u.locked && u.locked_until == 0) {
                u.locked = true;
                u.locked_until = rule.until(u.failures);
            }
            (u.failures, u.locked)
        })
    }

    /// Reset the failure count (and a lapsed lock) of `name` after a
    /// successful login.
    pub fn login_succeeded(&self, name: &str) -> Result<(), StoreError> {
        self.update_user(name, |u| {
            u.failures = 0;
            // A lock that lapsed is over; an admin's lock (no end) stays.
            if u.locked && u.locked_until != 0 {
                u.locked = false;
                u.locked_until = 0;
            }
        })
        .map(|_| ())
    }

    /// Unlock user `name` (and reset its failures); whether it exists.
    pub fn unlock_user(&self, name: &str) -> Result<bool, StoreError> {
        self.update_user(name, |u| {
            u.failures = 0;
            u.locked = false;
            u.locked_until = 0;
        })
        .map(|o| o.is_some())
    }

    /// Lock user `name` (an admin's decision: its live logins end, see
    /// [`UserRecord::generation`]); whether it exists.
    pub fn lock_user(&self, name: &str) -> Result<bool, StoreError> {
        self.update_user(name, |u| {
            u.locked = true;
            u.generation = u.generation.wrapping_add(1);
            u.locked_until = 0;
        })
        .map(|o| o.is_some())
    }

    /// Seal the pending user records (written by `user add` before the
    /// store had a master key) with the record key: done only by the start
    /// that made the master key. Returns how many.
    pub fn adopt_pending_users(&self) -> Result<usize, StoreError> {
        if self.record_key().is_none() {
            return Ok(0);
        }
        let mut n = 0;
        for (name, bytes) in self.user_rows()? {
            if bytes.first() == Some(&FORMAT_USER_PENDING) {
                if let UserBytes::Unsealed(u) = read_user(&name, &bytes, None)? {
                    self.put_user(&name, &u)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Whether the store holds anything sealed under a master key (objects,
    /// authenticated user records): then a missing keyring was deleted, and
    /// a new one must not be made.
    pub fn holds_sealed_records(&self) -> Result<bool, StoreError> {
        if !self.objects()?.is_empty() {
            return Ok(true);
        }
        Ok(self
            .user_rows()?
            .iter()
            .any(|(_, b)| matches!(b.first(), Some(&(FORMAT_USER_SEALED | FORMAT_USER_SEALED2)))))
    }

    /// The unauthenticated user records (pending, or of earlier versions),
    /// for `hsmlink-hsm migrate`: `(name, record)`.
    pub fn unsealed_users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let mut out = Vec::new();
        for (name, bytes) in self.user_rows()? {
            if let UserBytes::Unsealed(u) = read_user(&name, &bytes, None)? {
                out.push((name, u));
            }
        }
        if let Store::Postgres(p) = self {
            for (name, u) in p.legacy_users()? {
                if !out.iter().any(|(n, _)| *n == name) {
                    out.push((name, u));
                }
            }
        }
        Ok(out)
    }

    /// After `migrate` moved them: forget the users of the earlier
    /// PostgreSQL table.
    pub fn drop_legacy_users(&self) -> Result<(), StoreError> {
        match self {
            Store::Redb(_) => Ok(()),
            Store::Postgres(p) => p.drop_legacy_users(),
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

    /// Insert new objects, all in one transaction. A handle already stored
    /// is refused, never overwritten (the handle counter may have been set
    /// back by whoever can write the database); a change of a stored object
    /// is [`Store::update_object`].
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
            Store::Redb(r) => r.reserve_counter(NEXT_HANDLE, min, count),
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
    record_key: OnceLock<RecordKey>,
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
        Ok(RedbStore {
            db,
            path,
            record_key: OnceLock::new(),
        })
    }

    fn user_rows(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(USERS).map_err(err("users table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err("read users"))? {
            let (k, v) = row.map_err(err("read users"))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn user_row(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(USERS).map_err(err("users table"))?;
        let v = t.get(name).map_err(err("read user"))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn put_user_row(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            t.insert(name, bytes).map_err(err("write user"))?;
        }
        tx.commit().map_err(err("commit"))
    }

    /// Read-modify-write of one user row in one transaction; whether it exists.
    fn update_user_row(&self, name: &str, f: Rewrite<'_>) -> Result<bool, StoreError> {
        let tx = begin_write(&self.db)?;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            let cur = t
                .get(name)
                .map_err(err("read user"))?
                .map(|g| g.value().to_vec());
            let Some(cur) = cur else {
                return Ok(false);
            };
            let bytes = f(&cur)?;
            t.insert(name, bytes.as_slice())
                .map_err(err("write user"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(true)
    }

    fn remove_user(&self, name: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let owned: Vec<u64> = match owner {
            Some(owner) => self
                .objects()?
                .into_iter()
                .filter(|(_, b)| crate::vault::peek_object(b).is_ok_and(|so| so.owner == owner))
                .map(|(h, _)| h)
                .collect(),
            None => Vec::new(),
        };
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
                if t.get(r.handle).map_err(err("read object"))?.is_some() {
                    // Dropping `tx` aborts it: nothing is written.
                    return Err(handle_taken(r.handle));
                }
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

    /// Take `count` values of counter `key` (in `META`), at least `min`.
    fn reserve_counter(&self, key: &str, min: u64, count: u64) -> Result<u64, StoreError> {
        let tx = begin_write(&self.db)?;
        let start;
        {
            let mut t = tx.open_table(META).map_err(err("meta table"))?;
            let cur = t
                .get(key)
                .map_err(err("read meta"))?
                .map(|g| g.value())
                .unwrap_or(1);
            start = cur.max(min).max(1);
            let next = start
                .checked_add(count)
                .ok_or_else(|| StoreError(format!("{key} exhausted")))?;
            t.insert(key, next).map_err(err("write meta"))?;
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
        // A new object never overwrites a stored one, and a refused batch
        // writes nothing.
        let e = s
            .put_objects(&[row(8, b"new"), row(7, b"intruder")])
            .unwrap_err();
        assert!(e.0.contains("already stored"), "{e}");
        assert_eq!(s.object(7).unwrap().unwrap(), b"y");
        assert_eq!(s.object(8).unwrap(), None);
        // Compare-and-swap: only over the version the writer read.
        assert_eq!(s.swap_object(&row(7, b"z"), b"x").unwrap(), Swap::Changed);
        assert_eq!(s.object(7).unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(s.swap_object(&row(7, b"z"), b"y").unwrap(), Swap::Swapped);
        assert_eq!(s.object(7).unwrap().as_deref(), Some(&b"z"[..]));
        assert_eq!(s.swap_object(&row(8, b"z"), b"y").unwrap(), Swap::Gone);
        assert!(s.remove_user("alice", None).unwrap());
        assert!(!s.remove_user("alice", None).unwrap());
    }

    fn keyed() -> Store {
        let s = Store::in_memory().unwrap();
        let m = crate::vault::MasterKey::generate().unwrap();
        s.set_record_key(m.record_key().unwrap());
        s
    }

    /// Overwrite user `name`'s stored bytes, as whoever can write the
    /// database would.
    fn plant(s: &Store, name: &str, bytes: &[u8]) {
        match s {
            Store::Redb(r) => r.put_user_row(name, bytes).unwrap(),
            Store::Postgres(_) => unreachable!(),
        }
    }

    fn raw(s: &Store, name: &str) -> Vec<u8> {
        match s {
            Store::Redb(r) => r.user_row(name).unwrap().unwrap(),
            Store::Postgres(_) => unreachable!(),
        }
    }

    #[test]
    fn user_records_are_authenticated_and_bound_to_their_name() {
        let s = keyed();
        s.set_password("alice", "alice-phc".into()).unwrap();
        s.set_password("bob", "bob-phc".into()).unwrap();
        assert_eq!(s.user("alice").unwrap().unwrap().phc, "alice-phc");
        // An edited byte (the lock flag, before the login generation and
        // `locked_until`, each one byte here): refused.
        let mut edited = raw(&s, "alice");
        s.lock_user("alice").unwrap();
        let locked = raw(&s, "alice");
        let flag = edited.len() - 3;
        edited[flag] ^= 1;
        plant(&s, "alice", &edited);
        let e = s.user("alice").unwrap_err();
        assert!(e.0.contains("integrity"), "{e}");
        // The locked record's flag cleared by hand: refused too.
        let mut unlocked = locked.clone();
        assert_eq!(unlocked[flag], 1);
        unlocked[flag] = 0;
        plant(&s, "alice", &unlocked);
        assert!(s.user("alice").is_err());
        // Bob's record copied onto alice: refused (the name is bound).
        plant(&s, "alice", &raw(&s, "bob"));
        assert!(s.user("alice").is_err());
        // A record of the unauthenticated formats: refused by a keyed store,
        // read as is without a key (listings).
        let pending = encode_user("alice", &UserRecord::default(), None).unwrap();
        plant(&s, "alice", &pending);
        let e = s.user("alice").unwrap_err();
        assert!(e.0.contains("not authenticated"), "{e}");
        assert!(decode_user("alice", &pending, None).is_ok());
        let mut v2 = vec![FORMAT_USER2];
        v2.extend(postcard::to_stdvec(&("phc", 0u32, false)).unwrap());
        plant(&s, "alice", &v2);
        assert!(s.user("alice").is_err());
        // A refused record is not updated (no failure count, no unlock).
        let rule = LockRule {
            max: 5,
            now: 0,
            base_ms: 0,
            max_ms: 0,
        };
        assert!(s.login_failed("alice", &rule).is_err());
        assert!(s.unlock_user("alice").is_err());
        assert_eq!(raw(&s, "alice"), v2);
        // The bad records are listed as such.
        let users = s.users().unwrap();
        assert!(users.iter().any(|(n, r)| n == "alice" && r.is_err()));
        assert!(users.iter().any(|(n, r)| n == "bob" && r.is_ok()));
    }

    #[test]
    fn user_ids_are_never_reused_and_pending_users_are_adopted_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Before the master key: pending records.
        assert!(!s.set_password("alice", "p1".into()).unwrap());
        let first = decode_user("alice", &raw(&s, "alice"), None).unwrap().id;
        assert!(first > 0);
        let m = crate::vault::MasterKey::generate().unwrap();
        s.set_record_key(m.record_key().unwrap());
        assert!(s.user("alice").is_err(), "pending: refused until adopted");
        assert_eq!(s.adopt_pending_users().unwrap(), 1);
        assert_eq!(s.user("alice").unwrap().unwrap().id, first);
        assert_eq!(s.adopt_pending_users().unwrap(), 0);
        // passwd keeps the id; remove + add gives a new one.
        assert!(s.set_password("alice", "p2".into()).unwrap());
        assert_eq!(s.user("alice").unwrap().unwrap().id, first);
        assert!(s.remove_user("alice", None).unwrap());
        s.set_password("alice", "p3".into()).unwrap();
        let second = s.user("alice").unwrap().unwrap().id;
        assert!(second > first);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(s.new_user_id().unwrap() > second, "the counter persists");
    }

    #[test]
    fn login_failures_lock_and_unlock() {
        let s = keyed();
        s.put_user("u", &UserRecord::default()).unwrap();
        let r = LockRule {
            max: 3,
            now: 1000,
            base_ms: 60,
            max_ms: 200,
        };
        assert_eq!(s.login_failed("u", &r).unwrap(), Some((1, false)));
        assert_eq!(s.login_failed("u", &r).unwrap(), Some((2, false)));
        s.login_succeeded("u").unwrap();
        assert_eq!(s.login_failed("u", &r).unwrap(), Some((1, false)));
        assert_eq!(s.login_failed("u", &r).unwrap(), Some((2, false)));
        assert_eq!(s.login_failed("u", &r).unwrap(), Some((3, true)));
        let u = s.user("u").unwrap().unwrap();
        assert_eq!(u.locked_until, 1060, "the first lock: 60 ms");
        assert!(u.is_locked(1059) && !u.is_locked(1060));
        // A failure once it lapsed locks again, twice as long, up to 200 ms.
        let later = LockRule { now: 1060, ..r };
        assert_eq!(s.login_failed("u", &later).unwrap(), Some((4, true)));
        assert_eq!(s.user("u").unwrap().unwrap().locked_until, 1180);
        assert_eq!(s.login_failed("u", &later).unwrap(), Some((5, true)));
        assert_eq!(s.user("u").unwrap().unwrap().locked_until, 1260);
        assert!(s.unlock_user("u").unwrap());
        assert_eq!(s.user("u").unwrap().unwrap(), UserRecord::default());
        // Permanent locks: no end.
        let permanent = LockRule { base_ms: 0, ..r };
        for _ in 0..3 {
            s.login_failed("u", &permanent).unwrap();
        }
        let u = s.user("u").unwrap().unwrap();
        assert!(u.locked && u.locked_until == 0 && u.is_locked(u64::MAX));
        // A permanent lock (or an admin's) is not lifted by a login that
        // got through (only `unlock` or `passwd` lift it).
        s.login_succeeded("u").unwrap();
        let u = s.user("u").unwrap().unwrap();
        assert!(u.locked && u.failures == 0 && u.is_locked(u64::MAX));
        assert!(s.unlock_user("u").unwrap());
        assert_eq!(s.user("u").unwrap().unwrap(), UserRecord::default());
        assert_eq!(s.login_failed("nobody", &r).unwrap(), None);
        assert!(!s.unlock_user("nobody").unwrap());
    }

    #[test]
    fn admin_lock_and_passwd_bump_the_login_generation_a_lockout_does_not() {
        let s = keyed();
        s.set_password("u", "p1".into()).unwrap();
        assert_eq!(s.user("u").unwrap().unwrap().generation, 0);
        let rule = LockRule {
            max: 3,
            now: 1000,
            base_ms: 60_000,
            max_ms: 60_000,
        };
        for _ in 0..3 {
            s.login_failed("u", &rule).unwrap();
        }
        let u = s.user("u").unwrap().unwrap();
        assert!(u.locked);
        assert_eq!(u.generation, 0, "a lockout by failures ends no login");
        assert!(s.unlock_user("u").unwrap());
        assert!(s.lock_user("u").unwrap());
        assert_eq!(s.user("u").unwrap().unwrap().generation, 1);
        s.set_password("u", "p2".into()).unwrap();
        let u = s.user("u").unwrap().unwrap();
        assert_eq!((u.generation, u.locked), (2, false));
    }

    #[test]
    fn sealed_user_formats_cannot_be_swapped_and_the_older_one_reads() {
        let s = keyed();
        let key = s.record_key().unwrap();
        s.set_password("u", "p".into()).unwrap();
        s.lock_user("u").unwrap();
        // The current format with its tag byte set to the older one's
        // (same body, same MAC): trailing bytes, refused.
        let mut b = raw(&s, "u");
        assert_eq!(b[0], FORMAT_USER_SEALED2);
        b[0] = FORMAT_USER_SEALED;
        assert!(decode_user("u", &b, Some(key)).is_err());
        // A genuine record of the older format reads as generation 0, and
        // the other way round is refused (the body is too short).
        let body = postcard::to_stdvec(&(7u64, "phc", 2u32, true)).unwrap();
        let mut old = vec![FORMAT_USER_SEALED];
        old.extend_from_slice(&key.tag("u", &body).unwrap());
        old.extend_from_slice(&body);
        let u = decode_user("u", &old, Some(key)).unwrap();
        assert_eq!(
            (u.id, u.phc.as_str(), u.failures, u.locked, u.generation),
            (7, "phc", 2, true, 0)
        );
        old[0] = FORMAT_USER_SEALED2;
        assert!(decode_user("u", &old, Some(key)).is_err());
    }

    #[test]
    fn old_user_records_still_read() {
        let mut v1 = vec![FORMAT_PLAIN];
        v1.extend(postcard::to_stdvec(&("phc-string",)).unwrap());
        assert_eq!(decode_user("u", &v1, None).unwrap().phc, "phc-string");
        let mut v2 = vec![FORMAT_USER2];
        v2.extend(postcard::to_stdvec(&("phc", 4u32, true)).unwrap());
        let u = decode_user("u", &v2, None).unwrap();
        assert_eq!((u.failures, u.locked, u.locked_until), (4, true, 0));
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
        assert!(decode_user("u", &[], None).is_err());
        assert!(decode_user("u", &[9, 1], None).is_err());
        assert!(decode_user("u", &[1, 0xff, 0xff], None).is_err());
        assert!(decode_user("u", &[4, 1, 2], None).is_err());
        assert!(decode_plain(&[]).is_err());
    }
}
