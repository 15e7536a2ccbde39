//! `cargo xtask cross` and `cargo xtask qemu`: hsmlink on microcontrollers.
//!
//! - `cross`: builds `hsmlink-core` + `hsmlink-transport-embedded`, with and
//!   without `defmt`, for every embedded target; then the no-allocator
//!   firmware (`firmware/`, its own workspace) for `thumbv7em-none-eabihf`
//!   at `opt-level = "z"`, lints it, and prints its flash and static RAM.
//! - `qemu`: builds the firmware and the software HSM, starts a development
//!   HSM, and runs the firmware twice under `qemu-system-arm` (lm3s6965evb
//!   with a Cortex-M4 core) with UART0 connected to the HSM's TCP port. The
//!   first run generates the gateway's P-256 key, the second finds it by
//!   label; both sign, and OpenSSL verifies each signature on the host. The
//!   RAM is read through the QEMU monitor after each run to measure the
//!   stack's high-water mark (cortex-m-rt paints the stack at reset).
//!
//! Only `std`, like the rest of xtask: ELF sizes are read here, and the
//! signature is checked by the `openssl` command line.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{
    cargo, ensure_target, require_tool, run, section, show, target_dir, workspace_root, DevHsm,
};

type Result<T> = std::result::Result<T, String>;

/// The microcontroller targets, and the feature sets each is built with.
const CROSS: &[(&str, &[&str])] = &[
    ("thumbv7em-none-eabihf", &["", "defmt"]),
    (
        "thumbv6m-none-eabi",
        &["portable-atomic", "portable-atomic,defmt"],
    ),
    (
        "riscv32imc-unknown-none-elf",
        &["portable-atomic", "portable-atomic,defmt"],
    ),
];

/// The firmware's target.
const FIRMWARE_TARGET: &str = "thumbv7em-none-eabihf";
/// The HSM user and password the firmware logs in with (firmware/src/main.rs).
const FIRMWARE_USER: &str = "gateway";
const FIRMWARE_PASSWORD: &str = "gateway-password";
/// The message the firmware signs (firmware/src/main.rs), checked as printed.
const FIRMWARE_MESSAGE: &[u8] = b"hsmlink gateway reading: t=21.5C door=closed seq=1";
/// The board's RAM (firmware/memory.x).
const RAM_START: u32 = 0x2000_0000;
const RAM_SIZE: u32 = 64 * 1024;
/// The value cortex-m-rt paints the stack with (`paint-stack`).
const STACK_PAINT: u32 = 0xcccc_cccc;
/// Longest a firmware run may take under QEMU.
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// `cargo xtask cross`.
pub fn cross(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Err(format!("cross takes no arguments, got {args:?}"));
    }
    let started = Instant::now();
    for (target, feature_sets) in CROSS {
        ensure_target(target)?;
        for features in *feature_sets {
            section(&format!(
                "cross: core + transport-embedded for {target}{}",
                if features.is_empty() {
                    String::new()
                } else {
                    format!(" with {features}")
                }
            ));
            let mut command = cargo();
            command.args([
                "build",
                "-p",
                "hsmlink-core",
                "-p",
                "hsmlink-transport-embedded",
                "--target",
                target,
            ]);
            if !features.is_empty() {
                let qualified: Vec<String> = features
                    .split(',')
                    .map(|f| format!("hsmlink-transport-embedded/{f}"))
                    .collect();
                command.args(["--features", &qualified.join(",")]);
            }
            run(&mut command)?;
        }
    }

    section("cross: firmware (no global allocator), lint");
    run(firmware_cargo().args(["fmt", "--check"]))?;
    run(firmware_cargo().args(["clippy", "--release", "--", "-D", "warnings"]))?;
    let elf = build_firmware()?;
    print_sizes(&elf)?;
    println!("\ncross: every target built in {:.0?}", started.elapsed());
    Ok(())
}

