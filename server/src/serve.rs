//! The accept loop. `axum::serve` builds hyper's connections without a timer, so hyper's
//! deadline for reading a request head never applies: a client that sends half a request
//! line (or nothing at all) holds its connection, and a file descriptor, for ever, and enough
//! of them take the server down (slowloris). Here every connection reads each request head
//! within `header_timeout`, counted from when the connection is ready for the next request,
//! so the same deadline also closes a keep-alive connection left idle.
//!
//! HTTP/1.1 only: h2c (HTTP/2 without TLS, the only kind a server without TLS could speak)
//! has no such deadline in hyper, and clients that speak HTTP/2 do so through a TLS proxy,
//! which talks HTTP/1.1 to us.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `drain` for the requests in flight (a connection between requests closes at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        // What `into_make_service_with_connect_info` does: the peer in every request.
        let service = axum::Extension(ConnectInfo(peer))
            .layer(app.clone())
            .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that breaks off, times out or sends garbage ends its own connection
            // only; hyper has answered what could be answered.
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// After a failed accept: a connection that went away before it was taken is no matter;
/// anything else (out of file descriptors, above all) is waited out for a second rather
/// than retried in a busy loop, as `axum::serve` does.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
