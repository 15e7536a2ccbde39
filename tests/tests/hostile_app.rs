//! The module loaded by a hostile C program (tests/c/hostile_app.c) that is
//! no part of the module's own tests or client: it calls the exported
//! functions with NULL, misaligned and lying pointers, counts and lengths,
//! templates whose buffers point into the template itself, handles 0 and
//! `ULONG_MAX`, mechanism parameters that lie, and closes sessions and
//! finalizes the library under racing calls. Each section must answer every
//! call with the code PKCS#11 v2.40 gives, and never crash, hang or write
//! where it was not told to (the program checks its guards and buffers).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hsmlink_tests::{module_path, target_dir, workspace_root, Hsm, PIN, USER};

/// Compiled once per test process.
fn program() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let src = workspace_root().join("tests/c/hostile_app.c");
        let exe = target_dir().join("hostile_app");
        let status = Command::new("cc")
            .args(["-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o"])
            .arg(&exe)
            .arg(&src)
            .args(["-ldl", "-lpthread"])
            .status()
            .expect("a C compiler (cc) is needed to build tests/c/hostile_app.c");
        assert!(
            status.success(),
            "compiling {} failed (it needs p11-kit's pkcs11.h: apt-get install libp11-kit-dev)",
            src.display()
        );
        exe
    })
}

/// Runs one section against a fresh dev HSM; it must exit 0 within two
/// minutes (a crash, a hang or a wrong code fails the test, with the
/// program's report).
fn run(section: &str) {
    run_with(section, &[]);
}

fn run_with(section: &str, env: &[(&str, &str)]) {
    let hsm = Hsm::start_dev(USER, PIN);
    let mut child = Command::new(program())
        .arg(module_path())
        .arg(PIN)
        .arg(section)
        .env("HSMLINK_ADDR", hsm.addr())
        .env("HSMLINK_USER", USER)
        .env("HSMLINK_CONFIG", "")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hostile_app");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hostile_app") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("hostile_app output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match status {
        None => panic!("hostile_app {section} hung (killed after 120 s):\n{report}"),
        Some(s) => assert!(
            s.success(),
            "hostile_app {section} failed ({s}; a signal is a crash inside the module):\n{report}"
        ),
    }
    assert!(report.contains("0 failure(s)"), "{report}");
}

#[test]
fn abi_bounds_hostile_app_info_functions_initialize_arguments_and_interfaces() {
    run("general");
}

#[test]
fn abi_bounds_hostile_app_session_and_object_handles_0_and_ulong_max() {
    run("handles");
}

#[test]
fn abi_bounds_hostile_app_templates_pointing_into_themselves_and_lying_lengths() {
    run("templates");
}

#[test]
fn abi_bounds_hostile_app_mechanism_parameters_that_lie() {
    run("mechanisms");
}

/// With the special PIN the module parses the PIN as text: a length that
/// lies must be refused before a byte past the real PIN is read.
#[test]
fn abi_bounds_hostile_app_pin_lengths_that_lie_with_the_special_pin() {
    run_with(
        "pins",
        &[("HSMLINK_SPECIAL_PIN", "1"), ("HSMLINK_TEST_USER", USER)],
    );
}

/// A pre-forking server that forks while another thread's `C_Finalize`
/// waits for a call under way: the child's `C_Initialize` must not wait on
/// a lock held by a thread that does not exist in the child.
#[test]
fn hostile_app_fork_while_c_finalize_waits_for_a_call() {
    run("forkfinalize");
}

#[test]
fn hostile_app_close_session_and_finalize_under_racing_calls() {
    run("threads");
}
