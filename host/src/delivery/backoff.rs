//! Capped exponential back-off with jitter (real exponentiation, not Go's `2^n` XOR).

use std::time::Duration;

/// Delay before retry number `attempt` (1 = the first retry): `initial · 2^(attempt-1)`
/// capped at `max`, then "equal jitter": half fixed, half uniformly random, so a fleet of
/// shards failing together does not retry in lockstep. `unit` is a sample in [0, 1).
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let ceiling = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// `backoff_delay` with a random jitter sample.
pub fn jittered(attempt: u32, initial: Duration, max: Duration) -> Duration {
    backoff_delay(attempt, initial, max, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_exponentially_then_caps() {
        let d = |n| backoff_delay(n, 100 * MS, 3000 * MS, 1.0);
        assert_eq!(d(1), 100 * MS);
        assert_eq!(d(2), 200 * MS);
        assert_eq!(d(3), 400 * MS);
        assert_eq!(d(5), 1600 * MS);
        assert_eq!(d(6), 3000 * MS);
        assert_eq!(d(1000), 3000 * MS);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        assert_eq!(backoff_delay(3, 100 * MS, 10_000 * MS, 0.0), 200 * MS);
        assert_eq!(backoff_delay(3, 100 * MS, 10_000 * MS, 0.5), 300 * MS);
        for _ in 0..1000 {
            let d = jittered(4, 100 * MS, 10_000 * MS);
            assert!(d >= 400 * MS && d <= 800 * MS, "{d:?}");
        }
    }
}
