//! A third-party client: OpenSC's `pkcs11-tool` drives the built module
//! against a real server, and the `openssl` command line checks its output.
//! Needs `apt-get install opensc openssl`; a missing tool fails the test.

use std::process::Command;

use hsmlink_tests::cli::{write, Bench};

#[test]
fn lists_the_library_slot_and_token() {
    let bench = Bench::new("tool-list");
    let info = bench.tool(&["--show-info"]);
    assert!(
        info.contains("Cryptoki version 2.40"),
        "--show-info:\n{info}"
    );
    let slots = bench.tool(&["--list-slots"]);
    assert!(slots.contains("Slot 0 (0x1)"), "slot 1 is listed:\n{slots}");
    assert!(
        slots.contains("token label        : Dinamo HSM\n"),
        "token label:\n{slots}"
    );
    assert!(slots.contains("token initialized"), "token flags:\n{slots}");
    assert_eq!(
        slots.matches("Slot ").count(),
        1,
        "exactly one slot:\n{slots}"
    );
    let mechanisms = bench.tool(&["--list-mechanisms"]);
    for name in [
        "ECDSA-SHA256",
        "SHA256-RSA-PKCS",
        "RSA-PKCS-PSS",
        "AES-GCM",
        "SHA256-HMAC",
        "SHA512,",
    ] {
        assert!(
            mechanisms.contains(name),
            "{name} missing from --list-mechanisms:\n{mechanisms}"
        );
    }
}

#[test]
fn login_with_wrong_pin_fails() {
    let bench = Bench::new("tool-pin");
    let output = bench
        .tool_command(&["--login", "--pin", "wrong", "--list-objects"])
        .output()
        .expect("run pkcs11-tool");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "wrong PIN accepted:\n{text}");
    assert!(
        text.contains("CKR_PIN_INCORRECT"),
        "pkcs11-tool reports CKR_PIN_INCORRECT:\n{text}"
    );
    bench.tool_login(&["--list-objects"]);
}

#[test]
fn ec_p256_key_pair_signs_and_openssl_verifies() {
    let bench = Bench::new("tool-ec");
    let out = bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "01",
        "--label",
        "tool-ec",
    ]);
    assert!(
        out.contains("EC_POINT 256 bits") || out.contains("EC"),
        "keypairgen output:\n{out}"
    );
    let objects = bench.tool_login(&["--list-objects", "--type", "privkey"]);
    assert!(
        objects.contains("tool-ec"),
        "the private key is listed:\n{objects}"
    );

    write(
        &bench.path("data.txt"),
        b"signed by pkcs11-tool through hsmlink\n",
    );
    bench.tool_login(&[
        "--sign",
        "--id",
        "01",
        "--mechanism",
        "ECDSA-SHA256",
        "--signature-format",
        "openssl",
        "--input-file",
        "data.txt",
        "--output-file",
        "ec.sig",
    ]);
    let pem = bench.export_public_key("01", "ec-pub");
    let text = bench.openssl(&["pkey", "-pubin", "-in", &pem, "-noout", "-text"]);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    let verified = bench.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &pem,
        "-signature",
        "ec.sig",
        "data.txt",
    ]);
    assert!(verified.contains("Verified OK"), "{verified}");

    // And a signature over other data does not verify.
    write(&bench.path("other.txt"), b"something else\n");
    let output = Command::new(&bench.openssl)
        .args([
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            "ec.sig",
            "other.txt",
        ])
        .current_dir(bench.dir.path())
        .output()
        .expect("openssl");
    assert!(
        !output.status.success(),
        "OpenSSL verified a signature over the wrong data"
    );

    // pkcs11-tool verifies with the token too.
    let out = bench.tool_login(&[
        "--verify",
        "--id",
        "01",
        "--mechanism",
        "ECDSA-SHA256",
        "--signature-format",
        "openssl",
        "--input-file",
        "data.txt",
        "--signature-file",
        "ec.sig",
    ]);
    assert!(
        out.contains("Signature is valid"),
        "pkcs11-tool --verify:\n{out}"
    );
}

