//! The blocking client of a cluster follows `moved` (PROTOCOL.md section 9,
//! CLUSTER.md section 6), against a fake member (`common/fake_member.rs`)
//! beside an ordinary server that owns the files; and its mappings move off
//! a member that went silent.

#[path = "common/fake_member.rs"]
mod fake_member;
// The plain-thread proxy of the command's tests.
#[path = "../../cli/tests/common/proxy.rs"]
#[allow(unreachable_pub)]
mod proxy;

use std::sync::Arc;
use std::time::Duration;

use fake_member::FakeMember;
use proxy::Proxy;
use rmmap_mio::{
    Access, ClientConfig, ClusterClient, ErrorCode, LossCause, OpError, RedirectPolicy, Server,
    ServerConfig, SessionLossReason,
};

fn owner() -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path())
        .lease(Duration::from_secs(2))
        .restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr().to_string();
    (server, addr, dir)
}

#[test]
fn map_and_set_len_answered_moved_are_made_on_the_named_member() {
    let (_server, to, dir) = owner();
    std::fs::write(dir.path().join("f.bin"), b"owned elsewhere").unwrap();
    let fake = FakeMember::start(move |_| (ErrorCode::Moved, to.clone()));

    let cluster = ClusterClient::connect(&[&fake.addr], ClientConfig::default()).unwrap();
    let m = cluster.map("f.bin", 0..15, Access::ReadWrite).unwrap();
    assert_eq!(&m.read_bytes(0, 15).unwrap()[..], b"owned elsewhere");
    m.write(0, b"OWNED").unwrap();
    m.sync().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("f.bin")).unwrap(),
        b"OWNED elsewhere"
    );
    assert_eq!(cluster.set_len("new.bin", 100, true).unwrap(), 100);
    assert_eq!(fake.asked(), 2);
    assert_eq!(cluster.connected().len(), 2);
    drop(m);
    cluster.close().unwrap();
}

#[test]
fn members_answering_moved_without_end_are_reported_after_the_bound() {
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let name = me.clone();
    let fake = FakeMember::start(move |_| (ErrorCode::Moved, name.get().unwrap().clone()));
    me.set(fake.addr.clone()).unwrap();

    let cluster = ClusterClient::connect(&[&fake.addr], ClientConfig::default()).unwrap();
    let e = cluster.map("f.bin", 0..1, Access::ReadOnly).unwrap_err();
    assert_eq!(e.kind(), "moved", "{e}");
    let max = RedirectPolicy::default().max_redirects as usize;
    assert_eq!(fake.asked(), 1 + max);
}

#[test]
fn busy_is_asked_again_in_a_cluster_and_reported_at_once_otherwise() {
    let (_server, to, dir) = owner();
    std::fs::write(dir.path().join("f.bin"), b"x").unwrap();
    let fake = FakeMember::start(move |n| match n {
        0 | 1 => (ErrorCode::Busy, "no owner yet".into()),
        _ => (ErrorCode::Moved, to.clone()),
    });
    // One address: `busy` is the answer.
    let alone = ClusterClient::connect(&[&fake.addr], ClientConfig::default()).unwrap();
    let e = alone.map("f.bin", 0..1, Access::ReadOnly).unwrap_err();
    assert!(
        matches!(
            &e,
            OpError::Server {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.asked(), 1);

    // Two: ownership is in motion; ask again until an owner is named.
    // (The second is never asked: the first answers.)
    let addrs = [fake.addr.as_str(), "127.0.0.1:1"];
    let cluster = ClusterClient::connect(&addrs, ClientConfig::default()).unwrap();
    let m = cluster.map("f.bin", 0..1, Access::ReadOnly).unwrap();
    assert_eq!(&m.read_bytes(0, 1).unwrap()[..], b"x");
    assert_eq!(fake.asked(), 3);
}

/// A mapping whose member goes silent moves to the member that serves the
/// file now, after one operation said what the silent one had not synced
/// (here two ordinary servers over one directory stand for two members,
/// the first behind a proxy that stops forwarding).
#[test]
fn a_mapping_moves_off_a_member_that_went_silent_and_says_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), vec![0u8; 8192]).unwrap();
    let serve = || {
        let config = ServerConfig::new(dir.path())
            .lease(Duration::from_secs(2))
            .restart_grace(Some(Duration::ZERO));
        let server = Server::bind("127.0.0.1:0", config).unwrap();
        let addr = server.local_addr().to_string();
        (server, addr)
    };
    let ((_a, a), (_b, b)) = (serve(), serve());
    let via = Proxy::start(&a);
    let cluster = ClusterClient::connect(&[&via.addr, &b], ClientConfig::default()).unwrap();
    let m = cluster.map("f.bin", 0..8192, Access::ReadWrite).unwrap();
    let on_a = cluster.connection(&via.addr).unwrap();
    assert!(m.client().same_connection(&on_a));
    m.write(0, b"synced").unwrap();
    m.sync().unwrap();
    m.write(4096, b"never synced").unwrap();

    via.mute();
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    let mut got = vec![0u8; 8192];
    loop {
        match m.read(0, &mut got) {
            Ok(()) => break,
            Err(OpError::SessionLost(l)) => reports.push(l),
            Err(e) => panic!("{e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{reports:?}");
    }
    // Reads may come from the cache while the lease lasts; a sync needs
    // the member.
    m.sync()
        .or_else(|e| match e {
            OpError::SessionLost(l) => {
                reports.push(l);
                m.sync()
            }
            e => Err(e),
        })
        .unwrap();
    assert_eq!(reports.len(), 1, "told once: {reports:?}");
    let l = &reports[0];
    assert_eq!(
        l.cause,
        LossCause::Session(SessionLossReason::MemberLost),
        "{l}"
    );
    assert_eq!(&*l.unsynced_pages, &[1], "{l}");
    assert!(!m.client().same_connection(&on_a), "moved to b");
    m.read(0, &mut got).unwrap();
    assert_eq!(&got[..6], b"synced");
    m.write(0, b"SYNCED").unwrap();
    m.sync().unwrap();
    assert_eq!(
        &std::fs::read(dir.path().join("f.bin")).unwrap()[..6],
        b"SYNCED"
    );
    eprintln!("moved after {:?}", started.elapsed());
}
