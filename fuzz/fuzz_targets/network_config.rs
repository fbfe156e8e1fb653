#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactus_fuzz::network_config::run(data));
