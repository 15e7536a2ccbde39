//! The PostgreSQL store: several servers share users, token objects, the
//! keyring and the handle sequence.
//!
//! Tables (made on first connection, under an advisory lock so that servers
//! starting together do not race):
//! - `hsmlink_accounts(name, record)`: each user's record (argon2id hash,
//!   login-failure state, id), authenticated with a key derived from the
//!   master key ([`crate::store::encode_user`]); shared, so a lockout holds
//!   on every server. (`hsmlink_users(name, phc, failures, locked)` is the
//!   unauthenticated table of earlier versions: only `hsmlink-hsm migrate`
//!   reads it.)
//! - the sequence `hsmlink_user_ids`: user ids, never reused;
//! - `hsmlink_objects(handle, owner, label, record)`: `record` is the sealed
//!   object ([`crate::vault`]): secrets reach the database encrypted under the
//!   master key, and the readable parts are authenticated by it;
//! - `hsmlink_meta(key, value)`: the keyring (the master key wrapped by the
//!   operator's passphrase or key file);
//! - the sequence `hsmlink_handles`, in steps of [`HANDLE_STEP`]: each server
//!   takes a block of handles at a time, so handles are unique fleet-wide.
//!
//! Connections: a small pool of synchronous `postgres` clients over TLS
//! (OpenSSL), the server's certificate verified against `--postgres-ca` (or
//! the system's trust store) and the URL's host name or address; whatever
//! `sslmode` the URL says, TLS is required. Only a URL whose hosts are all
//! unix sockets (`host=/run/postgresql`) connects without TLS.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Condvar, Mutex, OnceLock};

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};
use postgres_openssl::MakeTlsConnector;

use crate::store::{handle_taken, ObjectRow, Rewrite, StoreError, Swap, UserRecord};
use crate::vault::RecordKey;

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
CREATE TABLE IF NOT EXISTS hsmlink_accounts (
    name TEXT PRIMARY KEY,
    record BYTEA NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS hsmlink_user_ids MINVALUE 1 START WITH 1;
CREATE SEQUENCE IF NOT EXISTS hsmlink_handles
    INCREMENT BY 256 MINVALUE 1 MAXVALUE 2147483392 START WITH 1;
";

/// Advisory lock key for schema creation ("hsmlink" in ASCII).
const SCHEMA_LOCK: i64 = 0x68736d6c696e6b;

/// Seconds a connection to the database may take, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Seconds data sent to the database may stay unacknowledged (Linux
/// `TCP_USER_TIMEOUT`), unless the URL says (`tcp_user_timeout`).
const TCP_USER_TIMEOUT_SECS: u64 = 30;

/// Milliseconds one statement may run on the database before it cancels
/// it (`statement_timeout`), unless the URL sets `options`: a row lock held
/// by another session of the database (whoever can write it) cannot hold a
/// login or a write forever.
const STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// Most connections one server opens to the database at once (requests
/// beyond wait for one to be free).
const POOL_MAX: usize = 32;

/// How to reach the database.
enum Link {
    /// TLS, the server's certificate verified.
    Tls(MakeTlsConnector),
    /// Unix sockets only.
    Local,
}

/// A PostgreSQL store.
pub struct PgStore {
    config: Box<Config>,
    link: Link,
    pub(crate) record_key: OnceLock<RecordKey>,
    pool: Mutex<Vec<Client>>,
    /// Connections in use or idle in `pool`.
    open: Mutex<usize>,
    freed: Condvar,
}

/// Connection errors never carry the URL (it may hold a password).
fn pg_err(what: &'static str) -> impl FnOnce(postgres::Error) -> StoreError {
    move |e| {
        let detail = match e.as_db_error() {
            Some(d) => d.message().to_string(),
            None => {
                // The cause too (a TLS failure says why: "certificate
                // verify failed", ...); never the URL, which no cause holds.
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                text
            }
        };
        StoreError(format!("postgres {what}: {detail}"))
    }
}

fn handle_i64(h: u64) -> Result<i64, StoreError> {
    i64::try_from(h).map_err(|_| StoreError("handle out of range".into()))
}

/// The TLS settings of the link to PostgreSQL.
#[derive(Clone, Debug, Default)]
pub struct PgTls {
    /// PEM file of the certificate authorities that sign the database
    /// server's certificate (default: the system's trust store).
    pub ca: Option<PathBuf>,
}

fn tls_connector(ca: Option<&Path>) -> Result<MakeTlsConnector, StoreError> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let e = |what: &'static str| {
        move |x: openssl::error::ErrorStack| StoreError(format!("{what}: {x}"))
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e("TLS to PostgreSQL"))?;
    b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
        .map_err(e("TLS to PostgreSQL"))?;
    b.set_verify(SslVerifyMode::PEER);
    if let Some(ca) = ca {
        b.set_ca_file(ca).map_err(|x| {
            StoreError(format!(
                "--postgres-ca {}: not a readable PEM file of certificates ({x})",
                ca.display()
            ))
        })?;
    }
    // The connector checks the host name (or IP address) of the URL
    // against the certificate.
    Ok(MakeTlsConnector::new(b.build()))
}

