#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactus_fuzz::node_local::run(data));
