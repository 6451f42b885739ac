//! A time limit on one cluster test: a test still running after it (a call that never
//! answers, a wait with no deadline of its own) kills its workers and ends the test
//! process with what it was doing, so a hang fails here, loudly, instead of holding CI
//! until its own limit.

use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one cluster test may run (the longest pass in well under half of it).
pub const LIMIT: Duration = Duration::from_secs(15 * 60);

/// Armed while its test runs; disarmed when dropped.
pub struct Watchdog {
    _disarm: Sender<()>,
    state: Arc<Mutex<Watched>>,
}

#[derive(Default)]
struct Watched {
    step: String,
    pids: Vec<u32>,
}

impl Watchdog {
    pub fn arm(limit: Duration) -> Self {
        let test = std::thread::current()
            .name()
            .unwrap_or("an unnamed test")
            .to_string();
        let state = Arc::new(Mutex::new(Watched::default()));
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let watched = Arc::clone(&state);
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                let w = watched.lock().unwrap_or_else(|p| p.into_inner());
                for pid in &w.pids {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                eprintln!(
                    "watchdog: {test} still running after {limit:?} (last step: {}); \
                     killed its workers {:?} and ending the test process",
                    w.step, w.pids
                );
                std::process::exit(101);
            }
        });
        Self {
            _disarm: disarm,
            state,
        }
    }

    /// What the test is doing now (reported if the limit passes).
    pub fn step(&self, what: impl Into<String>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).step = what.into();
    }

    /// A worker process to kill if the limit passes.
    pub fn add_pid(&self, pid: u32) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pids
            .push(pid);
    }
}
