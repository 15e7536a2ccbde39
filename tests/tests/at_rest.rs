//! Encryption at rest, as an attacker with the data folder would check it:
//! no key value, data value, password or passphrase anywhere in the folder
//! (nor in its backup), no clear TLS private key; a wrong passphrase or key
//! file is refused; the keys still work after a restart; backup, restore
//! and a passphrase change keep everything.

mod hsm_service;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hsm_service::*;
use hsmlink_tests::{token, Hsm, TempDir};
use openssl::symm::{encrypt, Cipher};

const AES_VALUE: [u8; 32] = *b"AT-REST-aes-256-key-value-32byte";
const DATA_VALUE: &[u8] = b"DATA-OBJECT-SECRET-VALUE-0123456789";
const PASSWORD: &str = "alice-at-rest-password";
/// The start of a PKCS#8 P-256 private key (version 0, ecPublicKey OID):
/// what a clear TLS private key would look like on disk.
const PKCS8_EC: [u8; 14] = [
    0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
];

fn assert_no_secret(dir: &std::path::Path, secrets: &[(&str, &[u8])]) {
    let files = all_files(dir);
    assert!(!files.is_empty(), "nothing in {}", dir.display());
    for (path, bytes) in &files {
        for (what, s) in secrets {
            assert!(!contains(bytes, s), "{what} in clear in {}", path.display());
        }
        assert!(
            !contains(bytes, &PKCS8_EC),
            "a clear private key in {}",
            path.display()
        );
        assert!(
            !path.ends_with("key.der"),
            "a clear TLS key file: {}",
            path.display()
        );
    }
}

fn aes_ecb(block: &[u8]) -> Vec<u8> {
    let mut c = encrypt(Cipher::aes_256_ecb(), &AES_VALUE, None, block).expect("openssl");
    c.truncate(block.len());
    c
}

