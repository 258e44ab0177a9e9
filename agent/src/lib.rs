//! vswitch-agent: the cluster agent. One runs beside each host's vswitchd; the agents
//! share the cluster's state through etcd (docs/cluster.md) and program their own
//! vswitchd through `vswitch-proto` only.
//!
//! ```text
//!   agent.rs   the loop (current-thread tokio): etcd lease, watch, calls, reconcile
//!   state.rs   the cluster view and the pure functions from it to vswitchd's state
//!   keys.rs    etcd key layout and versioned values
//!   local.rs   vswitchd: requests, the event stream and the cluster-agent link
//! ```
//! vswitchd itself never talks to etcd and has no async runtime: the agent is a
//! process of its own, and its runtime has one thread (a multi-threaded runtime and
//! `setns` do not mix).

pub mod agent;
pub mod keys;
pub mod local;
pub mod state;
