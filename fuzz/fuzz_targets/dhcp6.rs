//! Arbitrary DHCPv6 messages (the UDP payload to port 547) to a bridge's DHCPv6 server.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::service::dhcp6::fuzz(data));
