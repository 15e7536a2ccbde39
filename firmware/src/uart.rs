//! An embedded-nal "TCP stack" over UART0: the board has no network, so the
//! UART is the wire, and whatever sits on the other end (QEMU's
//! `-serial tcp:HOST:PORT`, a serial-to-TCP bridge on a real gateway) carries
//! the bytes to the HSM.
//!
//! There is one wire, so one socket at a time; connecting is immediate (the
//! other end is already connected). Closing a socket drains what the UART
//! still holds, so that a new connection does not read a stale reply.

use core::net::SocketAddr;

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use tm4c129x::UART0;

/// UART0 as a one-socket stack.
pub struct UartStack {
    uart: UART0,
    open: bool,
}

/// The one socket.
pub struct Wire;

/// What can go wrong on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartError {
    /// The wire already carries a connection.
    InUse,
    /// A received byte came with a framing, parity, break or overrun error.
    Line,
}

impl TcpError for UartError {
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::Other
    }
}

impl UartStack {
    /// Enable UART0 with its FIFOs, 8 data bits.
    pub fn new(uart: UART0) -> Self {
        uart.ctl.modify(|_, w| w.uarten().clear_bit());
        uart.lcrh.write(|w| w.wlen()._8().fen().set_bit());
        uart.ctl
            .modify(|_, w| w.txe().set_bit().rxe().set_bit().uarten().set_bit());
        UartStack { uart, open: false }
    }
}

impl TcpClientStack for UartStack {
    type TcpSocket = Wire;
    type Error = UartError;

    fn socket(&mut self) -> Result<Wire, UartError> {
        if self.open {
            return Err(UartError::InUse);
        }
        self.open = true;
        Ok(Wire)
    }

    fn connect(&mut self, _: &mut Wire, _: SocketAddr) -> nb::Result<(), UartError> {
        Ok(())
    }

    fn send(&mut self, _: &mut Wire, data: &[u8]) -> nb::Result<usize, UartError> {
        let mut sent = 0;
        for &byte in data {
            if self.uart.fr.read().txff().bit_is_set() {
                break;
            }
            self.uart.dr.write(|w| w.data().bits(byte));
            sent += 1;
        }
        if sent == 0 && !data.is_empty() {
            Err(nb::Error::WouldBlock)
        } else {
            Ok(sent)
        }
    }

    fn receive(&mut self, _: &mut Wire, buf: &mut [u8]) -> nb::Result<usize, UartError> {
        let mut got = 0;
        for slot in buf.iter_mut() {
            if self.uart.fr.read().rxfe().bit_is_set() {
                break;
            }
            let dr = self.uart.dr.read();
            if dr.oe().bit_is_set()
                || dr.be().bit_is_set()
                || dr.pe().bit_is_set()
                || dr.fe().bit_is_set()
            {
                return Err(nb::Error::Other(UartError::Line));
            }
            *slot = dr.data().bits();
            got += 1;
        }
        if got == 0 && !buf.is_empty() {
            Err(nb::Error::WouldBlock)
        } else {
            Ok(got)
        }
    }

    fn close(&mut self, _: Wire) -> Result<(), UartError> {
        while self.uart.fr.read().rxfe().bit_is_clear() {
            let _ = self.uart.dr.read();
        }
        self.open = false;
        Ok(())
    }
}
