//! Arbitrary lab files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_integration::labfile::fuzz(data));
