//! The matrix's own files: models.toml (parse_models) and a coverage run another machine left in
//! docs/coverage/runs/ (a CoverageRun, as `cargo xtask coverage` reads it).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hwcov_core::spec::parse_models(std::path::Path::new("models.toml"), text);
    }
    let _ = serde_json::from_slice::<hwcov_core::CoverageRun>(data);
});
