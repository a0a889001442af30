//! A safetensors file as `hwcov verify --io` reads it (IoFile::read, through read_safetensors).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = hwcov_fuzz::folder("safetensors");
    let path = hwcov_fuzz::put(&dir, "io.safetensors", data);
    let _ = hwcov_core::IoFile::read(&path);
});
