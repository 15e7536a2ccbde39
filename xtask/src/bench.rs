//! `cargo xtask bench`: hsmlink (module + software HSM over loopback TCP)
//! against SoftHSMv2 (in-process), in the same run, through the same client
//! code (the `cryptoki` crate), one session per thread; and the raw speed of
//! the crypto library for the same operations (the limit on this machine).
//!
//! `bench` builds the release artefacts and re-runs itself optimized as
//! `bench-worker`, which does the measuring.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

const USER: &str = "bench";
const PIN: &str = "bench-pin-1234";
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const FIND_OBJECTS: usize = 1000;

/// Options of a run.
struct Options {
    seconds: f64,
    threads: Vec<usize>,
    /// Cases to run (all by default), and whether to run the 1 GiB stream.
    cases: Vec<Case>,
    stream: bool,
    /// The lock case: one thread's sign latency while another opens and
    /// closes sessions against a live and a silent HSM.
    lock_io: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 3.0,
        threads: vec![1, 2],
        cases: CASES.to_vec(),
        stream: true,
        lock_io: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                o.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| *s > 0.0)
                    .ok_or("--seconds wants a positive number")?;
            }
            "--threads" => {
                o.threads = it
                    .next()
                    .ok_or("--threads wants a list like 1,2")?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse()
                            .map_err(|_| format!("bad thread count {t:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--cases" => {
                let list = it.next().ok_or(CASES_HELP)?;
                o.cases.clear();
                o.stream = false;
                o.lock_io = false;
                for name in list.split(',').map(str::trim) {
                    match name {
                        "stream" => o.stream = true,
                        "lockio" => o.lock_io = true,
                        _ => o.cases.push(
                            CASES
                                .into_iter()
                                .find(|c| c.short() == name)
                                .ok_or_else(|| format!("unknown case {name:?}: {CASES_HELP}"))?,
                        ),
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown bench option {other:?} (--seconds N, --threads 1,2, --cases LIST)"
                ))
            }
        }
    }
    Ok(o)
}

/// `cargo xtask bench [--seconds N] [--threads 1,2] [--cases rsa,ecdsa,gcm,digest,find,stream,lockio]`.
pub fn bench(root: &Path, target: &Path, args: &[String]) -> Result<(), String> {
    parse(args)?;
    if !Path::new(SOFTHSM).exists() {
        return Err(format!(
            "{SOFTHSM} is missing: install SoftHSMv2 (apt-get install softhsm2) to compare against it"
        ));
    }
    println!("== building release artefacts");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "hsmlink-hsm",
            "-p",
            "hsmlink-pkcs11",
            "-p",
            "xtask",
        ])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("release build failed".into());
    }
    let worker = target.join("release/xtask");
    let status = Command::new(worker)
        .arg("bench-worker")
        .args(args)
        .env("HSMLINK_BENCH_TARGET", target)
        .status()
        .map_err(|e| format!("bench worker: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("bench worker failed".into())
    }
}

/// One measured case: ops/s, median and p99 latency.
#[derive(Clone, Copy, Default)]
struct Stat {
    ops_per_s: f64,
    median_us: f64,
    p99_us: f64,
    exchanges_per_op: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    RsaSign,
    EcdsaSign,
    AesGcm,
    Digest,
    Find,
}

const CASES: [Case; 5] = [
    Case::RsaSign,
    Case::EcdsaSign,
    Case::AesGcm,
    Case::Digest,
    Case::Find,
];

const CASES_HELP: &str = "--cases wants a list of rsa, ecdsa, gcm, digest, find, stream, lockio";

impl Case {
    /// The name `--cases` knows the case by.
    fn short(self) -> &'static str {
        match self {
            Case::RsaSign => "rsa",
            Case::EcdsaSign => "ecdsa",
            Case::AesGcm => "gcm",
            Case::Digest => "digest",
            Case::Find => "find",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::RsaSign => "C_Sign SHA256_RSA_PKCS RSA-2048",
            Case::EcdsaSign => "C_Sign ECDSA P-256 (32-byte hash)",
            Case::AesGcm => "C_Encrypt AES-256-GCM 1 KiB",
            Case::Digest => "C_Digest SHA-256 64 KiB",
            Case::Find => "C_FindObjects 1 label among 1,000",
        }
    }
}

