//! The 40 configuration cases of `tests/data/conf-cases.txt` (run against nutcracker 0.5.0):
//! walnut must give the same verdict, with its own precise message for each rejection.
//! Also: `load`, and inputs that must never panic.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use walnut::config::{load, parse, ConfigErrors};

struct Case {
    file: String,
    yaml: String,
    twemproxy_ok: bool,
}

/// Splits `conf-cases.txt`: a `### NN-name.yml` header, the YAML indented by 4 spaces,
/// then twemproxy's `-t` verdict.
fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conf-cases.txt");
    let text = std::fs::read_to_string(path).expect("tests/data/conf-cases.txt");
    let mut out = Vec::new();
    for block in text.split("### ").skip(1) {
        let (file, rest) = block.split_once('\n').expect("case header");
        let mut yaml = String::new();
        let mut verdict = None;
        for line in rest.lines() {
            if line.starts_with("  nutcracker -t") {
                verdict = Some(line.contains("(rc=0)"));
                break;
            }
            if let Some(y) = line.strip_prefix("    ") {
                yaml.push_str(y);
                yaml.push('\n');
            }
        }
        out.push(Case {
            file: file.trim().to_string(),
            yaml,
            twemproxy_ok: verdict.expect("verdict line"),
        });
    }
    out
}

