//! End-to-end test harness for hsmlink.
//!
//! Every test binary in `tests/tests/` drives the real, built
//! `libhsmlink_pkcs11.so` (through the `cryptoki` crate, and through [`raw`]
//! where a test must hand the C ABI buffers no safe wrapper would build)
//! against the real software HSM, `hsmlink-hsm dev`, started on an ephemeral
//! port.
//!
//! A PKCS#11 module is process-global and reads its configuration from the
//! environment at `C_Initialize`, and login state is shared by all sessions of
//! an application. So each test binary (one process) shares one server and one
//! initialized module, and its tests take turns: [`token`] hands out a guard
//! that holds a process-wide lock for the length of the test and starts from a
//! clean state (every session closed, so nobody is logged in).
//!
//! Build the artefacts first: `cargo build -p hsmlink-hsm -p hsmlink-pkcs11`
//! (`cargo xtask test` does it).

pub mod cli;
pub mod keys;
pub mod pg;
/// The module's C ABI called with hand-made buffers (see its docs).
pub use hsmlink_pkcs11::ffi::testing as raw;
pub mod verify;

use std::io::{BufRead, BufReader, Read};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// The HSM user every test server is started with.
pub const USER: &str = "hsmlink-test";
/// That user's password, which is the PKCS#11 PIN.
pub const PIN: &str = "correct horse battery staple";
/// The only slot of the Dinamo profile.
pub const SLOT_ID: u64 = 1;
/// How long a server may take to print its "listening on ADDR" line.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

const BUILD_HINT: &str = "run `cargo build -p hsmlink-hsm -p hsmlink-pkcs11` first \
     (or `cargo xtask test`, which builds them)";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

fn built_artifact(name: &str, dep_info: &str) -> PathBuf {
    let debug = target_dir().join("debug");
    let path = debug.join(name);
    assert!(
        path.is_file(),
        "{} is missing: {BUILD_HINT}",
        path.display()
    );
    // A stale artefact would test old code: cargo does not rebuild it for
    // `cargo test -p hsmlink-tests`. Cargo's dep-info file lists the
    // sources it was built from.
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let newer = std::fs::read_to_string(debug.join(dep_info))
        .ok()
        .and_then(|deps| {
            dep_info_sources(&deps).into_iter().find(|source| {
                let changed = std::fs::metadata(source).and_then(|m| m.modified()).ok();
                matches!((built, changed), (Some(b), Some(c)) if c > b)
            })
        });
    if let Some(source) = newer {
        panic!(
            "{} is older than {}: {BUILD_HINT}",
            path.display(),
            source.display()
        );
    }
    path
}