/// The module under test.
struct Target {
    name: &'static str,
    module: PathBuf,
    env: Vec<(String, String)>,
    stats_file: Option<PathBuf>,
}

fn set_env(t: &Target) {
    for (k, v) in &t.env {
        std::env::set_var(k, v);
    }
}

fn open(t: &Target) -> Result<Pkcs11, String> {
    set_env(t);
    let p = Pkcs11::new(&t.module).map_err(|e| format!("{}: load: {e}", t.name))?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("{}: C_Initialize: {e}", t.name))?;
    Ok(p)
}

fn session(p: &Pkcs11) -> Result<Session, String> {
    let slot = *p
        .get_slots_with_token()
        .map_err(|e| e.to_string())?
        .first()
        .ok_or("no slot with a token")?;
    let s = p.open_rw_session(slot).map_err(|e| e.to_string())?;
    match s.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(format!("login: {e}")),
    }
    Ok(s)
}

fn find_one(s: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, String> {
    s.find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
        .map_err(|e| e.to_string())?
        .first()
        .copied()
        .ok_or_else(|| format!("no object labelled {label}"))
}

/// Token keys and 1,000 labelled objects for the find case.
fn provision(t: &Target) -> Result<(), String> {
    let p = open(t)?;
    let s = session(&p)?;
    let private = |label: &str| {
        vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.into()),
        ]
    };
    s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Label("bench-rsa".into()),
        ],
        &private("bench-rsa"),
    )
    .map_err(|e| format!("{}: RSA key: {e}", t.name))?;
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(P256.to_vec()),
            Attribute::Verify(true),
            Attribute::Label("bench-ec".into()),
        ],
        &private("bench-ec"),
    )
    .map_err(|e| format!("{}: EC key: {e}", t.name))?;
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label("bench-aes".into()),
        ],
    )
    .map_err(|e| format!("{}: AES key: {e}", t.name))?;
    for i in 0..FIND_OBJECTS {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(format!("bench-obj-{i}").into()),
            Attribute::Value(vec![i as u8; 16]),
        ])
        .map_err(|e| format!("{}: data object: {e}", t.name))?;
    }
    drop(s);
    p.finalize().map_err(|e| e.to_string())
}

/// One thread's loop for `case`; returns latencies in nanoseconds.
fn worker(s: &Session, case: Case, until: Instant) -> Result<Vec<u32>, String> {
    let mut lat = Vec::with_capacity(1 << 16);
    let rsa = find_one(s, ObjectClass::PRIVATE_KEY, "bench-rsa")?;
    let ec = find_one(s, ObjectClass::PRIVATE_KEY, "bench-ec")?;
    let aes = find_one(s, ObjectClass::SECRET_KEY, "bench-aes")?;
    let msg32 = [0x5au8; 32];
    let kib = vec![0xa5u8; 1024];
    let big = vec![0x3cu8; 64 * 1024];
    let mut iv = [0u8; 12];
    let mut n: u64 = 0;
    while Instant::now() < until {
        let started = Instant::now();
        match case {
            Case::RsaSign => {
                s.sign(&Mechanism::Sha256RsaPkcs, rsa, &msg32)
                    .map_err(|e| e.to_string())?;
            }
            Case::EcdsaSign => {
                s.sign(&Mechanism::Ecdsa, ec, &msg32)
                    .map_err(|e| e.to_string())?;
            }
            Case::AesGcm => {
                iv[..8].copy_from_slice(&n.to_be_bytes());
                let params = GcmParams::new(&mut iv, &[], 128.into()).map_err(|e| e.to_string())?;
                s.encrypt(&Mechanism::AesGcm(params), aes, &kib)
                    .map_err(|e| e.to_string())?;
            }
            Case::Digest => {
                s.digest(&Mechanism::Sha256, &big)
                    .map_err(|e| e.to_string())?;
            }
            Case::Find => {
                let label = format!("bench-obj-{}", n % FIND_OBJECTS as u64);
                let found = s
                    .find_objects(&[Attribute::Label(label.into())])
                    .map_err(|e| e.to_string())?;
                if found.len() != 1 {
                    return Err(format!("find returned {} objects", found.len()));
                }
            }
        }
        lat.push(started.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        n += 1;
    }
    Ok(lat)
}

fn exchanges(t: &Target) -> Option<u64> {
    let text = std::fs::read_to_string(t.stats_file.as_ref()?).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix("exchanges "))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum::<u64>()
        .into()
}

