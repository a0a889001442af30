//! hwcov-cuda: the CUDA platform, candle's CUDA device running the models of hwcov-candle, with
//! hwcov's own CUDA kernels ([`kernels`]) installed behind hwcov-candle's kernel seam.
//!
//! Built without the `cuda` feature (as CI builds it) the crate compiles and reports that the build
//! has no CUDA kernels. Built with it, the binary links the CUDA 13 libraries and the driver
//! (docs/platforms/cuda.md says what the target machine needs).

use hwcov_core::{Availability, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support};

pub mod host_copy;
#[cfg(feature = "cuda")]
pub mod kernels;

/// Opens GPU `index` with hwcov's CUDA kernels installed for candle's CUDA devices; returns the device
/// and a description ("NVIDIA H100 80GB HBM3 (cuda:0, sm_90, cuDNN 9.19.0, 79.2 GiB)").
pub fn open(index: usize) -> Result<(candle_core::Device, String)> {
    gpu::open(index)
}

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

    fn peak_memory(&self, device_index: usize) -> Option<u64> {
        gpu::peak_memory(device_index)
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

    pub fn peak_memory(_index: usize) -> Option<u64> {
        None
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use candle_core::Device;
    use candle_core::cuda_backend::cudarc::driver::sys;
    use hwcov_core::{Error, Result};

    fn unavailable(reason: String) -> Error {
        Error::Unavailable {
            platform: "cuda".to_string(),
            reason,
        }
    }

    /// Opens GPU `index` and installs hwcov's kernels for CUDA devices; returns the device and a
    /// description ("NVIDIA H100 80GB HBM3 (cuda:0, sm_90, cuDNN 9.19.0, 79.2 GiB)"). The description
    /// holds nothing that changes from run to run (the coverage files keep it).
    pub fn open(index: usize) -> Result<(Device, String)> {
        let device = std::panic::catch_unwind(|| Device::new_cuda(index))
            .map_err(|_| unavailable(format!("the CUDA runtime failed while opening cuda:{index}")))?
            .map_err(|e| unavailable(format!("no usable GPU cuda:{index}: {}", first_line(&e.to_string()))))?;
        let Device::Cuda(cuda) = &device else {
            return Err(unavailable("candle returned a non-CUDA device".to_string()));
        };
        // cudarc makes and destroys two events with every allocation, to order the uses of a tensor
        // across streams; candle runs all of a device's work on one stream, so they only cost the host
        // time at every step (a decoding step allocates about a hundred tensors).
        // SAFETY: set before the first allocation on this context, and no second stream is made on it:
        // each tensor is made, used and freed in the order of that one stream.
        unsafe { cuda.disable_event_tracking() };
        let ctx = cuda.cuda_stream().context().clone();
        keep_freed_memory(ctx.cu_device());
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
            Ok((_, total)) => format!(", {:.1} GiB", gib(total)),
            Err(_) => String::new(),
        };
        // The first provider installed stays: this one, on every open after the first.
        hwcov_candle::kernels::install(hwcov_candle::kernels::Backend::Cuda, &crate::kernels::CudaKernels);
        // Convolutions run through cuDNN, opened at run time: say whether it is there.
        let cudnn = match crate::kernels::cudnn_version() {
            Ok(v) => format!("cuDNN {}.{}.{}", v / 10000, v / 100 % 100, v % 100),
            Err(_) => "no cuDNN, so no convolution models".to_string(),
        };
        Ok((
            device,
            format!("{name} (cuda:{index}, sm_{major}{minor}, {cudnn}{memory})"),
        ))
    }

    /// Device-wide memory in use (total minus free), from the driver.
    pub fn memory_in_use(index: usize) -> Option<u64> {
        let Ok((Device::Cuda(cuda), _)) = open(index) else {
            return None;
        };
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        Some((total - free) as u64)
    }

    /// The device's default memory pool, from which candle's stream-ordered allocations come.
    fn default_pool(device: sys::CUdevice) -> Option<sys::CUmemoryPool> {
        let mut pool = std::mem::MaybeUninit::uninit();
        // SAFETY: the driver writes the pool handle on success; `device` came from a live context.
        let status = unsafe { sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), device) };
        // SAFETY: written when the call succeeded.
        (status == sys::CUresult::CUDA_SUCCESS).then(|| unsafe { pool.assume_init() })
    }

    /// Keeps freed memory in the pool for the next allocation instead of returning it to the driver
    /// at every synchronisation (the default threshold is 0), as torch's caching allocator does.
    /// Without it, each forward pass and each decoding step, which ends by copying its result to the
    /// host, gave its memory back and mapped it anew on the next one.
    fn keep_freed_memory(device: sys::CUdevice) {
        if let Some(pool) = default_pool(device) {
            let mut threshold = u64::MAX;
            // SAFETY: a valid pool and attribute, with a u64 value as the attribute takes.
            let _ = unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut threshold as *mut u64).cast(),
                )
            };
        }
    }

    /// The pool's high-water mark of memory held by allocations (weights and activations).
    pub fn peak_memory(index: usize) -> Option<u64> {
        let Ok((Device::Cuda(cuda), _)) = open(index) else {
            return None;
        };
        let pool = default_pool(cuda.cuda_stream().context().cu_device())?;
        let mut high = 0u64;
        // SAFETY: a valid pool and attribute, with a u64 value as the attribute takes.
        let status = unsafe {
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut high as *mut u64).cast(),
            )
        };
        (status == sys::CUresult::CUDA_SUCCESS).then_some(high)
    }

    fn first_line(s: &str) -> &str {
        s.lines().next().unwrap_or_default()
    }
}
