//! Arbitrary ICMPv6/NDP messages (and raw frames) to the router's IPv6 slow path.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::service::ndp::fuzz(data));
