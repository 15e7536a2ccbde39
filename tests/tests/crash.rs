//! Crash safety: `kill -9` at a random moment while 1000 token objects are
//! being created through the module loses none whose creation was
//! reported, and leaves a store that opens at once.

mod hsm_service;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_service::*;
use hsmlink_tests::{token, TempDir};

const TOTAL: usize = 1000;
const WORKERS: usize = 4;

/// A pseudo-random number from the clock and the process id (no extra crate).
fn random_below(n: usize) -> usize {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize ^ (d.as_secs() as usize).rotate_left(17))
        .unwrap_or(0);
    let x = t ^ (std::process::id() as usize).wrapping_mul(0x9e37_79b9);
    x.wrapping_mul(6364136223846793005).rotate_right(29) % n
}

fn label(i: usize) -> String {
    format!("crash-{i:04}")
}

#[test]
fn crash_kill_9_during_1000_creates_loses_no_reported_object() {
    let t = token();
    let data = TempDir::new("crash");
    let secrets = Secrets::new();
    let d = path_str(data.path());
    add_user(&["--data", d], "alice", "alice-pw");
    let hsm = serve(data.path(), &secrets, &[]);
    let addr = hsm.addr().to_string();

    // The kill comes after a random number of reported creations, so it
    // lands in the middle of the run, at a random point of a request.
    let kill_after = 100 + random_below(TOTAL - 300);
    let done = Arc::new(AtomicUsize::new(0));
    let killer = {
        let done = done.clone();
        let mut hsm = hsm;
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < kill_after && Instant::now() < deadline {
                std::thread::yield_now();
            }
            // A little more jitter, in microseconds, inside the next request.
            std::thread::sleep(Duration::from_micros(random_below(3000) as u64));
            hsm.kill(); // SIGKILL
        })
    };

    // Four sessions (four connections) create at the same time, so the
    // kill lands on a server under load, possibly in several requests.
    let session = login_at(&t, &addr, "alice", "alice-pw");
    let started = Instant::now();
    let pkcs11 = t.pkcs11.clone();
    let slot = t.slot;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let done = done.clone();
            let pkcs11 = pkcs11.clone();
            std::thread::spawn(move || {
                // Logged in already: login state belongs to the application.
                let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
                let (mut reported, mut keys, mut failed) = (Vec::new(), Vec::new(), 0);
                for i in (w..TOTAL).step_by(WORKERS) {
                    let l = label(i);
                    let r = if i % 10 == 0 {
                        session
                            .generate_key(
                                &Mechanism::AesKeyGen,
                                &[
                                    Attribute::Token(true),
                                    Attribute::ValueLen(16.into()),
                                    Attribute::Encrypt(true),
                                    Attribute::Decrypt(true),
                                    Attribute::Label(l.clone().into_bytes()),
                                ],
                            )
                            .inspect(|_| keys.push(i))
                    } else {
                        session.create_object(&[
                            Attribute::Class(ObjectClass::DATA),
                            Attribute::Token(true),
                            Attribute::Label(l.clone().into_bytes()),
                            Attribute::Value(format!("value {i}").into_bytes()),
                        ])
                    };
                    match r {
                        Ok(_) => {
                            reported.push(i);
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            failed += 1;
                            if failed >= 10 {
                                break;
                            }
                        }
                    }
                }
                std::mem::forget(session);
                (reported, keys)
            })
        })
        .collect();
    let (mut reported, mut keys) = (Vec::new(), Vec::new());
    for w in workers {
        let (r, k) = w.join().expect("worker");
        reported.extend(r);
        keys.extend(k);
    }
    reported.sort_unstable();
    let elapsed = started.elapsed();
    killer.join().expect("killer thread");
    std::mem::forget(session);
    assert!(
        reported.len() >= kill_after && reported.len() < TOTAL,
        "the kill must land during the run: {} reported, kill after {kill_after}",
        reported.len()
    );

    // Restart on the same folder: the store opens at once.
    let restart = Instant::now();
    let hsm = serve(data.path(), &secrets, &[]);
    let reopen = restart.elapsed();
    let session = login_at(&t, hsm.addr(), "alice", "alice-pw");
    let mut missing = Vec::new();
    for &i in &reported {
        let found = session
            .find_objects(&[Attribute::Label(label(i).into_bytes())])
            .expect("C_FindObjects");
        if found.len() != 1 {
            missing.push((i, found.len()));
        }
    }
    assert!(
        missing.is_empty(),
        "objects reported created but not found once after the restart: {missing:?}"
    );
    // The keys still work.
    for &i in keys.iter().filter(|i| reported.contains(i)).take(5) {
        let k = session
            .find_objects(&[Attribute::Label(label(i).into_bytes())])
            .expect("find")[0];
        let ct = session
            .encrypt(&Mechanism::AesEcb, k, &[7u8; 16])
            .expect("encrypt with a key made before the crash");
        assert_eq!(
            session
                .decrypt(&Mechanism::AesEcb, k, &ct)
                .expect("decrypt"),
            [7u8; 16]
        );
    }
    // At most one object per session beyond the reported ones may exist:
    // those whose reply the kill cut off.
    let all = session.find_objects(&[]).expect("find all").len();
    assert!(
        all >= reported.len() && all <= reported.len() + WORKERS,
        "{all} objects for {} reported",
        reported.len()
    );
    eprintln!(
        "crash: {} creates reported by {WORKERS} sessions in {elapsed:?} ({:.0}/s), kill -9 after \
         {kill_after}; all {} present after restart; restart took {reopen:?}; {} objects stored",
        reported.len(),
        reported.len() as f64 / elapsed.as_secs_f64(),
        reported.len(),
        all
    );
    drop(session);
    t.reinitialize(&[]).expect("back to the defaults");
}
