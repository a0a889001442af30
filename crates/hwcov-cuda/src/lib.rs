//! hwcov-cuda: the CUDA platform, candle's CUDA device running the models of hwcov-candle.
//!
//! Built without the `cuda` feature (as CI builds it) the crate compiles and reports that the build
//! has no CUDA kernels. Built with it, the binary links the CUDA 13 libraries and the driver
//! (docs/platforms/cuda.md says what the target machine needs).

use hwcov_core::{Availability, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support};

pub struct CudaPlatform;

impl Platform for CudaPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Cuda
    }

    fn probe(&self) -> Availability {
        match gpu::open(0) {
            Ok((_, description)) => Availability::Available { device: description },
            Err(e) => Availability::Unavailable { reason: e.to_string() },
        }
    }

    fn support(&self, class: ModelClass) -> Support {
        hwcov_candle::support(class)
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        let (device, _) = gpu::open(opts.device_index)?;
        Ok(Box::new(hwcov_candle::CandleHandler::load(
            model,
            opts.precision,
            &device,
        )?))
    }

    fn memory_in_use(&self, device_index: usize) -> Option<u64> {
        gpu::memory_in_use(device_index)
    }
}

/// The compute capability the kernels were built for (`CUDA_COMPUTE_CAP` at build time), e.g. "90".
pub const BUILT_FOR: &str = env!("HWCOV_CUDA_COMPUTE_CAP");

#[cfg(not(feature = "cuda"))]
mod gpu {
    use candle_core::Device;
    use hwcov_core::{Error, Result};

    pub fn open(_index: usize) -> Result<(Device, String)> {
        Err(Error::Unavailable {
            platform: "cuda".to_string(),
            reason: "this build has no CUDA kernels (build it with `cargo xtask build --platform cuda`)".to_string(),
        })
    }

    pub fn memory_in_use(_index: usize) -> Option<u64> {
        None
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use candle_core::Device;
    use hwcov_core::{Error, Result};

    fn unavailable(reason: String) -> Error {
        Error::Unavailable {
            platform: "cuda".to_string(),
            reason,
        }
    }

    /// Opens GPU `index`; returns the device and a description ("NVIDIA H100 80GB HBM3, sm_90, 79.1 of
    /// 79.2 GiB free").
    pub fn open(index: usize) -> Result<(Device, String)> {
        let device = std::panic::catch_unwind(|| Device::new_cuda(index))
            .map_err(|_| unavailable(format!("the CUDA runtime failed while opening cuda:{index}")))?
            .map_err(|e| unavailable(format!("no usable GPU cuda:{index}: {}", first_line(&e.to_string()))))?;
        let Device::Cuda(cuda) = &device else {
            return Err(unavailable("candle returned a non-CUDA device".to_string()));
        };
        let ctx = cuda.cuda_stream().context().clone();
        let name = ctx.name().unwrap_or_else(|_| "NVIDIA GPU".to_string());
        let (major, minor) = ctx.compute_capability().map_err(|e| unavailable(e.to_string()))?;
        let built = super::BUILT_FOR;
        if !built.is_empty() && built != format!("{major}{minor}") {
            return Err(unavailable(format!(
                "{name} has compute capability {major}.{minor}, but this build's kernels are for {built} \
                 (rebuild with CUDA_COMPUTE_CAP={major}{minor})"
            )));
        }
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        let memory = match ctx.mem_get_info() {
            Ok((free, total)) => format!(", {:.1} of {:.1} GiB free", gib(free), gib(total)),
            Err(_) => String::new(),
        };
        Ok((device, format!("{name} (cuda:{index}, sm_{major}{minor}{memory})")))
    }

    /// Device-wide memory in use (total minus free), from the driver.
    pub fn memory_in_use(index: usize) -> Option<u64> {
        let Ok((Device::Cuda(cuda), _)) = open(index) else {
            return None;
        };
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        Some((total - free) as u64)
    }

    fn first_line(s: &str) -> &str {
        s.lines().next().unwrap_or_default()
    }
}
