//! Who may connect, over rmmap-mio: TLS driven over non-blocking sockets
//! (certificates made at run time), tokens and rights. Every refusal is a
//! clear error that arrives quickly, and the files on disk show that
//! nothing was touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmmap_mio::{
    Access, AtomicOp, Client, ClientConfig, ClientTls, ConnectError, EmbeddedClient, MapOptions,
    ServeOptions, Server, ServerConfig, ServerTls, Token,
};
use rmmap_secure::test_pki::TestCa;

const RW: &str = "00112233445566778899aabbccddeeff";
const RO: &str = "ffeeddccbbaa99887766554433221100";
const TEAM: &str = "0123456789abcdef0123456789abcdef";

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
    fn start(tls: bool, auth: bool) -> Site {
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
        let server = Server::bind_with("127.0.0.1:0", config, options).unwrap();
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

    /// Connects over TLS trusting the site's CA, as `who` or without a token.
    fn connect(&self, who: Option<(&str, &str)>) -> Result<Client, ConnectError> {
        Client::connect_tls(&self.addr, config(who), self.ca.client_tls())
    }
}

fn config(who: Option<(&str, &str)>) -> ClientConfig {
    let mut c = ClientConfig::default();
    if let Some((name, secret)) = who {
        c = Token::parse(&format!("{name} {secret}"))
            .unwrap()
            .configure(c);
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

#[test]
fn tls_with_a_token_carries_reads_and_writes_of_several_mebibytes() {
    let site = Site::start(true, true);
    let c = site.connect(Some(("writer", RW))).unwrap();
    // More than rustls buffers at once, both ways.
    let len = 4 << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let create = MapOptions {
        access: Access::ReadWrite,
        create: true,
    };
    let m = c.map_with("big", 0..len as u64, create).unwrap();
    m.write(0, &data).unwrap();
    m.sync().unwrap();
    assert_eq!(disk(&site.root(), "big").unwrap(), data);
    let other = site.connect(Some(("reader", RO))).unwrap();
    let r = other.map("big", 0..len as u64, Access::ReadOnly).unwrap();
    assert_eq!(&r.read_bytes(0, len as u64).unwrap()[..], &data[..]);
    c.close().unwrap();
    other.close().unwrap();
    site.server.shutdown().unwrap();
}

#[test]
fn a_wrong_token_an_unknown_name_and_no_token_are_denied() {
    let site = Site::start(true, true);
    let r = handshake_reason(site.connect(Some(("writer", RO))).unwrap_err());
    assert!(r.starts_with("denied"), "{r}");
    let r = handshake_reason(site.connect(Some(("nobody", RW))).unwrap_err());
    assert!(r.starts_with("denied"), "{r}");
    let r = handshake_reason(site.connect(None).unwrap_err());
    assert!(r.contains("requires authentication"), "{r}");
    assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
}

#[test]
fn read_only_rights_refuse_every_write_and_touch_nothing() {
    let site = Site::start(true, true);
    let c = site.connect(Some(("reader", RO))).unwrap();
    let rw = MapOptions {
        access: Access::ReadWrite,
        create: false,
    };
    let create = MapOptions {
        access: Access::ReadWrite,
        create: true,
    };
    let e = c.map_with("f", 0..8192, rw).unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    let e = c.map_with("new", 0..10, create).unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    let e = c.set_len("f", 1, false).unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    let e = c.set_len("new", 10, true).unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    let m = c.map("f", 0..8192, Access::ReadOnly).unwrap();
    let e = m.write(0, b"x").unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    let e = m.atomic(0, AtomicOp::FetchAdd(1)).unwrap_err();
    assert_eq!(e.kind(), "read_only", "{e}");
    assert_eq!(&m.read_bytes(0, 3).unwrap()[..], &[7, 7, 7]);
    c.close().unwrap();
    assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
    assert!(disk(&site.root(), "new").is_none());
}

#[test]
fn a_confined_client_cannot_leave_its_sub_directory() {
    let site = Site::start(true, true);
    let c = site.connect(Some(("team", TEAM))).unwrap();
    let create = MapOptions {
        access: Access::ReadWrite,
        create: true,
    };
    let m = c.map("f", 0..4096, Access::ReadWrite).unwrap();
    m.write(0, b"team").unwrap();
    m.sync().unwrap();
    assert_eq!(&disk(&site.root(), "team/f").unwrap()[..4], b"team");
    for (path, want) in [
        ("../f", "bad_path"),
        ("../other/secret", "bad_path"),
        ("/etc/passwd", "bad_path"),
        ("escape/secret", "denied"),
        ("escape/new", "denied"),
    ] {
        let e = c.map_with(path, 0..6, create).unwrap_err();
        assert_eq!(e.kind(), want, "{path}: {e}");
        let e = c.set_len(path, 0, true).unwrap_err();
        assert_eq!(e.kind(), want, "set_len {path}: {e}");
    }
    c.close().unwrap();
    assert_eq!(disk(&site.root(), "f").unwrap(), [7u8; 8192]);
    assert_eq!(disk(&site.root(), "other/secret").unwrap(), b"secret");
    assert!(disk(&site.root(), "other/new").is_none());
}

#[test]
fn a_certificate_from_an_unknown_authority_is_refused() {
    let site = Site::start(true, true);
    let stranger = TestCa::new("another CA").client_tls();
    let e = Client::connect_tls(&site.addr, config(Some(("writer", RW))), stranger)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not signed by a certificate authority this client trusts"),
        "{e}"
    );
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let site = Site::start(true, true);
    let tls = site
        .ca
        .client_tls()
        .with_server_name("files.example")
        .unwrap();
    let e = Client::connect_tls(&site.addr, config(Some(("writer", RW))), tls)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not valid for the name \"files.example\""),
        "{e}"
    );
    let tls = site.ca.client_tls().with_server_name("localhost").unwrap();
    let c = Client::connect_tls(&site.addr, config(Some(("writer", RW))), tls).unwrap();
    c.close().unwrap();
}

