//! `hsmlink-hsm`: the software HSM server and its admin commands.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use hsmlink_hsm::admin::{self, AdminRequest, Password, Target};
use hsmlink_hsm::store::Store;
use hsmlink_hsm::vault::{Keyring, Unlock};
use hsmlink_hsm::{users, Hsm, Limits, Server};
use zeroize::Zeroizing;

const DEFAULT_LISTEN: &str = "127.0.0.1:4433";
/// Marks the data folder of a server whose store is PostgreSQL (so that
/// admin commands given `--data` do not make an empty embedded store there).
const PG_MARKER: &str = "store-is-postgres";

#[derive(Parser)]
#[command(
    name = "hsmlink-hsm",
    version,
    about = "The software HSM of hsmlink: users, keys and cryptography behind the hsmlink PKCS#11 module",
    after_help = "Examples:\n  \
        hsmlink-hsm dev --listen 127.0.0.1:4433 --user alice --password secret\n  \
        echo secret | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
        HSMLINK_PASSPHRASE='long passphrase' hsmlink-hsm serve --data /var/lib/hsmlink --listen 0.0.0.0:4433\n  \
        hsmlink-hsm status --data /var/lib/hsmlink\n\n\
        Admin commands (user, objects, backup, status) work on a stopped server's data folder \
        directly, and on a running server's through its admin socket DATA/admin.sock.\n\
        Logs go to stderr, one key=value line per event; set RUST_LOG=debug for more."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HSM whose data lives in a folder (or in PostgreSQL).
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// Data folder (created if missing): the store, the TLS identity,
        /// the admin socket. With --postgres, users and objects live in
        /// PostgreSQL instead; each server keeps its own data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Keep users and token objects in this PostgreSQL database, shared
        /// by every server started with the same URL and passphrase.
        /// Needs a passphrase or key file (the master key must not sit
        /// unprotected in the database), and TLS to the database.
        #[arg(
            long,
            value_name = "URL",
            env = "HSMLINK_POSTGRES",
            hide_env_values = true
        )]
        postgres: Option<String>,
        /// PEM file of the certificate authorities that sign PostgreSQL's
        /// server certificate (default: the system's trust store). The link
        /// to PostgreSQL is always TLS, the certificate checked against the
        /// URL's host, except over unix sockets.
        #[arg(long, value_name = "FILE", env = "HSMLINK_POSTGRES_CA")]
        postgres_ca: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// An in-memory HSM with one user, for demos and tests: nothing is written to disk.
    #[command(
        after_help = "Example:\n  hsmlink-hsm dev --listen 127.0.0.1:0 --user alice --password secret\n\n\
        Prints exactly one line, \"listening on ADDR\" with the real address \
        (port 0 picks a free port), once it accepts connections. Needs no passphrase: \
        nothing is stored."
    )]
    Dev {
        /// The one user's name.
        #[arg(long)]
        user: String,
        /// The one user's password (the PKCS#11 PIN).
        #[arg(long)]
        password: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Print the TLS certificate's SHA-256 fingerprint (to pin in the module
    /// with HSMLINK_TLS_PIN), or the certificate itself (a CA file for
    /// HSMLINK_TLS_CA). Makes the certificate if there is none yet (which
    /// needs the passphrase: the private key is sealed under the master key).
    #[command(
        after_help = "Examples:\n  hsmlink-hsm fingerprint --data /var/lib/hsmlink\n  \
        hsmlink-hsm fingerprint --data /var/lib/hsmlink --pem > hsm-ca.pem"
    )]
    Fingerprint {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print the certificate in PEM instead.
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Manage users: add, passwd, lock, unlock, remove, list.
    #[command(
        subcommand,
        after_help = "Examples:\n  echo secret | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
            hsmlink-hsm user unlock --data /var/lib/hsmlink alice\n  \
            hsmlink-hsm user list --data /var/lib/hsmlink\n\n\
            They work on a running server's data folder too (through its admin socket)."
    )]
    User(UserCmd),
    /// Inspect and delete token objects.
    #[command(
        subcommand,
        after_help = "Examples:\n  hsmlink-hsm objects list --data /var/lib/hsmlink --user alice\n  \
        hsmlink-hsm objects delete --data /var/lib/hsmlink 1234"
    )]
    Objects(ObjectsCmd),
    /// Copy the data folder into a new folder: one consistent snapshot of
    /// the store (taken by the running server if there is one) and the TLS
    /// identity. Everything secret stays sealed under the master key.
    #[command(
        after_help = "Example:\n  hsmlink-hsm backup --data /var/lib/hsmlink /backups/hsmlink-2026-11-27\n\n\
        Restore with `hsmlink-hsm restore`; serving the restored folder needs the \
        passphrase (or key file) the store had when the backup was made. A PostgreSQL \
        store is backed up with pg_dump."
    )]
    Backup {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The backup folder to make (must not exist, or be empty).
        dest: PathBuf,
    },
    /// Replace a data folder's store and TLS identity with a backup (the
    /// server must be stopped).
    #[command(
        after_help = "Example:\n  hsmlink-hsm restore --data /var/lib/hsmlink --force /backups/hsmlink-2026-11-27"
    )]
    Restore {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Replace a data folder that already holds a store.
        #[arg(long)]
        force: bool,
        /// The backup folder (made by `hsmlink-hsm backup`).
        from: PathBuf,
    },
    /// Ask the server running on a data folder for its version, uptime,
    /// connections and operations served (key=value lines).
    #[command(after_help = "Example:\n  hsmlink-hsm status --data /var/lib/hsmlink")]
    Status {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// The master key's protection: change the passphrase, move to a key
    /// file, or protect a store first served without one.
    #[command(
        subcommand,
        after_help = "Example:\n  OLD=... NEW=... hsmlink-hsm keyring change --data /var/lib/hsmlink \\\n      \
        --passphrase-env OLD --new-passphrase-env NEW"
    )]
    Keyring(KeyringCmd),
    /// Convert a store written by an earlier version, once: seal the object
    /// records still in clear, authenticate the user records and give each
    /// user an id (the server stopped). A serving server refuses those
    /// records: anyone who can write the database could plant them.
    #[command(
        after_help = "Examples:\n  HSMLINK_PASSPHRASE=... hsmlink-hsm migrate --data /var/lib/hsmlink\n  \
        hsmlink-hsm migrate --postgres postgres://hsm@db/hsmlink --passphrase-file /run/secrets/hsm"
    )]
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
}

