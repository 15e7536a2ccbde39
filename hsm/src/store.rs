//! The persistent store: users and token objects in one `redb` database.
//!
//! This is the only module that touches the disk. Every write is one redb
//! transaction committed with immediate durability: once a method returns
//! `Ok`, the change survives a crash or `kill -9`.
//!
//! Records are postcard-encoded behind a one-byte format tag, and an object's
//! secret attributes are kept apart from its public ones
//! ([`ObjectRecord::secret`]) so that encryption at rest can be added here
//! (a new format tag, the secret part sealed under a master key) without
//! touching the rest of the server.

use std::fmt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Key of the handle high-water mark in `META`: every handle below it may
/// have been handed out, and none is ever handed out again.
const NEXT_HANDLE: &str = "next_handle";

/// Format tag of records stored in clear (postcard).
const FORMAT_PLAIN: u8 = 1;

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

fn err<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError(format!("{what}: {e}"))
}

/// A user as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// The password hash as an argon2 PHC string.
    pub phc: String,
}

/// A token object as stored.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct ObjectRecord {
    /// The user who owns it.
    pub owner: String,
    /// Attributes that are not secret: `(type, canonical value)`.
    pub public: Vec<(u64, Vec<u8>)>,
    /// Secret attributes (`hsmlink_core::attr::is_secret` on a key). The
    /// place where encryption at rest will apply.
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_PLAIN];
    out.extend(postcard::to_stdvec(v).map_err(err("encode"))?);
    Ok(out)
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_PLAIN, rest)) => postcard::from_bytes(rest).map_err(err("decode")),
        Some((tag, _)) => Err(StoreError(format!("unknown record format {tag}"))),
        None => Err(StoreError("empty record".into())),
    }
}

/// The database of one HSM.
pub struct Store {
    db: Database,
}

impl Store {
    /// Open (or create) the store in folder `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(err("create data folder"))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another process (is a server running on this data folder?)",
                path.display()
            )),
            e => StoreError(format!("open {}: {e}", path.display())),
        })?;
        Self::init(db)
    }

    /// A store that lives in memory only (the `dev` command, tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err("in-memory database"))?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Store, StoreError> {
        let tx = db.begin_write().map_err(err("begin"))?;
        {
            tx.open_table(USERS).map_err(err("users table"))?;
            tx.open_table(OBJECTS).map_err(err("objects table"))?;
            tx.open_table(META).map_err(err("meta table"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(Store { db })
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(USERS).map_err(err("users table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err("read users"))? {
            let (k, v) = row.map_err(err("read users"))?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Add or replace user `name`.
    pub fn put_user(&self, name: &str, rec: &UserRecord) -> Result<(), StoreError> {
        let bytes = encode(rec)?;
        let tx = self.db.begin_write().map_err(err("begin"))?;
        {
            let mut t = tx.open_table(USERS).map_err(err("users table"))?;
            t.insert(name, bytes.as_slice())
                .map_err(err("write user"))?;
        }
        tx.commit().map_err(err("commit"))
    }

    /// Remove user `name` and every token object it owns; returns whether the
    /// user existed.
    pub fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let owned: Vec<u64> = self
            .objects()?
            .into_iter()
            .filter(|(_, r)| r.owner == name)
            .map(|(h, _)| h)
            .collect();
        let tx = self.db.begin_write().map_err(err("begin"))?;
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

    /// Every token object.
    pub fn objects(&self) -> Result<Vec<(u64, ObjectRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(err("begin"))?;
        let t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err("read objects"))? {
            let (k, v) = row.map_err(err("read objects"))?;
            out.push((k.value(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Write (insert or replace) token object `handle`.
    pub fn put_object(&self, handle: u64, rec: &ObjectRecord) -> Result<(), StoreError> {
        let mut bytes = encode(rec)?;
        let tx = self.db.begin_write().map_err(err("begin"))?;
        let r = (|| {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            t.insert(handle, bytes.as_slice())
                .map_err(err("write object"))?;
            Ok::<(), StoreError>(())
        })();
        zeroize::Zeroize::zeroize(&mut bytes);
        r?;
        tx.commit().map_err(err("commit"))
    }

    /// Delete token object `handle` (no error if it is absent).
    pub fn delete_object(&self, handle: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err("begin"))?;
        {
            let mut t = tx.open_table(OBJECTS).map_err(err("objects table"))?;
            t.remove(handle).map_err(err("delete object"))?;
        }
        tx.commit().map_err(err("commit"))
    }

    /// Reserve `count` handles, starting at least at `min`: returns the first
    /// one. The high-water mark is committed before the handles are used, so a
    /// handle is never handed out twice, across restarts included.
    pub fn reserve_handles(&self, min: u64, count: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(err("begin"))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ObjectRecord {
            owner: "alice".into(),
            public: vec![(3, b"label".to_vec())],
            secret: vec![(0x11, vec![1, 2, 3])],
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_user("alice", &UserRecord { phc: "x".into() })
                .unwrap();
            s.put_object(7, &rec).unwrap();
            assert_eq!(s.reserve_handles(0, 10).unwrap(), 1);
            assert_eq!(s.reserve_handles(0, 10).unwrap(), 11);
        }
        let s = Store::open(dir.path()).unwrap();
        let objs = s.objects().unwrap();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].0, 7);
        assert_eq!(objs[0].1.secret, rec.secret);
        assert_eq!(s.users().unwrap()[0].0, "alice");
        assert_eq!(s.reserve_handles(0, 1).unwrap(), 21);
        assert!(s.remove_user("alice").unwrap());
        assert!(s.objects().unwrap().is_empty());
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
        assert!(decode::<UserRecord>(&[]).is_err());
        assert!(decode::<UserRecord>(&[9, 1]).is_err());
        assert!(decode::<UserRecord>(&[1, 0xff, 0xff]).is_err());
    }
}
