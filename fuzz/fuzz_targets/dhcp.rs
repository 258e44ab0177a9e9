//! Arbitrary DHCP messages to a bridge's DHCP server.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::service::dhcp::fuzz(data));
