//! The only `unsafe` in the crate: raw AF_PACKET and TAP syscalls and netdev ioctls.
//!
//! Read first: packet(7), tuntap.txt in the kernel docs, netdevice(7).
//! Every function here checks its arguments (name lengths, buffer sizes) before a
//! syscall, and turns errno into `io::Error`.

#![allow(unsafe_code)]

pub mod afpacket;
pub mod netdev;
pub mod signal;
pub mod tap;
pub mod udp;