/// `cargo xtask qemu`.
pub fn qemu(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Err(format!("qemu takes no arguments, got {args:?}"));
    }
    let qemu = require_tool("qemu-system-arm", "qemu-system-arm")?;
    let openssl = require_tool("openssl", "openssl")?;
    let elf = build_firmware()?;
    let sizes = print_sizes(&elf)?;

    section("qemu: the software HSM");
    run(cargo().args(["build", "-p", "hsmlink-hsm"]))?;
    let work = target_dir().join("qemu");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let hsm = DevHsm::start(
        &target_dir().join("debug").join("hsmlink-hsm"),
        FIRMWARE_USER,
        FIRMWARE_PASSWORD,
        work.join("hsm.log"),
    )?;

    let mut marks = Vec::new();
    let mut first_point = None;
    for (run_no, expect) in [(1, "generated key pair"), (2, "found key")] {
        section(&format!(
            "qemu: firmware run {run_no} on lm3s6965evb (Cortex-M4), UART0 -> {}",
            hsm.addr
        ));
        let outcome =
            run_firmware(&qemu, &elf, &hsm, &work).map_err(|e| format!("{e}{}", hsm.log_tail()))?;
        if !outcome.lines.iter().any(|l| l.contains(expect)) {
            return Err(format!("firmware run {run_no} did not say \"{expect}\""));
        }
        let point = outcome.field("ec-point")?;
        let message = outcome.field("message")?;
        let signature = outcome.field("signature")?;
        if message != FIRMWARE_MESSAGE {
            return Err("the firmware printed another message than it signs".into());
        }
        if let Some(first) = &first_point {
            if *first != point {
                return Err("the second run found another key than the first made".into());
            }
        }
        verify_p256(&openssl, &work, &point, &message, &signature)?;
        first_point = Some(point);
        let mark = stack_high_water(&outcome.ram, &sizes)?;
        println!("stack high-water mark: {mark} bytes");
        marks.push(mark);
    }

    section("qemu: summary");
    println!(
        "firmware {}: flash {} B (text {} + data {}), static RAM {} B (data {} + bss {})",
        FIRMWARE_TARGET,
        sizes.text + sizes.data,
        sizes.text,
        sizes.data,
        sizes.data + sizes.bss,
        sizes.data,
        sizes.bss
    );
    println!(
        "stack high-water mark: {} B (run 1: login, generate, sign), {} B (run 2: login, find, sign)",
        marks[0], marks[1]
    );
    println!("both signatures verified by OpenSSL on the host");
    Ok(())
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

/// Cargo in `firmware/` (its own workspace and target configuration), with
/// its artefacts under `target/firmware`.
fn firmware_cargo() -> Command {
    let mut command = cargo();
    command
        .current_dir(workspace_root().join("firmware"))
        .env("CARGO_TARGET_DIR", target_dir().join("firmware"));
    command
}

/// Build the firmware (release, `opt-level = "z"`); returns the ELF.
fn build_firmware() -> Result<PathBuf> {
    ensure_target(FIRMWARE_TARGET)?;
    section("firmware: build for thumbv7em-none-eabihf, no global allocator");
    run(firmware_cargo().args(["build", "--release"]))?;
    let elf = target_dir()
        .join("firmware")
        .join(FIRMWARE_TARGET)
        .join("release")
        .join("hsmlink-firmware");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("{} was not built", elf.display()))
    }
}

// ---------------------------------------------------------------------------
// Sizes: ELF32 section and symbol tables
// ---------------------------------------------------------------------------

/// Berkeley-style sizes of a firmware image, and where its stack lies.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Code and read-only data (allocated, not writable): flash only.
    text: u32,
    /// Initialised statics: flash (their image) and RAM.
    data: u32,
    /// Zeroed and uninitialised statics: RAM only.
    bss: u32,
    /// `_stack_end` .. `_stack_start`: the stack's lowest and initial address.
    stack_end: u32,
    stack_start: u32,
}

const SHF_WRITE: u32 = 0x1;
const SHF_ALLOC: u32 = 0x2;
const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "truncated ELF".to_string())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "truncated ELF".to_string())
}

fn elf_sizes(elf: &[u8]) -> Result<Sizes> {
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 1, 1]) {
        return Err("not a little-endian ELF32 file".into());
    }
    let shoff = u32_at(elf, 0x20)? as usize;
    let shentsize = u16_at(elf, 0x2e)? as usize;
    let shnum = u16_at(elf, 0x30)? as usize;
    let mut sizes = Sizes {
        text: 0,
        data: 0,
        bss: 0,
        stack_end: 0,
        stack_start: 0,
    };
    let mut symtab = None;
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let ty = u32_at(elf, h + 4)?;
        let flags = u32_at(elf, h + 8)?;
        let size = u32_at(elf, h + 20)?;
        if ty == SHT_SYMTAB {
            symtab = Some((
                u32_at(elf, h + 16)? as usize,
                size as usize,
                u32_at(elf, h + 24)? as usize,
            ));
        }
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        if flags & SHF_WRITE == 0 {
            sizes.text += size;
        } else if ty == SHT_NOBITS {
            sizes.bss += size;
        } else {
            sizes.data += size;
        }
    }
    let (offset, size, link) = symtab.ok_or("the ELF has no symbol table")?;
    let strtab = shoff + link * shentsize;
    let str_offset = u32_at(elf, strtab + 16)? as usize;
    for sym in (offset..offset + size).step_by(16) {
        let name_at = str_offset + u32_at(elf, sym)? as usize;
        let name: Vec<u8> = elf
            .get(name_at..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&c| c != 0)
            .copied()
            .collect();
        match name.as_slice() {
            b"_stack_start" => sizes.stack_start = u32_at(elf, sym + 4)?,
            b"_stack_end" => sizes.stack_end = u32_at(elf, sym + 4)?,
            _ => {}
        }
    }
    if sizes.stack_start == 0 || sizes.stack_end == 0 {
        return Err("the ELF has no _stack_start/_stack_end (not cortex-m-rt?)".into());
    }
    Ok(sizes)
}

