//! A TCP relay on 127.0.0.1 that can hold back what clients send: `hold` keeps every byte
//! a client sends from then on (even after the client hangs up), `release` delivers what
//! was held, in order, and forwards again. A network that delays one worker's packets
//! past the end of its lease, for the fencing tests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    holding: bool,
    /// Every byte held back so far, across connections (what `held` reports).
    held: Vec<u8>,
}

pub struct HoldingRelay {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HoldingRelay {
    /// Relay connections made to a free 127.0.0.1 port to `upstream`.
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let address = listener.local_addr().expect("relay address");
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.to_string();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue; // the client sees its connection closed
                };
                relay(client, server, Arc::clone(&shared));
            }
        });
        Self { address, state }
    }

    /// The `host:port` clients connect to.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Hold back everything clients send from now on.
    pub fn hold(&self) {
        self.state.lock().expect("relay state").holding = true;
    }

    /// Deliver what was held, and forward again.
    pub fn release(&self) {
        self.state.lock().expect("relay state").holding = false;
    }

    /// The bytes held back since the relay started.
    pub fn held(&self) -> Vec<u8> {
        self.state.lock().expect("relay state").held.clone()
    }
}

/// Pump both directions of one connection. Client to server goes through a queue that
/// fills while holding and drains when released; a client that hangs up while bytes are
/// held still has them delivered.
fn relay(mut client: TcpStream, mut server: TcpStream, state: Arc<Mutex<State>>) {
    let (Ok(mut replies_from), Ok(mut replies_to)) = (server.try_clone(), client.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut replies_from, &mut replies_to);
        let _ = replies_to.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = client.set_read_timeout(Some(Duration::from_millis(20)));
        let mut queue: Vec<u8> = Vec::new();
        let mut recorded = 0; // how much of `queue` is in `State::held` already
        let mut open = true;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if open {
                match client.read(&mut buf) {
                    Ok(0) => open = false,
                    Ok(n) => queue.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => open = false,
                }
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut s = state.lock().expect("relay state");
            if s.holding {
                // Bytes stay queued until released; each is recorded as held once.
                s.held.extend_from_slice(&queue[recorded..]);
                recorded = queue.len();
                continue;
            }
            drop(s);
            if !queue.is_empty() {
                if server.write_all(&queue).is_err() {
                    return;
                }
                queue.clear();
                recorded = 0;
            }
            if !open {
                let _ = server.shutdown(Shutdown::Write);
                return;
            }
        }
    });
}
