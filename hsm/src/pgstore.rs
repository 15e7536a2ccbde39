//! The PostgreSQL store: several servers share users, token objects, the
//! keyring and the handle sequence.
//!
//! Tables (made on first connection, under an advisory lock so that servers
//! starting together do not race):
//! - `hsmlink_users(name, phc, failures, locked)`: argon2id hashes and the
//!   login-failure state (shared, so a lockout holds on every server);
//! - `hsmlink_objects(handle, owner, label, record)`: `record` is the sealed
//!   object ([`crate::vault`]): secrets reach the database encrypted under the
//!   master key, and the readable parts are authenticated by it;
//! - `hsmlink_meta(key, value)`: the keyring (the master key wrapped by the
//!   operator's passphrase or key file);
//! - the sequence `hsmlink_handles`, in steps of [`HANDLE_STEP`]: each server
//!   takes a block of handles at a time, so handles are unique fleet-wide.
//!
//! Connections: a small pool of synchronous `postgres` clients (no TLS to
//! the database: run it on a trusted network or a local socket; nothing in
//! clear goes over that link but user names, labels and password hashes).

use std::sync::{Condvar, Mutex};

use postgres::{Client, NoTls};

use crate::store::{ObjectRow, StoreError, Swap, UserRecord};

/// Handles reserved per `nextval`.
pub const HANDLE_STEP: u64 = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hsmlink_meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS hsmlink_users (
    name TEXT PRIMARY KEY,
    phc TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS hsmlink_objects (
    handle BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    label BYTEA NOT NULL,
    record BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS hsmlink_objects_owner_label ON hsmlink_objects (owner, label);
CREATE SEQUENCE IF NOT EXISTS hsmlink_handles
    INCREMENT BY 256 MINVALUE 1 MAXVALUE 2147483392 START WITH 1;
";

/// Advisory lock key for schema creation ("hsmlink" in ASCII).
const SCHEMA_LOCK: i64 = 0x68736d6c696e6b;

/// Most connections one server opens to the database at once (requests
/// beyond wait for one to be free).
const POOL_MAX: usize = 32;

/// A PostgreSQL store.
pub struct PgStore {
    url: String,
    pool: Mutex<Vec<Client>>,
    /// Connections in use or idle in `pool`.
    open: Mutex<usize>,
    freed: Condvar,
}

/// Connection errors never carry the URL (it may hold a password).
fn pg_err(what: &'static str) -> impl FnOnce(postgres::Error) -> StoreError {
    move |e| {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        StoreError(format!("postgres {what}: {detail}"))
    }
}

fn handle_i64(h: u64) -> Result<i64, StoreError> {
    i64::try_from(h).map_err(|_| StoreError("handle out of range".into()))
}

impl PgStore {
    /// Connect and make the tables if needed.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let s = PgStore {
            url: url.to_string(),
            pool: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
        };
        s.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(SCHEMA)?;
            tx.commit()
        })
        .map_err(pg_err("schema"))?;
        Ok(s)
    }

    /// A connection: an idle one, a new one (below [`POOL_MAX`]), or the
    /// next one given back.
    fn client(&self) -> Result<Client, postgres::Error> {
        loop {
            if let Some(c) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                if !c.is_closed() {
                    return Ok(c);
                }
                self.closed();
                continue;
            }
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if *open < POOL_MAX {
                *open += 1;
                drop(open);
                return Client::connect(&self.url, NoTls).inspect_err(|_| self.closed());
            }
            let _unused = self
                .freed
                .wait_timeout(open, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A connection is gone for good.
    fn closed(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = open.saturating_sub(1);
        self.freed.notify_one();
    }

    /// Give a connection back (or count it gone if it broke).
    fn give_back(&self, c: Client) {
        if c.is_closed() {
            self.closed();
        } else {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            self.freed.notify_one();
        }
    }

    /// Run `f` on a pooled connection; a broken connection is replaced once.
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.client()?;
            let r = f(&mut c);
            let broken = c.is_closed();
            self.give_back(c);
            match r {
                Err(e) if broken && tries < 2 => {
                    log::warn!("event=postgres_reconnect error={:?}", e.to_string());
                }
                r => return r,
            }
        }
    }

    fn row_user(r: &postgres::Row) -> UserRecord {
        UserRecord {
            phc: r.get(0),
            failures: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
            locked: r.get(2),
        }
    }

    pub fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let rows = self
            .with(|c| {
                c.query(
                    "SELECT phc, failures, locked, name FROM hsmlink_users ORDER BY name",
                    &[],
                )
            })
            .map_err(pg_err("read users"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(3), Self::row_user(r)))
            .collect())
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self
            .with(|c| {
                c.query_opt(
                    "SELECT phc, failures, locked FROM hsmlink_users WHERE name = $1",
                    &[&name],
                )
            })
            .map_err(pg_err("read user"))?;
        Ok(row.as_ref().map(Self::row_user))
    }

    pub fn put_user(&self, name: &str, u: &UserRecord) -> Result<(), StoreError> {
        let failures = i32::try_from(u.failures).unwrap_or(i32::MAX);
        self.with(|c| {
            c.execute(
                "INSERT INTO hsmlink_users (name, phc, failures, locked) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET phc = $2, failures = $3, locked = $4",
                &[&name, &u.phc, &failures, &u.locked],
            )
        })
        .map_err(pg_err("write user"))?;
        Ok(())
    }

    pub fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM hsmlink_users WHERE name = $1", &[&name])?;
            tx.execute("DELETE FROM hsmlink_objects WHERE owner = $1", &[&name])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .map_err(pg_err("remove user"))
    }

    pub fn login_failed(&self, name: &str, max: u32) -> Result<Option<(u32, bool)>, StoreError> {
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let row = self
            .with(|c| {
                c.query_opt(
                    "UPDATE hsmlink_users SET failures = failures + 1,
                         locked = locked OR ($2 > 0 AND failures + 1 >= $2)
                     WHERE name = $1 RETURNING failures, locked",
                    &[&name, &max],
                )
            })
            .map_err(pg_err("count failure"))?;
        Ok(row.map(|r| {
            (
                u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                r.get::<_, bool>(1),
            )
        }))
    }

    pub fn login_succeeded(&self, name: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE hsmlink_users SET failures = 0 WHERE name = $1 AND failures <> 0",
                &[&name],
            )
        })
        .map_err(pg_err("reset failures"))?;
        Ok(())
    }

    pub fn unlock_user(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .with(|c| {
                c.execute(
                    "UPDATE hsmlink_users SET failures = 0, locked = FALSE WHERE name = $1",
                    &[&name],
                )
            })
            .map_err(pg_err("unlock user"))?;
        Ok(n > 0)
    }

    pub fn objects(
        &self,
        owner: Option<&str>,
        label: Option<&[u8]>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .with(|c| match (owner, label) {
                (Some(o), Some(l)) => c.query(
                    "SELECT handle, record FROM hsmlink_objects WHERE owner = $1 AND label = $2 ORDER BY handle",
                    &[&o, &l],
                ),
                (Some(o), None) => c.query(
                    "SELECT handle, record FROM hsmlink_objects WHERE owner = $1 ORDER BY handle",
                    &[&o],
                ),
                _ => c.query(
                    "SELECT handle, record FROM hsmlink_objects ORDER BY handle",
                    &[],
                ),
            })
            .map_err(pg_err("read objects"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
            .collect())
    }

    pub fn object(&self, handle: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let h = handle_i64(handle)?;
        let row = self
            .with(|c| {
                c.query_opt(
                    "SELECT record FROM hsmlink_objects WHERE handle = $1",
                    &[&h],
                )
            })
            .map_err(pg_err("read object"))?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    pub fn put_objects(&self, rows: &[ObjectRow<'_>]) -> Result<(), StoreError> {
        let mut hs = Vec::new();
        for r in rows {
            hs.push(handle_i64(r.handle)?);
        }
        self.with(|c| {
            let mut tx = c.transaction()?;
            for (r, h) in rows.iter().zip(&hs) {
                tx.execute(
                    "INSERT INTO hsmlink_objects (handle, owner, label, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (handle) DO UPDATE SET owner = $2, label = $3, record = $4",
                    &[h, &r.owner, &r.label, &r.bytes],
                )?;
            }
            tx.commit()
        })
        .map_err(pg_err("write objects"))
    }

    pub fn update_object(&self, r: &ObjectRow<'_>) -> Result<bool, StoreError> {
        let h = handle_i64(r.handle)?;
        let n = self
            .with(|c| {
                c.execute(
                    "UPDATE hsmlink_objects SET owner = $2, label = $3, record = $4 WHERE handle = $1",
                    &[&h, &r.owner, &r.label, &r.bytes],
                )
            })
            .map_err(pg_err("write object"))?;
        Ok(n > 0)
    }

    /// Replace object `r.handle` only if its record is still `expected`
    /// (one conditional UPDATE: atomic across the servers of a fleet).
    pub fn swap_object(&self, r: &ObjectRow<'_>, expected: &[u8]) -> Result<Swap, StoreError> {
        let h = handle_i64(r.handle)?;
        let n = self
            .with(|c| {
                c.execute(
                    "UPDATE hsmlink_objects SET owner = $2, label = $3, record = $4
                     WHERE handle = $1 AND record = $5",
                    &[&h, &r.owner, &r.label, &r.bytes, &expected],
                )
            })
            .map_err(pg_err("write object"))?;
        if n > 0 {
            return Ok(Swap::Swapped);
        }
        Ok(match self.object(r.handle)? {
            Some(_) => Swap::Changed,
            None => Swap::Gone,
        })
    }

    pub fn delete_object(&self, handle: u64) -> Result<bool, StoreError> {
        let h = handle_i64(handle)?;
        let n = self
            .with(|c| c.execute("DELETE FROM hsmlink_objects WHERE handle = $1", &[&h]))
            .map_err(pg_err("delete object"))?;
        Ok(n > 0)
    }

    /// The first of [`HANDLE_STEP`] fresh handles.
    pub fn reserve_handles(&self, count: u64) -> Result<u64, StoreError> {
        if count > HANDLE_STEP {
            return Err(StoreError(
                "handle block larger than the sequence step".into(),
            ));
        }
        let v: i64 = self
            .with(|c| c.query_one("SELECT nextval('hsmlink_handles')", &[]))
            .map_err(pg_err("reserve handles"))?
            .get(0);
        u64::try_from(v).map_err(|_| StoreError("bad handle sequence".into()))
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .with(|c| c.query_opt("SELECT value FROM hsmlink_meta WHERE key = $1", &[&key]))
            .map_err(pg_err("read meta"))?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    pub fn init_meta(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO hsmlink_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
        })
        .map_err(pg_err("write meta"))?;
        self.meta(key)?
            .ok_or_else(|| StoreError("keyring vanished".into()))
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO hsmlink_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = $2",
                &[&key, &value],
            )
        })
        .map_err(pg_err("write meta"))?;
        Ok(())
    }
}

/// The store is shared by every connection thread.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PgStore>();
};
