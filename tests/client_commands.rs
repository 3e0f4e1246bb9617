//! LOLWUT (issue 22), answered by walnut itself on real redis-servers behind a ketama pool:
//! it names walnut in RESP2 and RESP3, and no server is asked.

mod common;

use std::collections::BTreeSet;

use common::{err, Value};

use common::Shards as Setup;

fn setup() -> Setup {
    Setup::start("clients", 3, "  databases: 8\n")
}

#[test]
fn lolwut_names_walnut_locally_in_resp2_and_resp3() {
    let setup = setup();
    let mut client = setup.client();
    let expected = format!(
        "walnut ver. {}, a Redis proxy speaking Redis ver. 7.0.0\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(client.cmd_str(&["LOLWUT"]), Value::bulk(&expected));
    assert_eq!(
        client.cmd_str(&["LOLWUT", "VERSION", "5", "1", "2", "3"]),
        Value::bulk(&expected)
    );
    assert_eq!(
        client.cmd_str(&["LOLWUT", "VERSION", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert!(matches!(client.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    assert_eq!(
        client.cmd_str(&["LOLWUT"]),
        Value::Verbatim("txt".into(), expected.into_bytes())
    );
    // No server was asked.
    let asked: BTreeSet<bool> = setup
        .backends
        .iter()
        .map(|backend| {
            let Value::Bulk(stats) = backend.client().cmd_str(&["INFO", "commandstats"]) else {
                panic!("INFO is a bulk string")
            };
            String::from_utf8_lossy(&stats).contains("cmdstat_lolwut")
        })
        .collect();
    assert_eq!(asked, BTreeSet::from([false]));
}
