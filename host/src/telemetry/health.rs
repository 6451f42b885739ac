//! Liveness and readiness of one `shoal run`: the lease tick loop stamps a heartbeat, the
//! source and the lease store stamp each answer, the coordinator says whether this
//! process holds a lease or none is there to take. `/healthz` and `/readyz` judge those
//! stamps (the judgement is pure, and unit-tested).
//!
//! - **Alive** (`/healthz`): the tick loop ran within [`HealthWindows::alive`].
//! - **Ready** (`/readyz`): alive; the source answered within
//!   [`HealthWindows::source`]; the lease store answered within
//!   [`HealthWindows::lease_store`]; and at least one lease is held, or none was
//!   available to take at the last tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How recent each stamp must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthWindows {
    /// The tick loop's heartbeat.
    pub alive: Duration,
    /// A successful source call (fetches are frequent while a shard is held; with none
    /// held only the shard sync calls it).
    pub source: Duration,
    /// A successful lease-store call (renewals run every third of the lease duration).
    pub lease_store: Duration,
}

impl HealthWindows {
    /// The windows for a consumer's lease duration and shard-sync interval: three lease
    /// durations for the lease store (nine renewal periods), that or two sync intervals
    /// (plus their jitter) for the source, and the tick loop's ten periods or a minute,
    /// whichever is longer, for liveness (a tick may wait out a hung call's timeouts).
    pub fn for_consumer(lease_duration: Duration, shard_sync_interval: Duration) -> Self {
        let lease_store = lease_duration * 3;
        Self {
            alive: (lease_duration / 3 * 10).max(Duration::from_secs(60)),
            source: lease_store.max(shard_sync_interval * 3),
            lease_store,
        }
    }
}

/// The stamps, shared by the tasks that set them and the server that reads them.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    windows: HealthWindows,
    /// Milliseconds since `started` of each stamp, plus one (0: never).
    tick: AtomicU64,
    source_ok: AtomicU64,
    lease_store_ok: AtomicU64,
    /// At least one lease held, or none available to take, at the last tick.
    leases_ok: AtomicBool,
}

/// A moment relative to `started`, as stored (0 = never).
fn stamp_of(started: Instant, now: Instant) -> u64 {
    u64::try_from(now.duration_since(started).as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// What the stamps say, for [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Time since start, ms.
    pub now_ms: u64,
    /// Last tick, ms since start (`None`: never).
    pub tick_ms: Option<u64>,
    /// Last successful source call.
    pub source_ok_ms: Option<u64>,
    /// Last successful lease-store call.
    pub lease_store_ok_ms: Option<u64>,
    /// Leases held, or none available.
    pub leases_ok: bool,
}

/// The verdict: `Ok` or the reasons, one sentence each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Alive (the tick loop runs).
    pub alive: Result<(), String>,
    /// Ready to do its work.
    pub ready: Result<(), Vec<String>>,
}

/// Judge a snapshot against the windows.
pub fn judge(s: &Snapshot, w: &HealthWindows) -> Verdict {
    let age = |at: Option<u64>| at.map(|t| Duration::from_millis(s.now_ms.saturating_sub(t)));
    let recent = |what: &str, at: Option<u64>, window: Duration| match age(at) {
        Some(a) if a <= window => Ok(()),
        Some(a) => Err(format!(
            "{what}: last answered {:.1}s ago (window {})",
            a.as_secs_f64(),
            humantime::format_duration(window)
        )),
        None => Err(format!("{what}: has not answered yet")),
    };
    let alive = match age(s.tick_ms) {
        Some(a) if a <= w.alive => Ok(()),
        Some(a) => Err(format!(
            "the lease tick loop last ran {:.1}s ago (window {})",
            a.as_secs_f64(),
            humantime::format_duration(w.alive)
        )),
        None => Err("the lease tick loop has not run yet".into()),
    };
    let mut reasons = Vec::new();
    if let Err(e) = &alive {
        reasons.push(e.clone());
    }
    if let Err(e) = recent("source", s.source_ok_ms, w.source) {
        reasons.push(e);
    }
    if let Err(e) = recent("lease store", s.lease_store_ok_ms, w.lease_store) {
        reasons.push(e);
    }
    if !s.leases_ok {
        reasons.push("no lease held although leases are available to take".into());
    }
    Verdict {
        alive,
        ready: if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        },
    }
}

