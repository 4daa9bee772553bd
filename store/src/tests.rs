//! The store keeps every path beneath the root and reads, writes and syncs
//! real files with positioned IO.

use std::os::unix::fs::symlink;

use rmmap_core::path::ExportPath;
use rmmap_core::store::{OpenOptions, Store, StoreError};

use crate::{FsStore, ServerConfig};

fn p(s: &str) -> ExportPath {
    ExportPath::parse(s.as_bytes()).unwrap()
}

const RW: OpenOptions = OpenOptions {
    create: false,
    write: true,
};
const CREATE: OpenOptions = OpenOptions {
    create: true,
    write: true,
};

struct Fixture {
    // Holds the root, a sibling "outside" directory and the secret file.
    _top: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    let outside = top.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::write(root.join("data"), b"hello").unwrap();
    Fixture {
        root,
        outside,
        _top: top,
    }
}

#[test]
fn reads_writes_and_syncs_a_real_file() {
    let f = fixture();
    let s = FsStore::open(&f.root, false).unwrap();
    let o = s.open(&p("data"), RW).unwrap();
    assert!(o.writable);
    assert_eq!(o.len, 5);
    assert_eq!(&s.read(o.file, 0, 5).unwrap()[..], b"hello");
    s.write(o.file, 1, b"ELL").unwrap();
    s.sync(o.file).unwrap();
    assert_eq!(std::fs::read(f.root.join("data")).unwrap(), b"hELLo");
    s.set_len(o.file, 2).unwrap();
    assert_eq!(std::fs::read(f.root.join("data")).unwrap(), b"hE");
    s.close(o.file);
    assert_eq!(s.open_files(), 0);
}

#[test]
fn reads_past_the_end_of_the_file_are_zeros() {
    let f = fixture();
    let s = FsStore::open(&f.root, false).unwrap();
    let o = s.open(&p("data"), OpenOptions::default()).unwrap();
    assert_eq!(&s.read(o.file, 3, 5).unwrap()[..], b"lo\0\0\0");
    assert_eq!(&s.read(o.file, 1 << 40, 4).unwrap()[..], b"\0\0\0\0");
    assert_eq!(&s.read(o.file, u64::MAX - 1, 4).unwrap()[..], b"\0\0\0\0");
}

#[test]
fn two_paths_to_one_file_share_a_key() {
    let f = fixture();
    symlink("data", f.root.join("alias")).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    let a = s.open(&p("data"), RW).unwrap();
    let b = s.open(&p("alias"), RW).unwrap();
    assert_eq!(a.key, b.key);
    assert_ne!(a.file, b.file);
}

#[test]
fn a_symlink_out_of_the_root_is_refused_and_nothing_outside_is_touched() {
    let f = fixture();
    symlink(f.outside.join("secret"), f.root.join("escape")).unwrap();
    symlink("../outside", f.root.join("updir")).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    for path in ["escape", "updir/secret", "updir/new"] {
        for opts in [OpenOptions::default(), RW, CREATE] {
            let e = s.open(&p(path), opts).unwrap_err();
            assert!(matches!(e, StoreError::Denied(_)), "{path} {opts:?}: {e:?}");
        }
    }
    assert_eq!(std::fs::read(f.outside.join("secret")).unwrap(), b"secret");
    assert!(!f.outside.join("new").exists());
}

#[test]
fn cap_std_refuses_parent_and_absolute_paths_by_itself() {
    // The core's ExportPath never lets these through; the store's resolver
    // refuses them anyway.
    let f = fixture();
    std::fs::create_dir(f.root.join("a")).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    for path in ["../outside/secret", "/etc/passwd", "a/../../outside/secret"] {
        let e = s.open_existing(path, false).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{path}: {e}"
        );
    }
}

#[test]
fn missing_files_directories_and_create() {
    let f = fixture();
    std::fs::create_dir(f.root.join("dir")).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    assert!(matches!(
        s.open(&p("nope"), RW),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.open(&p("dir"), OpenOptions::default()),
        Err(StoreError::NotAFile(_))
    ));
    assert!(matches!(
        s.open(&p("dir"), RW),
        Err(StoreError::NotAFile(_))
    ));
    assert!(matches!(
        s.open(&p("data/x"), CREATE),
        Err(StoreError::NotAFile(_))
    ));
    let o = s.open(&p("new/deep/file.bin"), CREATE).unwrap();
    assert_eq!(o.len, 0);
    s.set_len(o.file, 10_000).unwrap();
    s.write(o.file, 9_999, b"z").unwrap();
    s.sync(o.file).unwrap();
    let on_disk = std::fs::read(f.root.join("new/deep/file.bin")).unwrap();
    assert_eq!(on_disk.len(), 10_000);
    assert_eq!(on_disk[9_999], b'z');
    // Opening again with create finds the same file.
    let again = s.open(&p("new/deep/file.bin"), CREATE).unwrap();
    assert_eq!(again.key, o.key);
    assert_eq!(again.len, 10_000);
}

