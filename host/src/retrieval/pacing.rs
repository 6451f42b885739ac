//! GetRecords pacing: at most 5 calls per second per shard, no wait while behind, an idle
//! sleep when caught up and nothing came back.

use std::time::Duration;

/// Kinesis allows 5 GetRecords calls per second per shard.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long to wait before the next fetch, given what the last one returned and how
/// long ago it was sent.
pub fn next_fetch_delay(
    records: usize,
    millis_behind_latest: u64,
    idle: Duration,
    since_last_call: Duration,
) -> Duration {
    let floor = MIN_FETCH_INTERVAL.saturating_sub(since_last_call);
    if millis_behind_latest > 0 || records > 0 {
        // Behind, or data is flowing: as fast as the per-shard limit allows.
        floor
    } else {
        // Caught up and nothing came: idle, but never faster than the limit.
        idle.max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn behind_or_flowing_fetches_at_the_shard_limit() {
        assert_eq!(
            next_fetch_delay(10_000, 5_000, 1000 * MS, 50 * MS),
            150 * MS
        );
        assert_eq!(next_fetch_delay(3, 0, 1000 * MS, 20 * MS), 180 * MS);
        assert_eq!(next_fetch_delay(10, 1, 1000 * MS, 300 * MS), Duration::ZERO);
    }

    #[test]
    fn caught_up_and_empty_sleeps_the_idle_time() {
        assert_eq!(next_fetch_delay(0, 0, 1000 * MS, 10 * MS), 1000 * MS);
        assert_eq!(
            next_fetch_delay(0, 0, 50 * MS, 10 * MS),
            190 * MS,
            "never beyond 5 calls/s"
        );
    }
}
