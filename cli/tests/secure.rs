//! `rmmap` with TLS and tokens, as real processes: the options reach both
//! transports, every refusal names its cause on stderr within seconds (on
//! every client/server pairing), and the files on disk show that refused
//! clients touched nothing.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::secure::credentials;
use common::{Serve, Shell, rmmap, root};

const PAIRINGS: [(&str, &str); 4] = [
    ("tokio", "tokio"),
    ("mio", "mio"),
    ("tokio", "mio"),
    ("mio", "tokio"),
];

/// What a finished `rmmap` process said.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `rmmap ARGS...` with `input` on stdin; fails the test if it takes
/// over 20 seconds.
fn run(args: &[String], input: &str) -> Run {
    let started = Instant::now();
    let mut child = rmmap()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("rmmap {args:?} hung");
        }
    };
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// A server over TLS with the access list (or plaintext with it).
fn serve(root: &Path, transport: &str, tls: bool) -> Serve {
    let c = credentials();
    let mut args = vec!["--transport".to_owned(), transport.to_owned()];
    args.extend(strings(&["--restart-grace-ms", "0"]));
    if tls {
        args.extend(c.serve_args());
    } else {
        args.extend(strings(&["--auth", &c.access.display().to_string()]));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::start(root, "127.0.0.1:0", &args)
}

/// `rmmap shell ADDR --transport T EXTRA...` that is expected to fail at
/// once; returns its stderr.
fn refused_shell(addr: &str, transport: &str, extra: Vec<String>) -> String {
    let mut args = strings(&["shell", addr, "--transport", transport]);
    args.extend(extra);
    let r = run(&args, "map f 0 1 ro\n");
    assert!(!r.ok, "{args:?} succeeded: {}", r.stdout);
    assert!(r.stdout.is_empty(), "{args:?} answered {:?}", r.stdout);
    assert!(
        r.took < Duration::from_secs(5),
        "{args:?} took {:?}",
        r.took
    );
    r.stderr
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn put_get_and_cat_carry_files_over_tls_with_a_token() {
    let c = credentials();
    for server in ["tokio", "mio"] {
        let (dir, root) = root();
        let s = serve(&root, server, true);
        let local = dir.path().join("local");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&local, &data).unwrap();
        let mut client = c.client_args(&c.writer);
        let put = [
            strings(&["put", &path(&local), &s.addr, "copied"]),
            client.clone(),
        ]
        .concat();
        let r = run(&put, "");
        assert!(r.ok, "put via {server}: {}", r.stderr);
        assert_eq!(std::fs::read(root.join("copied")).unwrap(), data);
        let back = dir.path().join("back");
        let get = [
            strings(&["get", &s.addr, "copied", &path(&back)]),
            client.clone(),
        ]
        .concat();
        let r = run(&get, "");
        assert!(r.ok, "get via {server}: {}", r.stderr);
        assert_eq!(std::fs::read(&back).unwrap(), data);
        // A read-only token reads too, and --tls-name picks a name the
        // certificate carries.
        client = c.client_args(&c.reader);
        client.extend(strings(&["--tls-name", "localhost"]));
        let cat = [strings(&["cat", &s.addr, "copied", "--len", "5"]), client].concat();
        let r = run(&cat, "");
        assert!(r.ok, "cat via {server}: {}", r.stderr);
        assert_eq!(r.stdout.as_bytes(), &data[..5]);
    }
}

#[test]
fn every_refusal_names_its_cause_on_every_pairing() {
    let c = credentials();
    let (_dir, root) = root();
    std::fs::write(root.join("f"), b"untouched").unwrap();
    for (client, server) in PAIRINGS {
        let tls = serve(&root, server, true);
        let plain = serve(&root, server, false);
        let token = |t: &Path| strings(&["--token-file", &path(t)]);
        let ca = |p: &Path| strings(&["--tls-ca", &path(p)]);
        let cases: Vec<(&str, &str, Vec<String>, &str)> = vec![
            (
                "plaintext to TLS",
                &tls.addr,
                token(&c.writer),
                "the server expects TLS",
            ),
            (
                "TLS to plaintext",
                &plain.addr,
                c.client_args(&c.writer),
                "does not speak TLS",
            ),
            ("wrong token", &tls.addr, c.client_args(&c.wrong), "denied"),
            (
                "no token",
                &tls.addr,
                ca(&c.pki.ca),
                "requires authentication",
            ),
            (
                "unknown CA",
                &tls.addr,
                [ca(&c.pki.other_ca), token(&c.writer)].concat(),
                "not signed by a certificate authority this client trusts",
            ),
            (
                "name mismatch",
                &tls.addr,
                [
                    c.client_args(&c.writer),
                    strings(&["--tls-name", "files.example"]),
                ]
                .concat(),
                "not valid for the name \"files.example\"",
            ),
        ];
        for (what, addr, extra, want) in cases {
            let err = refused_shell(addr, client, extra);
            assert!(
                err.contains(want),
                "{what}, {client} client, {server} server: {err}"
            );
        }
    }
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"untouched");
}

