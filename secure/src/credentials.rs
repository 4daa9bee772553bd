//! Token files (the client's side of a shared secret) and access lists (the
//! server's side).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rmmap_core::client::ClientConfig;
use rmmap_core::path::ExportPath;
use rmmap_core::protocol::MAX_NAME_LEN;
use rmmap_core::server::{AccessList, ClientEntry, Rights};

/// The shortest secret accepted, in token files and access lists alike.
const MIN_SECRET: usize = 16;

/// Why an access list could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access list line {line}: {reason}")]
pub struct AccessListError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A token file does not hold exactly one `NAME SECRET_HEX` line.
    #[error("{path}: {reason}")]
    Token {
        /// The file (empty when parsing text).
        path: PathBuf,
        /// What is wrong, with the line number.
        reason: String,
    },
    /// An access list does not parse.
    #[error("{path}: {source}")]
    AccessList {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line number.
        source: AccessListError,
    },
}

/// A client's credentials: its name in the server's access list and the
/// secret they share.
///
/// A token file holds exactly one line `NAME SECRET_HEX` (blank lines and
/// lines starting with `#` are ignored), where `SECRET_HEX` is at least 16
/// bytes in hex: the server's access-list line for the same client without
/// its rights. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    name: String,
    secret: Vec<u8>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Token {
    /// A token from its parts. The secret must be at least 16 bytes.
    pub fn new(name: &str, secret: &[u8]) -> Result<Token, CredentialError> {
        let bad = |reason: &str| CredentialError::Token {
            path: PathBuf::new(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(char::is_whitespace) {
            return Err(bad("NAME must be 1 to 256 bytes without spaces"));
        }
        if secret.len() < MIN_SECRET {
            return Err(bad("SECRET must be at least 16 bytes (32 hex digits)"));
        }
        Ok(Token {
            name: name.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<Token, CredentialError> {
        let mut found: Option<(usize, Token)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason: &str| CredentialError::Token {
                path: PathBuf::new(),
                reason: format!("line {}: {reason}", i + 1),
            };
            if let Some((first, _)) = &found {
                return Err(at(&format!(
                    "a token file holds one credential; line {first} already has one"
                )));
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.len() {
                2 => {}
                3 | 4 if matches!(f[2], "ro" | "rw") => {
                    return Err(at(
                        "expected `NAME SECRET_HEX`; rights (ro|rw, SUBDIR) belong in the server's access list",
                    ));
                }
                _ => return Err(at("expected `NAME SECRET_HEX`")),
            }
            let secret = hex::decode(f[1]).map_err(|_| at("SECRET_HEX is not hex"))?;
            let token = Token::new(f[0], &secret).map_err(|e| match e {
                CredentialError::Token { reason, .. } => at(&reason),
                other => other,
            })?;
            found = Some((i + 1, token));
        }
        found.map(|(_, t)| t).ok_or_else(|| CredentialError::Token {
            path: PathBuf::new(),
            reason: "no `NAME SECRET_HEX` line".into(),
        })
    }

    /// Reads and parses a token file.
    pub fn load(path: impl AsRef<Path>) -> Result<Token, CredentialError> {
        let path = path.as_ref();
        let text = read(path)?;
        Token::parse(&text).map_err(|e| match e {
            CredentialError::Token { reason, .. } => CredentialError::Token {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// `config` with this name and secret.
    pub fn configure(&self, mut config: ClientConfig) -> ClientConfig {
        config.name = self.name.clone();
        config.secret = Some(self.secret.clone());
        config
    }
}

/// Parses the text of an access list: one client per line,
/// `NAME SECRET_HEX ro|rw [SUBDIR]`, where `SECRET_HEX` is at least 16
/// bytes in hex and `SUBDIR` a directory beneath the export root the client
/// is confined to; blank lines and lines starting with `#` are ignored.
pub fn parse_access_list(text: &str) -> Result<AccessList, AccessListError> {
    let mut clients = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| AccessListError {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f.len() > 4 {
            return Err(err("expected `NAME SECRET_HEX ro|rw [SUBDIR]`"));
        }
        if f[0].len() > MAX_NAME_LEN {
            return Err(err("NAME is too long"));
        }
        let secret = hex::decode(f[1]).map_err(|_| err("SECRET_HEX is not hex"))?;
        if secret.len() < MIN_SECRET {
            return Err(err("SECRET_HEX must be at least 16 bytes (32 hex digits)"));
        }
        let write = match f[2] {
            "rw" => true,
            "ro" => false,
            _ => return Err(err("rights must be `ro` or `rw`")),
        };
        let scope = match f.get(3) {
            None => None,
            Some(s) => Some(
                ExportPath::parse(s.trim_end_matches('/').as_bytes())
                    .map_err(|e| err(&format!("SUBDIR: {e}")))?,
            ),
        };
        let entry = ClientEntry {
            secret,
            rights: Rights { write, scope },
        };
        if clients.insert(f[0].to_owned(), entry).is_some() {
            return Err(err("NAME appears twice"));
        }
    }
    Ok(AccessList { clients })
}

/// Reads and parses an access list (see [`parse_access_list`]).
pub fn load_access_list(path: impl AsRef<Path>) -> Result<AccessList, CredentialError> {
    let path = path.as_ref();
    let text = read(path)?;
    parse_access_list(&text).map_err(|source| CredentialError::AccessList {
        path: path.to_owned(),
        source,
    })
}

/// Whether users other than the file's owner may read it (on Unix; always
/// false elsewhere). Secrets in such a file are not secret: callers warn.
pub fn readable_by_others(path: impl AsRef<Path>) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        Ok(mode & 0o044 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(false)
    }
}

fn read(path: &Path) -> Result<String, CredentialError> {
    std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn a_token_file_is_one_name_and_secret_line() {
        let t = Token::parse(&format!("# for the backup job\n\n  backup {HEX}  \n")).unwrap();
        assert_eq!(t.name(), "backup");
        assert_eq!(t.secret().len(), 16);
        let c = t.configure(ClientConfig::default());
        assert_eq!(c.name, "backup");
        assert_eq!(c.secret.as_deref(), Some(t.secret()));
    }

    #[test]
    fn malformed_token_files_say_which_line_and_why() {
        let cases = [
            ("", "no `NAME SECRET_HEX` line"),
            ("# only a comment", "no `NAME SECRET_HEX` line"),
            ("alice", "line 1: expected `NAME SECRET_HEX`"),
            ("alice zz112233445566778899aabbccddeeff", "not hex"),
            ("alice +0112233445566778899aabbccddeeff", "not hex"),
            ("alice 0011", "at least 16 bytes"),
            (
                &format!("alice {HEX} rw"),
                "belong in the server's access list",
            ),
            (
                &format!("alice {HEX}\nbob {HEX}"),
                "line 2: a token file holds one",
            ),
        ];
        for (text, want) in cases {
            let e = Token::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn access_lists_parse_and_say_what_is_wrong() {
        let a = parse_access_list(&format!(
            "# comment\nalice {HEX} rw\nbob {} ro team/bob/\n",
            HEX.to_uppercase()
        ))
        .unwrap();
        assert!(a.clients["alice"].rights.write);
        assert_eq!(a.clients["alice"].secret, hex::decode(HEX).unwrap());
        assert!(!a.clients["bob"].rights.write);
        assert_eq!(
            a.clients["bob"].rights.scope.as_ref().unwrap().as_str(),
            "team/bob"
        );
        let cases = [
            ("carol 0011 rw".to_owned(), "16 bytes"),
            (format!("d {HEX} rw ../up"), "SUBDIR"),
            (format!("e +{} rw", &HEX[1..]), "not hex"),
            (format!("f {HEX}0 rw"), "not hex"),
            (format!("g {HEX} rx"), "`ro` or `rw`"),
            (format!("h {HEX}"), "expected"),
            (
                format!("{} {HEX} rw", "n".repeat(MAX_NAME_LEN + 1)),
                "too long",
            ),
            (format!("i {HEX} rw\n\ni {HEX} ro"), "twice"),
        ];
        for (text, want) in cases {
            let e = parse_access_list(&text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        let e = parse_access_list(&format!("# x\n\nj {HEX} rw\nk 00 rw")).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let t = Token::parse(&format!("alice {HEX}")).unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("alice") && !shown.contains("0011"),
            "{shown}"
        );
    }

    #[test]
    fn files_name_themselves_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "alice\n").unwrap();
        let e = Token::load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        let e = Token::load(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::write(&p, format!("alice {HEX} rx\n")).unwrap();
        let e = load_access_list(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("ro"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_files_are_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable_by_others(&p).unwrap());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&p).unwrap());
    }
}