#[test]
fn rsa_2048_key_pair_signs_and_openssl_verifies() {
    let bench = Bench::new("tool-rsa");
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "02",
        "--label",
        "tool-rsa",
    ]);
    write(
        &bench.path("data.txt"),
        b"RSA-signed by pkcs11-tool through hsmlink\n",
    );
    let pem = bench.export_public_key("02", "rsa-pub");
    let text = bench.openssl(&["pkey", "-pubin", "-in", &pem, "-noout", "-text"]);
    assert!(text.contains("2048 bit"), "{text}");

    for (mechanism, md) in [
        ("SHA256-RSA-PKCS", "-sha256"),
        ("SHA384-RSA-PKCS", "-sha384"),
        ("SHA512-RSA-PKCS", "-sha512"),
    ] {
        let sig = format!("{mechanism}.sig");
        bench.tool_login(&[
            "--sign",
            "--id",
            "02",
            "--mechanism",
            mechanism,
            "--input-file",
            "data.txt",
            "--output-file",
            &sig,
        ]);
        let verified =
            bench.openssl(&["dgst", md, "-verify", &pem, "-signature", &sig, "data.txt"]);
        assert!(verified.contains("Verified OK"), "{mechanism}: {verified}");
    }

    // PSS, salt = hash length (pkcs11-tool's default).
    bench.tool_login(&[
        "--sign",
        "--id",
        "02",
        "--mechanism",
        "SHA256-RSA-PKCS-PSS",
        "--input-file",
        "data.txt",
        "--output-file",
        "pss.sig",
    ]);
    let verified = bench.openssl(&[
        "dgst",
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-verify",
        &pem,
        "-signature",
        "pss.sig",
        "data.txt",
    ]);
    assert!(
        verified.contains("Verified OK"),
        "SHA256-RSA-PKCS-PSS: {verified}"
    );

    // Encrypt with OpenSSL to the public key, decrypt on the token.
    write(&bench.path("secret.txt"), b"for the token's eyes only");
    bench.openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &pem,
        "-in",
        "secret.txt",
        "-out",
        "secret.enc",
    ]);
    bench.tool_login(&[
        "--decrypt",
        "--id",
        "02",
        "--mechanism",
        "RSA-PKCS",
        "--input-file",
        "secret.enc",
        "--output-file",
        "secret.dec",
    ]);
    let decrypted = std::fs::read(bench.path("secret.dec")).expect("decrypted file");
    assert_eq!(decrypted, b"for the token's eyes only");
}

#[test]
fn aes_key_encrypts_like_openssl_and_hash_matches() {
    let bench = Bench::new("tool-aes");
    bench.tool_login(&[
        "--keygen",
        "--key-type",
        "AES:32",
        "--id",
        "03",
        "--label",
        "tool-aes",
        "--extractable",
    ]);
    let data: Vec<u8> = (0..100u8).collect();
    write(&bench.path("data.bin"), &data);
    let iv = "000102030405060708090a0b0c0d0e0f";
    bench.tool_login(&[
        "--encrypt",
        "--id",
        "03",
        "--mechanism",
        "AES-CBC-PAD",
        "--iv",
        iv,
        "--input-file",
        "data.bin",
        "--output-file",
        "data.enc",
    ]);
    bench.tool_login(&[
        "--read-object",
        "--type",
        "secrkey",
        "--id",
        "03",
        "--output-file",
        "key.bin",
    ]);
    let key = std::fs::read(bench.path("key.bin")).expect("key");
    assert_eq!(key.len(), 32, "an extractable AES-256 key exports 32 bytes");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    bench.openssl(&[
        "enc",
        "-d",
        "-aes-256-cbc",
        "-K",
        &hex,
        "-iv",
        iv,
        "-in",
        "data.enc",
        "-out",
        "data.dec",
    ]);
    assert_eq!(
        std::fs::read(bench.path("data.dec")).expect("dec"),
        data,
        "OpenSSL decrypts the token's ciphertext"
    );

    bench.tool(&[
        "--hash",
        "--mechanism",
        "SHA256",
        "--input-file",
        "data.bin",
        "--output-file",
        "data.sha256",
    ]);
    let ours = std::fs::read(bench.path("data.sha256")).expect("hash");
    let theirs =
        openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &data).expect("sha256");
    assert_eq!(ours, theirs.to_vec());
}

#[test]
fn pkcs11_tool_self_test_passes_and_exercises_signatures() {
    let bench = Bench::new("tool-test");
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "04",
        "--label",
        "self-test-rsa",
    ]);
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--id",
        "05",
        "--label",
        "self-test-ec",
    ]);
    let out = bench.tool_login(&["--test"]);
    assert!(out.contains("No errors"), "pkcs11-tool --test:\n{out}");
    // pkcs11-tool only tests signing with mechanisms flagged CKF_HW (done
    // by the device); a network HSM performs signatures on the device.
    assert!(
        !out.contains("Signatures: not implemented"),
        "pkcs11-tool --test skipped the signature tests (no mechanism has CKF_SIGN|CKF_HW):\n{out}"
    );
}
