//! `misbehave`: a processor for tests that misbehaves on marker records. Every other
//! record is processed normally; the batch is checkpointed with `batch-end` unless a
//! directive marker says otherwise. A marker is a record whose data (UTF-8) is:
//!
//! | data                      | behaviour                                               |
//! |---------------------------|---------------------------------------------------------|
//! | `misbehave:panic`         | `panic!` (a trap: `unreachable`)                        |
//! | `misbehave:loop`          | spins forever (the host's deadline must stop it)        |
//! | `misbehave:oom`           | allocates 1 MiB chunks without bound (memory cap)       |
//! | `misbehave:stack`         | unbounded recursion (stack overflow)                    |
//! | `misbehave:oob`           | loads from an address past linear memory                |
//! | `misbehave:retry`         | returns `process-error::retry`                          |
//! | `misbehave:fatal`         | returns `process-error::fatal`                          |
//! | `misbehave:slow:<ms>`     | busy-waits `<ms>` milliseconds, then carries on         |
//! | `misbehave:grow:<MiB>`    | fills `<MiB>` MiB, frees it, carries on (memory grows)  |
//! | `misbehave:sleep:<ms>`    | sleeps `<ms>` ms in a WASI clock wait, then carries on  |
//! | `misbehave:log:<text>`    | writes `<text>` through the `log` import                |
//! | `misbehave:print:<text>`  | prints `<text>` to stdout and stderr                    |
//! | `misbehave:none`          | returns the `none` directive                            |
//! | `misbehave:at`            | returns `at(<this record>)`                             |
//! | `misbehave:rewind`        | returns `rewind(<this record>)`                         |
//! | `probe:file:<path>`       | reads `<path>`; reports the result as a `fatal` error   |
//! | `probe:write:<path>`      | creates `<path>`; reports the result as a `fatal` error |
//! | `probe:env:<name>`        | reads env var `<name>`; reports as a `fatal` error      |
//! | `probe:socket:<addr>`     | TCP-connects to `<addr>`; reports as a `fatal` error    |
//! | `probe:udp:<addr>`        | sends one UDP datagram to `<addr>`; reports as `fatal`  |
//! | `probe:stall:<addr>`      | TCP-connects to `<addr>` and waits to read one byte     |
//!
//! Probe reports read `probe <kind> <target>: allowed: <detail>` or
//! `probe <kind> <target>: denied: <error>`.
//!
//! Settings: `fail_initialize` = `retry` | `fatal` | `panic` makes `initialize` fail;
//! `log_lifecycle` = `yes` logs `initialize` and `shutdown(<reason>)` through `log`;
//! `on_initialize` and `on_shutdown` make that call misbehave: `sleep:<ms>` (a WASI clock
//! wait), `loop` (spin forever), or `append:<path>` (append one line naming the call and
//! its reason to `<path>`, in a granted directory: proof that the call ran).

use shoal_sdk::{
    Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo, ShutdownReason,
};

struct Misbehave {
    hoard: Vec<Vec<u8>>,
    log_lifecycle: bool,
    on_shutdown: Option<String>,
}

/// Misbehave in a lifecycle call as an `on_initialize` / `on_shutdown` setting says.
fn lifecycle(action: &str, call: &str) {
    if let Some(ms) = action.strip_prefix("sleep:") {
        std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
    } else if action == "loop" {
        #[allow(clippy::empty_loop)]
        loop {}
    } else if let Some(path) = action.strip_prefix("append:") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{call}");
        }
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Never true in practice; it only gives the function a base case. `black_box`
    // keeps the frame (and the recursion) from being optimised away.
    if depth == u64::MAX {
        return 0;
    }
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))) + 1
}

fn probe(kind: &str, target: &str) -> ProcessError {
    let outcome = match kind {
        "file" => std::fs::read_to_string(target)
            .map(|s| s.chars().take(40).collect::<String>())
            .map_err(|e| e.to_string()),
        "write" => std::fs::write(target, b"written by misbehave\n")
            .map(|()| "created".to_string())
            .map_err(|e| e.to_string()),
        "env" => std::env::var(target).map_err(|e| e.to_string()),
        "socket" => std::net::TcpStream::connect(target)
            .map(|_| "connected".to_string())
            .map_err(|e| e.to_string()),
        "stall" => std::net::TcpStream::connect(target)
            .and_then(|mut stream| {
                use std::io::Read;
                let mut byte = [0u8; 1];
                stream.read(&mut byte)
            })
            .map(|n| format!("read {n} bytes"))
            .map_err(|e| e.to_string()),
        "udp" => std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|socket| socket.send_to(b"probe", target))
            .map(|n| format!("sent {n} bytes"))
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown probe kind {other}")),
    };
    ProcessError::Fatal(match outcome {
        Ok(detail) => format!("probe {kind} {target}: allowed: {detail}"),
        Err(e) => format!("probe {kind} {target}: denied: {e}"),
    })
}

