//! The software HSM's request handler, driven with frames after a login.
//!
//! Input format: `hsmlink_fuzz::records` (raw frame bodies, structured
//! requests the harness encodes, reconnections). Properties: no panic; every
//! reply is one well-formed frame no longer than the client accepts, whose
//! error codes are real `CKR_*`; a dropped connection leaves no session
//! object behind; token objects an input made are cleaned up, after which
//! the HSM holds exactly what it held before the input.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use hsmlink_core::wire::{self, PROTOCOL_VERSION, Request, Secret};
use hsmlink_fuzz::records::{self, Record};
use hsmlink_fuzz::server::{self, ReqSpec, Run};
use hsmlink_hsm::Connection;
use libfuzzer_sys::fuzz_target;

fn connect(flags: u8, world: &server::World) -> Connection {
    let mut c = Connection::new(world.hsm.clone());
    if flags & records::NO_HELLO == 0 {
        server::send(
            &mut c,
            &Request::Hello {
                version: PROTOCOL_VERSION,
                max_frame: 1 << 20,
                app: server::APP,
            },
        );
        if flags & records::NO_LOGIN == 0 {
            server::send(
                &mut c,
                &Request::Login {
                    user: server::USER,
                    password: Secret(server::PASSWORD),
                },
            );
        }
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let world = server::world();
    let (flags, recs) = records::parse(data);
    let mut run = Run::new(world);
    let mut apps = BTreeSet::new();
    let mut conn = connect(flags, world);
    for rec in recs {
        let body = match rec {
            Record::Raw(b) => b.to_vec(),
            Record::Structured(b) => {
                let mut u = Unstructured::new(b);
                let Ok(spec) = ReqSpec::arbitrary(&mut u) else {
                    continue;
                };
                run.body(&spec)
            }
            Record::Reconnect => {
                if std::env::var_os("HSMLINK_FUZZ_TRACE").is_some() {
                    eprintln!("(reconnect)");
                }
                conn = connect(flags, world);
                continue;
            }
        };
        if let Ok(req) = wire::decode::<Request<'_>>(&body) {
            if !run.allowed(&req) {
                continue;
            }
            if let Request::Hello { app, .. } = req {
                apps.insert(app);
            }
        }
        let reply = server::exchange(&mut conn, &body);
        if std::env::var_os("HSMLINK_FUZZ_TRACE").is_some() {
            eprintln!(
                "{:?}\n  -> {:?}",
                wire::decode::<Request<'_>>(&body),
                wire::decode::<hsmlink_core::wire::Response<'_>>(&reply)
            );
        }
        run.learn(&reply);
        if conn.closing() {
            // The socket loop closes the connection here.
            conn = connect(flags, world);
        }
    }
    drop(conn);
    server::clean_up(world, &apps);
});