const SERVE_HELP: &str = "Examples:\n  \
    HSMLINK_PASSPHRASE='long passphrase' hsmlink-hsm serve --data /var/lib/hsmlink\n  \
    hsmlink-hsm serve --data /var/lib/hsmlink --key-file /etc/hsmlink/master.key --listen 0.0.0.0:4433\n  \
    hsmlink-hsm serve --data /var/lib/hsmlink-a --postgres postgres://hsm@db/hsmlink --passphrase-file /run/secrets/hsm\n\n\
    Prints \"listening on ADDR\" (then \"tls fingerprint XX:...\") once it accepts connections.\n\n\
    At rest: token objects' secrets (and the TLS private key) are sealed with AES-256-GCM under a \
    random master key, itself wrapped by a key derived from the passphrase (argon2id) or read from \
    the key file. The first start fixes the protection; later starts with a wrong passphrase are \
    refused. Without any of --passphrase-env, --passphrase-file, --key-file (and no HSMLINK_PASSPHRASE) \
    the master key is stored unprotected: for development only, the server warns at every start; \
    `hsmlink-hsm keyring change --new-passphrase-env VAR` (server stopped) protects it.\n\n\
    Limits: one PKCS#11 session per connection; --max-connections connections; frames up to 64 KiB \
    (longer ones close the connection); --max-session-objects session objects per connection; \
    --max-inflight-bytes buffered by a connection's running operations; connections idle for \
    --idle-timeout seconds are closed.\n\n\
    Revocation: `user remove`, `user passwd` and `user lock` end the user's live logins at once \
    on this server (their next request answers CKR_USER_NOT_LOGGED_IN, their session objects are \
    destroyed); the servers of a PostgreSQL fleet check their logged-in users' records every \
    second. A lockout by failed logins refuses new logins only: it ends no live login.\n\n\
    Tampering: user records are authenticated with a key derived from the master key; a server \
    refuses to start on a refused user record, an unprotected keyring when a passphrase or key \
    file is given, or a master key other than the one it served before (DATA/master.check); \
    clear object records are refused (`hsmlink-hsm migrate` converts a store of an earlier \
    version). --postgres needs a passphrase or key file, and TLS (--postgres-ca).\n\n\
    Logins: after --max-login-failures consecutive failures a user is locked (CKR_PIN_LOCKED) until \
    `hsmlink-hsm user unlock`; past 3 failures, attempts per user and per client address are \
    spaced by a delay doubling from --login-delay-ms (250 ms) up to 5 s; an attempt that would wait \
    more than 10 s is refused at once. A user name no user can have (not 1 to 64 of \
    [A-Za-z0-9._-]) is refused at once (CKR_PIN_INCORRECT), remembered and counted nowhere.";

