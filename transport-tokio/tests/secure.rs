//! Who may connect, over rmmap-tokio: TLS (certificates made at run time),
//! tokens and rights. Every refusal is a clear error that arrives quickly,
//! and the files on disk show that nothing was touched.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rmmap_secure::test_pki::TestCa;
use rmmap_tokio::{
    Access, AtomicOp, Client, ClientConfig, ClientTls, ConnectError, MapOptions, ServeOptions,
    Server, ServerConfig, ServerTls, TcpConnector, TlsConnector, Token,
};

const RW: &str = "00112233445566778899aabbccddeeff";
const RO: &str = "ffeeddccbbaa99887766554433221100";
const TEAM: &str = "0123456789abcdef0123456789abcdef";

/// Fails the test instead of hanging it.
async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("took too long")
}

/// A root with `f` (8 KiB of 7s), `team/f`, `other/secret`, and a symlink
/// `team/escape` -> `../other`; an access list with a read-write client,
/// a read-only one, and one confined to `team`.
struct Site {
    dir: tempfile::TempDir,
    server: Server,
    addr: String,
    ca: TestCa,
}

impl Site {
    async fn start(tls: bool, auth: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["team", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("f"), [7u8; 8192]).unwrap();
        std::fs::write(root.join("team/f"), [1u8; 4096]).unwrap();
        std::fs::write(root.join("other/secret"), b"secret").unwrap();
        std::os::unix::fs::symlink("../other", root.join("team/escape")).unwrap();
        let mut config = ServerConfig::new(&root)
            .lease(Duration::from_secs(2))
            .restart_grace(Some(Duration::ZERO));
        if auth {
            let list = format!("writer {RW} rw\nreader {RO} ro\nteam {TEAM} rw team\n");
            config.core.access = Some(rmmap_secure::parse_access_list(&list).unwrap());
        }
        let ca = TestCa::new("test CA");
        let options = ServeOptions {
            tls: tls.then(|| ca.issue(&["localhost", "127.0.0.1"]).server_tls()),
            ..ServeOptions::default()
        };
        let server = Server::bind_with("127.0.0.1:0", config, options)
            .await
            .unwrap();
        let addr = server.local_addr().to_string();
        Site {
            dir,
            server,
            addr,
            ca,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Connects over TLS trusting the site's CA, as `who` (a name with its
    /// secret), or without a token.
    async fn connect(&self, who: Option<(&str, &str)>) -> Result<Client, ConnectError> {
        let tls = self.ca.client_tls();
        Client::connect_with(TlsConnector::new(tls), &self.addr, config(who)).await
    }
}

fn config(who: Option<(&str, &str)>) -> ClientConfig {
    let mut c = ClientConfig::default();
    if let Some((name, secret)) = who {
        let t = Token::parse(&format!("{name} {secret}")).unwrap();
        c = t.configure(c);
    }
    c.give_up_after = Some(Duration::from_secs(5));
    c
}

/// The file's bytes, or `None` when it does not exist.
fn disk(root: &Path, path: &str) -> Option<Vec<u8>> {
    std::fs::read(root.join(path)).ok()
}

fn handshake_reason(e: ConnectError) -> String {
    match e {
        ConnectError::Handshake { reason, .. } => reason,
        other => panic!("expected a handshake refusal, got {other}"),
    }
}

#[tokio::test]
async fn tls_with_a_token_carries_reads_and_writes_of_several_mebibytes() {
    within(60, async {
        let site = Site::start(true, true).await;
        let c = site.connect(Some(("writer", RW))).await.unwrap();
        // More than rustls buffers at once, both ways.
        let len = 4 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let m = c
            .map_with(
                "big",
                0..len as u64,
                MapOptions {
                    access: Access::ReadWrite,
                    create: true,
                },
            )
            .await
            .unwrap();
        m.write(0, &data).await.unwrap();
        m.sync().await.unwrap();
        assert_eq!(disk(&site.root(), "big").unwrap(), data);
        let other = site.connect(Some(("reader", RO))).await.unwrap();
        let r = other
            .map("big", 0..len as u64, Access::ReadOnly)
            .await
            .unwrap();
        assert_eq!(&r.read_bytes(0, len as u64).await.unwrap()[..], &data[..]);
        c.close().await.unwrap();
        other.close().await.unwrap();
        site.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_an_unknown_name_and_no_token_are_denied() {
    within(30, async {
        let site = Site::start(true, true).await;
        let wrong = site.connect(Some(("writer", RO))).await.unwrap_err();
        let r = handshake_reason(wrong);
        assert!(r.starts_with("denied"), "{r}");
        let unknown = site.connect(Some(("nobody", RW))).await.unwrap_err();
        let r = handshake_reason(unknown);
        assert!(r.starts_with("denied"), "{r}");
        let none = site.connect(None).await.unwrap_err();
        let r = handshake_reason(none);
        assert!(r.contains("requires authentication"), "{r}");
        assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
    })
    .await;
}

#[tokio::test]
async fn a_client_with_a_token_refuses_a_server_that_does_not_authenticate() {
    within(30, async {
        let site = Site::start(true, false).await;
        let r = handshake_reason(site.connect(Some(("writer", RW))).await.unwrap_err());
        assert!(r.contains("did not authenticate"), "{r}");
    })
    .await;
}

#[tokio::test]
async fn read_only_rights_refuse_every_write_and_touch_nothing() {
    within(30, async {
        let site = Site::start(true, true).await;
        let c = site.connect(Some(("reader", RO))).await.unwrap();
        let rw = MapOptions {
            access: Access::ReadWrite,
            create: false,
        };
        let create = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        let e = c.map_with("f", 0..8192, rw).await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        let e = c.map_with("new", 0..10, create).await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        let e = c.set_len("f", 1, false).await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        let e = c.set_len("new", 10, true).await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        let m = c.map("f", 0..8192, Access::ReadOnly).await.unwrap();
        let e = m.write(0, b"x").await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        let e = m.atomic(0, AtomicOp::FetchAdd(1)).await.unwrap_err();
        assert_eq!(e.kind(), "read_only", "{e}");
        // Reading is allowed.
        assert_eq!(&m.read_bytes(0, 3).await.unwrap()[..], &[7, 7, 7]);
        c.close().await.unwrap();
        assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
        assert!(disk(&site.root(), "new").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_confined_client_cannot_leave_its_sub_directory() {
    within(30, async {
        let site = Site::start(true, true).await;
        let c = site.connect(Some(("team", TEAM))).await.unwrap();
        let create = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        // Its paths are resolved beneath team/.
        let m = c.map("f", 0..4096, Access::ReadWrite).await.unwrap();
        m.write(0, b"team").await.unwrap();
        m.sync().await.unwrap();
        assert_eq!(&disk(&site.root(), "team/f").unwrap()[..4], b"team");
        for (path, want) in [
            ("../f", "bad_path"),
            ("../other/secret", "bad_path"),
            ("/etc/passwd", "bad_path"),
            ("escape/secret", "denied"),
            ("escape/new", "denied"),
        ] {
            let e = c.map_with(path, 0..6, create).await.unwrap_err();
            assert_eq!(e.kind(), want, "{path}: {e}");
            let e = c.set_len(path, 0, true).await.unwrap_err();
            assert_eq!(e.kind(), want, "set_len {path}: {e}");
        }
        c.close().await.unwrap();
        assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
        assert_eq!(disk(&site.root(), "other/secret").unwrap(), b"secret");
        assert!(disk(&site.root(), "other/new").is_none());
    })
    .await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_authority_is_refused() {
    within(30, async {
        let site = Site::start(true, true).await;
        let stranger = TestCa::new("another CA").client_tls();
        let e = Client::connect_with(
            TlsConnector::new(stranger),
            &site.addr,
            config(Some(("writer", RW))),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not signed by a certificate authority this client trusts"),
            "{e}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    within(30, async {
        let site = Site::start(true, true).await;
        let tls = site
            .ca
            .client_tls()
            .with_server_name("files.example")
            .unwrap();
        let e = Client::connect_with(
            TlsConnector::new(tls),
            &site.addr,
            config(Some(("writer", RW))),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not valid for the name \"files.example\""),
            "{e}"
        );
        // The name the certificate carries works.
        let tls = site.ca.client_tls().with_server_name("localhost").unwrap();
        let c = Client::connect_with(
            TlsConnector::new(tls),
            &site.addr,
            config(Some(("writer", RW))),
        )
        .await
        .unwrap();
        c.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_server_hears_that_it_expects_tls() {
    within(10, async {
        let site = Site::start(true, true).await;
        let started = std::time::Instant::now();
        let e = Client::connect_with(TcpConnector, &site.addr, config(Some(("writer", RW))))
            .await
            .unwrap_err();
        let r = handshake_reason(e);
        assert!(r.contains("expects TLS"), "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_hears_that_it_does_not_speak_tls() {
    within(10, async {
        let site = Site::start(false, true).await;
        let started = std::time::Instant::now();
        let e = site
            .connect(Some(("writer", RW)))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not speak TLS"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn server_settings_come_from_pem_files() {
    within(30, async {
        let dir = tempfile::tempdir().unwrap();
        let files = rmmap_secure::test_pki::write_files(dir.path());
        let tls = ServerTls::from_pem_files(&files.cert, &files.key).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("f"), b"pem").unwrap();
        let config = ServerConfig::new(&root).restart_grace(Some(Duration::ZERO));
        let options = ServeOptions {
            tls: Some(tls),
            ..ServeOptions::default()
        };
        let server = Server::bind_with("127.0.0.1:0", config, options)
            .await
            .unwrap();
        let addr = server.local_addr().to_string();
        let ca = ClientTls::from_ca_file(&files.ca).unwrap();
        let c = Client::connect_with(TlsConnector::new(ca), &addr, ClientConfig::default())
            .await
            .unwrap();
        let m = c.map("f", 0..3, Access::ReadOnly).await.unwrap();
        assert_eq!(&m.read_bytes(0, 3).await.unwrap()[..], b"pem");
        c.close().await.unwrap();
        let wrong = ClientTls::from_ca_file(&files.other_ca).unwrap();
        assert!(
            Client::connect_with(TlsConnector::new(wrong), &addr, ClientConfig::default())
                .await
                .is_err()
        );
        server.shutdown().await.unwrap();
    })
    .await;
}
