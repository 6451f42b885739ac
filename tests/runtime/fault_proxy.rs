//! A small fault-injecting HTTP/1.1 proxy in front of a Kinesis or DynamoDB emulator (the
//! emulators never throttle): per request it forwards, answers a throttling error, answers
//! a 5xx, drops the connection, forwards late, or never answers, following a deterministic
//! plan over the request count. An outage switch drops every connection, as if the
//! service behind it were stopped. SubscribeToShard's answer is an event stream that runs
//! for minutes: it is passed through as it comes (and may be cut short), never buffered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy did to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Forward,
    Throttle,
    ServerError,
    Drop,
    /// Forward, but answer only after this long.
    Delay(Duration),
    /// Read the request and never answer (the connection stays open for a minute).
    Hang,
    /// Pass a streamed answer (SubscribeToShard) through for this long, then drop the
    /// connection mid-stream.
    Cut(Duration),
    /// Forward the request, so the service applies it, then throw its answer away and
    /// answer a 500: the caller cannot tell the write landed.
    ApplyThenFail,
}

/// Counts of what was injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub hung: AtomicU64,
    pub cut: AtomicU64,
    pub applied_then_failed: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    pub counts: Arc<FaultCounts>,
    stop: Arc<AtomicBool>,
    /// While set, every request (of any operation) is dropped unanswered.
    outage: Arc<AtomicBool>,
    port: u16,
}

impl FaultProxy {
    /// Proxy to `upstream` (`http://host:port`), faulting requests whose `X-Amz-Target`
    /// operation is in `operations`, as `plan(n)` says for the n-th such request.
    pub fn start(
        upstream: &str,
        operations: &'static [&'static str],
        plan: fn(u64) -> Fault,
    ) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(FaultCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let outage = Arc::new(AtomicBool::new(false));
        {
            let (counts, stop, outage) =
                (Arc::clone(&counts), Arc::clone(&stop), Arc::clone(&outage));
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (counts, upstream, outage) =
                        (Arc::clone(&counts), upstream.clone(), Arc::clone(&outage));
                    std::thread::spawn(move || {
                        serve(client, &upstream, operations, plan, &counts, &outage)
                    });
                }
            });
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            counts,
            stop,
            outage,
            port,
        }
    }

    /// Drop every request from now on (`true`), or serve again (`false`).
    pub fn set_outage(&self, down: bool) {
        self.outage.store(down, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "{} faultable requests: {} throttled, {} 5xx, {} dropped, {} delayed, {} hung, {} streams cut, {} applied then failed",
            c.requests.load(Ordering::Relaxed),
            c.throttled.load(Ordering::Relaxed),
            c.server_errors.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.delayed.load(Ordering::Relaxed),
            c.hung.load(Ordering::Relaxed),
            c.cut.load(Ordering::Relaxed),
            c.applied_then_failed.load(Ordering::Relaxed)
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One HTTP request as read off the wire.
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    target: String,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if lower.starts_with("x-amz-target:") {
            target = line["x-amz-target:".len()..].trim().to_string();
        }
        // Each forwarded request gets its own upstream connection.
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { head, body, target })
}

fn serve(
    client: TcpStream,
    upstream: &str,
    operations: &[&str],
    plan: fn(u64) -> Fault,
    counts: &FaultCounts,
    outage: &AtomicBool,
) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = match client.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(client);
    while let Some(request) = read_request(&mut reader) {
        let operation = request
            .target
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let fault = if outage.load(Ordering::Relaxed) {
            Fault::Drop
        } else if operations.contains(&operation.as_str()) {
            let n = counts.requests.fetch_add(1, Ordering::Relaxed);
            plan(n)
        } else {
            Fault::Forward
        };
        if operation == "SubscribeToShard" && matches!(fault, Fault::Forward | Fault::Cut(_)) {
            let cut_after = match fault {
                Fault::Cut(after) => {
                    counts.cut.fetch_add(1, Ordering::Relaxed);
                    Some(after)
                }
                _ => None,
            };
            pass_through(upstream, &request, &mut writer, cut_after);
            return;
        }
        let response = match fault {
            Fault::Cut(_) | Fault::Forward => match forward(upstream, &request) {
                Some(r) => r,
                None => return,
            },
            Fault::ApplyThenFail => {
                if forward(upstream, &request).is_none() {
                    return;
                }
                counts.applied_then_failed.fetch_add(1, Ordering::Relaxed);
                error_response(
                    500,
                    "Internal Server Error",
                    "InternalFailure",
                    "injected server error after the request was applied",
                )
            }
            Fault::Throttle => {
                counts.throttled.fetch_add(1, Ordering::Relaxed);
                error_response(
                    400,
                    "Bad Request",
                    "ProvisionedThroughputExceededException",
                    "Rate exceeded for shard (injected)",
                )
            }
            Fault::ServerError => {
                counts.server_errors.fetch_add(1, Ordering::Relaxed);
                error_response(
                    500,
                    "Internal Server Error",
                    "InternalFailure",
                    "injected server error",
                )
            }
            Fault::Drop => {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Fault::Delay(delay) => {
                counts.delayed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(delay);
                match forward(upstream, &request) {
                    Some(r) => r,
                    None => return,
                }
            }
            Fault::Hang => {
                counts.hung.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(60));
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        };
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// Send `request` upstream and copy the answer to the client as it arrives, until the
/// upstream ends it or `cut_after` passes; then close the client's connection.
fn pass_through(
    upstream: &str,
    request: &Request,
    client: &mut TcpStream,
    cut_after: Option<Duration>,
) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let mut head = request.head.clone();
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"connection: close\r\n\r\n");
    if up
        .write_all(&head)
        .and_then(|()| up.write_all(&request.body))
        .is_err()
    {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = up.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = cut_after.map(|after| std::time::Instant::now() + after);
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        match up.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
}

fn error_response(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-errortype: {code}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Send the request upstream on a fresh connection; return the whole response.
fn forward(upstream: &str, request: &Request) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = request.head.clone();
    // Re-insert "connection: close" before the blank line ending the head.
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"connection: close\r\n\r\n");
    up.write_all(&head).ok()?;
    up.write_all(&request.body).ok()?;
    let mut reader = BufReader::new(up);
    let mut response = Vec::new();
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
        // Keep the client's connection open: drop upstream's connection header.
        if !lower.starts_with("connection:") {
            response.extend_from_slice(line.as_bytes());
        }
        if line == "\r\n" {
            break;
        }
    }
    match length {
        Some(n) => {
            let mut body = vec![0; n];
            reader.read_exact(&mut body).ok()?;
            response.extend_from_slice(&body);
        }
        None => {
            // No length: the body runs to the end of the connection; re-frame it.
            let mut body = Vec::new();
            reader.read_to_end(&mut body).ok()?;
            response.truncate(response.len() - 2);
            response
                .extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            response.extend_from_slice(&body);
        }
    }
    Some(response)
}
