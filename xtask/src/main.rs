//! `cargo xtask` — the project's scripted jobs (see the README).
//!
//! - `cargo xtask demo`: builds the software HSM and the module, starts an
//!   in-memory HSM on an ephemeral port, and runs a real client against it:
//!   pkcs11-tool generates keys and signs, OpenSSL verifies the signatures.
//! - `cargo xtask test`: everything CI checks, in order, failing fast.
//!
//! Only `std`: the tasks are sequences of commands.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod bench;
mod conformance;
mod embedded;
mod fuzz;
mod package;

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo    build the HSM and the module, start a local software HSM, and run
          pkcs11-tool against it (EC P-256 and RSA-2048 keys generated, data
          signed, public keys read) with OpenSSL verifying the signatures
  test    build; cargo fmt --check; clippy -D warnings; cargo test --workspace;
          the demo; cargo build -p hsmlink-core for thumbv7em-none-eabihf
  bench   [--seconds N] [--threads 1,2] [--cases rsa,ecdsa,gcm,digest,find,stream,lockio]:
          hsmlink (module + local software HSM) against SoftHSMv2 in the
          same run, with the raw OpenSSL limit
  conformance
          the cryptoki crate's published test-suite against the module and a
          local software HSM; prints the failures and which the profile causes
  cross   core + transport-embedded (with and without defmt) for
          thumbv7em-none-eabihf, thumbv6m-none-eabi, riscv32imc-unknown-none-elf;
          the no-allocator firmware, linted, with its flash and RAM sizes
  qemu    the firmware under qemu-system-arm signs through a local software
          HSM over its UART; OpenSSL verifies; stack high-water mark
  package [--profile release|dev] [--install-test]
          Debian packages of the module (with its p11-kit registration and
          /etc/hsmlink/hsmlink.toml) and of the server (systemd unit) into
          target/debian/; --install-test installs them, runs pkcs11-tool,
          p11-kit, p11tool and the OpenSSL engine against them, and purges them
  help    this text
";

/// The embedded target the core must keep building for.
const EMBEDDED_TARGET: &str = "thumbv7em-none-eabihf";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") if args.len() == 1 => demo(),
        Some("test") if args.len() == 1 => test(),
        Some("conformance") if args.len() == 1 => conformance::conformance(),
        Some("cross") => embedded::cross(&args[1..]),
        Some("qemu") => embedded::qemu(&args[1..]),
        Some("bench") => bench::bench(&workspace_root(), &target_dir(), &args[1..]),
        Some("bench-worker") => bench::worker_main(&args[1..]),
        Some("package") => package::package(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&workspace_root(), &args[1..]),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Paths and commands
// ---------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn section(title: &str) {
    println!("\n==================== {title} ====================");
}

fn step(text: &str) {
    println!("\n--- {text}");
}

fn show(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        if arg.contains(' ') || arg.is_empty() {
            text.push_str(&format!(" '{arg}'"));
        } else {
            text.push(' ');
            text.push_str(&arg);
        }
    }
    text
}

