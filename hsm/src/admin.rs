//! Admin commands: users, objects, backup, status.
//!
//! They run either directly on a store (the server stopped, or a PostgreSQL
//! store, which many processes may use at once) or, while a server holds a
//! data folder, through that server: it listens on the unix socket
//! `DATA/admin.sock` (owner-only permissions, so only the account that
//! runs the server, or root, can use it) for one request per connection
//! (length-prefixed postcard [`AdminRequest`] → [`AdminReply`]).
//!
//! Listings and backups need no master key (they read the public part of
//! the objects and copy sealed records as they are). Commands that write or
//! trust a user record (add, passwd, remove, lock, unlock) need the key that
//! authenticates those records, derived from the master key: a running
//! server has it; directly on a store, the passphrase (or key file) must be
//! given, unless the store has no master key yet (users added before the
//! first `serve` are sealed by that start).

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hsmlink_core::attr;
use hsmlink_core::ck::{cka, ckk, cko};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::hsm::Hsm;
use crate::store::{Store, DB_FILE};
use crate::users;

/// The admin socket's file name in the data folder.
pub const SOCKET_FILE: &str = "admin.sock";
const MAX_REQUEST: usize = 1 << 16;

/// A password in a request (never printed).
#[derive(Serialize, Deserialize, Clone)]
pub struct Password(pub Vec<u8>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// One admin command.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum AdminRequest {
    Status,
    UserAdd {
        name: String,
        password: Password,
    },
    /// Change the password of an existing user (this also unlocks it).
    UserPasswd {
        name: String,
        password: Password,
    },
    UserRemove {
        name: String,
    },
    UserUnlock {
        name: String,
    },
    UserList,
    ObjectsList {
        user: Option<String>,
    },
    ObjectsDelete {
        handle: u64,
    },
    /// Copy the data folder into `dest` (a new folder).
    Backup {
        dest: PathBuf,
    },
    /// Lock a user (until `unlock` or `passwd`); its live sessions end.
    UserLock {
        name: String,
    },
}

/// The answer: the text to print, or an error message.
#[derive(Serialize, Deserialize, Debug)]
pub struct AdminReply {
    pub ok: bool,
    pub text: String,
}

/// Where a command runs.
pub enum Target<'a> {
    /// Directly on a store (no server holds it, or PostgreSQL).
    Store(&'a Store),
    /// In a running server.
    Server(&'a Hsm),
}

impl Target<'_> {
    fn store(&self) -> &Store {
        match self {
            Target::Store(s) => s,
            Target::Server(h) => h.store(),
        }
    }
}

fn class_name(c: Option<u64>) -> &'static str {
    match c {
        Some(cko::DATA) => "data",
        Some(cko::CERTIFICATE) => "certificate",
        Some(cko::PUBLIC_KEY) => "public-key",
        Some(cko::PRIVATE_KEY) => "private-key",
        Some(cko::SECRET_KEY) => "secret-key",
        _ => "?",
    }
}

fn key_type_name(k: Option<u64>) -> &'static str {
    match k {
        Some(ckk::RSA) => "rsa",
        Some(ckk::EC) => "ec",
        Some(ckk::AES) => "aes",
        Some(ckk::GENERIC_SECRET) => "generic-secret",
        Some(_) => "other",
        None => "-",
    }
}

/// A label for a listing: printable characters only (a label is any bytes).
fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The token object listing: handle, owner, class, key type, label, id.
fn list_objects(store: &Store, user: Option<&str>) -> Result<String, String> {
    let mut out = String::from("handle\towner\tclass\tkey_type\tlabel\tid\n");
    // A user's objects belong to its owner key (name and id).
    let owner = user.map(|u| match store.user(u) {
        Ok(Some(r)) => users::owner_key(u, r.id),
        _ => u.to_string(),
    });
    let rows = match &owner {
        Some(o) => store.objects_of(o, None),
        None => store.objects(),
    }
    .map_err(|e| e.to_string())?;
    for (h, bytes) in rows {
        let so = match crate::vault::peek_object(&bytes) {
            Ok(so) => so,
            Err(e) => {
                out.push_str(&format!("{h}\t?\t?\t?\t({e})\t\n"));
                continue;
            }
        };
        let get = |ty: u64| {
            so.public
                .iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, v)| v.as_slice())
        };
        let ulong = |ty| get(ty).and_then(|v| attr::read_ulong(v).ok());
        let id: String = get(cka::ID)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!(
            "{h}\t{}\t{}\t{}\t{}\t{id}\n",
            so.owner,
            class_name(ulong(cka::CLASS)),
            key_type_name(ulong(cka::KEY_TYPE)),
            printable(get(cka::LABEL).unwrap_or_default()),
        ));
    }
    Ok(out)
}

