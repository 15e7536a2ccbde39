//! Reply frames as the module reads them from the network.
//!
//! Properties: decoding never panics; a decoded response re-encodes into no
//! more bytes than it came from and decodes back to itself; its `Debug`
//! form (which the module may log) never panics. The same bytes also build
//! a response from structure (`hsmlink_fuzz::messages`), which must survive
//! `decode(encode(m)) == m`: every variant, every field.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hsmlink_core::wire::{self, HEADER_LEN, Response};
use hsmlink_fuzz::messages::AResponse;
use libfuzzer_sys::fuzz_target;

/// decode(encode(m)) == m for a response built from structure.
fn round_trip(data: &[u8]) {
    let Ok(m) = AResponse::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    m.with(|resp| {
        let body = postcard::to_allocvec(resp).expect("every response encodes");
        let back: Response<'_> = wire::decode(&body).expect("every encoded response decodes");
        assert_eq!(&back, resp);
    });
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    let Ok(resp) = wire::decode::<Response<'_>>(data) else {
        return;
    };
    let mut buf = vec![0u8; HEADER_LEN + data.len()];
    let n = wire::encode_frame(&resp, &mut buf).expect("a decoded response re-encodes in place");
    let back: Response<'_> =
        wire::decode(&buf[HEADER_LEN..n]).expect("re-encoded response decodes");
    assert_eq!(back, resp);
    let mut short = vec![0u8; n - 1];
    assert!(wire::encode_frame(&resp, &mut short).is_err());
    let _ = format!("{resp:?}");
    // A frame with trailing bytes is refused.
    let mut longer = buf[HEADER_LEN..n].to_vec();
    longer.push(0);
    assert!(wire::decode::<Response<'_>>(&longer).is_err());
});
