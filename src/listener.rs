//! Accepting connections and serving HTTP/1 on them, with limits that protect the gateway from
//! slow and idle clients: at most `max_connections` open at once per listener (more wait in the
//! listen backlog) and an idle timeout per connection (both for every listener, see
//! [`Acceptor`]), and for HTTP/1 a header read timeout, a whole-body read deadline per request,
//! and a graceful drain at shutdown (in-flight requests finish, within the grace period).

use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Limits on connections and on how slowly clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once on each listener.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (from the first byte it waits for).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body, from its headers.
    pub body_read_timeout: Duration,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
}

/// The error a request body yields when its deadline passes.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body was not received within {0:?} (body_read_timeout_ms)")]
pub struct BodyTimedOut(pub Duration);

/// Accepts one listener's connections: each waits for one of the listener's `max_connections`
/// slots (the kernel's listen backlog holds the rest), then is accepted with `TCP_NODELAY` and
/// closed once idle for `idle_timeout`.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    idle_timeout: Duration,
}

/// An accepted connection, and its slot among its listener's `max_connections`.
pub struct Accepted {
    /// The socket, closed once idle.
    pub stream: IdleTimeout,
    /// Released when dropped: hold it as long as the socket is open.
    pub slot: OwnedSemaphorePermit,
}

impl Acceptor {
    /// Accepts on `listener` within `limits` (`max_connections` and `idle_timeout`).
    pub fn new(listener: TcpListener, limits: &ConnectionLimits) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            idle_timeout: limits.idle_timeout,
        }
    }

    /// The next connection, once a slot is free (one is held while waiting for it).
    pub async fn accept(&self) -> Option<Accepted> {
        // The semaphore is never closed.
        let slot = Arc::clone(&self.slots).acquire_owned().await.ok()?;
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(Accepted {
                        stream: IdleTimeout::new(stream, self.idle_timeout),
                        slot,
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `app` over HTTP/1 on the connections of `acceptor` until `shutdown` completes; then
/// stops accepting, asks every connection to close after its current request, and waits for
/// them up to `grace`.
pub async fn serve(
    acceptor: Acceptor,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let Accepted { stream, slot } = tokio::select! {
            accepted = acceptor.accept() => match accepted {
                Some(accepted) => accepted,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(stream);
        let router = app.clone();
        let body_timeout = limits.body_read_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let request =
                request.map(|body| axum::body::Body::new(Deadline::new(body, body_timeout)));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(acceptor);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
        }
    }
}

/// A connection that fails its pending read once nothing has been read or written for
/// `timeout` (hyper then closes it).
///
/// Activity only records the time; the timer is moved when it fires early, so a busy connection
/// touches the timer wheel about once per `timeout` rather than twice per request.
pub struct IdleTimeout {
    stream: TcpStream,
    timeout: Duration,
    last_active: Instant,
    idle: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    fn new(stream: TcpStream, timeout: Duration) -> IdleTimeout {
        IdleTimeout {
            stream,
            timeout,
            last_active: Instant::now(),
            idle: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    fn active(&mut self) {
        self.last_active = Instant::now();
    }

    /// Whether the connection has been idle for `timeout`; registers `cx` to be woken when it
    /// could be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_active + self.timeout;
            if due <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(due);
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if self.poll_idle(cx) {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle for longer than idle_timeout_secs",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
        if matches!(written, Ok(n) if n > 0) {
            self.active();
        }
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            self.active();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole before a deadline; past it, it yields
/// [`BodyTimedOut`]. The clock starts at the first poll (when the handler reads the body); the
/// timer itself is only set when the body is not already there, which for small bodies it
/// usually is.
struct Deadline {
    body: Incoming,
    timeout: Duration,
    started: Option<Instant>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(body: Incoming, timeout: Duration) -> Deadline {
        Deadline {
            body,
            timeout,
            started: None,
            deadline: None,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let timeout = self.timeout;
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))));
        }
        let frame = Pin::new(&mut self.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)));
        if frame.is_pending() && self.deadline.is_none() {
            let mut deadline = Box::pin(tokio::time::sleep_until(started + timeout));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))));
            }
            self.deadline = Some(deadline);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
