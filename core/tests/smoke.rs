//! Smoke test: two clients, one page.
use rmmap_core::client::MapOptions;
use rmmap_core::harness::Cluster;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

#[test]
fn two_clients_see_each_others_writes() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; 3 * 4096]);
    let mut c = Cluster::new(ServerConfig::default(), store.clone(), 2, 1);
    c.settle();
    let a = c
        .map(0, "f", 0, 3 * 4096, MapOptions::read_write())
        .unwrap();
    let b = c
        .map(1, "f", 0, 3 * 4096, MapOptions::read_write())
        .unwrap();
    assert_eq!(&c.read(1, b, 4090, 10).unwrap()[..], &[0u8; 10]);
    c.write(0, a, 4090, b"helloworld").unwrap();
    assert_eq!(&c.read(1, b, 4090, 10).unwrap()[..], b"helloworld");
    c.write(1, b, 4095, b"X").unwrap();
    assert_eq!(&c.read(0, a, 4090, 10).unwrap()[..], b"helloXorld");
    c.sync(0, a).unwrap();
    assert_eq!(
        &store.durable_contents("f").unwrap()[4090..4100],
        b"helloXorld"
    );
}
