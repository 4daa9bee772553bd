//! What rmmap's adapters share to run securely.
//!
//! * **Credentials** ([`Token`], [`load_access_list`]): a client's token
//!   file holds one line `NAME SECRET_HEX`, the first two fields of that
//!   client's line in the server's access list (`NAME SECRET_HEX ro|rw
//!   [SUBDIR]`, parsed by [`parse_access_list`] into the
//!   [`rmmap_core::server::AccessList`] the server decides with). The secret
//!   never crosses the wire: the core proves knowledge of it with a
//!   challenge-response (docs/PROTOCOL.md, section 8).
//! * **TLS settings** ([`ServerTls`], [`ClientTls`]): rustls configurations
//!   built from PEM files (or the system's trusted roots), TLS 1.3 only,
//!   with the `ring` crypto provider and the ALPN protocol `rmmap/1`.
//! * **Telling TLS from plaintext** ([`mismatch`]): what a TLS server
//!   answers a plaintext client, and how a TLS client explains a server
//!   that does not speak TLS, so that neither side hangs or says something
//!   cryptic. Both adapters (rmmap-tokio, rmmap-mio) use the same rules.
//!
//! Nothing here does IO on a network: the adapters own the sockets.

mod credentials;
pub mod mismatch;
mod tls;

#[cfg(feature = "test-pki")]
pub mod test_pki;

pub use credentials::{
    AccessListError, CredentialError, Token, load_access_list, parse_access_list,
    readable_by_others,
};
pub use rustls;
pub use tls::{ALPN, ClientTls, ServerTls, TlsSetupError, host_of};

/// 32 bytes from the operating system's random source: the seed an
/// adapter gives a core state machine (nonces, resume tokens, epochs,
/// reconnection jitter all come from it).
pub fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| std::io::Error::other(format!("no random seed: {e}")))?;
    Ok(seed)
}
