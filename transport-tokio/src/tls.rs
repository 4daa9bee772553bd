//! TLS (tokio-rustls) as a [`Connector`] and a [`Listener`] that wrap any
//! other: the client and the server see one more byte stream, nothing else.
//!
//! [`TlsListener`] runs the handshakes on tasks of their own, at most
//! [`MAX_HANDSHAKES`] at a time and each within [`HANDSHAKE_TIMEOUT`], so a
//! slow or silent peer never holds up the accept loop; `accept` returns
//! connections whose handshake is done. A peer whose first byte does not
//! start a TLS handshake gets [`plaintext_refusal`] in plaintext and is
//! closed (see [`rmmap_secure::mismatch`]). [`TlsConnector`] explains a
//! failed handshake in words (a server that does not speak TLS, an
//! unknown authority, a name mismatch).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use rmmap_tokio::{Client, ClientConfig, ClientTls, ServeOptions, Server, ServerConfig, ServerTls};
//! use rmmap_tokio::tls::TlsConnector;
//! use std::path::Path;
//!
//! let options = ServeOptions {
//!     tls: Some(ServerTls::from_pem_files(Path::new("cert.pem"), Path::new("key.pem"))?),
//!     ..ServeOptions::default()
//! };
//! let server = Server::bind_with("0.0.0.0:7878", ServerConfig::new("/srv/export"), options).await?;
//! let tls = ClientTls::from_ca_file(Path::new("ca.pem"))?;
//! let client = Client::connect_with(TlsConnector::new(tls), "files.example:7878", ClientConfig::default()).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use rmmap_secure::mismatch::{
    REFUSAL_LINGER, client_handshake_io_error, plaintext_refusal, starts_tls,
};
use rmmap_secure::{ClientTls, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::net::{Connector, Listener, TcpConnector};

/// Handshakes in progress at most; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 1024;
/// A TLS handshake that takes longer is abandoned (the core's own
/// handshake timeout has the same default).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet accepted, at most.
const READY_BACKLOG: usize = 64;
/// Back off this long after `accept` failed (typically out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Opens TLS connections over another [`Connector`] (TCP by default),
/// checking the server's certificate against the name in [`ClientTls`] or
/// else the host part of the address.
#[derive(Clone)]
pub struct TlsConnector<C = TcpConnector> {
    inner: C,
    tls: ClientTls,
    connector: tokio_rustls::TlsConnector,
}

impl<C> std::fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.tls.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// TLS over Tokio TCP.
    pub fn new(tls: ClientTls) -> Self {
        Self::over(TcpConnector, tls)
    }
}

impl<C: Connector> TlsConnector<C> {
    /// TLS over the connections `inner` opens.
    pub fn over(inner: C, tls: ClientTls) -> Self {
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        TlsConnector {
            inner,
            tls,
            connector,
        }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = tokio_rustls::client::TlsStream<C::Stream>;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let name = self
            .tls
            .name_for(addr)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let shown = name.to_str().into_owned();
        let stream = self.inner.connect(addr).await?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| client_handshake_io_error(e, addr, &shown))
    }
}

/// A connection whose first bytes were read to tell TLS from plaintext, and
/// are read again by the TLS layer.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS connection accepted by a [`TlsListener`].
pub type TlsServerStream<S> = tokio_rustls::server::TlsStream<Prefixed<S>>;

type Ready<S> = (TlsServerStream<S>, SocketAddr);

/// Accepts TLS connections from another [`Listener`] (see the module docs).
/// Dropping it stops accepting and abandons the handshakes in progress.
pub struct TlsListener<L: Listener> {
    ready: mpsc::Receiver<Ready<L::Stream>>,
    local_addr: SocketAddr,
    task: AbortHandle,
}

impl<L: Listener> std::fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<L: Listener> TlsListener<L> {
    /// Starts accepting from `inner` with the server settings `tls`. Must be
    /// called within a Tokio runtime: the handshakes run on tasks.
    pub fn new(inner: L, tls: ServerTls) -> io::Result<Self> {
        let local_addr = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        let task = tokio::spawn(handshakes(inner, acceptor, tx)).abort_handle();
        Ok(TlsListener {
            ready,
            local_addr,
            task,
        })
    }
}

impl<L: Listener> Drop for TlsListener<L> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = TlsServerStream<L::Stream>;

    async fn accept(&mut self) -> io::Result<Ready<L::Stream>> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the TLS listener stopped"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Accepts connections and hands each to a handshake task; stops when the
/// [`TlsListener`] is dropped (its task is aborted, and with it this set).
async fn handshakes<L: Listener>(
    mut inner: L,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<Ready<L::Stream>>,
) {
    let limit = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        match inner.accept().await {
            Ok((stream, peer)) => {
                running.spawn(handshake(
                    stream,
                    peer,
                    acceptor.clone(),
                    ready.clone(),
                    permit,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handshake<S>(
    stream: S,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<Ready<S>>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_tls(stream, &acceptor)).await {
        Ok(Ok(tls)) => {
            let _ = ready.send((tls, peer)).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Tells TLS from plaintext by the first byte, then runs the handshake.
async fn accept_tls<S>(
    mut stream: S,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> io::Result<TlsServerStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut first = [0u8; 1];
    if stream.read(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !starts_tls(first[0]) {
        refuse(stream).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a client spoke plaintext to this TLS server: refused",
        ));
    }
    let stream = Prefixed {
        prefix: Bytes::copy_from_slice(&first),
        inner: stream,
    };
    acceptor.accept(stream).await
}

/// Writes the plaintext refusal, then reads and discards until the client
/// closes (bounded by [`REFUSAL_LINGER`]), so the close is not a reset.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&plaintext_refusal()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}
