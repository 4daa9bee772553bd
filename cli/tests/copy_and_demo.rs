//! `rmmap put`, `rmmap cat` and `rmmap get` copy whole files and ranges, and
//! `rmmap demo` passes and says so on its last line.

mod common;

use common::{Serve, put, rmmap, root};

#[test]
fn put_creates_a_new_path_and_cat_and_get_read_it_back() {
    let (dir, root) = root();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    let local = dir.path().join("local.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &data).unwrap();

    put(&local, &server.addr, "new/dir/copy.bin");
    assert_eq!(std::fs::read(root.join("new/dir/copy.bin")).unwrap(), data);

    let cat = rmmap()
        .args(["cat", &server.addr, "new/dir/copy.bin"])
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, data);
    let range = rmmap()
        .args([
            "cat",
            &server.addr,
            "new/dir/copy.bin",
            "--offset",
            "1000",
            "--len",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(range.stdout, &data[1000..1005]);

    let back = dir.path().join("back.bin");
    let get = rmmap()
        .args(["get", &server.addr, "new/dir/copy.bin"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(get.status.success());
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Putting a shorter file replaces the whole file.
    std::fs::write(&local, b"short").unwrap();
    assert!(
        rmmap()
            .arg("put")
            .arg(&local)
            .arg(&server.addr)
            .arg("new/dir/copy.bin")
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        std::fs::read(root.join("new/dir/copy.bin")).unwrap(),
        b"short"
    );

    let missing = rmmap()
        .args(["cat", &server.addr, "nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such file"));
}

#[test]
fn copies_of_several_chunks_go_through_and_a_local_write_error_is_named() {
    // 3.5 MiB: four chunks, the local side on its own thread.
    let (dir, root) = root();
    let server = Serve::start(&root, "127.0.0.1:0", &["--restart-grace-ms", "0"]);
    let local = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(7u32 << 19)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    put(&local, &server.addr, "big.bin");
    assert!(std::fs::read(root.join("big.bin")).unwrap() == data);

    let cat = rmmap()
        .args(["cat", &server.addr, "big.bin"])
        .output()
        .unwrap();
    assert!(cat.status.success());
    assert!(cat.stdout == data);
    let back = dir.path().join("back.bin");
    let get = rmmap()
        .args(["get", &server.addr, "big.bin"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(get.status.success());
    assert!(std::fs::read(&back).unwrap() == data);

    // A local file that takes no bytes: the command fails and says which
    // file and why, instead of reporting a copy.
    let full = rmmap()
        .args(["get", &server.addr, "big.bin", "/dev/full"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success());
    assert!(
        err.contains("writing /dev/full") && err.contains("No space"),
        "{err}"
    );
}

#[test]
fn the_demo_passes_and_says_so_last() {
    let out = rmmap().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("PASS: every read saw the latest completed write"),
        "{last}"
    );
}