/// Runs `command` with inherited output; fails on a non-zero exit.
fn run(command: &mut Command) -> Result<()> {
    println!("$ {}", show(command));
    let status = command
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` exited with {status}", show(command)))
    }
}

/// Runs `command`, echoing and returning its standard output.
fn run_capture(command: &mut Command) -> Result<String> {
    println!("$ {}", show(command));
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(command)))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("`{}` exited with {}", show(command), output.status))
    }
}

/// The full path of `tool` on PATH, or an error naming the Debian package.
fn require_tool(tool: &str, package: &str) -> Result<PathBuf> {
    env::var_os("PATH")
        .and_then(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join(tool))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| format!("`{tool}` is not installed: run `apt-get install {package}`"))
}

// ---------------------------------------------------------------------------
// The software HSM
// ---------------------------------------------------------------------------

/// A running `hsmlink-hsm dev`, killed when dropped.
struct DevHsm {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl DevHsm {
    fn start(binary: &Path, user: &str, password: &str, log: PathBuf) -> Result<DevHsm> {
        let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--user",
                user,
                "--password",
                password,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        println!("$ {}", show(&command));
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let mut hsm = DevHsm {
            child,
            addr: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                println!("listening on {addr}");
                hsm.addr = addr;
                Ok(hsm)
            }
            Err(_) => Err(format!(
                "hsmlink-hsm did not print \"listening on ADDR\" within 30 s{}",
                hsm.log_tail()
            )),
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "\nlast lines of the HSM log ({}):\n{tail}",
                self.log.display()
            )
        }
    }
}

impl Drop for DevHsm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";

fn demo() -> Result<()> {
    section("demo: build the software HSM and the PKCS#11 module");
    run(cargo().args(["build", "-p", "hsmlink-hsm", "-p", "hsmlink-pkcs11"]))?;
    run_demo()
}

/// The demo proper, on the debug artefacts already built.
fn run_demo() -> Result<()> {
    let pkcs11_tool = require_tool("pkcs11-tool", "opensc")?;
    let openssl = require_tool("openssl", "openssl")?;
    let debug = target_dir().join("debug");
    let hsm_bin = debug.join("hsmlink-hsm");
    let module = debug.join("libhsmlink_pkcs11.so");
    for artefact in [&hsm_bin, &module] {
        if !artefact.is_file() {
            return Err(format!("{} was not built", artefact.display()));
        }
    }
    let work = target_dir().join("xtask-demo");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    section("demo: start a local software HSM");
    let hsm = DevHsm::start(&hsm_bin, DEMO_USER, DEMO_PASSWORD, work.join("hsm.log"))?;
    let result = demo_client(&pkcs11_tool, &openssl, &module, &hsm, &work);
    if result.is_err() {
        eprint!("{}", hsm.log_tail());
    }
    drop(hsm);
    println!(
        "\nsoftware HSM stopped; demo files are in {}",
        work.display()
    );
    result
}

fn demo_client(
    pkcs11_tool: &Path,
    openssl: &Path,
    module: &Path,
    hsm: &DevHsm,
    work: &Path,
) -> Result<()> {
    println!(
        "\nThe module is configured from the environment:\n  HSMLINK_ADDR={}\n  HSMLINK_USER={DEMO_USER}\n\
         and the PIN is that user's password.",
        hsm.addr
    );
    let tool = |args: &[&str]| {
        let mut command = Command::new(pkcs11_tool);
        command
            .arg("--module")
            .arg(module)
            .args(args)
            .env("HSMLINK_ADDR", &hsm.addr)
            .env("HSMLINK_USER", DEMO_USER)
            .current_dir(work);
        command
    };
    let login = ["--login", "--pin", DEMO_PASSWORD];

    section("demo: pkcs11-tool against the module");
    step("library and slot");
    run(&mut tool(&["--show-info"]))?;
    let slots = run_capture(&mut tool(&["--list-slots"]))?;
    if !slots.contains("Dinamo HSM") {
        return Err("pkcs11-tool --list-slots does not show the token \"Dinamo HSM\"".into());
    }
    step("log in and list the mechanisms");
    run(&mut tool(&[&login[..], &["--list-mechanisms"]].concat()))?;

    step("generate an EC P-256 key pair");
    run(&mut tool(
        &[
            &login[..],
            &[
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--id",
                "01",
                "--label",
                "demo-ec-p256",
            ],
        ]
        .concat(),
    ))?;
    step("generate an RSA-2048 key pair");
    run(&mut tool(
        &[
            &login[..],
            &[
                "--keypairgen",
                "--key-type",
                "rsa:2048",
                "--id",
                "02",
                "--label",
                "demo-rsa-2048",
            ],
        ]
        .concat(),
    ))?;
    step("list the objects");
    run(&mut tool(&[&login[..], &["--list-objects"]].concat()))?;

    let data = work.join("data.txt");
    fs::write(
        &data,
        b"hsmlink demo: signed inside the (software) HSM, verified by OpenSSL\n",
    )
    .map_err(|e| format!("{}: {e}", data.display()))?;

    let keys = [
        ("01", "EC P-256", "ECDSA-SHA256", "ec"),
        ("02", "RSA-2048", "SHA256-RSA-PKCS", "rsa"),
    ];
    for (id, name, mechanism, stem) in keys {
        step(&format!("sign data.txt with the {name} key ({mechanism})"));
        let sig = format!("{stem}.sig");
        let mut sign_args = vec![
            "--sign",
            "--id",
            id,
            "--mechanism",
            mechanism,
            "--input-file",
            "data.txt",
            "--output-file",
            &sig,
        ];
        if stem == "ec" {
            // DER ECDSA-Sig-Value, the form `openssl dgst -verify` reads.
            sign_args.extend(["--signature-format", "openssl"]);
        }
        run(&mut tool(&[&login[..], &sign_args].concat()))?;

        step(&format!("read the {name} public key"));
        let der = format!("{stem}-pub.der");
        run(&mut tool(
            &[
                &login[..],
                &[
                    "--read-object",
                    "--type",
                    "pubkey",
                    "--id",
                    id,
                    "--output-file",
                    &der,
                ],
            ]
            .concat(),
        ))?;
        let pem = format!("{stem}-pub.pem");
        let mut to_pem = Command::new(openssl);
        to_pem
            .args([
                "pkey", "-pubin", "-inform", "DER", "-in", &der, "-out", &pem,
            ])
            .current_dir(work);
        run(&mut to_pem)?;
        let mut text = Command::new(openssl);
        text.args(["pkey", "-pubin", "-in", &pem, "-noout", "-text"])
            .current_dir(work);
        run(&mut text)?;

        step(&format!("verify the {name} signature with OpenSSL"));
        let mut verify = Command::new(openssl);
        verify
            .args([
                "dgst",
                "-sha256",
                "-verify",
                &pem,
                "-signature",
                &sig,
                "data.txt",
            ])
            .current_dir(work);
        let out = run_capture(&mut verify)?;
        if !out.contains("Verified OK") {
            return Err(format!("OpenSSL did not verify the {name} signature"));
        }
        println!("{name} ({mechanism}): signature verified by OpenSSL");
    }
    section("demo: done");
    println!("EC P-256 (ECDSA-SHA256): signature verified by OpenSSL");
    println!("RSA-2048 (SHA256-RSA-PKCS): signature verified by OpenSSL");
    Ok(())
}

// ---------------------------------------------------------------------------
// test
// ---------------------------------------------------------------------------

fn test() -> Result<()> {
    let started = Instant::now();
    section("build: software HSM and PKCS#11 module");
    run(cargo().args(["build", "-p", "hsmlink-hsm", "-p", "hsmlink-pkcs11"]))?;

    section("format: cargo fmt --all --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;

    section("lint: cargo clippy --workspace --all-targets -- -D warnings");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    section("tests: cargo test --workspace");
    run(cargo().args(["test", "--workspace"]))?;

    section("demo: pkcs11-tool session against the module, OpenSSL verifying");
    run_demo()?;

    section(&format!(
        "embedded: cargo build -p hsmlink-core --target {EMBEDDED_TARGET}"
    ));
    ensure_target(EMBEDDED_TARGET)?;
    run(cargo().args(["build", "-p", "hsmlink-core", "--target", EMBEDDED_TARGET]))?;

    section("all checks passed");
    println!("in {:.0?}", started.elapsed());
    Ok(())
}

/// Adds a rustup target if it is not installed yet.
fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target]))
}