fn measure(t: &Target, case: Case, threads: usize, seconds: f64) -> Result<Stat, String> {
    let before = exchanges(t);
    let p = Arc::new(open(t)?);
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<Result<(Vec<u32>, usize), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, p) = (barrier.clone(), p.clone());
                scope.spawn(move || {
                    let s = session(&p);
                    // Warm up (key lookups, caches, connections), then wait
                    // for every thread, so the measured runs overlap fully.
                    let warm = s
                        .as_ref()
                        .map_err(|e| e.clone())
                        .and_then(|s| worker(s, case, Instant::now() + Duration::from_millis(200)));
                    barrier.wait();
                    let s = s?;
                    let warm = warm?.len();
                    let until = Instant::now() + Duration::from_secs_f64(seconds);
                    Ok((worker(&s, case, until)?, warm))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panic".into())))
            .collect()
    });
    let mut all = Vec::new();
    let mut warm = 0;
    for r in results {
        let (lat, w) = r?;
        all.extend(lat);
        warm += w;
    }
    Arc::into_inner(p)
        .ok_or("module still in use")?
        .finalize()
        .map_err(|e| e.to_string())?;
    let after = exchanges(t);
    all.sort_unstable();
    let ops = all.len() as f64;
    // Every exchange of the run (login and key lookups included) over every
    // operation (warm-up included): an upper bound of the per-op cost.
    let exchanges_per_op = match (before, after) {
        (Some(b), Some(a)) if !all.is_empty() => {
            Some(a.saturating_sub(b) as f64 / (all.len() + warm) as f64)
        }
        _ => None,
    };
    let pct = |q: f64| -> f64 {
        all.get(((all.len() as f64 - 1.0) * q).round() as usize)
            .map(|&ns| ns as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    Ok(Stat {
        ops_per_s: ops / seconds,
        median_us: pct(0.5),
        p99_us: pct(0.99),
        exchanges_per_op,
    })
}

/// The crypto library alone (OpenSSL, as the server uses it), per case, with
/// `threads` threads: the limit of this machine.
fn raw_limit(case: Case, threads: usize, seconds: f64) -> Result<f64, String> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};
    let rsa = Rsa::generate(2048).map_err(|e| e.to_string())?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
    let ec = EcKey::generate(&group).map_err(|e| e.to_string())?;
    let key = [7u8; 32];
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                // A key object per thread, as the server has per connection:
                // a shared one would serialise the threads on its lock.
                let rsa = rsa
                    .private_key_to_der()
                    .and_then(|d| Rsa::private_key_from_der(&d))
                    .unwrap_or_else(|_| rsa.clone());
                let ec = ec
                    .private_key_to_der()
                    .and_then(|d| EcKey::private_key_from_der(&d))
                    .unwrap_or_else(|_| ec.clone());
                scope.spawn(move || {
                    let until = Instant::now() + Duration::from_secs_f64(seconds);
                    let mut n = 0u64;
                    let di = [0u8; 51];
                    let mut out = vec![0u8; 512];
                    let kib = [0u8; 1024];
                    let big = vec![0u8; 64 * 1024];
                    let pkey = PKey::from_ec_key(ec.clone()).ok();
                    while Instant::now() < until {
                        match case {
                            Case::RsaSign => {
                                let _ = rsa.private_encrypt(&di, &mut out, Padding::PKCS1);
                            }
                            Case::EcdsaSign => {
                                let _ = openssl::ecdsa::EcdsaSig::sign(&[1u8; 32], &ec);
                            }
                            Case::AesGcm => {
                                let mut tag = [0u8; 16];
                                let _ = openssl::symm::encrypt_aead(
                                    openssl::symm::Cipher::aes_256_gcm(),
                                    &key,
                                    Some(&[0u8; 12]),
                                    &[],
                                    &kib,
                                    &mut tag,
                                );
                            }
                            Case::Digest => {
                                let _ = openssl::sha::sha256(&big);
                            }
                            Case::Find => {}
                        }
                        n += 1;
                    }
                    drop(pkey);
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    Ok(counts.iter().sum::<u64>() as f64 / seconds)
}

fn softhsm_token(dir: &Path) -> Result<(), String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let status = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            PIN,
            "--pin",
            PIN,
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("softhsm2-util: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("softhsm2-util --init-token failed".into())
    }
}

