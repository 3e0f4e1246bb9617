//! TLS with rustls (ring, TLS 1.2 and 1.3 only): building the server config walnut shows its
//! clients (`tls:`) and the client config it reaches backends with (`server_tls:`) from PEM
//! files, checking that each key matches its certificate. `-t` and the proxy build them the
//! same way, so a file that `-t` accepts is a file walnut can serve with.

pub mod files;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{ListenTls, ServerTls};

/// Why a TLS config could not be built; `Display` names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} '{path}': {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} '{path}' holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("the key in '{key}' does not match the certificate in '{cert}'")]
    KeyMismatch { cert: String, key: String },
    #[error("{0}")]
    Rustls(String),
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn read_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    // The PEM parser's I/O errors carry the OS error; keep the message one line.
    let reason = e.to_string().replace('\n', " ");
    TlsError::File {
        what,
        path: shown(path),
        reason,
    }
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: shown(path),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key file",
            path: shown(path),
            expected: "private key",
        },
        other => read_error("key file", path, other),
    })
}

/// The trust roots: the certificates of `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path, "CA file")? {
                store
                    .add(cert)
                    .map_err(|e| read_error("CA file", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Unreadable system certificates are skipped, as every rustls user does.
            let _ = store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

/// ring: no C build beyond `cc`, no cmake (aws-lc-rs needs both). rustls deprecates it for
/// lacking post-quantum key exchange, which Redis's own TLS (OpenSSL 3.0 in Debian 12) does
/// not offer either.
///
/// AES-128-GCM comes first, ahead of ring's default AES-256-GCM: both are TLS 1.3's
/// mandatory-strength AEADs, and the 128-bit one has fewer rounds per block and an SHA-256
/// transcript hash (ring's SHA-384/512 is its slowest on x86 without SHA extensions). The
/// listener applies this order over the client's, and backends see it as walnut's preference.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

/// The order walnut prefers cipher suites in (lower first); unknown ones keep their place
/// after these.
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        _ => 4,
    }
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = load_certs(cert_file, "certificate file")?;
    let key = load_key(key_file)?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: shown(cert_file),
            key: shown(key_file),
        },
        other => TlsError::Rustls(format!("'{}': {other}", shown(key_file))),
    })
}

/// The config walnut accepts clients with.
pub fn listen_config(tls: &ListenTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = certified_key(&tls.cert_file, &tls.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &tls.ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(Some(ca))?), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("CA file '{}': {e}", shown(ca))))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The config walnut reaches its servers with.
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(tls.ca_file.as_deref())?);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let key = certified_key(cert, key)?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The rustls config a pool's side serves with now, rebuilt when its files change.
#[derive(Debug)]
pub struct Live<C, F> {
    config: arc_swap::ArcSwap<C>,
    files: F,
    watch: std::sync::Mutex<Watch>,
}

/// The files' stamps as last seen, and the last rebuild's error while it keeps failing.
#[derive(Debug)]
struct Watch {
    files: files::Watched,
    failing: Option<TlsError>,
}

/// What [`Live::refresh`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    /// New handshakes use the new files.
    Rebuilt,
    /// The files changed but do not make a config; the old one stays.
    Failed(TlsError),
    /// The same failure as last time.
    StillFailing,
}

/// The client-facing side of a pool (`tls:`): new handshakes take the current config.
pub type Acceptor = Live<rustls::ServerConfig, ListenTls>;
/// The server-facing side of a pool (`server_tls:`).
pub type Connector = Live<rustls::ClientConfig, ServerTls>;

/// How a [`Live`] config is built from its files.
pub trait Source: Sized {
    type Config;
    fn build(&self) -> Result<Arc<Self::Config>, TlsError>;
    fn paths(&self) -> Vec<&Path>;
}

impl Source for ListenTls {
    type Config = rustls::ServerConfig;
    fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        listen_config(self)
    }
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert_file.as_path(), self.key_file.as_path()];
        paths.extend(self.ca_file.as_deref());
        paths
    }
}

impl Source for ServerTls {
    type Config = rustls::ClientConfig;
    fn build(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        server_config(self)
    }
    fn paths(&self) -> Vec<&Path> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect()
    }
}

impl<F: Source + Clone + PartialEq> Live<F::Config, F> {
    /// Builds the config from `files`.
    pub fn new(files: &F) -> Result<Live<F::Config, F>, TlsError> {
        let watch = Watch {
            files: files::Watched::new(files.paths()),
            failing: None,
        };
        Ok(Live {
            config: arc_swap::ArcSwap::new(files.build()?),
            files: files.clone(),
            watch: std::sync::Mutex::new(watch),
        })
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<F::Config> {
        self.config.load_full()
    }

    /// The files it is built from.
    pub fn files(&self) -> &F {
        &self.files
    }

    /// Re-reads the files when any changed since the last look, or the last rebuild failed
    /// (a file caught half-written), or `force`. On a failure the old config stays.
    pub fn refresh(&self, force: bool) -> Refresh {
        let mut watch = self
            .watch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = watch.files.changed();
        if !changed && !force && watch.failing.is_none() {
            return Refresh::Unchanged;
        }
        match self.files.build() {
            Ok(config) => {
                self.config.store(config);
                watch.failing = None;
                Refresh::Rebuilt
            }
            // Said once per distinct problem, not once per look.
            Err(err) if watch.failing.as_ref() == Some(&err) => Refresh::StillFailing,
            Err(err) => {
                watch.failing = Some(err.clone());
                Refresh::Failed(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_is_preferred_in_both_protocol_versions() {
        let suites: Vec<rustls::CipherSuite> =
            provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first_tls12 = suites
            .iter()
            .find(|s| !format!("{s:?}").starts_with("TLS13"))
            .copied();
        assert!(
            matches!(
                first_tls12,
                Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                    | Some(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
            ),
            "{suites:?}"
        );
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::DEFAULT_CIPHER_SUITES.len()
        );
    }
}