/// The source files of the first rule of a Makefile-style dep-info file.
fn dep_info_sources(deps: &str) -> Vec<PathBuf> {
    let Some(line) = deps.lines().next() else {
        return Vec::new();
    };
    // "target: dep dep ..."; spaces inside paths are escaped as "\ ".
    let Some((_, list)) = line.split_once(": ") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

/// Path of the built module, `target/debug/libhsmlink_pkcs11.so`; fails if
/// it is missing or older than a source it was built from.
pub fn module_path() -> PathBuf {
    built_artifact("libhsmlink_pkcs11.so", "libhsmlink_pkcs11.d")
}

/// Path of the built server, `target/debug/hsmlink-hsm`; fails if it is
/// missing or older than its sources.
pub fn hsm_binary() -> PathBuf {
    built_artifact("hsmlink-hsm", "hsmlink-hsm.d")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A running `hsmlink-hsm` process, killed when dropped.
///
/// The process is also killed if the test process dies first (it is spawned
/// with `PR_SET_PDEATHSIG` from a thread that lives as long as the process),
/// so the server shared by a whole test binary never outlives it.
pub struct Hsm {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Hsm {
    /// Starts `hsmlink-hsm dev --listen 127.0.0.1:0 --user USER --password PASS`
    /// and waits for its "listening on ADDR" line.
    pub fn start_dev(user: &str, password: &str) -> Hsm {
        Hsm::start(&[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--user",
            user,
            "--password",
            password,
        ])
    }

    /// Starts `hsmlink-hsm ARGS...`, which must print "listening on ADDR".
    pub fn start(args: &[&str]) -> Hsm {
        Hsm::start_until_ready(args, None)
    }

    /// Starts `hsmlink-hsm ARGS...` and waits for "listening on ADDR" or,
    /// when `known_addr` is given, for that address to accept connections.
    fn start_until_ready(args: &[&str], known_addr: Option<&str>) -> Hsm {
        let mut command = Command::new(hsm_binary());
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied_to_process(command)
            .unwrap_or_else(|e| panic!("cannot start hsmlink-hsm {args:?}: {e}"));

        // Drain both pipes for the whole life of the server, so that it never
        // blocks on (or dies of) a full or closed pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let err_buf = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err_pipe.read(&mut chunk) {
                let mut buf = err_buf.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() < 64 * 1024 {
                    buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(addr) = known_addr {
            let tx = tx.clone();
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + SERVER_START_TIMEOUT;
                while std::time::Instant::now() < deadline {
                    if std::net::TcpStream::connect(&addr).is_ok() {
                        let _ = tx.send(addr);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        let out_pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });

        let addr = match rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let log = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
                panic!(
                    "hsmlink-hsm {args:?} did not print \"listening on ADDR\" within {:?} \
                     (exit status: {status:?}); its stderr:\n{log}",
                    SERVER_START_TIMEOUT
                );
            }
        };
        Hsm {
            child,
            addr,
            stderr,
        }
    }

    /// Starts `hsmlink-hsm serve --data DIR --listen 127.0.0.1:PORT` on a
    /// free port, and waits until it prints "listening on ADDR" or accepts a
    /// TCP connection.
    pub fn start_serve(data_dir: &Path) -> Hsm {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let data = data_dir.to_str().expect("utf-8 temp path");
        Hsm::start_until_ready(
            &["serve", "--data", data, "--listen", &listen],
            Some(&listen),
        )
    }

    /// The `host:port` the server listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse a port out of {:?}", self.addr))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of the server's `/proc/PID/status` in its unit (kB for
    /// `VmRSS`), e.g. `status_field("Threads")`.
    pub fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| {
                let v = l.strip_prefix(name)?.strip_prefix(':')?;
                v.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
    }

    /// What the server wrote on stderr so far (first 64 KiB).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hsm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port that was free a moment ago.
/// A TCP relay in front of `upstream` (for tests that stand between module
/// and HSM): returns its address. `accepted(n)` is told of the `n`-th
/// connection (from 0); every chunk read on connection `n`, either way, is
/// handed to `forward(n, bytes)`, which says whether it passes on (else it
/// is swallowed). The end of either side half-closes the other.
pub fn relay(
    upstream: String,
    accepted: impl Fn(usize) + Send + 'static,
    forward: impl Fn(usize, &[u8]) -> bool + Send + Sync + 'static,
) -> String {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = listener.local_addr().expect("relay addr").to_string();
    let forward = Arc::new(forward);
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            accepted(n);
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let forward = forward.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let got = match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(got) => got,
                        };
                        if forward(n, &buf[..got]) && to.write_all(&buf[..got]).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/hsmlink-tests-<pid>-<name>-<n>`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique_label(&format!("hsmlink-tests-{name}")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from a thread that never ends, with `PR_SET_PDEATHSIG`
/// set to `SIGKILL`: the child dies with this process (the signal fires when
/// the spawning *thread* exits, hence the long-lived thread).
fn spawn_tied_to_process(command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("hsm-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    raw::kill_child_with_parent(&mut command);
                    let _ = reply.send(command.spawn());
                }
                // The senders live in a static: this loop never ends, and
                // neither does this thread.
            })
            .expect("spawn keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply_tx))
        .expect("keeper thread alive");
    reply_rx.recv().expect("keeper thread replies")
}

// ---------------------------------------------------------------------------
// The module, shared by the tests of one binary
// ---------------------------------------------------------------------------

/// The server and the initialized module shared by one test binary.
pub struct Token {
    /// The module, initialized with `CKF_OS_LOCKING_OK` and configured with
    /// `HSMLINK_ADDR` = the server, `HSMLINK_USER` = [`USER`].
    pub pkcs11: Pkcs11,
    /// The C ABI of the same loaded module, for tests cryptoki cannot express.
    pub raw: raw::Raw,
    /// Slot 1.
    pub slot: Slot,
    hsm: Mutex<Hsm>,
    addr: String,
    /// Set while the module runs with a non-default configuration.
    reconfigured: std::sync::atomic::AtomicBool,
}

/// Exclusive use of the shared [`Token`] for the length of one test.
pub struct TokenGuard {
    token: &'static Token,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for TokenGuard {
    type Target = Token;
    fn deref(&self) -> &Token {
        self.token
    }
}

/// The environment variables that configure the module; cleared before each
/// `C_Initialize` of the harness so that the caller's shell cannot interfere.
pub const CONFIG_VARS: &[&str] = &[
    "HSMLINK_ADDR",
    "HSMLINK_USER",
    "HSMLINK_SPECIAL_PIN",
    "DFENCE_PKCS11_IP",
    "DFENCE_PKCS11_USER",
    "DFENCE_PKCS11_SPECIAL_PWD",
    "HSMLINK_CONFIG",
    "HSMLINK_TLS",
    "HSMLINK_TLS_PIN",
    "HSMLINK_TLS_CA",
    "HSMLINK_CONNECT_TIMEOUT_MS",
    "HSMLINK_TIMEOUT_MS",
];

/// Takes this binary's turn on the shared token, starting the server and
/// initializing the module on first use. Every session is closed first, so
/// the test starts logged out with no session objects.
pub fn token() -> TokenGuard {
    static TURN: Mutex<()> = Mutex::new(());
    static TOKEN: OnceLock<Token> = OnceLock::new();
    // A test that failed while holding the lock poisons it; the next test
    // still gets a clean token below.
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let token = TOKEN.get_or_init(|| {
        let hsm = Hsm::start_dev(USER, PIN);
        let addr = hsm.addr().to_string();
        let module = module_path();
        let pkcs11 = Pkcs11::new(&module)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", module.display()));
        let raw = raw::Raw::load(&module);
        let token = Token {
            pkcs11,
            raw,
            slot: slot_one(),
            hsm: Mutex::new(hsm),
            addr,
            reconfigured: std::sync::atomic::AtomicBool::new(false),
        };
        token.configure_env(&[]);
        token
            .pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize with HSMLINK_ADDR and HSMLINK_USER set");
        token
    });
    let rv = token.raw.close_all_sessions(SLOT_ID);
    if rv != raw::CKR_OK && rv != raw::CKR_CRYPTOKI_NOT_INITIALIZED {
        panic!(
            "C_CloseAllSessions(1) before the test returned {}",
            raw::rv_name(rv)
        );
    }
    if rv == raw::CKR_CRYPTOKI_NOT_INITIALIZED || token.reconfigured.load(Ordering::SeqCst) {
        // A previous test finalized or reconfigured the module and failed
        // before restoring it.
        token.reinitialize(&[]).expect("C_Initialize");
    }
    TokenGuard { token, _turn: turn }
}

/// Slot 1 as a cryptoki [`Slot`].
pub fn slot_one() -> Slot {
    Slot::try_from(SLOT_ID).expect("slot id 1")
}

impl Token {
    /// `host:port` of the shared server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// What the shared server wrote on stderr so far.
    pub fn server_log(&self) -> String {
        self.hsm.lock().unwrap_or_else(|p| p.into_inner()).stderr()
    }

    /// Sets the module's configuration variables: first the defaults
    /// (`HSMLINK_ADDR` = this server, `HSMLINK_USER` = [`USER`]) with every
    /// other one cleared, then `overrides` (`None` removes the variable).
    /// Takes effect at the next `C_Initialize`.
    pub fn configure_env(&self, overrides: &[(&str, Option<&str>)]) {
        // Edition 2021: set_var is safe; the harness holds the test lock, and
        // the module reads the environment only inside C_Initialize.
        for var in CONFIG_VARS {
            std::env::remove_var(var);
        }
        std::env::set_var("HSMLINK_ADDR", &self.addr);
        std::env::set_var("HSMLINK_USER", USER);
        for (var, value) in overrides {
            match value {
                Some(v) => std::env::set_var(var, v),
                None => std::env::remove_var(var),
            }
        }
    }

    /// `C_Finalize` (if initialized), set the environment as
    /// [`Token::configure_env`] does, then `C_Initialize`; returns the
    /// `C_Initialize` result. The guard's next user finds the module
    /// initialized with the defaults again if this one is left broken.
    pub fn reinitialize(&self, overrides: &[(&str, Option<&str>)]) -> cryptoki::error::Result<()> {
        let _ = self.raw.finalize();
        self.reconfigured
            .store(!overrides.is_empty(), Ordering::SeqCst);
        self.configure_env(overrides);
        let result = self
            .pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        // Leave the defaults in the environment for whoever comes next.
        self.configure_env(&[]);
        result
    }

    /// Opens a read/write session on slot 1.
    pub fn rw_session(&self) -> Session {
        self.pkcs11
            .open_rw_session(self.slot)
            .expect("C_OpenSession(slot 1, CKF_SERIAL_SESSION|CKF_RW_SESSION)")
    }

    /// Opens a read-only session on slot 1.
    pub fn ro_session(&self) -> Session {
        self.pkcs11
            .open_ro_session(self.slot)
            .expect("C_OpenSession(slot 1, CKF_SERIAL_SESSION)")
    }

    /// Opens a read/write session and logs the user in with [`PIN`].
    pub fn user_session(&self) -> Session {
        let session = self.rw_session();
        login_user(&session);
        session
    }
}

/// `C_Login(CKU_USER, PIN)`, accepting `CKR_USER_ALREADY_LOGGED_IN` (login
/// state is shared by all the sessions of the application).
pub fn login_user(session: &Session) {
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login(CKU_USER, correct PIN): {e}"),
    }
}

/// A label unique within this process, for the objects one test creates.
pub fn unique_label(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asserts that `result` is the PKCS#11 error `expected`.
#[track_caller]
pub fn assert_rv<T: std::fmt::Debug>(result: cryptoki::error::Result<T>, expected: RvError) {
    match result {
        Err(Error::Pkcs11(rv, _)) if rv == expected => {}
        Err(Error::Pkcs11(rv, function)) => {
            panic!("{function}: expected {expected:?}, got {rv:?}")
        }
        Err(other) => panic!("expected {expected:?}, got a non-PKCS#11 error: {other}"),
        Ok(value) => panic!("expected {expected:?}, got Ok({value:?})"),
    }
}

/// The PKCS#11 error in `result`, or a panic naming what came instead.
#[track_caller]
pub fn rv_of<T: std::fmt::Debug>(result: cryptoki::error::Result<T>) -> RvError {
    match result {
        Err(Error::Pkcs11(rv, _)) => rv,
        Err(other) => panic!("expected a PKCS#11 error, got: {other}"),
        Ok(value) => panic!("expected a PKCS#11 error, got Ok({value:?})"),
    }
}

/// Where a command-line tool is missing, the message says which Debian
/// package provides it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{tool}` is not installed: install it with `apt-get install {package}`")
    })
}
