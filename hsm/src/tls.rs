//! TLS 1.3 on the server side (rustls). The server's certificate is made on
//! first start (self-signed, ECDSA P-256) and kept in the data folder; the
//! module pins its SHA-256 fingerprint or trusts it through a CA file.
//!
//! One port serves both TLS and plain TCP: a connection whose first bytes are
//! a TLS handshake record is TLS; anything else is plain, which is accepted
//! only from loopback peers unless the operator allows it (`--allow-plain`),
//! so that a password never crosses a network in clear by default.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

pub use hsmlink_transport_std::tls::{fingerprint, format_pin};

/// The server's TLS identity.
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the certificate (DER): what the module pins.
    pub fingerprint: [u8; 32],
    /// The certificate, for a CA file (`hsmlink-hsm fingerprint --pem`).
    pub cert_der: Vec<u8>,
}

/// Names always in the certificate, besides the operator's `extra`.
fn names(extra: &[String]) -> Vec<String> {
    let mut v = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            v.push(h.to_string());
        }
    }
    v.extend(extra.iter().cloned());
    v.sort();
    v.dedup();
    v
}

fn make(extra: &[String]) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let ck = rcgen::generate_simple_self_signed(names(extra))
        .map_err(|e| io::Error::other(format!("making the TLS certificate: {e}")))?;
    Ok((ck.cert.der().to_vec(), ck.signing_key.serialize_der()))
}

fn setup(cert: Vec<u8>, key: Vec<u8>) -> io::Result<TlsSetup> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| io::Error::other(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(|e| io::Error::other(format!("TLS certificate: {e}")))?;
    Ok(TlsSetup {
        config: Arc::new(config),
        fingerprint: fingerprint(&cert),
        cert_der: cert,
    })
}

/// The identity kept in `dir` (`cert.der`, `key.der`), made on first use.
pub fn load_or_create(dir: &Path, extra: &[String]) -> io::Result<TlsSetup> {
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    if cert_path.exists() && key_path.exists() {
        return setup(std::fs::read(&cert_path)?, std::fs::read(&key_path)?);
    }
    std::fs::create_dir_all(dir)?;
    let (cert, key) = make(extra)?;
    write_private(&key_path, &key)?;
    std::fs::write(&cert_path, &cert)?;
    log::info!("made a new TLS certificate in {}", dir.display());
    setup(cert, key)
}

/// A fresh identity kept in memory only (dev mode).
pub fn ephemeral(extra: &[String]) -> io::Result<TlsSetup> {
    let (cert, key) = make(extra)?;
    setup(cert, key)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Whether the connection starts with a TLS handshake record (content type
/// 22, version 3.x). Our own frames start with a little-endian length whose
/// first three bytes never read `16 03 0x` for any frame the server accepts.
pub fn starts_with_tls(stream: &TcpStream) -> io::Result<bool> {
    let mut head = [0u8; 3];
    let mut got = 0;
    // Peek until three bytes are there (or the peer closes).
    for _ in 0..100 {
        got = stream.peek(&mut head)?;
        if got >= 3 || got == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(got >= 3 && head[0] == 0x16 && head[1] == 0x03)
}

/// Whether plain TCP may be used by `peer`.
pub fn plain_allowed(peer: IpAddr, allow_plain: bool) -> bool {
    allow_plain || peer.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_kept_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), &[]).unwrap();
        let b = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "same certificate after restart"
        );
        let c = ephemeral(&[]).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
    }

    #[test]
    fn plain_only_from_loopback_by_default() {
        assert!(plain_allowed("127.0.0.1".parse().unwrap(), false));
        assert!(!plain_allowed("10.1.2.3".parse().unwrap(), false));
        assert!(plain_allowed("10.1.2.3".parse().unwrap(), true));
    }
}
