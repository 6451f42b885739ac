//! shoal's sender for a guest's `wasi:http/outgoing-handler` requests: every request is
//! checked against `plugin.sandbox.http` (and the addresses a name resolves to), then
//! sent over one TCP connection (TLS with the system's roots for `https`) with connect,
//! first-byte and between-bytes timeouts no longer than the guest's deadline, and a cap
//! on the response body. A refusal is `HTTP-request-denied` for the guest plus one log
//! line naming the missing grant.
//!
//! Each request is counted in the instance's budget from `handle` until the guest drops
//! its response body ([`InFlight`]), and its connection until it closes; and no request
//! outlives the guest call that started it: when the call returns, its requests still
//! sending or receiving end with `connection-terminated` and their connections close.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme as UriScheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::budget::{BODY_CHUNK_BYTES, Counted, InFlight, RESPONSE_BUFFER_BYTES};
use super::outbound::Outbound;
use super::resolver::{LOOKUP_TIMEOUT, LookupError};
use crate::egress::{HttpDecision, Scheme};

/// Largest response body a guest may read; beyond it the body ends in an error.
pub const MAX_RESPONSE_BODY: u64 = 64 << 20;

/// The per-instance hooks wasmtime-wasi-http calls for each outgoing request.
pub struct GuestHttp {
    outbound: Outbound,
    /// The guest call's deadline: no timeout is longer.
    deadline: Duration,
    /// The instance's requests and connections, counted in its budget.
    in_flight: Arc<InFlight>,
    /// Cancelled when the guest call in progress returns.
    call: CancellationToken,
}

impl GuestHttp {
    /// Hooks for one instance.
    pub fn new(outbound: Outbound, deadline: Duration, in_flight: Arc<InFlight>) -> Self {
        Self {
            outbound,
            deadline,
            in_flight,
            call: CancellationToken::new(),
        }
    }

    /// Requests started from now on belong to the call that `call` ends.
    pub fn begin_call(&mut self, call: CancellationToken) {
        self.call = call;
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for GuestHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_done: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let outbound = self.outbound.clone();
        let timeouts = Timeouts::clamped(options, self.deadline);
        // Counted now, while `handle` runs, so the next `handle` in the same call sees it.
        let exchange = self.in_flight.exchange();
        let connection = self.in_flight.connection();
        let call = self.call.clone();
        Box::new(async move {
            let sending = send(request, &outbound, timeouts, connection, &exchange, &call);
            let (response, io) = tokio::select! {
                sent = sending => sent?,
                () = call.cancelled() => return Err(Error::ConnectionTerminated),
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }

    // The error hooks: what a failed request means for the guest (the same codes as
    // wasmtime-wasi-http's defaults), logged at debug level: a guest looping over requests
    // that fail must not write a host warning per request outside its log rate.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        tracing::debug!("guest HTTP request failed: {err}");
        ErrorCode::HttpProtocolError
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        tracing::debug!("guest HTTP connect failed: {err}");
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        tracing::debug!("guest HTTPS handshake failed: {err}");
        ErrorCode::TlsProtocolError
    }
}

/// Connect, first-byte and between-bytes timeouts: the guest's own (600 s when it sets
/// none), never longer than its call deadline.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn clamped(options: Option<RequestOptions>, deadline: Duration) -> Self {
        const GUEST_DEFAULT: Duration = Duration::from_secs(600);
        let pick = |t: Option<Duration>| {
            t.unwrap_or(GUEST_DEFAULT)
                .min(deadline)
                .max(Duration::from_millis(1))
        };
        let options = options.unwrap_or_default();
        Self {
            connect: pick(options.connect_timeout),
            first_byte: pick(options.first_byte_timeout),
            between_bytes: pick(options.between_bytes_timeout),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

async fn send(
    mut request: http::Request<WasiBody>,
    outbound: &Outbound,
    timeouts: Timeouts,
    connection: Counted,
    exchange: &Arc<Counted>,
    call: &CancellationToken,
) -> Result<
    (
        http::Response<CappedBody>,
        impl Future<Output = Result<(), Error>> + Send + use<>,
    ),
    Error,
> {
    let uri = request.uri().clone();
    let scheme = match uri.scheme() {
        Some(s) if *s == UriScheme::HTTPS => Scheme::Https,
        Some(s) if *s == UriScheme::HTTP => Scheme::Http,
        _ => return Err(Error::HttpProtocolError),
    };
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let port = uri.port_u16().unwrap_or(scheme.default_port());
    let address_check = match outbound.grants().http_request(scheme, &host, port) {
        HttpDecision::Allowed => None,
        HttpDecision::Resolve(check) => Some(check),
        HttpDecision::Refused(refusal) => {
            outbound.log_refusal(&refusal);
            return Err(Error::HttpRequestDenied);
        }
    };
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addresses = resolve(outbound, &bare_host, port, timeouts.connect).await?;
    let addresses: Vec<SocketAddr> = match &address_check {
        None => addresses,
        Some(check) => {
            let mut allowed = Vec::new();
            for addr in addresses {
                match check.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(refusal) => outbound.log_refusal(&refusal),
                }
            }
            if allowed.is_empty() {
                return Err(Error::HttpRequestDenied);
            }
            allowed
        }
    };
    let tcp = connect(&addresses, timeouts.connect).await?;
    let stream: Box<dyn Stream> = match scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let tls = tokio::time::timeout(timeouts.connect, tls_connector()?.connect(name, tcp))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(|e| {
                    tracing::debug!("tls handshake with {host}:{port} failed: {e}");
                    Error::TlsProtocolError
                })?;
            Box::new(tls)
        }
    };
    let (mut sender, driver) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(RESPONSE_BUFFER_BYTES)
            .handshake(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::Hyper)?;
    // The request line carries only the path: this is no proxy.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    // The connection is driven until the exchange ends or the guest call returns, and
    // counted until then.
    let call_ended = call.clone();
    // The connection's own end is only logged by wasmtime-wasi-http (a warning per
    // request): what the guest needs to know reaches it through the response and its body,
    // so the driver's error is said here at debug level and not passed on.
    let io = async move {
        let _counted = connection;
        tokio::select! {
            done = driver => {
                if let Err(e) = done {
                    tracing::debug!("guest HTTP connection ended: {e}");
                }
            }
            () = call_ended.cancelled() => {}
        }
        Ok(())
    };
    let (io_result, response) = {
        let mut io = Box::pin(io);
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request));
        tokio::pin!(response);
        // Drive the connection while waiting for the response head.
        tokio::select! {
            r = &mut response => (Some(io), r),
            done = &mut io => {
                done?;
                // The connection finished first: the response future resolves now.
                let r = (&mut response).await;
                (None, r)
            }
        }
    };
    let response = response
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::Hyper)?;
    let response = response.map(|incoming| {
        CappedBody::new(
            incoming,
            timeouts.between_bytes,
            Arc::clone(exchange),
            call.clone(),
        )
    });
    let io = async move {
        match io_result {
            Some(io) => io.await,
            None => Ok(()),
        }
    };
    Ok((response, io))
}

