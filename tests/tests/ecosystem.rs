//! The module in the tools people already use, as the client guides in
//! `docs/clients/` show them: p11-kit's registration (`p11-kit
//! list-modules`, GnuTLS's p11tool, the libp11 OpenSSL engine through
//! p11-kit-proxy), PKCS#11 URIs (RFC 7512) naming keys by label, NSS
//! (modutil, certutil) and Java's jarsigner.
//!
//! p11-kit reads a user's registrations from `~/.config/pkcs11/modules/`,
//! but never for root: run as root, these tests run the p11-kit clients as
//! `nobody` (with `setpriv`), with `HOME` in a scratch folder that holds the
//! registration and a copy of the module. The system-wide registration
//! (`/usr/share/p11-kit/modules/hsmlink.module`) is checked by
//! `cargo xtask package --install-test`.
//!
//! Tools: `apt-get install p11-kit gnutls-bin libnss3-tools
//! libengine-pkcs11-openssl openjdk-17-jdk-headless` (`.ci/run` installs
//! them); a missing one fails the test with the package to install.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hsmlink_tests::cli::{run_checked, write, Bench, PIN};
use hsmlink_tests::require_tool;

/// The URI of the token, as the guides write it.
const TOKEN_URI: &str = "pkcs11:token=Dinamo%20HSM";

fn key_uri(label: &str, kind: &str) -> String {
    format!("{TOKEN_URI};object={label};type={kind}")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A p11-kit user registration of the built module, in a home folder that
/// `nobody` can read: `HOME/.config/pkcs11/modules/hsmlink.module`.
struct P11KitHome {
    home: PathBuf,
    /// Where the p11-kit clients may write (mode 0777).
    out: PathBuf,
}

impl P11KitHome {
    fn new(bench: &Bench) -> P11KitHome {
        let home = bench.path("home");
        let modules = home.join(".config/pkcs11/modules");
        fs::create_dir_all(&modules).expect("create the p11-kit config folder");
        // A copy that nobody can load, whatever the permissions of the
        // workspace's folders.
        let module = home.join("libhsmlink_pkcs11.so");
        fs::copy(&bench.module, &module).expect("copy the module");
        write(
            &modules.join("hsmlink.module"),
            format!("module: {}\ntrust-policy: no\n", module.display()).as_bytes(),
        );
        let out = bench.path("out");
        fs::create_dir_all(&out).expect("create the output folder");
        for dir in [
            bench.dir.path(),
            home.as_path(),
            &home.join(".config"),
            &home.join(".config/pkcs11"),
            &modules,
        ] {
            chmod(dir, 0o755);
        }
        chmod(&out, 0o777);
        chmod(&module, 0o755);
        P11KitHome { home, out }
    }

    /// `program` run as a user p11-kit reads a user configuration for (as
    /// `nobody` when this process is root), with `HOME` set to the home with
    /// the registration, the module configured for the bench's server, no
    /// `PKCS11_MODULE_PATH`, in the output folder.
    fn command(&self, bench: &Bench, program: &Path) -> Command {
        let mut command = if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(program);
            c
        } else {
            Command::new(program)
        };
        command = bench.configured(command);
        command
            .env("HOME", &self.home)
            .env_remove("PKCS11_MODULE_PATH")
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(&self.out);
        command
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// An EC P-256 key pair with `label` on the bench's token.
fn ec_key(bench: &Bench, label: &str) {
    bench.tool_login(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "42",
        "--label",
        label,
    ]);
}

#[test]
fn p11_kit_lists_the_token_of_a_registered_module() {
    let p11_kit = require_tool("p11-kit", "p11-kit");
    let bench = Bench::new("p11kit");
    let home = P11KitHome::new(&bench);
    let out = run_checked(
        "p11-kit",
        home.command(&bench, &p11_kit).arg("list-modules"),
        &bench.hsm,
    );
    let ours: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("hsmlink:"))
        .take_while(|l| l.starts_with("hsmlink:") || l.starts_with(' '))
        .collect();
    let ours = ours.join("\n");
    assert!(
        ours.contains("token: Dinamo HSM") && ours.contains("library-manufacturer: hsmlink"),
        "p11-kit list-modules does not show the module and its token:\n{out}"
    );
}

