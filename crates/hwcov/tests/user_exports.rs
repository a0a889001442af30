//! ONNX exports made as a new user makes them (fixtures/user-exports, by tools/fixtures/user_exports.py:
//! torch.onnx.export with its defaults: the dynamo exporter, opset 20, external data) verify on the
//! graph platforms (WebGPU, OpenVINO, WebNN) against transformers' outputs, as the fixtures' own exports do.

#![cfg(any(feature = "webgpu", feature = "openvino", feature = "webnn"))]

use std::path::Path;

use hwcov::PlatformId;
use hwcov::verify::{VerifyOptions, verify};

fn check(platform: PlatformId) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/user-exports");
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    let required = required.split(',').any(|p| p == platform.as_str());
    for name in ["bert", "vit", "wav2vec2"] {
        let dir = root.join(name);
        match verify(&dir, &dir.join("io.safetensors"), platform, &VerifyOptions::default()) {
            Ok(report) => {
                assert!(report.passed, "{name} on {platform}: {}", report.failures());
            }
            Err(hwcov::Error::Unavailable { reason, .. }) if !required => {
                eprintln!("skipped {name} on {platform}: {reason}");
                return;
            }
            Err(e) => panic!("{name} on {platform}: {e}"),
        }
    }
}

#[cfg(feature = "webgpu")]
#[test]
fn user_exports_verify_on_webgpu() {
    check(PlatformId::Webgpu);
}

#[cfg(feature = "openvino")]
#[test]
fn user_exports_verify_on_openvino() {
    check(PlatformId::Openvino);
}

#[cfg(feature = "webnn")]
#[test]
fn user_exports_verify_on_webnn() {
    check(PlatformId::Webnn);
}
