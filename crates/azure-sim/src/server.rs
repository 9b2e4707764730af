//! HTTPS serving: a TCP accept loop, a rustls handshake per connection, then hyper's HTTP/1 server
//! driving the axum router. (`axum::serve` only speaks plain TCP.)

use axum::Router;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown, service::TowerToHyperService};
use std::time::Duration;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::TlsAcceptor;

/// A client that stalls its handshake longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests (e.g. ones held by a `Delay` fault).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` fires (or its sender is dropped), then drains open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Per-connection errors (e.g. ECONNABORTED, EMFILE) must not stop the server.
                    tracing::warn!(error = %e, "azure-sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "azure-sim: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "azure-sim: TLS handshake timed out");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "azure-sim: connection error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("azure-sim: connections still open after the drain timeout");
    }
}