impl Health {
    /// Fresh stamps (nothing yet: not ready).
    pub fn new(windows: HealthWindows) -> Self {
        Self {
            started: Instant::now(),
            windows,
            tick: AtomicU64::new(0),
            source_ok: AtomicU64::new(0),
            lease_store_ok: AtomicU64::new(0),
            leases_ok: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        stamp_of(self.started, Instant::now())
    }

    /// The tick loop ran.
    pub fn ticked(&self) {
        self.tick.store(self.now(), Ordering::Relaxed);
    }

    /// After a tick that read the lease table: `ok` if a lease is held, or none was
    /// available to take.
    pub fn leases_ok(&self, ok: bool) {
        self.leases_ok.store(ok, Ordering::Relaxed);
    }

    /// The source answered a call.
    pub fn source_answered(&self) {
        self.source_ok.store(self.now(), Ordering::Relaxed);
    }

    /// The lease store answered a call.
    pub fn lease_store_answered(&self) {
        self.lease_store_ok.store(self.now(), Ordering::Relaxed);
    }

    /// The stamps now.
    pub fn snapshot(&self) -> Snapshot {
        let read = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - 1),
        };
        Snapshot {
            now_ms: self.now() - 1,
            tick_ms: read(&self.tick),
            source_ok_ms: read(&self.source_ok),
            lease_store_ok_ms: read(&self.lease_store_ok),
            leases_ok: self.leases_ok.load(Ordering::Relaxed),
        }
    }

    /// Judge the stamps now.
    pub fn verdict(&self) -> Verdict {
        judge(&self.snapshot(), &self.windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: HealthWindows = HealthWindows {
        alive: Duration::from_secs(60),
        source: Duration::from_secs(30),
        lease_store: Duration::from_secs(30),
    };

    fn all_fresh(now_ms: u64) -> Snapshot {
        Snapshot {
            now_ms,
            tick_ms: Some(now_ms - 100),
            source_ok_ms: Some(now_ms - 100),
            lease_store_ok_ms: Some(now_ms - 100),
            leases_ok: true,
        }
    }

    #[test]
    fn fresh_stamps_are_alive_and_ready() {
        let v = judge(&all_fresh(100_000), &W);
        assert_eq!(v.alive, Ok(()));
        assert_eq!(v.ready, Ok(()));
    }

    #[test]
    fn nothing_answered_yet_is_not_ready_and_says_why() {
        let v = judge(
            &Snapshot {
                now_ms: 10,
                tick_ms: None,
                source_ok_ms: None,
                lease_store_ok_ms: None,
                leases_ok: false,
            },
            &W,
        );
        assert!(v.alive.is_err());
        let reasons = v.ready.expect_err("not ready");
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(
            reasons[1].contains("source: has not answered yet"),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_lease_store_silent_past_its_window_makes_the_process_unready_not_dead() {
        let mut s = all_fresh(100_000);
        s.lease_store_ok_ms = Some(100_000 - 31_000);
        let v = judge(&s, &W);
        assert_eq!(v.alive, Ok(()));
        let reasons = v.ready.expect_err("not ready");
        assert_eq!(
            reasons,
            ["lease store: last answered 31.0s ago (window 30s)"],
            "{reasons:?}"
        );
        // Exactly at the window edge it is still ready.
        s.lease_store_ok_ms = Some(100_000 - 30_000);
        assert_eq!(judge(&s, &W).ready, Ok(()));
    }

    #[test]
    fn holding_nothing_while_leases_are_available_is_not_ready() {
        let mut s = all_fresh(5_000);
        s.leases_ok = false;
        assert_eq!(
            judge(&s, &W).ready,
            Err(vec![
                "no lease held although leases are available to take".to_string()
            ])
        );
    }

    #[test]
    fn a_stalled_tick_loop_is_not_alive() {
        let mut s = all_fresh(200_000);
        s.tick_ms = Some(200_000 - 61_000);
        let v = judge(&s, &W);
        assert!(v.alive.expect_err("dead").contains("61.0s ago"));
        assert!(v.ready.is_err());
    }

    #[test]
    fn windows_follow_the_lease_and_sync_settings() {
        let w = HealthWindows::for_consumer(Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(w.lease_store, Duration::from_secs(30));
        assert_eq!(w.source, Duration::from_secs(180));
        assert_eq!(w.alive, Duration::from_secs(60));
        let short = HealthWindows::for_consumer(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(short.lease_store, Duration::from_secs(6));
        assert_eq!(short.source, Duration::from_secs(6));
    }
}
