//! Challenge-response authentication with a shared secret per client.
//!
//! The secret never crosses the wire. After `Hello` (client name and a client
//! nonce) the server sends a `Challenge` with its own nonce; the client answers
//! with `HMAC-SHA256(secret, "rmmap/1 client" | name | client_nonce |
//! server_nonce)`, and the server's `Welcome` carries the same MAC under the
//! label `"rmmap/1 server"`, so each side proves it knows the secret. Proofs
//! are compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::protocol::Nonce;

/// Which side a proof speaks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProofRole {
    /// The client's `Authenticate` proof.
    Client,
    /// The server's proof in `Welcome`.
    Server,
}

/// Computes a proof.
pub fn proof(
    secret: &[u8],
    role: ProofRole,
    name: &[u8],
    client_nonce: &Nonce,
    server_nonce: &Nonce,
) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(match role {
        ProofRole::Client => b"rmmap/1 client",
        ProofRole::Server => b"rmmap/1 server",
    });
    mac.update(&(name.len() as u32).to_be_bytes());
    mac.update(name);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac.finalize().into_bytes().into()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_every_input() {
        let base = proof(b"s", ProofRole::Client, b"n", &[1; 16], &[2; 16]);
        assert!(proofs_match(
            &base,
            &proof(b"s", ProofRole::Client, b"n", &[1; 16], &[2; 16])
        ));
        for other in [
            proof(b"t", ProofRole::Client, b"n", &[1; 16], &[2; 16]),
            proof(b"s", ProofRole::Server, b"n", &[1; 16], &[2; 16]),
            proof(b"s", ProofRole::Client, b"m", &[1; 16], &[2; 16]),
            proof(b"s", ProofRole::Client, b"n", &[3; 16], &[2; 16]),
            proof(b"s", ProofRole::Client, b"n", &[1; 16], &[3; 16]),
        ] {
            assert!(!proofs_match(&base, &other));
        }
    }
}
