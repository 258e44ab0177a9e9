//! What `pipework` and `vswitch-docker` share, so neither copies the other:
//!
//! - `netns`: acting inside another network namespace from a thread of its own;
//! - `netlink`: a small synchronous route-netlink client (links, veth pairs,
//!   addresses, routes);
//! - `daemon`: vswitchd's network namespace, found from its PID (SO_PEERCRED on
//!   the control socket), where the host ends of veth pairs are made;
//! - `engine`: GET requests to the Docker Engine API at `$DOCKER_HOST`.
//!
//! Everything here is blocking and single-threaded by design: a network namespace
//! belongs to a thread, and an async runtime's workers would not share it.

pub mod daemon;
pub mod engine;
pub mod netlink;
pub mod netns;

/// A DNS name for `s`, if it makes one (lower-case letters, digits, `-`, `_`, dots).
pub fn dns_name(s: &str) -> Option<String> {
    let n = s.trim_end_matches('.').to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    ok.then_some(n)
}
