//! Through `rmmap shell`: paths that try to leave the root, a read-only
//! server, ranges past the end and missing files each get `err KIND ...`,
//! the shell and the server carry on, and nothing outside the root changes.

mod common;

use std::os::unix::fs::symlink;

use common::{Serve, Shell, root};

#[test]
fn escaping_paths_get_clear_errors_and_touch_nothing_outside() {
    let (dir, root) = root();
    std::fs::write(root.join("ok"), b"fine").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    symlink(&secret, root.join("escape")).unwrap();
    symlink(dir.path(), root.join("updir")).unwrap();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    let mut shell = Shell::start(&server.addr, &["--create"]);
    let long = format!("map {} 0 1 ro", "a".repeat(10_000));
    let cases: [(&[u8], &str); 9] = [
        (b"map ../x 0 1 ro", "bad_path"),
        (b"map ../x 0 1 rw", "bad_path"),
        (b"map /etc/passwd 0 1 ro", "bad_path"),
        (b"map a\0b 0 1 ro", "bad_path"),
        (long.as_bytes(), "bad_path"),
        (b"map escape 0 1 ro", "denied"),
        (b"map escape 0 1 rw", "denied"),
        (b"map updir/secret 0 1 ro", "denied"),
        (b"map updir/new 0 1 rw", "denied"),
    ];
    for (line, want) in cases {
        assert_eq!(
            shell.err_kind(line),
            want,
            "{:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        );
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    assert!(!dir.path().join("new").exists());
    assert!(!dir.path().join("x").exists());
    let id = shell.ok("map ok 0 4 ro");
    assert_eq!(shell.ok(&format!("read {id} 0 4")), "66696e65");
    assert!(shell.quit().success());
}

#[test]
fn a_read_only_server_refuses_writes_and_rw_maps() {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), b"unchanged").unwrap();
    let server = Serve::start(&root, "127.0.0.1:0", &["--read-only"]);
    let mut shell = Shell::start(&server.addr, &["--create"]);
    assert_eq!(shell.err_kind(b"map f 0 9 rw"), "read_only");
    assert_eq!(shell.err_kind(b"map new 0 9 rw"), "read_only");
    let id = shell.ok("map f 0 9 ro");
    assert_eq!(
        shell.err_kind(format!("write {id} 0 00").as_bytes()),
        "read_only"
    );
    assert_eq!(shell.ok(&format!("read {id} 0 9")), hex(b"unchanged"));
    assert!(shell.quit().success());
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"unchanged");
    assert!(!root.join("new").exists());
}

#[test]
fn ranges_ids_and_syntax_errors_do_not_end_the_shell() {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), [7u8; 100]).unwrap();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    let mut shell = Shell::start(&server.addr, &[]);
    let id = shell.ok("map f 10 50 rw");
    assert_eq!(id, "1");
    assert_eq!(
        shell.err_kind(format!("read {id} 45 6").as_bytes()),
        "out_of_range"
    );
    assert_eq!(
        shell.err_kind(format!("write {id} 50 00").as_bytes()),
        "out_of_range"
    );
    assert_eq!(shell.err_kind(b"map f 0 101 ro"), "out_of_range");
    assert_eq!(shell.err_kind(b"map missing 0 1 ro"), "not_found");
    assert_eq!(shell.err_kind(b"read 9 0 1"), "unknown_mapping");
    assert_eq!(shell.err_kind(b"frobnicate"), "bad_command");
    assert_eq!(shell.err_kind(b"write 1 0 xyz"), "bad_command");
    // Blank lines and comments get no answer: the next answer is for `read`.
    shell.cmd_no_answer("");
    shell.cmd_no_answer("# a comment");
    assert_eq!(shell.ok(&format!("read {id} 0 2")), "0707");
    shell.ok(&format!("write {id} 1 abcd"));
    shell.ok(&format!("sync {id}"));
    assert_eq!(
        &std::fs::read(root.join("f")).unwrap()[11..13],
        &[0xab, 0xcd]
    );
    shell.ok(&format!("unmap {id}"));
    assert_eq!(
        shell.err_kind(format!("read {id} 0 1").as_bytes()),
        "unknown_mapping"
    );
    assert!(shell.quit().success());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
