//! Hostile clients that try to leave the export root of a real
//! `rmmap serve` (tokio and mio) with hand-made `Map` and `SetLen` frames:
//! `..`, absolute paths, symlinks that lead out (to files and to
//! directories, relative and absolute), NUL bytes, very long and non-UTF-8
//! names, a FIFO and a directory. Each request gets a non-fatal error whose
//! kind says what was wrong, the session carries on, nothing outside the
//! root is read, created, written or truncated, and the bystander keeps its
//! data.

#[macro_use]
mod hostile_common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use hostile_common::Scene;
use hostile_common::raw::{Raw, check_error, map_msg};
use rmmap_core::protocol::{ErrorCode, Message, ReqId, SetLen, map_flags};

both_transports!(escapes_get_clear_errors_and_touch_nothing_outside);

const SECRET: &[u8] = b"the secret outside the root";

/// Every entry beneath `dir` but the export root and the server's log
/// (following no symlinks), with the contents of files.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            let name = e.path().strip_prefix(dir).unwrap().display().to_string();
            if name == "root" || name.starts_with("serve-") {
                continue;
            }
            if t.is_dir() {
                todo.push(e.path());
                out.insert(name + "/", Vec::new());
            } else if t.is_file() {
                out.insert(name, std::fs::read(e.path()).unwrap());
            } else {
                out.insert(name + "@", Vec::new());
            }
        }
    }
    out
}

