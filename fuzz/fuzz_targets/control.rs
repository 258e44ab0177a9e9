//! Arbitrary control-protocol lines (what vswitchd decodes from its socket).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_proto::fuzz_decode(data));
