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

/// File of the certificate (public) in the TLS folder.
pub const CERT_FILE: &str = "cert.der";
/// File of the private key, sealed under the master key ([`crate::vault`]).
pub const KEY_FILE: &str = "key.sealed";
/// The clear private key file of earlier versions (sealed and removed on start).
const OLD_KEY_FILE: &str = "key.der";
const KEY_PURPOSE: &str = "tls private key";

/// The certificate kept in `dir`, if there is one (no key needed).
pub fn stored_certificate(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(CERT_FILE)) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The identity kept in `dir` (`cert.der`, and `key.sealed`: the private
/// key sealed under the master key), made on first use. A clear `key.der`
/// left by an earlier version is sealed and removed.
pub fn load_or_create(
    dir: &Path,
    extra: &[String],
    master: &crate::vault::MasterKey,
) -> io::Result<TlsSetup> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let old_key = dir.join(OLD_KEY_FILE);
    let seal = |key: &[u8]| {
        crate::vault::seal_blob(master, KEY_PURPOSE, key).map_err(|e| io::Error::other(e.0))
    };
    if cert_path.exists() && !key_path.exists() && old_key.exists() {
        let key = zeroize::Zeroizing::new(std::fs::read(&old_key)?);
        write_private(&key_path, &seal(&key)?)?;
        std::fs::remove_file(&old_key)?;
        log::info!("event=tls_key_sealed dir={:?}", dir.display().to_string());
    }
    if cert_path.exists() && key_path.exists() {
        let sealed = std::fs::read(&key_path)?;
        let key = crate::vault::open_blob(master, KEY_PURPOSE, &sealed)
            .map_err(|e| io::Error::other(format!("{}: {e}", key_path.display())))?;
        return setup(std::fs::read(&cert_path)?, key.to_vec());
    }
    crate::store::create_private_dir(dir).map_err(|e| io::Error::other(e.0))?;
    let (cert, key) = make(extra)?;
    let key = zeroize::Zeroizing::new(key);
    write_private(&key_path, &seal(&key)?)?;
    write_private(&cert_path, &cert)?;
    log::info!(
        "event=tls_certificate_made dir={:?}",
        dir.display().to_string()
    );
    setup(cert, key.to_vec())
}

/// A fresh identity kept in memory only (dev mode).
pub fn ephemeral(extra: &[String]) -> io::Result<TlsSetup> {
    let (cert, key) = make(extra)?;
    setup(cert, key)
}

/// Write a new file (owner-only) atomically: a temporary file, synced,
/// renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Whether the connection starts with a TLS handshake record (content type
/// 22, record version 3.1 to 3.4). Our own frames start with a
/// little-endian length; one whose first three bytes read `16 03 01` or more
/// announces over 66,000 bytes, beyond any frame the server accepts.
pub fn starts_with_tls(stream: &TcpStream) -> io::Result<bool> {
    starts_with_tls_unless(stream, &|| false)
}

/// [`starts_with_tls`], giving up (an error) as soon as `ended()` says the
/// connection was ended meanwhile.
pub fn starts_with_tls_unless(stream: &TcpStream, ended: &dyn Fn() -> bool) -> io::Result<bool> {
    let mut head = [0u8; 3];
    let mut got = 0;
    // Peek until three bytes are there (or the peer closes).
    for _ in 0..100 {
        got = stream.peek(&mut head)?;
        if got >= 3 || got == 0 {
            break;
        }
        if ended() {
            return Err(io::Error::other("connection ended"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(got >= 3 && head[0] == 0x16 && head[1] == 0x03 && (1..=4).contains(&head[2]))
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
        let m = crate::vault::MasterKey::generate().unwrap();
        let a = load_or_create(dir.path(), &[], &m).unwrap();
        let b = load_or_create(dir.path(), &[], &m).unwrap();
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "same certificate after restart"
        );
        let c = ephemeral(&[]).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
        assert!(!dir.path().join("key.der").exists());
        // Another master key cannot open it.
        let other = crate::vault::MasterKey::generate().unwrap();
        assert!(load_or_create(dir.path(), &[], &other).is_err());
    }

    #[test]
    fn a_clear_key_of_an_earlier_version_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make(&[]).unwrap();
        std::fs::write(dir.path().join(CERT_FILE), &cert).unwrap();
        std::fs::write(dir.path().join("key.der"), &key).unwrap();
        let m = crate::vault::MasterKey::generate().unwrap();
        let a = load_or_create(dir.path(), &[], &m).unwrap();
        assert_eq!(a.fingerprint, fingerprint(&cert));
        assert!(!dir.path().join("key.der").exists());
        let sealed = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(!sealed.windows(16).any(|w| key.windows(16).any(|k| k == w)));
    }

    #[test]
    fn a_plain_frame_is_never_taken_for_tls() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        // A 790-byte frame: its header starts 16 03 00.
        c.write_all(&[0x16, 0x03, 0x00, 0x00]).unwrap();
        assert!(!starts_with_tls(&s).unwrap());
        let mut c2 = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s2, _) = l.accept().unwrap();
        c2.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        assert!(starts_with_tls(&s2).unwrap());
        assert!(
            hsmlink_core::wire::frame_len([0x16, 0x03, 0x01, 0x00], crate::conn::SERVER_MAX_FRAME)
                .is_err(),
            "a header that looks like TLS announces more than the server accepts"
        );
    }

    #[test]
    fn plain_only_from_loopback_by_default() {
        assert!(plain_allowed("127.0.0.1".parse().unwrap(), false));
        assert!(!plain_allowed("10.1.2.3".parse().unwrap(), false));
        assert!(plain_allowed("10.1.2.3".parse().unwrap(), true));
    }
}