#[test]
fn a_plaintext_client_of_a_tls_server_hears_that_it_expects_tls() {
    let site = Site::start(true, true);
    let started = Instant::now();
    let e = Client::connect(&site.addr, config(Some(("writer", RW)))).unwrap_err();
    let r = handshake_reason(e);
    assert!(r.contains("expects TLS"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_plaintext_flood_at_a_tls_server_is_cut_off_and_starves_no_one() {
    use std::io::Write;
    let site = Site::start(true, true);
    let mut raw = std::net::TcpStream::connect(&site.addr).unwrap();
    raw.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let cut = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        if raw.write(&chunk).is_err() {
            break true;
        }
    };
    assert!(cut, "the server kept taking plaintext for 10 s");
    // The one loop thread still serves everyone else.
    let c = site.connect(Some(("reader", RO))).unwrap();
    let m = c.map("f", 0..8192, Access::ReadOnly).unwrap();
    assert_eq!(&m.read_bytes(0, 2).unwrap()[..], &[7, 7]);
    c.close().unwrap();
}

#[test]
fn a_tls_client_of_a_plaintext_server_hears_that_it_does_not_speak_tls() {
    let site = Site::start(false, true);
    let started = Instant::now();
    let e = site.connect(Some(("writer", RW))).unwrap_err().to_string();
    assert!(e.contains("does not speak TLS"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_embedded_client_runs_its_tls_handshake_in_the_applications_loop() {
    let site = Site::start(true, true);
    let mut poll = mio::Poll::new().unwrap();
    let mut client = EmbeddedClient::with_tls(
        &site.addr,
        config(Some(("reader", RO))),
        site.ca.client_tls(),
        poll.registry(),
        mio::Token(3),
    )
    .unwrap();
    let op = client.map("f", 0..8192, MapOptions::read_only()).unwrap();
    let mut events = mio::Events::with_capacity(16);
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        assert!(Instant::now() < deadline, "no answer over TLS");
        let timeout = client
            .next_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        poll.poll(&mut events, Some(timeout)).unwrap();
        for ev in events.iter() {
            client.handle_event(ev);
        }
        client.handle_timeout();
        if let Some((done, r)) = client.poll_completion() {
            assert_eq!(done, op);
            break r;
        }
    };
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn server_settings_come_from_pem_files() {
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
    let server = Server::bind_with("127.0.0.1:0", config, options).unwrap();
    let addr = server.local_addr().to_string();
    let ca = ClientTls::from_ca_file(&files.ca).unwrap();
    let c = Client::connect_tls(&addr, ClientConfig::default(), ca).unwrap();
    let m = c.map("f", 0..3, Access::ReadOnly).unwrap();
    assert_eq!(&m.read_bytes(0, 3).unwrap()[..], b"pem");
    c.close().unwrap();
    let wrong = ClientTls::from_ca_file(&files.other_ca).unwrap();
    assert!(Client::connect_tls(&addr, ClientConfig::default(), wrong).is_err());
    server.shutdown().unwrap();
}