/// Where the master key's protection comes from.
#[derive(Args, Default)]
struct KeyArgs {
    /// Read the passphrase from this environment variable (default: HSMLINK_PASSPHRASE, if set).
    #[arg(long, value_name = "VAR", conflicts_with_all = ["passphrase_file", "key_file"])]
    passphrase_env: Option<String>,
    /// Read the passphrase from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    passphrase_file: Option<PathBuf>,
    /// Read the key-encrypting key from this file (at least 32 random bytes,
    /// e.g. `head -c 32 /dev/urandom > FILE`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Args)]
struct NetArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Most simultaneous connections (each carries one PKCS#11 session).
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Most simultaneous connections that have not logged in yet (part of
    /// --max-connections). Past it, or past --max-connections, the least
    /// active of them (from the address holding the most) is closed to make
    /// room: silent or slow peers cannot keep a client out.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_unauthenticated: usize,
    /// Most simultaneous connections from one client address. Past it, the
    /// address's least active connection that has not logged in is closed
    /// to make room; if all have logged in, the new one is refused.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_connections_per_address: usize,
    /// Most simultaneous connections logged in as one user (default: half
    /// of --max-connections). Past it, a login with the right password is
    /// refused (CKR_DEVICE_MEMORY), so that one valid user cannot hold every
    /// connection and keep the other users out. A connection counts from its
    /// login until it closes (a C_Logout does not give it back).
    #[arg(long, value_name = "N")]
    max_connections_per_user: Option<usize>,
    /// Close a connection that has not logged in this many milliseconds
    /// after it was accepted (TLS handshake, Hello and Login together).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    login_timeout_ms: u64,
    /// Close a connection whose request frame is not complete this many
    /// milliseconds after its first byte came (a client dripping bytes).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    frame_timeout_ms: u64,
    /// Close connections idle for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Most session objects one connection may hold.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_session_objects: usize,
    /// Most bytes the session objects of one connection may hold together
    /// (C_GetObjectSize plus 512 per object); past it CKR_DEVICE_MEMORY.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    max_session_bytes: usize,
    /// Most objects one user may hold on this server (creating a token object
    /// past it is CKR_DEVICE_MEMORY).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_objects_per_user: usize,
    /// Most bytes the token objects of one user may hold together on this
    /// server (counted as for --max-session-bytes); past it CKR_DEVICE_MEMORY.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_user_bytes: usize,
    /// Most bytes the connections of one user may hold together on this
    /// server: their session objects (counted as for --max-session-bytes),
    /// what their running operations buffer and their search cursors (8
    /// bytes a handle); past it CKR_DEVICE_MEMORY
    /// (so that the memory a user holds does not grow with its connections).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_user_session_bytes: usize,
    /// Most bytes one connection's running operations may buffer together.
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 20)]
    max_inflight_bytes: usize,
    /// Microseconds a connection looks for its client's next request before
    /// its thread sleeps, while no other connection is busy (0: never). Saves
    /// the wake-up of a sleeping thread for a lone client; costs at most this
    /// much CPU per request, and stops for clients that keep being slower.
    #[arg(long, value_name = "US", default_value_t = 50)]
    spin_us: u64,
    /// Consecutive failed logins that lock a user (0: never lock).
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_login_failures: u32,
    /// Delay imposed on the fourth failed login in a row (per user and per
    /// client address); it doubles with each further failure, up to 5 s.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    login_delay_ms: u64,
    /// How long a lock after --max-login-failures lasts. Each failure after
    /// a lock lapsed locks again for twice as long, up to --max-lock-secs;
    /// a success or `user unlock` ends it. While locked, a user can still
    /// log in from an address it logged in from lately that has failed
    /// nothing since.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    lock_secs: u64,
    /// The longest a lock lasts.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    max_lock_secs: u64,
    /// Locks last until `user unlock` (or `user passwd`), from every
    /// address: anyone who can guess user names can then lock them out.
    #[arg(long)]
    permanent_lock: bool,
    /// Serve plain TCP only (no TLS). Plain TCP is otherwise accepted from
    /// loopback peers only.
    #[arg(long)]
    no_tls: bool,
    /// Accept plain TCP from any address, not only loopback (a client's
    /// password would then cross the network in clear: the hsmlink module
    /// never logs in that way; other wire clients, only on a trusted
    /// network).
    #[arg(long)]
    allow_plain: bool,
    /// An extra DNS name or IP address for the TLS certificate made on first
    /// start (repeatable; localhost, 127.0.0.1, ::1 and the host name are
    /// always in it).
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
}