/// `bench-worker`: the measuring half, run from a release build.
pub fn worker_main(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let target = PathBuf::from(
        std::env::var("HSMLINK_BENCH_TARGET").map_err(|_| "run `cargo xtask bench`")?,
    );
    let scratch = target.join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let server = crate::DevHsm::start(
        &target.join("release/hsmlink-hsm"),
        USER,
        PIN,
        scratch.join("hsm.log"),
    )?;
    let addr = server.addr.clone();
    softhsm_token(&scratch)?;
    let stats = scratch.join("hsmlink-stats");
    let targets = [
        Target {
            name: "hsmlink",
            module: target.join("release/libhsmlink_pkcs11.so"),
            env: vec![
                ("HSMLINK_ADDR".into(), addr.clone()),
                ("HSMLINK_USER".into(), USER.into()),
                ("HSMLINK_STATS_FILE".into(), stats.display().to_string()),
            ],
            stats_file: Some(stats.clone()),
        },
        Target {
            name: "SoftHSMv2",
            module: PathBuf::from(SOFTHSM),
            env: vec![],
            stats_file: None,
        },
    ];
    println!("== provisioning keys and {FIND_OBJECTS} objects in each token");
    for t in &targets {
        provision(t)?;
    }
    println!(
        "== measuring, {} s per case, threads {:?}, one session per thread ({} cores)",
        o.seconds,
        o.threads,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let mut rows = Vec::new();
    for &case in &o.cases {
        for &threads in &o.threads {
            let h = measure(&targets[0], case, threads, o.seconds)?;
            let s = measure(&targets[1], case, threads, o.seconds)?;
            let limit = if case == Case::Find {
                None
            } else {
                Some(raw_limit(case, threads, o.seconds.min(2.0))?)
            };
            println!(
                "{:<36} {threads}t  hsmlink {:>9.0}/s  SoftHSM {:>9.0}/s  ratio {:>6.2}x",
                case.name(),
                h.ops_per_s,
                s.ops_per_s,
                h.ops_per_s / s.ops_per_s.max(f64::MIN_POSITIVE)
            );
            rows.push((case, threads, h, s, limit));
        }
    }
    println!();
    println!("| case | threads | hsmlink ops/s | median µs | p99 µs | round trips/op | SoftHSM ops/s | median µs | p99 µs | hsmlink/SoftHSM | raw OpenSSL limit ops/s | hsmlink/limit |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, threads, h, s, limit) in &rows {
        let rt = h
            .exchanges_per_op
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into());
        let (lim, frac) = match limit {
            Some(l) => (
                format!("{l:.0}"),
                format!("{:.0} %", 100.0 * h.ops_per_s / l),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {threads} | {:.0} | {:.1} | {:.1} | {rt} | {:.0} | {:.1} | {:.1} | {:.2}x | {lim} | {frac} |",
            case.name(),
            h.ops_per_s,
            h.median_us,
            h.p99_us,
            s.ops_per_s,
            s.median_us,
            s.p99_us,
            h.ops_per_s / s.ops_per_s.max(f64::MIN_POSITIVE),
        );
    }
    println!();
    if o.lock_io {
        lock_io(&targets[0], o.seconds)?;
        println!();
    }
    let server_pid = server.child.id();
    for t in targets.iter().filter(|_| o.stream) {
        let (mb_s, client, server) = stream_gib(t, server_pid)?;
        println!(
            "{}: 1 GiB through C_EncryptUpdate (AES-256-CBC, 1 MiB per call): {mb_s:.0} MB/s; \
             peak RSS of the client process {} -> {} MiB{}",
            t.name,
            client.0 / 1024,
            client.1 / 1024,
            if t.stats_file.is_some() {
                format!(
                    "; of the HSM server {} -> {} MiB",
                    server.0 / 1024,
                    server.1 / 1024
                )
            } else {
                String::new()
            }
        );
    }
    let rtt = loopback_round_trip()?;
    println!();
    println!("loopback round trip (64-byte ping-pong, median of 20,000): {rtt:.1} µs");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A listener that accepts connections and never answers: an HSM that is
/// down behind a proxy, or hung. Returns its address.
fn silent_hsm() -> Result<String, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?.to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    Ok(addr)
}

/// Rounds of each lock-case scenario, taken in turn (alone, live, silent,
/// alone, ...), so that load from elsewhere on the machine falls on all
/// three alike; each scenario's latencies are pooled over its rounds.
const LOCK_ROUNDS: usize = 3;

/// The lock case: ECDSA P-256 sign latency of one thread (its session
/// already connected) alone, then while a second thread opens a session,
/// uses it (connect, `Hello`, login: `C_GenerateRandom`) and closes it, in
/// a loop: against the live HSM, and with a silent endpoint (accepts, never
/// answers; every other new connection goes there first and waits for the
/// 1 s I/O timeout). Prints p50/p99 of the signer and the p99 ratio to
/// the signer alone (the goal: under 2×).
fn lock_io(t: &Target, seconds: f64) -> Result<(), String> {
    let silent = silent_hsm()?;
    let live = t
        .env
        .iter()
        .find(|(k, _)| k == "HSMLINK_ADDR")
        .map(|(_, v)| v.clone())
        .ok_or("no HSMLINK_ADDR")?;
    let scenarios: [(&str, String, bool); 3] = [
        ("alone", live.clone(), false),
        ("opener thread, live HSM", live.clone(), true),
        (
            "opener thread, silent HSM endpoint",
            format!("{live},{silent}"),
            true,
        ),
    ];
    let round = seconds / LOCK_ROUNDS as f64;
    println!(
        "== lock case: C_Sign ECDSA P-256 latency of one thread, {seconds} s each \
         ({LOCK_ROUNDS} rounds of {round:.1} s, in turn)"
    );
    let mut pooled: Vec<(Vec<u32>, u64, Duration)> =
        vec![(Vec::new(), 0, Duration::ZERO); scenarios.len()];
    for _ in 0..LOCK_ROUNDS {
        for ((_, addr, opener), pool) in scenarios.iter().zip(pooled.iter_mut()) {
            let (lat, opened, slowest) = lock_io_round(t, addr, *opener, round)?;
            pool.0.extend(lat);
            pool.1 += opened;
            pool.2 = pool.2.max(slowest);
        }
    }
    println!("| signer | signs/s | p50 µs | p99 µs | p99 / alone | opener sessions | slowest opener call ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut alone_p99 = None;
    for ((label, _, opener), (mut lat, opened, slowest)) in scenarios.into_iter().zip(pooled) {
        lat.sort_unstable();
        let pct = |q: f64| -> f64 {
            lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
                .map(|&ns| ns as f64 / 1000.0)
                .unwrap_or(0.0)
        };
        let p99 = pct(0.99);
        let base = *alone_p99.get_or_insert(p99);
        println!(
            "| {label} | {:.0} | {:.1} | {p99:.1} | {:.2}x | {} | {} |",
            lat.len() as f64 / seconds,
            pct(0.5),
            p99 / base.max(f64::MIN_POSITIVE),
            if opener {
                opened.to_string()
            } else {
                "-".into()
            },
            if opener {
                format!("{:.0}", slowest.as_secs_f64() * 1000.0)
            } else {
                "-".into()
            },
        );
    }
    Ok(())
}

/// One round of one lock-case scenario: the signer's latencies (ns), the
/// sessions the opener opened, and its slowest round.
fn lock_io_round(
    t: &Target,
    addr: &str,
    opener: bool,
    seconds: f64,
) -> Result<(Vec<u32>, u64, Duration), String> {
    std::env::set_var("HSMLINK_TIMEOUT_MS", "1000");
    let p = open(&Target {
        name: t.name,
        module: t.module.clone(),
        env: vec![
            ("HSMLINK_ADDR".into(), addr.to_string()),
            ("HSMLINK_USER".into(), USER.into()),
        ],
        stats_file: None,
    })?;
    let signer = session(&p)?;
    let ec = find_one(&signer, ObjectClass::PRIVATE_KEY, "bench-ec")?;
    let msg32 = [0x5au8; 32];
    for _ in 0..200 {
        signer
            .sign(&Mechanism::Ecdsa, ec, &msg32)
            .map_err(|e| format!("warm-up sign: {e}"))?;
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            let mut opened = 0u64;
            let mut slowest = Duration::ZERO;
            while opener && !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let slot = match p
                    .get_slots_with_token()
                    .ok()
                    .and_then(|s| s.first().copied())
                {
                    Some(s) => s,
                    None => break,
                };
                if let Ok(s) = p.open_ro_session(slot) {
                    let _ = s.generate_random_vec(16);
                    opened += 1;
                }
                slowest = slowest.max(started.elapsed());
            }
            (opened, slowest)
        });
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let mut lat = Vec::with_capacity(1 << 16);
        let mut failed = None;
        while Instant::now() < until {
            let started = Instant::now();
            if let Err(e) = signer.sign(&Mechanism::Ecdsa, ec, &msg32) {
                failed = Some(e.to_string());
                break;
            }
            lat.push(started.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (opened, slowest) = other.join().unwrap_or((0, Duration::ZERO));
        match failed {
            Some(e) => Err(format!("C_Sign: {e}")),
            None => Ok((lat, opened, slowest)),
        }
    });
    drop(signer);
    p.finalize().map_err(|e| e.to_string())?;
    std::env::remove_var("HSMLINK_TIMEOUT_MS");
    result
}