fn list_users(store: &Store) -> Result<String, String> {
    let mut out = String::new();
    // Read directly from a store without its passphrase, the records are
    // shown as stored, their tags not checked.
    let unverified =
        store.record_key().is_none() && store.keyring().map_err(|e| e.to_string())?.is_some();
    let now = crate::store::unix_now_ms();
    for (name, u) in store.users().map_err(|e| e.to_string())? {
        match u {
            Ok(u) => {
                // A lock that ends by itself shows the seconds it has left.
                let left = if u.is_locked(now) && u.locked_until != 0 {
                    format!("\tlocked_for={}s", (u.locked_until - now).div_ceil(1000))
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "{name}\t{}\tfailures={}{left}\tid={}{}\n",
                    if u.is_locked(now) { "locked" } else { "active" },
                    u.failures,
                    u.id,
                    if unverified { "\tunverified" } else { "" }
                ))
            }
            Err(e) => out.push_str(&format!("{name}\trefused\t({e})\n")),
        }
    }
    Ok(out)
}

/// Directly on a store that has a master key, commands that write or trust
/// user records need its record key (the passphrase was given).
fn need_record_key(t: &Target<'_>) -> Result<(), String> {
    match t {
        Target::Server(_) => Ok(()),
        Target::Store(s) => {
            if s.record_key().is_some() || s.keyring().map_err(|e| e.to_string())?.is_none() {
                Ok(())
            } else {
                Err(
                    "user records are authenticated with a key derived from the master key: \
                     give the passphrase (--passphrase-env VAR, --passphrase-file FILE, or \
                     HSMLINK_PASSPHRASE) or --key-file FILE, or run the command through the \
                     running server (--data DIR)"
                        .into(),
                )
            }
        }
    }
}

fn set_password(
    t: &Target<'_>,
    name: &str,
    password: &[u8],
    must_exist: bool,
) -> Result<bool, String> {
    users::check_name(name)?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    need_record_key(t)?;
    let exists = t
        .store()
        .user_checked(name)
        .map_err(|e| e.to_string())?
        .is_some();
    if must_exist && !exists {
        return Err(format!("no user {name}"));
    }
    if !must_exist && exists {
        return Err(format!(
            "user {name} already exists (use `user passwd` to change its password)"
        ));
    }
    match t {
        Target::Server(h) => h.put_user(name, password).map_err(|e| e.to_string())?,
        Target::Store(s) => {
            let phc = users::hash_password(password)?;
            s.set_password(name, phc).map_err(|e| e.to_string())?;
        }
    }
    Ok(exists)
}

/// Copy the data folder `data` (its database as one consistent snapshot,
/// and its TLS identity) into the new folder `dest`.
pub fn backup_folder(store: &Store, data: &Path, dest: &Path) -> Result<String, String> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "{} already exists and is not empty: give a new folder",
            dest.display()
        ));
    }
    crate::store::create_private_dir(dest).map_err(|e| e.to_string())?;
    store
        .backup(&dest.join(DB_FILE))
        .map_err(|e| e.to_string())?;
    copy_tls(&data.join("tls"), &dest.join("tls"))?;
    let s = Store::Redb(
        crate::store::RedbStore::open_file(&dest.join(DB_FILE)).map_err(|e| e.to_string())?,
    );
    let users = s.users().map_err(|e| e.to_string())?.len();
    let objects = s.objects().map_err(|e| e.to_string())?.len();
    Ok(format!(
        "backup of {} written to {}: {users} users, {objects} token objects \
         (sealed: restoring it needs the same passphrase or key file)\n",
        data.display(),
        dest.display()
    ))
}

fn copy_tls(from: &Path, to: &Path) -> Result<(), String> {
    for f in [crate::tls::CERT_FILE, crate::tls::KEY_FILE] {
        let src = from.join(f);
        if src.exists() {
            crate::store::create_private_dir(to).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            write_synced(&to.join(f), &bytes)?;
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("restore-tmp");
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok::<(), io::Error>(())
    })();
    r.map_err(|e| format!("{}: {e}", path.display()))
}

