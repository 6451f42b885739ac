//! The operator's HTTP endpoint (`[metrics] address`): `GET /metrics` (Prometheus text),
//! `/healthz` (200 while the tick loop runs) and `/readyz` (200 when ready, else 503 with
//! the reasons, one per line). HTTP/1.1 over hyper; each connection on its own task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::metrics::metrics;

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bind `address` now (so a taken port fails the start), then serve until `stop`.
pub async fn serve(
    address: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics and health"))?;
    let bound = listener.local_addr().context("metrics listener address")?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("metrics listener: cannot accept a connection: {e}");
                        continue;
                    }
                },
            };
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let health = Arc::clone(&health);
                    async move { Ok::<_, Infallible>(respond(&request, &health)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("metrics connection ended: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn respond(request: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics().encode())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        "/healthz" => match health.verdict().alive {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        "/readyz" => match health.verdict().ready {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                reasons.iter().map(|r| format!("{r}\n")).collect(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