/// Which store an admin command works on.
#[derive(Args)]
struct StoreArgs {
    /// Data folder (of a stopped server, or of a running one: then the
    /// command goes through its admin socket).
    #[arg(long, value_name = "DIR", required_unless_present = "postgres")]
    data: Option<PathBuf>,
    /// A PostgreSQL store instead (servers may be running on it).
    #[arg(
        long,
        value_name = "URL",
        env = "HSMLINK_POSTGRES",
        hide_env_values = true
    )]
    postgres: Option<String>,
    /// PEM file of the certificate authorities of PostgreSQL's certificate.
    #[arg(long, value_name = "FILE", env = "HSMLINK_POSTGRES_CA")]
    postgres_ca: Option<PathBuf>,
    /// The store's passphrase or key file: needed directly on a store that
    /// has a master key by the commands that write or trust user records.
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    #[command(
        after_help = "Examples:\n  echo 'secret' | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
        ALICE_PW=secret hsmlink-hsm user add --data /var/lib/hsmlink --password-env ALICE_PW alice\n\n\
        The password is the first line of standard input unless --password-env is given."
    )]
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Replace the password of an existing user (as `user passwd`).
        #[arg(long)]
        replace: bool,
        /// User name: letters, digits, '.', '_' or '-'.
        name: String,
    },
    /// Change a user's password (this also unlocks it); its live sessions end
    /// at once.
    #[command(
        after_help = "Example:\n  echo 'new secret' | hsmlink-hsm user passwd --data /var/lib/hsmlink alice"
    )]
    Passwd {
        #[command(flatten)]
        store: StoreArgs,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        name: String,
    },
    /// Unlock a user locked by failed logins.
    #[command(after_help = "Example:\n  hsmlink-hsm user unlock --data /var/lib/hsmlink alice")]
    Unlock {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
    /// Lock a user until `user unlock` or `user passwd`: its live sessions
    /// end at once.
    #[command(after_help = "Example:\n  hsmlink-hsm user lock --data /var/lib/hsmlink alice")]
    Lock {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
    /// List users: name, state (active, locked, or refused: a record that fails its
    /// integrity check), consecutive failed logins, id.
    #[command(after_help = "Example:\n  hsmlink-hsm user list --data /var/lib/hsmlink")]
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user and every token object it owns; its live sessions end
    /// at once. A user added later under the same name gets a new id and
    /// owns nothing of the removed one's.
    #[command(after_help = "Example:\n  hsmlink-hsm user remove --data /var/lib/hsmlink alice")]
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
}

#[derive(Subcommand)]
enum ObjectsCmd {
    /// List token objects: handle, owner, class, key type, label, id.
    #[command(
        after_help = "Example:\n  hsmlink-hsm objects list --data /var/lib/hsmlink --user alice"
    )]
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this user's objects.
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a token object by handle (see `objects list`).
    #[command(after_help = "Example:\n  hsmlink-hsm objects delete --data /var/lib/hsmlink 1234")]
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        handle: u64,
    },
}