/// Peak resident memory (VmHWM, KiB) of a process.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 1 GiB of AES-256-CBC through `C_EncryptUpdate`, 1 MiB per call: MB/s, and
/// peak RSS (before, after) of this process and of the HSM server.
/// (before, after) peak RSS in KiB.
type Peak = (u64, u64);

fn stream_gib(t: &Target, server_pid: u32) -> Result<(f64, Peak, Peak), String> {
    let p = open(t)?;
    let s = session(&p)?;
    let aes = find_one(&s, ObjectClass::SECRET_KEY, "bench-aes")?;
    let input = vec![0x42u8; 1024 * 1024];
    let me = std::process::id();
    let before = (peak_rss_kib(me), peak_rss_kib(server_pid));
    s.encrypt_init(&Mechanism::AesCbc([0u8; 16]), aes)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut total = 0usize;
    for _ in 0..1024 {
        total += s.encrypt_update(&input).map_err(|e| e.to_string())?.len();
    }
    total += s.encrypt_final().map_err(|e| e.to_string())?.len();
    let secs = started.elapsed().as_secs_f64();
    let after = (peak_rss_kib(me), peak_rss_kib(server_pid));
    if total != 1024 * input.len() {
        return Err(format!("{}: stream gave {total} bytes", t.name));
    }
    drop(s);
    p.finalize().map_err(|e| e.to_string())?;
    Ok((
        total as f64 / secs / 1e6,
        (before.0, after.0),
        (before.1, after.1),
    ))
}

/// Median time of a small TCP ping-pong on loopback: what one exchange
/// costs at the least.
fn loopback_round_trip() -> Result<f64, String> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let echo = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 64];
            while s.read_exact(&mut b).is_ok() {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut b = [0u8; 64];
    let mut lat = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        c.write_all(&b).map_err(|e| e.to_string())?;
        c.read_exact(&mut b).map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    drop(c);
    let _ = echo.join();
    lat.sort_unstable();
    Ok(lat[lat.len() / 2] as f64 / 1000.0)
}
