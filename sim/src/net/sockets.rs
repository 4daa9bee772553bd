//! turmoil's simulated TCP behind rmmap-tokio's pluggable sockets.

use std::io;
use std::net::SocketAddr;

use rmmap_tokio::{Connector, Listener};
use turmoil::net::{TcpListener, TcpStream};

/// Connects over turmoil's simulated network (`host:port`, the host by name).
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct SimConnector;

impl Connector for SimConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

/// Accepts connections on turmoil's simulated network.
pub(crate) struct SimListener(pub(crate) TcpListener);

impl Listener for SimListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
