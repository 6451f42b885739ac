//! The epoch budget of one guest call: its deadline in epoch ticks, and the token that
//! interrupts it when the shard's lease is lost or fenced — a computing guest as well as
//! a waiting one, within one tick.
//!
//! The store's epoch deadline is always one tick ahead; on every tick the callback asks
//! [`CallBudget::tick`] what to do: trap with `interrupt` once the deadline's ticks are
//! spent, trap with [`CallAbandoned`] once the token is cancelled, else run one more tick.
//! One callback per 10 ms tick costs nothing measurable, and without it a guest computing
//! when its lease is lost would run on to its deadline (10 s by default), past the moment
//! a peer may take the shard over.

use tokio_util::sync::CancellationToken;
use wasmtime::UpdateDeadline;

use super::outcome::CallAbandoned;

/// What is left of the call in flight.
#[derive(Debug, Clone, Default)]
pub struct CallBudget {
    /// Ticks until the deadline traps the call.
    ticks_left: u64,
    /// Cancelled when the lease is lost: the call stops at the next tick.
    abandon: Option<CancellationToken>,
}

impl CallBudget {
    /// A budget of `ticks` for a call that `abandon` (if any) may interrupt.
    pub fn new(ticks: u64, abandon: Option<CancellationToken>) -> Self {
        Self {
            ticks_left: ticks,
            abandon,
        }
    }

    /// One epoch tick passed during the call.
    pub fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.abandon.as_ref().is_some_and(|t| t.is_cancelled()) {
            return Err(wasmtime::Error::new(CallAbandoned));
        }
        self.ticks_left = self.ticks_left.saturating_sub(1);
        if self.ticks_left == 0 {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_continue(u: &wasmtime::Result<UpdateDeadline>) -> bool {
        matches!(u, Ok(UpdateDeadline::Continue(1)))
    }

    #[test]
    fn the_deadline_interrupts_on_its_last_tick() {
        let mut budget = CallBudget::new(3, None);
        assert!(is_continue(&budget.tick()));
        assert!(is_continue(&budget.tick()));
        assert!(matches!(budget.tick(), Ok(UpdateDeadline::Interrupt)));
        // An empty budget never runs on.
        assert!(matches!(
            CallBudget::default().tick(),
            Ok(UpdateDeadline::Interrupt)
        ));
    }

    #[test]
    fn a_cancelled_token_stops_the_call_at_the_next_tick_with_call_abandoned() {
        let token = CancellationToken::new();
        let mut budget = CallBudget::new(1_000, Some(token.clone()));
        assert!(is_continue(&budget.tick()));
        token.cancel();
        match budget.tick() {
            Err(stopped) => assert!(
                stopped.downcast_ref::<CallAbandoned>().is_some(),
                "{stopped}"
            ),
            Ok(_) => panic!("a cancelled call must stop"),
        }
    }
}
