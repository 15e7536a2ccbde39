//! The core's [`Connector`] and [`Link`] over an embedded-nal TCP stack.
//!
//! Every non-blocking call is retried while the stack answers "would block",
//! calling [`Clock::wait`] in between, until it completes or its bound in the
//! [`Policy`] runs out. A link whose send or receive failed closes its socket
//! at once and refuses further exchanges: the core then drops it and connects
//! a new one on the next call.

use core::net::{IpAddr, SocketAddr};

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use hsmlink_core::link::{Connector, Link, LinkError};
use hsmlink_core::wire::{frame_len, HEADER_LEN};

use crate::policy::{Clock, Deadline, Policy};
use crate::stack::SharedStack;

/// The HSM's port when an address names none.
pub const DEFAULT_PORT: u16 = 4433;

/// Makes [`TcpLink`]s to one HSM through a shared stack. Cheap to copy: it
/// holds references and the policy.
pub struct TcpConnector<'a, S, K> {
    stack: &'a SharedStack<S>,
    clock: &'a K,
    remote: SocketAddr,
    policy: Policy,
}

impl<S, K> Clone for TcpConnector<'_, S, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, K> Copy for TcpConnector<'_, S, K> {}

impl<'a, S: TcpClientStack, K: Clock> TcpConnector<'a, S, K> {
    /// Links to the HSM at `remote` through `stack`, timed by `clock`.
    pub const fn new(
        stack: &'a SharedStack<S>,
        clock: &'a K,
        remote: SocketAddr,
        policy: Policy,
    ) -> Self {
        TcpConnector {
            stack,
            clock,
            remote,
            policy,
        }
    }

    /// The configured HSM address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The bounds in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// One connection attempt.
    fn dial(&self, remote: SocketAddr) -> Result<TcpLink<'a, S, K>, LinkError> {
        let mut socket = match self.stack.with(|s| s.socket()) {
            Some(Ok(socket)) => socket,
            Some(Err(e)) => {
                warn!("no socket available ({})", kind_name(e.kind()));
                return Err(LinkError::Connect);
            }
            None => return Err(LinkError::Connect),
        };
        let deadline = Deadline::start(self.clock, self.policy.connect_timeout);
        loop {
            match self.stack.with(|s| s.connect(&mut socket, remote)) {
                Some(Ok(())) => {
                    return Ok(TcpLink {
                        connector: *self,
                        socket: Some(socket),
                    })
                }
                Some(Err(nb::Error::WouldBlock)) if !deadline.expired(self.clock) => {
                    self.clock.wait()
                }
                outcome => {
                    match outcome {
                        Some(Err(nb::Error::Other(e))) => {
                            debug!("connect failed ({})", kind_name(e.kind()))
                        }
                        Some(_) => debug!("connect timed out"),
                        None => {}
                    }
                    let _ = self.stack.with(|s| s.close(socket));
                    return Err(LinkError::Connect);
                }
            }
        }
    }

    /// Wait `ticks` ticks of the clock.
    fn pause(&self, ticks: u32) {
        let deadline = Deadline::start(self.clock, ticks);
        while !deadline.expired(self.clock) {
            self.clock.wait();
        }
    }
}

impl<'a, S: TcpClientStack, K: Clock> Connector for TcpConnector<'a, S, K> {
    type Link = TcpLink<'a, S, K>;

    /// Connect to the configured HSM, or to `host` (an IP address with an
    /// optional port; there is no name resolution here), with up to
    /// [`Policy::connect_attempts`] attempts.
    fn connect(&self, host: Option<&str>) -> Result<TcpLink<'a, S, K>, LinkError> {
        let remote = match host {
            Some(h) => parse_addr(h).ok_or(LinkError::Connect)?,
            None => self.remote,
        };
        let attempts = self.policy.connect_attempts.max(1);
        let mut attempt = 0;
        loop {
            match self.dial(remote) {
                Ok(link) => return Ok(link),
                Err(e) => {
                    attempt += 1;
                    if attempt >= attempts {
                        warn!("HSM unreachable after {} attempts", attempts);
                        return Err(e);
                    }
                    self.pause(self.policy.retry_pause);
                }
            }
        }
    }
}

/// `a.b.c.d[:port]`, `[v6]:port` or a bare IPv6 address; the port defaults
/// to [`DEFAULT_PORT`].
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
}

/// One TCP connection to the HSM; closes its socket when dropped.
pub struct TcpLink<'a, S: TcpClientStack, K> {
    connector: TcpConnector<'a, S, K>,
    /// `None` once closed.
    socket: Option<S::TcpSocket>,
}

