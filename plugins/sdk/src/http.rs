//! A small blocking HTTP client over `wasi:http/outgoing-handler`, for processors that
//! deliver records to an HTTP service (feature `http`). The host sends the request only
//! to destinations its `[plugin.sandbox] http` grants; anything else comes back as
//! [`Error::Denied`]. Redirects are not followed here: a 3xx is returned like any other
//! response, and following it is a new request, checked again by the host.

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// One HTTP response, body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header name/value pairs as received (names lowercase).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host refused it: no `plugin.sandbox.http` entry grants the destination.
    Denied,
    /// No response in time (connect, first byte or between bytes).
    Timeout(String),
    /// The connection could not be made or broke (refused, reset, DNS, TLS).
    Connection(String),
    /// The request itself is invalid (URL, header).
    Invalid(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Denied => f.write_str("request denied by the host: no plugin.sandbox.http grant for this destination"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Connection(m) => write!(f, "connection failed: {m}"),
            Error::Invalid(m) => write!(f, "invalid request: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Error::Denied,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => Error::Timeout(format!("{code:?}")),
            ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => {
                Error::Invalid(format!("{code:?}"))
            }
            other => Error::Connection(format!("{other:?}")),
        }
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, `PUT`, ...
    pub method: &'a str,
    /// `http://host[:port]/path?query` or `https://...`.
    pub url: &'a str,
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body (empty for none).
    pub body: &'a [u8],
    /// Connect, first-byte and between-bytes timeout (the host caps each at the guest's
    /// deadline).
    pub timeout: Option<Duration>,
}

/// `POST body` to `url` with `headers`, waiting at most `timeout` at each step.
pub fn post(url: &str, headers: &[(&str, &[u8])], body: &[u8], timeout: Option<Duration>) -> Result<Response, Error> {
    send(&Request { method: "POST", url, headers, body, timeout })
}

/// Send one request and read the whole response.
pub fn send(request: &Request<'_>) -> Result<Response, Error> {
    let (scheme, authority, path) = split_url(request.url)?;
    let mut entries: Vec<(String, Vec<u8>)> = request.headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
    if !request.body.is_empty() {
        entries.push(("content-length".into(), request.body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&entries).map_err(|e| Error::Invalid(format!("header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| Error::Invalid(format!("{what} of {}", request.url));
    outgoing.set_method(&method).map_err(|()| invalid("method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let body = outgoing.body().map_err(|()| invalid("body"))?;
    let options = RequestOptions::new();
    if let Some(t) = request.timeout {
        let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
    }
    let pending = outgoing_handler::handle(outgoing, Some(options))?;
    // If the host refused or failed the request, the body stream is closed: the reason is
    // in the response, so look there before reporting the body write.
    let sent = write_body(&body, request.body).and_then(|()| OutgoingBody::finish(body, None).map_err(Error::from));
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(code.into()),
        Some(Err(())) | None => return Err(Error::Connection("the response was already taken".into())),
    };
    sent?;
    let status = response.status();
    let headers = response.headers().entries().into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    let incoming = response.consume().map_err(|()| Error::Connection("no response body".into()))?;
    let body = read_body(&incoming)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, headers, body })
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), Error> {
    let stream = body.write().map_err(|()| Error::Invalid("request body already written".into()))?;
    for chunk in bytes.chunks(4096) {
        stream.blocking_write_and_flush(chunk).map_err(stream_error)?;
    }
    Ok(())
}

fn read_body(body: &IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = body.stream().map_err(|()| Error::Connection("response body already read".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(out),
            Err(e) => return Err(stream_error(e)),
        }
    }
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Connection("stream closed".into()),
        StreamError::LastOperationFailed(detail) => {
            match wasip2::http::types::http_error_code(&detail) {
                Some(code) => code.into(),
                None => Error::Connection(detail.to_debug_string()),
            }
        }
    }
}

/// `scheme://authority/path?query` → its three parts (path `/` when absent).
fn split_url(url: &str) -> Result<(Scheme, &str, &str), Error> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Error::Invalid(format!("`{url}` has no scheme")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(Error::Invalid(format!("scheme `{other}` in `{url}`"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(_) => return Err(Error::Invalid(format!("`{url}`: put a `/` before the query"))),
            None => (rest, "/"),
        },
    };
    if authority.is_empty() {
        return Err(Error::Invalid(format!("`{url}` has no host")));
    }
    Ok((scheme, authority, path))
}
