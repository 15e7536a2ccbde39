//! The input format of the `server` target.
//!
//! ```text
//! input  = flags:u8 record*
//! record = kind:u8 len:u16le bytes[len]
//! ```
//!
//! `flags` bit 0: the harness does not say `Hello` first; bit 1: it does
//! not log in first. A record of kind 0 (mod 3) is a raw frame body handed
//! to the connection as it is; kind 1 is a structured request
//! ([`crate::server::ReqSpec`], read with `arbitrary` from the bytes) that
//! the harness encodes, naming objects by index among the handles seen;
//! kind 2 ends the connection and opens a new one (same flags).
//! A seed recorded from real traffic is flags 3 and one kind-0 record per
//! request frame, `Hello` and `Login` included.

/// What one record asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Raw(&'a [u8]),
    Structured(&'a [u8]),
    Reconnect,
}

pub const NO_HELLO: u8 = 1;
pub const NO_LOGIN: u8 = 2;

/// Split an input into its flags and records (a truncated last record
/// keeps what is there).
pub fn parse(data: &[u8]) -> (u8, Vec<Record<'_>>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut out = Vec::new();
    while let Some((&kind, r)) = rest.split_first() {
        let (len, r) = match r {
            [a, b, r @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), r),
            _ => (r.len(), &[][..]),
        };
        let (bytes, r) = r.split_at(len.min(r.len()));
        rest = r;
        out.push(match kind % 3 {
            0 => Record::Raw(bytes),
            1 => Record::Structured(bytes),
            _ => Record::Reconnect,
        });
    }
    (flags, out)
}

/// Write an input from raw frame bodies (the seed recorder).
pub fn write_raw(flags: u8, bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for b in bodies {
        let len = u16::try_from(b.len()).expect("recorded frames fit a record");
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let bodies = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let input = write_raw(3, &bodies);
        let (flags, recs) = parse(&input);
        assert_eq!(flags, 3);
        let got: Vec<Vec<u8>> = recs
            .iter()
            .map(|r| match r {
                Record::Raw(b) => b.to_vec(),
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(got, bodies);
        assert_eq!(parse(&[0, 1]), (0, vec![Record::Structured(&[])]));
    }
}
