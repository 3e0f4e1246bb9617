//! Feeds arbitrary bytes to the `COMMAND` reply parser (`proto::redis::keyspecs`), then asks
//! every learned command for the keys of a few requests.
//!
//! Checks: no panic; every key position found is an argument of the request, and at most
//! two key ranges come back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::keyspecs::LearnedCommands;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = LearnedCommands::parse(data) else {
        return;
    };
    for command in table.commands() {
        assert!(table.get(command.name.as_bytes()).is_some());
        let subs = command
            .subcommands
            .iter()
            .map(|s| s.name.rsplit('|').next());
        for sub in std::iter::once(None).chain(subs) {
            for extra in 0..6usize {
                let mut args: Vec<Vec<u8>> = vec![command.name.as_bytes().to_vec()];
                args.extend(sub.map(|s| s.as_bytes().to_vec()));
                args.extend((0..extra).map(|i| i.to_string().into_bytes()));
                let Some(request) = walnut_fuzz::request_of(&args) else {
                    continue;
                };
                if let Ok(keys) = command.keys_of(&request) {
                    assert!(keys.ranges.len() <= 2);
                    assert!(keys.positions().all(|i| i >= 1 && i < args.len()));
                }
            }
        }
    }
});
