//! Feeds arbitrary bytes to the invalidation reader (`proto::redis::tracking`) as a backend's
//! push, and as `CLIENT TRACKING` arguments (the first byte is the separator) to the option
//! parser; accepted options are then answered (`info`, `caching`) and sent (`server_command`).
//!
//! Checks: no panic; an invalidation read, written back as a RESP3 push, reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::tracking::{self, Current};

fuzz_target!(|data: &[u8]| {
    if let Some(invalidation) = tracking::read_invalidation(data) {
        let push = tracking::invalidation_message(&invalidation, true);
        assert_eq!(tracking::read_invalidation(&push), Some(invalidation));
    }
    let Some((&separator, rest)) = data.split_first() else {
        return;
    };
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING"];
    args.extend(rest.split(|&b| b == separator));
    if let Some(request) = walnut_fuzz::request_of(&args) {
        if let Ok(options) = tracking::parse(&request, Current::default(), |id| id % 2 == 0) {
            // What walnut answers and sends the servers for any accepted options.
            let _ = tracking::info(Some(&options), separator % 2 == 0, false, separator > 127);
            let _ = tracking::server_command(&options);
            let current = Current {
                on: options.on,
                bcast: options.bcast,
                optin: options.optin,
                optout: options.optout,
            };
            let _ = tracking::caching(rest, current);
        }
    }
});
