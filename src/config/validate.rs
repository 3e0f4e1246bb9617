//! Post-validation (`conf_post_validate`, `conf_validate_server`): twemproxy's
//! `string_compare` ordering, duplicate server names, pools sharing a listen string,
//! duplicate pool names, and the final sort of pools and servers.

use std::cmp::Ordering;

use super::pool::PoolDraft;
use super::text::one_line;
use super::{ConfigError, PoolConfig, ServerConfig};

/// twemproxy's `string_compare`: shorter strings first; equal lengths compare like
/// `strncmp` (unsigned bytes, stopping at a NUL byte).
pub fn string_compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return a.len().cmp(&b.len());
    }
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(&y);
        }
        if x == 0 {
            break;
        }
    }
    Ordering::Equal
}

/// Sorts a pool's servers by name and reports every name used more than once.
pub(crate) fn sort_servers(
    mut servers: Vec<ServerConfig>,
    pool: &str,
    errs: &mut Vec<ConfigError>,
) -> Vec<ServerConfig> {
    servers.sort_by(|a, b| string_compare(&a.name, &b.name));
    for run in duplicate_runs(&servers, |s| s.name.as_str()) {
        errs.push(ConfigError(format!(
            "conf: pool '{pool}' has servers with same name '{}'",
            one_line(&servers[run].name)
        )));
    }
    servers
}

/// In a slice sorted with `string_compare`, the first index of each run of equal keys.
fn duplicate_runs<T>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < items.len() {
        if string_compare(key(&items[i]), key(&items[i + 1])) == Ordering::Equal {
            out.push(i);
            let mut j = i + 1;
            while j < items.len()
                && string_compare(key(&items[i]), key(&items[j])) == Ordering::Equal
            {
                j += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The cross-pool checks; returns the pools sorted by name.
pub(crate) fn finish(
    drafts: Vec<PoolDraft>,
    file: &str,
    errs: &mut Vec<ConfigError>,
) -> Vec<PoolConfig> {
    if drafts.is_empty() {
        errs.push(ConfigError(format!("conf: '{file}' has no pools")));
        return Vec::new();
    }

    // Pools sharing a listen string (compared as strings, not as resolved addresses).
    let mut by_listen: Vec<(&str, &str)> = drafts
        .iter()
        .filter_map(|d| Some((d.listen_text.as_deref()?, d.name.as_str())))
        .collect();
    by_listen.sort_by(|a, b| string_compare(a.0, b.0));
    for pair in by_listen.windows(2) {
        let [(listen, first), (other, second)] = pair else {
            continue;
        };
        if string_compare(listen, other) == Ordering::Equal {
            errs.push(ConfigError(format!(
                "conf: pools '{}' and '{}' have the same listen address '{}'",
                one_line(first),
                one_line(second),
                one_line(listen)
            )));
        }
    }

    // Duplicate pool names.
    let mut names: Vec<&str> = drafts.iter().map(|d| d.name.as_str()).collect();
    names.sort_by(|a, b| string_compare(a, b));
    for run in duplicate_runs(&names, |n| n) {
        errs.push(ConfigError(format!(
            "conf: '{file}' has pools with same name '{}'",
            one_line(names[run])
        )));
    }

    let mut pools: Vec<PoolConfig> = drafts.into_iter().filter_map(|d| d.config).collect();
    pools.sort_by(|a, b| string_compare(&a.name, &b.name));
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_first_then_bytes() {
        let mut v = vec!["server10", "/tmp/redis.sock:", "server3", "server1"];
        v.sort_by(|a, b| string_compare(a, b));
        assert_eq!(v, ["server1", "server3", "server10", "/tmp/redis.sock:"]);

        let mut pools = vec!["alpha", "zeta", "beta"];
        pools.sort_by(|a, b| string_compare(a, b));
        assert_eq!(pools, ["beta", "zeta", "alpha"]);

        assert_eq!(string_compare("b", "a"), Ordering::Greater);
        assert_eq!(string_compare("a", "a"), Ordering::Equal);
        // Bytes compare unsigned.
        assert_eq!(string_compare("\u{e9}", "zz"), Ordering::Greater);
        // strncmp stops at a NUL byte.
        assert_eq!(string_compare("a\0b", "a\0c"), Ordering::Equal);
    }

    #[test]
    fn duplicate_runs_reported_once() {
        let v = ["a", "a", "a", "b", "cc", "cc"];
        assert_eq!(duplicate_runs(&v, |s| s), vec![0, 4]);
        assert!(duplicate_runs(&["a", "b"], |s| s).is_empty());
        assert!(duplicate_runs::<&str>(&[], |s| s).is_empty());
    }
}
