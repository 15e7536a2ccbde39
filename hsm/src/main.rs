//! `hsmlink-hsm`: the software HSM server and its admin commands.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use hsmlink_core::ck::{cka, ckk, cko};
use hsmlink_hsm::store::Store;
use hsmlink_hsm::{users, Hsm, Limits, Server};

const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

#[derive(Parser)]
#[command(
    name = "hsmlink-hsm",
    version,
    about = "The software HSM of hsmlink: users, keys and cryptography behind the hsmlink PKCS#11 module",
    after_help = "Examples:\n  \
        hsmlink-hsm dev --listen 127.0.0.1:4433 --user alice --password secret\n  \
        echo secret | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
        hsmlink-hsm serve --data /var/lib/hsmlink --listen 0.0.0.0:4433\n\n\
        Logs go to stderr; set RUST_LOG=debug for more."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HSM whose data lives in a folder.
    #[command(
        after_help = "Example:\n  hsmlink-hsm serve --data /var/lib/hsmlink --listen 127.0.0.1:4433\n\n\
        Prints \"listening on ADDR\" once it accepts connections. Token objects \
        persist in DIR; users are managed with `hsmlink-hsm user` while the \
        server is stopped."
    )]
    Serve {
        /// Data folder (created if missing).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// An in-memory HSM with one user, for demos and tests: nothing is written to disk.
    #[command(
        after_help = "Example:\n  hsmlink-hsm dev --listen 127.0.0.1:0 --user alice --password secret\n\n\
        Prints exactly one line, \"listening on ADDR\" with the real address \
        (port 0 picks a free port), once it accepts connections."
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
    /// HSMLINK_TLS_CA). Makes the certificate if there is none yet.
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
    },
    /// Manage users (run while the server is stopped).
    #[command(
        subcommand,
        after_help = "Examples:\n  echo secret | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
            hsmlink-hsm user list --data /var/lib/hsmlink"
    )]
    User(UserCmd),
    /// Inspect token objects (run while the server is stopped).
    #[command(
        subcommand,
        after_help = "Example:\n  hsmlink-hsm objects list --data /var/lib/hsmlink --user alice"
    )]
    Objects(ObjectsCmd),
}

#[derive(Args)]
struct NetArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Most simultaneous connections.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Close connections idle for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Serve plain TCP only (no TLS). Plain TCP is otherwise accepted from
    /// loopback peers only.
    #[arg(long)]
    no_tls: bool,
    /// Accept plain TCP from any address, not only loopback (the password
    /// then crosses the network in clear: only on a trusted network).
    #[arg(long)]
    allow_plain: bool,
    /// An extra DNS name or IP address for the TLS certificate made on first
    /// start (repeatable; localhost, 127.0.0.1, ::1 and the host name are
    /// always in it).
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (or, with --replace, change its password).
    #[command(
        after_help = "Examples:\n  echo 'secret' | hsmlink-hsm user add --data /var/lib/hsmlink alice\n  \
        ALICE_PW=secret hsmlink-hsm user add --data /var/lib/hsmlink --password-env ALICE_PW alice\n\n\
        The password is the first line of standard input unless --password-env is given."
    )]
    Add {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Replace the password of an existing user.
        #[arg(long)]
        replace: bool,
        /// User name: letters, digits, '.', '_' or '-'.
        name: String,
    },
    /// List users.
    #[command(after_help = "Example:\n  hsmlink-hsm user list --data /var/lib/hsmlink")]
    List {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Remove a user and every token object it owns.
    #[command(after_help = "Example:\n  hsmlink-hsm user remove --data /var/lib/hsmlink alice")]
    Remove {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
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
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Only this user's objects.
        #[arg(long)]
        user: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
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
    Limits {
        max_connections: n.max_connections.max(1),
        idle_secs: n.idle_timeout.max(1),
        ..Limits::default()
    }
}

/// The TLS identity: kept in DATA/tls for `serve`, in memory for `dev`.
fn tls_setup(
    data: Option<&Path>,
    net: &NetArgs,
) -> Result<Option<hsmlink_hsm::tls::TlsSetup>, String> {
    if net.no_tls {
        return Ok(None);
    }
    let setup = match data {
        Some(d) => hsmlink_hsm::tls::load_or_create(&d.join("tls"), &net.tls_name),
        None => hsmlink_hsm::tls::ephemeral(&net.tls_name),
    }
    .map_err(|e| e.to_string())?;
    log::info!(
        "TLS certificate SHA-256 fingerprint: {}",
        hsmlink_hsm::tls::format_pin(&setup.fingerprint)
    );
    Ok(Some(setup))
}

/// Listen and serve. Prints "listening on ADDR" first; for `serve` (a data
/// folder) then "tls fingerprint XX:..." (dev mode prints one line only and
/// logs the fingerprint).
fn listen(
    hsm: Hsm,
    net: &NetArgs,
    tls: Option<hsmlink_hsm::tls::TlsSetup>,
    print_fingerprint: bool,
) -> Res {
    let fingerprint = tls.as_ref().map(|t| t.fingerprint);
    let security = hsmlink_hsm::server::Security {
        tls: tls.map(|t| t.config),
        allow_plain: net.allow_plain || net.no_tls,
    };
    let server = Server::bind_secure(Arc::new(hsm), &net.listen, security)
        .map_err(|e| format!("cannot listen on {}: {e}", net.listen))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    log::info!("serving on {addr}");
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
            log::warn!("cannot write to standard output: {e}");
        }
    }
    server.run().map_err(|e| e.to_string())
}

