//! What the lab tools (`trace`, `capture`, `top`, `--metrics`) need from the rest of
//! vswitchd beyond the model: handles the daemon gives the control state after start.

use crate::dp::capture::Taps;
use crate::tables::NeighCache;
use std::sync::Arc;

/// Handles of the running daemon. Empty in tests that build a [`super::State`]
/// without one.
#[derive(Default, Clone)]
pub struct Tools {
    /// The neighbour cache the workers read (a trace resolves next hops with it).
    pub neigh: Option<Arc<NeighCache>>,
    /// Running captures; every snapshot points to these.
    pub taps: Arc<Taps>,
    /// The DNS counters of the service thread (per bridge).
    pub dns: Arc<crate::service::dns::DnsStats>,
}