impl<S: TcpClientStack, K: Clock> TcpLink<'_, S, K> {
    /// Whether the socket is still open (no exchange has failed).
    pub fn is_open(&self) -> bool {
        self.socket.is_some()
    }

    fn close(&mut self) {
        if let Some(socket) = self.socket.take() {
            let _ = self.connector.stack.with(|s| s.close(socket));
        }
    }

    fn send_all(&mut self, mut data: &[u8]) -> Result<(), LinkError> {
        let TcpConnector {
            stack,
            clock,
            policy,
            ..
        } = self.connector;
        let socket = self.socket.as_mut().ok_or(LinkError::Io)?;
        let mut deadline = Deadline::start(clock, policy.io_timeout);
        while !data.is_empty() {
            match stack.with(|s| s.send(socket, data)) {
                Some(Ok(n)) if n > 0 => {
                    data = data.get(n..).ok_or(LinkError::Io)?;
                    deadline = Deadline::start(clock, policy.io_timeout);
                }
                Some(Ok(_)) | Some(Err(nb::Error::WouldBlock)) => {
                    if deadline.expired(clock) {
                        warn!("send timed out");
                        return Err(LinkError::Timeout);
                    }
                    clock.wait();
                }
                Some(Err(nb::Error::Other(e))) => {
                    warn!("send failed ({})", kind_name(e.kind()));
                    return Err(LinkError::Io);
                }
                None => return Err(LinkError::Io),
            }
        }
        Ok(())
    }

    fn receive_exact(&mut self, mut buf: &mut [u8]) -> Result<(), LinkError> {
        let TcpConnector {
            stack,
            clock,
            policy,
            ..
        } = self.connector;
        let socket = self.socket.as_mut().ok_or(LinkError::Io)?;
        let mut deadline = Deadline::start(clock, policy.io_timeout);
        while !buf.is_empty() {
            match stack.with(|s| s.receive(socket, buf)) {
                // embedded-nal answers "would block" when no data is there
                // yet: zero bytes means the peer closed the connection.
                Some(Ok(0)) => {
                    warn!("the HSM closed the connection");
                    return Err(LinkError::Io);
                }
                Some(Ok(n)) => {
                    buf = core::mem::take(&mut buf)
                        .get_mut(n..)
                        .ok_or(LinkError::Io)?;
                    deadline = Deadline::start(clock, policy.io_timeout);
                }
                Some(Err(nb::Error::WouldBlock)) => {
                    if deadline.expired(clock) {
                        warn!("no answer from the HSM in time");
                        return Err(LinkError::Timeout);
                    }
                    clock.wait();
                }
                Some(Err(nb::Error::Other(e))) => {
                    warn!("receive failed ({})", kind_name(e.kind()));
                    return Err(LinkError::Io);
                }
                None => return Err(LinkError::Io),
            }
        }
        Ok(())
    }

    fn try_exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        self.send_all(request)?;
        let mut header = [0u8; HEADER_LEN];
        self.receive_exact(&mut header)?;
        let len = frame_len(header, reply.len()).map_err(|_| LinkError::FrameTooLong)?;
        let body = reply.get_mut(..len).ok_or(LinkError::FrameTooLong)?;
        self.receive_exact(body)?;
        Ok(len)
    }
}

impl<S: TcpClientStack, K: Clock> Link for TcpLink<'_, S, K> {
    /// Send one request frame, receive one reply frame (see the core's
    /// contract). On any error the socket is closed: a half-read frame would
    /// desynchronise the stream.
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        let result = self.try_exchange(request, reply);
        if result.is_err() {
            self.close();
        }
        result
    }
}

impl<S: TcpClientStack, K> Drop for TcpLink<'_, S, K> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            let _ = self.connector.stack.with(|s| s.close(socket));
        }
    }
}

#[allow(unreachable_patterns)] // `TcpErrorKind` is non-exhaustive.
fn kind_name(kind: TcpErrorKind) -> &'static str {
    match kind {
        TcpErrorKind::PipeClosed => "pipe closed",
        TcpErrorKind::Other => "stack error",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("10.0.0.7:9000"),
            Some("10.0.0.7:9000".parse().unwrap())
        );
        assert_eq!(
            parse_addr(" 10.0.0.7 "),
            Some("10.0.0.7:4433".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:5"), Some("[::1]:5".parse().unwrap()));
        assert_eq!(parse_addr("[::1]"), Some("[::1]:4433".parse().unwrap()));
        assert_eq!(parse_addr("::1"), Some("[::1]:4433".parse().unwrap()));
        assert_eq!(parse_addr("hsm.example"), None);
        assert_eq!(parse_addr("1.2.3.4:notaport"), None);
    }
}