/// The addresses of `host` (an IP literal is itself; a name, already checked against
/// the grants, is looked up on the lookup threads in one of the instance's slots).
async fn resolve(
    outbound: &Outbound,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip.to_canonical(), port)]);
    }
    let found = outbound
        .resolve(host, timeout.min(LOOKUP_TIMEOUT))
        .await
        .map_err(|e| match e {
            LookupError::TimedOut(_) => Error::DnsTimeout,
            other => Error::DnsError {
                rcode: Some(other.to_string()),
                info_code: None,
            },
        })?;
    let addresses: Vec<SocketAddr> = found
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addresses)
}

async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationNotFound;
    for addr in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// One TLS client configuration for the process: the system's root certificates and the
/// aws-lc-rs provider the AWS SDK already uses (named explicitly, so no process-wide
/// default provider is needed).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, Error> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!("reading the system's root certificates: {error}");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::error!("no system root certificates found: guests' HTTPS requests will fail");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => Some(Arc::new(
                builder.with_root_certificates(roots).with_no_client_auth(),
            )),
            Err(e) => {
                tracing::error!("cannot configure TLS for guests' HTTPS requests: {e}");
                None
            }
        }
    });
    config
        .clone()
        .map(tokio_rustls::TlsConnector::from)
        .ok_or(Error::TlsProtocolError)
}

/// A response body with a between-bytes timeout and a size cap, counted in the
/// instance's budget until the guest drops it, and ended when the guest call that sent
/// the request returns.
pub struct CappedBody {
    incoming: Option<hyper::body::Incoming>,
    between_bytes: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    received: u64,
    exchange: Option<Arc<Counted>>,
    call: CancellationToken,
}

impl CappedBody {
    fn new(
        incoming: hyper::body::Incoming,
        between_bytes: Duration,
        exchange: Arc<Counted>,
        call: CancellationToken,
    ) -> Self {
        Self {
            incoming: Some(incoming),
            between_bytes,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
            received: 0,
            exchange: Some(exchange),
            call,
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.call.is_cancelled() {
            // The call that sent the request returned: what is left is not delivered.
            self.incoming = None;
            self.exchange = None;
            return Poll::Ready(Some(Err(Error::ConnectionTerminated)));
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                // Read whole: nothing more is held for it.
                self.incoming = None;
                self.exchange = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    if self.received > MAX_RESPONSE_BODY {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            self.received,
                        )))));
                    }
                }
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |i| i.size_hint())
    }
}
