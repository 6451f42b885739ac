//! Everything one instance writes to the host log, and its rate limit: the `log` import,
//! stdout and stderr lines, and the warnings about what it was refused all draw from one
//! token bucket (`plugin.limits.log_rate` lines per second, `log_burst` at once). Lines
//! over it are counted (`shoal_guest_log_lines_suppressed_total`) and said in one line:
//! before the next line that is logged, and at the end of every guest call.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::telemetry::metrics::metrics;

/// Who is writing: attached to every forwarded line.
#[derive(Debug, Clone)]
pub struct LogTags {
    /// Stream name.
    pub stream: Arc<str>,
    /// Shard id.
    pub shard: Arc<str>,
    /// Plugin generation.
    pub generation: u64,
}

/// One instance's log lines and their rate limit. Shared by the instance's stdout,
/// stderr, `log` import and sandbox refusals.
#[derive(Debug)]
pub struct GuestLog {
    tags: LogTags,
    rate: u32,
    burst: u32,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines over the limit since the last summary.
    suppressed: u64,
}

impl GuestLog {
    /// A full bucket of `burst` lines, refilled at `rate` lines per second.
    pub fn new(tags: LogTags, rate: u32, burst: u32) -> Self {
        let burst = burst.max(1);
        Self {
            tags,
            rate: rate.max(1),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                refilled: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// Who the lines are from.
    pub fn tags(&self) -> &LogTags {
        &self.tags
    }

    /// Take a token for one line: `true` to log it, `false` if it is over the limit
    /// (then it is counted). Says how many were suppressed before a line it lets through.
    pub fn admit(&self) -> bool {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> bool {
        let suppressed = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens =
                (bucket.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                bucket.suppressed += 1;
                metrics().guest_log_lines_suppressed.inc();
                return false;
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.suppressed)
        };
        self.say_suppressed(suppressed);
        true
    }

    /// Say how many lines were suppressed since the last summary, if any (the end of a
    /// guest call, the instance's end).
    pub fn flush_suppressed(&self) {
        let suppressed = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut bucket.suppressed)
        };
        self.say_suppressed(suppressed);
    }

    fn say_suppressed(&self, suppressed: u64) {
        if suppressed == 0 {
            return;
        }
        let LogTags {
            stream,
            shard,
            generation,
        } = &self.tags;
        tracing::warn!(
            target: "shoal::guest",
            stream = %stream, shard = %shard, generation, suppressed,
            "{suppressed} guest log lines suppressed: over plugin.limits.log_rate ({} lines/s, log_burst {})",
            self.rate, self.burst
        );
    }
}

impl Drop for GuestLog {
    fn drop(&mut self) {
        self.flush_suppressed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn log(rate: u32, burst: u32) -> GuestLog {
        GuestLog::new(
            LogTags {
                stream: Arc::from("s"),
                shard: Arc::from("shardId-0"),
                generation: 1,
            },
            rate,
            burst,
        )
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let log = log(10, 5);
        let start = Instant::now();
        let passed = (0..1000).filter(|_| log.admit_at(start)).count();
        assert_eq!(passed, 5, "the burst, then nothing at the same instant");
        assert_eq!(log.bucket.lock().expect("lock").suppressed, 995);
        // One second later: ten more tokens, but never more than the burst.
        let later = start + Duration::from_secs(1);
        let passed = (0..1000).filter(|_| log.admit_at(later)).count();
        assert_eq!(passed, 5);
        let much_later = start + Duration::from_millis(1300);
        assert_eq!(
            (0..1000).filter(|_| log.admit_at(much_later)).count(),
            3,
            "0.3 s at 10 lines/s"
        );
    }

    #[test]
    fn the_suppressed_count_is_said_once_and_reset() {
        let log = log(1, 1);
        let start = Instant::now();
        assert!(log.admit_at(start));
        assert!(!log.admit_at(start));
        assert!(!log.admit_at(start));
        // The next line let through says "2 suppressed" first, and resets the count.
        assert!(log.admit_at(start + Duration::from_secs(2)));
        assert_eq!(log.bucket.lock().expect("lock").suppressed, 0);
        assert!(!log.admit_at(start + Duration::from_secs(2)));
        log.flush_suppressed();
        assert_eq!(log.bucket.lock().expect("lock").suppressed, 0);
    }
}