fn print_sizes(elf: &Path) -> Result<Sizes> {
    let bytes = fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let sizes = elf_sizes(&bytes)?;
    section("firmware: sizes");
    println!("{}", elf.display());
    println!("{:>8} {:>8} {:>8}", "text", "data", "bss");
    println!("{:>8} {:>8} {:>8}", sizes.text, sizes.data, sizes.bss);
    let kib = |n: u32| f64::from(n) / 1024.0;
    println!(
        "flash {:.1} KiB (text + data), static RAM {:.1} KiB (data + bss), stack {:.1} KiB",
        kib(sizes.text + sizes.data),
        kib(sizes.data + sizes.bss),
        kib(sizes.stack_start - sizes.stack_end)
    );
    Ok(sizes)
}

/// Bytes of the stack ever used: from the top down to the lowest word whose
/// paint was scrubbed off.
fn stack_high_water(ram: &[u8], sizes: &Sizes) -> Result<u32> {
    let word = |addr: u32| -> Result<u32> {
        let at = addr
            .checked_sub(RAM_START)
            .ok_or("stack outside the RAM dump")? as usize;
        u32_at(ram, at)
    };
    let mut addr = sizes.stack_end.next_multiple_of(4);
    while addr < sizes.stack_start {
        if word(addr)? != STACK_PAINT {
            return Ok(sizes.stack_start - addr);
        }
        addr += 4;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------
// Running the firmware
// ---------------------------------------------------------------------------

/// What a firmware run printed, and its RAM once it halted.
struct Outcome {
    lines: Vec<String>,
    ram: Vec<u8>,
}

impl Outcome {
    /// The bytes of a `hsmlink-fw: NAME HEX` line.
    fn field(&self, name: &str) -> Result<Vec<u8>> {
        let prefix = format!("hsmlink-fw: {name} ");
        let hex = self
            .lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .ok_or_else(|| format!("the firmware printed no {name}"))?;
        from_hex(hex.trim()).ok_or_else(|| format!("bad hex for {name}: {hex}"))
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Kills QEMU if the run is abandoned.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_firmware(qemu: &Path, elf: &Path, hsm: &DevHsm, work: &Path) -> Result<Outcome> {
    // A short path: a Unix socket's path is limited to about 100 bytes.
    let monitor = env::temp_dir().join(format!("hsmlink-qemu-{}.sock", std::process::id()));
    let ram_dump = work.join("ram.bin");
    let _ = fs::remove_file(&monitor);
    let _ = fs::remove_file(&ram_dump);
    let mut command = Command::new(qemu);
    command
        .args(["-machine", "lm3s6965evb", "-cpu", "cortex-m4", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .arg("-serial")
        .arg(format!("tcp:{}", hsm.addr))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", show(&command));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut qemu_process = Qemu(child);
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut lines = Vec::new();
    let finished = loop {
        let left = QEMU_TIMEOUT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("{line}");
                let done = line.trim() == "hsmlink-fw: done";
                lines.push(line);
                if done {
                    break true;
                }
            }
            // QEMU exited (the firmware failed) or the time ran out.
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the firmware did not finish within {QEMU_TIMEOUT:?}"
                ))
            }
        }
    };
    if !finished {
        let status = qemu_process.0.wait().ok();
        let errors = errors.join().unwrap_or_default();
        return Err(format!(
            "the firmware stopped without \"done\" (QEMU {status:?}){}",
            if errors.trim().is_empty() {
                String::new()
            } else {
                format!("; QEMU said:\n{errors}")
            }
        ));
    }
    println!("(firmware ran {:.1?})", started.elapsed());

    // The firmware halted: read its RAM through the monitor, then quit.
    let mut mon = UnixStream::connect(&monitor)
        .map_err(|e| format!("QEMU monitor {}: {e}", monitor.display()))?;
    mon.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    monitor_command(
        &mut mon,
        &format!(
            "pmemsave {RAM_START:#x} {RAM_SIZE} \"{}\"",
            ram_dump.display()
        ),
    )?;
    let _ = mon.write_all(b"quit\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemu_process.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_file(&monitor);
    let ram = fs::read(&ram_dump).map_err(|e| format!("{}: {e}", ram_dump.display()))?;
    if ram.len() != RAM_SIZE as usize {
        return Err(format!("RAM dump of {} bytes", ram.len()));
    }
    Ok(Outcome { lines, ram })
}

/// Send one monitor command and wait for the next prompt.
fn monitor_command(mon: &mut UnixStream, command: &str) -> Result<()> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 512];
    let mut wait_prompt = |mon: &mut UnixStream, seen: &mut Vec<u8>| -> Result<()> {
        while !String::from_utf8_lossy(seen).contains("(qemu) ") {
            let n = mon
                .read(&mut chunk)
                .map_err(|e| format!("QEMU monitor: {e}"))?;
            if n == 0 {
                return Err("QEMU monitor closed".into());
            }
            seen.extend_from_slice(&chunk[..n]);
        }
        seen.clear();
        Ok(())
    };
    wait_prompt(mon, &mut seen)?;
    mon.write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("QEMU monitor: {e}"))?;
    wait_prompt(mon, &mut seen)
}

