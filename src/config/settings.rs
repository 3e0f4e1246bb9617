//! walnut's own process-wide settings: the reserved top-level key `walnut:` (not a pool).
//!
//! ```yaml
//! walnut:
//!   threads: 4
//! ```

use super::num::{atoi, Atoi};
use super::pool::is_directive;
use super::text::{one_line, quoted};
use super::yaml::{RawSettingValue, RawSettings, SETTINGS_KEY};
use super::ConfigError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    Threads,
}

/// Every setting `walnut:` takes, in the order messages list them. Case-sensitive.
const KNOWN: [(&str, Setting); 1] = [("threads", Setting::Threads)];

/// The range of `threads` (the same as `--threads`).
pub(crate) const MIN_THREADS: usize = 1;
pub(crate) const MAX_THREADS: usize = 1024;

/// The settings, once checked.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub threads: Option<usize>,
}

/// Checks every `walnut:` mapping, collecting each problem into `errs`.
pub(crate) fn build(raw: &[RawSettings], file: &str, errs: &mut Vec<ConfigError>) -> Settings {
    let mut out = Settings::default();
    for settings in raw {
        check(settings, file, &mut out, errs);
    }
    if raw.len() > 1 {
        errs.push(ConfigError(format!(
            "conf: '{file}' has top-level key \"{SETTINGS_KEY}\" more than once"
        )));
    }
    out
}

fn check(raw: &RawSettings, file: &str, out: &mut Settings, errs: &mut Vec<ConfigError>) {
    let mut err = |msg: String| errs.push(ConfigError(msg));

    // A pool named `walnut`: one message, not one per directive.
    let mut directives: Vec<String> = Vec::new();
    for entry in raw.entries.iter().filter(|e| is_directive(&e.key.text)) {
        let name = quoted(&entry.key.text);
        if !directives.contains(&name) {
            directives.push(name);
        }
    }
    if !directives.is_empty() {
        err(format!(
            "conf: '{file}' has a pool named '{SETTINGS_KEY}' (pool directives {}): the top-level key \"{SETTINGS_KEY}\" is reserved for walnut's own settings, so a pool cannot be named '{SETTINGS_KEY}' (rename the pool)",
            directives.join(", ")
        ));
        return;
    }

    let mut seen: Vec<Setting> = Vec::new();
    for entry in &raw.entries {
        let name = one_line(&entry.key.text);
        let Some(&(_, setting)) = KNOWN.iter().find(|(k, _)| *k == entry.key.text) else {
            let known: Vec<String> = KNOWN.iter().map(|(k, _)| quoted(k)).collect();
            err(format!(
                "conf: walnut setting \"{name}\" is unknown (known settings: {})",
                known.join(", ")
            ));
            continue;
        };
        let value = match &entry.value {
            RawSettingValue::Scalar(v) => v,
            RawSettingValue::Other(kind) => {
                err(format!(
                    "conf: walnut setting \"{name}\" must be a scalar, not {kind}"
                ));
                continue;
            }
        };
        if seen.contains(&setting) {
            err(format!(
                "conf: walnut setting \"{name}\" is a duplicate: {}",
                quoted(&value.text)
            ));
            continue;
        }
        seen.push(setting);
        if value.text.is_empty() {
            err(format!("conf: walnut setting \"{name}\" has no value"));
            continue;
        }
        match setting {
            Setting::Threads => match atoi(&value.text) {
                Atoi::Value(n) if (MIN_THREADS..=MAX_THREADS).contains(&(n as usize)) => {
                    out.threads = Some(n as usize);
                }
                _ => err(format!(
                    "conf: walnut setting \"{name}\" is not a number from {MIN_THREADS} to {MAX_THREADS}: {}",
                    quoted(&value.text)
                )),
            },
        }
    }
}
