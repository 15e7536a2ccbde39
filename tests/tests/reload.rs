//! Loading and unloading the module again and again (as a plug-in host or a
//! test framework does): with C_Finalize before each dlclose, memory does
//! not grow with the number of cycles. Alone in its test binary, so no
//! other test keeps the library loaded in between.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use hsmlink_tests::{module_path, Hsm, PIN, USER};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn one_cycle() {
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    assert_eq!(s.generate_random_vec(16).unwrap().len(), 16);
    drop(s);
    // C_Finalize; dropping the context then unloads the library.
    p.finalize().unwrap();
}

#[test]
fn load_use_finalize_unload_cycles_do_not_grow_memory() {
    let hsm = Hsm::start_dev(USER, PIN);
    std::env::set_var("HSMLINK_ADDR", hsm.addr());
    std::env::set_var("HSMLINK_USER", USER);
    // Warm up (allocator arenas, the dynamic loader's own state).
    for _ in 0..3 {
        one_cycle();
    }
    let before = resident_kib();
    let cycles = 20;
    for _ in 0..cycles {
        one_cycle();
    }
    let grown = resident_kib().saturating_sub(before);
    // The session slots alone are 6.5 MiB per load: kept, 20 cycles would
    // add ~130 MiB.
    assert!(
        grown < 16 * 1024,
        "resident memory grew by {grown} KiB over {cycles} load/unload cycles"
    );
}