#[derive(Subcommand)]
enum KeyringCmd {
    /// Re-wrap the master key under a new passphrase or key file (the
    /// server stopped; for PostgreSQL, servers may run). The objects are not
    /// touched: the master key stays the same.
    #[command(
        after_help = "Examples:\n  OLD=... NEW=... hsmlink-hsm keyring change --data /var/lib/hsmlink \\\n      \
        --passphrase-env OLD --new-passphrase-env NEW\n  \
        NEW=... hsmlink-hsm keyring change --data /var/lib/hsmlink --new-passphrase-env NEW   # protect an unprotected store"
    )]
    Change {
        #[command(flatten)]
        store: StoreArgs,
        /// The new passphrase, from this environment variable.
        #[arg(long, value_name = "VAR", conflicts_with_all = ["new_passphrase_file", "new_key_file"])]
        new_passphrase_env: Option<String>,
        /// The new passphrase, from this file.
        #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
        new_passphrase_file: Option<PathBuf>,
        /// A new key file.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
    /// Print how the master key is protected.
    #[command(after_help = "Example:\n  hsmlink-hsm keyring show --data /var/lib/hsmlink")]
    Show {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            writeln!(
                buf,
                "ts={} level={} {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsmlink-hsm: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), String>;

fn limits(n: &NetArgs) -> Limits {
    let mut l = Limits {
        max_connections: n.max_connections.max(1),
        max_unauthenticated: n.max_unauthenticated.max(1),
        max_connections_per_address: n.max_connections_per_address.max(1),
        max_connections_per_user: n
            .max_connections_per_user
            .unwrap_or(n.max_connections / 2)
            .max(1),
        login_timeout_ms: n.login_timeout_ms.max(1),
        frame_timeout_ms: n.frame_timeout_ms.max(1),
        idle_secs: n.idle_timeout.max(1),
        max_session_objects: n.max_session_objects,
        max_session_bytes: n.max_session_bytes,
        max_objects_per_user: n.max_objects_per_user,
        max_user_bytes: n.max_user_bytes,
        max_user_session_bytes: n.max_user_session_bytes,
        max_inflight_bytes: n.max_inflight_bytes,
        spin_us: n.spin_us.min(1000),
        ..Limits::default()
    };
    l.login.max_failures = n.max_login_failures;
    l.login.base_delay = std::time::Duration::from_millis(n.login_delay_ms);
    l.login.lock = if n.permanent_lock {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs(n.lock_secs.max(1))
    };
    l.login.max_lock = std::time::Duration::from_secs(n.max_lock_secs.max(n.lock_secs).max(1));
    l
}

fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn trim_newline(mut v: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

fn passphrase_from_env(var: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let v =
        std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
    let v = Zeroizing::new(std::os::unix::ffi::OsStringExt::into_vec(v));
    if v.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    Ok(v)
}

fn unlock_from(
    env: Option<&str>,
    file: Option<&Path>,
    key_file: Option<&Path>,
    default_env: bool,
) -> Result<Unlock, String> {
    if let Some(var) = env {
        return Ok(Unlock::Passphrase(passphrase_from_env(var)?));
    }
    if let Some(f) = file {
        let v = trim_newline(read_secret_file(f, "passphrase file")?);
        if v.is_empty() {
            return Err(format!("the passphrase file {} is empty", f.display()));
        }
        return Ok(Unlock::Passphrase(v));
    }
    if let Some(f) = key_file {
        return Ok(Unlock::KeyFile(read_secret_file(f, "key file")?));
    }
    if default_env && std::env::var_os("HSMLINK_PASSPHRASE").is_some() {
        return Ok(Unlock::Passphrase(passphrase_from_env(
            "HSMLINK_PASSPHRASE",
        )?));
    }
    Ok(Unlock::Nothing)
}

impl KeyArgs {
    fn unlock(&self) -> Result<Unlock, String> {
        unlock_from(
            self.passphrase_env.as_deref(),
            self.passphrase_file.as_deref(),
            self.key_file.as_deref(),
            true,
        )
    }
}

/// The TLS identity: kept in DATA/tls for `serve` (the key sealed under the
/// master key), in memory for `dev`.
fn tls_setup(
    data: Option<(&Path, &hsmlink_hsm::vault::MasterKey)>,
    net: &NetArgs,
) -> Result<Option<hsmlink_hsm::tls::TlsSetup>, String> {
    if net.no_tls {
        return Ok(None);
    }
    let setup = match data {
        Some((d, m)) => hsmlink_hsm::tls::load_or_create(&d.join("tls"), &net.tls_name, m),
        None => hsmlink_hsm::tls::ephemeral(&net.tls_name),
    }
    .map_err(|e| format!("TLS identity: {e}"))?;
    log::info!(
        "event=tls_fingerprint sha256={}",
        hsmlink_hsm::tls::format_pin(&setup.fingerprint)
    );
    Ok(Some(setup))
}

/// Listen and serve. Prints "listening on ADDR" first; for `serve` (a data
/// folder) then "tls fingerprint XX:..." (dev mode prints one line only and
/// logs the fingerprint).
fn listen(
    hsm: Arc<Hsm>,
    net: &NetArgs,
    tls: Option<hsmlink_hsm::tls::TlsSetup>,
    print_fingerprint: bool,
) -> Res {
    let fingerprint = tls.as_ref().map(|t| t.fingerprint);
    let security = hsmlink_hsm::server::Security {
        tls: tls.map(|t| t.config),
        allow_plain: net.allow_plain || net.no_tls,
    };
    let server = Server::bind_secure(hsm, &net.listen, security)
        .map_err(|e| format!("cannot listen on {}: {e}", net.listen))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    log::info!("event=listening addr={addr}");
    {
        // One write, so a reader of the first line gets both; a closed
        // stdout must not stop the service.
        let mut text = format!("listening on {addr}\n");
        if let (true, Some(fp)) = (print_fingerprint, fingerprint) {
            text.push_str(&format!(
                "tls fingerprint {}\n",
                hsmlink_hsm::tls::format_pin(&fp)
            ));
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            log::warn!("event=stdout_failed error={:?}", e.to_string());
        }
    }
    server.run().map_err(|e| e.to_string())
}

/// What an admin command runs against.
enum Opened {
    Store(Store),
    /// A server holds the data folder: go through its admin socket.
    Server(PathBuf),
}

fn pg_tls(ca: Option<&Path>) -> hsmlink_hsm::pgstore::PgTls {
    hsmlink_hsm::pgstore::PgTls {
        ca: ca.map(Path::to_path_buf),
    }
}

/// Open the store of an admin command directly: with the passphrase (or
/// key file) given, the record key is set; a store with no master key yet
/// gets none (its users are sealed by the first `serve`).
fn open_admin(s: &StoreArgs) -> Result<Opened, String> {
    let opened = open_admin_store(s)?;
    if let Opened::Store(st) = &opened {
        let unlock = s.key.unlock()?;
        let has_ring = st.keyring().map_err(|e| e.to_string())?.is_some();
        if has_ring {
            match hsmlink_hsm::hsm::open_master(st, &unlock) {
                Ok(_) => {}
                // Without a passphrase, commands that need none still run.
                Err(_) if matches!(unlock, Unlock::Nothing) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(opened)
}

fn open_admin_store(s: &StoreArgs) -> Result<Opened, String> {
    if let Some(url) = &s.postgres {
        return Store::postgres(url, &pg_tls(s.postgres_ca.as_deref()))
            .map(Opened::Store)
            .map_err(|e| e.to_string());
    }
    let data = s
        .data
        .as_deref()
        .ok_or("give --data DIR or --postgres URL")?;
    // A running server (whatever its store) answers on its admin socket.
    if admin::server_running(data) {
        return Ok(Opened::Server(data.to_path_buf()));
    }
    if data.join(PG_MARKER).exists() {
        return Err(format!(
            "{} belongs to a server whose store is PostgreSQL: give --postgres URL \
             (or start the server and use --data)",
            data.display()
        ));
    }
    Store::open(data)
        .map(Opened::Store)
        .map_err(|e| e.to_string())
}

fn admin_run(s: &StoreArgs, req: AdminRequest) -> Res {
    let text = match open_admin(s)? {
        Opened::Store(st) => admin::execute(&Target::Store(&st), s.data.as_deref(), &req)?,
        Opened::Server(dir) => admin::call(&dir, &req)?,
    };
    print!("{text}");
    Ok(())
}

fn read_password(var: Option<&str>) -> Result<Password, String> {
    let password = match var {
        Some(var) => passphrase_from_env(var)?.to_vec(),
        None => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            line.trim_end_matches(['\n', '\r']).as_bytes().to_vec()
        }
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(Password(password))
}

/// Hold `data/server.lock` for the life of the process: one server per
/// data folder (redb locks its own file; with PostgreSQL this is the guard).
fn lock_data_folder(data: &Path) -> Result<std::fs::File, String> {
    hsmlink_hsm::store::create_private_dir(data).map_err(|e| e.to_string())?;
    let path = data.join("server.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.try_lock().map_err(|_| {
        format!(
            "{} is in use by another process (is a server running on this data folder?)",
            data.display()
        )
    })?;
    Ok(f)
}

fn run(cli: Cli) -> Res {
    match cli.cmd {
        Cmd::Serve {
            data,
            postgres,
            postgres_ca,
            key,
            net,
        } => {
            let _lock = lock_data_folder(&data)?;
            let unlock = key.unlock()?;
            if postgres.is_some() && matches!(unlock, Unlock::Nothing) {
                return Err(
                    "--postgres needs a passphrase or key file (--passphrase-env VAR, \
                     --passphrase-file FILE, HSMLINK_PASSPHRASE, or --key-file FILE): without \
                     one the master key would sit unprotected in the database"
                        .into(),
                );
            }
            let marker = data.join(PG_MARKER);
            let store = match &postgres {
                Some(url) => {
                    if data.join(hsmlink_hsm::store::DB_FILE).exists() {
                        return Err(format!(
                            "{} holds an embedded store: give a PostgreSQL server a data folder of its own",
                            data.display()
                        ));
                    }
                    let st = Store::postgres(url, &pg_tls(postgres_ca.as_deref()))
                        .map_err(|e| e.to_string())?;
                    std::fs::write(
                        &marker,
                        "This data folder belongs to a server whose store is PostgreSQL \
                         (hsmlink-hsm serve --postgres URL).\n",
                    )
                    .map_err(|e| format!("{}: {e}", marker.display()))?;
                    st
                }
                None if marker.exists() => {
                    return Err(format!(
                        "{} was served with --postgres: give --postgres URL again",
                        data.display()
                    ))
                }
                None => Store::open(&data).map_err(|e| e.to_string())?,
            };
            let hsm = Hsm::open(store, &unlock, limits(&net))?;
            drop(unlock);
            check_master_pin(&data, &hsm)?;
            log::info!(
                "event=store store={} master_key_protection={:?}",
                hsm.store().describe(),
                hsm.protection()
            );
            if matches!(hsm.protection(), p if p.contains("unprotected")) {
                log::warn!(
                    "event=unprotected_master_key hint=\"the master key is stored without protection: \
                     anyone who can read the store can decrypt it; protect it with \
                     `hsmlink-hsm keyring change --new-passphrase-env VAR` (server stopped)\""
                );
            }
            if hsm.user_count() == 0 {
                log::warn!(
                    "event=no_users hint=\"add one with `hsmlink-hsm user add --data {} NAME`\"",
                    data.display()
                );
            }
            let tls = tls_setup(Some((&data, hsm.master())), &net)?;
            let hsm = Arc::new(hsm);
            hsm.watch_revocations()
                .map_err(|e| format!("revocation watch: {e}"))?;
            if let Err(e) = admin::listen(hsm.clone(), &data) {
                // Serving matters more than the admin socket (a path too
                // long for a unix socket, say): admin commands then need the
                // server stopped.
                log::warn!(
                    "event=admin_socket_unavailable dir={:?} error={:?}",
                    data.display().to_string(),
                    e.to_string()
                );
            }
            listen(hsm, &net, tls, true)
        }
        Cmd::Fingerprint { data, pem, key } => {
            let cert = match hsmlink_hsm::tls::stored_certificate(&data.join("tls"))
                .map_err(|e| e.to_string())?
            {
                Some(c) => c,
                None => {
                    let unlock = key.unlock()?;
                    let store = Store::open(&data).map_err(|e| e.to_string())?;
                    let (m, _) = hsmlink_hsm::hsm::open_master(&store, &unlock)?;
                    hsmlink_hsm::tls::load_or_create(&data.join("tls"), &[], &m)
                        .map_err(|e| e.to_string())?
                        .cert_der
                }
            };
            if pem {
                let b64 = base64_lines(&cert);
                println!("-----BEGIN CERTIFICATE-----\n{b64}-----END CERTIFICATE-----");
            } else {
                println!(
                    "{}",
                    hsmlink_hsm::tls::format_pin(&hsmlink_hsm::tls::fingerprint(&cert))
                );
            }
            Ok(())
        }
        Cmd::Dev {
            user,
            password,
            net,
        } => {
            users::check_name(&user)?;
            let mut hsm = Hsm::dev(&user, password.as_bytes()).map_err(|e| e.to_string())?;
            hsm.limits = limits(&net);
            let tls = tls_setup(None, &net)?;
            listen(Arc::new(hsm), &net, tls, false)
        }
        Cmd::User(UserCmd::Add {
            store,
            password_env,
            replace,
            name,
        }) => {
            users::check_name(&name)?;
            let password = read_password(password_env.as_deref())?;
            if replace {
                // Add or replace.
                let r = admin_run(
                    &store,
                    AdminRequest::UserPasswd {
                        name: name.clone(),
                        password: password.clone(),
                    },
                );
                if r.as_ref().is_err_and(|e| e.starts_with("no user")) {
                    return admin_run(&store, AdminRequest::UserAdd { name, password });
                }
                return r;
            }
            admin_run(&store, AdminRequest::UserAdd { name, password })
        }
        Cmd::User(UserCmd::Passwd {
            store,
            password_env,
            name,
        }) => {
            users::check_name(&name)?;
            let password = read_password(password_env.as_deref())?;
            admin_run(&store, AdminRequest::UserPasswd { name, password })
        }
        Cmd::User(UserCmd::Unlock { store, name }) => {
            admin_run(&store, AdminRequest::UserUnlock { name })
        }
        Cmd::User(UserCmd::Lock { store, name }) => {
            admin_run(&store, AdminRequest::UserLock { name })
        }
        Cmd::Migrate { store } => {
            let st = match open_admin_store(&store)? {
                Opened::Store(s) => s,
                Opened::Server(_) => {
                    return Err("stop the server first: migrate runs offline".into())
                }
            };
            let unlock = store.key.unlock()?;
            if st.is_shared() && matches!(unlock, Unlock::Nothing) {
                return Err("migrating a PostgreSQL store needs its passphrase or key file".into());
            }
            print!("{}", hsmlink_hsm::hsm::migrate(&st, &unlock)?);
            Ok(())
        }
        Cmd::User(UserCmd::List { store }) => admin_run(&store, AdminRequest::UserList),
        Cmd::User(UserCmd::Remove { store, name }) => {
            admin_run(&store, AdminRequest::UserRemove { name })
        }
        Cmd::Objects(ObjectsCmd::List { store, user }) => {
            admin_run(&store, AdminRequest::ObjectsList { user })
        }
        Cmd::Objects(ObjectsCmd::Delete { store, handle }) => {
            admin_run(&store, AdminRequest::ObjectsDelete { handle })
        }
        Cmd::Backup { data, dest } => {
            let dest = absolute(&dest)?;
            admin_run(
                &StoreArgs {
                    data: Some(data),
                    postgres: None,
                    postgres_ca: None,
                    key: KeyArgs::default(),
                },
                AdminRequest::Backup { dest },
            )
        }
        Cmd::Restore { data, force, from } => {
            print!("{}", admin::restore_folder(&from, &data, force)?);
            Ok(())
        }
        Cmd::Status { data } => {
            print!("{}", admin::call(&data, &AdminRequest::Status)?);
            Ok(())
        }
        Cmd::Keyring(KeyringCmd::Show { store }) => {
            let st = match open_admin_store(&store)? {
                Opened::Store(s) => s,
                Opened::Server(_) => return Err("stop the server first".into()),
            };
            match st.keyring().map_err(|e| e.to_string())? {
                None => println!("no master key yet (made on the first `serve`)"),
                Some(b) => {
                    let k = Keyring::decode(&b).map_err(|e| e.to_string())?;
                    println!("master key protected by {}", k.protection.describe());
                }
            }
            Ok(())
        }
        Cmd::Keyring(KeyringCmd::Change {
            store,
            new_passphrase_env,
            new_passphrase_file,
            new_key_file,
        }) => {
            let new = unlock_from(
                new_passphrase_env.as_deref(),
                new_passphrase_file.as_deref(),
                new_key_file.as_deref(),
                false,
            )?;
            if matches!(new, Unlock::Nothing) {
                return Err(
                    "give the new protection: --new-passphrase-env, --new-passphrase-file or --new-key-file"
                        .into(),
                );
            }
            let st = match open_admin_store(&store)? {
                Opened::Store(s) => s,
                Opened::Server(_) => {
                    return Err("stop the server first: the keyring changes offline".into())
                }
            };
            if st.keyring().map_err(|e| e.to_string())?.is_none() {
                return Err("this store has no master key yet: serve it once first".into());
            }
            let (m, _) = hsmlink_hsm::hsm::open_master(&st, &store.key.unlock()?)?;
            let ring = Keyring::wrap(&m, &new).map_err(|e| e.to_string())?;
            st.replace_keyring(&ring.encode().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            println!("master key now protected by {}", ring.protection.describe());
            Ok(())
        }
    }
}

/// The file of the data folder that remembers which master key this
/// server served, and whether it was protected.
const MASTER_CHECK: &str = "master.check";

/// Refuse a store whose master key is not the one this data folder's
/// server served before (the keyring was replaced in the database), or is
/// unprotected when it was protected; remember it on the first start.
fn check_master_pin(data: &Path, hsm: &Hsm) -> Res {
    let path = data.join(MASTER_CHECK);
    let check: String = hsm
        .master()
        .check_value()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let protected = !hsm.protection().contains("unprotected");
    let line = format!("check={check}\nprotected={protected}\n");
    match std::fs::read_to_string(&path) {
        Ok(old) => {
            let old_check = old.lines().find_map(|l| l.strip_prefix("check="));
            let was_protected = old.lines().any(|l| l == "protected=true");
            if old_check != Some(check.as_str()) {
                return Err(format!(
                    "the store's master key is not the one this server served before ({}): the \
                     keyring in the store was replaced. Refusing to start. If the store was \
                     replaced on purpose (another store, not a backup of this one), delete {}",
                    path.display(),
                    path.display()
                ));
            }
            if was_protected && !protected {
                return Err(format!(
                    "the store's master key was protected and is now unprotected: refusing to \
                     start ({})",
                    path.display()
                ));
            }
            if old != line {
                std::fs::write(&path, &line).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, &line).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Base64 (RFC 4648) in 64-column lines, for PEM.
fn base64_lines(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    let mut out = String::new();
    for line in s.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out
}
