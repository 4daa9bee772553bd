//! Pluggable sockets: the client and the server take any byte stream, so the
//! same code runs over Tokio TCP and over a simulated network.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Opens connections to a server.
pub trait Connector: Send + Sync + 'static {
    /// The connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Connects to `addr` (whatever address form the connector understands).
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Accepts connections for a server.
pub trait Listener: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Tokio TCP, with `TCP_NODELAY` (the protocol pipelines small frames).
#[derive(Copy, Clone, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = TcpListener::accept(self).await?;
        s.set_nodelay(true)?;
        Ok((s, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

/// Drops the first `n` bytes of the queue.
pub(crate) fn advance(out: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = out.front_mut() else { return };
        if n >= front.len() {
            n -= front.len();
            out.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// The largest frame [`reserve_for_frame`] makes room for at once; a larger
/// one (which the core refuses anyway) grows by reads.
const RESERVE_MAX: usize = 16 << 20;

/// Makes room for the next read: at least a quarter of `chunk` spare (else
/// `chunk` more), and, when `buf` starts with a frame's length prefix, room
/// for all of that frame. The core takes whole frames off the front, so
/// `buf` starts at a frame boundary; sizing the buffer for the whole frame
/// reads a large frame (a 1 MiB `Pages`) into one allocation, instead of
/// copying the partial frame into a bigger one after every read (quadratic:
/// about 8 MiB of copying per MiB received, with 64 KiB reads).
pub(crate) fn reserve_for_frame(buf: &mut BytesMut, chunk: usize) {
    let rest = match buf.get(..4) {
        Some(h) => {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            (len.min(RESERVE_MAX) + 4).saturating_sub(buf.len())
        }
        None => 0,
    };
    let spare = buf.capacity() - buf.len();
    if spare < rest || spare < chunk / 4 {
        buf.reserve(rest.max(chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_a_whole_frame_is_made_at_once() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&(1u32 << 20).to_be_bytes());
        b.extend_from_slice(&[0; 100]);
        reserve_for_frame(&mut b, 64 * 1024);
        assert!(b.capacity() - b.len() >= (1 << 20) - 100);
        // No length prefix yet: a chunk.
        let mut b = BytesMut::new();
        reserve_for_frame(&mut b, 64 * 1024);
        assert!(b.capacity() >= 64 * 1024);
    }
}