#[test]
fn p11tool_finds_keys_by_uri_after_login() {
    let p11tool = require_tool("p11tool", "gnutls-bin");
    let bench = Bench::new("p11tool");
    ec_key(&bench, "uri-ec");
    let home = P11KitHome::new(&bench);

    // Through p11-kit's registration: the token by URI.
    let tokens = run_checked(
        "p11tool",
        home.command(&bench, &p11tool).arg("--list-tokens"),
        &bench.hsm,
    );
    assert!(
        tokens.contains("token=Dinamo%20HSM"),
        "p11tool --list-tokens:\n{tokens}"
    );
    // Every object is private: nothing is listed before a login.
    let anonymous = home
        .command(&bench, &p11tool)
        .args(["--list-all", TOKEN_URI])
        .output()
        .expect("run p11tool");
    let anonymous = String::from_utf8_lossy(&anonymous.stdout).into_owned()
        + &String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        !anonymous.contains("uri-ec"),
        "p11tool listed a private object without login:\n{anonymous}"
    );
    let listed = run_checked(
        "p11tool",
        home.command(&bench, &p11tool)
            .args(["--login", "--set-pin", PIN, "--list-all", TOKEN_URI]),
        &bench.hsm,
    );
    assert!(
        listed.contains("token=Dinamo%20HSM;id=%42;object=uri-ec;type=private"),
        "p11tool --login --list-all:\n{listed}"
    );

    // The module named directly, the key by URI: a signature checked by
    // GnuTLS against the token's public key.
    let signed = run_checked(
        "p11tool",
        bench
            .configured(Command::new(&p11tool))
            .arg("--provider")
            .arg(&bench.module)
            .args([
                "--login",
                "--set-pin",
                PIN,
                "--test-sign",
                &key_uri("uri-ec", "private"),
            ]),
        &bench.hsm,
    );
    assert!(
        signed.contains("Verifying against public key in the token... ok"),
        "p11tool --test-sign:\n{signed}"
    );
}

#[test]
fn openssl_engine_signs_with_a_key_named_by_label() {
    assert!(
        Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so").is_file()
            || Path::new("/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so").is_file(),
        "the libp11 OpenSSL engine is not installed: install it with \
         `apt-get install libengine-pkcs11-openssl`"
    );
    let bench = Bench::new("uri-engine");
    ec_key(&bench, "engine-label");
    write(
        &bench.path("data.txt"),
        b"signed by a key named by its label\n",
    );
    let with_pin = |uri: String| format!("{uri};pin-value={PIN}");

    // The module given by PKCS11_MODULE_PATH.
    bench.openssl(&[
        "pkey",
        "-engine",
        "pkcs11",
        "-inform",
        "engine",
        "-pubin",
        "-in",
        &with_pin(key_uri("engine-label", "public")),
        "-pubout",
        "-out",
        "pub.pem",
    ]);
    bench.openssl(&[
        "dgst",
        "-engine",
        "pkcs11",
        "-keyform",
        "engine",
        "-sha256",
        "-sign",
        &with_pin(key_uri("engine-label", "private")),
        "-out",
        "data.sig",
        "data.txt",
    ]);
    let verified = bench.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "data.sig",
        "data.txt",
    ]);
    assert!(verified.contains("Verified OK"), "{verified}");

    // No module path: the engine loads p11-kit-proxy.so, which finds the
    // module through its p11-kit registration.
    let home = P11KitHome::new(&bench);
    fs::copy(bench.path("data.txt"), home.out.join("data.txt")).expect("copy data");
    chmod(&home.out.join("data.txt"), 0o644);
    run_checked(
        "openssl",
        home.command(&bench, &bench.openssl).args([
            "dgst",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-sha256",
            "-sign",
            &with_pin(key_uri("engine-label", "private")),
            "-out",
            "proxy.sig",
            "data.txt",
        ]),
        &bench.hsm,
    );
    let verified = bench.openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "out/proxy.sig",
        "data.txt",
    ]);
    assert!(
        verified.contains("Verified OK"),
        "through p11-kit: {verified}"
    );
}

/// A self-signed certificate for the token's key `label`, made by the
/// engine, written back to the token under the same id and label.
fn certificate_on_token(bench: &Bench, label: &str) {
    bench.openssl(&[
        "req",
        "-engine",
        "pkcs11",
        "-keyform",
        "engine",
        "-key",
        &format!("{};pin-value={PIN}", key_uri(label, "private")),
        "-new",
        "-x509",
        "-subj",
        &format!("/CN={label}"),
        "-days",
        "2",
        "-outform",
        "DER",
        "-out",
        "cert.der",
    ]);
    bench.tool_login(&[
        "--write-object",
        "cert.der",
        "--type",
        "cert",
        "--id",
        "42",
        "--label",
        label,
    ]);
}

