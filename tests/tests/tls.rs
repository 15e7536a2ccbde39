//! TLS between module and server: the server makes its certificate on first
//! start; the module accepts it by pinned SHA-256 fingerprint or through a CA
//! file, refuses a wrong one, and with TLS on no password, PIN or key byte
//! crosses the wire in clear (checked by recording every byte through a
//! relay, and shown to be found in clear with TLS off).

use std::process::Command;
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsmlink_tests::{hsm_binary, module_path, relay, slot_one, Hsm, TempDir};

const USER: &str = "tls-user";
const PIN: &str = "a-pin-that-must-not-leak";
/// A recognisable AES key imported through the module.
const KEY: [u8; 32] = *b"KEYBYTES-that-must-not-leak-1234";

fn hsm_cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(hsm_binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run hsmlink-hsm");
    assert!(
        out.status.success(),
        "hsmlink-hsm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A relay that records every byte in both directions.
fn recording_relay(upstream: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let record = seen.clone();
    let addr = relay(
        upstream,
        |_| {},
        move |_, bytes| {
            record.lock().unwrap().extend_from_slice(bytes);
            true
        },
    );
    (addr, seen)
}

/// Initialize the module with `env`, log in, import a key and use it.
fn session_work(env: &[(&str, &str)]) -> Result<(), Error> {
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let result = (|| {
        let s = p.open_rw_session(slot_one())?;
        s.login(UserType::User, Some(&AuthPin::new(PIN.into())))?;
        let key = s.create_object(&[
            Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(KEY.to_vec()),
            Attribute::Encrypt(true),
        ])?;
        let ct = s.encrypt(&Mechanism::AesEcb, key, &[0u8; 16])?;
        assert_eq!(ct.len(), 16);
        Ok(())
    })();
    p.finalize()?;
    for (k, _) in env {
        std::env::remove_var(k);
    }
    result
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tls_pinning_ca_file_and_no_secret_in_clear_on_the_wire() {
    let dir = TempDir::new("tls");
    let data = dir.path().to_str().expect("utf-8 path");
    hsm_cli(
        &["user", "add", "--data", data, "--password-env", "PW", USER],
        &[("PW", PIN)],
    );
    let pin = hsm_cli(&["fingerprint", "--data", data], &[])
        .trim()
        .to_string();
    assert_eq!(pin.len(), 95, "fingerprint as printed: {pin:?}");
    let pem = hsm_cli(&["fingerprint", "--data", data, "--pem"], &[]);
    let ca = dir.path().join("hsm-ca.pem");
    std::fs::write(&ca, pem).expect("write CA file");
    let hsm = Hsm::start_serve(dir.path());
    let port = hsm.port();
    let (relay, seen) = recording_relay(hsm.addr().to_string());

    // Pinned fingerprint: works, and nothing secret is readable on the wire.
    session_work(&[
        ("HSMLINK_ADDR", &relay),
        ("HSMLINK_USER", USER),
        ("HSMLINK_TLS", "on"),
        ("HSMLINK_TLS_PIN", &pin),
    ])
    .expect("TLS with the pinned fingerprint");
    {
        let wire = seen.lock().unwrap();
        assert!(!wire.is_empty(), "the relay saw the traffic");
        assert!(!contains(&wire, PIN.as_bytes()), "PIN in clear under TLS");
        assert!(!contains(&wire, &KEY), "key bytes in clear under TLS");
        assert!(
            !contains(&wire, USER.as_bytes()),
            "user name in clear under TLS"
        );
    }

    // A wrong fingerprint: the connection is refused, the login fails.
    let wrong = pin.replace(&pin[..2], if &pin[..2] == "00" { "11" } else { "00" });
    let r = session_work(&[
        ("HSMLINK_ADDR", hsm.addr()),
        ("HSMLINK_USER", USER),
        ("HSMLINK_TLS", "on"),
        ("HSMLINK_TLS_PIN", &wrong),
    ]);
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::DeviceError, _))),
        "a server with another certificate must be refused: {r:?}"
    );

    // The server's certificate as a CA file, the server reached by name.
    session_work(&[
        ("HSMLINK_ADDR", &format!("localhost:{port}")),
        ("HSMLINK_USER", USER),
        ("HSMLINK_TLS_CA", ca.to_str().unwrap()),
    ])
    .expect("TLS through a CA file (auto mode turns TLS on when a CA is given)");

    // A CA file that did not sign the server's certificate: refused.
    let other = TempDir::new("tls-other");
    let other_pem = hsm_cli(
        &[
            "fingerprint",
            "--data",
            other.path().to_str().unwrap(),
            "--pem",
        ],
        &[],
    );
    let other_ca = other.path().join("ca.pem");
    std::fs::write(&other_ca, other_pem).unwrap();
    let r = session_work(&[
        ("HSMLINK_ADDR", &format!("localhost:{port}")),
        ("HSMLINK_USER", USER),
        ("HSMLINK_TLS_CA", other_ca.to_str().unwrap()),
    ]);
    assert!(
        matches!(r, Err(Error::Pkcs11(RvError::DeviceError, _))),
        "a CA that did not sign the server must be refused: {r:?}"
    );

    // The same traffic in plain TCP (loopback, asked for): the recording
    // does show the secrets, so the check above can fail.
    seen.lock().unwrap().clear();
    session_work(&[
        ("HSMLINK_ADDR", &relay),
        ("HSMLINK_USER", USER),
        ("HSMLINK_TLS", "off"),
    ])
    .expect("plain TCP on loopback");
    let wire = seen.lock().unwrap();
    assert!(
        contains(&wire, PIN.as_bytes()),
        "plain TCP carries the PIN in clear"
    );
    assert!(contains(&wire, &KEY));
}