/// Restore the data folder `data` from the backup folder `from` (no server
/// may be running on `data`).
pub fn restore_folder(from: &Path, data: &Path, force: bool) -> Result<String, String> {
    let src_db = from.join(DB_FILE);
    let (users, objects) = {
        let s = Store::Redb(crate::store::RedbStore::open_file(&src_db).map_err(|e| {
            format!(
                "{} is not a backup made by `hsmlink-hsm backup`: {e}",
                from.display()
            )
        })?);
        (
            s.users().map_err(|e| e.to_string())?.len(),
            s.objects().map_err(|e| e.to_string())?.len(),
        )
    };
    if server_running(data) {
        return Err(format!(
            "a server is running on {}: stop it before restoring",
            data.display()
        ));
    }
    let dst_db = data.join(DB_FILE);
    if dst_db.exists() {
        // Fails if a process holds the database.
        drop(Store::open(data).map_err(|e| e.to_string())?);
        if !force {
            return Err(format!(
                "{} already holds a store: add --force to replace it with the backup",
                data.display()
            ));
        }
    }
    crate::store::create_private_dir(data).map_err(|e| e.to_string())?;
    let bytes =
        Zeroizing::new(std::fs::read(&src_db).map_err(|e| format!("{}: {e}", src_db.display()))?);
    write_synced(&dst_db, &bytes)?;
    let tls = data.join("tls");
    for f in [crate::tls::CERT_FILE, crate::tls::KEY_FILE, "key.der"] {
        let _ = std::fs::remove_file(tls.join(f));
    }
    // The restored store's master key is checked afresh at the next start.
    let _ = std::fs::remove_file(data.join("master.check"));
    copy_tls(&from.join("tls"), &tls)?;
    Ok(format!(
        "restored {} from {}: {users} users, {objects} token objects\n",
        data.display(),
        from.display()
    ))
}

fn status(h: &Hsm) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &h.stats;
    let users = h.store().users().map(|u| u.len()).unwrap_or(0);
    let objects = h.store().objects().map(|o| o.len()).unwrap_or(0);
    format!(
        "version={}\nuptime_secs={}\nstore={}\nmaster_key_protection={:?}\nconnections_now={}\n\
         connections_total={}\noperations={}\nlogins_ok={}\nlogins_failed={}\nlockouts={}\n\
         users={users}\ntoken_objects={objects}\n",
        env!("CARGO_PKG_VERSION"),
        s.started.elapsed().as_secs(),
        h.store().describe(),
        h.protection(),
        s.connections_now.load(Relaxed),
        s.connections_total.load(Relaxed),
        s.requests.load(Relaxed),
        s.logins_ok.load(Relaxed),
        s.logins_failed.load(Relaxed),
        s.lockouts.load(Relaxed),
    )
}

/// Run one command.
pub fn execute(t: &Target<'_>, data: Option<&Path>, req: &AdminRequest) -> Result<String, String> {
    let store = t.store();
    let es = |e: crate::store::StoreError| e.to_string();
    match req {
        AdminRequest::Status => match t {
            Target::Server(h) => Ok(status(h)),
            Target::Store(_) => Err("no server is running on this store".into()),
        },
        AdminRequest::UserAdd { name, password } => {
            set_password(t, name, &password.0, false)?;
            Ok(format!("user {name} added\n"))
        }
        AdminRequest::UserPasswd { name, password } => {
            set_password(t, name, &password.0, true)?;
            Ok(format!("password of user {name} changed\n"))
        }
        AdminRequest::UserRemove { name } => {
            need_record_key(t)?;
            let existed = match t {
                Target::Server(h) => h.remove_user(name).map_err(es)?,
                Target::Store(s) => {
                    let owner = match s.user(name) {
                        Ok(Some(u)) => Some(users::owner_key(name, u.id)),
                        _ => None,
                    };
                    s.remove_user(name, owner.as_deref()).map_err(es)?
                }
            };
            if existed {
                Ok(format!("user {name} removed, with its token objects\n"))
            } else {
                Err(format!("no user {name}"))
            }
        }
        AdminRequest::UserLock { name } => {
            need_record_key(t)?;
            let existed = match t {
                Target::Server(h) => h.lock_user(name).map_err(es)?,
                Target::Store(s) => s.lock_user(name).map_err(es)?,
            };
            if existed {
                Ok(format!("user {name} locked\n"))
            } else {
                Err(format!("no user {name}"))
            }
        }
        AdminRequest::UserUnlock { name } => {
            need_record_key(t)?;
            let existed = match t {
                Target::Server(h) => h.unlock_user(name).map_err(es)?,
                Target::Store(s) => s.unlock_user(name).map_err(es)?,
            };
            if existed {
                Ok(format!("user {name} unlocked\n"))
            } else {
                Err(format!("no user {name}"))
            }
        }
        AdminRequest::UserList => list_users(store),
        AdminRequest::ObjectsList { user } => list_objects(store, user.as_deref()),
        AdminRequest::ObjectsDelete { handle } => {
            let existed = match t {
                Target::Server(h) => h.admin_delete(*handle).map_err(es)?,
                Target::Store(s) => s.delete_object(*handle).map_err(es)?,
            };
            if existed {
                Ok(format!("object {handle} deleted\n"))
            } else {
                Err(format!("no token object {handle}"))
            }
        }
        AdminRequest::Backup { dest } => {
            let data = data.ok_or("backup needs the data folder (--data)")?;
            backup_folder(store, data, dest)
        }
    }
}

