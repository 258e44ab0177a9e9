//! Arbitrary frames on any port of a routed, NATed in-memory data path.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::pipeline::rig::fuzz_pipeline(data));
