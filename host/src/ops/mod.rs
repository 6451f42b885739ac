//! Commands that inspect rather than consume: `shoal check` (will this deployment run?)
//! and `shoal leases` (who holds what, how far along); and `shoal new`, which starts a
//! processor project.

pub mod check;
pub mod leases;
pub mod new;