/// What walnut must say, case by case (`None`: accepted, like twemproxy).
fn expected(file: &str) -> Option<Vec<String>> {
    let pool = |rest: &str| format!("conf: pool 'alpha': {rest}");
    let file_level = |rest: &str| format!("conf: '{file}' {rest}");
    let weight_fmt = "in \"hostname:port:weight [name]\" format string";
    let msgs = match file {
        "01-unknown-key.yml" => vec![pool(r#"directive "foo" is unknown"#)],
        "02-duplicate-key.yml" => vec![pool(r#"directive "hash" is a duplicate: "crc16""#)],
        "03-bad-hash.yml" => vec![pool(r#"directive "hash" is not a valid hash: "sha1""#)],
        "04-bad-dist.yml" => vec![pool(
            r#"directive "distribution" is not a valid distribution: "consistent""#,
        )],
        "05-hashtag-len.yml" => vec![pool(
            r#"directive "hash_tag" is not a valid hash tag string with two characters: "{}x""#,
        )],
        "06-timeout-nan.yml" => vec![pool(r#"directive "timeout" is not a number: "abc""#)],
        "07-timeout-neg.yml" => vec![pool(r#"directive "timeout" is not a number: "-1""#)],
        "08-bool-yes.yml" => vec![pool(r#"directive "redis" is not "true" or "false": "yes""#)],
        "09-bool-True.yml" => vec![pool(r#"directive "redis" is not "true" or "false": "True""#)],
        "10-no-listen.yml" => vec![pool(r#"directive "listen:" is missing"#)],
        "11-listen-noport.yml" => vec![pool(
            r#"directive "listen" has an invalid "hostname:port" format string: "127.0.0.1""#,
        )],
        "12-listen-port0.yml" => vec![pool(
            r#"directive "listen" has an invalid port in "hostname:port" format string: "127.0.0.1:0""#,
        )],
        "13-listen-port-big.yml" => vec![pool(
            r#"directive "listen" has an invalid port in "hostname:port" format string: "127.0.0.1:70000""#,
        )],
        "14-server-weight0.yml" => vec![pool(&format!(
            r#"directive "servers" has a zero weight {weight_fmt}: "127.0.0.1:6379:0""#
        ))],
        "15-server-noweight.yml" => vec![pool(
            r#"directive "servers" has an invalid "hostname:port:weight [name]"or "/path/unix_socket:weight [name]" format string: "127.0.0.1:6379""#,
        )],
        "16-no-servers.yml" => vec![file_level(
            r#"missing sequence directive at depth 2: pool 'alpha' has no "servers:" block sequence (line 1, column 1)"#,
        )],
        "17-dup-servers.yml" => {
            vec!["conf: pool 'alpha' has servers with same name '127.0.0.1:6379'".into()]
        }
        "18-dup-server-names.yml" => {
            vec!["conf: pool 'alpha' has servers with same name 'a'".into()]
        }
        "19-server-conns0.yml" => vec![pool(r#"directive "server_connections:" cannot be 0"#)],
        "20-auth-not-redis.yml" => {
            vec![pool(r#"directive "redis_auth:" is only valid for a redis pool"#)]
        }
        "21-same-listen.yml" => vec![
            "conf: pools 'alpha' and 'beta' have the same listen address '127.0.0.1:22121'".into(),
        ],
        "22-same-pool-name.yml" => vec![file_level("has pools with same name 'alpha'")],
        "23-empty.yml" => vec![file_level("must contain only 1 document; found 0 documents")],
        "24-two-docs.yml" => vec![file_level("must contain only 1 document; found 2 documents")],
        "25-flow-seq.yml" => vec![file_level(
            "flow sequence start token (10) is disallowed (line 3, column 12)",
        )],
        "26-anchor.yml" => vec![file_level("anchor token (19) is disallowed (line 3, column 9)")],
        "27-deep.yml" => vec![file_level(
            r#"has a depth greater than 2: directive "nested" of pool 'alpha' must be a scalar or a block sequence of scalars, not a mapping (line 4, column 5)"#,
        )],
        "28-servers-scalar.yml" => vec![file_level(
            r#"missing sequence directive at depth 2: pool 'alpha': "servers" must be a block sequence (one "- host:port:weight [name]" per line), not a scalar (line 1, column 1)"#,
        )],
        "29-empty-value.yml" => vec![pool(r#"directive "hash" has no value"#)],
        "30-unix-badperm.yml" => return None,
        // The resolver's text varies by system: checked separately below.
        "31-unresolvable-listen.yml" => vec![],
        "32-server-badport.yml" => vec![pool(&format!(
            r#"directive "servers" has an invalid port {weight_fmt}: "127.0.0.1:0:1""#
        ))],
        "33-two-seqs.yml" => vec![file_level(
            r#"has more than one sequence directive: pool 'alpha' has a sequence under both "servers" and "servers2" (line 6, column 4)"#,
        )],
        "34-server-weight-neg.yml" => vec![pool(&format!(
            r#"directive "servers" has an invalid weight {weight_fmt}: "127.0.0.1:6379:-1""#
        ))],
        "35-toplevel-scalar.yml" => vec![file_level(
            r#"has invalid empty "key:" at depth 0: the top level must be a mapping of pool names, not a scalar (line 1, column 1)"#,
        )],
        "36-unix-server-ok.yml" => return None,
        "37-unknown-key-case.yml" => vec![pool(
            r#"directive "Hash" is unknown (directive names are case-sensitive: did you mean "hash"?)"#,
        )],
        "38-bool-quoted.yml" => return None,
        "39-timeout-plus.yml" => vec![pool(r#"directive "timeout" is not a number: "+5""#)],
        "40-pool-seq.yml" => vec![file_level(
            "has sequence at depth 0 instead of 2: the top level must be a mapping of pool names, not a sequence (line 1, column 1)",
        )],
        other => panic!("no expectation for case {other}"),
    };
    Some(msgs)
}

/// Parses in a thread, so that a stuck resolver fails the test instead of hanging it.
fn parse_with_deadline(yaml: &str, file: &str) -> Result<walnut::config::Config, ConfigErrors> {
    let (tx, rx) = mpsc::channel();
    let (yaml, name) = (yaml.to_string(), file.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(parse(&yaml, &name));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{file}: parse did not finish within 120 s"))
}

fn messages(r: &Result<walnut::config::Config, ConfigErrors>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.0.clone()).collect(),
    }
}

#[test]
fn all_forty_cases() {
    let cases = cases();
    assert_eq!(cases.len(), 40, "conf-cases.txt should hold 40 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let result = parse_with_deadline(&case.yaml, &case.file);
        if result.is_ok() != case.twemproxy_ok {
            failures.push(format!(
                "{}: twemproxy {} it, walnut {} it: {:?}",
                case.file,
                if case.twemproxy_ok {
                    "accepts"
                } else {
                    "rejects"
                },
                if result.is_ok() { "accepts" } else { "rejects" },
                messages(&result)
            ));
            continue;
        }
        let got = messages(&result);
        for line in &got {
            if line.contains('\n') {
                failures.push(format!("{}: message spans lines: {line:?}", case.file));
            }
        }
        match expected(&case.file) {
            None => {}
            Some(want) if case.file == "31-unresolvable-listen.yml" => {
                assert!(want.is_empty());
                let prefix = "conf: pool 'alpha': directive \"listen\" has an invalid value: \
                              \"no-such-host.invalid:22121\" (address resolution failed: ";
                let ok = got.len() == 1 && got[0].starts_with(prefix) && got[0].ends_with(')');
                if !ok {
                    failures.push(format!("{}: got {got:?}", case.file));
                }
            }
            Some(want) if got != want => {
                failures.push(format!("{}:\n   got {got:?}\n  want {want:?}", case.file));
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn twemproxy_reasons_appear_in_walnut_messages() {
    // The reason twemproxy logs (after `conf: `) must be recognisable in walnut's message.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conf-cases.txt");
    let text = std::fs::read_to_string(path).unwrap();
    for case in cases() {
        if case.twemproxy_ok || case.file == "31-unresolvable-listen.yml" {
            continue;
        }
        let block = text
            .split("### ")
            .find(|b| b.starts_with(&case.file))
            .unwrap();
        let Some(logged) = block
            .lines()
            .filter_map(|l| l.split_once(" conf: ").map(|(_, r)| r))
            .next()
        else {
            continue; // 29: twemproxy logs nothing.
        };
        // `directive "x" reason`, or a file/pool-level reason.
        let reason = match logged.strip_prefix("directive ") {
            Some(rest) => rest.to_string(),
            None => logged.replace(&format!("'{}' ", case.file), ""),
        };
        // twemproxy's unbalanced quote, which walnut balances.
        let reason = reason.replace("same name alpha'", "same name 'alpha'");
        let got = messages(&parse(&case.yaml, &case.file)).join("\n");
        assert!(
            got.contains(&reason),
            "{}: {got:?} does not contain {reason:?}",
            case.file
        );
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("walnut-conf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_reads_files() {
    let dir = TempDir::new("load");
    let good = dir.0.join("nutcracker.yml");
    std::fs::write(
        &good,
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .unwrap();
    let c = load(&good).expect("valid file");
    assert_eq!(c.pools[0].name, "alpha");

    let bad = dir.0.join("bad.yml");
    std::fs::write(&bad, "").unwrap();
    let e = load(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conf: '{}' must contain only 1 document; found 0 documents",
            bad.display()
        )
    );

    let missing = dir.0.join("missing.yml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.0.len(), 1);
    let msg = &e.0[0].0;
    assert!(
        msg.starts_with(&format!(
            "conf: failed to open configuration '{}': ",
            missing.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");

    let binary = dir.0.join("binary.yml");
    std::fs::write(&binary, b"alpha:\n  listen: \xff\xfe\n").unwrap();
    let e = load(&binary).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conf: '{}' is not valid UTF-8 (invalid byte at line 2, column 11)",
            binary.display()
        )
    );

    // A directory cannot be read as a file.
    assert!(load(&dir.0).is_err());
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics() {
    // Seeds without TCP listen hosts, so that mutations rarely trigger DNS lookups.
    let seeds: Vec<String> = cases()
        .into_iter()
        .map(|c| c.yaml.replace("127.0.0.1:2212", "/tmp/walnut-fuzz.sock 06"))
        .collect();
    let alphabet: Vec<char> = " \n\t:-[]{},&*!%#'\"|>?.~/0123456789abcz\u{e9}\u{0}\r\\"
        .chars()
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut text: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 => text.insert(at, alphabet[rng.below(alphabet.len())]),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ if at < text.len() => text[at] = alphabet[rng.below(alphabet.len())],
                _ => {}
            }
        }
        let text: String = text.into_iter().collect();
        let r = parse(&text, "fuzz.yml");
        for line in messages(&r) {
            assert!(!line.contains('\n'), "{text:?} gave {line:?}");
        }
    }
    for _ in 0..500 {
        let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        let _ = parse(&String::from_utf8_lossy(&bytes), "fuzz.yml");
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    let n = 20_000;
    let inputs = [
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        format!("{}{}", "{a: ".repeat(n), "}".repeat(n)),
        (0..2000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>(),
        (0..2000).map(|i| format!("{}-\n", " ".repeat(i))).collect(),
    ];
    for text in inputs {
        assert!(parse(&text, "deep.yml").is_err());
    }
}
