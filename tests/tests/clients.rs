//! More third-party clients: OpenSSL through the libp11 engine
//! (`apt-get install libengine-pkcs11-openssl`) and Java's SunPKCS11
//! provider (`apt-get install openjdk-17-jdk-headless`). A missing client
//! fails the test with the package to install.

use std::path::Path;
use std::process::Command;

use hsmlink_tests::cli::{run_checked, write, Bench, PIN};
use hsmlink_tests::{require_tool, workspace_root};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509NameBuilder, X509};

const ENGINE_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/engines-3/pkcs11.so",
];

fn require_engine() {
    assert!(
        ENGINE_PATHS.iter().any(|p| Path::new(p).is_file()),
        "the libp11 OpenSSL engine is not installed: install it with \
         `apt-get install libengine-pkcs11-openssl`"
    );
}

fn uri(id: &str, kind: &str) -> String {
    format!("pkcs11:token=Dinamo%20HSM;id=%{id};type={kind};pin-value={PIN}")
}

#[test]
fn openssl_engine_signs_with_token_keys() {
    require_engine();
    let bench = Bench::new("engine");
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "01",
        "--label",
        "engine-ec",
    ]);
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "02",
        "--label",
        "engine-rsa",
    ]);
    write(
        &bench.path("data.txt"),
        b"signed by OpenSSL with a key in the HSM\n",
    );

    for (id, name) in [("01", "ec"), ("02", "rsa")] {
        // The public key, through the engine.
        let pem = format!("{name}-pub.pem");
        bench.openssl(&[
            "pkey",
            "-engine",
            "pkcs11",
            "-inform",
            "engine",
            "-pubin",
            "-in",
            &uri(id, "public"),
            "-pubout",
            "-out",
            &pem,
        ]);
        // A signature made by the token, verified by plain OpenSSL.
        let sig = format!("{name}.sig");
        bench.openssl(&[
            "dgst",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-sha256",
            "-sign",
            &uri(id, "private"),
            "-out",
            &sig,
            "data.txt",
        ]);
        let verified = bench.openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            &sig,
            "data.txt",
        ]);
        assert!(verified.contains("Verified OK"), "{name}: {verified}");
    }

    // A self-signed certificate whose key never leaves the HSM.
    bench.openssl(&[
        "req",
        "-engine",
        "pkcs11",
        "-keyform",
        "engine",
        "-key",
        &uri("01", "private"),
        "-new",
        "-x509",
        "-subj",
        "/CN=hsmlink engine test",
        "-days",
        "1",
        "-sha256",
        "-out",
        "cert.pem",
    ]);
    let verified = bench.openssl(&["verify", "-CAfile", "cert.pem", "cert.pem"]);
    assert!(verified.contains("cert.pem: OK"), "{verified}");
}

/// A certificate for the token's public key `pub_der` (DER SPKI), issued by
/// a throwaway CA: SunPKCS11 lists a private key once a certificate with
/// the same CKA_ID is on the token.
fn certificate_for(pub_der: &[u8], cn: &str) -> Vec<u8> {
    let subject_key = PKey::public_key_from_der(pub_der).expect("token public key");
    let ca_key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group"))
            .expect("key"),
    )
    .expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut issuer = X509NameBuilder::new().expect("name");
    issuer
        .append_entry_by_text("CN", "hsmlink test CA")
        .expect("cn");
    let issuer = issuer.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("version");
    builder
        .set_serial_number(
            &BigNum::from_u32(7)
                .expect("bn")
                .to_asn1_integer()
                .expect("serial"),
        )
        .expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder.set_issuer_name(&issuer).expect("issuer");
    builder.set_pubkey(&subject_key).expect("pubkey");
    builder
        .set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    builder
        .set_not_after(&Asn1Time::days_from_now(2).expect("t"))
        .expect("na");
    builder
        .sign(&ca_key, MessageDigest::sha256())
        .expect("sign");
    builder.build().to_der().expect("der")
}

#[test]
fn java_sunpkcs11_signs_with_token_keys() {
    let java = require_tool("java", "openjdk-17-jdk-headless");
    let keytool = require_tool("keytool", "openjdk-17-jdk-headless");
    let bench = Bench::new("java");
    let config = bench.path("hsmlink-java.cfg");
    write(
        &config,
        format!(
            "name = hsmlink\nlibrary = {}\nslot = 1\n",
            bench.module.display()
        )
        .as_bytes(),
    );
    for (id, label, key_type) in [
        ("01", "java-ec", "EC:prime256v1"),
        ("02", "java-rsa", "rsa:2048"),
    ] {
        bench.tool_login(&[
            "--keypairgen",
            "--key-type",
            key_type,
            "--id",
            id,
            "--label",
            label,
        ]);
        let der = format!("{label}.der");
        bench.tool_login(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "--output-file",
            &der,
        ]);
        let cert = certificate_for(&std::fs::read(bench.path(&der)).expect("public key"), label);
        let cert_file = format!("{label}.crt");
        write(&bench.path(&cert_file), &cert);
        bench.tool_login(&[
            "--write-object",
            &cert_file,
            "--type",
            "cert",
            "--id",
            id,
            "--label",
            label,
        ]);
    }

    let listing = run_checked(
        "keytool",
        bench
            .configured(Command::new(&keytool))
            .args([
                "-list",
                "-keystore",
                "NONE",
                "-storetype",
                "PKCS11",
                "-addprovider",
                "SunPKCS11",
            ])
            .arg("-providerArg")
            .arg(&config)
            .args(["-storepass", PIN]),
        &bench.hsm,
    );
    assert!(
        listing.contains("java-ec, PrivateKeyEntry"),
        "keytool -list:\n{listing}"
    );
    assert!(
        listing.contains("java-rsa, PrivateKeyEntry"),
        "keytool -list:\n{listing}"
    );

    let program = workspace_root().join("tests/clients/HsmlinkSign.java");
    for (alias, algorithm) in [
        ("java-ec", "SHA256withECDSA"),
        ("java-ec", "SHA384withECDSA"),
        ("java-rsa", "SHA256withRSA"),
        ("java-rsa", "SHA512withRSA"),
    ] {
        let out = run_checked(
            "java",
            bench
                .configured(Command::new(&java))
                .arg(&program)
                .arg(&config)
                .args([PIN, alias, algorithm]),
            &bench.hsm,
        );
        assert!(
            out.contains(&format!("{algorithm} signature verified by the JDK: true")),
            "{alias} {algorithm}:\n{out}"
        );
    }
}
