//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! folder and `postgres` on a free loopback port, stopped and removed on
//! drop. No system service is used. It serves TLS with a certificate for
//! 127.0.0.1 signed by a throwaway CA made here ([`Postgres::ca`]), and
//! accepts TCP connections over TLS only (`hostssl` in `pg_hba.conf`).
//!
//! The binaries come from Debian's `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin`), or from `PATH`. PostgreSQL refuses
//! to run as root: when the tests run as root (CI), the server runs as the
//! `postgres` account the package creates, through `setpriv`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, TempDir};

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    port: u16,
    _dir: TempDir,
    bin: PathBuf,
    ca: PathBuf,
}

/// A CA and a server certificate for 127.0.0.1 signed by it (PEM):
/// `(ca certificate, server certificate, server key)`.
pub fn make_certificates(cn: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};
    let key = || {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
        PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("pkey")
    };
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().expect("name");
        n.append_entry_by_text("CN", cn).expect("CN");
        n.build()
    };
    let serial = || {
        let mut bn = BigNum::new().expect("bn");
        bn.rand(64, MsbOption::MAYBE_ZERO, false).expect("rand");
        bn.to_asn1_integer().expect("serial")
    };
    let ca_key = key();
    let mut b = X509::builder().expect("x509");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    let ca_name = name(&format!("{cn} test CA"));
    b.set_subject_name(&ca_name).expect("subject");
    b.set_issuer_name(&ca_name).expect("issuer");
    b.set_pubkey(&ca_key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("time"))
        .expect("not after");
    b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
        .expect("ext");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .expect("ku"),
    )
    .expect("ext");
    b.sign(&ca_key, MessageDigest::sha256()).expect("sign");
    let ca = b.build();

    let srv_key = key();
    let mut b = X509::builder().expect("x509");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    b.set_subject_name(&name(cn)).expect("subject");
    b.set_issuer_name(ca.subject_name()).expect("issuer");
    b.set_pubkey(&srv_key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("time"))
        .expect("not after");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&b.x509v3_context(Some(&ca), None))
        .expect("san");
    b.append_extension(san).expect("ext");
    b.sign(&ca_key, MessageDigest::sha256()).expect("sign");
    let srv = b.build();
    (
        ca.to_pem().expect("pem"),
        srv.to_pem().expect("pem"),
        srv_key.private_key_to_pem_pkcs8().expect("pem"),
    )
}

/// The folder holding `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some(p) = versions.pop() {
        return p;
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
    }) {
        return p;
    }
    panic!("PostgreSQL is not installed: install it with `apt-get install postgresql`");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs `program` as the `postgres` account when we are root.
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Start a fresh cluster; waits until it accepts connections.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = TempDir::new("pg");
        let data = dir.path().join("data");
        let sockets = dir.path().join("sock");
        std::fs::create_dir_all(&sockets).expect("socket folder");
        // TLS: a throwaway CA, the server's certificate and key (readable
        // by the server's account only, as PostgreSQL demands).
        let (ca_pem, cert_pem, key_pem) = make_certificates("hsmlink-test-postgres");
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&ca, &ca_pem).expect("write CA");
        std::fs::write(&cert, &cert_pem).expect("write certificate");
        std::fs::write(&key, &key_pem).expect("write key");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
            // The CA is read by the tests (and the servers they start).
            std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644))
                .expect("chmod CA");
        }
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "chown to the postgres account failed (is the Debian postgresql package installed?)"
            );
        }
        let out = as_db_user(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "hsmlink",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // TCP over TLS only; the unix socket (psql of the tests) as before.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        let port = free_port();
        let child = as_db_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", sockets.display()))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"])
            .args(["-c", "ssl=on", "-c"])
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            child,
            port,
            _dir: dir,
            bin,
            ca,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(pg.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "hsmlink"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// The connection URL of database `postgres` as superuser `hsmlink`.
    pub fn url(&self) -> String {
        format!("postgres://hsmlink@127.0.0.1:{}/postgres", self.port)
    }

    /// The PEM file of the CA that signed the server's certificate (for
    /// `--postgres-ca`).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Run SQL with `psql`; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every byte of every table, as `pg_dump` writes it (plain SQL, bytea
    /// in hex), to search for secrets.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["--data-only", "-d", &self.url()])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): the backends exit with the postmaster.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
