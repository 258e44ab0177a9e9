//! Arbitrary frames on any port of the in-memory data path with NAT66 configured
//! (masquerade6, published IPv6 ports): conntrack6, the IPv6 rewrite, ICMPv6 errors.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::pipeline::rig::fuzz_pipeline_nat6(data));
