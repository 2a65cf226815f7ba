//! gRPC connections that close without losing the client's last answer. After its last response
//! and GOAWAY, the HTTP/2 server closes the socket; bytes the client sent meanwhile (flow-control
//! updates for the answer it is still reading) are then unread, and closing a socket with unread
//! bytes resets it, which can discard the end of that answer on the client. Each connection here,
//! when dropped, sends its FIN and reads until the client closes (at most [`LINGER`]) first.
//! Connections come from the listener's [`Acceptor`]: each holds one of its `max_connections`
//! slots until the lingering close is over, and is closed when idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listener::{Accepted, Acceptor, IdleTimeout};

/// Longest a closing connection waits for the client to close its side.
pub const LINGER: Duration = Duration::from_secs(2);

/// The connections a listener accepts, and their lingering closes.
pub struct Connections {
    /// Held by every connection and lingering close; never sent on.
    lingering: mpsc::Sender<()>,
    /// Ends once every holder of `lingering` is gone.
    done: mpsc::Receiver<()>,
}

impl Connections {
    /// No connection yet.
    pub fn new() -> Connections {
        let (lingering, done) = mpsc::channel(1);
        Connections { lingering, done }
    }

    /// The connections `acceptor` accepts, as the gRPC server takes them: accepting stops when
    /// the server drops the stream (which closes the listener).
    pub fn incoming(
        &self,
        acceptor: Acceptor,
    ) -> impl Stream<Item = io::Result<Connection>> + use<> {
        let (accepted, incoming) = mpsc::channel(1);
        let lingering = self.lingering.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = acceptor.accept() => next,
                    () = accepted.closed() => None,
                };
                let Some(Accepted { stream, slot }) = next else {
                    break;
                };
                let connection = Connection {
                    stream: Some(stream),
                    slot: Some(slot),
                    lingering: lingering.clone(),
                };
                if accepted.send(Ok(connection)).await.is_err() {
                    break;
                }
            }
        });
        ReceiverStream::new(incoming)
    }

    /// Waits for the connections' lingering closes, at most [`LINGER`] (the server has stopped:
    /// no connection is open).
    pub async fn closed(self) {
        let Connections {
            lingering,
            mut done,
        } = self;
        drop(lingering);
        let _ = tokio::time::timeout(LINGER, done.recv()).await;
    }
}

/// An accepted connection that lingers when it closes.
pub struct Connection {
    /// The socket; taken by the lingering close.
    stream: Option<IdleTimeout>,
    /// The connection's slot among `max_connections`; taken by the lingering close.
    slot: Option<OwnedSemaphorePermit>,
    /// Keeps [`Connections::closed`] waiting while the connection lives.
    lingering: mpsc::Sender<()>,
}

impl Connection {
    fn stream(&mut self) -> io::Result<&mut IdleTimeout> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

/// Sends FIN, then reads and discards until the client closes or [`LINGER`] passes.
async fn linger(mut stream: IdleTimeout) {
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut scratch).await, Ok(read) if read > 0) {}
    })
    .await;
}

impl Drop for Connection {
    fn drop(&mut self) {
        let (Some(stream), Ok(runtime)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let lingering = self.lingering.clone();
        let slot = self.slot.take();
        runtime.spawn(async move {
            linger(stream).await;
            drop((slot, lingering));
        });
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.stream {
            Some(stream) => stream.get_ref().connect_info(),
            None => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}
