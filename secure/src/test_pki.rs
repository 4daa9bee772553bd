//! Certificate authorities and server certificates made at run time with
//! rcgen, for tests (feature `test-pki`): nothing secret is committed, and
//! every run has fresh keys.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{ClientTls, ServerTls};

/// A certificate authority that exists only for one test run.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate issued by a [`TestCa`], with its key.
#[derive(Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A new authority called `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa { cert, key }
    }

    /// The authority's certificate, PEM (what a client's `--tls-ca` holds).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Client settings that trust this authority only.
    pub fn client_tls(&self) -> ClientTls {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("a valid CA certificate");
        ClientTls::from_roots(roots).expect("client settings")
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("generate a server key");
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("server parameters");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("rmmap"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the server certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    /// Server settings with this certificate.
    pub fn server_tls(&self) -> ServerTls {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        ServerTls::from_der(vec![self.cert_der.clone()], key).expect("server settings")
    }
}

/// PEM files written by [`write_files`].
#[derive(Clone, Debug)]
pub struct PkiFiles {
    /// The authority that issued `cert`.
    pub ca: PathBuf,
    /// An unrelated authority (for "wrong CA" tests).
    pub other_ca: PathBuf,
    /// The server's certificate, valid for `localhost`, `127.0.0.1` and
    /// `::1`.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes an authority, a server certificate for the loopback names, and an
/// unrelated authority, and writes them as PEM files into `dir` (the key
/// readable by its owner only).
pub fn write_files(dir: &Path) -> PkiFiles {
    let ca = TestCa::new("rmmap test CA");
    let other = TestCa::new("some other CA");
    let issued = ca.issue(&["localhost", "127.0.0.1", "::1"]);
    let files = PkiFiles {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    write(&files.ca, &ca.cert_pem());
    write(&files.other_ca, &other.cert_pem());
    write(&files.cert, &issued.cert_pem);
    write(&files.key, &issued.key_pem);
    files
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a test PKI file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("restrict a test PKI file");
    }
}