#[test]
fn a_read_only_token_refuses_every_write_and_touches_nothing() {
    let c = credentials();
    for (client, server) in PAIRINGS {
        let (_dir, root) = root();
        std::fs::write(root.join("f"), b"unchanged").unwrap();
        let s = serve(&root, server, true);
        let mut args = vec![
            "--transport".to_owned(),
            client.to_owned(),
            "--create".into(),
        ];
        args.extend(c.client_args(&c.reader));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut sh = Shell::start(&s.addr, &args);
        assert_eq!(sh.err_kind(b"map f 0 9 rw"), "read_only");
        assert_eq!(sh.err_kind(b"map new 0 9 rw"), "read_only");
        let id = sh.ok("map f 0 9 ro");
        assert_eq!(
            sh.err_kind(format!("write {id} 0 00").as_bytes()),
            "read_only"
        );
        assert_eq!(sh.ok(&format!("read {id} 0 9")), "756e6368616e676564");
        assert!(sh.quit().success());
        // `put` sets the length first: refused too.
        let local = root.parent().unwrap().join("local");
        std::fs::write(&local, b"new bytes").unwrap();
        let put = [
            strings(&["put", &path(&local), &s.addr, "f"]),
            c.client_args(&c.reader),
        ]
        .concat();
        let r = run(&put, "");
        assert!(!r.ok && r.stderr.contains("read_only"), "{}", r.stderr);
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"unchanged");
        assert!(!root.join("new").exists());
    }
}

#[test]
fn a_confined_token_cannot_leave_its_sub_directory() {
    let c = credentials();
    for (client, server) in [("tokio", "mio"), ("mio", "tokio")] {
        let (_dir, root) = root();
        for d in ["team", "other"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        std::fs::write(root.join("team/f"), b"team file").unwrap();
        std::fs::write(root.join("other/secret"), b"secret").unwrap();
        std::fs::write(root.join("top"), b"top").unwrap();
        std::os::unix::fs::symlink("../other", root.join("team/escape")).unwrap();
        let s = serve(&root, server, true);
        let mut args = vec![
            "--transport".to_owned(),
            client.to_owned(),
            "--create".into(),
        ];
        args.extend(c.client_args(&c.team));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut sh = Shell::start(&s.addr, &args);
        let id = sh.ok("map f 0 9 rw");
        assert_eq!(sh.ok(&format!("read {id} 0 4")), "7465616d");
        for (line, want) in [
            ("map ../top 0 3 ro", "bad_path"),
            ("map ../other/secret 0 6 rw", "bad_path"),
            ("map /etc/passwd 0 1 ro", "bad_path"),
            ("map escape/secret 0 6 ro", "denied"),
            ("map escape/secret 0 6 rw", "denied"),
            ("map escape/new 0 6 rw", "denied"),
        ] {
            assert_eq!(sh.err_kind(line.as_bytes()), want, "{line}");
        }
        assert!(sh.quit().success());
        assert_eq!(std::fs::read(root.join("other/secret")).unwrap(), b"secret");
        assert_eq!(std::fs::read(root.join("top")).unwrap(), b"top");
        assert!(!root.join("other/new").exists());
    }
}

#[test]
fn bad_security_settings_stop_the_command_with_a_clear_message() {
    let c = credentials();
    let (dir, root) = root();
    let cert_only = strings(&["serve", &path(&root), "--tls-cert", &path(&c.pki.cert)]);
    let r = run(&cert_only, "");
    assert!(!r.ok && r.stderr.contains("--tls-key"), "{}", r.stderr);
    let bad_list = dir.path().join("bad-access");
    std::fs::write(&bad_list, "alice 0011 rw\n").unwrap();
    let r = run(
        &strings(&["serve", &path(&root), "--auth", &path(&bad_list)]),
        "",
    );
    assert!(!r.ok && r.stderr.contains("line 1"), "{}", r.stderr);
    let with_rights = dir.path().join("token-with-rights");
    std::fs::write(
        &with_rights,
        format!("alice {} rw\n", common::secure::WRITER),
    )
    .unwrap();
    let r = run(
        &strings(&[
            "cat",
            "127.0.0.1:1",
            "f",
            "--token-file",
            &path(&with_rights),
        ]),
        "",
    );
    assert!(
        !r.ok && r.stderr.contains("belong in the server's access list"),
        "{}",
        r.stderr
    );
    let r = run(
        &strings(&["cat", "127.0.0.1:1", "f", "--tls-ca", &path(&bad_list)]),
        "",
    );
    assert!(!r.ok && r.stderr.contains("no CERTIFICATE"), "{}", r.stderr);
}

#[cfg(unix)]
#[test]
fn a_token_file_others_can_read_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let c = credentials();
    let (dir, root) = root();
    std::fs::write(root.join("f"), b"x").unwrap();
    let s = serve(&root, "tokio", true);
    let loose = dir.path().join("loose.token");
    std::fs::copy(&c.reader, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(
        &[strings(&["cat", &s.addr, "f"]), c.client_args(&loose)].concat(),
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("readable by other users"), "{}", r.stderr);
}
