//! Arbitrary frames and offload headers through VXLAN's software segmentation and
//! coalescing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch::wire::gso::fuzz(data));
