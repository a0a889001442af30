//! The ONNX backend node tests for every op hwcov-webnn claims (`hwcov_webnn::OPS`), in the
//! browser's WebNN: `hwcov_onnx::conformance` says how a case passes, is refused or fails.

use std::path::Path;

use hwcov_core::Platform;

#[test]
fn onnx_backend_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = hwcov_onnx::conformance::suite_dir(&root);
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    let required = required.split(',').any(|p| p == "webnn");
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
    let device = match hwcov_webnn::WebNnPlatform.probe() {
        hwcov_core::Availability::Available { device } => device,
        hwcov_core::Availability::Unavailable { reason } => {
            assert!(!required, "{reason}");
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let mut run = |graph: &Path, sets: &[hwcov_core::NamedTensors]| {
        let mut g = hwcov_webnn::Graph::open(graph)?;
        sets.iter().map(|feed| g.run(feed)).collect()
    };
    hwcov_onnx::conformance::run_suite(&dir, &manifest, hwcov_webnn::OPS, &device, &mut run);
}
