//! hwcov-webgpu's kernels in Chromium's WebGPU: every WGSL source the WebGPU platform compiles
//! for the fixtures (run on this machine's adapter first) is compiled again in headless Chromium
//! (Tint, SwiftShader's adapter), as a page would: a shader module and a compute pipeline each,
//! under a validation error scope. A kernel Chromium refuses is a failure. (f32 kernels: this
//! adapter has no shader-f16.) The first step of running the WebGPU platform's plans in the page.

#![cfg(all(feature = "webgpu", feature = "webnn"))]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hwcov::PlatformId;
use hwcov::verify::{VerifyOptions, verify};

/// The Chromium the webnn platform uses (`hwcov_webnn::chromium`), required where webnn is.
fn chromium() -> Option<PathBuf> {
    match hwcov_webnn::chromium() {
        Ok(p) => Some(p),
        Err(e) => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webnn"), "{e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

const PAGE: &str = r#"<!doctype html><html><body><script>
window.compile = async (sources) => {
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter.requestDevice({ requiredLimits: {
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
    maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
  } });
  const failed = [];
  for (let i = 0; i < sources.length; i++) {
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: sources[i] });
    device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const e = await device.popErrorScope();
    if (e) failed.push([i, e.message.split('\n').slice(0, 3).join(' ')]);
  }
  return failed;
};
</script></body></html>"#;

#[test]
fn every_kernel_compiles_in_chromium() {
    let Some(bin) = chromium() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let gpu = match hwcov_webgpu::gpu::gpu() {
        Ok(g) => g,
        Err(e) => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webgpu"), "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    for m in [
        "bert", "t5", "clip", "vit", "clap", "whisper", "wav2vec2", "llava", "qwen2", "detr", "xclip",
    ] {
        let dir = root.join(m);
        verify(
            &dir,
            &dir.join("io.safetensors"),
            PlatformId::Webgpu,
            &VerifyOptions::default(),
        )
        .unwrap();
    }
    let sources = gpu.sources();
    assert!(sources.len() > 50, "{} kernels", sources.len());
    let mut b =
        hwcov_browser::Browser::launch(&bin, hwcov_browser::FLAGS, PAGE.to_string(), Duration::from_secs(60)).unwrap();
    let blob = b.server.blob(serde_json::to_vec(&sources).unwrap());
    let failed = b
        .eval(
            &format!("fetch('/blob/{blob}').then(r => r.json()).then(s => compile(s))"),
            Duration::from_secs(600),
        )
        .unwrap();
    let failed = failed.as_array().cloned().unwrap_or_default();
    for f in &failed {
        let i = f[0].as_u64().unwrap_or(0) as usize;
        eprintln!(
            "REFUSED {}\n--- source head ---\n{}\n",
            f[1],
            sources[i].lines().take(12).collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "{} of {} kernels compile in Chromium",
        sources.len() - failed.len(),
        sources.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} kernels refused by Chromium",
        failed.len(),
        sources.len()
    );
}
