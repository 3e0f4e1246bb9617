//! Certificates made for each test with `openssl` (a CA, a server and a client certificate,
//! a second CA that signs nothing walnut trusts), and a blocking rustls client, written
//! apart from walnut's own TLS code.

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test PKI in a directory.
pub struct Pki {
    pub dir: PathBuf,
    serial: u32,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// `ca`, `server` (for localhost and 127.0.0.1), `client`, and `other-ca` with
    /// `other-client` signed by it.
    pub fn new(dir: &Path) -> Pki {
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            serial: 1,
        };
        pki.make_ca("ca");
        pki.make_ca("other-ca");
        pki.issue("ca", "server", "walnut-test-server-1");
        pki.issue("ca", "client", "walnut-test-client");
        pki.issue("other-ca", "other-client", "walnut-test-stranger");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `NAME.crt` and `NAME.key` paths.
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        )
    }

    fn make_ca(&self, name: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "2",
            ],
        );
    }

    /// Makes `NAME.crt`/`NAME.key` with common name `cn`, signed by `ca`.
    pub fn issue(&mut self, ca: &str, name: &str, cn: &str) {
        self.serial += 1;
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &self.serial.to_string(),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }

    /// Replaces `NAME.crt`/`NAME.key` in place with a new certificate from `ca`, as a
    /// rotation does: each file is written aside and renamed over the old one.
    pub fn rotate(&mut self, ca: &str, name: &str, cn: &str) {
        let staged = format!("{name}-next");
        self.issue(ca, &staged, cn);
        for ext in ["key", "crt"] {
            std::fs::rename(
                self.path(&format!("{staged}.{ext}")),
                self.path(&format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
}

/// A client config trusting `ca`, showing `client` (cert, key) when given.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    client_config_for(ca, client, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] speaking only the TLS `versions` given.
pub fn client_config_for(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `port` on 127.0.0.1 and completes the handshake (as `localhost`).
pub fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> io::Result<TlsClient> {
    let mut socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    // TLS 1.3: a client certificate the server refuses is only said after the handshake,
    // on the first read.
    Ok(rustls::StreamOwned::new(conn, socket))
}

/// The common name in the certificate the server showed.
pub fn peer_common_name(client: &TlsClient) -> String {
    let cert = client
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server showed a certificate");
    // The CN is printable ASCII in these tests: find it after the OID 2.5.4.3.
    let der = cert.as_ref();
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    let positions: Vec<usize> = der
        .windows(oid.len())
        .enumerate()
        .filter(|(_, w)| *w == oid)
        .map(|(i, _)| i)
        .collect();
    // The last CN is the subject's (the issuer comes first).
    let at = *positions.last().expect("a common name") + oid.len();
    let len = der[at + 1] as usize;
    String::from_utf8_lossy(&der[at + 2..at + 2 + len]).into_owned()
}
