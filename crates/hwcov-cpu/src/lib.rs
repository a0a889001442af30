//! hwcov-cpu: the CPU platform, candle's CPU device running the models of hwcov-candle, with hwcov's
//! CPU kernels ([`kernels`]) installed behind hwcov-candle's kernel seam.

pub mod kernels;

use candle_core::Device;
use hwcov_core::{Availability, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support};

pub struct CpuPlatform;

impl Platform for CpuPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Cpu
    }

    fn probe(&self) -> Availability {
        Availability::Available { device: cpu_name() }
    }

    fn support(&self, class: ModelClass) -> Support {
        hwcov_candle::support(class)
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        // The first provider installed stays: this one, on every load after the first.
        hwcov_candle::kernels::install(hwcov_candle::kernels::Backend::Cpu, &kernels::CpuKernels);
        keep_freed_memory();
        Ok(Box::new(hwcov_candle::CandleHandler::load(
            model,
            opts.precision,
            &Device::Cpu,
        )?))
    }
}

/// The processor's model name and the threads candle may use, e.g. "AMD EPYC 9354 (2 threads)".
pub fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{model} ({threads} threads)")
}

/// Keeps up to 512 MiB of freed heap memory for the next allocations instead of giving it back to
/// the kernel, as torch's CPU allocator keeps its blocks: every pass makes and frees the same large
/// activations, and memory given back had to be faulted in and zeroed again on the next pass (about
/// 10% of Whisper-tiny's encoder on 30 s: docs/benchmarks.md, CPU). glibc's `M_TOP_PAD`; elsewhere
/// the allocator's default.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_TOP_PAD takes a byte count.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 512 << 20);
    }
}
