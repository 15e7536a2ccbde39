//! The transport contract.

use crate::ck::{ckr, Rv};

/// Why a link failed. Each maps to a `CKR_*` the application sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// Could not reach the HSM.
    Connect,
    /// The peer closed the connection or a read/write failed.
    Io,
    /// No answer within the configured time.
    Timeout,
    /// The peer sent a frame longer than the buffer or the limit.
    FrameTooLong,
}

impl LinkError {
    /// `CKR_DEVICE_ERROR` for every link failure: the HSM is unreachable.
    pub const fn rv(self) -> Rv {
        ckr::DEVICE_ERROR
    }
}

/// One request frame out, one reply frame in.
///
/// `request` is a whole frame (4-byte little-endian length + body, see
/// [`crate::wire`]). The implementation writes it, then reads one reply frame,
/// checks its announced length against `reply.len()` (longer is
/// [`LinkError::FrameTooLong`], and the link must then be considered broken),
/// and stores the reply *body* (without header) at the start of `reply`,
/// returning its length. Every read and write is bounded in time.
pub trait Link {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError>;

    /// Whether the connection still works, checked before a request when it
    /// has been idle long (a link may answer `true` without checking). A
    /// link that says `false` is dropped and replaced.
    fn check_alive(&mut self) -> bool {
        true
    }

    /// Whether [`Link::send`] and [`Link::recv`] may be used apart, so that
    /// several requests are in flight at once (the HSM answers in order).
    /// Large multi-part data is then pipelined.
    fn can_pipeline(&self) -> bool {
        false
    }

    /// Write one request frame without waiting for its reply (only when
    /// [`Link::can_pipeline`]).
    fn send(&mut self, _request: &[u8]) -> Result<(), LinkError> {
        Err(LinkError::Io)
    }

    /// Read the next reply frame, as [`Link::exchange`] does (only when
    /// [`Link::can_pipeline`]).
    fn recv(&mut self, _reply: &mut [u8]) -> Result<usize, LinkError> {
        Err(LinkError::Io)
    }

    /// Whether a password may be sent on this link: its peer is this
    /// machine, or the link is encrypted and the peer verified. The core
    /// sends `Login` only on a link that says `true`; a link that says
    /// `false` should say why in its log (naming the peer, never the
    /// password). A link that cannot tell answers `true`.
    fn may_carry_password(&self) -> bool {
        true
    }

    /// End the connection in order: the HSM destroys the session's objects
    /// when it sees the end, and a link that can should wait (bounded) until
    /// the HSM has closed its side, so that when `C_CloseSession` returns the
    /// objects are gone for every other session too. Dropping the link
    /// without calling this is an abrupt close.
    fn close(&mut self) {}
}

/// Makes links: one per PKCS#11 session.
pub trait Connector {
    type Link: Link;
    /// Open a new connection to the HSM (TCP connect, TLS, ...). `host` is
    /// the `host[:port]` of a special PIN (`user:password@host`), overriding
    /// the configured address. The core then sends `Hello` and `Login`.
    fn connect(&self, host: Option<&str>) -> Result<Self::Link, LinkError>;
}
