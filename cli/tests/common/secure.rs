//! Certificates, an access list and token files for the tests that run
//! over TLS with tokens: made once per test process at run time (rcgen),
//! under the target's temporary directory. Nothing here is committed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rmmap_secure::test_pki::{PkiFiles, write, write_files};

/// The secrets of the access list (test-only values, made up here).
pub const WRITER: &str = "5eed0000000000000000000000000001";
pub const READER: &str = "5eed0000000000000000000000000002";
pub const TEAM: &str = "5eed0000000000000000000000000003";

/// Everything a TLS-and-tokens run needs, as files.
pub struct Credentials {
    pub dir: PathBuf,
    pub pki: PkiFiles,
    /// `writer rw`, `reader ro`, `team rw team`.
    pub access: PathBuf,
    pub writer: PathBuf,
    pub reader: PathBuf,
    pub team: PathBuf,
    /// `writer` with the reader's secret.
    pub wrong: PathBuf,
}

/// The process's credentials (made on first use).
pub fn credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rmmap-pki-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let pki = write_files(&dir);
        let file = |name: &str, text: String| {
            let p = dir.join(name);
            write(&p, &text);
            p
        };
        Credentials {
            access: file(
                "access",
                format!(
                    "# name secret rights [subdir]\nwriter {WRITER} rw\nreader {READER} ro\nteam {TEAM} rw team\n"
                ),
            ),
            writer: file("writer.token", format!("# the writer\nwriter {WRITER}\n")),
            reader: file("reader.token", format!("reader {READER}\n")),
            team: file("team.token", format!("team {TEAM}\n")),
            wrong: file("wrong.token", format!("writer {READER}\n")),
            pki,
            dir,
        }
    })
}

impl Credentials {
    /// `rmmap serve` arguments: TLS and the access list.
    pub fn serve_args(&self) -> Vec<String> {
        args(&[
            ("--tls-cert", &self.pki.cert),
            ("--tls-key", &self.pki.key),
            ("--auth", &self.access),
        ])
    }

    /// Client arguments: trust the test CA, authenticate with `token`.
    pub fn client_args(&self, token: &Path) -> Vec<String> {
        args(&[("--tls-ca", &self.pki.ca), ("--token-file", token)])
    }
}

fn args(pairs: &[(&str, &Path)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, p)| [flag.to_string(), p.display().to_string()])
        .collect()
}
