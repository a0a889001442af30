//! The ONNX backend node tests for every op hwcov-webgpu claims (`hwcov_webgpu::OPS`), on this
//! machine's adapter: `hwcov_onnx::conformance` says how a case passes, is refused or fails.

use std::path::Path;

#[test]
fn onnx_backend_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = hwcov_onnx::conformance::suite_dir(&root);
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    let required = required.split(',').any(|p| p == "webgpu");
    let manifest = match std::fs::read_to_string(dir.join("manifest.json")) {
        Ok(m) => m,
        Err(e) => {
            assert!(!required, "{}: {e} (run `cargo xtask node-tests` first)", dir.display());
            eprintln!(
                "skipped: no node tests at {} (cargo xtask node-tests writes them)",
                dir.display()
            );
            return;
        }
    };
    let gpu = match hwcov_webgpu::gpu::gpu() {
        Ok(g) => g,
        Err(e) => {
            assert!(!required, "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let mut run = |graph: &Path, sets: &[hwcov_core::NamedTensors]| {
        let mut session = hwcov_webgpu::Session::open(gpu.clone(), graph)?;
        sets.iter().map(|feed| session.run(feed)).collect()
    };
    hwcov_onnx::conformance::run_suite(&dir, &manifest, hwcov_webgpu::OPS, &gpu.describe(), &mut run);
}
