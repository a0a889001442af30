//! generation_config.json beside a valid config.json, as the generation loop reads it.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<Vec<u8>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| hwcov_fuzz::fixture("whisper/config.json"));
    let dir = hwcov_fuzz::folder("generation");
    hwcov_fuzz::put(&dir, "config.json", config);
    hwcov_fuzz::put(&dir, "generation_config.json", data);
    if let Ok(files) = hwcov_core::ModelFiles::open(&dir) {
        let _ = hwcov::generate::GenerationConfig::from_model(&files);
    }
});
