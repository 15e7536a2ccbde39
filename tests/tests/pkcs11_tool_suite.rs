//! OpenSC's own test-suite, `pkcs11-tool --test` (and `--test-ec`), run
//! against the module with RSA, EC, Edwards, AES and generic secret keys
//! on the token, as the done-when check asks: it must report no
//! errors. Needs `apt-get install opensc openssl`.

use hsmlink_tests::cli::{write, Bench};

/// Generates the keys `pkcs11-tool --test` walks over.
fn keys(bench: &Bench) {
    for (kind, id, label) in [
        ("rsa:2048", "01", "suite-rsa"),
        ("EC:prime256v1", "02", "suite-p256"),
        ("EC:secp384r1", "03", "suite-p384"),
        ("EC:secp256k1", "04", "suite-k1"),
        ("EC:edwards25519", "05", "suite-ed25519"),
    ] {
        bench.tool_login(&[
            "--keypairgen",
            "--key-type",
            kind,
            "--id",
            id,
            "--label",
            label,
        ]);
    }
    for (kind, id, label) in [
        ("AES:32", "06", "suite-aes"),
        ("AES:16", "07", "suite-aes128"),
        ("GENERIC:32", "08", "suite-generic"),
    ] {
        bench.tool_login(&["--keygen", "--key-type", kind, "--id", id, "--label", label]);
    }
}

#[test]
fn pkcs11_tool_test_reports_no_errors() {
    let bench = Bench::new("tool-suite");
    keys(&bench);
    let out = bench.tool_login(&["--test"]);
    assert!(
        out.contains("No errors"),
        "pkcs11-tool --test reported errors:\n{out}"
    );
    assert!(
        !out.contains("ERR") && !out.contains("failed"),
        "pkcs11-tool --test output has failures:\n{out}"
    );
    // The RSA key was really exercised, not skipped.
    for line in [
        "all 4 digest functions seem to work",
        "all 4 signature functions seem to work",
        "SHA256-RSA-PKCS: OK",
        "RSA-X-509: OK",
        "testing key 0 (suite-rsa)",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
}

#[test]
fn pkcs11_tool_test_ec_passes() {
    let bench = Bench::new("tool-suite-ec");
    for (curve, id) in [("EC:prime256v1", "21"), ("EC:secp521r1", "22")] {
        let out = bench.tool_login(&["--test-ec", "--id", id, "--key-type", curve]);
        assert!(out.contains("==> OK"), "--test-ec {curve}:\n{out}");
    }
}

#[test]
fn ed25519_signature_from_pkcs11_tool_verifies_with_openssl() {
    let bench = Bench::new("tool-ed25519");
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--id",
        "31",
        "--label",
        "tool-ed",
    ]);
    write(&bench.path("msg"), b"signed by an Ed25519 key in the HSM");
    bench.tool_login(&[
        "--sign",
        "--id",
        "31",
        "-m",
        "EDDSA",
        "--input-file",
        "msg",
        "--output-file",
        "msg.sig",
    ]);
    let sig = std::fs::read(bench.path("msg.sig")).expect("signature file");
    assert_eq!(sig.len(), 64, "an Ed25519 signature is 64 bytes");
    bench.tool_login(&[
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "31",
        "--output-file",
        "ed.pub",
    ]);
    bench.openssl(&["pkey", "-pubin", "-in", "ed.pub", "-out", "ed.pem"]);
    let out = bench.openssl(&[
        "pkeyutl", "-verify", "-pubin", "-inkey", "ed.pem", "-rawin", "-in", "msg", "-sigfile",
        "msg.sig",
    ]);
    assert!(out.contains("Signature Verified Successfully"), "{out}");
}
