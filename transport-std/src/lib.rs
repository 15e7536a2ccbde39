//! The core's [`Link`] over `std::net::TcpStream`.
//!
//! One TCP connection per PKCS#11 session; connect, read and write are all
//! bounded by timeouts; `TCP_NODELAY` is set so that a request frame leaves at
//! once. Endpoints are tried in turn, starting after the one used last, so
//! sessions spread over several HSMs and a dead one is skipped.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hsmlink_core::link::{Connector, Link, LinkError};
use hsmlink_core::wire::{frame_len, HEADER_LEN};

/// The default HSM address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4433";
/// Most endpoints in one configuration.
pub const MAX_ENDPOINTS: usize = 16;

/// Timeouts of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for any read or write; an HSM answer slower than this
    /// fails the call with `CKR_DEVICE_ERROR`.
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(60),
        }
    }
}

/// Makes TCP links to one of several HSM endpoints.
#[derive(Debug)]
pub struct TcpConnector {
    endpoints: Vec<String>,
    timeouts: Timeouts,
    next: AtomicUsize,
}

/// A bad endpoint list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TcpConnector {
    /// `list` is `host:port[,host:port...]` (at most [`MAX_ENDPOINTS`]); a
    /// missing port means 4433.
    pub fn new(list: &str, timeouts: Timeouts) -> Result<Self, ConfigError> {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(with_default_port)
            .collect();
        if endpoints.is_empty() {
            return Err(ConfigError("no HSM address given".into()));
        }
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(ConfigError(format!(
                "{} HSM addresses given; at most {MAX_ENDPOINTS}",
                endpoints.len()
            )));
        }
        for e in &endpoints {
            if e.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError(format!(
                    "bad HSM address {e:?}: want host:port"
                )));
            }
        }
        Ok(TcpConnector {
            endpoints,
            timeouts,
            next: AtomicUsize::new(0),
        })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn dial(&self, endpoint: &str) -> Result<TcpLink, LinkError> {
        let addrs: Vec<SocketAddr> = endpoint
            .to_socket_addrs()
            .map_err(|_| LinkError::Connect)?
            .collect();
        let mut last = LinkError::Connect;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeouts.connect) {
                Ok(stream) => return TcpLink::new(stream, self.timeouts.io),
                Err(e) => {
                    log::debug!("connect to {addr} failed: {e}");
                    last = LinkError::Connect;
                }
            }
        }
        Err(last)
    }
}

fn with_default_port(s: &str) -> String {
    let has_port = if let Some(rest) = s.strip_prefix('[') {
        rest.contains("]:")
    } else {
        s.matches(':').count() == 1
    };
    if has_port {
        s.to_string()
    } else if s.contains(':') && !s.starts_with('[') {
        format!("[{s}]:4433")
    } else {
        format!("{s}:4433")
    }
}

impl Connector for TcpConnector {
    type Link = TcpLink;

    fn connect(&self, host: Option<&str>) -> Result<TcpLink, LinkError> {
        if let Some(h) = host {
            return self.dial(&with_default_port(h));
        }
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = LinkError::Connect;
        for i in 0..n {
            let endpoint = &self.endpoints[(start + i) % n];
            match self.dial(endpoint) {
                Ok(link) => return Ok(link),
                Err(e) => {
                    log::warn!("HSM {endpoint} unreachable");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// One TCP connection to the HSM.
#[derive(Debug)]
pub struct TcpLink {
    stream: TcpStream,
}

impl TcpLink {
    /// Wrap a connected stream: sets `TCP_NODELAY` and the I/O timeout.
    pub fn new(stream: TcpStream, io_timeout: Duration) -> Result<Self, LinkError> {
        stream.set_nodelay(true).map_err(|_| LinkError::Io)?;
        stream
            .set_read_timeout(Some(io_timeout))
            .map_err(|_| LinkError::Io)?;
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(|_| LinkError::Io)?;
        Ok(TcpLink { stream })
    }
}

fn io_error(e: std::io::Error) -> LinkError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => LinkError::Timeout,
        _ => LinkError::Io,
    }
}

impl Link for TcpLink {
    fn exchange(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, LinkError> {
        self.stream.write_all(request).map_err(io_error)?;
        let mut header = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut header).map_err(io_error)?;
        let len = frame_len(header, reply.len()).map_err(|_| LinkError::FrameTooLong)?;
        let body = reply.get_mut(..len).ok_or(LinkError::FrameTooLong)?;
        self.stream.read_exact(body).map_err(io_error)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists() {
        let t = Timeouts::default();
        let c = TcpConnector::new("a:1, b ,[::1]:5", t).unwrap();
        assert_eq!(c.endpoints(), ["a:1", "b:4433", "[::1]:5"]);
        assert!(TcpConnector::new("", t).is_err());
        assert!(TcpConnector::new("a:notaport", t).is_err());
        let many = vec!["h:1"; 17].join(",");
        assert!(TcpConnector::new(&many, t).is_err());
    }

    #[test]
    fn unreachable_endpoint_is_a_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = TcpConnector::new(&format!("127.0.0.1:{port}"), Timeouts::default()).unwrap();
        assert_eq!(c.connect(None).err(), Some(LinkError::Connect));
    }

    #[test]
    fn oversized_reply_frame_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).unwrap();
            s.write_all(&(1_000_000u32).to_le_bytes()).unwrap();
        });
        let c = TcpConnector::new(&addr.to_string(), Timeouts::default()).unwrap();
        let mut link = c.connect(None).unwrap();
        let mut reply = [0u8; 64];
        let r = link.exchange(&[1, 0, 0, 0, 9], &mut reply);
        assert_eq!(r, Err(LinkError::FrameTooLong));
        server.join().unwrap();
    }
}
