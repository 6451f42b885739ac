//! The log sink: formatted lines go into a bounded in-memory queue, and one thread writes
//! them to stderr, so a stderr that stops draining (a full pipe, a stuck log shipper)
//! never blocks the code that logs — a guest's call, a lease renewal. When the queue is
//! full, lines are dropped, counted in `shoal_log_lines_dropped_total`, and said in one
//! line once stderr takes lines again.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Most bytes of formatted lines waiting for stderr.
pub const QUEUE_BYTES: usize = 4 << 20;

/// The lines waiting, their size, and how many were dropped since the last report.
#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
    /// A line is being written (taken off the queue, not yet on stderr).
    writing: bool,
}

/// Shared between the loggers and the writer thread.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued (for the writer) or the queue drains (for
    /// [`LogSink::flush`]).
    changed: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one line, or count it as dropped if the queue is full. Never blocks on the
    /// output.
    fn push(&self, line: Vec<u8>) {
        let mut queue = self.lock();
        if queue.bytes + line.len() > self.capacity {
            queue.dropped += 1;
            drop(queue);
            crate::telemetry::metrics::metrics().log_lines_dropped.inc();
            return;
        }
        queue.bytes += line.len();
        queue.lines.push_back(line);
        drop(queue);
        self.changed.notify_all();
    }
}

/// A `MakeWriter` for `tracing_subscriber::fmt` that queues each event's line.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl LogSink {
    /// A sink writing to `out` from its own thread, holding at most `capacity` bytes of
    /// lines that `out` has not taken yet.
    pub fn start(out: impl Write + Send + 'static, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            capacity,
        });
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("shoal-log".into())
            .spawn(move || write_lines(&for_thread, out));
        if let Err(e) = spawned {
            eprintln!("shoal: cannot start the log writer thread, logs are lost: {e}");
        }
        Self { shared }
    }

    /// Wait up to `timeout` for the queued lines to reach the output (at exit).
    pub fn flush(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        let mut queue = self.shared.lock();
        while !queue.lines.is_empty() || queue.writing {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            queue = match self.shared.changed.wait_timeout(queue, left) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// The writer thread: one line at a time, the dropped count said before the next line.
fn write_lines(shared: &Shared, mut out: impl Write) {
    loop {
        let (line, dropped) = {
            let mut queue = shared.lock();
            loop {
                if let Some(line) = queue.lines.pop_front() {
                    queue.bytes -= line.len();
                    queue.writing = true;
                    let dropped = std::mem::take(&mut queue.dropped);
                    break (line, dropped);
                }
                queue = match shared.changed.wait(queue) {
                    Ok(q) => q,
                    Err(p) => p.into_inner(),
                };
            }
        };
        if dropped > 0 {
            let _ = writeln!(
                out,
                "shoal: {dropped} log lines dropped: the log output (stderr) did not take them fast enough"
            );
        }
        // A write error (stderr closed) loses the line; there is nowhere to say so.
        let _ = out.write_all(&line);
        let _ = out.flush();
        shared.lock().writing = false;
        shared.changed.notify_all();
    }
}

/// One event's line, queued when the formatter is done with it.
pub struct QueuedLine {
    shared: Arc<Shared>,
    line: Vec<u8>,
}

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.shared.push(std::mem::take(&mut self.line));
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            shared: Arc::clone(&self.shared),
            line: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that blocks every write until the test lets it go.
    #[derive(Clone)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut is_open = open.lock().expect("lock");
            while !*is_open {
                is_open = opened.wait(is_open).expect("wait");
            }
            self.written.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(sink: &LogSink, text: &str) {
        let mut w = sink.make_writer();
        w.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn a_blocked_output_never_blocks_the_logger_and_drops_are_said() {
        let gate = Gate {
            open: Arc::new((Mutex::new(false), Condvar::new())),
            written: Arc::default(),
        };
        let sink = LogSink::start(gate.clone(), 100);
        line(&sink, "line 00000\n");
        // Wait until the writer took that line and is blocked writing it.
        while {
            let queue = sink.shared.lock();
            !(queue.lines.is_empty() && queue.writing)
        } {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        // Far more than the queue holds, while the output takes nothing.
        for n in 1..10_000 {
            line(&sink, &format!("line {n:05}\n"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "logging waited for a blocked output"
        );
        {
            let (open, opened) = &*gate.open;
            *open.lock().expect("lock") = true;
            opened.notify_all();
        }
        sink.flush(Duration::from_secs(10));
        line(&sink, "after\n");
        sink.flush(Duration::from_secs(10));
        let written = String::from_utf8(gate.written.lock().expect("lock").clone()).expect("utf8");
        // The first line was taken by the writer (and blocked there); the queue then held
        // what fits in 100 bytes (9 lines of 11 bytes); the other 9990 were dropped and said.
        assert!(written.starts_with("line 00000\n"), "{written}");
        assert_eq!(written.matches("line ").count(), 10, "{written}");
        assert!(
            written.contains("shoal: 9990 log lines dropped"),
            "{written}"
        );
        assert!(written.ends_with("after\n"), "{written}");
    }
}
