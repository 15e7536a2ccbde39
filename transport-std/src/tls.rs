//! TLS 1.3 for the module's side (rustls), with the server verified by a
//! pinned SHA-256 certificate fingerprint or by a CA file.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::ConfigError;

/// How the module authenticates the HSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAuth {
    /// SHA-256 of the server certificate (DER), as the server prints it.
    Pin([u8; 32]),
    /// PEM file of CA certificates; the server's name must match.
    CaFile(String),
}

/// Parse a fingerprint: 64 hex digits, colons allowed, `sha256:` prefix allowed.
pub fn parse_pin(text: &str) -> Result<[u8; 32], ConfigError> {
    let t = text.trim();
    let t = t.strip_prefix("sha256:").unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let bad = || {
        ConfigError(format!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits)"
        ))
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// Format a fingerprint the way `parse_pin` reads it.
pub fn format_pin(pin: &[u8; 32]) -> String {
    pin.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a certificate.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration for `auth` (TLS 1.3 only).
pub fn client_config(auth: &ServerAuth) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConfigError(format!("TLS setup: {e}")))?;
    let config = match auth {
        ServerAuth::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        ServerAuth::CaFile(path) => {
            let pem =
                std::fs::read(path).map_err(|e| ConfigError(format!("CA file {path:?}: {e}")))?;
            let mut roots = RootCertStore::empty();
            let mut found = 0;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.map_err(|e| ConfigError(format!("CA file {path:?}: {e:?}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError(format!("CA file {path:?}: {e}")))?;
                found += 1;
            }
            if found == 0 {
                return Err(ConfigError(format!(
                    "CA file {path:?} holds no certificate"
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Accepts exactly the server certificate whose SHA-256 is pinned, and checks
/// the handshake signatures with it.
#[derive(Debug)]
struct PinnedServer {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            log::error!(
                "HSM certificate fingerprint {} does not match the pinned one",
                format_pin(&fingerprint(end_entity.as_ref()))
            );
            Err(rustls::Error::General(
                "server certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_the_printed_form() {
        let pin = [0xABu8; 32];
        assert_eq!(parse_pin(&format_pin(&pin)).unwrap(), pin);
        assert_eq!(
            parse_pin(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            pin
        );
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
