//! hwcov-metal: the mps platform, candle's Metal device running the models of hwcov-candle with
//! candle's own Metal kernels (the plain candle ops: the fast paths of hwcov-candle are CUDA's).
//!
//! On macOS the crate turns candle's `metal` feature on; elsewhere it compiles against candle's
//! stub Metal device, and the platform reports that it needs macOS with an Apple GPU.
//! docs/platforms/mps.md says how the owner of a Mac runs the matrix and merges the run.

use candle_core::Device;
use hwcov_core::{
    Availability, Error, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support,
};

pub struct MetalPlatform;

impl Platform for MetalPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Mps
    }

    fn probe(&self) -> Availability {
        match open(0) {
            Ok((_, device)) => Availability::Available { device },
            Err(e) => Availability::Unavailable { reason: e.to_string() },
        }
    }

    fn support(&self, class: ModelClass) -> Support {
        hwcov_candle::support(class)
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        let (device, _) = open(opts.device_index)?;
        Ok(Box::new(hwcov_candle::CandleHandler::load(
            model,
            opts.precision,
            &device,
        )?))
    }
}

/// Opens Metal device `index`, with a description of it.
fn open(index: usize) -> Result<(Device, String)> {
    let unavailable = |reason: String| Error::Unavailable {
        platform: "mps".to_string(),
        reason,
    };
    if !cfg!(target_os = "macos") {
        return Err(unavailable(format!(
            "needs macOS with an Apple GPU (Metal); this is {}",
            std::env::consts::OS
        )));
    }
    let device =
        Device::new_metal(index).map_err(|e| unavailable(format!("no usable Metal device metal:{index}: {e}")))?;
    Ok((device, format!("Apple GPU (metal:{index}, candle's Metal device)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_macos_the_platform_says_what_it_needs() {
        let available = matches!(MetalPlatform.probe(), Availability::Available { .. });
        if cfg!(target_os = "macos") {
            return;
        }
        assert!(!available);
        let Availability::Unavailable { reason } = MetalPlatform.probe() else {
            unreachable!()
        };
        assert!(reason.contains("needs macOS with an Apple GPU"), "{reason}");
        let files = ModelFiles::open(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/bert"
        )))
        .expect("the bert fixture");
        let err = MetalPlatform
            .load(&files, &LoadOptions::default())
            .err()
            .expect("no Metal device here");
        assert!(err.to_string().contains("macOS"), "{err}");
    }
}