impl Processor for Misbehave {
    fn initialize(_shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        match settings.get("fail_initialize") {
            Some("retry") => Err(ProcessError::Retry(
                "initialize asked to fail (retry)".into(),
            )),
            Some("fatal") => Err(ProcessError::Fatal(
                "initialize asked to fail (fatal)".into(),
            )),
            Some("panic") => panic!("initialize asked to panic"),
            _ => {
                let log_lifecycle = settings.get("log_lifecycle") == Some("yes");
                if log_lifecycle {
                    shoal_sdk::info!("initialize");
                }
                if let Some(action) = settings.get("on_initialize") {
                    lifecycle(action, "initialize");
                }
                Ok(Misbehave {
                    hoard: Vec::new(),
                    log_lifecycle,
                    on_shutdown: settings.get("on_shutdown").map(str::to_string),
                })
            }
        }
    }

    fn shutdown(&mut self, _shard: &ShardInfo, reason: ShutdownReason) {
        if self.log_lifecycle {
            shoal_sdk::info!("shutdown({reason:?})");
        }
        if let Some(action) = &self.on_shutdown {
            lifecycle(action, &format!("shutdown({reason:?})"));
        }
    }

    fn process(
        &mut self,
        _shard: &ShardInfo,
        batch: Batch,
    ) -> Result<CheckpointDirective, ProcessError> {
        let mut directive = CheckpointDirective::BatchEnd;
        for record in &batch.records {
            let Ok(text) = std::str::from_utf8(&record.data) else {
                continue;
            };
            if let Some(rest) = text.strip_prefix("probe:") {
                let (kind, target) = rest.split_once(':').unwrap_or((rest, ""));
                return Err(probe(kind, target));
            }
            let Some(marker) = text.strip_prefix("misbehave:") else {
                continue;
            };
            match marker {
                "panic" => panic!("misbehave: panic marker at {}", record.sequence_number),
                "loop" => loop {
                    std::hint::black_box(&self.hoard);
                },
                "oom" => loop {
                    self.hoard.push(vec![1u8; 1 << 20]);
                },
                "stack" => {
                    std::hint::black_box(recurse(0));
                }
                "oob" => {
                    // Past the 4 GiB a 32-bit memory can address after the guard: traps.
                    let p = std::hint::black_box(0xFFFF_FFF0usize) as *const u64;
                    // SAFETY: deliberately invalid; the host must trap it.
                    let v = unsafe { std::ptr::read_volatile(p) };
                    std::hint::black_box(v);
                }
                "retry" => {
                    return Err(ProcessError::Retry(format!(
                        "misbehave: retry marker at {}",
                        record.sequence_number
                    )));
                }
                "fatal" => {
                    return Err(ProcessError::Fatal(format!(
                        "misbehave: fatal marker at {}",
                        record.sequence_number
                    )));
                }
                "none" => directive = CheckpointDirective::None,
                "at" => directive = CheckpointDirective::At(record.position()),
                "rewind" => directive = CheckpointDirective::Rewind(record.position()),
                other => {
                    if let Some(ms) = other.strip_prefix("slow:") {
                        let ms: u64 = ms.parse().unwrap_or(0);
                        let until =
                            std::time::Instant::now() + std::time::Duration::from_millis(ms);
                        while std::time::Instant::now() < until {
                            std::hint::black_box(&self.hoard);
                        }
                    } else if let Some(mib) = other.strip_prefix("grow:") {
                        // Touched, then freed: the linear memory keeps the size it grew to.
                        let filled = vec![1u8; mib.parse::<usize>().unwrap_or(0) << 20];
                        std::hint::black_box(&filled);
                    } else if let Some(ms) = other.strip_prefix("sleep:") {
                        // Waits in a WASI host call (a poll on a clock), not in wasm.
                        std::thread::sleep(std::time::Duration::from_millis(
                            ms.parse().unwrap_or(0),
                        ));
                    } else if let Some(text) = other.strip_prefix("log:") {
                        shoal_sdk::info!("{text}");
                    } else if let Some(text) = other.strip_prefix("print:") {
                        println!("{text}");
                        eprintln!("{text}");
                    }
                }
            }
        }
        Ok(directive)
    }
}

shoal_sdk::export_processor!(Misbehave);