// ---------------------------------------------------------------------------
// Verifying with OpenSSL
// ---------------------------------------------------------------------------

/// SubjectPublicKeyInfo of a P-256 key, up to the point: id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes (no unused bits, then the point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A DER INTEGER of the unsigned big-endian `n`.
fn der_integer(n: &[u8]) -> Vec<u8> {
    let mut n: Vec<u8> = n.iter().copied().skip_while(|&b| b == 0).collect();
    if n.first().is_none_or(|&b| b & 0x80 != 0) {
        n.insert(0, 0);
    }
    let mut out = vec![0x02, n.len() as u8];
    out.extend(n);
    out
}

/// PKCS#11 ECDSA `r || s` as a DER ECDSA-Sig-Value.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = der_integer(r);
    body.extend(der_integer(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn verify_p256(
    openssl: &Path,
    work: &Path,
    ec_point: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    // CKA_EC_POINT: DER OCTET STRING of the 65-byte uncompressed point.
    let point = match ec_point {
        [0x04, 0x41, point @ ..] if point.len() == 65 && point[0] == 0x04 => point,
        _ => return Err(format!("unexpected CKA_EC_POINT {ec_point:02x?}")),
    };
    if signature.len() != 64 {
        return Err(format!("a P-256 signature of {} bytes", signature.len()));
    }
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    let files = [
        ("pub.der", spki),
        ("sig.der", der_signature(signature)),
        ("message.bin", message.to_vec()),
        ("tampered.bin", [message, b"!"].concat()),
    ];
    for (name, bytes) in &files {
        fs::write(work.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    let verify = |data: &str| {
        let mut command = Command::new(openssl);
        command
            .current_dir(work)
            .args(["dgst", "-sha256", "-keyform", "DER", "-verify", "pub.der"])
            .args(["-signature", "sig.der", data]);
        println!("$ {}", show(&command));
        command.output()
    };
    let good = verify("message.bin").map_err(|e| format!("openssl: {e}"))?;
    print!("{}", String::from_utf8_lossy(&good.stdout));
    if !good.status.success() {
        return Err(format!(
            "OpenSSL rejects the firmware's signature: {}",
            String::from_utf8_lossy(&good.stderr)
        ));
    }
    let bad = verify("tampered.bin").map_err(|e| format!("openssl: {e}"))?;
    if bad.status.success() {
        return Err("OpenSSL accepts the signature for another message".into());
    }
    println!("(and refuses it for another message)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_integer(&[0, 0, 1]), [2, 1, 1]);
        assert_eq!(der_integer(&[0x80]), [2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[0, 0]), [2, 1, 0]);
        assert_eq!(
            der_signature(&[0x7f, 0x01, 0x00, 0x81]),
            [0x30, 8, 2, 2, 0x7f, 0x01, 2, 2, 0x00, 0x81]
        );
        assert_eq!(from_hex("00ff10"), Some(vec![0, 0xff, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
