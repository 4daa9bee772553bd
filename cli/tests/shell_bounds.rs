//! `rmmap shell` with lengths and offsets up to u64::MAX, over both server
//! transports and both client libraries: every such command is answered at
//! once with `err out_of_range`, nothing is allocated for a range that is
//! not there, an over-long line is refused without being kept, and the
//! shell carries on (issue 13: `read 1 0 18446744073709551615` used to
//! panic, `read 1 0 1000000000000` to abort, and `read 1 0 4294967296` to
//! allocate 4 GiB before answering).

mod common;

use common::{Serve, Shell, root};

const MAX: u64 = u64::MAX;

/// Lines that name bytes no 4096-byte mapping has.
fn out_of_range_lines() -> Vec<String> {
    vec![
        format!("read 1 0 {MAX}"),
        "read 1 0 1000000000000".into(),
        "read 1 0 4294967296".into(),
        format!("read 1 {MAX} 1"),
        format!("read 1 {MAX} {MAX}"),
        format!("read 1 1 {MAX}"),
        "read 1 4096 1".into(),
        "read 1 4000 97".into(),
        format!("write 1 {MAX} 00"),
        format!("write 1 {} 0000", MAX - 1),
        "write 1 4095 0000".into(),
        format!("map f {MAX} 1 ro"),
        format!("map f 1 {MAX} ro"),
        format!("map f {} 1 ro", MAX - 1),
        format!("map f 0 {MAX} ro"),
    ]
}

/// The largest address space the process has had (VmPeak), in bytes.
fn peak_virtual_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmPeak:"))
        .expect("VmPeak in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

fn huge_numbers_are_refused_before_anything_is_allocated(server: &str, client: &str) {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), [7u8; 4096]).unwrap();
    let serve = Serve::start(
        &root,
        "127.0.0.1:0",
        &["--transport", server, "--restart-grace-ms", "0"],
    );
    let mut shell = Shell::start(&serve.addr, &["--transport", client]);
    assert_eq!(shell.ok("map f 0 4096 rw"), "1");
    // The cache holds the page: a read that is served from it must still be
    // checked first.
    assert_eq!(shell.ok("read 1 0 2"), "0707");
    let before = peak_virtual_memory(shell.pid());
    for line in out_of_range_lines() {
        assert_eq!(
            shell.err_kind(line.as_bytes()),
            "out_of_range",
            "{line} ({server} server, {client} client)"
        );
    }
    // A 4 GiB buffer reserved for `read 1 0 4294967296` would show here even
    // untouched (a zeroed allocation is only address space until written).
    let grown = peak_virtual_memory(shell.pid()) - before;
    assert!(
        grown < 3 << 30,
        "the shell reserved {} MiB more ({server} server, {client} client)",
        grown >> 20
    );
    // A line longer than the shell keeps is refused, then skipped.
    let long = vec![b'a'; (16 << 20) + 1];
    assert_eq!(shell.err_kind(&long), "bad_command");
    // And the shell works as before.
    shell.ok("write 1 4094 abcd");
    assert_eq!(shell.ok("read 1 4094 2"), "abcd");
    shell.ok("sync 1");
    assert!(shell.quit().success());
    assert_eq!(
        &std::fs::read(root.join("f")).unwrap()[4094..],
        [0xab, 0xcd]
    );
}

#[test]
fn over_the_tokio_server_with_the_tokio_client() {
    huge_numbers_are_refused_before_anything_is_allocated("tokio", "tokio");
}

#[test]
fn over_the_tokio_server_with_the_mio_client() {
    huge_numbers_are_refused_before_anything_is_allocated("tokio", "mio");
}

#[test]
fn over_the_mio_server_with_the_tokio_client() {
    huge_numbers_are_refused_before_anything_is_allocated("mio", "tokio");
}

#[test]
fn over_the_mio_server_with_the_mio_client() {
    huge_numbers_are_refused_before_anything_is_allocated("mio", "mio");
}