impl PgStore {
    /// Connect (TLS, see the module's documentation) and make the tables if
    /// needed.
    pub fn connect(url: &str, tls: &PgTls) -> Result<PgStore, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError(format!(
                "the PostgreSQL URL is not valid: {}",
                e.to_string().replace(url, "URL")
            ))
        })?;
        let local = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)));
        // A database that does not answer must not hold a login forever.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(CONNECT_TIMEOUT_SECS));
        }
        // Nor a database host that vanished mid-request (data sent and
        // never acknowledged: the connection fails, and is replaced).
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(TCP_USER_TIMEOUT_SECS));
        }
        // Nor a statement that waits on a lock (or runs) forever.
        if config.get_options().is_none() {
            config.options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        }
        let link = if local {
            Link::Local
        } else {
            config.ssl_mode(SslMode::Require);
            Link::Tls(tls_connector(tls.ca.as_deref())?)
        };
        let s = PgStore {
            config: Box::new(config),
            link,
            record_key: OnceLock::new(),
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
                let c = match &self.link {
                    Link::Tls(t) => self.config.connect(t.clone()),
                    Link::Local => self.config.connect(NoTls),
                };
                return c.inspect_err(|_| self.closed());
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

    pub fn user_rows(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self
            .with(|c| {
                c.query(
                    "SELECT name, record FROM hsmlink_accounts ORDER BY name",
                    &[],
                )
            })
            .map_err(pg_err("read users"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub fn user_rows_named(&self, names: &[String]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let names = names.to_vec();
        let rows = self
            .with(|c| {
                c.query(
                    "SELECT name, record FROM hsmlink_accounts WHERE name = ANY($1)",
                    &[&names],
                )
            })
            .map_err(pg_err("read users"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub fn user_row(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .with(|c| {
                c.query_opt(
                    "SELECT record FROM hsmlink_accounts WHERE name = $1",
                    &[&name],
                )
            })
            .map_err(pg_err("read user"))?;
        Ok(row.map(|r| r.get(0)))
    }

    pub fn put_user_row(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO hsmlink_accounts (name, record) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET record = $2",
                &[&name, &bytes],
            )
        })
        .map_err(pg_err("write user"))?;
        Ok(())
    }

    /// Read-modify-write of one user row (locked for the transaction);
    /// whether it exists.
    pub fn update_user_row(&self, name: &str, f: Rewrite<'_>) -> Result<bool, StoreError> {
        let mut refused = None;
        let found = self
            .with(|c| {
                let mut tx = c.transaction()?;
                let Some(row) = tx.query_opt(
                    "SELECT record FROM hsmlink_accounts WHERE name = $1 FOR UPDATE",
                    &[&name],
                )?
                else {
                    return Ok(false);
                };
                let cur: Vec<u8> = row.get(0);
                match f(&cur) {
                    Ok(bytes) => {
                        tx.execute(
                            "UPDATE hsmlink_accounts SET record = $2 WHERE name = $1",
                            &[&name, &bytes],
                        )?;
                        tx.commit()?;
                    }
                    Err(e) => refused = Some(e),
                }
                Ok(true)
            })
            .map_err(pg_err("update user"))?;
        match refused {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    pub fn new_user_id(&self) -> Result<u64, StoreError> {
        let v: i64 = self
            .with(|c| c.query_one("SELECT nextval('hsmlink_user_ids')", &[]))
            .map_err(pg_err("new user id"))?
            .get(0);
        u64::try_from(v).map_err(|_| StoreError("bad user id sequence".into()))
    }

    pub fn remove_user(&self, name: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM hsmlink_accounts WHERE name = $1", &[&name])?;
            if let Some(owner) = owner {
                tx.execute("DELETE FROM hsmlink_objects WHERE owner = $1", &[&owner])?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
        .map_err(pg_err("remove user"))
    }

    /// The users of the unauthenticated table of earlier versions.
    pub fn legacy_users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let rows = self
            .with(|c| {
                c.query(
                    "SELECT name, phc, failures, locked FROM hsmlink_users ORDER BY name",
                    &[],
                )
            })
            .map_err(pg_err("read users"))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    UserRecord {
                        id: 0,
                        phc: r.get(1),
                        failures: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                        locked: r.get(3),
                        generation: 0,
                        locked_until: 0,
                    },
                )
            })
            .collect())
    }

    pub fn drop_legacy_users(&self) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM hsmlink_users", &[]))
            .map_err(pg_err("clear legacy users"))?;
        Ok(())
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

    /// Insert new objects, all or none: a handle already stored is never
    /// overwritten (the transaction is rolled back and the write refused),
    /// whatever the `hsmlink_handles` sequence handed out.
    pub fn put_objects(&self, rows: &[ObjectRow<'_>]) -> Result<(), StoreError> {
        let mut hs = Vec::new();
        for r in rows {
            hs.push(handle_i64(r.handle)?);
        }
        let mut taken = None;
        self.with(|c| {
            taken = None;
            let mut tx = c.transaction()?;
            for (r, h) in rows.iter().zip(&hs) {
                let n = tx.execute(
                    "INSERT INTO hsmlink_objects (handle, owner, label, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (handle) DO NOTHING",
                    &[h, &r.owner, &r.label, &r.bytes],
                )?;
                if n == 0 {
                    // Dropping `tx` rolls the others back.
                    taken = Some(r.handle);
                    return Ok(());
                }
            }
            tx.commit()
        })
        .map_err(pg_err("write objects"))?;
        match taken {
            Some(h) => Err(handle_taken(h)),
            None => Ok(()),
        }
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
