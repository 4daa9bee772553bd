//! `rmmap shell|cat|get|put ADDR[,ADDR...]`: a list of cluster members,
//! the first that answers used, and `moved` replies followed to the member
//! that owns the file (CLUSTER.md section 6), over both transports.

mod common;

#[path = "../../transport-mio/tests/common/fake_member.rs"]
mod fake_member;

use common::{Serve, Shell, free_addr, put, rmmap, root};
use fake_member::FakeMember;
use rmmap_core::protocol::ErrorCode;

#[test]
fn a_list_of_addresses_reaches_the_first_member_that_answers() {
    let (dir, root) = root();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    let list = format!("{},{}", free_addr(), server.addr);
    let local = dir.path().join("local.bin");
    std::fs::write(&local, b"listed").unwrap();

    put(&local, &list, "f.bin");
    let cat = rmmap().args(["cat", &list, "f.bin"]).output().unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, b"listed");
    let back = dir.path().join("back.bin");
    let get = rmmap()
        .args(["get", &list, "f.bin"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(get.status.success());
    assert_eq!(std::fs::read(&back).unwrap(), b"listed");

    for transport in ["tokio", "mio"] {
        let mut shell = Shell::start(&list, &["--transport", transport]);
        let id = shell.ok("map f.bin 0 6 ro");
        assert_eq!(shell.ok(&format!("read {id} 0 6")), hex::encode("listed"));
        assert!(shell.quit().success(), "{transport}");
    }

    let none = format!("{},{}", free_addr(), free_addr());
    let cat = rmmap().args(["cat", &none, "f.bin"]).output().unwrap();
    assert!(!cat.status.success());
}

#[test]
fn the_shell_and_cat_follow_moved_to_the_member_that_owns_the_file() {
    let (_dir, root) = root();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    std::fs::write(root.join("f.bin"), b"owned elsewhere").unwrap();
    let owner = server.addr.clone();
    let fake = FakeMember::start(move |_| (ErrorCode::Moved, owner.clone()));

    for (i, transport) in ["tokio", "mio"].into_iter().enumerate() {
        let mut shell = Shell::start(&fake.addr, &["--transport", transport]);
        let id = shell.ok("map f.bin 0 15 rw");
        let word = format!("OWNE{i}");
        shell.ok(&format!("write {id} 0 {}", hex::encode(&word)));
        shell.ok(&format!("sync {id}"));
        assert!(shell.quit().success(), "{transport}");
        let on_disk = std::fs::read(root.join("f.bin")).unwrap();
        assert_eq!(&on_disk[..5], word.as_bytes(), "{transport}");
    }
    let cat = rmmap().args(["cat", &fake.addr, "f.bin"]).output().unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, b"OWNE1 elsewhere");
    // Two shells' maps, then cat's length probe and its map.
    assert_eq!(fake.asked(), 4);
}