#[test]
fn at_rest_nothing_secret_in_the_data_folder_and_wrong_passphrase_refused() {
    let t = token();
    let data = TempDir::new("at-rest");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "alice", PASSWORD);
    let mut hsm = serve(data.path(), &secrets, &[]);

    let s = login_at(&t, hsm.addr(), "alice", PASSWORD);
    let aes = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Value(AES_VALUE.to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(b"rest-aes".to_vec()),
        ])
        .expect("import an AES key");
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(b"rest-data".to_vec()),
        Attribute::Value(DATA_VALUE.to_vec()),
    ])
    .expect("data object");
    let (_, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Extractable(true),
                Attribute::Label(b"rest-ec".to_vec()),
            ],
        )
        .expect("extractable EC pair");
    let ec_value = match s.get_attributes(ec, &[AttributeType::Value]).expect("read")[0].clone() {
        Attribute::Value(v) => v,
        other => panic!("{other:?}"),
    };
    let (_, rsa) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::Token(true), Attribute::ModulusBits(1024.into())],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Extractable(true),
            ],
        )
        .expect("extractable RSA pair");
    let rsa_d = match s
        .get_attributes(rsa, &[AttributeType::PrivateExponent])
        .expect("read")[0]
        .clone()
    {
        Attribute::PrivateExponent(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, aes, &[1u8; 16])
            .expect("encrypt"),
        aes_ecb(&[1u8; 16])
    );
    drop(s);
    let log = hsm.stderr();
    hsm.kill();

    let needles: Vec<(&str, &[u8])> = vec![
        ("the AES key", &AES_VALUE),
        ("the data value", DATA_VALUE),
        ("the EC private value", &ec_value),
        ("the RSA private exponent", &rsa_d[..rsa_d.len().min(32)]),
        ("the password", PASSWORD.as_bytes()),
        ("the passphrase", PASSPHRASE.as_bytes()),
    ];
    assert_no_secret(data.path(), &needles);
    for (what, s) in &needles {
        assert!(!contains(log.as_bytes(), s), "{what} in the server log");
    }
    assert!(data.path().join("tls/key.sealed").is_file());

    // A wrong passphrase, or none, is refused with a clear message.
    let wrong = path_str(&secrets.wrong_file()).to_string();
    let err = cli_err(
        &[
            "serve",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--passphrase-file",
            &wrong,
        ],
        &[],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = cli_err(&["serve", "--data", d, "--listen", "127.0.0.1:0"], &[]);
    assert!(err.contains("--passphrase-env"), "{err}");
    let err = cli_err(
        &[
            "serve",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--passphrase-env",
            "NOPE_UNSET",
        ],
        &[],
    );
    assert!(err.contains("NOPE_UNSET is not set"), "{err}");
    // The passphrase from an environment variable works as well as a file,
    // and the keys work after the restart.
    std::env::set_var("HSMLINK_TEST_PASSPHRASE", PASSPHRASE);
    let hsm = Hsm::start(&[
        "serve",
        "--data",
        d,
        "--listen",
        "127.0.0.1:0",
        "--passphrase-env",
        "HSMLINK_TEST_PASSPHRASE",
    ]);
    std::env::remove_var("HSMLINK_TEST_PASSPHRASE");
    let s = login_at(&t, hsm.addr(), "alice", PASSWORD);
    let aes = s
        .find_objects(&[Attribute::Label(b"rest-aes".to_vec())])
        .expect("find")[0];
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, aes, &[2u8; 16])
            .expect("encrypt after restart"),
        aes_ecb(&[2u8; 16])
    );
    let data_obj = s
        .find_objects(&[Attribute::Label(b"rest-data".to_vec())])
        .expect("find")[0];
    assert_eq!(
        s.get_attributes(data_obj, &[AttributeType::Value])
            .expect("read")[0],
        Attribute::Value(DATA_VALUE.to_vec())
    );
    drop(s);

    // A backup of the running server: as sealed as the folder, and
    // restorable into a new folder that serves the same keys.
    let backups = TempDir::new("at-rest-backup");
    let bk = backups.path().join("b1");
    let out = cli_ok(&["backup", "--data", d, path_str(&bk)], &[]);
    assert!(
        out.contains("1 users") && out.contains("6 token objects"),
        "{out}"
    );
    assert_no_secret(&bk, &needles);
    let err = cli_err(&["backup", "--data", d, path_str(&bk)], &[]);
    assert!(err.contains("not empty"), "{err}");
    let restored = backups.path().join("restored");
    let out = cli_ok(
        &["restore", "--data", path_str(&restored), path_str(&bk)],
        &[],
    );
    assert!(out.contains("restored"), "{out}");
    let err = cli_err(&["restore", "--data", d, path_str(&bk)], &[]);
    assert!(err.contains("running") || err.contains("in use"), "{err}");
    drop(hsm);
    let hsm = serve(&restored, &secrets, &[]);
    let s = login_at(&t, hsm.addr(), "alice", PASSWORD);
    let aes = s
        .find_objects(&[Attribute::Label(b"rest-aes".to_vec())])
        .expect("find")[0];
    assert_eq!(
        s.encrypt(&Mechanism::AesEcb, aes, &[3u8; 16])
            .expect("encrypt, restored"),
        aes_ecb(&[3u8; 16])
    );
    drop(s);
    drop(hsm);

    // A new passphrase (server stopped): the old one no longer opens it.
    let out = cli_ok(
        &[
            "keyring",
            "change",
            "--data",
            d,
            "--passphrase-env",
            "OLDP",
            "--new-passphrase-env",
            "NEWP",
        ],
        &[
            ("OLDP", PASSPHRASE),
            ("NEWP", "the new operator passphrase"),
        ],
    );
    assert!(out.contains("passphrase"), "{out}");
    let err = cli_err(
        &[
            "serve",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--passphrase-file",
            path_str(&secrets.passphrase_file()),
        ],
        &[],
    );
    assert!(err.contains("wrong passphrase"), "{err}");
    t.reinitialize(&[]).expect("back to the defaults");
}

#[test]
fn at_rest_key_file_protection() {
    let t = token();
    let data = TempDir::new("at-rest-kf");
    let keys = TempDir::new("at-rest-keys");
    let d = path_str(data.path());
    let kf = keys.path().join("master.key");
    std::fs::write(&kf, [0x5au8; 32]).expect("key file");
    let other = keys.path().join("other.key");
    std::fs::write(&other, [0xa5u8; 32]).expect("key file");
    let short = keys.path().join("short.key");
    std::fs::write(&short, [1u8; 8]).expect("key file");
    add_user(&["--data", d], "alice", PASSWORD);
    let err = cli_err(
        &[
            "serve",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            path_str(&short),
        ],
        &[],
    );
    assert!(err.contains("at least 32"), "{err}");
    let hsm = Hsm::start(&[
        "serve",
        "--data",
        d,
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        path_str(&kf),
    ]);
    let s = login_at(&t, hsm.addr(), "alice", PASSWORD);
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Value(DATA_VALUE.to_vec()),
    ])
    .expect("data object");
    drop(s);
    drop(hsm);
    assert_no_secret(data.path(), &[("the data value", DATA_VALUE)]);
    let err = cli_err(
        &[
            "serve",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            path_str(&other),
        ],
        &[],
    );
    assert!(err.contains("wrong key file"), "{err}");
    let err = cli_err(&["serve", "--data", d, "--listen", "127.0.0.1:0"], &[]);
    assert!(err.contains("--key-file"), "{err}");
    let show = cli_ok(&["keyring", "show", "--data", d], &[]);
    assert!(show.contains("key file"), "{show}");
    t.reinitialize(&[]).expect("back to the defaults");
}
