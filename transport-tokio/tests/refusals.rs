//! What the server refuses, and that it says why with a clear error kind:
//! paths that try to leave the root, writes to a read-only export, ranges
//! past the end, files that do not exist. Nothing outside the root is read
//! or written, and the server keeps serving.

mod common;

use std::os::unix::fs::symlink;

use common::{TestServer, within};
use rmmap_tokio::{Access, MapOptions, OpError};

fn kind<T: std::fmt::Debug>(r: Result<T, OpError>) -> &'static str {
    r.expect_err("should fail").kind()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_leave_the_root_are_refused_and_nothing_outside_is_touched() {
    within(20, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("ok", b"fine");
        let secret = ts.outside().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        symlink(&secret, ts.root().join("escape")).unwrap();
        symlink(ts.outside(), ts.root().join("updir")).unwrap();
        let c = ts.client().await;
        let create = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        let long = "a".repeat(10_000);
        let cases: [(&str, &str); 7] = [
            ("../x", "bad_path"),
            ("/etc/passwd", "bad_path"),
            ("a\0b", "bad_path"),
            (&long, "bad_path"),
            ("escape", "denied"),
            ("updir/secret", "denied"),
            ("updir/new", "denied"),
        ];
        for (path, want) in cases {
            let shown: String = path.chars().take(20).collect();
            assert_eq!(
                kind(c.map(path, 0..4, Access::ReadOnly).await),
                want,
                "map {shown:?}"
            );
            assert_eq!(
                kind(c.map_with(path, 0..4, create).await),
                want,
                "map+create {shown:?}"
            );
            assert_eq!(
                kind(c.set_len(path, 1, true).await),
                want,
                "set_len {shown:?}"
            );
        }
        let e = c.map("escape", 0..4, Access::ReadOnly).await.unwrap_err();
        assert!(e.to_string().contains("outside the export root"), "{e}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        assert!(!ts.outside().join("new").exists());
        assert!(!ts.outside().join("x").exists());
        // Still serving, on the same connection.
        let m = c.map("ok", 0..4, Access::ReadOnly).await.unwrap();
        assert_eq!(&m.read_bytes(0, 4).await.unwrap()[..], b"fine");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_refuses_every_write_and_every_rw_map() {
    within(20, async {
        let ts = TestServer::start(|c| c.read_only(true)).await;
        ts.put("f", b"unchanged");
        let c = ts.client().await;
        assert_eq!(kind(c.map("f", 0..9, Access::ReadWrite).await), "read_only");
        let create = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        assert_eq!(kind(c.map_with("new", 0..9, create).await), "read_only");
        assert_eq!(kind(c.set_len("f", 1, false).await), "read_only");
        assert_eq!(kind(c.set_len("new", 1, true).await), "read_only");
        let m = c.map("f", 0..9, Access::ReadOnly).await.unwrap();
        assert_eq!(kind(m.write(0, b"x").await), "read_only");
        assert_eq!(&m.read_bytes(0, 9).await.unwrap()[..], b"unchanged");
        assert_eq!(ts.get("f"), b"unchanged");
        assert!(!ts.root().join("new").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_past_the_end_and_missing_files() {
    within(20, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &[1u8; 100]);
        std::fs::create_dir(ts.root().join("dir")).unwrap();
        let c = ts.client().await;
        let m = c.map("f", 10..60, Access::ReadWrite).await.unwrap();
        assert_eq!(m.len(), 50);
        assert_eq!(kind(m.read_bytes(45, 6).await), "out_of_range");
        assert_eq!(kind(m.read_bytes(u64::MAX, 2).await), "out_of_range");
        assert_eq!(kind(m.write(50, b"x").await), "out_of_range");
        let e = m.write(49, b"xy").await.unwrap_err();
        assert!(e.to_string().contains("50-byte mapping"), "{e}");
        m.write(49, b"x").await.unwrap();
        assert_eq!(
            kind(c.map("f", 0..101, Access::ReadOnly).await),
            "out_of_range"
        );
        assert_eq!(
            kind(c.map("f", 100..200, Access::ReadOnly).await),
            "out_of_range"
        );
        assert_eq!(
            kind(c.map("missing", 0..1, Access::ReadOnly).await),
            "not_found"
        );
        assert_eq!(
            kind(c.map("dir", 0..1, Access::ReadOnly).await),
            "not_a_file"
        );
        // With create, a short file grows to cover the range.
        let create = MapOptions {
            access: Access::ReadWrite,
            create: true,
        };
        let g = c.map_with("f", 0..200, create).await.unwrap();
        assert_eq!(g.file_len(), 200);
        assert_eq!(&g.read_bytes(59, 2).await.unwrap()[..], &[b'x', 1]);
        assert_eq!(&g.read_bytes(100, 2).await.unwrap()[..], &[0, 0]);
    })
    .await;
}
