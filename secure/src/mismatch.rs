//! Telling TLS from plaintext, so that a mismatch ends quickly with an error
//! that names its cause, on both adapters alike.
//!
//! * **Plaintext client, TLS server.** Before anything else the server
//!   looks at the first byte: a TLS connection starts with a handshake
//!   record ([`starts_tls`]), a plaintext rmmap client with the length
//!   prefix of a `Hello`, whose first byte is 0 (handshake frames are at
//!   most 4096 bytes). For the latter the server writes
//!   [`plaintext_refusal`], in plaintext, and closes: the client reports
//!   "denied: the server expects TLS ...".
//! * **TLS client, plaintext server.** The server's core reads the
//!   ClientHello's first four bytes as a frame length over 4096, answers
//!   `Error(frame_too_large)` and closes. The client's rustls sees bytes
//!   that are not TLS; [`client_handshake_error`] turns that into "the
//!   server does not speak TLS ...".
//!
//! Certificate failures get their own sentences (unknown authority, wrong
//! name, expired) instead of rustls's debug names.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use rmmap_core::protocol::{ErrorCode, ErrorMsg, Message, ReqId};
use rustls::{CertificateError, Error as TlsError};

/// The first byte of a TLS handshake record (it carries the ClientHello).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a TLS server tells a plaintext client.
pub const EXPECTS_TLS: &str = "the server expects TLS: connect with TLS (rmmap: --tls-ca CA, or --tls for the system's roots)";

/// How long a server keeps reading and discarding a refused plaintext
/// client's bytes after writing the refusal: closing a socket with unread
/// input resets the connection, which can destroy the refusal in flight.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Whether a connection whose first byte is `first` starts a TLS handshake.
pub fn starts_tls(first: u8) -> bool {
    first == TLS_HANDSHAKE_RECORD
}

/// The plaintext frame a TLS server writes to a client that did not start
/// with TLS: a fatal `Error(denied)` for the connection. `denied` because
/// the server refuses the connection on security grounds, and because a
/// client reports the message of a fatal `denied` during its handshake.
pub fn plaintext_refusal() -> Bytes {
    Message::Error(ErrorMsg {
        req: ReqId(0),
        code: ErrorCode::Denied,
        fatal: true,
        message: Bytes::from_static(EXPECTS_TLS.as_bytes()),
    })
    .to_bytes()
}

/// Explains why a client's TLS handshake with the server at `addr` failed,
/// for a person to act on.
pub fn client_handshake_error(e: &TlsError, addr: &str, name: &str) -> io::Error {
    let msg = match e {
        TlsError::InvalidMessage(_) => format!(
            "the server at {addr} does not speak TLS (it answered the TLS handshake with \
             something else: a plaintext rmmap server? connect without TLS, or check the address)"
        ),
        TlsError::InvalidCertificate(c) => certificate_problem(c, name),
        TlsError::AlertReceived(alert) => {
            format!("the server at {addr} refused the TLS handshake ({alert:?})")
        }
        TlsError::NoApplicationProtocol => format!(
            "the TLS server at {addr} does not offer the rmmap protocol (ALPN rmmap/1): \
             is it an rmmap server?"
        ),
        TlsError::PeerIncompatible(p) => {
            format!("the TLS server at {addr} is not compatible ({p:?}); rmmap needs TLS 1.3")
        }
        other => format!("the TLS handshake with {addr} failed: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn certificate_problem(c: &CertificateError, name: &str) -> String {
    match c {
        CertificateError::UnknownIssuer => "the server's certificate is not signed by a \
             certificate authority this client trusts (check --tls-ca)"
            .into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the server's certificate is not valid for the name {name:?} (connect by a \
                 name the certificate carries, or check it against another with --tls-name)"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (is this machine's clock right?)".into()
        }
        CertificateError::Revoked => "the server's certificate has been revoked".into(),
        other => format!("the server's certificate was refused: {other:?}"),
    }
}

/// Explains an IO error from a client's TLS handshake: the rustls error
/// inside it if any, else what the connection did.
pub fn client_handshake_io_error(e: io::Error, addr: &str, name: &str) -> io::Error {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
        return client_handshake_error(tls, addr, name);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the server at {addr} closed the connection during the TLS handshake \
                 (does it speak TLS?)"
            ),
        ),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rmmap_core::protocol::{HANDSHAKE_MAX_FRAME, decode_frame};

    #[test]
    fn a_plaintext_hello_can_never_look_like_tls() {
        // A frame of at most 4096 bytes has a length prefix starting 0x00.
        assert_eq!((HANDSHAKE_MAX_FRAME >> 24) as u8, 0);
        assert!(!starts_tls(0));
        assert!(starts_tls(0x16));
    }

    #[test]
    fn the_refusal_is_a_fatal_denied_error_that_names_tls() {
        let mut b = BytesMut::from(&plaintext_refusal()[..]);
        let Some(Message::Error(e)) = decode_frame(&mut b, HANDSHAKE_MAX_FRAME).unwrap() else {
            panic!("not an Error frame");
        };
        assert_eq!(
            (e.req, e.code, e.fatal),
            (ReqId(0), ErrorCode::Denied, true)
        );
        assert!(
            std::str::from_utf8(&e.message)
                .unwrap()
                .contains("expects TLS")
        );
        assert!(b.is_empty());
    }

    #[test]
    fn handshake_failures_are_explained() {
        let not_tls = TlsError::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let e = client_handshake_error(&not_tls, "h:1", "h").to_string();
        assert!(e.contains("does not speak TLS"), "{e}");
        let ca = TlsError::InvalidCertificate(CertificateError::UnknownIssuer);
        let e = client_handshake_error(&ca, "h:1", "h").to_string();
        assert!(e.contains("not signed by a certificate authority"), "{e}");
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, ca);
        let e = client_handshake_io_error(wrapped, "h:1", "h").to_string();
        assert!(e.contains("--tls-ca"), "{e}");
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        let e = client_handshake_io_error(eof, "h:1", "h").to_string();
        assert!(
            e.contains("closed the connection during the TLS handshake"),
            "{e}"
        );
    }
}
