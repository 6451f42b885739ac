//! A DNS server for tests, on its own loopback address (127.0.0.N, port 53): it records the
//! name of every query that reaches it, and either never answers (a resolver that hangs:
//! glibc then waits 5 s per try) or answers every A query with one address (a name whose
//! DNS a third party controls). A process sees it instead of the system's resolver when
//! started through [`FakeDns::wrap`]: in a private mount namespace whose
//! `/etc/resolv.conf` names only this server. Needs root (for port 53 and the mount), as
//! `tests/run.sh` and CI run; without it the test fails saying so.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with a query.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Never answer.
    Silent,
    /// Answer A queries with this address (AAAA queries with no records).
    With(Ipv4Addr),
}

pub struct FakeDns {
    address: Ipv4Addr,
    queries: Arc<Mutex<Vec<String>>>,
    resolv_conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeDns {
    pub fn start(answer: Answer) -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(60);
        let address = Ipv4Addr::new(127, 0, 0, NEXT.fetch_add(1, Ordering::Relaxed));
        let socket = UdpSocket::bind((address, 53)).unwrap_or_else(|e| {
            panic!("cannot bind a test DNS server on {address}:53 ({e}): the name-lookup tests need root, as tests/run.sh and CI run")
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&queries);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    // Keep serving until the test process ends (the socket is its own).
                    continue;
                };
                let Some((name, qtype, question_end)) = parse_query(&buf[..n]) else {
                    continue;
                };
                seen.lock().expect("lock").push(name);
                if let Answer::With(ip) = answer {
                    let reply = reply(&buf[..question_end], qtype, ip);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            format!("nameserver {address}\noptions timeout:5 attempts:2\n"),
        )
        .expect("resolv.conf");
        Self {
            address,
            queries,
            resolv_conf,
            _dir: dir,
        }
    }

    /// Every name asked so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("lock").clone()
    }

    /// The server's address (for messages).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// A command that runs `program args…` with this server as its only resolver.
    pub fn wrap(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(&self.resolv_conf)
            .arg(program);
        cmd
    }
}

/// The queried name, its type and where the question section ends.
fn parse_query(packet: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).into_owned());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// An answer to the query whose header and question are `query`: one A record for an A
/// query, no records otherwise.
fn reply(query: &[u8], qtype: u16, ip: Ipv4Addr) -> Vec<u8> {
    let mut out = query.to_vec();
    out[2] = 0x81; // response, recursion desired
    out[3] = 0x80; // recursion available, no error
    let answers: u16 = u16::from(qtype == 1);
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..12].fill(0);
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    out
}
