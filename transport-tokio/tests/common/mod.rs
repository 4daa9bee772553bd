//! Shared setup for the loopback tests: a server over a temporary root.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rmmap_tokio::{Client, ClientConfig, Server, ServerConfig};

/// A server exporting a fresh temporary directory.
pub struct TestServer {
    pub server: Server,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // A fresh directory: no earlier server to wait for.
        let config = configure(
            ServerConfig::new(&root)
                .lease(Duration::from_secs(2))
                .restart_grace(Some(Duration::ZERO)),
        );
        let server = Server::bind("127.0.0.1:0", config).await.unwrap();
        let addr = server.local_addr().to_string();
        TestServer { server, addr, dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn outside(&self) -> &Path {
        self.dir.path()
    }

    pub fn put(&self, name: &str, data: &[u8]) {
        std::fs::write(self.root().join(name), data).unwrap();
    }

    pub fn get(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root().join(name)).unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr, client_config()).await.unwrap()
    }
}

/// Short timeouts, so that tests about failures stay fast.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        reconnect_initial: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        give_up_after: Some(Duration::from_secs(20)),
        ..ClientConfig::default()
    }
}

/// Fails the test instead of hanging it.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

pub mod history;

/// Logs to the test output with RUST_LOG set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
pub mod proxy;
