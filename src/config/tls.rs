//! The `tls:` (clients → walnut) and `server_tls:` (walnut → backends) pool directives:
//! their fields, and `-t`'s checks that every file exists and parses and that each key
//! matches its certificate (through `crate::tls`, which builds the same rustls configs the
//! proxy serves with).

use std::path::PathBuf;

use super::tree::{Fields, Place};
use super::yaml::RawNode;
use super::{ConfigError, ListenTls, ServerTls};

const LISTEN_KEYS: [&str; 3] = ["cert_file", "key_file", "ca_file"];
const SERVER_KEYS: [&str; 4] = ["ca_file", "cert_file", "key_file", "server_name"];

/// Reads `tls:`; reports every problem into `errs`.
pub(crate) fn listen(node: &RawNode, pool: &str, errs: &mut Vec<ConfigError>) -> Option<ListenTls> {
    let place = Place {
        pool,
        path: "tls".to_string(),
    };
    let before = errs.len();
    let fields = Fields::read(node, &LISTEN_KEYS, &place, errs)?;
    let cert = fields.required("cert_file", &place, errs, node);
    let key = fields.required("key_file", &place, errs, node);
    let ca = fields.scalar("ca_file", &place, errs);
    let (Some(cert), Some(key)) = (cert, key) else {
        return None;
    };
    let tls = ListenTls {
        cert_file: PathBuf::from(&cert.text),
        key_file: PathBuf::from(&key.text),
        ca_file: ca.map(|c| PathBuf::from(&c.text)),
    };
    if errs.len() != before {
        return None;
    }
    if let Err(e) = crate::tls::listen_config(&tls) {
        errs.push(place.problem(&format!("cannot be used: {e}"), node));
        return None;
    }
    Some(tls)
}

/// Reads `server_tls:`; reports every problem into `errs`.
pub(crate) fn server(node: &RawNode, pool: &str, errs: &mut Vec<ConfigError>) -> Option<ServerTls> {
    let place = Place {
        pool,
        path: "server_tls".to_string(),
    };
    let before = errs.len();
    let fields = Fields::read(node, &SERVER_KEYS, &place, errs)?;
    let ca = fields.scalar("ca_file", &place, errs);
    let cert = fields.scalar("cert_file", &place, errs);
    let key = fields.scalar("key_file", &place, errs);
    let server_name = fields.scalar("server_name", &place, errs);
    if cert.is_some() != key.is_some() {
        errs.push(place.problem(
            "needs both \"cert_file\" and \"key_file\" for a client certificate, or neither",
            node,
        ));
    }
    if let Some(name) = server_name {
        if rustls::pki_types::ServerName::try_from(name.text.as_str()).is_err() {
            errs.push(place.field("server_name").problem(
                &format!("is not a valid DNS name or IP address: \"{}\"", name.text),
                node,
            ));
        }
    }
    if errs.len() != before {
        return None;
    }
    let tls = ServerTls {
        ca_file: ca.map(|c| PathBuf::from(&c.text)),
        cert_file: cert.map(|c| PathBuf::from(&c.text)),
        key_file: key.map(|k| PathBuf::from(&k.text)),
        server_name: server_name.map(|s| s.text.clone()),
    };
    if let Err(e) = crate::tls::server_config(&tls) {
        errs.push(place.problem(&format!("cannot be used: {e}"), node));
        return None;
    }
    Some(tls)
}