fn open(data: &Path) -> Result<Store, String> {
    Store::open(data).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Res {
    match cli.cmd {
        Cmd::Serve { data, net } => {
            let store = open(&data)?;
            let hsm = Hsm::new(store, limits(&net)).map_err(|e| e.to_string())?;
            if hsm.user_count() == 0 {
                log::warn!(
                    "no users in {}: add one with `hsmlink-hsm user add --data {} NAME`",
                    data.display(),
                    data.display()
                );
            }
            let tls = tls_setup(Some(&data), &net)?;
            listen(hsm, &net, tls, true)
        }
        Cmd::Fingerprint { data, pem } => {
            let t = hsmlink_hsm::tls::load_or_create(&data.join("tls"), &[])
                .map_err(|e| e.to_string())?;
            if pem {
                let b64 = base64_lines(&t.cert_der);
                println!("-----BEGIN CERTIFICATE-----\n{b64}-----END CERTIFICATE-----");
            } else {
                println!("{}", hsmlink_hsm::tls::format_pin(&t.fingerprint));
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
            listen(hsm, &net, tls, false)
        }
        Cmd::User(UserCmd::Add {
            data,
            password_env,
            replace,
            name,
        }) => {
            users::check_name(&name)?;
            let password = match password_env {
                Some(var) => std::env::var(&var)
                    .map_err(|_| format!("environment variable {var} is not set"))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| format!("reading the password from stdin: {e}"))?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            if password.is_empty() {
                return Err("empty password".into());
            }
            let store = open(&data)?;
            let exists = store
                .users()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|(n, _)| *n == name);
            if exists && !replace {
                return Err(format!(
                    "user {name} already exists (use --replace to change its password)"
                ));
            }
            let hsm = Hsm::new(store, Limits::default()).map_err(|e| e.to_string())?;
            hsm.put_user(&name, password.as_bytes())
                .map_err(|e| e.to_string())?;
            println!("user {name} {}", if exists { "updated" } else { "added" });
            Ok(())
        }
        Cmd::User(UserCmd::List { data }) => {
            for (name, _) in open(&data)?.users().map_err(|e| e.to_string())? {
                println!("{name}");
            }
            Ok(())
        }
        Cmd::User(UserCmd::Remove { data, name }) => {
            if open(&data)?.remove_user(&name).map_err(|e| e.to_string())? {
                println!("user {name} removed");
                Ok(())
            } else {
                Err(format!("no user {name}"))
            }
        }
        Cmd::Objects(ObjectsCmd::List { data, user }) => {
            let hsm = Hsm::new(open(&data)?, Limits::default()).map_err(|e| e.to_string())?;
            println!("handle\towner\tclass\tkey_type\tlabel\tid");
            for o in hsm.token_objects() {
                if user.as_ref().is_some_and(|u| *u != o.owner) {
                    continue;
                }
                let class = match o.class() {
                    Some(cko::DATA) => "data",
                    Some(cko::CERTIFICATE) => "certificate",
                    Some(cko::PUBLIC_KEY) => "public-key",
                    Some(cko::PRIVATE_KEY) => "private-key",
                    Some(cko::SECRET_KEY) => "secret-key",
                    _ => "?",
                };
                let kt = match o.key_type() {
                    Some(ckk::RSA) => "rsa",
                    Some(ckk::EC) => "ec",
                    Some(ckk::AES) => "aes",
                    Some(ckk::GENERIC_SECRET) => "generic-secret",
                    Some(_) => "other",
                    None => "-",
                };
                let label = String::from_utf8_lossy(o.get(cka::LABEL).unwrap_or_default());
                let id: String = o
                    .get(cka::ID)
                    .unwrap_or_default()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                println!("{}\t{}\t{class}\t{kt}\t{label}\t{id}", o.handle, o.owner);
            }
            Ok(())
        }
    }
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
