//! The ONNX backend node tests for every op hwcov-webnn claims (`hwcov_webnn::OPS`), in the
//! browser's WebNN: `hwcov_onnx::conformance` says how a case passes, is refused or fails.

use std::path::Path;

use hwcov_core::Platform;
use hwcov_onnx::conformance;

#[test]
fn onnx_backend_node_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some((dir, manifest)) = conformance::suite(&root, "webnn") else {
        return;
    };
    let device = match hwcov_webnn::WebNnPlatform.probe() {
        hwcov_core::Availability::Available { device } => device,
        hwcov_core::Availability::Unavailable { reason } => {
            assert!(!conformance::required("webnn"), "{reason}");
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let mut run = |graph: &Path, sets: &[hwcov_core::NamedTensors]| {
        let mut g = hwcov_webnn::Graph::open(graph)?;
        sets.iter().map(|feed| g.run(feed)).collect()
    };
    conformance::run_suite(&dir, &manifest, hwcov_webnn::OPS, &device, &mut run);
}