#[test]
fn a_read_only_store_refuses_every_change() {
    let f = fixture();
    let s = ServerConfig::new(&f.root)
        .read_only(true)
        .open_store()
        .unwrap();
    assert!(s.is_read_only());
    let o = s.open(&p("data"), RW).unwrap();
    assert!(!o.writable);
    assert!(matches!(
        s.write(o.file, 0, b"x"),
        Err(StoreError::ReadOnly(_))
    ));
    assert!(matches!(s.set_len(o.file, 0), Err(StoreError::ReadOnly(_))));
    assert!(matches!(
        s.open(&p("new"), CREATE),
        Err(StoreError::ReadOnly(_))
    ));
    assert_eq!(std::fs::read(f.root.join("data")).unwrap(), b"hello");
    assert!(!f.root.join("new").exists());
}

#[test]
fn a_file_without_write_permission_opens_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    std::fs::set_permissions(f.root.join("data"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    let o = s.open(&p("data"), RW).unwrap();
    // Root ignores permission bits; everyone else gets a read-only file.
    if !o.writable {
        assert!(matches!(
            s.write(o.file, 0, b"x"),
            Err(StoreError::ReadOnly(_))
        ));
    }
    assert_eq!(&s.read(o.file, 0, 5).unwrap()[..], b"hello");
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let e = FsStore::open("/definitely/not/here", false).unwrap_err();
    assert!(e.to_string().contains("/definitely/not/here"), "{e}");
}

#[test]
fn page_size_keeps_the_configuration_valid() {
    for ps in [512, 4096, 65536, 1 << 20] {
        let c = ServerConfig::new("/tmp").page_size(ps);
        c.core.validate().unwrap();
    }
}

#[test]
fn a_scoped_open_cannot_leave_its_sub_directory_even_through_a_symlink() {
    let f = fixture();
    std::fs::create_dir_all(f.root.join("team/alice")).unwrap();
    std::fs::write(f.root.join("team/alice/mine"), b"alice").unwrap();
    std::fs::write(f.root.join("team/bob"), b"bob's").unwrap();
    // Inside the root, but outside alice's scope.
    symlink("../bob", f.root.join("team/alice/sneaky")).unwrap();
    let s = FsStore::open(&f.root, false).unwrap();
    let scope = p("team/alice");
    let ok = s.open_scoped(&scope, &p("mine"), RW).unwrap();
    assert_eq!(&s.read(ok.file, 0, 5).unwrap()[..], b"alice");
    let e = s.open_scoped(&scope, &p("sneaky"), RW).unwrap_err();
    assert!(matches!(e, StoreError::Denied(_)), "{e:?}");
    // Unscoped, the same symlink stays inside the root and is followed.
    assert!(s.open(&p("team/alice/sneaky"), RW).is_ok());
    // Creating inside the scope creates beneath it.
    let c = s.open_scoped(&scope, &p("new/file"), CREATE).unwrap();
    s.write(c.file, 0, b"x").unwrap();
    s.sync(c.file).unwrap();
    assert_eq!(
        std::fs::read(f.root.join("team/alice/new/file")).unwrap(),
        b"x"
    );
}

#[test]
fn the_run_state_is_replaced_whole_and_read_back() {
    let f = fixture();
    let s = FsStore::open(&f.root, false).unwrap();
    assert_eq!(s.load_run_state().unwrap(), None, "never recorded");
    s.save_run_state(b"first").unwrap();
    s.save_run_state(b"second").unwrap();
    assert_eq!(&s.load_run_state().unwrap().unwrap()[..], b"second");
    assert!(
        !f.root.join(".rmmap-state.tmp").exists(),
        "the temporary file was renamed over"
    );
    let ro = FsStore::open(&f.root, true).unwrap();
    assert!(matches!(
        ro.save_run_state(b"x"),
        Err(StoreError::ReadOnly(_))
    ));
}
