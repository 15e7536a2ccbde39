//! Fork safety, checked by a C program (tests/c/fork_check.c) that does what
//! pre-forking servers do: initialize and log in, fork, and use the module
//! in parent and children at once. A child finds the library uninitialized
//! until it calls C_Initialize, then works on its own connections; the
//! parent's session is not disturbed.

use std::process::Command;

use hsmlink_tests::{module_path, target_dir, workspace_root, Hsm, PIN, USER};

#[test]
fn fork_children_get_a_clean_library_and_leave_the_parent_alone() {
    let hsm = Hsm::start_dev(USER, PIN);
    let src = workspace_root().join("tests/c/fork_check.c");
    let exe = target_dir().join("fork_check");
    let cc = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) is needed to build tests/c/fork_check.c");
    assert!(cc.success(), "compiling {} failed", src.display());
    let out = Command::new(&exe)
        .arg(module_path())
        .arg(PIN)
        .env("HSMLINK_ADDR", hsm.addr())
        .env("HSMLINK_USER", USER)
        .output()
        .expect("run fork_check");
    assert!(
        out.status.success(),
        "fork_check failed: {}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        hsm.stderr()
    );
    // Five processes (the parent and four children) each logged in on
    // connections of their own.
    let logins = hsm.stderr().matches("event=login ").count();
    assert!(
        logins >= 5,
        "expected a login per process, server saw {logins}"
    );
}
