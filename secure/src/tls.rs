//! rustls configurations for rmmap servers and clients.
//!
//! Every configuration here speaks TLS 1.3 only (both ends are rmmap, so
//! there is nothing older to talk to), uses the `ring` crypto provider
//! (explicitly, never a process-wide default), and offers the ALPN protocol
//! [`ALPN`], so that a TLS client of another protocol that happens to reach
//! an rmmap port fails its handshake instead of exchanging bytes with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN protocol name rmmap offers and accepts.
pub const ALPN: &[u8] = b"rmmap/1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// Which file this is ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the
    /// certificate, an unsupported key type, a malformed CA certificate).
    #[error("{what}: {source}")]
    Rejected {
        /// What was being set up.
        what: &'static str,
        /// What rustls said.
        source: rustls::Error,
    },
    /// No usable trusted root in the system's store.
    #[error("no trusted certificate authority found in the system's store{0}")]
    NoSystemRoots(String),
    /// The name to check the server's certificate against is not a valid
    /// DNS name or IP address.
    #[error("{0:?} is not a valid DNS name or IP address for a certificate check")]
    BadName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS settings: its certificate chain and private key.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The rustls configuration the adapters use.
    pub config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads a certificate chain (PEM, the server's certificate first, then
    /// any intermediates) and its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsSetupError> {
        let pem = |what, path: &Path, reason: String| TlsSetupError::Pem {
            what,
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem("certificate", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem("certificate", cert, "no CERTIFICATE block".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| pem("private key", key, e.to_string()))?;
        Self::from_der(chain, key_der)
    }

    /// A certificate chain and key already in DER.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, TlsSetupError> {
        let rejected = |source| TlsSetupError::Rejected {
            what: "the server's certificate and key",
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(rejected)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }
}

/// A client's TLS settings: whom it trusts, and which name the server's
/// certificate must carry.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The rustls configuration the adapters use.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry. `None`: the host part
    /// of the address connected to (see [`host_of`]).
    pub server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Trusts only the certificate authorities in `ca` (PEM, one or more).
    pub fn from_ca_file(ca: &Path) -> Result<ClientTls, TlsSetupError> {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsSetupError::Pem {
                what: "CA",
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsSetupError::Pem {
                what: "CA",
                path: ca.to_owned(),
                reason: "no CERTIFICATE block".into(),
            });
        }
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots.add(c).map_err(|source| TlsSetupError::Rejected {
                what: "the CA certificate",
                source,
            })?;
        }
        Self::from_roots(roots)
    }

    /// Trusts the certificate authorities of the operating system's store
    /// (as maintained by its administrators: a company CA installed there
    /// is trusted too).
    pub fn from_system_roots() -> Result<ClientTls, TlsSetupError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(TlsSetupError::NoSystemRoots(why));
        }
        Self::from_roots(roots)
    }

    /// Trusts exactly `roots`.
    pub fn from_roots(roots: RootCertStore) -> Result<ClientTls, TlsSetupError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsSetupError::Rejected {
                what: "the TLS client settings",
                source,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Checks the server's certificate against `name` (a DNS name or an IP
    /// address) instead of the host part of the address.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, TlsSetupError> {
        self.server_name = Some(parse_name(name)?);
        Ok(self)
    }

    /// The name to check the certificate of the server at `addr` against.
    pub fn name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsSetupError> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => parse_name(host_of(addr)),
        }
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsSetupError::BadName(name.to_owned()))
}

/// The host part of `host:port`, `[v6]:port`, `[v6]` or a bare host.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host;
    }
    match addr.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_part_of_an_address_is_what_the_certificate_must_name() {
        assert_eq!(host_of("files.example:7878"), "files.example");
        assert_eq!(host_of("127.0.0.1:7878"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7878"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn missing_or_empty_pem_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = ClientTls::from_ca_file(&empty).unwrap_err().to_string();
        assert!(e.contains("CA") && e.contains("no CERTIFICATE"), "{e}");
        let e = ServerTls::from_pem_files(&dir.path().join("nope"), &empty)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("certificate ") && e.contains("nope"), "{e}");
    }

    #[test]
    fn names_that_cannot_be_checked_are_refused_early() {
        let roots = RootCertStore::empty();
        let tls = ClientTls::from_roots(roots).unwrap();
        assert!(tls.clone().with_server_name("bad name!").is_err());
        let ip = tls.name_for("127.0.0.1:1").unwrap();
        assert!(matches!(ip, ServerName::IpAddress(_)));
        let over = tls.with_server_name("files.example").unwrap();
        assert_eq!(
            over.name_for("127.0.0.1:1").unwrap().to_str(),
            "files.example"
        );
    }
}