#[test]
fn nss_modutil_adds_the_module_and_certutil_lists_the_token() {
    let modutil = require_tool("modutil", "libnss3-tools");
    let certutil = require_tool("certutil", "libnss3-tools");
    let bench = Bench::new("nss");
    ec_key(&bench, "nss-ec");
    certificate_on_token(&bench, "nss-ec");
    let db = format!("sql:{}", bench.path("nssdb").display());
    fs::create_dir_all(bench.path("nssdb")).expect("nssdb");
    run_checked(
        "certutil",
        bench
            .configured(Command::new(&certutil))
            .args(["-N", "-d", &db, "--empty-password"]),
        &bench.hsm,
    );
    let mut add = bench.configured(Command::new(&modutil));
    add.args(["-add", "hsmlink", "-libfile"])
        .arg(&bench.module)
        .args(["-dbdir", &db, "-force"]);
    let added = run_checked("modutil", &mut add, &bench.hsm);
    assert!(added.contains("added to database"), "{added}");
    let list = run_checked(
        "modutil",
        bench
            .configured(Command::new(&modutil))
            .args(["-list", "-dbdir", &db]),
        &bench.hsm,
    );
    assert!(list.contains("token: Dinamo HSM"), "modutil -list:\n{list}");

    write(&bench.path("pin.txt"), format!("{PIN}\n").as_bytes());
    let certs = run_checked(
        "certutil",
        bench.configured(Command::new(&certutil)).args([
            "-L",
            "-d",
            &db,
            "-h",
            "Dinamo HSM",
            "-f",
            "pin.txt",
        ]),
        &bench.hsm,
    );
    assert!(
        certs.contains("Dinamo HSM:nss-ec"),
        "certutil -L -h 'Dinamo HSM':\n{certs}"
    );
    let keys = run_checked(
        "certutil",
        bench.configured(Command::new(&certutil)).args([
            "-K",
            "-d",
            &db,
            "-h",
            "Dinamo HSM",
            "-f",
            "pin.txt",
        ]),
        &bench.hsm,
    );
    assert!(
        keys.contains("nss-ec"),
        "certutil -K -h 'Dinamo HSM':\n{keys}"
    );
}

#[test]
fn jarsigner_signs_a_jar_with_a_token_key() {
    let keytool = require_tool("keytool", "openjdk-17-jdk-headless");
    let jarsigner = require_tool("jarsigner", "openjdk-17-jdk-headless");
    let jar = require_tool("jar", "openjdk-17-jdk-headless");
    let bench = Bench::new("jarsigner");
    ec_key(&bench, "jar-ec");
    certificate_on_token(&bench, "jar-ec");
    write(
        &bench.path("hsmlink.cfg"),
        format!(
            "name = hsmlink\nlibrary = {}\nslot = 1\n",
            bench.module.display()
        )
        .as_bytes(),
    );
    let store = |command: &mut Command| {
        command.args([
            "-keystore",
            "NONE",
            "-storetype",
            "PKCS11",
            "-providerClass",
            "sun.security.pkcs11.SunPKCS11",
            "-providerArg",
            "hsmlink.cfg",
            "-storepass",
            PIN,
        ]);
    };
    let mut list = bench.configured(Command::new(&keytool));
    list.arg("-list");
    store(&mut list);
    let listing = run_checked("keytool", &mut list, &bench.hsm);
    assert!(listing.contains("jar-ec, PrivateKeyEntry"), "{listing}");

    write(&bench.path("hello.txt"), b"a file in a signed jar\n");
    run_checked(
        "jar",
        bench
            .configured(Command::new(&jar))
            .args(["cf", "app.jar", "hello.txt"]),
        &bench.hsm,
    );
    let mut sign = bench.configured(Command::new(&jarsigner));
    store(&mut sign);
    sign.args(["-sigalg", "SHA256withECDSA", "app.jar", "jar-ec"]);
    let signed = run_checked("jarsigner", &mut sign, &bench.hsm);
    assert!(signed.contains("jar signed."), "{signed}");
    let verified = run_checked(
        "jarsigner",
        bench
            .configured(Command::new(&jarsigner))
            .args(["-verify", "app.jar"]),
        &bench.hsm,
    );
    assert!(verified.contains("jar verified."), "{verified}");
}
