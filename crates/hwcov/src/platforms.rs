//! The platforms compiled into this build, one Cargo feature each.

use hwcov_core::{Error, Platform, PlatformId, Result};

/// Where a platform stands in this build.
pub enum Build {
    /// Compiled in.
    Compiled(Box<dyn Platform>),
    /// The crate exists but this build left its feature out.
    NotCompiled { feature: &'static str },
    /// hwcov has no crate for this platform yet.
    NoCrate,
}

/// What this build has for a platform.
pub fn build(id: PlatformId) -> Build {
    match id {
        #[cfg(feature = "cpu")]
        PlatformId::Cpu => Build::Compiled(Box::new(hwcov_cpu::CpuPlatform)),
        #[cfg(not(feature = "cpu"))]
        PlatformId::Cpu => Build::NotCompiled { feature: "cpu" },
        #[cfg(feature = "cuda")]
        PlatformId::Cuda => Build::Compiled(Box::new(hwcov_cuda::CudaPlatform)),
        #[cfg(not(feature = "cuda"))]
        PlatformId::Cuda => Build::NotCompiled { feature: "cuda" },
        #[cfg(feature = "openvino")]
        PlatformId::Openvino => Build::Compiled(Box::new(hwcov_openvino::OpenVinoPlatform)),
        #[cfg(not(feature = "openvino"))]
        PlatformId::Openvino => Build::NotCompiled { feature: "openvino" },
        #[cfg(feature = "webgpu")]
        PlatformId::Webgpu => Build::Compiled(Box::new(hwcov_webgpu::WebGpuPlatform)),
        #[cfg(not(feature = "webgpu"))]
        PlatformId::Webgpu => Build::NotCompiled { feature: "webgpu" },
        #[cfg(feature = "mps")]
        PlatformId::Mps => Build::Compiled(Box::new(hwcov_metal::MetalPlatform)),
        #[cfg(not(feature = "mps"))]
        PlatformId::Mps => Build::NotCompiled { feature: "mps" },
        #[cfg(feature = "rocm")]
        PlatformId::Rocm => Build::Compiled(Box::new(hwcov_rocm::RocmPlatform)),
        #[cfg(not(feature = "rocm"))]
        PlatformId::Rocm => Build::NotCompiled { feature: "rocm" },
        #[cfg(feature = "webnn")]
        PlatformId::Webnn => Build::Compiled(Box::new(hwcov_webnn::WebNnPlatform)),
        #[cfg(not(feature = "webnn"))]
        PlatformId::Webnn => Build::NotCompiled { feature: "webnn" },
    }
}

/// Every platform compiled into this build.
pub fn compiled() -> Vec<Box<dyn Platform>> {
    PlatformId::ALL
        .into_iter()
        .filter_map(|id| match build(id) {
            Build::Compiled(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// The platform `id`, or an error that says how to get it.
pub fn get(id: PlatformId) -> Result<Box<dyn Platform>> {
    match build(id) {
        Build::Compiled(p) => Ok(p),
        Build::NotCompiled { feature } => Err(Error::Unavailable {
            platform: id.to_string(),
            reason: format!("not compiled into this hwcov (rebuild with `--features {feature}`)"),
        }),
        Build::NoCrate => Err(Error::NotImplemented {
            platform: id.to_string(),
            reason: format!("hwcov has no {id} platform yet"),
        }),
    }
}

/// The ONNX ops the WebGPU platform claims (empty in a build without it).
pub fn webgpu_ops() -> &'static [&'static str] {
    #[cfg(feature = "webgpu")]
    {
        hwcov_webgpu::OPS
    }
    #[cfg(not(feature = "webgpu"))]
    {
        &[]
    }
}

/// The ONNX ops the WebNN platform claims (empty in a build without it).
pub fn webnn_ops() -> &'static [&'static str] {
    #[cfg(feature = "webnn")]
    {
        hwcov_webnn::OPS
    }
    #[cfg(not(feature = "webnn"))]
    {
        &[]
    }
}
