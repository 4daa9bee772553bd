//! The security options: `rmmap serve --auth FILE --tls-cert CERT
//! --tls-key KEY`, and for every client command `--token-file FILE`,
//! `--tls-ca CA` or `--tls`, and `--tls-name NAME`.
//!
//! File formats (lines starting with `#` and blank lines are ignored):
//!
//! * access list (`--auth`): one client per line,
//!   `NAME SECRET_HEX ro|rw [SUBDIR]`; SECRET_HEX is at least 16 bytes of
//!   hex; `ro` refuses every write; SUBDIR confines the client beneath that
//!   directory of the root.
//! * token file (`--token-file`): one line `NAME SECRET_HEX`, the client's
//!   access-list line without its rights.
//! * certificates, keys and CAs: PEM.

use std::path::{Path, PathBuf};

use clap::Args;
use rmmap_core::server::AccessList;
use rmmap_secure::{ClientTls, ServerTls, Token, load_access_list, readable_by_others};
use rmmap_tokio::ClientConfig;

use crate::CliError;

/// How a client command authenticates and protects its connection.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ClientSecurity {
    /// Authenticate with the credentials in FILE: one line
    /// `NAME SECRET_HEX` (the client's line of the server's access list
    /// without its rights; lines starting with # are ignored).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Connect over TLS, trusting only the certificate authorities in CA
    /// (PEM).
    #[arg(long, value_name = "CA")]
    tls_ca: Option<PathBuf>,
    /// Connect over TLS, trusting the operating system's certificate
    /// authorities (implied by --tls-ca and --tls-name).
    #[arg(long)]
    tls: bool,
    /// Check the server's certificate against NAME instead of the host part
    /// of ADDR.
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
}

impl ClientSecurity {
    /// The client settings, with the token's name and secret if given.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, CliError> {
        let config = ClientConfig::default();
        let Some(path) = &self.token_file else {
            return Ok(config);
        };
        warn_if_readable_by_others(path, "token file");
        Ok(Token::load(path)?.configure(config))
    }

    /// The TLS settings, if any TLS option was given.
    pub(crate) fn client_tls(&self) -> Result<Option<ClientTls>, CliError> {
        if !self.tls && self.tls_ca.is_none() && self.tls_name.is_none() {
            return Ok(None);
        }
        let tls = match &self.tls_ca {
            Some(ca) => ClientTls::from_ca_file(ca)?,
            None => ClientTls::from_system_roots()?,
        };
        Ok(Some(match &self.tls_name {
            Some(name) => tls.with_server_name(name)?,
            None => tls,
        }))
    }

    /// Connects an rmmap-tokio client of the members at `addrs` (the
    /// first that answers; one address: a single server) as these options
    /// say.
    pub(crate) async fn connect_tokio(
        &self,
        addrs: &[&str],
    ) -> Result<rmmap_tokio::ClusterClient, CliError> {
        let config = self.client_config()?;
        let policy = rmmap_tokio::RedirectPolicy::default();
        Ok(match self.client_tls()? {
            None => rmmap_tokio::ClusterClient::connect(addrs, config).await?,
            Some(tls) => {
                let connector = rmmap_tokio::TlsConnector::new(tls);
                rmmap_tokio::ClusterClient::connect_with(connector, addrs, config, policy).await?
            }
        })
    }

    /// Connects an rmmap-mio client of the members at `addrs` as these
    /// options say (blocking).
    pub(crate) fn connect_mio(&self, addrs: &[&str]) -> Result<rmmap_mio::ClusterClient, CliError> {
        let config = self.client_config()?;
        let (tls, policy) = (self.client_tls()?, rmmap_mio::RedirectPolicy::default());
        Ok(rmmap_mio::ClusterClient::connect_with(
            addrs, config, tls, policy,
        )?)
    }
}

/// Who may connect to `rmmap serve`, and over what.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ServerSecurity {
    /// Admit only the clients listed in FILE, one per line:
    /// `NAME SECRET_HEX ro|rw [SUBDIR]` (SECRET_HEX: at least 16 bytes;
    /// ro: no writes; SUBDIR: confined beneath it). Lines starting with #
    /// are ignored.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve TLS with the certificate chain in CERT (PEM, the server's
    /// certificate first). Needs --tls-key.
    #[arg(long, value_name = "CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServerSecurity {
    /// The access list, if `--auth` was given.
    pub(crate) fn access_list(&self) -> Result<Option<AccessList>, CliError> {
        let Some(path) = &self.auth else {
            return Ok(None);
        };
        warn_if_readable_by_others(path, "access list");
        Ok(Some(load_access_list(path)?))
    }

    /// The TLS settings, if `--tls-cert` and `--tls-key` were given.
    pub(crate) fn server_tls(&self) -> Result<Option<ServerTls>, CliError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                warn_if_readable_by_others(key, "TLS private key");
                Ok(Some(ServerTls::from_pem_files(cert, key)?))
            }
            _ => Ok(None),
        }
    }

    /// Words for the "serving" line, and a warning for a half-protected
    /// server.
    pub(crate) fn describe(&self, clients: Option<usize>) -> String {
        let tls = self.tls_cert.is_some();
        match (tls, clients) {
            (true, Some(n)) => format!(" over TLS for {n} client(s)"),
            (true, None) => {
                eprintln!(
                    "rmmap: warning: TLS without --auth: anyone who can reach the port may read and write"
                );
                " over TLS".into()
            }
            (false, Some(n)) => {
                eprintln!(
                    "rmmap: warning: --auth without TLS: secrets stay secret, but the data does not, \
                     and an authenticated connection can be taken over on the network"
                );
                format!(" for {n} client(s)")
            }
            (false, None) => String::new(),
        }
    }
}

/// Secrets in a file others may read are not secret: say so (once, on
/// stderr), but carry on.
fn warn_if_readable_by_others(path: &Path, what: &str) {
    if readable_by_others(path).unwrap_or(false) {
        eprintln!(
            "rmmap: warning: the {what} {} is readable by other users (chmod 600 it)",
            path.display()
        );
    }
}
