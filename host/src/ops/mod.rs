//! Commands that inspect rather than consume: `shoal check` (will this deployment run?)
//! and `shoal leases` (who holds what, how far along).

pub mod check;
pub mod leases;
