//! Arbitrary DNS messages to a bridge's DNS server.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::service::dns::fuzz(data));
