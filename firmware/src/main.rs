//! A gateway firmware that signs through the HSM, with no heap.
//!
//! It links hsmlink's core and embedded transport for a Cortex-M4F
//! (`thumbv7em-none-eabihf`) with no global allocator: anything that reached
//! for `alloc` would fail the link. It runs on QEMU's `lm3s6965evb` board
//! with a Cortex-M4 core (`cargo xtask qemu`): UART0 is the wire to the HSM
//! (QEMU connects it to the HSM's TCP port), and semihosting carries the
//! console and the exit code.
//!
//! What it does: log in as [`USER`], find the private key labelled
//! [`LABEL`] (generating a persistent P-256 pair the first time), read the
//! public point, sign [`MESSAGE`] with `CKM_ECDSA_SHA256` (hashed here, on the
//! device) and print the point, the message and the signature in hex for
//! the host to verify. Then it prints `hsmlink-fw: done` and halts; on an
//! error it prints the `CKR_*` value and exits with a failure (semihosting).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

mod uart;

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use hsmlink_core::ck::{ckm, cko, ckr, Rv};
use hsmlink_core::wire::Mechanism;
use hsmlink_transport_embedded::gateway::{Config, Curve, Gateway, Resources};
use hsmlink_transport_embedded::tcp::{TcpConnector, TcpLink};
use hsmlink_transport_embedded::{Policy, Polls, SharedStack};
use static_cell::StaticCell;

use uart::UartStack;

/// The HSM user of this gateway.
const USER: &str = "gateway";
/// Its password. A real gateway reads it from protected storage; this one is
/// the password `cargo xtask qemu` gives the development HSM.
const PASSWORD: &[u8] = b"gateway-password";
/// The label of the gateway's signing key.
const LABEL: &[u8] = b"gateway-p256";
/// What the gateway signs.
const MESSAGE: &[u8] = b"hsmlink gateway reading: t=21.5C door=closed seq=1";
/// Frame buffer size of a session (two per session).
const BUF: usize = 2048;

/// Bounds counted in polls of the UART (the board has no timer set up): the
/// HSM answers in well under a second, about 10^6 polls under QEMU.
const POLICY: Policy = Policy {
    connect_attempts: 1,
    connect_timeout: 1_000,
    retry_pause: 0,
    io_timeout: 50_000_000,
};

type Link = TcpLink<'static, UartStack, Polls>;

/// One session's slot and buffers, in `.bss`.
static RESOURCES: Resources<Link, 1, BUF> = Resources::new();
static CLOCK: Polls = Polls::new();
static STACK: StaticCell<SharedStack<UartStack>> = StaticCell::new();

#[entry]
fn main() -> ! {
    match run() {
        // Halt rather than exit, so that the host can still read the RAM
        // (the stack's high-water mark); `cargo xtask qemu` then quits QEMU.
        Ok(()) => hprintln!("hsmlink-fw: done"),
        Err(rv) => {
            hprintln!("hsmlink-fw: failed with CKR 0x{:x}", rv);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), Rv> {
    let peripherals = tm4c129x::Peripherals::take().ok_or(ckr::GENERAL_ERROR)?;
    let stack = STACK.init(SharedStack::new(UartStack::new(peripherals.UART0)));
    // Over the UART the address is only nominal.
    let remote = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4433));
    let connector = TcpConnector::new(stack, &CLOCK, remote, POLICY);
    let gateway = Gateway::new(
        &RESOURCES,
        connector,
        &Config::new(USER, *b"hsmlink-fw-qemu!"),
    )?;

    let session = gateway.open_session()?;
    session.login(PASSWORD)?;
    hprintln!("hsmlink-fw: logged in as {}", USER);

    let key = match session.find_key(cko::PRIVATE_KEY, LABEL)? {
        Some(key) => {
            hprintln!("hsmlink-fw: found key {}", key);
            key
        }
        None => {
            let pair = session.generate_ec_key_pair(Curve::P256, LABEL, true)?;
            hprintln!(
                "hsmlink-fw: generated key pair {} / {}",
                pair.public,
                pair.private
            );
            pair.private
        }
    };
    let public = session
        .find_key(cko::PUBLIC_KEY, LABEL)?
        .ok_or(ckr::OBJECT_HANDLE_INVALID)?;
    let mut point = [0u8; 80];
    let n = session.ec_point(public, &mut point)?;
    print_hex("ec-point", point.get(..n).unwrap_or(&[]));

    let mut signature = [0u8; 64];
    let n = session.sign(
        &Mechanism::plain(ckm::ECDSA_SHA256),
        key,
        MESSAGE,
        &mut signature,
    )?;
    print_hex("message", MESSAGE);
    print_hex("signature", signature.get(..n).unwrap_or(&[]));
    Ok(())
}

/// Print `hsmlink-fw: NAME HEX` (at most 96 bytes).
fn print_hex(name: &str, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 192];
    let mut len = 0;
    for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'?');
        }
        len += 2;
    }
    let text = text.get(..len).unwrap_or(&[]);
    hprintln!(
        "hsmlink-fw: {} {}",
        name,
        core::str::from_utf8(text).unwrap_or("?")
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("hsmlink-fw: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