fn read_msg(s: &mut UnixStream) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    s.read_exact(&mut body)?;
    Ok(body)
}

fn write_msg(s: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    s.write_all(&(body.len() as u32).to_le_bytes())?;
    s.write_all(body)?;
    s.flush()
}

/// Whether a server answers on `data`'s admin socket.
pub fn server_running(data: &Path) -> bool {
    UnixStream::connect(data.join(SOCKET_FILE)).is_ok()
}

/// Send `req` to the server running on `data`.
pub fn call(data: &Path, req: &AdminRequest) -> Result<String, String> {
    let path = data.join(SOCKET_FILE);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        format!(
            "no server answers on {} ({e}); is one running on this data folder?",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(600))).ok();
    let body = Zeroizing::new(postcard::to_stdvec(req).map_err(|e| e.to_string())?);
    write_msg(&mut s, &body).map_err(|e| format!("admin socket: {e}"))?;
    let reply = read_msg(&mut s).map_err(|e| format!("admin socket: {e}"))?;
    let r: AdminReply = postcard::from_bytes(&reply).map_err(|e| format!("admin socket: {e}"))?;
    if r.ok {
        Ok(r.text)
    } else {
        Err(r.text)
    }
}

/// Serve admin requests for `hsm` on `data/admin.sock` (a background thread).
pub fn listen(hsm: Arc<Hsm>, data: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = data.join(SOCKET_FILE);
    // A socket file left by a killed server; a live one answers.
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::other(format!(
                "{} answers: another server runs on this data folder",
                path.display()
            )));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let data = data.to_path_buf();
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let hsm = hsm.clone();
                let data = data.clone();
                let _ = std::thread::Builder::new()
                    .name("admin conn".into())
                    .spawn(move || serve_admin(&hsm, &data, &mut s));
            }
        })?;
    Ok(())
}

fn serve_admin(hsm: &Hsm, data: &Path, s: &mut UnixStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Ok(body) = read_msg(s) else { return };
    let reply = match postcard::from_bytes::<AdminRequest>(&body) {
        Ok(req) => {
            let what = match &req {
                AdminRequest::Status => "status",
                AdminRequest::UserAdd { .. } => "user_add",
                AdminRequest::UserPasswd { .. } => "user_passwd",
                AdminRequest::UserRemove { .. } => "user_remove",
                AdminRequest::UserUnlock { .. } => "user_unlock",
                AdminRequest::UserLock { .. } => "user_lock",
                AdminRequest::UserList => "user_list",
                AdminRequest::ObjectsList { .. } => "objects_list",
                AdminRequest::ObjectsDelete { .. } => "objects_delete",
                AdminRequest::Backup { .. } => "backup",
            };
            let r = execute(&Target::Server(hsm), Some(data), &req);
            if what != "status" {
                log::info!("event=admin command={what} ok={}", r.is_ok());
            }
            match r {
                Ok(text) => AdminReply { ok: true, text },
                Err(text) => AdminReply { ok: false, text },
            }
        }
        Err(_) => AdminReply {
            ok: false,
            text: "malformed admin request (client and server versions differ?)".into(),
        },
    };
    if let Ok(b) = postcard::to_stdvec(&reply) {
        let _ = write_msg(s, &b);
    }
}