fn escapes_get_clear_errors_and_touch_nothing_outside(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let (root, outside) = (scene.root.clone(), scene.outside().to_path_buf());
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    std::fs::create_dir(outside.join("elsewhere")).unwrap();
    std::fs::write(root.join("ok.bin"), vec![b'k'; 8192]).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    symlink(outside.join("secret"), root.join("abs_link")).unwrap();
    symlink("../secret", root.join("rel_link")).unwrap();
    symlink("../../secret", root.join("sub/deep_link")).unwrap();
    symlink(&outside, root.join("updir")).unwrap();
    symlink("../elsewhere", root.join("rel_dir")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    symlink("ok.bin", root.join("inside_link")).unwrap();
    let fifo = Command::new("mkfifo").arg(root.join("pipe")).status();
    let have_fifo = fifo.is_ok_and(|s| s.success());
    let before = snapshot(&outside);

    let (mut raw, _) = Raw::handshake(scene.addr());
    let ro = 0;
    let rw = map_flags::WRITE;
    let create = map_flags::WRITE | map_flags::CREATE;
    let long_name = vec![b'a'; 300];
    let too_long = vec![b'a'; 5000];
    let mut cases: Vec<(&[u8], u8, ErrorCode)> = vec![
        (b"../secret", ro, ErrorCode::BadPath),
        (b"../secret", create, ErrorCode::BadPath),
        (b"sub/../../secret", ro, ErrorCode::BadPath),
        (b"/etc/passwd", ro, ErrorCode::BadPath),
        (b"/", ro, ErrorCode::BadPath),
        (b"", ro, ErrorCode::BadPath),
        (b".", ro, ErrorCode::BadPath),
        (b"sub/..", ro, ErrorCode::BadPath),
        (b"sub/./../..", ro, ErrorCode::BadPath),
        (b"a//b", create, ErrorCode::BadPath),
        (b"ok.bin\0../../secret", ro, ErrorCode::BadPath),
        (b"new\0.bin", create, ErrorCode::BadPath),
        (b"\xff\xfe.bin", create, ErrorCode::BadPath),
        (b"ok\xc3.bin", ro, ErrorCode::BadPath),
        (&too_long, create, ErrorCode::BadPath),
        (b"abs_link", ro, ErrorCode::Denied),
        (b"abs_link", rw, ErrorCode::Denied),
        (b"abs_link", create, ErrorCode::Denied),
        (b"rel_link", ro, ErrorCode::Denied),
        (b"sub/deep_link", rw, ErrorCode::Denied),
        (b"updir/secret", ro, ErrorCode::Denied),
        (b"updir/new.bin", create, ErrorCode::Denied),
        (b"rel_dir/new.bin", create, ErrorCode::Denied),
        (b"updir/root/ok.bin", ro, ErrorCode::Denied),
        (b"sub", ro, ErrorCode::NotAFile),
        (b"missing.bin", ro, ErrorCode::NotFound),
    ];
    if have_fifo {
        cases.push((b"pipe", ro, ErrorCode::NotAFile));
        cases.push((b"pipe", rw, ErrorCode::NotAFile));
    }
    let mut req = 0;
    for (path, flags, code) in &cases {
        req += 1;
        raw.send(&map_msg(req, path, *flags, 0, 4));
        let shown = String::from_utf8_lossy(&path[..path.len().min(40)]).into_owned();
        match raw.reply(req) {
            Message::Error(e) => {
                check_error(&e, *code, false);
                println!(
                    "[{transport}] map {shown:?} flags {flags}: {} ({})",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
            }
            other => panic!("map {shown:?} flags {flags}: {other:?}"),
        }
    }
    // Names the file system refuses: a component over NAME_MAX (no such
    // file can exist), a symlink loop (resolution refused).
    let refused = [
        (
            &long_name[..],
            create,
            [ErrorCode::NotFound, ErrorCode::BadPath],
        ),
        (b"loop", ro, [ErrorCode::Denied, ErrorCode::NotFound]),
    ];
    for (path, flags, kinds) in refused {
        req += 1;
        raw.send(&map_msg(req, path, flags, 0, 4));
        let shown = String::from_utf8_lossy(&path[..path.len().min(40)]).into_owned();
        match raw.reply(req) {
            Message::Error(e) => {
                assert!(!e.fatal);
                assert!(kinds.contains(&e.code), "{e:?}");
                assert!(e.message.len() > 10, "{e:?}");
                println!(
                    "[{transport}] map {shown:?}: {} ({})",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
            }
            other => panic!("map {shown:?}: {other:?}"),
        }
    }
    // SetLen: creating or truncating through the same escapes.
    let set_len = [
        (&b"updir/new.bin"[..], true, 4096, ErrorCode::Denied),
        (b"abs_link", false, 0, ErrorCode::Denied),
        (b"rel_link", true, 1 << 20, ErrorCode::Denied),
        (b"../secret", false, 0, ErrorCode::BadPath),
        (b"/tmp/x", true, 1, ErrorCode::BadPath),
        (b"x\0y", true, 1, ErrorCode::BadPath),
    ];
    for (path, create, len, code) in set_len {
        req += 1;
        raw.send(&Message::SetLen(SetLen {
            req: ReqId(req),
            create,
            len,
            path: Bytes::copy_from_slice(path),
        }));
        match raw.reply(req) {
            Message::Error(e) => check_error(&e, code, false),
            other => panic!("set_len {:?}: {other:?}", String::from_utf8_lossy(path)),
        }
    }
    scene.bystander_progresses();
    // The session carried on: a symlink that stays inside is followed, to
    // the same file (and file handle) as its target.
    let a = raw.map(req + 1, "ok.bin", 0, 0, 4);
    let b = raw.map(req + 2, "inside_link", 0, 0, 4);
    assert_ne!(a, b);
    // `.` and a `..` that stays inside are normalised away (issue 15).
    raw.map(req + 3, "sub/../ok.bin", 0, 0, 4);
    raw.map(req + 4, "./sub/./../ok.bin", 0, 0, 4);
    // Nothing outside changed, nothing was created there or in the root.
    let after = snapshot(&outside);
    let keys = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&after),
        keys(&before),
        "entries outside the root changed"
    );
    assert!(after == before, "a file outside the root changed");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), SECRET);
    for stray in ["new.bin", "x", "a", "zero.bin"] {
        assert!(!root.join(stray).exists(), "{stray} was created");
    }
    scene.finish();
}
