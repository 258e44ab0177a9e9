//! # vswitch: a userspace virtual switch
//!
//! The crate is cut into layers; each depends only on the layers below it.
//!
//! ```text
//!   control/   Unix-socket server, State::mutate, request handlers, snapshot builder
//!   config/    Model (what the user asked for), db
//!   dp/        Worker threads, Batch, per-worker Stats, Snapshot (what workers read)
//!   pipeline/  per-batch stages: parse → ingress VLAN → L2 learn/lookup → L3 → output
//!   service/   slow path thread: ARP, ICMP, DHCP server, DNS (punted frames)
//!   tables/    Fdb (lock-free MAC table), RouteTable (LPM), NeighCache (ARP),
//!              LeaseStore (DHCP leases, its own lock; the slow path and control share it)
//!   port/      trait Port + afpacket (system), tap/internal, mem (tests);
//!              the only `unsafe` lives in port/sys/
//!   wire/      in-place header views: Ethernet, 802.1Q, MAC addresses
//! ```
//!
//! The hot path (`dp` + `pipeline` + `tables` + `port`) takes no lock: configuration is
//! an immutable [`dp::Snapshot`] published through `arc-swap`, the [`tables::Fdb`]
//! is a seqlock-per-slot table, and counters are per worker.

pub mod config;
pub mod control;
pub mod daemon;
pub mod dp;
pub mod fastpath;
pub mod pipeline;
pub mod port;
pub mod service;
pub mod tables;
pub mod wire;
