//! The ONNX backend node tests for every op hwcov-webgpu claims (`hwcov_webgpu::OPS`), on this
//! machine's adapter: `hwcov_onnx::conformance` says how a case passes, is refused or fails.

use std::path::Path;

use hwcov_onnx::conformance;

#[test]
fn onnx_backend_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some((dir, manifest)) = conformance::suite(&root, "webgpu") else {
        return;
    };
    let gpu = match hwcov_webgpu::gpu::gpu() {
        Ok(g) => g,
        Err(e) => {
            assert!(!conformance::required("webgpu"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let mut run = |graph: &Path, sets: &[hwcov_core::NamedTensors]| {
        let mut session = hwcov_webgpu::Session::open(gpu.clone(), graph)?;
        sets.iter().map(|feed| session.run(feed)).collect()
    };
    conformance::run_suite(&dir, &manifest, hwcov_webgpu::OPS, &gpu.describe(), &mut run);
}
