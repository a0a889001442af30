//! hwcov-rocm: the rocm platform, AMD GPUs through ONNX Runtime's MIGraphX execution provider, on
//! the model folder's ONNX graph (docs/platforms/rocm.md says why this path). ONNX Runtime is loaded
//! at run time (`runtime`): AMD's `onnxruntime-migraphx` build on a ROCm host. The session code
//! (`graph`) is the same for every provider; CI runs it on ONNX Runtime's CPU provider.
//!
//! The platform claims a run only on MIGraphX: its sessions are made with ONNX Runtime's CPU fallback
//! switched off, so a graph with a node MIGraphX cannot run is refused instead of run in part on the
//! CPU.

pub mod graph;
pub mod runtime;

use hwcov_core::{
    Availability, Error, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support,
};
use hwcov_onnx::handler::GraphHandler;

pub use graph::{Graph, Provider};

pub struct RocmPlatform;

/// The kernel driver of ROCm, present on a host with an AMD GPU it serves.
const KFD: &str = "/dev/kfd";

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        platform: "rocm".to_string(),
        reason,
    }
}

/// The device this platform would run on, or why it cannot.
fn device(index: usize) -> Result<String> {
    let providers = runtime::providers()?;
    let name = runtime::library_name()?;
    if !providers.contains(&Provider::MiGraphX { device_id: 0 }.name()) {
        return Err(unavailable(format!(
            "the ONNX Runtime found ({name}) has no MIGraphX execution provider (it has {}): {}",
            providers.join(", "),
            runtime::SETUP_HINT
        )));
    }
    if !std::path::Path::new(KFD).exists() {
        return Err(unavailable(format!(
            "no AMD GPU here ({KFD}, ROCm's kernel driver, is absent)"
        )));
    }
    Ok(format!("AMD GPU {index} (MIGraphXExecutionProvider, {name})"))
}

impl Platform for RocmPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Rocm
    }

    fn probe(&self) -> Availability {
        Availability::from_probe(device(0))
    }

    /// MIGraphX runs whatever ONNX graph a folder holds; a class whose export it cannot compile
    /// fails with the runtime's message.
    fn support(&self, _class: ModelClass) -> Support {
        Support::Implemented
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        device(opts.device_index)?;
        let device_id = i32::try_from(opts.device_index)
            .map_err(|_| Error::Usage(format!("device index {} is too large", opts.device_index)))?;
        let provider = Provider::MiGraphX { device_id };
        Ok(Box::new(GraphHandler::load(model, |g| {
            Graph::open(g, provider, opts.precision, None)
        })?))
    }
}
