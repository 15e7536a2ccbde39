//! Request frames as the server reads them: the length header, then any body.
//!
//! Properties: decoding never panics; a decoded request re-encodes into no
//! more bytes than it came from, and decodes back to itself; the embedded
//! mechanism and template survive on their own too. The same bytes also
//! build a request from structure (`hsmlink_fuzz::messages`), which must
//! survive `decode(encode(m)) == m`: every variant, every field.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hsmlink_core::wire::{self, HEADER_LEN, MAX_FRAME_LIMIT, MIN_FRAME, Mechanism, Request};
use hsmlink_fuzz::messages::ARequest;
use libfuzzer_sys::fuzz_target;

/// decode(encode(m)) == m for a request built from structure.
fn round_trip(data: &[u8]) {
    let Ok(m) = ARequest::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    m.with(|req| {
        let body = postcard::to_allocvec(req).expect("every request encodes");
        let back: Request<'_> = wire::decode(&body).expect("every encoded request decodes");
        assert_eq!(&back, req);
        let mut frame = vec![0u8; HEADER_LEN + body.len()];
        let n = wire::encode_frame(req, &mut frame).expect("the frame fits");
        assert_eq!(&frame[HEADER_LEN..n], body.as_slice());
    });
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    // The header as a peer sends it: any 4 bytes, checked against a limit.
    if let Some(head) = data.first_chunk::<HEADER_LEN>() {
        for max in [0, MIN_FRAME, 64 * 1024, MAX_FRAME_LIMIT] {
            if let Ok(n) = wire::frame_len(*head, max) {
                assert!(n <= max);
            }
        }
    }
    let Ok(req) = wire::decode::<Request<'_>>(data) else {
        return;
    };
    let mut buf = vec![0u8; HEADER_LEN + data.len()];
    let n = wire::encode_frame(&req, &mut buf).expect("a decoded request re-encodes in place");
    let len = wire::frame_len(buf[..HEADER_LEN].try_into().unwrap(), data.len()).unwrap();
    assert_eq!(HEADER_LEN + len, n);
    let back: Request<'_> = wire::decode(&buf[HEADER_LEN..n]).expect("re-encoded request decodes");
    assert_eq!(back, req);
    // A frame one byte short of the message is never a message.
    let mut short = vec![0u8; n - 1];
    assert!(wire::encode_frame(&req, &mut short).is_err());
    let _ = format!("{req:?}");
    // Mechanisms travel alone in the module's operation buffer.
    let mech = match req {
        Request::GenerateKey { mechanism, .. }
        | Request::GenerateKeyPair { mechanism, .. }
        | Request::CryptoInit { mechanism, .. }
        | Request::CryptoOneShot { mechanism, .. }
        | Request::WrapKey { mechanism, .. }
        | Request::UnwrapKey { mechanism, .. }
        | Request::DeriveKey { mechanism, .. } => Some(mechanism),
        _ => None,
    };
    if let Some(m) = mech {
        let mut mb = vec![0u8; HEADER_LEN + data.len()];
        let n = wire::encode_frame(&m, &mut mb).unwrap();
        let back: Mechanism<'_> = wire::decode(&mb[HEADER_LEN..n]).unwrap();
        assert_eq!(back, m);
    }
});
