//! A real HTTP/1.1 server on 127.0.0.1 for the outbound-HTTP tests, with modes: answer
//! 200 (at once or slowly), answer 500 or 503, stall (accept, read the request, never answer) or redirect. It records
//! every request it read and what it answered, so tests see what reached it and what did
//! not; it can be stopped (connections refused) and restarted on the same port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;

#[derive(Debug, Clone)]
pub enum Mode {
    Ok,
    /// 200 after this long: a slow endpoint.
    Slow(Duration),
    Fail,
    /// 503 Service Unavailable.
    Unavailable,
    Stall,
    Redirect(String),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the server answered (0: it never answered).
    pub answered: u16,
}

impl Received {
    /// The records of the batch document `http-sink` posted in this request.
    pub fn posted_records(&self) -> Vec<PostedRecord> {
        let body: serde_json::Value =
            serde_json::from_slice(&self.body).expect("a JSON batch document");
        let shard_id = body["shard_id"].as_str().expect("shard_id").to_string();
        let mut records = Vec::new();
        for r in body["records"].as_array().expect("records") {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data_base64"].as_str().expect("data_base64"))
                .expect("base64");
            records.push(PostedRecord {
                shard_id: shard_id.clone(),
                position: format!(
                    "{}.{}",
                    r["sequence_number"].as_str().expect("sequence_number"),
                    r["sub_sequence_number"]
                        .as_u64()
                        .expect("sub_sequence_number")
                ),
                data: String::from_utf8(data).expect("utf-8 data"),
            });
        }
        records
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One record of a batch document that `http-sink` posted (see plugins/http-sink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedRecord {
    pub shard_id: String,
    /// `sequence.sub-sequence`.
    pub position: String,
    pub data: String,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Received>>>,
    running: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut server = Self {
            addr,
            mode: Arc::new(Mutex::new(mode)),
            received: Arc::new(Mutex::new(Vec::new())),
            running: Arc::new(AtomicBool::new(true)),
            acceptor: None,
        };
        server.accept_on(listener);
        server
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let (m, r, running) = (
            Arc::clone(&self.mode),
            Arc::clone(&self.received),
            Arc::clone(&self.running),
        );
        running.store(true, Ordering::SeqCst);
        self.acceptor = Some(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if !running.load(Ordering::SeqCst) {
                    return; // dropping the listener: connections are refused from now on
                }
                let (m, r, running) = (Arc::clone(&m), Arc::clone(&r), Arc::clone(&running));
                std::thread::spawn(move || serve(stream, &m, &r, &running));
            }
        }));
    }

    /// Close the listening socket (new connections are refused) and every connection
    /// after the request it is reading.
    pub fn stop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().expect("acceptor thread");
        }
    }

    /// Listen again on the same address.
    pub fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("bind the same address again");
        self.accept_on(listener);
    }

    /// Every record of every batch the server accepted (answered 2xx), in arrival order,
    /// duplicates included.
    pub fn accepted_records(&self) -> Vec<PostedRecord> {
        self.received()
            .iter()
            .filter(|request| (200..300).contains(&request.answered))
            .flat_map(Received::posted_records)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn serve(
    stream: TcpStream,
    mode: &Mutex<Mode>,
    received: &Mutex<Vec<Received>>,
    running: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let Some(mut request) = read_request(&mut reader) else {
            return;
        };
        if !running.load(Ordering::SeqCst) {
            return; // stopped: the connection closes unanswered
        }
        let mode = mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        request.answered = match &mode {
            Mode::Ok | Mode::Slow(_) => 200,
            Mode::Fail => 500,
            Mode::Unavailable => 503,
            Mode::Redirect(_) => 307,
            Mode::Stall => 0,
        };
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
        let response = match mode {
            Mode::Ok => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
            Mode::Slow(latency) => {
                std::thread::sleep(latency);
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
            }
            Mode::Fail => {
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail".to_string()
            }
            Mode::Unavailable => {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".to_string()
            }
            Mode::Redirect(to) => {
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n"
                )
            }
            Mode::Stall => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Received {
        method,
        path,
        headers,
        body,
        answered: 0,
    })
}

/// A `transfer-encoding: chunked` body (no trailers expected).
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; size + 2]; // the chunk and its CRLF
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}
